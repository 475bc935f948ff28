//! REST transport of the institution-user lookup: routes, the camelCase body of SPEC 3.5 and
//! the `{code, message}` ISR errors.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::api::app::App;
use crate::api::error::LookupError;
use crate::api::lookup::flow::{self as users, InstitutionUserView, LookupCall};
use crate::api::rest::{error_response, header_values};
use crate::api::wire::{self, HeaderValues, Institution};

const TRANSACTION_ID: HeaderName = HeaderName::from_static("transactionid");
const INSTITUTION_ID: HeaderName = HeaderName::from_static("institutionid");

/// The lookup routes: the older `/db-users/v1` path and the newer root path.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/db-users/v1/institution-users/{id}", get(get_institution_user))
        .route("/v1/institution-users/{id}", get(get_institution_user))
}

/// Candescent's `{code, message}`, plus the RFC fields every error of SPEC 3 carries; for
/// the bearer failures they match the `WWW-Authenticate` challenge (`invalid_token`,
/// `insufficient_scope`).
#[derive(Serialize)]
struct LookupErrorBody {
    code: &'static str,
    message: &'static str,
    error: &'static str,
    error_description: &'static str,
}

fn lookup_error(error: LookupError, transaction_id: &str, credential_sent: bool) -> Response {
    let info = error.info();
    let body = LookupErrorBody {
        code: info.code,
        message: info.message,
        error: info.oauth_error,
        error_description: info.message,
    };
    let mut response = (info.http_status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    // RFC 6750 section 3: a bearer-protected resource names its scheme and the error (none
    // when the request carried no credential at all, section 3.1).
    let challenge = match error {
        LookupError::Unauthenticated if !credential_sent => Some("Bearer realm=\"tokenledger\""),
        LookupError::Unauthenticated => Some("Bearer realm=\"tokenledger\", error=\"invalid_token\""),
        LookupError::Forbidden => {
            Some("Bearer realm=\"tokenledger\", error=\"insufficient_scope\", scope=\"institution-users:read\"")
        }
        _ => None,
    };
    if let Some(challenge) = challenge {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    finish(&mut response, transaction_id);
    response
}

fn finish(response: &mut Response, transaction_id: &str) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(transaction_id) {
        headers.insert(TRANSACTION_ID, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CustomerBody<'a> {
    institution_customer_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    member_number: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    member_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    customer_type: &'a str,
    primary: bool,
}

#[derive(Serialize)]
struct Entry<'a> {
    key: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct AdditionalInfo<'a> {
    entry: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct UserStatusBody {
    active: bool,
    locked: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstitutionUserBody<'a> {
    institution_user_id: &'a str,
    institution_id: &'a str,
    institution_user_type: &'a str,
    user_id: &'a str,
    user_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    failed_login_count: u32,
    failed_password_reset_count: u32,
    user_status: UserStatusBody,
    institution_customers: Vec<CustomerBody<'a>>,
    additional_info: AdditionalInfo<'a>,
}

impl<'a> From<&'a InstitutionUserView> for InstitutionUserBody<'a> {
    fn from(v: &'a InstitutionUserView) -> Self {
        Self {
            institution_user_id: &v.institution_user_id,
            institution_id: &v.institution_id,
            institution_user_type: v.institution_user_type,
            user_id: &v.user_id,
            user_name: &v.user_name,
            first_name: v.first_name.as_deref(),
            last_name: v.last_name.as_deref(),
            email: v.email.as_deref(),
            failed_login_count: v.failed_login_count,
            failed_password_reset_count: v.failed_password_reset_count,
            user_status: UserStatusBody { active: v.active, locked: v.locked },
            institution_customers: v
                .institution_customers
                .iter()
                .map(|c| CustomerBody {
                    institution_customer_id: &c.institution_customer_id,
                    member_number: &c.member_number,
                    member_name: &c.member_name,
                    customer_type: &c.customer_type,
                    primary: c.primary,
                })
                .collect(),
            additional_info: AdditionalInfo {
                entry: v.additional_info.iter().map(|(key, value)| Entry { key, value }).collect(),
            },
        }
    }
}

/// The `userIdType` of the query; other parameters (`$expand`, `retrieveBillPayCredentials`,
/// which must be `true` or `false`) are accepted and ignored. A `userIdType` that is present but empty, or repeated, is
/// ISR_10000 naming it (an empty value is not the default: the caller meant to say something);
/// any other malformed query is ISR_10000 naming the query.
fn user_id_type(query: Option<&str>) -> Result<Option<String>, LookupError> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut named = 0;
    for segment in query.split('&') {
        let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
        let name = crate::api::wire::percent_decode(name.as_bytes()).unwrap_or_default();
        if name == b"userIdType" {
            named += 1;
            if value.is_empty() || named > 1 {
                return Err(LookupError::BadUserIdType);
            }
        }
        // A boolean (Candescent's document): present but empty is not `false`.
        if name == b"retrieveBillPayCredentials" && value.is_empty() {
            return Err(LookupError::BadQuery);
        }
    }
    let params = crate::api::wire::form::parse(query.as_bytes()).map_err(|_| LookupError::BadQuery)?;
    // Ignored, but Candescent documents it as a boolean, so anything else is malformed.
    if params.get("retrieveBillPayCredentials").is_some_and(|v| v != "true" && v != "false") {
        return Err(LookupError::BadQuery);
    }
    Ok(params.get("userIdType").map(str::to_owned))
}

async fn get_institution_user(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    // SPEC section 3's common rule holds here too: a missing or malformed transactionId is
    // CMN_90008.
    let transaction_id = match wire::transaction_id(header_values(&headers, &TRANSACTION_ID)) {
        Ok(id) => id,
        Err(code) => return error_response(code, None),
    };
    let call = LookupCall {
        bearer: wire::bearer_token(header_values(&headers, &header::AUTHORIZATION)).map(str::to_owned),
        institution: Institution::parse(header_values(&headers, &INSTITUTION_ID)),
        // A path that does not decode to UTF-8 names no user.
        id: id.map(|Path(id)| id).map_err(|_| LookupError::BadUserId),
        user_id_type: user_id_type(query.as_deref()),
    };
    match users::lookup(&app, &call) {
        Ok(view) => {
            let mut response = (StatusCode::OK, axum::Json(InstitutionUserBody::from(&view))).into_response();
            finish(&mut response, &transaction_id);
            response
        }
        Err(error) => {
            let credential_sent = !matches!(header_values(&headers, &header::AUTHORIZATION), HeaderValues::Absent);
            lookup_error(error, &transaction_id, credential_sent)
        }
    }
}
