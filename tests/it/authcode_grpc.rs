//! The code flow over gRPC: AuthorizeClient, CreateAuthorizationCode and the
//! authorization_code grant of CreateToken, with the same CMN codes as REST.

use tokenledger::proto::{self as api};
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::authcode::*;
use crate::harness::*;

fn bearer_request<T>(message: T, bearer: Option<&str>, institution: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("transactionid", txid().parse().unwrap());
    if let Some(bearer) = bearer {
        metadata.insert("authorization", format!("Bearer {bearer}").parse().unwrap());
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
    assert_eq!(status.get_error_details().error_info().map(|i| i.reason.clone()).as_deref(), Some(cmn));
}

fn code_request() -> api::CreateAuthorizationCodeRequest {
    api::CreateAuthorizationCodeRequest {
        client_id: "partner".into(),
        scopes: "accounts:read".into(),
        username: CAROL.into(),
        institution_user_id: CAROL_ID.into(),
        requested_scopes: "openid,offline_access".into(),
        nonce: "grpc-nonce".into(),
        code_challenge: CHALLENGE.into(),
        code_challenge_method: "S256".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_whole_flow_over_grpc() {
    let flow = flow().await;
    let mut tokens = flow.server.token_client().await;
    let authorization = tokens
        .authorize_client(bearer_request(
            api::AuthorizeClientRequest { client_id: "partner".into() },
            Some(&flow.bearer),
            Some(INSTITUTION),
        ))
        .await
        .expect("authorize client");
    assert!(authorization.metadata().get("transactionid").is_some());
    let authorization = authorization.into_inner();
    assert_eq!(authorization.scopes, "accounts:read,transactions:read");
    assert_eq!(authorization.app_id, "partner");
    assert!(authorization.additional_info.unwrap().consent_enabled);

    let issued = tokens
        .create_authorization_code(bearer_request(code_request(), Some(&flow.bearer), Some(INSTITUTION)))
        .await
        .expect("create code")
        .into_inner();
    assert_eq!(issued.redirect_uri, PARTNER_REDIRECT);
    let mut redeem = Request::new(api::CreateTokenRequest {
        grant_type: "authorization_code".into(),
        code: issued.code.clone(),
        code_verifier: VERIFIER.into(),
        ..Default::default()
    });
    redeem.metadata_mut().insert("transactionid", txid().parse().unwrap());
    let basic = tokenledger::wire::encode_basic(&flow.partner.id, &flow.partner.secret);
    redeem.metadata_mut().insert("authorization", basic.parse().unwrap());
    let answer = tokens.create_token(redeem).await.expect("redeem").into_inner();
    assert!(answer.access_token.starts_with("tla_"));
    assert!(answer.refresh_token.starts_with("tlr_"));
    assert_eq!(answer.id_token.split('.').count(), 3);
    assert!(flow.server.is_active(&flow.partner, &answer.access_token).await);
    // The REST endpoint sees the same code as spent; the replay revokes the gRPC tokens.
    flow.redeem(&redeem_body(&issued.code, Some(VERIFIER))).await.assert_error(401, "CMN_90018");
    assert!(!flow.server.is_active(&flow.partner, &answer.access_token).await);
}

#[tokio::test]
async fn grpc_errors_carry_the_same_cmn_codes() {
    let flow = flow().await;
    let mut tokens = flow.server.token_client().await;
    let bearer = Some(flow.bearer.as_str());
    let create = |request, bearer, institution| bearer_request(request, bearer, institution);
    type Case<'a> = (api::CreateAuthorizationCodeRequest, Option<&'a str>, Option<&'a str>, Code, &'a str);
    let cases: Vec<Case> = vec![
        (code_request(), None, Some(INSTITUTION), Code::Unauthenticated, "CMN_90018"),
        (code_request(), Some("tla_nope"), Some(INSTITUTION), Code::Unauthenticated, "CMN_90018"),
        (code_request(), bearer, None, Code::InvalidArgument, "CMN_90005"),
        (code_request(), bearer, Some(OTHER_INSTITUTION), Code::InvalidArgument, "CMN_90005"),
        (
            api::CreateAuthorizationCodeRequest { client_id: flow.f.service.id.clone(), ..code_request() },
            bearer,
            Some(INSTITUTION),
            Code::InvalidArgument,
            "CMN_90020",
        ),
        (
            api::CreateAuthorizationCodeRequest { client_id: "nobody".into(), ..code_request() },
            bearer,
            Some(INSTITUTION),
            Code::InvalidArgument,
            "CMN_90021",
        ),
        (
            api::CreateAuthorizationCodeRequest { institution_user_id: "NOBODY".into(), ..code_request() },
            bearer,
            Some(INSTITUTION),
            Code::InvalidArgument,
            "CMN_90005",
        ),
        (
            api::CreateAuthorizationCodeRequest { scopes: "payments:write".into(), ..code_request() },
            bearer,
            Some(INSTITUTION),
            Code::InvalidArgument,
            "CMN_90012",
        ),
        (
            api::CreateAuthorizationCodeRequest { code_challenge_method: "plain".into(), ..code_request() },
            bearer,
            Some(INSTITUTION),
            Code::InvalidArgument,
            "CMN_90011",
        ),
        (
            api::CreateAuthorizationCodeRequest { nonce: "a\u{1}".into(), ..code_request() },
            bearer,
            Some(INSTITUTION),
            Code::InvalidArgument,
            "CMN_90017",
        ),
    ];
    for (request, bearer, institution, code, cmn) in cases {
        let status = tokens.create_authorization_code(create(request, bearer, institution)).await.unwrap_err();
        assert_cmn(&status, code, cmn);
    }
    let self_authorization =
        bearer_request(api::AuthorizeClientRequest { client_id: flow.f.service.id.clone() }, bearer, Some(INSTITUTION));
    assert_cmn(&tokens.authorize_client(self_authorization).await.unwrap_err(), Code::InvalidArgument, "CMN_90020");
    let missing = bearer_request(api::AuthorizeClientRequest { client_id: String::new() }, bearer, Some(INSTITUTION));
    assert_cmn(&tokens.authorize_client(missing).await.unwrap_err(), Code::InvalidArgument, "CMN_90011");
    let mut no_txid = Request::new(code_request());
    no_txid.metadata_mut().insert("authorization", format!("Bearer {}", flow.bearer).parse().unwrap());
    assert_cmn(&tokens.create_authorization_code(no_txid).await.unwrap_err(), Code::InvalidArgument, "CMN_90008");
}

/// Security review finding 1 over gRPC: AuthorizeClient and CreateAuthorizationCode refuse a
/// bearer of a client that is not a first-party app (`authorize_partners`), and a user-bound
/// bearer asking for another user, with CMN_90006.
#[tokio::test]
async fn grpc_code_rpcs_need_a_first_party_bearer_for_its_own_user() {
    let flow = flow().await;
    let mut tokens = flow.server.token_client().await;
    crate::authcode::set_authorize_partners(&flow.server, &flow.f.service.id, false).await;
    let not_first_party = Some(flow.bearer.as_str());
    let status = tokens
        .create_authorization_code(bearer_request(code_request(), not_first_party, Some(INSTITUTION)))
        .await
        .unwrap_err();
    assert_cmn(&status, Code::InvalidArgument, "CMN_90006");
    let authorize = api::AuthorizeClientRequest { client_id: flow.partner.id.clone() };
    let status = tokens
        .authorize_client(bearer_request(authorize.clone(), not_first_party, Some(INSTITUTION)))
        .await
        .unwrap_err();
    assert_cmn(&status, Code::InvalidArgument, "CMN_90006");

    crate::authcode::set_authorize_partners(&flow.server, &flow.f.app.id, true).await;
    let alice = flow.server.token(&flow.f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.access_token();
    let for_carol = bearer_request(code_request(), Some(&alice), Some(INSTITUTION));
    assert_cmn(&tokens.create_authorization_code(for_carol).await.unwrap_err(), Code::InvalidArgument, "CMN_90006");
    let own = api::CreateAuthorizationCodeRequest {
        username: "alice".into(),
        institution_user_id: crate::authcode::alice_id(&flow.server),
        ..code_request()
    };
    let issued = tokens.create_authorization_code(bearer_request(own, Some(&alice), Some(INSTITUTION))).await;
    assert!(issued.expect("a code for alice herself").into_inner().code.starts_with("tlc_"));
    assert!(tokens.authorize_client(bearer_request(authorize, Some(&alice), Some(INSTITUTION))).await.is_ok());
}
