//! A running cluster node as the rest of the server sees it: its Raft, its read confirmations,
//! its network and the voters it was configured with (SPEC 8). `server::cluster` starts it; the
//! api asks it who leads, confirms reads with it, and changes the membership through it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::{Raft, ServerState};

use super::network::{ForwardSlot, Network};
use super::read_index::ReadIndex;
use super::{NodeId, NodeInfo, TypeConfig};

/// A node's part in the cluster, as `cluster status` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Raft on this node has stopped (shutdown, or a storage error or divergence).
    Stopped,
}

impl Role {
    pub fn of(state: ServerState) -> Role {
        match state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Stopped,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Stopped => "stopped",
        }
    }
}

/// What this node knows of the cluster at one moment (`cluster status`, `/readyz`, metrics).
#[derive(Clone, Debug)]
pub struct NodeView {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    /// The Raft log index this node has applied (0: none).
    pub applied_index: u64,
    /// The last index in this node's log.
    pub last_log_index: u64,
    /// Every member: id, Raft address, voter or learner.
    pub members: Vec<(NodeId, NodeInfo, bool)>,
    /// On the leader: the log index each follower and learner is known to hold.
    pub matched: BTreeMap<NodeId, u64>,
    /// True once the cluster has been initialised (the node knows a membership).
    pub initialised: bool,
}

impl NodeView {
    /// The voter other than this node that holds the most of the log: who should lead next
    /// (graceful shutdown, `cluster transfer-leader` without a target).
    pub fn best_successor(&self) -> Option<NodeId> {
        self.members
            .iter()
            .filter(|(id, _, voter)| *voter && *id != self.id)
            .max_by_key(|(id, _, _)| self.matched.get(id).copied().unwrap_or(0))
            .map(|(id, _, _)| *id)
    }
}

pub struct ClusterNode {
    pub id: NodeId,
    pub raft: Raft<TypeConfig>,
    pub reads: ReadIndex,
    pub network: Network,
    /// The voters of `--peers`, this node included: what `cluster init` forms.
    pub voters: BTreeMap<NodeId, NodeInfo>,
    /// How long a leader hand-over may take (shutdown, `cluster transfer-leader`).
    pub transfer_timeout: Duration,
    /// Where the server puts what answers the writes followers pass on to this node.
    pub forwarder: ForwardSlot,
    /// Makes what the state machine applied durable (it applies without an fsync of its own).
    pub ledger_flush: crate::ledger::Flusher,
    /// How long the Raft log's appends and the state machine's applies take.
    pub storage_times: std::sync::Arc<super::StorageTimes>,
}

impl ClusterNode {
    pub fn view(&self) -> NodeView {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: Vec<(NodeId, NodeInfo, bool)> =
            membership.nodes().map(|(id, node)| (*id, node.clone(), voter_ids.contains(id))).collect();
        let role = Role::of(metrics.state);
        let matched = metrics
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, log)| (*id, log.map_or(0, |l| l.index))).collect())
            .unwrap_or_default();
        NodeView {
            id: self.id,
            role,
            term: metrics.current_term,
            // A stopped Raft keeps the last leader it knew in its metrics: not a leader to use.
            leader: metrics.current_leader.filter(|_| role != Role::Stopped),
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            initialised: !members.is_empty(),
            members,
            matched,
        }
    }

    /// True when some node leads (this one or another) as far as this node knows.
    pub fn has_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state != ServerState::Shutdown && metrics.current_leader.is_some()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Raft has stopped on this node while the server runs: its state machine refused an entry
    /// (a divergence) or its storage failed. Such a node takes no writes and confirms no reads.
    pub fn is_halted(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Shutdown
    }
}
