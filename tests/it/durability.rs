//! What must survive: restart keeps every token's state, a fresh replay equals the live
//! projections, the ledger holds no usable secret, and a damaged ledger refuses to start.

use std::sync::Arc;

use tokenledger::config::Config;
use tokenledger::server::data_dir;

use crate::harness::*;

/// A mixed sequence of operations; returns (active tokens, ended tokens).
async fn exercise(server: &TestServer, f: &Fixture) -> (Vec<String>, Vec<String>) {
    let mut active = Vec::new();
    let mut ended = Vec::new();
    for _ in 0..3 {
        active.push(server.token(&f.service, "grant_type=client_credentials").await.access_token());
    }
    let revoked = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    server.revoke(&f.service, &revoked).await;
    ended.push(revoked);
    let first = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let second = server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={}", first["refresh_token"].as_str().unwrap()))
        .await
        .json();
    ended.push(first["refresh_token"].as_str().unwrap().to_owned());
    active.push(first["access_token"].as_str().unwrap().to_owned());
    active.push(second["access_token"].as_str().unwrap().to_owned());
    active.push(second["refresh_token"].as_str().unwrap().to_owned());
    // A second family ended by reuse.
    let a = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let b = server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={}", a["refresh_token"].as_str().unwrap()))
        .await
        .json();
    server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={}", a["refresh_token"].as_str().unwrap()))
        .await
        .assert_error(401, "CMN_90018");
    for t in [&a["access_token"], &a["refresh_token"], &b["access_token"], &b["refresh_token"]] {
        ended.push(t.as_str().unwrap().to_owned());
    }
    (active, ended)
}

#[tokio::test]
async fn restart_keeps_every_issued_and_revoked_token() {
    let (server, f) = TestServer::seeded().await;
    let (active, ended) = exercise(&server, &f).await;
    let server = server.restart().await;
    for token in &active {
        assert!(
            server.is_active(&f.service, token).await || server.is_active(&f.app, token).await,
            "lost after restart: {token:.12}"
        );
    }
    for token in &ended {
        assert!(
            !server.is_active(&f.service, token).await && !server.is_active(&f.app, token).await,
            "revived after restart: {token:.12}"
        );
    }
    // The directory survived too: the same credentials still work.
    assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
}

#[tokio::test]
async fn a_fresh_replay_equals_the_live_projections() {
    let (server, f) = TestServer::seeded().await;
    exercise(&server, &f).await;
    // A retry answer and a refused request also leave their marks (or none).
    server.token(&f.app, "grant_type=password&username=alice&password=wrong").await.assert_error(401, "CMN_90015");
    server.assert_replay_equals_live().await;
}

#[tokio::test]
async fn the_ledger_file_holds_no_token_secret_or_password() {
    let (server, f) = TestServer::seeded().await;
    let (active, ended) = exercise(&server, &f).await;
    let dir = server.stop().await;
    let bytes = std::fs::read(dir.path().join(data_dir::LEDGER_FILE)).unwrap();
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for token in active.iter().chain(&ended) {
        assert!(!contains(token.as_bytes()), "token string in the ledger");
        // Nor its MAC, which is what makes the string usable.
        assert!(!contains(&token.as_bytes()[token.len() - 43..]), "token MAC in the ledger");
    }
    for secret in [&f.service.secret, &f.app.secret, &f.other.secret] {
        assert!(!contains(secret.as_bytes()), "client secret in the ledger");
    }
    assert!(!contains(b"correct horse battery"), "password in the ledger");
    let keys = std::fs::read_to_string(dir.path().join(data_dir::KEYS_FILE)).unwrap();
    let key: serde_json::Value = serde_json::from_str(&keys).unwrap();
    let secret = key["keys"][0]["secret"].as_str().unwrap();
    assert!(!contains(secret.as_bytes()), "MAC key in the ledger");
}

#[cfg(unix)]
#[tokio::test]
async fn first_start_creates_private_key_and_admin_files() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start().await;
    for file in [data_dir::KEYS_FILE, data_dir::ADMIN_TOKEN_FILE] {
        let mode = std::fs::metadata(server.data_dir().join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert!(server.admin_token().starts_with("tladm_"));
}

/// Rewrites the stored value of event `seq` through redb itself, as someone with file access
/// could, and returns the data dir.
pub fn tamper(dir: &std::path::Path, seq: u64, change: impl FnOnce(&mut Vec<u8>)) {
    let db = redb::Database::open(dir.join(data_dir::LEDGER_FILE)).unwrap();
    let mut value = tokenledger::ledger::raw::read(&db, seq).unwrap().expect("the event is stored");
    change(&mut value);
    tokenledger::ledger::raw::rewrite(&db, seq, &value).unwrap();
}

#[tokio::test]
async fn start_up_refuses_a_changed_event() {
    let (server, f) = TestServer::seeded().await;
    exercise(&server, &f).await;
    let head = server.app.state.read().head.seq;
    let dir: Arc<tempfile::TempDir> = server.stop().await;
    let target = head - 3;
    tamper(dir.path(), target, |bytes| {
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
    });
    let config = Config::resolve(test_settings(dir.path())).unwrap();
    // The stop wrote a projection snapshot: the node starts from it, verifies the events
    // before its tail in the background, finds the change and refuses writes.
    let opened = data_dir::open(&config).expect("a start from the snapshot");
    let mut broken = None;
    for _ in 0..200 {
        broken = opened.app.snapshots.prefix_broken.get().cloned();
        if broken.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let broken = broken.expect("the background verification found the change");
    assert!(broken.contains(&format!("event {target}")), "{broken}");
    assert!(!opened.app.ledger.is_writable(), "a node with a broken chain refuses writes");
    opened.app.ledger.stop().await;
    drop(opened);
    // Without the snapshot, start-up refuses at once.
    std::fs::remove_file(dir.path().join(tokenledger::ledger::snapshot::SNAPSHOT_FILE_NAME)).unwrap();
    let error = data_dir::open(&config).err().expect("start-up must refuse a tampered ledger").to_string();
    assert!(error.contains(&format!("event {target}")), "{error}");
}

/// The replay reads and applies on two threads, handing events over in batches of 1,024
/// (`ledger/replay.rs`): a changed event far past the first batches, and a missing one, are
/// still the ones start-up names.
#[tokio::test]
async fn start_up_names_a_bad_event_past_the_replays_first_batches() {
    let (server, f) = TestServer::seeded().await;
    for issuer in server.spawn_issuers(&f.service, 8, 330) {
        issuer.await.unwrap();
    }
    let head = server.app.state.read().head.seq;
    assert!(head > 2_640, "head {head}");
    let dir: Arc<tempfile::TempDir> = server.stop().await;
    std::fs::remove_file(dir.path().join(tokenledger::ledger::snapshot::SNAPSHOT_FILE_NAME)).unwrap();
    let path = dir.path().join(data_dir::LEDGER_FILE);
    let intact = tokenledger::ledger::open(&path, wall_ms(), |_| {}).map(|(_, state, _)| state.head.seq).unwrap();
    assert!(intact >= head, "the stop adds the shutdown snapshot's record: {intact} after {head}");
    tamper(dir.path(), 2_100, |bytes| {
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
    });
    let error = tokenledger::ledger::open(&path, wall_ms(), |_| {}).err().expect("a changed event").to_string();
    assert!(error.contains("event 2100"), "{error}");
    // A missing event is a gap at its seq, after a changed one is mended again.
    tamper(dir.path(), 2_100, |bytes| {
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
    });
    {
        let db = redb::Database::open(&path).unwrap();
        tokenledger::ledger::raw::remove(&db, 1_500).unwrap();
    }
    let error = tokenledger::ledger::open(&path, wall_ms(), |_| {}).err().expect("a missing event").to_string();
    assert!(error.contains("1500"), "{error}");
}

#[tokio::test]
async fn writes_survive_restart_at_once_after_acknowledgement() {
    // Acknowledged means durable: stop right after the answers, without any grace.
    let (server, f) = TestServer::seeded().await;
    let tokens: Vec<String> = futures_join(&server, &f).await;
    let server = server.restart().await;
    for token in tokens {
        assert!(server.is_active(&f.service, &token).await);
    }
}

async fn futures_join(server: &TestServer, f: &Fixture) -> Vec<String> {
    let mut handles = Vec::new();
    for _ in 0..32 {
        handles.push(server.token(&f.service, "grant_type=client_credentials"));
    }
    let mut tokens = Vec::new();
    for reply in futures_util::future::join_all(handles).await {
        tokens.push(reply.access_token());
    }
    tokens
}
