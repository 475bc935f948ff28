//! What a node answers while it opens its ledger — loading a projection snapshot and replaying
//! its tail takes seconds, a full replay of 10M events a minute or more — instead of leaving
//! connections unanswered in the listen backlog, where a liveness probe takes the process for
//! hung and an operator sees nothing:
//!
//! - `GET /healthz` 200 `{"status": "starting"}` (alive, making progress);
//! - `GET /readyz` 503 with the replay's progress;
//! - `grpc.health.v1.Health` NOT_SERVING for every service (SPEC 4);
//! - `GET /metrics` with `tokenledger_starting` and the replay's progress;
//! - anything else 503 `CMN_90000` with `Retry-After: 1` (gRPC UNAVAILABLE).
//!
//! It serves plain HTTP (1.1 without keep-alive, and h2c for gRPC health), on the API listener
//! when TLS is off, and `/metrics` alone on `metrics_listen` when that is set. With TLS on the
//! API port, that port stays silent until the node is up (docs/operations.md, "Start-up").
//! Once the ledger is open, the listeners are handed to the real server; connections still
//! open here are asked to close.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::api::error::ErrorCode;
use crate::ledger::progress::{StartProgress, gauges};

/// How long a connection of the start-up server may take to finish once the node is up.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Which listeners the start-up server answers on, and what.
pub struct StartListeners<'a> {
    /// The API listener, when it speaks plain HTTP (no TLS).
    pub api: Option<&'a TcpListener>,
    /// `metrics_listen`, bound early.
    pub metrics: Option<&'a TcpListener>,
}

/// Runs `work` (opening the ledger), answering on `listeners` meanwhile; returns its output
/// once it is done and every connection accepted here has been asked to close.
pub async fn serve_while<T>(
    listeners: StartListeners<'_>,
    progress: Arc<StartProgress>,
    work: impl Future<Output = T>,
) -> T {
    if listeners.api.is_none() && listeners.metrics.is_none() {
        return work.await;
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::NotServing).await;
    for name in super::SERVICE_NAMES {
        health.set_service_status(name, ServingStatus::NotServing).await;
    }
    let grpc = tonic::service::Routes::new(health_service).prepare().into_axum_router();
    let api_router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(if listeners.metrics.is_none() { Router::new().route("/metrics", get(metrics)) } else { Router::new() })
        .with_state(progress.clone())
        .merge(grpc)
        .fallback(unavailable);
    let metrics_router = Router::new()
        .route("/metrics", get(metrics))
        .with_state(progress.clone())
        .fallback(|| async { StatusCode::NOT_FOUND });
    let (closing, closed) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(false);
    let builder = Arc::new(builder);
    let mut work = std::pin::pin!(work);
    let output = loop {
        tokio::select! {
            output = &mut work => break output,
            Some((stream, _)) = accept(listeners.api) => {
                spawn_connection(stream, api_router.clone(), builder.clone(), closed.clone());
            }
            Some((stream, _)) = accept(listeners.metrics) => {
                spawn_connection(stream, metrics_router.clone(), builder.clone(), closed.clone());
            }
        }
    };
    closing.send_replace(true);
    output
}

/// The next connection of `listener`; never, without one.
async fn accept(listener: Option<&TcpListener>) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(listener) => match listener.accept().await {
            Ok(accepted) => Some(accepted),
            Err(error) => {
                // Out of descriptors, say: do not spin on it.
                tracing::debug!(%error, "accept failed while starting");
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
        },
        None => std::future::pending().await,
    }
}

fn spawn_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut closing: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let service = TowerToHyperService::new(router);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = closing.wait_for(|c| *c) => connection.as_mut().graceful_shutdown(),
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
    });
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "starting"})).into_response()
}

async fn readyz(State(progress): State<Arc<StartProgress>>) -> Response {
    let r = progress.readings();
    let body = serde_json::json!({
        "status": "starting",
        "reads": false,
        "writes": false,
        "replay": {"events": r.events, "seq": r.seq, "last_seq": r.last_seq, "seconds": r.seconds},
    });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn metrics(State(progress): State<Arc<StartProgress>>) -> Response {
    let mut text = String::new();
    for (name, help, value) in gauges(&progress.readings()) {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Every other request: the node cannot answer it yet (the same answer as an unconfirmed
/// read, SPEC 8: 503 CMN_90000, retry).
async fn unavailable(request: axum::extract::Request) -> Response {
    let mut response = if super::front::is_grpc(&request) {
        crate::api::error::grpc_status(ErrorCode::ReadUnconfirmed.info(), None).into_http()
    } else {
        crate::api::rest::error_response(ErrorCode::ReadUnconfirmed, None)
    };
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
