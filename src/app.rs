//! `App`: what every request handler shares — configuration, keys, the projections and the
//! ledger handle — plus client and admin authentication, which REST and gRPC both use.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use tokio::sync::Semaphore;

use crate::api::wire::BasicCredentials;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::credential::{self, Check};
use crate::crypto::keys::ServerKeys;
use crate::crypto::signing::SigningKeys;
use crate::domain::State;
use crate::domain::state::Client;
use crate::error::ErrorCode;
use crate::ledger::LedgerHandle;
use crate::proto::ledger::CredentialDigest;

/// A verified imported secret: its cache tag and the stored digest it was checked against.
type VerifiedSecret = ([u8; 32], CredentialDigest);

pub struct App {
    pub config: Config,
    pub keys: ServerKeys,
    /// The ID-token signing keys (`signing-keys.json`).
    pub signing: SigningKeys,
    /// The projections; only the ledger writer takes the write lock.
    pub state: Arc<RwLock<State>>,
    /// The wall clock every handler reads (the writer holds the same one).
    pub clock: Arc<dyn Clock>,
    pub ledger: LedgerHandle,
    /// SHA-256 of the admin credential in `admin.token`.
    pub admin_token_digest: [u8; 32],
    /// Checked for unknown users so that they cost the same time as a wrong password.
    pub dummy_password: CredentialDigest,
    /// Imported (PBKDF2) client secrets verified since start-up, so each client pays the slow
    /// hash once per process instead of on every request: client id → (tag of the verified
    /// secret, the stored digest it was verified against).
    secret_cache: RwLock<HashMap<Arc<str>, VerifiedSecret>>,
    /// Bounds concurrent slow hashes so that a burst of sign-ins cannot starve the runtime.
    slow_hashes: Semaphore,
    /// Set when shutdown begins; readiness turns false.
    pub draining: AtomicBool,
    /// Per-client spike arrest and quota (`api::ratelimit`).
    pub rate_limits: crate::api::ratelimit::RateLimits,
    /// What `/metrics` reports; the ledger writer reports its batches here too.
    pub metrics: Arc<crate::metrics::Metrics>,
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
        let rate_limits = crate::api::ratelimit::RateLimits::new(&config.rate_limits);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let observed = metrics.clone();
        ledger.status().observer.set(move |batch| observed.batch(batch));
        Self {
            config,
            keys,
            signing,
            state,
            clock,
            ledger,
            admin_token_digest,
            dummy_password,
            secret_cache: RwLock::new(HashMap::new()),
            slow_hashes,
            draining: AtomicBool::new(false),
            rate_limits,
            metrics,
        }
    }

    /// Ready: the ledger is open, replayed and writable, we are not shutting down, and the
    /// clock is not behind the ledger by more than `clock_skew_max_ms`.
    pub fn is_ready(&self) -> bool {
        self.ledger.is_writable()
            && !self.draining.load(Ordering::Acquire)
            && self.clock_behind_ledger_ms() <= self.config.writer.clock_skew_max_ms
    }

    /// How far the clock is behind the recorded time of the last ledger event; 0 when it is
    /// not behind. More than a little means the clock stepped back, or stepped forward earlier
    /// and was corrected (see docs/operations.md, "Clock").
    pub fn clock_behind_ledger_ms(&self) -> i64 {
        let head_ms = self.state.read().head.recorded_at_ms;
        head_ms.saturating_sub(self.clock.now_ms()).max(0)
    }

    /// Authenticates a client by its Basic credentials (CMN_90004 on any failure). A disabled
    /// client always fails; during a rotation overlap the previous secret works too.
    pub async fn authenticate_client(&self, credentials: &BasicCredentials) -> Result<Arc<Client>, ErrorCode> {
        let client = self.state.read().client(&credentials.client_id).cloned();
        let Some(client) = client.filter(|c| !c.disabled) else {
            // Spend the same keyed digest as a known client so timing does not reveal ids.
            let _ = credential::keyed_digest(&self.keys, &credentials.client_id, &credentials.client_secret);
            return Err(ErrorCode::InvalidClient);
        };
        if self.secret_matches(&client, &credentials.client_secret, &client.secret).await {
            return Ok(client);
        }
        match client.previous_secret_at(self.clock.now_ms()) {
            Some(previous) if self.secret_matches(&client, &credentials.client_secret, previous).await => Ok(client),
            _ => Err(ErrorCode::InvalidClient),
        }
    }

    /// Checks a presented secret against one stored digest of `client`: keyed digests at
    /// once, PBKDF2 ones on the pool, remembered once verified.
    async fn secret_matches(&self, client: &Client, presented: &str, stored: &CredentialDigest) -> bool {
        match credential::verify_fast(&self.keys, &client.id, presented, stored) {
            Check::Match => true,
            Check::Mismatch => false,
            Check::NeedsSlowHash => {
                let tag = credential::cache_tag(&self.keys, &client.id, presented);
                let cached = self
                    .secret_cache
                    .read()
                    .get(&client.id)
                    .is_some_and(|(t, d)| crate::crypto::digests_equal(t, &tag) && d == stored);
                if cached {
                    return true;
                }
                if self.verify_slow(presented.to_owned(), stored.clone()).await {
                    self.secret_cache.write().insert(client.id.clone(), (tag, stored.clone()));
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Runs a PBKDF2 check on the blocking pool, at most `slow_hash_concurrency` at a time.
    pub async fn verify_slow(&self, presented: String, stored: CredentialDigest) -> bool {
        let Ok(_permit) = self.slow_hashes.acquire().await else {
            return false;
        };
        self.metrics.password_hashes.increment(1);
        tokio::task::spawn_blocking(move || credential::verify_slow(&presented, &stored)).await.unwrap_or(false)
    }

    /// Hashes a password or legacy secret with PBKDF2 on the blocking pool.
    pub async fn hash_slow(&self, secret: String) -> Result<CredentialDigest, ErrorCode> {
        let _permit = self.slow_hashes.acquire().await.map_err(|_| ErrorCode::Internal)?;
        self.metrics.password_hashes.increment(1);
        let iterations = self.config.password_pbkdf2_iterations;
        tokio::task::spawn_blocking(move || credential::pbkdf2_digest(iterations, &secret))
            .await
            .map_err(|_| ErrorCode::Internal)
    }

    /// True when `presented` is the admin credential (constant-time on SHA-256 digests).
    pub fn is_admin(&self, presented: Option<&str>) -> bool {
        let Some(presented) = presented else {
            return false;
        };
        crate::crypto::digests_equal(&sha256(presented.as_bytes()), &self.admin_token_digest)
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}
