//! What the tables allocate, computed from capacities (the tables' own accounting; the
//! benchmark compares it with the process's resident memory).

/// Bytes a `std` (hashbrown) map with `capacity()` of `capacity` allocates for entries of
/// `entry_bytes`: one control byte per bucket plus a 16-byte group, and the buckets. hashbrown
/// keeps `buckets * 7 / 8` usable slots (all but one below 8 buckets), so the bucket count
/// follows from the capacity it reports.
pub(crate) fn map_bytes(capacity: usize, entry_bytes: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 7 { capacity + 1 } else { capacity / 7 * 8 };
    buckets * (entry_bytes + 1) + 16
}

/// Entries and allocated bytes of one part of the tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartMemory {
    pub entries: usize,
    pub bytes: usize,
}

impl PartMemory {
    pub(crate) fn add(&mut self, entries: usize, bytes: usize) {
        self.entries += entries;
        self.bytes += bytes;
    }
}

/// The tables' own accounting, by part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReport {
    /// The token hash tables: one fixed-size slot per token.
    pub token_slots: PartMemory,
    /// Family, user and rotation records of tokens that have them.
    pub token_sides: PartMemory,
    /// Ends kept outside the slots (revocations, rare rotations) and out-of-range numbers.
    pub token_rare: PartMemory,
    pub families: PartMemory,
    pub retry_entries: PartMemory,
    pub retry_index: PartMemory,
    /// Grant classes, scope lists, users and client ids.
    pub interned: PartMemory,
}

impl MemoryReport {
    pub fn total_bytes(&self) -> usize {
        [
            self.token_slots,
            self.token_sides,
            self.token_rare,
            self.families,
            self.retry_entries,
            self.retry_index,
            self.interned,
        ]
        .iter()
        .map(|p| p.bytes)
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn bucket_counts_follow_from_capacity() {
        for n in [1usize, 3, 4, 7, 8, 14, 15, 100, 1000, 100_000] {
            let mut map: HashMap<u64, u64> = HashMap::new();
            for i in 0..n as u64 {
                map.insert(i, i);
            }
            let cap = map.capacity();
            let buckets = (map_bytes(cap, 16) - 16) / 17;
            assert!(buckets.is_power_of_two(), "{n}: capacity {cap} gives {buckets} buckets");
            assert!(buckets >= n, "{n}");
        }
    }
}
