//! RFC 8414 metadata: advertised equals enforced. Every advertised grant, authentication
//! method and PKCE method works against the live server; everything else is refused.

use crate::authcode::*;
use crate::harness::*;

async fn metadata(server: &TestServer) -> serde_json::Value {
    document(server, "/.well-known/oauth-authorization-server").await
}

async fn document(server: &TestServer, path: &str) -> serde_json::Value {
    let response = server.http.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    response.json().await.unwrap()
}

/// The path of an advertised endpoint URL, to call it on the test server's real address.
fn path_of(issuer: &str, url: &serde_json::Value) -> String {
    let url = url.as_str().expect("a URL");
    url.strip_prefix(issuer).unwrap_or_else(|| panic!("{url} is not under the issuer {issuer}")).to_owned()
}

fn no_empty_arrays(value: &serde_json::Value) {
    if let Some(object) = value.as_object() {
        for (name, member) in object {
            assert!(!member.as_array().is_some_and(|a| a.is_empty()), "{name} is an empty array");
            assert!(!member.is_null(), "{name} is null");
        }
    }
}

#[tokio::test]
async fn metadata_names_the_issuer_and_our_endpoints() {
    let flow = flow().await;
    let meta = metadata(&flow.server).await;
    no_empty_arrays(&meta);
    let issuer = flow.server.app.config.issuer.clone();
    assert_eq!(meta["issuer"], issuer.as_str());
    for (field, path) in [
        ("token_endpoint", "/oauth2/v1/token"),
        ("revocation_endpoint", "/oauth2/v1/revoke"),
        ("introspection_endpoint", "/oauth2/v1/introspect"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ] {
        assert_eq!(path_of(&issuer, &meta[field]), path, "{field}");
    }
    // Codes are not handed out by a browser-facing authorization endpoint.
    assert!(meta.get("authorization_endpoint").is_none());
    assert_eq!(meta["response_types_supported"], serde_json::json!(["code"]));
    // The issuer is the `iss` of introspection and of ID tokens.
    let token = flow.server.token(&flow.f.service, "grant_type=client_credentials").await.access_token();
    assert_eq!(flow.server.introspect(&flow.f.service, &token).await["iss"], issuer.as_str());
    // The JWKS serves keys of the advertised algorithm.
    let jwks_path = path_of(&issuer, &meta["jwks_uri"]);
    let jwks: serde_json::Value =
        flow.server.http.get(flow.server.url(&jwks_path)).send().await.unwrap().json().await.unwrap();
    let algorithms = meta["id_token_signing_alg_values_supported"].as_array().unwrap();
    for key in jwks["keys"].as_array().unwrap() {
        assert!(algorithms.contains(&key["alg"]), "{key}");
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none(), "no private part is published");
    }
}

#[tokio::test]
async fn every_advertised_grant_works_and_no_other_does() {
    let flow = flow().await;
    let meta = metadata(&flow.server).await;
    let grants: Vec<&str> =
        meta["grant_types_supported"].as_array().unwrap().iter().map(|g| g.as_str().unwrap()).collect();
    assert_eq!(grants, ["client_credentials", "password", "refresh_token", "authorization_code"]);
    let server = &flow.server;
    for grant in grants {
        let reply = match grant {
            "client_credentials" => server.token(&flow.f.service, "grant_type=client_credentials").await,
            "password" => server.token(&flow.f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await,
            "refresh_token" => {
                let signed_in = server.token(&flow.f.app, &format!("grant_type=password&{ALICE_LOGIN}")).await.json();
                let refresh = signed_in["refresh_token"].as_str().unwrap();
                server.token(&flow.f.app, &format!("grant_type=refresh_token&refresh_token={refresh}")).await
            }
            "authorization_code" => {
                let code = flow.code(&Form::code()).await;
                flow.redeem(&redeem_body(&code, Some(VERIFIER))).await
            }
            other => panic!("advertised but untested: {other}"),
        };
        assert_eq!(reply.status, 200, "{grant}: {}", reply.text);
    }
    for unadvertised in [
        "implicit",
        "urn:ietf:params:oauth:grant-type:device_code",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    ] {
        let body = format!("grant_type={}", tokenledger::wire::percent_encode(unadvertised));
        server.token(&flow.f.service, &body).await.assert_error(400, "CMN_90007");
    }
}

#[tokio::test]
async fn only_client_secret_basic_authenticates_clients() {
    let flow = flow().await;
    let meta = metadata(&flow.server).await;
    for field in [
        "token_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
    ] {
        assert_eq!(meta[field], serde_json::json!(["client_secret_basic"]), "{field}");
    }
    let server = &flow.server;
    assert_eq!(server.token(&flow.f.service, "grant_type=client_credentials").await.status, 200);
    // client_secret_post: the credentials in the body instead of the Authorization header.
    let post = format!("grant_type=client_credentials&client_id=svc&client_secret={}", flow.f.service.secret);
    let headers = [("transactionId", txid()), ("institutionId", INSTITUTION.to_owned())];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = server.post_form("/oauth2/v1/token", None, &headers, &post).await;
    assert_ne!(reply.status, 200, "client_secret_post must not work: {}", reply.text);
    // No authentication at all (a public client, "none").
    let reply =
        server.post_form("/oauth2/v1/token", None, &headers, "grant_type=client_credentials&client_id=svc").await;
    reply.assert_error(401, "CMN_90004");
}

#[tokio::test]
async fn only_the_s256_code_challenge_method_is_accepted() {
    let flow = flow().await;
    let meta = metadata(&flow.server).await;
    assert_eq!(meta["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    let code = flow.code(&Form::code().set("code_challenge_method", "S256")).await;
    assert_eq!(flow.redeem(&redeem_body(&code, Some(VERIFIER))).await.status, 200);
    let plain = Form::code().set("code_challenge", VERIFIER).set("code_challenge_method", "plain");
    flow.post("/v1/auth-code", &plain.encode()).await.assert_error(400, "CMN_90011");
}

#[tokio::test]
async fn a_configured_issuer_is_used_byte_for_byte() {
    let server = TestServer::start_with(|s| s.issuer = Some("https://auth.bank.example".into())).await;
    let meta = metadata(&server).await;
    assert_eq!(meta["issuer"], "https://auth.bank.example");
    assert_eq!(meta["token_endpoint"], "https://auth.bank.example/oauth2/v1/token");
    assert_eq!(meta["jwks_uri"], "https://auth.bank.example/.well-known/jwks.json");
}

/// OIDC discovery (openid-client's default) finds the same document, with every member OIDC
/// Discovery 1.0 section 3 requires of a provider issuing ID tokens, except the browser-facing
/// `authorization_endpoint` that tokenledger does not have (advertised equals enforced).
#[tokio::test]
async fn openid_configuration_is_the_same_metadata() {
    let server = TestServer::start_with(|s| s.issuer = Some("https://auth.bank.example".into())).await;
    let oidc = document(&server, "/.well-known/openid-configuration").await;
    assert_eq!(oidc, metadata(&server).await);
    assert_eq!(oidc["issuer"], "https://auth.bank.example");
    for member in
        ["jwks_uri", "response_types_supported", "subject_types_supported", "id_token_signing_alg_values_supported"]
    {
        assert!(oidc.get(member).is_some_and(|v| !v.is_null()), "{member} missing: {oidc}");
    }
    assert_eq!(oidc["subject_types_supported"], serde_json::json!(["public"]));
    assert!(oidc.get("authorization_endpoint").is_none());
}

/// Discovery, `/openapi.json` and the grant table (`domain::grant`) list the same grant types in
/// the same order, so a grant added to the table is advertised and documented, and nothing else.
#[tokio::test]
async fn discovery_openapi_and_the_grant_table_agree() {
    let server = TestServer::start().await;
    let table: Vec<&str> = tokenledger::domain::GrantKind::ALL.iter().map(|g| g.name()).collect();
    let meta = metadata(&server).await;
    let advertised: Vec<&str> =
        meta["grant_types_supported"].as_array().unwrap().iter().map(|g| g.as_str().unwrap()).collect();
    assert_eq!(advertised, table, "discovery");
    let openapi = document(&server, "/openapi.json").await;
    let request = &openapi["components"]["schemas"]["TokenRequest"];
    let mapping = request["discriminator"]["mapping"].as_object().unwrap();
    let mut documented: Vec<&str> = mapping.keys().map(String::as_str).collect();
    let mut sorted_table = table.clone();
    documented.sort_unstable();
    sorted_table.sort_unstable();
    assert_eq!(documented, sorted_table, "openapi discriminator");
    // Each alternative of the oneOf is the schema the mapping names, in the table's order, and
    // that schema accepts exactly its grant_type.
    let alternatives: Vec<&str> =
        request["oneOf"].as_array().unwrap().iter().map(|a| a["$ref"].as_str().unwrap()).collect();
    let expected: Vec<&str> = table.iter().map(|name| mapping[*name].as_str().unwrap()).collect();
    assert_eq!(alternatives, expected, "openapi oneOf");
    for name in &table {
        let reference = mapping[*name].as_str().unwrap();
        let schema = &openapi["components"]["schemas"][reference.trim_start_matches("#/components/schemas/")];
        assert_eq!(schema["properties"]["grant_type"]["enum"], serde_json::json!([name]), "{reference}");
    }
    server.stop().await;
}
