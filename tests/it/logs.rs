//! JSON logs of the real binary: every line logged while handling a request carries that
//! request's `transactionId` as a top-level member, for REST and gRPC.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenledger::proto::{self as api};

use crate::binary::{BIN, Running};
use crate::harness::*;

/// Starts the binary with JSON logs at debug level for tokenledger; returns it and its log.
/// The child is killed and waited for when `Running` drops.
#[allow(clippy::zombie_processes)]
fn serve_logged(dir: &std::path::Path) -> (Running, Arc<Mutex<Vec<serde_json::Value>>>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--password-pbkdf2-iterations", "1000"])
        .args(["--insecure-low-pbkdf2-iterations", "true"])
        .args(["--log-level", "info,tokenledger=debug", "--lockout-failures", "1", "--demo"])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(Vec::new()));
    loop {
        let line = lines.next().expect("server exited before serving").unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if entry["message"] == "serving REST and gRPC" {
            let url = format!("http://{}", entry["listen"].as_str().unwrap());
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    let entry = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    sink.lock().unwrap().push(entry);
                }
            });
            return (Running { child, url }, log);
        }
    }
}

fn demo_value(dir: &std::path::Path, key: &str) -> String {
    let env = std::fs::read_to_string(dir.join("demo.env")).unwrap();
    env.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_owned()
}

#[test]
fn every_log_line_of_a_request_carries_its_transaction_id() {
    let dir = tempfile::tempdir().unwrap();
    let (running, log) = serve_logged(dir.path());
    let client_id = demo_value(dir.path(), "TL_CLIENT_ID");
    let secret = demo_value(dir.path(), "TL_CLIENT_SECRET");
    let institution = demo_value(dir.path(), "TL_INSTITUTION");
    let username = demo_value(dir.path(), "TL_USERNAME");
    let (ok_tx, wrong_tx, locked_tx, grpc_tx) = (txid(), txid(), txid(), txid());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let token = |tx: &str, password: &str| {
            http.post(format!("{}/oauth2/v1/token", running.url))
                .basic_auth(&client_id, Some(&secret))
                .header("transactionId", tx)
                .header("institutionId", &institution)
                .form(&[("grant_type", "password"), ("username", username.as_str()), ("password", password)])
                .send()
        };
        assert_eq!(token(&ok_tx, &demo_value(dir.path(), "TL_PASSWORD")).await.unwrap().status(), 200);
        // A wrong password locks the user (lockout after one failure); the next attempt logs
        // the refusal inside its request.
        let status = token(&wrong_tx, "wrong").await.unwrap().status().as_u16();
        assert!(status == 401 || status == 400, "{status}");
        assert_eq!(token(&locked_tx, "wrong").await.unwrap().status(), 400);
        let channel = tonic::transport::Channel::from_shared(running.url.clone()).unwrap().connect().await.unwrap();
        let mut request = tonic::Request::new(api::IntrospectTokenRequest { token: "x".into() });
        request
            .metadata_mut()
            .insert("authorization", tokenledger::wire::encode_basic(&client_id, &secret).parse().unwrap());
        request.metadata_mut().insert("transactionid", grpc_tx.parse().unwrap());
        tokenledger::proto::token_service_client::TokenServiceClient::new(channel)
            .introspect_token(request)
            .await
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let log = log.lock().unwrap().clone();
    let lines_of = |tx: &str| log.iter().filter(|e| e["transactionId"] == tx).cloned().collect::<Vec<_>>();
    for tx in [&ok_tx, &wrong_tx, &locked_tx, &grpc_tx] {
        let lines = lines_of(tx);
        assert!(
            lines.iter().any(|e| e["message"] == "request answered"),
            "no 'request answered' line for {tx}: {log:#?}"
        );
    }
    let locked = lines_of(&locked_tx);
    assert!(
        locked.iter().any(|e| e["message"] == "sign-in refused: locked out" && e["level"] == "INFO"),
        "the lockout refusal is logged with its transactionId: {locked:#?}"
    );
    assert!(lines_of(&grpc_tx).iter().any(|e| e["endpoint"] == "/tokenledger.v1.TokenService/IntrospectToken"));
    // Every line logged inside a request span names the request's transaction id.
    for entry in log.iter().filter(|e| e.get("endpoint").is_some()) {
        assert!(entry["transactionId"].is_string(), "a request's line without transactionId: {entry}");
        assert!(entry["timestamp"].is_string() && entry["level"].is_string(), "{entry}");
    }
    drop(running);
}
