//! The projections of the authorization-code flow: codes, the family each code-born token
//! family came from, and the ID-token signing keys. Changed only by `authcode::apply`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::FastMap;
use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::shared::scope::ScopeList;
use crate::proto::ledger::CodeBurnReason;

/// Codes and signing keys, as far as they still matter.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CodeStatus {
    Live,
    Redeemed(Redeemed),
    Burned {
        seq: u64,
        #[serde(with = "super::persist::enumeration")]
        reason: CodeBurnReason,
    },
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdTokenRecord {
    pub key_id: String,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
