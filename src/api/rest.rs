//! The REST plumbing every service's REST transport shares (Candescent "OAuth V2" compatible):
//! the common request rules (`read_call`), the JSON error of SPEC section 3 with the status of
//! section 6, the `transactionId` echo and `no-store`. The router that merges each service's
//! routes is `api/router.rs`, above the services, so this file imports none of them.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::wire::{self, Call, HeaderValues, Institution};
use crate::api::app::App;
use crate::api::error::ErrorCode;

pub(super) const TRANSACTION_ID: HeaderName = HeaderName::from_static("transactionid");
const INSTITUTION_ID: HeaderName = HeaderName::from_static("institutionid");

/// All values of one header, as the validators want them.
pub fn header_values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> HeaderValues<'a> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => HeaderValues::Absent,
        (Some(one), None) => HeaderValues::One(one.as_bytes()),
        (Some(_), Some(_)) => HeaderValues::Repeated,
    }
}

/// Cache-Control and Pragma for answers that carry tokens or token data (RFC 6749 5.1).
pub(super) fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

#[derive(Serialize)]
struct ErrorBody {
    code: &'static str,
    message: &'static str,
    error: &'static str,
    error_description: &'static str,
}

/// The JSON error of SPEC section 3 with the status of section 6. `transaction_id` is echoed
/// when the request had a valid one.
pub fn error_response(code: ErrorCode, transaction_id: Option<&str>) -> Response {
    error_response_as(code, code.info().oauth_error, transaction_id)
}

/// [`error_response`] with another RFC `error` value: a bearer endpoint names a bad bearer
/// token `invalid_token` (RFC 6750 section 3.1) where the token endpoint says `invalid_grant`.
pub fn error_response_as(code: ErrorCode, oauth_error: &'static str, transaction_id: Option<&str>) -> Response {
    let info = code.info();
    let body =
        ErrorBody { code: info.code, message: info.message, error: oauth_error, error_description: info.message };
    let mut response = (info.http_status, axum::Json(body)).into_response();
    // Only a client-authentication failure challenges (SPEC 3, RFC 6749 5.2). The other 401s
    // (CMN_90015 user credentials, CMN_90018 token or code) are grant errors: a Basic challenge
    // on them makes standard clients (oauth4webapi) report an authentication challenge instead
    // of the `invalid_grant` in the body.
    if code == ErrorCode::InvalidClient {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tokenledger\""));
    }
    echo_transaction_id(&mut response, transaction_id);
    no_store(&mut response);
    response
}

pub(super) fn echo_transaction_id(response: &mut Response, transaction_id: Option<&str>) {
    if let Some(value) = transaction_id.and_then(|t| HeaderValue::from_str(t).ok()) {
        response.headers_mut().insert(TRANSACTION_ID, value);
    }
}

/// Checks the common request rules in SPEC order and builds the [`Call`]: `transactionId`,
/// `Content-Type`, no query string, the bounded body, then the form itself.
pub(super) async fn read_call(
    app: &App,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Call, (ErrorCode, Option<String>)> {
    let transaction_id = wire::transaction_id(header_values(headers, &TRANSACTION_ID)).map_err(|code| (code, None))?;
    let fail = |code: ErrorCode| (code, Some(transaction_id.clone()));
    if !is_form_content_type(headers) {
        return Err(fail(ErrorCode::InvalidHeader));
    }
    // Credentials and parameters are never accepted from the URI (RFC 6749 2.3.1).
    if uri.query().is_some() {
        return Err(fail(ErrorCode::InvalidRequest));
    }
    let limit = app.config.body_limit_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(fail(ErrorCode::InvalidRequest));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| fail(ErrorCode::InvalidRequest))?;
    let params = wire::form::parse(&bytes).map_err(fail)?;
    // One authentication method only: Basic (RFC 6749 2.3).
    if params.get("client_secret").is_some() {
        return Err(fail(ErrorCode::InvalidRequest));
    }
    Ok(Call {
        institution: Institution::parse(header_values(headers, &INSTITUTION_ID)),
        credentials: wire::basic_credentials(header_values(headers, &header::AUTHORIZATION)),
        params,
        transaction_id,
    })
}

fn is_form_content_type(headers: &HeaderMap) -> bool {
    let HeaderValues::One(value) = header_values(headers, &header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}
