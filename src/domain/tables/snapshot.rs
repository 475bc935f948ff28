//! The snapshot stream of the tables: written shard by shard while the writer goes on, read
//! back into tables that replay the ledger tail exactly.
//!
//! ## Why it is exact
//!
//! A shard is serialised under its read lock and labelled with the seq it covers:
//! `max(shard.applied_seq, complete_seq)`. Every event up to `complete_seq` is fully applied,
//! and the shard holds the changes of every event up to its own `applied_seq` and of no later
//! one (an event's changes to a shard are made under one lock hold, in ledger order). So the
//! shard holds exactly the events up to its label. Loading restores each shard with its label
//! as `applied_seq`; replaying from the smallest label applies each event only to the shards
//! whose label is below it. Interned values are written last: handles are given in order and
//! never reused, so every handle a shard refers to is in the dump.
//!
//! ## Format, version 2 (little-endian)
//!
//! ```text
//! header  = "TLTABLES" version:u32 token_shards_log2:u32 family_shards_log2:u32 reserved:u32
//! chunk   = kind:u8 index:u32 covered_seq:u64 count:u32 payload_len:u32 payload digest:[32]
//!           digest = SHA-256 of the chunk's fields before it
//! stream  = header  tokens(shard 0..S)  families(shard 0..F)  retry*  retry_end
//!           interned*  end
//! ```
//!
//! - `tokens` (kind 1): `count` entries `id:16 flags:u8 class:u32 scopes:u32`, then the numbers
//!   (`seq, issued_at, expires` as 6-byte fields, or with flag 16 as 8-byte fields), then
//!   `family:16` (flag 2), `user:u32` (flag 4), the end (flag 8: `seq:u64 at:i64 cause:u8`,
//!   cause 0 `reason:u8`, cause 1 `successor:16`). Flag 1: a refresh token.
//! - `families` (kind 2): `id:16 flags:u8 client:u32 expires:i64 started:i64`, `live_refresh:16`
//!   (flag 1), `revoked_seq:u64 revoked_at:i64 reason:u8` (flag 2).
//! - `retry` (kind 3): 78-byte entries in ring order; `retry_end` (kind 4): `covered_seq` is
//!   the ring's, the payload the count of entries dropped because the ring was full (u64).
//! - `interned` (kind 5, index 0 classes, 1 scope lists, 2 users, 3 client ids): `first:u32`,
//!   then values in handle order; a string is `len:u32` and UTF-8 bytes.
//! - `end` (kind 255): `tokens:u64 families:u64 retry_entries:u64 chunks:u32`, and the
//!   SHA-256 of the header followed by every earlier chunk's digest (so a missing, repeated or
//!   reordered chunk is caught).
//!
//! The stream has no length up front and no seeks, so it can go over a network as it is made
//! (a Raft snapshot transfer).
//!
//! **Version 2** has version 1's layout; its token and family entries are in ascending id
//! order within each chunk, so the same tables give the same bytes whatever the order their
//! hash tables keep (version 1 listed them in `std`'s hash-table order, which the tables no
//! longer use). A reader takes both versions: the order of entries never mattered to it.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ring::digest;

use super::families::{FamilyShard, StoredFamily};
use super::retry::{RETRY_CHUNK, RetryEntry, RetryRing};
use super::shard::IdKey;
use super::tokens::{StoredToken, TokenShard};
use super::{GrantClass, Identity, TablesConfig, TokenTables};
use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::shared::scope::ScopeList;
use crate::domain::state::records::{EndCause, Revocation, TokenEnd, TokenKind, UserIdentity};
use crate::proto::ledger::{GrantType, RevocationReason, UserType};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"TLTABLES";
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// The oldest stream version a reader takes.
pub const SNAPSHOT_FORMAT_OLDEST: u32 = 1;
const HEADER_LEN: usize = 24;
const CHUNK_HEAD_LEN: usize = 21;
/// Largest chunk payload a reader accepts (a shard of 10M tokens is about 0.5 MiB).
pub const CHUNK_PAYLOAD_MAX: usize = 256 << 20;
/// The shortest encoded token and family entries: a chunk's count is checked against its
/// payload's length before anything is allocated for it.
const TOKEN_ENTRY_MIN: usize = 16 + 1 + 4 + 4 + 18;
const FAMILY_ENTRY_MIN: usize = 16 + 1 + 4 + 8 + 8;
/// Interned values per chunk.
const INTERNED_PER_CHUNK: u32 = 16_384;
/// Longest string a reader accepts.
const STRING_LEN_MAX: usize = 1 << 16;
/// Most names in an interned scope list a reader accepts.
const SCOPES_PER_LIST_MAX: usize = 1 << 16;

const KIND_TOKENS: u8 = 1;
const KIND_FAMILIES: u8 = 2;
const KIND_RETRY: u8 = 3;
const KIND_RETRY_END: u8 = 4;
const KIND_INTERNED: u8 = 5;
const KIND_END: u8 = 255;

const T_REFRESH: u8 = 1;
const T_FAMILY: u8 = 2;
const T_USER: u8 = 4;
const T_END: u8 = 8;
const T_WIDE: u8 = 16;

const F_LIVE_REFRESH: u8 = 1;
const F_REVOKED: u8 = 2;

/// Why a snapshot cannot be used; the caller then replays the ledger in full.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading the snapshot: {0}")]
    Io(#[from] io::Error),
    #[error("not a tables snapshot")]
    Magic,
    #[error("snapshot format version {0} is not supported")]
    Version(u32),
    #[error("snapshot chunk {chunk} is corrupt: {what}")]
    Corrupt { chunk: u32, what: &'static str },
}

/// What a written stream covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The smallest and largest seq a chunk covers: replaying from `covered_min + 1` restores
    /// the tables as of any later seq.
    pub covered_min: u64,
    pub covered_max: u64,
    pub tokens: u64,
    pub families: u64,
    pub retry_entries: u64,
    pub chunks: u32,
    pub bytes: u64,
}

/// What a loaded snapshot needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Replay the ledger from this seq on (through the usual apply path, which skips what each
    /// shard has).
    pub replay_from_seq: u64,
    pub summary: SnapshotSummary,
}

/// Writes the stream a chunk at a time; each chunk is taken under one short lock.
pub struct SnapshotWriter<'t> {
    tables: &'t TokenTables,
    phase: Phase,
    chain: digest::Context,
    summary: SnapshotSummary,
    /// The ring's covered seq and drop count, read when the copy reached the ring's head.
    retry_end: Option<(u64, u64)>,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    Header,
    Tokens(usize),
    Families(usize),
    Retry { next: u64, piece: u32 },
    RetryEnd,
    Interned { which: u32, next: u32, len: u32 },
    End,
    Done,
}

impl TokenTables {
    /// A snapshot stream of these tables as they are while it is written.
    pub fn snapshot(&self) -> SnapshotWriter<'_> {
        SnapshotWriter {
            tables: self,
            phase: Phase::Header,
            chain: digest::Context::new(&digest::SHA256),
            summary: SnapshotSummary { covered_min: u64::MAX, ..SnapshotSummary::default() },
            retry_end: None,
        }
    }

    /// Reads a snapshot stream into new tables (with the stream's shard counts and the rest of
    /// `config`). Any damage or mismatch is an error; nothing half-loaded is returned.
    pub fn load(reader: &mut impl Read, config: TablesConfig) -> Result<(Self, Loaded), SnapshotError> {
        Loader::new(reader, config, Digests::Check)?.run(0)
    }

    /// [`TokenTables::load`], with token shards built on `workers` more threads while this one
    /// reads the stream and checks its digests (start-up on a machine with idle cores).
    pub fn load_parallel(
        reader: &mut impl Read,
        config: TablesConfig,
        workers: usize,
    ) -> Result<(Self, Loaded), SnapshotError> {
        Loader::new(reader, config, Digests::Check)?.run(workers)
    }

    /// [`TokenTables::load_parallel`] for a stream whose bytes the caller checks as a whole
    /// (the snapshot file's body SHA-256, computed while this reads): the chunk digests are
    /// chained as stored instead of recomputed, which saves a second SHA-256 pass over every
    /// byte. Every other check stands (order, counts, shards, handles, the end's chain of the
    /// stored digests), so a stream altered on purpose to keep its container's checksum is
    /// still refused unless it is well formed. The caller must drop the tables when its own
    /// check fails.
    pub fn load_checked_by_caller(
        reader: &mut impl Read,
        config: TablesConfig,
        workers: usize,
    ) -> Result<(Self, Loaded), SnapshotError> {
        Loader::new(reader, config, Digests::Trust)?.run(workers)
    }

    fn covered(&self, applied_seq: u64) -> u64 {
        applied_seq.max(self.complete_seq.load(Ordering::Acquire))
    }
}

impl SnapshotWriter<'_> {
    /// Appends the next part of the stream to `out`; false when the stream is complete.
    pub fn next_chunk(&mut self, out: &mut Vec<u8>) -> bool {
        let tables = self.tables;
        match self.phase {
            Phase::Header => {
                let start = out.len();
                out.extend_from_slice(SNAPSHOT_MAGIC);
                out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
                out.extend_from_slice(&tables.config.token_shards_log2.to_le_bytes());
                out.extend_from_slice(&tables.config.family_shards_log2.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                self.chain.update(out.get(start..).unwrap_or_default());
                self.summary.bytes += HEADER_LEN as u64;
                self.phase = Phase::Tokens(0);
            }
            Phase::Tokens(i) => match tables.tokens.shard(i) {
                Some(lock) => {
                    // A copy (a memcpy of the shard's tables) is all the lock is held for.
                    let (copy, covered) = {
                        let shard = lock.read();
                        (shard.clone(), tables.covered(shard.applied_seq))
                    };
                    let count = copy.len();
                    let mut entries: Vec<(TokenId, StoredToken)> = copy.entries().collect();
                    drop(copy);
                    entries.sort_unstable_by_key(|(id, _)| *id);
                    let mut payload = Vec::with_capacity(count * 48);
                    for (id, token) in &entries {
                        encode_token(&mut payload, id, token);
                    }
                    self.summary.tokens += count as u64;
                    self.chunk(out, KIND_TOKENS, i as u32, covered, count as u32, &payload);
                    self.phase = Phase::Tokens(i + 1);
                }
                None => {
                    self.phase = Phase::Families(0);
                    return self.next_chunk(out);
                }
            },
            Phase::Families(i) => match tables.families.shard(i) {
                Some(lock) => {
                    let (copy, covered) = {
                        let shard = lock.read();
                        (shard.clone(), tables.covered(shard.applied_seq))
                    };
                    let count = copy.len();
                    let mut entries: Vec<(FamilyId, StoredFamily)> = copy.entries().collect();
                    drop(copy);
                    entries.sort_unstable_by_key(|(id, _)| *id);
                    let mut payload = Vec::with_capacity(count * 64);
                    for (id, family) in &entries {
                        encode_family(&mut payload, id, family);
                    }
                    self.summary.families += count as u64;
                    self.chunk(out, KIND_FAMILIES, i as u32, covered, count as u32, &payload);
                    self.phase = Phase::Families(i + 1);
                }
                None => {
                    self.phase = Phase::Retry { next: 0, piece: 0 };
                    return self.next_chunk(out);
                }
            },
            Phase::Retry { next, piece } => {
                let mut payload = Vec::new();
                let (next, count, covered) = {
                    let ring = tables.retries.lock();
                    let mut position = next.max(ring.tail());
                    let mut count = 0u32;
                    while position < ring.head() && (count as usize) < RETRY_CHUNK {
                        if let Some(entry) = ring.at(position) {
                            entry.encode(&mut payload);
                            count += 1;
                        }
                        position += 1;
                    }
                    if position == ring.head() {
                        self.retry_end = Some((tables.covered(ring.applied_seq), ring.dropped_full));
                    }
                    (position, count, tables.covered(ring.applied_seq))
                };
                if count > 0 {
                    self.summary.retry_entries += u64::from(count);
                    self.chunk(out, KIND_RETRY, piece, covered, count, &payload);
                }
                self.phase =
                    if self.retry_end.is_some() { Phase::RetryEnd } else { Phase::Retry { next, piece: piece + 1 } };
                if count == 0 {
                    return self.next_chunk(out);
                }
            }
            Phase::RetryEnd => {
                let (covered, dropped) = self.retry_end.unwrap_or((0, 0));
                self.chunk(out, KIND_RETRY_END, 0, covered, 0, &dropped.to_le_bytes());
                self.phase = Phase::Interned { which: 0, next: 0, len: tables.classes.len() };
            }
            Phase::Interned { which, next, len } => {
                if next >= len {
                    self.phase = match which + 1 {
                        1 => Phase::Interned { which: 1, next: 0, len: tables.scopes.len() },
                        2 => Phase::Interned { which: 2, next: 0, len: tables.users.len() },
                        3 => Phase::Interned { which: 3, next: 0, len: tables.clients.len() },
                        _ => Phase::End,
                    };
                    return self.next_chunk(out);
                }
                let end = len.min(next.saturating_add(INTERNED_PER_CHUNK));
                let mut payload = next.to_le_bytes().to_vec();
                for handle in next..end {
                    match which {
                        0 => encode_class(&mut payload, tables.classes.get(handle)),
                        1 => encode_scopes(&mut payload, tables.scopes.get(handle)),
                        2 => encode_user(&mut payload, tables.users.get(handle).map(|u| &*u.0)),
                        _ => put_str(&mut payload, tables.clients.get(handle).map_or("", |c| c)),
                    }
                }
                self.chunk(out, KIND_INTERNED, which, 0, end - next, &payload);
                self.phase = Phase::Interned { which, next: end, len };
            }
            Phase::End => {
                let mut payload = Vec::new();
                payload.extend_from_slice(&self.summary.tokens.to_le_bytes());
                payload.extend_from_slice(&self.summary.families.to_le_bytes());
                payload.extend_from_slice(&self.summary.retry_entries.to_le_bytes());
                payload.extend_from_slice(&self.summary.chunks.to_le_bytes());
                let chain = std::mem::replace(&mut self.chain, digest::Context::new(&digest::SHA256)).finish();
                payload.extend_from_slice(chain.as_ref());
                self.chunk(out, KIND_END, 0, 0, 0, &payload);
                if self.summary.covered_min == u64::MAX {
                    self.summary.covered_min = 0;
                }
                self.phase = Phase::Done;
            }
            Phase::Done => return false,
        }
        true
    }

    fn chunk(&mut self, out: &mut Vec<u8>, kind: u8, index: u32, covered: u64, count: u32, payload: &[u8]) {
        let start = out.len();
        out.push(kind);
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&covered.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        let digest = digest::digest(&digest::SHA256, out.get(start..).unwrap_or_default());
        out.extend_from_slice(digest.as_ref());
        self.chain.update(digest.as_ref());
        if matches!(kind, KIND_TOKENS | KIND_FAMILIES | KIND_RETRY_END) {
            self.summary.covered_min = self.summary.covered_min.min(covered);
            self.summary.covered_max = self.summary.covered_max.max(covered);
        }
        self.summary.chunks += 1;
        self.summary.bytes += (out.len() - start) as u64;
    }

    /// Writes the whole stream to `w`, one chunk at a time (no lock is held while writing).
    pub fn write_to(mut self, w: &mut impl Write) -> io::Result<SnapshotSummary> {
        let mut buffer = Vec::new();
        while self.next_chunk(&mut buffer) {
            w.write_all(&buffer)?;
            buffer.clear();
        }
        Ok(self.summary)
    }

    pub fn summary(&self) -> SnapshotSummary {
        self.summary
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_numbers(out: &mut Vec<u8>, numbers: [u64; 3], wide: bool) {
    for n in numbers {
        if wide {
            out.extend_from_slice(&n.to_le_bytes());
        } else {
            out.extend_from_slice(&n.to_le_bytes()[..6]);
        }
    }
}

fn encode_token(out: &mut Vec<u8>, id: &TokenId, t: &StoredToken) {
    let numbers = [t.issued_seq, t.issued_at_ms as u64, t.expires_at_ms as u64];
    let wide = [t.issued_at_ms, t.expires_at_ms].iter().any(|n| !(0..=super::pack::MAX48 as i64).contains(n))
        || t.issued_seq > super::pack::MAX48;
    let mut flags = 0;
    for (set, bit) in [
        (t.kind == TokenKind::Refresh, T_REFRESH),
        (t.family.is_some(), T_FAMILY),
        (t.user.is_some(), T_USER),
        (t.end.is_some(), T_END),
        (wide, T_WIDE),
    ] {
        if set {
            flags |= bit;
        }
    }
    out.extend_from_slice(&id.0);
    out.push(flags);
    out.extend_from_slice(&t.class.to_le_bytes());
    out.extend_from_slice(&t.scopes.to_le_bytes());
    put_numbers(out, numbers, wide);
    if let Some(family) = t.family {
        out.extend_from_slice(&family.0);
    }
    if let Some(user) = t.user {
        out.extend_from_slice(&user.to_le_bytes());
    }
    if let Some(end) = &t.end {
        out.extend_from_slice(&end.seq.to_le_bytes());
        out.extend_from_slice(&end.at_ms.to_le_bytes());
        match end.cause {
            EndCause::Revoked(reason) => {
                out.push(0);
                out.push(u8::try_from(reason as i32).unwrap_or(0));
            }
            EndCause::Rotated { successor } => {
                out.push(1);
                out.extend_from_slice(&successor.0);
            }
        }
    }
}

fn encode_family(out: &mut Vec<u8>, id: &FamilyId, f: &StoredFamily) {
    let mut flags = 0;
    if f.live_refresh.is_some() {
        flags |= F_LIVE_REFRESH;
    }
    if f.revoked.is_some() {
        flags |= F_REVOKED;
    }
    out.extend_from_slice(&id.0);
    out.push(flags);
    out.extend_from_slice(&f.client.to_le_bytes());
    out.extend_from_slice(&f.expires_at_ms.to_le_bytes());
    out.extend_from_slice(&f.started_at_ms.to_le_bytes());
    if let Some(live) = f.live_refresh {
        out.extend_from_slice(&live.0);
    }
    if let Some(r) = &f.revoked {
        out.extend_from_slice(&r.seq.to_le_bytes());
        out.extend_from_slice(&r.at_ms.to_le_bytes());
        out.push(u8::try_from(r.reason as i32).unwrap_or(0));
    }
}

fn encode_class(out: &mut Vec<u8>, class: Option<&GrantClass>) {
    let (grant_type, client, institution) =
        class.map_or((0, "", ""), |c| (c.grant_type as i32, &*c.client_id, &*c.institution_id));
    out.extend_from_slice(&grant_type.to_le_bytes());
    put_str(out, client);
    put_str(out, institution);
}

fn encode_scopes(out: &mut Vec<u8>, scopes: Option<&ScopeList>) {
    let scopes = scopes.map_or(&[][..], |s| &s[..]);
    out.extend_from_slice(&(scopes.len() as u32).to_le_bytes());
    for scope in scopes {
        put_str(out, scope);
    }
}

fn encode_user(out: &mut Vec<u8>, user: Option<&UserIdentity>) {
    let (i, l, iu, h, t) = user.map_or(("", "", "", "", 0), |u| {
        (&*u.institution_id, &*u.login_id, &*u.institution_user_id, u.host_user_id.as_str(), u.user_type as i32)
    });
    for s in [i, l, iu, h] {
        put_str(out, s);
    }
    out.extend_from_slice(&t.to_le_bytes());
}

/// A bounds-checked reader over a chunk payload.
struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    fn u48(&mut self) -> Option<u64> {
        let b: [u8; 6] = self.array()?;
        Some(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0]))
    }

    fn string(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        if len > STRING_LEN_MAX {
            return None;
        }
        std::str::from_utf8(self.take(len)?).ok()
    }
}

fn decode_token(b: &mut Bytes<'_>) -> Option<(TokenId, StoredToken)> {
    let id = TokenId(b.array()?);
    let flags = b.u8()?;
    if flags & !(T_REFRESH | T_FAMILY | T_USER | T_END | T_WIDE) != 0 {
        return None;
    }
    let class = b.u32()?;
    let scopes = b.u32()?;
    let (issued_seq, issued_at_ms, expires_at_ms) =
        if flags & T_WIDE != 0 { (b.u64()?, b.i64()?, b.i64()?) } else { (b.u48()?, b.u48()? as i64, b.u48()? as i64) };
    let family = if flags & T_FAMILY != 0 { Some(FamilyId(b.array()?)) } else { None };
    let user = if flags & T_USER != 0 { Some(b.u32()?) } else { None };
    let end = if flags & T_END != 0 {
        let (seq, at_ms) = (b.u64()?, b.i64()?);
        let cause = match b.u8()? {
            0 => EndCause::Revoked(RevocationReason::try_from(i32::from(b.u8()?)).ok()?),
            1 => EndCause::Rotated { successor: TokenId(b.array()?) },
            _ => return None,
        };
        Some(TokenEnd { seq, at_ms, cause })
    } else {
        None
    };
    let kind = if flags & T_REFRESH != 0 { TokenKind::Refresh } else { TokenKind::Access };
    Some((id, StoredToken { kind, class, scopes, user, family, issued_seq, issued_at_ms, expires_at_ms, end }))
}

fn decode_family(b: &mut Bytes<'_>) -> Option<(FamilyId, StoredFamily)> {
    let id = FamilyId(b.array()?);
    let flags = b.u8()?;
    if flags & !(F_LIVE_REFRESH | F_REVOKED) != 0 {
        return None;
    }
    let client = b.u32()?;
    let expires_at_ms = b.i64()?;
    let started_at_ms = b.i64()?;
    let live_refresh = if flags & F_LIVE_REFRESH != 0 { Some(TokenId(b.array()?)) } else { None };
    let revoked = if flags & F_REVOKED != 0 {
        let (seq, at_ms) = (b.u64()?, b.i64()?);
        Some(Revocation { seq, at_ms, reason: RevocationReason::try_from(i32::from(b.u8()?)).ok()? })
    } else {
        None
    };
    Some((id, StoredFamily { client, revoked, live_refresh, expires_at_ms, started_at_ms }))
}

/// The largest handles referenced, checked against the interners at the end.
#[derive(Clone, Copy, Debug, Default)]
struct Handles {
    class: Option<u32>,
    scopes: Option<u32>,
    user: Option<u32>,
    client: Option<u32>,
}

impl Handles {
    fn merge(&mut self, other: Handles) {
        self.class = self.class.max(other.class);
        self.scopes = self.scopes.max(other.scopes);
        self.user = self.user.max(other.user);
        self.client = self.client.max(other.client);
    }
}

struct BuiltShard {
    shard: TokenShard,
    handles: Handles,
    tokens: u64,
}

/// Builds token shard `index` from its chunk; `None` if any entry is malformed, duplicated or
/// belongs to another shard.
fn token_shard(tables: &TokenTables, chunk: &Chunk, index: usize) -> Option<BuiltShard> {
    if chunk.count as usize > chunk.payload.len() / TOKEN_ENTRY_MIN {
        return None;
    }
    let mut shard = TokenShard::default();
    shard.reserve(chunk.count as usize);
    let mut handles = Handles::default();
    let mut b = Bytes { rest: &chunk.payload };
    for _ in 0..chunk.count {
        let (id, token) = decode_token(&mut b)?;
        if tables.tokens.shard_of(&id) != index || !shard.insert(IdKey(id.0), &token) {
            return None;
        }
        handles.class = handles.class.max(Some(token.class));
        handles.scopes = handles.scopes.max(Some(token.scopes));
        handles.user = handles.user.max(token.user);
    }
    if !b.rest.is_empty() {
        return None;
    }
    shard.applied_seq = chunk.covered;
    Some(BuiltShard { shard, handles, tokens: u64::from(chunk.count) })
}

/// One chunk as read: its fields and payload (the digest was checked).
struct Chunk {
    kind: u8,
    index: u32,
    covered: u64,
    count: u32,
    payload: Vec<u8>,
}

/// Whether the reader recomputes each chunk's digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Digests {
    Check,
    /// The caller checks the whole stream's bytes (see `load_checked_by_caller`).
    Trust,
}

/// The stream being read: every chunk's digest is checked (or taken as stored) and chained as
/// it is read.
struct Stream<'r, R> {
    reader: &'r mut R,
    chain: digest::Context,
    summary: SnapshotSummary,
    digests: Digests,
}

impl<R: Read> Stream<'_, R> {
    fn corrupt(&self, what: &'static str) -> SnapshotError {
        SnapshotError::Corrupt { chunk: self.summary.chunks, what }
    }

    fn read_chunk(&mut self) -> Result<Chunk, SnapshotError> {
        let mut head = [0u8; CHUNK_HEAD_LEN];
        self.reader.read_exact(&mut head)?;
        let mut b = Bytes { rest: &head };
        let (kind, index, covered, count, len) = (
            b.u8().unwrap_or(0),
            b.u32().unwrap_or(0),
            b.u64().unwrap_or(0),
            b.u32().unwrap_or(0),
            b.u32().unwrap_or(0) as usize,
        );
        if len > CHUNK_PAYLOAD_MAX {
            return Err(self.corrupt("payload too long"));
        }
        let mut payload = vec![0u8; len];
        self.reader.read_exact(&mut payload)?;
        let mut stored = [0u8; 32];
        self.reader.read_exact(&mut stored)?;
        if self.digests == Digests::Check {
            let mut context = digest::Context::new(&digest::SHA256);
            context.update(&head);
            context.update(&payload);
            if context.finish().as_ref() != stored {
                return Err(self.corrupt("digest mismatch"));
            }
        }
        if kind != KIND_END {
            self.chain.update(&stored);
        }
        self.summary.bytes += (CHUNK_HEAD_LEN + len + 32) as u64;
        Ok(Chunk { kind, index, covered, count, payload })
    }

    fn covers(&mut self, covered: u64) {
        self.summary.covered_min = self.summary.covered_min.min(covered);
        self.summary.covered_max = self.summary.covered_max.max(covered);
    }

    fn next(&mut self) -> Result<Chunk, SnapshotError> {
        let chunk = self.read_chunk()?;
        self.summary.chunks += 1;
        Ok(chunk)
    }

    fn expect(&mut self, kind: u8, index: u32) -> Result<Chunk, SnapshotError> {
        let chunk = self.next()?;
        if chunk.kind != kind || chunk.index != index {
            return Err(self.corrupt("chunk out of order"));
        }
        self.covers(chunk.covered);
        Ok(chunk)
    }
}

struct Loader<'r, R> {
    stream: Stream<'r, R>,
    tables: TokenTables,
    handles: Handles,
}

impl<'r, R: Read> Loader<'r, R> {
    fn new(reader: &'r mut R, config: TablesConfig, digests: Digests) -> Result<Self, SnapshotError> {
        let mut header = [0u8; HEADER_LEN];
        reader.read_exact(&mut header)?;
        let mut b = Bytes { rest: &header };
        if b.array::<8>().as_ref() != Some(SNAPSHOT_MAGIC) {
            return Err(SnapshotError::Magic);
        }
        let version = b.u32().unwrap_or(0);
        if !(SNAPSHOT_FORMAT_OLDEST..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(SnapshotError::Version(version));
        }
        let token_shards_log2 = b.u32().unwrap_or(0);
        let family_shards_log2 = b.u32().unwrap_or(0);
        let bad_header = SnapshotError::Corrupt { chunk: 0, what: "header" };
        if !(1..=16).contains(&token_shards_log2) || !(1..=16).contains(&family_shards_log2) || b.u32() != Some(0) {
            return Err(bad_header);
        }
        let config = TablesConfig { token_shards_log2, family_shards_log2, ..config };
        let mut chain = digest::Context::new(&digest::SHA256);
        chain.update(&header);
        let summary = SnapshotSummary { covered_min: u64::MAX, bytes: HEADER_LEN as u64, ..Default::default() };
        Ok(Self {
            stream: Stream { reader, chain, summary, digests },
            tables: TokenTables::new(config),
            handles: Handles::default(),
        })
    }

    fn corrupt(&self, what: &'static str) -> SnapshotError {
        self.stream.corrupt(what)
    }

    fn run(mut self, workers: usize) -> Result<(TokenTables, Loaded), SnapshotError> {
        self.token_shards(workers)?;
        for index in 0..self.tables.families.shard_count() {
            let chunk = self.stream.expect(KIND_FAMILIES, index as u32)?;
            let shard = self.family_shard(&chunk, index).ok_or_else(|| self.corrupt("family entries"))?;
            self.tables.families.install(index, shard);
        }
        let mut ring = RetryRing::new(self.tables.config.retry_entries_max, self.tables.config.hash_seed);
        let mut chunk = self.stream.next()?;
        let mut piece = 0;
        while chunk.kind == KIND_RETRY {
            if chunk.index != piece || chunk.payload.len() != chunk.count as usize * RetryEntry::ENCODED_LEN {
                return Err(self.corrupt("retry piece"));
            }
            for bytes in chunk.payload.chunks_exact(RetryEntry::ENCODED_LEN) {
                let entry = RetryEntry::decode(bytes).ok_or_else(|| self.corrupt("retry entry"))?;
                self.handles.client = self.handles.client.max(Some(entry.key.client()));
                ring.push(entry);
            }
            self.stream.summary.retry_entries += u64::from(chunk.count);
            piece += 1;
            chunk = self.stream.next()?;
        }
        if chunk.kind != KIND_RETRY_END {
            return Err(self.corrupt("expected the end of the retry index"));
        }
        ring.applied_seq = chunk.covered;
        ring.dropped_full = Bytes { rest: &chunk.payload }.u64().ok_or_else(|| self.corrupt("retry end"))?;
        self.stream.covers(chunk.covered);
        *self.tables.retries.lock() = ring;
        let mut chunk = self.stream.next()?;
        while chunk.kind == KIND_INTERNED {
            self.interned(&chunk).ok_or_else(|| self.corrupt("interned values"))?;
            chunk = self.stream.next()?;
        }
        self.end(&chunk)?;
        let t = &self.tables;
        let fits = |max: Option<u32>, len: u32| max.is_none_or(|m| m < len);
        let h = self.handles;
        if !(fits(h.class, t.classes.len())
            && fits(h.scopes, t.scopes.len())
            && fits(h.user, t.users.len())
            && fits(h.client, t.clients.len()))
        {
            return Err(self.corrupt("a handle without its value"));
        }
        if self.stream.summary.covered_min == u64::MAX {
            self.stream.summary.covered_min = 0;
        }
        self.tables.complete_seq.store(self.stream.summary.covered_min, Ordering::Release);
        let loaded = Loaded { replay_from_seq: self.stream.summary.covered_min + 1, summary: self.stream.summary };
        Ok((self.tables, loaded))
    }

    /// Reads the token chunks and builds their shards, on `workers` threads besides this one
    /// (which reads and checks digests), or here when `workers` is 0.
    fn token_shards(&mut self, workers: usize) -> Result<(), SnapshotError> {
        let shards = self.tables.tokens.shard_count();
        if workers == 0 {
            for index in 0..shards {
                let chunk = self.stream.expect(KIND_TOKENS, index as u32)?;
                let built = token_shard(&self.tables, &chunk, index).ok_or_else(|| self.corrupt("token entries"))?;
                self.built(built, index);
            }
            return Ok(());
        }
        let (tables, stream) = (&self.tables, &mut self.stream);
        let (sender, receiver) = std::sync::mpsc::sync_channel::<(usize, u32, Chunk)>(workers * 2);
        let receiver = parking_lot::Mutex::new(receiver);
        // Set by a worker that found a bad chunk: the reader stops sending. The workers keep
        // taking (and dropping) what was sent until the channel closes, so the reader never
        // waits on a full channel nobody empties.
        let failed = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        let mut error = None;
                        loop {
                            let next = receiver.lock().recv();
                            let Ok((index, chunk_number, chunk)) = next else { break };
                            if error.is_some() || failed.load(Ordering::Relaxed) {
                                continue;
                            }
                            match token_shard(tables, &chunk, index) {
                                Some(built) => {
                                    done.push((index, built.handles, built.tokens));
                                    tables.tokens.install(index, built.shard);
                                }
                                None => {
                                    error = Some(SnapshotError::Corrupt { chunk: chunk_number, what: "token entries" });
                                    failed.store(true, Ordering::Relaxed);
                                }
                            }
                        }
                        error.map_or(Ok(done), Err)
                    })
                })
                .collect();
            let mut read = Ok(());
            let mut merged = Handles::default();
            for index in 0..shards {
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let chunk = match stream.expect(KIND_TOKENS, index as u32) {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        read = Err(e);
                        break;
                    }
                };
                // When every worker is busy and the queue is full, this thread builds the
                // shard itself instead of waiting: it is only reading and hashing otherwise,
                // so on two cores the shards are built by both.
                let chunk_number = stream.summary.chunks;
                match sender.try_send((index, chunk_number, chunk)) {
                    Ok(()) => {}
                    Err(std::sync::mpsc::TrySendError::Full((index, chunk_number, chunk))) => {
                        match token_shard(tables, &chunk, index) {
                            Some(built) => {
                                merged.merge(built.handles);
                                stream.summary.tokens += built.tokens;
                                tables.tokens.install(index, built.shard);
                            }
                            None => {
                                read = Err(SnapshotError::Corrupt { chunk: chunk_number, what: "token entries" });
                                break;
                            }
                        }
                    }
                    Err(std::sync::mpsc::TrySendError::Disconnected(_)) => break,
                }
            }
            drop(sender);
            for handle in handles {
                let done: Result<Vec<_>, SnapshotError> =
                    handle.join().unwrap_or(Err(SnapshotError::Corrupt { chunk: 0, what: "a loader thread failed" }));
                match done {
                    Ok(done) => {
                        for (_, handles, tokens) in done {
                            merged.merge(handles);
                            stream.summary.tokens += tokens;
                        }
                    }
                    Err(e) => read = read.and(Err(e)),
                }
            }
            read.map(|()| merged)
        })
        .map(|merged| self.handles.merge(merged))
    }

    fn built(&mut self, built: BuiltShard, index: usize) {
        self.handles.merge(built.handles);
        self.stream.summary.tokens += built.tokens;
        self.tables.tokens.install(index, built.shard);
    }

    fn family_shard(&mut self, chunk: &Chunk, index: usize) -> Option<FamilyShard> {
        if chunk.count as usize > chunk.payload.len() / FAMILY_ENTRY_MIN {
            return None;
        }
        let mut shard = FamilyShard::default();
        shard.reserve(chunk.count as usize);
        let mut b = Bytes { rest: &chunk.payload };
        for _ in 0..chunk.count {
            let (id, family) = decode_family(&mut b)?;
            if self.tables.families.shard_of(&id) != index || !shard.put(IdKey(id.0), &family) {
                return None;
            }
            self.handles.client = self.handles.client.max(Some(family.client));
        }
        if !b.rest.is_empty() {
            return None;
        }
        shard.applied_seq = chunk.covered;
        self.stream.summary.families += u64::from(chunk.count);
        Some(shard)
    }

    fn interned(&mut self, chunk: &Chunk) -> Option<()> {
        let t = &self.tables;
        let mut b = Bytes { rest: &chunk.payload };
        let first = b.u32()?;
        let len = match chunk.index {
            0 => t.classes.len(),
            1 => t.scopes.len(),
            2 => t.users.len(),
            3 => t.clients.len(),
            _ => return None,
        };
        if first != len {
            return None;
        }
        for _ in 0..chunk.count {
            let pushed = match chunk.index {
                0 => {
                    let grant_type = GrantType::try_from(i32::from_le_bytes(b.array()?)).ok()?;
                    let class =
                        GrantClass { grant_type, client_id: b.string()?.into(), institution_id: b.string()?.into() };
                    t.classes.push_new(class)
                }
                1 => {
                    let count = b.u32()? as usize;
                    if count > SCOPES_PER_LIST_MAX {
                        return None;
                    }
                    let names: Option<Vec<Box<str>>> = (0..count).map(|_| b.string().map(Box::from)).collect();
                    let list: ScopeList = names?.into();
                    t.scopes.push_new(list)
                }
                2 => {
                    let (i, l, iu, h) = (b.string()?, b.string()?, b.string()?, b.string()?);
                    let user_type = UserType::try_from(i32::from_le_bytes(b.array()?)).ok()?;
                    let identity = UserIdentity {
                        institution_id: i.into(),
                        login_id: l.into(),
                        institution_user_id: iu.into(),
                        host_user_id: h.to_owned(),
                        user_type,
                    };
                    t.users.push_new(Identity(Arc::new(identity)))
                }
                _ => t.clients.push_new(Arc::from(b.string()?)),
            };
            pushed.ok()?;
        }
        b.rest.is_empty().then_some(())
    }

    fn end(&mut self, chunk: &Chunk) -> Result<(), SnapshotError> {
        if chunk.kind != KIND_END {
            return Err(self.corrupt("expected the end"));
        }
        let mut b = Bytes { rest: &chunk.payload };
        let counts = (b.u64(), b.u64(), b.u64(), b.u32());
        let expected = (
            Some(self.stream.summary.tokens),
            Some(self.stream.summary.families),
            Some(self.stream.summary.retry_entries),
            Some(self.stream.summary.chunks - 1),
        );
        let chain = std::mem::replace(&mut self.stream.chain, digest::Context::new(&digest::SHA256)).finish();
        if counts != expected || b.take(32) != Some(chain.as_ref()) || !b.rest.is_empty() {
            return Err(self.corrupt("end counts or chain digest"));
        }
        Ok(())
    }
}
