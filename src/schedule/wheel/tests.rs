//! The wheel's behaviour through its API: ordering, cascades, overflow, stale keys,
//! memory, and a model-based property test against a sorted map.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// A realistic epoch-milliseconds start, deliberately not aligned to any slot.
const T0: u64 = 1_700_000_123_457;
const SECOND: u64 = 1_000;
const HOUR: u64 = 3_600 * SECOND;
const DAY: u64 = 24 * HOUR;
const YEAR: u64 = 365 * DAY;

fn advance<T, I: ValueIndex<T>>(wheel: &mut TimingWheel<T, I>, to: u64) -> Vec<(u64, T)> {
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

#[test]
fn a_unique_wheel_holds_each_value_once() {
    let mut wheel = TimingWheel::unique(T0);
    let first = wheel.insert_if_absent(T0 + HOUR, 7).expect("7 is new");
    assert_eq!(wheel.insert_if_absent(T0 + 5, 7), None);
    assert_eq!(wheel.find(&7), Some(first));
    assert_eq!(
        wheel.deadline(first),
        Some(T0 + HOUR),
        "a refused insert moves nothing"
    );
    let other = wheel.insert_if_absent(T0 + 5, 8).expect("8 is new");
    assert_eq!(wheel.len(), 2);

    // Fired values leave the index, and may come back.
    assert_eq!(advance(&mut wheel, T0 + 5), vec![(T0 + 5, 8)]);
    assert_eq!(wheel.find(&8), None);
    assert_eq!(wheel.deadline(other), None);
    let again = wheel.insert_if_absent(T0 + 10, 8).expect("8 fired");
    assert_ne!(again, other);

    // So do cancelled ones.
    assert_eq!(wheel.cancel(first), Some(7));
    assert_eq!(wheel.find(&7), None);
    assert!(wheel.insert_if_absent(T0 + 20, 7).is_some());

    // A reschedule keeps the value where the index can find it.
    let eight = wheel.find(&8).expect("8 is pending");
    assert!(wheel.reschedule(eight, T0 + 30));
    assert_eq!(wheel.find(&8), Some(eight));
    assert_eq!(wheel.insert_if_absent(T0 + 1, 8), None);
    assert_eq!(
        advance(&mut wheel, T0 + DAY),
        vec![(T0 + 20, 7), (T0 + 30, 8)]
    );
    assert!(wheel.is_empty());
    assert_eq!(wheel.find(&7), None);
}

#[test]
fn a_unique_wheel_finds_values_across_cascades_overflow_and_growth() {
    let mut wheel = TimingWheel::unique(T0);
    let mut rng = 3;
    let mut deadlines = Vec::new();
    for value in 0..20_000u32 {
        let deadline = match value % 3 {
            0 => T0 + splitmix(&mut rng) % (2 * DAY),
            1 => T0 + 3 * YEAR + splitmix(&mut rng) % DAY,
            _ => T0 - splitmix(&mut rng) % SECOND,
        };
        assert!(wheel.insert_if_absent(deadline, value).is_some());
        deadlines.push(deadline);
    }
    advance(&mut wheel, T0 + DAY);
    for (value, &deadline) in (0..20_000u32).zip(&deadlines) {
        let key = wheel.find(&value);
        assert_eq!(key.is_some(), deadline > T0 + DAY, "value {value}");
        assert_eq!(
            key.and_then(|key| wheel.deadline(key)),
            key.map(|_| deadline)
        );
        assert_eq!(
            wheel.insert_if_absent(T0 + DAY + 1, value).is_some(),
            deadline <= T0 + DAY
        );
    }
}

#[test]
fn memory_per_timer_of_a_unique_wheel_at_one_million_is_at_most_42_bytes() {
    const N: u64 = 1_000_000;
    let mut wheel = TimingWheel::unique(T0);
    let mut rng = 1;
    for i in 0..N {
        wheel.insert_if_absent(T0 + splitmix(&mut rng) % DAY, i);
    }
    assert_eq!(wheel.len(), N as usize);
    let per_timer = wheel.memory_bytes() as f64 / N as f64;
    assert!(per_timer <= 42.0, "{per_timer} bytes per timer");
    let plain = TimingWheel::<u64>::with_capacity(T0, N as usize).memory_bytes() as f64 / N as f64;
    assert!(
        per_timer > plain,
        "the index is counted: {per_timer} vs {plain}"
    );
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

// ---- Model-based property test of the unique wheel -------------------------------

/// The reference for a unique wheel: a sorted map, plus where each pending value is.
#[derive(Default)]
struct UniqueModel {
    now: u64,
    seq: u64,
    timers: BTreeMap<(u64, u64), u8>,
    positions: HashMap<u8, (u64, u64)>,
}

impl UniqueModel {
    fn insert_if_absent(&mut self, deadline: u64, value: u8) -> bool {
        if self.positions.contains_key(&value) {
            return false;
        }
        self.seq += 1;
        self.timers.insert((deadline, self.seq), value);
        self.positions.insert(value, (deadline, self.seq));
        true
    }

    fn cancel(&mut self, value: u8) -> bool {
        match self.positions.remove(&value) {
            Some(position) => self.timers.remove(&position).is_some(),
            None => false,
        }
    }

    fn advance(&mut self, to: u64) -> Vec<(u64, u8)> {
        self.now = self.now.max(to);
        let mut fired = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (deadline, _) = *entry.key();
            let value = entry.remove();
            self.positions.remove(&value);
            fired.push((deadline, value));
        }
        fired
    }
}

#[derive(Debug, Clone)]
enum UniqueOp {
    InsertIfAbsent(u8, i64),
    Cancel(u8),
    Reschedule(u8, i64),
    Advance(i64),
    Find(u8),
}

fn unique_op() -> impl Strategy<Value = UniqueOp> {
    // Few distinct values, so inserts often meet a value already pending.
    let value = || 0u8..24;
    prop_oneof![
        5 => (value(), offset()).prop_map(|(v, o)| UniqueOp::InsertIfAbsent(v, o)),
        2 => value().prop_map(UniqueOp::Cancel),
        2 => (value(), offset()).prop_map(|(v, o)| UniqueOp::Reschedule(v, o)),
        3 => step().prop_map(UniqueOp::Advance),
        2 => value().prop_map(UniqueOp::Find),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_unique_wheel_behaves_like_a_sorted_map_of_distinct_values(
        start in start(),
        ops in prop::collection::vec(unique_op(), 1..200),
    ) {
        let mut wheel = TimingWheel::unique(start);
        let mut model = UniqueModel { now: start, ..UniqueModel::default() };
        for op in ops {
            match op {
                UniqueOp::InsertIfAbsent(value, offset) => {
                    let deadline = wheel.now().saturating_add_signed(offset);
                    let key = wheel.insert_if_absent(deadline, value);
                    prop_assert_eq!(key.is_some(), model.insert_if_absent(deadline, value));
                    if let Some(key) = key {
                        prop_assert_eq!(wheel.find(&value), Some(key));
                    }
                }
                UniqueOp::Cancel(value) => {
                    let cancelled = wheel.find(&value).and_then(|key| wheel.cancel(key));
                    prop_assert_eq!(cancelled.is_some(), model.cancel(value));
                    if let Some(cancelled) = cancelled {
                        prop_assert_eq!(cancelled, value);
                    }
                }
                UniqueOp::Reschedule(value, offset) => {
                    let deadline = wheel.now().saturating_add_signed(offset);
                    let moved = wheel
                        .find(&value)
                        .is_some_and(|key| wheel.reschedule(key, deadline));
                    let held = model.cancel(value);
                    prop_assert_eq!(moved, held);
                    if held {
                        model.insert_if_absent(deadline, value);
                    }
                }
                UniqueOp::Advance(step) => {
                    let to = wheel.now().saturating_add_signed(step);
                    let mut out = Vec::new();
                    wheel.advance(to, &mut out);
                    prop_assert_eq!(out, model.advance(to));
                }
                UniqueOp::Find(value) => {
                    let deadline = wheel.find(&value).and_then(|key| wheel.deadline(key));
                    let expected = model.positions.get(&value).map(|&(deadline, _)| deadline);
                    prop_assert_eq!(deadline, expected);
                }
            }
            prop_assert_eq!(wheel.len(), model.timers.len());
            prop_assert_eq!(
                wheel.next_deadline(),
                model.timers.keys().next().map(|&(deadline, _)| deadline)
            );
        }
        let mut out = Vec::new();
        wheel.advance(u64::MAX, &mut out);
        prop_assert_eq!(out, model.advance(u64::MAX));
        for value in 0..24 {
            prop_assert_eq!(wheel.find(&value), None);
        }
    }
}
