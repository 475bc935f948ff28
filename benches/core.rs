//! Criterion micro-benchmarks of the hot pure pieces of a token request, and of the ledger
//! writer end to end in-process: a real redb file in a temporary directory, real fsync'd
//! group commits, `N` concurrent submitters. Run with `cargo bench --bench core`.
//!
//! After the writer benchmarks the writer's own counters are printed (batches, commands per
//! batch, mean commit time), which show how well group commit amortises the fsync.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::RwLock;
use tokenledger::clock::{Clock as _, SystemClock};
use tokenledger::crypto::ServerKeys;
use tokenledger::crypto::credential::keyed_digest;
use tokenledger::crypto::random_bytes;
use tokenledger::crypto::token::{self, TokenKind};
use tokenledger::domain::DirectoryCommand;
use tokenledger::domain::State;
use tokenledger::domain::{Command, FreshIds, Issue, IssueGrant, Outcome};
use tokenledger::domain::{FamilyId, TokenId};
use tokenledger::ledger::{self, LedgerHandle, WriterConfig, codec, index};
use tokenledger::ledger::{Append, Store};
use tokenledger::proto::ledger::{
    ClientCreated, Event, GrantType, InstitutionCreated, IssuedToken, TokensIssued, event,
};
use tokenledger::wire::form;
use tokenledger::wire::{self, HeaderValues};

const BASIC: &[u8] = b"Basic YmVuY2g6YmVuY2gtc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWY=";

fn keys() -> ServerKeys {
    ServerKeys::from_secret(1, &[7; 32])
}

fn token_strings(c: &mut Criterion) {
    let keys = keys();
    let id = TokenId([9; 16]);
    let text = token::encode(&keys, TokenKind::Access, &id);
    let mut forged = text.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap_or_default();
    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| b.iter(|| token::encode(&keys, TokenKind::Access, black_box(&id))));
    group.bench_function("decode_valid", |b| {
        b.iter(|| {
            let decoded = token::decode(&keys, black_box(&text));
            assert!(decoded.is_some());
            decoded
        })
    });
    group.bench_function("decode_forged", |b| {
        b.iter(|| {
            let decoded = token::decode(&keys, black_box(&forged));
            assert!(decoded.is_none());
            decoded
        })
    });
    group.finish();
}

fn request_parsing(c: &mut Criterion) {
    let introspect_body =
        format!("token={}&token_type_hint=access_token", token::encode(&keys(), TokenKind::Access, &TokenId([3; 16])));
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (name, body) in [
        ("form_token", &b"grant_type=client_credentials"[..]),
        ("form_token_scopes", &b"grant_type=client_credentials&scopes=api%3Aread%2Capi%3Awrite"[..]),
        ("form_introspect", introspect_body.as_bytes()),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let params = form::parse(black_box(body));
                assert!(params.is_ok());
                params
            })
        });
    }
    group.bench_function("basic_credentials", |b| {
        b.iter(|| {
            let credentials = wire::basic_credentials(HeaderValues::One(black_box(BASIC)));
            assert!(credentials.is_ok());
            credentials
        })
    });
    group.bench_function("transaction_id", |b| {
        b.iter(|| {
            let id = wire::transaction_id(HeaderValues::One(black_box(b"0f8fad5b-d9cb-469f-a165-70867728950e")));
            assert!(id.is_ok());
            id
        })
    });
    group.finish();
}

/// A fresh ledger in a temporary directory with the bench institution and client, and its
/// writer thread running.
struct Bench {
    _dir: tempfile::TempDir,
    handle: LedgerHandle,
    client_id: Arc<str>,
}

async fn open_ledger() -> Bench {
    let dir = tempfile::Builder::new().prefix("tl-core-bench-").tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let now_ms = SystemClock.now_ms();
    let (store, state, _) =
        ledger::open(&dir.path().join("ledger.redb"), now_ms, |_| {}).unwrap_or_else(|e| panic!("open ledger: {e}"));
    let handle = LedgerHandle::spawn(store, Arc::new(RwLock::new(state)), WriterConfig::default())
        .unwrap_or_else(|e| panic!("spawn writer: {e}"));
    let setup = [
        DirectoryCommand::CreateInstitution(InstitutionCreated {
            institution_id: "01001".to_owned(),
            name: "Bench".to_owned(),
        }),
        DirectoryCommand::CreateClient(ClientCreated {
            client_id: "bench".to_owned(),
            name: "bench".to_owned(),
            institution_ids: vec!["01001".to_owned()],
            grant_types: vec!["client_credentials".to_owned()],
            scopes: vec!["api:read".to_owned()],
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 3600,
            introspect: true,
            secret: Some(keyed_digest(&keys(), "bench", "bench-secret")),
            ..Default::default()
        }),
    ];
    for command in setup {
        let reply = handle.submit(Command::Directory(command), uuid::Uuid::new_v4().to_string()).await;
        assert!(matches!(reply, Ok(Ok(_))), "set-up failed: {reply:?}");
    }
    Bench { _dir: dir, handle, client_id: Arc::from("bench") }
}

fn issue(client_id: &Arc<str>) -> Command {
    Command::Issue(Issue {
        client_id: client_id.clone(),
        institution_id: Some("01001".to_owned()),
        grant: IssueGrant::ClientCredentials,
        requested_scopes: None,
        fingerprint: random_bytes(),
        family_lifetime_max_ms: tokenledger::domain::FAMILY_LIFETIME_MAX_MS_DEFAULT,
        fresh: FreshIds {
            access: TokenId(random_bytes()),
            refresh: TokenId(random_bytes()),
            family: FamilyId(random_bytes()),
        },
    })
}

/// Submits `total` issue commands from `concurrency` tasks (each waits for its own commit
/// before the next submit, like a closed-loop client) and returns the elapsed time.
async fn submit_issues(bench: &Bench, total: u64, concurrency: u64) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency as usize);
    for task in 0..concurrency {
        let n = total / concurrency + u64::from(task < total % concurrency);
        let handle = bench.handle.clone();
        let client_id = bench.client_id.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..n {
                let reply = handle.submit(issue(&client_id), uuid::Uuid::new_v4().to_string()).await;
                assert!(matches!(reply, Ok(Ok(Outcome::Issued(_)))), "issue failed: {reply:?}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("submitter: {e}"));
    }
    started.elapsed()
}

fn writer(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("runtime: {e}"));
    let mut group = c.benchmark_group("writer_issue_fsync");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.warm_up_time(Duration::from_secs(2));
    for concurrency in [1u64, 8, 64, 256] {
        let bench = runtime.block_on(open_ledger());
        let status = bench.handle.status();
        let before = counters(status);
        let measured = std::cell::Cell::new(Duration::ZERO);
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("concurrency_{concurrency}")),
            &concurrency,
            |b, &concurrency| {
                b.iter_custom(|iters| {
                    let took = runtime.block_on(submit_issues(&bench, iters.max(1), concurrency));
                    measured.set(measured.get() + took);
                    took
                })
            },
        );
        let after = counters(status);
        let batches = after.0 - before.0;
        let commands = after.1 - before.1;
        let commit_us = after.2 - before.2;
        if batches == 0 {
            // This benchmark was filtered out.
            runtime.block_on(bench.handle.stop());
            continue;
        }
        eprintln!(
            "writer counters, concurrency {concurrency}: {commands} commands in {batches} batches \
             = {:.1} per batch; mean commit (redb append + fsync) {:.0} µs; commits took {:.0}% \
             of the measured time",
            commands as f64 / batches.max(1) as f64,
            commit_us as f64 / batches.max(1) as f64,
            100.0 * commit_us as f64 / measured.get().as_micros().max(1) as f64,
        );
        runtime.block_on(bench.handle.stop());
    }
    group.finish();
}

fn counters(status: &ledger::WriterStatus) -> (u64, u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (status.batches.load(Relaxed), status.commands.load(Relaxed), status.commit_micros_total.load(Relaxed))
}

/// How the 16-byte token ids of a what-if run are drawn.
#[derive(Clone, Copy)]
enum Ids {
    /// 16 random bytes (the first release's ids): every index entry lands on its own page.
    Random,
    /// As the server mints them (`ledger::token_ids`): masked creation time and 8 random bytes,
    /// indexed by creation time, so new tokens share the right edge of the index B-tree.
    TimeOrdered,
}

/// `Store::append` alone (no writer, no decide), batches of 64 client_credentials issue
/// events with the index keys the server writes, on a ledger already holding 100,000 of them.
/// Also prints the bytes the batch wrote to the file (`wchar` of /proc/self/io), which does not
/// depend on how busy the machine is.
fn store_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_append_64_issues");
    group.throughput(Throughput::Elements(64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for (name, ids) in [("random_ids", Ids::Random), ("time_ordered_ids", Ids::TimeOrdered)] {
        let dir =
            tempfile::Builder::new().prefix("tl-core-store-").tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let store = Store::open(&dir.path().join("ledger.redb")).unwrap_or_else(|e| panic!("open store: {e}"));
        let state = State::default();
        let mut chain = Chain { seq: 0, hash: [0; 32], ids, scheme: store.token_ids().clone() };
        for _ in 0..200 {
            let batch = chain.batch(&state, 500);
            store.append(&batch).unwrap_or_else(|e| panic!("prefill: {e}"));
        }
        let (mut batches, mut bytes) = (0u64, 0u64);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let batch = chain.batch(&state, 64);
                    let written = written_bytes();
                    let started = Instant::now();
                    store.append(&batch).unwrap_or_else(|e| panic!("append: {e}"));
                    took += started.elapsed();
                    bytes += written_bytes().saturating_sub(written);
                    batches += 1;
                }
                took
            })
        });
        if batches == 0 {
            continue;
        }
        eprintln!(
            "store_append {name}: {:.0} KiB written per batch of 64 issue events",
            bytes as f64 / batches.max(1) as f64 / 1024.0
        );
    }
    group.finish();
}

struct Chain {
    seq: u64,
    hash: [u8; 32],
    ids: Ids,
    scheme: std::sync::Arc<tokenledger::ledger::TokenIdScheme>,
}

impl Chain {
    fn token_id(&self) -> Vec<u8> {
        match self.ids {
            Ids::Random => random_bytes::<16>().to_vec(),
            Ids::TimeOrdered => self.scheme.token_id(SystemClock.now_ms(), random_bytes::<8>()).0.to_vec(),
        }
    }

    fn batch(&mut self, state: &State, n: usize) -> Vec<Append> {
        let now_ms = SystemClock.now_ms();
        (0..n)
            .map(|_| {
                self.seq += 1;
                let event = Event {
                    kind: Some(event::Kind::TokensIssued(TokensIssued {
                        grant_type: GrantType::ClientCredentials as i32,
                        client_id: "bench".to_owned(),
                        institution_id: "01001".to_owned(),
                        access: Some(IssuedToken {
                            token_id: self.token_id(),
                            expires_at_ms: now_ms + 3_600_000,
                            scopes: vec!["api:read".to_owned()],
                        }),
                        request_fingerprint: random_bytes::<32>().to_vec(),
                        ..Default::default()
                    })),
                };
                let transaction_id = uuid::Uuid::new_v4().to_string();
                let sealed = codec::seal(&self.hash, self.seq, now_ms, &transaction_id, &event);
                self.hash = sealed.hash;
                let index_keys = index::keys_for(state, &self.scheme, &event, self.seq);
                Append { sealed, index_keys }
            })
            .collect()
    }
}

/// Bytes this process has passed to write syscalls so far (`wchar`, /proc/self/io).
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|text| text.lines().find_map(|l| l.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

criterion_group!(benches, token_strings, request_parsing, writer, store_append);
criterion_main!(benches);
