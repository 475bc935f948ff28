//! The token table: one 43-byte slot per token (16-byte id and a 27-byte packed record) in
//! sharded hash tables, with what few tokens need kept beside the slot.
//!
//! A slot holds the issuance (seq, time, expiry as 48-bit fields), the kind, the grant class
//! handle and one more 32-bit field: the scope-list handle for a token with neither family nor
//! user (client_credentials), else the index of its side record in the shard's slab:
//!
//! - a *link* (24 bytes: family id, scope and user handles) for a live token of a sign-in;
//! - a *rotation* (48 bytes: the link, the successor, and the rotation's seq and time as deltas
//!   from the issuance) for a refresh token that was exchanged, kept for reuse detection.
//!
//! Revocations, rotations whose deltas do not fit 32 bits, and numbers that do not fit 48 bits
//! live in small per-shard maps; the slot's flags say when to look there.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use parking_lot::RwLock;

use super::dense::DenseMap;
use super::memory::{PartMemory, map_bytes};
use super::pack::{NO_HANDLE, Slab, get_i48, get_u32, get_u48, i48, u48};
use super::shard::{CacheLine, IdKey, IdMap, ShardMap};
use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::state::records::{EndCause, TokenEnd, TokenKind};
use crate::proto::ledger::RevocationReason;

/// A token as the table keeps it: interned parts as handles, everything else by value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredToken {
    pub(crate) kind: TokenKind,
    pub(crate) class: u32,
    pub(crate) scopes: u32,
    pub(crate) user: Option<u32>,
    pub(crate) family: Option<FamilyId>,
    pub(crate) issued_seq: u64,
    pub(crate) issued_at_ms: i64,
    pub(crate) expires_at_ms: i64,
    pub(crate) end: Option<TokenEnd>,
}

/// One change an event makes to the token table.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TokenOp<'a> {
    /// A new token (`end` is ignored); replaces a token of the same id.
    Insert(TokenId, &'a StoredToken),
    /// `id` was exchanged for `successor` at `at_ms` (if it has not ended already).
    Rotate { id: TokenId, successor: TokenId, at_ms: i64 },
    /// `id` was revoked at `at_ms` (if it has not ended already).
    End { id: TokenId, at_ms: i64, reason: RevocationReason },
}

impl TokenOp<'_> {
    fn id(&self) -> &TokenId {
        match self {
            Self::Insert(id, _) | Self::Rotate { id, .. } | Self::End { id, .. } => id,
        }
    }
}

const REFRESH: u8 = 1;
/// `extra` indexes `links`.
const LINK: u8 = 2;
/// `extra` indexes `rotations`; the token ended by rotation.
const ROTATION: u8 = 4;
/// The token's end is in `ends`.
const END_MAP: u8 = 8;
/// The numbers are in `wide`; the slot's number fields are zero.
const WIDE: u8 = 16;
/// The side record's family field is set.
const HAS_FAMILY: u8 = 32;
/// The side record's user field is set.
const HAS_USER: u8 = 64;

/// The packed record of one token (27 bytes, byte-aligned, so a slot with its key is 43).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    seq: [u8; 6],
    issued: [u8; 6],
    expires: [u8; 6],
    flags: u8,
    class: [u8; 4],
    /// The scope handle, or with `LINK`/`ROTATION` the index of the side record.
    extra: [u8; 4],
}

/// A token's family, user and scopes (24 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    family: [u8; 16],
    scopes: [u8; 4],
    user: [u8; 4],
}

/// A rotated refresh token's link and end (48 bytes). The end's seq and time are stored as
/// deltas from the issuance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rotation {
    link: Link,
    successor: [u8; 16],
    seq_delta: [u8; 4],
    at_delta: [u8; 4],
}

/// Numbers that do not fit 48 bits (negative times, far expiries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wide {
    issued_seq: u64,
    issued_at_ms: i64,
    expires_at_ms: i64,
}

/// One shard: its own lock guards all of it.
#[derive(Clone, Debug, Default)]
#[repr(C)]
pub(crate) struct TokenShard {
    slots: DenseMap<Slot>,
    links: Slab<Link>,
    rotations: Slab<Rotation>,
    ends: IdMap<TokenEnd>,
    wide: IdMap<Wide>,
    /// The highest ledger seq whose changes to this shard are all in it.
    pub(crate) applied_seq: u64,
}

impl TokenShard {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    pub(crate) fn get(&self, key: &IdKey) -> Option<StoredToken> {
        let slot = self.slots.get(key)?;
        let (issued_seq, issued_at_ms, expires_at_ms) = if slot.flags & WIDE != 0 {
            let wide = self.wide.get(key)?;
            (wide.issued_seq, wide.issued_at_ms, wide.expires_at_ms)
        } else {
            (get_u48(slot.seq), get_i48(slot.issued), get_i48(slot.expires))
        };
        let extra = get_u32(slot.extra);
        let rotation = if slot.flags & ROTATION != 0 { Some(*self.rotations.get(extra)?) } else { None };
        let link = if slot.flags & LINK != 0 { Some(*self.links.get(extra)?) } else { rotation.map(|r| r.link) };
        let (scopes, user, family) = match link {
            None => (extra, None, None),
            Some(link) => (
                get_u32(link.scopes),
                (slot.flags & HAS_USER != 0).then(|| get_u32(link.user)),
                (slot.flags & HAS_FAMILY != 0).then_some(FamilyId(link.family)),
            ),
        };
        let end = match rotation {
            Some(r) => Some(TokenEnd {
                seq: issued_seq + u64::from(get_u32(r.seq_delta)),
                at_ms: issued_at_ms + i64::from(get_u32(r.at_delta)),
                cause: EndCause::Rotated { successor: TokenId(r.successor) },
            }),
            None if slot.flags & END_MAP != 0 => self.ends.get(key).cloned(),
            None => None,
        };
        let kind = if slot.flags & REFRESH != 0 { TokenKind::Refresh } else { TokenKind::Access };
        Some(StoredToken {
            kind,
            class: get_u32(slot.class),
            scopes,
            user,
            family,
            issued_seq,
            issued_at_ms,
            expires_at_ms,
            end,
        })
    }

    /// Stores `token` under `key` (with its end, if it has one). True if the key is new.
    pub(crate) fn insert(&mut self, key: IdKey, token: &StoredToken) -> bool {
        self.insert_replacing(key, token).is_none()
    }

    /// [`Self::insert`], returning the grant class of the token it replaced, if any.
    pub(crate) fn insert_replacing(&mut self, key: IdKey, token: &StoredToken) -> Option<u32> {
        let old = self.slots.get(&key).copied();
        if let Some(old) = old {
            self.release(&key, old);
        }
        let mut flags = if token.kind == TokenKind::Refresh { REFRESH } else { 0 };
        let extra = if token.family.is_some() || token.user.is_some() {
            flags |= LINK;
            if token.family.is_some() {
                flags |= HAS_FAMILY;
            }
            if token.user.is_some() {
                flags |= HAS_USER;
            }
            self.links.alloc(Link {
                family: token.family.map_or([0; 16], |f| f.0),
                scopes: token.scopes.to_le_bytes(),
                user: token.user.unwrap_or(NO_HANDLE).to_le_bytes(),
            })
        } else {
            token.scopes
        };
        let (seq, issued, expires) = match (u48(token.issued_seq), i48(token.issued_at_ms), i48(token.expires_at_ms)) {
            (Some(seq), Some(issued), Some(expires)) => (seq, issued, expires),
            _ => {
                flags |= WIDE;
                let wide = Wide {
                    issued_seq: token.issued_seq,
                    issued_at_ms: token.issued_at_ms,
                    expires_at_ms: token.expires_at_ms,
                };
                self.wide.insert(key, wide);
                ([0; 6], [0; 6], [0; 6])
            }
        };
        let slot = Slot { seq, issued, expires, flags, class: token.class.to_le_bytes(), extra: extra.to_le_bytes() };
        self.slots.insert(key, slot);
        if let Some(end) = &token.end {
            match end.cause {
                EndCause::Rotated { successor } => self.rotate(&key, successor, end.seq, end.at_ms),
                EndCause::Revoked(_) => self.end(&key, end.clone()),
            }
        }
        old.map(|old| get_u32(old.class))
    }

    /// Ends `key` by rotation, unless it has ended already (the first end stands).
    pub(crate) fn rotate(&mut self, key: &IdKey, successor: TokenId, seq: u64, at_ms: i64) {
        let Self { slots, links, rotations, ends, .. } = self;
        let Some(slot) = slots.get_mut(key) else { return };
        if slot.flags & (ROTATION | END_MAP) != 0 {
            return;
        }
        let deltas = if slot.flags & WIDE != 0 {
            None
        } else {
            let seq_delta = seq.checked_sub(get_u48(slot.seq)).and_then(|d| u32::try_from(d).ok());
            let at_delta = at_ms.checked_sub(get_i48(slot.issued)).and_then(|d| u32::try_from(d).ok());
            seq_delta.zip(at_delta)
        };
        let Some((seq_delta, at_delta)) = deltas else {
            ends.insert(*key, TokenEnd { seq, at_ms, cause: EndCause::Rotated { successor } });
            slot.flags |= END_MAP;
            return;
        };
        let extra = get_u32(slot.extra);
        let link = if slot.flags & LINK != 0 {
            let link = links.get(extra).copied();
            links.release(extra);
            link.unwrap_or(Link { family: [0; 16], scopes: NO_HANDLE.to_le_bytes(), user: NO_HANDLE.to_le_bytes() })
        } else {
            Link { family: [0; 16], scopes: slot.extra, user: NO_HANDLE.to_le_bytes() }
        };
        let rotation = Rotation {
            link,
            successor: successor.0,
            seq_delta: seq_delta.to_le_bytes(),
            at_delta: at_delta.to_le_bytes(),
        };
        slot.extra = rotations.alloc(rotation).to_le_bytes();
        slot.flags = (slot.flags & !LINK) | ROTATION;
    }

    /// Ends `key` with `end`, unless it has ended already.
    pub(crate) fn end(&mut self, key: &IdKey, end: TokenEnd) {
        let Some(slot) = self.slots.get_mut(key) else { return };
        if slot.flags & (ROTATION | END_MAP) != 0 {
            return;
        }
        slot.flags |= END_MAP;
        self.ends.insert(*key, end);
    }

    /// Drops every token whose expiry is at or before `now_ms`, telling `removed` the grant
    /// class of each; returns how many.
    pub(crate) fn purge(&mut self, now_ms: i64, mut removed: impl FnMut(u32)) -> usize {
        let Self { slots, links, rotations, ends, wide, .. } = self;
        let before = slots.len();
        slots.retain(|key, slot| {
            let expires_at_ms = if slot.flags & WIDE != 0 {
                wide.get(key).map_or(i64::MIN, |w| w.expires_at_ms)
            } else {
                get_i48(slot.expires)
            };
            if expires_at_ms > now_ms {
                return true;
            }
            removed(get_u32(slot.class));
            release(links, rotations, ends, wide, key, *slot);
            false
        });
        slots.shrink_if_sparse();
        before - slots.len()
    }

    /// Calls `f` with the grant class of every token of the shard.
    fn for_each_class(&self, mut f: impl FnMut(u32)) {
        for (_, slot) in self.slots.iter() {
            f(get_u32(slot.class));
        }
    }

    fn release(&mut self, key: &IdKey, slot: Slot) {
        release(&mut self.links, &mut self.rotations, &mut self.ends, &mut self.wide, key, slot);
    }

    /// Every token of the shard, in table order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (TokenId, StoredToken)> + '_ {
        self.slots.keys().filter_map(|key| self.get(key).map(|token| (TokenId(key.0), token)))
    }

    fn memory(&self) -> (PartMemory, PartMemory, PartMemory) {
        let mut slots = PartMemory::default();
        slots.add(self.slots.len(), self.slots.allocated_bytes());
        let mut sides = PartMemory::default();
        sides.add(self.links.live(), self.links.allocated_bytes());
        sides.add(self.rotations.live(), self.rotations.allocated_bytes());
        let mut rare = PartMemory::default();
        rare.add(self.ends.len(), map_bytes(self.ends.capacity(), size_of::<(IdKey, TokenEnd)>()));
        rare.add(self.wide.len(), map_bytes(self.wide.capacity(), size_of::<(IdKey, Wide)>()));
        (slots, sides, rare)
    }

    /// Pre-sizes the slot table (the snapshot loader knows each shard's count).
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
    }
}

fn release(
    links: &mut Slab<Link>,
    rotations: &mut Slab<Rotation>,
    ends: &mut IdMap<TokenEnd>,
    wide: &mut IdMap<Wide>,
    key: &IdKey,
    slot: Slot,
) {
    if slot.flags & LINK != 0 {
        links.release(get_u32(slot.extra));
    }
    if slot.flags & ROTATION != 0 {
        rotations.release(get_u32(slot.extra));
    }
    if slot.flags & END_MAP != 0 {
        ends.remove(key);
    }
    if slot.flags & WIDE != 0 {
        wide.remove(key);
    }
}

/// The sharded token table. Each shard has its own lock; readers hold one shard's lock for one
/// lookup, and growing a shard rehashes only that shard.
pub(crate) struct TokenTable {
    shards: Box<[CacheLine<RwLock<TokenShard>>]>,
    map: ShardMap,
    len: AtomicUsize,
    /// Tokens held per grant class (so per client: a class names one), for the live-token
    /// quota; kept with `len`.
    per_class: ClassCounts,
    /// The next shard the incremental purge visits.
    cursor: AtomicUsize,
}

/// A count per grant-class handle, growing with the handles; read without the writer's help.
#[derive(Default)]
pub(crate) struct ClassCounts(RwLock<Vec<AtomicU32>>);

impl ClassCounts {
    pub(crate) fn get(&self, class: u32) -> u32 {
        self.0.read().get(class as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn add(&self, class: u32, n: u32) {
        if n == 0 {
            return;
        }
        if let Some(count) = self.0.read().get(class as usize) {
            count.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let mut counts = self.0.write();
        let needed = (class as usize + 1).max(counts.len());
        counts.resize_with(needed, || AtomicU32::new(0));
        if let Some(count) = counts.get(class as usize) {
            count.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn sub(&self, class: u32, n: u32) {
        if let Some(count) = self.0.read().get(class as usize) {
            // Saturating: a count never goes below what it holds.
            let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c.saturating_sub(n)));
        }
    }

    fn duplicate(&self) -> Self {
        let counts = self.0.read().iter().map(|c| AtomicU32::new(c.load(Ordering::Relaxed))).collect();
        Self(RwLock::new(counts))
    }
}

/// Counts grant classes in a few slots before touching the shared counts (a purge step or a
/// loaded shard has few distinct classes).
#[derive(Default)]
struct ClassTally(Vec<(u32, u32)>);

impl ClassTally {
    fn note(&mut self, class: u32) {
        match self.0.iter_mut().find(|(c, _)| *c == class) {
            Some((_, n)) => *n += 1,
            None => self.0.push((class, 1)),
        }
    }
}

impl TokenTable {
    pub(crate) fn new(shards_log2: u32) -> Self {
        let map = ShardMap::new(shards_log2);
        let shards = (0..map.len()).map(|_| CacheLine(RwLock::new(TokenShard::default()))).collect();
        Self { shards, map, len: AtomicUsize::new(0), per_class: ClassCounts::default(), cursor: AtomicUsize::new(0) }
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    #[inline]
    pub(crate) fn shard_of(&self, id: &TokenId) -> usize {
        self.map.shard_of(&id.0)
    }

    pub(crate) fn shard(&self, index: usize) -> Option<&RwLock<TokenShard>> {
        self.shards.get(index).map(|s| &s.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Makes room for about `additional` more tokens in all: each shard its share of them.
    pub(crate) fn reserve(&self, additional: usize) {
        for (index, shard) in self.shards.iter().enumerate() {
            shard.write().reserve((additional as f64 * self.map.share(index)).ceil() as usize);
        }
    }

    /// Tokens held of grant class `class` (until purged, ended or not).
    pub(crate) fn class_len(&self, class: u32) -> u32 {
        self.per_class.get(class)
    }

    #[inline]
    pub(crate) fn get(&self, id: &TokenId) -> Option<StoredToken> {
        self.shards.get(self.shard_of(id))?.read().get(&IdKey(id.0))
    }

    /// Applies the changes of event `seq`. Each shard's share is applied under one hold of its
    /// lock and then marks the shard as having applied `seq`, so a snapshot sees all of an
    /// event's changes to a shard or none; a shard that has applied `seq` already (loaded from
    /// a snapshot that covers it) skips it.
    // Indexing is bounded by the `ops.len() <= small.len()` test just above (the lint wall was extended after this code was written).
    #[allow(clippy::indexing_slicing)]
    pub(crate) fn apply(&self, seq: u64, ops: &[TokenOp<'_>]) {
        let mut small = [(0usize, 0usize); 4];
        let mut heap = Vec::new();
        let order: &mut [(usize, usize)] = if ops.len() <= small.len() {
            for (i, op) in ops.iter().enumerate() {
                small[i] = (self.shard_of(op.id()), i);
            }
            &mut small[..ops.len()]
        } else {
            heap.extend(ops.iter().enumerate().map(|(i, op)| (self.shard_of(op.id()), i)));
            &mut heap
        };
        order.sort_unstable();
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            let Some(lock) = group.first().and_then(|(shard, _)| self.shards.get(*shard)) else { continue };
            let mut shard = lock.write();
            if seq <= shard.applied_seq {
                continue;
            }
            for op in group.iter().filter_map(|(_, i)| ops.get(*i)) {
                match *op {
                    TokenOp::Insert(id, token) => {
                        match shard.insert_replacing(IdKey(id.0), token) {
                            None => {
                                self.len.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(old_class) => self.per_class.sub(old_class, 1),
                        }
                        self.per_class.add(token.class, 1);
                    }
                    TokenOp::Rotate { id, successor, at_ms } => shard.rotate(&IdKey(id.0), successor, seq, at_ms),
                    TokenOp::End { id, at_ms, reason } => {
                        shard.end(&IdKey(id.0), TokenEnd { seq, at_ms, cause: EndCause::Revoked(reason) })
                    }
                }
            }
            shard.applied_seq = seq;
        }
    }

    /// Purges up to `shards` shards from the cursor on; returns (tokens removed, whether the
    /// cursor went past the last shard).
    pub(crate) fn purge_step(&self, now_ms: i64, shards: usize) -> (usize, bool) {
        let count = self.shards.len();
        let mut removed = 0;
        let mut wrapped = false;
        for _ in 0..shards.min(count) {
            let index = self.cursor.fetch_add(1, Ordering::Relaxed) % count;
            if index + 1 == count {
                wrapped = true;
            }
            if let Some(lock) = self.shards.get(index) {
                let mut tally = ClassTally::default();
                removed += lock.write().purge(now_ms, |class| tally.note(class));
                for (class, n) in tally.0 {
                    self.per_class.sub(class, n);
                }
            }
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        (removed, wrapped)
    }

    /// Calls `f` with the tokens of each shard in turn, copied out first so that no lock is held
    /// while `f` runs (it may look other tokens up).
    pub(crate) fn for_each(&self, mut f: impl FnMut(TokenId, StoredToken)) {
        let mut buffer = Vec::new();
        for lock in self.shards.iter() {
            buffer.extend(lock.read().entries());
            for (id, token) in buffer.drain(..) {
                f(id, token);
            }
        }
    }

    pub(crate) fn memory(&self) -> (PartMemory, PartMemory, PartMemory) {
        let mut total = (PartMemory::default(), PartMemory::default(), PartMemory::default());
        for lock in self.shards.iter() {
            let (slots, sides, rare) = lock.read().memory();
            total.0.add(slots.entries, slots.bytes);
            total.1.add(sides.entries, sides.bytes);
            total.2.add(rare.entries, rare.bytes);
        }
        total.0.bytes += self.shards.len() * size_of::<CacheLine<RwLock<TokenShard>>>();
        total
    }

    /// A deep copy, shard by shard.
    pub(crate) fn duplicate(&self, shards_log2: u32) -> Self {
        let mut copy = Self::new(shards_log2);
        for (from, to) in self.shards.iter().zip(copy.shards.iter()) {
            *to.write() = from.read().clone();
        }
        copy.len.store(self.len(), Ordering::Relaxed);
        copy.per_class = self.per_class.duplicate();
        copy
    }

    /// Installs a loaded shard (snapshot loading).
    pub(crate) fn install(&self, index: usize, shard: TokenShard) {
        if let Some(lock) = self.shards.get(index) {
            let added = shard.len();
            let mut tally = ClassTally::default();
            shard.for_each_class(|class| tally.note(class));
            let old = std::mem::replace(&mut *lock.write(), shard);
            self.len.fetch_add(added, Ordering::Relaxed);
            self.len.fetch_sub(old.len(), Ordering::Relaxed);
            for (class, n) in tally.0 {
                self.per_class.add(class, n);
            }
            let mut gone = ClassTally::default();
            old.for_each_class(|class| gone.note(class));
            for (class, n) in gone.0 {
                self.per_class.sub(class, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(seq: u64, family: Option<FamilyId>, user: Option<u32>) -> StoredToken {
        StoredToken {
            kind: TokenKind::Refresh,
            class: 3,
            scopes: 4,
            user,
            family,
            issued_seq: seq,
            issued_at_ms: 1_000 + seq as i64,
            expires_at_ms: 100_000,
            end: None,
        }
    }

    #[test]
    fn slots_are_43_bytes_and_side_records_small() {
        assert_eq!(size_of::<Slot>(), 27);
        assert_eq!(size_of::<(IdKey, Slot)>(), 43);
        assert_eq!(size_of::<Link>(), 24);
        assert_eq!(size_of::<Rotation>(), 48);
    }

    #[test]
    fn every_shape_of_token_round_trips() {
        let mut shard = TokenShard::default();
        let shapes = [
            token(5, None, None),
            token(6, Some(FamilyId([9; 16])), Some(7)),
            token(7, Some(FamilyId([8; 16])), None),
            token(8, None, Some(2)),
            StoredToken { issued_at_ms: -5, expires_at_ms: i64::MAX, ..token(9, None, None) },
            StoredToken { issued_seq: u64::MAX, ..token(10, Some(FamilyId([1; 16])), Some(1)) },
        ];
        for (i, t) in shapes.iter().enumerate() {
            let key = IdKey([i as u8 + 1; 16]);
            assert!(shard.insert(key, t));
            assert_eq!(shard.get(&key).as_ref(), Some(t), "shape {i}");
        }
        // Rotations: inline when the deltas fit, in the map otherwise, and the first end stands.
        for (i, t) in shapes.iter().enumerate() {
            let key = IdKey([i as u8 + 1; 16]);
            let seq = t.issued_seq.saturating_add(if i == 3 { 1 << 40 } else { 3 });
            shard.rotate(&key, TokenId([0xee; 16]), seq, t.issued_at_ms + 10);
            shard.end(&key, TokenEnd { seq: 99, at_ms: 99, cause: EndCause::Revoked(RevocationReason::Admin) });
            let end = TokenEnd {
                seq,
                at_ms: t.issued_at_ms + 10,
                cause: EndCause::Rotated { successor: TokenId([0xee; 16]) },
            };
            let expected = StoredToken { end: Some(end), ..t.clone() };
            assert_eq!(shard.get(&key), Some(expected.clone()), "shape {i}");
            // A loaded token arrives with its end and comes out the same.
            let mut other = TokenShard::default();
            other.insert(key, &expected);
            assert_eq!(other.get(&key), Some(expected), "shape {i} reloaded");
        }
        assert_eq!(shard.links.live(), 2, "inline rotations took their links; the two in the map kept theirs");
        assert_eq!(shard.purge(100_000, |_| {}), 5, "all but the one that never expires");
        assert_eq!((shard.len(), shard.rotations.live(), shard.ends.len(), shard.wide.len()), (1, 0, 1, 1));
    }

    #[test]
    fn replacing_a_token_frees_its_side_records() {
        let mut shard = TokenShard::default();
        let key = IdKey([1; 16]);
        assert!(shard.insert(key, &token(1, Some(FamilyId([2; 16])), Some(1))));
        shard.end(&key, TokenEnd { seq: 2, at_ms: 2, cause: EndCause::Revoked(RevocationReason::Admin) });
        assert!(!shard.insert(key, &token(3, None, None)));
        assert_eq!((shard.links.live(), shard.ends.len()), (0, 0));
        assert_eq!(shard.get(&key), Some(token(3, None, None)));
    }

    #[test]
    fn an_event_is_skipped_by_shards_that_applied_it() {
        let table = TokenTable::new(2);
        let a = token(1, None, None);
        let id = TokenId([5; 16]);
        table.apply(10, &[TokenOp::Insert(id, &a)]);
        assert_eq!(table.get(&id).map(|t| t.issued_seq), Some(1));
        // Two changes of one event to one shard both apply, in order.
        let b = token(2, None, None);
        let mut other = [5u8; 16];
        other[0] = 6;
        assert_eq!(table.shard_of(&TokenId(other)), table.shard_of(&id), "same shard bits");
        table.apply(
            11,
            &[TokenOp::Insert(TokenId(other), &b), TokenOp::End { id, at_ms: 7, reason: RevocationReason::Admin }],
        );
        assert!(table.get(&id).and_then(|t| t.end).is_some());
        // A replayed event does nothing.
        table.apply(11, &[TokenOp::Insert(id, &b)]);
        assert_eq!(table.get(&id).map(|t| t.issued_seq), Some(1));
        assert_eq!(table.len(), 2);
    }
}
