//! Which shard holds an id, and the hash of an id inside its shard.
//!
//! Ids (token and family ids) end in 8 bytes from the CSPRNG, so their bits need no hashing to
//! pick a shard; the in-shard hash still mixes all 16 bytes, because the shard already fixed
//! some of the random bits and the table uses both ends of the hash.
//!
//! Shards are deliberately unequal. A hash table's memory per entry swings over its growth
//! cycle (by 1.25x for the slot tables of `dense.rs`, 2x for hashbrown), and shards of equal
//! size grow in lockstep, so the whole table would swing with them. Here shard
//! `i` receives a share of the ids proportional to `2^(i/S)`: the shards are spread evenly over
//! one doubling, at any size about as many are just after their growth as just before, and the
//! total stays near the cycle's mean. The mapping is computed with IEEE basic operations only
//! (square roots and products), so every build maps an id to the same shard, which the
//! snapshot format relies on.

use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Bits of the shard key looked up in the coarse table; the rest are resolved by a short scan.
const COARSE_BITS: u32 = 12;

/// Maps the 32 shard bits of an id to a shard.
#[derive(Clone, Debug)]
pub(crate) struct ShardMap {
    /// `starts[i]`: the smallest shard key of shard `i` (`starts[0] == 0`).
    starts: Box<[u32]>,
    /// The shard of the smallest key with each `COARSE_BITS`-bit prefix.
    coarse: Box<[u16]>,
}

impl ShardMap {
    /// `2^log2` shards (clamped to 1..=16, so at most 65 536 shards).
    pub(crate) fn new(log2: u32) -> Self {
        let log2 = log2.clamp(1, 16);
        let count = 1usize << log2;
        // step = 2^(1/count), by repeated square roots, which IEEE 754 rounds exactly.
        let mut step = 2.0f64;
        for _ in 0..log2 {
            step = step.sqrt();
        }
        let mut starts = Vec::with_capacity(count);
        let mut weight = 1.0f64;
        for _ in 0..count {
            // Cumulative share of the shards before this one: 2^(i/count) - 1 of [0, 1).
            starts.push(((weight - 1.0) * 4_294_967_296.0) as u32);
            weight *= step;
        }
        let coarse: Vec<u16> = (0..1u32 << COARSE_BITS)
            .map(|prefix| {
                let key = prefix << (32 - COARSE_BITS);
                (starts.partition_point(|s| *s <= key).saturating_sub(1)) as u16
            })
            .collect();
        Self { starts: starts.into(), coarse: coarse.into() }
    }

    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// The share of uniformly distributed ids that shard `index` receives (0 to 1).
    pub(crate) fn share(&self, index: usize) -> f64 {
        let start = self.starts.get(index).map_or(0, |s| u64::from(*s));
        let end = self.starts.get(index + 1).map_or(1 << 32, |s| u64::from(*s));
        end.saturating_sub(start) as f64 / 4_294_967_296.0
    }

    /// The shard of `id`.
    #[inline]
    pub(crate) fn shard_of(&self, id: &[u8; 16]) -> usize {
        self.shard_of_key(shard_key(id))
    }

    /// The shard of 32 uniformly distributed bits.
    #[inline]
    pub(crate) fn shard_of_key(&self, key: u32) -> usize {
        let mut shard = usize::from(self.coarse.get((key >> (32 - COARSE_BITS)) as usize).copied().unwrap_or(0));
        // Each shard spans more keys than a coarse prefix does, so this runs at most once or twice.
        while self.starts.get(shard + 1).is_some_and(|next| *next <= key) {
            shard += 1;
        }
        shard
    }
}

/// The bits that choose the shard: the first four random bytes.
fn shard_key(id: &[u8; 16]) -> u32 {
    u32::from_le_bytes([id[8], id[9], id[10], id[11]])
}

/// The in-shard hash of an id: a 64-bit finaliser (MurmurHash3's fmix64) of both halves.
#[inline]
pub(crate) fn id_hash(id: &[u8; 16]) -> u64 {
    let hi = u64::from_le_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]]);
    let lo = u64::from_le_bytes([id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]]);
    let mut h = lo ^ hi.rotate_left(29);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A token or family id as a table key: hashed by [`id_hash`] instead of byte by byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct IdKey(pub(crate) [u8; 16]);

impl Hash for IdKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(id_hash(&self.0));
    }
}

/// Passes [`IdKey`]'s precomputed hash through.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `IdKey`; fold anything else in so the hasher stays total.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

pub(crate) type IdBuild = BuildHasherDefault<IdHasher>;

/// Aligns a shard to a cache line, so a lookup touches one line for the lock and the table's
/// header, and neighbouring shards never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct CacheLine<T>(pub(crate) T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
pub(crate) type IdMap<V> = std::collections::HashMap<IdKey, V, IdBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> [u8; 16] {
        let mut id = [0u8; 16];
        // A cheap stand-in for CSPRNG bytes: a splitmix64 step of `n`.
        let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        id[8..].copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        id[..8].copy_from_slice(&n.to_le_bytes());
        id
    }

    #[test]
    fn shards_are_geometric_and_cover_every_key() {
        let map = ShardMap::new(10);
        assert_eq!(map.len(), 1024);
        assert_eq!(map.starts[0], 0);
        assert!(map.starts.windows(2).all(|w| w[0] < w[1]), "every shard gets a share");
        let first = u64::from(map.starts[1] - map.starts[0]);
        let last = (1u64 << 32) - u64::from(map.starts[1023]);
        let ratio = last as f64 / first as f64;
        assert!((1.99..2.01).contains(&ratio), "the last shard gets twice the first's share: {ratio}");
        // Edge keys land where the bounds say.
        for shard in [0usize, 1, 511, 1022, 1023] {
            let mut probe = [0u8; 16];
            probe[8..12].copy_from_slice(&map.starts[shard].to_le_bytes());
            assert_eq!(map.shard_of(&probe), shard);
            if shard > 0 {
                probe[8..12].copy_from_slice(&(map.starts[shard] - 1).to_le_bytes());
                assert_eq!(map.shard_of(&probe), shard - 1);
            }
        }
        let mut top = [0u8; 16];
        top[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(map.shard_of(&top), 1023);
    }

    #[test]
    fn random_ids_fill_shards_in_proportion_to_their_weight() {
        let map = ShardMap::new(4);
        let mut counts = [0u32; 16];
        for n in 0..160_000 {
            counts[map.shard_of(&id(n))] += 1;
        }
        let expected = |i: usize| 160_000.0 * (2f64.powf((i + 1) as f64 / 16.0) - 2f64.powf(i as f64 / 16.0));
        for (i, c) in counts.iter().enumerate() {
            let e = expected(i);
            assert!((f64::from(*c) - e).abs() < e * 0.05, "shard {i}: {c} vs {e}");
        }
    }

    #[test]
    fn the_mapping_is_pinned() {
        // The snapshot format stores entries by shard: these values must never change.
        let map = ShardMap::new(10);
        assert_eq!(map.starts[1], 2_908_254);
        assert_eq!(map.starts[512], 1_779_033_703);
        assert_eq!(map.starts[1023], 4_289_154_723);
        assert_eq!(id_hash(&[7; 16]), id_hash(&[7; 16]));
        assert_ne!(id_hash(&id(1)), id_hash(&id(2)));
    }
}
