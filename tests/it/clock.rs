//! The wall clock through the front door: a server on a manual clock that a test steps, for
//! what a clock step must not do (security review finding 4).

use tokenledger::clock::{Clock as _, ManualClock};
use tokenledger::proto::{self as api};

use crate::harness::*;

const TEN_YEARS_MS: i64 = 10 * 365 * 24 * 3600 * 1000;
const WRONG_LOGIN: &str = "username=alice&password=wrong";

async fn ready(server: &TestServer) -> u16 {
    server.http.get(server.url("/readyz")).send().await.unwrap().status().as_u16()
}

/// `tokenledger_clock_behind_ledger_seconds` from `/metrics`.
async fn behind_secs(server: &TestServer) -> f64 {
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("tokenledger_clock_behind_ledger_seconds "))
        .unwrap_or_else(|| panic!("no clock gauge in:\n{text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn alice(server: &TestServer) -> api::User {
    let request =
        api::GetUserRequest { institution_id: INSTITUTION.into(), login_id: "alice".into(), ..Default::default() };
    server.admin_client().await.get_user(server.admin(request)).await.unwrap().into_inner()
}

/// Security review finding 4: a one-off step of the clock ten years ahead and back used to
/// freeze ledger time at the jumped time, so every later token lived ten years and lockouts
/// lasted until then. After the step back, lifetimes, lockouts and the retry window count from
/// the clock again, the server reports the clock behind its ledger (metric, readiness, also
/// after a restart) until the clock passes the ledger head, and a replay equals the live state.
#[tokio::test]
async fn a_clock_step_forward_and_back_does_not_freeze_lifetimes_lockouts_or_retries() {
    let clock = ManualClock::new();
    let server = TestServer::start_on_clock(clock.clone(), |_| {}).await;
    let f = server.seed().await;
    assert_eq!(ready(&server).await, 200);
    assert_eq!(behind_secs(&server).await, 0.0);

    clock.advance(TEN_YEARS_MS);
    // Decided while the clock was wrong: this one does live ten years (revoke it if it matters).
    server.token(&f.service, "grant_type=client_credentials").await.access_token();
    clock.advance(-TEN_YEARS_MS + 1_000);
    let now_secs = clock.now_ms() / 1000;

    assert_eq!(ready(&server).await, 503, "the clock is behind the ledger");
    assert!(behind_secs(&server).await > 3.0e8, "about ten years behind");
    let server = server.restart().await;
    assert_eq!(ready(&server).await, 503, "start-up notices it too");

    let reply = server.token(&f.service, "grant_type=client_credentials").await;
    let body = reply.json();
    assert!((3599..=3600).contains(&body["expires_in"].as_i64().unwrap()), "{body}");
    let access = reply.access_token();
    let seen = server.introspect(&f.service, &access).await;
    assert!((now_secs + 3599..=now_secs + 3600).contains(&seen["exp"].as_i64().unwrap()), "{seen}");
    assert!(seen["iat"].as_i64().unwrap() <= now_secs, "{seen}");
    let signed_in = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let refresh_secs = signed_in["refresh_token_expires_in"].as_i64().unwrap();
    assert!(refresh_secs <= 180 * 24 * 3600, "{signed_in}");

    // Five wrong passwords lock alice for the 15 minutes configured, not until the jumped time.
    for _ in 0..5 {
        server.token(&f.app, &format!("grant_type=password&{WRONG_LOGIN}")).await.assert_error(401, "CMN_90015");
    }
    let locked_until = alice(&server).await.locked_out_until_ms;
    let expected = clock.now_ms() + 900_000;
    assert!((expected - 1_000..=expected).contains(&locked_until), "{locked_until} vs {expected}");
    server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.assert_error(400, "CMN_90009");
    clock.advance(900_001);
    assert_eq!(server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.status, 200);

    // The retry window is 60 seconds of the clock: after it, the same transactionId is new.
    let txid = txid();
    let headers = [("transactionId", txid.as_str()), ("institutionId", INSTITUTION)];
    let body = "grant_type=client_credentials";
    let first = server.post_form("/oauth2/v1/token", Some(&f.service), &headers, body).await.access_token();
    let retried = server.post_form("/oauth2/v1/token", Some(&f.service), &headers, body).await.access_token();
    assert_eq!(first, retried, "a retry within the window gets the same token");
    clock.advance(61_000);
    let later = server.post_form("/oauth2/v1/token", Some(&f.service), &headers, body).await.access_token();
    assert_ne!(first, later, "after the window the transactionId is a new request");

    // Once the clock passes the ledger head, the server is ready again.
    clock.advance(TEN_YEARS_MS);
    assert_eq!(ready(&server).await, 200);
    assert_eq!(behind_secs(&server).await, 0.0);
    server.assert_replay_equals_live().await;
}

/// A small step back (NTP correcting a fast clock) stays within `clock_skew_max_ms`: the
/// server stays ready and the ledger's order is kept.
#[tokio::test]
async fn a_small_step_back_within_the_allowed_skew_keeps_the_server_ready() {
    let clock = ManualClock::new();
    let server = TestServer::start_on_clock(clock.clone(), |s| s.clock_skew_max_ms = Some(2_000)).await;
    let f = server.seed().await;
    clock.advance(-1_500);
    assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
    assert_eq!(ready(&server).await, 200);
    clock.advance(-1_000);
    assert_eq!(ready(&server).await, 503, "2.5 s behind is more than allowed");
    clock.advance(2_600);
    assert_eq!(ready(&server).await, 200);
    server.assert_replay_equals_live().await;
}
