//! Applying replicated batches (cluster mode, SPEC 8): every node appends the leader's sealed
//! envelopes to its own ledger and projections, so every node holds the same events with the
//! same hash chain from seq 1. The Raft state machine (in `replication`) calls this for each
//! committed batch, on the leader too.
//!
//! **Invariant:** a batch is appended only if every envelope in it opens (its own hash, a known
//! kind) and continues this node's chain (the next seq, the previous hash). Anything else is a
//! divergence: nothing of the batch is written, and the node must halt rather than serve from a
//! chain that is not the cluster's. An envelope at or below the head (a batch applied again after
//! a crash between the append and Raft learning of it) must be byte-identical to the stored one,
//! and is skipped.

use std::path::Path;

use parking_lot::RwLock;
use prost::Message as _;

use super::codec::{self, ChainError};
use super::store::{Append, Store, StoreError};
use super::{OpenError, index, raft_log};
use crate::domain::{Recorded, State};
use crate::proto::ledger::{Envelope, RaftApplied};

#[derive(Debug, thiserror::Error)]
pub enum ReplicatedError {
    #[error("replicated event {seq} is not this node's next event or does not continue its chain: {source}")]
    Diverged { seq: u64, source: ChainError },
    #[error("replicated event {seq} differs from the event this node already holds at that seq")]
    Rewritten { seq: u64 },
    #[error("replicated batch holds an envelope that does not decode: {0}")]
    Undecodable(String),
    #[error("this node's ledger cannot be read: {0}")]
    Unreadable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Opens (or creates) a cluster node's ledger file without sealing a `LedgerCreated` of its own:
/// in a cluster the first events come through Raft, so they are the same on every node.
pub fn open_replica(path: &Path, progress: impl FnMut(super::ReplayTick)) -> Result<(Store, State), OpenError> {
    let (store, state, _report) = super::replay_store(Store::open(path)?, None, progress)?;
    Ok((store, state))
}

/// [`open_replica`], starting from the node's projection snapshot in `snapshot_dir` when it is
/// one of this ledger (`ledger::open_with_snapshot` checks the same): only the events after it
/// are replayed. A cluster node writes that file like a single node does (`server::snapshots`);
/// what the snapshot covers is in the ledger, which is the cluster's, so the file of one node is
/// as good as any other's for it. Also returns the events replayed and which snapshot was used.
/// A new file gets `token_id_key` (the same on every node: see [`Store::open_keyed`]).
pub fn open_replica_with_snapshot(
    path: &Path,
    snapshot_dir: &Path,
    token_id_key: &[u8; 32],
    now_ms: i64,
    mut progress: impl FnMut(super::ReplayTick),
) -> Result<(Store, State, super::ReplayReport, Option<super::StartedFrom>), OpenError> {
    // A new file has nothing a snapshot could cover.
    let existed = path.exists();
    let store = Store::open_keyed(path, token_id_key)?;
    if existed
        && let Some((state, report, started)) =
            super::tail_from_snapshot(&store, snapshot_dir, Some(now_ms), &mut progress)?
    {
        return Ok((store, state, report, Some(started)));
    }
    let (store, state, report) = super::replay_store(store, None, progress)?;
    Ok((store, state, report, None))
}

/// [`open_replica`] on any redb backend (the crash tests use one that models lost unsynced writes).
pub fn open_replica_database(
    db: redb::Database,
    progress: impl FnMut(super::ReplayTick),
) -> Result<(Store, State), OpenError> {
    let (store, state, _report) = super::replay_store(Store::from_database(db)?, None, progress)?;
    Ok((store, state))
}

/// Checks `envelopes` (one replicated batch, in seq order) against this node's chain, appends
/// the new ones in one transaction (not fsynced by itself: see `Store::append_applied`), then applies them to `state`. Answers the head seq.
///
/// The caller is the only writer of `state` while it runs (in a cluster the state machine
/// applies every batch; no local writer does).
///
/// `applied` is written in the same transaction (`raft_meta` `applied`), with its `head_seq` set
/// to the head after the batch, also when the batch brings nothing new.
pub fn apply_batch(
    store: &Store,
    state: &RwLock<State>,
    envelopes: &[Vec<u8>],
    applied: Option<&RaftApplied>,
) -> Result<u64, ReplicatedError> {
    apply_run(store, state, envelopes, applied, Runs::OneBatch).map(|(_, head)| head)
}

/// [`apply_batch`] for envelopes that span many of the leader's batches (a piece of a Raft
/// snapshot's range), with no applied record. The events of one batch never depend on each
/// other, so their index entries can all come from the state before the batch; across batches
/// they do (a revocation's entries name the client of the token it revokes, issued earlier).
/// So a run of this range is cut before every event whose entries may read the projections
/// ([`index::keys_read_state`]), which then starts the next run from the state after the
/// events before it, as a replay computes it.
pub fn apply_range(store: &Store, state: &RwLock<State>, envelopes: &[Vec<u8>]) -> Result<u64, ReplicatedError> {
    let mut rest = envelopes;
    loop {
        let (taken, head) = apply_run(store, state, rest, None, Runs::CutBeforeStateReads)?;
        rest = rest.get(taken..).unwrap_or_default();
        if rest.is_empty() || taken == 0 {
            return Ok(head);
        }
    }
}

/// How [`apply_run`] groups the envelopes it is given.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Runs {
    /// All of them: one of the leader's batches.
    OneBatch,
    /// Up to (not including) the first event after the run's first whose index entries may
    /// read the projections.
    CutBeforeStateReads,
}

/// Applies a run of `envelopes` from their start (see [`Runs`]); answers how many it took and
/// the head seq. `applied` is recorded only when the run took them all.
fn apply_run(
    store: &Store,
    state: &RwLock<State>,
    envelopes: &[Vec<u8>],
    applied: Option<&RaftApplied>,
    runs: Runs,
) -> Result<(usize, u64), ReplicatedError> {
    let mut taken = 0;
    let mut appends = Vec::with_capacity(envelopes.len());
    let mut opened = Vec::with_capacity(envelopes.len());
    {
        let current = state.read();
        let mut next = current.head.seq + 1;
        let mut prev_hash = current.head.hash;
        let mut stored_view = None;
        for bytes in envelopes {
            let seq = Envelope::decode(bytes.as_slice()).map_err(|e| ReplicatedError::Undecodable(e.to_string()))?.seq;
            if seq < next && opened.is_empty() {
                taken += 1;
                // Applied before (a replay of a batch after a crash): it must be the same event.
                if stored_view.is_none() {
                    stored_view =
                        Some(store.reader().snapshot().map_err(|e| ReplicatedError::Unreadable(e.to_string()))?);
                }
                // Compared in canonical form (the reader gives it), whichever form was received.
                let stored = stored_view.as_ref().and_then(|view| view.envelope(seq).ok().flatten());
                if stored != Some(codec::canonical_bytes(bytes.clone())) {
                    return Err(ReplicatedError::Rewritten { seq });
                }
                continue;
            }
            let diverged = |source| ReplicatedError::Diverged { seq, source };
            if seq != next {
                return Err(diverged(ChainError::Gap { seq, expected: next }));
            }
            let event = codec::open(seq, bytes).map_err(diverged)?;
            if event.prev_hash != prev_hash {
                return Err(diverged(ChainError::BrokenLink { seq }));
            }
            if runs == Runs::CutBeforeStateReads && !opened.is_empty() && index::keys_read_state(&event.event) {
                break;
            }
            taken += 1;
            // Keys from the state before the run, as a single node's writer computes them for
            // its batch: the commands of one batch never depend on each other (conflict keys),
            // and a range's run ends before any event that could depend on an earlier one.
            let index_keys = index::keys_for(&current, store.token_ids(), &event.event, seq);
            let stored = codec::stored_form(&event);
            appends.push(Append { sealed: codec::Sealed { seq, hash: event.hash, bytes: stored }, index_keys });
            prev_hash = event.hash;
            next += 1;
            opened.push(event);
        }
    }
    let head_after = appends.last().map_or_else(|| state.read().head.seq, |append| append.sealed.seq);
    let record = applied
        .filter(|_| taken == envelopes.len())
        .map(|applied| RaftApplied { head_seq: head_after, ..applied.clone() }.encode_to_vec());
    if appends.is_empty() && record.is_none() {
        return Ok((taken, head_after));
    }
    store.append_applied(&appends, record.as_deref().map(|bytes| (raft_log::META_APPLIED, bytes)))?;
    super::committed::apply(
        state,
        opened.iter().map(|event| {
            let at = Recorded {
                seq: event.envelope.seq,
                recorded_at_ms: event.envelope.recorded_at_ms,
                transaction_id: &event.envelope.transaction_id,
                hash: event.hash,
            };
            (at, &event.event)
        }),
    );
    Ok((taken, state.read().head.seq))
}
