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
//!   is a function of `now` and its deadline (`list_for`), which keeps a node at 24
//!   bytes for `T = u64`; with the 4-byte generation kept beside it, that is about
//!   29 bytes per timer at 1M timers, slab growth slack included.
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
use std::mem;
use std::num::NonZeroU32;

/// log2 of the number of slots per level.
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const LEVELS: usize = 6;
/// Bits of a deadline that the wheel proper resolves; above them is the overflow epoch.
const WHEEL_BITS: u32 = SLOT_BITS * LEVELS as u32;
/// Each wheel slot is split into this many lists ("lanes"), chosen by a hash of the
/// deadline, so that a cascade can walk several independent chains at once (see
/// `expire_slot`). Equal deadlines always share a lane, which keeps their order.
const LANE_BITS: u32 = 3;
const LANES: usize = 1 << LANE_BITS;
/// Timers read ahead per batch when cascading a slot (see `expire_slot`).
const GATHER: usize = 32;
/// List ids: `(level * SLOTS + slot) * LANES + lane` for wheel slots, then the two
/// special lists.
const DUE: usize = LEVELS * SLOTS * LANES;
const OVERFLOW: usize = DUE + 1;
const LIST_COUNT: usize = OVERFLOW + 1;
/// Node indices are stored as `index + 1` in a `NonZeroU32` and `u32::MAX` means "none",
/// so this many nodes fit.
const MAX_NODES: usize = (u32::MAX - 1) as usize;

/// Opaque handle to a timer in the wheel (slab index + generation so a stale key is
/// detected).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

/// A node index, or none.
///
/// Stored as `index + 1` in a `NonZeroU32` so the all-zero bit pattern is free: the
/// compiler uses it as the tag of [`Node`], which keeps a node at 24 bytes for
/// `T = u64` instead of 32.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Link(NonZeroU32);

impl Link {
    const NIL: Link = Link(NonZeroU32::MAX);

    /// `index` must be below `MAX_NODES`, which `insert` guarantees.
    #[inline]
    fn to(index: usize) -> Link {
        Link(NonZeroU32::MIN.saturating_add(index as u32))
    }

    #[inline]
    fn index(self) -> Option<usize> {
        if self == Link::NIL {
            None
        } else {
            Some(self.0.get() as usize - 1)
        }
    }
}

#[derive(Clone, Copy)]
struct List {
    head: Link,
    tail: Link,
}

impl List {
    const EMPTY: List = List {
        head: Link::NIL,
        tail: Link::NIL,
    };

    fn is_empty(&self) -> bool {
        self.head == Link::NIL
    }
}

enum Node<T> {
    Pending {
        deadline: u64,
        prev: Link,
        next: Link,
        value: T,
    },
    Free {
        next_free: Link,
    },
}

impl<T> Node<T> {
    #[inline]
    fn set_prev(&mut self, link: Link) {
        if let Node::Pending { prev, .. } = self {
            *prev = link;
        }
    }

    #[inline]
    fn set_next(&mut self, link: Link) {
        if let Node::Pending { next, .. } = self {
            *next = link;
        }
    }
}

/// The list a pending timer with `deadline` belongs in while the wheel is at `now`.
///
/// Everything else relies on this being the single source of truth for placement:
/// cancel finds a node's list through it, and it is what keeps equal deadlines together.
#[inline]
fn list_for(now: u64, deadline: u64) -> usize {
    if deadline <= now {
        return DUE;
    }
    let diff = now ^ deadline;
    if diff >> WHEEL_BITS != 0 {
        return OVERFLOW;
    }
    // `| 63` makes a difference confined to the lowest group count as level 0.
    let level = (63 - (diff | 63).leading_zeros()) / SLOT_BITS;
    let slot = (deadline >> (level * SLOT_BITS)) as usize & (SLOTS - 1);
    (level as usize * SLOTS + slot) * LANES + lane_for(deadline)
}

/// Fibonacci hashing rather than low bits: real deadlines cluster on whole seconds and
/// minutes, whose low bits are all alike.
#[inline]
fn lane_for(deadline: u64) -> usize {
    (deadline.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - LANE_BITS)) as usize
}

/// First millisecond covered by `slot` of `level`, in the level's current rotation.
#[inline]
fn slot_start(now: u64, level: usize, slot: usize) -> u64 {
    let shift = level as u32 * SLOT_BITS;
    let rotation_mask = (1u64 << (shift + SLOT_BITS)) - 1;
    (now & !rotation_mask) | ((slot as u64) << shift)
}

/// A hierarchical timing wheel with 1 ms resolution over `u64` epoch milliseconds.
pub struct TimingWheel<T> {
    now: u64,
    nodes: Vec<Node<T>>,
    /// Per-node generation, kept apart from `nodes` because a node has no spare bytes.
    /// Bumped when a node is reused, so keys of earlier occupants no longer match (it
    /// wraps after 2^32 reuses of one node, far beyond any key's useful life).
    generations: Vec<u32>,
    free_head: Link,
    lists: Box<[List]>,
    /// Bit `s` of `occupied[L]` is set iff slot `s` of level `L` is non-empty; this is
    /// what lets `advance` and `next_deadline` jump over empty time.
    occupied: [u64; LEVELS],
    len: usize,
    /// A lower bound on the smallest epoch (`deadline >> WHEEL_BITS`) in the overflow
    /// list; exact right after a scan. It spares `advance` a scan of the overflow list
    /// every time the wheel proper is empty.
    overflow_min_epoch: u64,
}

impl<T> TimingWheel<T> {
    /// A wheel whose current time is `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self::with_capacity(now_ms, 0)
    }

    /// Like [`TimingWheel::new`], with room for `capacity` timers before the slab grows.
    pub fn with_capacity(now_ms: u64, capacity: usize) -> Self {
        TimingWheel {
            now: now_ms,
            nodes: Vec::with_capacity(capacity),
            generations: Vec::with_capacity(capacity),
            free_head: Link::NIL,
            lists: vec![List::EMPTY; LIST_COUNT].into_boxed_slice(),
            occupied: [0; LEVELS],
            len: 0,
            overflow_min_epoch: u64::MAX,
        }
    }

    /// Current time of the wheel (the last `advance` target that moved it forward, or the
    /// start).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// O(1). A deadline <= now expires on the next `advance` call.
    ///
    /// # Panics
    ///
    /// If more than `u32::MAX - 1` timers would be pending at once.
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> TimerKey {
        let node = Node::Pending {
            deadline: deadline_ms,
            prev: Link::NIL,
            next: Link::NIL,
            value,
        };
        let index = if let Some(index) = self.free_head.index()
            && let Some(&Node::Free { next_free }) = self.nodes.get(index)
        {
            self.free_head = next_free;
            self.nodes[index] = node;
            self.generations[index] = self.generations[index].wrapping_add(1);
            index
        } else {
            assert!(
                self.nodes.len() < MAX_NODES,
                "TimingWheel holds at most {MAX_NODES} timers"
            );
            self.nodes.push(node);
            self.generations.push(0);
            self.nodes.len() - 1
        };
        self.len += 1;
        self.push_back(list_for(self.now, deadline_ms), index, deadline_ms);
        TimerKey {
            index: index as u32,
            generation: self.generations[index],
        }
    }

    /// O(1). None when the key is stale (already expired or cancelled).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let (index, deadline) = self.pending(key)?;
        self.unlink(list_for(self.now, deadline), index);
        self.release(index).map(|(_, value)| value)
    }

    /// O(1). Moves a pending timer to a new deadline; false when the key is stale.
    ///
    /// The timer then orders after every timer already pending with the same deadline,
    /// exactly as if it had been cancelled and inserted again.
    pub fn reschedule(&mut self, key: TimerKey, deadline_ms: u64) -> bool {
        let Some((index, deadline)) = self.pending(key) else {
            return false;
        };
        self.unlink(list_for(self.now, deadline), index);
        if let Node::Pending { deadline, .. } = &mut self.nodes[index] {
            *deadline = deadline_ms;
        }
        self.push_back(list_for(self.now, deadline_ms), index, deadline_ms);
        true
    }

    /// Deadline of a pending timer.
    pub fn deadline(&self, key: TimerKey) -> Option<u64> {
        self.pending(key).map(|(_, deadline)| deadline)
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
            if let Some(level) = self.occupied.iter().position(|&bits| bits != 0) {
                let slot = self.occupied[level].trailing_zeros() as usize;
                let start = slot_start(self.now, level, slot);
                if start > now_ms {
                    break;
                }
                let last = start + ((1u64 << (level as u32 * SLOT_BITS)) - 1);
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
            } else if !self.lists[OVERFLOW].is_empty()
                && now_ms >> WHEEL_BITS >= self.overflow_min_epoch
            {
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
        if !self.lists[DUE].is_empty() {
            return self.min_deadline(DUE);
        }
        if let Some(level) = self.occupied.iter().position(|&bits| bits != 0) {
            let slot = self.occupied[level].trailing_zeros() as usize;
            if level == 0 {
                return Some(slot_start(self.now, 0, slot));
            }
            let lanes = (level * SLOTS + slot) * LANES;
            return (lanes..lanes + LANES)
                .filter_map(|list| self.min_deadline(list))
                .min();
        }
        self.min_deadline(OVERFLOW)
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Approximate heap bytes used by the structure (slab + slots + overflow), for
    /// stats/benchmarks. Heap memory owned by the values themselves is not counted.
    ///
    /// The slab never shrinks: a burst of timers leaves its capacity behind, which is
    /// cheaper than reallocating on the next burst.
    pub fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * mem::size_of::<Node<T>>()
            + self.generations.capacity() * mem::size_of::<u32>()
            + self.lists.len() * mem::size_of::<List>()
    }

    /// Index and deadline of the timer `key` names, if it is still pending.
    fn pending(&self, key: TimerKey) -> Option<(usize, u64)> {
        let index = key.index as usize;
        if self.generations.get(index) != Some(&key.generation) {
            return None;
        }
        match self.nodes.get(index) {
            Some(Node::Pending { deadline, .. }) => Some((index, *deadline)),
            _ => None,
        }
    }

    /// Appends a node (already holding `deadline`) to the tail of `list`. Appending, never
    /// inserting in the middle, is what preserves insertion order among equal deadlines.
    #[inline]
    fn push_back(&mut self, list: usize, index: usize, deadline: u64) {
        let link = Link::to(index);
        let tail = self.lists[list].tail;
        if let Node::Pending { prev, next, .. } = &mut self.nodes[index] {
            *prev = tail;
            *next = Link::NIL;
        }
        match tail.index() {
            Some(tail) => self.nodes[tail].set_next(link),
            None => self.lists[list].head = link,
        }
        self.lists[list].tail = link;
        if list < DUE {
            let slot = list / LANES;
            self.occupied[slot / SLOTS] |= 1 << (slot % SLOTS);
        } else if list == OVERFLOW {
            self.overflow_min_epoch = self.overflow_min_epoch.min(deadline >> WHEEL_BITS);
        }
    }

    /// Takes a pending node out of `list`, which must be the list it is in.
    #[inline]
    fn unlink(&mut self, list: usize, index: usize) {
        let (prev, next) = match &self.nodes[index] {
            Node::Pending { prev, next, .. } => (*prev, *next),
            Node::Free { .. } => return,
        };
        match prev.index() {
            Some(prev_index) => self.nodes[prev_index].set_next(next),
            None => self.lists[list].head = next,
        }
        match next.index() {
            Some(next_index) => self.nodes[next_index].set_prev(prev),
            None => self.lists[list].tail = prev,
        }
        if list < DUE && self.lists[list].is_empty() {
            let slot = list / LANES;
            if self.lists[slot * LANES..(slot + 1) * LANES]
                .iter()
                .all(List::is_empty)
            {
                self.occupied[slot / SLOTS] &= !(1 << (slot % SLOTS));
            }
        }
    }

    /// Frees a pending node that is in no list any more, returning its deadline and value.
    #[inline]
    fn release(&mut self, index: usize) -> Option<(u64, T)> {
        if !matches!(self.nodes[index], Node::Pending { .. }) {
            return None;
        }
        let node = mem::replace(
            &mut self.nodes[index],
            Node::Free {
                next_free: self.free_head,
            },
        );
        self.free_head = Link::to(index);
        self.len -= 1;
        match node {
            Node::Pending {
                deadline, value, ..
            } => Some((deadline, value)),
            Node::Free { .. } => None,
        }
    }

    /// Empties a wheel slot that `self.now` has reached. With `fire_all`, the whole slot
    /// is due: every timer fires, sorted by deadline. Otherwise `self.now` is the slot's
    /// start: timers due now fire and the rest cascade to lower levels relative to it.
    fn expire_slot(&mut self, level: usize, slot: usize, fire_all: bool, out: &mut Vec<(u64, T)>) {
        let now = self.now;
        self.occupied[level] &= !(1 << slot);
        let first_lane = (level * SLOTS + slot) * LANES;
        if level == 0 {
            // A level-0 slot holds the single deadline `now`, hence a single lane, already
            // in insertion order.
            let list = first_lane + lane_for(now);
            let mut cursor = self.lists[list].head;
            self.lists[list] = List::EMPTY;
            while let Some(index) = cursor.index() {
                cursor = match &self.nodes[index] {
                    Node::Pending { next, .. } => *next,
                    Node::Free { .. } => Link::NIL,
                };
                out.extend(self.release(index));
            }
            return;
        }
        let mut cursors = [Link::NIL; LANES];
        for (cursor, list) in cursors
            .iter_mut()
            .zip(&mut self.lists[first_lane..first_lane + LANES])
        {
            *cursor = list.head;
            *list = List::EMPTY;
        }
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
                    self.push_back(list_for(now, deadline), index, deadline);
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
                let Some(index) = cursor.index() else {
                    continue;
                };
                // The deadline is read now too: a node can straddle two cache lines, and
                // this is where its misses overlap with the others.
                let Some(Node::Pending { deadline, next, .. }) = self.nodes.get(index) else {
                    *cursor = Link::NIL;
                    continue;
                };
                *cursor = *next;
                batch[gathered] = (index, *deadline);
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
        let mut cursor = self.lists[DUE].head;
        if cursor == Link::NIL {
            return;
        }
        self.lists[DUE] = List::EMPTY;
        let first = out.len();
        while let Some(index) = cursor.index() {
            cursor = match &self.nodes[index] {
                Node::Pending { next, .. } => *next,
                Node::Free { .. } => Link::NIL,
            };
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
        let Some(earliest) = self.min_deadline(OVERFLOW) else {
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
        let mut cursor = self.lists[OVERFLOW].head;
        while let Some(index) = cursor.index() {
            let deadline = match &self.nodes[index] {
                Node::Pending { deadline, next, .. } => {
                    cursor = *next;
                    *deadline
                }
                Node::Free { .. } => break,
            };
            if deadline >> WHEEL_BITS != epoch {
                remaining_min_epoch = remaining_min_epoch.min(deadline >> WHEEL_BITS);
                continue;
            }
            self.unlink(OVERFLOW, index);
            if deadline <= now {
                out.extend(self.release(index));
            } else {
                self.push_back(list_for(now, deadline), index, deadline);
            }
        }
        self.overflow_min_epoch = remaining_min_epoch;
        true
    }

    fn min_deadline(&self, list: usize) -> Option<u64> {
        let mut cursor = self.lists[list].head;
        let mut min = None;
        while let Some(index) = cursor.index() {
            match &self.nodes[index] {
                Node::Pending { deadline, next, .. } => {
                    min = Some(min.map_or(*deadline, |m: u64| m.min(*deadline)));
                    cursor = *next;
                }
                Node::Free { .. } => break,
            }
        }
        min
    }
}

impl<T> fmt::Debug for TimingWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimingWheel")
            .field("now", &self.now)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    /// A realistic epoch-milliseconds start, deliberately not aligned to any slot.
    const T0: u64 = 1_700_000_123_457;
    const SECOND: u64 = 1_000;
    const HOUR: u64 = 3_600 * SECOND;
    const DAY: u64 = 24 * HOUR;
    const YEAR: u64 = 365 * DAY;

    fn advance<T>(wheel: &mut TimingWheel<T>, to: u64) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        wheel.advance(to, &mut out);
        out
    }

    /// Deterministic pseudo-random numbers (SplitMix64), so tests need no extra crate.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn node_fits_in_24_bytes_for_u64() {
        assert_eq!(mem::size_of::<Node<u64>>(), 24);
        assert_eq!(mem::size_of::<Link>(), 4);
    }

    #[test]
    fn insert_in_the_past_fires_on_next_advance() {
        let mut wheel = TimingWheel::new(T0);
        wheel.insert(T0 - 5, 'a');
        wheel.insert(T0, 'b');
        wheel.insert(T0 - 10, 'c');
        wheel.insert(0, 'z');
        wheel.insert(T0 + 1, 'd');
        assert_eq!(wheel.next_deadline(), Some(0));
        assert_eq!(
            advance(&mut wheel, T0),
            vec![(0, 'z'), (T0 - 10, 'c'), (T0 - 5, 'a'), (T0, 'b')]
        );
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.next_deadline(), Some(T0 + 1));
        // Even an advance that does not move time delivers what is already due.
        wheel.insert(T0 - 1, 'e');
        assert_eq!(advance(&mut wheel, T0 - 1_000), vec![(T0 - 1, 'e')]);
        assert_eq!(wheel.now(), T0);
        assert_eq!(advance(&mut wheel, T0 + 1), vec![(T0 + 1, 'd')]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn same_deadline_fires_in_insertion_order_across_cascades() {
        let deadline = T0 + 10 * HOUR + 7;
        let mut wheel = TimingWheel::new(T0);
        let a = wheel.insert(deadline, "a"); // filed high, cascades down
        let b = wheel.insert(deadline, "b");
        assert!(advance(&mut wheel, deadline - 100).is_empty());
        wheel.insert(deadline, "c"); // filed at a low level, after a and b cascaded
        wheel.insert(deadline - 1, "early");
        assert!(wheel.reschedule(a, deadline)); // counts as inserted now
        assert_eq!(wheel.deadline(b), Some(deadline));
        wheel.insert(deadline, "d");
        assert_eq!(
            advance(&mut wheel, deadline + 1),
            vec![
                (deadline - 1, "early"),
                (deadline, "b"),
                (deadline, "c"),
                (deadline, "a"),
                (deadline, "d"),
            ]
        );
    }

    #[test]
    fn same_deadline_in_one_slot_keeps_insertion_order() {
        let mut wheel = TimingWheel::new(T0);
        for i in 0..100 {
            wheel.insert(T0 + 5 * HOUR, i);
        }
        let fired: Vec<i32> = advance(&mut wheel, T0 + 6 * HOUR)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(fired, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn stale_keys_are_detected() {
        let mut wheel = TimingWheel::new(T0);
        let cancelled = wheel.insert(T0 + 50, 1);
        assert_eq!(wheel.cancel(cancelled), Some(1));
        assert_eq!(wheel.cancel(cancelled), None);
        assert!(!wheel.reschedule(cancelled, T0 + 60));
        assert_eq!(wheel.deadline(cancelled), None);

        // The slab slot is reused; the old key must not reach the new timer.
        let reused = wheel.insert(T0 + 70, 2);
        assert_ne!(reused, cancelled);
        assert_eq!(wheel.cancel(cancelled), None);
        assert_eq!(wheel.deadline(reused), Some(T0 + 70));

        assert_eq!(advance(&mut wheel, T0 + 70), vec![(T0 + 70, 2)]);
        assert_eq!(wheel.cancel(reused), None);
        assert!(!wheel.reschedule(reused, T0 + 100));
        assert_eq!(wheel.deadline(reused), None);
        assert!(wheel.is_empty());

        // A key this wheel never issued (here from another, empty wheel) is stale. Keys are
        // only meaningful for the wheel that issued them, as with any slab key.
        let other = TimingWheel::<u8>::new(0).insert(5, 0);
        let mut fresh = TimingWheel::<u8>::new(0);
        assert_eq!(fresh.cancel(other), None);
    }

    #[test]
    fn far_future_timers_beyond_the_top_level_keep_order() {
        let mut wheel = TimingWheel::new(T0);
        let ten_years = T0 + 10 * YEAR;
        wheel.insert(ten_years, "x");
        wheel.insert(ten_years - 1, "w");
        wheel.insert(ten_years, "y");
        wheel.insert(T0 + 3 * YEAR, "three");
        let cancelled = wheel.insert(T0 + 2 * YEAR, "cancelled");
        wheel.insert(u64::MAX, "end of time");
        assert_eq!(wheel.next_deadline(), Some(T0 + 2 * YEAR));
        assert_eq!(wheel.cancel(cancelled), Some("cancelled"));
        assert_eq!(wheel.next_deadline(), Some(T0 + 3 * YEAR));

        assert!(advance(&mut wheel, T0 + YEAR).is_empty());
        assert!(advance(&mut wheel, T0 + 3 * YEAR - 1).is_empty());
        assert_eq!(wheel.next_deadline(), Some(T0 + 3 * YEAR));
        assert_eq!(
            advance(&mut wheel, T0 + 3 * YEAR),
            vec![(T0 + 3 * YEAR, "three")]
        );
        assert_eq!(wheel.next_deadline(), Some(ten_years - 1));
        // Added while the others are still in overflow: must still come after them.
        wheel.insert(ten_years, "z");
        assert_eq!(
            advance(&mut wheel, ten_years),
            vec![
                (ten_years - 1, "w"),
                (ten_years, "x"),
                (ten_years, "y"),
                (ten_years, "z"),
            ]
        );
        assert_eq!(wheel.next_deadline(), Some(u64::MAX));
        assert_eq!(
            advance(&mut wheel, u64::MAX),
            vec![(u64::MAX, "end of time")]
        );
        assert!(wheel.is_empty());
    }

    #[test]
    fn timer_exactly_at_an_epoch_start_fires_when_pulled_in() {
        let epoch_start = 5 << WHEEL_BITS;
        let mut wheel = TimingWheel::new(epoch_start - 3 * YEAR);
        wheel.insert(epoch_start, 1);
        wheel.insert(epoch_start + 1, 2);
        assert_eq!(advance(&mut wheel, epoch_start), vec![(epoch_start, 1)]);
        assert_eq!(wheel.next_deadline(), Some(epoch_start + 1));
    }

    #[test]
    fn a_big_jump_fires_everything_in_order() {
        let mut wheel = TimingWheel::new(T0);
        let mut rng = 7;
        let mut expected = Vec::new();
        for i in 0..20_000u32 {
            let deadline = T0 + splitmix(&mut rng) % (40 * DAY);
            wheel.insert(deadline, i);
            expected.push((deadline, i));
        }
        expected.sort_by_key(|&(deadline, _)| deadline); // stable: ties stay in insertion order
        assert_eq!(advance(&mut wheel, T0 + 41 * DAY), expected);
        assert!(wheel.is_empty());
        assert_eq!(wheel.now(), T0 + 41 * DAY);
    }

    #[test]
    fn a_jump_across_all_of_time_does_not_walk_milliseconds() {
        let mut wheel = TimingWheel::new(0);
        wheel.insert(1, 1);
        wheel.insert(1 << 40, 2);
        wheel.insert(u64::MAX - 1, 3);
        let fired = advance(&mut wheel, u64::MAX);
        assert_eq!(fired, vec![(1, 1), (1 << 40, 2), (u64::MAX - 1, 3)]);
        assert_eq!(wheel.now(), u64::MAX);
        // Anything inserted now is already due.
        wheel.insert(u64::MAX, 4);
        assert_eq!(advance(&mut wheel, 0), vec![(u64::MAX, 4)]);
    }

    #[test]
    fn time_never_moves_backwards() {
        let mut wheel = TimingWheel::new(T0);
        wheel.insert(T0 + 2 * SECOND, "later");
        assert!(advance(&mut wheel, T0 + SECOND).is_empty());
        assert_eq!(wheel.now(), T0 + SECOND);
        wheel.insert(T0 + SECOND / 2, "past");
        assert_eq!(advance(&mut wheel, T0), vec![(T0 + SECOND / 2, "past")]);
        assert_eq!(wheel.now(), T0 + SECOND);
        assert!(advance(&mut wheel, T0).is_empty());
        assert!(advance(&mut wheel, 0).is_empty());
        assert_eq!(wheel.next_deadline(), Some(T0 + 2 * SECOND));
        assert_eq!(
            advance(&mut wheel, T0 + 2 * SECOND),
            vec![(T0 + 2 * SECOND, "later")]
        );
    }

    #[test]
    fn next_deadline_is_exact_at_every_level() {
        let mut wheel = TimingWheel::new(T0);
        assert_eq!(wheel.next_deadline(), None);
        let offsets = [
            3 * HOUR + 11,
            3 * HOUR + 5,
            2 * YEAR,
            70,
            4_100,
            9,
            DAY + 1,
            11 * YEAR,
            300_000,
        ];
        let mut keys: Vec<(u64, TimerKey)> = offsets
            .iter()
            .map(|&offset| (T0 + offset, wheel.insert(T0 + offset, offset)))
            .collect();
        // Cancel the earliest each time: next_deadline must find the runner-up exactly,
        // even when it shares a high-level slot with later timers.
        keys.sort_by_key(|&(deadline, _)| deadline);
        for (i, &(deadline, key)) in keys.iter().enumerate() {
            assert_eq!(wheel.next_deadline(), Some(deadline));
            wheel.cancel(key);
            assert_eq!(wheel.len(), keys.len() - i - 1);
        }
        assert_eq!(wheel.next_deadline(), None);

        // Inside a partially elapsed slot, after cascades.
        for &offset in &offsets {
            wheel.insert(T0 + offset, offset);
        }
        advance(&mut wheel, T0 + 3 * HOUR + 6);
        assert_eq!(wheel.next_deadline(), Some(T0 + 3 * HOUR + 11));
    }

    #[test]
    fn reschedule_moves_between_levels_and_lists() {
        let mut wheel = TimingWheel::new(T0);
        let key = wheel.insert(T0 + 20 * YEAR, 1);
        assert!(wheel.reschedule(key, T0 + 5));
        assert_eq!(wheel.next_deadline(), Some(T0 + 5));
        assert!(wheel.reschedule(key, T0 - 5));
        assert_eq!(wheel.next_deadline(), Some(T0 - 5));
        assert!(wheel.reschedule(key, T0 + HOUR));
        assert!(advance(&mut wheel, T0 + HOUR - 1).is_empty());
        assert_eq!(wheel.deadline(key), Some(T0 + HOUR));
        assert_eq!(advance(&mut wheel, T0 + HOUR), vec![(T0 + HOUR, 1)]);
    }

    #[test]
    fn memory_per_timer_at_one_million_is_at_most_32_bytes() {
        const N: u64 = 1_000_000;
        let mut wheel = TimingWheel::new(T0);
        let mut rng = 1;
        for i in 0..N {
            wheel.insert(T0 + splitmix(&mut rng) % DAY, i);
        }
        let per_timer = wheel.memory_bytes() as f64 / N as f64;
        assert!(per_timer <= 32.0, "{per_timer} bytes per timer");
    }

    // ---- Model-based property test -------------------------------------------------

    /// The obviously correct reference: a sorted map keyed by (deadline, sequence).
    #[derive(Default)]
    struct Model {
        now: u64,
        seq: u64,
        timers: BTreeMap<(u64, u64), (usize, u32)>,
        /// Key id → position in `timers`, for pending timers only.
        positions: HashMap<usize, (u64, u64)>,
    }

    impl Model {
        fn insert(&mut self, id: usize, deadline: u64, value: u32) {
            self.seq += 1;
            self.timers.insert((deadline, self.seq), (id, value));
            self.positions.insert(id, (deadline, self.seq));
        }

        fn cancel(&mut self, id: usize) -> Option<u32> {
            let position = self.positions.remove(&id)?;
            self.timers.remove(&position).map(|(_, value)| value)
        }

        fn advance(&mut self, to: u64) -> Vec<(u64, u32)> {
            self.now = self.now.max(to);
            let mut fired = Vec::new();
            while let Some(entry) = self.timers.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let (deadline, _) = *entry.key();
                let (id, value) = entry.remove();
                self.positions.remove(&id);
                fired.push((deadline, value));
            }
            fired
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(i64),
        Cancel(usize),
        Reschedule(usize, i64),
        Advance(i64),
        Deadline(usize),
    }

    /// Deadline offsets from the current time: in the past, at every level, and far beyond
    /// the top level.
    fn offset() -> impl Strategy<Value = i64> {
        let year = YEAR as i64;
        prop_oneof![
            -5_000i64..=0,
            0i64..64,
            0i64..5_000,
            0i64..(10 * HOUR as i64),
            0i64..(3 * year),
            (2 * year)..(40 * year),
        ]
    }

    fn step() -> impl Strategy<Value = i64> {
        let year = YEAR as i64;
        prop_oneof![
            3 => 0i64..100,
            3 => 0i64..20_000,
            2 => 0i64..(30 * HOUR as i64),
            1 => 0i64..(12 * year),
            1 => -20_000i64..0,
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => offset().prop_map(Op::Insert),
            2 => any::<usize>().prop_map(Op::Cancel),
            2 => (any::<usize>(), offset()).prop_map(|(k, o)| Op::Reschedule(k, o)),
            3 => step().prop_map(Op::Advance),
            1 => any::<usize>().prop_map(Op::Deadline),
        ]
    }

    fn start() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(T0),
            // Just below an epoch boundary, so cascades and overflow pulls meet.
            ((1u64 << WHEEL_BITS) - 300)..((1u64 << WHEEL_BITS) + 10),
            0u64..(1u64 << 50),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn behaves_like_a_sorted_map(
            start in start(),
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let mut wheel = TimingWheel::new(start);
            let mut model = Model { now: start, ..Model::default() };
            let mut keys: Vec<TimerKey> = Vec::new();
            let mut next_value = 0u32;
            for op in ops {
                match op {
                    Op::Insert(offset) => {
                        let deadline = wheel.now().saturating_add_signed(offset);
                        let key = wheel.insert(deadline, next_value);
                        model.insert(keys.len(), deadline, next_value);
                        keys.push(key);
                        next_value += 1;
                    }
                    Op::Cancel(k) if !keys.is_empty() => {
                        let id = k % keys.len();
                        prop_assert_eq!(wheel.cancel(keys[id]), model.cancel(id));
                    }
                    Op::Reschedule(k, offset) if !keys.is_empty() => {
                        let id = k % keys.len();
                        let deadline = wheel.now().saturating_add_signed(offset);
                        let moved = wheel.reschedule(keys[id], deadline);
                        let value = model.cancel(id);
                        prop_assert_eq!(moved, value.is_some());
                        if let Some(value) = value {
                            model.insert(id, deadline, value);
                        }
                    }
                    Op::Advance(step) => {
                        let to = wheel.now().saturating_add_signed(step);
                        let mut out = vec![(0, u32::MAX)]; // advance must append, not clear
                        wheel.advance(to, &mut out);
                        let mut expected = vec![(0, u32::MAX)];
                        expected.extend(model.advance(to));
                        prop_assert_eq!(out, expected);
                        prop_assert_eq!(wheel.now(), model.now);
                    }
                    Op::Deadline(k) if !keys.is_empty() => {
                        let id = k % keys.len();
                        let expected = model.positions.get(&id).map(|&(deadline, _)| deadline);
                        prop_assert_eq!(wheel.deadline(keys[id]), expected);
                    }
                    Op::Cancel(_) | Op::Reschedule(..) | Op::Deadline(_) => {}
                }
                prop_assert_eq!(wheel.len(), model.timers.len());
                prop_assert_eq!(wheel.is_empty(), model.timers.is_empty());
                prop_assert_eq!(
                    wheel.next_deadline(),
                    model.timers.keys().next().map(|&(deadline, _)| deadline)
                );
            }
            // Drain everything: nothing may be lost or duplicated.
            let mut out = Vec::new();
            wheel.advance(u64::MAX, &mut out);
            prop_assert_eq!(out, model.advance(u64::MAX));
            prop_assert!(wheel.is_empty());
        }
    }
}
