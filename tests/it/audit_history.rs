//! GetTokenHistory and TokenStatusAt: every state change of a token and its family with its
//! reason, and the verdict at any time with the event that decided it, also for tokens the
//! projections forgot long ago.

use std::time::Duration;

use tokenledger::proto::{self as api};

use crate::audit::*;
use crate::harness::*;

pub fn token_id(server: &TestServer, token: &str) -> String {
    let (_, id) = tokenledger::crypto::token::decode(&server.app.keys, token).expect("a token of this server");
    id.to_hex()
}

pub async fn status_at(server: &TestServer, token: &str, at_ms: i64) -> api::TokenVerdict {
    let request = api::TokenStatusAtRequest { token: token.into(), at_ms };
    let answer = audit_client(server).await.token_status_at(server.admin(request)).await.expect("status at");
    answer.into_inner().status.expect("status")
}

pub async fn history(server: &TestServer, token: &str) -> api::GetTokenHistoryResponse {
    let request = api::GetTokenHistoryRequest { token: token.into() };
    audit_client(server).await.get_token_history(server.admin(request)).await.expect("history").into_inner()
}

/// The commit time of event `seq`.
pub async fn time_of(server: &TestServer, seq: u64) -> i64 {
    events(server, api::StreamEventsRequest { from_seq: seq, limit: 1, ..Default::default() }).await[0].recorded_at_ms
}

pub async fn pause() {
    tokio::time::sleep(Duration::from_millis(15)).await;
}

#[track_caller]
pub fn assert_verdict(verdict: &api::TokenVerdict, state: &str, deciding_seq: u64) {
    assert_eq!((verdict.state.as_str(), verdict.deciding_seq), (state, deciding_seq), "{verdict:?}");
    assert_eq!(verdict.active, state == "active");
    assert_eq!(verdict.deciding_event.as_ref().map(|e| e.seq), Some(deciding_seq), "{verdict:?}");
    assert!(!verdict.reason.is_empty());
}

#[tokio::test]
async fn status_at_follows_a_token_through_refresh_and_family_revocation() {
    let (server, f) = TestServer::seeded().await;
    let (access1, refresh1) = sign_in(&server, &f).await;
    let issued = head(&server);
    pause().await;
    let (access2, refresh2) = refresh(&server, &f, &refresh1).await;
    let refreshed = head(&server);
    pause().await;
    assert_eq!(server.revoke(&f.app, &refresh2).await.status, 204);
    let revoked = head(&server);
    let (t1, t2, t3) =
        (time_of(&server, issued).await, time_of(&server, refreshed).await, time_of(&server, revoked).await);

    assert_verdict(&status_at(&server, &refresh1, t1 - 1).await, "not_yet_issued", issued);
    assert_verdict(&status_at(&server, &refresh1, t1).await, "active", issued);
    assert_verdict(&status_at(&server, &refresh1, t2).await, "rotated", refreshed);
    // Rotation ends the refresh token, not the access token issued with it.
    assert_verdict(&status_at(&server, &access1, t2).await, "active", issued);
    assert_verdict(&status_at(&server, &access1, t3).await, "family_revoked", revoked);
    assert_verdict(&status_at(&server, &access2, t3 - 1).await, "active", refreshed);
    assert_verdict(&status_at(&server, &access2, t3).await, "family_revoked", revoked);
    // The rotated refresh token was ended by its rotation first; that event decides.
    assert_verdict(&status_at(&server, &refresh1, t3).await, "rotated", refreshed);
    // A hex token id works like the token string.
    let by_id = status_at(&server, &token_id(&server, &access2), t3).await;
    assert_verdict(&by_id, "family_revoked", revoked);
    assert!(by_id.reason.contains("client request"), "{}", by_id.reason);
}

#[tokio::test]
async fn history_lists_the_token_and_its_family_with_the_reason_for_each_change() {
    let (server, f) = TestServer::seeded().await;
    let (access1, refresh1) = sign_in(&server, &f).await;
    refresh(&server, &f, &refresh1).await;
    // Reuse of the rotated refresh token revokes the whole family.
    server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={refresh1}"))
        .await
        .assert_error(401, "CMN_90018");
    let story = history(&server, &access1).await;
    let token = story.token.as_ref().unwrap();
    assert_eq!(
        (token.token_type.as_str(), token.client_id.as_str(), token.login_id.as_str()),
        ("access_token", "app", "alice")
    );
    assert_eq!(token.grant_type, "password");
    let kinds: Vec<_> = story.entries.iter().map(|e| e.event.as_ref().unwrap().kind.as_str()).collect();
    assert_eq!(kinds, ["tokens_issued", "tokens_issued", "family_revoked"]);
    let affects: Vec<_> = story.entries.iter().map(|e| e.affects_token).collect();
    assert_eq!(affects, [true, false, true], "the refresh minted new tokens but did not change this one");
    assert!(story.entries[2].change.contains("refresh token reuse"), "{}", story.entries[2].change);
    let now = story.status_now.unwrap();
    assert_eq!(now.state, "family_revoked");
    assert!(now.reason.contains("refresh token reuse"), "{}", now.reason);
    assert!(!story.truncated);

    let unknown = audit_client(&server)
        .await
        .get_token_history(server.admin(api::GetTokenHistoryRequest { token: "00".repeat(16) }))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let forged = audit_client(&server)
        .await
        .get_token_history(server.admin(api::GetTokenHistoryRequest { token: format!("{access1}x") }))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn long_expired_tokens_keep_their_history_and_point_in_time_status() {
    let server = TestServer::start().await;
    server.institution(INSTITUTION).await;
    let short = server
        .client(api::ClientSpec {
            client_id: "short".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["client_credentials".into()],
            access_token_ttl_secs: 1,
            ..Default::default()
        })
        .await;
    let token = server.token(&short, "grant_type=client_credentials").await.access_token();
    let issued = head(&server);
    let issued_at = time_of(&server, issued).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The purge thread walks a few shards every 100 ms (a whole cycle in ~26 s); a full pass
    // now, as that cycle would end.
    let (_, id) = tokenledger::crypto::token::decode(&server.app.keys, &token).unwrap();
    let tables = server.app.state.read().shared_tables();
    tables.purge_all(server.app.clock.now_ms());
    assert!(server.app.state.read().token(&id).is_none(), "the projections forgot the expired token");
    assert_verdict(&status_at(&server, &token, issued_at + 500).await, "active", issued);
    let expired = status_at(&server, &token, issued_at + 1000).await;
    assert_verdict(&expired, "expired", issued);
    let story = history(&server, &token).await;
    assert_eq!(story.entries.len(), 1);
    assert_eq!(story.status_now.unwrap().state, "expired");
}

#[tokio::test]
async fn disabling_a_client_is_the_event_that_decides_its_older_tokens_status() {
    let (server, f) = TestServer::seeded().await;
    let token = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let issued = head(&server);
    pause().await;
    let request = api::GetClientRequest { client_id: f.service.id.clone() };
    server.admin_client().await.disable_client(server.admin(request)).await.expect("disable");
    let disabled = head(&server);
    let (t_issued, t_disabled) = (time_of(&server, issued).await, time_of(&server, disabled).await);
    assert_verdict(&status_at(&server, &token, t_issued).await, "active", issued);
    assert_verdict(&status_at(&server, &token, t_disabled).await, "cut_off", disabled);
    let listed = history(&server, &token).await;
    let entry = listed.entries.iter().find(|e| e.event.as_ref().map(|e| e.seq) == Some(disabled));
    assert!(entry.is_some_and(|e| e.affects_token), "the disable event is in the token's history: {listed:?}");
}
