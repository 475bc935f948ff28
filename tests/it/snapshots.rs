//! Projection snapshots of a single node (issue 12): a restart loads the snapshot and replays
//! only the tail; the snapshot plus the tail equals a full replay, also for a snapshot written
//! while the writer was issuing tokens; a corrupt or foreign snapshot is refused and the node
//! replays in full and answers as before.

use std::path::Path;
use std::process::Command;

use tokenledger::domain::{State, hex};
use tokenledger::ledger::index::IndexKind;
use tokenledger::ledger::{self, snapshot};
use tokenledger::server::data_dir;

use crate::binary::serve_logged;
use crate::harness::*;

/// The tokens of a mixed load: client_credentials, a sign-in refreshed once (its first
/// refresh token is then rotated), one revoked access token.
async fn mixed_tokens(server: &TestServer, f: &Fixture) -> Vec<String> {
    let mut tokens = Vec::new();
    for handle in server.spawn_issuers(&f.service, 4, 10) {
        tokens.extend(handle.await.unwrap());
    }
    let signed_in = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let refresh = signed_in["refresh_token"].as_str().unwrap().to_owned();
    let refreshed = server.token(&f.app, &format!("grant_type=refresh_token&refresh_token={refresh}")).await.json();
    tokens.push(signed_in["access_token"].as_str().unwrap().to_owned());
    tokens.push(refresh);
    tokens.push(refreshed["access_token"].as_str().unwrap().to_owned());
    tokens.push(refreshed["refresh_token"].as_str().unwrap().to_owned());
    assert_eq!(server.revoke(&f.service, &tokens[0]).await.status, 204);
    tokens
}

async fn answers(server: &TestServer, f: &Fixture, tokens: &[String]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for token in tokens {
        out.push(server.introspect(&f.service, token).await);
    }
    out
}

/// The state of `dir` as a start-up would build it from its snapshot, and from a full replay.
fn both_ways(dir: &Path, now_ms: i64) -> (Option<snapshot::SnapshotHeader>, State, State) {
    let path = dir.join(data_dir::LEDGER_FILE);
    let (_, mut from_snapshot, _, started) = ledger::open_with_snapshot(&path, dir, now_ms, |_| {}).unwrap();
    let header = started.map(|s| s.header);
    let (_, mut replayed, _) = ledger::open(&path, now_ms, |_| {}).unwrap();
    from_snapshot.purge_all_expired(now_ms);
    replayed.purge_all_expired(now_ms);
    (header, from_snapshot, replayed)
}

#[tokio::test]
async fn a_restart_starts_from_the_snapshot_written_at_shutdown_and_answers_as_before() {
    let (server, f) = TestServer::seeded().await;
    let tokens = mixed_tokens(&server, &f).await;
    let before = answers(&server, &f, &tokens).await;
    assert_eq!(before.iter().filter(|a| a["active"] == true).count(), tokens.len() - 2, "revoked and rotated");
    let head = server.app.state.read().head.seq;
    let clock = server.app.clock.clone();
    let dir = server.stop().await;
    assert!(dir.path().join(snapshot::SNAPSHOT_FILE_NAME).exists(), "a snapshot is written at shutdown");

    let (header, from_snapshot, replayed) = both_ways(dir.path(), clock.now_ms());
    let header = header.expect("the snapshot is used");
    assert_eq!((header.ledger_seq, header.replay_from_seq), (head, head + 1), "it covers the whole ledger");
    assert!(from_snapshot == replayed, "the snapshot's state differs from a full replay");

    let server = TestServer::start_in_on(dir, clock, |_| {}).await;
    assert_eq!(server.app.snapshots.seq.load(std::sync::atomic::Ordering::Acquire), head);
    assert_eq!(answers(&server, &f, &tokens).await, before, "introspection answers as before the restart");
    // And the node goes on: a new token, and a refresh of the live refresh token.
    let again = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    assert!(server.is_active(&f.service, &again).await);
    let live_refresh = &tokens[tokens.len() - 1];
    let reply = server.token(&f.app, &format!("grant_type=refresh_token&refresh_token={live_refresh}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    server.assert_replay_equals_live().await;
}

/// Snapshots taken every 40 events while eight clients issue tokens (each written shard by
/// shard while the writer goes on), then more events after the last one: the last background
/// snapshot plus its tail equals a full replay.
#[tokio::test]
async fn a_snapshot_written_under_load_plus_its_tail_equals_a_full_replay() {
    let server = TestServer::start_with(|s| {
        s.snapshot_every_events = Some(40);
        s.snapshot_every_secs = Some(0);
    })
    .await;
    let f = server.seed().await;
    let mut tokens = Vec::new();
    // Load until the background thread (it looks every 250 ms) has written two snapshots while
    // tokens were being issued, however fast this machine issues them.
    let writes = || server.app.snapshots.writes.load(std::sync::atomic::Ordering::Acquire);
    for _ in 0..400 {
        for handle in server.spawn_issuers(&f.service, 8, 5) {
            tokens.extend(handle.await.unwrap());
        }
        if writes() >= 2 {
            break;
        }
    }
    tokens.extend(mixed_tokens(&server, &f).await);
    // Wait for a background snapshot that covers most of it, then keep a copy of it.
    let path = server.data_dir().join(snapshot::SNAPSHOT_FILE_NAME);
    let mut kept = None;
    for _ in 0..200 {
        if writes() >= 2 {
            kept = std::fs::read(&path).ok();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let kept = kept.expect("background snapshots were written");
    // A tail after it (fewer events than the count that triggers the next one).
    for _ in 0..5 {
        server.token(&f.service, "grant_type=client_credentials").await.access_token();
    }
    let before = answers(&server, &f, &tokens).await;
    let head = server.app.state.read().head.seq;
    let clock = server.app.clock.clone();
    let dir = server.stop().await;
    std::fs::write(dir.path().join(snapshot::SNAPSHOT_FILE_NAME), &kept).unwrap();

    let (header, from_snapshot, replayed) = both_ways(dir.path(), clock.now_ms());
    let header = header.expect("the kept snapshot is used");
    assert!(header.replay_from_seq <= head, "the snapshot has a tail to replay ({header:?}, head {head})");
    // Through the last snapshot's record: the shutdown's, or a background one's that landed
    // after the copy was kept (the shutdown then had nothing new to write).
    assert_eq!(from_snapshot.head.seq, replayed.head.seq, "the tail runs to the ledger's head");
    assert!(from_snapshot.head.seq >= head, "{} before {head}", from_snapshot.head.seq);
    assert!(from_snapshot == replayed, "snapshot + tail differs from a full replay");

    let server = TestServer::start_in_on(dir, clock, |_| {}).await;
    assert_eq!(answers(&server, &f, &tokens).await, before, "introspection answers as before the restart");
}

/// A damaged snapshot, and one of another ledger, are not used: the node replays in full,
/// answers as before, and writes a good snapshot when it stops.
#[tokio::test]
async fn a_corrupt_or_foreign_snapshot_is_refused_and_the_node_replays_in_full() {
    let (server, f) = TestServer::seeded().await;
    let tokens = mixed_tokens(&server, &f).await;
    let before = answers(&server, &f, &tokens).await;
    let clock = server.app.clock.clone();
    let dir = server.stop().await;
    let path = dir.path().join(snapshot::SNAPSHOT_FILE_NAME);
    let good = std::fs::read(&path).unwrap();

    let mut damaged = good.clone();
    let at = damaged.len() - 40;
    damaged[at] ^= 0x10;
    std::fs::write(&path, &damaged).unwrap();
    let (header, from_snapshot, replayed) = both_ways(dir.path(), clock.now_ms());
    assert!(header.is_none(), "a damaged snapshot is not used");
    assert!(from_snapshot == replayed);

    // Another ledger's snapshot (a second server's, of the same shape).
    let other = TestServer::seeded().await.0;
    let other_dir = other.stop().await;
    std::fs::copy(other_dir.path().join(snapshot::SNAPSHOT_FILE_NAME), &path).unwrap();
    let (header, _, _) = both_ways(dir.path(), clock.now_ms());
    assert!(header.is_none(), "another ledger's snapshot is not used");

    let server = TestServer::start_in_on(dir, clock, |_| {}).await;
    assert_eq!(answers(&server, &f, &tokens).await, before);
    let dir = server.stop().await;
    assert_ne!(std::fs::read(&path).unwrap(), damaged, "a new snapshot replaced the refused one");
    let (header, _, _) = both_ways(dir.path(), wall_ms());
    assert!(header.is_some(), "and it is used");
}

fn stop_process(running: &mut crate::binary::Running) {
    crate::binary::sigterm(&running.child);
    assert!(crate::binary::wait_exit(&mut running.child).success(), "SIGTERM is a clean exit");
}

fn tokenledger(args: &[&str]) -> String {
    let out = Command::new(crate::binary::BIN).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "tokenledger {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// `verify --compare-snapshot --json` of a stopped data dir.
fn verify_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&tokenledger(&["verify", "--data-dir", dir.to_str().unwrap(), "--json", "--compare-snapshot"]))
        .unwrap()
}

/// The `ProjectionSnapshotWritten` events of a running server, through `audit events`.
fn recorded_snapshots(running: &crate::binary::Running, dir: &Path) -> Vec<serde_json::Value> {
    let args = ["audit", "events", "--kind", "projection_snapshot_written", "--json", "--server"];
    let out = tokenledger(&[&args[..], &[running.url.as_str(), "--data-dir", dir.to_str().unwrap()]].concat());
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

fn metric(url: &str, name: &str) -> Option<f64> {
    let text = block_on(async { reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap() });
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn logged<'a>(log: &'a [serde_json::Value], starts: &str) -> Option<&'a serde_json::Value> {
    log.iter().find(|e| e["message"].as_str().is_some_and(|m| m.starts_with(starts)))
}

/// A node stopped with SIGTERM writes its snapshot and records it in the ledger (visible in
/// `audit events` with the covered seq and chain hash of the file's header); the next start
/// says which recorded snapshot it started from (log, `/metrics`), and stopping it idle writes
/// no second snapshot and no second record.
#[test]
fn sigterm_records_the_snapshot_in_the_ledger_and_the_next_start_names_that_event() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, _) = serve_logged(dir.path(), &["--demo"]);
    stop_process(&mut running);
    let header = *snapshot::SnapshotFile::open(dir.path()).unwrap().header();
    let file = std::fs::read(dir.path().join(snapshot::SNAPSHOT_FILE_NAME)).unwrap();
    let verified = verify_json(dir.path());
    let head = verified["head_seq"].as_u64().unwrap();
    assert_eq!(header.ledger_seq + 1, head, "the record is the one event after the snapshot");
    assert_eq!(verified["snapshot"]["recorded"], true, "{verified}");
    assert_eq!(verified["snapshot"]["recorded_seq"], head);

    let (mut running, log) = serve_logged(dir.path(), &["--snapshot-every-secs", "1"]);
    let started = format!("started from the snapshot recorded at event {head}, covering seq {}", header.ledger_seq);
    let entry = logged(&log.lock().unwrap(), &started).cloned();
    assert!(entry.is_some(), "no {started:?} in {:?}", log.lock().unwrap());
    assert_eq!(metric(&running.url, "tokenledger_snapshot_recorded_seq"), Some(head as f64));
    assert_eq!(metric(&running.url, "tokenledger_snapshot_seq"), Some(header.ledger_seq as f64));
    let records = recorded_snapshots(&running, dir.path());
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["seq"], head);
    let fields = &record["event"]["projection_snapshot_written"];
    assert_eq!(fields["covered_seq"], header.ledger_seq);
    assert_eq!(fields["chain_hash"], hex(&header.chain_hash));
    assert_eq!(fields["body_sha256"], hex(&header.body_sha256));
    assert_eq!(fields["file_bytes"], file.len());
    assert_eq!(fields["file_format_version"], snapshot::SNAPSHOT_FILE_VERSION);
    assert!(record["summary"].as_str().unwrap().contains(&format!("covers seq {}", header.ledger_seq)), "{record}");
    // Idle: the background writer (every second while events arrive) does not count the record.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(metric(&running.url, "tokenledger_snapshot_writes_total"), Some(0.0));
    stop_process(&mut running);
    assert_eq!(std::fs::read(dir.path().join(snapshot::SNAPSHOT_FILE_NAME)).unwrap(), file, "no second snapshot");
    assert_eq!(verify_json(dir.path())["head_seq"], head, "and no second record");
}

/// A snapshot whose record never made it to the ledger (a crash between the file's rename and
/// its event: here the record is removed from a stopped copy) still loads, with a warning that
/// it is not recorded; the node answers as before.
#[test]
fn a_snapshot_without_its_record_still_loads_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (mut running, _) = serve_logged(dir.path(), &["--demo"]);
    stop_process(&mut running);
    let header = *snapshot::SnapshotFile::open(dir.path()).unwrap().header();
    let record_seq = header.ledger_seq + 1;
    {
        let db = redb::Database::open(dir.path().join(data_dir::LEDGER_FILE)).unwrap();
        let stored = tokenledger::ledger::raw::from(&db, record_seq).unwrap();
        assert_eq!(
            stored.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            [record_seq],
            "the record is the last event"
        );
        tokenledger::ledger::raw::remove(&db, record_seq).unwrap();
        let txn = db.begin_write().unwrap();
        {
            // The record was the only event of its batch: its list row holds it alone.
            let mut index = txn.open_table(redb::TableDefinition::<&[u8], &[u8]>::new("index_lists")).unwrap();
            let key = tokenledger::ledger::index::entry(IndexKind::EventKind, &[50], record_seq);
            assert!(
                index.remove(key.as_slice()).unwrap().is_some_and(|seqs| seqs.value().is_empty()),
                "the record had its event-kind entry"
            );
        }
        txn.commit().unwrap();
    }
    let verified = verify_json(dir.path());
    assert_eq!(verified["head_seq"], header.ledger_seq);
    assert_eq!(verified["snapshot"]["recorded"], false, "{verified}");

    let (mut running, log) = serve_logged(dir.path(), &[]);
    let warning = logged(&log.lock().unwrap(), "started from a projection snapshot covering seq").cloned();
    let warning = warning.unwrap_or_else(|| panic!("no warning in {:?}", log.lock().unwrap()));
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert!(warning["message"].as_str().unwrap().contains("not recorded in this ledger"), "{warning}");
    assert!(logged(&log.lock().unwrap(), "the projection snapshot is not used").is_none(), "it is used");
    assert_eq!(metric(&running.url, "tokenledger_snapshot_seq"), Some(header.ledger_seq as f64));
    assert_eq!(metric(&running.url, "tokenledger_snapshot_recorded_seq"), Some(0.0));
    let demo = std::fs::read_to_string(dir.path().join("demo.env")).unwrap();
    let value = |key: &str| demo.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_owned();
    let status = block_on(async {
        let form =
            [("grant_type", "password"), ("username", &value("TL_USERNAME")), ("password", &value("TL_PASSWORD"))];
        reqwest::Client::new()
            .post(format!("{}/oauth2/v1/token", running.url))
            .basic_auth(value("TL_CLIENT_ID"), Some(value("TL_CLIENT_SECRET")))
            .header("transactionId", txid())
            .header("institutionId", value("TL_INSTITUTION"))
            .form(&form)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200, "the node serves from the unrecorded snapshot");
    stop_process(&mut running);
    // That sign-in was new: a new snapshot and its record.
    let verified = verify_json(dir.path());
    assert_eq!(verified["snapshot"]["recorded"], true, "{verified}");
}

/// In-process: background snapshots every second record themselves and stop once the node
/// is idle (each record is after the seq its snapshot covers, and is not counted as news).
#[tokio::test]
async fn an_idle_node_writes_no_further_background_snapshot() {
    use std::sync::atomic::Ordering;
    let server = TestServer::start_with(|s| s.snapshot_every_secs = Some(1)).await;
    let _f = server.seed().await;
    let status = server.app.snapshots.clone();
    // Until the last event is the record of a snapshot of everything before it.
    let settled = || {
        let recorded = status.recorded_seq.load(Ordering::Acquire);
        recorded > 0 && server.app.state.read().head.seq == recorded
    };
    for _ in 0..200 {
        if settled() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(settled(), "a background snapshot was written and recorded");
    let recorded = status.recorded_seq.load(Ordering::Acquire);
    let writes = status.writes.load(Ordering::Acquire);
    assert_eq!(recorded, status.seq.load(Ordering::Acquire) + 1, "the record follows what it covers");
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    assert_eq!(status.writes.load(Ordering::Acquire), writes, "no snapshot of its own record");
    assert_eq!(server.app.state.read().head.seq, recorded, "no event after the record");
    let dir = server.stop().await;
    let verified = verify_json(dir.path());
    assert_eq!(verified["head_seq"], recorded, "nor at shutdown");
}

/// Each file is matched with its own record: after two stops (two snapshots, two records),
/// the first file put back is found recorded by the first record, not the latest one; a
/// start from it replays the rest, the second record included.
#[tokio::test]
async fn an_older_snapshot_put_back_is_matched_with_its_own_record() {
    let (server, f) = TestServer::seeded().await;
    mixed_tokens(&server, &f).await;
    let clock = server.app.clock.clone();
    let dir = server.stop().await;
    let path = dir.path().join(snapshot::SNAPSHOT_FILE_NAME);
    let first = std::fs::read(&path).unwrap();
    let first_header = *snapshot::SnapshotFile::open(dir.path()).unwrap().header();
    let server = TestServer::start_in_on(dir, clock.clone(), |_| {}).await;
    let first_record = server.app.snapshots.recorded_seq.load(std::sync::atomic::Ordering::Acquire);
    assert_eq!(first_record, first_header.ledger_seq + 1, "the start found the first record");
    server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let dir = server.stop().await;
    let second_header = *snapshot::SnapshotFile::open(dir.path()).unwrap().header();
    assert!(second_header.ledger_seq > first_record);

    let ledger_path = dir.path().join(data_dir::LEDGER_FILE);
    let (_, _, _, started) = ledger::open_with_snapshot(&ledger_path, dir.path(), clock.now_ms(), |_| {}).unwrap();
    let started = started.expect("the second snapshot is used");
    assert_eq!(started.header, second_header);
    assert_eq!(started.recorded_at_seq, Some(second_header.ledger_seq + 1));

    std::fs::write(&path, &first).unwrap();
    let (_, state, report, started) =
        ledger::open_with_snapshot(&ledger_path, dir.path(), clock.now_ms(), |_| {}).unwrap();
    let started = started.expect("the first snapshot is used");
    assert_eq!(started.header, first_header);
    assert_eq!(started.recorded_at_seq, Some(first_record), "its own record, not the latest");
    assert_eq!(state.head.seq, second_header.ledger_seq + 1, "the tail runs through the second record");
    assert_eq!(report.events, second_header.ledger_seq + 1 - first_header.ledger_seq);
}
