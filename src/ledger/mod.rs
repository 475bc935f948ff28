//! The event ledger: the redb log (`store`), its byte format (`codec`, `index`), start-up
//! replay (`replay`) and the single writer with group commit (`writer`).
//!
//! **Invariant:** only the writer thread appends (in a cluster: the Raft state machine, through
//! `replicated`), and it applies events to the projections only after the transaction holding
//! them has committed durably.

pub(crate) mod chunks;
pub mod codec;
pub(crate) mod committed;
pub mod index;
pub mod progress;
pub(crate) mod purge;
pub(crate) mod raft_log;
pub mod raw;
pub(crate) mod reader;
pub(crate) mod replay;
pub mod replicated;
pub mod snapshot;
pub(crate) mod store;
pub(crate) mod token_ids;
pub(crate) mod writer;

use std::path::Path;

pub use crate::config::WriterConfig;
pub use raft_log::{RaftLog, RaftLogError, RaftLogState};
pub use reader::{LedgerReader, ReadError};
pub use replay::{ReplayError, ReplayReport, ReplayTick};
pub use store::{Append, Flusher, Store, StoreError};
pub use token_ids::TokenIdScheme;
pub use writer::{
    LedgerHandle, Proposal, ReplicatedCommit, ReplicatedRefusal, SubmitError, SubmitFailure, WriterStatus,
};

use crate::domain::tables::TablesConfig;
use crate::domain::{Recorded, State, apply};
use crate::proto::ledger::{Event, LedgerCreated, event};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the ledger failed verification, refusing to start: {0}")]
    Replay(#[from] ReplayError),
}

/// Opens the ledger at `path`, replays it into a fresh [`State`] and, for a new ledger,
/// records the `LedgerCreated` event.
pub fn open(
    path: &Path,
    now_ms: i64,
    progress: impl FnMut(ReplayTick),
) -> Result<(Store, State, ReplayReport), OpenError> {
    if !path.exists() {
        create(path, now_ms)?;
    }
    open_store(Store::open(path)?, now_ms, progress)
}

/// The projection snapshot a start (or `verify --compare-snapshot`) loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartedFrom {
    pub header: snapshot::SnapshotHeader,
    /// The seq of the latest `ProjectionSnapshotWritten` event that recorded this very file
    /// (`snapshot::record::find`); `None` when the ledger holds none (a crash between the
    /// rename and the event, or a file copied from elsewhere that passed every check).
    pub recorded_at_seq: Option<u64>,
}

/// [`open`], starting from the projection snapshot in `snapshot_dir` when there is a usable
/// one: it must be of this ledger (its seqs and chain hashes are the ledger's), whole and of
/// format 3; then only the events after the snapshot's state are read, each checked against
/// the chain from the snapshot's head on. Any other snapshot is ignored with a warning and the
/// ledger is replayed in full, as without one. Also returns which snapshot was used, and the
/// event that recorded it, if any (a snapshot without one is used all the same).
pub fn open_with_snapshot(
    path: &Path,
    snapshot_dir: &Path,
    now_ms: i64,
    mut progress: impl FnMut(ReplayTick),
) -> Result<(Store, State, ReplayReport, Option<StartedFrom>), OpenError> {
    if !path.exists() {
        let (store, state, report) = open(path, now_ms, progress)?;
        return Ok((store, state, report, None));
    }
    let store = Store::open(path)?;
    if let Some((state, report, started)) = tail_from_snapshot(&store, snapshot_dir, Some(now_ms), &mut progress)? {
        return Ok((store, state, report, Some(started)));
    }
    let (store, state, report) = open_store(store, now_ms, progress)?;
    Ok((store, state, report, None))
}

/// The state of `store` loaded from the projection snapshot in `snapshot_dir` and the ledger's
/// tail replayed after it (see [`open_with_snapshot`]), or `None` when there is no snapshot or
/// it cannot be used (warned): the caller then replays in full. Shared by a single node's start
/// and a cluster node's (`replicated::open_replica_with_snapshot`).
pub(crate) fn tail_from_snapshot(
    store: &Store,
    snapshot_dir: &Path,
    now_ms: Option<i64>,
    progress: impl FnMut(ReplayTick),
) -> Result<Option<(State, ReplayReport, StartedFrom)>, OpenError> {
    match from_snapshot(store, snapshot_dir) {
        Ok((mut state, started)) => {
            let report = replay_at(store, &mut state, None, now_ms, progress)?;
            Ok(Some((state, report, started)))
        }
        Err(snapshot::SnapshotFileError::Missing) => Ok(None),
        Err(error) => {
            tracing::warn!(%error, "the projection snapshot is not used: replaying the whole ledger");
            Ok(None)
        }
    }
}

/// The state of `dir`'s snapshot, if it is one of `store`'s ledger (see [`open_with_snapshot`]),
/// and the event that recorded the file.
fn from_snapshot(store: &Store, dir: &Path) -> Result<(State, StartedFrom), snapshot::SnapshotFileError> {
    use snapshot::SnapshotFileError;
    let file = snapshot::SnapshotFile::open(dir)?;
    if store.index_version().map_err(|e| SnapshotFileError::State(e.to_string()))? != index::INDEX_VERSION {
        // The index is rebuilt from a full replay.
        return Err(SnapshotFileError::Inconsistent("the ledger's index is to be rebuilt"));
    }
    let reader = store.reader().snapshot().map_err(|e| SnapshotFileError::State(e.to_string()))?;
    file.check_chain(|seq| reader.chain_hash(seq))?;
    let header = *file.header();
    // One index range read (the records after the covered seq), before the body is loaded.
    let recorded_at_seq =
        snapshot::record::find(&reader, &header).map_err(|e| SnapshotFileError::State(e.to_string()))?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1);
    let (tables, _, rest) = file.load_state(server_tables(), workers)?;
    if reader.chain_hash(rest.head.seq) != Some(rest.head.hash) {
        return Err(SnapshotFileError::NotThisLedger { seq: rest.head.seq });
    }
    Ok((State::from_parts(rest, tables), StartedFrom { header, recorded_at_seq }))
}

/// Creates a new ledger atomically: it is initialised (tables, `LedgerCreated`) under a
/// temporary name and renamed into place only when complete, so a crash during the first start
/// leaves either no ledger or a whole one, never a half-created file that cannot be opened.
fn create(path: &Path, now_ms: i64) -> Result<(), OpenError> {
    let temporary = path.with_extension("redb.init");
    let io = |e: std::io::Error| OpenError::Store(StoreError::Storage(redb::Error::Io(e)));
    if temporary.exists() {
        std::fs::remove_file(&temporary).map_err(io)?;
    }
    drop(open_store(Store::open(&temporary)?, now_ms, |_| {})?);
    std::fs::File::open(&temporary).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// [`open`] for a database on any redb storage backend (the crash tests use a backend that
/// models lost unsynced writes).
pub fn open_database(
    db: redb::Database,
    now_ms: i64,
    progress: impl FnMut(ReplayTick),
) -> Result<(Store, State, ReplayReport), OpenError> {
    open_store(Store::from_database(db)?, now_ms, progress)
}

fn open_store(
    store: Store,
    now_ms: i64,
    progress: impl FnMut(ReplayTick),
) -> Result<(Store, State, ReplayReport), OpenError> {
    let (store, mut state, mut report) = replay_store(store, Some(now_ms), progress)?;
    if state.head.seq == 0 {
        append_bootstrap(&store, &mut state, &created_event(), now_ms)?;
        report.events = 1;
        report.head = state.head.clone();
    }
    Ok((store, state, report))
}

/// The first event of every ledger. A single node records it when it creates its file; in a
/// cluster the leader's writer puts it at the head of the cluster's first batch, so every
/// node's chain starts with the same event.
pub(crate) fn created_event() -> Event {
    Event {
        kind: Some(event::Kind::LedgerCreated(LedgerCreated {
            format_version: store::FORMAT_VERSION,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
        })),
    }
}

/// Replays `store` into a fresh [`State`], checking the chain, and rebuilds the index when it
/// was built with another index version. Creates nothing: a cluster node's first events come
/// through Raft (`replicated::open_replica`).
pub(crate) fn replay_store(
    store: Store,
    now_ms: Option<i64>,
    progress: impl FnMut(ReplayTick),
) -> Result<(Store, State, ReplayReport), OpenError> {
    let mut state = State::with_tables(server_tables());
    // A rebuild takes each event's entries as the replay applies it (they depend on the
    // projections before the event), and commits only once the whole chain checked out.
    let mut rebuild =
        if store.index_version()? != index::INDEX_VERSION { Some(store.begin_index_rebuild()?) } else { None };
    let report = replay_at(&store, &mut state, rebuild.as_mut(), now_ms, progress)?;
    if let Some(rebuild) = rebuild {
        rebuild.finish(index::INDEX_VERSION)?;
    }
    Ok((store, state, report))
}

/// [`replay::replay`] for a start at `now_ms`: retry answers that are older than the retry
/// window at `now_ms` are not kept (the purge would drop them at once), which spares a full
/// replay a ring insert per issuance and the memory of every answer the ledger holds.
fn replay_at(
    store: &Store,
    state: &mut State,
    rebuild: Option<&mut store::IndexRebuild>,
    now_ms: Option<i64>,
    progress: impl FnMut(ReplayTick),
) -> Result<ReplayReport, ReplayError> {
    if let Some(now_ms) = now_ms {
        state.tables().set_retry_floor(now_ms);
    }
    let replayed = replay::replay(store, state, rebuild, progress);
    state.tables().set_retry_floor(i64::MIN);
    replayed
}

/// The token tables of a serving node: default sizes, hashes seeded per process (the interned
/// values and retry keys are chosen by callers).
pub(crate) fn server_tables() -> TablesConfig {
    TablesConfig { hash_seed: u64::from_le_bytes(crate::crypto::random_bytes()), ..TablesConfig::default() }
}

/// Records `event` before the writer runs: the one appender besides the writer, for the
/// events of start-up (`LedgerCreated` on a new ledger, the signing-key activation). Seals,
/// indexes, appends durably and only then applies, as the writer does for a batch of one.
pub fn append_bootstrap(store: &Store, state: &mut State, event: &Event, now_ms: i64) -> Result<(), StoreError> {
    let seq = state.head.seq + 1;
    let recorded_at_ms = now_ms.max(state.head.recorded_at_ms);
    let sealed = codec::seal(&state.head.hash, seq, recorded_at_ms, "", event);
    let hash = sealed.hash;
    let index_keys = index::keys_for(state, store.token_ids(), event, seq);
    store.append(&[Append { sealed, index_keys }])?;
    apply(state, Recorded { seq, recorded_at_ms, transaction_id: "", hash }, event);
    Ok(())
}

/// A stopped ledger opened for reading: the offline `verify` and `audit verify-checkpoint
/// --offline` commands. It never appends.
pub struct ReadOnlyLedger {
    store: Store,
}

/// Opens the existing ledger file at `path` for reading (it is not created if missing). Nothing
/// of the file changes, not even the format version of an older format
/// (`Store::from_database_read_only`).
pub fn open_read_only(path: &Path) -> Result<ReadOnlyLedger, StoreError> {
    let db = redb::Database::builder().set_cache_size(store::CACHE_BYTES).open(path)?;
    Ok(ReadOnlyLedger { store: Store::from_database_read_only(db)? })
}

impl ReadOnlyLedger {
    /// Checks every event and link of the chain and replays it into a fresh [`State`].
    pub fn replay(&self, progress: impl FnMut(ReplayTick)) -> Result<(State, ReplayReport), ReplayError> {
        let mut state = State::default();
        let report = replay::replay(&self.store, &mut state, None, progress)?;
        Ok((state, report))
    }

    /// The state a start-up would build from `dir`'s projection snapshot: the snapshot loaded
    /// and the ledger's tail after it replayed (`verify --compare-snapshot`).
    /// Also says which event recorded the file, if any.
    pub fn replay_from_snapshot(&self, dir: &Path) -> Result<(State, StartedFrom, ReplayReport), String> {
        let (mut state, started) = from_snapshot(&self.store, dir).map_err(|e| e.to_string())?;
        let report = replay::replay(&self.store, &mut state, None, |_| {}).map_err(|e| e.to_string())?;
        Ok((state, started, report))
    }

    /// The format version recorded in the file.
    pub fn format_version(&self) -> Result<u32, StoreError> {
        self.store.format_version()
    }

    /// A consistent read view of the committed events, for the audit queries.
    pub fn snapshot(&self) -> Result<reader::Snapshot, ReadError> {
        self.store.reader().snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/design.md keeps the format log: a build whose format or index version has no row
    /// there fails, so a version bump cannot ship undocumented.
    #[test]
    fn the_design_document_has_a_row_for_the_current_versions() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/design.md");
        let design = std::fs::read_to_string(path).expect("docs/design.md");
        let table = design.split("## Format versions").nth(1).expect("a \"Format versions\" section");
        let row = format!("| {} | {} |", store::FORMAT_VERSION, index::INDEX_VERSION);
        assert!(
            table.lines().any(|line| line.starts_with(&row)),
            "docs/design.md has no format-log row for format {} and index {}",
            store::FORMAT_VERSION,
            index::INDEX_VERSION
        );
        let raft = format!("raft log format {}", raft_log::RAFT_LOG_FORMAT_VERSION);
        assert!(table.contains(&raft), "docs/design.md has no format-log row for {raft}");
        let tables = format!("## redb tables (format version {})", store::FORMAT_VERSION);
        assert!(
            design.contains(&tables),
            "docs/design.md does not describe the tables of format {}",
            store::FORMAT_VERSION
        );
    }
}
