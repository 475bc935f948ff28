//! Fixed-width little-endian fields of the packed records, and the free-list slab that holds
//! the optional parts of token records.

/// Largest value of a 48-bit field: times in ms until the year 10889, or 2.8e14 events.
pub(crate) const MAX48: u64 = (1 << 48) - 1;

/// "No handle" in a 32-bit handle field.
pub(crate) const NO_HANDLE: u32 = u32::MAX;

pub(crate) fn u48(value: u64) -> Option<[u8; 6]> {
    if value > MAX48 {
        return None;
    }
    let b = value.to_le_bytes();
    Some([b[0], b[1], b[2], b[3], b[4], b[5]])
}

pub(crate) fn i48(value: i64) -> Option<[u8; 6]> {
    u64::try_from(value).ok().and_then(u48)
}

pub(crate) fn get_u48(b: [u8; 6]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0])
}

pub(crate) fn get_i48(b: [u8; 6]) -> i64 {
    // At most 2^48 - 1, so always in range.
    get_u48(b) as i64
}

pub(crate) fn get_u32(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

/// A vector of fixed-size records whose freed slots are reused; indexes stay stable.
#[derive(Clone, Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<T>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self { entries: Vec::new(), free: Vec::new() }
    }
}

impl<T: Copy> Slab<T> {
    pub(crate) fn alloc(&mut self, value: T) -> u32 {
        if let Some(index) = self.free.pop()
            && let Some(slot) = self.entries.get_mut(index as usize)
        {
            *slot = value;
            return index;
        }
        if self.entries.len() == self.entries.capacity() {
            // Grow by an eighth, not by doubling: the copy is one shard's small slab, and the
            // slack stays near 6% instead of averaging 44%.
            self.entries.reserve_exact((self.entries.len() / 8).max(16));
        }
        self.entries.push(value);
        // A shard holds far fewer than 2^32 records.
        (self.entries.len() - 1) as u32
    }

    pub(crate) fn get(&self, index: u32) -> Option<&T> {
        self.entries.get(index as usize)
    }

    pub(crate) fn release(&mut self, index: u32) {
        self.free.push(index);
        if self.free.len() == self.entries.len() {
            // Everything is free: give the memory back.
            self.entries = Vec::new();
            self.free = Vec::new();
        }
    }

    pub(crate) fn live(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    pub(crate) fn allocated_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<T>() + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_refuse_what_does_not_fit() {
        for v in [0i64, 1, 1_700_000_000_000, MAX48 as i64] {
            assert_eq!(i48(v).map(get_i48), Some(v));
        }
        assert_eq!(i48(-1), None);
        assert_eq!(i48(MAX48 as i64 + 1), None);
        assert_eq!(u48(u64::MAX), None);
    }

    #[test]
    fn slab_reuses_freed_slots_and_frees_when_empty() {
        let mut slab = Slab::default();
        let a = slab.alloc(1u8);
        let b = slab.alloc(2u8);
        slab.release(a);
        assert_eq!(slab.alloc(3u8), a);
        assert_eq!((slab.get(a), slab.get(b), slab.live()), (Some(&3), Some(&2), 2));
        slab.release(a);
        slab.release(b);
        assert_eq!((slab.live(), slab.allocated_bytes()), (0, 0));
    }
}
