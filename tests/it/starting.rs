//! While a node opens its ledger (`server::starting`): liveness yes, readiness no with the
//! replay's progress, gRPC health NOT_SERVING, `/metrics` with the progress, every other request
//! 503 CMN_90000 with Retry-After; once it is up, `/metrics` keeps the start's numbers.

use std::sync::Arc;

use tokenledger::ledger::ReplayTick;
use tokenledger::ledger::progress::StartProgress;
use tokenledger::proto::token_service_client::TokenServiceClient;
use tokenledger::server::starting::{StartListeners, serve_while};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|value| value.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

#[tokio::test]
async fn while_the_ledger_opens_the_node_answers_health_readiness_and_progress() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let progress = Arc::new(StartProgress::default());
    progress.note(ReplayTick { events: 65_536, seq: 70_000, last_seq: 1_000_000, done: false });
    let (open, opened) = tokio::sync::oneshot::channel::<u32>();
    let starting = tokio::spawn({
        let progress = progress.clone();
        async move {
            let work = async move { opened.await.unwrap() };
            let out = serve_while(StartListeners { api: Some(&listener), metrics: None }, progress, work).await;
            (out, listener)
        }
    });
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");

    let live = http.get(url("/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200, "alive while starting");
    assert_eq!(live.json::<serde_json::Value>().await.unwrap()["status"], "starting");
    let ready = http.get(url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers()["retry-after"], "1");
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "starting");
    assert_eq!(body["writes"], false);
    assert_eq!(body["replay"]["seq"], 70_000);
    assert_eq!(body["replay"]["last_seq"], 1_000_000);
    let metrics = http.get(url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&metrics, "tokenledger_starting"), 1.0);
    assert_eq!(sample(&metrics, "tokenledger_replay_events"), 65_536.0);
    assert_eq!(sample(&metrics, "tokenledger_replay_seq"), 70_000.0);
    assert_eq!(sample(&metrics, "tokenledger_replay_last_seq"), 1_000_000.0);
    assert!(metrics.contains("# HELP tokenledger_starting "), "{metrics}");
    // The progress moves as the replay reports it.
    progress.note(ReplayTick { events: 131_072, seq: 135_536, last_seq: 1_000_000, done: false });
    let metrics = http.get(url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&metrics, "tokenledger_replay_seq"), 135_536.0);

    let token = http
        .post(url("/oauth2/v1/token"))
        .basic_auth("svc", Some("secret"))
        .header("institutionId", INSTITUTION)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 503);
    assert_eq!(token.headers()["retry-after"], "1");
    assert_eq!(token.json::<serde_json::Value>().await.unwrap()["code"], "CMN_90000");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "tokenledger.v1.TokenService", "tokenledger.v1.AuditService"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::NotServing as i32, "health of {service:?} while starting");
    }
    let refused = TokenServiceClient::new(channel)
        .create_token(tokenledger::proto::CreateTokenRequest {
            grant_type: "client_credentials".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(refused.message().starts_with("CMN_90000"), "{}", refused.message());

    // Opening ends: the work's output comes back with the listener, for the real server.
    open.send(7).unwrap();
    let (out, listener) = starting.await.unwrap();
    assert_eq!(out, 7);
    assert_eq!(listener.local_addr().unwrap(), addr);
}

/// Once the node is up, `/metrics` keeps how its start went: no longer starting, and the
/// replay's seqs (a restart replays the whole ledger without a snapshot: up to the head).
#[tokio::test]
async fn after_a_start_metrics_show_the_replay_that_ran() {
    let (server, f) = TestServer::seeded().await;
    server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let server = server.restart().await;
    let head = server.app.state.read().head.seq;
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&metrics, "tokenledger_starting"), 0.0);
    assert_eq!(sample(&metrics, "tokenledger_replay_last_seq"), head as f64);
    assert_eq!(sample(&metrics, "tokenledger_replay_seq"), head as f64);
}
