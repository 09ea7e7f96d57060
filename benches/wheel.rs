//! Timer-structure shoot-out for the scheduler's in-memory index.
//!
//! One workload, identical for every structure: 1,000,000 timers with deadlines spread
//! uniformly over 24 h at 1 ms resolution (fixed-seed pseudo-random), 30 % of them
//! cancelled in random order, then time advanced in 1-second steps over the 24 h,
//! collecting every expired value. Compared: our `TimingWheel`, tokio-util's `DelayQueue`
//! (in a paused-clock tokio runtime), a `BinaryHeap` with lazy cancellation and a
//! `BTreeMap<(deadline, seq), value>`.
//!
//! Before the timings it prints, once, the heap bytes per pending timer of each structure
//! at 1M pending, measured by a counting global allocator, and checks that every
//! structure fired the same values (the three ordered ones in the same order).
//!
//! Run with `cargo bench --bench wheel`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::poll_fn;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use duehook::testing::TimingWheel;
use tokio_util::time::DelayQueue;

/// Counts live heap bytes so memory per timer is measured, not estimated. It only adds
/// two relaxed atomic operations per allocation, paid alike by every structure.
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` unchanged; the counter has no effect on the
// memory handed out.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new_ptr
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const TIMERS: usize = 1_000_000;
const CANCELLED: usize = TIMERS * 3 / 10;
const SPAN_MS: u64 = 24 * 3_600 * 1_000;
const STEP_MS: u64 = 1_000;
/// An epoch-milliseconds start that is not aligned to anything.
const START_MS: u64 = 1_700_000_123_457;
const SEED: u64 = 0x00D0_E400_C0FF_EE00;

/// The shared input: deadline offsets (ms after `START_MS`, in 1..=24 h) and the indices
/// of the timers to cancel, in the order they are cancelled.
struct Workload {
    offsets: Vec<u64>,
    cancel: Vec<usize>,
}

impl Workload {
    fn new() -> Self {
        let mut rng = SEED;
        let offsets = (0..TIMERS)
            .map(|_| 1 + splitmix(&mut rng) % SPAN_MS)
            .collect();
        // A partial Fisher-Yates shuffle picks distinct timers in random order.
        let mut order: Vec<usize> = (0..TIMERS).collect();
        for i in 0..CANCELLED {
            let j = i + (splitmix(&mut rng) % (TIMERS - i) as u64) as usize;
            order.swap(i, j);
        }
        order.truncate(CANCELLED);
        Workload {
            offsets,
            cancel: order,
        }
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a run fired: how many, an order-independent sum and an order-dependent hash.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Fired {
    count: usize,
    sum: u64,
    ordered: u64,
}

impl Fired {
    #[inline]
    fn record(&mut self, value: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(value);
        self.ordered = self
            .ordered
            .wrapping_mul(0x0100_0000_01B3)
            .wrapping_add(value);
    }
}

fn run_wheel(w: &Workload) -> Fired {
    let mut wheel = TimingWheel::new(START_MS);
    let keys: Vec<_> = w
        .offsets
        .iter()
        .enumerate()
        .map(|(i, &offset)| wheel.insert(START_MS + offset, i as u64))
        .collect();
    for &i in &w.cancel {
        black_box(wheel.cancel(keys[i]));
    }
    let mut fired = Fired::default();
    let mut out = Vec::new();
    let mut now = START_MS;
    while now < START_MS + SPAN_MS {
        now += STEP_MS;
        wheel.advance(now, &mut out);
        for (_, value) in out.drain(..) {
            fired.record(value);
        }
    }
    fired
}

fn run_heap(w: &Workload) -> Fired {
    // Ordered by (deadline, seq) so ties fire in insertion order like the others; the
    // seq doubles as the handle that lazy cancellation checks.
    let mut heap = BinaryHeap::new();
    for (i, &offset) in w.offsets.iter().enumerate() {
        heap.push(Reverse((START_MS + offset, i as u64, i as u64)));
    }
    let mut cancelled = vec![false; w.offsets.len()];
    for &i in &w.cancel {
        cancelled[i] = true;
    }
    let mut fired = Fired::default();
    let mut now = START_MS;
    while now < START_MS + SPAN_MS {
        now += STEP_MS;
        while let Some(&Reverse((deadline, seq, value))) = heap.peek() {
            if deadline > now {
                break;
            }
            heap.pop();
            if !cancelled[seq as usize] {
                fired.record(value);
            }
        }
    }
    fired
}

fn run_btree(w: &Workload) -> Fired {
    let mut map = BTreeMap::new();
    let keys: Vec<(u64, u64)> = w
        .offsets
        .iter()
        .enumerate()
        .map(|(i, &offset)| {
            let key = (START_MS + offset, i as u64);
            map.insert(key, i as u64);
            key
        })
        .collect();
    for &i in &w.cancel {
        black_box(map.remove(&keys[i]));
    }
    let mut fired = Fired::default();
    let mut now = START_MS;
    while now < START_MS + SPAN_MS {
        now += STEP_MS;
        while let Some(entry) = map.first_entry() {
            if entry.key().0 > now {
                break;
            }
            fired.record(entry.remove());
        }
    }
    fired
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
}

/// DelayQueue driven the way a task would drive it, minus real waiting: the paused clock
/// jumps one step, then `poll_expired` is called in one task poll until it has nothing
/// more, so no wake-up or reschedule is paid per item.
async fn run_delay_queue(w: &Workload) -> Fired {
    let mut queue = DelayQueue::new();
    let keys: Vec<_> = w
        .offsets
        .iter()
        .enumerate()
        .map(|(i, &offset)| queue.insert(i as u64, Duration::from_millis(offset)))
        .collect();
    for &i in &w.cancel {
        black_box(queue.remove(&keys[i]));
    }
    let mut fired = Fired::default();
    let mut elapsed = 0;
    while elapsed < SPAN_MS {
        elapsed += STEP_MS;
        tokio::time::advance(Duration::from_millis(STEP_MS)).await;
        drain_delay_queue(&mut queue, &mut fired).await;
    }
    fired
}

async fn drain_delay_queue(queue: &mut DelayQueue<u64>, fired: &mut Fired) {
    poll_fn(|cx| {
        while let Poll::Ready(Some(expired)) = queue.poll_expired(cx) {
            fired.record(expired.into_inner());
        }
        Poll::Ready(())
    })
    .await;
}

/// Live heap bytes that `build` leaves behind, per timer.
fn bytes_per_timer<R>(build: impl FnOnce() -> R) -> f64 {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let built = build();
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    drop(black_box(built));
    (after as f64 - before as f64) / TIMERS as f64
}

fn print_memory_and_check(w: &Workload, rt: &tokio::runtime::Runtime) {
    let deadlines = || w.offsets.iter().map(|&offset| START_MS + offset);
    let wheel = bytes_per_timer(|| {
        let mut wheel = TimingWheel::new(START_MS);
        for (i, deadline) in deadlines().enumerate() {
            wheel.insert(deadline, i as u64);
        }
        wheel
    });
    let mut estimate = TimingWheel::new(START_MS);
    for (i, deadline) in deadlines().enumerate() {
        estimate.insert(deadline, i as u64);
    }
    let estimate = estimate.memory_bytes() as f64 / TIMERS as f64;
    let delay_queue = rt.block_on(async {
        bytes_per_timer(|| {
            let mut queue = DelayQueue::new();
            for (i, &offset) in w.offsets.iter().enumerate() {
                queue.insert(i as u64, Duration::from_millis(offset));
            }
            queue
        })
    });
    let heap = bytes_per_timer(|| {
        // The cancelled flags are part of the structure's cost.
        let mut heap = BinaryHeap::new();
        for (i, deadline) in deadlines().enumerate() {
            heap.push(Reverse((deadline, i as u64, i as u64)));
        }
        (heap, vec![false; TIMERS])
    });
    let btree = bytes_per_timer(|| {
        let mut map = BTreeMap::new();
        for (i, deadline) in deadlines().enumerate() {
            map.insert((deadline, i as u64), i as u64);
        }
        map
    });
    println!("heap bytes per pending timer at {TIMERS} pending (T = u64):");
    println!("  TimingWheel  {wheel:6.1}   (memory_bytes() says {estimate:.1})");
    println!("  DelayQueue   {delay_queue:6.1}");
    println!("  BinaryHeap   {heap:6.1}   (incl. 1 B/timer cancelled flags)");
    println!("  BTreeMap     {btree:6.1}");

    let wheel = run_wheel(w);
    let heap = run_heap(w);
    let btree = run_btree(w);
    let delay_queue = rt.block_on(run_delay_queue(w));
    assert_eq!(
        wheel.count,
        TIMERS - CANCELLED,
        "wheel lost or duplicated timers"
    );
    assert_eq!(wheel, heap, "wheel and heap fired differently");
    assert_eq!(wheel, btree, "wheel and BTreeMap fired differently");
    // DelayQueue does not promise an order within a step; compare the set only.
    assert_eq!(
        (wheel.count, wheel.sum),
        (delay_queue.count, delay_queue.sum),
        "wheel and DelayQueue fired differently"
    );
    println!(
        "all four fired the same {} timers (wheel, heap and BTreeMap in the same order)",
        wheel.count
    );
}

fn timer_structures(c: &mut Criterion) {
    let workload = Workload::new();
    let rt = paused_runtime();
    print_memory_and_check(&workload, &rt);

    let mut group = c.benchmark_group("1M timers over 24h, 30% cancelled, 1s steps");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("TimingWheel", |b| b.iter(|| run_wheel(&workload)));
    group.bench_function("DelayQueue", |b| {
        b.iter(|| rt.block_on(run_delay_queue(&workload)))
    });
    group.bench_function("BinaryHeap (lazy cancel)", |b| {
        b.iter(|| run_heap(&workload))
    });
    group.bench_function("BTreeMap", |b| b.iter(|| run_btree(&workload)));
    group.finish();
}

criterion_group!(benches, timer_structures);
criterion_main!(benches);
