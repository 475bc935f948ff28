//! `/metrics` in the Prometheus text format, through the `metrics` facade and
//! `metrics-exporter-prometheus`. Each server owns its recorder (no global), so tests that run
//! several servers in one process read their own numbers.
//!
//! The hot path stays cheap: request counters and latency histograms are handles registered
//! once per (endpoint, status) and kept in a fixed table, so recording a request is an index,
//! an atomic load and an atomic add (histogram samples go to a lock-free bucket that the
//! upkeep task and each scrape drain). Numbers that other components already keep (the writer's
//! counters, rate-limit refusals, token counts) are read at scrape time, not on the hot path.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use prost::Message as _;

use crate::ledger::progress;
use crate::ledger::writer::BatchStats;

/// Label value for endpoints and statuses outside the known set (keeps cardinality bounded).
const OTHER: &str = "other";
/// HTTP statuses with their own label value; the rest count as "other".
const HTTP_STATUSES: [u16; 16] = [200, 204, 400, 401, 403, 404, 405, 408, 413, 415, 429, 431, 500, 502, 503, 504];
/// Status slots per endpoint: the gRPC codes 0-16, or the HTTP statuses above, plus "other".
const STATUS_SLOTS: usize = 18;
const LATENCY_BUCKETS_SECS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const COMMIT_BUCKETS_SECS: [f64; 13] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
const BATCH_BUCKETS: [f64; 12] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// gRPC paths of the services that are not generated from our own protos.
const EXTRA_GRPC_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Which API a request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Rest,
    Grpc,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Rest => "rest",
            Transport::Grpc => "grpc",
        }
    }
}

/// An endpoint of the request metrics: an index into the known endpoints, or "other".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint(usize);

/// The metrics of one server.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// REST route patterns (from the OpenAPI document) then gRPC method paths, then "other".
    endpoints: Vec<(Transport, String)>,
    grpc_index: HashMap<String, usize>,
    /// `tokenledger_requests_total`, one slot per (endpoint, status), registered on first use.
    requests: Box<[OnceLock<Counter>]>,
    /// `tokenledger_request_duration_seconds`, one per endpoint, registered on first use.
    durations: Box<[OnceLock<Histogram>]>,
    pub requests_in_flight: Gauge,
    pub request_timeouts: Counter,
    pub connections_open: Gauge,
    pub connections: Counter,
    pub tls_handshake_failures: Counter,
    pub client_certificate_refusals: Counter,
    pub admin_credential_refusals: Counter,
    pub connections_refused_per_peer: Counter,
    pub first_request_timeouts: Counter,
    pub stream_lifetime_ends: Counter,
    pub password_hashes: Counter,
    batch_commands: Histogram,
    batch_events: Histogram,
    commit_seconds: Histogram,
}

impl Metrics {
    /// `rest_paths`: the REST route patterns (each its own endpoint label); the gRPC methods
    /// come from the compiled descriptors.
    pub fn new(rest_paths: &[&str]) -> Self {
        let builder = [
            (Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS_SECS[..]),
            (Matcher::Full("tokenledger_ledger_commit_seconds".into()), &COMMIT_BUCKETS_SECS[..]),
            (Matcher::Full("tokenledger_ledger_batch_commands".into()), &BATCH_BUCKETS[..]),
            (Matcher::Full("tokenledger_ledger_batch_events".into()), &BATCH_BUCKETS[..]),
        ]
        .into_iter()
        .fold(PrometheusBuilder::new(), |builder, (matcher, buckets)| {
            // Only an empty bucket list fails, and ours are constants.
            builder.set_buckets_for_metric(matcher, buckets).unwrap_or_else(|_| PrometheusBuilder::new())
        });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let mut endpoints: Vec<(Transport, String)> =
            rest_paths.iter().map(|p| (Transport::Rest, (*p).to_owned())).collect();
        let mut grpc_index = HashMap::new();
        for path in grpc_paths() {
            grpc_index.insert(path.clone(), endpoints.len());
            endpoints.push((Transport::Grpc, path));
        }
        let slots = endpoints.len() + 2;
        describe(&recorder);
        let counter = |name: &'static str| recorder.register_counter(&Key::from_name(name), &metadata());
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_name(name), &metadata());
        let histogram = |name: &'static str| recorder.register_histogram(&Key::from_name(name), &metadata());
        Self {
            requests: (0..slots * STATUS_SLOTS).map(|_| OnceLock::new()).collect(),
            durations: (0..slots).map(|_| OnceLock::new()).collect(),
            requests_in_flight: gauge("tokenledger_requests_in_flight"),
            request_timeouts: counter("tokenledger_request_timeouts_total"),
            connections_open: gauge("tokenledger_connections_open"),
            connections: counter("tokenledger_connections_total"),
            tls_handshake_failures: counter("tokenledger_tls_handshake_failures_total"),
            client_certificate_refusals: counter("tokenledger_client_certificate_refusals_total"),
            admin_credential_refusals: counter("tokenledger_admin_credential_refusals_total"),
            connections_refused_per_peer: counter("tokenledger_connections_refused_per_peer_total"),
            first_request_timeouts: counter("tokenledger_first_request_timeouts_total"),
            stream_lifetime_ends: counter("tokenledger_stream_lifetime_ends_total"),
            password_hashes: counter("tokenledger_password_hashes_total"),
            batch_commands: histogram("tokenledger_ledger_batch_commands"),
            batch_events: histogram("tokenledger_ledger_batch_events"),
            commit_seconds: histogram("tokenledger_ledger_commit_seconds"),
            endpoints,
            grpc_index,
            recorder,
            handle,
        }
    }

    /// The endpoint label of a request path.
    pub fn endpoint(&self, transport: Transport, path: &str) -> Endpoint {
        let other = match transport {
            Transport::Rest => self.endpoints.len(),
            Transport::Grpc => self.endpoints.len() + 1,
        };
        let found = match transport {
            Transport::Grpc => self.grpc_index.get(path).copied(),
            Transport::Rest => {
                self.endpoints.iter().position(|(t, pattern)| *t == Transport::Rest && path_matches(pattern, path))
            }
        };
        Endpoint(found.unwrap_or(other))
    }

    /// The route pattern or gRPC path of `endpoint`, for logs.
    pub fn endpoint_name(&self, endpoint: Endpoint) -> &str {
        self.endpoints.get(endpoint.0).map_or(OTHER, |(_, name)| name.as_str())
    }

    fn endpoint_labels_transport(&self, endpoint: Endpoint) -> Transport {
        match self.endpoints.get(endpoint.0) {
            Some((transport, _)) => *transport,
            None if endpoint.0 == self.endpoints.len() => Transport::Rest,
            None => Transport::Grpc,
        }
    }

    fn endpoint_labels(&self, endpoint: Endpoint) -> (Transport, String) {
        match self.endpoints.get(endpoint.0) {
            Some((transport, name)) => (*transport, name.clone()),
            None if endpoint.0 == self.endpoints.len() => (Transport::Rest, OTHER.to_owned()),
            None => (Transport::Grpc, OTHER.to_owned()),
        }
    }

    /// Counts one finished request and its latency. `status` is the HTTP status for REST and
    /// the gRPC code (0 = OK) for gRPC.
    pub fn request(&self, endpoint: Endpoint, status: u16, elapsed: Duration) {
        let slot = match self.endpoint_labels_transport(endpoint) {
            Transport::Grpc => grpc_slot(status),
            Transport::Rest => http_slot(status),
        };
        if let Some(cell) = self.requests.get(endpoint.0 * STATUS_SLOTS + slot) {
            cell.get_or_init(|| {
                let (transport, name) = self.endpoint_labels(endpoint);
                let status_label = match slot {
                    s if s == STATUS_SLOTS - 1 => OTHER.to_owned(),
                    _ if transport == Transport::Grpc => grpc_code_name(status).to_owned(),
                    _ => status.to_string(),
                };
                let labels = vec![
                    Label::new("transport", transport.label()),
                    Label::new("endpoint", name),
                    Label::new("status", status_label),
                ];
                self.recorder.register_counter(&Key::from_parts("tokenledger_requests_total", labels), &metadata())
            })
            .increment(1);
        }
        if let Some(cell) = self.durations.get(endpoint.0) {
            cell.get_or_init(|| {
                let (transport, name) = self.endpoint_labels(endpoint);
                let labels = vec![Label::new("transport", transport.label()), Label::new("endpoint", name)];
                self.recorder
                    .register_histogram(&Key::from_parts("tokenledger_request_duration_seconds", labels), &metadata())
            })
            .record(elapsed.as_secs_f64());
        }
    }

    /// Records one committed ledger batch (called on the writer thread).
    pub fn batch(&self, stats: BatchStats) {
        self.batch_commands.record(stats.commands as f64);
        self.batch_events.record(stats.events as f64);
        if let Some(commit) = stats.commit {
            self.commit_seconds.record(commit.as_secs_f64());
        }
    }

    /// Counts one reload of the TLS files.
    pub fn tls_reload(&self, succeeded: bool) {
        let result = if succeeded { "ok" } else { "failed" };
        let key = Key::from_parts("tokenledger_tls_reloads_total", vec![Label::new("result", result)]);
        self.recorder.register_counter(&key, &metadata()).increment(1);
    }

    /// Drains histogram samples into their buckets, so memory stays bounded between scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The exposition text, after setting the numbers other components keep (`readings`).
    pub fn render(&self, readings: &Readings) -> String {
        let set_counter = |name: &'static str, labels: Vec<Label>, value: u64| {
            self.recorder.register_counter(&Key::from_parts(name, labels), &metadata()).absolute(value);
        };
        let status = readings.ledger;
        let load = |value: &std::sync::atomic::AtomicU64| value.load(Ordering::Relaxed);
        set_counter("tokenledger_ledger_batches_total", vec![], load(&status.batches));
        set_counter("tokenledger_ledger_commands_total", vec![], load(&status.commands));
        set_counter("tokenledger_ledger_events_total", vec![], load(&status.events));
        set_counter("tokenledger_ledger_deferred_commands_total", vec![], load(&status.deferred_commands));
        for (limit, value) in [
            ("spike", readings.spike_rejections),
            ("quota", readings.quota_rejections),
            ("quota_tokens", readings.tokens_rejections),
            ("client_auth_backoff", readings.client_auth_throttled),
            ("client_secret_budget", readings.client_secret_budget_exhausted),
            ("sign_in_failures", readings.sign_in_failures_refused),
        ] {
            set_counter("tokenledger_rate_limited_total", vec![Label::new("limit", limit)], value);
        }
        set_counter("tokenledger_client_auth_known_wrong_total", vec![], readings.client_auth_known_wrong);
        let gauge = |name: &'static str, value: f64| {
            self.recorder.register_gauge(&Key::from_name(name), &metadata()).set(value);
        };
        gauge("tokenledger_clients_with_imported_secret", readings.clients_with_imported_secret as f64);
        gauge("tokenledger_live_tokens", readings.live_tokens as f64);
        gauge("tokenledger_live_token_families", readings.live_token_families as f64);
        gauge("tokenledger_ledger_head_seq", readings.head_seq as f64);
        gauge("tokenledger_ledger_writable", f64::from(u8::from(readings.writable)));
        gauge("tokenledger_ready", f64::from(u8::from(readings.ready)));
        gauge("tokenledger_clock_behind_ledger_seconds", readings.clock_behind_ledger_ms as f64 / 1000.0);
        for (name, _, value) in progress::gauges(&readings.start) {
            gauge(name, value);
        }
        let tables = &readings.tables;
        gauge("tokenledger_retry_answers", tables.retry_answers as f64);
        set_counter("tokenledger_retry_answers_dropped_total", vec![], tables.retry_answers_dropped);
        set_counter("tokenledger_issuances_not_stored_total", vec![], tables.issuances_refused);
        gauge("tokenledger_token_tables_bytes", tables.bytes as f64);
        let snapshot = &readings.snapshot;
        gauge("tokenledger_snapshot_seq", snapshot.seq as f64);
        gauge("tokenledger_snapshot_recorded_seq", snapshot.recorded_seq as f64);
        if let Some(age) = snapshot.age_secs {
            gauge("tokenledger_snapshot_age_seconds", age);
        }
        set_counter("tokenledger_snapshot_writes_total", vec![], snapshot.writes);
        set_counter("tokenledger_snapshot_failures_total", vec![], snapshot.failures);
        gauge("tokenledger_snapshot_last_write_seconds", snapshot.last_write_secs);
        if let Some(cluster) = &readings.cluster {
            for role in CLUSTER_ROLES {
                let key = Key::from_parts("tokenledger_cluster_role", vec![Label::new("role", role)]);
                self.recorder.register_gauge(&key, &metadata()).set(f64::from(u8::from(cluster.role == role)));
            }
            gauge("tokenledger_cluster_term", cluster.term as f64);
            gauge("tokenledger_cluster_leader_id", cluster.leader_id as f64);
            gauge("tokenledger_cluster_applied_index", cluster.applied_index as f64);
            gauge("tokenledger_cluster_last_log_index", cluster.last_log_index as f64);
            for (node, lag) in &cluster.lag {
                let key = Key::from_parts(
                    "tokenledger_cluster_replication_lag_entries",
                    vec![Label::new("node", node.to_string())],
                );
                self.recorder.register_gauge(&key, &metadata()).set(*lag as f64);
            }
            set_counter("tokenledger_cluster_read_index_rounds_total", vec![], cluster.read_rounds);
            set_counter("tokenledger_cluster_read_index_rounds_failed_total", vec![], cluster.read_rounds_failed);
            set_counter("tokenledger_cluster_reads_confirmed_total", vec![], cluster.reads_confirmed);
            set_counter("tokenledger_cluster_reads_refused_total", vec![], cluster.reads_refused);
            let key = Key::from_name("tokenledger_cluster_read_confirm_seconds_total");
            self.recorder.register_gauge(&key, &metadata()).set(cluster.read_confirm_micros as f64 / 1e6);
            set_counter("tokenledger_cluster_log_appends_total", vec![], cluster.log_appends);
            gauge("tokenledger_cluster_log_append_seconds_total", cluster.log_append_micros as f64 / 1e6);
            set_counter("tokenledger_cluster_applies_total", vec![], cluster.applies);
            gauge("tokenledger_cluster_apply_seconds_total", cluster.apply_micros as f64 / 1e6);
        }
        self.handle.render()
    }
}

/// The numbers that other components keep, read at scrape time (`App::metrics_readings`).
pub struct Readings<'a> {
    pub ledger: &'a crate::ledger::writer::WriterStatus,
    pub spike_rejections: u64,
    pub quota_rejections: u64,
    pub tokens_rejections: u64,
    pub client_auth_throttled: u64,
    pub client_secret_budget_exhausted: u64,
    pub client_auth_known_wrong: u64,
    pub sign_in_failures_refused: u64,
    pub clients_with_imported_secret: usize,
    pub live_tokens: usize,
    pub live_token_families: usize,
    pub head_seq: u64,
    pub writable: bool,
    pub ready: bool,
    pub clock_behind_ledger_ms: i64,
    /// How the start went (the replay's seqs).
    pub start: crate::ledger::progress::StartReadings,
    /// The token tables' other numbers (`domain::tables`).
    pub tables: TablesReadings,
    /// The projection snapshots this node wrote or started from.
    pub snapshot: SnapshotReadings,
    /// Cluster mode only.
    pub cluster: Option<ClusterReadings>,
}

/// What the token tables hold besides tokens and families, and their limits at work.
pub struct TablesReadings {
    /// Answers kept for idempotent retries (the 60 s window).
    pub retry_answers: usize,
    /// Retry answers dropped inside their window because the index was full.
    pub retry_answers_dropped: u64,
    /// Issuances not stored because an interner (clients, scope lists, users) was full.
    pub issuances_refused: u64,
    /// The tables' own accounting of their memory.
    pub bytes: usize,
}

/// The last projection snapshot written (or started from).
pub struct SnapshotReadings {
    /// Its ledger seq; 0: none yet.
    pub seq: u64,
    /// The seq of the ledger event that recorded it (`ProjectionSnapshotWritten`); 0: none.
    pub recorded_seq: u64,
    /// Seconds since it was written by this process; `None` if it was not (none, or the one
    /// started from).
    pub age_secs: Option<f64>,
    pub writes: u64,
    pub failures: u64,
    pub last_write_secs: f64,
}

/// The `role` label values of `tokenledger_cluster_role` (the one that is 1 is the node's).
pub const CLUSTER_ROLES: [&str; 5] = ["leader", "follower", "candidate", "learner", "stopped"];

/// A cluster node's numbers (`replication::node::ClusterNode::view` and its ReadIndex).
pub struct ClusterReadings {
    pub role: &'static str,
    pub term: u64,
    /// 0: no leader known.
    pub leader_id: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// On the leader: entries each other member is behind.
    pub lag: Vec<(u64, u64)>,
    pub read_rounds: u64,
    pub read_rounds_failed: u64,
    pub reads_confirmed: u64,
    pub reads_refused: u64,
    /// Sum of the confirmed reads' waits (with `reads_confirmed`, the mean ReadIndex latency).
    pub read_confirm_micros: u64,
    /// Raft log appends on this node and their total time (with the count, the mean).
    pub log_appends: u64,
    pub log_append_micros: u64,
    /// State machine applies on this node and their total time.
    pub applies: u64,
    pub apply_micros: u64,
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, None)
}

/// HELP lines.
fn describe(recorder: &PrometheusRecorder) {
    let rows: [(&str, Option<Unit>, &str); 49] = [
        ("tokenledger_cluster_role", None, "Cluster mode: 1 for this node's role (label role), 0 for the others"),
        ("tokenledger_cluster_term", None, "Cluster mode: the Raft term this node is in"),
        ("tokenledger_cluster_leader_id", None, "Cluster mode: the node this node knows as leader (0: none)"),
        ("tokenledger_cluster_applied_index", None, "Cluster mode: the Raft log index this node has applied"),
        ("tokenledger_cluster_last_log_index", None, "Cluster mode: the last Raft log index this node holds"),
        (
            "tokenledger_cluster_replication_lag_entries",
            None,
            "Cluster mode, on the leader: Raft entries each member (label node) is behind the leader's log",
        ),
        (
            "tokenledger_cluster_read_index_rounds_total",
            None,
            "Cluster mode: ReadIndex rounds run (each serves a batch of reads)",
        ),
        ("tokenledger_cluster_read_index_rounds_failed_total", None, "Cluster mode: ReadIndex rounds that failed"),
        ("tokenledger_cluster_log_appends_total", None, "Cluster mode: Raft log appends (each a durable commit)"),
        (
            "tokenledger_cluster_log_append_seconds_total",
            None,
            "Cluster mode: time spent in Raft log appends (with the count, the mean; a slow disk shows here)",
        ),
        ("tokenledger_cluster_applies_total", None, "Cluster mode: committed entries batches applied to the ledger"),
        ("tokenledger_cluster_apply_seconds_total", None, "Cluster mode: time spent applying committed entries"),
        ("tokenledger_cluster_reads_confirmed_total", None, "Cluster mode: introspections confirmed with the leader"),
        (
            "tokenledger_cluster_reads_refused_total",
            None,
            "Cluster mode: introspections answered 503 CMN_90000 because the leader could not confirm them",
        ),
        (
            "tokenledger_requests_total",
            None,
            "Requests answered, by transport, endpoint and status (HTTP status, or gRPC code)",
        ),
        ("tokenledger_request_duration_seconds", Some(Unit::Seconds), "Time from request head to response head"),
        ("tokenledger_requests_in_flight", None, "Requests being handled (response bodies included)"),
        (
            "tokenledger_request_timeouts_total",
            None,
            "Requests answered 408 / DEADLINE_EXCEEDED by request_timeout_secs",
        ),
        ("tokenledger_connections_open", None, "Open client connections"),
        ("tokenledger_connections_total", None, "Connections accepted"),
        (
            "tokenledger_connections_refused_per_peer_total",
            None,
            "Connections closed at once because their peer had connections_per_peer_max open",
        ),
        (
            "tokenledger_first_request_timeouts_total",
            None,
            "Connections closed because they sent no request within first_request_timeout_secs",
        ),
        (
            "tokenledger_stream_lifetime_ends_total",
            None,
            "Health Watch and reflection streams ended after unauthenticated_stream_max_secs",
        ),
        ("tokenledger_tls_handshake_failures_total", None, "TLS handshakes that failed or timed out"),
        (
            "tokenledger_client_certificate_refusals_total",
            None,
            "Admin or audit calls refused for lack of a verified client certificate",
        ),
        (
            "tokenledger_admin_credential_refusals_total",
            None,
            "Admin, audit or key calls refused for a missing or wrong admin credential, before their message was read",
        ),
        ("tokenledger_tls_reloads_total", None, "Reloads of the TLS certificate files, by result"),
        (
            "tokenledger_rate_limited_total",
            None,
            "Requests refused by a limit: spike arrest and the client-authentication limits (CMN_90003), the request quota and the tokens-held quota (CMN_90002)",
        ),
        (
            "tokenledger_client_auth_known_wrong_total",
            None,
            "Client authentications refused from the cache of known wrong secrets (no hash)",
        ),
        ("tokenledger_clients_with_imported_secret", None, "Clients whose secret is imported (PBKDF2); rotate them"),
        ("tokenledger_password_hashes_total", None, "PBKDF2 computations (password checks and imported secrets)"),
        ("tokenledger_ledger_batch_commands", None, "Commands per ledger write transaction"),
        ("tokenledger_ledger_batch_events", None, "Events per ledger write transaction"),
        ("tokenledger_ledger_commit_seconds", Some(Unit::Seconds), "Durable commit (fsync) time of one ledger batch"),
        ("tokenledger_ledger_batches_total", None, "Ledger batches decided"),
        ("tokenledger_ledger_commands_total", None, "Commands decided by the writer"),
        ("tokenledger_ledger_events_total", None, "Events appended to the ledger"),
        ("tokenledger_ledger_deferred_commands_total", None, "Commands moved to the next batch because of a conflict"),
        ("tokenledger_ledger_head_seq", None, "Sequence number of the last event"),
        ("tokenledger_ledger_writable", None, "1 while the ledger accepts writes"),
        ("tokenledger_ready", None, "1 while /readyz answers ready"),
        (
            "tokenledger_clock_behind_ledger_seconds",
            Some(Unit::Seconds),
            "How far the clock is behind the time of the last ledger event (0 when it is not)",
        ),
        ("tokenledger_live_tokens", None, "Unexpired tokens held in memory (revoked ones until they expire)"),
        ("tokenledger_live_token_families", None, "Unexpired token families held in memory"),
        ("tokenledger_replay_seconds", Some(Unit::Seconds), progress::HELP_REPLAY_SECONDS),
        ("tokenledger_replay_events", None, progress::HELP_REPLAY_EVENTS),
        ("tokenledger_starting", None, progress::HELP_STARTING),
        ("tokenledger_replay_seq", None, progress::HELP_REPLAY_SEQ),
        ("tokenledger_replay_last_seq", None, progress::HELP_REPLAY_LAST_SEQ),
    ];
    for (name, unit, help) in rows {
        let name = KeyName::from(SharedString::const_str(name));
        recorder.describe_counter(name, unit, SharedString::const_str(help));
    }
}

/// Every gRPC method we serve, from the descriptor sets of our protos and of tonic-health.
fn grpc_paths() -> Vec<String> {
    let mut paths: Vec<String> = EXTRA_GRPC_PATHS.iter().map(|p| (*p).to_owned()).collect();
    for bytes in [crate::proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for method in service.method {
                    paths.push(format!("/{package}.{service_name}/{}", method.name.unwrap_or_default()));
                }
            }
        }
    }
    paths
}

/// `pattern` (`/a/{param}/b`) matches `path` segment by segment.
fn path_matches(pattern: &str, path: &str) -> bool {
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return true,
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with('}') && !s.is_empty() => {}
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

fn http_slot(status: u16) -> usize {
    HTTP_STATUSES.iter().position(|s| *s == status).unwrap_or(STATUS_SLOTS - 1)
}

fn grpc_slot(code: u16) -> usize {
    match code {
        0..=16 => usize::from(code),
        _ => STATUS_SLOTS - 1,
    }
}

fn grpc_code_name(code: u16) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_patterns_match_by_segment() {
        assert!(path_matches("/v1/institution-users/{id}", "/v1/institution-users/abc"));
        assert!(!path_matches("/v1/institution-users/{id}", "/v1/institution-users/"));
        assert!(!path_matches("/v1/institution-users/{id}", "/v1/institution-users/a/b"));
        assert!(path_matches("/healthz", "/healthz"));
        assert!(!path_matches("/healthz", "/healthz/"));
    }

    #[test]
    fn unknown_paths_share_one_label() {
        let metrics = Metrics::new(&["/healthz"]);
        let a = metrics.endpoint(Transport::Rest, "/no/such/path");
        let b = metrics.endpoint(Transport::Rest, "/another");
        assert_eq!(a, b);
        assert_eq!(metrics.endpoint_name(a), OTHER);
        let token = metrics.endpoint(Transport::Grpc, "/tokenledger.v1.TokenService/CreateToken");
        assert_eq!(metrics.endpoint_name(token), "/tokenledger.v1.TokenService/CreateToken");
    }
}
