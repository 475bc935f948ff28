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

/// `{"status", "reads", "writes"}`, and in cluster mode the node's `node_id`, `role`, `leader`
/// (0: none known) and `applied_seq`. 200 when it takes writes, else 503 (a load balancer that
/// only routes reads may use the `reads` field).
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let readiness = app.readiness();
    let mut body = serde_json::Map::new();
    body.insert("status".into(), (if readiness.writes { "ready" } else { "not ready" }).into());
    body.insert("reads".into(), readiness.reads.into());
    body.insert("writes".into(), readiness.writes.into());
    if let Some(node) = &app.cluster {
        let view = node.view();
        body.insert("node_id".into(), view.id.into());
        body.insert("role".into(), view.role.name().into());
        body.insert("leader".into(), view.leader.unwrap_or(0).into());
        body.insert("applied_seq".into(), app.state.read().head.seq.into());
    }
    let status = if readiness.writes { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
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
