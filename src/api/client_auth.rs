//! Client authentication (Basic credentials) that an unauthenticated caller cannot turn into
//! CPU time, into a lockout of a real client, or into a map of which client ids exist.
//!
//! - A right secret is answered from cheap checks whenever possible: generated secrets are
//!   keyed digests (one HMAC), and an imported (PBKDF2) secret is remembered once verified, so
//!   a client pays the slow hash once per process. Since a PBKDF2 digest has one preimage that
//!   matters, a remembered secret also tells a wrong one apart without hashing.
//! - Everything else (an unknown or disabled client id, a wrong secret, an imported secret not
//!   verified yet) costs the same: one PBKDF2 check at the configured cost, against the real
//!   digest or a dummy one. So timing says nothing about which ids exist.
//! - That check runs on its own small budget (`client_secret_hash_concurrency`), apart from
//!   password sign-ins. The budget is taken with `try_acquire`: when it is exhausted the request
//!   is refused at once (CMN_90003, `Retry-After: 1`) instead of queueing while it holds a slot
//!   of `requests_in_flight_max`.
//! - Failures back off per (presented client id, source address) and per source address
//!   (`api::throttle`); while a key backs off it is refused (CMN_90003 with `Retry-After`)
//!   before any hash, and the refusal is sent after the wait (at most 1 s, without holding an
//!   in-flight slot), so a guesser that does not honour `Retry-After` cannot turn refusals
//!   into a CPU flood either. A right secret that the cheap checks recognise is never refused, so a
//!   flood of guesses from elsewhere cannot lock a working client out.
//! - The same wrong secret presented again is answered from a bounded negative cache (CMN_90004,
//!   no hash, no backoff): a client deployed with a stale secret costs nothing and keeps
//!   getting the honest answer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use ring::hmac;
use tokio::sync::Semaphore;

use super::ratelimit::{current_peer, note_retry_after, release_in_flight_slot};
use super::throttle::{Backoff, FailureThrottle};
use super::wire::BasicCredentials;
use crate::api::error::ErrorCode;
use crate::crypto::credential::{self, Check};
use crate::crypto::keys::ServerKeys;
use crate::domain::state::Client;
use crate::proto::ledger::{CredentialDigest, credential_digest};

/// Wrong secrets remembered by the negative cache.
const REJECTED_MAX: usize = 4096;
/// Longest time a refused guess waits for its answer.
pub const TARPIT_MAX: Duration = Duration::from_secs(1);
/// Refused guesses that may wait for their answer at once; more are answered at once.
pub const TARPIT_WAITING_MAX: usize = 4096;
/// Per source address alone, this many times the per-(id, source) free failures.
const SOURCE_FAILURES_FACTOR: u32 = 10;

/// The failure backoff of client authentication, `free_failures` from the settings.
pub fn backoff(free_failures: u32) -> Backoff {
    Backoff {
        free_failures,
        first_wait: Duration::from_secs(1),
        longest_wait: Duration::from_secs(300),
        forget_after: Duration::from_secs(900),
    }
}

/// A verified imported secret: its cache tag and the stored digest it was checked against.
type VerifiedSecret = ([u8; 32], CredentialDigest);

/// Tags of refused (client id, secret) pairs: the set, and the same tags oldest first.
type Rejected = (HashSet<[u8; 32]>, VecDeque<[u8; 32]>);

/// How often each refusal happened (for /metrics).
#[derive(Default)]
pub struct ClientAuthCounters {
    /// Refused while the (id, source) or the source backed off.
    pub throttled: AtomicU64,
    /// Refused because every slot of `client_secret_hash_concurrency` was busy.
    pub budget_exhausted: AtomicU64,
    /// Wrong secrets answered from the negative cache.
    pub known_wrong: AtomicU64,
}

pub struct ClientAuth {
    /// Imported secrets verified since start-up: client id → (tag of the secret, its digest).
    verified: RwLock<HashMap<Arc<str>, VerifiedSecret>>,
    /// Tags of (client id, wrong secret, the client's digests) that failed, oldest first.
    rejected: Mutex<Rejected>,
    /// Slow client-secret checks at once; never waited for.
    budget: Semaphore,
    /// Refused guesses waiting for their answer ([`TARPIT_WAITING_MAX`]).
    tarpit: Semaphore,
    /// Failures per (presented client id, source address).
    by_client: FailureThrottle,
    /// Failures per source address.
    by_source: FailureThrottle,
    /// Checked for everything that is not an imported secret awaiting its first check.
    dummy: CredentialDigest,
    pub counters: ClientAuthCounters,
}

/// What the cheap checks found.
enum Fast {
    Match,
    /// No cheap answer: the PBKDF2 check of this digest decides.
    Slow(CredentialDigest),
    Mismatch,
}

impl ClientAuth {
    pub fn new(budget: usize, free_failures: u32, dummy: CredentialDigest) -> Self {
        let source = backoff(free_failures.saturating_mul(SOURCE_FAILURES_FACTOR));
        Self {
            verified: RwLock::new(HashMap::new()),
            rejected: Mutex::new((HashSet::new(), VecDeque::new())),
            budget: Semaphore::new(budget.max(1)),
            tarpit: Semaphore::new(TARPIT_WAITING_MAX),
            by_client: FailureThrottle::new(backoff(free_failures)),
            by_source: FailureThrottle::new(source),
            dummy,
            counters: ClientAuthCounters::default(),
        }
    }

    /// Authenticates `credentials` against `client` (`None`: unknown or disabled id) at
    /// `now_ms`; see the module comment for the order of the checks.
    pub async fn authenticate(
        &self,
        app: &crate::api::app::App,
        credentials: &BasicCredentials,
        client: Option<Arc<Client>>,
        now_ms: i64,
    ) -> Result<Arc<Client>, ErrorCode> {
        let presented = credentials.client_secret.as_str();
        let mut slow = None;
        if let Some(client) = &client {
            let stored = std::iter::once(&client.secret).chain(client.previous_secret_at(now_ms));
            for digest in stored {
                match self.fast(&app.keys, client, presented, digest) {
                    Fast::Match => return Ok(client.clone()),
                    Fast::Slow(digest) => slow = Some(digest),
                    Fast::Mismatch => {}
                }
            }
        }
        let rejected_tag = rejection_tag(&app.keys, &credentials.client_id, presented, client.as_deref(), now_ms);
        if self.rejected.lock().0.contains(&rejected_tag) {
            self.counters.known_wrong.fetch_add(1, Ordering::Relaxed);
            return Err(ErrorCode::InvalidClient);
        }
        let peer = current_peer();
        let by_client = (credentials.client_id.as_str(), peer);
        if let Err(wait) = self.by_client.check(by_client).and_then(|()| self.by_source.check(peer)) {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(self.refuse(wait).await);
        }
        let Ok(_permit) = self.budget.try_acquire() else {
            self.counters.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            return Err(self.refuse(Duration::from_secs(1)).await);
        };
        let checked = slow.clone().unwrap_or_else(|| self.dummy.clone());
        let matched = app.verify_slow_now(presented.to_owned(), checked).await;
        match (client, slow) {
            (Some(client), Some(digest)) if matched => {
                let tag = credential::cache_tag(&app.keys, &client.id, presented);
                self.verified.write().insert(client.id.clone(), (tag, digest));
                Ok(client)
            }
            _ => {
                self.record_failure(by_client, peer, rejected_tag);
                Err(ErrorCode::InvalidClient)
            }
        }
    }

    /// CMN_90003 with `Retry-After: wait`, answered after half to all of the wait (at most
    /// [`TARPIT_MAX`]):
    /// a guesser that does not wait gets one answer per wait and connection instead of as many
    /// as the CPU can refuse. The request gives its in-flight slot back first, so waiting holds
    /// nothing others need; when [`TARPIT_WAITING_MAX`] requests already wait, it is answered
    /// at once.
    async fn refuse(&self, wait: Duration) -> ErrorCode {
        note_retry_after(wait);
        release_in_flight_slot();
        if let Ok(_waiting) = self.tarpit.try_acquire() {
            // Half to all of the wait, at random, so refused guessers do not come back in step.
            let jitter = f64::from(u16::from_be_bytes(crate::crypto::random_bytes::<2>())) / f64::from(u16::MAX);
            tokio::time::sleep(wait.min(TARPIT_MAX).mul_f64(0.5 + jitter / 2.0)).await;
        }
        ErrorCode::SpikeLimit
    }

    fn fast(&self, keys: &ServerKeys, client: &Client, presented: &str, stored: &CredentialDigest) -> Fast {
        match credential::verify_fast(keys, &client.id, presented, stored) {
            Check::Match => Fast::Match,
            Check::Mismatch => Fast::Mismatch,
            Check::NeedsSlowHash => {
                let verified = self.verified.read();
                match verified.get(&client.id).filter(|(_, digest)| digest == stored) {
                    Some((tag, _)) => {
                        let presented_tag = credential::cache_tag(keys, &client.id, presented);
                        if crate::crypto::digests_equal(tag, &presented_tag) { Fast::Match } else { Fast::Mismatch }
                    }
                    None => Fast::Slow(stored.clone()),
                }
            }
        }
    }

    fn record_failure(&self, by_client: (&str, Option<IpAddr>), peer: Option<IpAddr>, tag: [u8; 32]) {
        self.by_client.record_failure(by_client);
        self.by_source.record_failure(peer);
        let mut rejected = self.rejected.lock();
        let (set, order) = &mut *rejected;
        if set.insert(tag) {
            order.push_back(tag);
            if order.len() > REJECTED_MAX
                && let Some(oldest) = order.pop_front()
            {
                set.remove(&oldest);
            }
        }
    }

    /// Clients whose current secret is an imported (PBKDF2) one, for the operator's nudge.
    pub fn is_slow_secret(client: &Client) -> bool {
        matches!(client.secret.kind, Some(credential_digest::Kind::Pbkdf2(_)))
    }
}

/// A keyed tag of a failed (client id, secret) that also covers what the secret was checked
/// against (the client's current digests, or nothing for an unknown or disabled id), so that
/// a rotation, a new client under that id or a re-enabled client is never answered from it.
fn rejection_tag(
    keys: &ServerKeys,
    client_id: &str,
    presented: &str,
    client: Option<&Client>,
    now_ms: i64,
) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(&keys.active().secret_digest);
    ctx.update(b"rejected-client-secret/v1\0");
    for part in [client_id.as_bytes(), presented.as_bytes()] {
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part);
    }
    if let Some(client) = client {
        for digest in std::iter::once(&client.secret).chain(client.previous_secret_at(now_ms)) {
            let bytes = digest.encode_to_vec();
            ctx.update(&(bytes.len() as u32).to_be_bytes());
            ctx.update(&bytes);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}
