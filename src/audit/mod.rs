//! Audit: reading the ledger as history. Event queries and the live stream's pages
//! (`query`), one token's history and point-in-time status (`history`), blast radius
//! (`blast`), hash-chain verification (`chain`), signed checkpoints (`checkpoint`), and how
//! events are shown (`view`, `time`).
//!
//! **Invariant:** audit only reads. It reads committed events from redb snapshots and the
//! projections; every change it leads to (bulk and blast-radius revocation) goes through the
//! writer as a command like any other.

pub(crate) mod blast;
pub(crate) mod chain;
pub(crate) mod checkpoint;
pub(crate) mod history;
pub(crate) mod query;
pub(crate) mod time;
pub(crate) mod view;

pub use chain::ChainWalker;
pub use checkpoint::{CHECKPOINT_KEY_FILE, Checkpoint, CheckpointBody};
pub use view::redact;

/// What the audit side reads, under its own names: the api and the CLI reach the ledger's
/// storage only through these and the queries above.
pub use crate::ledger::ReadError;
pub use crate::ledger::codec::{Opened, open as open_envelope};
pub use crate::ledger::reader::Snapshot;
