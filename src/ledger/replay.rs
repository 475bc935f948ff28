//! Replay: rebuild the projections from the log, checking every event and every link of the
//! hash chain. Start-up, `tokenledger verify` and the replay-equality tests all use it.

use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use super::codec::{self, ChainError};
use super::index;
use super::reader::ReadError;
use super::store::{IndexRebuild, Store, StoreError};
use crate::domain::state::ChainHead;
use crate::domain::{Recorded, State, apply};
use crate::proto::ledger::Event;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the replay's reading thread failed")]
    Reader,
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

/// Events the reading thread decodes and hashes before handing them to the applier.
const BATCH_EVENTS: usize = 1024;
/// Batches the reader may be ahead of the applier (bounds the memory in flight to a few MB).
const BATCHES_AHEAD: usize = 8;

/// Events opened by the reading thread, on their way to the applier and back. The applier
/// returns each batch once applied, so its events are dropped, and their successors
/// allocated, on the reading thread: no allocation crosses threads (a free from another thread
/// defers the memory's reuse, and the allocator then touched fresh pages, which the kernel
/// zeroed: the largest cost of a replay before).
#[derive(Default)]
struct Batch {
    events: Vec<(codec::Checked, Range<usize>, Event)>,
    /// The transaction ids of `events`, each at its range.
    texts: String,
}

impl Batch {
    fn len(&self) -> usize {
        self.events.len()
    }
}

/// Applies every stored event after `state`'s head to `state` (empty: the whole ledger; a
/// loaded snapshot: its tail), verifying the chain from that head on. With `rebuild`, the index
/// entries of every event applied go to it, in seq order.
///
/// Two threads share the work: one reads the events in seq order, decodes them and computes
/// their chain hashes (each hash covers its own envelope only, so this needs no state), the
/// calling thread checks the links and applies. A bad event stops the replay at that event
/// as a single thread would: the applier reports the first failure in seq order, the reader's
/// only once every event before it was applied.
pub fn replay(
    store: &Store,
    state: &mut State,
    mut rebuild: Option<&mut IndexRebuild>,
    mut progress: impl FnMut(ReplayTick),
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let mut events = 0u64;
    let snapshot = store.reader().snapshot()?;
    let last_seq = snapshot.last_seq()?;
    progress(ReplayTick { events: 0, seq: state.head.seq, last_seq, done: false });
    // Room for a token per event to come, so the token tables do not grow step by step while
    // they fill (each step rehashes a shard into fresh memory). Issuances are most of a
    // ledger's events, and those of a sign-in mint two tokens: the growth covers the rest.
    // Bounded by what the file holds, whatever the last key says.
    let to_come = last_seq.saturating_sub(state.head.seq).min(snapshot.events_at_most()?);
    state.tables().reserve_tokens(usize::try_from(to_come).unwrap_or(usize::MAX));
    let from_seq = state.head.seq + 1;
    let read = std::thread::scope(|scope| -> Result<(), ReplayError> {
        let (batches, received) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_AHEAD);
        let (recycle, recycled) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_AHEAD + 2);
        let reader = std::thread::Builder::new()
            .name("replay-reader".into())
            .spawn_scoped(scope, move || read_opened(snapshot, from_seq, batches, recycled))
            .map_err(|_| ReplayError::Reader)?;
        let mut apply_one =
            |checked: &codec::Checked, transaction_id: &str, event: &Event| -> Result<(), ReplayError> {
                let seq = checked.seq;
                let expected = state.head.seq + 1;
                if seq != expected {
                    return Err(ChainError::Gap { seq, expected }.into());
                }
                if checked.prev_hash != state.head.hash {
                    return Err(ChainError::BrokenLink { seq }.into());
                }
                if let Some(rebuild) = rebuild.as_deref_mut() {
                    for key in index::keys_for(state, store.token_ids(), event, seq) {
                        rebuild.push(key)?;
                    }
                }
                let at = Recorded { seq, recorded_at_ms: checked.recorded_at_ms, transaction_id, hash: checked.hash };
                apply(state, at, event);
                events += 1;
                if events.is_multiple_of(PROGRESS_EVERY_EVENTS) {
                    progress(ReplayTick { events, seq: state.head.seq, last_seq, done: false });
                }
                Ok(())
            };
        let mut applied = Ok(());
        'batches: for batch in received.iter() {
            for (checked, text, event) in &batch.events {
                applied = apply_one(checked, batch.texts.get(text.clone()).unwrap_or_default(), event);
                if applied.is_err() {
                    break 'batches;
                }
            }
            // Back to the reader, which drops the events (a full or closed channel: here).
            let _ = recycle.try_send(batch);
        }
        // Dropping the receiver stops a reader that is still ahead.
        drop(received);
        let read = reader.join().map_err(|_| ReplayError::Reader)?;
        applied.and(read)
    });
    read?;
    progress(ReplayTick { events, seq: state.head.seq, last_seq, done: true });
    let report = ReplayReport { events, head: state.head.clone(), elapsed_ms: started.elapsed().as_millis() };
    Ok(report)
}

/// The reading side of [`replay`]: sends the events from `from_seq` on, opened (decoded, hash
/// computed), in batches, reusing the batches the applier sends back; stops at the first
/// event that does not open, or when the applier has gone.
fn read_opened(
    snapshot: super::reader::Snapshot,
    from_seq: u64,
    batches: SyncSender<Batch>,
    recycled: Receiver<Batch>,
) -> Result<(), ReplayError> {
    let next_batch = || {
        let mut batch = recycled.try_recv().unwrap_or_default();
        batch.events.clear();
        batch.texts.clear();
        batch.events.reserve(BATCH_EVENTS);
        batch
    };
    let mut batch = next_batch();
    let mut failed = None;
    let mut applier_gone = false;
    let scanned = snapshot.scan(from_seq, |key, bytes| {
        let start = batch.texts.len();
        match codec::open_into(key, bytes, &mut batch.texts) {
            Ok((checked, event)) => {
                let end = batch.texts.len();
                batch.events.push((checked, start..end, event));
                if batch.len() == BATCH_EVENTS && batches.send(std::mem::replace(&mut batch, next_batch())).is_err() {
                    applier_gone = true;
                    return false;
                }
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    });
    if !applier_gone && batch.len() > 0 {
        // The events before a bad one are applied before it is reported.
        let _ = batches.send(batch);
    }
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(scanned?)
}
