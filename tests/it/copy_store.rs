//! `duehook copy-store`: a SQLite store in the middle of its life (pending and fired
//! timers, failed and pending deliveries, a disabled endpoint, sealed secrets, the
//! digest chain) copied to PostgreSQL, where two nodes take over: every pending timer
//! fires once, every pending delivery arrives under its original `webhook-id`, every
//! timeline reads as before. Then the refusals, a copy killed half-way and run again,
//! and the PostgreSQL-to-SQLite restore drill. Real SQLite files, a real PostgreSQL
//! (skipped with a printed reason when `DUEHOOK_TEST_POSTGRES_URL` is unset), real
//! receivers, and the real binary for the command line.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Arc;

use duehook::App;
use duehook::clock::ManualClock;
use duehook::config::Config;
use duehook::copy::{CopyError, CopyOptions, CopyReport, Side, copy_store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::receiver::{Answer, Receiver, eventually};
use support::{ADMIN_TOKEN, Backend, ClockExt, StoreHandle, TestApp, t};
use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_duehook");
/// `[store] secret_key`: the endpoints' secrets are stored sealed.
const SECRET_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// The entities the population writes, as `(kind, id)` of their timelines.
const ENTITIES: &[(&str, &str)] = &[
    ("reservation", "r-1"),
    ("reservation", "r-2"),
    ("reservation", "r-3"),
    ("reservation", "r-4"),
    ("order", "o-1"),
    ("order", "o-2"),
    ("item", "it-1"),
    ("contact", "c-1"),
    ("unitRental", "ur-1"),
    ("invoice", "inv-1"),
    ("digest", "UTC"),
];

/// The test configuration on `url`: sealed secrets, the daily digest, and a failing
/// endpoint that stays enabled and is never held back (its retries are what the
/// copy must carry).
fn configure(c: &mut Config) {
    c.store.secret_key = SECRET_KEY.into();
    c.schedule.digest.enabled = true;
    c.delivery.circuit_breaker_failures = 0;
    c.delivery.disable_after_failed_deliveries = 0;
    c.delivery.disable_after_failing_hours = 0;
}

fn config_on(url: &str) -> Config {
    let mut c = support::test_config(url);
    configure(&mut c);
    c
}

fn options(now: chrono::DateTime<chrono::Utc>, replace_target: bool) -> CopyOptions {
    CopyOptions {
        replace_target,
        now,
        lease: chrono::TimeDelta::seconds(30),
    }
}

/// Copies with the library, returning the report and the progress it wrote.
async fn copy(
    from: &str,
    to: &str,
    options: &CopyOptions,
) -> (Result<CopyReport, CopyError>, String) {
    let mut progress = Vec::new();
    let result = copy_store(from, to, options, &mut progress).await;
    (result, String::from_utf8_lossy(&progress).into_owned())
}

/// Runs `duehook copy-store` in an empty directory (built-in configuration): exit
/// code, stdout, stderr.
async fn copy_cli(from: &str, to: &str, extra: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let out = tokio::process::Command::new(BIN)
        .args(["copy-store", "--from", from, "--to", to])
        .args(extra)
        .current_dir(dir.path())
        .env_remove("DUEHOOK_CONFIG")
        .output()
        .await
        .expect("duehook runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let r = app.put(path, body).await;
    assert!(r.status.is_success(), "{path}: {}", r.body);
    r.body
}

/// The endpoints of the population: (ok, flaky, off) and their secrets.
struct Endpoints {
    flaky: String,
    flaky_secret: String,
}

/// A store in the middle of its life, on the app's clock from 08:00 to 13:00 on
/// 2030-03-01: an endpoint that takes everything, one that fails everything (retries
/// "1s,2h", ±20 % jitter: the deliveries of the events up to 10:00 failed for good,
/// those from noon on wait for their next attempt), one disabled; reservations, orders, an item, a unit rental
/// with an unpaid invoice, a contact; the timers between 08:00 and 13:00 fired, the
/// rest pending, the next digest planned.
async fn populate(app: &TestApp, ok: &Receiver, flaky: &Receiver) -> Endpoints {
    let endpoint = |name: &str, url: String, retry: Value| json!({"name": name, "url": url, "topics": ["*"], "retry": retry});
    let r = app
        .post(
            "/v1/endpoints",
            Some(endpoint("ok", ok.url("/ok"), json!({"schedule": "1s"}))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app
        .post(
            "/v1/endpoints",
            Some(endpoint(
                "flaky",
                flaky.url("/flaky"),
                json!({"schedule": "1s,2h"}),
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let endpoints = Endpoints {
        flaky: r.body["id"].as_str().expect("id").to_string(),
        flaky_secret: r.body["secret"].as_str().expect("secret").to_string(),
    };
    let r = app
        .post(
            "/v1/endpoints",
            Some(endpoint("off", ok.url("/off"), json!({"schedule": "1s"}))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let off = r.body["id"].as_str().expect("id").to_string();
    let r = app
        .post(
            &format!("/v1/endpoints/{off}/disable"),
            Some(json!({"reason": "moving house"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    created(
        app,
        "/v1/contacts/c-1",
        json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .await;
    for (id, starts) in [
        ("r-1", "2030-03-02T12:00:00Z"),
        ("r-2", "2030-03-02T12:30:00Z"),
        ("r-3", "2030-03-03T12:00:00Z"),
        ("r-4", "2030-03-05T09:00:00Z"),
    ] {
        let ends = (t(starts) + chrono::TimeDelta::hours(4)).to_rfc3339();
        created(
            app,
            &format!("/v1/reservations/{id}"),
            json!({"contact_id": "c-1", "item_ids": ["cam-1"], "starts_at": starts, "ends_at": ends}),
        )
        .await;
    }
    for (id, due) in [
        ("o-1", "2030-03-02T10:00:00Z"),
        ("o-2", "2030-03-04T10:00:00Z"),
    ] {
        created(
            app,
            &format!("/v1/orders/{id}"),
            json!({"contact_id": "c-1", "item_ids": ["cam-2", "lens-1"], "due_at": due}),
        )
        .await;
        let r = app.post(&format!("/v1/orders/{id}/checkout"), None).await;
        assert!(r.status.is_success(), "{}", r.body);
    }
    created(
        app,
        "/v1/items/it-1",
        json!({"name": "Battery", "expires_at": "2030-03-02T20:00:00Z"}),
    )
    .await;
    created(
        app,
        "/v1/unit-rentals/ur-1",
        json!({"contact_id": "c-1", "unit_id": "A-12", "state": "occupied"}),
    )
    .await;
    created(
        app,
        "/v1/invoices/inv-1",
        json!({"unit_rental_id": "ur-1", "due_at": "2030-03-02T09:00:00Z", "state": "sent"}),
    )
    .await;
    // Lives through 08:00 to 13:00: each timer and each retry at its own instant.
    app.advance_to("2030-03-01T13:00:00Z").await;
    // One more change at 13:00, whose failed first attempt waits one second.
    let r = app
        .post(
            "/v1/events",
            Some(json!({"type": "booking.create", "data": {"id": "b-1"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    app.advance(0).await;
    endpoints
}

/// `GET /admin/entities/{kind}/{id}/timeline` of every entity, on the app at `base`.
async fn timelines(client: &reqwest::Client, base: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (kind, id) in ENTITIES {
        let r = client
            .get(format!("{base}/admin/entities/{kind}/{id}/timeline"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("timeline");
        assert_eq!(r.status(), StatusCode::OK, "{kind} {id}");
        let body: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
        out.insert(format!("{kind}/{id}"), body);
    }
    out
}

async fn scalar(pool: &sqlx::AnyPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// What the source held when the copy began.
struct Before {
    /// Pending timers: id → (entity kind, entity id, event type).
    pending_timers: BTreeMap<i64, (String, String, String)>,
    /// Pending deliveries: (event id, endpoint id).
    pending_deliveries: Vec<(String, String)>,
    max_event_seq: i64,
}

async fn inspect(url: &str) -> Before {
    let store = support::pool(url).await;
    let pool = &store;
    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT id, entity_kind, entity_id, event_type FROM timers WHERE state = 'pending' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("timers");
    let pending_timers = rows
        .into_iter()
        .map(|(id, k, e, ty)| (id, (k, e, ty)))
        .collect();
    let pending_deliveries: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_id, endpoint_id FROM deliveries WHERE status = 'pending' ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .expect("deliveries");
    let max_event_seq = scalar(pool, "SELECT COALESCE(MAX(seq), 0) FROM events").await;
    store.close().await;
    Before {
        pending_timers,
        pending_deliveries,
        max_event_seq,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_store_mid_life_moves_to_two_postgres_nodes() {
    let Some(pg) = StoreHandle::new(Backend::Postgres).await else {
        return;
    };
    let ok = Receiver::start().await;
    let flaky = Receiver::start().await;
    flaky.set_default(Answer::status(500));
    let mut app = TestApp::spawn_config(Backend::Sqlite, configure)
        .await
        .expect("sqlite");
    let endpoints = populate(&app, &ok, &flaky).await;
    let client = reqwest::Client::new();
    let timelines_before = timelines(&client, &app.app().url()).await;
    let now = app.clock.now_utc();
    assert_eq!(now, t("2030-03-01T13:00:00Z"));
    app.app.take().expect("running").shutdown().await;
    let sqlite_url = app.store.url().to_string();

    // The scenario is what it claims to be.
    let before = inspect(&sqlite_url).await;
    let source = support::pool(&sqlite_url).await;
    let pool = &source;
    assert!(
        before.pending_timers.len() >= 20,
        "{:?}",
        before.pending_timers
    );
    let fired = scalar(pool, "SELECT COUNT(*) FROM timers WHERE state = 'fired'").await;
    assert!(fired >= 3, "{fired} timers fired before the copy");
    assert!(
        before
            .pending_timers
            .values()
            .any(|(kind, _, _)| kind == "digest"),
        "the next digest is planned"
    );
    assert!(
        before.pending_deliveries.len() >= 3
            && before
                .pending_deliveries
                .iter()
                .all(|(_, ep)| *ep == endpoints.flaky),
        "{:?}",
        before.pending_deliveries
    );
    assert!(
        scalar(
            pool,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND attempts = 1"
        )
        .await
            >= 1
    );
    assert!(
        scalar(
            pool,
            "SELECT COUNT(*) FROM deliveries WHERE status = 'failed'"
        )
        .await
            >= 5
    );
    assert_eq!(
        scalar(pool, "SELECT COUNT(*) FROM endpoints WHERE enabled = 0").await,
        1
    );
    assert_eq!(
        scalar(
            pool,
            "SELECT COUNT(*) FROM endpoints WHERE secret LIKE 'sealed:v1:%'"
        )
        .await,
        3
    );
    let attempts = scalar(pool, "SELECT COUNT(*) FROM attempts").await;
    source.close().await;

    let (report, progress) = copy(&sqlite_url, pg.url(), &options(now, false)).await;
    let report = report.unwrap_or_else(|e| panic!("copied: {e}\n{progress}"));
    assert_eq!(report.tables.len(), 13, "{report:?}");
    let rows = |table: &str| {
        report
            .tables
            .iter()
            .find(|r| r.table == table)
            .map(|r| r.rows)
            .expect("table")
    };
    assert_eq!(rows("attempts"), attempts as u64);
    assert_eq!(rows("endpoints"), 3);
    assert_eq!(report.sealed_secrets, 3);
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations")
        .count();
    assert_eq!(
        report.target_migrated, migrations,
        "a fresh database is migrated"
    );
    let timers = rows("timers");
    assert!(
        progress.contains(&format!("timers: {timers} of {timers} rows"))
            && progress.contains("verified timers")
            && progress.contains("committed"),
        "{progress}"
    );

    // Two nodes on the copy, on a clock where the old one stopped. The advance below
    // waits one second (real time) in all for work another node holds; after that it
    // lives through each such lease to its end, as it would for a dead node. On a
    // loaded machine a live node's driver can lag that long, and a timer it then fires
    // a lease or two late would meet its misfire policy. This test is about the move:
    // lateness never turns a fire into a skip here.
    let on_copy = || {
        let mut c = config_on(pg.url());
        c.schedule.misfire_after = chrono::TimeDelta::days(3650);
        c
    };
    let clock = ManualClock::shared(now);
    let a = App::start(on_copy(), Arc::new(clock.clone()))
        .await
        .expect("node a");
    let b = App::start(on_copy(), Arc::new(clock.clone()))
        .await
        .expect("node b");
    let timelines_after = timelines(&client, &a.url()).await;
    for (entity, was) in &timelines_before {
        assert_eq!(
            &timelines_after[entity], was,
            "the timeline of {entity} reads as before"
        );
    }

    flaky.set_default(Answer::status(200));
    let flaky_seen_before = flaky.received().len();
    let r = client
        .post(format!("{}/admin/clock/advance", b.url()))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(json!({"to": "2030-03-06T12:00:00Z"}).to_string())
        .send()
        .await
        .expect("advance");
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);

    let pg_store = support::pool(pg.url()).await;
    let pool = &pg_store;
    // Every timer pending at the copy fired, once.
    for (id, (kind, entity, event_type)) in &before.pending_timers {
        let (state, events): (String, i64) = sqlx::query_as(
            "SELECT state, (SELECT COUNT(*) FROM events e WHERE e.timer_id = t.id) FROM timers t WHERE id = $1",
        )
        .bind(*id)
        .fetch_one(pool)
        .await
        .expect("timer");
        assert_eq!(
            (state.as_str(), events),
            ("fired", 1),
            "timer {id}: {event_type} of {kind} {entity}"
        );
    }
    assert_eq!(
        scalar(
            pool,
            "SELECT COUNT(*) FROM events WHERE scheduled_at IS NOT NULL"
        )
        .await,
        scalar(
            pool,
            "SELECT COUNT(*) FROM (SELECT DISTINCT type, entity_kind, entity_id, scheduled_at FROM events WHERE scheduled_at IS NOT NULL) d"
        )
        .await,
        "no moment fired twice"
    );
    let first_new_seq: i64 =
        sqlx::query_scalar("SELECT MIN(seq) FROM events WHERE created_at > $1")
            .bind(now.timestamp_millis())
            .fetch_one(pool)
            .await
            .expect("seq");
    assert!(
        first_new_seq > before.max_event_seq,
        "new events are numbered after the copied ones: {first_new_seq} after {}",
        before.max_event_seq
    );

    // Every delivery pending at the copy arrived, under its original webhook-id and
    // signed with the sealed secret the copy carried over.
    let pending: BTreeSet<String> = before
        .pending_deliveries
        .iter()
        .map(|(event, _)| event.clone())
        .collect();
    let arrived = eventually("every pending delivery arrives", || async {
        let got: Vec<_> = flaky.received()[flaky_seen_before..].to_vec();
        let ids: BTreeSet<String> = got.iter().map(|r| r.header("webhook-id")).collect();
        pending.is_subset(&ids).then_some(got)
    })
    .await;
    let wh = standardwebhooks::Webhook::new(&endpoints.flaky_secret).expect("secret");
    for r in arrived
        .iter()
        .filter(|r| pending.contains(&r.header("webhook-id")))
    {
        let id = r.header("webhook-id");
        let ts: i64 = r.header("webhook-timestamp").parse().expect("timestamp");
        let expected = wh.sign(&id, ts, &r.body).expect("sign");
        assert!(
            r.header("webhook-signature")
                .split(' ')
                .any(|s| s == expected),
            "delivery of {id} is signed with the endpoint's secret"
        );
        assert_eq!(r.json()["id"], json!(id), "the body names the same event");
    }
    for event in &pending {
        let status: String = sqlx::query_scalar(
            "SELECT status FROM deliveries WHERE event_id = $1 AND endpoint_id = $2",
        )
        .bind(event.clone())
        .bind(endpoints.flaky.clone())
        .fetch_one(pool)
        .await
        .expect("delivery");
        assert_eq!(status, "succeeded", "delivery of {event}");
    }
    pg_store.close().await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A small store (no failing endpoint): the population with every receiver answering.
async fn small_sqlite_store() -> (TestApp, Receiver, Receiver) {
    let ok = Receiver::start().await;
    let flaky = Receiver::start().await;
    let app = TestApp::spawn_config(Backend::Sqlite, configure)
        .await
        .expect("sqlite");
    populate(&app, &ok, &flaky).await;
    (app, ok, flaky)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_or_non_empty_target_is_refused_and_a_killed_copy_runs_again() {
    let Some(pg) = StoreHandle::new(Backend::Postgres).await else {
        return;
    };
    let (mut app, _ok, _flaky) = small_sqlite_store().await;
    let sqlite_url = app.store.url().to_string();
    let now = app.clock.now_utc();

    // A service runs on the source.
    let (code, _, stderr) = copy_cli(&sqlite_url, pg.url(), &[]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("running on the source"),
        "{stderr}"
    );
    let (result, _) = copy(&sqlite_url, pg.url(), &options(now, false)).await;
    assert!(
        matches!(
            result,
            Err(CopyError::Held {
                side: Side::Source,
                ..
            })
        ),
        "{result:?}"
    );
    app.app.take().expect("running").shutdown().await;

    // A node runs on the target.
    let clock = ManualClock::shared(now);
    let node = App::start(config_on(pg.url()), Arc::new(clock.clone()))
        .await
        .expect("node");
    let (result, _) = copy(&sqlite_url, pg.url(), &options(now, false)).await;
    match result {
        Err(
            e @ CopyError::Held {
                side: Side::Target, ..
            },
        ) => {
            assert!(e.to_string().contains(node.node_id()), "{e}");
            assert!(e.is_refusal());
        }
        other => panic!("refused: {other:?}"),
    }
    node.shutdown().await;

    // Stopped; but the node planned its next digest there, so the target is not
    // empty: refused without the flag.
    let (code, _, stderr) = copy_cli(&sqlite_url, pg.url(), &[]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("not empty (timers 1 rows)") && stderr.contains("--replace-target"),
        "{stderr}"
    );
    let (code, stdout, stderr) = copy_cli(&sqlite_url, pg.url(), &["--replace-target"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("copied and verified 13 tables")
            && stdout.contains("3 endpoint secret(s) are sealed"),
        "{stdout}"
    );
    assert!(
        stderr.contains("deleted 1 rows the target held")
            && stderr.contains("copy-store: verified events:"),
        "{stderr}"
    );
    let (result, _) = copy(&sqlite_url, pg.url(), &options(now, false)).await;
    assert!(
        matches!(&result, Err(e @ CopyError::TargetNotEmpty(_)) if e.is_refusal()),
        "{result:?}"
    );

    // A copy killed half-way leaves an empty target, and runs again without a flag.
    let source = support::pool(&sqlite_url).await;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)
         INSERT INTO timers (entity_kind, entity_id, rule, event_type, anchor_at, fire_at, state, reason, created_at, updated_at)
         SELECT 'item', 'bulk-' || i, 'item.expire', 'item.expire', 0, 0, 'cancelled', 'bulk', 0, 0 FROM n",
    )
    .execute(&source)
    .await
    .expect("bulk timers");
    source.close().await;
    let Some(fresh) = StoreHandle::new(Backend::Postgres).await else {
        return;
    };
    let cwd = tempfile::tempdir().expect("dir");
    let mut child = tokio::process::Command::new(BIN)
        .args(["copy-store", "--from", &sqlite_url, "--to", fresh.url()])
        .current_dir(cwd.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("duehook runs");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    // The events are done and the 50,000 timers are being copied.
    while let Some(line) = lines.next_line().await.expect("stderr line") {
        let done = line.starts_with("copy-store: events:");
        seen.push(line);
        if done {
            break;
        }
    }
    child.start_kill().expect("kill");
    let status = child.wait().await.expect("reaped");
    assert!(
        !status.success(),
        "killed before it finished: {status}\n{}",
        seen.join("\n")
    );
    let target = support::pool(fresh.url()).await;
    for table in ["contacts", "events", "timers", "endpoints"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&target)
                .await
                .expect("count");
        assert_eq!(n, 0, "{table} holds nothing of the interrupted copy");
    }
    target.close().await;
    let (result, progress) = copy(&sqlite_url, fresh.url(), &options(now, false)).await;
    let report = result.unwrap_or_else(|e| panic!("copied again: {e}\n{progress}"));
    let timers = report
        .tables
        .iter()
        .find(|r| r.table == "timers")
        .expect("timers");
    assert!(timers.rows > 50_000, "{timers:?}");
    assert!(progress.contains("verified timers"), "{progress}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_restores_to_sqlite_with_equal_checksums() {
    let Some(pg) = StoreHandle::new(Backend::Postgres).await else {
        return;
    };
    let (mut app, _ok, _flaky) = small_sqlite_store().await;
    let client = reqwest::Client::new();
    let timelines_before = timelines(&client, &app.app().url()).await;
    let now = app.clock.now_utc();
    app.app.take().expect("running").shutdown().await;
    let sqlite_url = app.store.url().to_string();

    let (there, _) = copy(&sqlite_url, pg.url(), &options(now, false)).await;
    let there = there.expect("to PostgreSQL");
    let restored = StoreHandle::new(Backend::Sqlite).await.expect("sqlite");
    let (code, stdout, stderr) = copy_cli(pg.url(), restored.url(), &[]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // The command prints each table's rows and checksum: the same as the first copy's.
    for table in &there.tables {
        let line = format!("{:<14} {:>10}  {}", table.table, table.rows, table.checksum);
        assert!(stdout.contains(&line), "{line} in\n{stdout}");
    }
    // And the restored store serves the same story.
    let clock = ManualClock::shared(now);
    let back = App::start(config_on(restored.url()), Arc::new(clock.clone()))
        .await
        .expect("restored app");
    assert_eq!(timelines(&client, &back.url()).await, timelines_before);
    back.shutdown().await;
}
