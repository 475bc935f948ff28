//! Limits of the listener, so that no client can hold more than its share: open connections,
//! requests in flight, request and idle timeouts, the size of request heads and HTTP/2
//! concurrency. Every limit is a setting (see README); the defaults never bind normal use.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::config::{ConfigError, Settings};

/// Smallest request-head limit: hyper's read buffer cannot be smaller.
pub const HEADER_BYTES_MIN: usize = 8192;
/// How long a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection told to close may take to finish before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a connection that missed its first-request deadline may take to close.
pub const FIRST_REQUEST_CLOSE_GRACE: Duration = Duration::from_millis(500);

/// The resolved listener limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; the accept loop waits for a free slot, so extra connections
    /// queue in the kernel's listen backlog instead of costing memory here.
    pub connections_max: u32,
    /// Connections one peer (an IPv4 address, an IPv6 /64) may have open; more are closed as
    /// soon as they are accepted. 0: no per-peer cap.
    pub connections_per_peer_max: u32,
    /// Time a new connection has to send its first request head; then it is closed.
    pub first_request_timeout: Duration,
    /// Longest life of a response stream that needs no credential (gRPC health `Watch`,
    /// reflection); it then ends with UNAVAILABLE and the client calls again.
    pub unauthenticated_stream_max: Duration,
    /// Requests handled at once over all connections; extra requests wait for a slot (bounded
    /// by `request_timeout`).
    pub requests_in_flight_max: u32,
    /// HTTP/2 streams one connection may have open (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub http2_max_concurrent_streams: u32,
    /// Time from a request's head to its response head, reading the body included; a
    /// slow-drip body is answered 408 when it runs out.
    pub request_timeout: Duration,
    /// Time a connection may stay open with no request in flight (keep-alive, a silent client,
    /// a request head that never completes).
    pub idle_timeout: Duration,
    /// Largest request head: HTTP/1.1 read buffer and HTTP/2 header list size. Larger heads
    /// get 431 (HTTP/1.1) or a refused stream (HTTP/2).
    pub header_bytes_max: usize,
    /// Most header fields in an HTTP/1.1 request head; more get 431.
    pub headers_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_max: 4096,
            connections_per_peer_max: 512,
            first_request_timeout: Duration::from_secs(10),
            unauthenticated_stream_max: Duration::from_secs(300),
            requests_in_flight_max: 1024,
            http2_max_concurrent_streams: 128,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            header_bytes_max: 12 * 1024,
            headers_max: 64,
        }
    }
}

impl Limits {
    pub fn resolve(settings: &Settings) -> Result<Limits, ConfigError> {
        let defaults = Limits::default();
        let positive = |value: Option<u32>, default: u32, name: &str| match value.unwrap_or(default) {
            0 => Err(ConfigError(format!("{name} must be positive"))),
            n => Ok(n),
        };
        let secs = |value: Option<u64>, default: Duration, name: &str| match value {
            None => Ok(default),
            Some(n @ 1..=86_400) => Ok(Duration::from_secs(n)),
            Some(_) => Err(ConfigError(format!("{name} must be between 1 and 86400"))),
        };
        let header_bytes_max = match settings.header_bytes_max.unwrap_or(defaults.header_bytes_max) {
            n @ HEADER_BYTES_MIN..=1_048_576 => n,
            _ => return Err(ConfigError(format!("header_bytes_max must be between {HEADER_BYTES_MIN} and 1048576"))),
        };
        let headers_max = match settings.headers_max.unwrap_or(defaults.headers_max) {
            n @ 8..=1024 => n,
            _ => return Err(ConfigError("headers_max must be between 8 and 1024".into())),
        };
        Ok(Limits {
            connections_max: positive(settings.connections_max, defaults.connections_max, "connections_max")?,
            connections_per_peer_max: settings.connections_per_peer_max.unwrap_or(defaults.connections_per_peer_max),
            first_request_timeout: secs(
                settings.first_request_timeout_secs,
                defaults.first_request_timeout,
                "first_request_timeout_secs",
            )?,
            unauthenticated_stream_max: secs(
                settings.unauthenticated_stream_max_secs,
                defaults.unauthenticated_stream_max,
                "unauthenticated_stream_max_secs",
            )?,
            requests_in_flight_max: positive(
                settings.requests_in_flight_max,
                defaults.requests_in_flight_max,
                "requests_in_flight_max",
            )?,
            http2_max_concurrent_streams: positive(
                settings.http2_max_concurrent_streams,
                defaults.http2_max_concurrent_streams,
                "http2_max_concurrent_streams",
            )?,
            request_timeout: secs(settings.request_timeout_secs, defaults.request_timeout, "request_timeout_secs")?,
            idle_timeout: secs(settings.idle_timeout_secs, defaults.idle_timeout, "idle_timeout_secs")?,
            header_bytes_max,
            headers_max,
        })
    }

    /// The hyper connection builder with these limits: HTTP/1.1 head size, header count and
    /// head read timeout; HTTP/2 streams, header list size and keep-alive pings that drop
    /// dead peers. hyper's rapid-reset guards (pending and locally reset streams) stay on.
    pub fn connection_builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.request_timeout.min(self.idle_timeout))
            .max_buf_size(self.header_bytes_max)
            .max_headers(self.headers_max);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.http2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(self.header_bytes_max).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        builder
    }
}
