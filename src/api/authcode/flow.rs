//! The authorization-code flow (SPEC 3.4), shared by REST and gRPC: Authorize Client, Get
//! Authorization Code, the authorization_code grant of the token endpoint, and the ID token.
//! Both code endpoints are called by a first-party app with its own access token as the
//! bearer credential; the partner app later redeems the code with its Basic credentials.

use std::sync::Arc;

use crate::api::app::App;
use crate::api::error::ErrorCode;
use crate::api::wire::Call;
use crate::api::wire::Params;
use crate::api::wire::{AUDIENCE_LEN_MAX, NONCE_LEN_MAX};
use crate::crypto::pkce;
use crate::crypto::random_bytes;
use crate::crypto::token::{self as token_string, TokenKind as StringKind};
use crate::domain::authcode::decide::{check_bearer, check_partner};
use crate::domain::authcode::{CodeRedemption, CodeRequest, CodeStatus, PresentedVerifier};
use crate::domain::ids::{TokenId, is_valid_identifier};
use crate::domain::scope;
use crate::domain::state::Client;
use crate::domain::{IssueGrant, Issued};
use crate::ledger::SubmitFailure;
use crate::proto::ledger::GrantType;

/// The answer of Authorize Client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuthorization {
    /// The partner's allowed scopes, comma separated.
    pub scopes: String,
    pub app_id: String,
    pub secondary_authentication_enabled: bool,
    pub consent_enabled: bool,
    pub device_registration_enabled: bool,
}

/// The answer of Get Authorization Code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeReply {
    pub code: String,
    pub redirect_uri: String,
}

/// The bearer credential: a genuine access-token string (CMN_90018 otherwise).
fn bearer_token(app: &App, bearer: Option<&str>) -> Result<TokenId, ErrorCode> {
    match bearer.and_then(|b| token_string::decode(&app.keys, b)) {
        Some((StringKind::Access, id)) => Ok(id),
        _ => Err(ErrorCode::InvalidToken),
    }
}

/// The partner's `client_id` form parameter (CMN_90011 when missing or malformed).
fn partner_id(params: &Params) -> Result<&str, ErrorCode> {
    params.get("client_id").filter(|id| is_valid_identifier(id)).ok_or(ErrorCode::InvalidRequest)
}

/// POST /v1/client-authorization and TokenService.AuthorizeClient: a read of the partner's
/// configuration, so nothing is recorded.
pub fn authorize_client(app: &App, call: &Call, bearer: Option<&str>) -> Result<ClientAuthorization, ErrorCode> {
    let token = bearer_token(app, bearer)?;
    app.limit_bearer_client(&token)?;
    let institution = call.institution.required()?;
    let partner_id = partner_id(&call.params)?;
    let state = app.state.read();
    let bearer = check_bearer(&state, &token, institution, app.clock.now_ms())?;
    let partner = check_partner(&state, &bearer, partner_id, false)?;
    Ok(ClientAuthorization {
        scopes: partner.scopes.join(","),
        app_id: partner.id.to_string(),
        secondary_authentication_enabled: partner.secondary_authentication_enabled,
        consent_enabled: partner.consent_enabled,
        device_registration_enabled: partner.device_registration_enabled,
    })
}

/// POST /v1/auth-code and TokenService.CreateAuthorizationCode.
pub async fn create_authorization_code(app: &App, call: Call, bearer: Option<&str>) -> Result<CodeReply, ErrorCode> {
    let token = bearer_token(app, bearer)?;
    app.limit_bearer_client(&token)?;
    let institution = call.institution.required()?.to_owned();
    let request = code_request(app, &call.params, token, institution)?;
    match app.ledger.submit_as(request, call.transaction_id).await {
        Ok((code, redirect_uri)) => {
            Ok(CodeReply { code: token_string::encode(&app.keys, StringKind::Code, &code), redirect_uri })
        }
        Err(SubmitFailure::Refused(refusal)) => Err(refusal.into()),
        Err(SubmitFailure::Unavailable) => Err(ErrorCode::TokenNotRecorded),
    }
}

/// Checks the syntax of every form field; the writer checks them against the state.
fn code_request(app: &App, params: &Params, bearer: TokenId, institution: String) -> Result<CodeRequest, ErrorCode> {
    let partner = partner_id(params)?.to_owned();
    let scopes = match (params.get("scopes"), params.get("scope")) {
        (Some(_), Some(_)) | (None, None) => return Err(ErrorCode::InvalidRequest),
        (Some(text), None) | (None, Some(text)) => scope::parse_scopes(text)?,
    };
    if scopes.is_empty() {
        return Err(ErrorCode::InvalidRequest);
    }
    let username = params.get("username").filter(|u| is_valid_identifier(u)).ok_or(ErrorCode::InvalidUsername)?;
    let institution_user_id =
        params.get("institution_user_id").filter(|u| is_valid_identifier(u)).ok_or(ErrorCode::InvalidInstitution)?;
    let requested_scopes = params.get("requested_scopes").map(scope::parse_scopes).transpose()?.unwrap_or_default();
    let nonce = params.get("nonce").map(|n| bounded(n, NONCE_LEN_MAX)).transpose()?;
    let audience = params.get("aud").map(|a| bounded(a, AUDIENCE_LEN_MAX)).transpose()?;
    let auth_time_secs = params.get("auth_time").map(parse_auth_time).transpose()?;
    let challenge = match (params.get("code_challenge"), params.get("code_challenge_method")) {
        (None, None) => None,
        // RFC 7636 4.3: a challenge without a method means `plain`, which we refuse like any
        // method other than S256 (method names are case-sensitive).
        (Some(challenge), Some(pkce::METHOD_S256)) => {
            Some(pkce::parse_challenge(challenge).ok_or(ErrorCode::InvalidRequest)?)
        }
        _ => return Err(ErrorCode::InvalidRequest),
    };
    Ok(CodeRequest {
        bearer_token: bearer,
        institution_id: institution,
        partner_client_id: partner,
        username: username.to_owned(),
        institution_user_id: institution_user_id.to_owned(),
        scopes,
        requested_scopes,
        nonce,
        audience,
        auth_time_secs,
        challenge,
        code_id: TokenId(random_bytes()),
        ttl_secs: app.config.authorization_code_ttl_secs,
    })
}

fn bounded(text: &str, len_max: usize) -> Result<String, ErrorCode> {
    if text.len() > len_max {
        return Err(ErrorCode::InvalidRequest);
    }
    Ok(text.to_owned())
}

/// `auth_time`: unix seconds as 1 to 12 ASCII digits.
fn parse_auth_time(text: &str) -> Result<i64, ErrorCode> {
    if !(1..=12).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ErrorCode::InvalidRequest);
    }
    text.parse().map_err(|_| ErrorCode::InvalidRequest)
}

/// The authorization_code grant of a token request by `client`: the code and the PKCE and
/// redirect-URI evidence, checked for syntax; the writer decides the rest.
pub fn redemption_grant(app: &App, client: &Arc<Client>, params: &Params) -> Result<IssueGrant, ErrorCode> {
    if !client.grant_types.contains(GrantType::AuthorizationCode) {
        return Err(ErrorCode::NotAuthorized);
    }
    let presented = params.get("code").ok_or(ErrorCode::InvalidRequest)?;
    let code = match token_string::decode(&app.keys, presented) {
        Some((StringKind::Code, id)) => id,
        _ => return Err(ErrorCode::InvalidToken),
    };
    // A malformed verifier is still an attempt: the writer burns the code for it, as for a
    // wrong one, so that nothing about a code can be probed without spending it.
    let verifier = params
        .get("code_verifier")
        .map(|v| PresentedVerifier { well_formed: pkce::is_valid_verifier(v), digest: pkce::s256(v) });
    Ok(IssueGrant::AuthorizationCode(CodeRedemption {
        code,
        verifier,
        redirect_uri: params.get("redirect_uri").map(str::to_owned),
        id_token_ttl_secs: app.config.id_token_ttl_secs,
    }))
}

/// The ID token for tokens issued by the authorization_code grant with `openid` requested,
/// built from what the ledger recorded, so that an idempotent retry gets the same claims.
pub fn id_token(app: &App, issued: &Issued) -> Result<Option<String>, ErrorCode> {
    let (key_id, claims) = {
        let state = app.state.read();
        let Some(token) = state.token(&issued.access.id) else {
            return Ok(None);
        };
        if token.grant.grant_type != GrantType::AuthorizationCode {
            return Ok(None);
        }
        let Some((_, code)) = token.grant.family.and_then(|f| state.authorization.code_of_family(&f)) else {
            return Ok(None);
        };
        let CodeStatus::Redeemed(redeemed) = &code.status else {
            return Ok(None);
        };
        let Some(record) = &redeemed.id_token else {
            return Ok(None);
        };
        let audience = match code.audience.as_deref() {
            Some(extra) if extra != &*code.client_id => serde_json::json!([&*code.client_id, extra]),
            _ => serde_json::json!(&*code.client_id),
        };
        let mut claims = serde_json::json!({
            "iss": app.config.issuer,
            "sub": &*code.institution_user_id,
            "aud": audience,
            "exp": record.expires_at_ms / 1000,
            "iat": record.issued_at_ms / 1000,
            "auth_time": code.auth_time_secs,
            "preferred_username": &*code.login_id,
        });
        if let Some(claims) = claims.as_object_mut() {
            if claims.get("aud").is_some_and(serde_json::Value::is_array) {
                // OIDC Core 2: with several audiences, `azp` names the party the token is for.
                claims.insert("azp".to_owned(), serde_json::json!(&*code.client_id));
            }
            if let Some(nonce) = &code.nonce {
                claims.insert("nonce".to_owned(), serde_json::json!(nonce));
            }
        }
        (record.key_id.clone(), claims)
    };
    let Some(key) = app.signing.get(&key_id) else {
        tracing::error!(%key_id, "the ledger names a signing key that is not in the key file");
        return Err(ErrorCode::Internal);
    };
    key.sign_jwt(&claims).map(Some).map_err(|error| {
        tracing::error!(%error, "signing an ID token failed");
        ErrorCode::Internal
    })
}
