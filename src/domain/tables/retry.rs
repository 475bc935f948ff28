//! The retry index: the answers of recent token requests, for idempotent retries by
//! transactionId (SPEC 3.1), as a time-ordered ring of 78-byte entries plus a hash index of
//! ring positions.
//!
//! An entry holds the request's key (client handle and the transaction id as its 16 UUID bytes;
//! an id that is not a canonical UUID is keyed by the first 16 bytes of its SHA-256), the first
//! 16 bytes of the request fingerprint (an HMAC, so 128 bits still tell requests apart), the
//! answer's token ids and the decision time. Entries are appended in ledger order and purged by
//! advancing the tail past entries older than the retry window.
//!
//! **Limit:** at most `entries_max` entries. When the ring is full the oldest entry is dropped
//! even inside its window: a retry of that request then gets new tokens instead of the old
//! ones (as a retry after the window does). The drops are counted.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use ring::digest;

use super::memory::PartMemory;
use super::shard::ShardMap;
use crate::domain::shared::ids::TokenId;

/// Entries per ring chunk; chunks are allocated and freed whole.
pub(crate) const RETRY_CHUNK: usize = 4096;
/// log2 of the shards of the position index, so that its growth rehashes a small part at a
/// time (geometric, like the token shards, so they do not double in lockstep).
const INDEX_SHARDS_LOG2: u32 = 6;
/// The ring holds fewer entries than this, so a position fits the index's 32 bits.
const ENTRIES_MAX_LIMIT: usize = 1 << 31;
/// The default limit: 60 s at 70 000 token requests per second.
pub const RETRY_ENTRIES_MAX_DEFAULT: usize = 1 << 22;

/// Which request an entry answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RetryKey {
    client: [u8; 4],
    /// 0: `txid` is the UUID's bytes; 1: the SHA-256 prefix of a non-UUID id.
    form: u8,
    txid: [u8; 16],
}

impl RetryKey {
    pub(crate) fn new(client: u32, transaction_id: &str) -> Self {
        // The api accepts only canonical UUIDs (36 characters, any case): their bytes are
        // the key, so the comparison ignores case as SPEC 3.1 asks.
        if transaction_id.len() == 36
            && let Ok(uuid) = uuid::Uuid::try_parse(transaction_id)
        {
            return Self { client: client.to_le_bytes(), form: 0, txid: *uuid.as_bytes() };
        }
        let hash = digest::digest(&digest::SHA256, transaction_id.as_bytes());
        let mut txid = [0u8; 16];
        txid.copy_from_slice(hash.as_ref().get(..16).unwrap_or(&[0; 16]));
        Self { client: client.to_le_bytes(), form: 1, txid }
    }

    pub(crate) fn client(&self) -> u32 {
        u32::from_le_bytes(self.client)
    }

    /// The key without the client handle (which differs between tables).
    pub(crate) fn transaction_bytes(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[0] = self.form;
        out[1..].copy_from_slice(&self.txid);
        out
    }

    pub(crate) fn to_bytes(self) -> [u8; 21] {
        let mut out = [0u8; 21];
        out[..4].copy_from_slice(&self.client);
        out[4] = self.form;
        out[5..].copy_from_slice(&self.txid);
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8; 21]) -> Option<Self> {
        let form = bytes[4];
        if form > 1 {
            return None;
        }
        let mut txid = [0u8; 16];
        txid.copy_from_slice(&bytes[5..]);
        Some(Self { client: [bytes[0], bytes[1], bytes[2], bytes[3]], form, txid })
    }
}

const HAS_REFRESH: u8 = 1;

/// One answered request (78 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryEntry {
    pub(crate) key: RetryKey,
    fingerprint: [u8; 16],
    access: [u8; 16],
    refresh: [u8; 16],
    at_ms: [u8; 8],
    flags: u8,
}

/// The answer of a recent token request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecentAnswer {
    /// The first 16 bytes of the request fingerprint.
    pub fingerprint_prefix: [u8; 16],
    /// When the request was decided.
    pub at_ms: i64,
    pub access: TokenId,
    pub refresh: Option<TokenId>,
}

impl RecentAnswer {
    /// Is `fingerprint` the fingerprint of the request this answered (compared on the 16
    /// bytes kept)?
    pub fn fingerprint_matches(&self, fingerprint: &[u8; 32]) -> bool {
        fingerprint.get(..16) == Some(&self.fingerprint_prefix[..])
    }
}

impl RetryEntry {
    pub(crate) fn new(
        key: RetryKey,
        fingerprint: &[u8; 32],
        at_ms: i64,
        access: TokenId,
        refresh: Option<TokenId>,
    ) -> Self {
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&fingerprint[..16]);
        Self {
            key,
            fingerprint: prefix,
            access: access.0,
            refresh: refresh.map_or([0; 16], |r| r.0),
            at_ms: at_ms.to_le_bytes(),
            flags: if refresh.is_some() { HAS_REFRESH } else { 0 },
        }
    }

    pub(crate) fn answer(&self) -> RecentAnswer {
        RecentAnswer {
            fingerprint_prefix: self.fingerprint,
            at_ms: self.at_ms(),
            access: TokenId(self.access),
            refresh: (self.flags & HAS_REFRESH != 0).then_some(TokenId(self.refresh)),
        }
    }

    pub(crate) fn at_ms(&self) -> i64 {
        i64::from_le_bytes(self.at_ms)
    }

    pub(crate) const ENCODED_LEN: usize = 21 + 16 + 16 + 16 + 8 + 1;

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.key.to_bytes());
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&self.access);
        out.extend_from_slice(&self.refresh);
        out.extend_from_slice(&self.at_ms);
        out.push(self.flags);
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let key = RetryKey::from_bytes(bytes.get(..21)?.try_into().ok()?)?;
        let field = |from: usize| -> Option<[u8; 16]> { bytes.get(from..from + 16)?.try_into().ok() };
        let flags = *bytes.get(77)?;
        if flags & !HAS_REFRESH != 0 {
            return None;
        }
        Some(Self {
            key,
            fingerprint: field(21)?,
            access: field(37)?,
            refresh: field(53)?,
            at_ms: bytes.get(69..77)?.try_into().ok()?,
            flags,
        })
    }
}

/// The ring and its index. One lock (in `TokenTables`) guards it: only the writer uses it, and
/// every operation on it is short.
#[derive(Clone, Debug)]
pub(crate) struct RetryRing {
    chunks: VecDeque<Vec<RetryEntry>>,
    /// Ring position of `chunks[0][0]`.
    base: u64,
    /// Position of the oldest live entry.
    tail: u64,
    /// Position the next entry gets.
    head: u64,
    /// Key to the low 32 bits of the position of its newest entry. Every index entry points at
    /// a live entry (popping an entry removes the index entry that points at it), and live
    /// positions span less than 2^32, so the low bits determine the position.
    index: Box<[PositionIndex]>,
    index_shards: ShardMap,
    hasher: foldhash::fast::FixedState,
    entries_max: usize,
    /// Entries dropped because the ring was full.
    pub(crate) dropped_full: u64,
    /// The highest ledger seq whose entry (if any) is in the ring.
    pub(crate) applied_seq: u64,
}

impl RetryRing {
    pub(crate) fn new(entries_max: usize, seed: u64) -> Self {
        let hasher = foldhash::fast::FixedState::with_seed(seed ^ 0x0072_6574_7279);
        let index_shards = ShardMap::new(INDEX_SHARDS_LOG2);
        Self {
            chunks: VecDeque::new(),
            base: 0,
            tail: 0,
            head: 0,
            index: (0..index_shards.len()).map(|_| PositionIndex::default()).collect(),
            index_shards,
            hasher,
            entries_max: entries_max.clamp(1, ENTRIES_MAX_LIMIT - 1),
            dropped_full: 0,
            applied_seq: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        (self.head - self.tail) as usize
    }

    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }

    /// The key's hash and its index shard (chosen by the high 32 bits; the shard's table uses
    /// the low 32).
    fn hash(&self, key: &RetryKey) -> (u64, usize) {
        let hash = self.hasher.hash_one(key);
        (hash, self.index_shards.shard_of_key((hash >> 32) as u32))
    }

    /// The position whose low 32 bits are `low`, among the live ones.
    fn position(&self, low: u32) -> u64 {
        self.tail + u64::from(low.wrapping_sub(self.tail as u32))
    }

    pub(crate) fn at(&self, position: u64) -> Option<&RetryEntry> {
        if position < self.tail || position >= self.head {
            return None;
        }
        let offset = (position - self.base) as usize;
        self.chunks.get(offset / RETRY_CHUNK)?.get(offset % RETRY_CHUNK)
    }

    /// Does the live entry at the position with low bits `low` answer `key`?
    fn holds(&self, low: u32, key: &RetryKey) -> bool {
        self.at(self.position(low)).is_some_and(|e| e.key == *key)
    }

    pub(crate) fn find(&self, key: &RetryKey) -> Option<&RetryEntry> {
        let (hash, shard) = self.hash(key);
        let low = self.index.get(shard)?.find(hash, |low| self.holds(low, key))?;
        self.at(self.position(low))
    }

    /// Appends the entry of event `seq`, unless the ring has applied it.
    pub(crate) fn insert(&mut self, seq: u64, entry: RetryEntry) {
        if seq <= self.applied_seq {
            return;
        }
        self.push(entry);
        self.applied_seq = seq;
    }

    /// Appends `entry`, dropping the oldest entry if the ring is full.
    pub(crate) fn push(&mut self, entry: RetryEntry) {
        if self.len() >= self.entries_max {
            self.pop();
            self.dropped_full += 1;
        }
        if self.chunks.back().is_none_or(|c| c.len() == RETRY_CHUNK) {
            self.chunks.push_back(Vec::with_capacity(RETRY_CHUNK));
        }
        if let Some(chunk) = self.chunks.back_mut() {
            chunk.push(entry);
        }
        let position = self.head;
        self.head += 1;
        let (hash, shard) = self.hash(&entry.key);
        let (tail, chunks, base) = (self.tail, &self.chunks, self.base);
        // The older entry of the same key, if any, is replaced in the index (the one closure
        // reads the ring while the index shard is borrowed mutably: the two are disjoint).
        let holds = |low: u32| {
            let at = tail + u64::from(low.wrapping_sub(tail as u32));
            let offset = at.wrapping_sub(base) as usize;
            at < position
                && chunks
                    .get(offset / RETRY_CHUNK)
                    .and_then(|c| c.get(offset % RETRY_CHUNK))
                    .is_some_and(|e| e.key == entry.key)
        };
        if let Some(index) = self.index.get_mut(shard) {
            index.insert(hash, position as u32, holds);
        }
    }

    /// Drops the oldest entry.
    fn pop(&mut self) {
        let Some(entry) = self.at(self.tail).copied() else { return };
        let (hash, shard) = self.hash(&entry.key);
        if let Some(index) = self.index.get_mut(shard) {
            // Only if the index points at this entry (not at a newer one of the same key).
            index.remove(hash, self.tail as u32);
        }
        self.tail += 1;
        if self.tail - self.base >= RETRY_CHUNK as u64 {
            self.chunks.pop_front();
            self.base += RETRY_CHUNK as u64;
        }
    }

    /// Drops up to `entries_max` entries from the tail whose window closed at `now_ms`;
    /// returns how many. Entries are in ledger order, which is decision-time order unless the
    /// clock stepped back, so the walk stops at the first entry still inside its window.
    pub(crate) fn purge(&mut self, now_ms: i64, window_ms: i64, entries_max: usize) -> usize {
        let mut removed = 0;
        while removed < entries_max && self.at(self.tail).is_some_and(|e| e.at_ms().saturating_add(window_ms) <= now_ms)
        {
            self.pop();
            removed += 1;
        }
        if removed > 0 {
            // Give back index memory after a burst ends (each shard is small to rehash).
            for shard in self.index.iter_mut() {
                shard.shrink_if_sparse();
            }
        }
        removed
    }

    pub(crate) fn memory(&self) -> (PartMemory, PartMemory) {
        let mut entries = PartMemory::default();
        let chunk_bytes = self.chunks.iter().map(|c| c.capacity() * size_of::<RetryEntry>()).sum::<usize>();
        entries.add(self.len(), chunk_bytes + self.chunks.capacity() * size_of::<Vec<RetryEntry>>());
        let mut index = PartMemory::default();
        for shard in self.index.iter() {
            index.add(shard.len(), shard.allocated_bytes());
        }
        (entries, index)
    }
}

/// One shard of the position index: an open-addressing table (linear probing, no tombstones,
/// the capacity ladder of `dense.rs`) of 8-byte buckets, each `tag:u32 low:u32` where `tag` is
/// 32 bits of the key's hash (never 0) and `low` the low 32 bits of the ring position of the
/// key's newest entry. 0 is an empty bucket. The key itself is not stored: a lookup compares
/// tags, then the ring entry's key; a removal (the ring's tail) matches tag and position
/// exactly, without reading the ring.
#[derive(Clone, Debug, Default)]
pub(crate) struct PositionIndex {
    buckets: Box<[u64]>,
    len: usize,
}

impl PositionIndex {
    fn tag(hash: u64) -> u32 {
        (hash as u32) | 1
    }

    fn home(tag: u32, buckets: usize) -> usize {
        ((u64::from(tag) * buckets as u64) >> 32) as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn allocated_bytes(&self) -> usize {
        self.buckets.len() * size_of::<u64>()
    }

    /// The position (low bits) of the first bucket with `hash`'s tag for which `is_key`
    /// holds, and the bucket's index; else the empty bucket that ends the run.
    fn probe(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<(usize, Option<u32>)> {
        let n = self.buckets.len();
        if n == 0 {
            return None;
        }
        let tag = Self::tag(hash);
        let mut i = Self::home(tag, n);
        loop {
            let bucket = *self.buckets.get(i)?;
            if bucket == 0 {
                return Some((i, None));
            }
            if (bucket >> 32) as u32 == tag && is_key(bucket as u32) {
                return Some((i, Some(bucket as u32)));
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    pub(crate) fn find(&self, hash: u64, is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        self.probe(hash, is_key)?.1
    }

    /// Points the key (`is_key` recognises its entries) at position `low`.
    pub(crate) fn insert(&mut self, hash: u64, low: u32, mut is_key: impl FnMut(u32) -> bool) {
        let bucket = (u64::from(Self::tag(hash)) << 32) | u64::from(low);
        if let Some((i, Some(_))) = self.probe(hash, &mut is_key)
            && let Some(slot) = self.buckets.get_mut(i)
        {
            *slot = bucket;
            return;
        }
        if (self.len + 1) * super::dense::LOAD_DEN > self.buckets.len() * super::dense::LOAD_NUM {
            self.resize(super::dense::capacity_for(self.len + 1));
        }
        if let Some((i, None)) = self.probe(hash, |_| false)
            && let Some(slot) = self.buckets.get_mut(i)
        {
            *slot = bucket;
            self.len += 1;
        }
    }

    /// Removes the bucket pointing at position `low` for a key of `hash`, if there is one.
    pub(crate) fn remove(&mut self, hash: u64, low: u32) {
        if let Some((i, Some(_))) = self.probe(hash, |at| at == low) {
            self.vacate(i);
        }
    }

    fn vacate(&mut self, mut hole: usize) {
        let n = self.buckets.len();
        let mut j = hole;
        loop {
            j += 1;
            if j == n {
                j = 0;
            }
            let Some(bucket) = self.buckets.get(j).copied() else { break };
            if bucket == 0 {
                break;
            }
            let from_home = (j + n - Self::home((bucket >> 32) as u32, n)) % n;
            let from_hole = (j + n - hole) % n;
            if from_home >= from_hole {
                if let Some(slot) = self.buckets.get_mut(hole) {
                    *slot = bucket;
                }
                hole = j;
            }
        }
        if let Some(slot) = self.buckets.get_mut(hole) {
            *slot = 0;
        }
        self.len -= 1;
    }

    /// After a burst ends, give the memory back (one shard is small to rehash).
    pub(crate) fn shrink_if_sparse(&mut self) {
        let limit = self.buckets.len() * super::dense::LOAD_NUM / super::dense::LOAD_DEN;
        if self.len < limit / 4 {
            self.resize(super::dense::capacity_for(self.len * 2));
        }
    }

    fn resize(&mut self, buckets: usize) {
        let old = std::mem::replace(&mut self.buckets, vec![0u64; buckets].into_boxed_slice());
        let n = self.buckets.len();
        for bucket in old.iter().copied().filter(|b| *b != 0) {
            let mut i = Self::home((bucket >> 32) as u32, n);
            while let Some(slot) = self.buckets.get_mut(i) {
                if *slot == 0 {
                    *slot = bucket;
                    break;
                }
                i = if i + 1 == n { 0 } else { i + 1 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client: u32, txid: &str, at_ms: i64, n: u8) -> RetryEntry {
        RetryEntry::new(RetryKey::new(client, txid), &[n; 32], at_ms, TokenId([n; 16]), None)
    }

    #[test]
    fn an_entry_is_78_bytes_and_encodes_as_many() {
        assert_eq!(size_of::<RetryEntry>(), 78);
        let e = RetryEntry::new(RetryKey::new(3, "x"), &[1; 32], -7, TokenId([2; 16]), Some(TokenId([3; 16])));
        let mut bytes = Vec::new();
        e.encode(&mut bytes);
        assert_eq!(bytes.len(), RetryEntry::ENCODED_LEN);
        assert_eq!(RetryEntry::decode(&bytes), Some(e));
    }

    #[test]
    fn uuids_match_in_any_case_and_other_ids_exactly() {
        let lower = "3f2b8c1e-9d4a-4b7e-8f00-123456789abc";
        assert_eq!(RetryKey::new(1, lower), RetryKey::new(1, &lower.to_uppercase()));
        assert_ne!(RetryKey::new(1, lower), RetryKey::new(2, lower));
        assert_ne!(RetryKey::new(1, "abc"), RetryKey::new(1, "ABC"));
        // The 32-hex-digit form is not the canonical one: it is keyed by its hash, not its bytes.
        assert_ne!(RetryKey::new(1, "3f2b8c1e9d4a4b7e8f00123456789abc"), RetryKey::new(1, lower));
    }

    /// The position index against a model: keys used again and again, the ring full at
    /// times, purged in steps (so the index grows, replaces, removes and shrinks).
    #[test]
    fn the_index_finds_the_newest_live_entry_of_every_key() {
        let mut ring = RetryRing::new(3_000, 9);
        let mut newest: std::collections::HashMap<String, (u64, i64)> = std::collections::HashMap::new();
        let mut rng = 5u64;
        for n in 0..40_000u64 {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let txid = format!("t{}", (rng >> 33) % 5_000);
            ring.insert(n + 1, entry(1 + (n % 2) as u32, &txid, n as i64, 0));
            newest.insert(format!("{}/{txid}", 1 + n % 2), (ring.head() - 1, n as i64));
            if n % 1_000 == 999 {
                ring.purge(n as i64, 2_000, 700);
            }
        }
        for (key, (position, at_ms)) in &newest {
            let (client, txid) = key.split_once('/').unwrap();
            let found = ring.find(&RetryKey::new(client.parse().unwrap(), txid)).map(|e| e.at_ms());
            let live = *position >= ring.tail();
            assert_eq!(found, live.then_some(*at_ms), "{key}");
        }
        let indexed: usize = ring.index.iter().map(PositionIndex::len).sum();
        let live_keys = newest.values().filter(|(p, _)| *p >= ring.tail()).count();
        assert_eq!(indexed, live_keys, "one index entry per key with a live entry");
        ring.purge(i64::MAX, 0, usize::MAX);
        assert_eq!(ring.index.iter().map(PositionIndex::len).sum::<usize>(), 0);
    }

    #[test]
    fn the_ring_answers_purges_and_drops_the_oldest_when_full() {
        let mut ring = RetryRing::new(RETRY_CHUNK + 2, 0);
        for n in 0..RETRY_CHUNK as u64 + 2 {
            ring.insert(n + 1, entry(1, &format!("t{n}"), n as i64, n as u8));
        }
        ring.insert(3, entry(1, "late", 0, 0));
        assert_eq!(ring.len(), RETRY_CHUNK + 2, "a replayed seq is skipped");
        assert_eq!(ring.find(&RetryKey::new(1, "t5")).map(|e| e.at_ms()), Some(5));
        // Full: the next one drops t0.
        ring.insert(10_000, entry(1, "new", 9_000, 1));
        assert_eq!((ring.find(&RetryKey::new(1, "t0")), ring.dropped_full), (None, 1));
        // A key used again points at the newer entry; dropping the older one (full again)
        // keeps it.
        ring.insert(10_001, entry(1, "t1", 9_500, 2));
        assert_eq!(ring.dropped_full, 2);
        assert_eq!(ring.purge(60_002, 60_000, 10), 1, "t2 at 2 ms");
        assert_eq!(ring.find(&RetryKey::new(1, "t1")).map(|e| e.at_ms()), Some(9_500));
        let left = ring.len();
        assert_eq!(ring.purge(i64::MAX, 60_000, usize::MAX), left);
        assert_eq!((ring.len(), ring.chunks.len() <= 1), (0, true));
        assert_eq!(ring.find(&RetryKey::new(1, "t1")), None);
    }
}
