//! openraft 0.9's log storage (`RaftLogStorage` + `RaftLogReader`, storage-v2) over the
//! ledger's raft tables ([`RaftLog`]). Every call runs the blocking redb work on tokio's
//! blocking pool and waits for it.
//!
//! **Invariant:** `append` reports the entries flushed (`LogFlushed::log_io_completed`) only after
//! the redb transaction holding them committed with `Durability::Immediate`, so openraft never
//! counts this node towards a quorum for an entry a power loss could take away.
//!
//! Writes are serialised by openraft itself (every write takes `&mut self` and is awaited to the
//! end, the commit included); readers (`get_log_reader`, replication tasks) read redb snapshots
//! and never wait for a write.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError};

use super::codec::{self, CodecError};
use super::{Entry, LogId, StorageError, StorageTimes, TypeConfig, Vote};
use crate::ledger::{RaftLog, RaftLogError};

/// The most entry bytes one `limited_get_log_entries` returns (at least one entry), so one
/// replication message stays bounded whatever openraft's entry count limit is.
pub const ENTRIES_READ_BYTES_MAX: usize = 8 << 20;

/// openraft's handle on this node's Raft log and vote. Cheap to clone; the clones are the log
/// readers openraft's replication tasks use.
#[derive(Clone)]
pub struct LogStore {
    /// The raft tables of this node's ledger file.
    log: RaftLog,
    /// Where appends' times are counted.
    times: Arc<StorageTimes>,
}

impl LogStore {
    pub fn new(log: RaftLog) -> Self {
        Self { log, times: Arc::default() }
    }

    /// This store, counting its appends in `times` (shared with the state machine's).
    pub fn with_times(mut self, times: Arc<StorageTimes>) -> Self {
        self.times = times;
        self
    }

    /// Runs `op` on the blocking pool, so a commit's fsync never stalls a runtime worker.
    async fn blocking<T, F>(&self, op: F) -> Result<T, AnyError>
    where
        T: Send + 'static,
        F: FnOnce(&RaftLog) -> Result<T, Failure> + Send + 'static,
    {
        let log = self.log.clone();
        match tokio::task::spawn_blocking(move || op(&log)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Failure::Log(e))) => Err(AnyError::new(&e)),
            Ok(Err(Failure::Codec(e))) => Err(AnyError::new(&e)),
            Err(join) => Err(AnyError::new(&join)),
        }
    }

    async fn read_entries(
        &self,
        range: (Bound<u64>, Bound<u64>),
        bytes_max: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        self.blocking(move |log| {
            let stored = log.entries_limited(range, bytes_max)?;
            Ok(stored.into_iter().map(codec::entry_from_stored).collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .map_err(|e| StorageIOError::read_logs(e).into())
    }
}

/// Why a blocking operation failed.
enum Failure {
    Log(RaftLogError),
    Codec(CodecError),
}

impl From<RaftLogError> for Failure {
    fn from(e: RaftLogError) -> Self {
        Failure::Log(e)
    }
}

impl From<CodecError> for Failure {
    fn from(e: CodecError) -> Self {
        Failure::Codec(e)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.read_entries(range, usize::MAX).await
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        self.read_entries((Bound::Included(start), Bound::Excluded(end)), ENTRIES_READ_BYTES_MAX).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.blocking(|log| Ok(log.state()?)).await.map_err(StorageIOError::read_logs)?;
        Ok(LogState {
            last_purged_log_id: state.last_purged.as_ref().map(codec::log_id_from_stored),
            last_log_id: state.last.as_ref().map(codec::log_id_from_stored),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let stored = codec::vote_to_stored(vote);
        self.blocking(move |log| Ok(log.save_vote(&stored)?)).await.map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let stored = self.blocking(|log| Ok(log.vote()?)).await.map_err(StorageIOError::read_vote)?;
        Ok(stored.as_ref().map(codec::vote_from_stored))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let stored = committed.as_ref().map(codec::log_id_to_stored);
        self.blocking(move |log| Ok(log.save_committed(stored.as_ref())?))
            .await
            .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let stored = self.blocking(|log| Ok(log.committed()?)).await.map_err(StorageIOError::read)?;
        Ok(stored.as_ref().map(codec::log_id_from_stored))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let stored: Vec<_> = entries.into_iter().map(codec::entry_to_stored).collect();
        // `append` returns after the durable commit, so the entries are readable when it
        // returns and on disk when the callback runs, as storage-v2 requires.
        match self.blocking(move |log| Ok(log.append(&stored)?)).await {
            Ok(()) => {
                self.times.log_appended(started);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let index = log_id.index;
        self.blocking(move |log| Ok(log.truncate_from(index)?))
            .await
            .map_err(|e| StorageIOError::write_log_entry(log_id, e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let stored = codec::log_id_to_stored(&log_id);
        self.blocking(move |log| Ok(log.purge_upto(&stored)?))
            .await
            .map_err(|e| StorageIOError::write_log_entry(log_id, e).into())
    }
}
