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
//! | `PLANNING_CONCURRENCY` | 2 | batches in flight at once |
//! | `PLANNING_STORE` | `sqlite` | `sqlite` (a temp file) or a `postgres://` URL where the bench may create (and then drops) its own database |
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

async fn run(entities: usize, concurrency: usize, store_spec: &str) {
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
    let starts =
        |i: usize| (base + TimeDelta::seconds(i as i64)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let ends = |i: usize| {
        (base + TimeDelta::seconds(i as i64) + TimeDelta::days(2))
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    let bar = indicatif::ProgressBar::new(entities as u64);
    let cpu = CpuTicks::read();
    let t0 = Instant::now();
    send_batches(
        &http,
        &app.url(),
        TOKEN,
        entities,
        concurrency,
        |i| {
            json!({"method": "PUT", "path": format!("/v1/reservations/r-{i}"), "body": {
                "contact_id": format!("c-{}", i % 1000),
                "item_ids": [format!("i-{i}")],
                "starts_at": starts(i),
                "ends_at": ends(i),
            }})
        },
        |done| bar.set_position(done as u64),
    )
    .await;
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
    println!(
        "planning:    {entities} reservations through POST /v1/batch ({} per batch, {concurrency} in flight) on {}",
        support::BATCH_OPS,
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
    let concurrency = env_usize("PLANNING_CONCURRENCY", 2);
    let store = std::env::var("PLANNING_STORE").unwrap_or_else(|_| "sqlite".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(entities, concurrency, &store));
}
