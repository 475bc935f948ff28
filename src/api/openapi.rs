//! `GET /openapi.json`: an OpenAPI 3.0 description of the REST surface, written out here
//! rather than derived from annotations because the handlers parse their forms and headers by
//! hand (SPEC order of checks). A test walks the real router and this document both ways, so a
//! route cannot be added without being documented, nor documented without existing.

// JSON documents built with `json!` objects: indexing an object inserts, it cannot panic.
#![allow(clippy::indexing_slicing)]

use serde_json::{Value, json};

use crate::api::wire::{AUDIENCE_LEN_MAX, NONCE_LEN_MAX};
use crate::crypto::credential::SECRET_LEN_MAX;
use crate::domain::grant::GrantKind;
use crate::domain::ids::IDENTIFIER_LEN_MAX;

/// Every REST path the router serves, in the router's own syntax.
const PATHS: [&str; 16] = [
    "/oauth2/v1/token",
    "/oauth2/v1/revoke",
    "/oauth2/v1/introspect",
    "/v1/client-authorization",
    "/auth-code/v1/client-authorization",
    "/v1/auth-code",
    "/auth-code/v1/auth-code",
    "/db-users/v1/institution-users/{id}",
    "/v1/institution-users/{id}",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

/// The documented REST paths.
pub fn paths() -> &'static [&'static str] {
    &PATHS
}

/// The document, with `issuer` as the server URL.
pub fn document(issuer: &str) -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert("/oauth2/v1/token".into(), json!({"post": token()}));
    paths.insert(
        "/oauth2/v1/revoke".into(),
        json!({"post": revoke("revokeTokenPost", "200"), "delete": revoke("revokeToken", "204")}),
    );
    paths.insert("/oauth2/v1/introspect".into(), json!({"post": introspect()}));
    for (path, id) in [
        ("/v1/client-authorization", "authorizeClient"),
        ("/auth-code/v1/client-authorization", "authorizeClientLegacyPath"),
    ] {
        paths.insert(path.into(), json!({"post": client_authorization(id)}));
    }
    for (path, id) in
        [("/v1/auth-code", "createAuthorizationCode"), ("/auth-code/v1/auth-code", "createAuthorizationCodeLegacyPath")]
    {
        paths.insert(path.into(), json!({"post": auth_code(id)}));
    }
    paths.insert(
        "/db-users/v1/institution-users/{id}".into(),
        json!({"get": institution_user("getInstitutionUserByType")}),
    );
    paths.insert("/v1/institution-users/{id}".into(), json!({"get": institution_user("getInstitutionUser")}));
    paths.insert(
        "/.well-known/oauth-authorization-server".into(),
        json!({"get": plain_get("getAuthorizationServerMetadata", "RFC 8414 authorization server metadata", "Discovery", object("Metadata"))}),
    );
    paths.insert(
        "/.well-known/openid-configuration".into(),
        json!({"get": plain_get("getOpenIdConfiguration", "OpenID Connect discovery: the same metadata document", "Discovery", object("Metadata"))}),
    );
    paths.insert(
        "/.well-known/jwks.json".into(),
        json!({"get": plain_get("getJwks", "The public keys of the ID-token signatures (RFC 7517)", "Discovery", object("Jwks"))}),
    );
    paths.insert(
        "/healthz".into(),
        json!({"get": plain_get("getHealth", "Liveness: the process answers", "Operations", object("Status"))}),
    );
    paths.insert("/readyz".into(), json!({"get": readiness()}));
    paths.insert("/metrics".into(), json!({"get": metrics()}));
    paths.insert(
        "/openapi.json".into(),
        json!({"get": plain_get("getOpenApi", "This document", "Operations", json!({"type": "object"}))}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "tokenledger REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "OAuth 2.0 token service compatible with the Candescent DevEx OAuth V2 API. Errors carry a CMN code (SPEC section 6) and the RFC 6749 error fields. gRPC (package tokenledger.v1) is served on the same port.",
        },
        "servers": [{"url": issuer}],
        "tags": [
            {"name": "OAuth V2"}, {"name": "Authorization code"}, {"name": "Profile And Status"},
            {"name": "Discovery"}, {"name": "Operations"},
        ],
        "paths": paths,
        "components": components(),
    })
}

fn object(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn parameter(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The CMN error answers of a client-authenticated endpoint.
fn cmn_errors(responses: &mut serde_json::Map<String, Value>) {
    let error = |text: &str| {
        let mut response = json_response(text, object("Error"));
        response["headers"] = json!({"transactionId": {"$ref": "#/components/headers/TransactionId"}});
        response
    };
    responses.insert("400".into(), error("Invalid request (CMN_90005 to CMN_90017, CMN_90020, CMN_90021)"));
    let mut unauthorized =
        error("Invalid client credentials, user credentials or token (CMN_90004, CMN_90015, CMN_90018)");
    unauthorized["headers"]["WWW-Authenticate"] = json!({"schema": {"type": "string"}});
    responses.insert("401".into(), unauthorized);
    let mut failed = error(
        "CMN_90002 quota or CMN_90003 spike limit (with Retry-After), CMN_90019 ledger unavailable, CMN_90000 internal",
    );
    failed["headers"]["Retry-After"] =
        json!({"description": "Seconds to wait, on CMN_90002 and CMN_90003", "schema": {"type": "integer"}});
    responses.insert("500".into(), failed);
    responses
        .insert("408".into(), json_response("The request took longer than request_timeout_secs", object("Problem")));
}

fn form_body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": object(schema)}}})
}

fn operation(id: &str, summary: &str, tag: &str, security: Value, parameters: Vec<Value>) -> Value {
    json!({"operationId": id, "summary": summary, "tags": [tag], "security": security, "parameters": parameters})
}

fn token() -> Value {
    let mut op = operation(
        "createAccessTokenV2",
        "Create V2 access token (client_credentials, password, refresh_token, authorization_code)",
        "OAuth V2",
        json!([{"basicAuth": []}]),
        vec![parameter("TransactionId"), parameter("InstitutionIdOptional")],
    );
    op["description"] = json!(
        "institutionId is required for client_credentials and password. A retry with the same transactionId, client and form within 60 s returns the same tokens."
    );
    op["requestBody"] = form_body("TokenRequest");
    let mut responses = serde_json::Map::new();
    let mut ok = json_response("Tokens", object("TokenResponse"));
    ok["headers"] = no_store_headers();
    responses.insert("200".into(), ok);
    cmn_errors(&mut responses);
    op["responses"] = Value::Object(responses);
    op
}

fn no_store_headers() -> Value {
    json!({
        "transactionId": {"$ref": "#/components/headers/TransactionId"},
        "Cache-Control": {"schema": {"type": "string", "enum": ["no-store"]}},
        "Pragma": {"schema": {"type": "string", "enum": ["no-cache"]}},
    })
}

/// `success` is 204 for DELETE (Candescent) and 200 for POST (RFC 7009 section 2.2).
fn revoke(id: &str, success: &str) -> Value {
    let mut op = operation(
        id,
        "Revoke an access or refresh token (RFC 7009); a refresh token revokes its family",
        "OAuth V2",
        json!([{"basicAuth": []}]),
        vec![parameter("TransactionId"), parameter("InstitutionIdOptional")],
    );
    op["requestBody"] = form_body("TokenParameter");
    let mut responses = serde_json::Map::new();
    responses.insert(
        success.into(),
        json!({"description": "Revoked, or nothing to revoke (unknown, expired, foreign); no body", "headers": {"transactionId": {"$ref": "#/components/headers/TransactionId"}}}),
    );
    cmn_errors(&mut responses);
    op["responses"] = Value::Object(responses);
    op
}

fn introspect() -> Value {
    let mut op = operation(
        "introspectToken",
        "RFC 7662 introspection; anything not active is exactly {\"active\": false}",
        "OAuth V2",
        json!([{"basicAuth": []}]),
        vec![parameter("TransactionId"), parameter("InstitutionIdOptional")],
    );
    op["requestBody"] = form_body("TokenParameter");
    let mut responses = serde_json::Map::new();
    let mut ok = json_response("The token's state", object("Introspection"));
    ok["headers"] = no_store_headers();
    responses.insert("200".into(), ok);
    cmn_errors(&mut responses);
    op["responses"] = Value::Object(responses);
    op
}

fn client_authorization(id: &str) -> Value {
    let mut op = operation(
        id,
        "Authorize client: the partner app's configuration for the consent screen",
        "Authorization code",
        json!([{"bearerAuth": []}]),
        vec![parameter("TransactionId"), parameter("InstitutionIdRequired")],
    );
    op["requestBody"] = form_body("ClientAuthorizationRequest");
    let mut responses = serde_json::Map::new();
    responses.insert("200".into(), json_response("The partner's configuration", object("ClientAuthorization")));
    cmn_errors(&mut responses);
    op["responses"] = Value::Object(responses);
    op
}

fn auth_code(id: &str) -> Value {
    let mut op = operation(
        id,
        "Get authorization code for a partner app (single use, PKCE S256 optional)",
        "Authorization code",
        json!([{"bearerAuth": []}]),
        vec![parameter("TransactionId"), parameter("InstitutionIdRequired")],
    );
    op["requestBody"] = form_body("AuthCodeRequest");
    let mut responses = serde_json::Map::new();
    let mut ok = json_response("The code and the partner's redirect URI", object("AuthCode"));
    ok["headers"] = no_store_headers();
    responses.insert("200".into(), ok);
    cmn_errors(&mut responses);
    op["responses"] = Value::Object(responses);
    op
}

fn institution_user(id: &str) -> Value {
    let parameters = vec![
        parameter("TransactionId"),
        json!({"name": "id", "in": "path", "required": true,
               "schema": {"type": "string", "minLength": 1, "maxLength": IDENTIFIER_LEN_MAX, "pattern": "^[!-~]+$"},
               "description": "The user's id, of the kind userIdType names (institution user id by default); anything else is ISR_10000"}),
        json!({"name": "userIdType", "in": "query", "required": false,
            "description": "Matched case-insensitively; absent means INSTITUTION_USER_ID, present but empty is ISR_10000",
            "schema": {"type": "string", "enum": ["INSTITUTION_USER_ID", "LOGIN_ID", "HOST_USER_ID", "USER_ID", "LEGACY_USER_GUID"]}}),
        json!({"name": "$expand", "in": "query", "required": false, "description": "Accepted and ignored",
            "schema": {"type": "string", "pattern": PRINTABLE}}),
        json!({"name": "retrieveBillPayCredentials", "in": "query", "required": false, "description": "Accepted and ignored",
            "schema": {"type": "boolean"}}),
        json!({"name": "institutionId", "in": "header", "required": false,
            "description": "If sent, the token's institution (ISR_11003 otherwise)",
            "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"}}),
    ];
    let mut op = operation(
        id,
        "Business-user lookup (scope institution-users:read; the token's institution scopes it)",
        "Profile And Status",
        json!([{"bearerAuth": []}]),
        parameters,
    );
    let mut responses = serde_json::Map::new();
    responses.insert("200".into(), json_response("The user", object("InstitutionUser")));
    for (status, text) in [
        ("400", "ISR_10000 bad request"),
        ("401", "ISR_11001 missing or invalid token"),
        ("403", "ISR_11003 scope or institution"),
        ("404", "ISR_10001 InstitutionUser not found"),
    ] {
        responses.insert(status.into(), json_response(text, object("LookupError")));
    }
    op["responses"] = Value::Object(responses);
    op
}

fn plain_get(id: &str, summary: &str, tag: &str, schema: Value) -> Value {
    let mut op = operation(id, summary, tag, json!([]), vec![]);
    op["responses"] = json!({"200": json_response(summary, schema)});
    op
}

fn readiness() -> Value {
    let mut op = operation(
        "getReadiness",
        "Readiness: ledger open, replayed and writable, not draining",
        "Operations",
        json!([]),
        vec![],
    );
    op["responses"] = json!({
        "200": json_response("Ready for reads and writes", object("Readiness")),
        "503": json_response(
            "Not ready for writes (replaying, storage failed, shutting down, or in a cluster no leader known); `reads` says whether reads are served",
            object("Readiness"),
        ),
    });
    op
}

fn metrics() -> Value {
    let mut op =
        operation("getMetrics", "Prometheus metrics (text exposition format 0.0.4)", "Operations", json!([]), vec![]);
    op["responses"] =
        json!({"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}});
    op
}

/// Printable ASCII, as every REST field must be (CMN_90017 otherwise).
const PRINTABLE: &str = "^[ -~]*$";
/// A scope list: names of RFC 6749 3.3 characters, separated by commas and/or spaces.
const SCOPE_LIST: &str = r"^[ ,]*[!#-+\--\[\]-~][ !#-\[\]-~]*$";
const SCOPE_LIST_OR_EMPTY: &str = r"^[ !#-\[\]-~]*$";

fn printable() -> Value {
    json!({"type": "string", "pattern": PRINTABLE})
}

/// A required identifier (client, login or institution user id): 1 to 128 visible ASCII
/// characters; an empty value counts as missing.
fn identifier(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": IDENTIFIER_LEN_MAX, "pattern": "^[!-~]+$", "description": description})
}

/// A token or code presented by the caller: anything that is not one of ours is simply invalid.
fn credential() -> Value {
    json!({"type": "string", "minLength": 1, "pattern": "^[!-~]+$"})
}

fn scope_list(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "pattern": SCOPE_LIST, "description": description})
}

/// One grant of the token request: `grant_type` fixed, the grant's required fields, optional
/// `scopes` (`scope` is accepted as an RFC 6749 alias, not both).
fn grant(grant_type: &str, required: &[&str], mut properties: Value) -> Value {
    properties["grant_type"] = json!({"type": "string", "enum": [grant_type]});
    properties["scopes"] = json!({"type": "string", "pattern": SCOPE_LIST_OR_EMPTY,
        "description": "Separated by commas, commas and spaces, or spaces; omitted: every scope the client may have. The RFC 6749 name scope is an alias (not both)."});
    let mut names = vec!["grant_type"];
    names.extend_from_slice(required);
    json!({"type": "object", "required": names, "properties": properties})
}

/// The Get Authorization Code form, without PKCE or with both PKCE fields (OpenAPI 3.0 has
/// no `dependentRequired`, so the two shapes are told apart by the fields being absent).
fn auth_code_request(pkce: bool) -> Value {
    let mut properties = json!({
        "client_id": identifier("The partner app's client id"),
        "scopes": scope_list("API scopes of the code, a subset of the partner's"),
        "username": identifier("The user's login id"),
        "institution_user_id": identifier("The user's institution user id"),
        "requested_scopes": {"type": "string", "pattern": SCOPE_LIST_OR_EMPTY, "description": "OIDC scopes, e.g. openid,profile,offline_access"},
        "nonce": {"type": "string", "maxLength": NONCE_LEN_MAX, "pattern": PRINTABLE},
        "aud": {"type": "string", "maxLength": AUDIENCE_LEN_MAX, "pattern": PRINTABLE},
        "auth_time": {"type": "string", "pattern": "^[0-9]{1,12}$", "description": "Unix seconds, at most 5 minutes ahead"},
    });
    let mut required = vec!["client_id", "scopes", "username", "institution_user_id"];
    if pkce {
        properties["code_challenge"] = json!({"type": "string", "minLength": 43, "maxLength": 43, "pattern": "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$", "description": "base64url(SHA-256(verifier)), unpadded and canonical (the last character carries 4 bits)"});
        properties["code_challenge_method"] = json!({"type": "string", "enum": ["S256"]});
        required.extend(["code_challenge", "code_challenge_method"]);
    } else {
        properties["code_challenge"] = json!({"not": {}});
        properties["code_challenge_method"] = json!({"not": {}});
    }
    json!({"type": "object", "required": required, "properties": properties})
}

/// The schema name and form of each grant's token request.
fn grant_schema(grant: GrantKind) -> (&'static str, Value) {
    let name = grant.name();
    match grant {
        GrantKind::ClientCredentials => ("ClientCredentialsGrant", self::grant(name, &[], json!({}))),
        GrantKind::Password => (
            "PasswordGrant",
            self::grant(
                name,
                &["username", "password"],
                json!({
                    "username": identifier("The user's login id"),
                    "password": {"type": "string", "format": "password", "minLength": 1, "maxLength": SECRET_LEN_MAX, "pattern": PRINTABLE},
                }),
            ),
        ),
        GrantKind::RefreshToken => {
            ("RefreshTokenGrant", self::grant(name, &["refresh_token"], json!({"refresh_token": credential()})))
        }
        GrantKind::AuthorizationCode => (
            "AuthorizationCodeGrant",
            self::grant(
                name,
                &["code"],
                json!({
                    "code": credential(),
                    "code_verifier": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{43,128}$", "description": "RFC 7636 verifier; required when the code was issued with a challenge"},
                    "redirect_uri": {"type": "string", "pattern": PRINTABLE, "description": "If sent, exactly the client's registered URI"},
                }),
            ),
        ),
    }
}

/// The schemas of the request bodies: what each form must hold, as the handlers enforce it.
fn request_schemas() -> Value {
    let mut schemas = request_schemas_but_grants();
    for grant in GrantKind::ALL {
        let (name, schema) = grant_schema(grant);
        schemas[name] = schema;
    }
    schemas
}

fn request_schemas_but_grants() -> Value {
    json!({
        "TokenRequest": {
            "description": "One of the four grants, told apart by grant_type. Every value is printable ASCII (else CMN_90017); an empty value counts as absent.",
            "oneOf": GrantKind::ALL.map(|g| object(grant_schema(g).0)),
            "discriminator": {"propertyName": "grant_type", "mapping": GrantKind::ALL
                .map(|g| (g.name().to_owned(), json!(format!("#/components/schemas/{}", grant_schema(g).0))))
                .into_iter()
                .collect::<serde_json::Map<_, _>>()},
        },
        "TokenParameter": {"type": "object", "required": ["token"], "properties": {"token": credential(), "token_type_hint": printable()}},
        "ClientAuthorizationRequest": {"type": "object", "required": ["client_id"], "properties": {"client_id": identifier("The partner app's client id")}},
        "AuthCodeRequest": {
            "description": "PKCE is optional, but code_challenge and code_challenge_method come together (a challenge without a method would be plain, which is refused).",
            "oneOf": [auth_code_request(false), auth_code_request(true)],
        },
    })
}

fn components() -> Value {
    let string = json!({"type": "string"});
    let integer = json!({"type": "integer", "format": "int64"});
    let mut components = json!({
        "securitySchemes": {
            "basicAuth": {"type": "http", "scheme": "basic", "description": "client_id:client_secret, each form-urlencoded (RFC 6749 2.3.1)"},
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An access token issued by this server"},
        },
        "parameters": {
            "TransactionId": {"name": "transactionId", "in": "header", "required": true,
                "description": "A UUID; echoed in the response", "schema": {"type": "string", "format": "uuid"}},
            "InstitutionIdOptional": {"name": "institutionId", "in": "header", "required": false,
                "description": "1-10 ASCII digits; required for client_credentials and password grants",
                "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"}},
            "InstitutionIdRequired": {"name": "institutionId", "in": "header", "required": true,
                "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"}},
        },
        "headers": {
            "TransactionId": {"description": "The request's transactionId", "schema": {"type": "string", "format": "uuid"}},
        },
        "schemas": {
            "TokenResponse": {"type": "object", "required": ["access_token", "token_type", "expires_in", "scope"], "properties": {
                "access_token": string, "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"description": "Seconds (a number, or a digit string with expires_in_as_string)", "oneOf": [integer, string]},
                "scope": string, "refresh_token": string,
                "refresh_token_expires_in": {"oneOf": [integer, string]}, "id_token": string,
            }},
            "Introspection": {"type": "object", "required": ["active"], "properties": {
                "active": {"type": "boolean"}, "scope": string, "client_id": string, "username": string, "sub": string,
                "token_type": {"type": "string", "enum": ["access_token", "refresh_token"]}, "exp": integer, "iat": integer,
                "iss": string, "institution_id": string, "grant_type": string, "institution_user_id": string, "host_user_id": string,
            }},
            "ClientAuthorization": {"type": "object", "properties": {
                "scopes": string, "appId": string,
                "additional_info": {"type": "object", "properties": {
                    "secondary_authentication_enabled": {"type": "boolean"}, "consent_enabled": {"type": "boolean"},
                    "device_registration_enabled": {"type": "boolean"}}},
            }},
            "AuthCode": {"type": "object", "required": ["code", "redirect_uri"], "properties": {"code": string, "redirect_uri": string}},
            "InstitutionUser": {"type": "object", "properties": {
                "institutionUserId": string, "institutionId": string,
                "institutionUserType": {"type": "string", "enum": ["RETAIL", "BUSINESS"]},
                "userId": string, "userName": string, "failedLoginCount": integer, "failedPasswordResetCount": integer,
                "additionalInfo": {"type": "object", "properties": {"entry": {"type": "array", "items": {"type": "object",
                    "properties": {"key": string, "value": string}}}}},
                "userStatus": {"type": "object", "additionalProperties": {"type": "boolean"}},
                "firstName": string, "lastName": string, "email": string,
                "institutionCustomers": {"type": "array", "items": {"type": "object", "properties": {
                    "institutionCustomerId": string, "memberNumber": string, "memberName": string,
                    "customerType": string, "primary": {"type": "boolean"}}}},
            }},
            "Error": {"type": "object", "required": ["code", "message", "error"], "properties": {
                "code": {"type": "string", "pattern": "^CMN_9[0-9]{4}$"}, "message": string,
                "error": {"type": "string", "description": "RFC 6749 section 5.2 error code"}, "error_description": string,
            }},
            "LookupError": {"type": "object", "required": ["code", "message"], "properties": {"code": string, "message": string}},
            "Problem": {"type": "object", "properties": {"error": string, "error_description": string}},
            "Status": {"type": "object", "properties": {"status": string}},
            "Readiness": {"type": "object", "required": ["status", "reads", "writes"], "properties": {
                "status": {"type": "string", "enum": ["ready", "not ready"]},
                "reads": {"type": "boolean"},
                "writes": {"type": "boolean"},
                "node_id": {"type": "integer", "minimum": 1},
                "role": {"type": "string", "enum": ["leader", "follower", "candidate", "learner", "stopped"]},
                "leader": {"type": "integer", "minimum": 0},
                "applied_seq": {"type": "integer", "minimum": 0},
            }},
            "Metadata": {"type": "object", "required": ["issuer"], "properties": {"issuer": string}, "additionalProperties": true},
            "Jwks": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
        },
    });
    if let (Some(schemas), Value::Object(requests)) = (components["schemas"].as_object_mut(), request_schemas()) {
        schemas.extend(requests);
    }
    components
}

/// The routes of the operations documents: `/metrics` and `/openapi.json`.
pub fn routes() -> axum::Router<std::sync::Arc<crate::api::app::App>> {
    use axum::extract::State;
    use axum::response::IntoResponse;
    axum::Router::new()
        .route(
            "/openapi.json",
            axum::routing::get(|State(app): State<std::sync::Arc<crate::api::app::App>>| async move {
                axum::Json(document(&app.config.issuer))
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(|State(app): State<std::sync::Arc<crate::api::app::App>>| async move {
                // Served on its own listener instead (`metrics_listen`): not here.
                if app.config.metrics_listen.is_some() {
                    let body = serde_json::json!({"error": "not_found", "error_description": "no such endpoint"});
                    return (http::StatusCode::NOT_FOUND, axum::Json(body)).into_response();
                }
                metrics_text(&app)
            }),
        )
}

/// The Prometheus exposition of `app`, as both listeners serve it.
pub fn metrics_text(app: &crate::api::app::App) -> axum::response::Response {
    use axum::response::IntoResponse;
    let text = app.metrics.render(&app.metrics_readings());
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// The router of the separate metrics listener: `GET /metrics` only.
pub fn metrics_router(app: std::sync::Arc<crate::api::app::App>) -> axum::Router {
    use axum::extract::State;
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |State(app): State<std::sync::Arc<crate::api::app::App>>| async move { metrics_text(&app) },
            ),
        )
        .with_state(app)
}
