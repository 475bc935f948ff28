//! The authorization_code grant (SPEC 3.1, 3.4; RFC 6749 4.1.3, RFC 7636 4.6): single use,
//! replay revocation, PKCE, the bound client and redirect URI, expiry, the race, retries.

use std::sync::Arc;

use crate::authcode::*;
use crate::harness::*;

fn token_str(value: &serde_json::Value, field: &str) -> String {
    value[field].as_str().unwrap_or_else(|| panic!("{field} missing: {value}")).to_owned()
}

#[tokio::test]
async fn the_rfc7636_appendix_b_verifier_redeems_its_challenge_and_the_tokens_work() {
    let flow = flow().await;
    let code = flow.code(&Form::code()).await;
    let reply = flow.redeem(&redeem_body(&code, Some(VERIFIER))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "accounts:read");
    assert!(body["id_token"].as_str().unwrap().split('.').count() == 3, "openid asks for an ID token");
    assert!(body["refresh_token"].as_str().unwrap().starts_with("tlr_"), "offline_access asks for a refresh token");
    let access = token_str(&body, "access_token");
    let info = flow.server.introspect(&flow.partner, &access).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], "partner");
    assert_eq!(info["username"], CAROL);
    assert_eq!(info["sub"], CAROL_ID);
    assert_eq!(info["grant_type"], "authorization_code");
    assert_eq!(info["institution_id"], INSTITUTION);
}

#[tokio::test]
async fn refresh_and_id_tokens_only_when_asked_for() {
    let flow = flow().await;
    let plain = flow.code(&Form::code().without("requested_scopes")).await;
    let body = flow.redeem(&redeem_body(&plain, Some(VERIFIER))).await.json();
    assert!(body.get("refresh_token").is_none() && body.get("refresh_token_expires_in").is_none(), "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
    let openid_only = flow.code(&Form::code().set("requested_scopes", "openid")).await;
    let body = flow.redeem(&redeem_body(&openid_only, Some(VERIFIER))).await.json();
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body.get("id_token").is_some(), "{body}");
    let offline_only = flow.code(&Form::code().set("requested_scopes", "offline_access")).await;
    let body = flow.redeem(&redeem_body(&offline_only, Some(VERIFIER))).await.json();
    assert!(body.get("refresh_token").is_some(), "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
}

#[tokio::test]
async fn code_refresh_tokens_rotate_like_password_ones() {
    let flow = flow().await;
    let code = flow.code(&Form::code().set("scopes", "accounts:read,transactions:read")).await;
    let first = flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.json();
    let refresh = |token: &str| format!("grant_type=refresh_token&refresh_token={token}");
    let second = flow.redeem(&refresh(&token_str(&first, "refresh_token"))).await;
    assert_eq!(second.status, 200, "{}", second.text);
    let second = second.json();
    assert_eq!(second["scope"], "accounts:read transactions:read");
    assert!(second.get("id_token").is_none(), "refresh returns no ID token");
    // Reuse of the rotated refresh token ends the family, as for password tokens.
    flow.redeem(&refresh(&token_str(&first, "refresh_token"))).await.assert_error(401, "CMN_90018");
    for token in
        [token_str(&first, "access_token"), token_str(&second, "access_token"), token_str(&second, "refresh_token")]
    {
        assert!(!flow.server.is_active(&flow.partner, &token).await);
    }
}

#[tokio::test]
async fn redeeming_twice_fails_and_revokes_every_token_issued_from_the_code() {
    let flow = flow().await;
    let code = flow.code(&Form::code()).await;
    let body = redeem_body(&code, Some(VERIFIER));
    let first = flow.redeem(&body).await.json();
    // A descendant of the code's refresh token is issued from the code too.
    let rotated = flow
        .redeem(&format!("grant_type=refresh_token&refresh_token={}", token_str(&first, "refresh_token")))
        .await
        .json();
    let replay = flow.redeem(&body).await;
    replay.assert_error(401, "CMN_90018");
    assert_eq!(replay.json()["error"], "invalid_grant");
    for token in [
        token_str(&first, "access_token"),
        token_str(&first, "refresh_token"),
        token_str(&rotated, "access_token"),
        token_str(&rotated, "refresh_token"),
    ] {
        assert!(!flow.server.is_active(&flow.partner, &token).await, "still active after replay: {token:.12}");
    }
    flow.redeem(&body).await.assert_error(401, "CMN_90018");
    // Tokens without a refresh token are revoked as well.
    let code = flow.code(&Form::code().without("requested_scopes")).await;
    let body = redeem_body(&code, Some(VERIFIER));
    let access = flow.redeem(&body).await.access_token();
    flow.redeem(&body).await.assert_error(401, "CMN_90018");
    assert!(!flow.server.is_active(&flow.partner, &access).await);
}

#[tokio::test]
async fn concurrent_redemptions_of_one_code_have_exactly_one_winner() {
    let flow = Arc::new(flow().await);
    for round in 0..5 {
        let code = flow.code(&Form::code()).await;
        let body = Arc::new(redeem_body(&code, Some(VERIFIER)));
        let barrier = Arc::new(tokio::sync::Barrier::new(16));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (flow, body, barrier) = (flow.clone(), body.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    flow.redeem(&body).await
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
        assert_eq!(winners.len(), 1, "round {round}: exactly one redemption wins");
        // The losers presented a redeemed code: that is a replay, so the winner's tokens end.
        assert!(!flow.server.is_active(&flow.partner, &token_str(&winners[0], "access_token")).await);
    }
}

#[tokio::test]
async fn a_wrong_or_malformed_verifier_burns_the_code() {
    let flow = flow().await;
    let wrong = "a".repeat(43);
    let cases = [wrong.as_str(), "short", &VERIFIER.replace('-', "+"), &"b".repeat(129)];
    for verifier in cases {
        let code = flow.code(&Form::code()).await;
        flow.redeem(&redeem_body(&code, Some(verifier))).await.assert_error(401, "CMN_90018");
        let right = flow.redeem(&redeem_body(&code, Some(VERIFIER))).await;
        right.assert_error(401, "CMN_90018");
    }
}

#[tokio::test]
async fn pkce_downgrades_are_refused_and_burn_the_code() {
    let flow = flow().await;
    // Created with a challenge, redeemed without a verifier.
    let code = flow.code(&Form::code()).await;
    flow.redeem(&redeem_body(&code, None)).await.assert_error(401, "CMN_90018");
    flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.assert_error(401, "CMN_90018");
    // Created without a challenge, redeemed with a verifier.
    let bare = Form::code().without("code_challenge").without("code_challenge_method");
    let code = flow.code(&bare).await;
    flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.assert_error(401, "CMN_90018");
    flow.redeem(&redeem_body(&code, None)).await.assert_error(401, "CMN_90018");
    // And without PKCE on either side it works.
    let code = flow.code(&bare).await;
    assert_eq!(flow.redeem(&redeem_body(&code, None)).await.status, 200);
}

#[tokio::test]
async fn a_code_redeems_only_by_its_partner() {
    let flow = flow().await;
    let thief = flow
        .server
        .client(tokenledger::proto::ClientSpec {
            client_id: "thief".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["authorization_code".into()],
            scopes: vec!["accounts:read".into()],
            redirect_uri: PARTNER_REDIRECT.into(),
            ..Default::default()
        })
        .await;
    let code = flow.code(&Form::code()).await;
    let body = redeem_body(&code, Some(VERIFIER));
    let stolen = flow.redeem_as(&thief, &body).await;
    stolen.assert_error(401, "CMN_90018");
    assert_eq!(stolen.json()["error"], "invalid_grant");
    // A client without the grant is told so before the code is even looked at.
    flow.redeem_as(&flow.f.service, &body).await.assert_error(400, "CMN_90006");
    // Neither attempt spent the partner's code.
    assert_eq!(flow.redeem(&body).await.status, 200);
}

#[tokio::test]
async fn redirect_uri_if_sent_must_be_the_registered_one() {
    let flow = flow().await;
    let code = flow.code(&Form::code()).await;
    let uri = tokenledger::wire::percent_encode(PARTNER_REDIRECT);
    let reply = flow.redeem(&format!("{}&redirect_uri={uri}", redeem_body(&code, Some(VERIFIER)))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let code = flow.code(&Form::code()).await;
    let evil = tokenledger::wire::percent_encode("https://evil.example/callback");
    let body = format!("{}&redirect_uri={evil}", redeem_body(&code, Some(VERIFIER)));
    flow.redeem(&body).await.assert_error(401, "CMN_90018");
    flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.assert_error(401, "CMN_90018");
}

#[tokio::test]
async fn institution_id_is_optional_on_redemption_but_must_match() {
    let flow = flow().await;
    let code = flow.code(&Form::code()).await;
    let body = redeem_body(&code, Some(VERIFIER));
    let headers = |institution| [("transactionId", txid()), ("institutionId", String::from(institution))];
    let other = headers(OTHER_INSTITUTION);
    let other: Vec<(&str, &str)> = other.iter().map(|(k, v)| (*k, v.as_str())).collect();
    flow.server.post_form("/oauth2/v1/token", Some(&flow.partner), &other, &body).await.assert_error(400, "CMN_90005");
    let code = flow.code(&Form::code()).await;
    let body = redeem_body(&code, Some(VERIFIER));
    let same = headers(INSTITUTION);
    let same: Vec<(&str, &str)> = same.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(flow.server.post_form("/oauth2/v1/token", Some(&flow.partner), &same, &body).await.status, 200);
}

#[tokio::test]
async fn codes_expire() {
    let clock = tokenledger::clock::ManualClock::new();
    let flow =
        flow_on(TestServer::start_on_clock(clock.clone(), |s| s.authorization_code_ttl_secs = Some(1)).await).await;
    let code = flow.code(&Form::code()).await;
    clock.advance(1100);
    flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.assert_error(401, "CMN_90018");
}

#[tokio::test]
async fn malformed_redemptions() {
    let flow = flow().await;
    flow.redeem("grant_type=authorization_code").await.assert_error(400, "CMN_90011");
    flow.redeem("grant_type=authorization_code&code=tlc_garbage").await.assert_error(401, "CMN_90018");
    // An access token is not a code, and a code is not a refresh token.
    let access = flow.server.token(&flow.f.service, "grant_type=client_credentials").await.access_token();
    flow.redeem(&redeem_body(&access, None)).await.assert_error(401, "CMN_90018");
    let code = flow.code(&Form::code()).await;
    flow.redeem(&format!("grant_type=refresh_token&refresh_token={code}")).await.assert_error(401, "CMN_90018");
    // Scopes at redemption may narrow the code's, never widen them.
    let wide = format!("{}&scopes=transactions:read", redeem_body(&code, Some(VERIFIER)));
    flow.redeem(&wide).await.assert_error(400, "CMN_90012");
    let code = flow.code(&Form::code().set("scopes", "accounts:read,transactions:read")).await;
    let narrow = format!("{}&scopes=transactions:read", redeem_body(&code, Some(VERIFIER)));
    assert_eq!(flow.redeem(&narrow).await.json()["scope"], "transactions:read");
    // A code is neither introspectable nor revocable as a token.
    let code = flow.code(&Form::code()).await;
    assert!(!flow.server.is_active(&flow.partner, &code).await);
    assert_eq!(flow.server.revoke(&flow.partner, &code).await.status, 204);
    assert_eq!(flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.status, 200, "revoke did not touch it");
}

#[tokio::test]
async fn a_lost_redemption_response_can_be_retried_with_the_same_transaction_id() {
    let flow = flow().await;
    let code = flow.code(&Form::code()).await;
    let body = redeem_body(&code, Some(VERIFIER));
    let txid = txid();
    let headers = [("transactionId", txid.as_str())];
    let first = flow.server.post_form("/oauth2/v1/token", Some(&flow.partner), &headers, &body).await.json();
    let retry = flow.server.post_form("/oauth2/v1/token", Some(&flow.partner), &headers, &body).await;
    assert_eq!(retry.status, 200, "a retry is not a replay: {}", retry.text);
    let retry = retry.json();
    assert_eq!(retry["access_token"], first["access_token"]);
    assert_eq!(retry["refresh_token"], first["refresh_token"]);
    assert!(retry["id_token"].is_string());
    assert!(flow.server.is_active(&flow.partner, &token_str(&first, "access_token")).await);
}
