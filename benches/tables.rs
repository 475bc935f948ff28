//! The projection tables at bank scale, in-process: memory per token, the worst single insert
//! while the tables grow, lookups with a reader on each core, snapshot write and load, and the
//! incremental purge, against today's `State` maps (`FastMap<TokenId, Token>` filled by the real
//! `apply`) measured in the same run.
//!
//! ```sh
//! cargo bench --bench tables                                 # 10M tokens, baseline at 2M
//! cargo bench --bench tables -- --tokens 1000000 --baseline-tokens 500000
//! ```
//!
//! Each measurement runs in a child process of its own (this binary again with `--child`), so
//! resident memory is the fill's alone. The fill is a synthetic ledger at 40 000 events per
//! second of ledger time: 80% client_credentials issuances (10 clients, 2 institutions, one
//! scope list each), 10% password sign-ins (a new family: access + refresh token, 100 000
//! users), 10% refreshes of one of the 100 000 most recent sessions (access + refresh, the old
//! refresh token rotated). Every request carries a transactionId, so the retry index holds the
//! last 60 s (2.4M answers at this rate). The purge runs as the server would run it: the new
//! tables a budgeted step every 100 ms of ledger time, today's maps `purge_expired` every 30 s.

use std::hint::black_box;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use parking_lot::RwLock;
use tokenledger::domain::ids::{FamilyId, TokenId};
use tokenledger::domain::scope::ScopeList;
use tokenledger::domain::state::UserIdentity;
use tokenledger::domain::tables::{Issuance, NewToken, PurgeBudget, RequestAnswer, TablesConfig, TokenTables};
use tokenledger::domain::{Recorded, State, apply};
use tokenledger::ledger::snapshot::{SNAPSHOT_HEADER_LEN, SnapshotFile, write_snapshot};
use tokenledger::proto::ledger::{
    ClientCreated, Event, GrantType, InstitutionCreated, IssuedToken, TokensIssued, UserCreated, UserType, event,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug, Clone)]
#[command(name = "tables")]
struct Args {
    /// Live tokens to fill the new tables to
    #[arg(long, default_value_t = 10_000_000)]
    tokens: u64,
    /// Live tokens to fill today's maps to (they cost ~870 B each)
    #[arg(long, default_value_t = 2_000_000)]
    baseline_tokens: u64,
    /// Seconds of each lookup measurement
    #[arg(long, default_value_t = 3)]
    lookup_secs: u64,
    /// Internal: run one measurement (`tables` or `baseline`)
    #[arg(long)]
    child: Option<String>,
    #[arg(long, hide = true)]
    bench: bool,
}

const EVENTS_PER_SEC: i64 = 40_000;
const T0_MS: i64 = 1_760_000_000_000;
const ACCESS_TTL_MS: i64 = 3_600_000;
const REFRESH_TTL_MS: i64 = 30 * 86_400_000;
const USERS: usize = 100_000;
const CLIENTS: usize = 10;
const SESSIONS_KEPT: usize = 100_000;
const LOOKUP_SAMPLE: usize = 1 << 18;

fn main() -> ExitCode {
    let args = Args::parse();
    match args.child.as_deref() {
        Some("tables") => tables_child(&args),
        Some("baseline") => baseline_child(&args),
        Some("lookups") => lookups_child(&args),
        Some(other) => {
            eprintln!("unknown child {other}");
            return ExitCode::FAILURE;
        }
        None => return driver(&args),
    }
    ExitCode::SUCCESS
}

fn driver(args: &Args) -> ExitCode {
    print_machine();
    let Ok(me) = std::env::current_exe() else { return ExitCode::FAILURE };
    let mut lookups = Vec::new();
    // The lookups child fills both structures to the baseline's size in one process and
    // alternates between them: the fairest ratio on a noisy machine.
    for (child, tokens) in [("baseline", args.tokens), ("tables", args.tokens), ("lookups", args.baseline_tokens)] {
        let output = Command::new(&me)
            .args(["--child", child, "--tokens", &tokens.to_string()])
            .args(["--baseline-tokens", &args.baseline_tokens.to_string()])
            .args(["--lookup-secs", &args.lookup_secs.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output();
        let Ok(output) = output else {
            eprintln!("child {child} did not start");
            return ExitCode::FAILURE;
        };
        let text = String::from_utf8_lossy(&output.stdout);
        print!("{text}");
        if !output.status.success() {
            eprintln!("child {child} failed: {:?}", output.status);
            return ExitCode::FAILURE;
        }
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("#lookup ") {
                let numbers: Vec<f64> = rest.split_whitespace().filter_map(|n| n.parse().ok()).collect();
                if numbers.len() == 3 {
                    lookups.push((child, numbers));
                }
            }
        }
    }
    if let [(_, today), (_, new)] = &lookups[..] {
        println!(
            "\n## lookup ratio, tables at {} tokens / today's map at {} tokens, same run: alone {:.2}x, with a reader on each core {:.2}x and {:.2}x",
            args.tokens,
            args.baseline_tokens,
            new[0] / today[0],
            new[1] / today[1],
            new[2] / today[2]
        );
    }
    print_machine();
    ExitCode::SUCCESS
}

fn print_machine() {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let avail = mem.lines().find(|l| l.starts_with("MemAvailable")).unwrap_or("");
    println!("machine: {cpus} CPUs, loadavg {}, {avail}", load.trim());
}

/// This thread's involuntary context switches so far.
fn involuntary_switches() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("nonvoluntary_ctxt_switches:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}

/// splitmix64: reproducible ids and choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next().to_le_bytes());
        id[8..].copy_from_slice(&self.next().to_le_bytes());
        id
    }
}

/// One synthetic event of the mix.
enum Step {
    Credentials { client: usize, institution: usize },
    SignIn { user: usize },
    Refresh { session: usize },
}

/// The mix, shared by both fills.
struct Mix {
    rng: Rng,
    events: u64,
    /// (family, live refresh token, user) of the most recent sessions.
    sessions: Vec<(FamilyId, TokenId, usize)>,
    next_session: usize,
}

impl Mix {
    fn new() -> Self {
        Self { rng: Rng(42), events: 0, sessions: Vec::with_capacity(SESSIONS_KEPT), next_session: 0 }
    }

    fn now_ms(&self) -> i64 {
        T0_MS + self.events as i64 * 1000 / EVENTS_PER_SEC
    }

    fn step(&mut self) -> Step {
        self.events += 1;
        match self.rng.below(10) {
            0 => Step::SignIn { user: self.rng.below(USERS) },
            1 if !self.sessions.is_empty() => Step::Refresh { session: self.rng.below(self.sessions.len()) },
            _ => Step::Credentials { client: self.rng.below(CLIENTS), institution: self.rng.below(2) },
        }
    }

    fn remember(&mut self, family: FamilyId, refresh: TokenId, user: usize) {
        if self.sessions.len() < SESSIONS_KEPT {
            self.sessions.push((family, refresh, user));
        } else {
            self.sessions[self.next_session] = (family, refresh, user);
            self.next_session = (self.next_session + 1) % SESSIONS_KEPT;
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn latency_line(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, p99.99 {:.1} µs, max {:.3} ms",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.value_at_quantile(0.9999) as f64 / 1e3,
        h.max() as f64 / 1e6
    )
}

/// The longest gap between two clock reads in a tight loop over `d`: the machine's scheduling
/// noise, which bounds what any single-operation latency below can show.
fn noise(d: Duration) -> String {
    let started = Instant::now();
    let mut last = started;
    let mut worst = Duration::ZERO;
    while last - started < d {
        let now = Instant::now();
        worst = worst.max(now - last);
        last = now;
    }
    format!(
        "scheduling noise: the longest gap between clock reads in a {} s loop was {:.3} ms",
        d.as_secs(),
        worst.as_secs_f64() * 1e3
    )
}

fn steps(total: u64) -> Vec<u64> {
    let mut steps: Vec<u64> = [1_000_000, 2_000_000, 5_000_000].into_iter().filter(|s| *s < total).collect();
    steps.push(total);
    steps
}

// ---------------------------------------------------------------- the new tables

struct World {
    clients: Vec<Arc<str>>,
    institutions: Vec<Arc<str>>,
    scopes: Vec<ScopeList>,
    users: Vec<Arc<UserIdentity>>,
    app: Arc<str>,
}

impl World {
    fn new() -> Self {
        Self {
            clients: (0..CLIENTS).map(|i| Arc::from(format!("client-{i}").as_str())).collect(),
            institutions: vec!["01001".into(), "02002".into()],
            scopes: (0..CLIENTS)
                .map(|i| vec![Box::from(format!("api:read{i}").as_str()), Box::from("api:write")].into())
                .collect(),
            users: (0..USERS)
                .map(|i| {
                    Arc::new(UserIdentity {
                        institution_id: "01001".into(),
                        login_id: format!("user{i}").into(),
                        institution_user_id: format!("IU{i:08}").into(),
                        host_user_id: String::new(),
                        user_type: UserType::Retail,
                    })
                })
                .collect(),
            app: "mobile-app".into(),
        }
    }
}

/// Applies the next event of the mix; returns the token ids it minted.
fn next_issue(tables: &TokenTables, world: &World, mix: &mut Mix) -> (Duration, [Option<TokenId>; 2]) {
    let step = mix.step();
    let seq = mix.events;
    let now = mix.now_ms();
    let txid = uuid::Uuid::from_bytes(mix.rng.id()).to_string();
    let mut fingerprint = [0u8; 32];
    fingerprint[..16].copy_from_slice(&mix.rng.id());
    let access = TokenId(mix.rng.id());
    let request = Some(RequestAnswer { transaction_id: &txid, fingerprint: &fingerprint });
    let base = Issuance {
        seq,
        recorded_at_ms: now,
        decided_at_ms: now,
        grant_type: GrantType::ClientCredentials,
        client_id: &world.app,
        institution_id: &world.institutions[0],
        user: None,
        family: None,
        access: None,
        refresh: None,
        rotated_from: None,
        request,
    };
    let (issuance, refresh, session) = match step {
        Step::Credentials { client, institution } => {
            let issuance = Issuance {
                client_id: &world.clients[client],
                institution_id: &world.institutions[institution],
                access: Some(NewToken {
                    id: access,
                    expires_at_ms: now + ACCESS_TTL_MS,
                    scopes: &world.scopes[client],
                }),
                ..base
            };
            (issuance, None, None)
        }
        Step::SignIn { user } => {
            let family = FamilyId(mix.rng.id());
            let refresh = TokenId(mix.rng.id());
            let issuance = Issuance {
                grant_type: GrantType::Password,
                user: Some(&world.users[user]),
                family: Some(family),
                access: Some(NewToken { id: access, expires_at_ms: now + ACCESS_TTL_MS, scopes: &world.scopes[0] }),
                refresh: Some(NewToken { id: refresh, expires_at_ms: now + REFRESH_TTL_MS, scopes: &world.scopes[0] }),
                ..base
            };
            (issuance, Some(refresh), Some((family, user, None)))
        }
        Step::Refresh { session } => {
            let (family, old, user) = mix.sessions[session];
            let refresh = TokenId(mix.rng.id());
            let issuance = Issuance {
                grant_type: GrantType::RefreshToken,
                user: Some(&world.users[user]),
                family: Some(family),
                access: Some(NewToken { id: access, expires_at_ms: now + ACCESS_TTL_MS, scopes: &world.scopes[0] }),
                refresh: Some(NewToken { id: refresh, expires_at_ms: now + REFRESH_TTL_MS, scopes: &world.scopes[0] }),
                rotated_from: Some(old),
                ..base
            };
            (issuance, Some(refresh), Some((family, user, Some(session))))
        }
    };
    let started = Instant::now();
    let result = tables.issue(&issuance);
    let took = started.elapsed();
    if result.is_err() {
        eprintln!("an interner is full");
    }
    tables.advance(seq);
    if let (Some(refresh), Some((family, user, slot))) = (refresh, session) {
        match slot {
            Some(slot) => mix.sessions[slot].1 = refresh,
            None => mix.remember(family, refresh, user),
        }
    }
    (took, [Some(access), refresh])
}

fn tables_child(args: &Args) {
    let world = World::new();
    let tables = Arc::new(TokenTables::new(TablesConfig::default()));
    let mut mix = Mix::new();
    let mut sample: Vec<TokenId> = Vec::with_capacity(LOOKUP_SAMPLE);
    let rss_base = rss();
    println!("\n## new tables (domain::tables), fill to {} tokens", args.tokens);
    println!("{}", noise(Duration::from_secs(1)));
    println!(
        "base RSS {:.1} MiB (100k user identities, 10 clients, the bench's own state)",
        rss_base as f64 / 1048576.0
    );
    let mut whole = histogram();
    let mut outside = histogram();
    let mut purges = histogram();
    let mut purges_tokens = histogram();
    let mut purges_retry = histogram();
    let mut purge_ms = mix.now_ms();
    let switches_before = involuntary_switches();
    let fill_started = Instant::now();
    let mut last_end = Instant::now();
    for target in steps(args.tokens) {
        let mut step = histogram();
        let mut worst_at = 0u64;
        while (tables.token_count() as u64) < target {
            let before_issue = Instant::now();
            let _ = outside.record(((before_issue - last_end).as_nanos() as u64).max(1));
            let (took, minted) = next_issue(&tables, &world, &mut mix);
            last_end = Instant::now();
            let ns = took.as_nanos() as u64;
            if ns > step.max() {
                worst_at = tables.token_count() as u64;
            }
            let _ = step.record(ns.max(1));
            for id in minted.into_iter().flatten() {
                if sample.len() < LOOKUP_SAMPLE {
                    sample.push(id);
                } else if mix.rng.below(64) == 0 {
                    let slot = mix.rng.below(LOOKUP_SAMPLE);
                    sample[slot] = id;
                }
            }
            if mix.now_ms() >= purge_ms + 100 {
                purge_ms = mix.now_ms();
                // The step in its two parts, timed apart: the token and family shards, then
                // the retry ring (in batches under the retry lock).
                let budget = PurgeBudget::default();
                let started = Instant::now();
                tables.purge_step(purge_ms, PurgeBudget { retry_entries: 0, ..budget });
                let middle = Instant::now();
                tables.purge_step(purge_ms, PurgeBudget { token_shards: 0, family_shards: 0, ..budget });
                let ended = Instant::now();
                let _ = purges.record(((ended - started).as_nanos() as u64).max(1));
                let _ = purges_tokens.record(((middle - started).as_nanos() as u64).max(1));
                let _ = purges_retry.record(((ended - middle).as_nanos() as u64).max(1));
                last_end = Instant::now();
            }
        }
        let _ = whole.add(&step);
        report_size(&tables, rss_base, &mix);
        println!(
            "  insert latency of this step ({} events): {}; worst at {} tokens",
            step.len(),
            latency_line(&step),
            worst_at
        );
    }
    println!(
        "fill: {} events in {:.1} s ({:.0} events/s on one core), all steps: {}",
        mix.events,
        fill_started.elapsed().as_secs_f64(),
        mix.events as f64 / fill_started.elapsed().as_secs_f64(),
        latency_line(&whole)
    );
    println!(
        "the same loop's work between inserts (id and UUID generation; the noise any insert also sees): {}",
        latency_line(&outside)
    );
    println!(
        "involuntary context switches of this thread during the fill: {} (the machine's other load preempting it)",
        involuntary_switches().saturating_sub(switches_before)
    );
    println!(
        "purge step during the fill (every 100 ms of ledger time, {} steps): {}",
        purges.len(),
        latency_line(&purges)
    );
    println!("  of which token and family shards: {}", latency_line(&purges_tokens));
    println!("  of which the retry ring: {}", latency_line(&purges_retry));
    lookups(args, &sample, |id| tables.token(id).map(|v| v.expires_at_ms).unwrap_or(0));
    snapshot(&tables, &world, &mut mix);
    purge(&tables, &mix, rss_base);
}

fn report_size(tables: &TokenTables, rss_base: u64, mix: &Mix) {
    let tokens = tables.token_count() as f64;
    let m = tables.memory();
    let rss_now = rss();
    println!(
        "at {} tokens ({} families, {} retry answers, {} events): RSS {:.0} MiB, RSS growth / token {:.1} B, accounting / token {:.1} B",
        tables.token_count(),
        tables.family_count(),
        tables.retry_count(),
        mix.events,
        rss_now as f64 / 1048576.0,
        (rss_now.saturating_sub(rss_base)) as f64 / tokens,
        m.total_bytes() as f64 / tokens
    );
    println!(
        "  accounting / token: slots {:.1} B ({} entries, {:.1} B each), sides {:.1} B, rare {:.1} B, families {:.1} B ({:.1} B each), retry ring {:.1} B + index {:.1} B ({:.1} B per answer), interned {:.2} B",
        m.token_slots.bytes as f64 / tokens,
        m.token_slots.entries,
        m.token_slots.bytes as f64 / m.token_slots.entries.max(1) as f64,
        m.token_sides.bytes as f64 / tokens,
        m.token_rare.bytes as f64 / tokens,
        m.families.bytes as f64 / tokens,
        m.families.bytes as f64 / m.families.entries.max(1) as f64,
        m.retry_entries.bytes as f64 / tokens,
        m.retry_index.bytes as f64 / tokens,
        (m.retry_entries.bytes + m.retry_index.bytes) as f64 / m.retry_entries.entries.max(1) as f64,
        m.interned.bytes as f64 / tokens,
    );
}

/// Lookup rate with one thread, then with one thread on each core.
fn lookups(args: &Args, sample: &[TokenId], lookup: impl Fn(&TokenId) -> i64 + Sync) {
    let duration = Duration::from_secs(args.lookup_secs);
    let run = |offset: usize| {
        let started = Instant::now();
        let mut n = 0usize;
        let mut sum = 0i64;
        while started.elapsed() < duration {
            for i in 0..1024 {
                sum = sum.wrapping_add(lookup(&sample[(offset + n + i * 7919) % sample.len()]));
            }
            n += 1024;
        }
        black_box(sum);
        started.elapsed().as_nanos() as f64 / n as f64
    };
    let alone = run(0);
    let (a, b) = std::thread::scope(|s| {
        let other = s.spawn(|| run(12_345));
        let mine = run(0);
        (mine, other.join().unwrap_or(f64::NAN))
    });
    println!(
        "lookup (random id of {} sampled): {:.0} ns/op alone; with a reader on each core {:.0} and {:.0} ns/op ({:.1} M lookups/s together)",
        sample.len(),
        alone,
        a,
        b,
        1e3 / a + 1e3 / b
    );
    println!("#lookup {alone} {a} {b}");
}

fn snapshot(tables: &Arc<TokenTables>, world: &World, mix: &mut Mix) {
    let tokens = tables.token_count();
    let started = Instant::now();
    let mut stream = Vec::new();
    let summary = match tables.snapshot().write_to(&mut stream) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("snapshot: {e}");
            return;
        }
    };
    let write = started.elapsed();
    println!(
        "snapshot (quiescent): {} chunks, {:.0} MiB, {:.1} B per token (all tables), written in {:.2} s ({:.0} MB/s)",
        summary.chunks,
        summary.bytes as f64 / 1048576.0,
        summary.bytes as f64 / tokens as f64,
        write.as_secs_f64(),
        summary.bytes as f64 / 1e6 / write.as_secs_f64()
    );
    for workers in [0, 1] {
        let started = Instant::now();
        match TokenTables::load_parallel(&mut stream.as_slice(), *tables.config(), workers) {
            Ok((loaded, info)) => {
                let load = started.elapsed();
                let same = loaded.token_count() == tokens && loaded.family_count() == tables.family_count();
                println!(
                    "snapshot load with {} thread(s): {:.2} s ({:.1} M tokens/s), replay from seq {}, counts equal: {same}",
                    workers + 1,
                    load.as_secs_f64(),
                    tokens as f64 / 1e6 / load.as_secs_f64(),
                    info.replay_from_seq
                );
                drop(loaded);
            }
            Err(e) => println!("snapshot load failed: {e}"),
        }
    }
    drop(stream);
    snapshot_file(tables, world, mix);
    // The same while the writer goes on at full speed on the other core.
    let done = AtomicBool::new(false);
    let during = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut h = histogram();
            while !done.load(Ordering::Relaxed) {
                let (took, _) = next_issue(tables, world, mix);
                let _ = h.record((took.as_nanos() as u64).max(1));
            }
            h
        });
        let started = Instant::now();
        let mut sink = CountingSink(0);
        let result = tables.snapshot().write_to(&mut sink);
        let took = started.elapsed();
        done.store(true, Ordering::Relaxed);
        let h = writer.join().unwrap_or_else(|_| histogram());
        (result.map(|s| s.bytes).unwrap_or(0), took, h)
    });
    println!(
        "snapshot while the writer inserts on the other core: {:.2} s, {} inserts meanwhile: {}",
        during.1.as_secs_f64(),
        during.2.len(),
        latency_line(&during.2)
    );
}

/// The snapshot file (`ledger::snapshot`) in a temporary directory beside the data: written
/// with its fsyncs and rename, loaded back (from the page cache: the file was just written),
/// and written again while the writer inserts on the other core.
fn snapshot_file(tables: &Arc<TokenTables>, world: &World, mix: &mut Mix) {
    let dir = match tempfile::tempdir_in(std::env::var_os("TABLES_SNAPSHOT_DIR").unwrap_or_else(|| ".".into())) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("snapshot file: no temporary directory: {e}");
            return;
        }
    };
    let tokens = tables.token_count() as f64;
    let chain = |seq: u64| Some([(seq % 251) as u8; 32]);
    let started = Instant::now();
    let header = match write_snapshot(dir.path(), tables, chain) {
        Ok(header) => header,
        Err(e) => {
            eprintln!("snapshot file: {e}");
            return;
        }
    };
    let write = started.elapsed();
    let bytes = SNAPSHOT_HEADER_LEN as u64 + header.body_len;
    println!(
        "snapshot file (quiescent, fsync + rename): {:.0} MiB, {:.1} B per token on disk, written in {:.2} s ({:.0} MB/s), covers seq {}, replay from {}",
        bytes as f64 / 1048576.0,
        bytes as f64 / tokens,
        write.as_secs_f64(),
        bytes as f64 / 1e6 / write.as_secs_f64(),
        header.ledger_seq,
        header.replay_from_seq
    );
    for workers in [0, 1] {
        let started = Instant::now();
        let loaded = SnapshotFile::open(dir.path()).and_then(|file| file.load(*tables.config(), workers));
        let load = started.elapsed();
        match loaded {
            Ok((loaded, info)) => {
                let same =
                    loaded.token_count() == tables.token_count() && loaded.family_count() == tables.family_count();
                println!(
                    "snapshot file load (checksums checked) with {} thread(s): {:.2} s ({:.1} M tokens/s), replay from seq {}, counts equal: {same}",
                    workers + 1,
                    load.as_secs_f64(),
                    tokens / 1e6 / load.as_secs_f64(),
                    info.replay_from_seq
                );
            }
            Err(e) => println!("snapshot file load failed: {e}"),
        }
    }
    let done = AtomicBool::new(false);
    let (result, took, h) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut h = histogram();
            while !done.load(Ordering::Relaxed) {
                let (took, _) = next_issue(tables, world, mix);
                let _ = h.record((took.as_nanos() as u64).max(1));
            }
            h
        });
        let started = Instant::now();
        let result = write_snapshot(dir.path(), tables, chain);
        let took = started.elapsed();
        done.store(true, Ordering::Relaxed);
        (result, took, writer.join().unwrap_or_else(|_| histogram()))
    });
    match result {
        Ok(header) => println!(
            "snapshot file while the writer inserts on the other core: {:.2} s, covers seq {} (replay from {}), {} inserts meanwhile: {}",
            took.as_secs_f64(),
            header.ledger_seq,
            header.replay_from_seq,
            h.len(),
            latency_line(&h)
        ),
        Err(e) => println!("snapshot file while the writer inserts failed: {e}"),
    }
}

struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        black_box(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn purge(tables: &TokenTables, mix: &Mix, rss_base: u64) {
    // One hour and a minute later every access token and retry answer has expired.
    let now = mix.now_ms() + ACCESS_TTL_MS + 60_000;
    let before = tables.token_count();
    let mut steps = histogram();
    let mut calls = 0usize;
    let started = Instant::now();
    let budget = PurgeBudget::default();
    // One full cycle of the token cursor, from wherever it stands.
    while calls * budget.token_shards < tables.config().token_shards() {
        let t = Instant::now();
        tables.purge_step(now, budget);
        let _ = steps.record((t.elapsed().as_nanos() as u64).max(1));
        calls += 1;
    }
    let worst = Duration::from_nanos(steps.max());
    let rss_now = rss();
    println!(
        "purge of expired access tokens: {} → {} tokens in {calls} steps, {:.2} s in all, steps: p50 {:.2} ms, p99 {:.2} ms, worst {:.2} ms; RSS growth then {:.0} MiB ({:.1} B per remaining token)",
        before,
        tables.token_count(),
        started.elapsed().as_secs_f64(),
        steps.value_at_quantile(0.5) as f64 / 1e6,
        steps.value_at_quantile(0.99) as f64 / 1e6,
        worst.as_secs_f64() * 1e3,
        rss_now.saturating_sub(rss_base) as f64 / 1048576.0,
        rss_now.saturating_sub(rss_base) as f64 / tables.token_count().max(1) as f64
    );
}

// ---------------------------------------------------------------- today's maps (baseline)

fn wrap(kind: event::Kind) -> Event {
    Event { kind: Some(kind) }
}

fn baseline_child(args: &Args) {
    let state = RwLock::new(State::default());
    let mut seq = 0u64;
    let mut record = |state: &mut State, kind: event::Kind, at_ms: i64, txid: &str| -> Duration {
        seq += 1;
        let at = Recorded { seq, recorded_at_ms: at_ms, transaction_id: txid, hash: [0; 32] };
        let event = wrap(kind);
        let started = Instant::now();
        apply(state, at, &event);
        started.elapsed()
    };
    {
        let mut s = state.write();
        for id in ["01001", "02002"] {
            record(
                &mut s,
                event::Kind::InstitutionCreated(InstitutionCreated { institution_id: id.into(), name: id.into() }),
                T0_MS,
                "",
            );
        }
        for i in 0..=CLIENTS {
            let client_id = if i == CLIENTS { "mobile-app".to_owned() } else { format!("client-{i}") };
            let created = ClientCreated {
                client_id,
                institution_ids: vec!["01001".into(), "02002".into()],
                grant_types: vec!["client_credentials".into(), "password".into(), "refresh_token".into()],
                scopes: if i == CLIENTS {
                    vec!["api:read0".into(), "api:write".into()]
                } else {
                    vec![format!("api:read{i}"), "api:write".into()]
                },
                access_token_ttl_secs: 3600,
                refresh_token_ttl_secs: 30 * 86_400,
                ..Default::default()
            };
            record(&mut s, event::Kind::ClientCreated(created), T0_MS, "");
        }
        for i in 0..USERS {
            let user = UserCreated {
                institution_id: "01001".into(),
                login_id: format!("user{i}"),
                institution_user_id: format!("IU{i:08}"),
                ..Default::default()
            };
            record(&mut s, event::Kind::UserCreated(user), T0_MS, "");
        }
    }
    let mut mix = Mix::new();
    let mut sample: Vec<TokenId> = Vec::with_capacity(LOOKUP_SAMPLE);
    let rss_base = rss();
    println!("\n## today's maps (State::tokens etc., the real apply), fill to {} tokens", args.baseline_tokens);
    println!("{}", noise(Duration::from_secs(1)));
    println!(
        "base RSS {:.1} MiB (directory of 100k users, 11 clients, the bench's own state)",
        rss_base as f64 / 1048576.0
    );
    let mut whole = histogram();
    let mut purge_worst = Duration::ZERO;
    let mut purge_ms = mix.now_ms();
    let wire = |id: TokenId, expires_at_ms: i64, scopes: &[&str]| IssuedToken {
        token_id: id.0.to_vec(),
        expires_at_ms,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    for target in steps(args.baseline_tokens) {
        let mut step = histogram();
        while (state.read().tokens_len() as u64) < target {
            let kind = mix.step();
            let now = mix.now_ms();
            let txid = uuid::Uuid::from_bytes(mix.rng.id()).to_string();
            let access = TokenId(mix.rng.id());
            let mut issued = TokensIssued {
                request_fingerprint: mix.rng.id().iter().chain(mix.rng.id().iter()).copied().collect(),
                issued_at_ms: now,
                institution_id: "01001".into(),
                ..Default::default()
            };
            let mut session = None;
            match kind {
                Step::Credentials { client, institution } => {
                    issued.grant_type = GrantType::ClientCredentials as i32;
                    issued.client_id = format!("client-{client}");
                    issued.institution_id = ["01001", "02002"][institution].into();
                    let read = format!("api:read{client}");
                    issued.access = Some(wire(access, now + ACCESS_TTL_MS, &[&read, "api:write"]));
                }
                Step::SignIn { user } => {
                    let (family, refresh) = (FamilyId(mix.rng.id()), TokenId(mix.rng.id()));
                    issued.grant_type = GrantType::Password as i32;
                    issued.client_id = "mobile-app".into();
                    issued.login_id = format!("user{user}");
                    issued.family_id = family.0.to_vec();
                    issued.access = Some(wire(access, now + ACCESS_TTL_MS, &["api:read0", "api:write"]));
                    issued.refresh = Some(wire(refresh, now + REFRESH_TTL_MS, &["api:read0", "api:write"]));
                    session = Some((family, refresh, user, None));
                }
                Step::Refresh { session: slot } => {
                    let (family, old, user) = mix.sessions[slot];
                    let refresh = TokenId(mix.rng.id());
                    issued.grant_type = GrantType::RefreshToken as i32;
                    issued.client_id = "mobile-app".into();
                    issued.login_id = format!("user{user}");
                    issued.family_id = family.0.to_vec();
                    issued.rotated_from = old.0.to_vec();
                    issued.access = Some(wire(access, now + ACCESS_TTL_MS, &["api:read0", "api:write"]));
                    issued.refresh = Some(wire(refresh, now + REFRESH_TTL_MS, &["api:read0", "api:write"]));
                    session = Some((family, refresh, user, Some(slot)));
                }
            }
            let took = {
                let mut s = state.write();
                record(&mut s, event::Kind::TokensIssued(issued), now, &txid)
            };
            let _ = step.record((took.as_nanos() as u64).max(1));
            if let Some((family, refresh, user, slot)) = session {
                match slot {
                    Some(slot) => mix.sessions[slot].1 = refresh,
                    None => mix.remember(family, refresh, user),
                }
            }
            if sample.len() < LOOKUP_SAMPLE {
                sample.push(access);
            } else if mix.rng.below(64) == 0 {
                let slot = mix.rng.below(LOOKUP_SAMPLE);
                sample[slot] = access;
            }
            if now >= purge_ms + 30_000 {
                purge_ms = now;
                let started = Instant::now();
                let mut s = state.write();
                s.purge_expired(now);
                s.tables().purge_all(now);
                purge_worst = purge_worst.max(started.elapsed());
            }
        }
        let _ = whole.add(&step);
        let s = state.read();
        let rss_now = rss();
        println!(
            "at {} tokens ({} families, {} retry answers): RSS {:.0} MiB, RSS growth / token {:.1} B",
            s.tokens_len(),
            s.families_len(),
            s.tables().retry_count(),
            rss_now as f64 / 1048576.0,
            rss_now.saturating_sub(rss_base) as f64 / s.tokens_len() as f64
        );
        println!("  apply latency of this step ({} events): {}", step.len(), latency_line(&step));
    }
    println!("all steps: {}", latency_line(&whole));
    println!(
        "purge_expired every 30 s of ledger time: worst {:.1} ms (every reader waits)",
        purge_worst.as_secs_f64() * 1e3
    );
    lookups(args, &sample, |id| state.read().token(id).map(|t| t.expires_at_ms).unwrap_or(0));
}

/// Lookups of the same ids in both structures, alternating in one process (the fair ratio on
/// a noisy machine): today's map of `Token`s behind the State lock, and the tables.
fn lookups_child(args: &Args) {
    use tokenledger::domain::state::{FastMap, Grant, Token, TokenKind};
    let world = World::new();
    let n = args.tokens as usize;
    let mut rng = Rng(7);
    let ids: Vec<TokenId> = (0..n).map(|_| TokenId(rng.id())).collect();
    let grant = Arc::new(Grant {
        grant_type: GrantType::ClientCredentials,
        client_id: world.clients[0].clone(),
        institution_id: world.institutions[0].clone(),
        user: None,
        family: None,
    });
    let mut map: FastMap<TokenId, Token> = FastMap::default();
    let tables = TokenTables::new(TablesConfig::default());
    for (i, id) in ids.iter().enumerate() {
        let token = Token {
            kind: TokenKind::Access,
            grant: grant.clone(),
            scopes: world.scopes[0].clone(),
            issued_at_ms: T0_MS,
            expires_at_ms: T0_MS + ACCESS_TTL_MS,
            issued_seq: i as u64 + 1,
            end: None,
        };
        map.insert(*id, token);
        let issuance = Issuance {
            seq: i as u64 + 1,
            recorded_at_ms: T0_MS,
            decided_at_ms: T0_MS,
            grant_type: GrantType::ClientCredentials,
            client_id: &world.clients[0],
            institution_id: &world.institutions[0],
            user: None,
            family: None,
            access: Some(NewToken { id: *id, expires_at_ms: T0_MS + ACCESS_TTL_MS, scopes: &world.scopes[0] }),
            refresh: None,
            rotated_from: None,
            request: None,
        };
        let _ = tables.issue(&issuance);
    }
    let state = RwLock::new(map);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    // Independent lookups overlap in the CPU (a batch's throughput); a chain where each lookup
    // picks the next id from the token it found cannot (one request's latency).
    let independent = |f: &dyn Fn(&TokenId) -> u64| {
        let started = Instant::now();
        let mut sum = 0u64;
        for i in &order {
            sum = sum.wrapping_add(f(&ids[*i]));
        }
        black_box(sum);
        started.elapsed().as_nanos() as f64 / n as f64
    };
    let chained = |f: &dyn Fn(&TokenId) -> u64| {
        let started = Instant::now();
        let mut at = 0usize;
        for _ in 0..n {
            let seq = f(&ids[order[at]]);
            at = (seq as usize).wrapping_mul(0x9e37_79b9) % n;
        }
        black_box(at);
        started.elapsed().as_nanos() as f64 / n as f64
    };
    let today = |id: &TokenId| state.read().get(id).map_or(0, |t| t.issued_seq);
    let new = |id: &TokenId| tables.token(id).map_or(0, |t| t.issued_seq);
    println!("\n## lookups of {n} tokens in random order, alternating in one process");
    for round in 1..=3 {
        let (a, b) = (independent(&today), independent(&new));
        let (c, d) = (chained(&today), chained(&new));
        println!(
            "round {round}: independent: today's map {a:.0} ns/op, tables {b:.0} ns/op ({:.2}x); chained: today's map {c:.0} ns/op, tables {d:.0} ns/op ({:.2}x)",
            b / a,
            d / c
        );
    }
}
