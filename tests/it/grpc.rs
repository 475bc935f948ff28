//! TokenService and AdminService over gRPC: same semantics and CMN codes as REST; health and
//! reflection.

use tokenledger::proto::{self as api};
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::harness::*;

fn with_metadata<T>(message: T, creds: Option<&ClientCreds>, institution: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("transactionid", txid().parse().unwrap());
    if let Some(creds) = creds {
        metadata.insert("authorization", tokenledger::wire::encode_basic(&creds.id, &creds.secret).parse().unwrap());
    }
    if let Some(institution) = institution {
        metadata.insert("institutionid", institution.parse().unwrap());
    }
    request
}

#[track_caller]
fn assert_cmn(status: &tonic::Status, code: Code, cmn: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().starts_with(cmn), "{status:?}");
    let info = status.get_error_details().error_info().cloned().expect("ErrorInfo detail");
    assert_eq!(info.reason, cmn);
    assert_eq!(info.domain, "tokenledger");
}

#[tokio::test]
async fn create_introspect_and_revoke_over_grpc() {
    let (server, f) = TestServer::seeded().await;
    let mut tokens = server.token_client().await;
    let request = api::CreateTokenRequest {
        grant_type: "password".into(),
        username: "alice".into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    let response =
        tokens.create_token(with_metadata(request, Some(&f.app), Some(INSTITUTION))).await.expect("create token");
    assert!(response.metadata().get("transactionid").is_some(), "the transaction id is echoed");
    let issued = response.into_inner();
    assert_eq!(issued.token_type, "Bearer");
    assert_eq!(issued.expires_in, 3600);
    assert!(issued.refresh_token.starts_with("tlr_"));
    let info = tokens
        .introspect_token(with_metadata(
            api::IntrospectTokenRequest { token: issued.access_token.clone() },
            Some(&f.service),
            None,
        ))
        .await
        .expect("introspect")
        .into_inner();
    assert!(info.active);
    assert_eq!(info.username, "alice");
    assert_eq!(info.token_type, "access_token");
    // The REST endpoint sees the same token.
    assert!(server.is_active(&f.service, &issued.access_token).await);
    tokens
        .revoke_token(with_metadata(
            api::RevokeTokenRequest { token: issued.refresh_token.clone() },
            Some(&f.app),
            None,
        ))
        .await
        .expect("revoke");
    let info = tokens
        .introspect_token(with_metadata(
            api::IntrospectTokenRequest { token: issued.access_token },
            Some(&f.service),
            None,
        ))
        .await
        .expect("introspect")
        .into_inner();
    assert!(!info.active, "revoking the refresh token ended the family");
    assert_eq!(info, api::IntrospectTokenResponse::default());
}

#[tokio::test]
async fn grpc_errors_carry_cmn_codes_with_mapped_status_codes() {
    let (server, f) = TestServer::seeded().await;
    let mut tokens = server.token_client().await;
    let cc = || api::CreateTokenRequest { grant_type: "client_credentials".into(), ..Default::default() };
    let mut no_txid = Request::new(cc());
    no_txid
        .metadata_mut()
        .insert("authorization", tokenledger::wire::encode_basic(&f.service.id, &f.service.secret).parse().unwrap());
    assert_cmn(&tokens.create_token(no_txid).await.unwrap_err(), Code::InvalidArgument, "CMN_90008");
    let wrong = ClientCreds { id: f.service.id.clone(), secret: "wrong".into() };
    assert_cmn(
        &tokens.create_token(with_metadata(cc(), Some(&wrong), Some(INSTITUTION))).await.unwrap_err(),
        Code::Unauthenticated,
        "CMN_90004",
    );
    assert_cmn(
        &tokens.create_token(with_metadata(cc(), Some(&f.service), None)).await.unwrap_err(),
        Code::InvalidArgument,
        "CMN_90005",
    );
    let bad_grant = api::CreateTokenRequest { grant_type: "implicit".into(), ..Default::default() };
    assert_cmn(
        &tokens.create_token(with_metadata(bad_grant, Some(&f.service), Some(INSTITUTION))).await.unwrap_err(),
        Code::InvalidArgument,
        "CMN_90007",
    );
    let bad_scope = api::CreateTokenRequest {
        grant_type: "client_credentials".into(),
        scopes: "root".into(),
        ..Default::default()
    };
    assert_cmn(
        &tokens.create_token(with_metadata(bad_scope, Some(&f.service), Some(INSTITUTION))).await.unwrap_err(),
        Code::InvalidArgument,
        "CMN_90012",
    );
    let control = api::CreateTokenRequest {
        grant_type: "client_credentials".into(),
        scopes: "a\u{7}".into(),
        ..Default::default()
    };
    assert_cmn(
        &tokens.create_token(with_metadata(control, Some(&f.service), Some(INSTITUTION))).await.unwrap_err(),
        Code::InvalidArgument,
        "CMN_90017",
    );
    let bad_user = api::CreateTokenRequest {
        grant_type: "password".into(),
        username: "alice".into(),
        password: "nope".into(),
        ..Default::default()
    };
    assert_cmn(
        &tokens.create_token(with_metadata(bad_user, Some(&f.app), Some(INSTITUTION))).await.unwrap_err(),
        Code::Unauthenticated,
        "CMN_90015",
    );
    let bad_refresh = api::CreateTokenRequest {
        grant_type: "refresh_token".into(),
        refresh_token: "nope".into(),
        ..Default::default()
    };
    assert_cmn(
        &tokens.create_token(with_metadata(bad_refresh, Some(&f.app), None)).await.unwrap_err(),
        Code::Unauthenticated,
        "CMN_90018",
    );
}

#[tokio::test]
async fn oversized_grpc_messages_are_refused() {
    let (server, f) = TestServer::seeded().await;
    let mut tokens = server.token_client().await;
    let huge = api::CreateTokenRequest {
        grant_type: "client_credentials".into(),
        scopes: "a".repeat(512 * 1024),
        ..Default::default()
    };
    let status = tokens.create_token(with_metadata(huge, Some(&f.service), Some(INSTITUTION))).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn admin_service_requires_the_admin_credential() {
    let server = TestServer::start().await;
    let mut admin = server.admin_client().await;
    let request = api::CreateInstitutionRequest { institution_id: "01001".into(), name: "x".into() };
    assert_eq!(admin.create_institution(request.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    let mut wrong = Request::new(request.clone());
    wrong.metadata_mut().insert("authorization", "Bearer tladm_wrong".parse().unwrap());
    assert_eq!(admin.create_institution(wrong).await.unwrap_err().code(), Code::Unauthenticated);
    admin.create_institution(server.admin(request.clone())).await.expect("with the credential");
    assert_eq!(admin.create_institution(server.admin(request)).await.unwrap_err().code(), Code::AlreadyExists);
    let bad = api::CreateInstitutionRequest { institution_id: "12a".into(), name: "x".into() };
    assert_eq!(admin.create_institution(server.admin(bad)).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn health_reports_serving_per_service() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "tokenledger.v1.TokenService", "tokenledger.v1.AdminService"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.expect("health").into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
}

/// Lists the services through reflection `$version` (v1 for current grpcurl, v1alpha for older
/// ones) and checks the ones every client needs are there.
macro_rules! list_services {
    ($server:expr, $version:ident) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let mut reflection = ServerReflectionClient::new($server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream =
            reflection.server_reflection_info(tokio_stream::iter([request])).await.expect("reflection").into_inner();
        let answer = stream.message().await.expect("stream").expect("one answer");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("unexpected {answer:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "tokenledger.v1.TokenService",
            "tokenledger.v1.AdminService",
            "tokenledger.v1.AuditService",
            "grpc.health.v1.Health",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
    }};
}

#[tokio::test]
async fn reflection_lists_the_services_for_grpcurl() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let server = TestServer::start().await;
    list_services!(server, v1);
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("tokenledger.v1.TokenService".into())),
    };
    let mut stream =
        reflection.server_reflection_info(tokio_stream::iter([request])).await.expect("reflection").into_inner();
    let answer = stream.message().await.expect("stream").expect("one answer");
    assert!(matches!(answer.message_response, Some(MessageResponse::FileDescriptorResponse(_))), "{answer:?}");
}

#[tokio::test]
async fn reflection_v1alpha_is_served_too_for_older_grpcurl() {
    let server = TestServer::start().await;
    list_services!(server, v1alpha);
}
