//! Property tests of the tables against a plain model (the `State` maps of today, applied the
//! way `apply.rs` applies them), and of snapshot + tail against a full apply.
//!
//! Each case is driven by a seed, printed on failure; `TABLES_SEED=<n>` runs one case.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::domain::state::{EndCause, TokenEnd};

/// The model's retry answer: what the projection kept before the tables (the whole
/// fingerprint; the tables keep 16 bytes of it).
#[derive(Clone, Debug, PartialEq, Eq)]
struct RecentRequest {
    fingerprint: [u8; 32],
    at_ms: i64,
    access: TokenId,
    refresh: Option<TokenId>,
}
use crate::proto::ledger::UserType;

/// A deterministic pseudo-random sequence (no dependency, reproducible from the seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next().to_le_bytes());
        id[8..].copy_from_slice(&self.next().to_le_bytes());
        id
    }
}

/// The directory the events refer to.
struct World {
    clients: Vec<Arc<str>>,
    institutions: Vec<Arc<str>>,
    users: Vec<Arc<UserIdentity>>,
    scopes: Vec<ScopeList>,
}

impl World {
    fn new() -> Self {
        let user = |login: &str, host: &str| {
            Arc::new(UserIdentity {
                institution_id: "01001".into(),
                login_id: login.into(),
                institution_user_id: format!("iu-{login}").into(),
                host_user_id: host.into(),
                user_type: UserType::Retail,
            })
        };
        Self {
            clients: vec!["app".into(), "svc".into(), "partner".into()],
            institutions: vec!["01001".into(), "02002".into()],
            // Two identities of alice: one before and one after a profile update.
            users: vec![user("alice", ""), user("alice", "h1"), user("bob", ""), user("carol", "h3")],
            scopes: vec![
                vec![Box::from("a")].into(),
                vec![Box::from("a"), Box::from("b")].into(),
                vec![Box::from("b"), Box::from("a")].into(),
                Vec::<Box<str>>::new().into(),
            ],
        }
    }
}

#[derive(Clone, Debug)]
struct Minted {
    id: TokenId,
    expires_at_ms: i64,
    scopes: usize,
}

#[derive(Clone, Debug)]
struct IssueSpec {
    grant_type: GrantType,
    client: usize,
    institution: usize,
    user: Option<usize>,
    family: Option<FamilyId>,
    access: Option<Minted>,
    refresh: Option<Minted>,
    rotated_from: Option<TokenId>,
    request: Option<(String, [u8; 32])>,
    decided_at_ms: i64,
}

#[derive(Clone, Debug)]
enum Change {
    Issue(IssueSpec),
    End(Vec<TokenId>, RevocationReason),
    RevokeFamily(FamilyId, RevocationReason),
    /// An event that touches no table (a directory change).
    Other,
}

#[derive(Clone, Debug)]
struct Event {
    seq: u64,
    at_ms: i64,
    change: Change,
}

fn apply_tables(tables: &TokenTables, world: &World, e: &Event, advance: bool) {
    match &e.change {
        Change::Issue(s) => {
            let new = |m: &Option<Minted>| {
                m.as_ref().map(|m| NewToken {
                    id: m.id,
                    expires_at_ms: m.expires_at_ms,
                    scopes: &world.scopes[m.scopes],
                })
            };
            let issuance = Issuance {
                seq: e.seq,
                recorded_at_ms: e.at_ms,
                decided_at_ms: s.decided_at_ms,
                grant_type: s.grant_type,
                client_id: &world.clients[s.client],
                institution_id: &world.institutions[s.institution],
                user: s.user.map(|u| &world.users[u]),
                family: s.family,
                access: new(&s.access),
                refresh: new(&s.refresh),
                rotated_from: s.rotated_from,
                request: s.request.as_ref().map(|(txid, fp)| RequestAnswer { transaction_id: txid, fingerprint: fp }),
            };
            assert_eq!(tables.issue(&issuance), Ok(()));
        }
        Change::End(ids, reason) => tables.end_tokens(e.seq, e.at_ms, *reason, ids),
        Change::RevokeFamily(id, reason) => tables.revoke_family(e.seq, e.at_ms, id, *reason),
        Change::Other => {}
    }
    if advance {
        tables.advance(e.seq);
    }
}

/// Today's projections, changed the way `apply.rs` changes them.
#[derive(Default)]
struct Model {
    tokens: BTreeMap<TokenId, Token>,
    families: BTreeMap<FamilyId, Family>,
    answers: BTreeMap<(String, [u8; 17]), RecentRequest>,
}

impl Model {
    fn apply(&mut self, world: &World, e: &Event) {
        match &e.change {
            Change::Issue(s) => self.issue(world, e, s),
            Change::End(ids, reason) => {
                for id in ids {
                    if let Some(t) = self.tokens.get_mut(id) {
                        t.end.get_or_insert(TokenEnd { seq: e.seq, at_ms: e.at_ms, cause: EndCause::Revoked(*reason) });
                    }
                }
            }
            Change::RevokeFamily(id, reason) => {
                if let Some(f) = self.families.get_mut(id) {
                    f.revoked.get_or_insert(Revocation { seq: e.seq, at_ms: e.at_ms, reason: *reason });
                    f.live_refresh = None;
                }
            }
            Change::Other => {}
        }
    }

    fn issue(&mut self, world: &World, e: &Event, s: &IssueSpec) {
        let grant = Arc::new(Grant {
            grant_type: s.grant_type,
            client_id: world.clients[s.client].clone(),
            institution_id: world.institutions[s.institution].clone(),
            user: s.user.map(|u| world.users[u].clone()),
            family: s.family,
        });
        for (kind, minted) in [(TokenKind::Access, &s.access), (TokenKind::Refresh, &s.refresh)] {
            let Some(m) = minted else { continue };
            let token = Token {
                kind,
                grant: grant.clone(),
                scopes: world.scopes[m.scopes].clone(),
                issued_at_ms: e.at_ms,
                expires_at_ms: m.expires_at_ms,
                issued_seq: e.seq,
                end: None,
            };
            self.tokens.insert(m.id, token);
        }
        if let (Some(old), Some(new)) = (s.rotated_from.and_then(|id| self.tokens.get_mut(&id)), &s.refresh) {
            old.end.get_or_insert(TokenEnd {
                seq: e.seq,
                at_ms: e.at_ms,
                cause: EndCause::Rotated { successor: new.id },
            });
        }
        if let Some(family) = s.family {
            let expires_at_ms =
                s.access.iter().chain(s.refresh.iter()).map(|m| m.expires_at_ms).max().unwrap_or(e.at_ms);
            let entry = self.families.entry(family).or_insert_with(|| Family {
                client_id: grant.client_id.clone(),
                revoked: None,
                live_refresh: None,
                expires_at_ms,
                started_at_ms: s.decided_at_ms,
            });
            entry.expires_at_ms = entry.expires_at_ms.max(expires_at_ms);
            if let Some(r) = &s.refresh {
                entry.live_refresh = Some(r.id);
            }
        }
        if let (Some((txid, fingerprint)), Some(access)) = (&s.request, &s.access) {
            // The model keys by client id and the transaction id (as `RetryKey` reads it).
            let key = (grant.client_id.to_string(), retry::RetryKey::new(0, txid).transaction_bytes());
            let recent = RecentRequest {
                fingerprint: *fingerprint,
                at_ms: s.decided_at_ms,
                access: access.id,
                refresh: s.refresh.as_ref().map(|r| r.id),
            };
            self.answers.insert(key, recent);
        }
    }

    fn purge(&mut self, now_ms: i64) {
        self.tokens.retain(|_, t| t.expires_at_ms > now_ms);
        self.families.retain(|_, f| f.expires_at_ms > now_ms);
        self.answers.retain(|_, r| r.at_ms + RETRY_WINDOW_MS > now_ms);
    }

    fn assert_same(&self, tables: &TokenTables, what: &str) {
        let (tokens, families, answers) = tables.contents();
        assert_eq!(tokens.len(), self.tokens.len(), "{what}: token count");
        for (id, t) in &self.tokens {
            assert_eq!(tokens.get(id), Some(t), "{what}: token {id}");
        }
        assert_eq!(families, self.families, "{what}: families");
        let model: BTreeMap<_, _> = self
            .answers
            .iter()
            .map(|(k, r)| {
                let mut prefix = [0u8; 16];
                prefix.copy_from_slice(&r.fingerprint[..16]);
                let answer =
                    RecentAnswer { fingerprint_prefix: prefix, at_ms: r.at_ms, access: r.access, refresh: r.refresh };
                (k.clone(), answer)
            })
            .collect();
        assert_eq!(answers, model, "{what}: retry answers");
        assert_eq!(tables.token_count(), self.tokens.len(), "{what}: counted tokens");
        assert_eq!(tables.family_count(), self.families.len(), "{what}: counted families");
        // The live-token quota's counts, per client and institution and in all.
        let world = World::new();
        for client in &world.clients {
            let mut all = 0;
            for institution in &world.institutions {
                let held = self
                    .tokens
                    .values()
                    .filter(|t| t.grant.client_id == *client && t.grant.institution_id == *institution)
                    .count() as u64;
                let counted = tables.tokens_held_by(client, std::slice::from_ref(institution));
                assert_eq!(counted, held, "{what}: tokens held by {client} in {institution}");
                all += held;
            }
            assert_eq!(tables.tokens_held_by(client, &world.institutions), all, "{what}: tokens held by {client}");
        }
    }
}

/// Makes plausible events: what `decide` would let through, plus the odd one it would not
/// (revoking unknown tokens) and values that take the rare paths (far expiries, seqs past 48
/// bits, rotations more than 49 days after issuance).
struct Generator {
    rng: Rng,
    seq: u64,
    now_ms: i64,
    issued: Vec<TokenId>,
    /// Live refresh tokens by family, with their client, user and expiry.
    sessions: Vec<(FamilyId, TokenId, usize, Option<usize>, i64)>,
    txids: Vec<String>,
}

impl Generator {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let seq = if rng.chance(20) { (1 << 48) - 40 } else { 0 };
        let txids = (0..6)
            .map(|i| match i {
                0 => "3f2b8c1e-9d4a-4b7e-8f00-123456789abc".to_owned(),
                1 => "3F2B8C1E-9D4A-4B7E-8F00-123456789ABC".to_owned(),
                2 => "not-a-uuid".to_owned(),
                _ => uuid::Uuid::from_bytes(rng.id()).to_string(),
            })
            .collect();
        Self { rng, seq, now_ms: 1_000, issued: Vec::new(), sessions: Vec::new(), txids }
    }

    fn lifetime(&mut self) -> i64 {
        match self.rng.below(20) {
            0 => i64::MAX - self.now_ms,
            1 => 200_000,
            _ => 5 + self.rng.below(200) as i64,
        }
    }

    fn minted(&mut self) -> Minted {
        let lifetime = self.lifetime();
        Minted {
            id: TokenId(self.rng.id()),
            expires_at_ms: self.now_ms.saturating_add(lifetime),
            scopes: self.rng.below(4) as usize,
        }
    }

    fn request(&mut self) -> Option<(String, [u8; 32])> {
        if !self.rng.chance(50) {
            return None;
        }
        let txid = self.txids[self.rng.below(self.txids.len() as u64) as usize].clone();
        let mut fingerprint = [0u8; 32];
        fingerprint[..16].copy_from_slice(&self.rng.id());
        Some((txid, fingerprint))
    }

    fn next(&mut self) -> Event {
        self.seq += 1;
        self.now_ms += match self.rng.below(400) {
            0 => 1 << 32,
            1 => 30_000,
            n => (n % 4) as i64,
        };
        let decided_at_ms = self.now_ms - self.rng.below(2) as i64;
        let change = match self.rng.below(10) {
            0..=3 => {
                let access = self.minted();
                self.issued.push(access.id);
                Change::Issue(IssueSpec {
                    grant_type: GrantType::ClientCredentials,
                    client: self.rng.below(2) as usize,
                    institution: self.rng.below(2) as usize,
                    user: None,
                    family: None,
                    access: Some(access),
                    refresh: None,
                    rotated_from: None,
                    request: self.request(),
                    decided_at_ms,
                })
            }
            4 | 5 => {
                let (access, refresh) = (self.minted(), self.minted());
                let family = FamilyId(self.rng.id());
                let user = self.rng.below(4) as usize;
                let client = if self.rng.chance(80) { 0 } else { 2 };
                self.issued.extend([access.id, refresh.id]);
                self.sessions.push((family, refresh.id, client, Some(user), refresh.expires_at_ms));
                Change::Issue(IssueSpec {
                    grant_type: if client == 0 { GrantType::Password } else { GrantType::AuthorizationCode },
                    client,
                    institution: 0,
                    user: Some(user),
                    family: Some(family),
                    access: Some(access),
                    refresh: Some(refresh),
                    rotated_from: None,
                    request: self.request(),
                    decided_at_ms,
                })
            }
            6 | 7 => {
                // A refresh of a session whose refresh token decide would still accept.
                let now = self.now_ms;
                self.sessions.retain(|s| s.4 > now);
                if self.sessions.is_empty() {
                    Change::Other
                } else {
                    let pick = self.rng.below(self.sessions.len() as u64) as usize;
                    let (family, old, client, user, _) = self.sessions[pick];
                    let (access, refresh) = (self.minted(), self.minted());
                    self.issued.extend([access.id, refresh.id]);
                    self.sessions[pick] = (family, refresh.id, client, user, refresh.expires_at_ms);
                    Change::Issue(IssueSpec {
                        grant_type: GrantType::RefreshToken,
                        client,
                        institution: 0,
                        user,
                        family: Some(family),
                        access: Some(access),
                        refresh: Some(refresh),
                        rotated_from: Some(old),
                        request: self.request(),
                        decided_at_ms,
                    })
                }
            }
            8 => {
                let mut ids = vec![TokenId(self.rng.id())];
                for _ in 0..self.rng.below(3) {
                    if !self.issued.is_empty() {
                        ids.push(self.issued[self.rng.below(self.issued.len() as u64) as usize]);
                    }
                }
                Change::End(
                    ids,
                    if self.rng.chance(50) { RevocationReason::ClientRequest } else { RevocationReason::Admin },
                )
            }
            _ if !self.sessions.is_empty() && self.rng.chance(50) => {
                let pick = self.rng.below(self.sessions.len() as u64) as usize;
                let family = self.sessions.swap_remove(pick).0;
                Change::RevokeFamily(family, RevocationReason::RefreshReuse)
            }
            _ => Change::Other,
        };
        Event { seq: self.seq, at_ms: self.now_ms, change }
    }
}

fn small_config(rng: &mut Rng) -> TablesConfig {
    TablesConfig {
        token_shards_log2: 1 + rng.below(3) as u32,
        family_shards_log2: 1 + rng.below(2) as u32,
        hash_seed: rng.next(),
        ..TablesConfig::default()
    }
}

fn seeds(cases: u64) -> Vec<u64> {
    match std::env::var("TABLES_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=cases).collect(),
    }
}

/// Random issuances, rotations, revocations and incremental purges give what the plain maps
/// give, once both have forgotten everything expired at the end.
#[test]
fn the_tables_agree_with_the_plain_maps() {
    let world = World::new();
    for seed in seeds(40) {
        let mut generator = Generator::new(seed);
        let config = small_config(&mut Rng(seed ^ 0xc0ff));
        let tables = TokenTables::new(config);
        let mut model = Model::default();
        for _ in 0..400 {
            let event = generator.next();
            apply_tables(&tables, &world, &event, true);
            model.apply(&world, &event);
            if generator.rng.chance(10) {
                let budget = PurgeBudget { token_shards: 1, family_shards: 1, retry_entries: 3 };
                tables.purge_step(generator.now_ms, budget);
            }
        }
        tables.purge_all(generator.now_ms);
        model.purge(generator.now_ms);
        model.assert_same(&tables, &format!("seed {seed}"));
        // Lookups agree too, including the retry index by client id and transaction id.
        for id in &generator.issued {
            assert_eq!(tables.token(id).map(|v| v.to_token()), model.tokens.get(id).cloned(), "seed {seed}: {id}");
        }
        for txid in &generator.txids {
            let key = ("app".to_owned(), retry::RetryKey::new(0, txid).transaction_bytes());
            let expected = model.answers.get(&key).map(|r| (r.access, r.refresh, r.at_ms));
            let found = tables.recent_answer("app", txid).map(|a| (a.access, a.refresh, a.at_ms));
            assert_eq!(found, expected, "seed {seed}: retry {txid}");
        }
        assert_eq!(tables.clone(), tables, "seed {seed}: a clone is equal");
    }
}

/// The property the snapshot exists for: a snapshot taken at any moment, written shard by
/// shard while events keep being applied (and purges keep running), then loaded and topped up
/// with the ledger tail, equals applying every event.
#[test]
fn snapshot_at_any_moment_plus_tail_equals_a_full_apply() {
    let world = World::new();
    for seed in seeds(60) {
        let mut generator = Generator::new(seed);
        let mut rng = Rng(seed ^ 0x5eed);
        let config = small_config(&mut rng);
        let advance = rng.chance(70);
        let live = TokenTables::new(config);
        let mut model = Model::default();
        let mut events = Vec::new();
        let start = rng.below(300) as usize;
        let mut stream = Vec::new();
        let mut writer = None;
        for n in 0..400 {
            if n == start {
                writer = Some(live.snapshot());
            }
            let event = generator.next();
            apply_tables(&live, &world, &event, advance);
            model.apply(&world, &event);
            events.push(event);
            if rng.chance(15) {
                live.purge_step(generator.now_ms, PurgeBudget { token_shards: 1, family_shards: 1, retry_entries: 2 });
            }
            // The snapshot advances a few chunks between events.
            if let Some(w) = writer.as_mut() {
                for _ in 0..rng.below(3) {
                    if !w.next_chunk(&mut stream) {
                        break;
                    }
                }
            }
        }
        if let Some(mut w) = writer.take() {
            while w.next_chunk(&mut stream) {}
        }
        let workers = rng.below(3) as usize;
        let (loaded, info) = match TokenTables::load_parallel(&mut stream.as_slice(), config, workers) {
            Ok(loaded) => loaded,
            Err(e) => panic!("seed {seed}: {e}"),
        };
        let last_seq = events.last().map_or(0, |e| e.seq);
        assert!(info.replay_from_seq <= last_seq + 1, "seed {seed}: {info:?}");
        for event in events.iter().filter(|e| e.seq >= info.replay_from_seq) {
            apply_tables(&loaded, &world, event, advance);
        }
        let now = generator.now_ms;
        loaded.purge_all(now);
        live.purge_all(now);
        model.purge(now);
        model.assert_same(&loaded, &format!("seed {seed}: snapshot + tail"));
        model.assert_same(&live, &format!("seed {seed}: live"));
        assert_eq!(loaded, live, "seed {seed}");
    }
}

/// The same with real threads: a snapshot written on another thread while this one applies.
#[test]
fn a_snapshot_written_concurrently_with_the_writer_replays_exactly() {
    let world = World::new();
    for seed in seeds(8) {
        let mut generator = Generator::new(seed);
        let config = TablesConfig { token_shards_log2: 4, family_shards_log2: 2, ..TablesConfig::default() };
        let live = TokenTables::new(config);
        let mut events = Vec::new();
        for _ in 0..2_000 {
            let event = generator.next();
            apply_tables(&live, &world, &event, true);
            events.push(event);
        }
        let stream = std::thread::scope(|scope| {
            let snapshot = scope.spawn(|| {
                let mut out = Vec::new();
                live.snapshot().write_to(&mut out).map(|_| out)
            });
            for _ in 0..3_000 {
                let event = generator.next();
                apply_tables(&live, &world, &event, true);
                events.push(event);
            }
            snapshot.join()
        });
        let Ok(Ok(stream)) = stream else { panic!("seed {seed}: the snapshot thread failed") };
        let (loaded, info) = TokenTables::load(&mut stream.as_slice(), config).unwrap();
        for event in events.iter().filter(|e| e.seq >= info.replay_from_seq) {
            apply_tables(&loaded, &world, event, true);
        }
        assert_eq!(loaded, live, "seed {seed}: replay from {}", info.replay_from_seq);
    }
}

#[test]
fn a_damaged_or_foreign_snapshot_is_refused() {
    let world = World::new();
    let mut generator = Generator::new(7);
    let config = TablesConfig { token_shards_log2: 2, family_shards_log2: 1, ..TablesConfig::default() };
    let tables = TokenTables::new(config);
    for _ in 0..300 {
        apply_tables(&tables, &world, &generator.next(), true);
    }
    let mut stream = Vec::new();
    let summary = tables.snapshot().write_to(&mut stream).unwrap();
    assert_eq!(summary.bytes, stream.len() as u64);
    assert!(TokenTables::load(&mut stream.as_slice(), config).is_ok());
    // A flipped bit is caught wherever it is (sampled: the header, then every 61st byte).
    for at in (0..24).chain((24..stream.len()).step_by(61)) {
        let mut damaged = stream.clone();
        damaged[at] ^= 0x10;
        assert!(TokenTables::load(&mut damaged.as_slice(), config).is_err(), "flip at {at}");
    }
    // So is a stream cut anywhere, including right before its end chunk.
    for len in [0, 10, 24, 100, stream.len() / 2, stream.len() - 33, stream.len() - 1] {
        assert!(TokenTables::load(&mut &stream[..len], config).is_err(), "cut at {len}");
    }
    let mut future = stream.clone();
    future[8] = 3;
    assert!(matches!(TokenTables::load(&mut future.as_slice(), config), Err(SnapshotError::Version(3))));
    assert!(matches!(
        TokenTables::load(&mut &b"TLLEDGER........................"[..], config),
        Err(SnapshotError::Magic)
    ));
    // A stream with a chunk left out fails the chain even though every chunk is intact.
    let first_chunk_len = 21 + u32::from_le_bytes(stream[24 + 17..24 + 21].try_into().unwrap()) as usize + 32;
    let mut missing = stream[..24].to_vec();
    missing.extend_from_slice(&stream[24 + first_chunk_len..]);
    assert!(TokenTables::load(&mut missing.as_slice(), config).is_err());
}

/// The fixture's tables: a fixed sequence of 120 events.
fn fixture_tables(config: TablesConfig) -> TokenTables {
    let world = World::new();
    let mut generator = Generator::new(1_234);
    let tables = TokenTables::new(config);
    for _ in 0..120 {
        apply_tables(&tables, &world, &generator.next(), true);
    }
    tables
}

fn fixture_config() -> TablesConfig {
    TablesConfig { token_shards_log2: 2, family_shards_log2: 1, ..TablesConfig::default() }
}

/// Format version 2, pinned: a fixed sequence of events gives exactly the fixture's bytes,
/// and the fixture loads into the same tables. A change of the format must bump the version
/// and keep a reader of this one.
#[test]
fn the_v2_snapshot_fixture_is_reproduced_and_reads() {
    const FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/tables-snapshot-v2.bin");
    let config = fixture_config();
    let tables = fixture_tables(config);
    let mut stream = Vec::new();
    tables.snapshot().write_to(&mut stream).unwrap();
    if std::env::var("TABLES_WRITE_FIXTURE").is_ok() {
        std::fs::write("tests/fixtures/tables-snapshot-v2.bin", &stream).unwrap();
    }
    assert!(stream == FIXTURE, "the v2 format changed (TABLES_WRITE_FIXTURE=1 rewrites the fixture)");
    assert_eq!(FIXTURE[8..12], 2u32.to_le_bytes());
    let (loaded, info) = TokenTables::load(&mut &FIXTURE[..], config).unwrap();
    assert_eq!(loaded, tables);
    assert_eq!(info.replay_from_seq, 121);
    assert!(loaded.token_count() > 50 && loaded.family_count() > 5, "{loaded:?}");
    // Loaded tables write the same bytes again: the order is the ids', not the tables'.
    let mut again = Vec::new();
    loaded.snapshot().write_to(&mut again).unwrap();
    assert!(again == stream, "a loaded copy writes another stream");
}

/// Format version 1 (entries in the hash-table order of `std`'s map, which the tables used
/// then) still reads into the same tables.
#[test]
fn the_v1_snapshot_fixture_still_reads() {
    const FIXTURE: &[u8] = include_bytes!("../../../tests/fixtures/tables-snapshot-v1.bin");
    assert_eq!(FIXTURE[8..12], 1u32.to_le_bytes());
    let config = fixture_config();
    let (loaded, info) = TokenTables::load(&mut &FIXTURE[..], config).unwrap();
    assert_eq!(loaded, fixture_tables(config));
    assert_eq!(info.replay_from_seq, 121);
    // A version the reader does not know is refused as such.
    let mut future = FIXTURE.to_vec();
    future[8] = 3;
    assert!(matches!(TokenTables::load(&mut future.as_slice(), config), Err(SnapshotError::Version(3))));
}

/// With the digests left to the caller, the stream's structure is still checked: a chunk
/// that claims more entries than its payload can hold is refused before anything is
/// allocated for them, and any damage the stream notices is an error.
#[test]
fn a_stream_checked_by_its_caller_is_still_checked_for_structure() {
    let config = fixture_config();
    let tables = fixture_tables(config);
    let mut stream = Vec::new();
    tables.snapshot().write_to(&mut stream).unwrap();
    let (loaded, _) = TokenTables::load_checked_by_caller(&mut stream.as_slice(), config, 1).unwrap();
    assert_eq!(loaded, tables);
    // The first token chunk: kind at 24, count at 24 + 13.
    let mut lying = stream.clone();
    lying[24 + 13..24 + 17].copy_from_slice(&u32::MAX.to_le_bytes());
    for workers in [0, 1] {
        let refused = TokenTables::load_checked_by_caller(&mut lying.as_slice(), config, workers);
        assert!(matches!(refused, Err(SnapshotError::Corrupt { .. })), "{workers}: {refused:?}");
        // The digest catches it when the reader checks digests.
        assert!(TokenTables::load_parallel(&mut lying.as_slice(), config, workers).is_err());
    }
    // A damaged stored digest: the reader that checks refuses it at once; the one that
    // leaves it to the caller finds the chain broken at the end.
    let first_chunk_len = 21 + u32::from_le_bytes(stream[24 + 17..24 + 21].try_into().unwrap()) as usize + 32;
    let mut digest = stream.clone();
    digest[24 + first_chunk_len - 1] ^= 1;
    assert!(TokenTables::load(&mut digest.as_slice(), config).is_err());
    assert!(TokenTables::load_checked_by_caller(&mut digest.as_slice(), config, 0).is_err());
}

#[test]
fn views_borrow_interned_values_shared_between_tokens() {
    let world = World::new();
    let tables = TokenTables::default();
    let mut ids = Vec::new();
    for n in 0..10u8 {
        let id = TokenId([n; 16]);
        ids.push(id);
        let issuance = Issuance {
            seq: u64::from(n) + 1,
            recorded_at_ms: 5,
            decided_at_ms: 5,
            grant_type: GrantType::ClientCredentials,
            client_id: &world.clients[0],
            institution_id: &world.institutions[0],
            user: None,
            family: None,
            access: Some(NewToken { id, expires_at_ms: 100, scopes: &world.scopes[1] }),
            refresh: None,
            rotated_from: None,
            request: None,
        };
        tables.issue(&issuance).unwrap();
    }
    let a = tables.token(&ids[0]).unwrap();
    let b = tables.token(&ids[9]).unwrap();
    assert!(std::ptr::eq(a.grant.client_id, b.grant.client_id), "one interned client id");
    assert!(Arc::ptr_eq(a.scopes, &world.scopes[1]), "the caller's scope list itself, shared");
    let memory = tables.memory();
    assert_eq!((memory.token_slots.entries, memory.interned.entries), (10, 3));
}

/// A client_credentials issuance of token `[seq; 16]` with a retry answer under `txid`,
/// decided (and recorded) at `decided_at_ms`.
fn answered_issuance<'a>(
    world: &'a World,
    seq: u64,
    decided_at_ms: i64,
    txid: &'a str,
    fingerprint: &'a [u8; 32],
) -> Issuance<'a> {
    Issuance {
        seq,
        recorded_at_ms: decided_at_ms,
        decided_at_ms,
        grant_type: GrantType::ClientCredentials,
        client_id: &world.clients[0],
        institution_id: &world.institutions[0],
        user: None,
        family: None,
        access: Some(NewToken { id: TokenId([seq as u8; 16]), expires_at_ms: i64::MAX, scopes: &world.scopes[0] }),
        refresh: None,
        rotated_from: None,
        request: Some(RequestAnswer { transaction_id: txid, fingerprint }),
    }
}

/// The retry ring is purged in batches under separate holds of its lock, up to the budget.
#[test]
fn the_retry_budget_spans_batches() {
    let world = World::new();
    let tables = TokenTables::new(TablesConfig::small());
    let fingerprint = [7u8; 32];
    for seq in 1..=1_500u64 {
        let txid = format!("tx-{seq}");
        tables.issue(&answered_issuance(&world, seq, seq as i64, &txid, &fingerprint)).unwrap();
    }
    let budget = PurgeBudget { token_shards: 0, family_shards: 0, retry_entries: 1_000 };
    let later = 10 * RETRY_WINDOW_MS;
    assert_eq!(tables.purge_step(later, budget).retries, 1_000);
    assert_eq!(tables.retry_count(), 500);
    assert_eq!(tables.purge_step(later, budget).retries, 500);
    assert_eq!(tables.purge_step(later, budget).retries, 0);
}

/// A start that replays at `now` keeps no retry answer the purge would drop at `now`, and
/// keeps the others; with the floor off again, old answers are kept as before.
#[test]
fn a_replay_floor_drops_only_answers_the_purge_would_drop() {
    let world = World::new();
    let tables = TokenTables::new(TablesConfig::small());
    let fingerprint = [7u8; 32];
    let issue = |seq: u64, decided_at_ms: i64| {
        let txid = format!("tx-{seq}");
        tables.issue(&answered_issuance(&world, seq, decided_at_ms, &txid, &fingerprint)).unwrap();
    };
    let now = 1_000_000;
    tables.set_retry_floor(now);
    issue(1, now - RETRY_WINDOW_MS); // the purge at `now` drops it
    issue(2, now - RETRY_WINDOW_MS + 1); // still answered at `now`
    assert_eq!(tables.retry_count(), 1);
    assert!(tables.recent_answer("app", "tx-2").is_some());
    assert!(tables.recent_answer("app", "tx-1").is_none());
    assert_eq!(tables.token_count(), 2, "the tokens are stored all the same");
    tables.set_retry_floor(i64::MIN);
    issue(3, 0);
    assert!(tables.recent_answer("app", "tx-3").is_some());
}
