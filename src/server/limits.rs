//! How the listener applies its limits (`config::Limits`: open connections, requests in flight,
//! request and idle timeouts, the size of request heads and HTTP/2 concurrency) to hyper, and
//! the few grace periods that are not settings.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::config::Limits;

/// How long a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection told to close may take to finish before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a connection that missed its first-request deadline may take to close.
pub const FIRST_REQUEST_CLOSE_GRACE: Duration = Duration::from_millis(500);

/// The hyper connection builder with `limits`: HTTP/1.1 head size, header count and head read
/// timeout; HTTP/2 streams, header list size and keep-alive pings that drop dead peers. hyper's
/// rapid-reset guards (pending and locally reset streams) stay on.
pub fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout.min(limits.idle_timeout))
        .max_buf_size(limits.header_bytes_max)
        .max_headers(limits.headers_max);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.header_bytes_max).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}
