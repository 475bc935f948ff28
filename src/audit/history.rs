//! One token's story from the ledger: its issuance, every event of the token and its family,
//! and the bulk revocations that cover it; and its status at any time. The events are found
//! through the index and replayed into a small, fresh `State`, so the answer comes from the
//! same `apply` and `State::validity` as the live projections, and works for tokens the
//! projections forgot long ago.

use super::query::{QueryError, open_all};
use crate::domain::bulk;
use crate::domain::ids::{FamilyId, TokenId};
use crate::domain::state::cutoff::{Cutoff, CutoffScope};
use crate::domain::state::validity::Validity;
use crate::domain::state::{EndCause, State, TokenKind};
use crate::domain::tables::TablesConfig;
use crate::domain::{Recorded, apply};
use crate::ledger::codec::Opened;
use crate::ledger::index::{IndexKind, cutoff_value};
use crate::ledger::reader::Snapshot;
use crate::proto::ledger::{GrantType, TokensIssued, event};

/// Most events one history or status query replays; a family refreshed hourly for a year
/// stays well below it.
pub const RELATED_EVENTS_MAX: usize = 20_000;

/// What the ledger says about a token at its issuance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    pub id: TokenId,
    pub kind: TokenKind,
    pub grant_type: GrantType,
    pub client_id: String,
    pub institution_id: String,
    pub login_id: String,
    pub family: Option<FamilyId>,
    pub scopes: Vec<String>,
    pub issued_seq: u64,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub rotated_from: Option<TokenId>,
}

impl TokenFacts {
    /// The tokens an issuance event minted.
    pub fn minted(issued: &TokensIssued, seq: u64, at_ms: i64) -> Vec<TokenFacts> {
        [(TokenKind::Access, &issued.access), (TokenKind::Refresh, &issued.refresh)]
            .into_iter()
            .filter_map(|(kind, wire)| {
                let wire = wire.as_ref()?;
                Some(TokenFacts {
                    id: TokenId::from_slice(&wire.token_id)?,
                    kind,
                    grant_type: GrantType::try_from(issued.grant_type).unwrap_or(GrantType::Unspecified),
                    client_id: issued.client_id.clone(),
                    institution_id: issued.institution_id.clone(),
                    login_id: issued.login_id.clone(),
                    family: FamilyId::from_slice(&issued.family_id),
                    scopes: wire.scopes.clone(),
                    issued_seq: seq,
                    issued_at_ms: at_ms,
                    expires_at_ms: wire.expires_at_ms,
                    rotated_from: TokenId::from_slice(&issued.rotated_from),
                })
            })
            .collect()
    }

    /// The bulk-revocation scopes that include this token.
    pub fn scopes_including(&self) -> Vec<CutoffScope> {
        let mut scopes =
            vec![CutoffScope::Client(self.client_id.clone()), CutoffScope::Institution(self.institution_id.clone())];
        if !self.login_id.is_empty() {
            scopes.push(CutoffScope::User {
                institution_id: self.institution_id.clone(),
                login_id: self.login_id.clone(),
            });
        }
        if let Some(family) = self.family {
            scopes.push(CutoffScope::Family(family));
        }
        scopes
    }
}

/// Finds the event that issued token `id` (among events up to `head`).
pub fn find_token(snapshot: &Snapshot, id: &TokenId, head: u64) -> Result<Option<(TokenFacts, Opened)>, QueryError> {
    for seq in snapshot.index_seqs(IndexKind::Token, &id.0, 1..=head, RELATED_EVENTS_MAX)? {
        let Some(opened) = open_all(snapshot, &[seq])?.pop() else { continue };
        if let Some(event::Kind::TokensIssued(issued)) = &opened.event.kind
            && let Some(facts) =
                TokenFacts::minted(issued, seq, opened.envelope.recorded_at_ms).into_iter().find(|f| f.id == *id)
        {
            return Ok(Some((facts, opened)));
        }
    }
    Ok(None)
}

/// Every event that can matter to the token, in seq order: its own, its family's, and the
/// bulk revocations of its client, institution, user and family after its issuance.
pub fn related_events(snapshot: &Snapshot, facts: &TokenFacts, head: u64) -> Result<(Vec<Opened>, bool), QueryError> {
    let max = RELATED_EVENTS_MAX;
    let mut seqs = snapshot.index_seqs(IndexKind::Token, &facts.id.0, 1..=head, max)?;
    if let Some(family) = facts.family {
        seqs.extend(snapshot.index_seqs(IndexKind::Family, &family.0, 1..=head, max)?);
    }
    for scope in facts.scopes_including() {
        let from = facts.issued_seq.saturating_add(1);
        seqs.extend(snapshot.index_seqs(IndexKind::Cutoff, &cutoff_value(&scope), from..=head, max)?);
    }
    seqs.sort_unstable();
    seqs.dedup();
    let truncated = seqs.len() > max;
    seqs.truncate(max);
    let mut events = open_all(snapshot, &seqs)?;
    // A cutoff that spares this token (issued after its time bound) is not part of its story,
    // unless it is about the token's family.
    events.retain(|e| match &e.event.kind {
        Some(event::Kind::BulkRevoked(b)) => {
            let cutoff = Cutoff::new(e.envelope.seq, e.envelope.recorded_at_ms, b.issued_before_ms);
            facts.issued_at_ms < cutoff.before_ms
                || bulk::scope_of(b).is_some_and(|s| facts.family.is_some_and(|f| s == CutoffScope::Family(f)))
        }
        _ => true,
    });
    Ok((events, truncated))
}

/// The verdict on a token at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusAt {
    pub at_ms: i64,
    /// `None`: not issued yet at that time.
    pub validity: Option<Validity>,
    /// The event that decided: the issuance, or the first event that ended the token.
    pub deciding_seq: u64,
}

impl StatusAt {
    pub fn is_active(&self) -> bool {
        self.validity.as_ref().is_some_and(Validity::is_active)
    }

    /// The machine-readable state name.
    pub fn state_name(&self) -> &'static str {
        match &self.validity {
            None => "not_yet_issued",
            Some(Validity::Active { .. }) => "active",
            Some(Validity::Expired { .. }) => "expired",
            Some(Validity::Ended { cause: EndCause::Rotated { .. }, .. }) => "rotated",
            Some(Validity::Ended { .. }) => "revoked",
            Some(Validity::FamilyRevoked { .. }) => "family_revoked",
            Some(Validity::CutOff { .. }) => "cut_off",
        }
    }
}

/// One related event and whether it changed the token itself.
pub struct Step {
    pub event: Opened,
    pub affects_token: bool,
}

/// Replays `events` (seq order) up to `at_ms`; returns every step and the status at `at_ms`.
pub fn replay(facts: &TokenFacts, events: &[Opened], at_ms: i64) -> (Vec<Step>, StatusAt) {
    let mut state = State::with_tables(TablesConfig::small());
    let mut steps = Vec::with_capacity(events.len());
    let mut first_end = None;
    for opened in events {
        let at = opened.envelope.recorded_at_ms;
        if at > at_ms {
            break;
        }
        let before = state.token(&facts.id).map(|t| state.validity(&t, at));
        let recorded = Recorded { seq: opened.envelope.seq, recorded_at_ms: at, transaction_id: "", hash: opened.hash };
        apply(&mut state, recorded, &opened.event);
        let after = state.token(&facts.id).map(|t| state.validity(&t, at));
        let affects_token = before != after;
        let ended =
            matches!(after, Some(Validity::Ended { .. } | Validity::FamilyRevoked { .. } | Validity::CutOff { .. }));
        if affects_token && ended && first_end.is_none() {
            first_end = Some(opened.envelope.seq);
        }
        steps.push(Step { event: opened.clone(), affects_token });
    }
    let validity = state.token(&facts.id).map(|t| state.validity(&t, at_ms));
    let deciding_seq = match &validity {
        Some(v @ (Validity::Ended { .. } | Validity::FamilyRevoked { .. } | Validity::CutOff { .. })) => {
            first_end.unwrap_or_else(|| v.deciding_seq())
        }
        _ => facts.issued_seq,
    };
    (steps, StatusAt { at_ms, validity, deciding_seq })
}
