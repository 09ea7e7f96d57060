//! End to end: plan N reminders durably and fire them, against adding N one-shot jobs
//! to tokio-cron-scheduler (its default 200-slot channel) and waiting for them to run.
//!
//! Run: `cargo bench --bench reminders` (N = 100000; `REMINDERS=20000` for a quick run).
//! duehook side: a real App on a temp SQLite file with a ManualClock; reminders are
//! items with an `expires_at`, planned through the same Planner that ingest uses, in
//! transactions of 1,000; then the clock moves past every deadline through
//! `/admin/clock/advance`, which answers once every timer has fired (each event written,
//! exactly once, never before its instant).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use duehook::App;
use duehook::clock::ManualClock;
use duehook::config::Config;
use duehook::domain::item::{Item, ItemInput};
use duehook::schedule::plan::Subject;
use duehook::store::entities;

const TOKEN: &str = "bench-token-0123456789";

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

async fn duehook_run(n: usize) -> (Duration, Duration, usize, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.store.url = format!("sqlite://{}", dir.path().join("bench.db").display());
    config.auth.tokens = vec![TOKEN.into()];
    let clock = ManualClock::shared(start());
    let app = App::start(config.clone(), Arc::new(clock.clone()))
        .await
        .expect("app");
    let planner = app.planner().clone();

    // Plan: deadlines spread over one minute after the start, 1 ms apart or closer.
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let mut tx = app.store().begin().await.expect("tx");
        for _ in 0..1000.min(n - i) {
            let expires_at = start()
                + TimeDelta::seconds(1)
                + TimeDelta::microseconds((i as i64 * 60_000_000) / n as i64);
            let item = Item::create(
                &format!("item-{i}"),
                ItemInput {
                    name: "reminder".into(),
                    expires_at: Some(expires_at),
                    timezone: None,
                    data: None,
                },
                start(),
            );
            entities::save_item(&mut tx, &item).await.expect("save");
            planner
                .replan(&mut tx, Subject::Item(&item), start())
                .await
                .expect("plan");
            i += 1;
        }
        tx.commit().await.expect("commit");
    }
    let plan = t0.elapsed();

    // Fire: live through the minute.
    let t1 = Instant::now();
    let res = reqwest::Client::new()
        .post(format!("{}/admin/clock/advance", app.url()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"seconds": 120}"#)
        .send()
        .await
        .expect("advance");
    assert!(
        res.status().is_success(),
        "advance failed: {}",
        res.status()
    );
    let fire = t1.elapsed();

    let events = duehook::store::events::list_after(app.store().pool(), 0, i64::MAX)
        .await
        .expect("events");
    let fired = events
        .iter()
        .filter(|e| e.event_type == "item.expire")
        .count();
    let early = events
        .iter()
        .filter(|e| e.scheduled_at.is_some_and(|s| e.created < s))
        .count();
    app.shutdown().await;
    (plan, fire, fired, early)
}

async fn cron_run(n: usize) -> (Duration, Duration, u64) {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let sched = JobScheduler::new().await.expect("scheduler");
    sched.start().await.expect("start");
    let ran = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    for _ in 0..n {
        let ran = ran.clone();
        let job = Job::new_one_shot_async(Duration::from_secs(2), move |_, _| {
            let ran = ran.clone();
            Box::pin(async move {
                ran.fetch_add(1, Ordering::Relaxed);
            })
        })
        .expect("job");
        sched.add(job).await.expect("add");
    }
    let add = t0.elapsed();
    // Wait until nothing more runs for 3 s (or all ran), at most 60 s.
    let t1 = Instant::now();
    let mut last = 0;
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = ran.load(Ordering::Relaxed);
        if now as usize >= n {
            break;
        }
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(3)
            || t1.elapsed() > Duration::from_secs(60)
        {
            break;
        }
    }
    (add, t1.elapsed(), ran.load(Ordering::Relaxed))
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
    println!("reminders: {n}");
    let (plan, fire, fired, early) = rt.block_on(duehook_run(n));
    let ours = plan + fire;
    println!(
        "duehook (SQLite, durable): plan {:.2} s, fire {:.2} s, total {:.2} s; fired {fired}/{n}, lost {}, early {early}",
        plan.as_secs_f64(),
        fire.as_secs_f64(),
        ours.as_secs_f64(),
        n - fired.min(n)
    );
    let (add, wait, ran) = rt.block_on(cron_run(n));
    let theirs = add + wait;
    println!(
        "tokio-cron-scheduler (in memory, 200-slot channel): add {:.2} s, run {:.2} s (includes its 2 s delay), total {:.2} s; ran {ran}/{n}, lost {}",
        add.as_secs_f64(),
        wait.as_secs_f64(),
        theirs.as_secs_f64(),
        n as u64 - ran.min(n as u64)
    );
    println!(
        "ratio: duehook end to end is {:.1}x faster (tokio-cron-scheduler time / duehook time)",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}
