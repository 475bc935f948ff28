//! The big projections, compact and never stopping the world: tokens, refresh-token families
//! and the retry index, with interned grant classes, scope lists, users and client ids.
//!
//! - **Compact.** A token is a 43-byte slot (16-byte id, 27-byte packed record) in a hash
//!   table; the few tokens with a family or user add a 24-byte link, rotated refresh tokens a
//!   48-byte rotation record instead. Nothing per token is on the heap by itself, and no `Arc`
//!   is cloned to read a token: a [`TokenView`] borrows interned values.
//! - **Sharded.** Tokens and families live in 1024 and 256 shards, each a hash table behind its
//!   own lock. A reader locks one shard for one lookup, growing a shard rehashes about a
//!   thousandth of the table, and purging walks a few shards per call. Shard sizes are spread
//!   over one doubling (see `shard.rs`) so the tables never double in lockstep.
//! - **Fuzzy but exact snapshots.** Every shard records the highest ledger seq it has applied.
//!   A snapshot is written shard by shard while the writer goes on; loading it restores every
//!   shard with its seq, and replaying the ledger from [`Loaded::replay_from_seq`] applies each
//!   event only to the shards that have not seen it. See `snapshot.rs` for the byte format.
//!
//! **Invariants:** each mutation names the event (`seq`) it comes from, and the changes of one
//! event to one shard are made under one hold of that shard's lock; events arrive in ledger
//! order. No lock is held while another is taken, except an interner's index shard around its
//! append lock. The module does no I/O except through the `Read`/`Write` of a snapshot stream,
//! reads no clock and draws no random numbers.

mod dense;
mod families;
mod interner;
mod memory;
mod pack;
mod retry;
mod shard;
pub mod snapshot;
#[cfg(test)]
mod tests;
mod tokens;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use self::families::{FamilyIssue, FamilyTable, StoredFamily};
use self::interner::Interner;
pub use self::interner::InternerFull;
pub use self::memory::{MemoryReport, PartMemory};
pub use self::retry::{RETRY_ENTRIES_MAX_DEFAULT, RecentAnswer};
use self::retry::{RetryEntry, RetryKey, RetryRing};
pub use self::snapshot::{Loaded, SnapshotError, SnapshotSummary, SnapshotWriter};
use self::tokens::{StoredToken, TokenOp, TokenTable};
use super::shared::ids::{FamilyId, TokenId};
use super::shared::scope::ScopeList;
use super::state::records::{Family, Grant, RETRY_WINDOW_MS, Revocation, Token, TokenEnd, TokenKind, UserIdentity};
use crate::proto::ledger::{GrantType, RevocationReason};

/// What every token of a grant shares, apart from its user and family: few distinct values
/// per deployment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrantClass {
    pub grant_type: GrantType,
    pub client_id: Arc<str>,
    pub institution_id: Arc<str>,
}

/// A user identity interned by value (the `Arc` is the directory's, shared).
#[derive(Clone, Debug)]
struct Identity(Arc<UserIdentity>);

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

impl Eq for Identity {}

impl Hash for Identity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let u = &*self.0;
        (&*u.institution_id, &*u.login_id, &*u.institution_user_id, &u.host_user_id, u.user_type).hash(state);
    }
}

/// Sizes and limits of the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablesConfig {
    /// log2 of the number of token shards.
    pub token_shards_log2: u32,
    /// log2 of the number of family shards.
    pub family_shards_log2: u32,
    /// Most entries in the retry index (see `retry.rs` for what happens when it is full).
    pub retry_entries_max: usize,
    /// Seeds the hashes of interned values and retry keys, which callers influence (a random
    /// value per process, drawn outside the domain, like the conflict-key seed).
    pub hash_seed: u64,
    pub grant_classes_max: u32,
    pub scope_lists_max: u32,
    pub users_max: u32,
    pub clients_max: u32,
}

impl TablesConfig {
    /// For short-lived tables of a few tokens (an audit replay of one token's events): two
    /// shards each, so creating one costs next to nothing.
    pub fn small() -> Self {
        Self { token_shards_log2: 1, family_shards_log2: 1, retry_entries_max: 1 << 12, ..Self::default() }
    }

    pub fn token_shards(&self) -> usize {
        1 << self.token_shards_log2.clamp(1, 16)
    }

    pub fn family_shards(&self) -> usize {
        1 << self.family_shards_log2.clamp(1, 16)
    }
}

impl Default for TablesConfig {
    fn default() -> Self {
        Self {
            token_shards_log2: 10,
            family_shards_log2: 8,
            retry_entries_max: RETRY_ENTRIES_MAX_DEFAULT,
            hash_seed: 0,
            grant_classes_max: 1 << 20,
            scope_lists_max: 1 << 22,
            users_max: 1 << 26,
            clients_max: 1 << 20,
        }
    }
}

/// The tables. Every method takes `&self`: readers and the writer share one instance (behind
/// an `Arc`), and a snapshot can be written from another thread while the writer goes on.
pub struct TokenTables {
    config: TablesConfig,
    tokens: TokenTable,
    families: FamilyTable,
    retries: Mutex<RetryRing>,
    classes: Interner<GrantClass>,
    scopes: Interner<ScopeList>,
    users: Interner<Identity>,
    clients: Interner<Arc<str>>,
    /// Every event up to this seq has been applied in full (see [`TokenTables::advance`]).
    complete_seq: AtomicU64,
    /// Issuances not stored because an interner was full.
    refused_full: AtomicU64,
    /// Retry answers that the purge would drop at this time are not stored
    /// ([`TokenTables::set_retry_floor`]); `i64::MIN` but while a start replays.
    retry_floor_ms: AtomicI64,
}

/// A token, as the domain reads it: what [`Token`] holds, with borrowed interned parts.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenView<'a> {
    pub kind: TokenKind,
    pub grant: GrantView<'a>,
    pub scopes: &'a ScopeList,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub issued_seq: u64,
    /// Set once the token stopped being usable before its expiry.
    pub end: Option<TokenEnd>,
}

/// What [`Grant`] holds, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrantView<'a> {
    pub grant_type: GrantType,
    pub client_id: &'a Arc<str>,
    pub institution_id: &'a Arc<str>,
    pub user: Option<&'a Arc<UserIdentity>>,
    pub family: Option<FamilyId>,
}

impl TokenView<'_> {
    /// The owned [`Token`] (allocates; for tests and for code not yet moved to views).
    pub fn to_token(&self) -> Token {
        let g = &self.grant;
        Token {
            kind: self.kind,
            grant: Arc::new(Grant {
                grant_type: g.grant_type,
                client_id: g.client_id.clone(),
                institution_id: g.institution_id.clone(),
                user: g.user.cloned(),
                family: g.family,
            }),
            scopes: self.scopes.clone(),
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            issued_seq: self.issued_seq,
            end: self.end.clone(),
        }
    }
}

impl Token {
    /// This token as a view (what the tables give), for code that holds an owned token.
    pub fn view(&self) -> TokenView<'_> {
        let g = &*self.grant;
        TokenView {
            kind: self.kind,
            grant: GrantView {
                grant_type: g.grant_type,
                client_id: &g.client_id,
                institution_id: &g.institution_id,
                user: g.user.as_ref(),
                family: g.family,
            },
            scopes: &self.scopes,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            issued_seq: self.issued_seq,
            end: self.end.clone(),
        }
    }
}

/// A family, as the domain reads it: what [`Family`] holds, borrowed.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyView<'a> {
    pub client_id: &'a Arc<str>,
    pub revoked: Option<Revocation>,
    /// The refresh token that may still be exchanged.
    pub live_refresh: Option<TokenId>,
    /// The latest expiry of any member; the family can be forgotten after it.
    pub expires_at_ms: i64,
    pub started_at_ms: i64,
}

impl FamilyView<'_> {
    pub fn to_family(&self) -> Family {
        Family {
            client_id: self.client_id.clone(),
            revoked: self.revoked.clone(),
            live_refresh: self.live_refresh,
            expires_at_ms: self.expires_at_ms,
            started_at_ms: self.started_at_ms,
        }
    }
}

/// A token minted by an issuance.
#[derive(Clone, Copy, Debug)]
pub struct NewToken<'a> {
    pub id: TokenId,
    pub expires_at_ms: i64,
    pub scopes: &'a ScopeList,
}

/// The answer to record for idempotent retries.
#[derive(Clone, Copy, Debug)]
pub struct RequestAnswer<'a> {
    pub transaction_id: &'a str,
    pub fingerprint: &'a [u8; 32],
}

/// Everything a `TokensIssued` event changes here (what `apply_issued` does today).
#[derive(Clone, Copy, Debug)]
pub struct Issuance<'a> {
    pub seq: u64,
    pub recorded_at_ms: i64,
    /// The event's decision time (`issued_at_ms`, or the recorded time for old events): the
    /// start of a new family and the time of the retry answer.
    pub decided_at_ms: i64,
    pub grant_type: GrantType,
    pub client_id: &'a Arc<str>,
    pub institution_id: &'a Arc<str>,
    pub user: Option<&'a Arc<UserIdentity>>,
    pub family: Option<FamilyId>,
    pub access: Option<NewToken<'a>>,
    pub refresh: Option<NewToken<'a>>,
    /// The refresh token this one replaces (ended as rotated when a refresh token is minted).
    pub rotated_from: Option<TokenId>,
    /// Recorded when an access token was minted.
    pub request: Option<RequestAnswer<'a>>,
}

/// Retry answers purged under one hold of the retry lock (~512 × 50 ns).
const RETRY_PURGE_BATCH: usize = 512;

/// How much one [`TokenTables::purge_step`] may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PurgeBudget {
    pub token_shards: usize,
    pub family_shards: usize,
    pub retry_entries: usize,
}

impl Default for PurgeBudget {
    /// 1/256 of the token and family tables per call, and twice the retry answers that
    /// expire per 100 ms at 40 000 requests/s. Called every 100 ms, a full token cycle takes
    /// 26 s. A call walks ~40 000 tokens at 10M (a few ms; docs/tables.md "Measured"), but
    /// each shard's lock is held for that shard's part only, so a reader waits for at most
    /// one shard's walk.
    fn default() -> Self {
        Self { token_shards: 4, family_shards: 1, retry_entries: 8_192 }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub tokens: usize,
    pub families: usize,
    pub retries: usize,
    /// The token cursor passed the last shard: a full cycle ended.
    pub tokens_cycle_done: bool,
}

impl TokenTables {
    pub fn new(config: TablesConfig) -> Self {
        let seed = config.hash_seed;
        Self {
            tokens: TokenTable::new(config.token_shards_log2),
            families: FamilyTable::new(config.family_shards_log2),
            retries: Mutex::new(RetryRing::new(config.retry_entries_max, seed)),
            classes: Interner::new(config.grant_classes_max, seed),
            scopes: Interner::new(config.scope_lists_max, seed ^ 1),
            users: Interner::new(config.users_max, seed ^ 2),
            clients: Interner::new(config.clients_max, seed ^ 3),
            complete_seq: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            retry_floor_ms: AtomicI64::new(i64::MIN),
            config,
        }
    }

    pub fn config(&self) -> &TablesConfig {
        &self.config
    }

    // ---- reads ----

    /// The token `id`, if the tables hold it (expired tokens stay until purged).
    #[inline]
    pub fn token(&self, id: &TokenId) -> Option<TokenView<'_>> {
        self.view(self.tokens.get(id)?)
    }

    #[inline]
    fn view(&self, stored: StoredToken) -> Option<TokenView<'_>> {
        let class = self.classes.get(stored.class)?;
        let user = match stored.user {
            Some(handle) => Some(&self.users.get(handle)?.0),
            None => None,
        };
        Some(TokenView {
            kind: stored.kind,
            grant: GrantView {
                grant_type: class.grant_type,
                client_id: &class.client_id,
                institution_id: &class.institution_id,
                user,
                family: stored.family,
            },
            scopes: self.scopes.get(stored.scopes)?,
            issued_at_ms: stored.issued_at_ms,
            expires_at_ms: stored.expires_at_ms,
            issued_seq: stored.issued_seq,
            end: stored.end,
        })
    }

    pub fn family(&self, id: &FamilyId) -> Option<FamilyView<'_>> {
        self.family_view(self.families.get(id)?)
    }

    fn family_view(&self, stored: StoredFamily) -> Option<FamilyView<'_>> {
        Some(FamilyView {
            client_id: self.clients.get(stored.client)?,
            revoked: stored.revoked,
            live_refresh: stored.live_refresh,
            expires_at_ms: stored.expires_at_ms,
            started_at_ms: stored.started_at_ms,
        })
    }

    pub fn contains_family(&self, id: &FamilyId) -> bool {
        self.families.contains(id)
    }

    /// The recorded answer of `client_id`'s request `transaction_id`, if the index holds it
    /// (the caller checks the retry window against its clock, as today).
    pub fn recent_answer(&self, client_id: &str, transaction_id: &str) -> Option<RecentAnswer> {
        let client = self.clients.find(client_id)?;
        self.retries.lock().find(&RetryKey::new(client, transaction_id)).map(RetryEntry::answer)
    }

    /// Calls `f` with every token, shard by shard, holding no lock while `f` runs.
    pub fn for_each_token(&self, mut f: impl FnMut(TokenId, &TokenView<'_>)) {
        self.tokens.for_each(|id, stored| {
            if let Some(view) = self.view(stored) {
                f(id, &view);
            }
        });
    }

    pub fn for_each_family(&self, mut f: impl FnMut(FamilyId, &FamilyView<'_>)) {
        self.families.for_each(|id, stored| {
            if let Some(view) = self.family_view(stored) {
                f(id, &view);
            }
        });
    }

    /// Tokens the tables hold for `client_id` (live or ended, until purged after expiry) in
    /// `institutions`: what the live-token quota counts. A few interner lookups (each grant
    /// type times each institution), no walk over tokens.
    pub fn tokens_held_by(&self, client_id: &Arc<str>, institutions: &[Arc<str>]) -> u64 {
        const GRANTS: [GrantType; 4] =
            [GrantType::ClientCredentials, GrantType::Password, GrantType::RefreshToken, GrantType::AuthorizationCode];
        let mut held = 0;
        for institution_id in institutions {
            for grant_type in GRANTS {
                let class =
                    GrantClass { grant_type, client_id: client_id.clone(), institution_id: institution_id.clone() };
                if let Some(handle) = self.classes.find(&class) {
                    held += u64::from(self.tokens.class_len(handle));
                }
            }
        }
        held
    }

    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    pub fn family_count(&self) -> usize {
        self.families.len()
    }

    pub fn retry_count(&self) -> usize {
        self.retries.lock().len()
    }

    /// Retry answers dropped because the index was full, and issuances not stored because an
    /// interner was full (both are limits; `/metrics` should show them).
    pub fn dropped_counts(&self) -> (u64, u64) {
        (self.retries.lock().dropped_full, self.refused_full.load(Ordering::Relaxed))
    }

    /// The tables' own accounting of what they allocate.
    pub fn memory(&self) -> MemoryReport {
        let (token_slots, token_sides, token_rare) = self.tokens.memory();
        let (retry_entries, retry_index) = self.retries.lock().memory();
        let mut interned = PartMemory::default();
        interned.add(self.classes.len() as usize, self.classes.allocated_bytes());
        interned.add(self.scopes.len() as usize, self.scopes.allocated_bytes());
        interned.add(self.users.len() as usize, self.users.allocated_bytes());
        interned.add(self.clients.len() as usize, self.clients.allocated_bytes());
        MemoryReport {
            token_slots,
            token_sides,
            token_rare,
            families: self.families.memory(),
            retry_entries,
            retry_index,
            interned,
        }
    }

    // ---- changes (the writer; each names its event) ----

    /// Applies a `TokensIssued` event. `Err` when an interner is full: then nothing of the
    /// issuance is stored, so its tokens read as unknown (inactive), and the refusal is counted.
    // At most three ops (access, refresh, rotation) go into the three slots of `ops` (the lint wall was extended after this code was written).
    #[allow(clippy::indexing_slicing)]
    pub fn issue(&self, issuance: &Issuance<'_>) -> Result<(), InternerFull> {
        let seq = issuance.seq;
        self.note(seq);
        let interned =
            self.stored_tokens(issuance).and_then(|tokens| Ok((tokens, self.clients.intern(issuance.client_id)?)));
        let ((access, refresh), client) = interned.inspect_err(|_| {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
        })?;
        let placeholder = TokenOp::Rotate { id: TokenId([0; 16]), successor: TokenId([0; 16]), at_ms: 0 };
        let mut ops = [placeholder; 3];
        let mut count = 0;
        if let (Some(new), Some(token)) = (issuance.access, access.as_ref()) {
            ops[count] = TokenOp::Insert(new.id, token);
            count += 1;
        }
        if let (Some(new), Some(token)) = (issuance.refresh, refresh.as_ref()) {
            ops[count] = TokenOp::Insert(new.id, token);
            count += 1;
            if let Some(old) = issuance.rotated_from {
                ops[count] = TokenOp::Rotate { id: old, successor: new.id, at_ms: issuance.recorded_at_ms };
                count += 1;
            }
        }
        self.tokens.apply(seq, ops.get(..count).unwrap_or(&[]));
        if let Some(family) = issuance.family {
            let expires_at_ms = [issuance.access, issuance.refresh]
                .iter()
                .flatten()
                .map(|t| t.expires_at_ms)
                .max()
                .unwrap_or(issuance.recorded_at_ms);
            let refresh = issuance.refresh.map(|t| t.id);
            let issue = FamilyIssue { client, expires_at_ms, decided_at_ms: issuance.decided_at_ms, refresh };
            self.families.issued(seq, &family, issue);
        }
        if let (Some(request), Some(access)) = (issuance.request, issuance.access)
            && issuance.decided_at_ms.saturating_add(RETRY_WINDOW_MS) > self.retry_floor_ms.load(Ordering::Relaxed)
        {
            let key = RetryKey::new(client, request.transaction_id);
            let refresh = issuance.refresh.map(|t| t.id);
            let entry = RetryEntry::new(key, request.fingerprint, issuance.decided_at_ms, access.id, refresh);
            self.retries.lock().insert(seq, entry);
        }
        Ok(())
    }

    fn stored_tokens(&self, i: &Issuance<'_>) -> Result<(Option<StoredToken>, Option<StoredToken>), InternerFull> {
        let class = GrantClass {
            grant_type: i.grant_type,
            client_id: i.client_id.clone(),
            institution_id: i.institution_id.clone(),
        };
        let class = self.classes.intern(&class)?;
        let user = match i.user {
            Some(user) => Some(self.users.intern(&Identity(user.clone()))?),
            None => None,
        };
        let stored = |kind: TokenKind, new: Option<NewToken<'_>>| -> Result<Option<StoredToken>, InternerFull> {
            let Some(new) = new else { return Ok(None) };
            Ok(Some(StoredToken {
                kind,
                class,
                scopes: self.scopes.intern(new.scopes)?,
                user,
                family: i.family,
                issued_seq: i.seq,
                issued_at_ms: i.recorded_at_ms,
                expires_at_ms: new.expires_at_ms,
                end: None,
            }))
        };
        Ok((stored(TokenKind::Access, i.access)?, stored(TokenKind::Refresh, i.refresh)?))
    }

    /// Event `seq` revoked `ids` (`TokenRevoked`, `BlastRadiusRevoked`); tokens that ended
    /// already keep their first end.
    pub fn end_tokens(&self, seq: u64, at_ms: i64, reason: RevocationReason, ids: &[TokenId]) {
        self.note(seq);
        let ops: Vec<TokenOp<'_>> = ids.iter().map(|id| TokenOp::End { id: *id, at_ms, reason }).collect();
        self.tokens.apply(seq, &ops);
    }

    /// Event `seq` revoked family `id`.
    pub fn revoke_family(&self, seq: u64, at_ms: i64, id: &FamilyId, reason: RevocationReason) {
        self.note(seq);
        self.families.revoked(seq, id, at_ms, reason);
    }

    /// Makes room for `additional` more tokens, spread over the shards as ids are (a replay
    /// that knows how many events it will apply; the tables grow past it as usual).
    pub fn reserve_tokens(&self, additional: usize) {
        self.tokens.reserve(additional);
    }

    /// While a start replays the ledger at `now_ms`: issuances whose retry answer the purge
    /// would drop at `now_ms` (decided more than the retry window before it) keep no answer.
    /// `i64::MIN` turns it off, which the start does after the replay (so a clock that steps
    /// back later cannot lose a live answer).
    pub fn set_retry_floor(&self, now_ms: i64) {
        self.retry_floor_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Declares every event up to `seq` applied in full. The writer calls it after each event
    /// (or batch); a snapshot then covers at least `seq` for shards the events did not touch,
    /// which keeps the tail it needs short.
    pub fn advance(&self, seq: u64) {
        self.complete_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// A change for event `seq` means every earlier event is applied in full (one writer, in
    /// ledger order).
    fn note(&self, seq: u64) {
        self.complete_seq.fetch_max(seq.saturating_sub(1), Ordering::AcqRel);
    }

    // ---- purge ----

    /// Forgets what can no longer matter at `now_ms`, a bounded amount per call: expired
    /// tokens and families in the next shards of each cursor, retry answers older than the
    /// window from the ring's tail. Call it often (e.g. every 100 ms); one full cycle of the
    /// token cursor forgets everything that expired before the cycle began.
    pub fn purge_step(&self, now_ms: i64, budget: PurgeBudget) -> PurgeReport {
        let (tokens, tokens_cycle_done) = self.tokens.purge_step(now_ms, budget.token_shards);
        let (families, _) = self.families.purge_step(now_ms, budget.family_shards);
        // The ring in batches, each under its own hold of the retry lock (which token requests
        // with a transactionId take), so that a request waits for one batch at most.
        let mut retries = 0;
        while retries < budget.retry_entries {
            let batch = (budget.retry_entries - retries).min(RETRY_PURGE_BATCH);
            let removed = self.retries.lock().purge(now_ms, RETRY_WINDOW_MS, batch);
            retries += removed;
            if removed < batch {
                break;
            }
        }
        PurgeReport { tokens, families, retries, tokens_cycle_done }
    }

    /// Every shard at once (`State::purge_all_expired`; for tests and tools).
    pub fn purge_all(&self, now_ms: i64) -> PurgeReport {
        let budget = PurgeBudget {
            token_shards: self.tokens.shard_count(),
            family_shards: self.families.shard_count(),
            retry_entries: usize::MAX,
        };
        self.purge_step(now_ms, budget)
    }

    /// The owned contents, for comparisons: tokens, families and the retry answers the index
    /// points at (keyed by client id and transaction-id key).
    #[allow(clippy::type_complexity)]
    fn contents(
        &self,
    ) -> (BTreeMap<TokenId, Token>, BTreeMap<FamilyId, Family>, BTreeMap<(String, [u8; 17]), RecentAnswer>) {
        let mut tokens = BTreeMap::new();
        self.for_each_token(|id, view| {
            tokens.insert(id, view.to_token());
        });
        let mut families = BTreeMap::new();
        self.for_each_family(|id, view| {
            families.insert(id, view.to_family());
        });
        let mut answers = BTreeMap::new();
        let ring = self.retries.lock();
        for position in ring.tail()..ring.head() {
            let Some(entry) = ring.at(position) else { continue };
            if ring.find(&entry.key).map(|e| e as *const RetryEntry) == Some(entry as *const RetryEntry) {
                let client = self.clients.get(entry.key.client()).map(|c| c.to_string()).unwrap_or_default();
                answers.insert((client, entry.key.transaction_bytes()), entry.answer());
            }
        }
        (tokens, families, answers)
    }
}

impl Default for TokenTables {
    fn default() -> Self {
        Self::new(TablesConfig::default())
    }
}

impl Clone for TokenTables {
    /// A deep copy, shard by shard (each shard is copied under its read lock).
    fn clone(&self) -> Self {
        let c = &self.config;
        Self {
            config: self.config,
            tokens: self.tokens.duplicate(c.token_shards_log2),
            families: self.families.duplicate(c.family_shards_log2),
            retries: Mutex::new(self.retries.lock().clone()),
            classes: self.classes.duplicate(),
            scopes: self.scopes.duplicate(),
            users: self.users.duplicate(),
            clients: self.clients.duplicate(),
            complete_seq: AtomicU64::new(self.complete_seq.load(Ordering::Acquire)),
            refused_full: AtomicU64::new(self.refused_full.load(Ordering::Relaxed)),
            retry_floor_ms: AtomicI64::new(self.retry_floor_ms.load(Ordering::Relaxed)),
        }
    }
}

impl PartialEq for TokenTables {
    /// Equal contents: the same tokens, families and retry answers, whatever the handles,
    /// shard seqs or purge cursors.
    fn eq(&self, other: &Self) -> bool {
        self.token_count() == other.token_count()
            && self.family_count() == other.family_count()
            && self.contents() == other.contents()
    }
}

impl std::fmt::Debug for TokenTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTables")
            .field("tokens", &self.token_count())
            .field("families", &self.family_count())
            .field("retry_answers", &self.retry_count())
            .finish_non_exhaustive()
    }
}
