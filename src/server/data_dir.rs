//! The data directory: `ledger.redb`, `keys.json` (token MAC and digest keys), `admin.token`
//! (the admin credential), `signing-keys.json` (ID-token signing keys, see `signing`),
//! `checkpoint.key` (signs audit checkpoints) and `tokenledger.lock`, which keeps a second
//! process out.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::api::app::App;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::keys::{KeyError, ServerKeys};
use crate::crypto::{random_bytes, sha256};
use crate::ledger::progress::StartProgress;
use crate::ledger::{self, LedgerHandle, OpenError, ReplayReport};

pub const LEDGER_FILE: &str = "ledger.redb";
pub const KEYS_FILE: &str = "keys.json";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const LOCK_FILE: &str = "tokenledger.lock";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("data directory {0} is in use by another tokenledger process")]
    Locked(String),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("{0}")]
    MissingKeys(String),
    #[error(transparent)]
    Ledger(#[from] OpenError),
    #[error("cannot start the ledger writer: {0}")]
    Writer(std::io::Error),
    #[error(transparent)]
    Signing(#[from] super::signing::SigningStartError),
    #[error("cluster: {0}")]
    Cluster(String),
}

/// An open data directory: everything a server needs, holding the directory lock.
pub struct Opened {
    pub app: Arc<App>,
    pub report: ReplayReport,
    /// Paths created by this start (first start in an empty directory).
    pub created: Vec<PathBuf>,
    /// In cluster mode: the running node (its Raft listener stops when this is dropped).
    pub cluster: Option<super::cluster::Started>,
    /// Held for the life of the server; the OS releases it if the process dies.
    _lock: File,
}

fn io_error(dir: &Path) -> impl Fn(std::io::Error) -> StartError + '_ {
    move |source| StartError::DataDir { path: dir.display().to_string(), source }
}

/// Takes the directory lock, or fails at once if another process holds it.
pub fn lock(dir: &Path) -> Result<File, StartError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Best effort: the files that matter are 0600 themselves.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(io_error(dir))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Locked(dir.display().to_string())),
        Err(std::fs::TryLockError::Error(source)) => Err(io_error(dir)(source)),
    }
}

/// Opens (initialising on first start) the data directory of `config` and replays the ledger.
pub fn open(config: &Config) -> Result<Opened, StartError> {
    open_with_clock(config, crate::clock::system())
}

/// [`open`] on a given clock (tests step a manual one).
pub fn open_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Opened, StartError> {
    open_with_progress(config, clock, Arc::default())
}

/// [`open_with_clock`], reporting the replay's progress to `progress` (which the start-up
/// server shows, `server::starting`) and keeping it in the app for `/metrics`.
pub fn open_with_progress(
    config: &Config,
    clock: Arc<dyn Clock>,
    progress: Arc<StartProgress>,
) -> Result<Opened, StartError> {
    let dir = config.data_dir.clone();
    let lock = lock(&dir)?;
    let mut created = Vec::new();
    let ledger_path = dir.join(LEDGER_FILE);
    let keys_path = dir.join(KEYS_FILE);
    let ledger_exists = ledger_path.exists();
    if ledger_exists && !keys_path.exists() {
        return Err(StartError::MissingKeys(format!(
            "{} exists but {} is missing: issued tokens could not be verified; restore the key file from backup",
            ledger_path.display(),
            keys_path.display()
        )));
    }
    let now_ms = clock.now_ms();
    let (keys, new_keys) = ServerKeys::load_or_create(&keys_path, now_ms)?;
    if new_keys {
        created.push(keys_path);
    }
    // The checkpoint signing key (audit), in its own file so it can be kept or rotated apart.
    let checkpoint_path = dir.join(crate::audit::checkpoint::CHECKPOINT_KEY_FILE);
    if crate::audit::checkpoint::CheckpointKey::load_or_create(&checkpoint_path, now_ms)?.1 {
        created.push(checkpoint_path);
    }
    let admin_path = dir.join(ADMIN_TOKEN_FILE);
    let admin_token = match std::fs::read_to_string(&admin_path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use base64::Engine as _;
            let token =
                format!("tladm_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
            crate::fsutil::write_private_file(&admin_path, format!("{token}\n").as_bytes()).map_err(io_error(&dir))?;
            created.push(admin_path);
            token
        }
        Err(e) => return Err(io_error(&dir)(e)),
    };
    if let Some(cluster) = &config.cluster {
        let (app, report, started) =
            open_cluster_node(config, cluster, clock, keys, admin_token, &mut created, progress)?;
        return Ok(Opened { app, report, created, cluster: Some(started), _lock: lock });
    }
    let (store, mut state, report, snapshot) =
        ledger::open_with_snapshot(&ledger_path, &dir, now_ms, |tick| progress.note(tick))?;
    if let Some(started) = &snapshot {
        log_started_from(started, &report, false);
    }
    if !ledger_exists {
        created.push(ledger_path);
    }
    let (signing, new_signing_keys) = super::signing::prepare(&dir, &store, &mut state, now_ms)?;
    if new_signing_keys {
        created.push(dir.join(super::signing::SIGNING_KEYS_FILE));
    }
    let behind_ms = state.head.recorded_at_ms.saturating_sub(now_ms);
    if behind_ms > config.writer.clock_skew_max_ms {
        tracing::error!(
            behind_ms,
            head_seq = state.head.seq,
            "the clock is behind the last ledger event: lifetimes and lockouts count from the clock, events keep the ledger's order; not ready until the clock catches up (docs/operations.md, Clock)"
        );
    }
    let state = Arc::new(RwLock::new(state));
    let handle = LedgerHandle::spawn_with_clock(store, state.clone(), config.writer.clone(), clock)
        .map_err(StartError::Writer)?;
    let mut app = App::new(config.clone(), keys, signing, state, handle, sha256(admin_token.as_bytes()));
    app.start = progress;
    let app = Arc::new(app);
    if let Some(started) = snapshot {
        started_from(&app, &started)?;
    }
    Ok(Opened { app, report, created, cluster: None, _lock: lock })
}

/// Says which projection snapshot a start loaded, and whether the ledger records that file (in
/// a cluster, only a snapshot written while the node led is: see `server::snapshots`).
fn log_started_from(started: &ledger::StartedFrom, report: &ReplayReport, cluster: bool) {
    let header = &started.header;
    match started.recorded_at_seq {
        Some(recorded_seq) => tracing::info!(
            snapshot_seq = header.ledger_seq,
            recorded_seq,
            replayed_from_seq = header.replay_from_seq,
            tail_events = report.events,
            "started from the snapshot recorded at event {recorded_seq}, covering seq {}",
            header.ledger_seq
        ),
        None if cluster => tracing::info!(
            snapshot_seq = header.ledger_seq,
            replayed_from_seq = header.replay_from_seq,
            tail_events = report.events,
            "started from this node's projection snapshot covering seq {}, not recorded in the cluster's ledger (a node records the snapshots it writes while it leads); it passed every check of the file and the chain",
            header.ledger_seq
        ),
        None => tracing::warn!(
            snapshot_seq = header.ledger_seq,
            replayed_from_seq = header.replay_from_seq,
            tail_events = report.events,
            "started from a projection snapshot covering seq {} that is not recorded in this ledger (no ProjectionSnapshotWritten event matches the file: written by a node that stopped before recording it, or copied from elsewhere); it passed every check of the file and the chain",
            header.ledger_seq
        ),
    }
}

/// Notes the snapshot a start loaded (for /metrics and the next write) and verifies the ledger
/// before its tail in the background.
fn started_from(app: &Arc<App>, started: &ledger::StartedFrom) -> Result<(), StartError> {
    use std::sync::atomic::Ordering;
    app.snapshots.seq.store(started.header.ledger_seq, Ordering::Release);
    app.snapshots.recorded_seq.store(started.recorded_at_seq.unwrap_or(0), Ordering::Release);
    verify_prefix(app, started.header.replay_from_seq - 1).map_err(StartError::Writer)
}

/// A start from a snapshot replays only the tail; the events before it (up to `through_seq`,
/// whose hash the tail's first link was checked against) are verified here, in the
/// background, as a full replay would have at start-up: every event decodes, follows the
/// previous one, links to its hash and matches its own. On a failure the node refuses writes
/// (not ready, gRPC NOT_SERVING) and `serve` stops with the event named, as it would have
/// refused to start.
fn verify_prefix(app: &Arc<App>, through_seq: u64) -> std::io::Result<()> {
    use crate::audit::chain::{self, Claim};
    use std::sync::atomic::Ordering;
    // The tail replay checked that its first event (`through_seq + 1`) links to the snapshot's
    // head hash: walking through that event checks that this hash is event `through_seq`'s.
    // With no tail, the head is the snapshot's: it must be the walk's last hash.
    let (last, claim) = {
        let head = &app.state.read().head;
        if head.seq == through_seq {
            (through_seq, Some(Claim { seq: through_seq, hash: head.hash }).filter(|c| c.seq > 0))
        } else {
            (through_seq + 1, None)
        }
    };
    let app = Arc::downgrade(app);
    std::thread::Builder::new().name("chain-verify".into()).spawn(move || {
        let Some(reader) = app.upgrade().map(|app| app.ledger.reader().clone()) else { return };
        let started = std::time::Instant::now();
        // A shutdown stops the walk: its read transaction would hold the ledger open, and the
        // close would wait for it (5 s) and then leave the file unclosed.
        let stopping = || app.upgrade().is_none_or(|app| app.draining.load(Ordering::Acquire));
        let outcome = reader.snapshot().map_err(|e| e.to_string()).and_then(|snapshot| {
            chain::verify_unless(&snapshot, Some(last), claim, stopping).map_err(|e| e.to_string())
        });
        let outcome = match outcome {
            Ok(Some(report)) => Ok(report),
            Ok(None) => {
                tracing::info!(
                    "the background chain verification stopped with the server; the next start verifies again"
                );
                return;
            }
            Err(error) => Err(error),
        };
        let Some(app) = app.upgrade() else { return };
        let failure = match outcome {
            Ok(report) if report.ok() => {
                app.snapshots.prefix_verified.store(true, Ordering::Release);
                tracing::info!(
                    events = report.events_checked,
                    took_ms = started.elapsed().as_millis() as u64,
                    "the ledger before the snapshot's tail is verified"
                );
                return;
            }
            Ok(report) => match report.problem {
                Some(problem) => problem.to_string(),
                None => format!("event {through_seq}: its hash is not the snapshot's"),
            },
            Err(error) => error,
        };
        let message = format!("the ledger failed verification, refusing to serve: {failure}");
        tracing::error!(%message, "stopping");
        app.ledger.status().failed.store(true, Ordering::Release);
        let _ = app.snapshots.prefix_broken.set(message);
        // Reaches every `Notified` created before it (the serve loop creates one before it
        // checks `prefix_broken`).
        app.snapshots.prefix_broken_notify.notify_waiters();
    })?;
    Ok(())
}

/// [`open_with_clock`] for a cluster node: the ledger is opened as a replica (its first events
/// come through Raft), and the writer commits through Raft. Must run on a blocking thread of
/// the runtime (Raft starts on it).
fn open_cluster_node(
    config: &Config,
    cluster: &crate::config::ClusterConfig,
    clock: Arc<dyn Clock>,
    keys: ServerKeys,
    admin_token: String,
    created: &mut Vec<PathBuf>,
    progress: Arc<StartProgress>,
) -> Result<(Arc<App>, ReplayReport, super::cluster::Started), StartError> {
    let dir = &config.data_dir;
    let ledger_path = dir.join(LEDGER_FILE);
    let ledger_exists = ledger_path.exists();
    let now_ms = clock.now_ms();
    let (store, state, report, snapshot) = ledger::replicated::open_replica_with_snapshot(
        &ledger_path,
        dir,
        &keys.token_id_index_key(),
        now_ms,
        |tick| progress.note(tick),
    )?;
    if let Some(started) = &snapshot {
        log_started_from(started, &report, true);
    }
    if !ledger_exists {
        created.push(ledger_path);
    }
    let (signing, file_key_id, new_signing_keys) =
        crate::crypto::signing::SigningKeys::load_or_create(&dir.join(super::signing::SIGNING_KEYS_FILE), now_ms)
            .map_err(super::signing::SigningStartError::from)?;
    if new_signing_keys {
        created.push(dir.join(super::signing::SIGNING_KEYS_FILE));
    }
    let state = Arc::new(RwLock::new(state));
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| StartError::Cluster("a cluster node starts inside the server's runtime".to_owned()))?;
    let started = super::cluster::start(config, cluster, &keys, store, state.clone(), clock, &runtime)?;
    let mut app =
        App::new(config.clone(), keys, signing, state, started.writer.clone(), sha256(admin_token.as_bytes()));
    app.cluster = Some(started.node.clone());
    app.start = progress;
    let app = Arc::new(app);
    if let Some(started) = snapshot {
        started_from(&app, &started)?;
    }
    runtime.spawn(super::cluster::lead_duties(app.clone(), started.node.clone(), file_key_id));
    runtime.spawn(super::cluster::adopt_signing_keys(app.clone()));
    Ok((app, report, started))
}

/// Reads the admin credential of a data directory (for CLI commands).
pub fn read_admin_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}
