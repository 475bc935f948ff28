//! Settings: defaults, overridden by a TOML file (`--config`), overridden by `TOKENLEDGER_*`
//! environment variables and command-line flags. Every setting is documented in README.md.
//!
//! **Invariant:** `config` imports nothing of the crate. It resolves [`Settings`] into
//! [`Config`] and the plain structs of `resolved` (the listener's [`Limits`], the writer's
//! [`WriterConfig`], ...), which the layers above receive.

mod resolved;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use resolved::{
    CLOCK_SKEW_MAX_MS_DEFAULT, DEFAULT_QUOTA_REQUESTS, DEFAULT_QUOTA_TOKENS, HEADER_BYTES_MIN, Limits, Lockout,
    RateLimitConfig, TlsFiles, WriterConfig,
};

/// Longest token lifetime a setting may give: ten years (the directory refuses clients with
/// longer ones, `domain::directory::TTL_SECS_MAX`).
pub const TTL_SECS_MAX: u64 = 10 * 365 * 24 * 3600;

/// The default of `family_lifetime_max_secs`: 90 days.
pub const FAMILY_LIFETIME_MAX_SECS_DEFAULT: u64 = 90 * 24 * 3600;

/// Every setting, as given by one source; `None` means "not set here".
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Directory of the ledger, the key file and admin.token [default: ./tokenledger-data]
    #[arg(long, env = "TOKENLEDGER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address for REST and gRPC (one port) [default: 127.0.0.1:8080]
    #[arg(long, env = "TOKENLEDGER_LISTEN")]
    pub listen: Option<String>,
    /// The `iss` of introspection and ID tokens [default: http://<listen>]
    #[arg(long, env = "TOKENLEDGER_ISSUER")]
    pub issuer: Option<String>,
    /// Log filter, e.g. info or tokenledger=debug [default: info]
    #[arg(long, env = "TOKENLEDGER_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "TOKENLEDGER_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Access-token lifetime for clients created without one [default: 3600]
    #[arg(long, env = "TOKENLEDGER_ACCESS_TOKEN_TTL_SECS")]
    pub access_token_ttl_secs: Option<u64>,
    /// Refresh-token lifetime for clients created without one [default: 15552000]
    #[arg(long, env = "TOKENLEDGER_REFRESH_TOKEN_TTL_SECS")]
    pub refresh_token_ttl_secs: Option<u64>,
    /// Send `expires_in` as a digit string instead of a JSON number [default: false]
    #[arg(long, env = "TOKENLEDGER_EXPIRES_IN_AS_STRING")]
    pub expires_in_as_string: Option<bool>,
    /// Longest life of a refresh-token family from its sign-in, however often it is refreshed [default: 7776000 (90 days)]
    #[arg(long, env = "TOKENLEDGER_FAMILY_LIFETIME_MAX_SECS")]
    pub family_lifetime_max_secs: Option<u64>,
    /// Lifetime of authorization codes, 1 to 3600 seconds [default: 600]
    #[arg(long, env = "TOKENLEDGER_AUTHORIZATION_CODE_TTL_SECS")]
    pub authorization_code_ttl_secs: Option<u64>,
    /// Lifetime of ID tokens, 1 to 86400 seconds [default: 3600]
    #[arg(long, env = "TOKENLEDGER_ID_TOKEN_TTL_SECS")]
    pub id_token_ttl_secs: Option<u64>,
    /// PBKDF2-HMAC-SHA256 iterations for new passwords and imported secrets [default: 600000]
    #[arg(long, env = "TOKENLEDGER_PASSWORD_PBKDF2_ITERATIONS")]
    pub password_pbkdf2_iterations: Option<u32>,
    /// Allow password_pbkdf2_iterations below 100000; for tests and development only [default: false]
    #[arg(long, env = "TOKENLEDGER_INSECURE_LOW_PBKDF2_ITERATIONS")]
    pub insecure_low_pbkdf2_iterations: Option<bool>,
    /// Serve GET /metrics on this address instead of the API port (e.g. a private interface)
    #[arg(long, env = "TOKENLEDGER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Largest REST request body accepted, in bytes [default: 16384]
    #[arg(long, env = "TOKENLEDGER_BODY_LIMIT_BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// Write requests that may queue for the ledger writer [default: 16384]
    #[arg(long, env = "TOKENLEDGER_WRITER_QUEUE_CAPACITY")]
    pub writer_queue_capacity: Option<usize>,
    /// Most commands committed in one ledger transaction [default: 1024]
    #[arg(long, env = "TOKENLEDGER_BATCH_COMMANDS_MAX")]
    pub batch_commands_max: Option<usize>,
    /// How far the clock may be behind the ledger head before the server reports it and is not ready [default: 5000]
    #[arg(long, env = "TOKENLEDGER_CLOCK_SKEW_MAX_MS")]
    pub clock_skew_max_ms: Option<u64>,
    /// Seconds to drain in-flight requests on SIGINT/SIGTERM [default: 10]
    #[arg(long, env = "TOKENLEDGER_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Write a projection snapshot after this many new events (0: not by count) [default: 1000000]
    #[arg(long, env = "TOKENLEDGER_SNAPSHOT_EVERY_EVENTS")]
    pub snapshot_every_events: Option<u64>,
    /// Write a projection snapshot this often when there are new events (0: not by time; one is still written at shutdown) [default: 600]
    #[arg(long, env = "TOKENLEDGER_SNAPSHOT_EVERY_SECS")]
    pub snapshot_every_secs: Option<u64>,
    /// Password and legacy-secret hashes computed at once [default: number of CPUs]
    #[arg(long, env = "TOKENLEDGER_SLOW_HASH_CONCURRENCY")]
    pub slow_hash_concurrency: Option<usize>,
    /// Client-secret PBKDF2 checks at once; when all are busy, answer CMN_90003 at once [default: CPUs / 4, at least 1]
    #[arg(long, env = "TOKENLEDGER_CLIENT_SECRET_HASH_CONCURRENCY")]
    pub client_secret_hash_concurrency: Option<usize>,
    /// Failed client authentications per (client id, source address) before a backoff starts; 0: off [default: 5]
    #[arg(long, env = "TOKENLEDGER_CLIENT_AUTH_FREE_FAILURES")]
    pub client_auth_free_failures: Option<u32>,
    /// Failed password sign-ins one client may cause per minute (and at once); more answer CMN_90003; 0: off [default: 600]
    #[arg(long, env = "TOKENLEDGER_SIGN_IN_FAILURES_PER_CLIENT_PER_MIN")]
    pub sign_in_failures_per_client_per_min: Option<u32>,
    /// Failed sign-ins of one login id within the window that lock it; 0 disables lockout [default: 5]
    #[arg(long, env = "TOKENLEDGER_LOCKOUT_FAILURES")]
    pub lockout_failures: Option<u32>,
    /// Observation window for counting failed sign-ins, from the first failure [default: 900]
    #[arg(long, env = "TOKENLEDGER_LOCKOUT_WINDOW_SECS")]
    pub lockout_window_secs: Option<u64>,
    /// How long a locked-out login id stays locked [default: 900]
    #[arg(long, env = "TOKENLEDGER_LOCKOUT_DURATION_SECS")]
    pub lockout_duration_secs: Option<u64>,
    // Production hardening (issue 6): abuse limits, TLS. Resolved in `server::limits`,
    // `api::ratelimit` and `server::tls`; documented in README's settings table.
    /// Spike arrest: requests per second per client; 0 turns it off [default: 0]
    #[arg(long, env = "TOKENLEDGER_SPIKE_ARREST_PER_SEC")]
    pub spike_arrest_per_sec: Option<u32>,
    /// Spike arrest: requests a client may send at once [default: spike_arrest_per_sec]
    #[arg(long, env = "TOKENLEDGER_SPIKE_ARREST_BURST")]
    pub spike_arrest_burst: Option<u32>,
    /// Quota: requests per client per quota window; 0 turns it off [default: 1000000]
    #[arg(long, env = "TOKENLEDGER_QUOTA_REQUESTS")]
    pub quota_requests: Option<u32>,
    /// Quota window in seconds [default: 3600]
    #[arg(long, env = "TOKENLEDGER_QUOTA_WINDOW_SECS")]
    pub quota_window_secs: Option<u64>,
    /// Quota: tokens held in memory per client (live, or ended and not yet expired) before its token requests answer CMN_90002; 0 turns it off [default: 5000000]
    #[arg(long, env = "TOKENLEDGER_QUOTA_TOKENS")]
    pub quota_tokens: Option<u64>,
    /// Open connections served at once; more wait in the listen backlog [default: 4096]
    #[arg(long, env = "TOKENLEDGER_CONNECTIONS_MAX")]
    pub connections_max: Option<u32>,
    /// Connections one peer (IPv4 address or IPv6 /64) may have open; more are closed at once; 0: no cap [default: 512]
    #[arg(long, env = "TOKENLEDGER_CONNECTIONS_PER_PEER_MAX")]
    pub connections_per_peer_max: Option<u32>,
    /// Seconds a new connection has to send its first request before it is closed [default: 10]
    #[arg(long, env = "TOKENLEDGER_FIRST_REQUEST_TIMEOUT_SECS")]
    pub first_request_timeout_secs: Option<u64>,
    /// Seconds a gRPC health Watch or reflection stream may last before it ends with UNAVAILABLE [default: 300]
    #[arg(long, env = "TOKENLEDGER_UNAUTHENTICATED_STREAM_MAX_SECS")]
    pub unauthenticated_stream_max_secs: Option<u64>,
    /// Requests handled at once over all connections; more wait [default: 1024]
    #[arg(long, env = "TOKENLEDGER_REQUESTS_IN_FLIGHT_MAX")]
    pub requests_in_flight_max: Option<u32>,
    /// Concurrent HTTP/2 streams per connection [default: 128]
    #[arg(long, env = "TOKENLEDGER_HTTP2_MAX_CONCURRENT_STREAMS")]
    pub http2_max_concurrent_streams: Option<u32>,
    /// Seconds a request may take, body included, before it is answered 408 [default: 30]
    #[arg(long, env = "TOKENLEDGER_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Seconds a connection may stay open without a request before it is closed [default: 120]
    #[arg(long, env = "TOKENLEDGER_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Largest request head (request line and headers), in bytes [default: 12288]
    #[arg(long, env = "TOKENLEDGER_HEADER_BYTES_MAX")]
    pub header_bytes_max: Option<usize>,
    /// Most request headers [default: 64]
    #[arg(long, env = "TOKENLEDGER_HEADERS_MAX")]
    pub headers_max: Option<usize>,
    /// Send raw envelopes of credential events (PBKDF2 digests) to audit streams that ask; for a trusted replica [default: false]
    #[arg(long, env = "TOKENLEDGER_AUDIT_RAW_ENVELOPES")]
    pub audit_raw_envelopes: Option<bool>,
    /// PEM certificate chain for TLS; with tls_key_file, REST and gRPC are served over TLS
    #[arg(long, env = "TOKENLEDGER_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for tls_cert_file
    #[arg(long, env = "TOKENLEDGER_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates; when set, admin and audit gRPC services require a client certificate it signed
    #[arg(long, env = "TOKENLEDGER_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Seconds between checks of the TLS files for changes; 0 reloads only on SIGHUP [default: 60]
    #[arg(long, env = "TOKENLEDGER_TLS_RELOAD_INTERVAL_SECS")]
    pub tls_reload_interval_secs: Option<u64>,
    // Cluster mode (SPEC 8, docs/cluster.md): all three of node_id, raft_listen and peers, or none.
    /// This node's id in the cluster (1 to 2^64-1); with --raft-listen and --peers runs a cluster node
    #[arg(long, env = "TOKENLEDGER_NODE_ID")]
    pub node_id: Option<u64>,
    /// Address of this node's Raft listener (node-to-node traffic only), e.g. 0.0.0.0:7001
    #[arg(long, env = "TOKENLEDGER_RAFT_LISTEN")]
    pub raft_listen: Option<String>,
    /// Every voter as ID=HOST:PORT (Raft addresses), comma-separated, this node included
    #[arg(long, env = "TOKENLEDGER_PEERS")]
    pub peers: Option<String>,
    /// Leader heartbeat interval in milliseconds [default: 100]
    #[arg(long, env = "TOKENLEDGER_RAFT_HEARTBEAT_MS")]
    pub raft_heartbeat_ms: Option<u64>,
    /// Shortest election timeout in milliseconds (a follower that hears no leader this long may stand) [default: 400]
    #[arg(long, env = "TOKENLEDGER_RAFT_ELECTION_TIMEOUT_MIN_MS")]
    pub raft_election_timeout_min_ms: Option<u64>,
    /// Longest election timeout in milliseconds; also the leader's lease, so a failover takes about this plus one election timeout [default: 800]
    #[arg(long, env = "TOKENLEDGER_RAFT_ELECTION_TIMEOUT_MAX_MS")]
    pub raft_election_timeout_max_ms: Option<u64>,
    /// PEM CA that signed every node's certificate; with TLS on, the Raft listener then speaks mutual TLS (node certificates need serverAuth and clientAuth)
    #[arg(long, env = "TOKENLEDGER_RAFT_TLS_CA_FILE")]
    pub raft_tls_ca_file: Option<PathBuf>,
    /// Raft entries between two Raft snapshots (after which the log is purged) [default: 50000]
    #[arg(long, env = "TOKENLEDGER_RAFT_SNAPSHOT_EVERY_ENTRIES")]
    pub raft_snapshot_every_entries: Option<u64>,
    /// Batches the leader's writer keeps in flight through Raft at once (1: each waits for the one before) [default: 4]
    #[arg(long, env = "TOKENLEDGER_RAFT_BATCHES_IN_FLIGHT")]
    pub raft_batches_in_flight: Option<usize>,
}

macro_rules! overlay {
    ($top:expr, $base:expr, $($field:ident),* $(,)?) => {
        Settings { $($field: $top.$field.or($base.$field)),* }
    };
}

impl Settings {
    /// `self` where set, else `base`.
    pub fn over(self, base: Settings) -> Settings {
        overlay!(
            self,
            base,
            data_dir,
            listen,
            issuer,
            log_level,
            log_format,
            access_token_ttl_secs,
            refresh_token_ttl_secs,
            expires_in_as_string,
            family_lifetime_max_secs,
            authorization_code_ttl_secs,
            id_token_ttl_secs,
            password_pbkdf2_iterations,
            insecure_low_pbkdf2_iterations,
            metrics_listen,
            body_limit_bytes,
            writer_queue_capacity,
            batch_commands_max,
            clock_skew_max_ms,
            shutdown_grace_secs,
            snapshot_every_events,
            snapshot_every_secs,
            slow_hash_concurrency,
            client_secret_hash_concurrency,
            client_auth_free_failures,
            sign_in_failures_per_client_per_min,
            lockout_failures,
            lockout_window_secs,
            lockout_duration_secs,
            spike_arrest_per_sec,
            spike_arrest_burst,
            quota_requests,
            quota_window_secs,
            quota_tokens,
            connections_max,
            connections_per_peer_max,
            first_request_timeout_secs,
            unauthenticated_stream_max_secs,
            requests_in_flight_max,
            http2_max_concurrent_streams,
            request_timeout_secs,
            idle_timeout_secs,
            header_bytes_max,
            headers_max,
            audit_raw_envelopes,
            tls_cert_file,
            tls_key_file,
            tls_client_ca_file,
            tls_reload_interval_secs,
            node_id,
            raft_listen,
            peers,
            raft_heartbeat_ms,
            raft_election_timeout_min_ms,
            raft_election_timeout_max_ms,
            raft_snapshot_every_entries,
            raft_batches_in_flight,
            raft_tls_ca_file,
        )
    }

    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))
    }
}

/// Fewest PBKDF2 iterations a server accepts without `insecure_low_pbkdf2_iterations`.
pub const PBKDF2_ITERATIONS_MIN: u32 = 100_000;

/// Longest lockout window or duration: one week.
pub const LOCKOUT_SECS_MAX: u64 = 7 * 24 * 3600;

/// A lockout time setting in milliseconds: 1 second to one week, 15 minutes by default.
fn lockout_ms(value: Option<u64>, name: &str) -> Result<i64, ConfigError> {
    match value.unwrap_or(900) {
        secs @ 1..=LOCKOUT_SECS_MAX => Ok(secs as i64 * 1000),
        _ => Err(ConfigError(format!("{name} must be between 1 and {LOCKOUT_SECS_MAX}"))),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration of a server.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: String,
    pub issuer: String,
    pub log_level: String,
    pub log_format: LogFormat,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub expires_in_as_string: bool,
    /// `family_lifetime_max_secs` in milliseconds.
    pub family_lifetime_max_ms: i64,
    pub authorization_code_ttl_secs: u64,
    pub id_token_ttl_secs: u64,
    pub password_pbkdf2_iterations: NonZeroU32,
    /// Where `/metrics` is served when not on the API port.
    pub metrics_listen: Option<String>,
    pub body_limit_bytes: usize,
    pub writer: WriterConfig,
    pub shutdown_grace_secs: u64,
    /// Projection snapshots: after this many events, 0 = not by count.
    pub snapshot_every_events: u64,
    /// Projection snapshots: this often while events arrive, 0 = not by time.
    pub snapshot_every_secs: u64,
    pub slow_hash_concurrency: usize,
    /// Slow client-secret checks at once (`api::client_auth`), apart from password sign-ins.
    pub client_secret_hash_concurrency: usize,
    /// Failed client authentications per (client id, source) before the backoff; 0: off.
    pub client_auth_free_failures: u32,
    /// Failed password sign-ins per client and minute before CMN_90003; 0: off.
    pub sign_in_failures_per_client_per_min: u32,
    /// Lockout after repeated failed sign-ins.
    pub lockout: Lockout,
    /// Connection, concurrency, timeout and header limits of the listener.
    pub limits: Limits,
    /// Per-client spike arrest and quota.
    pub rate_limits: RateLimitConfig,
    /// Audit streams may send envelopes of events that carry credential digests.
    pub audit_raw_envelopes: bool,
    /// TLS on the shared port, when configured.
    pub tls: Option<TlsFiles>,
    /// Cluster mode, when `node_id`, `raft_listen` and `peers` are set.
    pub cluster: Option<ClusterConfig>,
}

/// A cluster node's settings (SPEC 8). The peer list is checked by `replication::peers` at
/// start-up (config imports nothing of the crate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: u64,
    pub raft_listen: String,
    pub peers: String,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_every_entries: u64,
    /// The CA the nodes verify each other with on the Raft listener (TLS on).
    pub tls_ca: Option<PathBuf>,
}

impl ClusterConfig {
    fn resolve(settings: &Settings) -> Result<Option<ClusterConfig>, ConfigError> {
        let (node_id, raft_listen, peers) =
            match (settings.node_id, settings.raft_listen.clone(), settings.peers.clone()) {
                (None, None, None) => return Ok(None),
                (Some(id), Some(listen), Some(peers)) => (id, listen, peers),
                _ => {
                    return Err(ConfigError(
                        "cluster mode needs node_id, raft_listen and peers together (or none of them for a single node)"
                            .to_owned(),
                    ));
                }
            };
        if node_id == 0 {
            return Err(ConfigError("node_id must be at least 1".to_owned()));
        }
        let heartbeat_ms = settings.raft_heartbeat_ms.unwrap_or(100);
        let election_timeout_min_ms = settings.raft_election_timeout_min_ms.unwrap_or(400);
        let election_timeout_max_ms = settings.raft_election_timeout_max_ms.unwrap_or(800);
        if !(10..=10_000).contains(&heartbeat_ms) {
            return Err(ConfigError("raft_heartbeat_ms must be between 10 and 10000".to_owned()));
        }
        if election_timeout_min_ms < 3 * heartbeat_ms {
            return Err(ConfigError(format!(
                "raft_election_timeout_min_ms ({election_timeout_min_ms}) must be at least three heartbeats ({})",
                3 * heartbeat_ms
            )));
        }
        if election_timeout_max_ms <= election_timeout_min_ms || election_timeout_max_ms > 60_000 {
            return Err(ConfigError(format!(
                "raft_election_timeout_max_ms ({election_timeout_max_ms}) must be above raft_election_timeout_min_ms                  ({election_timeout_min_ms}) and at most 60000"
            )));
        }
        let snapshot_every_entries = match settings.raft_snapshot_every_entries.unwrap_or(50_000) {
            n @ 1..=100_000_000 => n,
            _ => return Err(ConfigError("raft_snapshot_every_entries must be between 1 and 100000000".to_owned())),
        };
        Ok(Some(ClusterConfig {
            node_id,
            raft_listen,
            peers,
            heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            snapshot_every_entries,
            tls_ca: settings.raft_tls_ca_file.clone(),
        }))
    }
}

impl Config {
    pub fn resolve(settings: Settings) -> Result<Config, ConfigError> {
        let bad = |text: &str| ConfigError(text.to_owned());
        let limits = Limits::resolve(&settings)?;
        let rate_limits = RateLimitConfig::resolve(&settings)?;
        let tls = TlsFiles::resolve(&settings)?;
        let cluster = ClusterConfig::resolve(&settings)?;
        let listen = settings.listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let log_format = match settings.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError(format!("log_format must be text or json, not {other:?}")));
            }
        };
        let ttl = |value: Option<u64>, default: u64, name: &str| match value.unwrap_or(default) {
            0 => Err(ConfigError(format!("{name} must be positive"))),
            v if v > TTL_SECS_MAX => Err(ConfigError(format!("{name} is longer than ten years"))),
            v => Ok(v),
        };
        let iterations = settings.password_pbkdf2_iterations.unwrap_or(600_000);
        if iterations < PBKDF2_ITERATIONS_MIN && !settings.insecure_low_pbkdf2_iterations.unwrap_or(false) {
            return Err(ConfigError(format!(
                "password_pbkdf2_iterations must be at least {PBKDF2_ITERATIONS_MIN} (600000 is the default and \
                 OWASP's advice); lower values are for tests only, with insecure_low_pbkdf2_iterations = true"
            )));
        }
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let defaults = WriterConfig::default();
        Ok(Config {
            data_dir: settings.data_dir.unwrap_or_else(|| PathBuf::from("./tokenledger-data")),
            issuer: settings.issuer.unwrap_or_else(|| format!("http://{listen}")),
            listen,
            log_level: settings.log_level.unwrap_or_else(|| "info".to_owned()),
            log_format,
            access_token_ttl_secs: ttl(settings.access_token_ttl_secs, 3600, "access_token_ttl_secs")?,
            refresh_token_ttl_secs: ttl(settings.refresh_token_ttl_secs, 15_552_000, "refresh_token_ttl_secs")?,
            expires_in_as_string: settings.expires_in_as_string.unwrap_or(false),
            family_lifetime_max_ms: match settings.family_lifetime_max_secs.unwrap_or(FAMILY_LIFETIME_MAX_SECS_DEFAULT)
            {
                secs @ 1..=TTL_SECS_MAX => secs as i64 * 1000,
                _ => return Err(bad("family_lifetime_max_secs must be between 1 and 315360000 (ten years)")),
            },
            authorization_code_ttl_secs: match settings.authorization_code_ttl_secs.unwrap_or(600) {
                n @ 1..=3600 => n,
                _ => return Err(bad("authorization_code_ttl_secs must be between 1 and 3600")),
            },
            id_token_ttl_secs: match settings.id_token_ttl_secs.unwrap_or(3600) {
                n @ 1..=86_400 => n,
                _ => return Err(bad("id_token_ttl_secs must be between 1 and 86400")),
            },
            password_pbkdf2_iterations: NonZeroU32::new(iterations)
                .ok_or_else(|| bad("password_pbkdf2_iterations must be positive"))?,
            metrics_listen: settings.metrics_listen,
            body_limit_bytes: match settings.body_limit_bytes.unwrap_or(16 * 1024) {
                n @ 1024..=1_048_576 => n,
                _ => return Err(bad("body_limit_bytes must be between 1024 and 1048576")),
            },
            writer: WriterConfig {
                queue_capacity: settings.writer_queue_capacity.unwrap_or(defaults.queue_capacity).max(1),
                batch_commands_max: settings.batch_commands_max.unwrap_or(defaults.batch_commands_max).max(1),
                clock_skew_max_ms: match settings.clock_skew_max_ms {
                    None => defaults.clock_skew_max_ms,
                    Some(ms) => i64::try_from(ms).map_err(|_| bad("clock_skew_max_ms is too large"))?,
                },
                raft_batches_in_flight: match settings.raft_batches_in_flight {
                    None => defaults.raft_batches_in_flight,
                    Some(n @ 1..=64) => n,
                    Some(_) => return Err(bad("raft_batches_in_flight must be between 1 and 64")),
                },
            },
            shutdown_grace_secs: settings.shutdown_grace_secs.unwrap_or(10),
            snapshot_every_events: settings.snapshot_every_events.unwrap_or(1_000_000),
            snapshot_every_secs: settings.snapshot_every_secs.unwrap_or(600),
            slow_hash_concurrency: settings.slow_hash_concurrency.unwrap_or(cpus).max(1),
            client_secret_hash_concurrency: settings.client_secret_hash_concurrency.unwrap_or(cpus / 4).max(1),
            client_auth_free_failures: settings.client_auth_free_failures.unwrap_or(5),
            sign_in_failures_per_client_per_min: settings.sign_in_failures_per_client_per_min.unwrap_or(600),
            lockout: Lockout {
                failures_max: settings.lockout_failures.unwrap_or(5),
                window_ms: lockout_ms(settings.lockout_window_secs, "lockout_window_secs")?,
                duration_ms: lockout_ms(settings.lockout_duration_secs, "lockout_duration_secs")?,
            },
            limits,
            rate_limits,
            audit_raw_envelopes: settings.audit_raw_envelopes.unwrap_or(false),
            tls,
            cluster,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config` imports nothing of the crate, so the bounds it shares with the domain are
    /// copies; they must stay equal.
    #[test]
    fn the_bounds_shared_with_the_domain_agree() {
        assert_eq!(TTL_SECS_MAX, crate::domain::directory::TTL_SECS_MAX);
        assert_eq!(FAMILY_LIFETIME_MAX_SECS_DEFAULT as i64 * 1000, crate::domain::FAMILY_LIFETIME_MAX_MS_DEFAULT);
    }
}
