//! REST routes of the authorization-code flow (SPEC 3.4, with the `/auth-code/v1/...` aliases
//! of the older Candescent layout) and the discovery documents (SPEC 3.6).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::api::app::App;
use crate::api::authcode::flow::{self as authcode, ClientAuthorization};
use crate::api::discovery;
use crate::api::error::ErrorCode;
use crate::api::rest::{echo_transaction_id, error_response, error_response_as, header_values, no_store, read_call};
use crate::api::wire::Call;
use crate::api::wire::{self, HeaderValues};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/client-authorization", post(authorize_client))
        .route("/auth-code/v1/client-authorization", post(authorize_client))
        .route("/v1/auth-code", post(create_code))
        .route("/auth-code/v1/auth-code", post(create_code))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        // OIDC discovery is what standard clients try first (openid-client's default).
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/.well-known/jwks.json", get(jwks))
}

/// The request's transaction id, bearer credential and form, or the error response.
async fn read_bearer_call(
    app: &App,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Call, Option<String>), Response> {
    let call = read_call(app, uri, headers, body)
        .await
        .map_err(|(code, transaction_id)| error_response(code, transaction_id.as_deref()))?;
    let authorization = header_values(headers, &header::AUTHORIZATION);
    let bearer = wire::bearer_token(authorization).map(str::to_owned);
    Ok((call, bearer))
}

/// The error response; a bad or missing bearer credential (the only 401 of these endpoints)
/// gets the RFC 6750 challenge instead of the Basic one (no `error` attribute when no
/// credential was sent at all, RFC 6750 section 3.1) and `"error": "invalid_token"` in the body.
fn bearer_error(code: ErrorCode, transaction_id: &str, credential_sent: bool) -> Response {
    if code.info().http_status != StatusCode::UNAUTHORIZED {
        return error_response(code, Some(transaction_id));
    }
    let mut response = error_response_as(code, "invalid_token", Some(transaction_id));
    let challenge = if credential_sent {
        "Bearer realm=\"tokenledger\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"tokenledger\""
    };
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

fn credential_sent(headers: &HeaderMap) -> bool {
    !matches!(header_values(headers, &header::AUTHORIZATION), HeaderValues::Absent)
}

#[derive(Serialize)]
struct AdditionalInfo {
    secondary_authentication_enabled: bool,
    consent_enabled: bool,
    device_registration_enabled: bool,
}

#[derive(Serialize)]
struct AuthorizationBody {
    scopes: String,
    #[serde(rename = "appId")]
    app_id: String,
    additional_info: AdditionalInfo,
}

impl From<ClientAuthorization> for AuthorizationBody {
    fn from(a: ClientAuthorization) -> Self {
        Self {
            scopes: a.scopes,
            app_id: a.app_id,
            additional_info: AdditionalInfo {
                secondary_authentication_enabled: a.secondary_authentication_enabled,
                consent_enabled: a.consent_enabled,
                device_registration_enabled: a.device_registration_enabled,
            },
        }
    }
}

async fn authorize_client(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let (call, bearer) = match read_bearer_call(&app, &uri, &headers, body).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let transaction_id = call.transaction_id.clone();
    let mut response = match authcode::authorize_client(&app, &call, bearer.as_deref()) {
        Ok(answer) => axum::Json(AuthorizationBody::from(answer)).into_response(),
        Err(code) => return bearer_error(code, &transaction_id, credential_sent(&headers)),
    };
    echo_transaction_id(&mut response, Some(&transaction_id));
    response
}

#[derive(Serialize)]
struct CodeBody {
    code: String,
    redirect_uri: String,
}

async fn create_code(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let (call, bearer) = match read_bearer_call(&app, &uri, &headers, body).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let transaction_id = call.transaction_id.clone();
    let mut response = match authcode::create_authorization_code(&app, call, bearer.as_deref()).await {
        Ok(reply) => axum::Json(CodeBody { code: reply.code, redirect_uri: reply.redirect_uri }).into_response(),
        Err(code) => return bearer_error(code, &transaction_id, credential_sent(&headers)),
    };
    echo_transaction_id(&mut response, Some(&transaction_id));
    // The code is a credential.
    no_store(&mut response);
    response
}

async fn metadata(State(app): State<Arc<App>>) -> Response {
    axum::Json(discovery::metadata(&app)).into_response()
}

async fn jwks(State(app): State<Arc<App>>) -> Response {
    let mut response = axum::Json(discovery::jwks(&app)).into_response();
    // Keys change on rotation; verifiers refetch on an unknown `kid`, and short caching keeps
    // that cheap without hiding a new key for long.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    response
}
