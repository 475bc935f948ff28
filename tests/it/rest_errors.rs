//! Error shapes that standard clients rely on (SPEC 3, 3.6): a method an endpoint does not
//! serve is a JSON 405 with `Allow` and the `transactionId` echo, and bearer-token failures say
//! `invalid_token` in the body as in their `WWW-Authenticate` challenge (RFC 6750 section 3).

use reqwest::Method;

use crate::authcode::*;
use crate::harness::*;

async fn send(server: &TestServer, method: Method, path: &str, txid: Option<&str>) -> Reply {
    let mut request = server.http.request(method, server.url(path));
    if let Some(txid) = txid {
        request = request.header("transactionId", txid);
    }
    Reply::from(request.send().await.unwrap()).await
}

/// The `Allow` header's methods, upper case, in order.
fn allow(reply: &Reply) -> Vec<String> {
    let allow = reply.header("allow").unwrap_or_else(|| panic!("405 without Allow: {}", reply.text));
    allow.split(',').map(|m| m.trim().to_ascii_uppercase()).filter(|m| !m.is_empty()).collect()
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_allow_and_the_echo() {
    let server = TestServer::start().await;
    for (method, path, allowed) in [
        (Method::GET, "/oauth2/v1/token", &["POST"][..]),
        (Method::PUT, "/oauth2/v1/revoke", &["POST", "DELETE"]),
        (Method::GET, "/oauth2/v1/introspect", &["POST"]),
        (Method::GET, "/v1/auth-code", &["POST"]),
        (Method::DELETE, "/v1/client-authorization", &["POST"]),
        (Method::POST, "/.well-known/openid-configuration", &["GET", "HEAD"]),
        (Method::POST, "/.well-known/jwks.json", &["GET", "HEAD"]),
        (Method::DELETE, "/v1/institution-users/someone", &["GET", "HEAD"]),
        (Method::PATCH, "/healthz", &["GET", "HEAD"]),
    ] {
        let txid = txid();
        let reply = send(&server, method.clone(), path, Some(&txid)).await;
        assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text);
        reply.assert_error(405, "CMN_90011");
        assert_eq!(reply.json()["error"], "invalid_request", "{method} {path}");
        assert_eq!(reply.header("transactionid"), Some(txid.as_str()), "{method} {path}");
        assert!(reply.header("content-type").is_some_and(|c| c.starts_with("application/json")));
        let mut methods = allow(&reply);
        methods.sort();
        let mut expected: Vec<String> = allowed.iter().map(|m| (*m).to_owned()).collect();
        expected.sort();
        assert_eq!(methods, expected, "{method} {path}");
    }
    // Without a valid transactionId there is nothing to echo, and it is still the 405.
    for txid in [None, Some("not-a-uuid")] {
        let reply = send(&server, Method::GET, "/oauth2/v1/token", txid).await;
        reply.assert_error(405, "CMN_90011");
        assert!(reply.header("transactionid").is_none());
        assert_eq!(allow(&reply), ["POST"]);
    }
}

#[tokio::test]
async fn an_unknown_path_echoes_the_transaction_id() {
    let server = TestServer::start().await;
    let txid = txid();
    let reply = send(&server, Method::GET, "/oauth2/v1/nothing-here", Some(&txid)).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("transactionid"), Some(txid.as_str()));
    assert!(reply.json()["error"].is_string());
}

/// RFC 6750 section 3.1: every bearer failure of the code endpoints is `invalid_token` in the
/// body and in the challenge; without any credential the challenge carries no error attribute.
#[tokio::test]
async fn bearer_failures_are_invalid_token_in_body_and_challenge() {
    let flow = flow().await;
    let signed_in = flow.server.token(&flow.f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let refresh = signed_in["refresh_token"].as_str().unwrap().to_owned();
    let revoked = flow.server.token(&flow.f.service, "grant_type=client_credentials").await.access_token();
    assert_eq!(flow.server.revoke(&flow.f.service, &revoked).await.status, 204);
    let code_form = Form::code().encode();
    for (path, form) in [("/v1/auth-code", code_form.as_str()), ("/v1/client-authorization", "client_id=partner")] {
        for bearer in ["tla_garbage", refresh.as_str(), revoked.as_str()] {
            let reply = flow.post_as(path, bearer, INSTITUTION, form).await;
            reply.assert_error(401, "CMN_90018");
            assert_eq!(reply.json()["error"], "invalid_token", "{path}: {}", reply.text);
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"tokenledger\", error=\"invalid_token\""),
                "{path}"
            );
        }
        let headers = [("transactionId", txid()), ("institutionId", INSTITUTION.to_owned())];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let missing = flow.server.post_form(path, None, &headers, form).await;
        missing.assert_error(401, "CMN_90018");
        assert_eq!(missing.json()["error"], "invalid_token", "{path}");
        assert_eq!(missing.header("www-authenticate"), Some("Bearer realm=\"tokenledger\""), "{path}");
    }
    // The token endpoint keeps RFC 6749's `invalid_grant` for a bad refresh token.
    let reply = flow.server.token(&flow.f.app, "grant_type=refresh_token&refresh_token=tlr_garbage").await;
    reply.assert_error(401, "CMN_90018");
    assert_eq!(reply.json()["error"], "invalid_grant");
}

/// Only a client-authentication failure (CMN_90004) challenges with `WWW-Authenticate: Basic`.
/// The token endpoint's other 401s are grant errors; a challenge on them makes oauth4webapi
/// and openid-client report a WWW-Authenticate challenge instead of the body's `invalid_grant`.
#[tokio::test]
async fn only_client_authentication_failures_challenge() {
    let (server, f) = TestServer::seeded().await;
    let wrong_password = server.token(&f.app, "grant_type=password&username=alice&password=nope").await;
    wrong_password.assert_error(401, "CMN_90015");
    let bad_refresh = server.token(&f.app, "grant_type=refresh_token&refresh_token=tlr_garbage").await;
    bad_refresh.assert_error(401, "CMN_90018");
    for reply in [&wrong_password, &bad_refresh] {
        assert_eq!(reply.json()["error"], "invalid_grant");
        assert!(reply.header("www-authenticate").is_none(), "{:?}", reply.header("www-authenticate"));
    }
    let wrong_secret = ClientCreds { id: f.app.id.clone(), secret: "nope".into() };
    let reply = server.token(&wrong_secret, "grant_type=client_credentials").await;
    reply.assert_error(401, "CMN_90004");
    assert_eq!(reply.header("www-authenticate"), Some("Basic realm=\"tokenledger\""));
}
