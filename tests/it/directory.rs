//! AdminService beyond creation: reads, client secret rotation with an overlap, disabling
//! clients and users (and what it does to their tokens), passwords, profile updates, and
//! validation that applies nothing.

use tokenledger::proto::{self as api};
use tonic::Code;

use crate::harness::*;

fn user_name(login: &str) -> api::GetUserRequest {
    api::GetUserRequest { institution_id: INSTITUTION.into(), login_id: login.into(), ..Default::default() }
}

#[tokio::test]
async fn secret_rotation_overlap_lets_both_secrets_work_until_it_ends() {
    let clock = tokenledger::clock::ManualClock::new();
    let server = TestServer::start_on_clock(clock.clone(), |_| {}).await;
    let f = server.seed().await;
    let mut admin = server.admin_client().await;
    let request = api::RotateClientSecretRequest { client_id: f.service.id.clone(), overlap_secs: 1 };
    let rotated = admin.rotate_client_secret(server.admin(request)).await.unwrap().into_inner();
    assert_eq!(rotated.client_secret.len(), 43, "256 bits, base64url");
    assert_ne!(rotated.client_secret, f.service.secret);
    let client = rotated.client.unwrap();
    assert_eq!(client.secret_kind, "generated");
    assert!(client.previous_secret_valid_until_ms > 0);
    let new = ClientCreds { id: f.service.id.clone(), secret: rotated.client_secret.clone() };
    assert_eq!(server.token(&f.service, "grant_type=client_credentials").await.status, 200, "old secret in overlap");
    assert_eq!(server.token(&new, "grant_type=client_credentials").await.status, 200, "new secret");
    clock.advance(1_100);
    server.token(&f.service, "grant_type=client_credentials").await.assert_error(401, "CMN_90004");
    assert_eq!(server.token(&new, "grant_type=client_credentials").await.status, 200);
    // Without an overlap the old secret stops at once.
    let request = api::RotateClientSecretRequest { client_id: f.service.id.clone(), overlap_secs: 0 };
    let newer = admin.rotate_client_secret(server.admin(request)).await.unwrap().into_inner();
    assert_eq!(newer.client.unwrap().previous_secret_valid_until_ms, 0);
    server.token(&new, "grant_type=client_credentials").await.assert_error(401, "CMN_90004");
    let newer = ClientCreds { id: f.service.id.clone(), secret: newer.client_secret };
    assert_eq!(server.token(&newer, "grant_type=client_credentials").await.status, 200);
}

#[tokio::test]
async fn rotating_an_imported_secret_keeps_the_legacy_one_during_the_overlap() {
    let server = TestServer::start().await;
    server.institution(INSTITUTION).await;
    let import = api::ImportRequest {
        clients: vec![api::ImportClient {
            spec: Some(api::ClientSpec {
                client_id: "legacy".into(),
                institution_ids: vec![INSTITUTION.into()],
                grant_types: vec!["client_credentials".into()],
                scopes: vec!["accounts:read".into()],
                ..Default::default()
            }),
            client_secret: "legacy-secret".into(),
        }],
        ..Default::default()
    };
    let mut admin = server.admin_client().await;
    admin.import(server.admin(import)).await.unwrap();
    let legacy = ClientCreds { id: "legacy".into(), secret: "legacy-secret".into() };
    assert_eq!(server.token(&legacy, "grant_type=client_credentials").await.status, 200);
    let request = api::RotateClientSecretRequest { client_id: "legacy".into(), overlap_secs: 600 };
    let rotated = admin.rotate_client_secret(server.admin(request)).await.unwrap().into_inner();
    assert_eq!(rotated.client.unwrap().secret_kind, "generated", "the new secret is server-generated");
    assert_eq!(server.token(&legacy, "grant_type=client_credentials").await.status, 200, "PBKDF2 secret in overlap");
    let new = ClientCreds { id: "legacy".into(), secret: rotated.client_secret };
    assert_eq!(server.token(&new, "grant_type=client_credentials").await.status, 200);
}

#[tokio::test]
async fn a_disabled_client_is_refused_everywhere_and_its_tokens_end_for_good() {
    let (server, f) = TestServer::seeded().await;
    let issued = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    assert!(server.is_active(&f.service, &access).await);
    let mut admin = server.admin_client().await;
    let disabled =
        admin.disable_client(server.admin(api::GetClientRequest { client_id: f.app.id.clone() })).await.unwrap();
    assert!(disabled.into_inner().disabled);
    server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.assert_error(401, "CMN_90004");
    server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={refresh}"))
        .await
        .assert_error(401, "CMN_90004");
    server.revoke(&f.app, &access).await.assert_error(401, "CMN_90004");
    let introspect = server
        .post_form("/oauth2/v1/introspect", Some(&f.app), &[("transactionId", &txid())], &format!("token={access}"))
        .await;
    introspect.assert_error(401, "CMN_90004");
    assert!(!server.is_active(&f.service, &access).await, "its tokens stop being active");
    assert!(!server.is_active(&f.service, &refresh).await);
    // Enabling lets it work again, but the old tokens stay ended.
    admin.enable_client(server.admin(api::GetClientRequest { client_id: f.app.id.clone() })).await.unwrap();
    let fresh = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.access_token();
    assert!(server.is_active(&f.service, &fresh).await);
    assert!(!server.is_active(&f.service, &access).await, "a disabled client's tokens never come back");
    server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={refresh}"))
        .await
        .assert_error(401, "CMN_90018");
    // ... not even after a restart.
    let server = server.restart().await;
    assert!(!server.is_active(&f.service, &access).await);
    assert!(server.is_active(&f.service, &fresh).await);
}

#[tokio::test]
async fn disabling_a_user_ends_its_tokens_and_refuses_its_sign_ins() {
    let (server, f) = TestServer::seeded().await;
    let issued = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    let service_token = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let mut admin = server.admin_client().await;
    let user = admin.disable_user(server.admin(user_name("alice"))).await.unwrap().into_inner();
    assert!(user.disabled);
    assert!(!server.is_active(&f.service, &access).await);
    assert!(server.is_active(&f.service, &service_token).await, "other tokens are untouched");
    server
        .token(&f.app, &format!("grant_type=refresh_token&refresh_token={refresh}"))
        .await
        .assert_error(401, "CMN_90018");
    server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.assert_error(400, "CMN_90016");
    admin.enable_user(server.admin(user_name("alice"))).await.unwrap();
    let fresh = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.access_token();
    assert!(server.is_active(&f.service, &fresh).await);
    assert!(!server.is_active(&f.service, &access).await);
}

#[tokio::test]
async fn set_password_replaces_the_old_one() {
    let (server, f) = TestServer::seeded().await;
    let mut admin = server.admin_client().await;
    let request = api::SetUserPasswordRequest { user: Some(user_name("alice")), password: "a new passphrase".into() };
    let user = admin.set_user_password(server.admin(request)).await.unwrap().into_inner();
    assert!(user.has_password);
    server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.assert_error(401, "CMN_90015");
    let reply = server.token(&f.app, "grant_type=password&username=alice&password=a+new+passphrase").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn reads_list_and_show_the_directory() {
    let (server, f) = TestServer::seeded().await;
    let mut admin = server.admin_client().await;
    let institutions = admin.list_institutions(server.admin(api::ListInstitutionsRequest {})).await.unwrap();
    let ids: Vec<String> = institutions.into_inner().institutions.into_iter().map(|i| i.institution_id).collect();
    assert_eq!(ids, [INSTITUTION, OTHER_INSTITUTION]);
    let one = admin
        .get_institution(server.admin(api::GetInstitutionRequest { institution_id: INSTITUTION.into() }))
        .await
        .unwrap();
    assert_eq!(one.into_inner().name, format!("Institution {INSTITUTION}"));
    let clients = admin
        .list_clients(server.admin(api::ListClientsRequest { institution_id: INSTITUTION.into() }))
        .await
        .unwrap()
        .into_inner()
        .clients;
    let ids: Vec<String> = clients.into_iter().map(|c| c.spec.unwrap().client_id).collect();
    assert_eq!(ids, ["app", "svc"]);
    let client = admin.get_client(server.admin(api::GetClientRequest { client_id: f.app.id.clone() })).await.unwrap();
    let client = client.into_inner();
    assert_eq!(client.spec.unwrap().grant_types, ["password", "refresh_token"]);
    assert!(!client.disabled);
    for login in ["carol", "bob", "dave"] {
        server.user(INSTITUTION, login, "pw", "RETAIL").await;
    }
    let page = |token: &str| api::ListUsersRequest {
        institution_id: INSTITUTION.into(),
        page_size: 2,
        page_token: token.into(),
    };
    let first = admin.list_users(server.admin(page(""))).await.unwrap().into_inner();
    let logins = |users: &[api::User]| users.iter().map(|u| u.spec.clone().unwrap().login_id).collect::<Vec<_>>();
    assert_eq!(logins(&first.users), ["alice", "bob"]);
    let second = admin.list_users(server.admin(page(&first.next_page_token))).await.unwrap().into_inner();
    assert_eq!(logins(&second.users), ["carol", "dave"]);
    assert!(second.next_page_token.is_empty());
    let alice = admin.get_user(server.admin(user_name("alice"))).await.unwrap().into_inner();
    let iuid = alice.spec.clone().unwrap().institution_user_id;
    let by_iuid =
        api::GetUserRequest { institution_id: INSTITUTION.into(), institution_user_id: iuid, ..Default::default() };
    assert_eq!(admin.get_user(server.admin(by_iuid)).await.unwrap().into_inner(), alice);
    let missing = admin.get_user(server.admin(user_name("nobody"))).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let unauthenticated = admin.list_institutions(api::ListInstitutionsRequest {}).await.unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn update_user_changes_the_profile_and_validation_errors_apply_nothing() {
    let (server, _) = TestServer::seeded().await;
    server.user(INSTITUTION, "bob", "pw", "RETAIL").await;
    let mut admin = server.admin_client().await;
    let head = server.app.state.read().head.seq;
    let refused = [
        admin
            .rotate_client_secret(
                server.admin(api::RotateClientSecretRequest { client_id: "nope".into(), overlap_secs: 0 }),
            )
            .await
            .unwrap_err(),
        admin
            .rotate_client_secret(
                server.admin(api::RotateClientSecretRequest { client_id: "svc".into(), overlap_secs: 31 * 24 * 3600 }),
            )
            .await
            .unwrap_err(),
        admin
            .set_user_password(
                server.admin(api::SetUserPasswordRequest { user: Some(user_name("alice")), password: String::new() }),
            )
            .await
            .unwrap_err(),
        admin.lock_user(server.admin(user_name("ghost"))).await.unwrap_err(),
    ];
    let codes: Vec<Code> = refused.iter().map(|s| s.code()).collect();
    assert_eq!(codes, [Code::NotFound, Code::InvalidArgument, Code::InvalidArgument, Code::NotFound]);
    let mut spec = admin.get_user(server.admin(user_name("bob"))).await.unwrap().into_inner().spec.unwrap();
    // Host user ids name one user per institution.
    spec.host_user_id = "HOST-alice".into();
    let taken = admin.update_user(server.admin(api::UpdateUserRequest { spec: Some(spec.clone()) })).await;
    assert_eq!(taken.unwrap_err().code(), Code::AlreadyExists);
    spec.user_type = "ADMIN".into();
    let bad = admin.update_user(server.admin(api::UpdateUserRequest { spec: Some(spec.clone()) })).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(server.app.state.read().head.seq, head, "refused changes record nothing");
    spec.user_type = "BUSINESS".into();
    spec.host_user_id = "HOST-B".into();
    spec.email = "bob@example.com".into();
    spec.institution_customers = vec![api::InstitutionCustomer {
        institution_customer_id: "IC-B".into(),
        member_number: "987654321".into(),
        member_name: "Bob Co".into(),
        customer_type: "BUSINESS".into(),
        primary: true,
    }];
    let updated = admin.update_user(server.admin(api::UpdateUserRequest { spec: Some(spec.clone()) })).await.unwrap();
    assert_eq!(updated.into_inner().spec.unwrap(), spec);
    assert_eq!(server.app.state.read().head.seq, head + 1);
}
