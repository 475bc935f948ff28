//! The code flow and the ledger: every step is an event, a fresh replay equals the live
//! projections, restart keeps codes spent, and no code, verifier or private key is stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokenledger::ledger::Store;
use tokenledger::ledger::{StoreError, codec};
use tokenledger::proto::RotateSigningKeyRequest;
use tokenledger::proto::key_service_client::KeyServiceClient;
use tokenledger::proto::ledger::{CodeBurnReason, Event, RevocationReason, event};
use tokenledger::server::SIGNING_KEYS_FILE;
use tokenledger::server::data_dir;

use crate::authcode::*;

/// Strings a test wants to be sure never reach the ledger.
struct Secrets {
    codes: Vec<String>,
    verifiers: Vec<String>,
}

/// Every step of the flow once: issue, redeem (with refresh and ID token), refresh, replay,
/// a wrong verifier, an unused code, and a key rotation.
async fn exercise(flow: &Flow) -> Secrets {
    let redeemed = flow.code(&Form::code()).await;
    let first = flow.redeem(&redeem_body(&redeemed, Some(VERIFIER))).await.json();
    let refresh = first["refresh_token"].as_str().unwrap();
    assert_eq!(flow.redeem(&format!("grant_type=refresh_token&refresh_token={refresh}")).await.status, 200);
    flow.redeem(&redeem_body(&redeemed, Some(VERIFIER))).await.assert_error(401, "CMN_90018");
    let other_verifier = "x".repeat(64);
    let burned = flow.code(&Form::code()).await;
    flow.redeem(&redeem_body(&burned, Some(&other_verifier))).await.assert_error(401, "CMN_90018");
    let unused = flow.code(&Form::code()).await;
    let server = &flow.server;
    KeyServiceClient::new(server.channel().await)
        .rotate_signing_key(server.admin(RotateSigningKeyRequest {}))
        .await
        .expect("rotate");
    let after_rotation = flow.code(&Form::code().without("code_challenge").without("code_challenge_method")).await;
    assert_eq!(flow.redeem(&redeem_body(&after_rotation, None)).await.status, 200);
    Secrets { codes: vec![redeemed, burned, unused, after_rotation], verifiers: vec![VERIFIER.into(), other_verifier] }
}

fn read_events(dir: &std::path::Path) -> Vec<Event> {
    let store = Store::open(&dir.join(data_dir::LEDGER_FILE)).unwrap();
    let mut events = Vec::new();
    store
        .scan(|key, bytes| -> Result<(), StoreError> {
            events.push(codec::open(key, bytes).unwrap().event);
            Ok(())
        })
        .unwrap();
    events
}

#[tokio::test]
async fn every_step_of_the_flow_is_a_ledger_event() {
    let flow = flow().await;
    exercise(&flow).await;
    let dir = flow.server.stop().await;
    let events = read_events(dir.path());
    let kinds: Vec<&event::Kind> = events.iter().filter_map(|e| e.kind.as_ref()).collect();
    let count = |f: fn(&event::Kind) -> bool| kinds.iter().filter(|k| f(k)).count();
    assert_eq!(count(|k| matches!(k, event::Kind::AuthorizationCodeIssued(_))), 4);
    assert_eq!(count(|k| matches!(k, event::Kind::TokensIssued(t) if !t.authorization_code_id.is_empty())), 2);
    assert_eq!(count(|k| matches!(k, event::Kind::AuthorizationCodeReplayed(_))), 1);
    assert_eq!(
        count(
            |k| matches!(k, event::Kind::FamilyRevoked(r) if r.reason == RevocationReason::AuthorizationCodeReplay as i32)
        ),
        1
    );
    assert_eq!(
        count(
            |k| matches!(k, event::Kind::AuthorizationCodeBurned(b) if b.reason == CodeBurnReason::WrongVerifier as i32)
        ),
        1
    );
    assert_eq!(count(|k| matches!(k, event::Kind::SigningKeyActivated(_))), 2, "first start and one rotation");
    let signed_by: Vec<&str> = kinds
        .iter()
        .filter_map(|k| match k {
            event::Kind::TokensIssued(t) if !t.id_token_key_id.is_empty() => Some(t.id_token_key_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(signed_by.len(), 2, "both redemptions asked for openid");
    assert_ne!(signed_by[0], signed_by[1], "the rotation changed the signing key");
}

#[tokio::test]
async fn a_fresh_replay_equals_the_live_projections_after_code_events() {
    let flow = flow().await;
    exercise(&flow).await;
    assert!(!flow.server.app.state.read().authorization.codes.is_empty());
    flow.server.assert_replay_equals_live().await;
}

#[tokio::test]
async fn restart_keeps_codes_spent_and_a_replay_after_restart_still_revokes() {
    let flow = flow().await;
    let redeemed = flow.code(&Form::code()).await;
    let tokens = flow.redeem(&redeem_body(&redeemed, Some(VERIFIER))).await.json();
    let burned = flow.code(&Form::code()).await;
    flow.redeem(&redeem_body(&burned, Some(&"y".repeat(43)))).await.assert_error(401, "CMN_90018");
    let live = flow.code(&Form::code()).await;
    let Flow { server, f, partner, .. } = flow;
    let server = server.restart().await;
    let bearer = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let flow = Flow { server, f, partner, bearer };
    let access = tokens["access_token"].as_str().unwrap();
    assert!(flow.server.is_active(&flow.partner, access).await);
    flow.redeem(&redeem_body(&redeemed, Some(VERIFIER))).await.assert_error(401, "CMN_90018");
    assert!(!flow.server.is_active(&flow.partner, access).await, "the replay after restart revoked the tokens");
    flow.redeem(&redeem_body(&burned, Some(VERIFIER))).await.assert_error(401, "CMN_90018");
    assert_eq!(flow.redeem(&redeem_body(&live, Some(VERIFIER))).await.status, 200, "an unspent code survives restart");
}

#[tokio::test]
async fn the_ledger_holds_no_code_verifier_or_private_signing_key() {
    let flow = flow().await;
    let secrets = exercise(&flow).await;
    let dir = flow.server.stop().await;
    let bytes = std::fs::read(dir.path().join(data_dir::LEDGER_FILE)).unwrap();
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for code in &secrets.codes {
        assert!(!contains(code.as_bytes()), "code string in the ledger");
        assert!(!contains(&code.as_bytes()[code.len() - 43..]), "code MAC in the ledger");
    }
    for verifier in &secrets.verifiers {
        assert!(!contains(verifier.as_bytes()), "code verifier in the ledger");
    }
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(SIGNING_KEYS_FILE)).unwrap()).unwrap();
    let stored = file["keys"].as_array().unwrap();
    assert!(!stored.is_empty());
    for key in stored {
        let text = key["private_key_pkcs8"].as_str().unwrap();
        let pkcs8 = URL_SAFE_NO_PAD.decode(text).unwrap();
        assert!(!contains(text.as_bytes()), "private key text in the ledger");
        // ECPrivateKey (RFC 5915) inside the PKCS#8 document: version 1, then the 32-byte
        // private scalar as an OCTET STRING.
        let at = pkcs8.windows(5).position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20]).expect("an EC private key") + 5;
        assert!(!contains(&pkcs8[at..at + 32]), "private scalar in the ledger");
    }
    // The public keys are there: that is what the JWKS is built from.
    let events = read_events(dir.path());
    let public_keys: Vec<Vec<u8>> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(event::Kind::SigningKeyActivated(a)) => Some(a.public_key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(public_keys.len(), 2);
    assert!(public_keys.iter().all(|k| k.len() == 65 && contains(k)));
}

#[tokio::test]
async fn code_events_are_indexed_by_code_client_and_user() {
    use tokenledger::ledger::index::IndexKind;
    let flow = flow().await;
    // A code without offline_access: its family has no refresh token to name the client.
    let code = flow.code(&Form::code().without("requested_scopes")).await;
    flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.access_token();
    flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.assert_error(401, "CMN_90018");
    let dir = flow.server.stop().await;
    let events = read_events(dir.path());
    let token_ids = {
        let db = redb::Database::open(dir.path().join(data_dir::LEDGER_FILE)).unwrap();
        tokenledger::ledger::Store::from_database(db).unwrap().token_ids().clone()
    };
    let seqs_of = |kind: IndexKind, value: &[u8]| -> Vec<u64> {
        // Tokens (and codes) sit in the index by creation time; see ledger::token_ids.
        let token_value;
        let value = match tokenledger::domain::TokenId::from_slice(value) {
            Some(id) if kind == IndexKind::Token => {
                token_value = tokenledger::ledger::index::token_value(&token_ids, &id);
                &token_value[..]
            }
            _ => value,
        };
        let db = redb::Database::open(dir.path().join(data_dir::LEDGER_FILE)).unwrap();
        tokenledger::ledger::raw::index_seqs(&db, kind, value).unwrap()
    };
    let kind_at = |seq: u64| events[seq as usize - 1].kind.clone().unwrap();
    let code_id = tokenledger::crypto::token::decode(&flow_keys(dir.path()), &code).unwrap().1;
    let code_history: Vec<event::Kind> = seqs_of(IndexKind::Token, &code_id.0).into_iter().map(kind_at).collect();
    assert!(matches!(code_history[0], event::Kind::AuthorizationCodeIssued(_)), "{code_history:?}");
    assert!(matches!(&code_history[1], event::Kind::TokensIssued(t) if t.authorization_code_id == code_id.0));
    assert!(matches!(code_history[2], event::Kind::AuthorizationCodeReplayed(_)));
    assert!(matches!(code_history[3], event::Kind::FamilyRevoked(_)));
    assert_eq!(code_history.len(), 4);
    let partner_history = seqs_of(IndexKind::Client, b"partner");
    let revocation = seqs_of(IndexKind::Token, &code_id.0)[3];
    assert!(partner_history.contains(&revocation), "the family revocation is found by the partner's client id");
    let user = format!("{}:{CAROL}", crate::harness::INSTITUTION);
    assert!(seqs_of(IndexKind::User, user.as_bytes()).contains(&revocation));
}

/// The server keys of a stopped data directory, to decode token strings.
fn flow_keys(dir: &std::path::Path) -> tokenledger::crypto::ServerKeys {
    tokenledger::crypto::ServerKeys::load(&dir.join(data_dir::KEYS_FILE)).unwrap()
}
