//! The family table: one 62-byte slot per refresh-token family (one per sign-in), sharded like
//! the token table.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use super::dense::DenseMap;
use super::memory::{PartMemory, map_bytes};
use super::pack::{get_i48, get_u32, get_u48, i48, u48};
use super::shard::{CacheLine, IdKey, IdMap, ShardMap};
use crate::domain::shared::ids::{FamilyId, TokenId};
use crate::domain::state::records::Revocation;
use crate::proto::ledger::RevocationReason;

/// A family as the table keeps it, with its client as a handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredFamily {
    pub(crate) client: u32,
    pub(crate) revoked: Option<Revocation>,
    pub(crate) live_refresh: Option<TokenId>,
    pub(crate) expires_at_ms: i64,
    pub(crate) started_at_ms: i64,
}

const HAS_LIVE_REFRESH: u8 = 1;
const REVOKED: u8 = 2;
/// The numbers are in `wide`.
const WIDE: u8 = 4;

/// The packed record of one family (46 bytes; 62 with its key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FamilySlot {
    client: [u8; 4],
    live_refresh: [u8; 16],
    expires: [u8; 6],
    started: [u8; 6],
    revoked_seq: [u8; 6],
    revoked_at: [u8; 6],
    reason: u8,
    flags: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FamilyWide {
    expires_at_ms: i64,
    started_at_ms: i64,
    revoked_seq: u64,
    revoked_at_ms: i64,
}

#[derive(Clone, Debug, Default)]
#[repr(C)]
pub(crate) struct FamilyShard {
    slots: DenseMap<FamilySlot>,
    wide: IdMap<FamilyWide>,
    /// The highest ledger seq whose changes to this shard are all in it.
    pub(crate) applied_seq: u64,
}

/// Revocation reasons are small enum values; an unknown one reads back as unspecified, which
/// is what `apply` makes of it anyway.
fn reason_byte(reason: RevocationReason) -> u8 {
    u8::try_from(reason as i32).unwrap_or(0)
}

fn reason_of(byte: u8) -> RevocationReason {
    RevocationReason::try_from(i32::from(byte)).unwrap_or(RevocationReason::Unspecified)
}

impl FamilyShard {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn get(&self, key: &IdKey) -> Option<StoredFamily> {
        let slot = self.slots.get(key)?;
        let (expires_at_ms, started_at_ms, revoked_seq, revoked_at_ms) = if slot.flags & WIDE != 0 {
            let w = self.wide.get(key)?;
            (w.expires_at_ms, w.started_at_ms, w.revoked_seq, w.revoked_at_ms)
        } else {
            (get_i48(slot.expires), get_i48(slot.started), get_u48(slot.revoked_seq), get_i48(slot.revoked_at))
        };
        Some(StoredFamily {
            client: get_u32(slot.client),
            revoked: (slot.flags & REVOKED != 0).then(|| Revocation {
                seq: revoked_seq,
                at_ms: revoked_at_ms,
                reason: reason_of(slot.reason),
            }),
            live_refresh: (slot.flags & HAS_LIVE_REFRESH != 0).then_some(TokenId(slot.live_refresh)),
            expires_at_ms,
            started_at_ms,
        })
    }

    /// Stores `family` under `key`. True if the key is new.
    pub(crate) fn put(&mut self, key: IdKey, family: &StoredFamily) -> bool {
        let mut flags = 0;
        if family.live_refresh.is_some() {
            flags |= HAS_LIVE_REFRESH;
        }
        let (revoked_seq, revoked_at_ms, reason) = match &family.revoked {
            Some(r) => {
                flags |= REVOKED;
                (r.seq, r.at_ms, reason_byte(r.reason))
            }
            None => (0, 0, 0),
        };
        let packed = (i48(family.expires_at_ms), i48(family.started_at_ms), u48(revoked_seq), i48(revoked_at_ms));
        let numbers = match packed {
            (Some(e), Some(s), Some(rs), Some(ra)) => {
                self.wide.remove(&key);
                (e, s, rs, ra)
            }
            _ => {
                flags |= WIDE;
                let wide = FamilyWide {
                    expires_at_ms: family.expires_at_ms,
                    started_at_ms: family.started_at_ms,
                    revoked_seq,
                    revoked_at_ms,
                };
                self.wide.insert(key, wide);
                ([0; 6], [0; 6], [0; 6], [0; 6])
            }
        };
        let slot = FamilySlot {
            client: family.client.to_le_bytes(),
            live_refresh: family.live_refresh.map_or([0; 16], |t| t.0),
            expires: numbers.0,
            started: numbers.1,
            revoked_seq: numbers.2,
            revoked_at: numbers.3,
            reason,
            flags,
        };
        self.slots.insert(key, slot).is_none()
    }

    /// Drops every family whose expiry is at or before `now_ms`; returns how many.
    pub(crate) fn purge(&mut self, now_ms: i64) -> usize {
        let Self { slots, wide, .. } = self;
        let before = slots.len();
        slots.retain(|key, slot| {
            let expires_at_ms = if slot.flags & WIDE != 0 {
                wide.get(key).map_or(i64::MIN, |w| w.expires_at_ms)
            } else {
                get_i48(slot.expires)
            };
            let keep = expires_at_ms > now_ms;
            if !keep && slot.flags & WIDE != 0 {
                wide.remove(key);
            }
            keep
        });
        slots.shrink_if_sparse();
        before - slots.len()
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = (FamilyId, StoredFamily)> + '_ {
        self.slots.keys().filter_map(|key| self.get(key).map(|f| (FamilyId(key.0), f)))
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
    }

    fn memory(&self) -> PartMemory {
        let mut m = PartMemory::default();
        m.add(self.slots.len(), self.slots.allocated_bytes());
        m.add(0, map_bytes(self.wide.capacity(), size_of::<(IdKey, FamilyWide)>()));
        m
    }
}

/// What a `TokensIssued` event does to its family.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FamilyIssue {
    pub(crate) client: u32,
    /// The latest expiry among the event's tokens.
    pub(crate) expires_at_ms: i64,
    /// When the event was decided; the family's start if the event starts it.
    pub(crate) decided_at_ms: i64,
    /// The event's refresh token: the family's new live refresh token.
    pub(crate) refresh: Option<TokenId>,
}

pub(crate) struct FamilyTable {
    shards: Box<[CacheLine<RwLock<FamilyShard>>]>,
    map: ShardMap,
    len: AtomicUsize,
    cursor: AtomicUsize,
}

impl FamilyTable {
    pub(crate) fn new(shards_log2: u32) -> Self {
        let map = ShardMap::new(shards_log2);
        let shards = (0..map.len()).map(|_| CacheLine(RwLock::new(FamilyShard::default()))).collect();
        Self { shards, map, len: AtomicUsize::new(0), cursor: AtomicUsize::new(0) }
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn shard_of(&self, id: &FamilyId) -> usize {
        self.map.shard_of(&id.0)
    }

    pub(crate) fn shard(&self, index: usize) -> Option<&RwLock<FamilyShard>> {
        self.shards.get(index).map(|s| &s.0)
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn get(&self, id: &FamilyId) -> Option<StoredFamily> {
        self.shards.get(self.shard_of(id))?.read().get(&IdKey(id.0))
    }

    pub(crate) fn contains(&self, id: &FamilyId) -> bool {
        self.shards.get(self.shard_of(id)).is_some_and(|s| s.read().slots.contains_key(&IdKey(id.0)))
    }

    /// Runs `change` on the family's shard for event `seq`, unless the shard applied it.
    fn change(&self, seq: u64, id: &FamilyId, change: impl FnOnce(&mut FamilyShard, IdKey) -> bool) {
        let Some(lock) = self.shards.get(self.shard_of(id)) else { return };
        let mut shard = lock.write();
        if seq <= shard.applied_seq {
            return;
        }
        if change(&mut shard, IdKey(id.0)) {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        shard.applied_seq = seq;
    }

    /// Event `seq` issued tokens of family `id`: creates it or extends its expiry, and makes
    /// the event's refresh token the live one.
    pub(crate) fn issued(&self, seq: u64, id: &FamilyId, issue: FamilyIssue) {
        self.change(seq, id, |shard, key| {
            let mut family = shard.get(&key).unwrap_or(StoredFamily {
                client: issue.client,
                revoked: None,
                live_refresh: None,
                expires_at_ms: issue.expires_at_ms,
                started_at_ms: issue.decided_at_ms,
            });
            family.expires_at_ms = family.expires_at_ms.max(issue.expires_at_ms);
            if let Some(refresh) = issue.refresh {
                family.live_refresh = Some(refresh);
            }
            shard.put(key, &family)
        });
    }

    /// Event `seq` revoked family `id` (the first revocation stands).
    pub(crate) fn revoked(&self, seq: u64, id: &FamilyId, at_ms: i64, reason: RevocationReason) {
        self.change(seq, id, |shard, key| {
            let Some(mut family) = shard.get(&key) else { return false };
            family.revoked.get_or_insert(Revocation { seq, at_ms, reason });
            family.live_refresh = None;
            shard.put(key, &family)
        });
    }

    pub(crate) fn purge_step(&self, now_ms: i64, shards: usize) -> (usize, bool) {
        let count = self.shards.len();
        let mut removed = 0;
        let mut wrapped = false;
        for _ in 0..shards.min(count) {
            let index = self.cursor.fetch_add(1, Ordering::Relaxed) % count;
            wrapped |= index + 1 == count;
            if let Some(lock) = self.shards.get(index) {
                removed += lock.write().purge(now_ms);
            }
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        (removed, wrapped)
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(FamilyId, StoredFamily)) {
        let mut buffer = Vec::new();
        for lock in self.shards.iter() {
            buffer.extend(lock.read().entries());
            for (id, family) in buffer.drain(..) {
                f(id, family);
            }
        }
    }

    pub(crate) fn memory(&self) -> PartMemory {
        let mut total = PartMemory::default();
        for lock in self.shards.iter() {
            let m = lock.read().memory();
            total.add(m.entries, m.bytes);
        }
        total.bytes += self.shards.len() * size_of::<CacheLine<RwLock<FamilyShard>>>();
        total
    }

    pub(crate) fn duplicate(&self, shards_log2: u32) -> Self {
        let copy = Self::new(shards_log2);
        for (from, to) in self.shards.iter().zip(copy.shards.iter()) {
            *to.write() = from.read().clone();
        }
        copy.len.store(self.len(), Ordering::Relaxed);
        copy
    }

    pub(crate) fn install(&self, index: usize, shard: FamilyShard) {
        if let Some(lock) = self.shards.get(index) {
            let added = shard.len();
            let old = std::mem::replace(&mut *lock.write(), shard);
            self.len.fetch_add(added, Ordering::Relaxed);
            self.len.fetch_sub(old.len(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_slot_is_62_bytes_with_its_key() {
        assert_eq!(size_of::<(IdKey, FamilySlot)>(), 62);
    }

    #[test]
    fn issue_extend_revoke_and_purge() {
        let table = FamilyTable::new(2);
        let id = FamilyId([3; 16]);
        let issue = FamilyIssue { client: 1, expires_at_ms: 500, decided_at_ms: 100, refresh: Some(TokenId([1; 16])) };
        table.issued(1, &id, issue);
        table.issued(
            2,
            &id,
            FamilyIssue { expires_at_ms: 400, decided_at_ms: 300, refresh: Some(TokenId([2; 16])), ..issue },
        );
        let family = table.get(&id).unwrap();
        assert_eq!((family.expires_at_ms, family.started_at_ms), (500, 100), "expiry only grows; start stays");
        assert_eq!(family.live_refresh, Some(TokenId([2; 16])));
        table.revoked(3, &id, 350, RevocationReason::RefreshReuse);
        table.revoked(4, &id, 360, RevocationReason::Admin);
        let family = table.get(&id).unwrap();
        let first = Revocation { seq: 3, at_ms: 350, reason: RevocationReason::RefreshReuse };
        assert_eq!((family.revoked, family.live_refresh), (Some(first), None));
        // A far expiry goes wide and comes back.
        table.issued(5, &id, FamilyIssue { expires_at_ms: i64::MAX, ..issue });
        assert_eq!(table.get(&id).map(|f| f.expires_at_ms), Some(i64::MAX));
        table.revoked(6, &FamilyId([4; 16]), 1, RevocationReason::Admin);
        assert_eq!(table.len(), 1, "revoking an unknown family creates nothing");
        assert_eq!(table.purge_step(i64::MAX - 1, 4), (0, true));
        assert_eq!(table.purge_step(i64::MAX, 4).0, 1);
        assert_eq!(table.len(), 0);
    }
}
