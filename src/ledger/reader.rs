//! Read-only access to the stored ledger, for audit queries: events by seq range and index
//! range scans, in MVCC read transactions that never block the writer.
//!
//! **Invariant:** readers see only committed events, and audit code delivers only events up
//! to the committed head the writer published, so what a reader returns is also in `State`.

use std::ops::RangeInclusive;
use std::sync::{Arc, Weak};

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable};

use super::codec;
use super::index::{self, IndexKind};
use super::store::{EVENTS, INDEX, StoreError};
use super::token_ids::TokenIdScheme;
use crate::domain::ids::TokenId;
use crate::proto::ledger::{Envelope, Event};
use prost::Message as _;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the ledger is closed")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<redb::StorageError> for ReadError {
    fn from(e: redb::StorageError) -> Self {
        Self::Store(e.into())
    }
}

/// A handle that can open read snapshots while the store is open. Cheap to clone.
#[derive(Clone)]
pub struct LedgerReader {
    db: Weak<Database>,
    /// Token index entries sit at the token's creation-time position (see `token_ids`).
    token_ids: Arc<TokenIdScheme>,
}

impl LedgerReader {
    pub(super) fn new(db: Weak<Database>, token_ids: Arc<TokenIdScheme>) -> Self {
        Self { db, token_ids }
    }

    /// The database itself while the store is open, for tools and tests (a test tampers with
    /// a live ledger through it). Writing through it bypasses the writer and its chain.
    pub fn database(&self) -> Option<Arc<Database>> {
        self.db.upgrade()
    }

    /// A consistent view of everything committed so far. Keep it short-lived: closing the
    /// store waits for open snapshots.
    pub fn snapshot(&self) -> Result<Snapshot, ReadError> {
        let db = self.db.upgrade().ok_or(ReadError::Closed)?;
        let txn = db.begin_read().map_err(StoreError::from)?;
        let events = txn.open_table(EVENTS).map_err(StoreError::from)?;
        let index = txn.open_table(INDEX).map_err(StoreError::from)?;
        Ok(Snapshot { events, index, token_ids: self.token_ids.clone(), _db: db })
    }
}

/// One read transaction over the `events` and `index` tables.
pub struct Snapshot {
    events: ReadOnlyTable<u64, &'static [u8]>,
    index: ReadOnlyTable<&'static [u8], ()>,
    token_ids: Arc<TokenIdScheme>,
    /// Keeps the database open while the snapshot lives (see `Store::close`).
    _db: Arc<Database>,
}

impl Snapshot {
    /// The index value to look up for (`kind`, `value`): token ids go through the ledger's
    /// token-id scheme, everything else is stored as given.
    fn index_value(&self, kind: IndexKind, value: &[u8]) -> Vec<u8> {
        match (kind, TokenId::from_slice(value)) {
            (IndexKind::Token, Some(id)) => index::token_value(&self.token_ids, &id).to_vec(),
            _ => value.to_vec(),
        }
    }

    /// The envelope of event `seq`, in canonical form (`codec::canonical_bytes`: what the
    /// audit API and Raft snapshots send, whichever form it is stored in).
    pub fn envelope(&self, seq: u64) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.events.get(seq)?.map(|v| codec::canonical_bytes(v.value().to_vec())))
    }

    /// The chain hash of event `seq` as its stored content gives it (recomputed and checked by
    /// `codec::open`; zeros for seq 0); `None` when the event is missing or does not check.
    /// What a projection snapshot's header is compared with.
    pub fn chain_hash(&self, seq: u64) -> Option<[u8; 32]> {
        if seq == 0 {
            return Some([0u8; 32]);
        }
        let stored = self.events.get(seq).ok()??;
        codec::open(seq, stored.value()).ok().map(|opened| opened.hash)
    }

    /// Envelopes with keys in `seqs`, in key order, at most `max`, in canonical form.
    pub fn envelopes(&self, seqs: RangeInclusive<u64>, max: usize) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        let mut out = Vec::new();
        for row in self.events.range(seqs)?.take(max) {
            let (key, value) = row?;
            out.push((key.value(), codec::canonical_bytes(value.value().to_vec())));
        }
        Ok(out)
    }

    /// Seqs of the index entries of (`kind`, `value`) within `seqs`, in order, at most `max`:
    /// one range scan of the entries' contiguous key range.
    pub fn index_seqs(
        &self,
        kind: IndexKind,
        value: &[u8],
        seqs: RangeInclusive<u64>,
        max: usize,
    ) -> Result<Vec<u64>, ReadError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let value = self.index_value(kind, value);
        let low = index::entry(kind, &value, *seqs.start());
        let high = index::entry(kind, &value, *seqs.end());
        let mut out = Vec::new();
        for row in self.index.range(low.as_slice()..=high.as_slice())?.take(max) {
            let (key, _) = row?;
            if let Some(seq) = index::seq_of(key.value()) {
                out.push(seq);
            }
        }
        Ok(out)
    }

    /// Does event `seq` have the index entry (`kind`, `value`)?
    pub fn index_contains(&self, kind: IndexKind, value: &[u8], seq: u64) -> Result<bool, ReadError> {
        let value = self.index_value(kind, value);
        Ok(self.index.get(index::entry(kind, &value, seq).as_slice())?.is_some())
    }

    /// The last index entry of (`kind`, `value`) at or below `max_seq`.
    pub fn index_last(&self, kind: IndexKind, value: &[u8], max_seq: u64) -> Result<Option<u64>, ReadError> {
        let value = self.index_value(kind, value);
        let low = index::entry(kind, &value, 0);
        let high = index::entry(kind, &value, max_seq);
        let last = self.index.range(low.as_slice()..=high.as_slice())?.next_back().transpose()?;
        Ok(last.and_then(|(key, _)| index::seq_of(key.value())))
    }

    /// Seqs within `seqs` of the events whose kind number is in `kinds`, found by reading the
    /// events themselves (for kinds without event-kind entries, see `index::kind_is_indexed`),
    /// at most `max` events read; with the last seq read when it stopped there. A row that does
    /// not decode, and a seq missing from the range, are returned too, so that opening them
    /// reports the problem.
    pub fn kind_scan(
        &self,
        kinds: &[u8],
        seqs: RangeInclusive<u64>,
        max: usize,
    ) -> Result<(Vec<u64>, Option<u64>), ReadError> {
        let mut out = Vec::new();
        let mut expected = *seqs.start();
        for (read, row) in self.events.range(seqs)?.enumerate() {
            if read >= max {
                return Ok((out, expected.checked_sub(1)));
            }
            let (key, value) = row?;
            let seq = key.value();
            if seq != expected {
                out.push(expected);
                return Ok((out, Some(expected)));
            }
            let kind = Envelope::decode(value.value())
                .ok()
                .and_then(|envelope| Event::decode(envelope.event.as_slice()).ok())
                .map(|event| index::kind_number(&event));
            if kind.is_none_or(|kind| kinds.contains(&kind)) {
                out.push(seq);
            }
            expected = seq + 1;
        }
        Ok((out, None))
    }

    /// The seq of the last stored event (0: none).
    pub fn last_seq(&self) -> Result<u64, ReadError> {
        Ok(self.events.last()?.map_or(0, |(key, _)| key.value()))
    }

    /// Calls `visit(key, bytes)` for every stored event from `from_seq` on, in key order,
    /// until it returns `false`.
    pub fn scan(&self, from_seq: u64, mut visit: impl FnMut(u64, &[u8]) -> bool) -> Result<(), ReadError> {
        for row in self.events.range(from_seq..)? {
            let (key, value) = row?;
            if !visit(key.value(), value.value()) {
                break;
            }
        }
        Ok(())
    }
}
