//! DELETE/POST /oauth2/v1/revoke (SPEC 3.2, RFC 7009): DELETE answers 204 as Candescent
//! documents, POST answers 200 as RFC 7009 section 2.2 (and standard clients) require.

use reqwest::Method;

use crate::harness::*;

#[tokio::test]
async fn revoking_an_access_token_ends_only_that_token() {
    let (server, f) = TestServer::seeded().await;
    let tokens = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let txid = txid();
    let reply = server
        .http
        .delete(server.url("/oauth2/v1/revoke"))
        .header("authorization", tokenledger::wire::encode_basic(&f.app.id, &f.app.secret))
        .header("transactionId", &txid)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={access}"))
        .send()
        .await
        .unwrap();
    let reply = Reply::from(reply).await;
    assert_eq!(reply.status, 204);
    assert!(reply.text.is_empty());
    assert_eq!(reply.header("transactionid"), Some(txid.as_str()));
    assert!(!server.is_active(&f.app, access).await, "introspection reflects the revocation at once");
    assert!(server.is_active(&f.app, refresh).await);
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_its_family() {
    let (server, f) = TestServer::seeded().await;
    let first = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let second = server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={}", first["refresh_token"].as_str().unwrap()))
        .await
        .json();
    assert_eq!(server.revoke(&f.app, second["refresh_token"].as_str().unwrap()).await.status, 204);
    for token in [&first["access_token"], &second["access_token"], &second["refresh_token"]] {
        assert!(!server.is_active(&f.app, token.as_str().unwrap()).await);
    }
    let again = server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={}", second["refresh_token"].as_str().unwrap()))
        .await;
    again.assert_error(401, "CMN_90018");
}

#[tokio::test]
async fn post_revocation_answers_200_with_an_empty_body() {
    let (server, f) = TestServer::seeded().await;
    let tokens = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let txid = txid();
    let reply = server
        .post_form("/oauth2/v1/revoke", Some(&f.app), &[("transactionId", &txid)], &format!("token={access}"))
        .await;
    assert_eq!(reply.status, 200, "RFC 7009 section 2.2: {}", reply.text);
    assert!(reply.text.is_empty(), "no body: {}", reply.text);
    assert_eq!(reply.header("transactionid"), Some(txid.as_str()));
    assert!(!server.is_active(&f.app, access).await);
    assert!(server.is_active(&f.app, refresh).await, "an access token revokes only itself");
    assert_eq!(server.revoke_with(Method::POST, &f.app, refresh).await.status, 200);
    assert!(!server.is_active(&f.app, refresh).await);
}

#[tokio::test]
async fn revocation_is_no_existence_oracle() {
    let (server, f) = TestServer::seeded().await;
    let theirs = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let mine = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.access_token();
    assert_eq!(server.revoke(&f.app, &mine).await.status, 204);
    for (method, status) in [(Method::DELETE, 204), (Method::POST, 200)] {
        for token in ["garbage", &"x".repeat(8000), &theirs, &mine] {
            let reply = server.revoke_with(method.clone(), &f.app, token).await;
            assert_eq!(reply.status, status, "{method} {token:.20}: {}", reply.text);
            assert!(reply.text.is_empty());
        }
    }
    assert!(server.is_active(&f.service, &theirs).await, "another client's token is not revoked");
}

#[tokio::test]
async fn revocation_errors() {
    let (server, f) = TestServer::seeded().await;
    let missing = server.post_form("/oauth2/v1/revoke", Some(&f.app), &[("transactionId", &txid())], "").await;
    missing.assert_error(400, "CMN_90011");
    let wrong = ClientCreds { id: f.app.id.clone(), secret: "nope".into() };
    let reply = server.revoke(&wrong, "anything").await;
    reply.assert_error(401, "CMN_90004");
    assert!(reply.header("www-authenticate").is_some());
    let no_txid = server.post_form("/oauth2/v1/revoke", Some(&f.app), &[], "token=x").await;
    no_txid.assert_error(400, "CMN_90008");
}
