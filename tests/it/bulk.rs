//! AdminService.BulkRevoke and RevokeBlastRadius: one event per revocation whatever the
//! number of tokens, the count of live tokens it ended, the scopes and the "issued before"
//! bound, status-at across cutoffs, survival across restart and replay, and blast radius.

use std::time::Duration;

use tokenledger::proto::{self as api, bulk_revoke_request::Scope};

use crate::audit::*;
use crate::audit_history::*;
use crate::harness::*;

pub async fn bulk(server: &TestServer, scope: Scope, issued_before_ms: i64) -> api::BulkRevokeResponse {
    try_bulk(server, scope, issued_before_ms, "").await.expect("bulk revoke")
}

pub async fn try_bulk(
    server: &TestServer,
    scope: Scope,
    issued_before_ms: i64,
    note: &str,
) -> Result<api::BulkRevokeResponse, tonic::Status> {
    let request = api::BulkRevokeRequest { scope: Some(scope), issued_before_ms, note: note.into() };
    server.admin_client().await.bulk_revoke(server.admin(request)).await.map(|r| r.into_inner())
}

fn alice() -> Scope {
    Scope::User(api::BulkRevokeUser { institution_id: INSTITUTION.into(), login_id: "alice".into() })
}

async fn active(server: &TestServer, f: &Fixture, token: &str) -> bool {
    server.is_active(&f.service, token).await || server.is_active(&f.app, token).await
}

#[tokio::test]
async fn a_client_revocation_is_one_event_that_ends_every_earlier_token_of_the_client() {
    let (server, f) = TestServer::seeded().await;
    let mut service_tokens = Vec::new();
    for _ in 0..5 {
        service_tokens.push(server.token(&f.service, "grant_type=client_credentials").await.access_token());
    }
    server.revoke(&f.service, &service_tokens[0]).await;
    let (app_access, _) = sign_in(&server, &f).await;
    let before = head(&server);
    let answer = try_bulk(&server, Scope::ClientId("svc".into()), 0, "INC-42 leaked secret").await.unwrap();
    assert_eq!(answer.live_tokens_ended, 4, "five tokens, one already revoked");
    assert_eq!((answer.seq, answer.event_kind.as_str()), (before + 1, "bulk_revoked"));
    assert_eq!(head(&server), before + 1, "one event, whatever the number of tokens");
    for token in &service_tokens {
        assert!(!active(&server, &f, token).await);
    }
    assert!(active(&server, &f, &app_access).await, "another client's tokens are untouched");
    let later = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    assert!(active(&server, &f, &later).await, "tokens issued after the revocation work");
    let recorded =
        events(&server, api::StreamEventsRequest { from_seq: answer.seq, limit: 1, ..Default::default() }).await;
    assert!(
        recorded[0].summary.contains("client svc") && recorded[0].summary.contains("INC-42"),
        "{}",
        recorded[0].summary
    );
    let indexed = events(
        &server,
        api::StreamEventsRequest { client_id: "svc".into(), kinds: vec!["bulk_revoked".into()], ..Default::default() },
    )
    .await;
    assert_eq!(seqs(&indexed), vec![answer.seq]);
}

#[tokio::test]
async fn user_institution_family_and_token_scopes_end_exactly_their_tokens() {
    let (server, f) = TestServer::seeded().await;
    server.user(INSTITUTION, "bob", "bobs password", "RETAIL").await;
    let (alice_access, alice_refresh) = sign_in(&server, &f).await;
    let bob_access =
        server.token(&f.app, "grant_type=password&username=bob&password=bobs+password").await.access_token();
    let answer = bulk(&server, alice(), 0).await;
    assert_eq!(answer.live_tokens_ended, 2);
    assert!(!active(&server, &f, &alice_access).await);
    assert!(active(&server, &f, &bob_access).await);
    // A cut-off refresh token is simply invalid.
    server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={alice_refresh}"))
        .await
        .assert_error(401, "CMN_90018");

    // Family: one of alice's two sign-ins.
    let (first, _) = sign_in(&server, &f).await;
    let (second, _) = sign_in(&server, &f).await;
    let family = history(&server, &first).await.token.unwrap().family_id;
    let answer = bulk(&server, Scope::FamilyId(tokenledger::domain::hex(&family)), 0).await;
    assert_eq!(answer.live_tokens_ended, 2);
    assert!(!active(&server, &f, &first).await);
    assert!(active(&server, &f, &second).await);

    // One token: an access token alone; a refresh token with its family.
    let (access, refresh_token) = sign_in(&server, &f).await;
    let answer = bulk(&server, Scope::Token(access.clone()), 0).await;
    assert_eq!((answer.live_tokens_ended, answer.event_kind.as_str()), (1, "token_revoked"));
    assert!(active(&server, &f, &refresh_token).await);
    let answer = bulk(&server, Scope::Token(token_id(&server, &refresh_token)), 0).await;
    assert_eq!((answer.live_tokens_ended, answer.event_kind.as_str()), (1, "family_revoked"));
    assert!(!active(&server, &f, &refresh_token).await);

    // Institution: everything of 01001, nothing of 02002.
    let other = server.token_at(&f.other, OTHER_INSTITUTION, "grant_type=client_credentials").await.access_token();
    let service = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let answer = bulk(&server, Scope::InstitutionId(INSTITUTION.into()), 0).await;
    assert_eq!(answer.live_tokens_ended, 5, "bob's sign-in (2), alice's second sign-in (2) and the service token");
    for token in [&bob_access, &second, &service] {
        assert!(!active(&server, &f, token).await);
    }
    assert!(server.is_active(&f.other, &other).await);
}

#[tokio::test]
async fn issued_before_ends_only_older_tokens_and_status_at_names_the_cutoff() {
    let (server, f) = TestServer::seeded().await;
    let old = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let old_seq = head(&server);
    pause().await;
    let young = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let young_at = time_of(&server, head(&server)).await;
    pause().await;
    let answer = bulk(&server, Scope::ClientId("svc".into()), young_at).await;
    assert_eq!(answer.live_tokens_ended, 1);
    assert!(!active(&server, &f, &old).await);
    assert!(active(&server, &f, &young).await);
    let cut_at = time_of(&server, answer.seq).await;
    assert_verdict(&status_at(&server, &old, cut_at - 1).await, "active", old_seq);
    let verdict = status_at(&server, &old, cut_at).await;
    assert_verdict(&verdict, "cut_off", answer.seq);
    assert!(verdict.reason.contains("bulk revocation of client svc"), "{}", verdict.reason);
    assert_eq!(status_at(&server, &young, cut_at + 1).await.state, "active");
    let story = history(&server, &old).await;
    assert_eq!(story.entries.last().unwrap().event.as_ref().unwrap().seq, answer.seq);
    assert!(story.entries.last().unwrap().affects_token);
    assert_eq!(history(&server, &young).await.entries.len(), 1, "a cutoff that spares a token is not in its story");
}

#[tokio::test]
async fn bad_bulk_requests_are_refused_without_events() {
    let (server, f) = TestServer::seeded().await;
    let (access, _) = sign_in(&server, &f).await;
    let before = head(&server);
    let cases = [
        (Some(Scope::ClientId("nope".into())), 0, "", tonic::Code::NotFound),
        (Some(Scope::InstitutionId("99999".into())), 0, "", tonic::Code::NotFound),
        (Some(Scope::FamilyId("xyz".into())), 0, "", tonic::Code::InvalidArgument),
        (Some(Scope::ClientId("svc".into())), -5, "", tonic::Code::InvalidArgument),
        (Some(Scope::ClientId("svc".into())), 0, "bad\nnote", tonic::Code::InvalidArgument),
        (Some(Scope::Token(access.clone())), 0, "a note", tonic::Code::InvalidArgument),
        (Some(Scope::Token("00".repeat(16))), 0, "", tonic::Code::NotFound),
        (None, 0, "", tonic::Code::InvalidArgument),
    ];
    for (scope, issued_before_ms, note, code) in cases {
        let request = api::BulkRevokeRequest { scope: scope.clone(), issued_before_ms, note: note.into() };
        let status = server.admin_client().await.bulk_revoke(server.admin(request)).await.unwrap_err();
        assert_eq!(status.code(), code, "{scope:?}: {}", status.message());
    }
    let unauthenticated = server
        .admin_client()
        .await
        .bulk_revoke(api::BulkRevokeRequest { scope: Some(Scope::ClientId("svc".into())), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    assert_eq!(head(&server), before);
}

#[tokio::test]
async fn a_revocation_racing_with_issuance_ends_exactly_the_tokens_issued_before_it() {
    let (server, f) = TestServer::seeded().await;
    let workers = server.spawn_issuers(&f.service, 6, 30);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let answer = bulk(&server, Scope::ClientId("svc".into()), 0).await;
    let mut issued = Vec::new();
    for worker in workers {
        issued.extend(worker.await.unwrap());
    }
    let mut ended = 0;
    for token in &issued {
        let story = history(&server, token).await;
        let seq = story.token.unwrap().issued_seq;
        let is_active = active(&server, &f, token).await;
        assert_eq!(is_active, seq > answer.seq, "token issued at seq {seq}, cutoff at {}", answer.seq);
        ended += u64::from(!is_active);
    }
    assert_eq!(ended, answer.live_tokens_ended, "the reported count is exact");
}

#[tokio::test]
async fn bulk_revocations_survive_restart_and_a_fresh_replay_equals_the_live_state() {
    let (server, f) = TestServer::seeded().await;
    let service_old = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let (alice_old, alice_refresh) = sign_in(&server, &f).await;
    pause().await;
    let boundary = wall_ms();
    pause().await;
    let service_young = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    bulk(&server, Scope::ClientId("svc".into()), boundary).await;
    bulk(&server, alice(), 0).await;
    let (alice_young, _) = sign_in(&server, &f).await;
    let (access, _) = sign_in(&server, &f).await;
    let listed = server
        .admin_client()
        .await
        .revoke_blast_radius(server.admin(api::RevokeBlastRadiusRequest {
            credential: Some(api::revoke_blast_radius_request::Credential::Token(access.clone())),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.live_tokens_ended, 1);
    let dir = server.dir.clone();
    server.assert_replay_equals_live().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    for token in [&service_old, &alice_old, &alice_refresh, &access] {
        assert!(!active(&server, &f, token).await, "revived after restart");
    }
    for token in [&service_young, &alice_young] {
        assert!(active(&server, &f, token).await, "lost after restart");
    }
}

async fn blast(
    server: &TestServer,
    credential: api::blast_radius_request::Credential,
    from_ms: i64,
    to_ms: i64,
) -> api::BlastRadiusResponse {
    let request = api::BlastRadiusRequest { credential: Some(credential), from_ms, to_ms };
    audit_client(server).await.blast_radius(server.admin(request)).await.expect("blast radius").into_inner()
}

#[tokio::test]
async fn blast_radius_of_a_client_lists_minted_tokens_and_descendants_and_revokes_exactly_the_live_ones() {
    use api::blast_radius_request::Credential;
    let (server, f) = TestServer::seeded().await;
    let (before_window, _) = sign_in(&server, &f).await;
    pause().await;
    let from = wall_ms();
    let (in_window, in_window_refresh) = sign_in(&server, &f).await;
    let also = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    pause().await;
    let to = wall_ms();
    pause().await;
    // Descendants minted after the window, by refreshing a token minted in it.
    let (child, child_refresh) = refresh(&server, &f, &in_window_refresh).await;
    let (after_window, _) = sign_in(&server, &f).await;
    let listing = blast(&server, Credential::ClientId("app".into()), from, to).await;
    assert_eq!((listing.minted, listing.descendants), (2, 2), "{listing:?}");
    let ids = |listing: &api::BlastRadiusResponse, live_only: bool| {
        let mut ids: Vec<String> = listing
            .tokens
            .iter()
            .filter(|t| t.live || !live_only)
            .map(|t| tokenledger::domain::hex(&t.token.as_ref().unwrap().token_id))
            .collect();
        ids.sort();
        ids
    };
    let mut expected_live: Vec<String> =
        [&in_window, &child, &child_refresh].iter().map(|t| token_id(&server, t)).collect();
    expected_live.sort();
    assert_eq!(ids(&listing, true), expected_live, "the rotated refresh token is listed but not live");
    assert_eq!(listing.live, 3);
    let before = head(&server);
    let revoked = server
        .admin_client()
        .await
        .revoke_blast_radius(server.admin(api::RevokeBlastRadiusRequest {
            credential: Some(api::revoke_blast_radius_request::Credential::ClientId("app".into())),
            from_ms: from,
            to_ms: to,
            note: "app secret leaked".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.live_tokens_ended, 3);
    let mut ended: Vec<String> = revoked.token_ids.iter().map(|id| tokenledger::domain::hex(id)).collect();
    ended.sort();
    assert_eq!(ended, expected_live);
    assert_eq!((revoked.first_seq, revoked.last_seq, head(&server)), (before + 1, before + 1, before + 1));
    for token in [&in_window, &child, &child_refresh] {
        assert!(!active(&server, &f, token).await);
    }
    for token in [&before_window, &after_window, &also] {
        assert!(active(&server, &f, token).await, "outside the blast radius");
    }
    let verdict = status_at(&server, &child, wall_ms()).await;
    assert_verdict(&verdict, "revoked", before + 1);
    let after = blast(&server, Credential::ClientId("app".into()), from, to).await;
    assert_eq!((after.live, after.tokens.len()), (0, listing.tokens.len()));
}

#[tokio::test]
async fn blast_radius_of_a_stolen_refresh_token_covers_it_and_its_descendants_only() {
    use api::blast_radius_request::Credential;
    let (server, f) = TestServer::seeded().await;
    let (root_access, stolen) = sign_in(&server, &f).await;
    let (child, child_refresh) = refresh(&server, &f, &stolen).await;
    let (grandchild, grandchild_refresh) = refresh(&server, &f, &child_refresh).await;
    let listing = blast(&server, Credential::Token(stolen.clone()), 0, 0).await;
    let relation = |token: &str| {
        let id = token_id(&server, token);
        listing
            .tokens
            .iter()
            .find(|t| tokenledger::domain::hex(&t.token.as_ref().unwrap().token_id) == id)
            .map(|t| (t.relation.clone(), t.live))
    };
    assert_eq!(relation(&stolen), Some(("credential".into(), false)));
    assert_eq!(relation(&child), Some(("minted".into(), true)));
    assert_eq!(relation(&child_refresh), Some(("minted".into(), false)));
    assert_eq!(relation(&grandchild), Some(("descendant".into(), true)));
    assert_eq!(relation(&grandchild_refresh), Some(("descendant".into(), true)));
    assert_eq!(relation(&root_access), None, "the ancestor's access token was not minted from it");
    let revoked = server
        .admin_client()
        .await
        .revoke_blast_radius(server.admin(api::RevokeBlastRadiusRequest {
            credential: Some(api::revoke_blast_radius_request::Credential::Token(token_id(&server, &stolen))),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.live_tokens_ended, 3);
    assert!(active(&server, &f, &root_access).await);
    for token in [&child, &grandchild, &grandchild_refresh] {
        assert!(!active(&server, &f, token).await);
    }
    let story = history(&server, &grandchild).await;
    let last = story.entries.last().unwrap();
    assert_eq!(last.event.as_ref().unwrap().kind, "blast_radius_revoked");
    assert!(last.affects_token);
}
