//! The front door: what happens to every request before and after its handler, for REST and
//! gRPC alike. In order: a tracing span carrying the `transactionId` (so every log line of the
//! request has it), the client-certificate rule of the admin services, the admin credential of
//! those services (checked before their message is read, so an unauthenticated caller cannot
//! make the server buffer one; only an authenticated `AdminService/Import` may send up to
//! 16 MiB, everything else 256 KiB), a slot among
//! `requests_in_flight_max`, the request timeout (a slow-drip body is answered 408 /
//! DEADLINE_EXCEEDED), `Retry-After` for rate-limited answers, and the request metrics.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, header};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use super::tls::is_admin_service;
use crate::api::app::App;
use crate::api::error::FrontRefusal;
use crate::api::ratelimit;
use crate::api::rest::header_values;
use crate::api::wire::{self, HeaderValues};
use crate::metrics::{Metrics, Transport};

const TRANSACTION_ID: HeaderName = HeaderName::from_static("transactionid");
// Looked up in every gRPC response head and trailers: a `HeaderName` is hashed as it is, a
// `&str` is parsed into one first.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// What the connection knows about its peer.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnInfo {
    /// The peer presented a client certificate that the client CA verified at the handshake.
    pub client_certificate: bool,
    /// The peer's address as the throttles key it (`api::throttle::peer_key`).
    pub peer: Option<std::net::IpAddr>,
    /// A follower passed this request on (cluster mode): it is answered here, never passed on again.
    pub forwarded: bool,
}

/// The routers behind the front door.
pub struct Routers {
    /// Every gRPC service, each decoding at most 256 KiB.
    pub grpc: Router,
    /// AdminService with the import limit, for `AdminService/Import` only.
    pub grpc_import: Router,
    pub rest: Router,
}

/// Response streams that need no credential; they end after `unauthenticated_stream_max`.
const UNAUTHENTICATED_STREAMS: [&str; 3] = [
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The one method allowed messages above 256 KiB.
const IMPORT_PATH: &str = "/tokenledger.v1.AdminService/Import";

/// Shared by every connection of a listener.
pub struct Front {
    app: Arc<App>,
    grpc: Router,
    grpc_import: Router,
    rest: Router,
    /// `requests_in_flight_max` slots, held from the handler's start to its response head.
    in_flight: Arc<Semaphore>,
    request_timeout: Duration,
    /// A client CA is configured: admin services need a verified client certificate.
    client_certificates_required: bool,
}

impl Front {
    pub fn new(app: Arc<App>, routers: Routers, client_certificates_required: bool) -> Self {
        let limits = &app.config.limits;
        let in_flight = Arc::new(Semaphore::new(limits.requests_in_flight_max as usize));
        let request_timeout = limits.request_timeout;
        let Routers { grpc, grpc_import, rest } = routers;
        Self { app, grpc, grpc_import, rest, in_flight, request_timeout, client_certificates_required }
    }

    pub fn app_limits(&self) -> &crate::config::Limits {
        &self.app.config.limits
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.app.metrics
    }

    /// Answers one request of a connection whose activity `activity` tracks.
    pub async fn handle<B>(
        &self,
        mut request: Request<B>,
        conn: ConnInfo,
        activity: &Arc<Activity>,
    ) -> Response<TrackedBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let started = Instant::now();
        let guard = activity.begin();
        let grpc = is_grpc(&request);
        let metrics = &self.app.metrics;
        let endpoint = metrics.endpoint(if grpc { Transport::Grpc } else { Transport::Rest }, request.uri().path());
        let transaction_id = transaction_id(&mut request, grpc);
        let lifetime = (grpc && UNAUTHENTICATED_STREAMS.contains(&request.uri().path()))
            .then(|| Box::pin(tokio::time::sleep(self.app.config.limits.unauthenticated_stream_max)));
        let span = tracing::info_span!(
            "request",
            transactionId = transaction_id.as_deref(),
            endpoint = metrics.endpoint_name(endpoint)
        );
        let mut response = self.respond(request.map(Body::new), grpc, conn).instrument(span.clone()).await;
        if grpc {
            too_large_is_resource_exhausted(response.headers_mut());
        }
        let status = status_of(&response, grpc);
        let elapsed = started.elapsed();
        span.in_scope(|| tracing::debug!(status, elapsed_us = elapsed.as_micros() as u64, "request answered"));
        // A gRPC call whose status is not in the head has it in the trailers: counted then.
        let grpc_end = if grpc && response.headers().get(&GRPC_STATUS).is_none() {
            Some(GrpcEnd { metrics: metrics.clone(), endpoint, started, recorded: false })
        } else {
            metrics.request(endpoint, status, elapsed);
            None
        };
        let metrics = metrics.clone();
        response.map(|body| TrackedBody { inner: body, _guard: guard, grpc_end, lifetime, metrics })
    }

    pub(super) async fn respond(&self, request: Request<Body>, grpc: bool, conn: ConnInfo) -> Response {
        let admin_service = grpc && is_admin_service(request.uri().path());
        if admin_service && self.client_certificates_required && !conn.client_certificate {
            self.app.metrics.client_certificate_refusals.increment(1);
            tracing::warn!("admin call refused: no verified client certificate");
            return FrontRefusal::ClientCertificateRequired.grpc_status().into_http();
        }
        // Before the body is read: the handlers check it again (`api::grpc_util::admin_call`).
        if admin_service
            && !self.app.is_admin(wire::bearer_token(header_values(request.headers(), &header::AUTHORIZATION)))
        {
            self.app.metrics.admin_credential_refusals.increment(1);
            return FrontRefusal::AdminCredentialRequired.grpc_status().into_http();
        }
        // Cluster mode: a halted node answers nothing from its ledger (SPEC 8).
        if let Some(node) = &self.app.cluster
            && node.is_halted()
            && !answered_when_halted(request.uri().path(), grpc)
        {
            return halted_response(&request, grpc);
        }
        // Cluster mode: a follower passes writes on to the leader (SPEC 8), once.
        if let Some(node) = &self.app.cluster
            && !conn.forwarded
            && super::forward::is_write(&request, grpc)
            && !node.is_leader()
        {
            let limit = if request.uri().path() == IMPORT_PATH {
                super::IMPORT_MESSAGE_BYTES_MAX
            } else if grpc {
                super::GRPC_MESSAGE_BYTES_MAX + 1024
            } else {
                self.app.config.body_limit_bytes
            };
            let forwarding = super::forward::to_leader(node, request, grpc, conn, limit, self.request_timeout);
            return match tokio::time::timeout(self.request_timeout, forwarding).await {
                Ok(response) => response,
                Err(_) => {
                    self.app.metrics.request_timeouts.increment(1);
                    timeout_response(grpc)
                }
            };
        }
        let router = match (grpc, request.uri().path() == IMPORT_PATH) {
            (true, true) => self.grpc_import.clone(),
            (true, false) => self.grpc.clone(),
            (false, _) => self.rest.clone(),
        };
        let work = async {
            // The semaphore is never closed, so acquiring only waits. The slot lives in the
            // request's scope, so a handler may give it back early (`release_in_flight_slot`).
            let slot = self.in_flight.clone().acquire_owned().await.ok();
            ratelimit::request_scope(conn.peer, slot, router.oneshot(request)).await
        };
        match tokio::time::timeout(self.request_timeout, work).await {
            Ok((Ok(mut response), retry_after)) => {
                if let Some(secs) = retry_after {
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                response
            }
            Ok((Err(never), _)) => match never {},
            Err(_) => {
                self.app.metrics.request_timeouts.increment(1);
                tracing::info!(timeout_secs = self.request_timeout.as_secs(), "request timed out");
                timeout_response(grpc)
            }
        }
    }
}

/// What a halted cluster node still answers: liveness, readiness (503, role "stopped"),
/// `/metrics`, gRPC health (NOT_SERVING) and reflection, and `cluster status`, so that an
/// operator can see that it halted and why (docs/cluster.md). Everything else would answer from
/// a ledger that is not the cluster's (a divergence) or that this node can no longer keep current
/// (a storage failure): an introspection's "inactive", a lookup, an audit query.
fn answered_when_halted(path: &str, grpc: bool) -> bool {
    if grpc {
        return path.starts_with("/grpc.health.v1.Health/")
            || path.starts_with("/grpc.reflection.")
            || path.starts_with("/tokenledger.v1.ClusterService/");
    }
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The answer of a halted node: 503 CMN_90000 with `Retry-After` (another node answers), gRPC
/// UNAVAILABLE.
fn halted_response<B>(request: &Request<B>, grpc: bool) -> Response {
    if grpc {
        return tonic::Status::unavailable(
            "this node has halted (raft stopped on it: its ledger diverges from the cluster's, or its storage failed); \
             ask another node",
        )
        .into_http();
    }
    let transaction_id = wire::transaction_id(header_values(request.headers(), &TRANSACTION_ID)).ok();
    let mut response =
        crate::api::rest::error_response(crate::api::error::ErrorCode::ReadUnconfirmed, transaction_id.as_deref());
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
    response
}

pub(super) fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The request's valid `transactionId`, for the span. An admin gRPC call without one gets a
/// fresh one here (the admin services record one either way), so its log lines carry it too.
/// Invalid values are never logged.
fn transaction_id<B>(request: &mut Request<B>, grpc: bool) -> Option<String> {
    let values = header_values(request.headers(), &TRANSACTION_ID);
    match wire::transaction_id(values) {
        Ok(id) => Some(id),
        Err(_) if grpc && matches!(values, HeaderValues::Absent) && is_admin_service(request.uri().path()) => {
            let id = uuid::Uuid::new_v4().to_string();
            if let Ok(value) = HeaderValue::from_str(&id) {
                request.headers_mut().insert(TRANSACTION_ID, value);
            }
            Some(id)
        }
        Err(_) => None,
    }
}

/// The HTTP status (REST) or gRPC code (gRPC; 0 when the status comes in trailers, i.e. the
/// call succeeded or is streaming).
fn status_of(response: &Response, grpc: bool) -> u16 {
    if !grpc {
        return response.status().as_u16();
    }
    response.headers().get(&GRPC_STATUS).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// tonic answers a message above `max_decoding_message_size` with OUT_OF_RANGE; gRPC's own
/// servers (and the status-code guide: "message larger than the limit") use
/// RESOURCE_EXHAUSTED, which is what clients expect. The error comes as a trailers-only
/// response, so its status is in the headers.
fn too_large_is_resource_exhausted(headers: &mut http::HeaderMap) {
    let out_of_range = headers.get(&GRPC_STATUS).is_some_and(|v| v.as_bytes() == b"11");
    let contains = |text: &[u8], part: &[u8]| text.windows(part.len()).any(|w| w == part);
    let too_large = headers
        .get(&GRPC_MESSAGE)
        .is_some_and(|v| contains(v.as_bytes(), b"too large") || contains(v.as_bytes(), b"too%20large"));
    if out_of_range && too_large {
        headers.insert(GRPC_STATUS, HeaderValue::from_static("8"));
    }
}

fn timeout_response(grpc: bool) -> Response {
    if grpc {
        return FrontRefusal::TimedOut.grpc_status().into_http();
    }
    let (status, error, description) = FrontRefusal::TimedOut.rest();
    let body = serde_json::json!({"error": error, "error_description": description});
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Requests of one connection: how many are open (until their response body ends, so a live
/// stream keeps its connection busy) and when the last one ended.
pub struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// A request has begun on this connection.
    begun: std::sync::atomic::AtomicBool,
    /// Milliseconds after `opened` of the last request start or end.
    last_ms: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Activity {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            begun: std::sync::atomic::AtomicBool::new(false),
            last_ms: AtomicU64::new(0),
            metrics,
        }
    }

    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.begun.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        self.metrics.requests_in_flight.increment(1.0);
        ActivityGuard(self.clone())
    }

    fn touch(&self) {
        self.last_ms.store(self.opened.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// True once a request has begun on the connection.
    pub fn has_begun(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    /// When the connection became idle, or `None` while a request is open.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.opened + Duration::from_millis(self.last_ms.load(Ordering::Acquire)))
    }
}

/// One open request; dropped with its response body.
struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.requests_in_flight.decrement(1.0);
    }
}

/// A response body that keeps its request counted as open until it is finished or dropped,
/// and counts a gRPC call when its trailers carry the status. It is the body type hyper gets,
/// not boxed once more: every frame of every response goes through it.
pub struct TrackedBody {
    inner: Body,
    _guard: ActivityGuard,
    grpc_end: Option<GrpcEnd>,
    /// When an unauthenticated stream must end; `None` for everything else.
    lifetime: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<Metrics>,
}

impl TrackedBody {
    /// Ends the stream in place of its body: UNAVAILABLE (retryable), so a health watcher
    /// or a reflection client simply calls again on a connection of its own.
    fn end_stream(&mut self) -> http_body::Frame<Bytes> {
        self.inner = Body::empty();
        self.lifetime = None;
        self.metrics.stream_lifetime_ends.increment(1);
        let mut trailers = http::HeaderMap::new();
        trailers.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        trailers.insert(GRPC_MESSAGE, HeaderValue::from_static("stream lifetime limit reached; call again"));
        if let Some(end) = &mut self.grpc_end {
            end.record(14);
        }
        http_body::Frame::trailers(trailers)
    }
}

/// A gRPC call waiting for its trailers to be counted.
struct GrpcEnd {
    metrics: Arc<Metrics>,
    endpoint: crate::metrics::Endpoint,
    started: Instant,
    recorded: bool,
}

impl GrpcEnd {
    fn record(&mut self, code: u16) {
        if !self.recorded {
            self.recorded = true;
            self.metrics.request(self.endpoint, code, self.started.elapsed());
        }
    }
}

impl Drop for GrpcEnd {
    fn drop(&mut self) {
        // No trailers: the client went away mid-response.
        self.record(1);
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Some(lifetime) = &mut this.lifetime
            && lifetime.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Ok(this.end_stream())));
        }
        let mut poll = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(end)) = (&mut poll, &mut this.grpc_end)
            && let Some(trailers) = frame.trailers_mut()
        {
            too_large_is_resource_exhausted(trailers);
            let code = trailers.get(&GRPC_STATUS).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            end.record(code.unwrap_or(2));
        }
        // A stream that ended by itself needs no end of ours.
        if matches!(&poll, Poll::Ready(None)) || matches!(&poll, Poll::Ready(Some(Ok(frame))) if frame.is_trailers()) {
            this.lifetime = None;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The `Infallible` service hyper wants, for one connection.
pub fn connection_service(
    front: Arc<Front>,
    conn: ConnInfo,
    activity: Arc<Activity>,
) -> impl tower::Service<
    Request<hyper::body::Incoming>,
    Response = Response<TrackedBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<TrackedBody>, Infallible>> + Send,
> + Clone {
    tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        let front = front.clone();
        let activity = activity.clone();
        // Boxed: the request's whole state machine (front door, routers, handler) is several
        // KiB, and hyper moves the future it gets by value: into the task it spawns for each
        // HTTP/2 stream, and through its task stages. A box makes those moves pointer copies.
        Box::pin(async move { Ok::<_, Infallible>(front.handle(request, conn, &activity).await) })
    })
}
