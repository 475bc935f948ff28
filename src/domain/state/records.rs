//! The owned records of tokens and families, and the parts of a user that tokens refer to.
//! The token tables (`domain/tables`) store them compactly and give them back as views; the
//! owned forms are what tests build and what a view turns into (`to_token`, `to_family`).
//! They live apart from [`State`](super::State) so that the tables can use them without
//! importing the state that holds the tables.

use std::sync::Arc;

use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::shared::scope::ScopeList;
use crate::proto::ledger::{GrantType, RevocationReason, UserType};

/// How long a token request's answer is kept for idempotent retries (SPEC 3.1).
pub const RETRY_WINDOW_MS: i64 = 60_000;

/// The parts of a user that tokens refer to; shared by the user's tokens.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserIdentity {
    pub institution_id: Arc<str>,
    pub login_id: Arc<str>,
    pub institution_user_id: Arc<str>,
    pub host_user_id: String,
    #[serde(with = "super::persist::enumeration")]
    pub user_type: UserType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    /// The RFC 7662 `token_type` value.
    pub fn introspection_name(self) -> &'static str {
        match self {
            Self::Access => "access_token",
            Self::Refresh => "refresh_token",
        }
    }
}

/// What the tokens of one token request have in common.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub grant_type: GrantType,
    pub client_id: Arc<str>,
    pub institution_id: Arc<str>,
    pub user: Option<Arc<UserIdentity>>,
    pub family: Option<FamilyId>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub kind: TokenKind,
    pub grant: Arc<Grant>,
    pub scopes: ScopeList,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub issued_seq: u64,
    /// Set once the token stops being usable before its expiry.
    pub end: Option<TokenEnd>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEnd {
    pub seq: u64,
    pub at_ms: i64,
    pub cause: EndCause,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndCause {
    Revoked(RevocationReason),
    /// A refresh token that was exchanged for `successor`; presenting it again is reuse.
    Rotated {
        successor: TokenId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    pub client_id: Arc<str>,
    pub revoked: Option<Revocation>,
    /// The refresh token that may still be exchanged.
    pub live_refresh: Option<TokenId>,
    /// The latest expiry of any member; the family can be forgotten after it.
    pub expires_at_ms: i64,
    /// When its first tokens were decided (the sign-in or code redemption): no member
    /// outlives it by more than `family_lifetime_max_secs`.
    pub started_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub seq: u64,
    pub at_ms: i64,
    pub reason: RevocationReason,
}
