//! SPEC 3.4 through the front door: Authorize Client and Get Authorization Code (REST and
//! their aliases), with every rule of who may ask for a code for whom. The fixture here is
//! shared by the other code-flow modules (`redeem`, `id_token`, `metadata`, `authcode_grpc`).

use tokenledger::proto::{self as api};

use crate::harness::*;

/// RFC 7636 Appendix B.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub const PARTNER_REDIRECT: &str = "https://partner.example/callback";
pub const CAROL: &str = "carol";
pub const CAROL_ID: &str = "40BC0EB5891C08D8E063C0A011ACE593";

/// A seeded server plus a partner app for the code flow, a business user carol with a known
/// institution user id, and an access token of the service app, marked as a first-party app
/// (`authorize_partners`), as the bearer.
pub struct Flow {
    pub server: TestServer,
    pub f: Fixture,
    pub partner: ClientCreds,
    pub bearer: String,
}

pub async fn flow() -> Flow {
    flow_on(TestServer::start().await).await
}

pub async fn flow_on(server: TestServer) -> Flow {
    let f = server.seed().await;
    let partner = server
        .client(api::ClientSpec {
            client_id: "partner".into(),
            name: "Partner app".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["authorization_code".into()],
            scopes: vec!["accounts:read".into(), "transactions:read".into()],
            redirect_uri: PARTNER_REDIRECT.into(),
            consent_enabled: true,
            device_registration_enabled: true,
            introspect: true,
            ..Default::default()
        })
        .await;
    let spec = api::UserSpec {
        institution_id: INSTITUTION.into(),
        login_id: CAROL.into(),
        institution_user_id: CAROL_ID.into(),
        user_type: "BUSINESS".into(),
        first_name: "Carol".into(),
        ..Default::default()
    };
    let request = api::CreateUserRequest { spec: Some(spec), password: "carol's password".into() };
    server.admin_client().await.create_user(server.admin(request)).await.expect("create carol");
    set_authorize_partners(&server, &f.service.id, true).await;
    let bearer = server.token(&f.service, "grant_type=client_credentials").await.access_token();
    Flow { server, f, partner, bearer }
}

/// Marks `client_id` as a first-party app (or takes that away) through AdminService.
pub async fn set_authorize_partners(server: &TestServer, client_id: &str, on: bool) -> api::Client {
    let request = api::SetClientAuthorizePartnersRequest { client_id: client_id.into(), authorize_partners: on };
    let client = server.admin_client().await.set_client_authorize_partners(server.admin(request)).await;
    let client = client.expect("set authorize_partners").into_inner();
    assert_eq!(client.spec.as_ref().map(|s| s.authorize_partners), Some(on));
    client
}

/// A form as ordered pairs, so tests can change or drop one field of the standard request.
#[derive(Clone)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Everything SPEC 3.4 allows, with PKCE (the RFC 7636 Appendix B challenge).
    pub fn code() -> Self {
        Self(
            [
                ("client_id", "partner"),
                ("scopes", "accounts:read"),
                ("username", CAROL),
                ("institution_user_id", CAROL_ID),
                ("requested_scopes", "openid,profile,offline_access"),
                ("nonce", "n-0S6_WzA2Mj"),
                ("auth_time", "1700000000"),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        )
    }

    pub fn set(mut self, name: &str, value: &str) -> Self {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(pair) => pair.1 = value.to_owned(),
            None => self.0.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.0.retain(|(n, _)| n != name);
        self
    }

    pub fn encode(&self) -> String {
        let encode = tokenledger::wire::percent_encode;
        self.0.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
    }
}

impl Flow {
    /// POST `path` with the bearer token, a fresh transactionId and institution 01001.
    pub async fn post(&self, path: &str, form: &str) -> Reply {
        self.post_as(path, &self.bearer, INSTITUTION, form).await
    }

    pub async fn post_as(&self, path: &str, bearer: &str, institution: &str, form: &str) -> Reply {
        let authorization = format!("Bearer {bearer}");
        let headers =
            [("authorization", authorization.as_str()), ("transactionId", &txid()), ("institutionId", institution)];
        self.server.post_form(path, None, &headers, form).await
    }

    /// A code for `form`; panics unless it is issued.
    pub async fn code(&self, form: &Form) -> String {
        let reply = self.post("/v1/auth-code", &form.encode()).await;
        assert_eq!(reply.status, 200, "auth-code failed: {}", reply.text);
        reply.json()["code"].as_str().expect("code").to_owned()
    }

    /// The token endpoint with the partner's credentials and no institutionId header.
    pub async fn redeem(&self, body: &str) -> Reply {
        self.redeem_as(&self.partner, body).await
    }

    pub async fn redeem_as(&self, creds: &ClientCreds, body: &str) -> Reply {
        self.server.post_form("/oauth2/v1/token", Some(creds), &[("transactionId", &txid())], body).await
    }
}

pub fn redeem_body(code: &str, verifier: Option<&str>) -> String {
    match verifier {
        Some(v) => format!("grant_type=authorization_code&code={code}&code_verifier={v}"),
        None => format!("grant_type=authorization_code&code={code}"),
    }
}

#[tokio::test]
async fn authorize_client_returns_the_partners_scopes_and_policy_on_both_paths() {
    let flow = flow().await;
    for path in ["/v1/client-authorization", "/auth-code/v1/client-authorization"] {
        let reply = flow.post(path, "client_id=partner").await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert!(reply.header("transactionid").is_some());
        assert_eq!(
            reply.json(),
            serde_json::json!({
                "scopes": "accounts:read,transactions:read",
                "appId": "partner",
                "additional_info": {
                    "secondary_authentication_enabled": false,
                    "consent_enabled": true,
                    "device_registration_enabled": true,
                },
            })
        );
    }
}

#[tokio::test]
async fn auth_code_returns_a_code_and_the_registered_redirect_uri_on_both_paths() {
    let flow = flow().await;
    for path in ["/v1/auth-code", "/auth-code/v1/auth-code"] {
        let reply = flow.post(path, &Form::code().encode()).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        let body = reply.json();
        assert!(body["code"].as_str().unwrap().starts_with("tlc_"), "{body}");
        assert_eq!(body["redirect_uri"], PARTNER_REDIRECT);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    // Without PKCE or OIDC fields too: they are optional.
    let minimal = Form::code()
        .without("requested_scopes")
        .without("nonce")
        .without("auth_time")
        .without("code_challenge")
        .without("code_challenge_method");
    flow.code(&minimal).await;
}

#[tokio::test]
async fn an_app_cannot_authorize_itself() {
    let flow = flow().await;
    let own = flow.f.service.id.clone();
    flow.post("/v1/client-authorization", &format!("client_id={own}")).await.assert_error(400, "CMN_90020");
    flow.post("/v1/auth-code", &Form::code().set("client_id", &own).encode()).await.assert_error(400, "CMN_90020");
}

#[tokio::test]
async fn partners_must_be_configured_for_the_flow() {
    let flow = flow().await;
    let server = &flow.server;
    let spec = |id: &str, grants: &[&str], scopes: &[&str], redirect: &str| api::ClientSpec {
        client_id: id.into(),
        institution_ids: vec![INSTITUTION.into()],
        grant_types: grants.iter().map(|g| g.to_string()).collect(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        redirect_uri: redirect.into(),
        ..Default::default()
    };
    server.client(spec("no-grant", &["client_credentials"], &["accounts:read"], PARTNER_REDIRECT)).await;
    server.client(spec("no-scopes", &["authorization_code"], &[], PARTNER_REDIRECT)).await;
    server.client(spec("no-redirect", &["authorization_code"], &["accounts:read"], "")).await;
    server
        .client(api::ClientSpec {
            institution_ids: vec![OTHER_INSTITUTION.into()],
            ..spec("elsewhere", &["authorization_code"], &["accounts:read"], PARTNER_REDIRECT)
        })
        .await;
    for partner in ["no-grant", "no-scopes", "elsewhere", "unknown-client"] {
        let body = format!("client_id={partner}");
        flow.post("/v1/client-authorization", &body).await.assert_error(400, "CMN_90021");
        flow.post("/v1/auth-code", &Form::code().set("client_id", partner).encode())
            .await
            .assert_error(400, "CMN_90021");
    }
    // A redirect URI is what the code is delivered to, so only the code needs one.
    assert_eq!(flow.post("/v1/client-authorization", "client_id=no-redirect").await.status, 200);
    flow.post("/v1/auth-code", &Form::code().set("client_id", "no-redirect").encode())
        .await
        .assert_error(400, "CMN_90021");
}

#[tokio::test]
async fn the_user_must_exist_in_the_institution_and_match_the_username() {
    let flow = flow().await;
    let unknown = Form::code().set("institution_user_id", "NO-SUCH-USER");
    flow.post("/v1/auth-code", &unknown.encode()).await.assert_error(400, "CMN_90005");
    flow.post("/v1/auth-code", &Form::code().without("institution_user_id").encode())
        .await
        .assert_error(400, "CMN_90005");
    // A user of another institution is unknown here.
    flow.server.user(OTHER_INSTITUTION, "dave", "dave's password", "RETAIL").await;
    let dave_id =
        flow.server.app.state.read().user(OTHER_INSTITUTION, "dave").unwrap().identity.institution_user_id.to_string();
    let elsewhere = Form::code().set("username", "dave").set("institution_user_id", &dave_id);
    flow.post("/v1/auth-code", &elsewhere.encode()).await.assert_error(400, "CMN_90005");
    flow.post("/v1/auth-code", &Form::code().set("username", "alice").encode()).await.assert_error(400, "CMN_90013");
    flow.post("/v1/auth-code", &Form::code().without("username").encode()).await.assert_error(400, "CMN_90013");
}

#[tokio::test]
async fn users_who_may_not_sign_in_get_no_code_and_cannot_redeem_one() {
    let flow = flow().await;
    let carol = || {
        flow.server.admin(api::GetUserRequest {
            institution_id: INSTITUTION.into(),
            login_id: CAROL.into(),
            ..Default::default()
        })
    };
    let mut admin = flow.server.admin_client().await;
    // A code issued before the user was disabled cannot be redeemed after.
    let early = flow.code(&Form::code()).await;
    admin.disable_user(carol()).await.expect("disable");
    flow.post("/v1/auth-code", &Form::code().encode()).await.assert_error(400, "CMN_90016");
    flow.redeem(&redeem_body(&early, Some(VERIFIER))).await.assert_error(401, "CMN_90018");
    admin.enable_user(carol()).await.expect("enable");
    admin.lock_user(carol()).await.expect("lock");
    flow.post("/v1/auth-code", &Form::code().encode()).await.assert_error(400, "CMN_90009");
    admin.unlock_user(carol()).await.expect("unlock");
    let code = flow.code(&Form::code()).await;
    assert_eq!(flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.status, 200);
}

#[tokio::test]
async fn scopes_are_required_and_must_be_a_subset_of_the_partners() {
    let flow = flow().await;
    let code = |scopes: &str| Form::code().set("scopes", scopes).encode();
    flow.post("/v1/auth-code", &code("accounts:read,payments:write")).await.assert_error(400, "CMN_90012");
    flow.post("/v1/auth-code", &code("profile")).await.assert_error(400, "CMN_90012");
    flow.post("/v1/auth-code", &code("a\"b")).await.assert_error(400, "CMN_90012");
    flow.post("/v1/auth-code", &Form::code().without("scopes").encode()).await.assert_error(400, "CMN_90011");
    let both = Form::code().set("scope", "accounts:read");
    flow.post("/v1/auth-code", &both.encode()).await.assert_error(400, "CMN_90011");
    // requested_scopes are OIDC scopes: recorded, not checked against the partner's scopes.
    flow.code(&Form::code().set("scopes", "accounts:read, transactions:read").set("requested_scopes", "openid email"))
        .await;
    // The RFC 6749 name is accepted on its own.
    flow.code(&Form::code().without("scopes").set("scope", "accounts:read")).await;
}

#[tokio::test]
async fn pkce_parameters_must_be_s256_with_a_well_formed_challenge() {
    let flow = flow().await;
    let refused = [
        Form::code().set("code_challenge_method", "plain"),
        Form::code().set("code_challenge_method", "s256"),
        Form::code().without("code_challenge_method"),
        Form::code().without("code_challenge"),
        Form::code().set("code_challenge", &CHALLENGE[..42]),
        Form::code().set("code_challenge", &format!("{CHALLENGE}A")),
        Form::code().set("code_challenge", &CHALLENGE.replace('-', "+")),
        Form::code().set("auth_time", "yesterday"),
        Form::code().set("auth_time", "99999999999"),
        Form::code().set("nonce", &"n".repeat(513)),
    ];
    for form in refused {
        flow.post("/v1/auth-code", &form.encode()).await.assert_error(400, "CMN_90011");
    }
}

#[tokio::test]
async fn the_bearer_must_be_an_active_first_party_access_token_of_the_institution() {
    let flow = flow().await;
    let form = Form::code().encode();
    let missing = flow
        .server
        .post_form("/v1/auth-code", None, &[("transactionId", &txid()), ("institutionId", INSTITUTION)], &form)
        .await;
    missing.assert_error(401, "CMN_90018");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer realm=\"tokenledger\""));
    let garbage = flow.post_as("/v1/auth-code", "tla_garbage", INSTITUTION, &form).await;
    garbage.assert_error(401, "CMN_90018");
    assert_eq!(garbage.header("www-authenticate"), Some("Bearer realm=\"tokenledger\", error=\"invalid_token\""));
    // A refresh token is not an access token.
    let signed_in = flow.server.token(&flow.f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let refresh = signed_in["refresh_token"].as_str().unwrap();
    flow.post_as("/v1/auth-code", refresh, INSTITUTION, &form).await.assert_error(401, "CMN_90018");
    // A user's access token of a first-party app works too, for its own user (see
    // `only_first_party_apps_mint_codes_and_a_users_token_only_for_its_user` for the rest).
    set_authorize_partners(&flow.server, &flow.f.app.id, true).await;
    let user_token = signed_in["access_token"].as_str().unwrap();
    let alice_id =
        flow.server.app.state.read().user(INSTITUTION, "alice").unwrap().identity.institution_user_id.to_string();
    let own = Form::code().set("username", "alice").set("institution_user_id", &alice_id).encode();
    assert_eq!(flow.post_as("/v1/auth-code", user_token, INSTITUTION, &own).await.status, 200);
    // A revoked token no longer authorizes.
    let revoked = flow.server.token(&flow.f.service, "grant_type=client_credentials").await.access_token();
    flow.server.revoke(&flow.f.service, &revoked).await;
    flow.post_as("/v1/auth-code", &revoked, INSTITUTION, &form).await.assert_error(401, "CMN_90018");
    flow.post_as("/v1/client-authorization", &revoked, INSTITUTION, "client_id=partner")
        .await
        .assert_error(401, "CMN_90018");
    // The header must name the token's institution.
    flow.post_as("/v1/auth-code", &flow.bearer, OTHER_INSTITUTION, &form).await.assert_error(400, "CMN_90005");
    let headers = [("authorization", format!("Bearer {}", flow.bearer)), ("transactionId", txid())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    flow.server.post_form("/v1/auth-code", None, &headers, &form).await.assert_error(400, "CMN_90005");
}

#[tokio::test]
async fn a_partners_own_tokens_cannot_authorize_other_partners() {
    let flow = flow().await;
    let code = flow.code(&Form::code()).await;
    let partner_token = flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.access_token();
    flow.server
        .client(api::ClientSpec {
            client_id: "second-partner".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["authorization_code".into()],
            scopes: vec!["accounts:read".into()],
            redirect_uri: PARTNER_REDIRECT.into(),
            ..Default::default()
        })
        .await;
    let form = Form::code().set("client_id", "second-partner").encode();
    flow.post_as("/v1/auth-code", &partner_token, INSTITUTION, &form).await.assert_error(400, "CMN_90006");
}

#[tokio::test]
async fn common_request_rules_apply() {
    let flow = flow().await;
    let form = Form::code().encode();
    let authorization = format!("Bearer {}", flow.bearer);
    let no_txid = [("authorization", authorization.as_str()), ("institutionId", INSTITUTION)];
    flow.server.post_form("/v1/auth-code", None, &no_txid, &form).await.assert_error(400, "CMN_90008");
    let duplicate = format!("{form}&client_id=partner");
    flow.post("/v1/auth-code", &duplicate).await.assert_error(400, "CMN_90011");
    flow.post("/v1/auth-code", &format!("{form}&x=%01")).await.assert_error(400, "CMN_90017");
    flow.post("/v1/client-authorization", "").await.assert_error(400, "CMN_90011");
    let json = flow
        .server
        .http
        .post(flow.server.url("/v1/auth-code"))
        .header("authorization", authorization.as_str())
        .header("transactionId", txid())
        .header("institutionId", INSTITUTION)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    Reply::from(json).await.assert_error(400, "CMN_90010");
    let get = flow.server.http.get(flow.server.url("/v1/auth-code")).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
}

/// The institution user id the directory gave alice.
pub fn alice_id(server: &TestServer) -> String {
    server.app.state.read().user(INSTITUTION, "alice").unwrap().identity.institution_user_id.to_string()
}

/// Security review finding 1: any client's access token could mint codes (and so partner
/// tokens and ID tokens) for any user of the institution. Now only a client marked
/// `authorize_partners` may call either code endpoint, a user-bound bearer only for its own
/// user, and the code event records who vouched for the sign-in.
#[tokio::test]
async fn only_first_party_apps_mint_codes_and_a_users_token_only_for_its_user() {
    let flow = flow().await;
    let server = &flow.server;
    // A client_credentials client without the capability (the review's `low-priv`).
    let low = server
        .client(api::ClientSpec {
            client_id: "low-priv".into(),
            institution_ids: vec![INSTITUTION.into()],
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["x:none".into()],
            ..Default::default()
        })
        .await;
    let low_token = server.token(&low, "grant_type=client_credentials").await.access_token();
    let form = Form::code().encode();
    flow.post_as("/v1/auth-code", &low_token, INSTITUTION, &form).await.assert_error(400, "CMN_90006");
    flow.post_as("/v1/client-authorization", &low_token, INSTITUTION, "client_id=partner")
        .await
        .assert_error(400, "CMN_90006");
    // A password-grant token of an app without the capability.
    let signed_in = server.token(&flow.f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
    let alice_token = signed_in["access_token"].as_str().unwrap().to_owned();
    let alice_id = alice_id(server);
    let own = Form::code().set("username", "alice").set("institution_user_id", &alice_id);
    flow.post_as("/v1/auth-code", &alice_token, INSTITUTION, &own.encode()).await.assert_error(400, "CMN_90006");
    flow.post_as("/v1/client-authorization", &alice_token, INSTITUTION, "client_id=partner")
        .await
        .assert_error(400, "CMN_90006");

    // With the capability, alice's token mints codes for alice only.
    set_authorize_partners(server, &flow.f.app.id, true).await;
    assert_eq!(
        flow.post_as("/v1/client-authorization", &alice_token, INSTITUTION, "client_id=partner").await.status,
        200
    );
    let other_user = [
        Form::code(),                                                                     // carol
        Form::code().set("username", "alice"),                                            // alice's name, carol's id
        Form::code().set("institution_user_id", &alice_id),                               // carol's name, alice's id
        Form::code().set("username", "alice").set("institution_user_id", "NO-SUCH-USER"), // no 90005 oracle
    ];
    for form in other_user {
        flow.post_as("/v1/auth-code", &alice_token, INSTITUTION, &form.encode()).await.assert_error(400, "CMN_90006");
    }
    let reply = flow.post_as("/v1/auth-code", &alice_token, INSTITUTION, &own.encode()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let own_code = reply.json()["code"].as_str().unwrap().to_owned();
    let partner_tokens = flow.redeem(&redeem_body(&own_code, Some(VERIFIER))).await.json();
    let seen = server.introspect(&flow.partner, partner_tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(seen["username"], "alice");
    // An institution-level bearer of a first-party app may name any user of its institution.
    flow.code(&Form::code()).await;

    // The code events name the authorizing client and, for a user's bearer, the user.
    let issued = crate::audit::events(
        server,
        api::StreamEventsRequest { kinds: vec!["authorization_code_issued".into()], ..Default::default() },
    )
    .await;
    let by = |login: &str| {
        issued
            .iter()
            .filter_map(|e| match e.event.as_ref().and_then(|e| e.kind.as_ref()) {
                Some(tokenledger::proto::ledger::event::Kind::AuthorizationCodeIssued(c)) if c.login_id == login => {
                    Some((c.authorized_by_client_id.clone(), c.authorized_by_login_id.clone(), e.summary.clone()))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let alice_codes = by("alice");
    assert_eq!(alice_codes.len(), 1, "{alice_codes:?}");
    assert_eq!((alice_codes[0].0.as_str(), alice_codes[0].1.as_str()), ("app", "alice"));
    assert!(alice_codes[0].2.contains("authorized by client app with the token of user alice"), "{alice_codes:?}");
    let carol_codes = by(CAROL);
    assert!(carol_codes.iter().all(|(client, user, _)| client == "svc" && user.is_empty()), "{carol_codes:?}");
    assert!(carol_codes.iter().any(|(_, _, s)| s.contains("with an institution-level token")), "{carol_codes:?}");

    // Taking the capability away stops the same bearer at once.
    set_authorize_partners(server, &flow.f.service.id, false).await;
    flow.post("/v1/auth-code", &Form::code().encode()).await.assert_error(400, "CMN_90006");
    flow.post("/v1/client-authorization", "client_id=partner").await.assert_error(400, "CMN_90006");
    flow.server.assert_replay_equals_live().await;
}

/// The setup file of docs/authorization-code.md's walk-through, as printed there.
fn walk_through_setup() -> tokenledger::cli::ImportFile {
    let doc = include_str!("../../docs/authorization-code.md");
    let start = doc.find("cat > tl-demo-setup.json <<'EOF'\n").expect("the setup file in the doc");
    let json = &doc[start..].split_once('\n').unwrap().1;
    let json = &json[..json.find("\nEOF").expect("end of the setup file")];
    serde_json::from_str(json).expect("the doc's setup file parses")
}

/// The walk-through of docs/authorization-code.md works as written: its import marks the
/// first-party app (`authorize_partners`), whose client_credentials token then authorizes the
/// partner and gets a code that the partner redeems.
#[tokio::test]
async fn the_documented_walk_through_imports_a_first_party_app_that_can_mint_codes() {
    let server = TestServer::start().await;
    let request = walk_through_setup().into_request();
    let mut admin = server.admin_client().await;
    admin.import(server.admin(request.clone())).await.expect("import the doc's setup");
    // Importing it again changes nothing; the same client without the flag is a conflict.
    let again = admin.import(server.admin(request.clone())).await.expect("re-import").into_inner();
    assert_eq!(again.unchanged, 4);
    let mut flipped = request;
    flipped.clients[0].spec.as_mut().unwrap().authorize_partners = false;
    let refused = admin.import(server.admin(flipped)).await.unwrap_err();
    assert!(refused.message().contains("client online-banking: exists with different settings"), "{refused:?}");
    let first_party = ClientCreds { id: "online-banking".into(), secret: "first-party-secret-change-me".into() };
    let partner = ClientCreds { id: "budget-app".into(), secret: "partner-secret-change-me".into() };
    let bearer = server.token(&first_party, "grant_type=client_credentials").await.access_token();
    let authorization = format!("Bearer {bearer}");
    let post = async |path: &str, form: &str| {
        let headers =
            [("authorization", authorization.as_str()), ("transactionId", &txid()), ("institutionId", INSTITUTION)];
        server.post_form(path, None, &headers, form).await
    };
    let authorized = post("/v1/client-authorization", "client_id=budget-app").await;
    assert_eq!(authorized.status, 200, "{}", authorized.text);
    assert_eq!(authorized.json()["scopes"], "accounts:read,transactions:read");
    let form = Form::code()
        .set("client_id", "budget-app")
        .set("username", "dana")
        .set("institution_user_id", CAROL_ID)
        .set("requested_scopes", "openid,offline_access");
    let code = post("/v1/auth-code", &form.encode()).await;
    assert_eq!(code.status, 200, "{}", code.text);
    let body = redeem_body(code.json()["code"].as_str().unwrap(), Some(VERIFIER));
    let tokens =
        server.post_form("/oauth2/v1/token", Some(&partner), &[("transactionId", &txid())], &body).await.json();
    assert!(tokens["id_token"].is_string() && tokens["refresh_token"].is_string(), "{tokens}");
}
