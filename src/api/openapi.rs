//! `GET /openapi.json`: an OpenAPI 3.0 description of the REST surface, written out here
//! rather than derived from annotations because the handlers parse their forms and headers by
//! hand (SPEC order of checks). A test walks the real router and this document both ways, so a
//! route cannot be added without being documented, nor documented without existing.

use serde_json::{Value, json};

/// Every REST path the router serves, in the router's own syntax.
const PATHS: [&str; 15] = [
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
        json!({"post": revoke("revokeTokenPost"), "delete": revoke("revokeToken")}),
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
        json!({"get": institution_user("getInstitutionUserByType", true)}),
    );
    paths.insert("/v1/institution-users/{id}".into(), json!({"get": institution_user("getInstitutionUser", false)}));
    paths.insert(
        "/.well-known/oauth-authorization-server".into(),
        json!({"get": plain_get("getAuthorizationServerMetadata", "RFC 8414 authorization server metadata", "Discovery", object("Metadata"))}),
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

fn revoke(id: &str) -> Value {
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
        "204".into(),
        json!({"description": "Revoked, or nothing to revoke (unknown, expired, foreign)", "headers": {"transactionId": {"$ref": "#/components/headers/TransactionId"}}}),
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

fn institution_user(id: &str, typed: bool) -> Value {
    let mut parameters = vec![
        parameter("TransactionId"),
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"},
               "description": "The user's id, of the kind userIdType names (institution user id by default)"}),
    ];
    if typed {
        parameters.push(json!({"name": "userIdType", "in": "query", "required": false,
            "schema": {"type": "string", "enum": ["LOGIN_ID", "INSTITUTION_USER_ID", "HOST_USER_ID"]}}));
    }
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
        "200": json_response("Ready", object("Status")),
        "503": json_response("Not ready (replaying, storage failed, or shutting down)", object("Status")),
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

fn components() -> Value {
    let string = json!({"type": "string"});
    let integer = json!({"type": "integer", "format": "int64"});
    json!({
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
            "TokenRequest": {"type": "object", "required": ["grant_type"], "properties": {
                "grant_type": {"type": "string", "enum": ["client_credentials", "password", "refresh_token", "authorization_code"]},
                "scopes": {"type": "string", "description": "Separated by commas, commas and spaces, or spaces"},
                "scope": {"type": "string", "description": "RFC 6749 alias of scopes (not both)"},
                "username": string, "password": {"type": "string", "format": "password"},
                "refresh_token": string, "code": string, "code_verifier": string, "redirect_uri": string,
            }},
            "TokenParameter": {"type": "object", "required": ["token"], "properties": {"token": string, "token_type_hint": string}},
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
            "ClientAuthorizationRequest": {"type": "object", "required": ["client_id"], "properties": {"client_id": string}},
            "ClientAuthorization": {"type": "object", "properties": {
                "scopes": string, "appId": string,
                "additional_info": {"type": "object", "properties": {
                    "secondary_authentication_enabled": {"type": "boolean"}, "consent_enabled": {"type": "boolean"},
                    "device_registration_enabled": {"type": "boolean"}}},
            }},
            "AuthCodeRequest": {"type": "object", "required": ["client_id", "scopes", "username", "institution_user_id"], "properties": {
                "client_id": string, "scopes": string, "username": string, "institution_user_id": string,
                "requested_scopes": string, "nonce": string, "aud": string, "auth_time": string,
                "code_challenge": string, "code_challenge_method": {"type": "string", "enum": ["S256"]},
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
            "Metadata": {"type": "object", "required": ["issuer"], "properties": {"issuer": string}, "additionalProperties": true},
            "Jwks": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
        },
    })
}

/// The routes of the operations documents: `/metrics` and `/openapi.json`.
pub fn routes() -> axum::Router<std::sync::Arc<crate::app::App>> {
    use axum::extract::State;
    use axum::response::IntoResponse;
    axum::Router::new()
        .route(
            "/openapi.json",
            axum::routing::get(|State(app): State<std::sync::Arc<crate::app::App>>| async move {
                axum::Json(document(&app.config.issuer))
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(|State(app): State<std::sync::Arc<crate::app::App>>| async move {
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
pub fn metrics_text(app: &crate::app::App) -> axum::response::Response {
    use axum::response::IntoResponse;
    let text = app.metrics.render(app);
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// The router of the separate metrics listener: `GET /metrics` only.
pub fn metrics_router(app: std::sync::Arc<crate::app::App>) -> axum::Router {
    use axum::extract::State;
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(app): State<std::sync::Arc<crate::app::App>>| async move { metrics_text(&app) }),
        )
        .with_state(app)
}
