//! Closed-loop load generator for a running tokenledger server, over real loopback sockets.
//!
//! `--concurrency N` workers each keep exactly one request in flight for `--duration` seconds
//! (after an unrecorded `--warmup`), every request with a fresh `transactionId`:
//!
//! - `rest-token` / `rest-introspect`: `POST /oauth2/v1/token` / `POST /oauth2/v1/introspect`,
//!   one HTTP/1.1 keep-alive connection per worker (raw tokio TCP, a minimal request writer
//!   and an `httparse` response reader, so the generator costs little of the shared CPU);
//! - `grpc-token` / `grpc-introspect`: `TokenService/CreateToken` / `IntrospectToken` over
//!   `--grpc-conns` HTTP/2 connections, the workers spread round-robin over them.
//!
//! - `auth-flood`: the wrong-secret flood of security review finding 3. Probes measure
//!   password grants (`--password-workers`, closed loop) and introspection (`--probe-workers`,
//!   one request every `--probe-pause-ms`) with the bench client, first on an idle server, then
//!   while `--flood` workers (closed loop, one keep-alive connection each) send a fresh wrong
//!   secret for `--flood-client` (an imported, PBKDF2 client) with every request. Each phase
//!   lasts `--duration`; it prints one RESULT line per phase and series and the p99 ratios.
//!
//! `--requests N` ends the measured phase after N requests in all instead of after
//! `--duration`, so that a run under `valgrind --tool=callgrind` does a known amount of work
//! (instructions per request; see bench/README.md, "Where a gRPC issuance's instructions go").
//!
//! Latency is recorded per request (hdrhistogram, microseconds) from just before the request
//! is written until its answer is read whole. Every answer is checked (status 200 / gRPC OK, and
//! the body carries a token or `"active": true`); anything else is counted by status and makes
//! the process exit non-zero. Run with `cargo bench --bench loadgen -- --help`.
//!
//! `--spawn` starts the tokenledger binary itself in a temporary data directory, imports the
//! bench client with `tokenledger import`, runs every `--mode` given, and stops the server with
//! SIGTERM by its PID. Load only ever goes to loopback addresses.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command as Process, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tokenledger::proto::token_service_client::TokenServiceClient;
use tokenledger::proto::{CreateTokenRequest, IntrospectTokenRequest};
use tokenledger::wire::encode_basic;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    RestToken,
    RestIntrospect,
    GrpcToken,
    GrpcIntrospect,
    AuthFlood,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::RestToken => "rest-token",
            Mode::RestIntrospect => "rest-introspect",
            Mode::GrpcToken => "grpc-token",
            Mode::GrpcIntrospect => "grpc-introspect",
            Mode::AuthFlood => "auth-flood",
        }
    }

    fn is_grpc(self) -> bool {
        matches!(self, Mode::GrpcToken | Mode::GrpcIntrospect)
    }

    fn is_introspect(self) -> bool {
        matches!(self, Mode::RestIntrospect | Mode::GrpcIntrospect)
    }
}

/// Closed-loop load against tokenledger's token and introspection endpoints (REST and gRPC).
#[derive(Parser, Debug)]
#[command(name = "loadgen")]
struct Args {
    /// What to load; several may be given (comma-separated), run one after the other
    #[arg(long, value_enum, value_delimiter = ',', required = true)]
    mode: Vec<Mode>,
    /// Base URL of a running server (loopback only), e.g. http://127.0.0.1:8080
    #[arg(long, required_unless_present = "spawn")]
    url: Option<String>,
    /// Start the server binary in a temporary data dir, import the bench client, stop it after
    #[arg(long, conflicts_with = "url")]
    spawn: bool,
    /// The tokenledger binary for --spawn [default: the one cargo built with this bench]
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Concurrent workers (requests in flight)
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// Measured seconds per mode
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Unrecorded seconds of load before the measurement
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measured requests in all (shared by the workers): the run ends when they are done, or
    /// after --duration if that comes first. For instruction counts per request (callgrind)
    #[arg(long)]
    requests: Option<u64>,
    /// HTTP/2 connections for the gRPC modes (workers are spread over them)
    #[arg(long, default_value_t = 1)]
    grpc_conns: usize,
    /// Threads of the generator's runtime (1 = current-thread runtime, like wrk -t1)
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Tokens issued before an introspection run; the workers cycle over them
    #[arg(long, default_value_t = 64)]
    introspect_tokens: usize,
    #[arg(long, default_value = "bench")]
    client_id: String,
    #[arg(long, default_value = "bench-secret-0123456789abcdef")]
    client_secret: String,
    #[arg(long, default_value = "01001")]
    institution: String,
    /// A request that takes longer than this counts as failed ("timeout")
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// PID of the server, to report its CPU use during the run (set by --spawn)
    #[arg(long)]
    server_pid: Option<u32>,
    /// auth-flood: concurrent wrong-secret workers during the flood phase
    #[arg(long, default_value_t = 64)]
    flood: usize,
    /// auth-flood: the imported client whose id the flood presents
    #[arg(long, default_value = "legacy-client")]
    flood_client: String,
    /// auth-flood: closed-loop password-grant workers (bench client, bench user)
    #[arg(long, default_value_t = 1)]
    password_workers: usize,
    /// auth-flood: introspection workers, each pausing --probe-pause-ms between requests
    #[arg(long, default_value_t = 4)]
    probe_workers: usize,
    #[arg(long, default_value_t = 10)]
    probe_pause_ms: u64,
    /// auth-flood: the bench user's login id and password
    #[arg(long, default_value = "bench.user")]
    username: String,
    #[arg(long, default_value = "bench-password-0123456789")]
    password: String,
    /// Label printed at the start of the RESULT line
    #[arg(long, default_value = "tokenledger")]
    label: String,
    /// Passed by `cargo bench` to every bench binary; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadgen: some requests failed (see the status counts above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::from(2)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs every requested mode; `Ok(false)` when any request failed.
fn run(args: Args) -> Result<bool, BoxError> {
    if args.concurrency == 0 || args.grpc_conns == 0 || args.threads == 0 {
        return Err("--concurrency, --grpc-conns and --threads must be positive".into());
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0 && args.warmup >= 0.0) {
        return Err("--duration must be in (0, 3600] seconds and --warmup non-negative".into());
    }
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?
    };
    let mut spawned = None;
    let (url, server_pid) = if args.spawn {
        let server = SpawnedServer::start(&args)?;
        let pair = (server.url.clone(), Some(server.child.id()));
        spawned = Some(server);
        pair
    } else {
        let url = args.url.clone().ok_or("--url or --spawn is required")?;
        (url, args.server_pid)
    };
    let target = Target::parse(&url)?;
    let mut all_ok = true;
    for &mode in &args.mode {
        let report = if mode == Mode::AuthFlood {
            runtime.block_on(run_auth_flood(&args, &target, server_pid))?
        } else {
            runtime.block_on(run_mode(&args, &target, mode, server_pid))?
        };
        all_ok &= report;
    }
    drop(runtime);
    if let Some(server) = spawned {
        server.stop()?;
    }
    Ok(all_ok)
}

/// Where the load goes: a loopback socket address (checked) and the URL it came from.
struct Target {
    url: String,
    addr: SocketAddr,
    host_header: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, BoxError> {
        let uri: http::Uri = url.parse()?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// (cleartext, loopback) URLs are supported".into());
        }
        let authority = uri.authority().ok_or("the URL needs host:port")?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        let addr = *addrs.first().ok_or("the host did not resolve")?;
        if !addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(format!("{url}: load goes to loopback addresses only").into());
        }
        Ok(Self { url: format!("http://{authority}"), addr, host_header: authority.to_string() })
    }
}

/// Fresh canonical UUIDs without a syscall per request: 60 random bits per run, the worker
/// number and a per-worker counter, so no two requests of any run share one.
struct TransactionIds {
    seed: u64,
    worker: u64,
    counter: u64,
    text: [u8; 36],
}

impl TransactionIds {
    fn new(seed: u64, worker: usize) -> Self {
        Self { seed, worker: worker as u64 & 0xfff, counter: 0, text: [b'-'; 36] }
    }

    fn next(&mut self) -> &str {
        self.counter += 1;
        let s = self.seed;
        put_hex(&mut self.text[0..8], s >> 32);
        put_hex(&mut self.text[9..13], s >> 16);
        self.text[14] = b'4';
        put_hex(&mut self.text[15..18], self.worker);
        self.text[19] = b'a';
        put_hex(&mut self.text[20..23], s >> 4);
        put_hex(&mut self.text[24..36], self.counter);
        // Only ASCII hex digits and hyphens were written.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }
}

/// Writes the low `4 * out.len()` bits of `value` as lower-case hex.
fn put_hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// What one worker saw.
struct Tally {
    histogram: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    failed: u64,
    last_finish: Instant,
}

impl Tally {
    fn new() -> Result<Self, BoxError> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            statuses: BTreeMap::new(),
            failed: 0,
            last_finish: Instant::now(),
        })
    }

    fn merge(&mut self, other: Tally) -> Result<(), BoxError> {
        self.histogram.add(&other.histogram)?;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.failed += other.failed;
        self.last_finish = self.last_finish.max(other.last_finish);
        Ok(())
    }
}

/// The answer to one request: `Ok(())` when it was what we asked for, else a status label.
type Outcome = Result<(), String>;

/// The measurement window shared by all workers of one run.
#[derive(Clone)]
struct Window {
    start: Instant,
    end: Instant,
    timeout: Duration,
    /// `--requests`: measured requests not yet started, shared by the workers; the run ends
    /// when none are left (or at `end`, whichever comes first).
    budget: Option<Arc<AtomicU64>>,
}

impl Window {
    fn new(start: Instant, duration: f64, timeout: Duration, requests: Option<u64>) -> Self {
        let end = start + Duration::from_secs_f64(duration);
        Self { start, end, timeout, budget: requests.map(|n| Arc::new(AtomicU64::new(n))) }
    }

    /// Whether a request starting at `now` may go: before the window (warm-up), or within it
    /// while the budget lasts (taking one request of it).
    fn admits(&self, now: Instant) -> bool {
        if now >= self.end {
            return false;
        }
        match &self.budget {
            Some(budget) if now >= self.start => {
                budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(1)).is_ok()
            }
            _ => true,
        }
    }
}

/// One worker's request loop: each call sends one request and reads its answer.
trait Worker: Send {
    fn call(&mut self) -> impl std::future::Future<Output = Outcome> + Send + '_;
}

/// One closed loop: keep issuing requests until `window.end`; record those started after
/// `window.start`.
async fn drive<W: Worker>(window: Window, worker: W) -> Result<Tally, BoxError> {
    drive_paced(window, worker, Duration::ZERO).await
}

/// [`drive`] with `pause` between one answer and the next request (not measured).
async fn drive_paced<W: Worker>(window: Window, mut worker: W, pause: Duration) -> Result<Tally, BoxError> {
    let mut tally = Tally::new()?;
    loop {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let started = Instant::now();
        if !window.admits(started) {
            break;
        }
        let outcome = match tokio::time::timeout(window.timeout, worker.call()).await {
            Ok(outcome) => outcome,
            Err(_) => Err("timeout".to_owned()),
        };
        let finished = Instant::now();
        if started < window.start {
            continue;
        }
        let micros = (finished - started).as_micros().max(1) as u64;
        tally.histogram.saturating_record(micros);
        tally.last_finish = finished;
        let label = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(label) => {
                tally.failed += 1;
                label
            }
        };
        *tally.statuses.entry(label).or_default() += 1;
    }
    Ok(tally)
}

/// Runs one mode and prints its RESULT line; `Ok(false)` when any request failed.
async fn run_mode(args: &Args, target: &Target, mode: Mode, server_pid: Option<u32>) -> Result<bool, BoxError> {
    let seed = u64::from_be_bytes(tokenledger::crypto::random_bytes::<8>());
    let basic = encode_basic(&args.client_id, &args.client_secret);
    let timeout = Duration::from_millis(args.timeout_ms);
    // Set-up: one request first (it pays the one-off PBKDF2 check of an imported secret, so
    // no measured request does), and the tokens an introspection run will present.
    let tokens = if mode.is_grpc() {
        let channel = grpc_channel(target).await?;
        let mut ids = TransactionIds::new(seed, 0xfff);
        let n = if mode.is_introspect() { args.introspect_tokens.max(1) } else { 1 };
        let mut tokens = Vec::with_capacity(n);
        for _ in 0..n {
            tokens.push(grpc_issue(&channel, args, &basic, ids.next()).await?);
        }
        tokens
    } else {
        let mut conn = RestConn::connect(target).await?;
        let mut ids = TransactionIds::new(seed, 0xfff);
        let n = if mode.is_introspect() { args.introspect_tokens.max(1) } else { 1 };
        let mut tokens = Vec::with_capacity(n);
        let request = RestRequest::token(target, args, &basic);
        for _ in 0..n {
            tokens.push(conn.issue(&request, ids.next()).await?);
        }
        tokens
    };
    let cpu_before =
        (server_pid.and_then(cpu_seconds), cpu_seconds(std::process::id()), server_pid.map(writer_cpu_seconds));
    let wall_before = Instant::now();
    let start = wall_before + Duration::from_secs_f64(args.warmup);
    let window = Window::new(start, args.duration, timeout, args.requests);
    let mut handles = Vec::with_capacity(args.concurrency);
    if mode.is_grpc() {
        let mut channels = Vec::with_capacity(args.grpc_conns);
        for _ in 0..args.grpc_conns {
            channels.push(grpc_channel(target).await?);
        }
        let auth: AsciiMetadataValue = basic.parse()?;
        let institution: AsciiMetadataValue = args.institution.parse()?;
        for worker in 0..args.concurrency {
            let client = TokenServiceClient::new(channels[worker % channels.len()].clone());
            let token = tokens[worker % tokens.len()].clone();
            let (auth, institution) = (auth.clone(), institution.clone());
            let worker = GrpcWorker { mode, client, ids: TransactionIds::new(seed, worker), auth, institution, token };
            handles.push(tokio::spawn(drive(window.clone(), worker)));
        }
    } else {
        let mut conns = Vec::with_capacity(args.concurrency);
        for _ in 0..args.concurrency {
            conns.push(RestConn::connect(target).await?);
        }
        for (worker, conn) in conns.into_iter().enumerate() {
            let request = if mode.is_introspect() {
                RestRequest::introspect(target, args, &basic, &tokens[worker % tokens.len()])
            } else {
                RestRequest::token(target, args, &basic)
            };
            let worker = RestWorker { conn, request, ids: TransactionIds::new(seed, worker) };
            handles.push(tokio::spawn(drive(window.clone(), worker)));
        }
    }
    let mut total = Tally::new()?;
    for handle in handles {
        total.merge(handle.await??)?;
    }
    let wall = wall_before.elapsed().as_secs_f64();
    let server_cpu = match (cpu_before.0, server_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) / wall),
        _ => "na".to_owned(),
    };
    // The ledger writer thread's share: near 1.0 means the writer is CPU-bound, well below
    // means it mostly waits (for fsync, or for work).
    let writer_cpu = match (cpu_before.2, server_pid.map(writer_cpu_seconds)) {
        (Some(Some(a)), Some(Some(b))) => format!("{:.2}", (b - a) / wall),
        _ => "na".to_owned(),
    };
    let client_cpu = match (cpu_before.1, cpu_seconds(std::process::id())) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) / wall),
        _ => "na".to_owned(),
    };
    let measured = match args.requests {
        Some(_) => total.last_finish.saturating_duration_since(window.start).as_secs_f64().max(1e-6),
        None => (total.last_finish.max(window.end) - window.start).as_secs_f64(),
    };
    let h = &total.histogram;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let statuses: Vec<String> = total.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    let conns = if mode.is_grpc() { args.grpc_conns } else { args.concurrency };
    println!(
        "RESULT label={} mode={} url={} conc={} conns={} secs={measured:.2} requests={} rps={:.1} \
         p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} failed={} \
         statuses={} server_cpu={server_cpu} writer_thread_cpu={writer_cpu} \
         client_cpu={client_cpu}",
        args.label,
        mode.name(),
        target.url,
        args.concurrency,
        conns,
        h.len(),
        h.len() as f64 / measured,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        total.failed,
        statuses.join(","),
    );
    std::io::stdout().flush()?;
    Ok(total.failed == 0 && !h.is_empty())
}

/// CPU seconds (user + system) a process has used so far, from /proc (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds used so far by the server's thread named `ledger-writer`, if it has one.
fn writer_cpu_seconds(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "ledger-writer" {
            return stat_cpu_seconds(&task.path().join("stat").to_string_lossy());
        }
    }
    None
}

fn stat_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux ABI the server runs on.
    Some(ticks / 100.0)
}

// ---------------------------------------------------------------------------------------------
// REST: raw HTTP/1.1 over one keep-alive TCP connection per worker.

/// A request whose only varying part is the `transactionId` header value.
struct RestRequest {
    head: Vec<u8>,
    tail: Vec<u8>,
    /// What a successful answer's body must contain.
    expect: &'static [u8],
    bytes: Vec<u8>,
}

impl RestRequest {
    fn new(target: &Target, path: &str, args: &Args, basic: &str, body: &str) -> Self {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {basic}\r\ninstitutionId: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             transactionId: ",
            target.host_header,
            args.institution,
            body.len()
        );
        Self {
            head: head.into_bytes(),
            tail: format!("\r\n\r\n{body}").into_bytes(),
            expect: b"",
            bytes: Vec::with_capacity(512),
        }
    }

    fn token(target: &Target, args: &Args, basic: &str) -> Self {
        Self {
            expect: b"\"access_token\":\"tla_",
            ..Self::new(target, "/oauth2/v1/token", args, basic, "grant_type=client_credentials")
        }
    }

    fn introspect(target: &Target, args: &Args, basic: &str, token: &str) -> Self {
        Self {
            expect: b"\"active\":true",
            ..Self::new(target, "/oauth2/v1/introspect", args, basic, &format!("token={token}"))
        }
    }

    fn render(&mut self, transaction_id: &str) -> &[u8] {
        self.bytes.clear();
        self.bytes.extend_from_slice(&self.head);
        self.bytes.extend_from_slice(transaction_id.as_bytes());
        self.bytes.extend_from_slice(&self.tail);
        &self.bytes
    }
}

struct RestConn {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One parsed response: status and where the body is in the connection buffer.
struct RestAnswer {
    status: u16,
    body: std::ops::Range<usize>,
    close: bool,
}

impl RestConn {
    async fn connect(target: &Target) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { addr: target.addr, stream, buf: Vec::with_capacity(4096) })
    }

    async fn reconnect(&mut self) -> std::io::Result<()> {
        self.stream = TcpStream::connect(self.addr).await?;
        self.stream.set_nodelay(true)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes `request` and reads one whole response (Content-Length framing, which is what
    /// the server sends for every answer it has).
    async fn exchange(&mut self, request: &[u8]) -> Result<RestAnswer, String> {
        self.buf.clear();
        self.stream.write_all(request).await.map_err(|e| format!("io-write:{:?}", e.kind()))?;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = response.code.unwrap_or(0);
                    let mut length = None;
                    let mut close = false;
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            return Err("unsupported-framing".to_owned());
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    let length = length.ok_or("no-content-length")?;
                    let total = head_len + length;
                    while self.buf.len() < total {
                        self.fill().await?;
                    }
                    return Ok(RestAnswer { status, body: head_len..total, close });
                }
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(_) => return Err("bad-response".to_owned()),
            }
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        self.buf.reserve(4096);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("io-closed".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("io-read:{:?}", e.kind())),
        }
    }

    /// One request whose answer must be 200 with `expect` in its body.
    async fn call(&mut self, request: &[u8], expect: &[u8]) -> Outcome {
        let result = self.exchange(request).await;
        let outcome = match &result {
            Ok(answer) if answer.status == 200 => {
                if contains(&self.buf[answer.body.clone()], expect) {
                    Ok(())
                } else {
                    Err("200-unexpected-body".to_owned())
                }
            }
            Ok(answer) => Err(answer.status.to_string()),
            Err(label) => Err(label.clone()),
        };
        let broken = match &result {
            Ok(answer) => answer.close,
            Err(_) => true,
        };
        if broken && self.reconnect().await.is_err() {
            return Err("io-reconnect".to_owned());
        }
        outcome
    }

    /// Issues one token during set-up and returns it.
    async fn issue(&mut self, request: &RestRequest, transaction_id: &str) -> Result<String, BoxError> {
        let mut bytes = request.head.clone();
        bytes.extend_from_slice(transaction_id.as_bytes());
        bytes.extend_from_slice(&request.tail);
        let answer = tokio::time::timeout(Duration::from_secs(60), self.exchange(&bytes))
            .await
            .map_err(|_| "set-up token request timed out")??;
        let body = String::from_utf8_lossy(&self.buf[answer.body.clone()]).into_owned();
        if answer.status != 200 {
            return Err(format!("set-up token request: HTTP {}: {body}", answer.status).into());
        }
        let json: serde_json::Value = serde_json::from_str(&body)?;
        json["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("set-up token request: no access_token in {body}").into())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

struct RestWorker {
    conn: RestConn,
    request: RestRequest,
    ids: TransactionIds,
}

impl Worker for RestWorker {
    async fn call(&mut self) -> Outcome {
        let expect = self.request.expect;
        let bytes = self.request.render(self.ids.next());
        self.conn.call(bytes, expect).await
    }
}

// ---------------------------------------------------------------------------------------------
// auth-flood: probes idle, then probes during a flood of wrong secrets.

/// A worker that sends a fresh wrong secret for one client with every request; 401 (CMN_90004)
/// and 500 (CMN_90003, refused by a limit) are the expected answers.
struct FloodWorker {
    conn: RestConn,
    target_host: String,
    client_id: String,
    institution: String,
    worker: usize,
    sent: u64,
    ids: TransactionIds,
}

impl Worker for FloodWorker {
    async fn call(&mut self) -> Outcome {
        self.sent += 1;
        let basic = encode_basic(&self.client_id, &format!("wrong-{}-{}", self.worker, self.sent));
        let body = "grant_type=client_credentials";
        let request = format!(
            "POST /oauth2/v1/token HTTP/1.1\r\nHost: {}\r\nAuthorization: {basic}\r\ninstitutionId: {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\ntransactionId: {}\r\n\r\n{body}",
            self.target_host,
            self.institution,
            body.len(),
            self.ids.next()
        );
        let answer = self.conn.exchange(request.as_bytes()).await;
        let broken = answer.as_ref().map_or(true, |a| a.close);
        if broken && self.conn.reconnect().await.is_err() {
            return Err("io-reconnect".to_owned());
        }
        // Every answer is a "failure" by status label; the report shows them by status, and
        // anything but 401 (CMN_90004) and 500 (CMN_90003) is unexpected.
        match answer {
            Ok(a) if a.status == 401 || a.status == 500 => Err(a.status.to_string()),
            Ok(a) => Err(format!("unexpected-{}", a.status)),
            Err(label) => Err(label),
        }
    }
}

/// One phase: the probes (and the flood, if `flood`) for one window; returns the tallies of
/// the password probes, the introspection probes and the flood.
async fn auth_flood_phase(
    args: &Args,
    target: &Target,
    token: &str,
    seed: u64,
    flood: bool,
) -> Result<(Tally, Tally, Tally), BoxError> {
    let basic = encode_basic(&args.client_id, &args.client_secret);
    let timeout = Duration::from_millis(args.timeout_ms);
    let wall = Instant::now();
    let start = wall + Duration::from_secs_f64(args.warmup);
    let window = Window::new(start, args.duration, timeout, None);
    let login = format!("grant_type=password&username={}&password={}", args.username, args.password);
    let mut flooders = Vec::new();
    if flood {
        for worker in 0..args.flood {
            let conn = RestConn::connect(target).await?;
            let w = FloodWorker {
                conn,
                target_host: target.host_header.clone(),
                client_id: args.flood_client.clone(),
                institution: args.institution.clone(),
                worker,
                sent: 0,
                ids: TransactionIds::new(seed ^ 0xf100d, worker),
            };
            flooders.push(tokio::spawn(drive(window.clone(), w)));
        }
    }
    let mut passwords = Vec::new();
    for worker in 0..args.password_workers {
        let conn = RestConn::connect(target).await?;
        let request = RestRequest {
            expect: b"\"refresh_token\":\"tlr_",
            ..RestRequest::new(target, "/oauth2/v1/token", args, &basic, &login)
        };
        let w = RestWorker { conn, request, ids: TransactionIds::new(seed ^ 0xba55, worker) };
        passwords.push(tokio::spawn(drive(window.clone(), w)));
    }
    let mut probes = Vec::new();
    for worker in 0..args.probe_workers {
        let conn = RestConn::connect(target).await?;
        let request = RestRequest::introspect(target, args, &basic, token);
        let w = RestWorker { conn, request, ids: TransactionIds::new(seed ^ 0x1259, worker) };
        probes.push(tokio::spawn(drive_paced(window.clone(), w, Duration::from_millis(args.probe_pause_ms))));
    }
    let mut totals = (Tally::new()?, Tally::new()?, Tally::new()?);
    for handle in passwords {
        totals.0.merge(handle.await??)?;
    }
    for handle in probes {
        totals.1.merge(handle.await??)?;
    }
    for handle in flooders {
        totals.2.merge(handle.await??)?;
    }
    Ok(totals)
}

/// Runs the idle phase and the flood phase and prints their RESULT lines and the p99 ratios;
/// `Ok(false)` when a probe failed.
async fn run_auth_flood(args: &Args, target: &Target, server_pid: Option<u32>) -> Result<bool, BoxError> {
    let seed = u64::from_be_bytes(tokenledger::crypto::random_bytes::<8>());
    let basic = encode_basic(&args.client_id, &args.client_secret);
    // Set-up: the bench client's first request pays its one PBKDF2; a token to introspect.
    let mut conn = RestConn::connect(target).await?;
    let mut ids = TransactionIds::new(seed, 0xfff);
    let token = conn.issue(&RestRequest::token(target, args, &basic), ids.next()).await?;
    let mut p99 = Vec::new();
    let mut all_ok = true;
    for (phase, flood) in [("idle", false), ("flood", true)] {
        let cpu_before = server_pid.and_then(cpu_seconds);
        let wall = Instant::now();
        let (password, introspect, flooded) = auth_flood_phase(args, target, &token, seed, flood).await?;
        let server_cpu = match (cpu_before, server_pid.and_then(cpu_seconds)) {
            (Some(a), Some(b)) => format!("{:.2}", (b - a) / wall.elapsed().as_secs_f64()),
            _ => "na".to_owned(),
        };
        let mut series = vec![("password", &password), ("introspect", &introspect)];
        if flood {
            series.push(("wrong-secret", &flooded));
        }
        for (name, tally) in series {
            let h = &tally.histogram;
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let statuses: Vec<String> = tally.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
            println!(
                "RESULT label={} mode=auth-flood phase={phase} series={name} flood={} requests={} rps={:.1} \
                 p50_ms={:.3} p99_ms={:.3} max_ms={:.3} statuses={} server_cpu={server_cpu}",
                args.label,
                if flood { args.flood } else { 0 },
                h.len(),
                h.len() as f64 / args.duration,
                ms(0.5),
                ms(0.99),
                h.max() as f64 / 1000.0,
                statuses.join(","),
            );
            if name != "wrong-secret" {
                all_ok &= tally.failed == 0 && !h.is_empty();
                p99.push((phase, name, ms(0.99)));
            }
        }
    }
    for name in ["password", "introspect"] {
        let get = |phase: &str| p99.iter().find(|(p, n, _)| *p == phase && *n == name).map(|(_, _, v)| *v);
        if let (Some(idle), Some(flood)) = (get("idle"), get("flood")) {
            println!(
                "RATIO label={} series={name} p99_idle_ms={idle:.3} p99_flood_ms={flood:.3} flood_over_idle={:.2}",
                args.label,
                flood / idle
            );
        }
    }
    std::io::stdout().flush()?;
    Ok(all_ok)
}

// ---------------------------------------------------------------------------------------------
// gRPC: the generated tonic client over shared HTTP/2 connections.

async fn grpc_channel(target: &Target) -> Result<Channel, BoxError> {
    Ok(Endpoint::from_shared(target.url.clone())?.tcp_nodelay(true).connect().await?)
}

async fn grpc_issue(channel: &Channel, args: &Args, basic: &str, transaction_id: &str) -> Result<String, BoxError> {
    let mut client = TokenServiceClient::new(channel.clone());
    let mut request =
        tonic::Request::new(CreateTokenRequest { grant_type: "client_credentials".to_owned(), ..Default::default() });
    let metadata = request.metadata_mut();
    metadata.insert("authorization", basic.parse()?);
    metadata.insert("transactionid", transaction_id.parse()?);
    metadata.insert("institutionid", args.institution.parse()?);
    let answer = tokio::time::timeout(Duration::from_secs(60), client.create_token(request))
        .await
        .map_err(|_| "set-up token request timed out")??;
    Ok(answer.into_inner().access_token)
}

fn grpc_label(status: &tonic::Status) -> String {
    format!("grpc-{:?}", status.code())
}

struct GrpcWorker {
    mode: Mode,
    client: TokenServiceClient<Channel>,
    ids: TransactionIds,
    auth: AsciiMetadataValue,
    institution: AsciiMetadataValue,
    token: String,
}

impl GrpcWorker {
    fn metadata<T>(&mut self, message: T) -> Result<tonic::Request<T>, String> {
        let transaction_id: AsciiMetadataValue =
            MetadataValue::try_from(self.ids.next()).map_err(|_| "bad-transaction-id".to_owned())?;
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.auth.clone());
        metadata.insert("transactionid", transaction_id);
        metadata.insert("institutionid", self.institution.clone());
        Ok(request)
    }
}

impl Worker for GrpcWorker {
    async fn call(&mut self) -> Outcome {
        if self.mode == Mode::GrpcToken {
            let request = self
                .metadata(CreateTokenRequest { grant_type: "client_credentials".to_owned(), ..Default::default() })?;
            match self.client.create_token(request).await {
                Ok(answer) if answer.get_ref().access_token.starts_with("tla_") => Ok(()),
                Ok(_) => Err("ok-unexpected-body".to_owned()),
                Err(status) => Err(grpc_label(&status)),
            }
        } else {
            let request = self.metadata(IntrospectTokenRequest { token: self.token.clone() })?;
            match self.client.introspect_token(request).await {
                Ok(answer) if answer.get_ref().active => Ok(()),
                Ok(_) => Err("ok-inactive".to_owned()),
                Err(status) => Err(grpc_label(&status)),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// --spawn: a private server in a temporary data directory.

struct SpawnedServer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

/// The bench client (imported, so its secret is PBKDF2), a user for the password grant, and
/// the imported client that the auth-flood mode floods with wrong secrets.
const BENCH_IMPORT: &str = r#"{"institutions":[{"institution_id":"01001","name":"Bench"}],"clients":[{"client_id":"bench","client_secret":"bench-secret-0123456789abcdef","name":"bench","institution_ids":["01001"],"grant_types":["client_credentials","password"],"scopes":["api:read"],"introspect":true},{"client_id":"legacy-client","client_secret":"legacy-secret-0123456789","name":"legacy","institution_ids":["01001"],"grant_types":["client_credentials"],"scopes":["api:read"]}],"users":[{"institution_id":"01001","login_id":"bench.user","password":"bench-password-0123456789","institution_user_id":"IUID-BENCH","user_type":"RETAIL"}]}"#;

impl SpawnedServer {
    fn start(args: &Args) -> Result<Self, BoxError> {
        let bin = args.server_bin.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tokenledger")));
        let dir = tempfile::Builder::new().prefix("tl-loadgen-").tempdir()?;
        let data = dir.path().join("data");
        // A free loopback port: bind port 0, note it, release it for the server.
        let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listen = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = Process::new(&bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(&listen)
            .arg("--log-level")
            .arg("warn")
            // The bench client sends far more than a real client's quota allows.
            .arg("--quota-requests")
            .arg("0")
            // Nor the tokens it holds (an environment variable: older builds, which an A/B
            // run may start, ignore it).
            .env("TOKENLEDGER_QUOTA_TOKENS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut server = Self { child, url: format!("http://{listen}"), dir };
        eprintln!(
            "loadgen: started {} (pid {}) on {} in {}",
            bin.display(),
            server.child.id(),
            server.url,
            data.display()
        );
        server.wait_ready(Duration::from_secs(30))?;
        let file = server.dir.path().join("bench-import.json");
        std::fs::write(&file, BENCH_IMPORT)?;
        let import = Process::new(&bin)
            .arg("import")
            .arg(&file)
            .arg("--server")
            .arg(&server.url)
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .output()?;
        if !import.status.success() {
            return Err(format!(
                "tokenledger import failed: {}{}",
                String::from_utf8_lossy(&import.stdout),
                String::from_utf8_lossy(&import.stderr)
            )
            .into());
        }
        eprint!("loadgen: {}", String::from_utf8_lossy(&import.stdout));
        Ok(server)
    }

    /// Polls `GET /readyz` until it answers 200.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), BoxError> {
        use std::io::Read as _;
        let deadline = Instant::now() + limit;
        let addr: SocketAddr = self.url.trim_start_matches("http://").parse()?;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("the server exited early ({status}); {}", self.log()).into());
            }
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut text = String::new();
                let _ = s.read_to_string(&mut text);
                if text.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("the server was not ready within {limit:?}; {}", self.log()).into())
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        format!("server log:\n{text}")
    }

    /// SIGTERM by PID, then waits for the graceful exit (SIGKILL after 20 s).
    fn stop(mut self) -> Result<(), BoxError> {
        let pid = self.child.id();
        self.terminate(Duration::from_secs(20))?;
        let log = self.log();
        let log_lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        if log_lines.len() > 1 {
            eprintln!("loadgen: {log}");
        }
        eprintln!("loadgen: server pid {pid} stopped");
        Ok(())
    }

    fn terminate(&mut self, grace: Duration) -> Result<(), BoxError> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = self.child.id().to_string();
        let _ = Process::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!("loadgen: server exited with {status}");
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("loadgen: server did not stop within {grace:?}; killing pid {pid}");
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        // Error paths: never leave the server running.
        let _ = self.terminate(Duration::from_secs(5));
    }
}
