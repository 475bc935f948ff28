//! The internal authorization-code flow (SPEC 3.4) and the keys that sign its ID tokens: the
//! projections ([`AuthorizationState`]), the commands, their decisions (`decide`) and how their
//! events change the projections (`apply`).
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

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ids::{FamilyId, TokenId};
use super::scope::ScopeList;
use super::state::FastMap;
use crate::proto::ledger::CodeBurnReason;

/// The OIDC scope that asks for an ID token.
pub const SCOPE_OPENID: &str = "openid";
/// The OIDC scope that asks for a refresh token.
pub const SCOPE_OFFLINE_ACCESS: &str = "offline_access";
/// How far in the future an `auth_time` may lie (clock skew between the first-party app and us).
pub const AUTH_TIME_SKEW_SECS: i64 = 300;

/// Codes and signing keys, as far as they still matter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthorizationState {
    pub codes: FastMap<TokenId, AuthorizationCode>,
    /// The code every code-born token family came from. Tokens of these families belong to
    /// partner apps and cannot authorize other partners.
    pub code_by_family: FastMap<FamilyId, TokenId>,
    /// Every signing key the ledger recorded, by key id.
    pub signing_keys: BTreeMap<String, SigningKeyInfo>,
    /// The key that signs new ID tokens.
    pub active_signing_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AuthorizationCode {
    /// The partner client that may redeem it.
    pub client_id: Arc<str>,
    pub institution_id: Arc<str>,
    pub login_id: Arc<str>,
    pub institution_user_id: Arc<str>,
    pub scopes: ScopeList,
    pub requested_scopes: Vec<Box<str>>,
    pub nonce: Option<String>,
    pub audience: Option<String>,
    /// Unix seconds: as given by the first-party app, else the time the code was issued.
    pub auth_time_secs: i64,
    /// SHA-256 of the PKCE verifier (the decoded S256 challenge).
    pub challenge: Option<[u8; 32]>,
    /// The first-party app that asked for the code.
    pub authorized_by: Arc<str>,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub issued_seq: u64,
    pub status: CodeStatus,
}

impl AuthorizationCode {
    /// True when the OIDC `scope` was among the requested scopes.
    pub fn requested(&self, scope: &str) -> bool {
        self.requested_scopes.iter().any(|s| &**s == scope)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum CodeStatus {
    Live,
    Redeemed(Redeemed),
    Burned { seq: u64, reason: CodeBurnReason },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Redeemed {
    pub seq: u64,
    pub at_ms: i64,
    /// The family of every token issued from the code.
    pub family: FamilyId,
    pub access: TokenId,
    pub id_token: Option<IdTokenRecord>,
    /// Set when the code was presented again after its redemption.
    pub replayed_seq: Option<u64>,
}

/// What an ID token was signed with and for how long it is valid; enough to sign the same
/// claims again for an idempotent retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdTokenRecord {
    pub key_id: String,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyInfo {
    pub key_id: String,
    pub algorithm: String,
    /// Uncompressed SEC1 point of the P-256 public key.
    pub public_key: Vec<u8>,
    pub activated_seq: u64,
    pub activated_at_ms: i64,
    /// When it stopped signing new ID tokens; `None` while it is the active key.
    pub retired_at_ms: Option<i64>,
    /// The latest expiry of any ID token it signed.
    pub id_tokens_expire_at_ms: i64,
}

impl SigningKeyInfo {
    /// Published in the JWKS: the active key, and a retired one until its last ID token expired.
    pub fn is_published(&self, now_ms: i64) -> bool {
        self.retired_at_ms.is_none() || self.id_tokens_expire_at_ms > now_ms
    }
}

impl AuthorizationState {
    /// The code a token family was issued from, if it was.
    pub fn code_of_family(&self, family: &FamilyId) -> Option<(&TokenId, &AuthorizationCode)> {
        let id = self.code_by_family.get(family)?;
        self.codes.get(id).map(|code| (id, code))
    }

    /// Signing keys published at `now_ms`, oldest activation first.
    pub fn published_keys(&self, now_ms: i64) -> Vec<&SigningKeyInfo> {
        let mut keys: Vec<&SigningKeyInfo> = self.signing_keys.values().filter(|k| k.is_published(now_ms)).collect();
        keys.sort_by_key(|k| k.activated_seq);
        keys
    }

    /// Forgets codes that can no longer matter: expired unredeemed ones, and redeemed ones whose
    /// family has been forgotten (a replay then has nothing left to revoke). Call after the
    /// families were purged.
    pub fn purge(&mut self, now_ms: i64, family_alive: impl Fn(&FamilyId) -> bool) {
        self.codes.retain(|_, code| match &code.status {
            CodeStatus::Redeemed(redeemed) => family_alive(&redeemed.family),
            CodeStatus::Live | CodeStatus::Burned { .. } => code.expires_at_ms > now_ms,
        });
        self.code_by_family.retain(|family, _| family_alive(family));
    }
}

/// Commands of the authorization-code flow that are not token requests (redemption is a token
/// request: [`super::command::IssueGrant::AuthorizationCode`]).
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
}

/// The authorization_code grant of a token request.
#[derive(Clone, Debug)]
pub struct CodeRedemption {
    pub code: TokenId,
    /// The `code_verifier`, as the api layer checked and hashed it.
    pub verifier: Option<PresentedVerifier>,
    pub redirect_uri: Option<String>,
    /// Lifetime of the ID token, when one is issued.
    pub id_token_ttl_secs: u64,
}

/// A `code_verifier`: whether it has the RFC 7636 syntax, and its SHA-256. Hashing happens in
/// the api layer so that the domain stays free of crypto primitives other than comparison.
#[derive(Clone, Copy, Debug)]
pub struct PresentedVerifier {
    pub well_formed: bool,
    pub digest: [u8; 32],
}

#[derive(Clone, Debug, PartialEq)]
pub enum AuthorizationOutcome {
    CodeIssued { code: TokenId, redirect_uri: String, expires_at_ms: i64 },
    SigningKeyActivated { previous_key_id: Option<String> },
}
