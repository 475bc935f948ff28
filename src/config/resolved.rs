//! The resolved settings each part of the server receives: plain structs, validated once by
//! [`Config::resolve`](super::Config::resolve), so that no layer reads `Settings` itself and
//! `config` depends on nothing above it.

use std::num::{NonZeroU32, NonZeroU64};
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Settings};

#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Requests that may wait for the writer before callers are told to back off.
    pub queue_capacity: usize,
    /// Most commands decided and committed in one transaction.
    pub batch_commands_max: usize,
    /// How far the clock may be behind the ledger head before the writer reports it.
    pub clock_skew_max_ms: i64,
    /// Cluster mode: batches the leader's writer keeps in flight through Raft at once.
    pub raft_batches_in_flight: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 16_384,
            batch_commands_max: 1024,
            clock_skew_max_ms: CLOCK_SKEW_MAX_MS_DEFAULT,
            raft_batches_in_flight: 4,
        }
    }
}

/// The default of `clock_skew_max_ms`: a few seconds, more than NTP's step threshold (128 ms)
/// and a batch's commit time, far less than any token lifetime.
pub const CLOCK_SKEW_MAX_MS_DEFAULT: i64 = 5_000;

/// Smallest request-head limit: hyper's read buffer cannot be smaller.
pub const HEADER_BYTES_MIN: usize = 8192;
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
}

/// Requests per client per quota window when `quota_requests` is not set: generous enough for
/// any one real client of a bank (a million at once, then 278 a second), small enough that a
/// runaway client cannot grow memory and the ledger without bound (security review finding
/// 10). The load generators turn it off (`--quota-requests 0`).
pub const DEFAULT_QUOTA_REQUESTS: u32 = 1_000_000;

/// Tokens one client may hold in memory when `quota_tokens` is not set (issue 12, "bounded
/// growth"): about 0.6 GB of token tables at ~115 B a token, half of what a node is sized for
/// (10M tokens), so one runaway client cannot fill a node's memory, while a retail app with
/// millions of signed-in customers (a refresh token each, rotated ones kept until expiry) fits.
pub const DEFAULT_QUOTA_TOKENS: u64 = 5_000_000;

/// The resolved rate-limit settings; `None` turns a limit off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// (requests per second, burst) per authenticated client.
    pub spike: Option<(NonZeroU32, NonZeroU32)>,
    /// (requests, window) per authenticated client.
    pub quota: Option<(NonZeroU32, Duration)>,
    /// Tokens held per client.
    pub tokens: Option<NonZeroU64>,
}

impl RateLimitConfig {
    pub fn resolve(settings: &Settings) -> Result<RateLimitConfig, ConfigError> {
        let spike = match NonZeroU32::new(settings.spike_arrest_per_sec.unwrap_or(0)) {
            None => None,
            Some(rate) => {
                let burst = match settings.spike_arrest_burst {
                    None => rate,
                    Some(n) => {
                        NonZeroU32::new(n).ok_or_else(|| ConfigError("spike_arrest_burst must be positive".into()))?
                    }
                };
                Some((rate, burst))
            }
        };
        let quota = match NonZeroU32::new(settings.quota_requests.unwrap_or(DEFAULT_QUOTA_REQUESTS)) {
            None => None,
            Some(requests) => match settings.quota_window_secs.unwrap_or(3600) {
                secs @ 1..=2_678_400 => Some((requests, Duration::from_secs(secs))),
                _ => return Err(ConfigError("quota_window_secs must be between 1 and 2678400 (31 days)".into())),
            },
        };
        let tokens = NonZeroU64::new(settings.quota_tokens.unwrap_or(DEFAULT_QUOTA_TOKENS));
        Ok(RateLimitConfig { spike, quota, tokens })
    }
}

/// The TLS files from the settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// How often to look for changed files; `None`: only on SIGHUP.
    pub reload_interval: Option<Duration>,
}

impl TlsFiles {
    pub fn resolve(settings: &Settings) -> Result<Option<TlsFiles>, ConfigError> {
        let reload_interval = match settings.tls_reload_interval_secs.unwrap_or(60) {
            0 => None,
            n => Some(Duration::from_secs(n)),
        };
        match (&settings.tls_cert_file, &settings.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: settings.tls_client_ca_file.clone(),
                reload_interval,
            })),
            (None, None) if settings.tls_client_ca_file.is_some() => {
                Err(ConfigError("tls_client_ca_file needs tls_cert_file and tls_key_file".into()))
            }
            (None, None) => Ok(None),
            _ => Err(ConfigError("tls_cert_file and tls_key_file must be given together".into())),
        }
    }
}

/// Lockout after repeated failed sign-ins (`lockout_*` settings); the api hands it to the
/// domain with every failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lockout {
    /// Failures inside one window that lock the login id; 0 turns lockout off.
    pub failures_max: u32,
    /// How long an observation window lasts from its first failure.
    pub window_ms: i64,
    /// How long a lockout lasts.
    pub duration_ms: i64,
}
