//! Linearizable reads on any node (SPEC 8): before a node answers "active", it learns from the
//! leader the index of everything committed before the read began (Raft §6.4, ReadIndex), and
//! waits until it has applied that far. Never a lease read: the leader confirms its leadership
//! with a quorum for every round.
//!
//! **Batching.** Reads do not each cost a round trip: concurrent reads share one *round* (one
//! leadership confirmation, one `ReadIndex` call to the leader from a follower). A read joins the
//! round that starts next, never one already in flight, because a confirmation that began
//! before the read arrived does not cover writes acknowledged between its start and the read's
//! arrival. Rounds run back to back, at most one per `window` (1 ms by default), so a node sends
//! the leader about one call per window however many reads it serves. The leader answers
//! followers' calls through its own [`ReadIndex`], so it too confirms about once per window, for
//! its own reads and all its followers' together.
//!
//! **Invariant:** [`ReadIndex::confirm`] returns `Ok` only after this node's state machine has
//! applied at least the read index of a round that started after `confirm` was called, and
//! never once Raft on this node has stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::{Raft, ServerState};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::network::Network;
use super::{LogId, NodeId, TypeConfig};

/// Why a read could not be confirmed: the caller answers 503 `CMN_90000` with `Retry-After`
/// (gRPC `UNAVAILABLE`), never a stale "active".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadIndexError {
    #[error("no leader is known to this node")]
    NoLeader,
    #[error("the leader did not confirm the read: {0}")]
    Unconfirmed(String),
    #[error("the read was not confirmed within {0:?}")]
    Timeout(Duration),
    #[error("this node is shutting down")]
    ShuttingDown,
}

/// What a node counts of its read confirmations (read at scrape time).
#[derive(Debug, Default)]
pub struct ReadIndexStats {
    /// Rounds run (each one leadership confirmation, local or at the leader).
    pub rounds: AtomicU64,
    /// Rounds that failed.
    pub rounds_failed: AtomicU64,
    /// Reads confirmed.
    pub confirmed: AtomicU64,
    /// Reads refused (no leader, no confirmation, timeout).
    pub refused: AtomicU64,
    /// Sum of the confirmed reads' waits, in microseconds (with `confirmed`, the mean).
    pub confirm_micros: AtomicU64,
}

/// The outcome of one round: the read log id (`None`: nothing committed yet) or why there is none.
type Outcome = Result<Option<LogId>, ReadIndexError>;

/// A node's read confirmations. Cheap to clone.
#[derive(Clone)]
pub struct ReadIndex {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft<TypeConfig>,
    network: Network,
    window: Duration,
    timeout: Duration,
    rounds: Mutex<Rounds>,
    stats: ReadIndexStats,
}

#[derive(Default)]
struct Rounds {
    /// A round is running (its task owns its sender).
    running: bool,
    /// The round that starts when the running one ends, with the reads that arrived meanwhile.
    next: Option<watch::Sender<Option<Outcome>>>,
}

impl ReadIndex {
    /// Confirmations for `raft`'s node, asking the leader through `network`; at most one round
    /// per `window`, and no read waits longer than `timeout` in all.
    pub fn new(raft: Raft<TypeConfig>, network: Network, window: Duration, timeout: Duration) -> Self {
        let inner =
            Inner { raft, network, window, timeout, rounds: Mutex::default(), stats: ReadIndexStats::default() };
        Self { inner: Arc::new(inner) }
    }

    pub fn stats(&self) -> &ReadIndexStats {
        &self.inner.stats
    }

    /// Waits until this node has applied every entry committed before this call, as the leader
    /// confirms; answers the read log id it waited for.
    pub async fn confirm(&self) -> Result<Option<LogId>, ReadIndexError> {
        let started = Instant::now();
        let timeout = self.inner.timeout;
        let confirmed = tokio::time::timeout(timeout, async {
            let read = self.read_index().await?;
            if let Some(read) = read {
                self.inner
                    .raft
                    .wait(None)
                    .applied_index_at_least(Some(read.index), "read index")
                    .await
                    .map_err(|_| ReadIndexError::ShuttingDown)?;
            }
            // A node whose Raft stopped (a divergence, a storage error) may hold more than the
            // read index of a history that is not the cluster's: it confirms nothing.
            if self.inner.raft.metrics().borrow().state == ServerState::Shutdown {
                return Err(ReadIndexError::ShuttingDown);
            }
            Ok(read)
        })
        .await
        .unwrap_or(Err(ReadIndexError::Timeout(timeout)));
        let stats = &self.inner.stats;
        match &confirmed {
            Ok(_) => {
                stats.confirmed.fetch_add(1, Ordering::Relaxed);
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                stats.confirm_micros.fetch_add(micros, Ordering::Relaxed);
            }
            Err(_) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        confirmed
    }

    /// The read index of a round that starts after this call (without waiting to apply it).
    /// The leader answers followers' `ReadIndex` calls with this.
    pub async fn read_index(&self) -> Result<Option<LogId>, ReadIndexError> {
        let mut outcome = self.join();
        match outcome.wait_for(Option::is_some).await {
            Ok(value) => value.clone().unwrap_or(Err(ReadIndexError::ShuttingDown)),
            // The round's task ended without an answer: only when the runtime shuts down.
            Err(_) => Err(ReadIndexError::ShuttingDown),
        }
    }

    /// Joins the next round: a new one at once if none is running, else the one that starts
    /// when the running one ends.
    fn join(&self) -> watch::Receiver<Option<Outcome>> {
        let mut rounds = self.inner.rounds.lock();
        if rounds.running {
            return rounds.next.get_or_insert_with(|| watch::channel(None).0).subscribe();
        }
        rounds.running = true;
        let (round, outcome) = watch::channel(None);
        drop(rounds);
        tokio::spawn(run_rounds(self.inner.clone(), round));
        outcome
    }
}

/// Runs rounds back to back while reads keep arriving, one per `window` at most.
async fn run_rounds(inner: Arc<Inner>, mut round: watch::Sender<Option<Outcome>>) {
    loop {
        let started = tokio::time::Instant::now();
        inner.stats.rounds.fetch_add(1, Ordering::Relaxed);
        let outcome = fetch_until_confirmed(&inner).await;
        if outcome.is_err() {
            inner.stats.rounds_failed.fetch_add(1, Ordering::Relaxed);
        }
        round.send_replace(Some(outcome));
        let next = {
            let mut rounds = inner.rounds.lock();
            match rounds.next.take() {
                Some(next) => next,
                None => {
                    rounds.running = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(started + inner.window).await;
        round = next;
    }
}

/// Tries confirmations until one succeeds or the timeout ends (a heartbeat lost to a slow peer
/// or an election in progress should delay a read, not fail it). Every try starts after the
/// round's reads arrived, so any successful one serves them.
async fn fetch_until_confirmed(inner: &Inner) -> Outcome {
    let deadline = tokio::time::Instant::now() + inner.timeout;
    let mut last = ReadIndexError::Timeout(inner.timeout);
    loop {
        match tokio::time::timeout_at(deadline, fetch(inner)).await {
            Ok(Ok(read)) => return Ok(read),
            Ok(Err(ReadIndexError::ShuttingDown)) => return Err(ReadIndexError::ShuttingDown),
            Ok(Err(error)) => last = error,
            Err(_) => return Err(last),
        }
        if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            return Err(last);
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The pause between two tries of one round.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// One leadership confirmation: locally on the leader, else a `ReadIndex` call to it.
async fn fetch(inner: &Inner) -> Outcome {
    let (state, leader, leader_node) = {
        let metrics = inner.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader;
        let node = leader.and_then(|id| metrics.membership_config.membership().get_node(&id).cloned());
        (metrics.state, leader, node)
    };
    if state == ServerState::Shutdown {
        return Err(ReadIndexError::ShuttingDown);
    }
    if state == ServerState::Leader {
        return match inner.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(read_log_id),
            Err(error) => Err(ReadIndexError::Unconfirmed(error.to_string())),
        };
    }
    let (Some(leader), Some(node)) = (leader, leader_node) else {
        return Err(ReadIndexError::NoLeader);
    };
    ask_leader(&inner.network, leader, &node).await
}

async fn ask_leader(network: &Network, leader: NodeId, node: &super::NodeInfo) -> Outcome {
    network.read_index(leader, node).await.map_err(ReadIndexError::Unconfirmed)
}
