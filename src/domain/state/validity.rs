//! Whether a token is active at a time, and why not: the one place validity is computed.
//! Introspection asks [`State::is_active`]; audit (point-in-time status, history) asks
//! [`State::validity`] of a state replayed up to the time in question.

use super::cutoff::Cutoff;
use super::{EndCause, State};
use crate::domain::tables::TokenView;
use crate::proto::ledger::RevocationReason;

/// The verdict on one token at one time, with the event that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Usable; `issued_seq` is the event that created it.
    Active { issued_seq: u64 },
    /// Its lifetime ran out at `expires_at_ms`; `issued_seq` set that expiry.
    Expired { issued_seq: u64, expires_at_ms: i64 },
    /// The token itself ended: revoked on its own, or rotated (refresh tokens).
    Ended { seq: u64, at_ms: i64, cause: EndCause },
    /// Its refresh-token family was revoked.
    FamilyRevoked { seq: u64, at_ms: i64, reason: RevocationReason },
    /// A bulk revocation (cutoff) covers it.
    CutOff { cutoff: Cutoff },
}

impl Validity {
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Active { .. })
    }

    /// The sequence number of the event that decided this verdict.
    pub fn deciding_seq(&self) -> u64 {
        match self {
            Self::Active { issued_seq } | Self::Expired { issued_seq, .. } => *issued_seq,
            Self::Ended { seq, .. } | Self::FamilyRevoked { seq, .. } => *seq,
            Self::CutOff { cutoff } => cutoff.seq,
        }
    }
}

impl State {
    /// Is `token` usable at `now_ms`: not expired, not ended, family not revoked, and not
    /// covered by a bulk revocation.
    pub fn is_active(&self, token: &TokenView<'_>, now_ms: i64) -> bool {
        self.validity(token, now_ms).is_active()
    }

    /// The verdict on `token` at `now_ms`. When several things ended it, the earliest one
    /// decides (by time, then by sequence number; an event beats an expiry at the same time).
    pub fn validity(&self, token: &TokenView<'_>, now_ms: i64) -> Validity {
        let mut verdict: Option<(i64, u64, Validity)> = None;
        let mut consider = |at_ms: i64, seq: u64, candidate: Validity| {
            if verdict.as_ref().is_none_or(|(a, s, _)| (at_ms, seq) < (*a, *s)) {
                verdict = Some((at_ms, seq, candidate));
            }
        };
        if let Some(end) = &token.end {
            consider(end.at_ms, end.seq, Validity::Ended { seq: end.seq, at_ms: end.at_ms, cause: end.cause.clone() });
        }
        if let Some(revoked) = token.grant.family.and_then(|f| self.family(&f)).and_then(|f| f.revoked) {
            let candidate = Validity::FamilyRevoked { seq: revoked.seq, at_ms: revoked.at_ms, reason: revoked.reason };
            consider(revoked.at_ms, revoked.seq, candidate);
        }
        if let Some(cutoff) = self.cutoffs.covering(token) {
            consider(cutoff.at_ms, cutoff.seq, Validity::CutOff { cutoff });
        }
        if now_ms >= token.expires_at_ms {
            // u64::MAX: at the same millisecond, a recorded event is the better explanation.
            let expired = Validity::Expired { issued_seq: token.issued_seq, expires_at_ms: token.expires_at_ms };
            consider(token.expires_at_ms, u64::MAX, expired);
        }
        match verdict {
            Some((_, _, verdict)) => verdict,
            None => Validity::Active { issued_seq: token.issued_seq },
        }
    }
}
