//! `App`: what every request handler shares — configuration, keys, the projections and the
//! ledger handle — plus client and admin authentication, which REST and gRPC both use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use tokio::sync::Semaphore;

use crate::api::client_auth::ClientAuth;
use crate::api::error::ErrorCode;
use crate::api::wire::BasicCredentials;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::credential;
use crate::crypto::keys::ServerKeys;
use crate::crypto::signing::SigningKeys;
use crate::domain::State;
use crate::domain::state::Client;
use crate::ledger::LedgerHandle;
use crate::proto::ledger::CredentialDigest;

/// The projections as everything but the writer sees them: `read()` only, so "only the writer
/// changes `State`" holds by type. Hold the guard for a lookup, never across an `.await`.
pub struct Projections(Arc<RwLock<State>>);

impl Projections {
    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, State> {
        self.0.read()
    }
}

/// What `/readyz` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Readiness {
    pub reads: bool,
    pub writes: bool,
}

pub struct App {
    pub config: Config,
    pub keys: ServerKeys,
    /// The ID-token signing keys (`signing-keys.json`).
    pub(crate) signing: SigningKeys,
    /// The projections, read only: the ledger writer holds the one handle that writes.
    pub state: Projections,
    /// The wall clock every handler reads (the writer holds the same one).
    pub clock: Arc<dyn Clock>,
    pub ledger: LedgerHandle,
    /// SHA-256 of the admin credential in `admin.token`.
    pub(crate) admin_token_digest: [u8; 32],
    /// Checked for unknown users (and users without a password) so that they cost what a real
    /// user's wrong password costs, at the iteration counts stored passwords use.
    pub(crate) dummy_passwords: crate::api::dummy::DummyDigests,
    /// Client authentication: the cache of verified imported secrets, the negative cache, the
    /// failure backoff and the small budget of slow client-secret checks (`api::client_auth`).
    pub(crate) client_auth: ClientAuth,
    /// Failed password sign-ins each client may still cause (`sign_in_failures_per_client_per_min`).
    pub(crate) sign_in_failures: crate::api::throttle::FailureBudget,
    /// Sign-ins refused because their client had used up that budget (for /metrics).
    pub(crate) sign_in_failures_refused: std::sync::atomic::AtomicU64,
    /// Bounds concurrent password hashes so that a burst of sign-ins cannot starve the runtime.
    slow_hashes: Semaphore,
    /// Set when shutdown begins; readiness turns false.
    pub(crate) draining: AtomicBool,
    /// Per-client spike arrest and quota (`api::ratelimit`).
    pub(crate) rate_limits: crate::api::ratelimit::RateLimits,
    /// The address of the separate metrics listener once it is bound (`metrics_listen`).
    pub metrics_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// What `/metrics` reports; the ledger writer reports its batches here too.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// In cluster mode, this node (SPEC 8): who leads, read confirmations, membership.
    pub cluster: Option<Arc<crate::replication::node::ClusterNode>>,
    /// The projection snapshots written (`server::snapshots`), for /metrics.
    pub snapshots: Arc<crate::ledger::snapshot::SnapshotStatus>,
    /// How the start went: the replay's progress, served while starting (`server::starting`)
    /// and kept for /metrics.
    pub start: Arc<crate::ledger::progress::StartProgress>,
}

impl App {
    pub fn new(
        config: Config,
        keys: ServerKeys,
        signing: SigningKeys,
        state: Arc<RwLock<State>>,
        ledger: LedgerHandle,
        admin_token_digest: [u8; 32],
    ) -> Self {
        let clock = ledger.clock().clone();
        let dummy_password = credential::dummy_digest(config.password_pbkdf2_iterations);
        let slow_hashes = Semaphore::new(config.slow_hash_concurrency);
        let client_auth = ClientAuth::new(
            config.client_secret_hash_concurrency,
            config.client_auth_free_failures,
            dummy_password.clone(),
        );
        let rate_limits = crate::api::ratelimit::RateLimits::new(&config.rate_limits);
        let sign_in_failures = crate::api::throttle::FailureBudget::new(config.sign_in_failures_per_client_per_min);
        let metrics = Arc::new(crate::metrics::Metrics::new(crate::api::openapi::paths()));
        let observed = metrics.clone();
        ledger.status().observer.set(move |batch| observed.batch(batch));
        Self {
            config,
            keys,
            signing,
            state: Projections(state),
            clock,
            ledger,
            admin_token_digest,
            dummy_passwords: crate::api::dummy::DummyDigests::new(dummy_password),
            client_auth,
            sign_in_failures,
            sign_in_failures_refused: std::sync::atomic::AtomicU64::new(0),
            slow_hashes,
            draining: AtomicBool::new(false),
            rate_limits,
            metrics_addr: std::sync::OnceLock::new(),
            metrics,
            cluster: None,
            snapshots: Arc::default(),
            start: Arc::default(),
        }
    }

    /// Ready: the ledger is open, replayed and writable, we are not shutting down, and the
    /// clock is not behind the ledger by more than `clock_skew_max_ms`.
    pub(crate) fn is_ready(&self) -> bool {
        self.readiness().writes
    }

    /// Readiness to serve reads apart from readiness to accept writes (SPEC 8, `/readyz`).
    /// Single node: both are "ready". A cluster node reads while it is up and caught up enough
    /// to confirm reads (some node leads), and takes writes while a leader is known (a
    /// follower forwards them).
    pub(crate) fn readiness(&self) -> Readiness {
        let up = !self.draining.load(Ordering::Acquire)
            && self.clock_behind_ledger_ms() <= self.config.writer.clock_skew_max_ms;
        match &self.cluster {
            None => {
                let ready = up && self.ledger.is_writable();
                Readiness { reads: ready, writes: ready }
            }
            Some(node) => {
                let leader = node.has_leader() && !self.ledger.status().failed.load(Ordering::Acquire);
                Readiness { reads: up && leader, writes: up && leader }
            }
        }
    }

    /// How far the clock is behind the recorded time of the last ledger event; 0 when it is
    /// not behind. More than a little means the clock stepped back, or stepped forward earlier
    /// and was corrected (see docs/operations.md, "Clock").
    pub(crate) fn clock_behind_ledger_ms(&self) -> i64 {
        let head_ms = self.state.read().head.recorded_at_ms;
        head_ms.saturating_sub(self.clock.now_ms()).max(0)
    }

    /// Authenticates a client by its Basic credentials (CMN_90004 on any failure, CMN_90003
    /// when failures from this caller back off or the slow-check budget is busy). A disabled
    /// client always fails; during a rotation overlap the previous secret works too.
    pub(crate) async fn authenticate_client(&self, credentials: &BasicCredentials) -> Result<Arc<Client>, ErrorCode> {
        let client = self.state.read().client(&credentials.client_id).cloned().filter(|c| !c.disabled);
        self.client_auth.authenticate(self, credentials, client, self.clock.now_ms()).await
    }

    /// Runs a PBKDF2 check on the blocking pool, at most `slow_hash_concurrency` at a time.
    pub(crate) async fn verify_slow(&self, presented: String, stored: CredentialDigest) -> bool {
        let Ok(_permit) = self.slow_hashes.acquire().await else {
            return false;
        };
        self.metrics.password_hashes.increment(1);
        tokio::task::spawn_blocking(move || credential::verify_slow(&presented, &stored)).await.unwrap_or(false)
    }

    /// Runs a PBKDF2 check on the blocking pool for a caller that already holds its own budget.
    pub(crate) async fn verify_slow_now(&self, presented: String, stored: CredentialDigest) -> bool {
        self.metrics.password_hashes.increment(1);
        tokio::task::spawn_blocking(move || credential::verify_slow(&presented, &stored)).await.unwrap_or(false)
    }

    /// Hashes a password or legacy secret with PBKDF2 on the blocking pool.
    pub(crate) async fn hash_slow(&self, secret: String) -> Result<CredentialDigest, ErrorCode> {
        let _permit = self.slow_hashes.acquire().await.map_err(|_| ErrorCode::Internal)?;
        self.metrics.password_hashes.increment(1);
        let iterations = self.config.password_pbkdf2_iterations;
        tokio::task::spawn_blocking(move || credential::pbkdf2_digest(iterations, &secret))
            .await
            .map_err(|_| ErrorCode::Internal)
    }

    /// True when `presented` is the admin credential (constant-time on SHA-256 digests).
    pub(crate) fn is_admin(&self, presented: Option<&str>) -> bool {
        let Some(presented) = presented else {
            return false;
        };
        crate::crypto::digests_equal(&crate::crypto::sha256(presented.as_bytes()), &self.admin_token_digest)
    }

    /// What `/metrics` reads from the other components at scrape time.
    pub(crate) fn metrics_readings(&self) -> crate::metrics::Readings<'_> {
        let load = |value: &std::sync::atomic::AtomicU64| value.load(Ordering::Relaxed);
        let auth = &self.client_auth.counters;
        let (live_tokens, live_token_families, head_seq, clients_with_imported_secret, tables) = {
            let state = self.state.read();
            let slow = state.clients.values().filter(|c| ClientAuth::is_slow_secret(c)).count();
            (state.tokens_len(), state.families_len(), state.head.seq, slow, state.shared_tables())
        };
        let (retry_answers_dropped, issuances_refused) = tables.dropped_counts();
        let tables = crate::metrics::TablesReadings {
            retry_answers: tables.retry_count(),
            retry_answers_dropped,
            issuances_refused,
            bytes: tables.memory().total_bytes(),
        };
        let snapshots = &self.snapshots;
        let written_at_ms = snapshots.written_at_ms.load(Ordering::Acquire);
        let snapshot = crate::metrics::SnapshotReadings {
            seq: load(&snapshots.seq),
            recorded_seq: load(&snapshots.recorded_seq),
            age_secs: (written_at_ms > 0).then(|| (self.clock.now_ms() - written_at_ms).max(0) as f64 / 1000.0),
            writes: load(&snapshots.writes),
            failures: load(&snapshots.failures),
            last_write_secs: load(&snapshots.last_write_ms) as f64 / 1000.0,
        };
        crate::metrics::Readings {
            ledger: self.ledger.status(),
            spike_rejections: load(&self.rate_limits.spike_rejections),
            start: self.start.readings(),
            quota_rejections: load(&self.rate_limits.quota_rejections),
            tokens_rejections: load(&self.rate_limits.tokens_rejections),
            client_auth_throttled: load(&auth.throttled),
            client_secret_budget_exhausted: load(&auth.budget_exhausted),
            client_auth_known_wrong: load(&auth.known_wrong),
            sign_in_failures_refused: load(&self.sign_in_failures_refused),
            clients_with_imported_secret,
            live_tokens,
            live_token_families,
            head_seq,
            writable: self.ledger.is_writable(),
            ready: self.is_ready(),
            clock_behind_ledger_ms: self.clock_behind_ledger_ms(),
            tables,
            snapshot,
            cluster: self.cluster.as_ref().map(|node| {
                let view = node.view();
                let stats = node.reads.stats();
                crate::metrics::ClusterReadings {
                    role: view.role.name(),
                    term: view.term,
                    leader_id: view.leader.unwrap_or(0),
                    applied_index: view.applied_index,
                    last_log_index: view.last_log_index,
                    lag: view
                        .matched
                        .iter()
                        .filter(|(id, _)| **id != view.id)
                        .map(|(id, matched)| (*id, view.last_log_index.saturating_sub(*matched)))
                        .collect(),
                    read_rounds: load(&stats.rounds),
                    read_rounds_failed: load(&stats.rounds_failed),
                    reads_confirmed: load(&stats.confirmed),
                    reads_refused: load(&stats.refused),
                    read_confirm_micros: load(&stats.confirm_micros),
                    log_appends: load(&node.storage_times.log_appends),
                    log_append_micros: load(&node.storage_times.log_append_micros),
                    applies: load(&node.storage_times.applies),
                    apply_micros: load(&node.storage_times.apply_micros),
                }
            }),
        }
    }
}
