//! How bulk revocations change the projections: a `BulkRevoked` is one cutoff record, a
//! `BlastRadiusRevoked` ends each token it names.

use super::scope_of;
use crate::domain::shared::decision::Recorded;
use crate::domain::shared::ids::TokenId;
use crate::domain::state::State;
use crate::domain::state::cutoff::Cutoff;
use crate::proto::ledger::{BlastRadiusRevoked, BulkRevoked, RevocationReason};

pub(crate) fn bulk_revoked(state: &mut State, at: Recorded<'_>, event: &BulkRevoked) {
    if let Some(scope) = scope_of(event) {
        state.cutoffs.add(&scope, Cutoff::new(at.seq, at.recorded_at_ms, event.issued_before_ms));
    }
}

pub(crate) fn blast_radius_revoked(state: &mut State, at: Recorded<'_>, event: &BlastRadiusRevoked) {
    let ids: Vec<TokenId> = event.token_ids.iter().filter_map(|id| TokenId::from_slice(id)).collect();
    state.tables().end_tokens(at.seq, at.recorded_at_ms, RevocationReason::Admin, &ids);
}
