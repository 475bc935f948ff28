//! Scale benchmark: fills a real release server through its REST API to N live tokens and
//! measures what a bank operator sizes a machine by.
//!
//! ```sh
//! cargo bench --bench scale -- --tokens 10000000          # the issue's figure (about 5-10 min)
//! cargo bench --bench scale -- --tokens 1000000 --step 250000
//! ```
//!
//! One run, against one server process in a temporary data directory (kept with `--keep`):
//!
//! 1. **Fill**: `--concurrency` workers, each with one HTTP/1.1 keep-alive connection and one
//!    request in flight, issue `client_credentials` tokens and, every `--refresh-every`th
//!    request, refresh a chain that began with a `password` sign-in (each refresh adds an access
//!    and a refresh token and rotates the old refresh token). Every answer is checked. After
//!    every `--step` tokens it prints the server's RSS, RSS per token in memory, ledger bytes
//!    per event, and the latency histogram of that step (p50, p99, p99.9 and max, so a
//!    stop-the-world pause shows as a max).
//! 2. **Introspection at N**: `--introspect-secs` of closed-loop introspection over tokens
//!    sampled during the fill, against the same run at the start (a near-empty server).
//! 3. **Restarts**: SIGTERM and start again (ready time, RSS, every sampled token still
//!    active); SIGTERM, delete the projection snapshot (`--snapshot-path`), start again (a
//!    full replay: events per second); SIGKILL and start again.
//!
//! The machine's state (CPUs, load, memory, the CPU used by others during the fill) is printed,
//! since only same-run figures compare. Load only ever goes to loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use tokenledger::wire::encode_basic;

#[path = "support/mod.rs"]
mod support;
use support::{BoxError, RestConn, ServerProcess, Target, TransactionIds};

/// Fill a real server to N live tokens; report memory, disk, latency and restart figures.
#[derive(Parser, Debug)]
#[command(name = "scale")]
struct Args {
    /// Tokens to issue (each refresh counts its access and refresh token)
    #[arg(long, default_value_t = 10_000_000)]
    tokens: u64,
    /// Report a row every this many tokens
    #[arg(long, default_value_t = 1_000_000)]
    step: u64,
    /// Concurrent workers (requests in flight) during the fill and introspection
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// Every this many requests of a worker is a refresh (0: client_credentials only)
    #[arg(long, default_value_t = 5)]
    refresh_every: u64,
    /// Measured seconds of each introspection run
    #[arg(long, default_value_t = 10.0)]
    introspect_secs: f64,
    /// Tokens kept from the fill for introspection and for the checks after restarts
    #[arg(long, default_value_t = 20_000)]
    sample: usize,
    /// Where the projection snapshot lives, relative to the data directory; deleted before the
    /// full-replay restart (absent: that restart replays in full anyway)
    #[arg(long, default_value = "tables.snapshot")]
    snapshot_path: PathBuf,
    /// PBKDF2 iterations for the bench users' passwords (sign-ins are few)
    #[arg(long, default_value_t = 100_000)]
    pbkdf2_iterations: u32,
    /// Skip the restart measurements
    #[arg(long)]
    no_restart: bool,
    /// Keep the data directory (its path is printed)
    #[arg(long)]
    keep: bool,
    /// The tokenledger binary [default: the one cargo built with this bench]
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Extra server settings as KEY=VALUE environment variables (e.g. TOKENLEDGER_...)
    #[arg(long = "server-env")]
    server_env: Vec<String>,
    /// A request slower than this fails the run
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Passed by `cargo bench` to every bench binary; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

const INSTITUTION: &str = "01001";
const CC_CLIENT: (&str, &str) = ("scale-cc", "scale-cc-secret-0123456789abcdef");
const PW_CLIENT: (&str, &str) = ("scale-pw", "scale-pw-secret-0123456789abcdef");
const PASSWORD: &str = "scale-password-1";

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("scale: some requests or checks failed (see above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("scale: {error}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<bool, BoxError> {
    if args.concurrency == 0 || args.step == 0 || args.tokens == 0 {
        return Err("--concurrency, --step and --tokens must be positive".into());
    }
    let bin = args.server_bin.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tokenledger")));
    let dir = tempfile::Builder::new().prefix("tl-scale-").tempdir()?;
    let mut env = vec![
        ("TOKENLEDGER_PASSWORD_PBKDF2_ITERATIONS".to_owned(), args.pbkdf2_iterations.to_string()),
        // The bench is one client at full speed: no quota or spike arrest may throttle it.
        ("TOKENLEDGER_QUOTA_REQUESTS".to_owned(), "0".to_owned()),
        // It holds 10M tokens of one client, twice the default live-token quota.
        ("TOKENLEDGER_QUOTA_TOKENS".to_owned(), "0".to_owned()),
        ("TOKENLEDGER_SPIKE_ARREST_PER_SEC".to_owned(), "0".to_owned()),
    ];
    for pair in &args.server_env {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("--server-env {pair}: want KEY=VALUE"))?;
        env.push((k.to_owned(), v.to_owned()));
    }
    println!("scale: machine: {}", support::machine_state());
    println!("scale: server {} in {}", bin.display(), dir.path().display());
    let mut server = ServerProcess::new(bin, dir.path(), env)?;
    let first_ready = server.start(Duration::from_secs(60))?;
    println!("scale: empty server ready in {:.2} s", first_ready.as_secs_f64());
    import(&server, args)?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let target = Target::parse(&server.url)?;
    let pid = server.pid().ok_or("no server pid")?;
    let mut ok = true;

    let baseline = runtime.block_on(introspection_run(&target, args, None))?;
    print_introspection("introspection at start", &baseline);
    ok &= baseline.failed == 0;

    let fill = runtime.block_on(fill(&target, &server, pid, args))?;
    ok &= fill.failed == 0;
    let at_n = runtime.block_on(introspection_run(&target, args, Some(fill.sample.clone())))?;
    print_introspection("introspection at N", &at_n);
    println!(
        "scale: introspection at N / at start: {:.2}x (p99 {:.2} ms vs {:.2} ms)",
        at_n.rate / baseline.rate.max(1.0),
        at_n.p99_ms,
        baseline.p99_ms
    );
    ok &= at_n.failed == 0;

    if !args.no_restart {
        ok &= restarts(&runtime, &mut server, &target, args, &fill)?;
    }
    println!("scale: machine at the end: {}", support::machine_state());
    server.terminate(Duration::from_secs(120))?;
    if args.keep {
        let kept = dir.keep();
        println!("scale: data kept in {}", kept.display());
    }
    drop(runtime);
    Ok(ok)
}

/// The bench institution, a client_credentials client, a password client and one user per
/// worker (each worker refreshes its own chain).
fn import(server: &ServerProcess, args: &Args) -> Result<(), BoxError> {
    let users: Vec<serde_json::Value> = (0..args.concurrency)
        .map(|i| {
            serde_json::json!({
                "institution_id": INSTITUTION, "login_id": format!("scale.user{i}"), "password": PASSWORD,
                "institution_user_id": format!("SCALE-{i}"), "user_type": "RETAIL",
            })
        })
        .collect();
    let file = serde_json::json!({
        "institutions": [{"institution_id": INSTITUTION, "name": "Scale"}],
        "clients": [
            {"client_id": CC_CLIENT.0, "client_secret": CC_CLIENT.1, "name": "scale cc", "institution_ids": [INSTITUTION],
             "grant_types": ["client_credentials"], "scopes": ["api:read"], "introspect": true},
            {"client_id": PW_CLIENT.0, "client_secret": PW_CLIENT.1, "name": "scale password", "institution_ids": [INSTITUTION],
             "grant_types": ["password", "refresh_token"], "scopes": ["accounts:read"]},
        ],
        "users": users,
    });
    let path = server.data.with_file_name("scale-import.json");
    std::fs::write(&path, serde_json::to_vec(&file)?)?;
    let started = Instant::now();
    server.cli(&["import", &path.to_string_lossy()])?;
    println!("scale: imported {} users in {:.1} s", args.concurrency, started.elapsed().as_secs_f64());
    Ok(())
}

/// What the fill left behind.
struct Filled {
    failed: u64,
    /// Access tokens (client_credentials) sampled across the fill.
    sample: Vec<String>,
    /// Tokens in the server's memory after the fill.
    tokens: f64,
    events: f64,
}

/// Shared progress of the fill.
struct Progress {
    /// Tokens issued so far (the stop condition).
    issued: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    /// One latency histogram (µs) per step, indexed by the tokens issued when the request began.
    steps: Mutex<Vec<Histogram<u64>>>,
    sample: Mutex<Vec<String>>,
}

async fn fill(target: &Target, server: &ServerProcess, pid: u32, args: &Args) -> Result<Filled, BoxError> {
    let steps = (args.tokens.div_ceil(args.step)) as usize;
    let mut histograms = Vec::with_capacity(steps);
    for _ in 0..steps {
        histograms.push(Histogram::new_with_bounds(1, 600_000_000, 3)?);
    }
    let progress = Arc::new(Progress {
        issued: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        steps: Mutex::new(histograms),
        sample: Mutex::new(Vec::with_capacity(args.sample)),
    });
    let seed = support::seed();
    let every = (args.tokens / args.sample.max(1) as u64).max(1);
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let conn = RestConn::connect(target).await?;
        let mut worker = FillWorker {
            conn,
            ids: TransactionIds::new(seed, w),
            cc_basic: encode_basic(CC_CLIENT.0, CC_CLIENT.1),
            pw_basic: encode_basic(PW_CLIENT.0, PW_CLIENT.1),
            refresh_token: String::new(),
            requests: 0,
            sample_every: every,
        };
        // The sign-in that starts this worker's refresh chain (a PBKDF2 check) is set-up, not
        // part of the measured fill.
        if args.refresh_every > 0 {
            worker.sign_in(target, &format!("scale.user{w}")).await?;
        }
        workers.push(tokio::spawn(worker.run(
            Target::parse(&target.url)?,
            progress.clone(),
            args.refresh_every,
            args.step,
            args.tokens,
            args.timeout_ms,
        )));
    }
    println!(
        "scale: fill to {} tokens, c{}, a refresh every {} requests per worker",
        args.tokens, args.concurrency, args.refresh_every
    );
    println!(
        "{:>10} {:>9} {:>8} {:>9} {:>10} {:>9} {:>9} {:>10} {:>8} {:>8} {:>9} {:>9}",
        "tokens",
        "in_memory",
        "tok/s",
        "rss_MiB",
        "rss_B/tok",
        "ledger_MiB",
        "B/event",
        "disk_B/ev",
        "p50_ms",
        "p99_ms",
        "p99.9_ms",
        "max_ms"
    );
    let started = Instant::now();
    let busy_before = support::machine_busy_seconds().unwrap_or(0.0);
    let server_cpu_before = support::cpu_seconds(pid).unwrap_or(0.0);
    let own_cpu_before = support::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let mut next = 1u64;
    let mut last = (Instant::now(), 0u64);
    let ledger = server.data.join("ledger.redb");
    let addr: SocketAddr = target.addr;
    let admin = std::fs::read_to_string(server.data.join("admin.token")).unwrap_or_default();
    let mut row = |step: u64, progress: &Progress| -> Result<(f64, f64), BoxError> {
        let issued = progress.issued.load(Ordering::Relaxed);
        let metrics = metrics_text(addr, admin.trim());
        let tokens = support::metric(&metrics, "tokenledger_live_tokens").unwrap_or(f64::NAN);
        let events = support::metric(&metrics, "tokenledger_ledger_head_seq").unwrap_or(f64::NAN);
        let rss = support::rss_bytes(pid).unwrap_or(0) as f64;
        let (file, disk) = file_sizes(&ledger);
        let now = Instant::now();
        let rate = (issued - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
        last = (now, issued);
        // The step's histogram is complete once every request that began in it ended; the
        // row is printed when the next step begins, which is close enough for a progress row
        // and exact in the final table.
        let h = progress.steps.lock().map_err(|_| "poisoned")?[step as usize].clone();
        println!(
            "{:>10} {:>9.0} {:>8.0} {:>9.0} {:>10.0} {:>9.0} {:>9.0} {:>10.0} {:>8.2} {:>8.2} {:>9.2} {:>9.2}",
            issued,
            tokens,
            rate,
            rss / 1048576.0,
            rss / tokens.max(1.0),
            file / 1048576.0,
            file / events.max(1.0),
            disk / events.max(1.0),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
        );
        Ok((tokens, events))
    };
    let mut finals = (0.0, 0.0);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let issued = progress.issued.load(Ordering::Relaxed);
        let done = workers.iter().all(|w| w.is_finished());
        while next * args.step <= issued.min(args.tokens) && (next as usize) <= steps {
            finals = row(next - 1, &progress)?;
            next += 1;
        }
        if done {
            break;
        }
    }
    for w in workers {
        w.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let busy = support::machine_busy_seconds().unwrap_or(0.0) - busy_before;
    let server_cpu = support::cpu_seconds(pid).unwrap_or(0.0) - server_cpu_before;
    let own_cpu = support::cpu_seconds(std::process::id()).unwrap_or(0.0) - own_cpu_before;
    let issued = progress.issued.load(Ordering::Relaxed);
    if (next as usize) <= steps {
        finals = row(next - 1, &progress)?;
    }
    let failed = progress.failed.load(Ordering::Relaxed);
    println!(
        "scale: filled {issued} tokens in {elapsed:.1} s ({:.0}/s), {failed} failed; CPU cores: server {:.2}, bench {:.2}, others {:.2}",
        issued as f64 / elapsed,
        server_cpu / elapsed,
        own_cpu / elapsed,
        ((busy - server_cpu - own_cpu) / elapsed).max(0.0)
    );
    let all = {
        let steps = progress.steps.lock().map_err(|_| "poisoned")?;
        let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for h in steps.iter() {
            all.add(h)?;
        }
        all
    };
    println!(
        "scale: fill latency overall: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        ms(all.value_at_quantile(0.5)),
        ms(all.value_at_quantile(0.99)),
        ms(all.value_at_quantile(0.999)),
        ms(all.max())
    );
    let rss = support::rss_bytes(pid).unwrap_or(0) as f64;
    let (file, disk) = file_sizes(&ledger);
    println!(
        "scale: serving: RSS {:.0} MiB for {:.0} tokens in memory = {:.0} B/token; ledger {:.0} MiB for {:.0} events = {:.0} B/event, {:.0} B/event on disk",
        rss / 1048576.0,
        finals.0,
        rss / finals.0.max(1.0),
        file / 1048576.0,
        finals.1,
        file / finals.1.max(1.0),
        disk / finals.1.max(1.0)
    );
    let sample = std::mem::take(&mut *progress.sample.lock().map_err(|_| "poisoned")?);
    Ok(Filled { failed, sample, tokens: finals.0, events: finals.1 })
}

/// The `/metrics` text (with the admin credential, in case the server wants it).
fn metrics_text(addr: SocketAddr, admin: &str) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

struct FillWorker {
    conn: RestConn,
    ids: TransactionIds,
    cc_basic: String,
    pw_basic: String,
    /// The worker's live refresh token (empty without refreshes).
    refresh_token: String,
    requests: u64,
    sample_every: u64,
}

impl FillWorker {
    async fn run(
        mut self,
        target: Target,
        progress: Arc<Progress>,
        refresh_every: u64,
        step: u64,
        tokens: u64,
        timeout_ms: u64,
    ) {
        let timeout = Duration::from_millis(timeout_ms);
        loop {
            let issued = progress.issued.load(Ordering::Relaxed);
            if issued >= tokens || progress.stop.load(Ordering::Relaxed) {
                return;
            }
            self.requests += 1;
            let refresh = refresh_every > 0 && self.requests.is_multiple_of(refresh_every);
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, self.one(&target, refresh)).await {
                Ok(result) => result,
                Err(_) => Err("timeout".to_owned()),
            };
            let micros = started.elapsed().as_micros().max(1) as u64;
            match result {
                Ok((added, access)) => {
                    let before = progress.issued.fetch_add(added, Ordering::Relaxed);
                    if let Ok(mut steps) = progress.steps.lock() {
                        let index = ((issued / step) as usize).min(steps.len() - 1);
                        steps[index].saturating_record(micros);
                    }
                    if let Some(access) = access
                        && before / self.sample_every != (before + added) / self.sample_every
                        && let Ok(mut sample) = progress.sample.lock()
                        && sample.len() < sample.capacity()
                    {
                        sample.push(access);
                    }
                }
                Err(label) => {
                    let n = progress.failed.fetch_add(1, Ordering::Relaxed);
                    if n < 10 {
                        eprintln!("scale: request failed: {label}");
                    }
                    if n >= 1000 {
                        progress.stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// One request: tokens it added to the server's memory, and a client_credentials access
    /// token to sample.
    async fn one(&mut self, target: &Target, refresh: bool) -> Result<(u64, Option<String>), String> {
        if !refresh {
            let request = support::form_post(
                target,
                "/oauth2/v1/token",
                &self.cc_basic,
                Some(INSTITUTION),
                "grant_type=client_credentials",
                self.ids.next(),
            );
            let json = self.conn.json(&request).await?;
            let access = json["access_token"].as_str().ok_or("no access_token")?.to_owned();
            return Ok((1, Some(access)));
        }
        let body = format!("grant_type=refresh_token&refresh_token={}", self.refresh_token);
        self.refresh_token = self.pw_token(target, &body).await?;
        Ok((2, None))
    }

    /// A password sign-in; its refresh token starts the worker's chain.
    async fn sign_in(&mut self, target: &Target, login: &str) -> Result<(), BoxError> {
        let body = format!("grant_type=password&username={login}&password={PASSWORD}");
        self.refresh_token = self.pw_token(target, &body).await.map_err(|e| format!("sign-in of {login}: {e}"))?;
        Ok(())
    }

    /// A token request of the password client; the refresh token it answered.
    async fn pw_token(&mut self, target: &Target, body: &str) -> Result<String, String> {
        let request =
            support::form_post(target, "/oauth2/v1/token", &self.pw_basic, Some(INSTITUTION), body, self.ids.next());
        let json = self.conn.json(&request).await?;
        Ok(json["refresh_token"].as_str().ok_or("no refresh_token")?.to_owned())
    }
}

/// One closed-loop introspection run.
struct IntrospectionRun {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    failed: u64,
    /// Sampled tokens that were not active.
    inactive: u64,
}

fn print_introspection(label: &str, r: &IntrospectionRun) {
    println!(
        "scale: {label}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} failed, {} inactive",
        r.rate, r.p50_ms, r.p99_ms, r.max_ms, r.failed, r.inactive
    );
}

/// Introspects `tokens` (or a few fresh ones) round-robin for `--introspect-secs`.
async fn introspection_run(
    target: &Target,
    args: &Args,
    tokens: Option<Vec<String>>,
) -> Result<IntrospectionRun, BoxError> {
    let basic = encode_basic(CC_CLIENT.0, CC_CLIENT.1);
    let seed = support::seed();
    let tokens = match tokens {
        Some(t) if !t.is_empty() => t,
        _ => {
            let mut conn = RestConn::connect(target).await?;
            let mut ids = TransactionIds::new(seed, 0xfff);
            let mut fresh = Vec::new();
            for _ in 0..64 {
                let request = support::form_post(
                    target,
                    "/oauth2/v1/token",
                    &basic,
                    Some(INSTITUTION),
                    "grant_type=client_credentials",
                    ids.next(),
                );
                let json = conn.json(&request).await.map_err(|e| format!("set-up token: {e}"))?;
                fresh.push(json["access_token"].as_str().ok_or("no access_token")?.to_owned());
            }
            fresh
        }
    };
    let tokens = Arc::new(tokens);
    let duration = Duration::from_secs_f64(args.introspect_secs.max(0.1));
    let warmup = Duration::from_millis(500);
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut handles = Vec::new();
    for w in 0..args.concurrency {
        let mut conn = RestConn::connect(target).await?;
        let tokens = tokens.clone();
        let basic = basic.clone();
        let target = Target::parse(&target.url)?;
        handles.push(tokio::spawn(async move {
            let mut ids = TransactionIds::new(seed, w);
            let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())?;
            let (mut failed, mut inactive, mut i) = (0u64, 0u64, w);
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let token = &tokens[i % tokens.len()];
                i += 7;
                let request = support::form_post(
                    &target,
                    "/oauth2/v1/introspect",
                    &basic,
                    None,
                    &format!("token={token}"),
                    ids.next(),
                );
                let result = conn.json(&request).await;
                if began < start {
                    continue;
                }
                h.saturating_record(began.elapsed().as_micros().max(1) as u64);
                match result {
                    Ok(json) if json["active"] == serde_json::Value::Bool(true) => {}
                    Ok(_) => inactive += 1,
                    Err(_) => failed += 1,
                }
            }
            Ok::<_, String>((h, failed, inactive))
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut failed, mut inactive) = (0, 0);
    for h in handles {
        let (hist, f, n) = h.await??;
        all.add(&hist)?;
        failed += f;
        inactive += n;
    }
    Ok(IntrospectionRun {
        rate: all.len() as f64 / duration.as_secs_f64(),
        p50_ms: ms(all.value_at_quantile(0.5)),
        p99_ms: ms(all.value_at_quantile(0.99)),
        max_ms: ms(all.max()),
        failed,
        inactive,
    })
}

/// Every sampled token must still be active after a restart.
async fn check_sample(target: &Target, sample: &[String]) -> Result<(u64, u64), BoxError> {
    let basic = encode_basic(CC_CLIENT.0, CC_CLIENT.1);
    let mut conn = RestConn::connect(target).await?;
    let mut ids = TransactionIds::new(support::seed(), 0xffe);
    let (mut active, mut inactive) = (0, 0);
    for token in sample.iter().step_by((sample.len() / 2000).max(1)) {
        let request =
            support::form_post(target, "/oauth2/v1/introspect", &basic, None, &format!("token={token}"), ids.next());
        match conn.json(&request).await {
            Ok(json) if json["active"] == serde_json::Value::Bool(true) => active += 1,
            _ => inactive += 1,
        }
    }
    Ok((active, inactive))
}

fn restarts(
    runtime: &tokio::runtime::Runtime,
    server: &mut ServerProcess,
    target: &Target,
    args: &Args,
    fill: &Filled,
) -> Result<bool, BoxError> {
    let mut ok = true;
    let limit = Duration::from_secs(600);
    let report = |label: &str, server: &ServerProcess, ready: Duration| -> Result<bool, BoxError> {
        let pid = server.pid().ok_or("no pid")?;
        let rss = support::rss_bytes(pid).unwrap_or(0) as f64;
        let (active, inactive) = runtime.block_on(check_sample(target, &fill.sample))?;
        println!(
            "scale: {label}: ready in {:.2} s ({:.0} events/s over {:.0} events); RSS {:.0} MiB = {:.0} B/token; sampled tokens active {active}, inactive {inactive}",
            ready.as_secs_f64(),
            fill.events / ready.as_secs_f64().max(1e-9),
            fill.events,
            rss / 1048576.0,
            rss / fill.tokens.max(1.0),
        );
        Ok(inactive == 0)
    };
    let stopped = server.terminate(limit)?;
    println!("scale: SIGTERM: exited in {:.2} s", stopped.as_secs_f64());
    let ready = server.start(limit)?;
    ok &= report("restart after SIGTERM (snapshot + tail)", server, ready)?;

    let stopped = server.terminate(limit)?;
    println!("scale: SIGTERM: exited in {:.2} s", stopped.as_secs_f64());
    let snapshot = server.data.join(&args.snapshot_path);
    let removed = if snapshot.is_dir() {
        std::fs::remove_dir_all(&snapshot).is_ok()
    } else {
        std::fs::remove_file(&snapshot).is_ok()
    };
    println!("scale: {} {}", if removed { "deleted the snapshot" } else { "no snapshot at" }, snapshot.display());
    let ready = server.start(limit)?;
    ok &= report("restart without a snapshot (full replay)", server, ready)?;

    server.kill()?;
    println!("scale: SIGKILL sent");
    let ready = server.start(limit)?;
    ok &= report("restart after SIGKILL", server, ready)?;
    Ok(ok)
}

/// The ledger file's length and the bytes it occupies on disk: redb grows a file by doubling
/// its length (up to 4 GiB, then a region at a time) and never writes the pages it has not
/// allocated yet, so the length runs up to twice the data while the blocks are what it holds.
fn file_sizes(path: &std::path::Path) -> (f64, f64) {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map_or((0.0, 0.0), |m| (m.len() as f64, (m.blocks() * 512) as f64))
}
