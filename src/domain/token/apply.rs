//! How token events change the projections: tokens issued (with rotation, the family and the
//! retry answer), a token revoked, a family revoked.

use std::sync::Arc;

use crate::domain::shared::decision::{Recorded, decided_at_ms};
use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::shared::scope::ScopeList;
use crate::domain::state::{State, UserIdentity};
use crate::domain::tables::{Issuance, NewToken, RequestAnswer};
use crate::proto::ledger::{
    FamilyRevoked, GrantType, IssuedToken, RevocationReason, TokenRevoked, TokensIssued, UserType,
};

pub(crate) fn token_revoked(state: &State, at: Recorded<'_>, r: &TokenRevoked) {
    if let Some(id) = TokenId::from_slice(&r.token_id) {
        state.tables().end_tokens(at.seq, at.recorded_at_ms, reason(r.reason), &[id]);
    }
}

pub(crate) fn family_revoked(state: &State, at: Recorded<'_>, r: &FamilyRevoked) {
    if let Some(id) = FamilyId::from_slice(&r.family_id) {
        state.tables().revoke_family(at.seq, at.recorded_at_ms, &id, reason(r.reason));
    }
}

fn reason(raw: i32) -> RevocationReason {
    RevocationReason::try_from(raw).unwrap_or(RevocationReason::Unspecified)
}

pub(crate) fn tokens_issued(state: &State, at: Recorded<'_>, t: &TokensIssued) {
    let client = state.clients.get(t.client_id.as_str()).cloned();
    let user = (!t.login_id.is_empty()).then(|| {
        state.user(&t.institution_id, &t.login_id).map(|u| u.identity.clone()).unwrap_or_else(|| {
            Arc::new(UserIdentity {
                institution_id: t.institution_id.as_str().into(),
                login_id: t.login_id.as_str().into(),
                institution_user_id: t.login_id.as_str().into(),
                host_user_id: String::new(),
                user_type: UserType::Unspecified,
            })
        })
    });
    let client_id: Arc<str> = client.as_ref().map(|c| c.id.clone()).unwrap_or_else(|| t.client_id.as_str().into());
    let institution_id: Arc<str> = state
        .institutions
        .get_key_value(t.institution_id.as_str())
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| t.institution_id.as_str().into());
    let client_scopes = client.as_ref().map(|c| &c.scopes);
    let minted = |wire: &Option<IssuedToken>| {
        let wire = wire.as_ref()?;
        let id = TokenId::from_slice(&wire.token_id)?;
        Some((id, wire.expires_at_ms, shared_scopes(&wire.scopes, client_scopes)))
    };
    let (access, refresh) = (minted(&t.access), minted(&t.refresh));
    fn new(m: &Option<(TokenId, i64, ScopeList)>) -> Option<NewToken<'_>> {
        m.as_ref().map(|(id, expires_at_ms, scopes)| NewToken { id: *id, expires_at_ms: *expires_at_ms, scopes })
    }
    let fingerprint = <[u8; 32]>::try_from(t.request_fingerprint.as_slice()).ok();
    let request = match (&fingerprint, at.transaction_id.is_empty()) {
        (Some(fingerprint), false) => Some(RequestAnswer { transaction_id: at.transaction_id, fingerprint }),
        _ => None,
    };
    let issuance = Issuance {
        seq: at.seq,
        recorded_at_ms: at.recorded_at_ms,
        decided_at_ms: decided_at_ms(t.issued_at_ms, at),
        grant_type: GrantType::try_from(t.grant_type).unwrap_or(GrantType::Unspecified),
        client_id: &client_id,
        institution_id: &institution_id,
        user: user.as_ref(),
        family: FamilyId::from_slice(&t.family_id),
        access: new(&access),
        refresh: new(&refresh),
        rotated_from: TokenId::from_slice(&t.rotated_from),
        request,
    };
    // A full interner (a limit of distinct clients, scope lists or users) leaves the tokens
    // unstored, so they read as unknown (inactive): the tables count it (`dropped_counts`).
    let _ = state.tables().issue(&issuance);
}

/// Shares the client's scope list when a token has exactly those scopes, which is the common
/// case, so most tokens cost no scope allocation.
fn shared_scopes(names: &[String], client_scopes: Option<&ScopeList>) -> ScopeList {
    if let Some(client_scopes) =
        client_scopes.filter(|c| c.len() == names.len() && c.iter().zip(names).all(|(a, b)| **a == **b))
    {
        return client_scopes.clone();
    }
    names.iter().map(|s| Box::from(s.as_str())).collect()
}
