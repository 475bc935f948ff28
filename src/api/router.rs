//! The REST router: every service's routes merged, health and readiness, and the 404/405
//! fallbacks. Above the services' REST transports (it imports them; they import only the
//! plumbing in `rest.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::rest::{TRANSACTION_ID, echo_transaction_id, error_response, header_values};
use super::wire;
use crate::api::app::App;
use crate::api::error::ErrorCode;

/// The REST routes. Anything else is a 404 (unknown path) or 405 (wrong method).
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(super::token::rest::routes())
        .merge(super::lookup::rest::routes())
        .merge(super::authcode::rest::routes())
        .merge(super::openapi::routes())
        // After every route, so that it reaches them all; axum still adds `Allow`.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(app)
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "not ready"}))).into_response()
    }
}

/// A method the path does not serve (SPEC 3.6): 405 with the JSON error of every other
/// refusal (CMN_90011) and the `transactionId` echo; the router adds `Allow`.
async fn method_not_allowed(headers: HeaderMap) -> Response {
    let transaction_id = wire::transaction_id(header_values(&headers, &TRANSACTION_ID)).ok();
    let mut response = error_response(ErrorCode::InvalidRequest, transaction_id.as_deref());
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

async fn not_found(headers: HeaderMap) -> Response {
    let mut response = (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not_found", "error_description": "no such endpoint"})),
    )
        .into_response();
    echo_transaction_id(&mut response, wire::transaction_id(header_values(&headers, &TRANSACTION_ID)).ok().as_deref());
    response
}
