//! How token events change the projections: tokens issued (with rotation, the family and the
//! retry answer), a token revoked, a family revoked.

use std::sync::Arc;

use crate::domain::shared::decision::{Recorded, decided_at_ms};
use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::shared::scope::ScopeList;
use crate::domain::state::{
    EndCause, Family, Grant, RecentRequest, RequestKey, Revocation, State, Token, TokenEnd, TokenKind, UserIdentity,
};
use crate::proto::ledger::{FamilyRevoked, GrantType, RevocationReason, TokenRevoked, TokensIssued, UserType};

pub(crate) fn token_revoked(state: &mut State, at: Recorded<'_>, r: &TokenRevoked) {
    if let Some(token) = TokenId::from_slice(&r.token_id).and_then(|id| state.token_mut(&id)) {
        token.end.get_or_insert(TokenEnd {
            seq: at.seq,
            at_ms: at.recorded_at_ms,
            cause: EndCause::Revoked(reason(r.reason)),
        });
    }
}

pub(crate) fn family_revoked(state: &mut State, at: Recorded<'_>, r: &FamilyRevoked) {
    if let Some(family) = FamilyId::from_slice(&r.family_id).and_then(|id| state.family_mut(&id)) {
        family.revoked.get_or_insert(Revocation { seq: at.seq, at_ms: at.recorded_at_ms, reason: reason(r.reason) });
        family.live_refresh = None;
    }
}

fn reason(raw: i32) -> RevocationReason {
    RevocationReason::try_from(raw).unwrap_or(RevocationReason::Unspecified)
}

pub(crate) fn tokens_issued(state: &mut State, at: Recorded<'_>, t: &TokensIssued) {
    let family = FamilyId::from_slice(&t.family_id);
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
    let grant = Arc::new(Grant {
        grant_type: GrantType::try_from(t.grant_type).unwrap_or(GrantType::Unspecified),
        client_id: client.as_ref().map(|c| c.id.clone()).unwrap_or_else(|| t.client_id.as_str().into()),
        institution_id: state
            .institutions
            .get_key_value(t.institution_id.as_str())
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| t.institution_id.as_str().into()),
        user,
        family,
    });
    let client_scopes = client.as_ref().map(|c| c.scopes.clone());
    let (mut access, mut refresh) = (None, None);
    for (kind, wire) in [(TokenKind::Access, &t.access), (TokenKind::Refresh, &t.refresh)] {
        let Some(wire) = wire else { continue };
        let Some(id) = TokenId::from_slice(&wire.token_id) else {
            continue;
        };
        let scopes = shared_scopes(&wire.scopes, client_scopes.as_ref());
        let token = Token {
            kind,
            grant: grant.clone(),
            scopes,
            issued_at_ms: at.recorded_at_ms,
            expires_at_ms: wire.expires_at_ms,
            issued_seq: at.seq,
            end: None,
        };
        state.insert_token(id, token);
        let minted = Some((id, wire.expires_at_ms));
        match kind {
            TokenKind::Access => access = minted,
            TokenKind::Refresh => refresh = minted,
        }
    }
    if let (Some(old), Some((successor, _))) =
        (TokenId::from_slice(&t.rotated_from).and_then(|id| state.token_mut(&id)), refresh)
    {
        old.end.get_or_insert(TokenEnd {
            seq: at.seq,
            at_ms: at.recorded_at_ms,
            cause: EndCause::Rotated { successor },
        });
    }
    if let Some(family_id) = family {
        let expires_at_ms = access.iter().chain(refresh.iter()).map(|(_, exp)| *exp).max().unwrap_or(at.recorded_at_ms);
        let entry = state.family_or_insert_with(family_id, || Family {
            client_id: grant.client_id.clone(),
            revoked: None,
            live_refresh: None,
            expires_at_ms,
            started_at_ms: decided_at_ms(t.issued_at_ms, at),
        });
        entry.expires_at_ms = entry.expires_at_ms.max(expires_at_ms);
        if let Some((id, _)) = refresh {
            entry.live_refresh = Some(id);
        }
    }
    let fingerprint = <[u8; 32]>::try_from(t.request_fingerprint.as_slice());
    if let (Some((access, _)), Ok(fingerprint), false) = (access, fingerprint, at.transaction_id.is_empty()) {
        let key = RequestKey { client_id: grant.client_id.clone(), transaction_id: at.transaction_id.to_owned() };
        let at_ms = decided_at_ms(t.issued_at_ms, at);
        let recent = RecentRequest { fingerprint, at_ms, access, refresh: refresh.map(|(id, _)| id) };
        state.recent_requests.insert(key, recent);
    }
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
