//! Several nodes on one PostgreSQL: exactly once with three nodes, takeover of a dead
//! node's timers, a cut store connection; and SQLite's single-node lock.

use crate::support;

use std::sync::Arc;

use chrono::TimeDelta;
use duehook::App;
use duehook::clock::ManualClock;
use duehook::testing::{Item, ItemInput};
use reqwest::StatusCode;
use serde_json::json;
use support::{Backend, StoreHandle, TestApp, t, test_config};

/// Plans `n` item expiries on `instants` distinct instants spread over `spread_ms` from
/// `from`, in one transaction per 1,000, through the same planner ingest uses.
async fn plan_items(app: &App, n: usize, instants: usize, from: &str, spread_ms: i64) {
    let start = t(from);
    let items: Vec<Item> = (0..n)
        .map(|i| {
            Item::create(
                &format!("it-{i}"),
                ItemInput {
                    name: "x".into(),
                    expires_at: Some(
                        start
                            + TimeDelta::milliseconds(
                                ((i % instants) as i64 * spread_ms) / instants as i64,
                            ),
                    ),
                    timezone: None,
                    data: None,
                },
                t(support::START),
            )
        })
        .collect();
    app.probe()
        .plan_items(&items, t(support::START))
        .await
        .expect("planned");
}

/// The integer `sql` answers on `app`'s store.
async fn scalar(app: &App, sql: &str, args: &[support::Arg]) -> i64 {
    app.probe().scalar(sql, args).await.expect("query")
}

/// SQLite claims by reading, so a written claim found in the file at start belongs to
/// no live process: it is released, and nothing waits for its lease.
#[tokio::test]
async fn a_sqlite_node_releases_claims_an_earlier_process_left() {
    let store = StoreHandle::new(Backend::Sqlite).await.expect("sqlite");
    let clock = ManualClock::shared(t(support::START));
    let first = start_node(&store, &clock).await;
    plan_items(&first, 3, 1, "2030-03-01T08:00:10Z", 0).await;
    first
        .probe()
        .execute(
            "UPDATE timers SET claimed_by = 'node_gone', lease_until = $1",
            &[t("2030-03-01T09:00:00Z").into()],
        )
        .await
        .expect("leftover claims");
    first.shutdown().await;

    let again = start_node(&store, &clock).await;
    let held = scalar(
        &again,
        "SELECT COUNT(*) FROM timers WHERE claimed_by IS NOT NULL",
        &[],
    )
    .await;
    assert_eq!(held, 0, "claims left by an earlier process are released");
    again.shutdown().await;
}

async fn start_node(store: &StoreHandle, clock: &Arc<ManualClock>) -> App {
    App::start(test_config(store.url()), Arc::new(clock.clone()))
        .await
        .expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_fire_ten_thousand_timers_exactly_once() {
    let Some(store) = StoreHandle::new(Backend::Postgres).await else {
        return;
    };
    let clock = ManualClock::shared(t(support::START));
    let a = start_node(&store, &clock).await;
    let b = start_node(&store, &clock).await;
    let c = start_node(&store, &clock).await;
    // Every event goes to one endpoint on a real receiver: each must be delivered.
    let rx = support::receiver::Receiver::start().await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/endpoints", a.url()))
        .bearer_auth(support::TOKEN)
        .header("content-type", "application/json")
        .body(json!({"name": "rx", "url": rx.url("/h"), "topics": ["item.expire"]}).to_string())
        .send()
        .await
        .expect("endpoint");
    assert_eq!(r.status(), StatusCode::CREATED);
    // 10,000 timers due in the same minute, 100 at each of 100 instants.
    plan_items(&a, 10_000, 100, "2030-03-01T09:00:00Z", 59_000).await;

    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/admin/clock/advance", b.url()))
        .bearer_auth(support::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"to": "2030-03-01T09:05:00Z"}"#)
        .send()
        .await
        .expect("advance");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );

    let events = scalar(
        &a,
        "SELECT COUNT(*) FROM events WHERE type = 'item.expire'",
        &[],
    )
    .await;
    let distinct = scalar(
        &a,
        "SELECT COUNT(DISTINCT timer_id) FROM events WHERE type = 'item.expire'",
        &[],
    )
    .await;
    let fired = scalar(&a, "SELECT COUNT(*) FROM timers WHERE state = 'fired'", &[]).await;
    assert_eq!(
        (events, distinct, fired),
        (10_000, 10_000, 10_000),
        "each timer fired once"
    );
    let early = scalar(
        &a,
        "SELECT COUNT(*) FROM events WHERE created_at < scheduled_at",
        &[],
    )
    .await;
    assert_eq!(early, 0, "never early");
    // Each event delivered: one succeeded delivery per event, and the receiver saw
    // every event id (re-sends would carry the same id). The advance answered for this
    // node's own work; the other nodes' sends in flight finish on their own time.
    // An attempt that timed out on a loaded machine is retried on the service clock,
    // which stands still here: after 10 s with deliveries left, it moves on 30 s every
    // 2 s, past the first retries (5 s, 5 min), as time would.
    let mut delivered = 0;
    for i in 1..=1200 {
        delivered = scalar(
            &a,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'succeeded'",
            &[],
        )
        .await;
        if delivered >= 10_000 {
            break;
        }
        if i >= 200 && i % 40 == 0 {
            clock.advance(chrono::TimeDelta::seconds(30));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if delivered != 10_000 {
        let states = a
            .probe()
            .rows(
                "SELECT status, CASE WHEN claimed_by IS NULL THEN 1 ELSE 0 END AS unclaimed,
                     MAX(attempts) AS attempts, COUNT(*) AS n FROM deliveries
                 GROUP BY status, CASE WHEN claimed_by IS NULL THEN 1 ELSE 0 END",
                &[],
            )
            .await
            .unwrap_or_default();
        panic!(
            "every event delivered: {delivered} of 10000; (status, unclaimed, most attempts, count): {states:?}"
        );
    }
    let seen: std::collections::BTreeSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(seen.len(), 10_000, "the receiver saw every event");
    // The work spread: every node fired some.
    let rows = a
        .probe()
        .rows(
            "SELECT claimed_by, COUNT(*) AS n FROM timers WHERE state = 'fired' GROUP BY claimed_by",
            &[],
        )
        .await
        .expect("spread");
    let per_node: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["claimed_by"].as_str().unwrap_or_default().to_string(),
                r["n"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    for app in [&a, &b, &c] {
        assert!(
            per_node.iter().any(|(n, c)| n == app.node_id() && *c > 0),
            "node {} fired nothing: {per_node:?}",
            app.node_id()
        );
    }
    let r = client
        .get(format!("{}/admin/nodes", c.url()))
        .bearer_auth(support::ADMIN_TOKEN)
        .send()
        .await
        .expect("nodes");
    let body: serde_json::Value =
        serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert_eq!(body["nodes"].as_array().map(Vec::len), Some(3), "{body}");
    for app in [a, b, c] {
        app.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_nodes_timers_are_taken_over() {
    let Some(store) = StoreHandle::new(Backend::Postgres).await else {
        return;
    };
    let clock = ManualClock::shared(t(support::START));
    let doomed = start_node(&store, &clock).await;
    plan_items(&doomed, 300, 30, "2030-03-01T08:05:00Z", 60_000).await;
    // Let the doomed node claim them.
    doomed.probe().wake_scheduler();
    let mut held = 0;
    for _ in 0..200 {
        held = scalar(
            &doomed,
            "SELECT COUNT(*) FROM timers WHERE claimed_by = $1",
            &[doomed.node_id().into()],
        )
        .await;
        if held == 300 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(held, 300, "the doomed node holds every timer");
    // It dies without releasing anything.
    doomed.abort();
    let survivor = start_node(&store, &clock).await;
    let r = reqwest::Client::new()
        .post(format!("{}/admin/clock/advance", survivor.url()))
        .bearer_auth(support::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"to": "2030-03-01T08:10:00Z"}"#)
        .send()
        .await
        .expect("advance");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let fired = scalar(
        &survivor,
        "SELECT COUNT(DISTINCT timer_id) FROM events WHERE type = 'item.expire'",
        &[],
    )
    .await;
    let events = scalar(
        &survivor,
        "SELECT COUNT(*) FROM events WHERE type = 'item.expire'",
        &[],
    )
    .await;
    assert_eq!((fired, events), (300, 300));
    let by_survivor = scalar(
        &survivor,
        "SELECT COUNT(*) FROM timers WHERE claimed_by = $1 AND state = 'fired'",
        &[survivor.node_id().into()],
    )
    .await;
    assert_eq!(by_survivor, 300, "taken over once the leases lapsed");
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_store_connections_lose_nothing() {
    let Some(mut app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    for i in 0..30 {
        app.put(
            &format!("/v1/orders/o-{i}"),
            json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
        )
        .await;
        app.post(&format!("/v1/orders/o-{i}/checkout"), None).await;
    }
    app.advance(3600).await;
    // Cut every connection to this test's database (as a PostgreSQL restart would).
    let StoreHandle::Postgres { admin_url, db, .. } = &app.store else {
        unreachable!("postgres")
    };
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url)
        .await
        .expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid)::text AS t FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    )))
    .fetch_all(&mut admin)
    .await
    .expect("terminate");
    // The next requests may meet a dead pooled connection once: a clear 503, never a lie.
    let mut ok = false;
    for _ in 0..50 {
        let r = app
            .put(
                "/v1/orders/late",
                json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
            )
            .await;
        assert!(
            r.status == StatusCode::CREATED
                || r.status == StatusCode::OK
                || r.status == StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            r.body
        );
        if r.status.is_success() {
            ok = true;
            break;
        }
    }
    assert!(ok, "the pool reconnected");
    app.advance(3 * 86_400).await;
    let f: Vec<_> = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.scheduled_at.is_some())
        .collect();
    assert_eq!(
        f.len(),
        30 * 4,
        "every reminder of every checked-out order, once"
    );
    let mut keys: Vec<_> = f
        .iter()
        .map(|e| (e.event_type.clone(), e.entity_id.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 120);
    app.restart().await;
}

#[tokio::test]
async fn a_second_process_on_one_sqlite_file_refuses_to_start() {
    let store = StoreHandle::new(Backend::Sqlite).await.expect("sqlite");
    let clock = ManualClock::shared(t(support::START));
    let first = start_node(&store, &clock).await;
    let err = App::start(test_config(store.url()), Arc::new(clock.clone()))
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("another duehook process") && msg.contains("PostgreSQL"),
        "{msg}"
    );
    first.shutdown().await;
    // Once the first is gone, a new one starts.
    let again = start_node(&store, &clock).await;
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_with_clocks_apart_fire_once_never_early_and_the_fast_takes_over() {
    clocks_apart(Doomed::Slow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_with_clocks_apart_fire_once_never_early_and_the_slow_takes_over() {
    clocks_apart(Doomed::Fast).await;
}

/// Which of the two nodes dies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Doomed {
    Slow,
    Fast,
}

/// Two nodes whose clocks are `SKEW` apart (one ahead of the other): every timer fires
/// once, none before its instant by the faster clock, and when one dies the other takes
/// its timers and deliveries over once its heartbeat is a lease old by the survivor's
/// clock.
async fn clocks_apart(doomed: Doomed) {
    const SKEW: TimeDelta = TimeDelta::seconds(5);
    const TIMERS: usize = 400;
    let Some(store) = StoreHandle::new(Backend::Postgres).await else {
        return;
    };
    let start = t(support::START);
    let slow = ManualClock::shared(start);
    let fast = ManualClock::shared(start + SKEW);
    // `a` dies, `b` survives.
    let (doomed_clock, survivor_clock) = match doomed {
        Doomed::Slow => (&slow, &fast),
        Doomed::Fast => (&fast, &slow),
    };
    let a = start_node(&store, doomed_clock).await;
    let rx = support::receiver::Receiver::start().await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/endpoints", a.url()))
        .bearer_auth(support::TOKEN)
        .header("content-type", "application/json")
        .body(json!({"name": "rx", "url": rx.url("/h"), "topics": ["item.expire"]}).to_string())
        .send()
        .await
        .expect("endpoint");
    assert_eq!(r.status(), StatusCode::CREATED);
    // Due over two minutes, from 20 s on (true time), 40 instants; the doomed node
    // claims them all before the survivor starts.
    plan_items(&a, TIMERS, 40, "2030-03-01T08:00:20Z", 120_000).await;
    a.probe().wake_scheduler();
    let mut held = 0;
    for _ in 0..500 {
        held = scalar(
            &a,
            "SELECT COUNT(*) FROM timers WHERE claimed_by = $1",
            &[a.node_id().into()],
        )
        .await;
        if held == TIMERS as i64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(held, TIMERS as i64, "the doomed node holds every timer");
    let b = start_node(&store, survivor_clock).await;

    // True time moves in steps of 500 ms; each clock shows it with its own offset.
    let mut a = Some(a);
    let mut killed_at = None;
    let mut now = start;
    let end = start + TimeDelta::minutes(4);
    while now < end {
        now += TimeDelta::milliseconds(500);
        slow.set(now);
        fast.set(now + SKEW);
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        // A fire happens while the clocks show these instants: none may be due later
        // than the fastest of them.
        let early = scalar(
            &b,
            "SELECT COUNT(*) FROM timers WHERE state = 'fired' AND fire_at > $1",
            &[(now + SKEW).into()],
        )
        .await;
        assert_eq!(early, 0, "fired before its instant by the fastest clock");
        if killed_at.is_none() && now >= start + TimeDelta::seconds(70) {
            // A dies mid-burst, holding timers (and perhaps deliveries).
            let held = scalar(
                &b,
                "SELECT COUNT(*) FROM timers WHERE claimed_by = $1 AND state = 'pending'",
                &[a.as_ref().expect("a").node_id().into()],
            )
            .await;
            assert!(held > 0, "the doomed node holds timers");
            a.take().expect("a").abort();
            killed_at = Some(now);
        }
    }
    let fired = scalar(
        &b,
        "SELECT COUNT(DISTINCT timer_id) FROM events WHERE type = 'item.expire'",
        &[],
    )
    .await;
    let events = scalar(
        &b,
        "SELECT COUNT(*) FROM events WHERE type = 'item.expire'",
        &[],
    )
    .await;
    assert_eq!((fired, events), (TIMERS as i64, TIMERS as i64), "each once");
    let taken_over = scalar(
        &b,
        "SELECT COUNT(*) FROM nodes WHERE stopped_at IS NOT NULL",
        &[],
    )
    .await;
    assert_eq!(taken_over, 1, "A was taken for dead");
    // Every event reached the receiver (at least once, the same webhook-id each time).
    let got = rx.wait_for(TIMERS).await;
    let ids: std::collections::BTreeSet<String> =
        got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), TIMERS);
    b.shutdown().await;
}
