//! `decide` for token commands: pure functions of (state, command, time) to events.

use std::sync::Arc;

use super::{CodeRedemption, Issue, IssueGrant, Issued, IssuedToken, Revoke};
use crate::domain::shared::decision::{Context, Decision, wrap};
use crate::domain::shared::error::Refusal;
use crate::domain::shared::ids::TokenId;
use crate::domain::shared::scope::{self, ScopeList};
use crate::domain::state::{Client, EndCause, RETRY_WINDOW_MS, State, TokenKind};
use crate::domain::tables::TokenView;
use crate::proto::ledger::{
    FamilyRevoked, GrantType, IssuedToken as WireToken, RevocationReason, TokenRevoked, TokensIssued, event,
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
) -> Result<(&'s Arc<Client>, Option<ScopeList>), Refusal> {
    let client = state.client(client_id).filter(|c| !c.disabled).ok_or(Refusal::InvalidClient)?;
    let entitled = match grant {
        GrantType::RefreshToken => client.grant_types.allows_refresh(),
        other => client.grant_types.contains(other),
    };
    if !entitled {
        return Err(Refusal::UnauthorizedClient);
    }
    if grant == GrantType::RefreshToken {
        // The refresh token carries the institution and the scopes; decide checks them.
        return Ok((client, None));
    }
    let institution = institution_id.ok_or(Refusal::InvalidInstitution)?;
    if !state.institutions.contains_key(institution) {
        return Err(Refusal::InvalidInstitution);
    }
    if !client.serves_institution(institution) {
        return Err(Refusal::UnauthorizedClient);
    }
    let scopes = scope::grant(requested_scopes.map(<[Box<str>]>::to_vec), &client.scopes)?;
    Ok((client, Some(scopes)))
}

/// Decides a token request. The authorization_code grant is the `authcode` aggregate's:
/// `redeem` (which the dispatcher passes in) decides it, after the retry check every grant
/// shares.
pub fn decide_issue(
    state: &State,
    issue: &Issue,
    ctx: Context<'_>,
    redeem: impl FnOnce(&CodeRedemption) -> Decision<Issued>,
) -> Decision<Issued> {
    if let Some(answer) = retry_answer(state, issue, ctx) {
        return answer;
    }
    match &issue.grant {
        IssueGrant::ClientCredentials => issue_fresh(state, issue, ctx, GrantType::ClientCredentials, None),
        IssueGrant::Password { login_id } => issue_fresh(state, issue, ctx, GrantType::Password, Some(login_id)),
        IssueGrant::Refresh { token } => refresh(state, issue, ctx, token),
        IssueGrant::AuthorizationCode(redemption) => redeem(redemption),
    }
}

/// SPEC 3.1: the same client retrying the same transactionId within 60 s gets the same tokens
/// back when the request is the same, and CMN_90011 when it is not. Tokens that are no longer
/// active (revoked, cut off, expired) are not handed out again: the retry answers CMN_90018.
fn retry_answer(state: &State, issue: &Issue, ctx: Context<'_>) -> Option<Decision<Issued>> {
    if ctx.transaction_id.is_empty() {
        return None;
    }
    let recent = state.recent_answer(&issue.client_id, ctx.transaction_id)?;
    if recent.at_ms + RETRY_WINDOW_MS <= ctx.now_ms {
        return None;
    }
    if !recent.fingerprint_matches(&issue.fingerprint) {
        return Some(Decision::refuse(Refusal::InvalidRequest));
    }
    let live = |id: &TokenId| state.active_token(id, ctx.now_ms);
    let Some(access) = live(&recent.access) else {
        return Some(Decision::refuse(Refusal::InvalidGrant));
    };
    let refresh = match recent.refresh {
        None => None,
        Some(id) => match live(&id) {
            Some(token) => Some(IssuedToken { id, expires_at_ms: token.expires_at_ms }),
            None => return Some(Decision::refuse(Refusal::InvalidGrant)),
        },
    };
    let issued = Issued {
        access: IssuedToken { id: recent.access, expires_at_ms: access.expires_at_ms },
        refresh,
        scopes: access.scopes.clone(),
        replayed: true,
    };
    Some(Decision::ok(Vec::new(), issued))
}

fn issue_fresh(
    state: &State,
    issue: &Issue,
    ctx: Context<'_>,
    grant: GrantType,
    login_id: Option<&String>,
) -> Decision<Issued> {
    let (client, scopes) =
        match admit(state, &issue.client_id, grant, issue.institution_id.as_deref(), issue.requested_scopes.as_deref())
        {
            Ok((client, Some(scopes))) => (client, scopes),
            Ok((_, None)) => return Decision::refuse(Refusal::Inconsistent),
            Err(code) => return Decision::refuse(code),
        };
    let institution_id = issue.institution_id.clone().unwrap_or_default();
    if let Some(login_id) = login_id {
        // The api layer verified the password against this user; it must still exist and
        // may have been locked or disabled since.
        if let Err(code) = crate::domain::signin::may_sign_in(state, &institution_id, login_id, ctx.now_ms) {
            return Decision::refuse(code);
        }
    }
    // A sign-in starts a family: none of its tokens will outlive this.
    let family_end =
        if login_id.is_some() { ctx.now_ms.saturating_add(issue.family_lifetime_max_ms) } else { i64::MAX };
    let access = mint_until(issue.fresh.access, ctx.now_ms, client.access_token_ttl_secs, family_end);
    let refresh =
        login_id.map(|_| mint_until(issue.fresh.refresh, ctx.now_ms, client.refresh_token_ttl_secs, family_end));
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
    Decision::ok(vec![wrap(event::Kind::TokensIssued(event))], issued)
}

fn refresh(state: &State, issue: &Issue, ctx: Context<'_>, presented: &TokenId) -> Decision<Issued> {
    let client = match admit(state, &issue.client_id, GrantType::RefreshToken, None, None) {
        Ok((client, _)) => client,
        Err(code) => return Decision::refuse(code),
    };
    let Some(old) = state.token(presented).filter(|t| t.kind == TokenKind::Refresh) else {
        return Decision::refuse(Refusal::InvalidGrant);
    };
    // A refresh token of another client is simply invalid here: a stranger must not be able
    // to revoke the owner's family by presenting it.
    if **old.grant.client_id != *client.id
        || old.expires_at_ms <= ctx.now_ms
        || state.family_revoked(&old)
        || state.cutoffs.covering(&old).is_some()
    {
        return Decision::refuse(Refusal::InvalidGrant);
    }
    if issue.institution_id.as_deref().is_some_and(|i| *i != **old.grant.institution_id) {
        return Decision::refuse(Refusal::InvalidInstitution);
    }
    let Some(family) = old.grant.family else {
        return Decision::refuse(Refusal::InvalidGrant);
    };
    match &old.end {
        None if state.cutoffs.covering(&old).is_some() => return Decision::refuse(Refusal::InvalidGrant),
        None => {}
        Some(end) if matches!(end.cause, EndCause::Rotated { .. }) => {
            // Reuse of a rotated refresh token: end the whole family (RFC 9700 4.14.2).
            let revoke = FamilyRevoked {
                family_id: family.0.to_vec(),
                reason: RevocationReason::RefreshReuse as i32,
                trigger_token_id: presented.0.to_vec(),
            };
            return Decision {
                events: vec![wrap(event::Kind::FamilyRevoked(revoke))],
                outcome: Err(Refusal::InvalidGrant),
            };
        }
        Some(_) => return Decision::refuse(Refusal::InvalidGrant),
    }
    if let Err(code) = may_refresh(state, &old) {
        return Decision::refuse(code);
    }
    // The family's absolute end: a refresh never extends it.
    let Some(started_at_ms) = state.family(&family).map(|f| f.started_at_ms) else {
        return Decision::refuse(Refusal::InvalidGrant);
    };
    let family_end = started_at_ms.saturating_add(issue.family_lifetime_max_ms);
    if family_end <= ctx.now_ms {
        return Decision::refuse(Refusal::InvalidGrant);
    }
    let access_scopes = match issue.requested_scopes.as_deref() {
        None | Some([]) => old.scopes.clone(),
        Some(requested) if scope::is_subset(requested, old.scopes) => {
            scope::grant(Some(requested.to_vec()), old.scopes).unwrap_or_else(|_| old.scopes.clone())
        }
        Some(_) => return Decision::refuse(Refusal::InvalidScope),
    };
    // The new access token gets no scope the client is no longer allowed.
    let access_scopes = match still_allowed(access_scopes, &client.scopes) {
        Some(scopes) => scopes,
        None => return Decision::refuse(Refusal::InvalidScope),
    };
    let access = mint_until(issue.fresh.access, ctx.now_ms, client.access_token_ttl_secs, family_end);
    let refresh = mint_until(issue.fresh.refresh, ctx.now_ms, client.refresh_token_ttl_secs, family_end);
    let event = TokensIssued {
        grant_type: GrantType::RefreshToken as i32,
        client_id: client.id.to_string(),
        institution_id: old.grant.institution_id.to_string(),
        login_id: old.grant.user.map(|u| u.login_id.to_string()).unwrap_or_default(),
        family_id: family.0.to_vec(),
        access: Some(wire_token(&access, &access_scopes)),
        // RFC 6749 section 6: the new refresh token keeps the scope of the one it replaces.
        refresh: Some(wire_token(&refresh, old.scopes)),
        rotated_from: presented.0.to_vec(),
        request_fingerprint: issue.fingerprint.to_vec(),
        issued_at_ms: ctx.now_ms,
        ..TokensIssued::default()
    };
    let issued = Issued { access, refresh: Some(refresh), scopes: access_scopes, replayed: false };
    Decision::ok(vec![wrap(event::Kind::TokensIssued(event))], issued)
}

/// May the user of a refresh token's grant still refresh? Disabling ends the user's tokens
/// through a cutoff; this refuses also a refresh decided in the same batch as the disable
/// (which the conflict keys already prevent: defence in depth). An operator's lock stops
/// refreshes until the unlock (CMN_90009), without ending the family. A lockout after failed
/// passwords does not: anyone who knows the login id can cause one, and it must not log the
/// customer out (docs/directory.md).
fn may_refresh(state: &State, old: &TokenView<'_>) -> Result<(), Refusal> {
    let Some(identity) = old.grant.user else {
        return Ok(());
    };
    match state.user(&identity.institution_id, &identity.login_id) {
        None => Err(Refusal::InvalidGrant),
        Some(user) if user.disabled => Err(Refusal::InvalidGrant),
        Some(user) if user.locked => Err(Refusal::AccessBlocked),
        Some(_) => Ok(()),
    }
}

/// `scopes` without those the client may no longer use; `None` when that leaves none of a
/// non-empty list. The common case (all still allowed) shares the list.
fn still_allowed(scopes: ScopeList, allowed: &ScopeList) -> Option<ScopeList> {
    if scopes.iter().all(|s| allowed.contains(s)) {
        return Some(scopes);
    }
    let kept: ScopeList = scopes.iter().filter(|s| allowed.contains(s)).cloned().collect();
    (!kept.is_empty()).then_some(kept)
}

/// RFC 7009 revocation. Unknown, expired, already revoked and other clients' tokens are no-ops
/// with the same answer, so revocation is no existence oracle.
pub fn decide_revoke(state: &State, revoke: &Revoke, ctx: Context<'_>) -> Decision<()> {
    let Some(token) = state.token(&revoke.token).filter(|t| t.kind == revoke.kind) else {
        return Decision::ok(Vec::new(), ());
    };
    if **token.grant.client_id != *revoke.client_id || token.expires_at_ms <= ctx.now_ms || state.family_revoked(&token)
    {
        return Decision::ok(Vec::new(), ());
    }
    let event = match (token.kind, token.grant.family) {
        // Any refresh token of a live family (even an already rotated one) ends the family.
        (TokenKind::Refresh, Some(family)) => event::Kind::FamilyRevoked(FamilyRevoked {
            family_id: family.0.to_vec(),
            reason: RevocationReason::ClientRequest as i32,
            trigger_token_id: revoke.token.0.to_vec(),
        }),
        _ if token.end.is_some() => return Decision::ok(Vec::new(), ()),
        _ => event::Kind::TokenRevoked(TokenRevoked {
            token_id: revoke.token.0.to_vec(),
            reason: RevocationReason::ClientRequest as i32,
        }),
    };
    Decision::ok(vec![wrap(event)], ())
}

pub(crate) fn mint(id: TokenId, now_ms: i64, ttl_secs: u64) -> IssuedToken {
    let ttl_ms = i64::try_from(ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    IssuedToken { id, expires_at_ms: now_ms.saturating_add(ttl_ms) }
}

/// [`mint`], but never past `ends_at_ms` (the end of the token's family).
pub(crate) fn mint_until(id: TokenId, now_ms: i64, ttl_secs: u64, ends_at_ms: i64) -> IssuedToken {
    let token = mint(id, now_ms, ttl_secs);
    IssuedToken { id, expires_at_ms: token.expires_at_ms.min(ends_at_ms) }
}

pub(crate) fn wire_token(token: &IssuedToken, scopes: &ScopeList) -> WireToken {
    WireToken {
        token_id: token.id.0.to_vec(),
        expires_at_ms: token.expires_at_ms,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::shared::ids::FamilyId;
    use crate::domain::token::{FAMILY_LIFETIME_MAX_MS_DEFAULT, FreshIds};
    use crate::domain::{Command, Outcome, Recorded, Rejection, apply, decide};
    use crate::proto::ledger::{ClientCreated, InstitutionCreated, UserCreated};

    const T0: i64 = 1_700_000_000_000;

    /// Institution 01001, app `app` (password), user alice, and alice's sign-in: refresh
    /// token [2; 16].
    fn signed_in() -> State {
        let mut state = State::default();
        let events = [
            event::Kind::InstitutionCreated(InstitutionCreated { institution_id: "01001".into(), name: "I".into() }),
            event::Kind::ClientCreated(ClientCreated {
                client_id: "app".into(),
                institution_ids: vec!["01001".into()],
                grant_types: vec!["password".into()],
                scopes: vec!["a".into(), "b".into()],
                access_token_ttl_secs: 60,
                refresh_token_ttl_secs: 600,
                ..Default::default()
            }),
            event::Kind::UserCreated(UserCreated {
                institution_id: "01001".into(),
                login_id: "alice".into(),
                institution_user_id: "IUID".into(),
                ..Default::default()
            }),
            event::Kind::TokensIssued(TokensIssued {
                grant_type: GrantType::Password as i32,
                client_id: "app".into(),
                institution_id: "01001".into(),
                login_id: "alice".into(),
                family_id: vec![9; 16],
                access: Some(WireToken {
                    token_id: vec![1; 16],
                    expires_at_ms: T0 + 60_000,
                    scopes: vec!["a".into(), "b".into()],
                }),
                refresh: Some(WireToken {
                    token_id: vec![2; 16],
                    expires_at_ms: T0 + 600_000,
                    scopes: vec!["a".into(), "b".into()],
                }),
                ..Default::default()
            }),
        ];
        for (i, kind) in events.into_iter().enumerate() {
            let at = Recorded { seq: i as u64 + 1, recorded_at_ms: T0, transaction_id: "", hash: [0; 32] };
            apply(&mut state, at, &wrap(kind));
        }
        state
    }

    fn refresh_of(state: &State) -> Decision<Outcome, Rejection> {
        let issue = Issue {
            client_id: "app".into(),
            institution_id: None,
            grant: IssueGrant::Refresh { token: TokenId([2; 16]) },
            requested_scopes: None,
            fingerprint: [0; 32],
            family_lifetime_max_ms: FAMILY_LIFETIME_MAX_MS_DEFAULT,
            fresh: FreshIds { access: TokenId([3; 16]), refresh: TokenId([4; 16]), family: FamilyId([5; 16]) },
        };
        decide(state, &Command::Issue(issue), Context { now_ms: T0 + 1_000, transaction_id: "" })
    }

    fn user_mut(state: &mut State) -> &mut crate::domain::state::User {
        Arc::make_mut(state.users.get_mut("01001:alice").unwrap())
    }

    /// Security review finding 2, defence in depth: a refresh refuses a disabled user (or
    /// client) even when no cutoff covers the token yet, as in a batch shared with the disable.
    #[test]
    fn a_refresh_refuses_a_disabled_or_locked_user_without_a_cutoff() {
        let state = signed_in();
        assert!(refresh_of(&state).outcome.is_ok());
        let mut disabled = state.clone();
        user_mut(&mut disabled).disabled = true;
        assert!(disabled.cutoffs.is_empty());
        assert_eq!(refresh_of(&disabled).outcome, Err(Rejection::Refused(Refusal::InvalidGrant)));
        let mut locked = state.clone();
        user_mut(&mut locked).locked = true;
        let decision = refresh_of(&locked);
        assert_eq!(decision.outcome, Err(Rejection::Refused(Refusal::AccessBlocked)));
        assert!(decision.events.is_empty(), "a lock does not end the family");
        let mut client_disabled = state;
        Arc::make_mut(client_disabled.clients.get_mut("app").unwrap()).disabled = true;
        assert_eq!(refresh_of(&client_disabled).outcome, Err(Rejection::Refused(Refusal::InvalidClient)));
    }

    /// Security review finding 12: the new access token gets only scopes the client is still
    /// allowed; the refresh token keeps the grant's (RFC 6749 section 6).
    #[test]
    fn a_refresh_drops_scopes_the_client_is_no_longer_allowed() {
        let mut state = signed_in();
        Arc::make_mut(state.clients.get_mut("app").unwrap()).scopes = vec![Box::from("a")].into();
        let decision = refresh_of(&state);
        let Ok(Outcome::Issued(issued)) = &decision.outcome else { panic!("{decision:?}") };
        assert_eq!(&*issued.scopes, [Box::from("a")]);
        let Some(event::Kind::TokensIssued(t)) = &decision.events[0].kind else { panic!() };
        assert_eq!(t.refresh.as_ref().unwrap().scopes, ["a", "b"]);
        Arc::make_mut(state.clients.get_mut("app").unwrap()).scopes = vec![Box::from("c")].into();
        assert_eq!(refresh_of(&state).outcome, Err(Rejection::Refused(Refusal::InvalidScope)));
    }
}
