//! The Raft log and vote of cluster mode, in two tables of the ledger's redb file: `raft_log`
//! (index → encoded `RaftEntry`) and `raft_meta` (format version, vote, committed and last purged
//! log ids). See docs/design.md, "The Raft log".
//!
//! This is the blocking, openraft-free half of the log store: entries, log ids and votes are the
//! stored protobuf messages (`proto/tokenledger/ledger/v1/raft.proto`); `replication::log_store`
//! converts them to openraft's types and calls this on the blocking pool.
//!
//! **Invariant:** every write that openraft must see as durable (append, truncate, purge, vote)
//! is one redb transaction committed with `Durability::Immediate`, so it has reached the disk
//! when the call returns. Only `save_committed` is not made durable by itself (openraft allows a
//! stale committed id: it only re-applies fewer entries at start-up).
//!
//! **Invariant:** an entry is never overwritten in place: `append` refuses an index at or below
//! the last stored one (openraft removes conflicting entries with `truncate_from` first, so a
//! stale tail cannot survive behind a rewritten entry), and the entries of one append are
//! consecutive. Gaps between appends are openraft's to avoid (its storage suite writes some on
//! purpose, below the purged index and after it), so they are not refused here.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use prost::Message as _;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::proto::ledger::{RaftApplied, RaftEntry, RaftEntryHead, RaftLogId, RaftSnapshotMeta, RaftVote};

/// Version of the raft tables' layout and entry encoding; see the format log in docs/design.md.
pub const RAFT_LOG_FORMAT_VERSION: u32 = 1;

pub(crate) const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(crate) const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const META_FORMAT: &str = "format_version";
const META_VOTE: &str = "vote";
const META_COMMITTED: &str = "committed";
const META_PURGED: &str = "last_purged";
pub(crate) const META_APPLIED: &str = "applied";
const META_SNAPSHOT: &str = "snapshot";

#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    #[error("raft log format {found} is not supported by this build (supports {RAFT_LOG_FORMAT_VERSION})")]
    UnsupportedFormat { found: u32 },
    #[error("raft log entry at index {index} is corrupt: {problem}")]
    CorruptEntry { index: u64, problem: &'static str },
    #[error("raft_meta `{key}` is corrupt")]
    CorruptMeta { key: &'static str },
    #[error("raft log entry {index} would overwrite the log, which ends at {last} (truncate first)")]
    Overwrite { index: u64, last: u64 },
    #[error("raft log entry {index} does not follow the previous one of its append (expected index {expected})")]
    NotConsecutive { index: u64, expected: u64 },
    #[error("raft log storage error: {0}")]
    Storage(#[from] redb::Error),
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for RaftLogError {
            fn from(e: $t) -> Self {
                RaftLogError::Storage(e.into())
            }
        }
    )*};
}
storage_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Where the log stands: the last purged id, and the id of the last entry (the last purged id
/// when no entry is left).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftLogState {
    pub last_purged: Option<RaftLogId>,
    pub last: Option<RaftLogId>,
}

/// A handle on the raft tables of one ledger file, from [`Store::raft_log`](super::Store::raft_log).
/// Cheap to clone; clones share the database. It keeps the file open: drop every handle (stop
/// Raft) before [`Store::close`](super::Store::close), which otherwise waits for them.
#[derive(Clone)]
pub struct RaftLog {
    /// The ledger's database; redb serialises this handle's write transactions with the writer's.
    db: Arc<Database>,
}

impl RaftLog {
    /// Creates the raft tables on first use and checks their format version.
    pub(super) fn open(db: Arc<Database>) -> Result<Self, RaftLogError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(RAFT_META)?;
            let found = meta.get(META_FORMAT)?.map(|v| read_u32(v.value()));
            match found {
                None => {
                    meta.insert(META_FORMAT, RAFT_LOG_FORMAT_VERSION.to_be_bytes().as_slice())?;
                }
                Some(Some(RAFT_LOG_FORMAT_VERSION)) => {}
                Some(other) => return Err(RaftLogError::UnsupportedFormat { found: other.unwrap_or(0) }),
            }
            txn.open_table(RAFT_LOG)?;
        }
        txn.commit()?;
        Ok(Self { db })
    }

    /// Appends `entries` (consecutive, and after the last stored entry) in one durable
    /// transaction: they are on disk when this returns.
    pub fn append(&self, entries: &[RaftEntry]) -> Result<(), RaftLogError> {
        let Some(first) = entries.first() else { return Ok(()) };
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut log = txn.open_table(RAFT_LOG)?;
            let first_index = index_of(first)?;
            if let Some(last) = log.last()?.map(|(key, _)| key.value())
                && first_index <= last
            {
                return Err(RaftLogError::Overwrite { index: first_index, last });
            }
            let mut expected = first_index;
            // One buffer for the whole call: a fresh one per entry (a batch of events, KiBs)
            // kept the allocator handing out new pages, which the kernel zeroes.
            let mut encoded = Vec::new();
            for entry in entries {
                let index = index_of(entry)?;
                if entry.payload.is_none() {
                    return Err(RaftLogError::CorruptEntry { index, problem: "it has no payload" });
                }
                if index != expected {
                    return Err(RaftLogError::NotConsecutive { index, expected });
                }
                encoded.clear();
                entry
                    .encode(&mut encoded)
                    .map_err(|_| RaftLogError::CorruptEntry { index, problem: "it is too large to encode" })?;
                log.insert(index, encoded.as_slice())?;
                expected = index + 1;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The entries in `range` that are present, in index order.
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<RaftEntry>, RaftLogError> {
        self.entries_limited(range, usize::MAX)
    }

    /// The first entries in `range`, stopping once their encoded size reaches `bytes_max`; at
    /// least one entry when the range holds one, so a reader always makes progress.
    pub fn entries_limited(
        &self,
        range: impl RangeBounds<u64>,
        bytes_max: usize,
    ) -> Result<Vec<RaftEntry>, RaftLogError> {
        // A range that ends before it starts holds nothing; answer it without handing redb an
        // inverted range.
        if is_empty(&range) {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read()?;
        let log = txn.open_table(RAFT_LOG)?;
        let mut entries = Vec::new();
        let mut bytes = 0usize;
        for row in log.range(range)? {
            let (key, value) = row?;
            if bytes >= bytes_max {
                break;
            }
            bytes = bytes.saturating_add(value.value().len());
            entries.push(decode_entry(key.value(), value.value())?);
        }
        Ok(entries)
    }

    /// The last purged log id and the last log id, read from one snapshot.
    pub fn state(&self) -> Result<RaftLogState, RaftLogError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(RAFT_META)?;
        let log = txn.open_table(RAFT_LOG)?;
        let last_purged = read_log_id(&meta, META_PURGED)?;
        let last = match log.last()? {
            Some((key, value)) => Some(decode_head(key.value(), value.value())?),
            None => last_purged,
        };
        Ok(RaftLogState { last_purged, last })
    }

    /// Removes every entry at `index` and after (entries that conflict with the leader's).
    pub fn truncate_from(&self, index: u64) -> Result<(), RaftLogError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(RAFT_LOG)?.retain_in(index.., |_, _| false)?;
        txn.commit()?;
        Ok(())
    }

    /// Removes every entry up to `upto.index` (included) and records `upto` as the last purged
    /// id, in one transaction, so the two never disagree. A purge below the last one does nothing.
    pub fn purge_upto(&self, upto: &RaftLogId) -> Result<(), RaftLogError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(RAFT_META)?;
            if read_log_id(&meta, META_PURGED)?.is_some_and(|purged| purged.index >= upto.index) {
                return Ok(());
            }
            meta.insert(META_PURGED, upto.encode_to_vec().as_slice())?;
            txn.open_table(RAFT_LOG)?.retain_in(..=upto.index, |_, _| false)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Saves the vote durably: it is on disk when this returns.
    pub fn save_vote(&self, vote: &RaftVote) -> Result<(), RaftLogError> {
        self.write_meta(META_VOTE, Some(vote.encode_to_vec()), Durability::Immediate)
    }

    pub fn vote(&self) -> Result<Option<RaftVote>, RaftLogError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(RAFT_META)?;
        let Some(value) = meta.get(META_VOTE)? else { return Ok(None) };
        let vote = RaftVote::decode(value.value()).map_err(|_| RaftLogError::CorruptMeta { key: META_VOTE })?;
        Ok(Some(vote))
    }

    /// Records the committed log id. Not made durable by itself: it reaches the disk with the
    /// next durable write (an append or a vote), which is all openraft asks of it.
    pub fn save_committed(&self, committed: Option<&RaftLogId>) -> Result<(), RaftLogError> {
        self.write_meta(META_COMMITTED, committed.map(|id| id.encode_to_vec()), Durability::None)
    }

    pub fn committed(&self) -> Result<Option<RaftLogId>, RaftLogError> {
        let txn = self.db.begin_read()?;
        read_log_id(&txn.open_table(RAFT_META)?, META_COMMITTED)
    }

    /// Records how far the state machine applied, when no events came with it (blank and
    /// membership entries, batches applied before). Durable: a purge may follow.
    pub fn save_applied(&self, applied: &RaftApplied) -> Result<(), RaftLogError> {
        self.write_meta(META_APPLIED, Some(applied.encode_to_vec()), Durability::Immediate)
    }

    pub fn applied(&self) -> Result<Option<RaftApplied>, RaftLogError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(RAFT_META)?;
        let Some(value) = meta.get(META_APPLIED)? else { return Ok(None) };
        RaftApplied::decode(value.value()).map(Some).map_err(|_| RaftLogError::CorruptMeta { key: META_APPLIED })
    }

    /// Records the current snapshot durably (its data is the ledger range it names).
    pub fn save_snapshot(&self, snapshot: &RaftSnapshotMeta) -> Result<(), RaftLogError> {
        self.write_meta(META_SNAPSHOT, Some(snapshot.encode_to_vec()), Durability::Immediate)
    }

    pub fn snapshot(&self) -> Result<Option<RaftSnapshotMeta>, RaftLogError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(RAFT_META)?;
        let Some(value) = meta.get(META_SNAPSHOT)? else { return Ok(None) };
        RaftSnapshotMeta::decode(value.value()).map(Some).map_err(|_| RaftLogError::CorruptMeta { key: META_SNAPSHOT })
    }

    fn write_meta(&self, key: &str, value: Option<Vec<u8>>, durability: Durability) -> Result<(), RaftLogError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)?;
        {
            let mut meta = txn.open_table(RAFT_META)?;
            match value {
                Some(bytes) => meta.insert(key, bytes.as_slice()).map(drop)?,
                None => meta.remove(key).map(drop)?,
            }
        }
        txn.commit()?;
        Ok(())
    }
}

fn index_of(entry: &RaftEntry) -> Result<u64, RaftLogError> {
    // An entry to append without a log id is a programming error upstream; refuse it whole.
    entry.log_id.as_ref().map(|id| id.index).ok_or(RaftLogError::CorruptEntry { index: 0, problem: "it has no log id" })
}

fn decode_entry(key: u64, bytes: &[u8]) -> Result<RaftEntry, RaftLogError> {
    let corrupt = |problem| RaftLogError::CorruptEntry { index: key, problem };
    let entry = RaftEntry::decode(bytes).map_err(|_| corrupt("it does not decode"))?;
    match &entry.log_id {
        None => return Err(corrupt("it has no log id")),
        Some(id) if id.index != key => return Err(corrupt("it holds another index")),
        Some(_) => {}
    }
    if entry.payload.is_none() {
        return Err(corrupt("it has no payload this build knows"));
    }
    Ok(entry)
}

/// The log id of a stored entry, without decoding its payload.
fn decode_head(key: u64, bytes: &[u8]) -> Result<RaftLogId, RaftLogError> {
    let corrupt = |problem| RaftLogError::CorruptEntry { index: key, problem };
    let head = RaftEntryHead::decode(bytes).map_err(|_| corrupt("it does not decode"))?;
    match head.log_id {
        Some(id) if id.index == key => Ok(id),
        Some(_) => Err(corrupt("it holds another index")),
        None => Err(corrupt("it has no log id")),
    }
}

fn read_log_id(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &'static str,
) -> Result<Option<RaftLogId>, RaftLogError> {
    let Some(value) = meta.get(key)? else { return Ok(None) };
    RaftLogId::decode(value.value()).map(Some).map_err(|_| RaftLogError::CorruptMeta { key })
}

fn is_empty(range: &impl RangeBounds<u64>) -> bool {
    let start = match range.start_bound() {
        Bound::Included(&s) => Some(s),
        Bound::Excluded(&s) => s.checked_add(1),
        Bound::Unbounded => Some(0),
    };
    let Some(start) = start else { return true };
    match range.end_bound() {
        Bound::Included(&e) => start > e,
        Bound::Excluded(&e) => start >= e,
        Bound::Unbounded => false,
    }
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}
