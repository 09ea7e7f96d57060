//! The wheel's optional index of values: what lets a wheel answer "is this value
//! already pending" and find its timer, so a caller that loads the same items again
//! (the driver's refills) needs no second set beside the wheel.
//!
//! The index is a hash table of slab indices, hashed by the value in the node they
//! point at: 4 bytes and a control byte per timer, instead of a copy of every value.
//! Lookups compare values through the slab; removal, which happens as a timer fires or
//! is cancelled, compares indices only and never touches the node.

use std::hash::{BuildHasher, Hash, RandomState};

use hashbrown::HashTable;

use super::slab::Slab;

/// What a wheel keeps beside its slab about the values it holds: [`NoIndex`] (nothing)
/// or [`ByValue`]. Not implementable outside the wheel.
pub trait ValueIndex<T> {
    /// The node at `index`, which held `value`, has left the wheel.
    fn released(&mut self, index: usize, value: &T);

    /// Heap bytes of the index.
    fn memory_bytes(&self) -> usize;
}

/// No index: the wheel holds any values, duplicates included.
#[derive(Debug, Default)]
pub struct NoIndex;

impl<T> ValueIndex<T> for NoIndex {
    #[inline(always)]
    fn released(&mut self, _index: usize, _value: &T) {}

    fn memory_bytes(&self) -> usize {
        0
    }
}

/// An index by value: the wheel holds each value at most once and finds its timer.
#[derive(Default)]
pub struct ByValue {
    /// Slab indices of the pending nodes.
    table: HashTable<u32>,
    /// Randomly seeded, as std's maps are, so values chosen by an adversary cannot
    /// crowd one bucket.
    hasher: RandomState,
}

impl ByValue {
    #[inline]
    pub(super) fn hash<T: Hash>(&self, value: &T) -> u64 {
        self.hasher.hash_one(value)
    }

    /// Slab index of the pending node holding `value` (whose hash is `hash`).
    #[inline]
    pub(super) fn find<T: Eq>(&self, slab: &Slab<T>, hash: u64, value: &T) -> Option<usize> {
        self.table
            .find(hash, |&index| slab.value(index as usize) == Some(value))
            .map(|&index| index as usize)
    }

    /// Adds the pending node at `index`, whose value (of hash `hash`) no other node in
    /// the index holds.
    #[inline]
    pub(super) fn insert<T: Hash>(&mut self, slab: &Slab<T>, hash: u64, index: usize) {
        let hasher = &self.hasher;
        self.table.insert_unique(hash, index as u32, |&index| {
            slab.value(index as usize)
                .map_or(0, |value| hasher.hash_one(value))
        });
    }
}

impl<T: Hash> ValueIndex<T> for ByValue {
    #[inline]
    fn released(&mut self, index: usize, value: &T) {
        if let Ok(entry) = self
            .table
            .find_entry(self.hasher.hash_one(value), |&held| held as usize == index)
        {
            entry.remove();
        }
    }

    fn memory_bytes(&self) -> usize {
        self.table.allocation_size()
    }
}
