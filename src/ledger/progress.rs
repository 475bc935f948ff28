//! How far a node's start has got (opening the ledger: a snapshot load, a replay), for the
//! start-up server (`server::starting`) and, once the node is up, `/metrics`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use super::ReplayTick;

/// The start's progress: written by the replay, read by the start-up server and, once the
/// node is up, by `/metrics` (which keeps the final numbers).
pub struct StartProgress {
    starting: AtomicBool,
    /// When the replay reported its first tick.
    replay_began: OnceLock<Instant>,
    /// How long the replay took, once it has ended.
    replay_ms: OnceLock<u64>,
    /// Events applied by this start's replay (a snapshot's tail, or the whole ledger).
    events: AtomicU64,
    /// The seq the replay has reached.
    seq: AtomicU64,
    /// The last seq the ledger holds: where the replay ends.
    last_seq: AtomicU64,
}

/// One reading of [`StartProgress`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StartReadings {
    pub starting: bool,
    pub events: u64,
    pub seq: u64,
    pub last_seq: u64,
    /// Seconds the replay has taken so far, or took once it ended.
    pub seconds: f64,
}

impl Default for StartProgress {
    fn default() -> Self {
        Self {
            starting: AtomicBool::new(true),
            replay_began: OnceLock::new(),
            replay_ms: OnceLock::new(),
            events: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
        }
    }
}

impl StartProgress {
    /// Records a replay's progress report; logs every million or so events.
    pub fn note(&self, tick: ReplayTick) {
        let began = *self.replay_began.get_or_init(Instant::now);
        if tick.done {
            let _ = self.replay_ms.set(u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX));
        }
        self.events.store(tick.events, Ordering::Relaxed);
        self.seq.store(tick.seq, Ordering::Relaxed);
        self.last_seq.store(tick.last_seq, Ordering::Relaxed);
        if tick.worth_logging() {
            tracing::info!(events = tick.events, seq = tick.seq, last_seq = tick.last_seq, "replaying the ledger");
        }
    }

    /// The node is up.
    pub fn finish(&self) {
        self.starting.store(false, Ordering::Release);
    }

    pub fn readings(&self) -> StartReadings {
        let starting = self.starting.load(Ordering::Acquire);
        let seconds = match (self.replay_ms.get(), self.replay_began.get()) {
            (Some(ms), _) => *ms as f64 / 1000.0,
            (None, Some(began)) => began.elapsed().as_secs_f64(),
            (None, None) => 0.0,
        };
        StartReadings {
            starting,
            events: self.events.load(Ordering::Relaxed),
            seq: self.seq.load(Ordering::Relaxed),
            last_seq: self.last_seq.load(Ordering::Relaxed),
            seconds,
        }
    }
}

/// HELP texts of the start-up gauges, shared with `/metrics` once the node is up.
pub const HELP_STARTING: &str =
    "1 while the node opens its ledger (snapshot load, replay) and answers only health and metrics, then 0";
pub const HELP_REPLAY_SEQ: &str = "The ledger seq the start-up replay has reached";
pub const HELP_REPLAY_LAST_SEQ: &str = "The last seq of the ledger the start-up replay reads: where it ends";
pub const HELP_REPLAY_EVENTS: &str = "Events replayed at start-up (the tail after a snapshot, or the whole ledger)";
pub const HELP_REPLAY_SECONDS: &str = "Start-up replay time of the ledger (so far, while starting)";

/// The gauges the start-up server exposes: (name, help, value). Once the node is up,
/// `/metrics` has the same names (`metrics.rs`).
pub fn gauges(r: &StartReadings) -> [(&'static str, &'static str, f64); 5] {
    [
        ("tokenledger_starting", HELP_STARTING, f64::from(u8::from(r.starting))),
        ("tokenledger_replay_seq", HELP_REPLAY_SEQ, r.seq as f64),
        ("tokenledger_replay_last_seq", HELP_REPLAY_LAST_SEQ, r.last_seq as f64),
        ("tokenledger_replay_events", HELP_REPLAY_EVENTS, r.events as f64),
        ("tokenledger_replay_seconds", HELP_REPLAY_SECONDS, r.seconds),
    ]
}
