//! Decisions of the authorization-code flow: who may ask for a code, issuing it, redeeming it
//! (with replay and burn), and activating a signing key. Pure functions of state and time.

use std::sync::Arc;

use subtle::ConstantTimeEq as _;

use super::{
    AUTH_TIME_SKEW_SECS, AuthorizationCommand, AuthorizationOutcome, CodeRedemption, CodeRequest, CodeStatus, Redeemed,
    SCOPE_OFFLINE_ACCESS, SCOPE_OPENID, SigningKeyActivation,
};
use crate::domain::shared::conflict::{ConflictKeys, Entity};
use crate::domain::shared::decision::{Context, Decision, wrap};
use crate::domain::shared::error::Refusal;
use crate::domain::shared::ids::TokenId;
use crate::domain::shared::scope::{self, ScopeList};
use crate::domain::state::{Client, State, TokenKind};
use crate::domain::tables::TokenView;
use crate::domain::token::decide::{mint, mint_until, wire_token};
use crate::domain::token::{Issue, Issued};
use crate::proto::ledger::{
    AuthorizationCodeBurned, AuthorizationCodeIssued, AuthorizationCodeReplayed, CodeBurnReason, FamilyRevoked,
    GrantType, RevocationReason, SigningKeyActivated, TokensIssued, event,
};

/// The first-party app's access token, if it may authorize partners for `institution_id` at
/// `now_ms` (SPEC 3.4): active (CMN_90018), an access token of that institution (CMN_90005), of
/// a client the operator marked `authorize_partners` that is enabled and still serves the
/// institution, and not itself a partner token (issued from a code), so that a partner cannot
/// pass the user on (CMN_90006 for these).
pub fn check_bearer<'s>(
    state: &'s State,
    token: &TokenId,
    institution_id: &str,
    now_ms: i64,
) -> Result<TokenView<'s>, Refusal> {
    let bearer =
        state.active_token(token, now_ms).filter(|t| t.kind == TokenKind::Access).ok_or(Refusal::InvalidGrant)?;
    if **bearer.grant.institution_id != *institution_id {
        return Err(Refusal::InvalidInstitution);
    }
    let code_born = bearer.grant.grant_type == GrantType::AuthorizationCode
        || bearer.grant.family.is_some_and(|f| state.authorization.code_by_family.contains_key(&f));
    let first_party = state
        .client(bearer.grant.client_id)
        .is_some_and(|c| c.authorize_partners && !c.disabled && c.serves_institution(institution_id));
    if code_born || !first_party {
        return Err(Refusal::UnauthorizedClient);
    }
    Ok(bearer)
}

/// Whom `bearer` may ask a code for: a user-bound bearer (password grant, or refreshed from
/// one) only for its own user, named by both `username` and `institution_user_id`; an
/// institution-level bearer (client_credentials) for any user of its institution. CMN_90006
/// otherwise, checked before the named user is looked up, so a user's token learns nothing
/// about which other users exist.
pub fn check_bearer_user(bearer: &TokenView<'_>, username: &str, institution_user_id: &str) -> Result<(), Refusal> {
    match bearer.grant.user {
        None => Ok(()),
        Some(own) if *own.login_id == *username && *own.institution_user_id == *institution_user_id => Ok(()),
        Some(_) => Err(Refusal::UnauthorizedClient),
    }
}

/// The partner app `partner_id`, if the bearer's client may authorize it: not the bearer's own
/// client (CMN_90020), and configured for the flow at the bearer's institution: the
/// authorization_code grant, allowed scopes and, when a code is to be issued, a redirect URI
/// (CMN_90021 otherwise, also for an unknown client id).
pub fn check_partner<'s>(
    state: &'s State,
    bearer: &TokenView<'_>,
    partner_id: &str,
    needs_redirect_uri: bool,
) -> Result<&'s Arc<Client>, Refusal> {
    if **bearer.grant.client_id == *partner_id {
        return Err(Refusal::SelfAuthorization);
    }
    let partner = state.client(partner_id).ok_or(Refusal::InvalidClientConfiguration)?;
    let configured = partner.grant_types.contains(GrantType::AuthorizationCode)
        && !partner.scopes.is_empty()
        && partner.serves_institution(bearer.grant.institution_id)
        && !(needs_redirect_uri && partner.redirect_uri.is_empty());
    if !configured {
        return Err(Refusal::InvalidClientConfiguration);
    }
    Ok(partner)
}

pub fn decide(state: &State, command: &AuthorizationCommand, ctx: Context<'_>) -> Decision<AuthorizationOutcome> {
    match command {
        AuthorizationCommand::IssueCode(request) => issue_code(state, request, ctx),
        AuthorizationCommand::ActivateSigningKey(activation) => {
            let previous_key_id = state.authorization.active_signing_key.clone();
            let event = activation_event(state, activation);
            Decision::ok(vec![event], AuthorizationOutcome::SigningKeyActivated { previous_key_id })
        }
    }
}

/// The event that makes `activation` the signing key (also recorded at start-up when the key
/// file's active key is not the ledger's).
pub fn activation_event(state: &State, activation: &SigningKeyActivation) -> crate::proto::ledger::Event {
    wrap(event::Kind::SigningKeyActivated(SigningKeyActivated {
        key_id: activation.key_id.clone(),
        algorithm: activation.algorithm.clone(),
        public_key: activation.public_key.clone(),
        previous_key_id: state.authorization.active_signing_key.clone().unwrap_or_default(),
        sealed_private_key: activation.sealed_private_key.clone(),
    }))
}

fn issue_code(state: &State, request: &CodeRequest, ctx: Context<'_>) -> Decision<AuthorizationOutcome> {
    match code_event(state, request, ctx) {
        Ok((event, redirect_uri)) => {
            let outcome = AuthorizationOutcome::CodeIssued {
                code: request.code_id,
                redirect_uri,
                expires_at_ms: event.expires_at_ms,
            };
            Decision::ok(vec![wrap(event::Kind::AuthorizationCodeIssued(event))], outcome)
        }
        Err(code) => Decision::refuse(code),
    }
}

fn code_event(
    state: &State,
    request: &CodeRequest,
    ctx: Context<'_>,
) -> Result<(AuthorizationCodeIssued, String), Refusal> {
    let bearer = check_bearer(state, &request.bearer_token, &request.institution_id, ctx.now_ms)?;
    check_bearer_user(&bearer, &request.username, &request.institution_user_id)?;
    let partner = check_partner(state, &bearer, &request.partner_client_id, true)?;
    let user = state
        .user_by_institution_user_id(&request.institution_id, &request.institution_user_id)
        .ok_or(Refusal::InvalidInstitution)?;
    if *user.identity.login_id != *request.username {
        return Err(Refusal::InvalidUsername);
    }
    // A user who may not sign in (locked: CMN_90009, disabled: CMN_90016) gets no code either.
    crate::domain::signin::may_sign_in(state, &request.institution_id, &user.identity.login_id, ctx.now_ms)?;
    if request.scopes.is_empty() || !scope::is_subset(&request.scopes, &partner.scopes) {
        return Err(Refusal::InvalidScope);
    }
    if request.auth_time_secs.is_some_and(|t| t < 0 || t > ctx.now_ms / 1000 + AUTH_TIME_SKEW_SECS) {
        return Err(Refusal::InvalidRequest);
    }
    let expires = mint(request.code_id, ctx.now_ms, request.ttl_secs);
    let event = AuthorizationCodeIssued {
        code_id: request.code_id.0.to_vec(),
        client_id: partner.id.to_string(),
        institution_id: request.institution_id.clone(),
        login_id: user.identity.login_id.to_string(),
        institution_user_id: user.identity.institution_user_id.to_string(),
        scopes: request.scopes.iter().map(|s| s.to_string()).collect(),
        requested_scopes: request.requested_scopes.iter().map(|s| s.to_string()).collect(),
        nonce: request.nonce.clone().unwrap_or_default(),
        audience: request.audience.clone().unwrap_or_default(),
        auth_time_secs: request.auth_time_secs.unwrap_or(0),
        code_challenge: request.challenge.map(|c| c.to_vec()).unwrap_or_default(),
        code_challenge_method: if request.challenge.is_some() { "S256".to_owned() } else { String::new() },
        expires_at_ms: expires.expires_at_ms,
        authorized_by_client_id: bearer.grant.client_id.to_string(),
        authorized_by_token_id: request.bearer_token.0.to_vec(),
        redirect_uri: partner.redirect_uri.clone(),
        issued_at_ms: ctx.now_ms,
        authorized_by_login_id: bearer.grant.user.as_ref().map(|u| u.login_id.to_string()).unwrap_or_default(),
    };
    Ok((event, partner.redirect_uri.clone()))
}

/// The authorization_code grant. Only the code's own client can use or spend a code: for
/// anyone else it is simply invalid. For its own client, a live code is consumed by any
/// attempt: success redeems it, any failed check burns it (so a stolen code cannot be tried
/// against many verifiers), and presenting a redeemed code again revokes every token issued
/// from it.
pub fn redeem(state: &State, issue: &Issue, redemption: &CodeRedemption, ctx: Context<'_>) -> Decision<Issued> {
    // A client disabled since it authenticated (in this very batch, which the conflict keys
    // prevent) gets nothing: defence in depth.
    let Some(client) = state.client(&issue.client_id).filter(|c| !c.disabled) else {
        return Decision::refuse(Refusal::InvalidClient);
    };
    if !client.grant_types.contains(GrantType::AuthorizationCode) {
        return Decision::refuse(Refusal::UnauthorizedClient);
    }
    let code_id = redemption.code;
    let Some(code) = state.authorization.codes.get(&code_id).filter(|c| *c.client_id == *client.id) else {
        return Decision::refuse(Refusal::InvalidGrant);
    };
    match &code.status {
        CodeStatus::Live if code.expires_at_ms > ctx.now_ms => {}
        CodeStatus::Live | CodeStatus::Burned { .. } => return Decision::refuse(Refusal::InvalidGrant),
        CodeStatus::Redeemed(redeemed) => return replay(state, &code_id, redeemed),
    }
    let burn = |reason: CodeBurnReason, error: Refusal| Decision {
        events: vec![wrap(event::Kind::AuthorizationCodeBurned(AuthorizationCodeBurned {
            code_id: code_id.0.to_vec(),
            reason: reason as i32,
        }))],
        outcome: Err(error),
    };
    if issue.institution_id.as_deref().is_some_and(|i| i != &*code.institution_id) {
        return burn(CodeBurnReason::InstitutionMismatch, Refusal::InvalidInstitution);
    }
    if !client.serves_institution(&code.institution_id) {
        return burn(CodeBurnReason::ClientNotEntitled, Refusal::UnauthorizedClient);
    }
    if redemption.redirect_uri.as_deref().is_some_and(|uri| uri != client.redirect_uri) {
        return burn(CodeBurnReason::RedirectUriMismatch, Refusal::InvalidGrant);
    }
    match (&code.challenge, &redemption.verifier) {
        (None, None) => {}
        (Some(challenge), Some(verifier)) => {
            let equal: bool = challenge.ct_eq(&verifier.digest).into();
            if !(verifier.well_formed && equal) {
                return burn(CodeBurnReason::WrongVerifier, Refusal::InvalidGrant);
            }
        }
        (Some(_), None) => return burn(CodeBurnReason::MissingVerifier, Refusal::InvalidGrant),
        (None, Some(_)) => return burn(CodeBurnReason::UnexpectedVerifier, Refusal::InvalidGrant),
    }
    let scopes: ScopeList = match issue.requested_scopes.as_deref() {
        None | Some([]) => code.scopes.clone(),
        Some(requested) => match scope::grant(Some(requested.to_vec()), &code.scopes) {
            Ok(scopes) => scopes,
            Err(_) => return burn(CodeBurnReason::ScopeNotGranted, Refusal::InvalidScope),
        },
    };
    // The user must still exist and be allowed to sign in (not disabled or locked since).
    if crate::domain::signin::may_sign_in(state, &code.institution_id, &code.login_id, ctx.now_ms).is_err() {
        return burn(CodeBurnReason::UserUnavailable, Refusal::InvalidGrant);
    }
    // Disabling the first-party app that vouched for the sign-in withdraws its codes too.
    if state.client(&code.authorized_by).is_some_and(|c| c.disabled) {
        return burn(CodeBurnReason::AuthorizerDisabled, Refusal::InvalidGrant);
    }
    let id_token = if code.requested(SCOPE_OPENID) {
        let Some(key_id) = state.authorization.active_signing_key.clone() else {
            // Start-up records a signing key before serving, so this is a programming error.
            return Decision::refuse(Refusal::Inconsistent);
        };
        Some((key_id, mint(code_id, ctx.now_ms, redemption.id_token_ttl_secs).expires_at_ms))
    } else {
        None
    };
    // The redemption starts a family: none of its tokens will outlive this.
    let family_end = ctx.now_ms.saturating_add(issue.family_lifetime_max_ms);
    let access = mint_until(issue.fresh.access, ctx.now_ms, client.access_token_ttl_secs, family_end);
    let refresh = code
        .requested(SCOPE_OFFLINE_ACCESS)
        .then(|| mint_until(issue.fresh.refresh, ctx.now_ms, client.refresh_token_ttl_secs, family_end));
    let (id_token_key_id, id_token_expires_at_ms) = id_token.unwrap_or_default();
    let event = TokensIssued {
        grant_type: GrantType::AuthorizationCode as i32,
        client_id: client.id.to_string(),
        institution_id: code.institution_id.to_string(),
        login_id: code.login_id.to_string(),
        // Tokens issued from a code always form a family, so that a replay can revoke them
        // all, including every refresh descendant.
        family_id: issue.fresh.family.0.to_vec(),
        access: Some(wire_token(&access, &scopes)),
        refresh: refresh.as_ref().map(|r| wire_token(r, &code.scopes)),
        rotated_from: Vec::new(),
        request_fingerprint: issue.fingerprint.to_vec(),
        authorization_code_id: code_id.0.to_vec(),
        id_token_key_id,
        id_token_expires_at_ms,
        issued_at_ms: ctx.now_ms,
    };
    let issued = Issued { access, refresh, scopes, replayed: false };
    Decision::ok(vec![wrap(event::Kind::TokensIssued(event))], issued)
}

/// A redeemed code presented again by its client: record the replay once and revoke the
/// family if it is still live. Later presentations change nothing.
fn replay(state: &State, code_id: &TokenId, redeemed: &Redeemed) -> Decision<Issued> {
    if redeemed.replayed_seq.is_some() {
        return Decision::refuse(Refusal::InvalidGrant);
    }
    let mut events = vec![wrap(event::Kind::AuthorizationCodeReplayed(AuthorizationCodeReplayed {
        code_id: code_id.0.to_vec(),
        family_id: redeemed.family.0.to_vec(),
    }))];
    if state.family(&redeemed.family).is_some_and(|f| f.revoked.is_none()) {
        events.push(wrap(event::Kind::FamilyRevoked(FamilyRevoked {
            family_id: redeemed.family.0.to_vec(),
            reason: RevocationReason::AuthorizationCodeReplay as i32,
            trigger_token_id: code_id.0.to_vec(),
        })));
    }
    Decision { events, outcome: Err(Refusal::InvalidGrant) }
}

/// Conflict keys of a redemption: it spends the code and may revoke the code's family; it
/// reads which key signs, and the code's user, partner and authorizing client, so that
/// disabling any of them never shares its batch.
pub fn redemption_keys(state: &State, redemption: &CodeRedemption, keys: &mut ConflictKeys) {
    keys.write(Entity::AuthorizationCode(&redemption.code));
    if let Some(code) = state.authorization.codes.get(&redemption.code) {
        if let CodeStatus::Redeemed(redeemed) = &code.status {
            keys.write(Entity::Family(&redeemed.family));
        }
        keys.read(Entity::User(&code.institution_id, &code.login_id));
        keys.read(Entity::Client(&code.client_id));
        keys.read(Entity::Client(&code.authorized_by));
    }
    keys.read(Entity::SigningKeys);
}

impl AuthorizationCommand {
    pub fn conflict_keys(&self, state: &State, keys: &mut ConflictKeys) {
        match self {
            Self::IssueCode(request) => {
                keys.write(Entity::AuthorizationCode(&request.code_id));
                keys.read(Entity::Token(&request.bearer_token));
                if let Some(bearer) = state.token(&request.bearer_token) {
                    if let Some(family) = bearer.grant.family {
                        keys.read(Entity::Family(&family));
                    }
                    // The bearer's authority: its client (disabled, or no longer first-party)
                    // and its user (disabled) must not change in the same batch.
                    keys.read(Entity::Client(bearer.grant.client_id));
                    if let Some(user) = &bearer.grant.user {
                        keys.read(Entity::User(&user.institution_id, &user.login_id));
                    }
                }
                keys.read(Entity::Institution(&request.institution_id));
                keys.read(Entity::Client(&request.partner_client_id));
                keys.read(Entity::InstitutionUserId(&request.institution_id, &request.institution_user_id));
                keys.read(Entity::User(&request.institution_id, &request.username));
            }
            Self::ActivateSigningKey(_) => keys.write(Entity::SigningKeys),
        }
    }
}
