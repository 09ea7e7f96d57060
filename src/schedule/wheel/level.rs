//! One level of the wheel: 64 slots of 8 lanes (lists) each, the bitmap of which slots
//! are occupied, and the arithmetic that places a deadline at a level, slot and lane.
//!
//! A slot at level `L` spans `64^L` ms. A timer lives at the level of the highest 6-bit
//! group in which its deadline differs from `now`, the same rule as the Linux and tokio
//! wheels; [`place_for`] is that rule, and the single source of truth for placement.

use super::slab::{Link, List, Slab};

/// log2 of the number of slots per level.
const SLOT_BITS: u32 = 6;
pub(super) const SLOTS: usize = 1 << SLOT_BITS;
pub(super) const LEVELS: usize = 6;
/// Bits of a deadline that the wheel proper resolves; above them is the overflow epoch.
pub(super) const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;
/// Each wheel slot is split into this many lists ("lanes"), chosen by a hash of the
/// deadline, so that a cascade can walk several independent chains at once (see the
/// wheel's `gather`). Equal deadlines always share a lane, which keeps their order.
const LANE_BITS: u32 = 3;
pub(super) const LANES: usize = 1 << LANE_BITS;

/// Where a pending timer is filed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// Already due (deadline <= now): the next `advance` fires it first.
    Due,
    /// Beyond what the levels span (a later 2^36 ms epoch than `now`).
    Overflow,
    Slot {
        level: usize,
        slot: usize,
        lane: usize,
    },
}

/// Where a pending timer with `deadline` belongs while the wheel is at `now`.
///
/// Everything else relies on this being the single source of truth for placement:
/// cancel finds a node's list through it, and it is what keeps equal deadlines together.
#[inline]
pub(super) fn place_for(now: u64, deadline: u64) -> Place {
    if deadline <= now {
        return Place::Due;
    }
    let diff = now ^ deadline;
    if diff >> WHEEL_BITS != 0 {
        return Place::Overflow;
    }
    // `| 63` makes a difference confined to the lowest group count as level 0.
    let level = (63 - (diff | 63).leading_zeros()) / SLOT_BITS;
    let slot = (deadline >> (level * SLOT_BITS)) as usize & (SLOTS - 1);
    Place::Slot {
        level: level as usize,
        slot,
        lane: lane_for(deadline),
    }
}

/// Fibonacci hashing rather than low bits: real deadlines cluster on whole seconds and
/// minutes, whose low bits are all alike.
#[inline]
pub(super) fn lane_for(deadline: u64) -> usize {
    (deadline.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - LANE_BITS)) as usize
}

/// First millisecond covered by `slot` of `level`, in the level's current rotation.
#[inline]
pub(super) fn slot_start(now: u64, level: usize, slot: usize) -> u64 {
    let shift = level as u32 * SLOT_BITS;
    let rotation_mask = (1u64 << (shift + SLOT_BITS)) - 1;
    (now & !rotation_mask) | ((slot as u64) << shift)
}

/// Milliseconds a slot of `level` spans.
#[inline]
pub(super) fn slot_span(level: usize) -> u64 {
    1u64 << (level as u32 * SLOT_BITS)
}

/// One level: `SLOTS * LANES` lists, lane-major within a slot.
#[derive(Clone)]
pub(super) struct Level {
    /// Bit `s` is set iff slot `s` is non-empty; this is what lets the wheel jump over
    /// empty time.
    occupied: u64,
    lanes: [List; SLOTS * LANES],
}

impl Level {
    pub(super) const EMPTY: Level = Level {
        occupied: 0,
        lanes: [List::EMPTY; SLOTS * LANES],
    };

    /// The earliest occupied slot. Every occupied slot lies after `now`'s slot in the
    /// level's current rotation, so the lowest bit is the earliest.
    #[inline]
    pub(super) fn first_occupied(&self) -> Option<usize> {
        (self.occupied != 0).then(|| self.occupied.trailing_zeros() as usize)
    }

    /// The lanes of `slot`.
    #[inline]
    pub(super) fn lanes(&self, slot: usize) -> &[List] {
        &self.lanes[slot * LANES..(slot + 1) * LANES]
    }

    /// Appends a pending node to a lane of `slot`.
    #[inline]
    pub(super) fn push<T>(&mut self, slab: &mut Slab<T>, slot: usize, lane: usize, index: usize) {
        slab.push_back(&mut self.lanes[slot * LANES + lane], index);
        self.occupied |= 1 << slot;
    }

    /// Takes a pending node out of the lane of `slot` it is in.
    #[inline]
    pub(super) fn unlink<T>(&mut self, slab: &mut Slab<T>, slot: usize, lane: usize, index: usize) {
        let list = &mut self.lanes[slot * LANES + lane];
        slab.unlink(list, index);
        if list.is_empty() && self.lanes(slot).iter().all(List::is_empty) {
            self.occupied &= !(1 << slot);
        }
    }

    /// Empties `slot`, returning the first node of each of its lanes.
    #[inline]
    pub(super) fn take_slot(&mut self, slot: usize) -> [Link; LANES] {
        self.occupied &= !(1 << slot);
        let mut heads = [Link::NIL; LANES];
        for (head, lane) in heads
            .iter_mut()
            .zip(&mut self.lanes[slot * LANES..(slot + 1) * LANES])
        {
            *head = lane.take();
        }
        heads
    }

    /// Empties `slot` when only `lane` can hold anything (a level-0 slot holds a single
    /// deadline), returning that lane's first node.
    #[inline]
    pub(super) fn take_lane(&mut self, slot: usize, lane: usize) -> Link {
        self.occupied &= !(1 << slot);
        self.lanes[slot * LANES + lane].take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_123_457;

    #[test]
    fn a_deadline_goes_to_the_highest_group_that_differs_from_now() {
        let now = 64 * 64 * 100 + 5; // level-0 slot 5, level-1 slot 0
        assert_eq!(place_for(now, now), Place::Due);
        assert_eq!(place_for(now, now - 1), Place::Due);
        let lane = |deadline| lane_for(deadline);
        assert_eq!(
            place_for(now, now + 1),
            Place::Slot {
                level: 0,
                slot: 6,
                lane: lane(now + 1)
            }
        );
        assert_eq!(
            place_for(now, now + 64),
            Place::Slot {
                level: 1,
                slot: 1,
                lane: lane(now + 64)
            }
        );
        assert_eq!(place_for(now, now + (1 << WHEEL_BITS)), Place::Overflow);
        assert_eq!(
            place_for(0, (1 << WHEEL_BITS) - 1),
            Place::Slot {
                level: LEVELS - 1,
                slot: SLOTS - 1,
                lane: lane((1 << WHEEL_BITS) - 1)
            }
        );
    }

    #[test]
    fn a_slot_starts_where_its_deadlines_begin() {
        for deadline in [T0 + 1, T0 + 100, T0 + 300_000, T0 + 5_000_000_000] {
            let Place::Slot { level, slot, .. } = place_for(T0, deadline) else {
                panic!("{deadline} belongs in the wheel proper");
            };
            let start = slot_start(T0, level, slot);
            assert!(start <= deadline && deadline < start + slot_span(level));
            assert!(start > T0 - T0 % slot_span(level));
        }
    }

    #[test]
    fn occupancy_follows_the_lanes() {
        let mut slab = Slab::with_capacity(0);
        let mut level = Level::EMPTY;
        assert_eq!(level.first_occupied(), None);
        let a = slab.insert(1, 'a');
        let b = slab.insert(2, 'b');
        level.push(&mut slab, 9, 3, a);
        level.push(&mut slab, 9, 5, b);
        let c = slab.insert(3, 'c');
        level.push(&mut slab, 40, 0, c);
        assert_eq!(level.first_occupied(), Some(9));
        level.unlink(&mut slab, 9, 3, a);
        assert_eq!(level.first_occupied(), Some(9), "lane 5 still holds b");
        level.unlink(&mut slab, 9, 5, b);
        assert_eq!(level.first_occupied(), Some(40));
        let heads = level.take_slot(40);
        assert_eq!(
            heads.iter().filter(|head| head.index().is_some()).count(),
            1
        );
        assert_eq!(level.first_occupied(), None);
    }
}
