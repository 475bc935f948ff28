//! POST /oauth2/v1/token: SPEC 3.1 rules and the SPEC 6 error table.

use crate::harness::*;

#[tokio::test]
async fn client_credentials_issues_a_bearer_token_with_the_spec_headers() {
    let (server, f) = TestServer::seeded().await;
    let txid = txid();
    let reply = server
        .post_form(
            "/oauth2/v1/token",
            Some(&f.service),
            &[("transactionId", &txid), ("institutionId", INSTITUTION)],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("transactionid"), Some(txid.as_str()));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    let body = reply.json();
    assert!(body["access_token"].as_str().unwrap().starts_with("tla_"));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600, "expires_in is a JSON number by default");
    assert_eq!(body["scope"], "accounts:read transactions:read", "omitted scopes grant everything allowed");
    assert!(body.get("refresh_token").is_none(), "client_credentials never returns a refresh token");
    assert!(server.is_active(&f.service, body["access_token"].as_str().unwrap()).await);
}

#[tokio::test]
async fn expires_in_can_be_a_digit_string() {
    let server = TestServer::start_with(|s| s.expires_in_as_string = Some(true)).await;
    let f = server.seed().await;
    let body = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    assert_eq!(body["expires_in"], "3600");
    // 180 days configured, capped by the family's 90-day maximum (family_lifetime_max_secs).
    assert_eq!(body["refresh_token_expires_in"], "7776000");
}

#[tokio::test]
async fn scopes_accept_commas_spaces_and_the_rfc_alias() {
    let (server, f) = TestServer::seeded().await;
    for body in [
        "grant_type=client_credentials&scopes=transactions:read,accounts:read",
        "grant_type=client_credentials&scopes=transactions:read,+accounts:read",
        "grant_type=client_credentials&scopes=transactions:read+accounts:read",
        "grant_type=client_credentials&scope=transactions:read+accounts:read",
    ] {
        let reply = server.token(&f.service, body).await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.text);
        assert_eq!(reply.json()["scope"], "transactions:read accounts:read", "{body}");
    }
    let narrow = server.token(&f.service, "grant_type=client_credentials&scopes=accounts:read").await;
    assert_eq!(narrow.json()["scope"], "accounts:read");
}

#[tokio::test]
async fn scope_errors() {
    let (server, f) = TestServer::seeded().await;
    server.token(&f.service, "grant_type=client_credentials&scopes=admin:write").await.assert_error(400, "CMN_90012");
    server
        .token(&f.service, "grant_type=client_credentials&scopes=accounts:read,%22quoted%22")
        .await
        .assert_error(400, "CMN_90012");
    server.token(&f.service, "grant_type=client_credentials&scopes=a&scope=a").await.assert_error(400, "CMN_90011");
}

#[tokio::test]
async fn transaction_id_is_required_and_must_be_a_uuid() {
    let (server, f) = TestServer::seeded().await;
    let path = "/oauth2/v1/token";
    let body = "grant_type=client_credentials";
    let missing = server.post_form(path, Some(&f.service), &[("institutionId", INSTITUTION)], body).await;
    missing.assert_error(400, "CMN_90008");
    assert_eq!(missing.header("transactionid"), None);
    for bad in [
        "not-a-uuid",
        "{3f2b8c1e-9d4a-4b7e-8f00-123456789abc}",
        "00000000-0000-0000-0000-000000000000",
        &"a".repeat(10_000),
    ] {
        let reply = server
            .post_form(path, Some(&f.service), &[("transactionId", bad), ("institutionId", INSTITUTION)], body)
            .await;
        reply.assert_error(400, "CMN_90008");
    }
    let upper = txid().to_uppercase();
    let reply = server
        .post_form(path, Some(&f.service), &[("transactionId", &upper), ("institutionId", INSTITUTION)], body)
        .await;
    assert_eq!(reply.status, 200, "any case is accepted: {}", reply.text);
    assert_eq!(reply.header("transactionid"), Some(upper.as_str()));
}

#[tokio::test]
async fn errors_echo_the_transaction_id() {
    let (server, f) = TestServer::seeded().await;
    let txid = txid();
    let reply =
        server.post_form("/oauth2/v1/token", Some(&f.service), &[("transactionId", &txid)], "grant_type=nope").await;
    reply.assert_error(400, "CMN_90007");
    assert_eq!(reply.header("transactionid"), Some(txid.as_str()));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn client_authentication_failures_are_401_with_a_basic_challenge() {
    let (server, f) = TestServer::seeded().await;
    let wrong = ClientCreds { id: f.service.id.clone(), secret: "wrong".into() };
    let unknown = ClientCreds { id: "nobody".into(), secret: f.service.secret.clone() };
    for creds in [Some(&wrong), Some(&unknown), None] {
        let reply = server
            .post_form(
                "/oauth2/v1/token",
                creds,
                &[("transactionId", &txid()), ("institutionId", INSTITUTION)],
                "grant_type=client_credentials",
            )
            .await;
        reply.assert_error(401, "CMN_90004");
        assert_eq!(reply.json()["error"], "invalid_client");
        assert_eq!(reply.header("www-authenticate"), Some("Basic realm=\"tokenledger\""));
    }
    for header in ["Basic", "Basic !!!!", "Bearer abc", "Basic YWJj"] {
        let reply = server
            .post_form(
                "/oauth2/v1/token",
                None,
                &[("authorization", header), ("transactionId", &txid()), ("institutionId", INSTITUTION)],
                "grant_type=client_credentials",
            )
            .await;
        reply.assert_error(401, "CMN_90004");
    }
}

#[tokio::test]
async fn secrets_are_never_taken_from_the_body_or_the_query() {
    let (server, f) = TestServer::seeded().await;
    let body = format!("grant_type=client_credentials&client_secret={}", f.service.secret);
    server.token(&f.service, &body).await.assert_error(400, "CMN_90011");
    let reply = server
        .post_form(
            "/oauth2/v1/token?client_id=svc",
            Some(&f.service),
            &[("transactionId", &txid()), ("institutionId", INSTITUTION)],
            "grant_type=client_credentials",
        )
        .await;
    reply.assert_error(400, "CMN_90011");
}

#[tokio::test]
async fn grant_type_errors() {
    let (server, f) = TestServer::seeded().await;
    for body in
        ["", "grant_type=", "grant_type=implicit", "grant_type=Client_Credentials", "grant_type=+client_credentials"]
    {
        server.token(&f.service, body).await.assert_error(400, "CMN_90007");
    }
    // A known grant the client is not entitled to.
    server.token(&f.service, &format!("grant_type=password&{ALICE_LOGIN}")).await.assert_error(400, "CMN_90006");
}

#[tokio::test]
async fn institution_id_rules() {
    let (server, f) = TestServer::seeded().await;
    let body = "grant_type=client_credentials";
    let no_header = server.post_form("/oauth2/v1/token", Some(&f.service), &[("transactionId", &txid())], body).await;
    no_header.assert_error(400, "CMN_90005");
    for bad in ["12a", "-1", "+1", "12345678901", "1001", "99999"] {
        server.token_at(&f.service, bad, body).await.assert_error(400, "CMN_90005");
    }
    // Leading zeros are significant: 01001 is not 1001, and the client is not entitled to 02002.
    server.token_at(&f.service, OTHER_INSTITUTION, body).await.assert_error(400, "CMN_90006");
}

#[tokio::test]
async fn form_rules_content_type_duplicates_non_printable_and_size() {
    let (server, f) = TestServer::seeded().await;
    let reply = server
        .http
        .post(server.url("/oauth2/v1/token"))
        .header("authorization", tokenledger::wire::encode_basic(&f.service.id, &f.service.secret))
        .header("transactionId", txid())
        .header("institutionId", INSTITUTION)
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"client_credentials"}"#)
        .send()
        .await
        .unwrap();
    Reply::from(reply).await.assert_error(400, "CMN_90010");
    server
        .token(&f.service, "grant_type=client_credentials&grant_type=client_credentials")
        .await
        .assert_error(400, "CMN_90011");
    server.token(&f.service, "grant_type=client_credentials&scopes=a%00b").await.assert_error(400, "CMN_90017");
    server.token(&f.service, "grant_type=client_credentials&scopes=%FF").await.assert_error(400, "CMN_90017");
    let huge = format!("grant_type=client_credentials&scopes={}", "a".repeat(64 * 1024));
    server.token(&f.service, &huge).await.assert_error(400, "CMN_90011");
}

#[tokio::test]
async fn only_post_is_accepted_for_tokens() {
    let (server, _) = TestServer::seeded().await;
    let reply = server.http.get(server.url("/oauth2/v1/token")).send().await.unwrap();
    assert_eq!(reply.status().as_u16(), 405);
}

#[tokio::test]
async fn password_grant_issues_access_and_refresh_tokens() {
    let (server, f) = TestServer::seeded().await;
    let reply = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}&scopes=accounts:read")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert!(body["refresh_token"].as_str().unwrap().starts_with("tlr_"));
    // The refresh token's 180 days are capped by the family's 90-day maximum lifetime.
    assert_eq!(body["refresh_token_expires_in"], 7_776_000);
    assert_eq!(body["scope"], "accounts:read");
    let info = server.introspect(&f.app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(info["username"], "alice");
    assert_eq!(info["grant_type"], "password");
    assert_eq!(info["host_user_id"], "HOST-alice");
}

#[tokio::test]
async fn password_grant_errors() {
    let (server, f) = TestServer::seeded().await;
    let wrong = server.token(&f.app, "grant_type=password&username=alice&password=wrong").await;
    wrong.assert_error(401, "CMN_90015");
    let unknown = server.token(&f.app, "grant_type=password&username=mallory&password=wrong").await;
    unknown.assert_error(401, "CMN_90015");
    assert_eq!(wrong.json(), unknown.json(), "unknown user and wrong password are indistinguishable");
    server.token(&f.app, "grant_type=password&password=x").await.assert_error(400, "CMN_90013");
    server.token(&f.app, "grant_type=password&username=a+b&password=x").await.assert_error(400, "CMN_90013");
    server
        .token(&f.app, &format!("grant_type=password&username={}&password=x", "u".repeat(129)))
        .await
        .assert_error(400, "CMN_90013");
    server.token(&f.app, "grant_type=password&username=alice").await.assert_error(400, "CMN_90014");
    server
        .token(&f.app, &format!("grant_type=password&username=alice&password={}", "p".repeat(300)))
        .await
        .assert_error(400, "CMN_90014");
    // The user exists in 01001 only.
    server
        .token_at(&f.other, OTHER_INSTITUTION, &format!("grant_type=password&{ALICE_LOGIN}"))
        .await
        .assert_error(401, "CMN_90015");
}

#[tokio::test]
async fn a_retry_with_the_same_transaction_id_returns_the_same_tokens() {
    let (server, f) = TestServer::seeded().await;
    let txid = txid();
    let headers = [("transactionId", txid.as_str()), ("institutionId", INSTITUTION)];
    let body = format!("grant_type=password&{ALICE_LOGIN}");
    let first = server.post_form("/oauth2/v1/token", Some(&f.app), &headers, &body).await.json();
    let again = server.post_form("/oauth2/v1/token", Some(&f.app), &headers, &body).await.json();
    assert_eq!(first["access_token"], again["access_token"]);
    assert_eq!(first["refresh_token"], again["refresh_token"]);
    // Credentials are still checked on a retry.
    let wrong = "grant_type=password&username=alice&password=nope";
    server.post_form("/oauth2/v1/token", Some(&f.app), &headers, wrong).await.assert_error(401, "CMN_90015");
    // The same transactionId with a different request is refused.
    let other = format!("{body}&scopes=accounts:read");
    server.post_form("/oauth2/v1/token", Some(&f.app), &headers, &other).await.assert_error(400, "CMN_90011");
    // Another client may use the same transactionId independently.
    let svc = server.post_form("/oauth2/v1/token", Some(&f.service), &headers, "grant_type=client_credentials").await;
    assert_eq!(svc.status, 200, "{}", svc.text);
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let (server, _) = TestServer::seeded().await;
    let reply = server.http.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(reply.status().as_u16(), 404);
}
