//! Replay: rebuild the projections from the log, checking every event and every link of the
//! hash chain. Start-up, `tokenledger verify` and the replay-equality tests all use it.

use std::time::Instant;

use super::codec::{self, ChainError};
use super::index;
use super::reader::ReadError;
use super::store::{Store, StoreError};
use crate::domain::state::ChainHead;
use crate::domain::{Recorded, State, apply};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

#[derive(Clone, Debug)]
pub struct ReplayReport {
    pub events: u64,
    pub head: ChainHead,
    pub elapsed_ms: u128,
}

/// How often (in events) replay reports progress to its caller (`/metrics` while starting).
pub const PROGRESS_EVERY_EVENTS: u64 = 1 << 16;
/// How often (in events) a progress report is worth a log line.
pub const LOG_EVERY_EVENTS: u64 = 1 << 20;

/// How far a replay has got: reported once before the first event (with the target), every
/// [`PROGRESS_EVERY_EVENTS`] events, and once at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayTick {
    /// Events applied by this replay so far.
    pub events: u64,
    /// The seq of the last event applied (the snapshot's, before the first).
    pub seq: u64,
    /// The last seq the ledger holds: where the replay ends.
    pub last_seq: u64,
    /// The replay has ended.
    pub done: bool,
}

impl ReplayTick {
    /// Every [`LOG_EVERY_EVENTS`] events, for callers that log progress.
    pub fn worth_logging(&self) -> bool {
        !self.done && self.events > 0 && self.events.is_multiple_of(LOG_EVERY_EVENTS)
    }
}

/// Applies every stored event after `state`'s head to `state` (empty: the whole ledger; a
/// loaded snapshot: its tail), verifying the chain from that head on. `collect_index` also
/// returns the index entries of every event applied, for an index rebuild.
pub fn replay(
    store: &Store,
    state: &mut State,
    collect_index: bool,
    mut progress: impl FnMut(ReplayTick),
) -> Result<(ReplayReport, Vec<Vec<u8>>), ReplayError> {
    let started = Instant::now();
    let mut index_keys = Vec::new();
    let mut events = 0u64;
    let mut failed = None;
    let snapshot = store.reader().snapshot()?;
    let last_seq = snapshot.last_seq()?;
    progress(ReplayTick { events: 0, seq: state.head.seq, last_seq, done: false });
    let scanned = snapshot.scan(state.head.seq + 1, |key, bytes| {
        let mut step = || -> Result<(), ReplayError> {
            let opened = codec::open(key, bytes)?;
            let seq = opened.envelope.seq;
            let expected = state.head.seq + 1;
            if seq != expected {
                return Err(ChainError::Gap { seq, expected }.into());
            }
            if opened.prev_hash != state.head.hash {
                return Err(ChainError::BrokenLink { seq }.into());
            }
            if collect_index {
                index_keys.extend(index::keys_for(state, store.token_ids(), &opened.event, seq));
            }
            let at = Recorded {
                seq,
                recorded_at_ms: opened.envelope.recorded_at_ms,
                transaction_id: &opened.envelope.transaction_id,
                hash: opened.hash,
            };
            apply(state, at, &opened.event);
            Ok(())
        };
        match step() {
            Ok(()) => {
                events += 1;
                if events.is_multiple_of(PROGRESS_EVERY_EVENTS) {
                    progress(ReplayTick { events, seq: state.head.seq, last_seq, done: false });
                }
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    scanned?;
    progress(ReplayTick { events, seq: state.head.seq, last_seq, done: true });
    let report = ReplayReport { events, head: state.head.clone(), elapsed_ms: started.elapsed().as_millis() };
    Ok((report, index_keys))
}
