//! Dummy password digests, so that a sign-in for a login id that does not exist (or a user
//! without a password) costs what a real user's wrong password costs, also when the stored
//! digests do not all use the configured iteration count (they keep the count they were
//! hashed with; `password_pbkdf2_iterations` may have changed since).
//!
//! The housekeeping task samples the iteration counts of stored passwords now and then; an
//! unknown login id is given a dummy digest of one of those counts, chosen by a keyed hash of
//! the login id with the sampled frequencies. The same unknown login id therefore always costs
//! the same (like a real user), and the costs of unknown ids are spread like those of real ones.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::crypto::credential;
use crate::crypto::keys::ServerKeys;
use crate::domain::State;
use crate::proto::ledger::{CredentialDigest, credential_digest};

/// Users looked at per refresh (the first ones of the map's arbitrary order).
const SAMPLE_USERS: usize = 4096;
/// Distinct iteration counts kept (the most frequent ones).
const COUNTS_MAX: usize = 16;

/// The dummy digests and how often each count occurs among stored passwords.
pub struct DummyDigests {
    table: RwLock<Arc<Table>>,
    /// Dummy digest per iteration count, created once each.
    made: RwLock<HashMap<u32, CredentialDigest>>,
}

struct Table {
    /// (cumulative weight, digest), weights ascending.
    entries: Vec<(u64, CredentialDigest)>,
    total: u64,
}

impl DummyDigests {
    /// Starts with one dummy at the configured cost.
    pub fn new(configured: CredentialDigest) -> Self {
        let made = iterations(&configured).map(|n| HashMap::from([(n, configured.clone())])).unwrap_or_default();
        Self {
            table: RwLock::new(Arc::new(Table { entries: vec![(1, configured)], total: 1 })),
            made: RwLock::new(made),
        }
    }

    /// The dummy digest for (institution, login id).
    pub fn pick(&self, keys: &ServerKeys, institution_id: &str, login_id: &str) -> CredentialDigest {
        let table = self.table.read().clone();
        let parts = &mut [(" purpose", "dummy-digest/v1"), (" institution", institution_id), (" login", login_id)];
        let tag = credential::request_fingerprint(keys, parts);
        let point = u64::from_be_bytes(tag[..8].try_into().unwrap_or_default()) % table.total.max(1);
        let chosen = table.entries.iter().find(|(up_to, _)| point < *up_to).or(table.entries.last());
        chosen.map(|(_, digest)| digest.clone()).unwrap_or_default()
    }

    /// The iteration counts of a sample of stored passwords, most frequent first.
    pub fn sample(state: &State) -> Vec<(u32, u64)> {
        let mut counts: HashMap<u32, u64> = HashMap::new();
        for user in state.users.values().take(SAMPLE_USERS) {
            if let Some(n) = iterations(&user.password) {
                *counts.entry(n).or_default() += 1;
            }
        }
        let mut counts: Vec<(u32, u64)> = counts.into_iter().collect();
        counts.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counts.truncate(COUNTS_MAX);
        counts
    }

    /// Rebuilds the table from `counts` (from [`Self::sample`]); creates missing dummies on the
    /// blocking pool (one PBKDF2 each, once per count).
    pub async fn refresh(&self, counts: Vec<(u32, u64)>) {
        if counts.is_empty() {
            return;
        }
        for (n, _) in &counts {
            if self.made.read().contains_key(n) {
                continue;
            }
            let Some(cost) = NonZeroU32::new(*n) else { continue };
            if let Ok(digest) = tokio::task::spawn_blocking(move || credential::dummy_digest(cost)).await {
                self.made.write().insert(*n, digest);
            }
        }
        let made = self.made.read();
        let mut entries = Vec::with_capacity(counts.len());
        let mut total = 0u64;
        for (n, weight) in counts {
            if let Some(digest) = made.get(&n) {
                total += weight;
                entries.push((total, digest.clone()));
            }
        }
        if total > 0 {
            *self.table.write() = Arc::new(Table { entries, total });
        }
    }
}

fn iterations(digest: &CredentialDigest) -> Option<u32> {
    match &digest.kind {
        Some(credential_digest::Kind::Pbkdf2(d)) => Some(d.iterations),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_login_always_gets_the_same_dummy_and_the_counts_follow_the_sample() {
        let keys = ServerKeys::from_secret(1, &[5; 32]);
        let low = NonZeroU32::new(1000).unwrap();
        let dummies = DummyDigests::new(credential::dummy_digest(low));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(dummies.refresh(vec![(1000, 3), (2000, 1)]));
        let mut seen = HashMap::new();
        for i in 0..400 {
            let login = format!("nobody-{i}");
            let first = iterations(&dummies.pick(&keys, "01001", &login)).unwrap();
            assert_eq!(iterations(&dummies.pick(&keys, "01001", &login)), Some(first), "stable per login id");
            *seen.entry(first).or_insert(0) += 1;
        }
        assert!((250..350).contains(&seen[&1000]) && (50..150).contains(&seen[&2000]), "{seen:?}");
    }
}
