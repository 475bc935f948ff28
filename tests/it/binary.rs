//! The real binary: serve (start-up, second process, SIGTERM, damaged ledger), import and
//! verify.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_tokenledger");

pub struct Running {
    pub child: Child,
    pub url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tokenledger serve` on port 0 and waits for the address it reports. The child is
/// killed and waited for when the returned value drops.
#[allow(clippy::zombie_processes)]
pub fn serve(dir: &Path, extra: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--password-pbkdf2-iterations", "1000"])
        .args(["--insecure-low-pbkdf2-iterations", "true"])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokenledger serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // What it said, for the failure message if it stops before serving.
    let mut said = Vec::new();
    loop {
        let Some(line) = lines.next() else {
            panic!("server exited before serving; its log:\n{}", said.join("\n"));
        };
        let line = line.expect("read stderr");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
            said.push(line);
            continue;
        };
        if entry["message"] == "serving REST and gRPC" {
            let url = format!("http://{}", entry["listen"].as_str().expect("listen field"));
            // Keep draining the log so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Running { child, url };
        }
        said.push(line);
    }
}

/// [`serve`] keeping every JSON log line the server writes (lines that are not JSON are
/// skipped); returns once it serves. The child is killed and waited for when `Running` drops.
#[allow(clippy::zombie_processes)]
pub fn serve_logged(dir: &Path, extra: &[&str]) -> (Running, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--password-pbkdf2-iterations", "1000"])
        .args(["--insecure-low-pbkdf2-iterations", "true"])
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tokenledger serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    loop {
        let line = lines.next().expect("server exited before serving").expect("read stderr");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let serving = entry["message"] == "serving REST and gRPC";
        let url = entry["listen"].as_str().map(|a| format!("http://{a}"));
        log.lock().unwrap().push(entry);
        if serving {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    if let Ok(entry) = serde_json::from_str(&line) {
                        sink.lock().unwrap().push(entry);
                    }
                }
            });
            return (Running { child, url: url.expect("listen field") }, log);
        }
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run tokenledger")
}

pub fn sigterm(child: &Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
}

pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server did not exit");
}

#[test]
fn serve_refuses_a_second_process_on_the_same_data_dir_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = serve(dir.path(), &[]);
    let second = run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!second.status.success());
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains("in use by another tokenledger process"), "{message}");
    sigterm(&running.child);
    assert!(wait_exit(&mut running.child).success(), "SIGTERM is a clean exit");
}

#[test]
fn demo_seeds_credentials_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = serve(dir.path(), &["--demo"]);
    let mut stdout = String::new();
    let out = running.child.stdout.take().unwrap();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        stdout.push_str(&line);
        stdout.push('\n');
        if line.contains("curl") {
            break;
        }
    }
    assert!(stdout.contains("demo-client") && stdout.contains("curl"), "{stdout}");
    let env = std::fs::read_to_string(dir.path().join("demo.env")).unwrap();
    let value = |key: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let reply = reqwest::Client::new()
            .post(format!("{}/oauth2/v1/token", running.url))
            .basic_auth(value("TL_CLIENT_ID"), Some(value("TL_CLIENT_SECRET")))
            .header("transactionId", txid())
            .header("institutionId", value("TL_INSTITUTION"))
            .form(&[
                ("grant_type", "password"),
                ("username", &value("TL_USERNAME")),
                ("password", &value("TL_PASSWORD")),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    });
}

const IMPORT: &str = r#"{
  "institutions": [{"institution_id": "00516", "name": "Credit Union"}],
  "clients": [{"client_id": "legacy", "client_secret": "legacy-secret-1", "name": "Legacy app",
               "institution_ids": ["00516"], "grant_types": ["client_credentials", "password"],
               "scopes": ["accounts:read"], "introspect": true}],
  "users": [{"institution_id": "00516", "login_id": "bob", "password": "bobs password",
             "institution_user_id": "40BC0EB5891C08D8E063C0A011ACE593", "host_user_id": "H1",
             "user_type": "BUSINESS", "first_name": "Bob", "last_name": "Builder",
             "institution_customers": [{"institution_customer_id": "IC1", "member_number": "123456789",
                                        "member_name": "Bob Co", "customer_type": "BUSINESS", "primary": true}]}]
}"#;

#[test]
fn import_is_idempotent_and_all_or_nothing_then_verify_checks_the_stopped_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = serve(dir.path(), &[]);
    let file = dir.path().join("import.json");
    std::fs::write(&file, IMPORT).unwrap();
    let data = dir.path().to_str().unwrap();
    let import =
        |path: &Path| run(&["import", path.to_str().unwrap(), "--server", &running.url, "--data-dir", data, "--json"]);
    let first = import(&file);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        (
            summary["institutions_created"].as_u64(),
            summary["clients_created"].as_u64(),
            summary["users_created"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    let again = import(&file);
    assert!(again.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["unchanged"], 3, "re-importing identical entries is a no-op");
    let head = summary["head_seq"].clone();
    // A conflicting import (other secret, plus a new institution) applies nothing.
    let conflicting = IMPORT.replace("legacy-secret-1", "other-secret").replace(
        "\"00516\", \"name\": \"Credit Union\"}]",
        "\"00516\", \"name\": \"Credit Union\"}, {\"institution_id\": \"00777\", \"name\": \"New\"}]",
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, conflicting).unwrap();
    let refused = import(&bad);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("legacy") && message.contains("different secret"), "{message}");
    let after = import(&file);
    let summary: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(summary["head_seq"], head, "the refused import recorded nothing");
    // The imported (PBKDF2) secret and password work.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let reply = reqwest::Client::new()
            .post(format!("{}/oauth2/v1/token", running.url))
            .basic_auth("legacy", Some("legacy-secret-1"))
            .header("transactionId", txid())
            .header("institutionId", "00516")
            .form(&[("grant_type", "password"), ("username", "bob"), ("password", "bobs password")])
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    });
    sigterm(&running.child);
    assert!(wait_exit(&mut running.child).success());
    let verified = run(&["verify", "--data-dir", data, "--json"]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["ok"], true);
    // The sign-in above appended one event after the imports, and the shutdown the record of
    // its projection snapshot.
    assert_eq!(report["head_seq"].as_u64(), head.as_u64().map(|h| h + 2));
    assert_eq!(report["events"], report["head_seq"]);
}

#[test]
fn verify_and_serve_name_the_first_bad_event_of_a_damaged_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = serve(dir.path(), &["--demo"]);
    sigterm(&running.child);
    let status = wait_exit(&mut running.child);
    assert!(status.success(), "{status:?}");
    crate::durability::tamper(dir.path(), 3, |bytes| {
        let i = bytes.len() / 2;
        bytes[i] ^= 0x40;
    });
    let data = dir.path().to_str().unwrap();
    let verified = run(&["verify", "--data-dir", data]);
    assert!(!verified.status.success());
    let message = String::from_utf8_lossy(&verified.stderr);
    assert!(message.contains("event 3"), "{message}");
    let served = run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data]);
    assert!(!served.status.success(), "a damaged ledger must not be served");
    let message = String::from_utf8_lossy(&served.stderr);
    assert!(message.contains("event 3"), "{message}");
}

/// `verify --compare-snapshot`: the snapshot written at shutdown plus its tail equals the full
/// replay; without a snapshot the comparison fails and says why.
#[test]
fn verify_compares_the_projection_snapshot_with_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = serve(dir.path(), &["--demo"]);
    sigterm(&running.child);
    assert!(wait_exit(&mut running.child).success());
    let data = dir.path().to_str().unwrap();
    let compared = run(&["verify", "--data-dir", data, "--compare-snapshot"]);
    let out = String::from_utf8_lossy(&compared.stdout);
    assert!(compared.status.success(), "{out} {}", String::from_utf8_lossy(&compared.stderr));
    assert!(out.contains("equals the full replay"), "{out}");
    std::fs::remove_file(dir.path().join("tables.snapshot")).unwrap();
    let missing = run(&["verify", "--data-dir", data, "--compare-snapshot"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no usable projection snapshot"));
}

#[test]
fn verify_of_a_missing_ledger_fails_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
}
