//! `/metrics` after some traffic: request counts by endpoint and status for REST and gRPC,
//! latency histograms, ledger batches and commit times, live tokens, replay time.

use tokenledger::proto::{self as api};

use crate::harness::*;

async fn scrape(server: &TestServer) -> String {
    let reply = server.http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    let content_type = reply.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    reply.text().await.unwrap()
}

/// The value of the sample whose line starts with `series` (name and labels as rendered).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} not found in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_report_requests_latency_ledger_batches_and_tokens() {
    let (server, f) = TestServer::seeded().await;
    for _ in 0..3 {
        server.token(&f.service, "grant_type=client_credentials").await.access_token();
    }
    server.token(&f.service, "grant_type=bogus").await.assert_error(400, "CMN_90007");
    let mut request = tonic::Request::new(api::IntrospectTokenRequest { token: "x".into() });
    request
        .metadata_mut()
        .insert("authorization", tokenledger::wire::encode_basic(&f.service.id, &f.service.secret).parse().unwrap());
    request.metadata_mut().insert("transactionid", txid().parse().unwrap());
    server.token_client().await.introspect_token(request).await.unwrap();
    let status = server
        .token_client()
        .await
        .introspect_token(tonic::Request::new(api::IntrospectTokenRequest { token: "x".into() }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(server.http.get(server.url("/no/such/path")).send().await.unwrap().status(), 404);

    let text = scrape(&server).await;
    let rest_token = "endpoint=\"/oauth2/v1/token\"";
    assert_eq!(
        sample(&text, &format!("tokenledger_requests_total{{transport=\"rest\",{rest_token},status=\"200\"}}")),
        3.0
    );
    assert_eq!(
        sample(&text, &format!("tokenledger_requests_total{{transport=\"rest\",{rest_token},status=\"400\"}}")),
        1.0
    );
    let introspect = "endpoint=\"/tokenledger.v1.TokenService/IntrospectToken\"";
    assert_eq!(
        sample(&text, &format!("tokenledger_requests_total{{transport=\"grpc\",{introspect},status=\"OK\"}}")),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("tokenledger_requests_total{{transport=\"grpc\",{introspect},status=\"INVALID_ARGUMENT\"}}")
        ),
        1.0
    );
    assert_eq!(sample(&text, "tokenledger_requests_total{transport=\"rest\",endpoint=\"other\",status=\"404\"}"), 1.0);
    assert_eq!(
        sample(&text, &format!("tokenledger_request_duration_seconds_count{{transport=\"rest\",{rest_token}}}")),
        4.0
    );
    assert!(text.contains(&format!(
        "tokenledger_request_duration_seconds_bucket{{transport=\"rest\",{rest_token},le=\"0.001\"}}"
    )));
    // Seeding (institutions, clients, user) and the three tokens went through the writer.
    assert!(sample(&text, "tokenledger_ledger_batch_commands_count") >= 9.0, "{text}");
    assert!(sample(&text, "tokenledger_ledger_commit_seconds_count") >= 9.0);
    assert!(sample(&text, "tokenledger_ledger_commit_seconds_sum") > 0.0);
    assert!(sample(&text, "tokenledger_ledger_events_total") >= 9.0);
    assert_eq!(sample(&text, "tokenledger_live_tokens"), 3.0);
    // The token tables: the retry answers of requests with a transactionId, their memory, no
    // limit hit; no projection snapshot yet on a new server.
    assert!(sample(&text, "tokenledger_retry_answers") >= 1.0, "{text}");
    assert!(sample(&text, "tokenledger_token_tables_bytes") > 0.0);
    assert_eq!(sample(&text, "tokenledger_retry_answers_dropped_total"), 0.0);
    assert_eq!(sample(&text, "tokenledger_issuances_not_stored_total"), 0.0);
    assert_eq!(sample(&text, "tokenledger_snapshot_seq"), 0.0);
    assert_eq!(sample(&text, "tokenledger_snapshot_writes_total"), 0.0);
    assert_eq!(sample(&text, "tokenledger_ledger_writable"), 1.0);
    assert_eq!(sample(&text, "tokenledger_ready"), 1.0);
    assert!(sample(&text, "tokenledger_replay_events") >= 1.0);
    assert!(text.contains("tokenledger_replay_seconds "), "{text}");
    assert_eq!(sample(&text, "tokenledger_rate_limited_total{limit=\"spike\"}"), 0.0);
    assert_eq!(sample(&text, "tokenledger_rate_limited_total{limit=\"quota\"}"), 0.0);
    assert!(sample(&text, "tokenledger_connections_total") >= 1.0);
    assert!(text.contains("# HELP tokenledger_ledger_commit_seconds"), "{text}");
    assert!(text.contains("# TYPE tokenledger_request_duration_seconds histogram"), "{text}");
    // A user's password check is counted (PBKDF2 is the expensive step).
    let before = sample(&text, "tokenledger_password_hashes_total");
    server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.access_token();
    assert_eq!(sample(&scrape(&server).await, "tokenledger_password_hashes_total"), before + 1.0);
}

/// Security review finding 13 (metrics): `/metrics` discloses business telemetry on the public
/// port. With `metrics_listen` it is served on its own listener (a private interface) and the
/// API port answers 404 for it.
#[tokio::test]
async fn finding_13_metrics_can_move_to_their_own_listener() {
    let server = TestServer::start_with(|s| s.metrics_listen = Some("127.0.0.1:0".into())).await;
    let public = server.http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let addr = server.app.metrics_addr.get().expect("the metrics listener is bound");
    let private = server.http.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(private.status(), 200);
    assert!(private.text().await.unwrap().contains("tokenledger_requests_total"));
    let other = server.http.get(format!("http://{addr}/oauth2/v1/token")).send().await.unwrap();
    assert_eq!(other.status(), 404, "only /metrics is served there");
    server.stop().await;
}

/// Security review finding 13 (PBKDF2 cost): any `password_pbkdf2_iterations` was accepted,
/// 1 included. The real binary now refuses fewer than 100000 unless the test-only override is
/// given.
#[test]
fn finding_13_a_low_pbkdf2_cost_is_refused_without_the_explicit_override() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(crate::binary::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--password-pbkdf2-iterations", "1000", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server started with 1000 PBKDF2 iterations");
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("password_pbkdf2_iterations must be at least 100000"), "{stderr}");
    assert!(!dir.path().join("ledger.redb").exists(), "refused before anything was created");
}
