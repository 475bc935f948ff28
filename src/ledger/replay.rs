//! Replay: rebuild the projections from the log, checking every event and every link of the
//! hash chain. Start-up, `tokenledger verify` and the replay-equality tests all use it.

use std::time::Instant;

use super::codec::{self, ChainError};
use super::index;
use super::store::{Store, StoreError};
use crate::domain::state::ChainHead;
use crate::domain::{Recorded, State, apply};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone, Debug)]
pub struct ReplayReport {
    pub events: u64,
    pub head: ChainHead,
    pub elapsed_ms: u128,
}

/// How often (in events) replay reports progress.
pub const PROGRESS_EVERY_EVENTS: u64 = 1_000_000;

/// Applies every stored event to `state` (which must be empty), verifying the chain.
/// `collect_index` also returns the index entries of every event, for an index rebuild.
pub fn replay(
    store: &Store,
    state: &mut State,
    collect_index: bool,
    mut progress: impl FnMut(u64),
) -> Result<(ReplayReport, Vec<Vec<u8>>), ReplayError> {
    let started = Instant::now();
    let mut index_keys = Vec::new();
    let mut events = 0u64;
    store.scan(|key, bytes| -> Result<(), ReplayError> {
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
        events += 1;
        if events.is_multiple_of(PROGRESS_EVERY_EVENTS) {
            progress(events);
        }
        Ok(())
    })?;
    let report = ReplayReport { events, head: state.head.clone(), elapsed_ms: started.elapsed().as_millis() };
    Ok((report, index_keys))
}
