//! Planning in bulk: how many entities per second `POST /v1/batch` plans durably.
//! Each entity is a reservation (`PUT /v1/reservations/{id}`): its row, its
//! `reservation.reserve` event and its four timers (due in 1 day, due in 1 hour,
//! overdue 1 hour, overdue 1 day), committed before the batch is answered.
//!
//! Run: `cargo bench --bench planning`. Parameters (environment, `_` allowed in numbers):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `PLANNING_ENTITIES` | 1000000 | reservations planned in all, 10,000 per batch |
//! | `PLANNING_CONCURRENCY` | 2 (64 with `single`) | requests in flight at once |
//! | `PLANNING_VIA` | `batch` | `batch`, or `single`: one `PUT /v1/reservations/{id}` per reservation (the single route, whose concurrent requests group commit gathers) |
//! | `PLANNING_STORE` | `sqlite` | `sqlite` (a temp file) or a `postgres://` URL where the bench may create (and then drops) its own database |
//! | `PLANNING_IDS` | `sequential` | `sequential`: reservation `i` is `r-{i}`, so consecutive reservations sit side by side in every index keyed by entity id; `random`: 16 hex digits that spread them over those indexes, as ids made by the application (UUIDs, hashes) do |
//! | `PLANNING_ORDER` | `time` | `time`: reservation `i` starts `i` seconds after the first, so the timers arrive in due order; `shuffled`: the same start times in a fixed scrambled order, as an import sorted by anything but time sends them |
//!
//! Any `DUEHOOK_<SECTION>_<KEY>` variable overrides the service configuration. Reported:
//! the time from the first batch sent to the last one answered, entities per second,
//! and what the store holds afterwards (asserted: every reservation, its event and its
//! four pending timers). Speed is reported, never asserted.

#[path = "support/mod.rs"]
mod support;

use std::time::Instant;

use chrono::{SecondsFormat, TimeDelta};
use duehook::App;
use duehook::clock::{SharedClock, SystemClock};
use serde_json::json;
use support::{BenchStore, CpuTicks, MachineSpeed, config, env_usize, loadavg, send_batches};

const TOKEN: &str = "planning-bench-token-0123456789";

/// Sends `count` operations `op(i)` one request each through their own route,
/// `clients` at a time, each waiting for its answer (asserted 2xx) before the next.
async fn send_singly(
    http: &reqwest::Client,
    base: &str,
    count: usize,
    clients: usize,
    op: impl Fn(usize) -> serde_json::Value + Send + Sync + 'static,
    done: impl Fn(usize),
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (http, next, answered, op) = (http.clone(), next.clone(), answered.clone(), op.clone());
        let base = base.to_string();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let o = op(i);
                let res = http
                    .put(format!("{base}{}", o["path"].as_str().expect("path")))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(o["body"].to_string())
                    .send()
                    .await
                    .expect("sent");
                assert!(res.status().is_success(), "{}", res.status());
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while !tasks.is_empty() {
        tokio::select! {
            r = tasks.join_next() => { r.expect("task").expect("client"); }
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
        }
        done(answered.load(std::sync::atomic::Ordering::Relaxed));
    }
}

/// Where reservation `i` of `n` starts, in seconds after the first start: `i`, or with
/// `shuffled` a fixed permutation of `0..n` (`i` times a stride near `n`'s golden
/// section that shares no factor with `n`, modulo `n`), which sends neighbouring
/// reservations far apart in time.
/// Reservation `i`'s id: `r-{i}`, or with `random` 16 hex digits of a bijective mix of
/// `i` (the finaliser of SplitMix64), distinct for every `i` and spread over the key
/// space.
fn reservation_id(i: usize, random: bool) -> String {
    if !random {
        return format!("r-{i}");
    }
    let mut z = i as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("r-{:016x}", z ^ (z >> 31))
}

fn start_offset(i: usize, n: usize, shuffled: bool) -> i64 {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    if !shuffled || n < 2 {
        return i as i64;
    }
    let mut stride = n * 618 / 1000;
    while gcd(stride, n) != 1 {
        stride += 1;
    }
    ((i as u128 * stride as u128) % n as u128) as i64
}

/// What a run plans: how many reservations, their ids and the order of their start times.
struct Plan {
    entities: usize,
    random_ids: bool,
    shuffled: bool,
}

async fn run(plan: Plan, concurrency: usize, store_spec: &str, single: bool) {
    let Plan {
        entities,
        random_ids,
        shuffled,
    } = plan;
    let loadavg = loadavg();
    let speed = MachineSpeed::read();
    let store = BenchStore::create(store_spec).await;
    let config = config(store.url(), TOKEN);
    duehook::init_logging(&config.log);
    let clock: SharedClock = SystemClock::shared();
    let app = App::start(config, clock.clone()).await.expect("app");
    let http = reqwest::Client::new();
    // Pickups from 30 days ahead, a second apart: every timer is in the future.
    let base = clock.now() + TimeDelta::days(30);
    let op = move |i: usize| {
        let starts = base + TimeDelta::seconds(start_offset(i, entities, shuffled));
        json!({"method": "PUT", "path": format!("/v1/reservations/{}", reservation_id(i, random_ids)), "body": {
            "contact_id": format!("c-{}", i % 1000),
            "item_ids": [format!("i-{i}")],
            "starts_at": starts.to_rfc3339_opts(SecondsFormat::Secs, true),
            "ends_at": (starts + TimeDelta::days(2)).to_rfc3339_opts(SecondsFormat::Secs, true),
        }})
    };
    let bar = indicatif::ProgressBar::new(entities as u64);
    let cpu = CpuTicks::read();
    let t0 = Instant::now();
    let progress = |done: usize| bar.set_position(done as u64);
    if single {
        send_singly(&http, &app.url(), entities, concurrency, op, progress).await;
    } else {
        send_batches(
            &http,
            &app.url(),
            TOKEN,
            entities,
            concurrency,
            op,
            progress,
        )
        .await;
    }
    let took = t0.elapsed();
    let cpu_end = CpuTicks::read();
    bar.finish_and_clear();
    let probe = app.probe();
    let count = |sql: &'static str| {
        let probe = &probe;
        async move { probe.scalar(sql, &[]).await.expect("count") as usize }
    };
    let reservations = count("SELECT COUNT(*) FROM reservations").await;
    let events = count("SELECT COUNT(*) FROM events").await;
    let pending = count("SELECT COUNT(*) FROM timers WHERE state = 'pending'").await;
    assert_eq!(reservations, entities, "every reservation stored");
    assert_eq!(events, entities, "one event each");
    assert_eq!(pending, 4 * entities, "four pending timers each");
    app.shutdown().await;
    let via = if single {
        format!("PUT /v1/reservations/{{id}}, one per request, {concurrency} clients")
    } else {
        format!(
            "POST /v1/batch, {} per batch, {concurrency} in flight",
            support::BATCH_OPS
        )
    };
    let order = match shuffled {
        true => "start times shuffled",
        false => "in start order",
    };
    let ids = match random_ids {
        true => "random ids",
        false => "sequential ids",
    };
    println!(
        "planning:    {entities} reservations ({order}, {ids}) through {via} on {}",
        store.describe()
    );
    println!(
        "planned:     {:.2} s, {:.0} entities/s durably (each: its row, its event, four timers); stored {reservations} reservations, {events} events, {pending} pending timers",
        took.as_secs_f64(),
        entities as f64 / took.as_secs_f64()
    );
    println!("cpu:         {}", cpu.share_until(&cpu_end));
    println!("load:        {loadavg} (1, 5, 15 min averages at the start)");
    println!("{}", speed.line_until_now());
    store.drop_database().await;
}

fn main() {
    let entities = env_usize("PLANNING_ENTITIES", 1_000_000);
    let single = match std::env::var("PLANNING_VIA").as_deref() {
        Ok("single") => true,
        Ok("batch") | Err(_) => false,
        Ok(other) => panic!("PLANNING_VIA={other}: `batch` or `single`"),
    };
    let concurrency = env_usize("PLANNING_CONCURRENCY", if single { 64 } else { 2 });
    let store = std::env::var("PLANNING_STORE").unwrap_or_else(|_| "sqlite".into());
    let shuffled = match std::env::var("PLANNING_ORDER").as_deref() {
        Ok("shuffled") => true,
        Ok("time") | Err(_) => false,
        Ok(other) => panic!("PLANNING_ORDER={other}: `time` or `shuffled`"),
    };
    let random_ids = match std::env::var("PLANNING_IDS").as_deref() {
        Ok("random") => true,
        Ok("sequential") | Err(_) => false,
        Ok(other) => panic!("PLANNING_IDS={other}: `sequential` or `random`"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let plan = Plan {
        entities,
        random_ids,
        shuffled,
    };
    rt.block_on(run(plan, concurrency, &store, single));
}
