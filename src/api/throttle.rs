//! Throttles for failures, keyed by what an unauthenticated caller presents (a client id, a
//! source address): after a few free failures each further one starts a backoff that doubles,
//! and while it runs the caller is refused before any costly work.
//!
//! Keys are hashed with a per-process random seed into a fixed table of slots, so memory never
//! grows with the number of ids or addresses an attacker invents, and nobody can aim two keys
//! at one slot. Two keys that share a slot throttle each other, which errs on the safe side.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Slots per throttle: 16384 × 16 bytes.
const SLOTS: usize = 1 << 14;

/// When failures start to cost waiting time, and how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Failures of one key that cost nothing; 0 turns the throttle off.
    pub free_failures: u32,
    /// The wait after the first failure beyond the free ones; it doubles with each further one.
    pub first_wait: Duration,
    /// The longest wait.
    pub longest_wait: Duration,
    /// A key without failures for this long starts afresh.
    pub forget_after: Duration,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    failures: u32,
    /// Milliseconds since the throttle was created: the last failure, and the end of the wait.
    last_failure_ms: u32,
    blocked_until_ms: u32,
}

pub struct FailureThrottle {
    policy: Backoff,
    slots: Mutex<Box<[Slot]>>,
    seed: foldhash::quality::RandomState,
    started: Instant,
}

impl FailureThrottle {
    pub fn new(policy: Backoff) -> Self {
        let slots = if policy.free_failures == 0 { Vec::new() } else { vec![Slot::default(); SLOTS] };
        Self {
            policy,
            slots: Mutex::new(slots.into_boxed_slice()),
            seed: foldhash::quality::RandomState::default(),
            started: Instant::now(),
        }
    }

    /// `Err(wait)` while `key` is backing off.
    pub fn check(&self, key: impl Hash) -> Result<(), Duration> {
        let Some(index) = self.index(&key) else {
            return Ok(());
        };
        let now_ms = self.now_ms();
        let Some(slot) = self.slots.lock().get(index).copied() else {
            return Ok(());
        };
        if now_ms < slot.blocked_until_ms {
            return Err(Duration::from_millis(u64::from(slot.blocked_until_ms - now_ms)));
        }
        Ok(())
    }

    /// Counts a failure of `key`; beyond the free ones it starts (or doubles) the wait.
    pub fn record_failure(&self, key: impl Hash) {
        let Some(index) = self.index(&key) else {
            return;
        };
        let now_ms = self.now_ms();
        let mut slots = self.slots.lock();
        let Some(slot) = slots.get_mut(index) else {
            return;
        };
        let forget_ms = millis(self.policy.forget_after);
        if slot.failures > 0 && now_ms.saturating_sub(slot.last_failure_ms) >= forget_ms {
            *slot = Slot::default();
        }
        slot.failures = slot.failures.saturating_add(1);
        slot.last_failure_ms = now_ms;
        if let Some(beyond) = slot.failures.checked_sub(self.policy.free_failures + 1) {
            let wait = self.policy.first_wait.saturating_mul(1u32 << beyond.min(20)).min(self.policy.longest_wait);
            slot.blocked_until_ms = now_ms.saturating_add(millis(wait));
        }
    }

    fn index(&self, key: &impl Hash) -> Option<usize> {
        if self.policy.free_failures == 0 {
            return None;
        }
        Some(self.seed.hash_one(key) as usize % SLOTS)
    }

    /// Milliseconds since start-up, saturating after 49 days (the throttle then only counts
    /// from that moment on, which is harmless: waits are at most minutes).
    fn now_ms(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX)
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// A budget of failures per authenticated client: `per_min` a minute, `per_min` at once (a
/// token bucket). It is looked at before costly work and charged only when that work failed,
/// so a client's successes never use it. Keys are clients, so memory is bounded by them.
pub struct FailureBudget {
    per_min: u32,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl FailureBudget {
    /// `per_min` of 0 turns the budget off.
    pub fn new(per_min: u32) -> Self {
        Self { per_min, buckets: Mutex::new(HashMap::new()) }
    }

    /// `Err(wait)` while `key` has no failure left.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.per_min == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let tokens = self.buckets.lock().get(key).map_or(f64::from(self.per_min), |b| self.refilled(b, now));
        if tokens >= 1.0 {
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - tokens) * 60.0 / f64::from(self.per_min)))
    }

    /// Spends one failure of `key`.
    pub fn charge(&self, key: &Arc<str>) {
        if self.per_min == 0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let full = Bucket { tokens: f64::from(self.per_min), at: now };
        let bucket = buckets.entry(key.clone()).or_insert(full);
        *bucket = Bucket { tokens: (self.refilled(bucket, now) - 1.0).max(0.0), at: now };
    }

    /// Forgets buckets that are full again (run now and then).
    pub fn forget_full(&self) {
        let now = Instant::now();
        let full = f64::from(self.per_min);
        self.buckets.lock().retain(|_, bucket| self.refilled(bucket, now) < full);
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let per_sec = f64::from(self.per_min) / 60.0;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * per_sec).min(f64::from(self.per_min))
    }
}

/// The part of a peer address that one party controls: an IPv4 address, or the /64 prefix of
/// an IPv6 address (one host is given a whole /64, so its single addresses mean nothing).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff {
        free_failures: 2,
        first_wait: Duration::from_secs(1),
        longest_wait: Duration::from_secs(4),
        forget_after: Duration::from_secs(3600),
    };

    #[test]
    fn free_failures_cost_nothing_then_the_wait_doubles_up_to_the_longest() {
        let throttle = FailureThrottle::new(POLICY);
        let mut waits = Vec::new();
        for _ in 0..6 {
            throttle.record_failure("a");
            waits.push(throttle.check("a").err().map(|w| (w.as_millis() as u64).div_ceil(1000)));
        }
        assert_eq!(waits, [None, None, Some(1), Some(2), Some(4), Some(4)]);
        assert!(throttle.check("b").is_ok(), "another key is not throttled");
    }

    #[test]
    fn zero_free_failures_turns_the_throttle_off() {
        let throttle = FailureThrottle::new(Backoff { free_failures: 0, ..POLICY });
        for _ in 0..10 {
            throttle.record_failure("a");
        }
        assert!(throttle.check("a").is_ok());
    }

    #[test]
    fn a_failure_budget_is_charged_only_by_failures_and_refills() {
        let budget = FailureBudget::new(120);
        let key: Arc<str> = Arc::from("c1");
        for _ in 0..120 {
            assert!(budget.check(&key).is_ok());
            budget.charge(&key);
        }
        let wait = budget.check(&key).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(budget.check("c2").is_ok(), "another client has its own budget");
        std::thread::sleep(Duration::from_millis(600));
        assert!(budget.check(&key).is_ok(), "one failure back every 0.5 s");
        assert!(FailureBudget::new(0).check(&key).is_ok());
    }

    #[test]
    fn ipv6_peers_count_per_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(peer_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
