//! The real binary: `tokenledger audit ...` and `tokenledger revoke` against a served demo
//! ledger, live following, and offline checks of tampered copies of a stopped ledger.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use prost::Message as _;
use tokenledger::proto::ledger::Envelope;

use crate::audit_verify::Tamper;
use crate::binary::{BIN, Running, serve};
use crate::harness::txid;

fn tokenledger(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run tokenledger")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn ok(output: Output) -> String {
    assert!(output.status.success(), "failed: {}{}", stderr(&output), stdout(&output));
    stdout(&output)
}

#[track_caller]
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn stop(mut running: Running) {
    let _ = Command::new("kill").args(["-TERM", &running.child.id().to_string()]).status();
    for _ in 0..200 {
        if running.child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server did not stop");
}

/// The demo credentials `serve --demo` wrote.
struct Demo {
    dir: String,
    url: String,
    env: String,
}

impl Demo {
    fn value(&self, key: &str) -> String {
        self.env.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_owned()
    }

    /// Runs a client command against the server with the demo data dir's admin credential.
    fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &self.url, "--data-dir", &self.dir]);
        tokenledger(&all)
    }

    fn sign_in(&self) -> (String, String) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let body: serde_json::Value = reqwest::Client::new()
                .post(format!("{}/oauth2/v1/token", self.url))
                .basic_auth(self.value("TL_CLIENT_ID"), Some(self.value("TL_CLIENT_SECRET")))
                .header("transactionId", txid())
                .header("institutionId", self.value("TL_INSTITUTION"))
                .form(&[
                    ("grant_type", "password"),
                    ("username", &self.value("TL_USERNAME")),
                    ("password", &self.value("TL_PASSWORD")),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (body["access_token"].as_str().unwrap().to_owned(), body["refresh_token"].as_str().unwrap().to_owned())
        })
    }
}

fn demo(dir: &Path) -> (Running, Demo) {
    let running = serve(dir, &["--demo"]);
    let env = std::fs::read_to_string(dir.join("demo.env")).unwrap();
    let demo = Demo { dir: dir.to_str().unwrap().to_owned(), url: running.url.clone(), env };
    (running, demo)
}

#[test]
fn an_audit_session_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (running, demo) = demo(dir.path());
    let (access, _) = demo.sign_in();

    let lines = json_lines(&ok(demo.run(&["audit", "events", "--json"])));
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let issued = lines.last().unwrap();
    assert_eq!(issued["kind"], "tokens_issued");
    assert_eq!(issued["event"]["tokens_issued"]["client_id"], "demo-client");
    assert_eq!(issued["event"]["tokens_issued"]["grant_type"], "GRANT_TYPE_PASSWORD");
    let all = lines.iter().map(|l| l.to_string()).collect::<String>();
    assert!(!all.contains("pbkdf2") && !all.contains("\"secret\":") && !all.contains("\"password\":"), "{all}");
    let human = ok(demo.run(&["audit", "events", "--kind", "tokens_issued"]));
    assert!(human.contains("password grant: client demo-client"), "{human}");
    assert_eq!(human.lines().count(), 1);

    let story = ok(demo.run(&["audit", "token", &access]));
    assert!(story.contains("access_token, password grant") && story.contains("now: active"), "{story}");
    let story = json_lines(&ok(demo.run(&["audit", "token", &access, "--json"])));
    let issued_at = story[0]["token"]["issued_at_ms"].as_i64().unwrap();
    let token_hex = story[0]["token"]["token_id"].as_str().unwrap().to_owned();
    assert_eq!(story[0]["status_now"]["state"], "active");
    let before = json_lines(&ok(demo.run(&["audit", "status-at", &token_hex, &(issued_at - 1).to_string(), "--json"])));
    assert_eq!((before[0]["state"].as_str(), before[0]["active"].as_bool()), (Some("not_yet_issued"), Some(false)));

    let revoked = json_lines(&ok(demo.run(&["revoke", "--user", "01001:demo.user", "--note", "INC-7", "--json"])));
    assert_eq!(revoked[0]["live_tokens_ended"], 2);
    assert_eq!(revoked[0]["event_kind"], "bulk_revoked");
    let now = ok(demo.run(&["audit", "status-at", &access, "now"]));
    assert!(now.starts_with("NOT ACTIVE") && now.contains("cut_off") && now.contains("INC-7"), "{now}");
    let during = ok(demo.run(&["audit", "status-at", &access, &issued_at.to_string()]));
    assert!(during.starts_with("ACTIVE"), "{during}");

    assert!(ok(demo.run(&["audit", "verify"])).starts_with("ledger OK"));
    let checkpoint = dir.path().join("checkpoint.json");
    let shown = ok(demo.run(&["audit", "checkpoint", "--out", checkpoint.to_str().unwrap()]));
    assert!(shown.contains("Ed25519 public key"), "{shown}");
    let key = json_lines(&ok(demo.run(&["audit", "checkpoint-key", "--json"])));
    let key = key[0]["public_key"].as_str().unwrap().to_owned();
    let cp = checkpoint.to_str().unwrap();
    let verified = ok(demo.run(&["audit", "verify-checkpoint", cp, "--public-key", &key]));
    assert!(verified.starts_with("checkpoint VERIFIED"), "{verified}");
    let wrong_key = "11".repeat(32);
    let refused = demo.run(&["audit", "verify-checkpoint", cp, "--public-key", &wrong_key]);
    assert!(!refused.status.success() && stderr(&refused).contains("signature"), "{}", stderr(&refused));

    let (second, _) = demo.sign_in();
    let listing = ok(demo.run(&["audit", "blast-radius", "--client", "demo-client", "--from", "now-1h"]));
    assert!(listing.contains("2 still live"), "{listing}");
    let revoked =
        json_lines(&ok(demo.run(&["audit", "blast-radius", "--client", "demo-client", "--revoke", "--json"])));
    assert_eq!(revoked.last().unwrap()["revoked"], 2);
    let gone = ok(demo.run(&["audit", "status-at", &second, "now"]));
    assert!(gone.contains("revoked (operator)"), "{gone}");

    stop(running);
    let offline = ok(demo.run(&["audit", "verify-checkpoint", cp, "--offline", "--public-key", &key]));
    assert!(offline.starts_with("checkpoint VERIFIED"), "{offline}");
    assert!(std::fs::metadata(dir.path().join("checkpoint.key")).is_ok());
}

#[test]
fn follow_prints_events_as_they_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (running, demo) = demo(dir.path());
    let mut child = Command::new(BIN)
        .args(["audit", "events", "--follow", "--json", "--kind", "tokens_issued"])
        .args(["--server", &demo.url, "--data-dir", &demo.dir])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        demo.sign_in();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = lines.next().unwrap().unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(event["seq"].as_u64().unwrap());
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let _ = child.kill();
    let _ = child.wait();
    stop(running);
}

/// Copies the stopped ledger and its key file into a fresh directory.
fn copy_of(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for file in ["ledger.redb", "keys.json"] {
        std::fs::copy(dir.join(file), copy.path().join(file)).unwrap();
    }
    copy
}

fn open_copy(dir: &Path) -> redb::Database {
    redb::Database::open(dir.join("ledger.redb")).unwrap()
}

/// Changes event `seq`'s transaction id and recomputes every hash after it, as an attacker
/// who understands the format would: the chain stays consistent.
fn rewrite_history(db: &redb::Database, seq: u64) {
    use tokenledger::ledger::raw;
    let rows = raw::from(db, seq).unwrap();
    let mut prev: Option<Vec<u8>> = None;
    for (key, bytes) in rows {
        // In canonical form (format 2 may store a UUID transaction id as 16 bytes).
        let mut envelope = Envelope::decode(tokenledger::ledger::codec::canonical_bytes(bytes).as_slice()).unwrap();
        if key == seq {
            envelope.transaction_id = txid();
        }
        if let Some(prev) = prev {
            envelope.prev_hash = prev;
        }
        let prev_hash: [u8; 32] = envelope.prev_hash.as_slice().try_into().unwrap();
        let hash = tokenledger::ledger::codec::chain_hash(
            &prev_hash,
            envelope.seq,
            envelope.recorded_at_ms,
            &envelope.transaction_id,
            &envelope.event,
        );
        envelope.hash = hash.to_vec();
        prev = Some(hash.to_vec());
        raw::rewrite(db, key, envelope.encode_to_vec().as_slice()).unwrap();
    }
}

fn truncate_from(db: &redb::Database, seq: u64) {
    tokenledger::ledger::raw::truncate_from(db, seq).unwrap();
}

#[test]
fn offline_checks_of_a_tampered_copy_name_the_event_and_a_checkpoint_catches_a_rewritten_history() {
    let dir = tempfile::tempdir().unwrap();
    let (running, demo) = demo(dir.path());
    for _ in 0..3 {
        demo.sign_in();
    }
    let checkpoint = dir.path().join("checkpoint.json");
    let cp = checkpoint.to_str().unwrap().to_owned();
    ok(demo.run(&["audit", "checkpoint", "--out", &cp]));
    let signed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    let seq = signed["seq"].as_u64().unwrap();
    let key = signed["public_key"].as_str().unwrap().to_owned();
    // Events after the checkpoint.
    demo.sign_in();
    stop(running);
    let verify_copy = |copy: &Path| tokenledger(&["verify", "--data-dir", copy.to_str().unwrap()]);
    let check_copy = |copy: &Path| {
        tokenledger(&[
            "audit",
            "verify-checkpoint",
            &cp,
            "--offline",
            "--public-key",
            &key,
            "--data-dir",
            copy.to_str().unwrap(),
        ])
    };

    for tamper in [Tamper::Rewrite(4), Tamper::Delete(4), Tamper::Swap(4)] {
        let copy = copy_of(dir.path());
        tamper.apply(&open_copy(copy.path()));
        let verified = verify_copy(copy.path());
        assert!(!verified.status.success(), "{tamper:?}");
        assert!(stderr(&verified).contains("FAILED at event 4"), "{tamper:?}: {}", stderr(&verified));
        let checked = check_copy(copy.path());
        assert!(!checked.status.success(), "{tamper:?}");
        assert!(stderr(&checked).contains("event 4"), "{tamper:?}: {}", stderr(&checked));
        assert_eq!(stderr(&checked).lines().count(), 1, "one line: {}", stderr(&checked));
    }

    // A rewritten history with every later hash recomputed passes the chain check alone...
    let copy = copy_of(dir.path());
    rewrite_history(&open_copy(copy.path()), 5);
    assert!(verify_copy(copy.path()).status.success(), "the chain is consistent again");
    // ...but not the checkpoint an auditor kept.
    let checked = check_copy(copy.path());
    assert!(!checked.status.success());
    assert!(stderr(&checked).contains(&format!("event {seq} has hash")), "{}", stderr(&checked));

    // Dropping events after the checkpoint leaves its prefix intact; dropping into it does not.
    let copy = copy_of(dir.path());
    truncate_from(&open_copy(copy.path()), seq + 1);
    assert!(ok(check_copy(copy.path())).starts_with("checkpoint VERIFIED"));
    let copy = copy_of(dir.path());
    truncate_from(&open_copy(copy.path()), seq);
    let checked = check_copy(copy.path());
    assert!(!checked.status.success());
    assert!(stderr(&checked).contains("events were dropped"), "{}", stderr(&checked));
    // The untouched ledger passes both.
    assert!(verify_copy(dir.path()).status.success());
    assert!(ok(check_copy(dir.path())).starts_with("checkpoint VERIFIED"));
}
