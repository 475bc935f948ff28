//! Read-only access to the stored ledger, for audit queries: events by seq range and index
//! range scans, in MVCC read transactions that never block the writer.
//!
//! **Invariant:** readers see only committed events, and audit code delivers only events up
//! to the committed head the writer published, so what a reader returns is also in `State`.

use std::ops::RangeInclusive;
use std::sync::{Arc, Weak};

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::chunks;
use super::codec::{self, ChainError};
use super::index::{self, IndexKind};
use super::store::{CHUNKS, EVENTS, INDEX, INDEX_LISTS, StoreError};
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
    /// A chunk of stored events does not parse: the first event it fails at.
    #[error(transparent)]
    Damaged(ChainError),
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
        Snapshot::open(&txn, self.token_ids.clone(), Some(db))
    }
}

/// One read transaction over the event tables and the `index`.
pub struct Snapshot {
    /// Formats 1 to 3: one row per event, the events up to `rows_last`.
    rows: Option<ReadOnlyTable<u64, &'static [u8]>>,
    rows_last: u64,
    /// Format 4: the events after `rows_last`, in chunks.
    chunks: Option<ReadOnlyTable<u64, &'static [u8]>>,
    index: IndexTable,
    token_ids: Arc<TokenIdScheme>,
    /// Keeps the database open while the snapshot lives (see `Store::close`); `None` for a
    /// database its caller holds (`ledger::raw`).
    _db: Option<Arc<Database>>,
}

impl Snapshot {
    /// The tables of `txn`. A file that never had one of the two event tables (a new file has
    /// both; a format-1 to -3 file opened read-only has no chunks) reads as if it were empty.
    pub(super) fn open(
        txn: &redb::ReadTransaction,
        token_ids: Arc<TokenIdScheme>,
        db: Option<Arc<Database>>,
    ) -> Result<Self, ReadError> {
        let optional = |table: redb::TableDefinition<'static, u64, &'static [u8]>| match txn.open_table(table) {
            Ok(table) => Ok(Some(table)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(StoreError::from(e)),
        };
        let rows = optional(EVENTS)?;
        let chunks = optional(CHUNKS)?;
        let index = IndexTable::open(txn)?;
        let rows_last = match &rows {
            Some(rows) => rows.last()?.map_or(0, |(seq, _)| seq.value()),
            None => 0,
        };
        Ok(Self { rows, rows_last, chunks, index, token_ids, _db: db })
    }

    /// The index value to look up for (`kind`, `value`): token ids go through the ledger's
    /// token-id scheme, everything else is stored as given.
    fn index_value(&self, kind: IndexKind, value: &[u8]) -> Vec<u8> {
        match (kind, TokenId::from_slice(value)) {
            (IndexKind::Token, Some(id)) => index::token_value(&self.token_ids, &id).to_vec(),
            _ => value.to_vec(),
        }
    }

    /// The stored bytes of event `seq` (its envelope as the writer stored it).
    pub(super) fn stored(&self, seq: u64) -> Result<Option<Vec<u8>>, ReadError> {
        if seq <= self.rows_last
            && let Some(rows) = &self.rows
            && let Some(value) = rows.get(seq)?
        {
            return Ok(Some(value.value().to_vec()));
        }
        let Some(chunks) = &self.chunks else { return Ok(None) };
        let Some((key, value)) = chunks.range(..=seq)?.next_back().transpose()? else { return Ok(None) };
        for entry in chunks::entries(key.value(), value.value()) {
            let (at, bytes) = entry.map_err(ReadError::Damaged)?;
            if at == seq {
                return Ok(Some(bytes.to_vec()));
            }
        }
        Ok(None)
    }

    /// Calls `visit(seq, stored bytes)` for the stored events with seqs in `from..=to`, in seq
    /// order, until it returns `false`. A seq missing from the ledger is skipped (callers that
    /// check the chain see the gap).
    fn visit(&self, from: u64, to: u64, mut visit: impl FnMut(u64, &[u8]) -> bool) -> Result<(), ReadError> {
        if from > to {
            return Ok(());
        }
        if from <= self.rows_last
            && let Some(rows) = &self.rows
        {
            for row in rows.range(from..=to.min(self.rows_last))? {
                let (key, value) = row?;
                if !visit(key.value(), value.value()) {
                    return Ok(());
                }
            }
        }
        let from = from.max(self.rows_last.saturating_add(1));
        let Some(chunks) = &self.chunks else { return Ok(()) };
        if from > to {
            return Ok(());
        }
        let start = chunks.range(..=from)?.next_back().transpose()?.map_or(from, |(key, _)| key.value());
        for row in chunks.range(start..=to)? {
            let (key, value) = row?;
            for entry in chunks::entries(key.value(), value.value()) {
                let (seq, bytes) = entry.map_err(ReadError::Damaged)?;
                if seq > to {
                    return Ok(());
                }
                if seq >= from && !visit(seq, bytes) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The envelope of event `seq`, in canonical form (`codec::canonical_bytes`: what the
    /// audit API and Raft snapshots send, whichever form it is stored in).
    pub fn envelope(&self, seq: u64) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.stored(seq)?.map(codec::canonical_bytes))
    }

    /// The chain hash of event `seq` as its stored content gives it (recomputed and checked by
    /// `codec::open`; zeros for seq 0); `None` when the event is missing or does not check.
    /// What a projection snapshot's header is compared with.
    pub fn chain_hash(&self, seq: u64) -> Option<[u8; 32]> {
        if seq == 0 {
            return Some([0u8; 32]);
        }
        let stored = self.stored(seq).ok()??;
        codec::open(seq, &stored).ok().map(|opened| opened.hash)
    }

    /// Envelopes with seqs in `seqs`, in seq order, at most `max`, in canonical form.
    pub fn envelopes(&self, seqs: RangeInclusive<u64>, max: usize) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        self.visit(*seqs.start(), *seqs.end(), |seq, bytes| {
            out.push((seq, codec::canonical_bytes(bytes.to_vec())));
            out.len() < max
        })?;
        Ok(out)
    }

    /// Seqs of the index entries of (`kind`, `value`) within `seqs`, in order, at most `max`:
    /// one range scan of the value's contiguous key range (from the row that may hold the
    /// range's first seq).
    pub fn index_seqs(
        &self,
        kind: IndexKind,
        value: &[u8],
        seqs: RangeInclusive<u64>,
        max: usize,
    ) -> Result<Vec<u64>, ReadError> {
        if seqs.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let value = self.index_value(kind, value);
        let (from, to) = (*seqs.start(), *seqs.end());
        let first = self.index.last_row(&index::entry(kind, &value, 0), &index::entry(kind, &value, from))?;
        let start = first.as_ref().and_then(|seqs| seqs.first().copied()).unwrap_or(from);
        let mut out = Vec::new();
        self.index.rows(&index::entry(kind, &value, start), &index::entry(kind, &value, to), |row| {
            out.extend(row.iter().copied().filter(|seq| (from..=to).contains(seq)).take(max - out.len()));
            out.len() < max
        })?;
        Ok(out)
    }

    /// Does event `seq` have the index entry (`kind`, `value`)?
    pub fn index_contains(&self, kind: IndexKind, value: &[u8], seq: u64) -> Result<bool, ReadError> {
        let value = self.index_value(kind, value);
        let row = self.index.last_row(&index::entry(kind, &value, 0), &index::entry(kind, &value, seq))?;
        Ok(row.is_some_and(|seqs| seqs.contains(&seq)))
    }

    /// The last index entry of (`kind`, `value`) at or below `max_seq`.
    pub fn index_last(&self, kind: IndexKind, value: &[u8], max_seq: u64) -> Result<Option<u64>, ReadError> {
        let value = self.index_value(kind, value);
        let row = self.index.last_row(&index::entry(kind, &value, 0), &index::entry(kind, &value, max_seq))?;
        Ok(row.and_then(|seqs| seqs.into_iter().rev().find(|seq| *seq <= max_seq)))
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
        let mut read = 0;
        let mut stopped = None;
        self.visit(*seqs.start(), *seqs.end(), |seq, bytes| {
            if read >= max {
                stopped = Some(expected.checked_sub(1));
                return false;
            }
            read += 1;
            if seq != expected {
                out.push(expected);
                stopped = Some(Some(expected));
                return false;
            }
            let kind = Envelope::decode(bytes)
                .ok()
                .and_then(|envelope| Event::decode(envelope.event.as_slice()).ok())
                .map(|event| index::kind_number(&event));
            if kind.is_none_or(|kind| kinds.contains(&kind)) {
                out.push(seq);
            }
            expected = seq + 1;
            true
        })?;
        Ok((out, stopped.flatten()))
    }

    /// The seq of the last stored event (0: none).
    pub fn last_seq(&self) -> Result<u64, ReadError> {
        let Some(chunks) = &self.chunks else { return Ok(self.rows_last) };
        let Some((key, value)) = chunks.last()? else { return Ok(self.rows_last) };
        let count = chunks::count(key.value(), value.value()).map_err(ReadError::Damaged)?;
        Ok(self.rows_last.max(key.value() + count.saturating_sub(1)))
    }

    /// An upper bound of the events stored, from the tables' row counts (which redb keeps,
    /// so this reads no row): a row of `events` holds one, a chunk at most
    /// [`chunks::EVENTS_PER_CHUNK_MAX`] that the writer would have put in it. Whatever the
    /// keys of the rows say, so a damaged key cannot make it large.
    pub fn events_at_most(&self) -> Result<u64, ReadError> {
        let rows = match &self.rows {
            Some(rows) => rows.len()?,
            None => 0,
        };
        let chunks = match &self.chunks {
            Some(chunks) => chunks.len()?,
            None => 0,
        };
        Ok(rows.saturating_add(chunks.saturating_mul(chunks::EVENTS_PER_CHUNK_MAX)))
    }

    /// Calls `visit(seq, bytes)` for every stored event from `from_seq` on (its envelope as
    /// stored), in seq order, until it returns `false`.
    pub fn scan(&self, from_seq: u64, visit: impl FnMut(u64, &[u8]) -> bool) -> Result<(), ReadError> {
        self.visit(from_seq, u64::MAX, visit)
    }
}

/// The index table of the file: list rows (index version 4), one row per entry (versions up to
/// 3, still read by a read-only open of an older file), or none.
enum IndexTable {
    Lists(ReadOnlyTable<&'static [u8], &'static [u8]>),
    Entries(ReadOnlyTable<&'static [u8], ()>),
    Missing,
}

impl IndexTable {
    /// The table the file's `index_version` says holds its index.
    fn open(txn: &redb::ReadTransaction) -> Result<Self, ReadError> {
        let version = super::store::recorded_index_version(txn)?;
        let missing = |e: redb::TableError| match e {
            redb::TableError::TableDoesNotExist(_) => Ok(Self::Missing),
            e => Err(ReadError::from(StoreError::from(e))),
        };
        if version >= 4 {
            txn.open_table(INDEX_LISTS).map(Self::Lists).or_else(missing)
        } else {
            txn.open_table(INDEX).map(Self::Entries).or_else(missing)
        }
    }

    /// The seqs of each row with a key in `low..=high`, in key order, until `visit` says stop.
    fn rows(&self, low: &[u8], high: &[u8], mut visit: impl FnMut(&[u64]) -> bool) -> Result<(), ReadError> {
        match self {
            Self::Lists(table) => {
                for row in table.range(low..=high)? {
                    let (key, value) = row?;
                    if !visit(&list_seqs(key.value(), value.value())?) {
                        break;
                    }
                }
            }
            Self::Entries(table) => {
                for row in table.range(low..=high)? {
                    let (key, _) = row?;
                    if let Some(seq) = index::seq_of(key.value())
                        && !visit(&[seq])
                    {
                        break;
                    }
                }
            }
            Self::Missing => {}
        }
        Ok(())
    }

    /// The seqs of the last row with a key in `low..=high`.
    fn last_row(&self, low: &[u8], high: &[u8]) -> Result<Option<Vec<u64>>, ReadError> {
        match self {
            Self::Lists(table) => match table.range(low..=high)?.next_back().transpose()? {
                Some((key, value)) => Ok(Some(list_seqs(key.value(), value.value())?)),
                None => Ok(None),
            },
            Self::Entries(table) => {
                let last = table.range(low..=high)?.next_back().transpose()?;
                Ok(last.and_then(|(key, _)| index::seq_of(key.value())).map(|seq| vec![seq]))
            }
            Self::Missing => Ok(None),
        }
    }
}

/// The seqs of one list row; a row that does not parse is a damaged index.
fn list_seqs(key: &[u8], value: &[u8]) -> Result<Vec<u64>, ReadError> {
    index::split_entry(key)
        .and_then(|(_, first)| index::unpack(first, value))
        .ok_or_else(|| ReadError::Store(StoreError::Damaged("an index row does not parse".into())))
}
