//! POST /oauth2/v1/introspect (SPEC 3.3, RFC 7662).

use crate::harness::*;

#[tokio::test]
async fn active_tokens_have_the_rfc7662_shape() {
    let (server, f) = TestServer::seeded().await;
    let tokens = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}&scopes=accounts:read")).await.json();
    let reply = server
        .post_form(
            "/oauth2/v1/introspect",
            Some(&f.service),
            &[("transactionId", &txid())],
            &format!("token={}", tokens["access_token"].as_str().unwrap()),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let info = reply.json();
    assert_eq!(info["active"], true);
    assert_eq!(info["scope"], "accounts:read");
    assert_eq!(info["client_id"], "app");
    assert_eq!(info["username"], "alice");
    assert_eq!(info["token_type"], "access_token");
    assert_eq!(info["institution_id"], INSTITUTION);
    assert_eq!(info["grant_type"], "password");
    assert_eq!(info["iss"], server.app.config.issuer);
    let (exp, iat) = (info["exp"].as_i64().unwrap(), info["iat"].as_i64().unwrap());
    assert_eq!(exp - iat, 3600);
    assert!(info["sub"].as_str().is_some_and(|s| !s.is_empty()));
    let refresh = server.introspect(&f.service, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh["token_type"], "refresh_token");
    let service = server
        .introspect(&f.service, &server.token(&f.service, "grant_type=client_credentials").await.access_token())
        .await;
    assert_eq!(service["sub"], "svc");
    assert!(service.get("username").is_none());
}

#[tokio::test]
async fn anything_not_active_is_exactly_active_false() {
    let (server, f) = TestServer::seeded().await;
    let revoked = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    server.revoke(&f.service, &revoked).await;
    let other_institution =
        server.token_at(&f.other, OTHER_INSTITUTION, "grant_type=client_credentials").await.access_token();
    let mut mangled = revoked.clone();
    mangled.pop();
    mangled.push('x');
    for token in [revoked.as_str(), "garbage", "", &"t".repeat(1 << 16), &mangled, &other_institution] {
        let reply = server
            .post_form(
                "/oauth2/v1/introspect",
                Some(&f.service),
                &[("transactionId", &txid())],
                &format!("token={token}"),
            )
            .await;
        if token.is_empty() {
            reply.assert_error(400, "CMN_90011");
            continue;
        }
        if token.len() > 16 * 1024 {
            reply.assert_error(400, "CMN_90011");
            continue;
        }
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text, r#"{"active":false}"#, "token {token:.16}");
    }
}

#[tokio::test]
async fn tokens_expire() {
    let clock = tokenledger::clock::ManualClock::new();
    let server = TestServer::start_on_clock(clock.clone(), |s| s.access_token_ttl_secs = Some(1)).await;
    let f = server.seed().await;
    let token = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    assert!(server.is_active(&f.service, &token).await);
    clock.advance(1100);
    assert!(!server.is_active(&f.service, &token).await);
}

#[tokio::test]
async fn introspection_needs_the_capability_and_valid_credentials() {
    let server = TestServer::start().await;
    server.seed().await;
    let plain = server
        .client(tokenledger::proto::ClientSpec {
            client_id: "plain".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["accounts:read".into()],
            introspect: false,
            ..Default::default()
        })
        .await;
    let token = server.token(&plain, "grant_type=client_credentials").await.access_token();
    let reply = server
        .post_form("/oauth2/v1/introspect", Some(&plain), &[("transactionId", &txid())], &format!("token={token}"))
        .await;
    reply.assert_error(400, "CMN_90006");
    let wrong = ClientCreds { id: "plain".into(), secret: "no".into() };
    let reply = server
        .post_form("/oauth2/v1/introspect", Some(&wrong), &[("transactionId", &txid())], &format!("token={token}"))
        .await;
    reply.assert_error(401, "CMN_90004");
}
