//! Hierarchical timing wheel: the in-memory index of the timers that are due soon.
//!
//! # What this module owns, and what it does not
//!
//! The wheel owns one thing: knowing, cheaply and in the right order, which pending
//! timers are due at a given instant. It is a pure data structure. It never reads a
//! clock, never sleeps and never does I/O: the caller passes "now" in as UTC epoch
//! milliseconds and decides what to do with the values that fire.
//!
//! The reminder store (the database) is the source of truth. The wheel only holds what
//! the driver loaded because it is due soon, so it can be dropped and rebuilt from the
//! store at any time and losing it loses nothing. That is why it is allowed to be a plain,
//! deterministic structure with no persistence and no locking of its own, and why it can
//! be tested exhaustively against a trivially correct model.
//!
//! # Layout
//!
//! * Six levels of 64 slots; a slot at level `L` spans `64^L` ms, so level 0 has 1 ms
//!   slots and the six levels together span 2^36 ms (about 2.2 years). A timer lives at
//!   the level of the highest 6-bit group in which its deadline differs from `now`, the
//!   same rule as the Linux and tokio wheels. When `now` reaches the start of a
//!   higher-level slot, that slot is cascaded: its timers are re-filed at lower levels.
//! * Timers further away than the wheel spans (a different 2^36 ms "epoch" than `now`)
//!   sit unsorted in an overflow list, and are pulled into the wheel when `now` enters
//!   their epoch. Such timers are rare for a reminder scheduler, so the overflow list is
//!   only scanned when the wheel proper is empty.
//! * Timers whose deadline is already `<= now` when inserted sit in a "due" list, which
//!   the next [`TimingWheel::advance`] drains first.
//! * Each wheel slot is split into 8 lists ("lanes") by a hash of the deadline; see
//!   *Performance*.
//! * All timers are nodes of one slab (`Vec`), linked into those lists through `u32`
//!   indices, with a free list for reuse. Insert, cancel and reschedule are O(1) and
//!   allocate nothing once the slab has grown. Which list a node is in is not stored: it
//!   is a function of `now` and its deadline (`place_for`), which keeps a node at 24
//!   bytes for `T = u64`; with the 4-byte generation kept beside it, that is about
//!   29 bytes per timer at 1M timers, slab growth slack included.
//! * A wheel made with [`TimingWheel::unique`] also keeps an index of its values
//!   ([`ByValue`]): a hash table of slab indices, hashed by the value in the node, so it
//!   holds each value at most once ([`TimingWheel::insert_if_absent`]) and finds a
//!   pending timer by value ([`TimingWheel::find`]). It costs about 10 bytes per timer
//!   at 1M timers and one hash probe per insert and per fire; a plain wheel
//!   ([`NoIndex`]) pays nothing for it.
//!
//! The parts live in their own files: `level.rs` (one level: its slots and lanes, the
//! occupancy bitmap, and the placement arithmetic), `slab.rs` (the nodes, the lists
//! through them, the free list and generations), `index.rs` (the optional index of
//! values). This file holds the API and the algorithm that moves timers between them.
//!
//! # Ordering
//!
//! [`TimingWheel::advance`] returns timers in deadline order, ties in insertion order
//! (a reschedule counts as an insertion). This rests on one invariant: at any instant,
//! all pending timers with the same deadline are in the same list, because the list is
//! a function of `(now, deadline)`. Lists are only ever appended to, and a cascade moves
//! a list in order, so the timers of one deadline stay in the order they arrived. A
//! level-0 slot holds exactly one deadline and fires as it is; where one list or slot
//! mixes deadlines and fires at once (the due list, or a whole slot that an `advance`
//! passes entirely), it is stable-sorted by deadline, which keeps each deadline's order.
//!
//! # Performance
//!
//! With a day of timers loaded, the cost is dominated by memory latency, not by
//! instructions: a timer filed hours ago is cold, and a cascade that follows a linked
//! list pays a full cache miss per timer, one after the other. Two things keep that off
//! the critical path. Cascades read the 8 lanes of a slot round-robin into a small batch,
//! so many independent misses are in flight at once, then re-file the batch from cache.
//! And a slot that an `advance` passes entirely is fired in one go and sorted, instead
//! of being cascaded down level by level only to fire moments later.
//!
//! [`TimingWheel::next_deadline`] scans the earliest non-empty slot, whose size depends on
//! how far away the earliest timer is (up to all timers within a 4.6-hour window); it is
//! meant to be called once per `advance`, not once per insert.

use std::fmt;
use std::hash::Hash;
use std::mem;

mod index;
mod level;
mod slab;
#[cfg(test)]
mod tests;

use index::ValueIndex;
pub use index::{ByValue, NoIndex};
use level::{LANES, LEVELS, Level, Place, WHEEL_BITS, lane_for, place_for, slot_span, slot_start};
pub use slab::TimerKey;
use slab::{Link, List, Slab};

/// Timers read ahead per batch when cascading a slot (see `gather`).
const GATHER: usize = 32;

/// A hierarchical timing wheel with 1 ms resolution over `u64` epoch milliseconds.
///
/// `I` is what it keeps about its values: nothing ([`NoIndex`], made by
/// [`TimingWheel::new`]) or an index by value ([`ByValue`], made by
/// [`TimingWheel::unique`]).
pub struct TimingWheel<T, I = NoIndex> {
    now: u64,
    slab: Slab<T>,
    levels: Box<[Level; LEVELS]>,
    /// Timers already due when filed; the next `advance` fires them first.
    due: List,
    /// Timers in a later epoch than `now`, unsorted.
    overflow: List,
    /// A lower bound on the smallest epoch (`deadline >> WHEEL_BITS`) in the overflow
    /// list; exact right after a scan. It spares `advance` a scan of the overflow list
    /// every time the wheel proper is empty.
    overflow_min_epoch: u64,
    index: I,
}

impl<T> TimingWheel<T> {
    /// A wheel whose current time is `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self::with_capacity(now_ms, 0)
    }

    /// Like [`TimingWheel::new`], with room for `capacity` timers before the slab grows.
    pub fn with_capacity(now_ms: u64, capacity: usize) -> Self {
        TimingWheel::with_index(now_ms, capacity, NoIndex)
    }

    /// O(1). A deadline <= now expires on the next `advance` call.
    ///
    /// # Panics
    ///
    /// If more than `u32::MAX - 1` timers would be pending at once.
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> TimerKey {
        let index = self.slab.insert(deadline_ms, value);
        self.file(index, deadline_ms);
        self.slab.key(index)
    }
}

impl<T: Hash + Eq> TimingWheel<T, ByValue> {
    /// A wheel whose current time is `now_ms`, holding each value at most once.
    pub fn unique(now_ms: u64) -> Self {
        TimingWheel::with_index(now_ms, 0, ByValue::default())
    }

    /// O(1). Like [`TimingWheel::insert`], unless a timer with an equal value is
    /// pending: then nothing changes (that timer keeps its deadline), `value` is
    /// dropped and the answer is None. A value is pending from its insert until it is
    /// returned by `advance` or `cancel`.
    ///
    /// # Panics
    ///
    /// If more than `u32::MAX - 1` timers would be pending at once.
    pub fn insert_if_absent(&mut self, deadline_ms: u64, value: T) -> Option<TimerKey> {
        let hash = self.index.hash(&value);
        if self.index.find(&self.slab, hash, &value).is_some() {
            return None;
        }
        let index = self.slab.insert(deadline_ms, value);
        self.index.insert(&self.slab, hash, index);
        self.file(index, deadline_ms);
        Some(self.slab.key(index))
    }

    /// O(1). The key of the pending timer whose value equals `value`.
    pub fn find(&self, value: &T) -> Option<TimerKey> {
        let hash = self.index.hash(value);
        self.index
            .find(&self.slab, hash, value)
            .map(|index| self.slab.key(index))
    }
}

impl<T, I: ValueIndex<T>> TimingWheel<T, I> {
    fn with_index(now_ms: u64, capacity: usize, index: I) -> Self {
        TimingWheel {
            now: now_ms,
            slab: Slab::with_capacity(capacity),
            levels: Box::new([Level::EMPTY; LEVELS]),
            due: List::EMPTY,
            overflow: List::EMPTY,
            overflow_min_epoch: u64::MAX,
            index,
        }
    }

    /// Current time of the wheel (the last `advance` target that moved it forward, or the
    /// start).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// O(1). None when the key is stale (already expired or cancelled).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let (index, deadline) = self.slab.pending(key)?;
        self.unfile(index, deadline);
        self.release(index).map(|(_, value)| value)
    }

    /// O(1). Moves a pending timer to a new deadline; false when the key is stale.
    ///
    /// The timer then orders after every timer already pending with the same deadline,
    /// exactly as if it had been cancelled and inserted again.
    pub fn reschedule(&mut self, key: TimerKey, deadline_ms: u64) -> bool {
        let Some((index, deadline)) = self.slab.pending(key) else {
            return false;
        };
        self.unfile(index, deadline);
        self.slab.set_deadline(index, deadline_ms);
        self.file(index, deadline_ms);
        true
    }

    /// Deadline of a pending timer.
    pub fn deadline(&self, key: TimerKey) -> Option<u64> {
        self.slab.pending(key).map(|(_, deadline)| deadline)
    }

    /// Moves time to `now_ms` and appends to `out` every timer with deadline <= now_ms,
    /// in deadline order, ties in insertion order (a rescheduled timer counts as inserted
    /// at reschedule time).
    ///
    /// If `now_ms` < now(), time does NOT move backwards: only timers already due
    /// (deadline <= now()) are returned, and nothing fires twice.
    ///
    /// Cost is proportional to the timers fired plus the non-empty slots passed, never to
    /// the milliseconds skipped.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<(u64, T)>) {
        // Everything in the due list is earlier than anything in the wheel proper.
        self.drain_due(out);
        while now_ms > self.now {
            // The lowest non-empty level holds the earliest timers: level L only holds
            // deadlines in the current level-(L+1) rotation but a later level-L slot than
            // `now`, and every occupied slot lies after `now`'s slot in its level.
            if let Some((level, slot)) = self.first_occupied() {
                let start = slot_start(self.now, level, slot);
                if start > now_ms {
                    break;
                }
                let last = start + (slot_span(level) - 1);
                if last <= now_ms {
                    // The whole slot is due, and nothing else pending is as early (lower
                    // levels are empty), so everything in it fires at once.
                    self.now = last;
                    self.expire_slot(level, slot, true, out);
                } else {
                    // Time has to stop at the slot's start, not jump to `now_ms`: the
                    // cascade re-files relative to `now`, and later slots must see the
                    // `now` their timers were filed against.
                    self.now = start;
                    self.expire_slot(level, slot, false, out);
                }
            } else if !self.overflow.is_empty() && now_ms >> WHEEL_BITS >= self.overflow_min_epoch {
                if !self.pull_overflow(now_ms, out) {
                    break;
                }
            } else {
                break;
            }
        }
        self.now = self.now.max(now_ms);
    }

    /// Exact earliest deadline among pending timers (None if empty).
    ///
    /// Cheap in the common case: the occupancy bitmaps locate the earliest non-empty slot,
    /// and only that one slot is scanned (a level-0 slot not even that, it holds a single
    /// deadline). The due and overflow lists are scanned when they are what decides.
    pub fn next_deadline(&self) -> Option<u64> {
        if !self.due.is_empty() {
            return self.slab.min_deadline(&self.due);
        }
        if let Some((level, slot)) = self.first_occupied() {
            if level == 0 {
                return Some(slot_start(self.now, 0, slot));
            }
            return self.levels[level]
                .lanes(slot)
                .iter()
                .filter_map(|lane| self.slab.min_deadline(lane))
                .min();
        }
        self.slab.min_deadline(&self.overflow)
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.slab.len() == 0
    }

    /// Approximate heap bytes used by the structure (slab + levels + value index), for
    /// stats/benchmarks. Heap memory owned by the values themselves is not counted.
    ///
    /// The slab never shrinks: a burst of timers leaves its capacity behind, which is
    /// cheaper than reallocating on the next burst.
    pub fn memory_bytes(&self) -> usize {
        self.slab.memory_bytes() + mem::size_of::<[Level; LEVELS]>() + self.index.memory_bytes()
    }

    /// Level and slot of the earliest occupied slot of the wheel proper.
    #[inline]
    fn first_occupied(&self) -> Option<(usize, usize)> {
        self.levels
            .iter()
            .enumerate()
            .find_map(|(level, slots)| slots.first_occupied().map(|slot| (level, slot)))
    }

    /// Appends a pending node (already holding `deadline`), in no list, to the list
    /// `place_for` names.
    #[inline]
    fn file(&mut self, index: usize, deadline: u64) {
        match place_for(self.now, deadline) {
            Place::Due => self.slab.push_back(&mut self.due, index),
            Place::Overflow => {
                self.slab.push_back(&mut self.overflow, index);
                self.overflow_min_epoch = self.overflow_min_epoch.min(deadline >> WHEEL_BITS);
            }
            Place::Slot { level, slot, lane } => {
                self.levels[level].push(&mut self.slab, slot, lane, index)
            }
        }
    }

    /// Takes a pending node with `deadline` out of the list it is in.
    #[inline]
    fn unfile(&mut self, index: usize, deadline: u64) {
        match place_for(self.now, deadline) {
            Place::Due => self.slab.unlink(&mut self.due, index),
            Place::Overflow => self.slab.unlink(&mut self.overflow, index),
            Place::Slot { level, slot, lane } => {
                self.levels[level].unlink(&mut self.slab, slot, lane, index)
            }
        }
    }

    /// Frees a pending node that is in no list any more, returning its deadline and value.
    #[inline]
    fn release(&mut self, index: usize) -> Option<(u64, T)> {
        let released = self.slab.release(index);
        if let Some((_, value)) = &released {
            self.index.released(index, value);
        }
        released
    }

    /// Empties a wheel slot that `self.now` has reached. With `fire_all`, the whole slot
    /// is due: every timer fires, sorted by deadline. Otherwise `self.now` is the slot's
    /// start: timers due now fire and the rest cascade to lower levels relative to it.
    fn expire_slot(&mut self, level: usize, slot: usize, fire_all: bool, out: &mut Vec<(u64, T)>) {
        let now = self.now;
        if level == 0 {
            // A level-0 slot holds the single deadline `now`, hence a single lane, already
            // in insertion order.
            let mut cursor = self.levels[0].take_lane(slot, lane_for(now));
            while let Some(index) = cursor.index() {
                cursor = self.slab.next(index);
                out.extend(self.release(index));
            }
            return;
        }
        let mut cursors = self.levels[level].take_slot(slot);
        let first_fired = out.len();
        let mut batch = [(0usize, 0u64); GATHER];
        loop {
            let gathered = self.gather(&mut cursors, &mut batch);
            if gathered == 0 {
                break;
            }
            for &(index, deadline) in &batch[..gathered] {
                if fire_all || deadline <= now {
                    out.extend(self.release(index));
                } else {
                    self.file(index, deadline);
                }
            }
        }
        if fire_all {
            // Each lane is in (deadline, insertion) order for its deadlines and a deadline
            // never spans two lanes, so a stable sort by deadline gives the full order.
            // Sorting here is cheaper than cascading the slot down level by level.
            out[first_fired..].sort_by_key(|&(deadline, _)| deadline);
        }
    }

    /// Reads up to `GATHER` timers off the lanes, round-robin, into `batch`, returning
    /// how many; a lane's cursor moves past what was read.
    ///
    /// The timers of a slot above level 0 were usually filed long ago, all over the slab,
    /// so following one list is a chain of dependent loads that each miss the cache:
    /// a memory latency per timer. Following the lanes round-robin and doing nothing else
    /// meanwhile keeps many independent misses in flight instead; the batch is then
    /// processed from cache. Order is unaffected: each lane is read in order, and a
    /// deadline never spans two lanes.
    #[inline]
    fn gather(&self, cursors: &mut [Link; LANES], batch: &mut [(usize, u64); GATHER]) -> usize {
        let mut gathered = 0;
        loop {
            let mut progressed = false;
            for cursor in cursors.iter_mut() {
                if *cursor == Link::NIL {
                    continue;
                }
                // The deadline is read now too: a node can straddle two cache lines, and
                // this is where its misses overlap with the others.
                let Some((index, deadline, next)) = self.slab.read(*cursor) else {
                    *cursor = Link::NIL;
                    continue;
                };
                *cursor = next;
                batch[gathered] = (index, deadline);
                gathered += 1;
                progressed = true;
                if gathered == GATHER {
                    return gathered;
                }
            }
            if !progressed {
                return gathered;
            }
        }
    }

    /// Fires everything in the due list, in (deadline, insertion) order.
    fn drain_due(&mut self, out: &mut Vec<(u64, T)>) {
        let mut cursor = self.due.take();
        if cursor == Link::NIL {
            return;
        }
        let first = out.len();
        while let Some(index) = cursor.index() {
            cursor = self.slab.next(index);
            out.extend(self.release(index));
        }
        // The list is in insertion order, so a stable sort by deadline yields
        // (deadline, insertion) order; it is linear when inserts came in deadline order.
        out[first..].sort_by_key(|&(deadline, _)| deadline);
    }

    /// Called when the wheel proper is empty: moves the timers of the earliest overflow
    /// epoch into the wheel if that epoch starts at or before `limit`. Returns whether it
    /// did, i.e. whether `advance` has more to look at.
    fn pull_overflow(&mut self, limit: u64, out: &mut Vec<(u64, T)>) -> bool {
        let Some(earliest) = self.slab.min_deadline(&self.overflow) else {
            return false;
        };
        let epoch = earliest >> WHEEL_BITS;
        self.overflow_min_epoch = epoch;
        if epoch > limit >> WHEEL_BITS {
            return false;
        }
        // Overflow deadlines lie in a later epoch than `now`, and the wheel is empty, so
        // nothing is pending before the epoch's start: time can jump there.
        let now = epoch << WHEEL_BITS;
        self.now = now;
        let mut remaining_min_epoch = u64::MAX;
        let mut cursor = self.overflow.head();
        while let Some((index, deadline, next)) = self.slab.read(cursor) {
            cursor = next;
            if deadline >> WHEEL_BITS != epoch {
                remaining_min_epoch = remaining_min_epoch.min(deadline >> WHEEL_BITS);
                continue;
            }
            self.slab.unlink(&mut self.overflow, index);
            if deadline <= now {
                out.extend(self.release(index));
            } else {
                self.file(index, deadline);
            }
        }
        self.overflow_min_epoch = remaining_min_epoch;
        true
    }
}

impl<T, I: ValueIndex<T>> fmt::Debug for TimingWheel<T, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimingWheel")
            .field("now", &self.now)
            .field("len", &self.len())
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}
