//! The projections: everything tokenledger knows, built only by applying ledger events.
//! Readers (introspection, client authentication) and the writer's decisions use this state;
//! only `apply` changes it.

pub(crate) mod authorization;
pub(crate) mod cutoff;
pub(crate) mod validity;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::shared::scope::ScopeList;
use crate::proto::ledger::{CredentialDigest, GrantType, InstitutionCustomer, RevocationReason, UserType};
use authorization::AuthorizationState;
use cutoff::Cutoffs;

/// A hash map for keys we generate ourselves from a CSPRNG (token and family ids): a fast
/// hasher is safe because callers cannot choose the keys.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How long a token request's answer is kept for idempotent retries (SPEC 3.1).
pub const RETRY_WINDOW_MS: i64 = 60_000;

/// The end of the hash chain: the last applied event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
    pub recorded_at_ms: i64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub head: ChainHead,
    pub institutions: Institutions,
    pub clients: HashMap<Arc<str>, Arc<Client>>,
    /// Keyed by [`user_key`] (institution id and login id).
    pub users: HashMap<String, Arc<User>>,
    /// [`user_key`] of (institution id, institution user id) to the user's key in `users`.
    pub users_by_institution_user_id: HashMap<String, String>,
    /// Every token not yet purged; reached only through the methods below, so that the table
    /// can change shape (a compact structure) without touching its readers.
    tokens: FastMap<TokenId, Token>,
    /// Every refresh-token family not yet purged; reached only through the methods below.
    families: FastMap<FamilyId, Family>,
    /// Answers of recent token requests, for idempotent retries by transactionId.
    pub recent_requests: HashMap<RequestKey, RecentRequest>,
    /// [`user_key`] of (institution id, host user id) to the user's key in `users`.
    pub users_by_host_user_id: HashMap<String, String>,
    /// Failed sign-ins and lockouts per (institution, login id), known or not.
    pub sign_ins: HashMap<SignInKey, SignInRecord>,
    /// Authorization codes and ID-token signing keys.
    pub authorization: AuthorizationState,
    /// Bulk revocations in force (see `cutoff.rs`); validity is computed in `validity.rs`.
    pub cutoffs: Cutoffs,
}

pub type Institutions = BTreeMap<Arc<str>, Institution>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Institution {
    pub id: Arc<str>,
    pub name: String,
    pub created_seq: u64,
}

/// Grant types a client may use, as a bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantTypes(u8);

impl GrantTypes {
    pub fn contains(self, grant: GrantType) -> bool {
        self.0 & Self::bit(grant) != 0
    }

    pub fn insert(&mut self, grant: GrantType) {
        self.0 |= Self::bit(grant);
    }

    fn bit(grant: GrantType) -> u8 {
        1 << (grant as i32 as u8)
    }

    /// Refresh tokens come from password and authorization-code grants; a client holding one
    /// of those may redeem them even without listing `refresh_token` itself.
    pub fn allows_refresh(self) -> bool {
        self.contains(GrantType::RefreshToken)
            || self.contains(GrantType::Password)
            || self.contains(GrantType::AuthorizationCode)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Client {
    pub id: Arc<str>,
    pub name: String,
    pub institution_ids: Vec<Arc<str>>,
    pub grant_types: GrantTypes,
    pub scopes: ScopeList,
    pub redirect_uri: String,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub introspect: bool,
    pub consent_enabled: bool,
    pub secondary_authentication_enabled: bool,
    pub device_registration_enabled: bool,
    /// A first-party app: its access tokens may mint authorization codes (SPEC 3.4).
    pub authorize_partners: bool,
    pub secret: CredentialDigest,
    pub created_seq: u64,
    /// A disabled client fails authentication (CMN_90004) everywhere.
    pub disabled: bool,
    /// The secret replaced by the last rotation, while its overlap period lasts.
    pub previous_secret: Option<PreviousSecret>,
}

/// A rotated-out client secret that still authenticates until `valid_until_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct PreviousSecret {
    pub digest: CredentialDigest,
    pub valid_until_ms: i64,
}

impl Client {
    pub fn serves_institution(&self, institution_id: &str) -> bool {
        self.institution_ids.iter().any(|i| &**i == institution_id)
    }

    /// The previous secret if it still authenticates at `now_ms`.
    pub fn previous_secret_at(&self, now_ms: i64) -> Option<&CredentialDigest> {
        self.previous_secret.as_ref().filter(|p| now_ms < p.valid_until_ms).map(|p| &p.digest)
    }
}

/// The parts of a user that tokens refer to; shared by the user's tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIdentity {
    pub institution_id: Arc<str>,
    pub login_id: Arc<str>,
    pub institution_user_id: Arc<str>,
    pub host_user_id: String,
    pub user_type: UserType,
}

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub identity: Arc<UserIdentity>,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub institution_customers: Vec<InstitutionCustomer>,
    pub password: CredentialDigest,
    pub created_seq: u64,
    /// Disabled by an operator: the right password answers CMN_90016.
    pub disabled: bool,
    /// Locked by an operator: sign-ins answer CMN_90009 until unlocked.
    pub locked: bool,
}

/// Whose sign-in failures a [`SignInRecord`] counts: a login id the institution knew at the
/// time, or the keyed digest of one it did not (so mistyped passwords never reach the ledger).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SignInSubject {
    Login(String),
    Unknown([u8; 32]),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SignInKey {
    pub institution_id: String,
    pub subject: SignInSubject,
}

/// Failed sign-ins of one (institution, login id); every value comes from ledger events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignInRecord {
    /// Failures inside the current observation window.
    pub window_failures: u32,
    /// When the current observation window closes.
    pub window_ends_at_ms: i64,
    /// Failures since the last successful sign-in or unlock.
    pub failed_login_count: u32,
    /// Sign-ins are refused until then.
    pub locked_until_ms: i64,
}

impl SignInRecord {
    pub fn is_locked_at(&self, now_ms: i64) -> bool {
        now_ms < self.locked_until_ms
    }
}

/// The key of a user in [`State::users`].
pub fn user_key(institution_id: &str, login_id: &str) -> String {
    // Institution ids are digits only, so the first ':' always ends them.
    format!("{institution_id}:{login_id}")
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

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub client_id: Arc<str>,
    pub transaction_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentRequest {
    pub fingerprint: [u8; 32],
    pub at_ms: i64,
    pub access: TokenId,
    pub refresh: Option<TokenId>,
}

impl State {
    pub fn client(&self, client_id: &str) -> Option<&Arc<Client>> {
        self.clients.get(client_id)
    }

    pub fn user(&self, institution_id: &str, login_id: &str) -> Option<&Arc<User>> {
        self.users.get(&user_key(institution_id, login_id))
    }

    pub fn user_by_institution_user_id(&self, institution_id: &str, institution_user_id: &str) -> Option<&Arc<User>> {
        let key = self.users_by_institution_user_id.get(&user_key(institution_id, institution_user_id))?;
        self.users.get(key)
    }

    /// The token `id`, active or not, if it is not yet purged.
    pub fn token(&self, id: &TokenId) -> Option<&Token> {
        self.tokens.get(id)
    }

    /// The token `id` to change (only `apply` and the appliers it calls change state).
    pub(crate) fn token_mut(&mut self, id: &TokenId) -> Option<&mut Token> {
        self.tokens.get_mut(id)
    }

    pub(crate) fn insert_token(&mut self, id: TokenId, token: Token) {
        self.tokens.insert(id, token);
    }

    /// Tokens not yet purged.
    pub fn tokens_len(&self) -> usize {
        self.tokens.len()
    }

    /// Every token not yet purged, in no particular order.
    pub fn tokens(&self) -> impl Iterator<Item = (&TokenId, &Token)> {
        self.tokens.iter()
    }

    /// The refresh-token family `id`, if it is not yet purged.
    pub fn family(&self, id: &FamilyId) -> Option<&Family> {
        self.families.get(id)
    }

    pub(crate) fn family_mut(&mut self, id: &FamilyId) -> Option<&mut Family> {
        self.families.get_mut(id)
    }

    /// The family `id`, made by `new` if it is not there.
    pub(crate) fn family_or_insert_with(&mut self, id: FamilyId, new: impl FnOnce() -> Family) -> &mut Family {
        self.families.entry(id).or_insert_with(new)
    }

    /// Families not yet purged.
    pub fn families_len(&self) -> usize {
        self.families.len()
    }

    /// Every family not yet purged, in no particular order.
    pub fn families(&self) -> impl Iterator<Item = (&FamilyId, &Family)> {
        self.families.iter()
    }

    /// The token if it is active at `now_ms`: not expired, not ended, family not revoked.
    pub fn active_token(&self, id: &TokenId, now_ms: i64) -> Option<&Token> {
        let token = self.tokens.get(id)?;
        self.is_active(token, now_ms).then_some(token)
    }

    pub fn user_by_host_user_id(&self, institution_id: &str, host_user_id: &str) -> Option<&Arc<User>> {
        let key = self.users_by_host_user_id.get(&user_key(institution_id, host_user_id))?;
        self.users.get(key)
    }

    pub fn family_revoked(&self, token: &Token) -> bool {
        token.grant.family.and_then(|f| self.families.get(&f)).is_some_and(|f| f.revoked.is_some())
    }

    /// Forgets what can no longer matter at `now_ms`: expired tokens and families, and retry
    /// answers older than the retry window. Their events stay in the ledger.
    pub fn purge_expired(&mut self, now_ms: i64) {
        self.tokens.retain(|_, t| t.expires_at_ms > now_ms);
        self.families.retain(|_, f| f.expires_at_ms > now_ms);
        self.recent_requests.retain(|_, r| r.at_ms + RETRY_WINDOW_MS > now_ms);
        // Records of unknown login ids matter only while their window or lockout lasts.
        self.sign_ins.retain(|key, r| {
            matches!(key.subject, SignInSubject::Login(_)) && r.failed_login_count > 0
                || r.window_ends_at_ms > now_ms
                || r.locked_until_ms > now_ms
        });
        let families = &self.families;
        self.authorization.purge(now_ms, |family| families.contains_key(family));
    }
}
