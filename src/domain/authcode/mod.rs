//! The internal authorization-code flow (SPEC 3.4) and the keys that sign its ID tokens: the
//! commands, their decisions (`decide`) and how their events change the projections (`apply`;
//! the projections, `AuthorizationState`, live with the others in `state/authorization.rs`).
//!
//! A code is a [`TokenId`] like any token: its string is derived with the MAC key and never
//! stored. A code lives until it is redeemed, burned (a failed redemption attempt by its own
//! client) or expired. Redeeming it issues a token family; presenting it again revokes that
//! family. Signing keys are recorded by their public parts only; which key signed an ID token
//! and until when that token is valid are part of the token event, so the set of published
//! keys is a pure function of the ledger and the time.

pub mod apply;
pub mod decide;
#[cfg(test)]
mod tests;

use crate::domain::shared::ids::TokenId;
pub use crate::domain::state::authorization::{AuthorizationCode, CodeStatus, IdTokenRecord, Redeemed, SigningKeyInfo};
pub use crate::domain::token::{CodeRedemption, PresentedVerifier};

/// The OIDC scope that asks for an ID token.
pub const SCOPE_OPENID: &str = "openid";
/// The OIDC scope that asks for a refresh token.
pub const SCOPE_OFFLINE_ACCESS: &str = "offline_access";
/// How far in the future an `auth_time` may lie (clock skew between the first-party app and us).
pub const AUTH_TIME_SKEW_SECS: i64 = 300;

/// Commands of the authorization-code flow that are not token requests (redemption is a token
/// request: [`crate::domain::token::IssueGrant::AuthorizationCode`]).
#[derive(Clone, Debug)]
pub enum AuthorizationCommand {
    IssueCode(Box<CodeRequest>),
    ActivateSigningKey(SigningKeyActivation),
}

/// POST /v1/auth-code, syntax already checked by the api layer.
#[derive(Clone, Debug)]
pub struct CodeRequest {
    /// The first-party app's access token (the bearer token).
    pub bearer_token: TokenId,
    /// The `institutionId` header.
    pub institution_id: String,
    pub partner_client_id: String,
    pub username: String,
    pub institution_user_id: String,
    pub scopes: Vec<Box<str>>,
    pub requested_scopes: Vec<Box<str>>,
    pub nonce: Option<String>,
    pub audience: Option<String>,
    pub auth_time_secs: Option<i64>,
    pub challenge: Option<[u8; 32]>,
    /// A fresh random id for the code.
    pub code_id: TokenId,
    pub ttl_secs: u64,
}

/// A new signing key, generated and stored in the key file by the caller.
#[derive(Clone, Debug)]
pub struct SigningKeyActivation {
    pub key_id: String,
    pub algorithm: String,
    pub public_key: Vec<u8>,
    /// Cluster mode: the private key sealed for the other nodes (`SigningKey::seal`); empty on
    /// a single node.
    pub sealed_private_key: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AuthorizationOutcome {
    CodeIssued { code: TokenId, redirect_uri: String, expires_at_ms: i64 },
    SigningKeyActivated { previous_key_id: Option<String> },
}
