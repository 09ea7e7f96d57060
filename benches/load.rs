//! End-to-end load benchmark: a real App on the system clock, a fast receiver
//! on 127.0.0.1, one endpoint subscribed to `*` with Standard Webhooks signing.
//!
//! Run: `cargo bench --bench load`. Parameters (environment, `_` allowed in numbers):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LOAD_PENDING` | 1000000 | timers loaded in bulk, spread over the next 30 days (from 1 h ahead, so none fires during the run) |
//! | `LOAD_BURST` | 10000 | timers due within one second, a few seconds after loading ends |
//! | `LOAD_BURST_SPAN_MS` | 1000 | how long the burst's due instants are spread over (`0`: all due at one instant, which measures how fast firing can go rather than whether it keeps up) |
//! | `LOAD_BURST_PLANNED` | `last` | `last`: the burst is planned after the pending timers, so its timers and items sit side by side in the store; `scattered`: each burst item is planned among the pending ones while they load (one in every `LOAD_PENDING / LOAD_BURST`), as timers due together but planned over weeks are, so firing the burst writes rows on pages far apart; the burst is then due `LOAD_BURST_AFTER_S` after loading starts |
//! | `LOAD_BURST_AFTER_S` | 60 | with `scattered`: seconds from the start of loading to the burst's first due instant (loading must end before it) |
//! | `LOAD_EVENTS_PER_SEC` | 200 | immediate events posted to `POST /v1/events` during the burst |
//! | `LOAD_STORE` | `sqlite` | `sqlite` (a temp file) or a `postgres://` URL of a server where the user may create databases (the bench creates its own and drops it) |
//!
//! Any `DUEHOOK_<SECTION>_<KEY>` variable overrides the service configuration as it does
//! for `duehook serve` (e.g. `DUEHOOK_DELIVERY_MAX_IN_FLIGHT_PER_ENDPOINT=32`).
//!
//! Timers are items with an `expires_at` (rule `item.expire`, one timer each), loaded the
//! product's way: `PUT /v1/items/{id}` operations through `POST /v1/batch`, 10,000 per
//! request, two requests in flight; each item also writes its `item.create` event,
//! which the endpoint (subscribed to `item.expire` and `booking.create`) does not
//! receive. Reported: load time; fires/s during the burst; the burst's webhooks
//! received/s end to end; lateness from each timer's `scheduled_at` to its POST arriving
//! at the receiver (and, to tell where it comes from, to its event being written);
//! immediate events' latency from the ingest POST to the webhook; events lost (written
//! but never received) and doubled (one webhook-id received more often than it was
//! attempted); time until `/readyz` answers 200 after a restart with the pending timers
//! in the store; the process's peak RSS (`VmHWM`; the receiver and the bench's own
//! bookkeeping live in the same process). Speed is reported, never asserted; loss,
//! doubles and signatures are asserted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use duehook::App;
use duehook::clock::{SharedClock, SystemClock};
use serde_json::json;
use support::{
    BenchStore, CpuTicks, MachineSpeed, config, create_endpoint, env_usize, loadavg, memory_mib,
    post_booking, send_batches, spread, start_receiver,
};

const TOKEN: &str = "load-bench-token-0123456789";
/// The event types the endpoint receives: the timers' and the posted events'.
const FIRED: &str = "item.expire";
const POSTED: &str = "booking.create";
/// Give up waiting when nothing new arrived at the receiver for this long.
const QUIET: Duration = Duration::from_secs(30);

struct Params {
    pending: usize,
    burst: usize,
    burst_span_ms: usize,
    /// The burst's items planned among the pending ones rather than after them.
    scattered: bool,
    burst_after_s: usize,
    events_per_sec: usize,
    store: String,
}

impl Params {
    fn from_env() -> Params {
        Params {
            pending: env_usize("LOAD_PENDING", 1_000_000),
            burst: env_usize("LOAD_BURST", 10_000),
            burst_span_ms: env_usize("LOAD_BURST_SPAN_MS", 1_000),
            scattered: match std::env::var("LOAD_BURST_PLANNED").as_deref() {
                Err(_) | Ok("last") => false,
                Ok("scattered") => true,
                Ok(other) => panic!("LOAD_BURST_PLANNED={other}: `last` or `scattered`"),
            },
            burst_after_s: env_usize("LOAD_BURST_AFTER_S", 60),
            events_per_sec: env_usize("LOAD_EVENTS_PER_SEC", 200),
            store: std::env::var("LOAD_STORE").unwrap_or_else(|_| "sqlite".into()),
        }
    }
}

/// Stores and plans `count` items, the `i`th named and expiring as `item(i)` says,
/// through `POST /v1/batch`; every batch is committed (and its timers due soon handed
/// to the scheduler) before it is answered.
async fn plan_items(
    app: &App,
    count: usize,
    item: impl Fn(usize) -> (String, DateTime<Utc>),
    progress: bool,
) {
    // Drawn to stderr; hidden when stderr is not a terminal, so logs stay clean.
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(count as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "  loading {bar:40} {human_pos}/{human_len} timers, {per_sec}, {elapsed} (eta {eta})",
            )
            .expect("template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let http = reqwest::Client::new();
    send_batches(
        &http,
        &app.url(),
        TOKEN,
        count,
        2,
        |i| {
            let (id, at) = item(i);
            json!({"method": "PUT", "path": format!("/v1/items/{id}"), "body": {
                "name": "load",
                "expires_at": at.to_rfc3339_opts(SecondsFormat::Millis, true),
            }})
        },
        |done| bar.set_position(done as u64),
    )
    .await;
    bar.finish();
}

/// One immediate event posted through the ingest API.
struct Posted {
    id: Option<String>,
    sent_us: i64,
    answered_us: i64,
}

/// Posts `booking.create` events at `per_sec` from now until `stop` (open loop: each
/// request on a task of its own, so a slow answer does not slow the rate down).
async fn post_events(base: String, per_sec: usize, stop: Arc<AtomicBool>) -> (Vec<Posted>, usize) {
    let client = reqwest::Client::new();
    let results = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    if per_sec > 0 {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            n += 1;
            let (client, base, results, errors) = (
                client.clone(),
                base.clone(),
                results.clone(),
                errors.clone(),
            );
            tasks.spawn(async move {
                let sent_us = Utc::now().timestamp_micros();
                let id = post_booking(&client, &base, TOKEN, n).await;
                if id.is_none() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let answered_us = Utc::now().timestamp_micros();
                results.lock().expect("lock").push(Posted {
                    id,
                    sent_us,
                    answered_us,
                });
            });
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
    let out = std::mem::take(&mut *results.lock().expect("lock"));
    (out, errors.load(Ordering::Relaxed) as usize)
}

async fn count(app: &App, sql: &'static str) -> i64 {
    app.probe().scalar(sql, &[]).await.expect("count")
}

async fn run(p: &Params) {
    // Other work on the machine skews every figure: say how busy it was.
    let loadavg = loadavg();
    let speed_at_start = MachineSpeed::read();
    let store = BenchStore::create(&p.store).await;
    let config = config(store.url(), TOKEN);
    duehook::init_logging(&config.log);
    let clock: SharedClock = SystemClock::shared();
    let receiver_stop = tokio_util::sync::CancellationToken::new();
    let (hook_url, rx) = start_receiver(receiver_stop.clone()).await;

    let app = App::start(config.clone(), clock.clone())
        .await
        .expect("app");
    let http = reqwest::Client::new();
    let created = create_endpoint(
        &http,
        &app.url(),
        TOKEN,
        json!({"name": "load", "url": hook_url, "topics": [FIRED, POSTED]}),
    )
    .await;
    let secret = created["secret"].as_str().expect("secret").to_string();
    assert_eq!(
        created["signature"]["scheme"].as_str(),
        Some("standard_webhooks"),
        "endpoint signs with Standard Webhooks: {created}"
    );

    // 1. The pending timers, from 1 h ahead to 30 days ahead, evenly spread (with the
    //    burst's among them when it is planned scattered).
    let t_load = Instant::now();
    let cpu_load = CpuTicks::read();
    let start = clock.now();
    let base = start + TimeDelta::hours(1);
    let span_ms = (TimeDelta::days(30) - TimeDelta::hours(1)).num_milliseconds() as f64;
    let n = p.pending.max(1) as f64;
    let pending_at = |i: usize| base + TimeDelta::milliseconds((i as f64 * span_ms / n) as i64);
    let burst_n = p.burst.max(1) as i64;
    let burst_at = |due: DateTime<Utc>, k: usize| {
        due + TimeDelta::milliseconds(k as i64 * p.burst_span_ms as i64 / burst_n)
    };
    let scattered_due = DateTime::from_timestamp(start.timestamp(), 0).expect("instant")
        + TimeDelta::seconds(p.burst_after_s as i64);
    // Every `every`th item of the stream is a burst item.
    let every = (p.pending + p.burst) / p.burst.max(1);
    if p.scattered {
        plan_items(
            &app,
            p.pending + p.burst,
            |i| {
                let k = i / every;
                if i % every == every - 1 && k < p.burst {
                    (format!("burst-{k}"), burst_at(scattered_due, k))
                } else {
                    let j = i - (i / every).min(p.burst);
                    (format!("pending-{j}"), pending_at(j))
                }
            },
            true,
        )
        .await;
    } else {
        plan_items(
            &app,
            p.pending,
            |i| (format!("pending-{i}"), pending_at(i)),
            true,
        )
        .await;
    }
    let load = t_load.elapsed();
    let loaded = p.pending + if p.scattered { p.burst } else { 0 };
    let cpu_loaded = CpuTicks::read();
    let (hwm_loaded, _) = memory_mib();

    // 2. The burst: `burst` timers due within the `burst_span_ms` starting at `due`.
    let due = if p.scattered {
        scattered_due
    } else {
        let lead = TimeDelta::seconds(3) + TimeDelta::microseconds(p.burst as i64 * 100);
        let now = clock.now();
        let due = DateTime::from_timestamp(now.timestamp(), 0).expect("instant")
            + lead
            + TimeDelta::seconds(1);
        plan_items(
            &app,
            p.burst,
            |k| (format!("burst-{k}"), burst_at(due, k)),
            false,
        )
        .await;
        due
    };
    let planned_at = clock.now();
    if planned_at >= due {
        eprintln!(
            "  warning: planning the burst ended {} ms after it was due",
            (planned_at - due).num_milliseconds()
        );
    }
    eprintln!(
        "  burst of {} planned; due from {due} ({} ms from now)",
        p.burst,
        (due - planned_at).num_milliseconds()
    );

    // 3. Immediate events through the HTTP API from the burst's first instant until its
    //    webhooks have all arrived.
    let stop = Arc::new(AtomicBool::new(false));
    let wait = (due - clock.now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let cpu_burst = CpuTicks::read();
    let poster = tokio::spawn(post_events(app.url(), p.events_per_sec, stop.clone()));

    // Wait until every burst timer has fired and arrived (then stop posting), and every
    // event written has arrived. Nothing is asked of the store until posting stops: a
    // count over the events table would scan a million rows beside the measurement.
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    let mut timed_out = false;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = rx.count.load(Ordering::Relaxed);
        if got != last_count {
            last_count = got;
            last_progress = Instant::now();
        }
        if !stop.load(Ordering::Relaxed) {
            if rx.scheduled.load(Ordering::Relaxed) as usize >= p.burst {
                stop.store(true, Ordering::Relaxed);
            }
        } else if poster.is_finished() {
            let events = count(
                &app,
                "SELECT COUNT(*) FROM events WHERE type <> 'item.create'",
            )
            .await;
            if rx.log.lock().expect("lock").seen.len() as i64 >= events {
                break;
            }
        }
        if last_progress.elapsed() > QUIET {
            eprintln!(
                "  nothing arrived for {} s; giving up waiting",
                QUIET.as_secs()
            );
            stop.store(true, Ordering::Relaxed);
            timed_out = true;
            break;
        }
    }
    let (posted, post_errors) = poster.await.expect("poster");
    let cpu_burst_done = CpuTicks::read();
    // A moment for stray duplicates to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (hwm_burst, _) = memory_mib();

    // 4. What happened, from the store and the receiver.
    let events: Vec<(String, i64, Option<i64>)> = app
        .probe()
        .rows(
            "SELECT id, created_at, scheduled_at FROM events WHERE type <> 'item.create'",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().expect("id").to_string(),
                r["created_at"].as_i64().expect("created_at"),
                r["scheduled_at"].as_i64(),
            )
        })
        .collect();
    let attempts: HashMap<String, i64> = app
        .probe()
        .rows("SELECT event_id, attempts FROM deliveries", &[])
        .await
        .expect("deliveries")
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().expect("id").to_string(),
                r["attempts"].as_i64().expect("n"),
            )
        })
        .collect();
    let retried = attempts.values().filter(|a| **a > 1).count();
    let hits = std::mem::take(&mut rx.log.lock().expect("lock").hits);
    let mut arrivals: HashMap<&str, Vec<i64>> = HashMap::new();
    for (id, at) in &hits {
        arrivals.entry(id.as_str()).or_default().push(*at);
    }
    let known: HashSet<&str> = events.iter().map(|e| e.0.as_str()).collect();
    let strangers = arrivals.keys().filter(|id| !known.contains(*id)).count();
    let mut lost = 0;
    let mut doubled = 0;
    for (id, _, _) in &events {
        match arrivals.get(id.as_str()) {
            None => lost += 1,
            Some(a) => {
                let tried = attempts.get(id).copied().unwrap_or(0).max(1);
                doubled += (a.len() as i64 - tried).max(0) as usize;
            }
        }
    }
    let first_arrival = |id: &str| arrivals.get(id).and_then(|a| a.iter().min().copied());
    let timed: Vec<_> = events
        .iter()
        .filter_map(|(id, c, s)| s.map(|s| (id.as_str(), *c, s)))
        .collect();
    let fire_first = timed.iter().map(|t| t.1).min().unwrap_or(0);
    let fire_last = timed.iter().map(|t| t.1).max().unwrap_or(0);
    let fire_secs = (fire_last - fire_first) as f64 / 1000.0;
    let lateness_ms: Vec<f64> = timed
        .iter()
        .filter_map(|(id, _, s)| first_arrival(id).map(|a| (a - s * 1000) as f64 / 1000.0))
        .collect();
    let fire_lag_ms: Vec<f64> = timed.iter().map(|(_, c, s)| (c - s) as f64).collect();
    let timeline = burst_timeline(&timed, &first_arrival, due.timestamp_millis());
    // The burst's webhooks only: the immediate events go on until the last of them
    // arrived.
    let timed_arrivals: Vec<i64> = timed.iter().filter_map(|t| first_arrival(t.0)).collect();
    let recv_first = timed_arrivals.iter().min().copied().unwrap_or(0);
    let recv_last = timed_arrivals.iter().max().copied().unwrap_or(0);
    let recv_secs = (recv_last - recv_first) as f64 / 1e6;
    let since_due_secs = (recv_last - due.timestamp_micros()) as f64 / 1e6;
    let immediate_ms: Vec<f64> = posted
        .iter()
        .filter_map(|p| {
            let id = p.id.as_deref()?;
            first_arrival(id).map(|a| (a - p.sent_us) as f64 / 1000.0)
        })
        .collect();
    let ingest_ms: Vec<f64> = posted
        .iter()
        .map(|p| (p.answered_us - p.sent_us) as f64 / 1000.0)
        .collect();
    let post_secs = match (
        posted.iter().map(|p| p.sent_us).min(),
        posted.iter().map(|p| p.sent_us).max(),
    ) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e6,
        _ => f64::NAN,
    };

    // Signatures of a sample, with the official Standard Webhooks library.
    let (sampled, bad_signatures) = rx.verify_samples(&secret);

    // 5. Restart with the pending timers in the store: until /readyz answers 200.
    let pending = count(&app, "SELECT COUNT(*) FROM timers WHERE state = 'pending'").await;
    app.shutdown().await;
    let t_restart = Instant::now();
    let app = App::start(config.clone(), clock.clone())
        .await
        .expect("app restarts");
    let started = t_restart.elapsed();
    let ready = loop {
        let ok = http
            .get(format!("{}/readyz", app.url()))
            .send()
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
        if ok {
            break t_restart.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    app.shutdown().await;
    receiver_stop.cancel();
    let store_name = store.describe();
    store.drop_database().await;
    let (hwm, rss) = memory_mib();

    let timed_received = timed
        .iter()
        .filter(|(id, _, _)| arrivals.contains_key(id))
        .count();
    println!();
    println!("== duehook load benchmark ==");
    println!("{}", speed_at_start.line_until_now());
    println!(
        "store {store_name}; {} CPUs, load average at start {loadavg}; LOAD_PENDING={} LOAD_BURST={} LOAD_BURST_SPAN_MS={} LOAD_BURST_PLANNED={} LOAD_EVENTS_PER_SEC={}; max_connections {}, max_concurrent_sends {}, max_in_flight_per_endpoint {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        p.pending,
        p.burst,
        p.burst_span_ms,
        if p.scattered { "scattered" } else { "last" },
        p.events_per_sec,
        config.store.max_connections,
        config.delivery.max_concurrent_sends,
        config.delivery.max_in_flight_per_endpoint,
    );
    println!(
        "load:        {} timers stored and planned through POST /v1/batch in {:.1} s ({:.0}/s)",
        loaded,
        load.as_secs_f64(),
        loaded as f64 / load.as_secs_f64()
    );
    println!(
        "burst:       {} timers fired between {:.3} s of first and last fire = {:.0} fires/s",
        timed.len(),
        fire_secs,
        timed.len() as f64 / fire_secs
    );
    println!(
        "delivered:   {} of the burst's signed webhooks received in {:.2} s from first to last = {:.0}/s end to end ({:.2} s after the burst's first due instant: {:.0}/s)",
        timed_arrivals.len(),
        recv_secs,
        timed_arrivals.len() as f64 / recv_secs,
        since_due_secs,
        timed_arrivals.len() as f64 / since_due_secs
    );
    println!(
        "lateness:    scheduled_at -> received: {}",
        spread(lateness_ms)
    );
    println!(
        "             scheduled_at -> event written (fire lag): {}",
        spread(fire_lag_ms)
    );
    println!("{timeline}");
    println!(
        "immediate:   {} events posted at {} /s over {:.1} s ({} failed); POST answered: {}",
        posted.len(),
        p.events_per_sec,
        post_secs,
        post_errors,
        spread(ingest_ms)
    );
    println!(
        "             POST sent -> webhook received: {}",
        spread(immediate_ms)
    );
    println!(
        "correctness: {} events written, {} timed of which {timed_received} received; lost {lost}, doubled {doubled}, retried deliveries {retried}, unknown webhook-ids {strangers}; signatures verified {}/{}{}",
        events.len(),
        timed.len(),
        sampled - bad_signatures,
        sampled,
        if timed_out { "; WAIT TIMED OUT" } else { "" }
    );
    println!(
        "restart:     {pending} pending; App::start returned after {:.0} ms, /readyz 200 after {:.0} ms",
        started.as_secs_f64() * 1000.0,
        ready.as_secs_f64() * 1000.0
    );
    println!(
        "cpu:         loading: {}\n             burst: {}",
        cpu_load.share_until(&cpu_loaded),
        cpu_burst.share_until(&cpu_burst_done)
    );
    println!(
        "memory:      peak RSS (VmHWM) {hwm:.0} MiB (after loading {hwm_loaded:.0} MiB, after the burst {hwm_burst:.0} MiB); RSS now {rss:.0} MiB"
    );

    assert_eq!(timed.len(), p.burst, "every burst timer fired exactly once");
    assert_eq!(lost, 0, "events lost");
    assert_eq!(doubled, 0, "webhooks doubled");
    assert_eq!(strangers, 0, "webhooks with an unknown id");
    assert_eq!(bad_signatures, 0, "signatures that do not verify");
    assert_eq!(post_errors, 0, "ingest POSTs that failed");
    assert!(!timed_out, "the run did not finish");
}

/// Milliseconds of each slice of the burst in the timeline.
const SLICE_MS: i64 = 100;

/// Where in the burst lateness comes from: per [`SLICE_MS`] of due instants (from the
/// burst's first), how many timers were due, and the p50 / max of their fire lag and
/// of their lateness to receipt. Lateness that grows slice by slice is throughput
/// falling behind the burst's rate; one slice far above its neighbours is a stall.
fn burst_timeline(
    timed: &[(&str, i64, i64)],
    first_arrival: &dyn Fn(&str) -> Option<i64>,
    due_ms: i64,
) -> String {
    let mut slices: std::collections::BTreeMap<i64, (Vec<f64>, Vec<f64>)> = Default::default();
    for (id, created, scheduled) in timed {
        let slice = slices
            .entry((scheduled - due_ms).div_euclid(SLICE_MS))
            .or_default();
        slice.0.push((created - scheduled) as f64);
        if let Some(at) = first_arrival(id) {
            slice.1.push((at - scheduled * 1000) as f64 / 1000.0);
        }
    }
    let p50_max = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        match v.last() {
            Some(max) => format!("{:5.0} {:5.0}", v[(v.len() - 1) / 2], max),
            None => format!("{:>5} {:>5}", "-", "-"),
        }
    };
    let mut out = String::from(
        "timeline:    due (ms from first)  timers  fire lag p50/max  to receipt p50/max (ms)",
    );
    for (slice, (lag, receipt)) in slices {
        out.push_str(&format!(
            "\n             {:>6}..{:<6}      {:>6}     {}       {}",
            slice * SLICE_MS,
            (slice + 1) * SLICE_MS,
            lag.len(),
            p50_max(lag),
            p50_max(receipt)
        ));
    }
    out
}

fn main() {
    let p = Params::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(&p));
}
