//! The event ledger: the redb log (`store`), its byte format (`codec`, `index`), start-up
//! replay (`replay`) and the single writer with group commit (`writer`).
//!
//! **Invariant:** only the writer thread appends (in a cluster: the Raft state machine, through
//! `replicated`), and it applies events to the projections only after the transaction holding
//! them has committed durably.

pub mod codec;
pub mod index;
pub mod raft_log;
pub mod reader;
pub mod replay;
pub mod replicated;
pub mod store;
pub mod token_ids;
pub mod writer;

use std::path::Path;

use prost::Message as _;

pub use raft_log::{RaftLog, RaftLogError, RaftLogState};
pub use reader::{LedgerReader, ReadError};
pub use replay::{ReplayError, ReplayReport};
pub use store::{Store, StoreError};
pub use writer::{LedgerHandle, SubmitError, WriterConfig};

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
pub fn open(path: &Path, now_ms: i64, progress: impl FnMut(u64)) -> Result<(Store, State, ReplayReport), OpenError> {
    if !path.exists() {
        create(path, now_ms)?;
    }
    open_store(Store::open(path)?, now_ms, progress)
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
    progress: impl FnMut(u64),
) -> Result<(Store, State, ReplayReport), OpenError> {
    open_store(Store::from_database(db)?, now_ms, progress)
}

fn open_store(store: Store, now_ms: i64, progress: impl FnMut(u64)) -> Result<(Store, State, ReplayReport), OpenError> {
    let mut state = State::default();
    let reindex = store.index_version()? != index::INDEX_VERSION;
    let (mut report, keys) = replay::replay(&store, &mut state, reindex, progress)?;
    if reindex {
        store.rebuild_index(keys.into_iter(), index::INDEX_VERSION)?;
    }
    if state.head.seq == 0 {
        let created = Event {
            kind: Some(event::Kind::LedgerCreated(LedgerCreated {
                format_version: store::FORMAT_VERSION,
                software_version: env!("CARGO_PKG_VERSION").to_owned(),
            })),
        };
        let sealed = codec::seal(&state.head.hash, 1, now_ms, "", &created);
        let index_keys = index::keys_for(&state, store.token_ids(), &created, 1);
        let hash = sealed.hash;
        store.append(&[store::Append { sealed, index_keys }])?;
        apply(&mut state, Recorded { seq: 1, recorded_at_ms: now_ms, transaction_id: "", hash }, &created);
        report.events = 1;
        report.head = state.head.clone();
    }
    Ok((store, state, report))
}

/// Decodes one stored envelope's event, for readers outside the replay path.
pub fn decode_event(bytes: &[u8]) -> Option<Event> {
    Event::decode(bytes).ok()
}
