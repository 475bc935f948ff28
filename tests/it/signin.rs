//! The sign-in policy of the password grant: CMN_90013/90014/90015/90016/90009, lockout after
//! repeated failures (identical for unknown login ids), reset on success, restart in the middle
//! of a lockout, and replay equality after the new events.

use tokenledger::config::Settings;
use tokenledger::proto::{self as api};

use crate::harness::*;

/// A client that may look users up, for checking failedLoginCount and userStatus.
pub async fn lookup_client(server: &TestServer) -> ClientCreds {
    server
        .client(api::ClientSpec {
            client_id: "lookup".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["institution-users:read".into()],
            ..Default::default()
        })
        .await
}

pub async fn lookup(server: &TestServer, creds: &ClientCreds, login: &str) -> serde_json::Value {
    let token = server.token(creds, "grant_type=client_credentials").await.access_token();
    let reply = server
        .http
        .get(server.url(&format!("/db-users/v1/institution-users/{login}?userIdType=LOGIN_ID")))
        .bearer_auth(token)
        .header("transactionId", txid())
        .send()
        .await
        .unwrap();
    let reply = Reply::from(reply).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

fn lockout(failures: u32, duration_secs: u64) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.lockout_failures = Some(failures);
        s.lockout_window_secs = Some(60);
        s.lockout_duration_secs = Some(duration_secs);
    }
}

async fn sign_in(server: &TestServer, f: &Fixture, login: &str, password: &str) -> Reply {
    server.token(&f.app, &format!("grant_type=password&username={login}&password={password}")).await
}

const RIGHT: &str = "correct+horse+battery";

#[tokio::test]
async fn lockout_refuses_even_the_right_password_and_treats_unknown_login_ids_alike() {
    let server = TestServer::start_with(lockout(3, 600)).await;
    let f = server.seed().await;
    let finder = lookup_client(&server).await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..3 {
        known.push(sign_in(&server, &f, "alice", "wrong").await);
        unknown.push(sign_in(&server, &f, "mallory", "wrong").await);
    }
    for reply in known.iter().chain(&unknown) {
        reply.assert_error(401, "CMN_90015");
    }
    // The fourth attempt is refused for both, with the same answer, even with the right password.
    let locked = sign_in(&server, &f, "alice", RIGHT).await;
    locked.assert_error(400, "CMN_90009");
    let locked_unknown = sign_in(&server, &f, "mallory", RIGHT).await;
    locked_unknown.assert_error(400, "CMN_90009");
    assert_eq!(locked.json(), locked_unknown.json());
    sign_in(&server, &f, "alice", "wrong").await.assert_error(400, "CMN_90009");
    let user = lookup(&server, &finder, "alice").await;
    assert_eq!(user["failedLoginCount"], 3);
    assert_eq!(user["userStatus"]["locked"], true);
    assert_eq!(user["userStatus"]["active"], true);
    // Other login ids and other institutions are not affected.
    server.user(INSTITUTION, "bob", "bobs password", "RETAIL").await;
    assert_eq!(sign_in(&server, &f, "bob", "bobs+password").await.status, 200);
    // An operator's unlock ends the lockout and the count.
    let mut admin = server.admin_client().await;
    let name =
        api::GetUserRequest { institution_id: INSTITUTION.into(), login_id: "alice".into(), ..Default::default() };
    let unlocked = admin.unlock_user(server.admin(name)).await.unwrap().into_inner();
    assert_eq!((unlocked.failed_login_count, unlocked.locked_out_until_ms), (0, 0));
    assert_eq!(sign_in(&server, &f, "alice", RIGHT).await.status, 200);
}

#[tokio::test]
async fn a_successful_sign_in_resets_the_failure_count() {
    let server = TestServer::start_with(lockout(3, 600)).await;
    let f = server.seed().await;
    let finder = lookup_client(&server).await;
    for round in 0..3 {
        sign_in(&server, &f, "alice", "wrong").await.assert_error(401, "CMN_90015");
        sign_in(&server, &f, "alice", "wrong").await.assert_error(401, "CMN_90015");
        assert_eq!(lookup(&server, &finder, "alice").await["failedLoginCount"], 2, "round {round}");
        assert_eq!(sign_in(&server, &f, "alice", RIGHT).await.status, 200, "round {round}");
        let user = lookup(&server, &finder, "alice").await;
        assert_eq!(user["failedLoginCount"], 0);
        assert_eq!(user["userStatus"]["locked"], false);
    }
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_lockout_keeps_it_until_it_ends() {
    let clock = tokenledger::clock::ManualClock::new();
    let server = TestServer::start_on_clock(clock.clone(), lockout(2, 2)).await;
    let f = server.seed().await;
    for login in ["alice", "mallory"] {
        for _ in 0..2 {
            sign_in(&server, &f, login, "wrong").await.assert_error(401, "CMN_90015");
        }
    }
    // Restart with the default settings: the lockout is replayed from the events.
    let server = server.restart().await;
    sign_in(&server, &f, "alice", RIGHT).await.assert_error(400, "CMN_90009");
    sign_in(&server, &f, "mallory", RIGHT).await.assert_error(400, "CMN_90009");
    let user = lookup(&server, &lookup_client(&server).await, "alice").await;
    assert_eq!((user["failedLoginCount"].as_u64(), user["userStatus"]["locked"].as_bool()), (Some(2), Some(true)));
    clock.advance(1_990);
    sign_in(&server, &f, "alice", RIGHT).await.assert_error(400, "CMN_90009");
    clock.advance(20);
    assert_eq!(sign_in(&server, &f, "alice", RIGHT).await.status, 200, "the lockout ended on time");
    sign_in(&server, &f, "mallory", RIGHT).await.assert_error(401, "CMN_90015");
}

#[tokio::test]
async fn sign_in_codes_distinguish_malformed_wrong_not_allowed_and_locked() {
    let (server, f) = TestServer::seeded().await;
    sign_in(&server, &f, "", "x").await.assert_error(400, "CMN_90013");
    sign_in(&server, &f, "a%20b", "x").await.assert_error(400, "CMN_90013");
    sign_in(&server, &f, "alice", "").await.assert_error(400, "CMN_90014");
    let mut admin = server.admin_client().await;
    let name =
        || api::GetUserRequest { institution_id: INSTITUTION.into(), login_id: "alice".into(), ..Default::default() };
    // Disabled: the right password is CMN_90016, a wrong one stays CMN_90015 (no oracle).
    admin.disable_user(server.admin(name())).await.unwrap();
    sign_in(&server, &f, "alice", RIGHT).await.assert_error(400, "CMN_90016");
    sign_in(&server, &f, "alice", "wrong").await.assert_error(401, "CMN_90015");
    admin.enable_user(server.admin(name())).await.unwrap();
    assert_eq!(sign_in(&server, &f, "alice", RIGHT).await.status, 200);
    // Locked by an operator: the right password is CMN_90009 until unlocked.
    let locked = admin.lock_user(server.admin(name())).await.unwrap().into_inner();
    assert!(locked.locked);
    sign_in(&server, &f, "alice", RIGHT).await.assert_error(400, "CMN_90009");
    sign_in(&server, &f, "alice", "wrong").await.assert_error(401, "CMN_90015");
    admin.unlock_user(server.admin(name())).await.unwrap();
    assert_eq!(sign_in(&server, &f, "alice", RIGHT).await.status, 200);
    // A user without a password cannot sign in, and looks like any wrong password.
    let spec = api::UserSpec { institution_id: INSTITUTION.into(), login_id: "nopw".into(), ..Default::default() };
    admin
        .create_user(server.admin(api::CreateUserRequest { spec: Some(spec), password: String::new() }))
        .await
        .unwrap();
    sign_in(&server, &f, "nopw", "anything").await.assert_error(401, "CMN_90015");
}

#[tokio::test]
async fn every_failed_sign_in_is_in_the_ledger_before_the_answer() {
    let (server, f) = TestServer::seeded().await;
    let before = server.app.state.read().head.seq;
    sign_in(&server, &f, "alice", "wrong").await.assert_error(401, "CMN_90015");
    sign_in(&server, &f, "nobody", "wrong").await.assert_error(401, "CMN_90015");
    assert_eq!(server.app.state.read().head.seq, before + 2, "one SignInFailed event per failure");
    // The unknown login id is recorded only as a keyed digest, never as typed.
    let dir = server.stop().await;
    let bytes = std::fs::read(dir.path().join("ledger.redb")).unwrap();
    assert!(!bytes.windows(6).any(|w| w == b"nobody"), "an unknown login id reached the ledger");
}

#[tokio::test]
async fn a_fresh_replay_equals_the_live_projections_after_directory_changes_and_lockouts() {
    let server = TestServer::start_with(lockout(2, 600)).await;
    let f = server.seed().await;
    let token = server.token(&f.app, &format!("grant_type=password&username=alice&password={RIGHT}")).await;
    assert_eq!(token.status, 200);
    for login in ["alice", "ghost", "ghost", "alice"] {
        sign_in(&server, &f, login, "wrong").await;
    }
    let mut admin = server.admin_client().await;
    let rotate = api::RotateClientSecretRequest { client_id: f.service.id.clone(), overlap_secs: 600 };
    admin.rotate_client_secret(server.admin(rotate)).await.unwrap();
    admin.disable_client(server.admin(api::GetClientRequest { client_id: f.other.id.clone() })).await.unwrap();
    server.user(INSTITUTION, "bob", "bobs password", "BUSINESS").await;
    let bob =
        || api::GetUserRequest { institution_id: INSTITUTION.into(), login_id: "bob".into(), ..Default::default() };
    admin.disable_user(server.admin(bob())).await.unwrap();
    admin.enable_user(server.admin(bob())).await.unwrap();
    admin.lock_user(server.admin(bob())).await.unwrap();
    let password = api::SetUserPasswordRequest { user: Some(bob()), password: "new password".into() };
    admin.set_user_password(server.admin(password)).await.unwrap();
    let mut spec = admin.get_user(server.admin(bob())).await.unwrap().into_inner().spec.unwrap();
    spec.email = "bob@example.com".into();
    spec.host_user_id = "HOST-B2".into();
    admin.update_user(server.admin(api::UpdateUserRequest { spec: Some(spec) })).await.unwrap();
    let replayed = server.assert_replay_equals_live().await;
    assert!(!replayed.sign_ins.is_empty() && !replayed.cutoffs.by_client.is_empty());
}
