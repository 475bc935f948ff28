//! Per-client spike arrest (CMN_90003) and quota (CMN_90002), both GCRA limiters from the
//! `governor` crate, checked before any expensive work:
//!
//! - **spike arrest** and **quota** are keyed by the *authenticated* client, after client
//!   authentication and before the password hash, the authorization-code checks and the writer,
//!   so nobody but the client itself can spend its allowance (security review finding 5).
//!   Guessing secrets is stopped before that by the failure backoff of `api::client_auth`,
//!   keyed by the presented id and the source address.
//!
//! A rejected request appends nothing to the ledger and computes no PBKDF2. The transport adds
//! `Retry-After` (seconds, rounded up) from [`request_scope`], which the front door wraps
//! around every request. Spike arrest is off by default; the quota is on
//! ([`DEFAULT_QUOTA_REQUESTS`] per hour).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::OwnedSemaphorePermit;

use super::wire::BasicCredentials;
use crate::api::app::App;
use crate::api::error::ErrorCode;
use crate::config::RateLimitConfig;
use crate::domain::ids::TokenId;
use crate::domain::state::{Client, State};

/// The limiters of one server, and how often each refused a request.
pub struct RateLimits {
    spike: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    quota: Option<DefaultKeyedRateLimiter<Arc<str>>>,
    /// Requests refused by spike arrest (for /metrics).
    pub spike_rejections: AtomicU64,
    /// Requests refused by the quota (for /metrics).
    pub quota_rejections: AtomicU64,
    /// Most tokens one client may hold (`quota_tokens`).
    tokens_max: Option<u64>,
    /// Token requests refused because their client held `tokens_max` tokens (for /metrics).
    pub tokens_rejections: AtomicU64,
}

/// What a client refused for the tokens it holds is told to wait: tokens leave the tables only
/// as they expire (and the purge passes, ~30 s), so asking again at once is pointless.
const TOKENS_HELD_RETRY_AFTER: Duration = Duration::from_secs(60);

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        let spike = config.spike.and_then(|(rate, burst)| {
            Quota::with_period(Duration::from_secs(1) / rate.get()).map(|q| q.allow_burst(burst))
        });
        let quota = config.quota.and_then(|(requests, window)| {
            Quota::with_period(window / requests.get()).map(|q| q.allow_burst(requests))
        });
        Self {
            spike: spike.map(DefaultKeyedRateLimiter::keyed),
            quota: quota.map(DefaultKeyedRateLimiter::keyed),
            spike_rejections: AtomicU64::new(0),
            quota_rejections: AtomicU64::new(0),
            tokens_max: config.tokens.map(|n| n.get()),
            tokens_rejections: AtomicU64::new(0),
        }
    }

    /// The live-token quota (`quota_tokens`) for a token request of `client`: CMN_90002 once
    /// the tables hold that many of its tokens. Counted when the request arrives, so requests
    /// in flight together may pass it by as many as are in flight; it bounds memory, it is not
    /// an exact allowance.
    pub fn check_tokens_held(&self, state: &State, client: &Client) -> Result<(), ErrorCode> {
        let Some(max) = self.tokens_max else {
            return Ok(());
        };
        let tables = state.tables();
        // Below the cap in all, no client can be at it: one load, no per-client count (the
        // common case, and the whole cost on the hot path).
        if (tables.token_count() as u64) < max || tables.tokens_held_by(&client.id, &client.institution_ids) < max {
            return Ok(());
        }
        note_retry_after(TOKENS_HELD_RETRY_AFTER);
        self.tokens_rejections.fetch_add(1, Ordering::Relaxed);
        Err(ErrorCode::QuotaLimit)
    }

    /// Spike arrest for a request of a known client.
    pub fn check_spike_of(&self, client_id: &Arc<str>) -> Result<(), ErrorCode> {
        let Some(limiter) = &self.spike else {
            return Ok(());
        };
        check(limiter, client_id, &self.spike_rejections, ErrorCode::SpikeLimit)
    }

    /// The quota of an authenticated client.
    pub fn check_quota(&self, client_id: &Arc<str>) -> Result<(), ErrorCode> {
        let Some(limiter) = &self.quota else {
            return Ok(());
        };
        check(limiter, client_id, &self.quota_rejections, ErrorCode::QuotaLimit)
    }

    /// Forgets clients whose buckets are full again (run now and then; memory stays bounded by
    /// the number of clients either way).
    pub fn forget_idle(&self) {
        for limiter in [&self.spike, &self.quota].into_iter().flatten() {
            limiter.retain_recent();
        }
    }
}

impl App {
    /// What every Basic-authenticated endpoint does first: client authentication (with its own
    /// throttle for failures, `api::client_auth`), then the authenticated client's spike arrest
    /// and quota. Nobody but the client itself can spend its allowance.
    pub(crate) async fn authenticate_limited_client(
        &self,
        credentials: &BasicCredentials,
    ) -> Result<Arc<Client>, ErrorCode> {
        let client = self.authenticate_client(credentials).await?;
        self.rate_limits.check_spike_of(&client.id)?;
        self.rate_limits.check_quota(&client.id)?;
        Ok(client)
    }

    /// Both limits for a request carrying an access token of some client, charged to that
    /// client. An unknown token is not limited here: it fails at once without costly work.
    pub(crate) fn limit_bearer_client(&self, token: &TokenId) -> Result<(), ErrorCode> {
        let Some(client_id) = self.state.read().token(token).map(|t| t.grant.client_id.clone()) else {
            return Ok(());
        };
        self.rate_limits.check_spike_of(&client_id)?;
        self.rate_limits.check_quota(&client_id)
    }
}

fn check(
    limiter: &DefaultKeyedRateLimiter<Arc<str>>,
    key: &Arc<str>,
    rejections: &AtomicU64,
    code: ErrorCode,
) -> Result<(), ErrorCode> {
    match limiter.check_key(key) {
        Ok(()) => Ok(()),
        Err(not_until) => {
            let wait = not_until.wait_time_from(limiter.clock().now());
            note_retry_after(wait);
            rejections.fetch_add(1, Ordering::Relaxed);
            Err(code)
        }
    }
}

tokio::task_local! {
    /// Seconds the current request's client should wait, set by a refused limit check.
    static RETRY_AFTER_SECS: Cell<Option<u64>>;
    /// The peer of the current request (see [`crate::api::throttle::peer_key`]).
    static PEER: Option<IpAddr>;
    /// The request's slot among `requests_in_flight_max`, until the handler ends or gives it back.
    static IN_FLIGHT_SLOT: RefCell<Option<OwnedSemaphorePermit>>;
}

/// Runs one request's handling with its peer address known to the throttles and its in-flight
/// slot, and returns what it set for `Retry-After`, if anything.
pub async fn request_scope<F: Future>(
    peer: Option<IpAddr>,
    slot: Option<OwnedSemaphorePermit>,
    handling: F,
) -> (F::Output, Option<u64>) {
    let scoped = RETRY_AFTER_SECS.scope(Cell::new(None), async move {
        let output = handling.await;
        (output, RETRY_AFTER_SECS.with(Cell::get))
    });
    IN_FLIGHT_SLOT.scope(RefCell::new(slot), PEER.scope(peer, scoped)).await
}

/// The peer of the current request; `None` outside [`request_scope`] (in-process callers).
pub fn current_peer() -> Option<IpAddr> {
    PEER.try_with(|peer| *peer).ok().flatten()
}

/// Gives the current request's in-flight slot back before its answer, for a request that only
/// waits from now on (see `api::client_auth`, which makes refused guessers wait).
pub(crate) fn release_in_flight_slot() {
    let _ = IN_FLIGHT_SLOT.try_with(|slot| slot.borrow_mut().take());
}

/// Records `wait` (rounded up to whole seconds, at least 1) for the current request; a no-op
/// outside [`request_scope`].
pub(crate) fn note_retry_after(wait: Duration) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let _ = RETRY_AFTER_SECS.try_with(|cell| cell.set(Some(secs.max(1))));
}
