//! Interners: each distinct value stored once, referred to by a `u32` handle.
//!
//! Readers resolve a handle without a lock and get a reference that lives as long as the
//! interner, so a token view borrows its client id, scopes and user instead of cloning `Arc`s
//! (which would bounce one reference count between cores on every request). Values are never
//! removed or moved: storage is a list of fixed-size segments, each slot a `OnceLock` written
//! once. Only the writer interns; the value-to-handle index is sharded so that its growth
//! rehashes a small part at a time.
//!
//! **Invariant:** handles are dense and given in order, so a dump of the first `len` values,
//! read back in order, gives every value its old handle.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

/// Values per segment: a segment is allocated when the first handle in it is given out.
const SEGMENT_LEN: usize = 1 << 14;
/// Shards of the value-to-handle index.
const INDEX_SHARDS: usize = 64;

type Segment<T> = Box<[OnceLock<T>]>;

pub(crate) struct Interner<T> {
    /// `segments[h / SEGMENT_LEN][h % SEGMENT_LEN]` holds handle `h`'s value.
    segments: OnceLock<Box<[OnceLock<Segment<T>>]>>,
    /// Handles given out; every slot below it is set.
    len: AtomicU32,
    /// Most handles this interner gives out.
    handles_max: u32,
    /// Value to handle, sharded by the value's hash.
    index: Box<[Mutex<HashMap<T, u32, foldhash::fast::FixedState>>]>,
    hasher: foldhash::fast::FixedState,
    seed: u64,
    /// Serialises appends (only the writer interns, so this is never contended).
    append: Mutex<()>,
}

/// The interner gave out every handle it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InternerFull;

impl<T: Hash + Eq + Clone> Interner<T> {
    /// An interner of at most `handles_max` values, hashing with `seed`.
    pub(crate) fn new(handles_max: u32, seed: u64) -> Self {
        let hasher = foldhash::fast::FixedState::with_seed(seed);
        Self {
            segments: OnceLock::new(),
            len: AtomicU32::new(0),
            handles_max,
            index: (0..INDEX_SHARDS).map(|_| Mutex::new(HashMap::with_hasher(hasher.clone()))).collect(),
            hasher,
            seed,
            append: Mutex::new(()),
        }
    }

    pub(crate) fn len(&self) -> u32 {
        self.len.load(Ordering::Acquire)
    }

    /// The value of `handle`.
    #[inline]
    pub(crate) fn get(&self, handle: u32) -> Option<&T> {
        let h = handle as usize;
        self.segments.get()?.get(h / SEGMENT_LEN)?.get()?.get(h % SEGMENT_LEN)?.get()
    }

    /// The handle of `value`, if it was interned.
    pub(crate) fn find<Q>(&self, value: &Q) -> Option<u32>
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.index_shard(value);
        self.index.get(shard)?.lock().get(value).copied()
    }

    /// The handle of `value`, interning it if it is new.
    pub(crate) fn intern(&self, value: &T) -> Result<u32, InternerFull> {
        let shard = self.index_shard(value);
        let Some(index) = self.index.get(shard) else { return Err(InternerFull) };
        let mut index = index.lock();
        if let Some(handle) = index.get(value) {
            return Ok(*handle);
        }
        let handle = self.push(value.clone())?;
        index.insert(value.clone(), handle);
        Ok(handle)
    }

    /// Appends `value` under the next handle without looking for it first (used by the
    /// snapshot loader, which checks for duplicates itself).
    pub(crate) fn push_new(&self, value: T) -> Result<u32, InternerFull> {
        let shard = self.index_shard(&value);
        let Some(index) = self.index.get(shard) else { return Err(InternerFull) };
        let mut index = index.lock();
        if index.contains_key(&value) {
            return Err(InternerFull);
        }
        let handle = self.push(value.clone())?;
        index.insert(value, handle);
        Ok(handle)
    }

    fn push(&self, value: T) -> Result<u32, InternerFull> {
        let _append = self.append.lock();
        let handle = self.len.load(Ordering::Acquire);
        if handle >= self.handles_max {
            return Err(InternerFull);
        }
        let h = handle as usize;
        let segments = self
            .segments
            .get_or_init(|| (0..(self.handles_max as usize).div_ceil(SEGMENT_LEN)).map(|_| OnceLock::new()).collect());
        let segment = segments
            .get(h / SEGMENT_LEN)
            .ok_or(InternerFull)?
            .get_or_init(|| (0..SEGMENT_LEN).map(|_| OnceLock::new()).collect());
        segment.get(h % SEGMENT_LEN).ok_or(InternerFull)?.set(value).map_err(|_| InternerFull)?;
        self.len.store(handle + 1, Ordering::Release);
        Ok(handle)
    }

    fn index_shard<Q: Hash + ?Sized>(&self, value: &Q) -> usize {
        (self.hasher.hash_one(value) >> 58) as usize % INDEX_SHARDS
    }

    /// Bytes allocated, estimated from segment and index capacities.
    pub(crate) fn allocated_bytes(&self) -> usize {
        let slot = std::mem::size_of::<OnceLock<T>>();
        let segments = self.segments.get().map_or(0, |s| {
            s.len() * std::mem::size_of::<OnceLock<Segment<T>>>()
                + s.iter().filter(|seg| seg.get().is_some()).count() * SEGMENT_LEN * slot
        });
        let index: usize = self
            .index
            .iter()
            .map(|m| super::memory::map_bytes(m.lock().capacity(), std::mem::size_of::<(T, u32)>()))
            .sum();
        segments + index
    }

    /// A copy with the same handles.
    pub(crate) fn duplicate(&self) -> Self {
        let copy = Self::new(self.handles_max, self.seed);
        for handle in 0..self.len() {
            if let Some(value) = self.get(handle) {
                // Same values, same order: the handles come out the same.
                let _ = copy.push_new(value.clone());
            }
        }
        copy
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn values_get_dense_handles_once() {
        let interner: Interner<Arc<str>> = Interner::new(1 << 20, 7);
        let a = interner.intern(&Arc::from("a")).unwrap();
        let b = interner.intern(&Arc::from("b")).unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(interner.intern(&Arc::from("a")).unwrap(), 0);
        assert_eq!(interner.find("b"), Some(1));
        assert_eq!(interner.find("c"), None);
        assert_eq!(interner.get(1).map(|s| &**s), Some("b"));
        assert_eq!(interner.get(2), None);
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn handles_span_segments_and_stop_at_the_limit() {
        let interner: Interner<u64> = Interner::new(SEGMENT_LEN as u32 + 3, 0);
        for n in 0..SEGMENT_LEN as u64 + 3 {
            assert_eq!(interner.intern(&n), Ok(n as u32));
        }
        assert_eq!(interner.intern(&u64::MAX), Err(InternerFull));
        assert_eq!(interner.get(SEGMENT_LEN as u32 + 2), Some(&(SEGMENT_LEN as u64 + 2)));
        let copy = interner.duplicate();
        assert_eq!(copy.len(), interner.len());
        assert_eq!(copy.find(&(SEGMENT_LEN as u64 + 1)), Some(SEGMENT_LEN as u32 + 1));
    }
}
