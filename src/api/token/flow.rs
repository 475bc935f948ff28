//! The token, revocation and introspection flows, shared by REST and gRPC: each transport
//! turns its request into a [`Call`] and renders the answer; the rules and their order live
//! here once.

use crate::api::app::App;
use crate::api::error::ErrorCode;
use crate::api::wire::{Call, Params};
use crate::crypto::credential::{self, SECRET_LEN_MAX};
use crate::crypto::random_bytes;
use crate::crypto::token::{self as token_string, TokenKind as StringKind};
use crate::domain::grant::{GrantKind, stored_name};
use crate::domain::ids::is_valid_identifier;
use crate::domain::scope;
use crate::domain::state::TokenKind;
use crate::domain::token::decide::admit;
use crate::domain::{FreshIds, Issue, IssueGrant, Issued, Revoke};
use crate::ledger::SubmitFailure;
use crate::proto::ledger::UserType;

/// A successful token response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenReply {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: Option<(String, i64)>,
    /// Granted scopes, space separated.
    pub scope: String,
    pub id_token: Option<String>,
}

/// The grant a token request names (`domain::grant`); any other name, or none, is CMN_90007.
fn parse_grant(name: Option<&str>) -> Result<GrantKind, ErrorCode> {
    name.and_then(GrantKind::parse).ok_or(ErrorCode::InvalidGrantType)
}

/// `scopes` (Candescent) or its RFC 6749 alias `scope`, never both.
fn requested_scopes(params: &Params) -> Result<Option<Vec<Box<str>>>, ErrorCode> {
    let text = match (params.get("scopes"), params.get("scope")) {
        (Some(_), Some(_)) => return Err(ErrorCode::InvalidRequest),
        (Some(text), None) | (None, Some(text)) => text,
        (None, None) => return Ok(None),
    };
    Ok(Some(scope::parse_scopes(text)?))
}

/// POST /oauth2/v1/token and TokenService.CreateToken.
pub async fn create_token(app: &App, call: Call) -> Result<TokenReply, ErrorCode> {
    // The retry key (SPEC 3.1): a UUID in any case is the same UUID, so the ledger sees the
    // transactionId in lower case; the transports echo it as it was sent.
    let transaction_id = call.transaction_id.to_ascii_lowercase();
    let credentials = call.credentials?;
    let client = app.authenticate_limited_client(&credentials).await?;
    let grant = parse_grant(call.params.get("grant_type"))?;
    app.rate_limits.check_tokens_held(&app.state.read(), &client)?;
    let institution = match grant {
        GrantKind::ClientCredentials | GrantKind::Password => Some(call.institution.required()?.to_owned()),
        GrantKind::RefreshToken | GrantKind::AuthorizationCode => call.institution.optional()?.map(str::to_owned),
    };
    let requested = requested_scopes(&call.params)?;
    let issue_grant = match grant {
        GrantKind::ClientCredentials => {
            check_admission(app, &client.id, grant, institution.as_deref(), requested.as_deref())?;
            IssueGrant::ClientCredentials
        }
        GrantKind::Password => {
            let (login_id, password) = user_credentials(&call.params)?;
            check_admission(app, &client.id, grant, institution.as_deref(), requested.as_deref())?;
            let institution = institution.as_deref().unwrap_or_default();
            super::signin::check_user(app, &client.id, institution, login_id, password, &transaction_id).await?;
            IssueGrant::Password { login_id: login_id.to_owned() }
        }
        GrantKind::RefreshToken => {
            check_admission(app, &client.id, grant, None, None)?;
            let presented = call.params.get("refresh_token").ok_or(ErrorCode::InvalidRequest)?;
            match token_string::decode(&app.keys, presented) {
                Some((StringKind::Refresh, token)) => IssueGrant::Refresh { token },
                _ => return Err(ErrorCode::InvalidToken),
            }
        }
        GrantKind::AuthorizationCode => crate::api::authcode::flow::redemption_grant(app, &client, &call.params)?,
    };
    let fingerprint = fingerprint(app, &call.params, institution.as_deref());
    let fresh = fresh_ids(app);
    let issue = Issue {
        client_id: client.id.clone(),
        institution_id: institution,
        grant: issue_grant,
        requested_scopes: requested,
        fingerprint,
        family_lifetime_max_ms: app.config.family_lifetime_max_ms,
        fresh,
    };
    match app.ledger.submit_as(issue, transaction_id).await {
        Ok(issued) => {
            let mut reply = render(app, &issued);
            reply.id_token = crate::api::authcode::flow::id_token(app, &issued)?;
            Ok(reply)
        }
        Err(SubmitFailure::Refused(refusal)) => Err(refusal.into()),
        Err(SubmitFailure::Unavailable) => Err(ErrorCode::TokenNotRecorded),
    }
}

/// Ids for what a token request may mint, ordered by time for the index, from one read of
/// the CSPRNG.
fn fresh_ids(app: &App) -> FreshIds {
    app.ledger.fresh_ids(app.clock.now_ms(), random_bytes())
}

fn check_admission(
    app: &App,
    client_id: &str,
    grant: GrantKind,
    institution: Option<&str>,
    scopes: Option<&[Box<str>]>,
) -> Result<(), ErrorCode> {
    admit(&app.state.read(), client_id, grant.stored(), institution, scopes).map(|_| ()).map_err(ErrorCode::from)
}

/// `username` (CMN_90013) and `password` (CMN_90014), checked for shape before any hashing.
fn user_credentials(params: &Params) -> Result<(&str, &str), ErrorCode> {
    let username = params.get("username").filter(|u| is_valid_identifier(u)).ok_or(ErrorCode::InvalidUsername)?;
    let password = params.get("password").filter(|p| p.len() <= SECRET_LEN_MAX).ok_or(ErrorCode::InvalidPassword)?;
    Ok((username, password))
}

/// Everything that identifies the request except the password, keyed with the server key.
fn fingerprint(app: &App, params: &Params, institution: Option<&str>) -> [u8; 32] {
    let mut parts: Vec<(&str, &str)> = params.iter().filter(|(name, _)| *name != "password").collect();
    parts.push((" institutionId", institution.unwrap_or_default()));
    credential::request_fingerprint(&app.keys, &mut parts)
}

fn render(app: &App, issued: &Issued) -> TokenReply {
    let now_ms = app.clock.now_ms();
    let expires_in = |at_ms: i64| ((at_ms - now_ms).max(0) + 999) / 1000;
    TokenReply {
        access_token: token_string::encode(&app.keys, StringKind::Access, &issued.access.id),
        expires_in: expires_in(issued.access.expires_at_ms),
        refresh_token: issued
            .refresh
            .map(|r| (token_string::encode(&app.keys, StringKind::Refresh, &r.id), expires_in(r.expires_at_ms))),
        scope: scope::join(&issued.scopes),
        id_token: None,
    }
}

/// DELETE/POST /oauth2/v1/revoke and TokenService.RevokeToken. Succeeds for unknown, expired,
/// revoked and foreign tokens alike; fails only for bad client credentials, a missing
/// `token`, or a ledger that cannot record the revocation.
pub async fn revoke_token(app: &App, call: Call) -> Result<(), ErrorCode> {
    let credentials = call.credentials?;
    let client = app.authenticate_limited_client(&credentials).await?;
    call.institution.optional()?;
    let presented = call.params.get("token").ok_or(ErrorCode::InvalidRequest)?;
    let (token, kind) = match token_string::decode(&app.keys, presented) {
        Some((StringKind::Access, id)) => (id, TokenKind::Access),
        Some((StringKind::Refresh, id)) => (id, TokenKind::Refresh),
        _ => return Ok(()),
    };
    let owned = app.state.read().token(&token).is_some_and(|t| **t.grant.client_id == *client.id);
    if !owned {
        return Ok(());
    }
    let revoke = Revoke { client_id: client.id.clone(), token, kind };
    match app.ledger.submit_as(revoke, call.transaction_id).await {
        // RFC 7009 2.2: a refused revocation is answered like a done one.
        Ok(()) | Err(SubmitFailure::Refused(_)) => Ok(()),
        Err(SubmitFailure::Unavailable) => Err(ErrorCode::TokenNotRecorded),
    }
}

/// An RFC 7662 answer; `None` fields are left out (also of its JSON form).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub institution_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub institution_user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_user_id: Option<String>,
}

/// POST /oauth2/v1/introspect and TokenService.IntrospectToken.
pub async fn introspect_token(app: &App, call: Call) -> Result<Introspection, ErrorCode> {
    let credentials = call.credentials?;
    let caller = app.authenticate_limited_client(&credentials).await?;
    if !caller.introspect {
        return Err(ErrorCode::NotAuthorized);
    }
    let institution = call.institution.optional()?;
    let presented = call.params.get("token").ok_or(ErrorCode::InvalidRequest)?;
    let (id, kind) = match token_string::decode(&app.keys, presented) {
        Some((StringKind::Access, id)) => (id, TokenKind::Access),
        Some((StringKind::Refresh, id)) => (id, TokenKind::Refresh),
        _ => return Ok(Introspection::default()),
    };
    let answer = local_answer(app, &caller, institution, &id, kind, app.clock.now_ms());
    // "inactive" for a token this node knows is final: validity only moves towards it. A
    // token it does not know may have been issued a moment ago through another node.
    let Some(node) = &app.cluster else {
        return Ok(answer);
    };
    if !answer.active && app.state.read().token(&id).is_some() {
        return Ok(answer);
    }
    // SPEC 8: "active" only once the leader confirms that this node has applied everything
    // committed before the request arrived (one batched ReadIndex round), then asked again.
    // The same wait keeps a follower a few entries behind from calling a fresh token unknown.
    match node.reads.confirm().await {
        Ok(_) => Ok(local_answer(app, &caller, institution, &id, kind, app.clock.now_ms())),
        Err(error) => {
            tracing::debug!(%error, "introspection could not be confirmed with the leader");
            crate::api::ratelimit::note_retry_after(std::time::Duration::from_secs(1));
            Err(ErrorCode::ReadUnconfirmed)
        }
    }
}

/// The introspection answer from this node's projections at `now_ms`.
fn local_answer(
    app: &App,
    caller: &crate::domain::state::Client,
    institution: Option<&str>,
    id: &crate::domain::TokenId,
    kind: TokenKind,
    now_ms: i64,
) -> Introspection {
    let state = app.state.read();
    let Some(token) = state.active_token(id, now_ms).filter(|t| t.kind == kind) else {
        return Introspection::default();
    };
    let grant = &token.grant;
    // A caller sees only tokens of its own institutions (and of the one it names).
    if !caller.serves_institution(grant.institution_id) || institution.is_some_and(|i| *i != **grant.institution_id) {
        return Introspection::default();
    }
    let user = grant.user;
    Introspection {
        active: true,
        scope: Some(scope::join(token.scopes)),
        client_id: Some(grant.client_id.to_string()),
        username: user.map(|u| u.login_id.to_string()),
        sub: Some(user.map_or_else(|| grant.client_id.to_string(), |u| u.institution_user_id.to_string())),
        token_type: Some(kind.introspection_name()),
        exp: Some(token.expires_at_ms / 1000),
        // A token's recorded time lies ahead of the clock while the clock is behind the ledger
        // head (after a clock step); `iat` never claims a time later than the answer's.
        iat: Some(token.issued_at_ms.min(now_ms) / 1000),
        iss: Some(app.config.issuer.clone()),
        institution_id: Some(grant.institution_id.to_string()),
        grant_type: Some(stored_name(grant.grant_type)),
        institution_user_id: user
            .filter(|u| u.user_type == UserType::Business)
            .map(|u| u.institution_user_id.to_string()),
        host_user_id: user
            .filter(|u| u.user_type != UserType::Business && !u.host_user_id.is_empty())
            .map(|u| u.host_user_id.clone()),
    }
}
