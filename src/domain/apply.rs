//! `apply`: the only code that changes the projections. It trusts the event (it was decided
//! against the state of its time) and never fails: an event that refers to something the
//! projections have already forgotten (an expired token) changes nothing.

use std::sync::Arc;

use super::authcode::apply as authcode;
use super::shared::ids::{FamilyId, TokenId};
use super::shared::scope::ScopeList;
use super::state::{
    Client, EndCause, Family, Grant, GrantTypes, Institution, RecentRequest, RequestKey, Revocation, State, Token,
    TokenEnd, TokenKind, User, UserIdentity, user_key,
};
use crate::domain::shared::grant::parse_stored;
use crate::proto::ledger::{
    ClientCreated, Event, GrantType, RevocationReason, TokensIssued, UserCreated, UserType, event,
};

pub use super::shared::decision::{Recorded, decided_at_ms};

pub fn apply(state: &mut State, at: Recorded<'_>, event: &Event) {
    debug_assert!(at.seq > state.head.seq, "events apply in ledger order: seq {} after {}", at.seq, state.head.seq);
    match &event.kind {
        None | Some(event::Kind::LedgerCreated(_)) => {}
        Some(event::Kind::InstitutionCreated(i)) => {
            let id: Arc<str> = i.institution_id.as_str().into();
            state.institutions.insert(id.clone(), Institution { id, name: i.name.clone(), created_seq: at.seq });
        }
        Some(event::Kind::ClientCreated(c)) => apply_client(state, at, c),
        Some(event::Kind::UserCreated(u)) => apply_user(state, at, u),
        Some(event::Kind::TokensIssued(t)) => {
            apply_issued(state, at, t);
            super::apply_account::signed_in(state, t);
            authcode::tokens_issued(state, at, t);
        }
        Some(
            kind @ (event::Kind::ClientSecretRotated(_)
            | event::Kind::ClientDisabled(_)
            | event::Kind::ClientEnabled(_)
            | event::Kind::ClientAuthorizePartnersSet(_)
            | event::Kind::UserPasswordSet(_)
            | event::Kind::UserLocked(_)
            | event::Kind::UserUnlocked(_)
            | event::Kind::UserDisabled(_)
            | event::Kind::UserEnabled(_)
            | event::Kind::UserUpdated(_)
            | event::Kind::SignInFailed(_)
            | event::Kind::SignInLockedOut(_)),
        ) => super::apply_account::apply_change(state, at, kind),
        Some(event::Kind::TokenRevoked(r)) => {
            if let Some(token) = TokenId::from_slice(&r.token_id).and_then(|id| state.token_mut(&id)) {
                token.end.get_or_insert(TokenEnd {
                    seq: at.seq,
                    at_ms: at.recorded_at_ms,
                    cause: EndCause::Revoked(reason(r.reason)),
                });
            }
        }
        Some(event::Kind::FamilyRevoked(r)) => {
            if let Some(family) = FamilyId::from_slice(&r.family_id).and_then(|id| state.family_mut(&id)) {
                family.revoked.get_or_insert(Revocation {
                    seq: at.seq,
                    at_ms: at.recorded_at_ms,
                    reason: reason(r.reason),
                });
                family.live_refresh = None;
            }
        }
        Some(event::Kind::AuthorizationCodeIssued(e)) => authcode::code_issued(state, at, e),
        Some(event::Kind::AuthorizationCodeReplayed(e)) => authcode::code_replayed(state, at, e),
        Some(event::Kind::AuthorizationCodeBurned(e)) => authcode::code_burned(state, at, e),
        Some(event::Kind::SigningKeyActivated(e)) => authcode::signing_key_activated(state, at, e),
        Some(event::Kind::BulkRevoked(b)) => super::bulk::apply_bulk_revoked(state, at, b),
        Some(event::Kind::BlastRadiusRevoked(b)) => super::bulk::apply_blast_radius_revoked(state, at, b),
    }
    state.head.seq = at.seq;
    state.head.hash = at.hash;
    state.head.recorded_at_ms = at.recorded_at_ms;
}

fn reason(raw: i32) -> RevocationReason {
    RevocationReason::try_from(raw).unwrap_or(RevocationReason::Unspecified)
}

fn apply_client(state: &mut State, at: Recorded<'_>, c: &ClientCreated) {
    let mut grant_types = GrantTypes::default();
    for grant in c.grant_types.iter().filter_map(|g| parse_stored(g)) {
        grant_types.insert(grant);
    }
    let id: Arc<str> = c.client_id.as_str().into();
    let client = Client {
        id: id.clone(),
        name: c.name.clone(),
        institution_ids: c.institution_ids.iter().map(|i| Arc::from(i.as_str())).collect(),
        grant_types,
        scopes: c.scopes.iter().map(|s| Box::from(s.as_str())).collect(),
        redirect_uri: c.redirect_uri.clone(),
        access_token_ttl_secs: c.access_token_ttl_secs,
        refresh_token_ttl_secs: c.refresh_token_ttl_secs,
        introspect: c.introspect,
        consent_enabled: c.consent_enabled,
        secondary_authentication_enabled: c.secondary_authentication_enabled,
        device_registration_enabled: c.device_registration_enabled,
        authorize_partners: c.authorize_partners,
        secret: c.secret.clone().unwrap_or_default(),
        created_seq: at.seq,
        disabled: false,
        previous_secret: None,
    };
    state.clients.insert(id, Arc::new(client));
}

fn apply_user(state: &mut State, at: Recorded<'_>, u: &UserCreated) {
    let identity = UserIdentity {
        institution_id: u.institution_id.as_str().into(),
        login_id: u.login_id.as_str().into(),
        institution_user_id: u.institution_user_id.as_str().into(),
        host_user_id: u.host_user_id.clone(),
        user_type: UserType::try_from(u.user_type).unwrap_or(UserType::Unspecified),
    };
    let user = User {
        identity: Arc::new(identity),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        email: u.email.clone(),
        institution_customers: u.institution_customers.clone(),
        password: u.password.clone().unwrap_or_default(),
        created_seq: at.seq,
        disabled: false,
        locked: false,
    };
    let key = user_key(&u.institution_id, &u.login_id);
    if !u.host_user_id.is_empty() {
        state.users_by_host_user_id.insert(user_key(&u.institution_id, &u.host_user_id), key.clone());
    }
    state.users_by_institution_user_id.insert(user_key(&u.institution_id, &u.institution_user_id), key.clone());
    state.users.insert(key, Arc::new(user));
}

fn apply_issued(state: &mut State, at: Recorded<'_>, t: &TokensIssued) {
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
