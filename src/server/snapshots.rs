//! Projection snapshots of a single node (docs/tables.md, "The snapshot file"): written in the
//! background after `snapshot_every_events` new events or every `snapshot_every_secs` while
//! events arrive, and once more when the server stops, so that the next start loads the
//! snapshot and replays only the tail (`ledger::open_with_snapshot`).
//!
//! A write copies the state other than the token tables under one read lock (the directory:
//! mostly `Arc` clones), then streams the tables shard by shard, each under its own read lock,
//! while the writer goes on; no request waits for it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::api::app::App;
use crate::ledger::snapshot::{self, SnapshotFileError, SnapshotHeader};

/// After a failed write, wait this long before the next try.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

pub struct Snapshots {
    /// Weak: the background thread must not keep a stopped server's ledger open.
    app: Weak<App>,
    dir: PathBuf,
    /// One write at a time (the background thread and the one at shutdown).
    writing: Mutex<()>,
    stop: AtomicBool,
}

impl Snapshots {
    pub fn new(app: &Arc<App>) -> Arc<Self> {
        let dir = app.config.data_dir.clone();
        Arc::new(Self { app: Arc::downgrade(app), dir, writing: Mutex::new(()), stop: AtomicBool::new(false) })
    }

    /// Starts the background thread (when a setting asks for snapshots by count or time).
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let Some(app) = self.app.upgrade() else { return Ok(()) };
        let (every_events, every_secs) = (app.config.snapshot_every_events, app.config.snapshot_every_secs);
        if every_events == 0 && every_secs == 0 {
            return Ok(());
        }
        let this = self.clone();
        let last_seq = app.snapshots.seq.load(Ordering::Acquire);
        std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || this.run(every_events, Duration::from_secs(every_secs), last_seq))?;
        Ok(())
    }

    fn run(&self, every_events: u64, every: Duration, mut last_seq: u64) {
        let mut last_at = Instant::now();
        let mut not_before = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(250));
            let Some(head) = self.app.upgrade().map(|app| app.state.read().head.seq) else { return };
            let by_count = every_events > 0 && head.saturating_sub(last_seq) >= every_events;
            let by_time = !every.is_zero() && head > last_seq && last_at.elapsed() >= every;
            if !(by_count || by_time) || Instant::now() < not_before {
                continue;
            }
            last_at = Instant::now();
            match self.write() {
                Ok(header) => last_seq = header.ledger_seq,
                // Counted and logged in `write`; try again later rather than at every tick.
                Err(_) => not_before = Instant::now() + RETRY_AFTER_FAILURE,
            }
        }
    }

    /// Writes a snapshot now (blocking: call it off the async runtime).
    pub fn write(&self) -> Result<SnapshotHeader, SnapshotFileError> {
        let _one = self.writing.lock();
        let app = self.app.upgrade().ok_or(SnapshotFileError::Inconsistent("the server has stopped"))?;
        let started = Instant::now();
        let (rest, tables) = {
            let state = app.state.read();
            (state.rest(), state.shared_tables())
        };
        let reader = app.ledger.reader();
        // A read view taken after the tables were written, so it holds every seq they cover.
        let chain_hash_at = |seq: u64| reader.snapshot().ok()?.chain_hash(seq);
        let status = &app.snapshots;
        match snapshot::write_state_snapshot(&self.dir, &rest, &tables, chain_hash_at) {
            Ok(header) => {
                let took = started.elapsed();
                status.seq.store(header.ledger_seq, Ordering::Release);
                status.written_at_ms.store(app.clock.now_ms(), Ordering::Release);
                status.writes.fetch_add(1, Ordering::Relaxed);
                status.last_write_ms.store(took.as_millis() as u64, Ordering::Relaxed);
                tracing::info!(
                    ledger_seq = header.ledger_seq,
                    replay_from_seq = header.replay_from_seq,
                    tokens = header.tokens,
                    bytes = header.body_len,
                    took_ms = took.as_millis() as u64,
                    "projection snapshot written"
                );
                Ok(header)
            }
            Err(error) => {
                status.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "the projection snapshot was not written (the previous one stays)");
                Err(error)
            }
        }
    }

    /// Stops the background thread and writes a last snapshot if events came since the last
    /// one (at shutdown, once no request is in flight).
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Release);
        let Some(app) = self.app.upgrade() else { return };
        if app.snapshots.prefix_broken.get().is_some() {
            // The ledger failed verification: no snapshot of it.
            return;
        }
        let head = app.state.read().head.seq;
        let written = app.snapshots.seq.load(Ordering::Acquire);
        drop(app);
        if head > written {
            let _ = self.write();
        }
    }
}
