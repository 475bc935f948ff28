//! The slot table of a shard: an open-addressing hash table of `(id, record)` entries with
//! linear probing, in one array, and no control bytes.
//!
//! Why not `std`'s (hashbrown) map, which the tables used first:
//!
//! - **One memory access per lookup.** hashbrown keeps its control bytes and its buckets in two
//!   places of one allocation, so a random lookup in a table far larger than the cache misses
//!   twice (and, on a VM, walks the page tables twice). Here the probe starts at the entry
//!   itself: the first miss brings the id to compare, and the next entries of the probe are
//!   the following bytes of the same or the next cache line (which the prefetcher fetches).
//! - **Denser.** hashbrown doubles at 7/8 load and lands at 7/16, so a table swings between
//!   7/16 and 7/8 (about 0.62 on average across the geometric shards). This table grows by a
//!   quarter at most (the capacity ladder below), so it swings between 0.70 and 0.875 (0.78 on
//!   average): 55 bytes per 43-byte token entry instead of 71.
//!
//! An all-zero id marks an empty bucket; the one entry whose id really is all zeros (never
//! minted in practice, but the ledger could name it) is kept beside the array. Removal shifts
//! the rest of the probe run back (no tombstones), so a lookup never walks past a deleted
//! entry and the load the growth sees is the real one.
//!
//! **Capacities** come from a fixed ladder, `{16, 20, 25} × 2^k` (steps of ×1.25, ×1.25,
//! ×1.28: three per doubling), whatever the path to them (growth, `reserve`, shrink). Shard
//! sizes are spread over one doubling (`shard.rs`), so their positions on the ladder are spread
//! too, including after a snapshot load: the shards never grow in lockstep.

use super::shard::{IdKey, id_hash};

/// Most entries per bucket: `len <= buckets * LOAD_NUM / LOAD_DEN`.
pub(crate) const LOAD_NUM: usize = 7;
pub(crate) const LOAD_DEN: usize = 8;
/// The ladder's bases: capacities are `base << k`.
const LADDER: [usize; 3] = [16, 20, 25];
const EMPTY: IdKey = IdKey([0; 16]);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry<V> {
    key: IdKey,
    value: V,
}

/// A map from non-secret random ids to small `Copy` records.
#[derive(Clone, Debug)]
pub(crate) struct DenseMap<V> {
    buckets: Box<[Entry<V>]>,
    /// Occupied buckets (the zero-id entry not counted).
    occupied: usize,
    /// The entry of the all-zero id.
    zero: Option<V>,
}

impl<V> Default for DenseMap<V> {
    fn default() -> Self {
        Self { buckets: Box::new([]), occupied: 0, zero: None }
    }
}

/// The smallest ladder capacity whose load limit admits `len` entries (0 for 0).
pub(crate) fn capacity_for(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let mut scale = 1usize;
    loop {
        for base in LADDER {
            let buckets = base.saturating_mul(scale);
            if buckets * LOAD_NUM / LOAD_DEN >= len || buckets == usize::MAX {
                return buckets;
            }
        }
        scale = scale.saturating_mul(2);
    }
}

/// The bucket a hash starts at: the high bits scaled to the table's size (any size, not only
/// powers of two).
#[inline]
fn home(hash: u64, buckets: usize) -> usize {
    ((u128::from(hash) * buckets as u128) >> 64) as usize
}

impl<V: Copy + Default> DenseMap<V> {
    pub(crate) fn len(&self) -> usize {
        self.occupied + usize::from(self.zero.is_some())
    }

    #[cfg(test)]
    pub(crate) fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Bytes allocated.
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.buckets.len() * size_of::<Entry<V>>()
    }

    /// The bucket holding `key`, or the empty bucket that ends its probe run.
    #[inline]
    fn find_bucket(&self, key: &IdKey) -> Option<(usize, bool)> {
        let n = self.buckets.len();
        if n == 0 {
            return None;
        }
        let mut i = home(id_hash(&key.0), n);
        // The load limit keeps at least one bucket in eight empty, so the walk ends.
        loop {
            let entry = self.buckets.get(i)?;
            if entry.key == *key {
                return Some((i, true));
            }
            if entry.key == EMPTY {
                return Some((i, false));
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    #[inline]
    pub(crate) fn get(&self, key: &IdKey) -> Option<&V> {
        if *key == EMPTY {
            return self.zero.as_ref();
        }
        match self.find_bucket(key)? {
            (i, true) => self.buckets.get(i).map(|e| &e.value),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, key: &IdKey) -> Option<&mut V> {
        if *key == EMPTY {
            return self.zero.as_mut();
        }
        match self.find_bucket(key)? {
            (i, true) => self.buckets.get_mut(i).map(|e| &mut e.value),
            _ => None,
        }
    }

    pub(crate) fn contains_key(&self, key: &IdKey) -> bool {
        self.get(key).is_some()
    }

    /// Stores `value` under `key`; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: IdKey, value: V) -> Option<V> {
        if key == EMPTY {
            return self.zero.replace(value);
        }
        let grows = (self.occupied + 1) * LOAD_DEN > self.buckets.len() * LOAD_NUM;
        let mut found = self.find_bucket(&key);
        if let Some((i, true)) = found
            && let Some(entry) = self.buckets.get_mut(i)
        {
            return Some(std::mem::replace(&mut entry.value, value));
        }
        if grows {
            self.resize(capacity_for(self.occupied + 1));
            found = self.find_bucket(&key);
        }
        // Without a growth the empty bucket that ended the walk is where the key goes.
        if let Some((i, false)) = found
            && let Some(entry) = self.buckets.get_mut(i)
        {
            *entry = Entry { key, value };
            self.occupied += 1;
        }
        None
    }

    /// Removes `key`; returns its value (the tables remove by `retain`).
    #[cfg(test)]
    pub(crate) fn remove(&mut self, key: &IdKey) -> Option<V> {
        if *key == EMPTY {
            return self.zero.take();
        }
        let (i, true) = self.find_bucket(key)? else { return None };
        let value = self.buckets.get(i).map(|e| e.value);
        self.vacate(i);
        value
    }

    /// Empties bucket `hole` and shifts the rest of its probe run back, so that every entry
    /// stays reachable from its home without passing an empty bucket.
    fn vacate(&mut self, mut hole: usize) {
        let n = self.buckets.len();
        let mut j = hole;
        loop {
            j += 1;
            if j == n {
                j = 0;
            }
            let Some(entry) = self.buckets.get(j).copied() else { break };
            if entry.key == EMPTY {
                break;
            }
            // The entry at `j` may fill the hole if the hole lies on its way from its home,
            // i.e. if it is at least as far from its home as from the hole.
            let from_home = (j + n - home(id_hash(&entry.key.0), n)) % n;
            let from_hole = (j + n - hole) % n;
            if from_home >= from_hole {
                if let Some(slot) = self.buckets.get_mut(hole) {
                    *slot = entry;
                }
                hole = j;
            }
        }
        if let Some(slot) = self.buckets.get_mut(hole) {
            *slot = Entry::default();
        }
        self.occupied -= 1;
    }

    /// Keeps the entries for which `keep` is true. `keep` may be called more than once for an
    /// entry it keeps (when a removal shifts an entry already visited across the array's
    /// end), so it must only have effects for the entries it drops.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&IdKey, &mut V) -> bool) {
        if let Some(value) = self.zero.as_mut()
            && !keep(&EMPTY, value)
        {
            self.zero = None;
        }
        let mut i = 0;
        while i < self.buckets.len() {
            let Some(entry) = self.buckets.get_mut(i) else { break };
            if entry.key == EMPTY {
                i += 1;
                continue;
            }
            let key = entry.key;
            if keep(&key, &mut entry.value) {
                i += 1;
            } else {
                // The next entry of the run may have moved into `i`: look at `i` again.
                self.vacate(i);
            }
        }
    }

    /// Every entry, in table order (the zero id first).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&IdKey, &V)> + '_ {
        self.zero
            .as_ref()
            .map(|v| (&EMPTY, v))
            .into_iter()
            .chain(self.buckets.iter().filter(|e| e.key != EMPTY).map(|e| (&e.key, &e.value)))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &IdKey> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// Makes room for `additional` more entries without growing again.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let need = self.occupied + additional;
        if need * LOAD_DEN > self.buckets.len() * LOAD_NUM {
            self.resize(capacity_for(need));
        }
    }

    /// After removals left the table under a quarter of its load limit, move it to the
    /// ladder's capacity for twice its entries (one shard's rehash, like its growth).
    pub(crate) fn shrink_if_sparse(&mut self) {
        let limit = self.buckets.len() * LOAD_NUM / LOAD_DEN;
        if self.occupied < limit / 4 {
            self.resize(capacity_for(self.occupied * 2));
        }
    }

    fn resize(&mut self, buckets: usize) {
        let old = std::mem::replace(&mut self.buckets, vec![Entry::default(); buckets].into_boxed_slice());
        self.occupied = 0;
        for entry in old.iter().filter(|e| e.key != EMPTY) {
            if let Some((i, false)) = self.find_bucket(&entry.key)
                && let Some(slot) = self.buckets.get_mut(i)
            {
                *slot = *entry;
                self.occupied += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn key(n: u64) -> IdKey {
        let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.to_le_bytes());
        id[8..].copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        IdKey(id)
    }

    #[test]
    fn the_ladder_has_three_steps_per_doubling_and_admits_what_it_says() {
        let caps: Vec<usize> = (1..2000).map(capacity_for).collect();
        assert_eq!(capacity_for(14), 16);
        assert_eq!(capacity_for(15), 20);
        assert_eq!(capacity_for(1_000_000), 1_310_720, "20 << 16");
        for (len, cap) in (1..2000).zip(&caps) {
            assert!(cap * LOAD_NUM / LOAD_DEN >= len);
        }
        let mut steps: Vec<usize> = caps.clone();
        steps.dedup();
        assert_eq!(&steps[..7], &[16, 20, 25, 32, 40, 50, 64]);
    }

    /// Random inserts, replacements, removals and purges against `std`'s map, including keys
    /// that collide on their home bucket and the all-zero id.
    #[test]
    fn behaves_like_a_hash_map() {
        let mut rng = 1u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut dense: DenseMap<u64> = DenseMap::default();
        let mut model: HashMap<IdKey, u64> = HashMap::new();
        for round in 0..40_000u64 {
            let k = if next() % 97 == 0 { EMPTY } else { key(next() % 3_000) };
            match next() % 10 {
                0..=5 => assert_eq!(dense.insert(k, round), model.insert(k, round)),
                6..=7 => assert_eq!(dense.remove(&k), model.remove(&k)),
                8 => assert_eq!(dense.get(&k), model.get(&k)),
                _ if round % 500 == 0 => {
                    let cut = next() % 40_000;
                    dense.retain(|_, v| *v > cut);
                    model.retain(|_, v| *v > cut);
                    dense.shrink_if_sparse();
                }
                _ => {
                    if let Some(v) = dense.get_mut(&k) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&k) {
                        *v += 1;
                    }
                }
            }
            assert_eq!(dense.len(), model.len());
        }
        let mut got: Vec<(IdKey, u64)> = dense.iter().map(|(k, v)| (*k, *v)).collect();
        let mut want: Vec<(IdKey, u64)> = model.into_iter().collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert!(dense.len() * LOAD_DEN <= dense.buckets() * LOAD_NUM);
    }

    #[test]
    fn runs_that_wrap_around_the_end_survive_removals_and_purges() {
        // Fill a small table until some probe run wraps, then remove in every order.
        for seed in 0..200u64 {
            let mut dense: DenseMap<u64> = DenseMap::default();
            let keys: Vec<IdKey> = (0..14).map(|i| key(seed * 100 + i)).collect();
            for (i, k) in keys.iter().enumerate() {
                dense.insert(*k, i as u64);
            }
            assert_eq!(dense.buckets(), 16);
            let mut calls = 0;
            dense.retain(|_, v| {
                calls += 1;
                *v % 3 != (seed % 3)
            });
            assert!(calls >= 14);
            for (i, k) in keys.iter().enumerate() {
                let expected = (i as u64 % 3 != seed % 3).then_some(i as u64);
                assert_eq!(dense.get(k).copied(), expected, "seed {seed} key {i}");
            }
        }
    }

    #[test]
    fn reserve_and_shrink_land_on_the_ladder() {
        let mut dense: DenseMap<u8> = DenseMap::default();
        dense.reserve(1_000);
        assert_eq!(dense.buckets(), capacity_for(1_000));
        for i in 0..1_000 {
            dense.insert(key(i), 1);
        }
        assert_eq!(dense.buckets(), capacity_for(1_000), "no growth after a reserve");
        dense.retain(|k, _| k.0[0] < 10);
        dense.shrink_if_sparse();
        assert_eq!(dense.buckets(), capacity_for(dense.len() * 2));
        assert_eq!(dense.len(), 40, "ids whose first byte is below 10 among 0..1000");
    }
}
