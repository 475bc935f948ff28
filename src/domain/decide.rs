//! `decide` for token commands: pure functions of (state, command, time) to events.

use std::sync::Arc;

use super::command::{Context, Decision, Issue, IssueGrant, Issued, IssuedToken, Outcome, Revoke};
use super::ids::TokenId;
use super::scope::{self, ScopeList};
use super::state::{Client, RETRY_WINDOW_MS, RequestKey, State, TokenKind};
use crate::error::ErrorCode;
use crate::proto::ledger::{
    Event, FamilyRevoked, GrantType, IssuedToken as WireToken, RevocationReason, TokenRevoked, TokensIssued, event,
};

/// Checks that `client_id` may use `grant` for `institution_id` (when the grant needs one)
/// and works out the scopes to grant. Shared by the api layer, which calls it before the slow
/// password hash, and by `decide`, which calls it again against the state it commits on.
pub fn admit<'s>(
    state: &'s State,
    client_id: &str,
    grant: GrantType,
    institution_id: Option<&str>,
    requested_scopes: Option<&[Box<str>]>,
) -> Result<(&'s Arc<Client>, Option<ScopeList>), ErrorCode> {
    let client = state.client(client_id).filter(|c| !c.disabled).ok_or(ErrorCode::InvalidClient)?;
    let entitled = match grant {
        GrantType::RefreshToken => client.grant_types.allows_refresh(),
        other => client.grant_types.contains(other),
    };
    if !entitled {
        return Err(ErrorCode::NotAuthorized);
    }
    if grant == GrantType::RefreshToken {
        // The refresh token carries the institution and the scopes; decide checks them.
        return Ok((client, None));
    }
    let institution = institution_id.ok_or(ErrorCode::InvalidInstitution)?;
    if !state.institutions.contains_key(institution) {
        return Err(ErrorCode::InvalidInstitution);
    }
    if !client.serves_institution(institution) {
        return Err(ErrorCode::NotAuthorized);
    }
    let scopes = scope::grant(requested_scopes.map(<[Box<str>]>::to_vec), &client.scopes)?;
    Ok((client, Some(scopes)))
}

pub fn decide_issue(state: &State, issue: &Issue, ctx: Context<'_>) -> Decision {
    if let Some(answer) = retry_answer(state, issue, ctx) {
        return answer;
    }
    match &issue.grant {
        IssueGrant::ClientCredentials => issue_fresh(state, issue, ctx, GrantType::ClientCredentials, None),
        IssueGrant::Password { login_id } => issue_fresh(state, issue, ctx, GrantType::Password, Some(login_id)),
        IssueGrant::Refresh { token } => refresh(state, issue, ctx, token),
        IssueGrant::AuthorizationCode(redemption) => super::authcode::decide::redeem(state, issue, redemption, ctx),
    }
}

/// SPEC 3.1: the same client retrying the same transactionId within 60 s gets the same tokens
/// back when the request is the same, and CMN_90011 when it is not.
fn retry_answer(state: &State, issue: &Issue, ctx: Context<'_>) -> Option<Decision> {
    if ctx.transaction_id.is_empty() {
        return None;
    }
    let key = RequestKey { client_id: issue.client_id.clone(), transaction_id: ctx.transaction_id.to_owned() };
    let recent = state.recent_requests.get(&key)?;
    if recent.at_ms + RETRY_WINDOW_MS <= ctx.now_ms {
        return None;
    }
    if recent.fingerprint != issue.fingerprint {
        return Some(Decision::refuse(ErrorCode::InvalidRequest));
    }
    let access = state.tokens.get(&recent.access)?;
    let refresh =
        recent.refresh.and_then(|id| state.tokens.get(&id).map(|t| IssuedToken { id, expires_at_ms: t.expires_at_ms }));
    let issued = Issued {
        access: IssuedToken { id: recent.access, expires_at_ms: access.expires_at_ms },
        refresh,
        scopes: access.scopes.clone(),
        replayed: true,
    };
    Some(Decision::ok(Vec::new(), Outcome::Issued(issued)))
}

fn issue_fresh(
    state: &State,
    issue: &Issue,
    ctx: Context<'_>,
    grant: GrantType,
    login_id: Option<&String>,
) -> Decision {
    let (client, scopes) =
        match admit(state, &issue.client_id, grant, issue.institution_id.as_deref(), issue.requested_scopes.as_deref())
        {
            Ok((client, Some(scopes))) => (client, scopes),
            Ok((_, None)) => return Decision::refuse(ErrorCode::Internal),
            Err(code) => return Decision::refuse(code),
        };
    let institution_id = issue.institution_id.clone().unwrap_or_default();
    if let Some(login_id) = login_id {
        // The api layer verified the password against this user; it must still exist and
        // may have been locked or disabled since.
        if let Err(code) = super::signin::may_sign_in(state, &institution_id, login_id, ctx.now_ms) {
            return Decision::refuse(code);
        }
    }
    let access = mint(issue.fresh.access, ctx.now_ms, client.access_token_ttl_secs);
    let refresh = login_id.map(|_| mint(issue.fresh.refresh, ctx.now_ms, client.refresh_token_ttl_secs));
    let event = TokensIssued {
        grant_type: grant as i32,
        client_id: client.id.to_string(),
        institution_id,
        login_id: login_id.cloned().unwrap_or_default(),
        family_id: if refresh.is_some() { issue.fresh.family.0.to_vec() } else { Vec::new() },
        access: Some(wire_token(&access, &scopes)),
        refresh: refresh.as_ref().map(|r| wire_token(r, &scopes)),
        rotated_from: Vec::new(),
        request_fingerprint: issue.fingerprint.to_vec(),
        issued_at_ms: ctx.now_ms,
        ..TokensIssued::default()
    };
    let issued = Issued { access, refresh, scopes, replayed: false };
    Decision::ok(vec![wrap(event::Kind::TokensIssued(event))], Outcome::Issued(issued))
}

fn refresh(state: &State, issue: &Issue, ctx: Context<'_>, presented: &TokenId) -> Decision {
    let client = match admit(state, &issue.client_id, GrantType::RefreshToken, None, None) {
        Ok((client, _)) => client,
        Err(code) => return Decision::refuse(code),
    };
    let Some(old) = state.tokens.get(presented).filter(|t| t.kind == TokenKind::Refresh) else {
        return Decision::refuse(ErrorCode::InvalidToken);
    };
    // A refresh token of another client is simply invalid here: a stranger must not be able
    // to revoke the owner's family by presenting it.
    if *old.grant.client_id != *client.id
        || old.expires_at_ms <= ctx.now_ms
        || state.family_revoked(old)
        || state.cutoffs.covering(old).is_some()
    {
        return Decision::refuse(ErrorCode::InvalidToken);
    }
    if issue.institution_id.as_deref().is_some_and(|i| i != &*old.grant.institution_id) {
        return Decision::refuse(ErrorCode::InvalidInstitution);
    }
    let Some(family) = old.grant.family else {
        return Decision::refuse(ErrorCode::InvalidToken);
    };
    match &old.end {
        None if state.cutoffs.covering(old).is_some() => return Decision::refuse(ErrorCode::InvalidToken),
        None => {}
        Some(end) if matches!(end.cause, super::state::EndCause::Rotated { .. }) => {
            // Reuse of a rotated refresh token: end the whole family (RFC 9700 4.14.2).
            let revoke = FamilyRevoked {
                family_id: family.0.to_vec(),
                reason: RevocationReason::RefreshReuse as i32,
                trigger_token_id: presented.0.to_vec(),
            };
            return Decision {
                events: vec![wrap(event::Kind::FamilyRevoked(revoke))],
                outcome: Err(super::command::Rejection::Token(ErrorCode::InvalidToken)),
            };
        }
        Some(_) => return Decision::refuse(ErrorCode::InvalidToken),
    }
    let access_scopes = match issue.requested_scopes.as_deref() {
        None | Some([]) => old.scopes.clone(),
        Some(requested) if scope::is_subset(requested, &old.scopes) => {
            scope::grant(Some(requested.to_vec()), &old.scopes).unwrap_or_else(|_| old.scopes.clone())
        }
        Some(_) => return Decision::refuse(ErrorCode::InvalidScope),
    };
    let access = mint(issue.fresh.access, ctx.now_ms, client.access_token_ttl_secs);
    let refresh = mint(issue.fresh.refresh, ctx.now_ms, client.refresh_token_ttl_secs);
    let event = TokensIssued {
        grant_type: GrantType::RefreshToken as i32,
        client_id: client.id.to_string(),
        institution_id: old.grant.institution_id.to_string(),
        login_id: old.grant.user.as_ref().map(|u| u.login_id.to_string()).unwrap_or_default(),
        family_id: family.0.to_vec(),
        access: Some(wire_token(&access, &access_scopes)),
        // RFC 6749 section 6: the new refresh token keeps the scope of the one it replaces.
        refresh: Some(wire_token(&refresh, &old.scopes)),
        rotated_from: presented.0.to_vec(),
        request_fingerprint: issue.fingerprint.to_vec(),
        issued_at_ms: ctx.now_ms,
        ..TokensIssued::default()
    };
    let issued = Issued { access, refresh: Some(refresh), scopes: access_scopes, replayed: false };
    Decision::ok(vec![wrap(event::Kind::TokensIssued(event))], Outcome::Issued(issued))
}

/// RFC 7009 revocation. Unknown, expired, already revoked and other clients' tokens are no-ops
/// with the same answer, so revocation is no existence oracle.
pub fn decide_revoke(state: &State, revoke: &Revoke, ctx: Context<'_>) -> Decision {
    let Some(token) = state.tokens.get(&revoke.token).filter(|t| t.kind == revoke.kind) else {
        return Decision::ok(Vec::new(), Outcome::Revoked);
    };
    if *token.grant.client_id != *revoke.client_id || token.expires_at_ms <= ctx.now_ms || state.family_revoked(token) {
        return Decision::ok(Vec::new(), Outcome::Revoked);
    }
    let event = match (token.kind, token.grant.family) {
        // Any refresh token of a live family (even an already rotated one) ends the family.
        (TokenKind::Refresh, Some(family)) => event::Kind::FamilyRevoked(FamilyRevoked {
            family_id: family.0.to_vec(),
            reason: RevocationReason::ClientRequest as i32,
            trigger_token_id: revoke.token.0.to_vec(),
        }),
        _ if token.end.is_some() => return Decision::ok(Vec::new(), Outcome::Revoked),
        _ => event::Kind::TokenRevoked(TokenRevoked {
            token_id: revoke.token.0.to_vec(),
            reason: RevocationReason::ClientRequest as i32,
        }),
    };
    Decision::ok(vec![wrap(event)], Outcome::Revoked)
}

pub(super) fn mint(id: TokenId, now_ms: i64, ttl_secs: u64) -> IssuedToken {
    let ttl_ms = i64::try_from(ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    IssuedToken { id, expires_at_ms: now_ms.saturating_add(ttl_ms) }
}

pub(super) fn wire_token(token: &IssuedToken, scopes: &ScopeList) -> WireToken {
    WireToken {
        token_id: token.id.0.to_vec(),
        expires_at_ms: token.expires_at_ms,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

pub(super) fn wrap(kind: event::Kind) -> Event {
    Event { kind: Some(kind) }
}
