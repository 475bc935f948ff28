//! How the leader's single writer commits in cluster mode: it decides and seals a batch against
//! its projections as in single-node mode, then, instead of appending it itself, proposes it as
//! one Raft entry and waits until the entry is committed (durable on a majority) and applied on
//! this node by the state machine. The writer is a plain thread, so the calls block.
//!
//! **Invariant:** the writer decides only against projections that hold every entry of the
//! leader's log, or against those plus the batches it has itself proposed in the same term and
//! still has in flight (it chains each batch on the one before, and holds their conflict keys):
//! [`Proposer::ready_blocking`] confirms leadership with a quorum and waits until this node has
//! applied its whole log, once per term and again after any proposal that failed or whose outcome
//! was not known (it may still commit); otherwise this writer is the only proposer, and its
//! proposals reach Raft in the order it decided them ([`Raft::client_write_ff`] is awaited before
//! the next). A batch sealed against stale projections would reuse seqs of committed events, and
//! every node's state machine would refuse it as a divergence; a batch whose entry lands in a
//! later term than it was decided in is skipped by every node (`RaftBatch.decided_term`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{Raft, ServerState};

use super::transfer::HandOver;
use super::{NodeId, RAFT_BATCH_VERSION, TypeConfig};
use crate::proto::ledger::RaftBatch;

/// Why a batch was not committed here. Only `NotLeader` before proposing means "nothing
/// happened"; once a batch was proposed, a lost leadership leaves its fate to the next leader, so
/// the caller answers as for a timeout (the client retries with the same transactionId, which the
/// retry index answers once, whatever happened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("the batch's outcome is not known here: {0}")]
    Unknown(String),
    #[error("raft on this node has stopped: {0}")]
    Stopped(String),
}

/// The leader writer's handle on Raft.
pub struct Proposer {
    raft: Raft<TypeConfig>,
    runtime: tokio::runtime::Handle,
    /// The term in which this node's projections were last confirmed current (0: never, or
    /// not since a proposal failed).
    ready_term: Arc<AtomicU64>,
    /// The longest a proposal may wait for its commit before its outcome counts as unknown.
    commit_timeout: Duration,
    /// Set while this node hands its leadership over: nothing is proposed meanwhile.
    hand_over: HandOver,
}

impl Proposer {
    /// A proposer that runs Raft's futures on `runtime` (the writer thread is not part of it).
    pub fn new(raft: Raft<TypeConfig>, runtime: tokio::runtime::Handle, commit_timeout: Duration) -> Self {
        Self { raft, runtime, ready_term: Arc::default(), commit_timeout, hand_over: HandOver::default() }
    }

    /// This proposer, refusing to decide while `hand_over` is set (pass the node's
    /// [`super::network::Network::hand_over`], so `transfer_leadership` can succeed under load).
    pub fn with_hand_over(mut self, hand_over: HandOver) -> Self {
        self.hand_over = hand_over;
        self
    }

    /// Returns once this node leads and its projections hold every entry committed before its
    /// term (checked with a quorum once per term), with that term. Call before deciding a batch.
    pub fn ready_blocking(&self) -> Result<u64, ProposeError> {
        let (state, term, leader) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state, metrics.current_term, metrics.current_leader)
        };
        if state != ServerState::Leader {
            return Err(ProposeError::NotLeader { leader });
        }
        // Handing over: the leadership is about to move; deciding now would defeat it.
        if self.hand_over.active() {
            return Err(ProposeError::NotLeader { leader: None });
        }
        if self.ready_term.load(Ordering::Acquire) == term {
            return Ok(term);
        }
        // The timer is made inside `block_on`: the writer thread is not a runtime thread.
        let confirm = async { tokio::time::timeout(self.commit_timeout, self.raft.ensure_linearizable()).await };
        let Ok(confirmed) = self.runtime.block_on(confirm) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        match confirmed {
            Ok(_) => {
                // Everything in this leader's log, not only what was committed: a batch whose
                // outcome was not known (`Unknown`) may still commit, and a batch decided
                // without it would reuse its seqs, which every node refuses as a divergence.
                // The earlier proposal reached Raft before `ensure_linearizable` did (one queue),
                // so the log index read now covers it.
                let last = self.raft.metrics().borrow().last_log_index;
                let settled = async {
                    tokio::time::timeout(
                        self.commit_timeout,
                        self.raft.wait(None).applied_index_at_least(last, "the leader applies its whole log"),
                    )
                    .await
                };
                match self.runtime.block_on(settled) {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return Err(ProposeError::Stopped("raft stopped while its log was applied".into())),
                    Err(_) => return Err(ProposeError::NotLeader { leader: None }),
                }
                self.ready_term.store(term, Ordering::Release);
                Ok(term)
            }
            Err(RaftError::APIError(_)) => {
                Err(ProposeError::NotLeader { leader: self.raft.metrics().borrow().current_leader })
            }
            Err(RaftError::Fatal(fatal)) => Err(ProposeError::Stopped(fatal.to_string())),
        }
    }

    /// Proposes one decided, sealed batch (envelopes in seq order) decided in `term`, after
    /// every batch proposed before it; its outcome (the ledger head once committed and applied
    /// on this node) arrives on the receiver. Blocks only until Raft has taken the proposal.
    pub fn propose(
        &self,
        envelopes: Vec<Vec<u8>>,
        term: u64,
    ) -> tokio::sync::oneshot::Receiver<Result<u64, ProposeError>> {
        let (answer, outcome) = tokio::sync::oneshot::channel();
        let batch = RaftBatch { version: RAFT_BATCH_VERSION, envelopes, decided_term: term };
        let responder = match self.runtime.block_on(self.raft.client_write_ff(batch)) {
            Ok(responder) => responder,
            Err(fatal) => {
                let _ = answer.send(Err(ProposeError::Stopped(fatal.to_string())));
                return outcome;
            }
        };
        let (ready_term, timeout) = (self.ready_term.clone(), self.commit_timeout);
        self.runtime.spawn(async move {
            let result = settle(tokio::time::timeout(timeout, responder).await, timeout);
            if result.is_err() {
                // It failed or may still commit: nothing is decided again before this node has
                // applied its whole log or lost the lead (`ready_blocking`).
                ready_term.store(0, Ordering::Release);
            }
            let _ = answer.send(result);
        });
        outcome
    }
}

type Responded = Result<
    Result<ClientWriteResponse<TypeConfig>, ClientWriteError<NodeId, super::NodeInfo>>,
    tokio::sync::oneshot::error::RecvError,
>;

/// What a proposal's answer from Raft means for its callers.
fn settle(responded: Result<Responded, tokio::time::error::Elapsed>, timeout: Duration) -> Result<u64, ProposeError> {
    match responded {
        Err(_) => Err(ProposeError::Unknown(format!("not committed within {timeout:?}"))),
        // Raft dropped the proposal without an answer: it is stopping.
        Ok(Err(_)) => Err(ProposeError::Unknown("raft stopped before answering".into())),
        // Decided in an earlier term: every node skipped it (`RaftBatch.decided_term`).
        Ok(Ok(Ok(written))) if written.data.skipped => Err(ProposeError::NotLeader { leader: None }),
        Ok(Ok(Ok(written))) => Ok(written.data.head_seq),
        // Refused (not the leader), or its entry was removed from this node's log as conflicting
        // with a new leader's: either way it was never committed.
        Ok(Ok(Err(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(ProposeError::NotLeader { leader: forward.leader_id })
        }
        Ok(Ok(Err(other))) => Err(ProposeError::Unknown(other.to_string())),
    }
}

impl crate::ledger::ReplicatedCommit for Proposer {
    fn ready(&self) -> Result<u64, crate::ledger::ReplicatedRefusal> {
        self.ready_blocking().map_err(refusal)
    }

    fn propose(&self, envelopes: Vec<Vec<u8>>, term: u64) -> crate::ledger::Proposal {
        let outcome = Proposer::propose(self, envelopes, term);
        Box::pin(async move {
            let result =
                outcome.await.unwrap_or_else(|_| Err(ProposeError::Unknown("the proposal was dropped".into())));
            result.map_err(|error| {
                tracing::warn!(%error, "a batch was not committed through raft");
                refusal(error)
            })
        })
    }
}

fn refusal(error: ProposeError) -> crate::ledger::ReplicatedRefusal {
    use crate::ledger::ReplicatedRefusal;
    match error {
        ProposeError::NotLeader { .. } => ReplicatedRefusal::NotLeader,
        ProposeError::Unknown(_) => ReplicatedRefusal::Unknown,
        ProposeError::Stopped(_) => ReplicatedRefusal::Stopped,
    }
}
