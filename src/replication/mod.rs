//! Cluster mode's replication engine: openraft, pinned `=0.9.25`, behind this one module so a
//! later move to 0.10 touches nothing else. See DESIGN.md "Beyond one machine" and SPEC 8.
//!
//! One Raft entry is one group-commit batch of already decided, sealed events ([`RaftBatch`]);
//! every node applies committed entries to its own ledger. The log and vote live in the ledger's
//! redb file ([`crate::ledger::RaftLog`]); [`LogStore`] is openraft's view of them.
//!
//! **Invariant:** openraft types stop here. Outside `replication`, the log is the stored
//! protobuf of `raft.proto`; [`codec`] converts both ways, and the network will send entries in
//! that same versioned encoding.

pub mod codec;
pub mod log_store;
pub mod network;
pub mod node;
pub mod peers;
pub mod proposer;
pub mod read_index;
pub mod snapshot_data;
pub mod state_machine;
pub mod transfer;

pub use codec::CodecError;
pub use log_store::LogStore;
pub use snapshot_data::SnapshotData;

pub use crate::proto::ledger::RaftBatch;

/// The only batch payload version this build applies (`RaftBatch.version`).
pub const RAFT_BATCH_VERSION: u32 = 1;

openraft::declare_raft_types!(
    /// openraft's type configuration for tokenledger.
    pub TypeConfig:
        D = RaftBatch,
        R = Applied,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot_data::SnapshotData,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node's id in the cluster (`--node-id`).
pub type NodeId = u64;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
pub type StorageError = openraft::StorageError<NodeId>;

/// What a membership records about a node, besides its id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Where the node's Raft listener is reached (`host:port`), for the network to connect to.
    pub raft_addr: String,
}

/// What applying one entry answers to the proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The seq of the ledger head after the entry was applied (unchanged by blank and
    /// membership entries).
    pub head_seq: u64,
    /// The entry was a batch decided in an earlier term than its own (`RaftBatch.decided_term`):
    /// every node skipped it, so nothing of it was recorded.
    pub skipped: bool,
}

/// How long this node's Raft storage takes, read at scrape time (`/metrics`). One Raft round
/// holds the leader's log append, then a follower's, then the leader's apply, each waited for in
/// turn (openraft 0.9 sends an entry only after the leader's own append is durable), so these
/// two say where a round's time goes; a slow disk shows here first.
#[derive(Debug, Default)]
pub struct StorageTimes {
    /// Raft log appends (each one durable transaction of the ledger file).
    pub log_appends: std::sync::atomic::AtomicU64,
    /// Their total time, in microseconds, from the call to the durable commit.
    pub log_append_micros: std::sync::atomic::AtomicU64,
    /// State machine applies (committed entries written to the ledger and its projections).
    pub applies: std::sync::atomic::AtomicU64,
    /// Their total time, in microseconds.
    pub apply_micros: std::sync::atomic::AtomicU64,
}

impl StorageTimes {
    fn add(count: &std::sync::atomic::AtomicU64, micros: &std::sync::atomic::AtomicU64, since: std::time::Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        count.fetch_add(1, Relaxed);
        micros.fetch_add(u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    pub(crate) fn log_appended(&self, since: std::time::Instant) {
        Self::add(&self.log_appends, &self.log_append_micros, since);
    }

    pub(crate) fn applied(&self, since: std::time::Instant) {
        Self::add(&self.applies, &self.apply_micros, since);
    }
}
