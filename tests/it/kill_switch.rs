//! Disabling a user or client is a kill switch that no in-flight request outruns, an
//! operator lock stops refreshes, and a family has an absolute lifetime (security review
//! findings 2 and 12).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use redb::StorageBackend;
use tokenledger::clock::ManualClock;
use tokenledger::proto::{self as api};

use crate::authcode::{CHALLENGE, Form, PARTNER_REDIRECT, VERIFIER, redeem_body, set_authorize_partners};
use crate::harness::*;

/// An in-memory disk whose syncs can be held: while the gate is closed, the writer's commit
/// waits in `sync_data`, and everything submitted meanwhile queues for the next batch. That is
/// how a test puts chosen commands into one batch of the real writer.
#[derive(Debug, Clone, Default)]
struct GatedDisk {
    bytes: Arc<Mutex<Vec<u8>>>,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    /// Syncs waiting at the closed gate.
    waiting: AtomicUsize,
}

impl Gate {
    fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }

    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }

    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        if *closed {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            while *closed {
                closed = self.opened.wait(closed).unwrap();
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl StorageBackend for GatedDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.lock().unwrap();
        let start = offset as usize;
        out.copy_from_slice(bytes.get(start..start + out.len()).ok_or_else(|| io::Error::other("read past the end"))?);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.bytes.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.bytes.lock().unwrap();
        let end = offset as usize + data.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

/// Polls `done` until it holds (the writer and the request tasks run on other threads).
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A deterministic pseudo-random sequence (reproducible from the printed seed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Clone, Copy, Debug)]
enum Kill {
    /// DisableUser against a refresh of the user's refresh token.
    UserRefresh,
    /// DisableClient of the app against a refresh by that app.
    ClientRefresh,
    /// DisableUser against the partner's redemption of a code for the user.
    UserRedemption,
    /// DisableClient of the partner against its redemption.
    PartnerRedemption,
    /// DisableClient of the first-party app that authorized the code against its redemption.
    AuthorizerRedemption,
}

const KILLS: [Kill; 5] =
    [Kill::UserRefresh, Kill::ClientRefresh, Kill::UserRedemption, Kill::PartnerRedemption, Kill::AuthorizerRedemption];

/// One trial's fresh parties: a user, a password app, a first-party app and a partner.
struct Parties {
    login: String,
    app: ClientCreds,
    first_party: ClientCreds,
    partner: ClientCreds,
}

async fn parties(server: &TestServer, trial: usize) -> (Parties, api::User) {
    let login = format!("user{trial}");
    let user = server.user(INSTITUTION, &login, "correct horse battery", "RETAIL").await;
    let client = |id: String, grants: &[&str], redirect: &str| api::ClientSpec {
        client_id: id,
        institution_ids: vec![INSTITUTION.into()],
        grant_types: grants.iter().map(|g| g.to_string()).collect(),
        scopes: vec!["accounts:read".into()],
        redirect_uri: redirect.into(),
        introspect: true,
        ..Default::default()
    };
    let app = server.client(client(format!("app{trial}"), &["password", "refresh_token"], "")).await;
    let first_party = server.client(client(format!("fp{trial}"), &["client_credentials"], "")).await;
    set_authorize_partners(server, &first_party.id, true).await;
    let partner = server.client(client(format!("partner{trial}"), &["authorization_code"], PARTNER_REDIRECT)).await;
    (Parties { login, app, first_party, partner }, user)
}

/// A token request sent in the background (with `institutionId` 01001 when `institution`).
fn form_request(
    server: &TestServer,
    creds: &ClientCreds,
    body: String,
    institution: bool,
) -> tokio::task::JoinHandle<Reply> {
    let mut request = server
        .http
        .post(server.url("/oauth2/v1/token"))
        .basic_auth(&creds.id, Some(&creds.secret))
        .header("transactionId", txid())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if institution {
        request = request.header("institutionId", INSTITUTION);
    }
    tokio::spawn(async move { Reply::from(request.send().await.expect("token request")).await })
}

/// Security review finding 2: a refresh or a code redemption decided in the same writer batch
/// as `DisableUser`/`DisableClient` escaped the disable's cutoff, and the surviving refresh
/// chain lived on. Each trial holds the writer in a commit, queues the disable and the
/// refresh or redemption (in a seeded order) so that the writer takes both into its next
/// batch, and then checks that no token of that user or client is active once the disable is
/// acknowledged, and that the writer did keep the two apart (a deferred command).
#[tokio::test]
async fn a_disable_queued_with_a_refresh_or_redemption_leaves_no_active_token() {
    let seed = std::env::var("TL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| wall_ms() as u64 | 1);
    println!("kill-switch race seed: {seed} (rerun with TL_SEED={seed})");
    let mut rng = Rng(seed);
    let disk = GatedDisk::default();
    let gate = disk.gate.clone();
    let server = TestServer::start_on_backend(disk, Arc::new(tempfile::tempdir().unwrap())).await;
    let f = server.seed().await;
    for trial in 0..15 {
        let kill = KILLS[rng.below(KILLS.len() as u64) as usize];
        let disable_first = rng.below(2) == 0;
        let context = format!("seed {seed}, trial {trial}, {kill:?}, disable first: {disable_first}");
        let (p, user) = parties(&server, trial).await;
        let (contender_creds, contender_body) = match kill {
            Kill::UserRefresh | Kill::ClientRefresh => {
                let login = format!("grant_type=password&username={}&password=correct+horse+battery", p.login);
                let signed_in = server.token(&p.app, &login).await.json();
                let refresh = signed_in["refresh_token"].as_str().unwrap().to_owned();
                (p.app.clone(), format!("grant_type=refresh_token&refresh_token={refresh}"))
            }
            _ => {
                let bearer = server.token(&p.first_party, "grant_type=client_credentials").await.access_token();
                let spec = user.spec.as_ref().unwrap();
                let form = Form::code()
                    .set("client_id", &p.partner.id)
                    .set("username", &spec.login_id)
                    .set("institution_user_id", &spec.institution_user_id)
                    .set("code_challenge", CHALLENGE);
                let authorization = format!("Bearer {bearer}");
                let headers = [
                    ("authorization", authorization.as_str()),
                    ("transactionId", &txid()),
                    ("institutionId", INSTITUTION),
                ];
                let reply = server.post_form("/v1/auth-code", None, &headers, &form.encode()).await;
                assert_eq!(reply.status, 200, "{context}: {}", reply.text);
                let code = reply.json()["code"].as_str().unwrap().to_owned();
                (p.partner.clone(), redeem_body(&code, Some(VERIFIER)))
            }
        };
        let mut admin = server.admin_client().await;
        let user_ref =
            api::GetUserRequest { institution_id: INSTITUTION.into(), login_id: p.login.clone(), ..Default::default() };
        let disabled_client = match kill {
            Kill::ClientRefresh => Some(p.app.id.clone()),
            Kill::PartnerRedemption => Some(p.partner.id.clone()),
            Kill::AuthorizerRedemption => Some(p.first_party.id.clone()),
            Kill::UserRefresh | Kill::UserRedemption => None,
        };
        let disable = {
            let request_user = server.admin(user_ref.clone());
            let request_client =
                disabled_client.clone().map(|client_id| server.admin(api::GetClientRequest { client_id }));
            async move {
                match request_client {
                    Some(request) => admin.disable_client(request).await.map(|_| ()),
                    None => admin.disable_user(request_user).await.map(|_| ()),
                }
            }
        };

        // Hold the writer in a commit, then queue the two in the chosen order.
        let deferred_before = server.app.ledger.status().deferred_commands.load(Ordering::Relaxed);
        gate.close();
        let filler = form_request(&server, &f.service, "grant_type=client_credentials".into(), true);
        until("the writer to wait in its commit", || gate.waiting.load(Ordering::SeqCst) == 1).await;
        let queued = || server.app.ledger.queued();
        let (disabled, contender) = if disable_first {
            let disabled = tokio::spawn(disable);
            until("the disable to queue", || queued() >= 1).await;
            let contender = form_request(&server, &contender_creds, contender_body, false);
            until("both to queue", || queued() >= 2).await;
            (disabled, contender)
        } else {
            let contender = form_request(&server, &contender_creds, contender_body, false);
            until("the contender to queue", || queued() >= 1).await;
            let disabled = tokio::spawn(disable);
            until("both to queue", || queued() >= 2).await;
            (disabled, contender)
        };
        gate.open();
        assert_eq!(filler.await.unwrap().status, 200, "{context}");
        disabled.await.unwrap().unwrap_or_else(|e| panic!("{context}: disable failed: {e}"));
        let contender = contender.await.unwrap();
        let deferred = server.app.ledger.status().deferred_commands.load(Ordering::Relaxed) - deferred_before;
        assert!(deferred >= 1, "{context}: the writer decided the disable and the contender in one batch");

        // Acknowledged: nothing the contender got is active, and it cannot go on refreshing.
        if contender.status == 200 {
            let body = contender.json();
            for name in ["access_token", "refresh_token"] {
                if let Some(token) = body[name].as_str() {
                    assert!(!server.is_active(&f.service, token).await, "{context}: {name} survived the disable");
                }
            }
            if let Some(refresh) = body["refresh_token"].as_str() {
                let again =
                    server.token(&contender_creds, &format!("grant_type=refresh_token&refresh_token={refresh}")).await;
                assert_ne!(again.status, 200, "{context}: the chain lived on: {}", again.text);
            }
        }
    }
}

/// Security review finding 12: an operator-locked user kept refreshing. The lock now refuses
/// refreshes (CMN_90009) without ending the family, so unlocking resumes it; a lockout from
/// failed passwords (which anyone knowing the login id can cause) leaves refresh working.
#[tokio::test]
async fn an_operator_lock_stops_refreshes_until_the_unlock_and_a_lockout_does_not() {
    let (server, f) = TestServer::seeded().await;
    let signed_in = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let refresh = |token: &str| format!("grant_type=refresh_token&refresh_token={token}");
    let mut admin = server.admin_client().await;
    let alice = || {
        server.admin(api::GetUserRequest {
            institution_id: INSTITUTION.into(),
            login_id: "alice".into(),
            ..Default::default()
        })
    };
    admin.lock_user(alice()).await.unwrap();
    let rt = signed_in["refresh_token"].as_str().unwrap();
    server.token(&f.app, &refresh(rt)).await.assert_error(400, "CMN_90009");
    admin.unlock_user(alice()).await.unwrap();
    let refreshed = server.token(&f.app, &refresh(rt)).await.json();
    let rt = refreshed["refresh_token"].as_str().expect("the family lives on after the unlock");
    for _ in 0..5 {
        server.token(&f.app, "grant_type=password&username=alice&password=wrong").await.assert_error(401, "CMN_90015");
    }
    server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.assert_error(400, "CMN_90009");
    assert_eq!(server.token(&f.app, &refresh(rt)).await.status, 200, "a lockout does not log the customer out");
}

/// Security review finding 12: each refresh slid the refresh token's expiry, so a used family
/// never ended. Now no token of a family outlives its sign-in by `family_lifetime_max_secs`.
#[tokio::test]
async fn a_family_ends_at_its_maximum_lifetime_however_often_it_is_refreshed() {
    let clock = ManualClock::new();
    let server = TestServer::start_on_clock(clock.clone(), |s| s.family_lifetime_max_secs = Some(7200)).await;
    let f = server.seed().await;
    let signed_in = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    assert_eq!(signed_in["refresh_token_expires_in"], 7200, "{signed_in}");
    assert_eq!(signed_in["expires_in"], 3600);
    let mut rt = signed_in["refresh_token"].as_str().unwrap().to_owned();
    for (step_secs, refresh_left, access_left) in [(1800, 5400, 3600), (3000, 2400, 2400), (2000, 400, 400)] {
        clock.advance(step_secs * 1000);
        let body = server.token(&f.app, &format!("grant_type=refresh_token&refresh_token={rt}")).await.json();
        assert_eq!(
            (body["refresh_token_expires_in"].as_i64(), body["expires_in"].as_i64()),
            (Some(refresh_left), Some(access_left)),
            "{body}"
        );
        rt = body["refresh_token"].as_str().unwrap().to_owned();
    }
    clock.advance(400_000);
    assert!(!server.is_active(&f.app, &rt).await, "the whole family has ended");
    server.token(&f.app, &format!("grant_type=refresh_token&refresh_token={rt}")).await.assert_error(401, "CMN_90018");
    server.assert_replay_equals_live().await;
}
