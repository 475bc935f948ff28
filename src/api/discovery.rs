//! The documents clients discover us by: RFC 8414 authorization-server metadata and the JWKS of
//! the ID-token signing keys. The metadata lists exactly what the server enforces, and nothing
//! it does not: every advertised grant and method works, every other one is refused.

use crate::api::app::App;
use crate::crypto::pkce;
use crate::crypto::signing::{self, ALGORITHM};
use crate::domain::grant::GrantKind;

/// Grant types the token endpoint accepts: the table of `domain::grant`.
pub fn grant_types_supported() -> Vec<&'static str> {
    GrantKind::ALL.into_iter().map(GrantKind::name).collect()
}
/// Basic only: a `client_secret` in the body is refused (RFC 6749 2.3.1 allows one method).
pub const CLIENT_AUTH_METHODS: [&str; 1] = ["client_secret_basic"];

/// GET /.well-known/oauth-authorization-server, and the same document at
/// /.well-known/openid-configuration (OIDC Discovery 1.0: ID tokens are issued, and standard
/// clients look there first). It carries what OIDC discovery requires of a provider that
/// issues ID tokens (`jwks_uri`, `response_types_supported`, `subject_types_supported`,
/// `id_token_signing_alg_values_supported`) except `authorization_endpoint`, which would
/// advertise a browser flow that does not exist. Endpoint URLs are the configured issuer plus
/// the path, so they are right wherever the issuer (the public base URL) points.
pub fn metadata(app: &App) -> serde_json::Value {
    let issuer = app.config.issuer.trim_end_matches('/');
    let url = |path: &str| format!("{issuer}{path}");
    serde_json::json!({
        "issuer": app.config.issuer,
        "token_endpoint": url("/oauth2/v1/token"),
        "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "revocation_endpoint": url("/oauth2/v1/revoke"),
        "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "introspection_endpoint": url("/oauth2/v1/introspect"),
        "introspection_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "jwks_uri": url("/.well-known/jwks.json"),
        "grant_types_supported": grant_types_supported(),
        // Codes come from the internal POST /v1/auth-code, not from a browser-facing
        // authorization endpoint, so none is advertised; what such an endpoint would return
        // is a code, hence "code".
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": [pkce::METHOD_S256],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "preferred_username", "azp"],
    })
}

/// GET /.well-known/jwks.json: the public keys the ledger says are published now (the active
/// key, and retired keys until the last ID token they signed has expired).
pub fn jwks(app: &App) -> serde_json::Value {
    let now_ms = app.clock.now_ms();
    let state = app.state.read();
    let keys: Vec<serde_json::Value> = state
        .authorization
        .published_keys(now_ms)
        .into_iter()
        .rev()
        .filter_map(|k| signing::public_jwk(&k.key_id, &k.algorithm, &k.public_key))
        .collect();
    serde_json::json!({ "keys": keys })
}
