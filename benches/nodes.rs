//! Fires per second with one, two and three nodes on one PostgreSQL.
//!
//! Run: `DUEHOOK_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1/postgres cargo bench --bench nodes`
//! (`NODES_TIMERS=20000` by default). For each node count: a fresh database, N timers
//! (item expiries) planned through the ingest planner, all due at one instant; the
//! nodes share a manual clock, which jumps to that instant; reported is the time until
//! every timer has fired (each exactly once — checked) and the rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use duehook::App;
use duehook::clock::ManualClock;
use duehook::config::Config;
use duehook::testing::{Item, ItemInput};

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

async fn run(admin_url: &str, nodes: usize, n: usize) -> (Duration, i64) {
    sqlx::any::install_default_drivers();
    let db = format!("duehook_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url)
        .await
        .expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await
        .expect("create");
    let mut url = url::Url::parse(admin_url).expect("url");
    url.set_path(&db);
    let mut config = Config::defaults();
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.store.url = url.to_string();
    config.auth.tokens = vec!["bench-token-0123456789".into()];
    config.log.level = "warn".into();
    let clock = ManualClock::shared(start());
    let mut apps = Vec::new();
    for _ in 0..nodes {
        apps.push(
            App::start(config.clone(), Arc::new(clock.clone()))
                .await
                .expect("node"),
        );
    }
    let due = start() + TimeDelta::minutes(1);
    let items: Vec<Item> = (0..n)
        .map(|i| {
            Item::create(
                &format!("it-{i}"),
                ItemInput {
                    name: "x".into(),
                    expires_at: Some(due),
                    timezone: None,
                    data: None,
                },
                start(),
            )
        })
        .collect();
    apps[0]
        .probe()
        .plan_items(&items, start())
        .await
        .expect("plan");
    let t0 = Instant::now();
    clock.set(due);
    for a in &apps {
        a.probe().wake_scheduler();
    }
    // Done when no timer is pending: one step into the due index, whatever the count.
    // Counting the fired ones instead would walk up to N index entries every 10 ms,
    // beside the nodes, on the same two cores.
    loop {
        let pending: i64 = apps[0]
            .probe()
            .scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM timers WHERE state = 'pending' LIMIT 1) AS p",
                &[],
            )
            .await
            .expect("pending");
        if pending == 0 || t0.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = t0.elapsed();
    let fired: i64 = apps[0]
        .probe()
        .scalar("SELECT COUNT(*) FROM timers WHERE state = 'fired'", &[])
        .await
        .expect("count");
    assert_eq!(fired as usize, n, "every timer fired");
    let distinct: i64 = apps[0]
        .probe()
        .scalar("SELECT COUNT(DISTINCT timer_id) FROM events", &[])
        .await
        .expect("events");
    let events: i64 = apps[0]
        .probe()
        .scalar("SELECT COUNT(*) FROM events", &[])
        .await
        .expect("events");
    assert_eq!(distinct, events, "one event per timer");
    for a in apps {
        a.shutdown().await;
    }
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    (elapsed, events)
}

fn main() {
    let Ok(url) = std::env::var("DUEHOOK_BENCH_POSTGRES_URL") else {
        println!(
            "skipped: set DUEHOOK_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1/postgres to run the multi-node benchmark"
        );
        return;
    };
    let n: usize = std::env::var("NODES_TIMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("timers due at one instant: {n}");
    let mut one = 0.0;
    for nodes in 1..=3 {
        let (elapsed, events) = rt.block_on(run(&url, nodes, n));
        let rate = events as f64 / elapsed.as_secs_f64();
        if nodes == 1 {
            one = rate;
        }
        println!(
            "{nodes} node(s): {events} fired once each in {:.2} s = {:.0} fires/s ({:.2}x one node)",
            elapsed.as_secs_f64(),
            rate,
            rate / one
        );
    }
}
