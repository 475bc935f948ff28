//! The projections: everything tokenledger knows, built only by applying ledger events.
//! Readers (introspection, client authentication) and the writer's decisions use this state;
//! only `apply` changes it.

pub(crate) mod authorization;
pub(crate) mod cutoff;
pub(crate) mod persist;
pub(crate) mod records;
pub(crate) mod validity;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::tables::{FamilyView, RecentAnswer, TablesConfig, TokenTables, TokenView};
use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::shared::scope::ScopeList;
use crate::proto::ledger::{CredentialDigest, GrantType, InstitutionCustomer};
use authorization::AuthorizationState;
use cutoff::Cutoffs;
pub use records::{EndCause, Family, Grant, RETRY_WINDOW_MS, Revocation, Token, TokenEnd, TokenKind, UserIdentity};

/// A hash map for keys we generate ourselves from a CSPRNG (token and family ids): a fast
/// hasher is safe because callers cannot choose the keys.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The end of the hash chain: the last applied event.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Tokens, refresh-token families and the answers of recent token requests (for
    /// idempotent retries by transactionId), compact and sharded (`domain/tables`); read
    /// through the methods below.
    tables: Tables,
    /// [`user_key`] of (institution id, host user id) to the user's key in `users`.
    pub users_by_host_user_id: HashMap<String, String>,
    /// Failed sign-ins and lockouts per (institution, login id), known or not.
    pub sign_ins: HashMap<SignInKey, SignInRecord>,
    /// Authorization codes and ID-token signing keys.
    pub authorization: AuthorizationState,
    /// Bulk revocations in force (see `cutoff.rs`); validity is computed in `validity.rs`.
    pub cutoffs: Cutoffs,
}

/// Everything of a [`State`] but its token tables, as of `head`: what a snapshot file keeps
/// beside the tables (`ledger/snapshot.rs`). The directory changes rarely, so a copy is mostly
/// `Arc` clones.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RestOfState {
    pub head: ChainHead,
    pub institutions: Institutions,
    pub clients: HashMap<Arc<str>, Arc<Client>>,
    pub users: HashMap<String, Arc<User>>,
    pub users_by_institution_user_id: HashMap<String, String>,
    pub users_by_host_user_id: HashMap<String, String>,
    pub sign_ins: HashMap<SignInKey, SignInRecord>,
    pub authorization: AuthorizationState,
    pub cutoffs: Cutoffs,
}

pub type Institutions = BTreeMap<Arc<str>, Institution>;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Institution {
    pub id: Arc<str>,
    pub name: String,
    pub created_seq: u64,
}

/// Grant types a client may use, as a bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    #[serde(with = "persist::message")]
    pub secret: CredentialDigest,
    pub created_seq: u64,
    /// A disabled client fails authentication (CMN_90004) everywhere.
    pub disabled: bool,
    /// The secret replaced by the last rotation, while its overlap period lasts.
    pub previous_secret: Option<PreviousSecret>,
}

/// A rotated-out client secret that still authenticates until `valid_until_ms`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreviousSecret {
    #[serde(with = "persist::message")]
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

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub identity: Arc<UserIdentity>,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    #[serde(with = "persist::messages")]
    pub institution_customers: Vec<InstitutionCustomer>,
    #[serde(with = "persist::message")]
    pub password: CredentialDigest,
    pub created_seq: u64,
    /// Disabled by an operator: the right password answers CMN_90016.
    pub disabled: bool,
    /// Locked by an operator: sign-ins answer CMN_90009 until unlocked.
    pub locked: bool,
}

/// Whose sign-in failures a [`SignInRecord`] counts: a login id the institution knew at the
/// time, or the keyed digest of one it did not (so mistyped passwords never reach the ledger).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SignInSubject {
    Login(String),
    Unknown([u8; 32]),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SignInKey {
    pub institution_id: String,
    pub subject: SignInSubject,
}

/// Failed sign-ins of one (institution, login id); every value comes from ledger events.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// The token tables of a [`State`]: shared (behind an `Arc`) with the housekeeping thread that
/// purges them without the state's lock; cloning a `State` copies them.
#[derive(Default)]
pub struct Tables(Arc<TokenTables>);

impl Clone for Tables {
    fn clone(&self) -> Self {
        Self(Arc::new((*self.0).clone()))
    }
}

impl PartialEq for Tables {
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
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

    /// An empty state whose token tables have `config`'s sizes and hash seed.
    pub fn with_tables(config: TablesConfig) -> Self {
        Self { tables: Tables(Arc::new(TokenTables::new(config))), ..Self::default() }
    }

    /// A state made of `rest` and `tables` (a loaded snapshot, before its tail is replayed).
    pub fn from_parts(rest: RestOfState, tables: TokenTables) -> Self {
        let RestOfState {
            head,
            institutions,
            clients,
            users,
            users_by_institution_user_id,
            users_by_host_user_id,
            sign_ins,
            authorization,
            cutoffs,
        } = rest;
        Self {
            head,
            institutions,
            clients,
            users,
            users_by_institution_user_id,
            tables: Tables(Arc::new(tables)),
            users_by_host_user_id,
            sign_ins,
            authorization,
            cutoffs,
        }
    }

    /// A copy of everything but the token tables (see [`RestOfState`]).
    pub fn rest(&self) -> RestOfState {
        RestOfState {
            head: self.head.clone(),
            institutions: self.institutions.clone(),
            clients: self.clients.clone(),
            users: self.users.clone(),
            users_by_institution_user_id: self.users_by_institution_user_id.clone(),
            users_by_host_user_id: self.users_by_host_user_id.clone(),
            sign_ins: self.sign_ins.clone(),
            authorization: self.authorization.clone(),
            cutoffs: self.cutoffs.clone(),
        }
    }

    /// The token tables, for the appliers and for reads this type has no method for.
    pub fn tables(&self) -> &TokenTables {
        &self.tables.0
    }

    /// The token tables themselves, for work done without the state's lock (purging,
    /// snapshots); they are changed by `apply` only, apart from purging.
    pub fn shared_tables(&self) -> Arc<TokenTables> {
        self.tables.0.clone()
    }

    /// The token `id`, active or not, if it is not yet purged.
    pub fn token(&self, id: &TokenId) -> Option<TokenView<'_>> {
        self.tables.0.token(id)
    }

    /// Tokens not yet purged.
    pub fn tokens_len(&self) -> usize {
        self.tables.0.token_count()
    }

    /// Calls `f` with every token not yet purged, in no particular order.
    pub fn for_each_token(&self, f: impl FnMut(TokenId, &TokenView<'_>)) {
        self.tables.0.for_each_token(f)
    }

    /// The refresh-token family `id`, if it is not yet purged.
    pub fn family(&self, id: &FamilyId) -> Option<FamilyView<'_>> {
        self.tables.0.family(id)
    }

    /// Calls `f` with every family not yet purged, in no particular order.
    pub fn for_each_family(&self, f: impl FnMut(FamilyId, &FamilyView<'_>)) {
        self.tables.0.for_each_family(f)
    }

    /// Families not yet purged.
    pub fn families_len(&self) -> usize {
        self.tables.0.family_count()
    }

    /// The recorded answer of `client_id`'s token request `transaction_id`, if still kept.
    pub fn recent_answer(&self, client_id: &str, transaction_id: &str) -> Option<RecentAnswer> {
        self.tables.0.recent_answer(client_id, transaction_id)
    }

    /// The token if it is active at `now_ms`: not expired, not ended, family not revoked.
    pub fn active_token(&self, id: &TokenId, now_ms: i64) -> Option<TokenView<'_>> {
        let token = self.token(id)?;
        self.is_active(&token, now_ms).then_some(token)
    }

    pub fn user_by_host_user_id(&self, institution_id: &str, host_user_id: &str) -> Option<&Arc<User>> {
        let key = self.users_by_host_user_id.get(&user_key(institution_id, host_user_id))?;
        self.users.get(key)
    }

    pub fn family_revoked(&self, token: &TokenView<'_>) -> bool {
        token.grant.family.and_then(|f| self.family(&f)).is_some_and(|f| f.revoked.is_some())
    }

    /// Forgets everything that can no longer matter at `now_ms`, the token tables included,
    /// all at once (tests and tools; a server purges the tables a few shards at a time).
    pub fn purge_all_expired(&mut self, now_ms: i64) {
        self.tables.0.purge_all(now_ms);
        self.purge_expired(now_ms);
    }

    /// Forgets the sign-in records and authorization codes that can no longer matter at
    /// `now_ms`. The token tables are purged a few shards at a time without this state's lock
    /// ([`TokenTables::purge_step`] on the shared tables); their events stay in the ledger.
    pub fn purge_expired(&mut self, now_ms: i64) {
        // Records of unknown login ids matter only while their window or lockout lasts.
        self.sign_ins.retain(|key, r| {
            matches!(key.subject, SignInSubject::Login(_)) && r.failed_login_count > 0
                || r.window_ends_at_ms > now_ms
                || r.locked_until_ms > now_ms
        });
        let tables = &self.tables.0;
        self.authorization.purge(now_ms, |family| tables.contains_family(family));
    }
}
