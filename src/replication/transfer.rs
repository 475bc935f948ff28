//! Handing leadership to another voter (graceful shutdown of a leader, `cluster transfer-leader`).
//!
//! openraft 0.9 has no leader transfer, and its voters refuse any election while the leader's
//! lease (`election_timeout_max` since its last heartbeat) runs. So the hand-over is Raft's
//! TimeoutNow (thesis §3.10) adapted to the lease: the leader stops contesting, waits until the
//! candidate holds its whole log, stops its heartbeats and sends `TimeoutNow` to every voter; the
//! candidate calls an election as soon as the lease has run out, and the other voters hold their
//! own elections back meanwhile, so the candidate stands alone and wins at the first try. A
//! hand-over therefore takes about `election_timeout_max` plus a round trip, where losing a
//! leader without one takes that plus a random election timeout and may need several rounds.
//!
//! **Writes pause during a hand-over.** A voter also refuses a candidate whose log is behind its
//! own, and every entry a follower receives renews the lease it holds for the leader: a leader
//! that kept appending the writes it is sent would defeat its own hand-over (the candidate never
//! holds the whole log, and the voters never see the lease run out). So while a hand-over runs,
//! [`HandOver`] is set and the node's writer proposes nothing ([`super::proposer::Proposer`]
//! refuses as "not the leader": the callers fail closed and retry, as in any election).
//!
//! **Invariant:** nothing here can elect a node whose log lacks a committed entry: the election
//! is an ordinary Raft election, and voters grant only to a candidate at least as up to date.
//! Holding elections back is bounded (`hold`), so a candidate that dies mid-transfer delays the
//! next election by at most that.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::{Raft, ServerState};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::network::Network;
use super::{NodeId, TypeConfig};

/// Extra time after the lease before the candidate stands, for clock granularity and the last
/// heartbeat still in flight.
const LEASE_MARGIN: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("this node is not the leader")]
    NotLeader,
    #[error("node {0} is not a voter of the cluster")]
    NotAVoter(NodeId),
    #[error("node {target} did not catch up with the leader's log within {waited:?}")]
    NotCaughtUp { target: NodeId, waited: Duration },
    #[error("node {target} could not be told to stand: {problem}")]
    Unreachable { target: NodeId, problem: String },
    #[error("node {target} did not become leader within {waited:?}")]
    NotElected { target: NodeId, waited: Duration },
}

/// Set while this node hands its leadership over; its writer proposes nothing meanwhile. One per
/// node, shared by its [`Network`] (which `transfer_leadership` is given) and its proposer.
#[derive(Clone, Debug, Default)]
pub struct HandOver(Arc<AtomicBool>);

impl HandOver {
    /// True while a hand-over runs on this node.
    pub fn active(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, active: bool) {
        self.0.store(active, Ordering::Release);
    }
}

/// Hands this node's leadership to `target` within `timeout`. The node's writer proposes nothing
/// meanwhile ([`HandOver`]; a batch it was already proposing is still replicated and committed).
/// On failure this node takes part in elections again and the cluster elects as usual.
pub async fn transfer_leadership(
    raft: &Raft<TypeConfig>,
    network: &Network,
    target: NodeId,
    timeout: Duration,
) -> Result<(), TransferError> {
    let (me, voters, target_node) = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state != ServerState::Leader {
            return Err(TransferError::NotLeader);
        }
        let membership = metrics.membership_config.membership();
        let voters: Vec<(NodeId, super::NodeInfo)> =
            membership.voter_ids().filter_map(|id| membership.get_node(&id).map(|node| (id, node.clone()))).collect();
        let target_node = voters.iter().find(|(id, _)| *id == target).map(|(_, node)| node.clone());
        (metrics.id, voters, target_node)
    };
    if target == me {
        return Ok(());
    }
    let Some(_) = target_node else {
        return Err(TransferError::NotAVoter(target));
    };
    let started = Instant::now();
    let deadline = started + timeout;
    let writes = network.hand_over();
    writes.set(true);
    raft.runtime_config().elect(false);
    let outcome = hand_over(raft, network, me, target, &voters, deadline).await;
    raft.runtime_config().heartbeat(true);
    raft.runtime_config().elect(true);
    writes.set(false);
    outcome
}

async fn hand_over(
    raft: &Raft<TypeConfig>,
    network: &Network,
    me: NodeId,
    target: NodeId,
    voters: &[(NodeId, super::NodeInfo)],
    deadline: Instant,
) -> Result<(), TransferError> {
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let caught_up = raft
        .wait(Some(remaining()))
        .metrics(
            |m| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&target).cloned()).flatten();
                matched.map(|id| id.index) >= m.last_log_index
            },
            format!("node {target} holds the leader's whole log"),
        )
        .await;
    if caught_up.is_err() {
        return Err(TransferError::NotCaughtUp { target, waited: remaining() });
    }
    raft.runtime_config().heartbeat(false);
    let hold = remaining();
    // The candidate first: if it cannot be told, nobody holds back and nothing changed.
    let candidate = voters.iter().filter(|(id, _)| *id == target);
    let others = voters.iter().filter(|(id, _)| *id != target && *id != me);
    for (id, node) in candidate.chain(others) {
        if let Err(problem) = network.timeout_now(*id, node, target, hold).await {
            // Another voter that does not hear it will at worst contest the election.
            if *id == target {
                return Err(TransferError::Unreachable { target, problem });
            }
        }
    }
    let elected = raft
        .wait(Some(remaining()))
        .metrics(|m| m.current_leader == Some(target), format!("node {target} leads"))
        .await;
    match elected {
        Ok(_) => Ok(()),
        Err(_) => Err(TransferError::NotElected { target, waited: hold }),
    }
}

/// What a voter does on `TimeoutNow`: the candidate stands once the lease has run out (and
/// again until it leads or `hold` ends); the others keep out of elections for `hold`.
#[derive(Default)]
pub struct TimeoutNowHandler {
    /// The end of the latest hold, so an earlier hold's end does not cut a later one short.
    hold_until: Mutex<Option<Instant>>,
}

impl TimeoutNowHandler {
    pub fn handle(self: &std::sync::Arc<Self>, raft: Raft<TypeConfig>, me: NodeId, candidate: NodeId, hold: Duration) {
        let until = Instant::now() + hold;
        *self.hold_until.lock() = Some(until);
        let handler = self.clone();
        if candidate == me {
            tokio::spawn(async move { stand(raft, until).await });
        } else {
            raft.runtime_config().elect(false);
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                let mut hold_until = handler.hold_until.lock();
                if hold_until.is_some_and(|end| end <= Instant::now()) {
                    *hold_until = None;
                    raft.runtime_config().elect(true);
                }
            });
        }
    }
}

async fn stand(raft: Raft<TypeConfig>, until: Instant) {
    let config = raft.config().clone();
    tokio::time::sleep(Duration::from_millis(config.election_timeout_max) + LEASE_MARGIN).await;
    let settle = Duration::from_millis(config.election_timeout_min);
    while Instant::now() < until {
        if raft.metrics().borrow().state == ServerState::Leader {
            return;
        }
        if raft.trigger().elect().await.is_err() {
            return;
        }
        let _ = raft.wait(Some(settle)).state(ServerState::Leader, "the candidate leads").await;
    }
}
