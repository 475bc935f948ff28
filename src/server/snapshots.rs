//! Projection snapshots of a node (docs/tables.md, "The snapshot file"): written in the
//! background after `snapshot_every_events` new events or every `snapshot_every_secs` while
//! events arrive, and once more when the server stops, so that the next start loads the
//! snapshot and replays only the tail (`ledger::open_with_snapshot`, and
//! `replicated::open_replica_with_snapshot` on a cluster node).
//!
//! Each file written is then recorded in the ledger: a `ProjectionSnapshotWritten` event
//! (`ledger::snapshot::record`) submitted through the writer like any command, once the file
//! is renamed into place and its directory fsynced. That event is not activity: "new events"
//! above are the events after the snapshot other than its own record ([`new_events`]), so an idle
//! node writes no further snapshot (of nothing but its record, forever).
//!
//! **In a cluster** the ledger is the cluster's: only a node that leads records its file
//! (through Raft, like every write), and not the file it writes while it stops (the cluster's
//! ledger does not change because a node leaves, and a last node without a majority could not
//! commit it); a follower writes its own file, unrecorded (its start says so), because an event
//! on its own chain would diverge from the cluster's. A cluster node's state machine applies
//! without an fsync, so its commits are flushed before a file that covers them is renamed into
//! place: a crash afterwards cannot leave a snapshot ahead of the durable ledger.
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
use crate::domain::RecordSnapshot;
use crate::ledger::snapshot::{self, SnapshotFileError, SnapshotHeader, SnapshotStatus, record};

/// After a failed write, wait this long before the next try.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

pub struct Snapshots {
    /// Weak: the background thread must not keep a stopped server's ledger open.
    app: Weak<App>,
    dir: PathBuf,
    /// One write at a time (the background thread and the one at shutdown).
    writing: Mutex<()>,
    stop: AtomicBool,
    /// The server's runtime, to wait for the writer from the snapshot threads (which are not
    /// on it); `None` outside a runtime (no record is then written).
    runtime: Option<tokio::runtime::Handle>,
}

/// Events after the last snapshot (covering `covered`) other than its own record (at
/// `recorded`, 0 when none): the record is after the seq it covers and at most the head.
pub fn new_events(status: &SnapshotStatus, head: u64) -> u64 {
    let covered = status.seq.load(Ordering::Acquire);
    let recorded = status.recorded_seq.load(Ordering::Acquire);
    let own = u64::from(recorded > covered && recorded <= head);
    head.saturating_sub(covered).saturating_sub(own)
}

impl Snapshots {
    /// Call it on the server's runtime (it keeps a handle to it).
    pub fn new(app: &Arc<App>) -> Arc<Self> {
        let dir = app.config.data_dir.clone();
        Arc::new(Self {
            app: Arc::downgrade(app),
            dir,
            writing: Mutex::new(()),
            stop: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
    }

    /// Starts the background thread (when a setting asks for snapshots by count or time).
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let Some(app) = self.app.upgrade() else { return Ok(()) };
        let (every_events, every_secs) = (app.config.snapshot_every_events, app.config.snapshot_every_secs);
        if every_events == 0 && every_secs == 0 {
            return Ok(());
        }
        let this = self.clone();
        std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || this.run(every_events, Duration::from_secs(every_secs)))?;
        Ok(())
    }

    fn run(&self, every_events: u64, every: Duration) {
        let mut last_at = Instant::now();
        let mut not_before = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(250));
            let Some(news) = self.app.upgrade().map(|app| new_events(&app.snapshots, app.state.read().head.seq)) else {
                return;
            };
            let by_count = every_events > 0 && news >= every_events;
            let by_time = !every.is_zero() && news > 0 && last_at.elapsed() >= every;
            if !(by_count || by_time) || Instant::now() < not_before {
                continue;
            }
            last_at = Instant::now();
            if self.write().is_err() {
                // Counted and logged in `write`; try again later rather than at every tick.
                not_before = Instant::now() + RETRY_AFTER_FAILURE;
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
        let flush = app.cluster.as_ref().map(|node| node.ledger_flush.clone());
        // A read view taken after the tables were written, so it holds every seq they cover;
        // in a cluster, after those seqs are durable (see the module comment).
        let chain_hash_at = |seq: u64| {
            if let Some(flush) = &flush
                && let Err(error) = flush.flush()
            {
                tracing::warn!(%error, "could not flush the ledger before a projection snapshot");
                return None;
            }
            reader.snapshot().ok()?.chain_hash(seq)
        };
        let status = &app.snapshots;
        match snapshot::write_state_snapshot(&self.dir, &rest, &tables, chain_hash_at) {
            Ok(header) => {
                let took = started.elapsed();
                // Not recorded until `record` says so (see `new_events`).
                status.recorded_seq.store(0, Ordering::Release);
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
                self.record(&app, &header, took);
                Ok(header)
            }
            Err(error) => {
                status.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "the projection snapshot was not written (the previous one stays)");
                Err(error)
            }
        }
    }

    /// Records the snapshot just written (the file is in place) in the ledger, and notes the
    /// event's seq. A failure leaves the file as it is, unrecorded (a start from it says so).
    fn record(&self, app: &App, header: &SnapshotHeader, took: Duration) {
        let Some(runtime) = &self.runtime else { return };
        if let Some(node) = &app.cluster
            && (!node.is_leader() || self.stop.load(Ordering::Acquire))
        {
            tracing::debug!(
                ledger_seq = header.ledger_seq,
                "not recorded: in a cluster only a running leader records its projection snapshots"
            );
            return;
        }
        let command = RecordSnapshot(record::record_of(header, took.as_millis() as u64));
        if let Err(error) = runtime.block_on(app.ledger.submit_as(command, String::new())) {
            tracing::warn!(
                ?error,
                ledger_seq = header.ledger_seq,
                "the projection snapshot was written but is not recorded in the ledger"
            );
            return;
        }
        // Committed and applied: the latest matching record is this one (one write at a time).
        let found = app.ledger.reader().snapshot().ok().and_then(|read| record::find(&read, header).ok().flatten());
        if let Some(seq) = found {
            app.snapshots.recorded_seq.store(seq, Ordering::Release);
            tracing::info!(
                recorded_seq = seq,
                ledger_seq = header.ledger_seq,
                "projection snapshot recorded in the ledger"
            );
        }
    }

    /// Stops the background thread (at its next check) without writing anything.
    pub fn stop_background(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Stops the background thread and writes a last snapshot if events came since the last
    /// one, its own record aside (at shutdown, once no request is in flight).
    pub fn finish(&self) {
        self.stop_background();
        let Some(app) = self.app.upgrade() else { return };
        if app.snapshots.prefix_broken.get().is_some() {
            // The ledger failed verification: no snapshot of it.
            return;
        }
        let news = new_events(&app.snapshots, app.state.read().head.seq);
        drop(app);
        if news > 0 {
            let _ = self.write();
        }
    }
}
