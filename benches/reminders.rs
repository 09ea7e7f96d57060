//! End to end: plan N reminders durably and fire them, against adding N one-shot jobs
//! to tokio-cron-scheduler (its default 200-slot channel) and waiting for them to run.
//! Both run on the real clock: each reminder is due 2 s after it was added.
//!
//! Run: `cargo bench --bench reminders` (N = 100000; `REMINDERS=20000` for a quick run).
//! duehook side: a real App (system clock) on a temp SQLite file; reminders are items
//! with an `expires_at`, planned in two ways, each on a fresh store: stored and planned
//! directly through the Planner ingest uses, in transactions of 1,000 (no HTTP, no
//! events of their own), and through the product's way, `POST /v1/batch` with 10,000
//! `PUT /v1/items/{id}` per request (each also writes its `item.create` event); the
//! driver fires them from its wheel. Reported: time until the last one fired, how many
//! fired (exactly once each: one event per timer), lateness (event `created` −
//! `scheduled_at`), how many fired early (must be 0) and how many were lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use duehook::App;
use duehook::clock::SystemClock;
use duehook::config::Config;
use duehook::testing::{Item, ItemInput};
use serde_json::json;

#[path = "support/mod.rs"]
mod support;

const TOKEN: &str = "bench-token-0123456789";
const DELAY: Duration = Duration::from_secs(2);

struct Run {
    add: Duration,
    total: Duration,
    fired: usize,
    early: usize,
    lateness_ms: Vec<f64>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, n: usize, r: &mut Run) {
    r.lateness_ms.sort_by(f64::total_cmp);
    println!(
        "{name}: add {:.2} s, all done after {:.2} s; fired {}/{n} (lost {}), early {}, lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.add.as_secs_f64(),
        r.total.as_secs_f64(),
        r.fired,
        n - r.fired.min(n),
        r.early,
        pct(&r.lateness_ms, 0.5),
        pct(&r.lateness_ms, 0.99),
        r.lateness_ms.last().copied().unwrap_or(f64::NAN),
    );
}

/// How the reminders are planned.
#[derive(Clone, Copy, PartialEq)]
enum Planning {
    /// Through the Planner directly, 1,000 per transaction.
    Direct,
    /// Through `POST /v1/batch`.
    Batch,
}

async fn duehook_run(n: usize, planning: Planning) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.store.url = format!("sqlite://{}", dir.path().join("bench.db").display());
    config.auth.tokens = vec![TOKEN.into()];
    config.log.level = "warn".into();
    let clock = SystemClock::shared();
    let app = App::start(config, clock.clone()).await.expect("app");
    let probe = app.probe();

    let t0 = Instant::now();
    if planning == Planning::Batch {
        let http = reqwest::Client::new();
        let delay = TimeDelta::from_std(DELAY).unwrap_or_default();
        let clock = clock.clone();
        support::send_batches(
            &http,
            &app.url(),
            TOKEN,
            n,
            2,
            |i| {
                json!({"method": "PUT", "path": format!("/v1/items/item-{i}"), "body": {
                    "name": "reminder",
                    "expires_at": (clock.now() + delay).to_rfc3339(),
                }})
            },
            |done| {
                if done % 10_000 == 0 {
                    eprintln!(
                        "  planned {done}/{n} in {:.1} s",
                        t0.elapsed().as_secs_f64()
                    );
                }
            },
        )
        .await;
    }
    let mut i = if planning == Planning::Batch { n } else { 0 };
    while i < n {
        let now = clock.now();
        let items: Vec<Item> = (i..n.min(i + 1000))
            .map(|i| {
                Item::create(
                    &format!("item-{i}"),
                    ItemInput {
                        name: "reminder".into(),
                        expires_at: Some(now + TimeDelta::from_std(DELAY).unwrap_or_default()),
                        timezone: None,
                        data: None,
                    },
                    now,
                )
            })
            .collect();
        probe.plan_items(&items, now).await.expect("plan");
        i += items.len();
        // What ingest does after a commit that planned inside the horizon.
        probe.wake_scheduler();
        if i % 10_000 == 0 {
            eprintln!("  planned {i}/{n} in {:.1} s", t0.elapsed().as_secs_f64());
        }
    }
    let add = t0.elapsed();

    // Done when no timer is pending: one step into the due index, whatever the count.
    // Counting the fired ones instead would walk up to N index entries every 20 ms,
    // beside the scheduler, on the same two cores.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let pending: i64 = probe
            .scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM timers WHERE state = 'pending' LIMIT 1) AS p",
                &[],
            )
            .await
            .expect("pending");
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = t0.elapsed();
    let events = probe.events().await.expect("events");
    let timed: Vec<_> = events
        .iter()
        .filter_map(|e| e.scheduled_at.map(|s| (e.created, s)))
        .collect();
    let lateness_ms = timed
        .iter()
        .map(|(c, s)| (*c - *s).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        .collect();
    let early = timed.iter().filter(|(c, s)| c < s).count();
    let distinct: i64 = probe
        .scalar("SELECT COUNT(DISTINCT timer_id) FROM events", &[])
        .await
        .expect("distinct");
    assert_eq!(distinct as usize, timed.len(), "one event per timer");
    app.shutdown().await;
    Run {
        add,
        total,
        fired: timed.len(),
        early,
        lateness_ms,
    }
}

async fn cron_run(n: usize) -> Run {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let sched = JobScheduler::new().await.expect("scheduler");
    sched.start().await.expect("start");
    let ran = Arc::new(AtomicU64::new(0));
    let lateness = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let early = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    for i in 0..n {
        let (ran, lateness, early) = (ran.clone(), lateness.clone(), early.clone());
        let due = Utc::now() + TimeDelta::from_std(DELAY).unwrap_or_default();
        let job = Job::new_one_shot_async(DELAY, move |_, _| {
            let (ran, lateness, early) = (ran.clone(), lateness.clone(), early.clone());
            Box::pin(async move {
                let late = Utc::now() - due;
                if late < TimeDelta::zero() {
                    early.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut l) = lateness.lock() {
                    l.push(late.num_microseconds().unwrap_or(0) as f64 / 1000.0);
                }
                ran.fetch_add(1, Ordering::Relaxed);
            })
        })
        .expect("job");
        sched.add(job).await.expect("add");
        if (i + 1) % 10_000 == 0 {
            eprintln!(
                "  added {}/{n} in {:.1} s",
                i + 1,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    let add = t0.elapsed();
    // Wait until all ran, or nothing more ran for 3 s after the last was due.
    let mut last = 0;
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = ran.load(Ordering::Relaxed);
        if now as usize >= n {
            break;
        }
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(3) && t0.elapsed() > add + DELAY {
            break;
        }
    }
    let total = t0.elapsed()
        - if (ran.load(Ordering::Relaxed) as usize) < n {
            Duration::from_secs(3)
        } else {
            Duration::ZERO
        };
    let lateness_ms = lateness.lock().map(|l| l.clone()).unwrap_or_default();
    Run {
        add,
        total,
        fired: ran.load(Ordering::Relaxed) as usize,
        early: early.load(Ordering::Relaxed) as usize,
        lateness_ms,
    }
}

fn main() {
    let n: usize = std::env::var("REMINDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "reminders: {n}, each due {} s after it was added",
        DELAY.as_secs()
    );
    let mut direct = rt.block_on(duehook_run(n, Planning::Direct));
    report(
        "duehook (SQLite, durable; planned directly, 1,000 per transaction)",
        n,
        &mut direct,
    );
    let mut ours = rt.block_on(duehook_run(n, Planning::Batch));
    report(
        "duehook (SQLite, durable; planned through POST /v1/batch)",
        n,
        &mut ours,
    );
    let mut theirs = rt.block_on(cron_run(n));
    report(
        "tokio-cron-scheduler (in memory, default 200-slot channel)",
        n,
        &mut theirs,
    );
    println!(
        "ratio (time until all done, tokio-cron-scheduler / duehook through POST /v1/batch): {:.2}x; reminders lost: duehook {} (batch), {} (direct), tokio-cron-scheduler {}",
        theirs.total.as_secs_f64() / ours.total.as_secs_f64(),
        n - ours.fired.min(n),
        n - direct.fired.min(n),
        n - theirs.fired.min(n),
    );
}
