//! The business-user lookup of SPEC 3.5 over REST and gRPC: the documented recipe, every
//! userIdType, both paths, the ISR errors, and a user-bound token seeing only its own user.

use tokenledger::proto::institution_user_service_client::InstitutionUserServiceClient;
use tokenledger::proto::{self as api};
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::*;

const BUSINESS_TIN: &str = "123456789";

/// Institution 01001 with a business user "acme.admin" of two locations, and a lookup client.
async fn business() -> (TestServer, Fixture, ClientCreds) {
    let (server, f) = TestServer::seeded().await;
    let customers = vec![
        api::InstitutionCustomer {
            institution_customer_id: "IC-RETAIL".into(),
            member_number: "555000111".into(),
            member_name: "Ann Acme".into(),
            customer_type: "RETAIL".into(),
            primary: false,
        },
        api::InstitutionCustomer {
            institution_customer_id: "IC-ACME-HQ".into(),
            member_number: BUSINESS_TIN.into(),
            member_name: "Acme Corp".into(),
            customer_type: "BUSINESS".into(),
            primary: true,
        },
    ];
    let spec = api::UserSpec {
        institution_id: INSTITUTION.into(),
        login_id: "acme.admin".into(),
        institution_user_id: "40BC0EB5891C08D8E063C0A011ACE593".into(),
        host_user_id: "H-ACME".into(),
        user_type: "BUSINESS".into(),
        first_name: "Ann".into(),
        last_name: "Acme".into(),
        email: "ann@acme.example".into(),
        institution_customers: customers,
    };
    let request = api::CreateUserRequest { spec: Some(spec), password: "acme pass".into() };
    server.admin_client().await.create_user(server.admin(request)).await.unwrap();
    let finder = crate::signin::lookup_client(&server).await;
    (server, f, finder)
}

async fn get(server: &TestServer, path: &str, bearer: Option<&str>, headers: &[(&str, &str)]) -> Reply {
    let mut request = server.http.get(server.url(path));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Reply::from(request.send().await.unwrap()).await
}

/// Candescent's `code` and `message`, plus the RFC `error` fields of every SPEC 3 error.
#[track_caller]
fn assert_isr(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["code"], code, "{}", reply.text);
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()), "{}", reply.text);
    assert_eq!(body["error_description"], body["message"], "{}", reply.text);
    assert_eq!(body.as_object().map(|o| o.len()), Some(4), "code, message, error, error_description: {}", reply.text);
}

/// An ISR_10000 whose message names the faulty parameter.
#[track_caller]
fn assert_bad_request(reply: &Reply, message: &str) {
    assert_isr(reply, 400, "ISR_10000");
    assert_eq!(reply.json()["message"], message, "{}", reply.text);
    assert_eq!(reply.json()["error"], "invalid_request");
}

const BAD_USER_ID_TYPE: &str = "Query param userIdType is invalid";
const BAD_USER_ID: &str = "Path param institutionUserId is invalid";

#[tokio::test]
async fn the_business_recipe_login_id_then_member_number_then_customer_id() {
    let (server, _, finder) = business().await;
    let token = server.token(&finder, "grant_type=client_credentials").await.access_token();
    let txid = txid();
    let reply = get(
        &server,
        "/db-users/v1/institution-users/acme.admin?userIdType=LOGIN_ID",
        Some(&token),
        &[("transactionId", &txid)],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("transactionId"), Some(txid.as_str()));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let user = reply.json();
    let customer = user["institutionCustomers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["memberNumber"] == BUSINESS_TIN)
        .expect("the business location");
    assert_eq!(customer["institutionCustomerId"], "IC-ACME-HQ");
    assert_eq!(customer["customerType"], "BUSINESS");
    assert_eq!(customer["primary"], true);
    assert_eq!(customer["memberName"], "Acme Corp");
    assert_eq!(user["institutionUserId"], "40BC0EB5891C08D8E063C0A011ACE593");
    assert_eq!(user["institutionId"], INSTITUTION);
    assert_eq!(user["institutionUserType"], "BUSINESS");
    assert_eq!(user["userName"], "acme.admin");
    assert!(user["userId"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!((user["firstName"].as_str(), user["lastName"].as_str()), (Some("Ann"), Some("Acme")));
    assert_eq!(user["email"], "ann@acme.example");
    assert_eq!((user["failedLoginCount"].as_u64(), user["failedPasswordResetCount"].as_u64()), (Some(0), Some(0)));
    assert_eq!(user["userStatus"]["active"], true);
    assert!(user["additionalInfo"]["entry"].is_array());
}

#[tokio::test]
async fn every_user_id_type_on_both_paths() {
    let (server, _, finder) = business().await;
    let token = server.token(&finder, "grant_type=client_credentials").await.access_token();
    let iuid = "40BC0EB5891C08D8E063C0A011ACE593";
    for path in [
        format!("/db-users/v1/institution-users/{iuid}"),
        format!("/db-users/v1/institution-users/{iuid}?userIdType=INSTITUTION_USER_ID"),
        "/db-users/v1/institution-users/acme.admin?userIdType=LOGIN_ID".to_owned(),
        "/db-users/v1/institution-users/H-ACME?userIdType=HOST_USER_ID".to_owned(),
        format!("/db-users/v1/institution-users/{iuid}?userIdType=USER_ID&$expand=subUsers"),
        format!("/v1/institution-users/{iuid}"),
        "/v1/institution-users/acme.admin?userIdType=login_id".to_owned(),
    ] {
        let reply = get(&server, &path, Some(&token), &[("transactionId", &txid())]).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert_eq!(reply.json()["userName"], "acme.admin", "{path}");
    }
    let legacy = get(
        &server,
        &format!("/v1/institution-users/{iuid}?userIdType=LEGACY_USER_GUID"),
        Some(&token),
        &[("transactionId", &txid())],
    )
    .await;
    assert_isr(&legacy, 404, "ISR_10001");
}

#[tokio::test]
async fn lookup_errors_use_the_isr_codes() {
    let (server, f, finder) = business().await;
    let token = server.token(&finder, "grant_type=client_credentials").await.access_token();
    let path = "/db-users/v1/institution-users/acme.admin?userIdType=LOGIN_ID";
    let tx = txid();
    let headers = [("transactionId", tx.as_str())];
    let no_token = get(&server, path, None, &headers).await;
    assert_isr(&no_token, 401, "ISR_11001");
    assert_eq!(no_token.header("www-authenticate"), Some("Bearer realm=\"tokenledger\""), "RFC 6750 3.1");
    let garbage = get(&server, path, Some("tla_garbage"), &headers).await;
    assert_isr(&garbage, 401, "ISR_11001");
    // RFC 6750: the body's error matches the challenge's.
    assert_eq!(garbage.json()["error"], "invalid_token");
    assert!(garbage.header("www-authenticate").is_some_and(|v| v.contains("error=\"invalid_token\"")));
    // A refresh token is not a bearer token.
    let issued = server.token(&f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let refresh = issued["refresh_token"].as_str().unwrap();
    assert_isr(&get(&server, path, Some(refresh), &headers).await, 401, "ISR_11001");
    // Revoked tokens stop at once.
    let revoked = server.token(&finder, "grant_type=client_credentials").await.access_token();
    assert_eq!(server.revoke(&finder, &revoked).await.status, 204);
    assert_isr(&get(&server, path, Some(&revoked), &headers).await, 401, "ISR_11001");
    // Without the scope.
    let unscoped = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    let forbidden = get(&server, path, Some(&unscoped), &headers).await;
    assert_isr(&forbidden, 403, "ISR_11003");
    assert_eq!(forbidden.json()["error"], "insufficient_scope");
    // The token's institution scopes the lookup.
    let other = [("transactionId", tx.as_str()), ("institutionId", OTHER_INSTITUTION)];
    assert_isr(&get(&server, path, Some(&token), &other).await, 403, "ISR_11003");
    let malformed = [("transactionId", tx.as_str()), ("institutionId", "12a")];
    let reply = get(&server, path, Some(&token), &malformed).await;
    assert_bad_request(&reply, "InstitutionId is invalid or its incorrectly configured");
    let same = [("transactionId", tx.as_str()), ("institutionId", INSTITUTION)];
    assert_eq!(get(&server, path, Some(&token), &same).await.status, 200);
    let bad_type = "/db-users/v1/institution-users/acme.admin?userIdType=EMAIL";
    assert_bad_request(&get(&server, bad_type, Some(&token), &headers).await, BAD_USER_ID_TYPE);
    let missing = get(&server, "/v1/institution-users/nobody?userIdType=LOGIN_ID", Some(&token), &headers).await;
    assert_isr(&missing, 404, "ISR_10001");
    assert_eq!(missing.json()["message"], "InstitutionUser not found");
    // A user of another institution does not exist for this token.
    server.user(OTHER_INSTITUTION, "zed", "pw", "RETAIL").await;
    let elsewhere = get(&server, "/v1/institution-users/zed?userIdType=LOGIN_ID", Some(&token), &headers).await;
    assert_isr(&elsewhere, 404, "ISR_10001");
    // The common rule: transactionId is required.
    get(&server, path, Some(&token), &[]).await.assert_error(400, "CMN_90008");
}

/// Each malformed parameter is a 400 naming it, checked after the token (so an anonymous
/// caller learns nothing) and before the lookup (so it is never a 404 or 403).
#[tokio::test]
async fn malformed_lookup_parameters_are_400s_that_name_the_parameter() {
    let (server, _, finder) = business().await;
    let token = server.token(&finder, "grant_type=client_credentials").await.access_token();
    let tx = txid();
    let headers = [("transactionId", tx.as_str())];
    for base in ["/db-users/v1/institution-users/acme.admin", "/v1/institution-users/acme.admin"] {
        for query in ["?userIdType=", "?userIdType", "?userIdType=LOGIN_ID&userIdType=LOGIN_ID", "?userIdType=%20"] {
            let path = format!("{base}{query}");
            assert_bad_request(&get(&server, &path, Some(&token), &headers).await, BAD_USER_ID_TYPE);
        }
        for query in
            ["$expand=%zz", "retrieveBillPayCredentials=AAA", "retrieveBillPayCredentials=", "$expand=caf%C3%A9"]
        {
            let path = format!("{base}?userIdType=LOGIN_ID&{query}");
            assert_bad_request(&get(&server, &path, Some(&token), &headers).await, "Query is invalid");
        }
        let path = format!("{base}?userIdType=LOGIN_ID&retrieveBillPayCredentials=true&$expand=subUsers");
        assert_eq!(get(&server, &path, Some(&token), &headers).await.status, 200);
    }
    for id in ["acme%01admin", "%7F", "acme%FFadmin", "caf%C3%A9", "two%20words", &"x".repeat(300)] {
        for query in ["", "?userIdType=LOGIN_ID"] {
            let path = format!("/v1/institution-users/{id}{query}");
            assert_bad_request(&get(&server, &path, Some(&token), &headers).await, BAD_USER_ID);
        }
        // Without a valid token the token is what is wrong.
        let path = format!("/db-users/v1/institution-users/{id}?userIdType=LOGIN_ID");
        assert_isr(&get(&server, &path, None, &headers).await, 401, "ISR_11001");
    }
    // A user-bound token, which gets ISR_11003 for any other user, gets the 400 too.
    let app = server
        .client(api::ClientSpec {
            client_id: "bizapp".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["password".into()],
            scopes: vec!["institution-users:read".into()],
            ..Default::default()
        })
        .await;
    let own = server.token(&app, "grant_type=password&username=acme.admin&password=acme+pass").await.access_token();
    let reply = get(&server, "/v1/institution-users/acme%01admin?userIdType=LOGIN_ID", Some(&own), &headers).await;
    assert_bad_request(&reply, BAD_USER_ID);
}

#[tokio::test]
async fn a_user_token_may_look_up_only_its_own_user() {
    let (server, _, _) = business().await;
    let app = server
        .client(api::ClientSpec {
            client_id: "bizapp".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["password".into()],
            scopes: vec!["institution-users:read".into()],
            ..Default::default()
        })
        .await;
    let token = server.token(&app, "grant_type=password&username=acme.admin&password=acme+pass").await.access_token();
    let tx = txid();
    let path = "/v1/institution-users/acme.admin?userIdType=LOGIN_ID";
    assert_eq!(get(&server, path, Some(&token), &[("transactionId", &tx)]).await.status, 200);
    for other in ["alice", "nobody"] {
        let path = format!("/v1/institution-users/{other}?userIdType=LOGIN_ID");
        assert_isr(&get(&server, &path, Some(&token), &[("transactionId", &tx)]).await, 403, "ISR_11003");
    }
}

#[tokio::test]
async fn the_same_lookup_over_grpc() {
    let (server, _, finder) = business().await;
    let token = server.token(&finder, "grant_type=client_credentials").await.access_token();
    let mut client = InstitutionUserServiceClient::new(server.channel().await);
    let request = |id: &str, kind: &str, bearer: Option<&str>| {
        let mut request =
            tonic::Request::new(api::GetInstitutionUserRequest { id: id.into(), user_id_type: kind.into() });
        request.metadata_mut().insert("transactionid", txid().parse().unwrap());
        if let Some(bearer) = bearer {
            request.metadata_mut().insert("authorization", format!("Bearer {bearer}").parse().unwrap());
        }
        request
    };
    let user = client.get_institution_user(request("acme.admin", "LOGIN_ID", Some(&token))).await.unwrap();
    let user = user.into_inner();
    assert_eq!(user.institution_user_type, "BUSINESS");
    let hq = user.institution_customers.iter().find(|c| c.member_number == BUSINESS_TIN).unwrap();
    assert_eq!(hq.institution_customer_id, "IC-ACME-HQ");
    assert_eq!(user.user_status, Some(api::InstitutionUserStatus { active: true, locked: false }));
    for (id, bearer, code, isr) in [
        ("acme.admin", None, Code::Unauthenticated, "ISR_11001"),
        ("nobody", Some(token.as_str()), Code::NotFound, "ISR_10001"),
    ] {
        let status = client.get_institution_user(request(id, "LOGIN_ID", bearer)).await.unwrap_err();
        assert_eq!(status.code(), code);
        assert!(status.message().starts_with(isr), "{status:?}");
        assert_eq!(status.get_error_details().error_info().unwrap().reason, isr);
    }
    let status = client.get_institution_user(request("x", "NOPE", Some(&token))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client.get_institution_user(request("acme\u{1}admin", "LOGIN_ID", Some(&token))).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("institutionUserId is invalid"), "{status:?}");
}

#[tokio::test]
async fn the_lookup_service_is_in_reflection_and_health() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let server = TestServer::start().await;
    let service = "tokenledger.v1.InstitutionUserService";
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let mut stream = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected {answer:?}")
    };
    assert!(list.service.iter().any(|s| s.name == service), "{list:?}");
    let mut health = HealthClient::new(server.channel().await);
    let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
    assert_eq!(status.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}
