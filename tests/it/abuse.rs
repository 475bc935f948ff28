//! Abuse resistance (security review of December 2026): what an unauthenticated caller, or a
//! client acting against others, can make the server spend. Work is counted (PBKDF2
//! computations, ledger events), never timed: the timing figures are in bench/README.md.

use std::time::Duration;

use tokenledger::proto::{self as api};

use crate::harness::*;
use crate::ratelimit::metric;

/// Imports a client whose secret is stored with PBKDF2 (as `tokenledger import` does).
pub async fn import_client(server: &TestServer, id: &str, secret: &str) -> ClientCreds {
    let import = api::ImportRequest {
        clients: vec![api::ImportClient {
            spec: Some(api::ClientSpec {
                client_id: id.into(),
                name: format!("Imported {id}"),
                institution_ids: vec![INSTITUTION.into()],
                grant_types: vec!["client_credentials".into(), "password".into()],
                scopes: vec!["accounts:read".into()],
                introspect: true,
                ..Default::default()
            }),
            client_secret: secret.into(),
        }],
        ..Default::default()
    };
    server.admin_client().await.import(server.admin(import)).await.expect("import");
    ClientCreds { id: id.into(), secret: secret.into() }
}

async fn hashes(server: &TestServer) -> f64 {
    metric(server, "tokenledger_password_hashes_total").await
}

fn wrong(creds: &ClientCreds, guess: usize) -> ClientCreds {
    ClientCreds { id: creds.id.clone(), secret: format!("wrong-{guess}") }
}

/// Sends `count` concurrent client_credentials requests with distinct wrong secrets for `id`.
async fn flood(server: &TestServer, id: &ClientCreds, count: usize) -> Vec<Reply> {
    let requests = (0..count).map(|i| {
        let guess = wrong(id, i);
        async move { server.token(&guess, "grant_type=client_credentials").await }
    });
    futures_util::future::join_all(requests).await
}

/// Security review finding 3: a flood of wrong secrets for an imported (PBKDF2) client id
/// cannot buy PBKDF2 time. Each guess used to cost a full hash on the semaphore that password
/// sign-ins share (40 guesses, 40 hashes); now the failures back off per (id, source) and the
/// slow checks have their own budget that refuses at once when busy, so the flood costs a
/// handful of hashes, and the real client and password sign-ins keep working.
#[tokio::test]
async fn finding_3_a_flood_of_wrong_secrets_for_an_imported_client_costs_a_few_hashes_not_one_each() {
    let server = TestServer::start_with(|s| {
        s.client_secret_hash_concurrency = Some(1);
        s.client_auth_free_failures = Some(5);
    })
    .await;
    let f = server.seed().await;
    let legacy = import_client(&server, "legacy-client", "legacy-secret-1").await;
    // The real client has signed in once since start-up, so its secret is known.
    assert_eq!(server.token(&legacy, "grant_type=client_credentials").await.status, 200);
    let before = hashes(&server).await;
    // 40 guesses at once, then one after the other until the backoff refuses one.
    let mut answers = flood(&server, &legacy, 40).await;
    for guess in 100..110 {
        let reply = server.token(&wrong(&legacy, guess), "grant_type=client_credentials").await;
        let refused = reply.status == 500;
        answers.push(reply);
        if refused {
            break;
        }
    }
    let spent = hashes(&server).await - before;
    // The free failures (5) and the one that starts the backoff, plus at most one whose wait
    // ran out meanwhile.
    assert!(spent <= 7.0, "{} wrong secrets cost {spent} PBKDF2 computations", answers.len());
    let mut refused = 0.0;
    for reply in &answers {
        if reply.status == 401 {
            reply.assert_error(401, "CMN_90004");
            refused += 1.0;
        } else {
            reply.assert_error(500, "CMN_90003");
            assert!(reply.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
        }
    }
    assert_eq!(refused, spent, "each CMN_90004 cost one hash, each CMN_90003 none");
    answers[answers.len() - 1].assert_error(500, "CMN_90003");
    let before = hashes(&server).await;
    // The real client, its right secret, from the same address: served, without a hash.
    assert_eq!(server.token(&legacy, "grant_type=client_credentials").await.status, 200);
    assert_eq!(hashes(&server).await, before);
    // Password sign-ins have their own budget and are untouched.
    assert_eq!(server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.status, 200);
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("tokenledger_rate_limited_total{limit=\"client_auth_backoff\"}"), "{text}");
}

/// Security review finding 3 (a guesser that ignores `Retry-After`): refused guesses are
/// answered after their wait, but they give their in-flight slot back first, so a crowd of
/// them never keeps other requests waiting for a slot.
#[tokio::test]
async fn finding_3_refused_guesses_wait_for_their_answer_without_holding_request_slots() {
    let server = TestServer::start_with(|s| {
        s.requests_in_flight_max = Some(2);
        s.client_auth_free_failures = Some(1);
    })
    .await;
    let f = server.seed().await;
    // Two failures start the backoff of (svc, this address).
    for guess in 0..2 {
        server.token(&wrong(&f.service, guess), "grant_type=client_credentials").await.assert_error(401, "CMN_90004");
    }
    let waiting: Vec<_> = (10..20)
        .map(|guess| {
            let (http, url, creds) = (server.http.clone(), server.url("/oauth2/v1/token"), wrong(&f.service, guess));
            tokio::spawn(async move {
                let reply = http
                    .post(url)
                    .basic_auth(&creds.id, Some(&creds.secret))
                    .header("transactionId", txid())
                    .header("institutionId", INSTITUTION)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("grant_type=client_credentials")
                    .send()
                    .await
                    .unwrap();
                Reply::from(reply).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Ten refused guesses are waiting; with two slots, this is served at once all the same.
    assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
    assert!(waiting.iter().any(|w| !w.is_finished()), "the refused guesses were answered before their wait");
    for handle in waiting {
        let reply = handle.await.unwrap();
        reply.assert_error(500, "CMN_90003");
        assert!(reply.header("retry-after").is_some());
    }
}

/// Security review finding 3 (the existence oracle): a failed authentication costs the same
/// work whatever the id names. An unknown id used to cost one HMAC and an imported client's id
/// a full PBKDF2; now each failure costs exactly one PBKDF2 check (a dummy one where there is
/// no real digest to check), and repeating the same wrong secret costs none.
#[tokio::test]
async fn finding_3_unknown_and_known_client_ids_cost_the_same_work() {
    let server = TestServer::start_with(|s| s.client_auth_free_failures = Some(50)).await;
    let f = server.seed().await;
    let unverified = import_client(&server, "imported-a", "secret-a").await;
    let verified = import_client(&server, "imported-b", "secret-b").await;
    assert_eq!(server.token(&verified, "grant_type=client_credentials").await.status, 200);
    let disabled = server
        .client(api::ClientSpec {
            client_id: "gone".into(),
            name: "Disabled".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["accounts:read".into()],
            ..Default::default()
        })
        .await;
    let request = api::GetClientRequest { client_id: disabled.id.clone() };
    server.admin_client().await.disable_client(server.admin(request)).await.unwrap();
    let unknown = ClientCreds { id: "no-such-client".into(), secret: "x".into() };
    let cases = [
        ("unknown id", unknown),
        ("generated secret", f.service.clone()),
        ("imported, not yet verified", unverified),
        ("imported, verified", verified),
        ("disabled", disabled.clone()),
    ];
    for (name, creds) in &cases {
        let guess = wrong(creds, 1);
        let before = hashes(&server).await;
        server.token(&guess, "grant_type=client_credentials").await.assert_error(401, "CMN_90004");
        assert_eq!(hashes(&server).await - before, 1.0, "{name}: one PBKDF2 check");
        // The same wrong secret again is answered from the cache of known wrong secrets.
        server.token(&guess, "grant_type=client_credentials").await.assert_error(401, "CMN_90004");
        assert_eq!(hashes(&server).await - before, 1.0, "{name}: a repeated wrong secret costs nothing");
    }
    // The right secret of a disabled client fails like any other; enabling it again works at once.
    server.token(&disabled, "grant_type=client_credentials").await.assert_error(401, "CMN_90004");
    let request = api::GetClientRequest { client_id: disabled.id.clone() };
    server.admin_client().await.enable_client(server.admin(request)).await.unwrap();
    assert_eq!(server.token(&disabled, "grant_type=client_credentials").await.status, 200);
    // A secret refused for an unknown id is not remembered against a client created later.
    let early = ClientCreds { id: "late-client".into(), secret: "late-secret".into() };
    server.token(&early, "grant_type=client_credentials").await.assert_error(401, "CMN_90004");
    let late = import_client(&server, "late-client", "late-secret").await;
    assert_eq!(server.token(&late, "grant_type=client_credentials").await.status, 200);
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("tokenledger_client_auth_known_wrong_total 5"), "{text}");
}

/// Security review finding 3 (the way off slow secrets): rotating an imported client's secret
/// issues a generated one, checked with one HMAC; /metrics counts the clients still to rotate.
#[tokio::test]
async fn rotating_an_imported_secret_moves_the_client_off_pbkdf2() {
    let server = TestServer::start().await;
    server.institution(INSTITUTION).await;
    import_client(&server, "legacy", "legacy-secret").await;
    assert_eq!(metric(&server, "tokenledger_clients_with_imported_secret").await, 1.0);
    let request = api::RotateClientSecretRequest { client_id: "legacy".into(), overlap_secs: 0 };
    let rotated = server.admin_client().await.rotate_client_secret(server.admin(request)).await.unwrap();
    let rotated = ClientCreds { id: "legacy".into(), secret: rotated.into_inner().client_secret };
    assert_eq!(metric(&server, "tokenledger_clients_with_imported_secret").await, 0.0);
    let before = hashes(&server).await;
    for _ in 0..3 {
        assert_eq!(server.token(&rotated, "grant_type=client_credentials").await.status, 200);
    }
    assert_eq!(hashes(&server).await, before, "a generated secret needs no PBKDF2");
}

/// Security review finding 5: spike arrest is charged to the authenticated client only. It was
/// keyed by the presented client id before authentication, so 20 wrong secrets naming a client
/// drained its bucket and the real client then got CMN_90003.
#[tokio::test]
async fn finding_5_wrong_secrets_naming_a_client_do_not_spend_its_spike_allowance() {
    let server = TestServer::start_with(|s| {
        s.spike_arrest_per_sec = Some(5);
        s.spike_arrest_burst = Some(5);
    })
    .await;
    let f = server.seed().await;
    for reply in flood(&server, &f.service, 20).await {
        assert!(reply.status == 401 || reply.status == 500, "{}", reply.text);
    }
    // From the same address, at once: the real client still has its whole burst.
    for _ in 0..5 {
        assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
    }
    // And its own excess is still arrested.
    server.token(&f.service, "grant_type=client_credentials").await.assert_error(500, "CMN_90003");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200);
}

/// Security review finding 11: lockout as a weapon. Failures counted only per (institution,
/// login id), so any client with the password grant could lock every known login id with five
/// wrong passwords each. Now each client has a budget of failed sign-ins; beyond it its
/// attempts are refused (CMN_90003) before the hash and without recording a failure, so the
/// lockout is never reached, for known and unknown login ids alike.
#[tokio::test]
async fn finding_11_one_client_cannot_lock_users_out_beyond_its_failure_budget() {
    let server = TestServer::start_with(|s| s.sign_in_failures_per_client_per_min = Some(3)).await;
    let f = server.seed().await;
    let spec = |id: &str| api::ClientSpec {
        client_id: id.into(),
        name: id.into(),
        institution_ids: vec![INSTITUTION.into()],
        grant_types: vec!["password".into()],
        scopes: vec!["accounts:read".into()],
        ..Default::default()
    };
    let second = server.client(spec("second-app")).await;
    let third = server.client(spec("third-app")).await;
    let answers = |creds: ClientCreds, login: &'static str| {
        let server = &server;
        async move {
            let mut codes = Vec::new();
            for _ in 0..5 {
                let reply = server.token(&creds, &format!("grant_type=password&username={login}&password=wrong")).await;
                codes.push(reply.json()["code"].as_str().unwrap_or_default().to_owned());
                if reply.status == 500 {
                    assert!(reply.header("retry-after").is_some(), "CMN_90003 without Retry-After");
                }
            }
            codes
        }
    };
    let head = server.app.state.read().head.seq;
    let known = answers(f.app.clone(), "alice").await;
    assert_eq!(known, ["CMN_90015", "CMN_90015", "CMN_90015", "CMN_90003", "CMN_90003"]);
    assert_eq!(server.app.state.read().head.seq, head + 3, "refused attempts record nothing");
    // The same answers for a login id that does not exist (SPEC 6: no oracle).
    let unknown = answers(third, "nobody").await;
    assert_eq!(unknown, known);
    // alice was never locked out: her right password works through another client.
    assert_eq!(server.token(&second, &format!("grant_type=password&{ALICE_LOGIN}")).await.status, 200);
    let text = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("tokenledger_rate_limited_total{limit=\"sign_in_failures\"} 4"), "{text}");
}

/// Every stored envelope `StreamEvents` sends with `include_envelope`, decoded.
async fn envelopes(server: &TestServer) -> Vec<(api::LedgerEvent, Option<tokenledger::proto::ledger::Event>)> {
    use prost::Message as _;
    use tokenledger::proto::ledger::{Envelope, Event};
    let request = api::StreamEventsRequest { include_envelope: true, ..Default::default() };
    let events = crate::audit::events(server, request).await;
    events
        .into_iter()
        .map(|e| {
            let decoded = (!e.envelope.is_empty()).then(|| {
                let envelope = Envelope::decode(e.envelope.as_slice()).expect("envelope");
                Event::decode(envelope.event.as_slice()).expect("event")
            });
            (e, decoded)
        })
        .collect()
}

/// Security review finding 8: `include_envelope` handed every user's PBKDF2 digest (and the
/// digests of client secrets) to whoever holds the audit credential, although the decoded
/// events are redacted. Now the envelopes of events that carry a credential digest are
/// withheld, with their hashes, so the chain's links can still be checked through them, unless
/// the server runs with `audit_raw_envelopes` (for a trusted replica).
#[tokio::test]
async fn finding_8_audit_envelopes_carry_no_credential_digest_unless_the_server_allows_raw_ones() {
    use tokenledger::audit::ChainWalker;
    use tokenledger::audit::redact;
    use tokenledger::proto::ledger::{credential_digest, event};
    let server = TestServer::start().await;
    server.seed().await;
    import_client(&server, "legacy", "legacy-secret").await;
    let streamed = envelopes(&server).await;
    let mut walker = ChainWalker::default();
    let mut withheld = Vec::new();
    for (e, decoded) in &streamed {
        match decoded {
            Some(event) => {
                assert!(redact(event) == *event, "event {} ({}) hands out a credential digest", e.seq, e.kind);
                walker.push(e.seq, &e.envelope).expect("chain");
            }
            None => {
                assert!(e.envelope_withheld, "event {} has no envelope", e.seq);
                withheld.push(e.kind.clone());
                walker.push_withheld(e.seq, &e.prev_hash, &e.hash, e.recorded_at_ms).expect("chain links");
            }
        }
    }
    assert_eq!(walker.head.seq, streamed.len() as u64);
    assert!(withheld.contains(&"user_created".to_owned()) && withheld.contains(&"client_created".to_owned()));
    assert!(streamed.iter().any(|(e, d)| e.kind == "tokens_issued" || d.is_some()), "other envelopes are sent");
    // A server configured for a trusted replica sends them all, digests included.
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |s| s.audit_raw_envelopes = Some(true)).await;
    let raw = envelopes(&server).await;
    assert!(raw.iter().all(|(e, d)| d.is_some() && !e.envelope_withheld));
    let pbkdf2 = raw.iter().filter_map(|(_, d)| d.as_ref()).any(|event| match &event.kind {
        Some(event::Kind::UserCreated(u)) => {
            matches!(u.password.as_ref().and_then(|p| p.kind.as_ref()), Some(credential_digest::Kind::Pbkdf2(_)))
        }
        _ => false,
    });
    assert!(pbkdf2, "the raw envelopes are the stored bytes");
}
