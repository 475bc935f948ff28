//! ID tokens checked by an independent JOSE implementation (the `jsonwebtoken` crate) against
//! the JWKS the real server publishes, and signing-key rotation over gRPC and the CLI.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use tokenledger::proto::key_service_client::KeyServiceClient;
use tokenledger::proto::{ListSigningKeysRequest, RotateSigningKeyRequest};

use crate::authcode::*;
use crate::harness::*;

async fn jwks(server: &TestServer) -> JwkSet {
    let response = server.http.get(server.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("a JWK set")
}

fn key_ids(set: &JwkSet) -> Vec<String> {
    set.keys.iter().map(|k| k.common.key_id.clone().expect("kid")).collect()
}

/// Verifies `id_token` with the JWKS served now, for `audience`; returns its claims.
async fn verify(server: &TestServer, id_token: &str, audience: &str) -> Result<serde_json::Value, String> {
    let header = decode_header(id_token).map_err(|e| e.to_string())?;
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.ok_or("no kid in the header")?;
    let set = jwks(server).await;
    let jwk = set.find(&kid).ok_or_else(|| format!("kid {kid} is not published"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[server.app.config.issuer.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    validation.leeway = 0;
    decode::<serde_json::Value>(id_token, &key, &validation).map(|data| data.claims).map_err(|e| e.to_string())
}

async fn id_token(flow: &Flow, form: &Form) -> String {
    let code = flow.code(form).await;
    let reply = flow.redeem(&redeem_body(&code, Some(VERIFIER))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()["id_token"].as_str().expect("id_token").to_owned()
}

async fn keys(server: &TestServer) -> KeyServiceClient<tonic::transport::Channel> {
    KeyServiceClient::new(server.channel().await)
}

#[tokio::test]
async fn id_tokens_verify_against_the_jwks_with_an_independent_jose_library() {
    let flow = flow().await;
    let token = id_token(&flow, &Form::code()).await;
    let claims = verify(&flow.server, &token, "partner").await.expect("a valid ID token");
    assert_eq!(claims["iss"], flow.server.app.config.issuer.as_str());
    assert_eq!(claims["sub"], CAROL_ID);
    assert_eq!(claims["aud"], "partner");
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["auth_time"], 1_700_000_000);
    assert_eq!(claims["preferred_username"], CAROL);
    let (iat, exp) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 3600, "id_token_ttl_secs defaults to an hour");
    let now = wall_ms() / 1000;
    assert!((now - 5..=now).contains(&iat), "iat {iat} now {now}");
    assert!(claims.get("azp").is_none());
    // Another audience, a changed payload or a changed signature do not verify.
    assert!(verify(&flow.server, &token, "someone-else").await.is_err());
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, parts[1]).unwrap(),
    )
    .unwrap();
    payload["sub"] = serde_json::json!("someone-else");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload.to_string()),
        parts[2]
    );
    assert!(verify(&flow.server, &forged, "partner").await.is_err());
    let mut signature = parts[2].to_owned().into_bytes();
    signature[10] = if signature[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(signature).unwrap());
    assert!(verify(&flow.server, &tampered, "partner").await.is_err());
}

#[tokio::test]
async fn optional_claims_follow_the_code_request() {
    let flow = flow().await;
    // No nonce: none in the token; no auth_time: the time the code was issued.
    let before = wall_ms() / 1000;
    let token = id_token(&flow, &Form::code().without("nonce").without("auth_time")).await;
    let claims = verify(&flow.server, &token, "partner").await.unwrap();
    assert!(claims.get("nonce").is_none(), "{claims}");
    let auth_time = claims["auth_time"].as_i64().unwrap();
    assert!(auth_time >= before && auth_time <= claims["iat"].as_i64().unwrap(), "{claims}");
    // An extra `aud` joins the partner as an audience, with `azp` naming the partner.
    let token = id_token(&flow, &Form::code().set("aud", "https://api.partner.example")).await;
    let claims = verify(&flow.server, &token, "partner").await.unwrap();
    assert_eq!(claims["aud"], serde_json::json!(["partner", "https://api.partner.example"]));
    assert_eq!(claims["azp"], "partner");
    assert!(verify(&flow.server, &token, "https://api.partner.example").await.is_ok());
    let token = id_token(&flow, &Form::code().set("aud", "partner")).await;
    assert_eq!(verify(&flow.server, &token, "partner").await.unwrap()["aud"], "partner");
}

#[tokio::test]
async fn rotation_keeps_old_keys_published_until_their_id_tokens_expire() {
    let clock = tokenledger::clock::ManualClock::new();
    let flow = flow_on(TestServer::start_on_clock(clock.clone(), |s| s.id_token_ttl_secs = Some(2)).await).await;
    let server = &flow.server;
    let first_key = key_ids(&jwks(server).await);
    assert_eq!(first_key.len(), 1, "one key after first start");
    // A key that signed nothing is unpublished as soon as it retires.
    let unused = keys(server).await.rotate_signing_key(server.admin(RotateSigningKeyRequest {})).await.unwrap();
    assert_eq!(unused.get_ref().previous_key_id, first_key[0]);
    let k1 = unused.into_inner().key.unwrap().key_id;
    assert_eq!(key_ids(&jwks(server).await), std::slice::from_ref(&k1));

    let old_token = id_token(&flow, &Form::code()).await;
    let rotated = keys(server).await.rotate_signing_key(server.admin(RotateSigningKeyRequest {})).await.unwrap();
    let rotated = rotated.into_inner();
    assert_eq!(rotated.previous_key_id, k1);
    let k2 = rotated.key.unwrap().key_id;
    assert_ne!(k1, k2);
    let published = key_ids(&jwks(server).await);
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(published.contains(&k1) && published.contains(&k2));
    verify(server, &old_token, "partner").await.expect("tokens of the retired key still verify");
    let new_token = id_token(&flow, &Form::code()).await;
    assert_eq!(decode_header(&new_token).unwrap().kid.as_deref(), Some(k2.as_str()));
    verify(server, &new_token, "partner").await.expect("the new key signs");

    let listed = keys(server).await.list_signing_keys(server.admin(ListSigningKeysRequest {})).await.unwrap();
    let listed = listed.into_inner().keys;
    assert_eq!(listed[0].key_id, k2);
    assert!(listed[0].active && listed[0].published);
    assert!(!listed[1].active && listed[1].published && listed[1].retired_at_ms > 0);
    assert_eq!(listed.len(), 3);

    clock.advance(2100);
    assert_eq!(
        key_ids(&jwks(server).await),
        std::slice::from_ref(&k2),
        "the retired key goes once its last ID token expired"
    );
    let listed = keys(server).await.list_signing_keys(server.admin(ListSigningKeysRequest {})).await.unwrap();
    assert!(!listed.into_inner().keys[1].published);
}

#[tokio::test]
async fn the_signing_key_survives_restart_and_a_rotation_is_durable() {
    let flow = flow().await;
    let token = id_token(&flow, &Form::code()).await;
    let rotated = keys(&flow.server).await.rotate_signing_key(flow.server.admin(RotateSigningKeyRequest {})).await;
    let k2 = rotated.unwrap().into_inner().key.unwrap().key_id;
    let Flow { server, f, partner, .. } = flow;
    let server = server.restart().await;
    let published = key_ids(&jwks(&server).await);
    assert_eq!(published.len(), 2, "{published:?}");
    assert_eq!(published[0], k2, "the newest key is listed first");
    verify(&server, &token, "partner").await.expect("the old ID token still verifies after restart");
    let bearer = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let flow = Flow { server, f, partner, bearer };
    let fresh = id_token(&flow, &Form::code()).await;
    assert_eq!(decode_header(&fresh).unwrap().kid.as_deref(), Some(k2.as_str()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = flow.server.data_dir().join(tokenledger::server::SIGNING_KEYS_FILE);
        assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[tokio::test]
async fn key_service_requires_the_admin_credential() {
    let server = TestServer::start().await;
    let mut client = keys(&server).await;
    let status = client.rotate_signing_key(RotateSigningKeyRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(ListSigningKeysRequest {});
    wrong.metadata_mut().insert("authorization", "Bearer tladm_wrong".parse().unwrap());
    assert_eq!(client.list_signing_keys(wrong).await.unwrap_err().code(), tonic::Code::Unauthenticated);
}

#[test]
fn the_cli_rotates_and_lists_signing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let running = crate::binary::serve(dir.path(), &[]);
    let run = |args: &[&str]| {
        let output = std::process::Command::new(crate::binary::BIN)
            .args(args)
            .args(["--server", &running.url, "--data-dir"])
            .arg(dir.path())
            .arg("--json")
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let before = run(&["keys", "list"]);
    assert_eq!(before.as_array().unwrap().len(), 1);
    let first = before[0]["key_id"].as_str().unwrap().to_owned();
    let rotated = run(&["keys", "rotate-signing"]);
    assert_eq!(rotated["previous_key_id"], first.as_str());
    assert_eq!(rotated["key"]["active"], true);
    let after = run(&["keys", "list"]);
    assert_eq!(after[0]["key_id"], rotated["key"]["key_id"]);
    assert_eq!(after[1]["key_id"], first.as_str());
    assert_eq!(after[1]["active"], false);
}

#[tokio::test]
async fn a_lost_signing_key_file_is_replaced_and_old_id_tokens_still_verify() {
    let flow = flow().await;
    let old = id_token(&flow, &Form::code()).await;
    let old_kid = decode_header(&old).unwrap().kid.unwrap();
    let Flow { server, f, partner, .. } = flow;
    let dir = server.stop().await;
    std::fs::remove_file(dir.path().join(tokenledger::server::SIGNING_KEYS_FILE)).unwrap();
    let server = TestServer::start_in(dir, |_| {}).await;
    let published = key_ids(&jwks(&server).await);
    assert_eq!(published.len(), 2, "a new key, and the lost one while its ID token lives: {published:?}");
    verify(&server, &old, "partner").await.expect("the public key came from the ledger");
    let bearer = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let flow = Flow { server, f, partner, bearer };
    let new = id_token(&flow, &Form::code()).await;
    let new_kid = decode_header(&new).unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid);
    assert_eq!(published[0], new_kid);
    verify(&flow.server, &new, "partner").await.unwrap();
}
