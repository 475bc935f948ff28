//! Per-client spike arrest (CMN_90003) and quota (CMN_90002) over REST and gRPC: the SPEC
//! status (500) with `Retry-After`, RESOURCE_EXHAUSTED on gRPC, and no expensive work for a
//! refused request (no PBKDF2, nothing appended to the ledger).

use tokenledger::clock::{Clock as _, ManualClock};
use tokenledger::proto::token_service_client::TokenServiceClient;
use tokenledger::proto::{self as api};
use tonic::transport::Channel;

use crate::harness::*;

/// The value of an unlabelled counter or gauge in the server's /metrics.
pub async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|value| value.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

fn head_seq(server: &TestServer) -> u64 {
    server.app.state.read().head.seq
}

fn retry_after(reply: &Reply) -> u64 {
    reply.header("retry-after").expect("Retry-After").parse().expect("Retry-After in seconds")
}

fn token_request(creds: &ClientCreds) -> tonic::Request<api::CreateTokenRequest> {
    let mut request =
        tonic::Request::new(api::CreateTokenRequest { grant_type: "client_credentials".into(), ..Default::default() });
    let metadata = request.metadata_mut();
    metadata.insert("authorization", tokenledger::wire::encode_basic(&creds.id, &creds.secret).parse().unwrap());
    metadata.insert("transactionid", txid().parse().unwrap());
    metadata.insert("institutionid", INSTITUTION.parse().unwrap());
    request
}

async fn grpc_token(client: &mut TokenServiceClient<Channel>, creds: &ClientCreds) -> Result<(), tonic::Status> {
    client.create_token(token_request(creds)).await.map(|_| ())
}

#[tokio::test]
async fn spike_arrest_answers_cmn_90003_with_retry_after_before_any_password_hash() {
    let server = TestServer::start_with(|s| {
        s.spike_arrest_per_sec = Some(1);
        s.spike_arrest_burst = Some(2);
    })
    .await;
    let f = server.seed().await;
    let wrong = "grant_type=password&username=alice&password=wrong";
    let login = format!("grant_type=password&{ALICE_LOGIN}");
    assert_eq!(server.token(&f.app, &login).await.status, 200);
    assert_eq!(server.token(&f.app, &login).await.status, 200);
    let hashes = metric(&server, "tokenledger_password_hashes_total").await;
    let head = head_seq(&server);
    for _ in 0..5 {
        // Wrong passwords would each cost a PBKDF2 and a SignInFailed event if admitted.
        let reply = server.token(&f.app, wrong).await;
        reply.assert_error(500, "CMN_90003");
        assert_eq!(reply.json()["message"], "Spike limit violation");
        assert!((1..=2).contains(&retry_after(&reply)), "Retry-After: {:?}", reply.header("retry-after"));
        assert!(reply.header("transactionid").is_some());
    }
    assert_eq!(metric(&server, "tokenledger_password_hashes_total").await, hashes, "a refused request hashes nothing");
    assert_eq!(head_seq(&server), head, "a refused request appends nothing");
    // Another client has its own bucket.
    assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
    // Introspection and revocation count against the same client.
    server
        .post_form("/oauth2/v1/introspect", Some(&f.app), &[("transactionId", &txid())], "token=x")
        .await
        .assert_error(500, "CMN_90003");
    // After the interval the client is admitted again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(server.token(&f.app, &login).await.status, 200);
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("tokenledger_rate_limited_total{limit=\"spike\"} 6"), "{text}");
}

#[tokio::test]
async fn spike_arrest_over_grpc_is_resource_exhausted_with_the_cmn_code_and_retry_after() {
    let server = TestServer::start_with(|s| {
        s.spike_arrest_per_sec = Some(1);
        s.spike_arrest_burst = Some(1);
    })
    .await;
    let f = server.seed().await;
    let mut client = server.token_client().await;
    grpc_token(&mut client, &f.service).await.unwrap();
    let status = grpc_token(&mut client, &f.service).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "CMN_90003: Spike limit violation");
    let retry: u64 = status.metadata().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert_eq!(retry, 1);
    // The same bucket serves both transports.
    server.token(&f.service, "grant_type=client_credentials").await.assert_error(500, "CMN_90003");
}

#[tokio::test]
async fn quota_answers_cmn_90002_over_rest_and_grpc_until_the_allowance_refills() {
    let server = TestServer::start_with(|s| {
        s.quota_requests = Some(3);
        s.quota_window_secs = Some(3600);
    })
    .await;
    let f = server.seed().await;
    let mut client = server.token_client().await;
    assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
    grpc_token(&mut client, &f.service).await.unwrap();
    assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
    let head = head_seq(&server);
    let reply = server.token(&f.service, "grant_type=client_credentials").await;
    reply.assert_error(500, "CMN_90002");
    assert_eq!(reply.json()["message"], "Quota limit violation");
    // One request's worth of the hourly allowance comes back every 20 minutes.
    let wait = retry_after(&reply);
    assert!((1190..=1200).contains(&wait), "Retry-After {wait}");
    let status = grpc_token(&mut client, &f.service).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), "CMN_90002: Quota limit violation");
    assert!(status.metadata().get("retry-after").is_some());
    assert_eq!(head_seq(&server), head, "nothing recorded for refused requests");
    // The quota is charged after client authentication: wrong secrets do not use it up.
    let other = server
        .client(api::ClientSpec {
            client_id: "svc2".into(),
            name: "Second service".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["accounts:read".into()],
            ..Default::default()
        })
        .await;
    let thief = ClientCreds { id: other.id.clone(), secret: "guess".into() };
    for _ in 0..5 {
        server.token(&thief, "grant_type=client_credentials").await.assert_error(401, "CMN_90004");
    }
    assert_eq!(server.token(&other, "grant_type=client_credentials").await.status, 200);
}

/// Security review finding 10: no quota by default, so one authenticated client could grow
/// memory and the ledger without bound. A server started without quota settings now has the
/// documented default (a million requests per client per hour), spike arrest stays off, and
/// `quota_requests = 0` turns the quota off.
#[tokio::test]
async fn finding_10_a_default_quota_applies_and_can_be_turned_off() {
    let (server, f) = TestServer::seeded().await;
    for _ in 0..30 {
        assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
    }
    let limits = &server.app.config.rate_limits;
    assert!(limits.spike.is_none());
    let (requests, window) = limits.quota.expect("a default quota");
    assert_eq!((requests.get(), window.as_secs()), (1_000_000, 3600));
    let off = TestServer::start_with(|s| s.quota_requests = Some(0)).await;
    assert!(off.app.config.rate_limits.quota.is_none());
}

/// Issue 12, "bounded growth": a client that holds `quota_tokens` tokens gets CMN_90002 (REST)
/// and RESOURCE_EXHAUSTED (gRPC) with `Retry-After` for further token requests, nothing is
/// recorded for them, other clients are unaffected, and the client may issue again once its
/// tokens have expired and left the tables. Revoking does not free a slot: a revoked token
/// stays in memory until its expiry like any other.
#[tokio::test]
async fn a_client_holding_quota_tokens_tokens_is_refused_until_they_expire() {
    let clock = ManualClock::new();
    let server = TestServer::start_on_clock(clock.clone(), |s| s.quota_tokens = Some(3)).await;
    let f = server.seed().await;
    let mut client = server.token_client().await;
    let first = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    grpc_token(&mut client, &f.service).await.unwrap();
    server.token(&f.service, "grant_type=client_credentials").await.access_token();
    assert!(server.revoke(&f.service, &first).await.status < 300);
    let head = head_seq(&server);
    let reply = server.token(&f.service, "grant_type=client_credentials").await;
    reply.assert_error(500, "CMN_90002");
    assert_eq!(reply.json()["message"], "Quota limit violation");
    assert_eq!(retry_after(&reply), 60);
    let status = grpc_token(&mut client, &f.service).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.metadata().get("retry-after").is_some());
    assert_eq!(head_seq(&server), head, "nothing recorded for refused requests");
    assert_eq!(metric(&server, "tokenledger_rate_limited_total{limit=\"quota_tokens\"}").await, 2.0);
    // Another client's tokens are its own: a sign-in holds two (access and refresh).
    let signed_in = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.json());
    // Past the tokens' expiry, once the purge has passed, the client issues again.
    clock.advance(2 * 3_600 * 1000);
    let now_ms = clock.now_ms();
    server.app.state.read().tables().purge_all(now_ms);
    assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
}

/// The live-token quota is on by default (5,000,000 tokens per client) and 0 turns it off.
#[tokio::test]
async fn the_live_token_quota_has_a_default_and_can_be_turned_off() {
    let server = TestServer::start().await;
    let tokens = server.app.config.rate_limits.tokens.expect("a default live-token quota");
    assert_eq!(tokens.get(), 5_000_000);
    let off = TestServer::start_with(|s| s.quota_tokens = Some(0)).await;
    assert!(off.app.config.rate_limits.tokens.is_none());
}
