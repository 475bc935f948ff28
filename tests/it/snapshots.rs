//! Projection snapshots of a single node (issue 12): a restart loads the snapshot and replays
//! only the tail; the snapshot plus the tail equals a full replay, also for a snapshot written
//! while the writer was issuing tokens; a corrupt or foreign snapshot is refused and the node
//! replays in full and answers as before.

use std::path::Path;

use tokenledger::domain::State;
use tokenledger::ledger::{self, snapshot};
use tokenledger::server::data_dir;

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
    for handle in server.spawn_issuers(&f.service, 8, 40) {
        tokens.extend(handle.await.unwrap());
    }
    tokens.extend(mixed_tokens(&server, &f).await);
    // Wait for a background snapshot that covers most of it, then keep a copy of it.
    let path = server.data_dir().join(snapshot::SNAPSHOT_FILE_NAME);
    let mut kept = None;
    for _ in 0..200 {
        if server.app.snapshots.writes.load(std::sync::atomic::Ordering::Acquire) >= 2 {
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
    assert_eq!(from_snapshot.head.seq, head);
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
