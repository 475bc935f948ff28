//! The token aggregate: token requests ([`Issue`]: client credentials, password, refresh, and
//! the authorization_code grant whose redemption the `authcode` aggregate decides) and RFC 7009
//! revocations ([`Revoke`]), their answers, their conflict keys, `decide` (`decide.rs`) and how
//! token events change the projections (`apply.rs`).

pub(crate) mod apply;
pub(crate) mod decide;

use std::sync::Arc;

use crate::domain::shared::conflict::{ConflictKeys, Entity};
use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::shared::scope::ScopeList;
use crate::domain::state::{State, TokenKind};

/// A token request whose caller has been authenticated (client secret, and for the password
/// grant the user's password) by the api layer.
#[derive(Clone, Debug)]
pub struct Issue {
    pub client_id: Arc<str>,
    /// The `institutionId` header, already checked for syntax.
    pub institution_id: Option<String>,
    pub grant: IssueGrant,
    /// `None` when the request named no scopes.
    pub requested_scopes: Option<Vec<Box<str>>>,
    /// Keyed digest of the request without secrets, for idempotent retries.
    pub fingerprint: [u8; 32],
    /// No token of a refresh-token family outlives the family's start by more than this
    /// (`family_lifetime_max_secs`), however often it is refreshed.
    pub family_lifetime_max_ms: i64,
    /// Random ids for whatever this request mints (the domain draws no randomness itself).
    pub fresh: FreshIds,
}

#[derive(Clone, Debug)]
pub enum IssueGrant {
    ClientCredentials,
    Password { login_id: String },
    Refresh { token: TokenId },
    AuthorizationCode(CodeRedemption),
}

#[derive(Clone, Copy, Debug)]
pub struct FreshIds {
    pub access: TokenId,
    pub refresh: TokenId,
    pub family: FamilyId,
}

/// The default of `family_lifetime_max_secs`: 90 days.
pub const FAMILY_LIFETIME_MAX_MS_DEFAULT: i64 = 90 * 24 * 3600 * 1000;

/// An RFC 7009 revocation by the token's owning client.
#[derive(Clone, Debug)]
pub struct Revoke {
    pub client_id: Arc<str>,
    pub token: TokenId,
    pub kind: TokenKind,
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
pub struct Issued {
    pub access: IssuedToken,
    pub refresh: Option<IssuedToken>,
    pub scopes: ScopeList,
    /// True when this answers a retry with the tokens of an earlier identical request.
    pub replayed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub id: TokenId,
    pub expires_at_ms: i64,
}

impl Issue {
    /// What a token request touches, looked up in the committed `state`. The keys of an
    /// authorization_code grant come from `redemption_keys` (the `authcode` aggregate's).
    pub fn conflict_keys(
        &self,
        state: &State,
        transaction_id: &str,
        keys: &mut ConflictKeys,
        redemption_keys: impl FnOnce(&CodeRedemption, &mut ConflictKeys),
    ) {
        keys.read(Entity::Client(&self.client_id));
        if let Some(institution) = &self.institution_id {
            keys.read(Entity::Institution(institution));
        }
        keys.write(Entity::Request(&self.client_id, transaction_id));
        match &self.grant {
            IssueGrant::ClientCredentials => {}
            IssueGrant::Password { login_id } => {
                if let Some(institution) = &self.institution_id {
                    keys.write(Entity::User(institution, login_id));
                }
            }
            IssueGrant::Refresh { token } => {
                token_keys(state, token, keys);
                // Disabling (or locking) the grant's user or client must not share the
                // refresh's batch: decided against the state before, the refresh
                // would mint tokens after the disable's cutoff.
                if let Some(grant) = state.token(token).map(|t| t.grant) {
                    keys.read(Entity::Client(grant.client_id));
                    if let Some(user) = grant.user {
                        keys.read(Entity::User(&user.institution_id, &user.login_id));
                    }
                }
            }
            IssueGrant::AuthorizationCode(redemption) => redemption_keys(redemption, keys),
        }
    }
}

impl Revoke {
    pub fn conflict_keys(&self, state: &State, keys: &mut ConflictKeys) {
        token_keys(state, &self.token, keys);
    }
}

fn token_keys(state: &State, token: &TokenId, keys: &mut ConflictKeys) {
    keys.write(Entity::Token(token));
    if let Some(family) = state.token(token).and_then(|t| t.grant.family) {
        keys.write(Entity::Family(&family));
    }
}
