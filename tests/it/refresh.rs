//! Refresh rotation, reuse detection with family revocation, idempotent retry, and the
//! concurrent-refresh race (SPEC 3.1).

use std::sync::Arc;

use crate::harness::*;

async fn sign_in(server: &TestServer, f: &Fixture) -> serde_json::Value {
    let reply = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

fn refresh_body(token: &serde_json::Value) -> String {
    format!("grant_type=refresh_token&refresh_token={}", token.as_str().unwrap())
}

#[tokio::test]
async fn refresh_rotates_and_ends_the_old_refresh_token() {
    let (server, f) = TestServer::seeded().await;
    let first = sign_in(&server, &f).await;
    let second = server.token(&f.app, &refresh_body(&first["refresh_token"])).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let second = second.json();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(second["scope"], first["scope"]);
    assert!(second["refresh_token_expires_in"].as_i64().unwrap() > 0);
    assert!(
        !server.is_active(&f.app, first["refresh_token"].as_str().unwrap()).await,
        "the rotated refresh token is over"
    );
    assert!(server.is_active(&f.app, second["refresh_token"].as_str().unwrap()).await);
    assert!(
        server.is_active(&f.app, first["access_token"].as_str().unwrap()).await,
        "older access tokens live until they expire"
    );
    // institutionId is optional on refresh; when sent it must match.
    let third = server.token_at(&f.app, INSTITUTION, &refresh_body(&second["refresh_token"])).await;
    assert_eq!(third.status, 200, "{}", third.text);
    let third = third.json();
    server
        .token_at(&f.app, OTHER_INSTITUTION, &refresh_body(&third["refresh_token"]))
        .await
        .assert_error(400, "CMN_90005");
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    let (server, f) = TestServer::seeded().await;
    let first = sign_in(&server, &f).await;
    let second = server.token(&f.app, &refresh_body(&first["refresh_token"])).await.json();
    let reuse = server.token(&f.app, &refresh_body(&first["refresh_token"])).await;
    reuse.assert_error(401, "CMN_90018");
    assert_eq!(reuse.json()["error"], "invalid_grant");
    for token in [&first["access_token"], &second["access_token"], &second["refresh_token"]] {
        assert!(!server.is_active(&f.app, token.as_str().unwrap()).await, "family member still active after reuse");
    }
    server.token(&f.app, &refresh_body(&second["refresh_token"])).await.assert_error(401, "CMN_90018");
}

#[tokio::test]
async fn refresh_scopes_may_narrow_but_never_widen() {
    let server = TestServer::start().await;
    let f = server.seed().await;
    let body = format!("grant_type=password&{ALICE_LOGIN}&scopes=accounts:read,transactions:read");
    let first = server.token(&f.app, &body).await.json();
    let narrow = server.token(&f.app, &format!("{}&scopes=accounts:read", refresh_body(&first["refresh_token"]))).await;
    assert_eq!(narrow.status, 200, "{}", narrow.text);
    let narrow = narrow.json();
    assert_eq!(narrow["scope"], "accounts:read");
    // The new refresh token keeps the original grant's scope (RFC 6749 section 6).
    let later = server.token(&f.app, &refresh_body(&narrow["refresh_token"])).await.json();
    assert_eq!(later["scope"], "accounts:read transactions:read");
    let wide = format!("{}&scopes=profile", refresh_body(&later["refresh_token"]));
    server.token(&f.app, &wide).await.assert_error(400, "CMN_90012");
}

#[tokio::test]
async fn refresh_tokens_are_bound_to_their_client() {
    let server = TestServer::start().await;
    let f = server.seed().await;
    let thief = server
        .client(tokenledger::proto::ClientSpec {
            client_id: "thief".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["password".into(), "refresh_token".into()],
            scopes: vec!["accounts:read".into()],
            ..Default::default()
        })
        .await;
    let first = sign_in(&server, &f).await;
    server.token(&thief, &refresh_body(&first["refresh_token"])).await.assert_error(401, "CMN_90018");
    // The owner's family is untouched by the stranger's attempt.
    let owner = server.token(&f.app, &refresh_body(&first["refresh_token"])).await;
    assert_eq!(owner.status, 200, "{}", owner.text);
}

#[tokio::test]
async fn malformed_refresh_requests() {
    let (server, f) = TestServer::seeded().await;
    let first = sign_in(&server, &f).await;
    server.token(&f.app, "grant_type=refresh_token").await.assert_error(400, "CMN_90011");
    server.token(&f.app, "grant_type=refresh_token&refresh_token=garbage").await.assert_error(401, "CMN_90018");
    // An access token is not a refresh token.
    server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={}", first["access_token"].as_str().unwrap()))
        .await
        .assert_error(401, "CMN_90018");
    let mut flipped = first["refresh_token"].as_str().unwrap().to_owned().into_bytes();
    let last = flipped.len() - 5;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={flipped}"))
        .await
        .assert_error(401, "CMN_90018");
    // A client without refresh rights cannot refresh at all.
    server.token(&f.service, &refresh_body(&first["refresh_token"])).await.assert_error(400, "CMN_90006");
}

#[tokio::test]
async fn a_lost_refresh_response_can_be_retried_with_the_same_transaction_id() {
    let (server, f) = TestServer::seeded().await;
    let first = sign_in(&server, &f).await;
    let txid = txid();
    let headers = [("transactionId", txid.as_str())];
    let body = refresh_body(&first["refresh_token"]);
    let answer = server.post_form("/oauth2/v1/token", Some(&f.app), &headers, &body).await.json();
    let retry = server.post_form("/oauth2/v1/token", Some(&f.app), &headers, &body).await;
    assert_eq!(retry.status, 200, "a retry is not reuse: {}", retry.text);
    let retry = retry.json();
    assert_eq!(retry["access_token"], answer["access_token"]);
    assert_eq!(retry["refresh_token"], answer["refresh_token"]);
    assert!(server.is_active(&f.app, answer["refresh_token"].as_str().unwrap()).await, "the family survives a retry");
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_have_exactly_one_winner() {
    let (server, f) = TestServer::seeded().await;
    let server = Arc::new(server);
    for round in 0..5 {
        let first = sign_in(&server, &f).await;
        let body = Arc::new(refresh_body(&first["refresh_token"]));
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (server, body, barrier, app) = (server.clone(), body.clone(), barrier.clone(), f.app.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    server.token(&app, &body).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let reply = task.await.unwrap();
            match reply.status {
                200 => winners.push(reply.json()),
                401 => reply.assert_error(401, "CMN_90018"),
                other => panic!("round {round}: unexpected {other}: {}", reply.text),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one refresh wins");
        // The losers presented a rotated token: that is reuse, so the family is revoked too.
        assert!(!server.is_active(&f.app, winners[0]["refresh_token"].as_str().unwrap()).await);
    }
}

/// Security review finding 9: a retry within 60 s handed back tokens revoked since (with a
/// positive `expires_in`), and the same transactionId in another case was a new request (for a
/// refresh: reuse, which revoked the family). Now dead tokens answer CMN_90018, and the
/// transactionId is compared case-insensitively, over REST and gRPC alike.
#[tokio::test]
async fn a_retry_never_returns_dead_tokens_and_the_transaction_id_ignores_case() {
    let (server, f) = TestServer::seeded().await;
    // A refresh retried in upper case is the same request: same tokens, no reuse.
    let first = sign_in(&server, &f).await;
    let txid = txid();
    let upper = txid.to_uppercase();
    let body = refresh_body(&first["refresh_token"]);
    let answer = server.post_form("/oauth2/v1/token", Some(&f.app), &[("transactionId", &txid)], &body).await;
    let answer = answer.json();
    let retry = server.post_form("/oauth2/v1/token", Some(&f.app), &[("transactionId", &upper)], &body).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.header("transactionid"), Some(upper.as_str()), "echoed as sent");
    assert_eq!(retry.json()["refresh_token"], answer["refresh_token"]);
    let refresh = answer["refresh_token"].as_str().unwrap();
    assert!(server.is_active(&f.app, refresh).await, "not counted as reuse");
    // The same over gRPC, in mixed case.
    let mut tokens = server.token_client().await;
    let grpc_retry = |txid: String| {
        let mut request = tonic::Request::new(tokenledger::proto::CreateTokenRequest {
            grant_type: "refresh_token".into(),
            refresh_token: first["refresh_token"].as_str().unwrap().into(),
            ..Default::default()
        });
        request.metadata_mut().insert("transactionid", txid.parse().unwrap());
        request
            .metadata_mut()
            .insert("authorization", tokenledger::wire::encode_basic(&f.app.id, &f.app.secret).parse().unwrap());
        request
    };
    let mixed: String =
        txid.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
    let over_grpc = tokens.create_token(grpc_retry(mixed.clone())).await.expect("gRPC retry").into_inner();
    assert_eq!(over_grpc.refresh_token, refresh);

    // Once the tokens are revoked, the retry answers CMN_90018 instead of handing them out.
    assert_eq!(server.revoke(&f.app, refresh).await.status, 204);
    let dead = server.post_form("/oauth2/v1/token", Some(&f.app), &[("transactionId", &txid)], &body).await;
    dead.assert_error(401, "CMN_90018");
    let status = tokens.create_token(grpc_retry(mixed)).await.unwrap_err();
    assert!(status.message().contains("CMN_90018"), "{status:?}");
    // Also for a client_credentials token revoked on its own.
    let txid = crate::harness::txid();
    let headers = [("transactionId", txid.as_str()), ("institutionId", INSTITUTION)];
    let access =
        server.post_form("/oauth2/v1/token", Some(&f.service), &headers, "grant_type=client_credentials").await;
    let access = access.access_token();
    assert_eq!(server.revoke(&f.service, &access).await.status, 204);
    server
        .post_form("/oauth2/v1/token", Some(&f.service), &headers, "grant_type=client_credentials")
        .await
        .assert_error(401, "CMN_90018");
}
