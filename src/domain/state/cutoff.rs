//! Cutoffs: the projection of bulk revocations. "Every token of client C issued before event S
//! (and before time T)" is one record per client, user, institution or family, so a bulk
//! revocation costs O(1) to apply and every token check consults at most four records.
//!
//! **Invariant:** a token's `issued_at_ms` never decreases with its `issued_seq` (the writer
//! records batches at `max(clock, previous)`). Under it, the tokens a cutoff covers are always
//! a prefix of the ledger, so the union of two cutoffs is one of them and a single record per
//! key is exact (see [`Cutoff::merge`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::FastMap;
use crate::domain::shared::ids::FamilyId;
use crate::domain::tables::TokenView;

/// "Every token issued before event `seq` and before `before_ms` has ended."
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cutoff {
    /// The event that set this cutoff.
    pub seq: u64,
    /// Its commit time.
    pub at_ms: i64,
    /// Tokens issued at or after this time are not covered; `i64::MAX` when the cutoff has no
    /// time bound (or a bound after its own event, which means the same).
    pub before_ms: i64,
}

impl Cutoff {
    /// The cutoff recorded by an event at (`seq`, `at_ms`); `issued_before_ms` 0 means "no
    /// time bound".
    pub fn new(seq: u64, at_ms: i64, issued_before_ms: i64) -> Self {
        // Every token issued before the event was issued at or before `at_ms`, so a bound
        // after `at_ms` adds nothing: normalise it away, which keeps `merge` exact.
        let before_ms = if issued_before_ms <= 0 || issued_before_ms > at_ms { i64::MAX } else { issued_before_ms };
        Self { seq, at_ms, before_ms }
    }

    pub fn covers(&self, token: &TokenView<'_>) -> bool {
        token.issued_seq < self.seq && token.issued_at_ms < self.before_ms
    }

    /// The single cutoff covering exactly what `self` and the later `newer` cover together.
    ///
    /// Each covers a prefix of the ledger; the later one covers the longer prefix when it has
    /// no time bound, when its bound is not earlier than an earlier bound, or when the earlier
    /// one had no time bound and the later bound falls after the earlier event. Otherwise
    /// every token the later one covers was issued before the earlier event and the earlier
    /// one already covers it.
    pub fn merge(self, newer: Cutoff) -> Cutoff {
        debug_assert!(newer.seq > self.seq, "cutoffs are merged in ledger order");
        let newer_wins = newer.before_ms == i64::MAX
            || if self.before_ms == i64::MAX {
                newer.before_ms > self.at_ms
            } else {
                newer.before_ms >= self.before_ms
            };
        if newer_wins { newer } else { self }
    }
}

/// Every cutoff in force, by what it is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cutoffs {
    pub by_client: HashMap<Arc<str>, Cutoff>,
    pub by_institution: HashMap<Arc<str>, Cutoff>,
    /// Institution id, then login id.
    pub by_user: HashMap<Arc<str>, HashMap<Arc<str>, Cutoff>>,
    pub by_family: FastMap<FamilyId, Cutoff>,
}

/// What a cutoff is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CutoffScope {
    Client(String),
    User { institution_id: String, login_id: String },
    Institution(String),
    Family(FamilyId),
}

impl CutoffScope {
    /// Does this scope include `token`?
    pub fn includes(&self, token: &TokenView<'_>) -> bool {
        let grant = &token.grant;
        match self {
            Self::Client(id) => **grant.client_id == **id,
            Self::Institution(id) => **grant.institution_id == **id,
            Self::User { institution_id, login_id } => {
                grant.user.is_some_and(|u| *u.institution_id == **institution_id && *u.login_id == **login_id)
            }
            Self::Family(id) => grant.family == Some(*id),
        }
    }
}

impl Cutoffs {
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
            && self.by_institution.is_empty()
            && self.by_user.is_empty()
            && self.by_family.is_empty()
    }

    /// Records `cutoff` for `scope`, merged with the one already there.
    pub fn add(&mut self, scope: &CutoffScope, cutoff: Cutoff) {
        let slot = match scope {
            CutoffScope::Client(id) => self.by_client.entry(Arc::from(id.as_str())).or_insert(cutoff),
            CutoffScope::Institution(id) => self.by_institution.entry(Arc::from(id.as_str())).or_insert(cutoff),
            CutoffScope::User { institution_id, login_id } => self
                .by_user
                .entry(Arc::from(institution_id.as_str()))
                .or_default()
                .entry(Arc::from(login_id.as_str()))
                .or_insert(cutoff),
            CutoffScope::Family(id) => self.by_family.entry(*id).or_insert(cutoff),
        };
        if slot.seq != cutoff.seq {
            *slot = slot.merge(cutoff);
        }
    }

    /// The cutoff that ends `token`, if any (the earliest, when several do).
    pub fn covering(&self, token: &TokenView<'_>) -> Option<Cutoff> {
        if self.is_empty() {
            return None;
        }
        let grant = &token.grant;
        let user =
            grant.user.and_then(|u| self.by_user.get(&*u.institution_id).and_then(|logins| logins.get(&*u.login_id)));
        [
            self.by_client.get(&**grant.client_id),
            self.by_institution.get(&**grant.institution_id),
            user,
            grant.family.as_ref().and_then(|f| self.by_family.get(f)),
        ]
        .into_iter()
        .flatten()
        .filter(|c| c.covers(token))
        .min_by_key(|c| c.seq)
        .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::state::{Grant, Token, TokenKind};
    use crate::proto::ledger::GrantType;

    fn token(seq: u64, at_ms: i64) -> Token {
        Token {
            kind: TokenKind::Access,
            grant: Arc::new(Grant {
                grant_type: GrantType::ClientCredentials,
                client_id: "c".into(),
                institution_id: "1".into(),
                user: None,
                family: None,
            }),
            scopes: Default::default(),
            issued_at_ms: at_ms,
            expires_at_ms: i64::MAX,
            issued_seq: seq,
            end: None,
        }
    }

    /// A deterministic pseudo-random sequence (no dependency, reproducible from the seed).
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn a_merged_cutoff_covers_exactly_the_union_of_its_parts() {
        for case in 0..500u64 {
            let mut seed = case * 7919 + 1;
            // A ledger of 60 events whose times never decrease, often repeating (one batch).
            let mut times = Vec::new();
            let mut now = 1_000i64;
            for _ in 0..60 {
                now += (next(&mut seed) % 3) as i64;
                times.push(now);
            }
            let mut merged: Option<Cutoff> = None;
            let mut parts = Vec::new();
            let mut seq = 1u64;
            for _ in 0..(1 + next(&mut seed) % 5) {
                seq += 1 + next(&mut seed) % 12;
                if seq as usize > times.len() {
                    break;
                }
                let at = times[seq as usize - 1];
                let before = match next(&mut seed) % 4 {
                    0 => 0,
                    1 => at + 1 + (next(&mut seed) % 5) as i64,
                    _ => 1_000 + (next(&mut seed) % 130) as i64,
                };
                let cutoff = Cutoff::new(seq, at, before);
                parts.push((seq, at, before));
                merged = Some(merged.map_or(cutoff, |m| m.merge(cutoff)));
            }
            let Some(merged) = merged else { continue };
            for (i, at) in times.iter().enumerate() {
                let t = token(i as u64 + 1, *at);
                let union = parts.iter().any(|(s, _, b)| t.issued_seq < *s && (*b <= 0 || t.issued_at_ms < *b));
                assert_eq!(merged.covers(&t.view()), union, "case {case}, token {}, parts {parts:?}", i + 1);
            }
        }
    }

    #[test]
    fn a_cutoff_spares_tokens_issued_after_it_or_after_its_time() {
        let all = Cutoff::new(10, 500, 0);
        assert!(all.covers(&token(9, 500).view()));
        assert!(!all.covers(&token(10, 500).view()));
        let before = Cutoff::new(10, 500, 400);
        assert!(before.covers(&token(3, 399).view()));
        assert!(!before.covers(&token(4, 400).view()));
    }
}
