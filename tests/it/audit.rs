//! AuditService.StreamEvents: filters answered from the index, time ranges, secret-free
//! views, and `follow` delivering every committed event exactly once, in order, under
//! concurrent writes and across a reconnect. Also the helpers the other audit tests share.

use std::collections::BTreeSet;

use futures_util::StreamExt as _;
use tokenledger::proto::audit_service_client::AuditServiceClient;
use tokenledger::proto::{self as api};
use tonic::transport::Channel;

use crate::harness::*;

pub async fn audit_client(server: &TestServer) -> AuditServiceClient<Channel> {
    AuditServiceClient::new(server.channel().await)
}

/// Every event the (non-following) request returns.
pub async fn events(server: &TestServer, request: api::StreamEventsRequest) -> Vec<api::LedgerEvent> {
    let mut stream =
        audit_client(server).await.stream_events(server.admin(request)).await.expect("stream").into_inner();
    let mut out = Vec::new();
    while let Some(event) = stream.next().await {
        out.push(event.expect("stream item"));
    }
    out
}

pub fn seqs(events: &[api::LedgerEvent]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

pub fn head(server: &TestServer) -> u64 {
    server.app.state.read().head.seq
}

/// A password sign-in of alice: (access, refresh).
pub async fn sign_in(server: &TestServer, f: &Fixture) -> (String, String) {
    let reply = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await;
    let access = reply.access_token();
    (access, reply.json()["refresh_token"].as_str().expect("refresh_token").to_owned())
}

pub async fn refresh(server: &TestServer, f: &Fixture, refresh_token: &str) -> (String, String) {
    let reply = server.token(&f.app, &format!("grant_type=refresh_token&refresh_token={refresh_token}")).await;
    let access = reply.access_token();
    (access, reply.json()["refresh_token"].as_str().expect("refresh_token").to_owned())
}

#[tokio::test]
async fn streams_every_event_in_order_with_a_secret_free_view() {
    let (server, f) = TestServer::seeded().await;
    server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let all = events(&server, api::StreamEventsRequest::default()).await;
    assert_eq!(seqs(&all), (1..=head(&server)).collect::<Vec<_>>());
    assert_eq!(all[0].kind, "ledger_created");
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "the chain links show on the stream");
    }
    let client = all.iter().find(|e| e.kind == "client_created").expect("a client event");
    let Some(tokenledger::proto::ledger::event::Kind::ClientCreated(created)) =
        client.event.as_ref().and_then(|e| e.kind.as_ref())
    else {
        panic!("decoded event missing: {client:?}")
    };
    assert!(created.secret.is_none(), "credential digests never leave the server");
    let user = all.iter().find(|e| e.kind == "user_created").expect("a user event");
    assert!(!format!("{user:?}").contains("pbkdf2"), "{user:?}");
    let issued = all.last().unwrap();
    assert_eq!(issued.kind, "tokens_issued");
    assert!(issued.summary.contains("client_credentials grant: client svc"), "{}", issued.summary);
    assert!(!issued.transaction_id.is_empty());
    // from_seq and limit page through the same history.
    let page = events(&server, api::StreamEventsRequest { from_seq: 3, limit: 2, ..Default::default() }).await;
    assert_eq!(seqs(&page), vec![3, 4]);
}

#[tokio::test]
async fn filters_select_by_token_family_client_user_institution_kind_and_time() {
    let (server, f) = TestServer::seeded().await;
    let service_token = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let (_, first_refresh) = sign_in(&server, &f).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (access, _) = refresh(&server, &f, &first_refresh).await;
    server.revoke(&f.app, &access).await;
    let all = events(&server, api::StreamEventsRequest::default()).await;
    let by = |request: api::StreamEventsRequest| events(&server, request);

    let token = by(api::StreamEventsRequest { token: service_token.clone(), ..Default::default() }).await;
    assert_eq!(token.len(), 1);
    assert!(token[0].summary.contains("client svc"));

    // A token id works as well as the token string.
    let issued =
        all.iter().rev().find(|e| e.kind == "tokens_issued" && e.summary.contains("refresh_token grant")).unwrap();
    let family_hex = issued.summary.split("family ").nth(1).unwrap().split(';').next().unwrap().to_owned();
    let family = by(api::StreamEventsRequest { family_id: family_hex.clone(), ..Default::default() }).await;
    assert_eq!(family.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["tokens_issued", "tokens_issued"]);

    let client = by(api::StreamEventsRequest { client_id: "app".into(), ..Default::default() }).await;
    assert_eq!(
        client.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["client_created", "tokens_issued", "tokens_issued", "token_revoked"],
        "the revocation is indexed under the token's client"
    );
    let user = by(api::StreamEventsRequest {
        user: Some(api::EventUser { institution_id: INSTITUTION.into(), login_id: "alice".into() }),
        ..Default::default()
    })
    .await;
    assert_eq!(user.len(), 4, "created, signed in, refreshed, one token revoked");
    let institution =
        by(api::StreamEventsRequest { institution_id: OTHER_INSTITUTION.into(), ..Default::default() }).await;
    assert_eq!(
        institution.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["institution_created", "client_created"]
    );

    let kinds =
        by(api::StreamEventsRequest { kinds: vec!["token_revoked".into(), "3".into()], ..Default::default() }).await;
    assert_eq!(
        kinds.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["client_created"; 3].iter().copied().chain(["token_revoked"]).collect::<Vec<_>>()
    );
    // Filters combine (AND).
    let both = by(api::StreamEventsRequest {
        client_id: "app".into(),
        kinds: vec!["tokens_issued".into()],
        from_seq: issued.seq,
        ..Default::default()
    })
    .await;
    assert_eq!(seqs(&both), vec![issued.seq]);

    // A time range selects by commit time, inclusive.
    let refresh_at = issued.recorded_at_ms;
    let window =
        by(api::StreamEventsRequest { from_time_ms: refresh_at, to_time_ms: refresh_at, ..Default::default() }).await;
    assert!(window.iter().all(|e| e.recorded_at_ms == refresh_at) && window.iter().any(|e| e.seq == issued.seq));
    let before = by(api::StreamEventsRequest { to_time_ms: refresh_at - 1, ..Default::default() }).await;
    assert!(before.iter().all(|e| e.recorded_at_ms < refresh_at) && !before.is_empty());
    assert_eq!(before.len() + all.iter().filter(|e| e.recorded_at_ms >= refresh_at).count(), all.len());

    let bad = audit_client(&server)
        .await
        .stream_events(server.admin(api::StreamEventsRequest { kinds: vec!["nope".into()], ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("tokens_issued"), "{}", bad.message());
}

#[tokio::test]
async fn the_admin_credential_is_required() {
    let (server, _) = TestServer::seeded().await;
    let mut client = audit_client(&server).await;
    let refused = client.stream_events(api::StreamEventsRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(api::VerifyLedgerRequest::default());
    wrong.metadata_mut().insert("authorization", "Bearer tladm_wrong".parse().unwrap());
    assert_eq!(client.verify_ledger(wrong).await.unwrap_err().code(), tonic::Code::Unauthenticated);
}

/// Follows from `from_seq` until `until` is seen, returning every seq received.
async fn follow_until(server: &TestServer, from_seq: u64, until: u64) -> Vec<u64> {
    let request = api::StreamEventsRequest { from_seq, follow: true, ..Default::default() };
    let mut stream = audit_client(server).await.stream_events(server.admin(request)).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(event) = stream.next().await {
        let seq = event.unwrap().seq;
        got.push(seq);
        if seq >= until {
            break;
        }
    }
    got
}

#[tokio::test]
async fn follow_delivers_every_committed_event_once_in_order_under_concurrent_writes() {
    let (server, f) = TestServer::seeded().await;
    let start = head(&server) + 1;
    let request = api::StreamEventsRequest { from_seq: start, follow: true, ..Default::default() };
    let mut stream = audit_client(&server).await.stream_events(server.admin(request)).await.unwrap().into_inner();
    // 200 token requests from 8 concurrent workers, while the follower streams.
    let workers = server.spawn_issuers(&f.service, 8, 25);
    for worker in workers {
        worker.await.unwrap();
    }
    let end = head(&server);
    assert_eq!(end - start + 1, 200);
    let mut got = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        assert_eq!(event.kind, "tokens_issued");
        got.push(event.seq);
        if event.seq == end {
            break;
        }
    }
    assert_eq!(got, (start..=end).collect::<Vec<_>>(), "every committed seq exactly once, in order");
}

#[tokio::test]
async fn a_reconnect_from_the_last_seen_seq_resumes_without_gaps_or_duplicates() {
    let (server, f) = TestServer::seeded().await;
    let start = head(&server) + 1;
    let writer = server.spawn_issuers(&f.service, 1, 60).remove(0);
    // First connection: take some events, then drop it mid-stream.
    let mut first = Vec::new();
    {
        let request = api::StreamEventsRequest { from_seq: start, follow: true, ..Default::default() };
        let mut stream = audit_client(&server).await.stream_events(server.admin(request)).await.unwrap().into_inner();
        while first.len() < 20 {
            first.push(stream.next().await.unwrap().unwrap().seq);
        }
    }
    writer.await.unwrap();
    let end = head(&server);
    let second = follow_until(&server, first.last().unwrap() + 1, end).await;
    let all: Vec<u64> = first.iter().chain(&second).copied().collect();
    assert_eq!(all, (start..=end).collect::<Vec<_>>());
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), all.len());
}

#[tokio::test]
async fn a_filtered_follow_sees_new_matching_events_only_and_ends_at_its_time_range() {
    let (server, f) = TestServer::seeded().await;
    let request = api::StreamEventsRequest {
        follow: true,
        client_id: "app".into(),
        kinds: vec!["tokens_issued".into()],
        from_seq: head(&server) + 1,
        ..Default::default()
    };
    let mut stream = audit_client(&server).await.stream_events(server.admin(request)).await.unwrap().into_inner();
    server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let (_, refresh_token) = sign_in(&server, &f).await;
    let event = stream.next().await.unwrap().unwrap();
    assert!(event.summary.contains("password grant: client app"), "{}", event.summary);
    refresh(&server, &f, &refresh_token).await;
    let event = stream.next().await.unwrap().unwrap();
    assert!(event.summary.contains("refresh_token grant"), "{}", event.summary);

    // A follow with an end time that has passed ends by itself.
    let now = wall_ms();
    let request = api::StreamEventsRequest { follow: true, to_time_ms: now, ..Default::default() };
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let mut stream = audit_client(&server).await.stream_events(server.admin(request)).await.unwrap().into_inner();
    let mut count = 0;
    let finished = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(event) = stream.next().await {
            assert!(event.unwrap().recorded_at_ms <= now);
            count += 1;
        }
    })
    .await;
    assert!(finished.is_ok(), "the stream must end once its time range is over");
    assert_eq!(count, head(&server) - 1);
}

#[tokio::test]
async fn followers_end_promptly_when_the_server_shuts_down() {
    let (server, _) = TestServer::seeded().await;
    let request = api::StreamEventsRequest { follow: true, ..Default::default() };
    let mut stream = audit_client(&server).await.stream_events(server.admin(request)).await.unwrap().into_inner();
    let last = head(&server);
    while stream.next().await.unwrap().unwrap().seq < last {}
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "shutdown waited for a follower");
    match stream.next().await {
        Some(Err(status)) => {
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert!(status.message().contains(&format!("resume from seq {}", last + 1)), "{}", status.message());
        }
        other => panic!("expected UNAVAILABLE with a resume hint, got {other:?}"),
    }
}

#[tokio::test]
async fn audit_service_is_in_health_and_reflection() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    let request = HealthCheckRequest { service: "tokenledger.v1.AuditService".into() };
    assert_eq!(health.check(request).await.unwrap().into_inner().status(), ServingStatus::Serving);
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("tokenledger.v1.AuditService".into())),
    };
    // The audit API embeds the stored event format: grpcurl asks for that file too.
    let dependency = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileByFilename("tokenledger/ledger/v1/events.proto".into())),
    };
    for request in [request, dependency] {
        let mut stream = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        let answer = stream.message().await.unwrap().unwrap();
        assert!(matches!(answer.message_response, Some(MessageResponse::FileDescriptorResponse(_))), "{answer:?}");
    }
}
