//! Fault suites on the in-process app with a manual clock: crashes that leave claims
//! behind, receiver faults not covered by `tests/it/delivery.rs` (connection resets, a
//! receiver down for hours, a dead endpoint beside a healthy one), a full disk under
//! SQLite, PostgreSQL connections cut while webhooks go out, and a clock stepped back
//! and forth while deliveries are pending.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::receiver::{Answer, Receiver, eventually};
use support::{Backend, StoreHandle, TestApp, t};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn create_endpoint(app: &TestApp, body: Value) -> String {
    let r = app.post("/v1/endpoints", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().expect("id").to_string()
}

async fn emit(app: &TestApp, event_type: &str, data: Value) -> String {
    let r = app
        .post(
            "/v1/events",
            Some(json!({"type": event_type, "data": data})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().expect("event id").to_string()
}

/// Drops every task of the running app where it stands (a crash) and starts a new one
/// on the same store and clock.
async fn crash_and_restart(app: &mut TestApp) {
    if let Some(a) = app.app.take() {
        a.abort();
    }
    app.app = Some(
        duehook::App::start(app.config.clone(), Arc::new(app.clock.clone()))
            .await
            .expect("restart after a crash"),
    );
}

async fn scalar(app: &TestApp, sql: &'static str) -> i64 {
    app.scalar(sql, &[]).await
}

/// A bare HTTP/1.1 receiver on a raw socket: resets the first `reset_first` connections
/// as soon as it accepts them, then answers 200 and records each `webhook-id`.
struct RawReceiver {
    ids: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawReceiver {
    async fn start(port: u16, reset_first: usize) -> RawReceiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver's port");
        let ids = Arc::new(Mutex::new(Vec::new()));
        let seen = ids.clone();
        let task = tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted += 1;
                if accepted <= reset_first {
                    // RST instead of FIN: the sender sees a connection reset. (Deprecated
                    // because a lingering close blocks; a zero linger closes at once.)
                    #[allow(deprecated)]
                    let _ = stream.set_linger(Some(Duration::ZERO));
                    drop(stream);
                    continue;
                }
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, length) = loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (i + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let id = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("webhook-id")
                                .then(|| v.trim().to_string())
                        })
                        .unwrap_or_default();
                    seen.lock().expect("lock").push(id);
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        RawReceiver { ids, task }
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().expect("lock").clone()
    }
}

/// A port nothing listens on (a receiver that is down: connection refused).
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Each delivery of `endpoint`: (event id, status, attempts as (started_at, status code,
/// error kind)), in the order the deliveries were made.
type Attempts = Vec<(DateTime<Utc>, Option<i64>, Option<String>)>;
async fn deliveries_of(app: &TestApp, endpoint: &str) -> Vec<(String, String, Attempts)> {
    let rows = app
        .rows(
            "SELECT id, event_id, status FROM deliveries WHERE endpoint_id = $1 ORDER BY seq",
            &[endpoint.into()],
        )
        .await;
    let text = |r: &support::ProbeRow, c: &str| r[c].as_str().expect("text").to_string();
    let mut out = Vec::new();
    for r in rows {
        let attempts = app
            .rows(
                "SELECT started_at, status_code, error_kind FROM attempts WHERE delivery_id = $1 ORDER BY number",
                &[text(&r, "id").into()],
            )
            .await
            .iter()
            .map(|a| {
                (
                    DateTime::from_timestamp_millis(a["started_at"].as_i64().expect("ms"))
                        .expect("instant"),
                    a["status_code"].as_i64(),
                    a["error_kind"].as_str().map(str::to_string),
                )
            })
            .collect();
        out.push((text(&r, "event_id"), text(&r, "status"), attempts));
    }
    out
}

async fn event_created(app: &TestApp, id: &str) -> DateTime<Utc> {
    app.app()
        .probe()
        .event(id)
        .await
        .expect("event")
        .expect("stored")
        .created
}

/// A receiver that accepts the connection and resets it: retried on the schedule with
/// the same webhook-id, then delivered.
async fn connection_resets_are_retried_with_the_same_id(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let port = dead_port();
    let rx = RawReceiver::start(port, 2).await;
    let ep = create_endpoint(
        &app,
        json!({"name": "reset", "url": format!("http://127.0.0.1:{port}/"), "topics": ["*"],
               "retry": {"schedule": "1s,1s,1s"}}),
    )
    .await;
    let event = emit(&app, "booking.create", json!({"id": "b-1"})).await;
    app.advance(10).await;
    let d = deliveries_of(&app, &ep).await;
    assert_eq!(d.len(), 1);
    let (ev, status, attempts) = &d[0];
    assert_eq!(
        (ev.as_str(), status.as_str()),
        (event.as_str(), "succeeded"),
        "{attempts:?}"
    );
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for a in &attempts[..2] {
        assert!(
            a.1.is_none() && a.2.is_some(),
            "a reset is an error without a status: {a:?}"
        );
    }
    assert_eq!(attempts[2].1, Some(200));
    let gap = attempts[1].0 - attempts[0].0;
    assert!(
        gap >= TimeDelta::milliseconds(800) && gap <= TimeDelta::milliseconds(1200),
        "retried at its own instant, 1 s ± 20 % later: {gap}"
    );
    assert_eq!(
        rx.ids(),
        [event],
        "the one request that got through carried the event id"
    );
}

/// One receiver refuses connections for three hours of clock time, another holds every
/// request past its timeout; a healthy receiver beside them gets every webhook at the
/// instant of its event. The dead one is retried on the schedule and gets everything
/// at the retry instant after it comes back, with the same webhook-ids.
async fn a_receiver_down_for_hours_gets_everything_back_and_never_delays_a_healthy_one(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn_config(backend, |c| {
        // The breaker would hold retries back past their instants; this test is about
        // the retry schedule itself.
        c.delivery.circuit_breaker_failures = 1_000;
    })
    .await
    else {
        return;
    };
    let port = dead_port();
    let slow = Receiver::start().await;
    slow.set_default(Answer::status(200).held());
    let healthy = Receiver::start().await;
    let dead = create_endpoint(
        &app,
        json!({"name": "dead", "url": format!("http://127.0.0.1:{port}/"), "topics": ["*"]}),
    )
    .await;
    let slow_ep = create_endpoint(
        &app,
        json!({"name": "slow", "url": slow.url("/"), "topics": ["*"], "timeout_ms": 300,
               "retry": {"schedule": "none"}}),
    )
    .await;
    let ok = create_endpoint(
        &app,
        json!({"name": "healthy", "url": healthy.url("/"), "topics": ["*"]}),
    )
    .await;
    let mut events = Vec::new();
    for hour in 0..3 {
        events.push(emit(&app, "booking.create", json!({"id": format!("b-{hour}")})).await);
        app.advance(3600).await;
    }
    // The healthy receiver got each webhook at its event's instant.
    for (ev, status, attempts) in deliveries_of(&app, &ok).await {
        assert_eq!(status, "succeeded");
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].0, event_created(&app, &ev).await, "not delayed");
    }
    let got: BTreeSet<String> = healthy
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(got, events.iter().cloned().collect());
    for (_, status, attempts) in deliveries_of(&app, &slow_ep).await {
        assert_eq!((status.as_str(), attempts.len()), ("failed", 1));
        assert_eq!(attempts[0].2.as_deref(), Some("timeout"));
    }
    slow.release();

    // Three hours of refused connections, retried on the schedule (each delay ±20 %).
    let schedule = [5, 300, 1800, 7200, 18_000];
    let mut next_due = Vec::new();
    for (ev, status, attempts) in deliveries_of(&app, &dead).await {
        assert_eq!(status, "pending");
        assert_eq!(attempts[0].0, event_created(&app, &ev).await);
        for (i, w) in attempts.windows(2).enumerate() {
            let gap = (w[1].0 - w[0].0).num_milliseconds() as f64 / 1000.0;
            let d = f64::from(schedule[i]);
            assert!(
                gap >= d * 0.8 - 0.001 && gap <= d * 1.2 + 0.001,
                "retry {i}: {gap}s, not {d}s ±20%"
            );
        }
        assert!(
            attempts
                .iter()
                .all(|a| a.1.is_none() && a.2.as_deref() == Some("connect")),
            "{attempts:?}"
        );
        let d = app
            .get(&format!("/v1/deliveries?endpoint_id={dead}&limit=100"))
            .await
            .body;
        let next = d["deliveries"]
            .as_array()
            .expect("list")
            .iter()
            .find(|x| x["event_id"] == json!(ev))
            .and_then(|x| x["next_attempt_at"].as_str())
            .map(t)
            .expect("a next attempt");
        next_due.push((ev, next));
    }
    assert_eq!(next_due.len(), 3);
    let rx = RawReceiver::start(port, 0).await;
    app.advance(24 * 3600).await;
    for (ev, status, attempts) in deliveries_of(&app, &dead).await {
        assert_eq!(status, "succeeded", "{ev}: {attempts:?}");
        let last = attempts.last().expect("attempts");
        let due = next_due.iter().find(|(e, _)| *e == ev).expect("due").1;
        assert_eq!(
            (last.0, last.1),
            (due, Some(200)),
            "sent at the planned retry instant"
        );
    }
    let mut got = rx.ids();
    got.sort();
    let mut want = events.clone();
    want.sort();
    assert_eq!(got, want, "each event once, with its own webhook-id");
}

/// A crash while a webhook is in flight leaves its claim behind: on SQLite the restart
/// releases it; on PostgreSQL it lasts until the dead node is taken over or the lease
/// (the endpoint's timeout plus the cluster lease) lapses. An advance of the manual
/// clock must live through that and re-send it, not wait forever for a send nobody is
/// making.
async fn advance_after_a_crash_mid_send(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.script(vec![Answer::status(200).held()]);
    create_endpoint(
        &app,
        json!({"name": "r", "url": rx.url("/"), "topics": ["*"]}),
    )
    .await;
    let event = emit(&app, "booking.create", json!({"id": "b-1"})).await;
    rx.wait_for(1).await;
    crash_and_restart(&mut app).await;
    app.advance(600).await;
    let got = rx.wait_for(2).await;
    assert!(got.iter().all(|r| r.header("webhook-id") == event));
    // The receiver counts a request before it answers; the record follows the answer.
    let status = eventually("the re-send recorded", || async {
        let status: Vec<String> = app
            .rows("SELECT status FROM deliveries", &[])
            .await
            .iter()
            .map(|r| r["status"].as_str().expect("status").to_string())
            .collect();
        (status != ["pending"]).then_some(status)
    })
    .await;
    assert_eq!(status, ["succeeded"]);
    rx.release();
}

/// A crash after the driver claimed a timer due within its lease leaves the claim
/// behind (on PostgreSQL): an advance must take the timer over when the lease lapses
/// and fire it once. On SQLite nothing is left behind; the timer fires once all the same.
async fn advance_after_a_crash_with_a_claimed_timer(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app
        .put(
            "/v1/items/cam-1",
            json!({"name": "Camera", "expires_at": "2030-03-01T08:00:10Z"}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    // PostgreSQL: the claim is written with its lease. SQLite (one process per file)
    // claims by reading: the timer is in the driver's wheel.
    eventually("the driver claims the timer", || async {
        let held = match backend {
            Backend::Postgres => {
                scalar(
                    &app,
                    "SELECT COUNT(*) FROM timers WHERE claimed_by IS NOT NULL",
                )
                .await
            }
            Backend::Sqlite => app.admin_get("/admin/schedule/stats").await.body["in_wheel"]
                .as_i64()
                .expect("in_wheel"),
        };
        (held == 1).then_some(())
    })
    .await;
    crash_and_restart(&mut app).await;
    app.advance(120).await;
    let fired = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "item.expire")
        .count();
    assert_eq!(fired, 1, "fired once, after the dead node's lease lapsed");
}

/// Writes `booking.create` events until one is answered; true when it was 201 (its id
/// pushed to `acked`). Any answer but 201 or 503 fails the test.
async fn try_emit(app: &TestApp, n: usize, pad: &str, acked: &mut Vec<String>) -> bool {
    let r = app
        .post(
            "/v1/events",
            Some(json!({"type": "booking.create", "data": {"id": format!("b-{n}"), "pad": pad}})),
        )
        .await;
    match r.status {
        StatusCode::CREATED => {
            acked.push(r.body["id"].as_str().expect("id").to_string());
            true
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(r.body["error"], "store_unavailable", "{}", r.body);
            false
        }
        other => panic!(
            "a write the store cannot take must be a 503, got {other}: {}",
            r.body
        ),
    }
}

/// A small tmpfs for a SQLite store, unmounted on drop.
struct SmallDisk {
    mnt: std::path::PathBuf,
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a failed test may still hold the store open.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mnt)
            .status();
    }
}

/// SQLite on a full disk: ingest answers 503 for what it cannot store (never a 2xx,
/// never a 500), nothing acknowledged is lost, and once space is freed it recovers and
/// every acknowledged event reaches its receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_answers_503_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mnt = dir.path().join("disk");
    std::fs::create_dir(&mnt).expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "skipped: cannot mount a 2 MiB tmpfs ({}), so the full-disk test did not run",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("skipped: cannot run mount ({e}), so the full-disk test did not run");
            return;
        }
    }
    let disk = SmallDisk { mnt: mnt.clone() };
    let url = format!("sqlite://{}", mnt.join("duehook.db").display());
    let store = StoreHandle::Sqlite {
        _dir: tempfile::tempdir().expect("temp dir"),
        url: url.clone(),
    };
    let config = support::test_config(&url);
    let mut app = TestApp::spawn_with(store, config).await;
    let rx = Receiver::start().await;
    create_endpoint(
        &app,
        json!({"name": "r", "url": rx.url("/"), "topics": ["*"]}),
    )
    .await;
    let pad = "x".repeat(16 * 1024);
    let mut acked = Vec::new();
    for n in 0..5 {
        assert!(try_emit(&app, n, &pad, &mut acked).await, "room at first");
    }

    // Fill the disk.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
    }
    let mut refused = 0;
    let mut n = 5;
    while refused < 5 {
        n += 1;
        assert!(n < 400, "a full disk never refused a write");
        if !try_emit(&app, n, &pad, &mut acked).await {
            refused += 1;
        }
    }
    let acked_before_freeing = acked.len();

    // Free the space: writes are taken again.
    std::fs::remove_file(&filler).expect("free the space");
    let mut back = false;
    for _ in 0..50 {
        n += 1;
        if try_emit(&app, n, &pad, &mut acked).await {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the store takes writes again once space is freed");
    app.advance(600).await;

    let stored: BTreeSet<String> = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "booking.create")
        .map(|e| e.id)
        .collect();
    let acked_set: BTreeSet<String> = acked.iter().cloned().collect();
    assert_eq!(
        stored, acked_set,
        "exactly the acknowledged writes are stored"
    );
    let got: BTreeSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert!(
        acked_set.is_subset(&got),
        "every acknowledged event reached the receiver"
    );
    eprintln!(
        "full disk: {} writes acknowledged ({} before space was freed), {refused} refused with 503, none lost",
        acked.len(),
        acked_before_freeing
    );
    if let Some(a) = app.app.take() {
        a.shutdown().await;
    }
    drop(disk);
}

/// PostgreSQL connections of this test's database are terminated while webhooks are in
/// flight: every acknowledged event still reaches the receiver, with one delivery each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_cut_while_sending_lose_no_webhook() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.script(vec![Answer::status(200).held(); 3]);
    let ep = create_endpoint(
        &app,
        json!({"name": "r", "url": rx.url("/"), "topics": ["*"]}),
    )
    .await;
    let mut acked = Vec::new();
    for n in 0..10 {
        assert!(try_emit(&app, n, "", &mut acked).await);
    }
    rx.wait_for(3).await;
    let StoreHandle::Postgres { admin_url, db, .. } = &app.store else {
        unreachable!("postgres")
    };
    let terminate = format!(
        "SELECT pg_terminate_backend(pid)::text AS t FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    );
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url)
        .await
        .expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(terminate.clone()))
        .fetch_all(&mut admin)
        .await
        .expect("terminate");
    rx.release();
    for n in 10..30 {
        if n == 20 {
            sqlx::query(sqlx::AssertSqlSafe(terminate.clone()))
                .fetch_all(&mut admin)
                .await
                .expect("terminate");
        }
        for _ in 0..20 {
            if try_emit(&app, n, "", &mut acked).await {
                break;
            }
        }
    }
    assert_eq!(
        acked.len(),
        30,
        "every write was taken, after a 503 at worst"
    );
    // Past the 6-minute lease of any send whose attempt could not be recorded.
    app.advance(900).await;
    let d = deliveries_of(&app, &ep).await;
    let mut per_event: BTreeMap<&str, usize> = BTreeMap::new();
    for (ev, status, _) in &d {
        assert_eq!(status, "succeeded", "{ev}");
        *per_event.entry(ev.as_str()).or_default() += 1;
    }
    let got: BTreeSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    for id in &acked {
        assert_eq!(per_event.get(id.as_str()), Some(&1), "one delivery of {id}");
        assert!(got.contains(id), "{id} reached the receiver");
    }
    assert_eq!(per_event.len(), acked.len());
}

/// The clock is stepped back three hours and then forward thirty while reminders and
/// failing deliveries are pending: no reminder fires twice, none is dropped (the one
/// missed during the jump fires late by its misfire policy), and every event reaches
/// the receiver once it answers, under its own webhook-id.
async fn clock_steps_with_deliveries_pending_lose_and_double_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500));
    let ep = create_endpoint(
        &app,
        json!({"name": "r", "url": rx.url("/"), "topics": ["order.*"]}),
    )
    .await;
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    app.advance_to("2030-03-02T14:00:00Z").await;
    let before = rx.received().len();
    assert!(before > 0);
    // Stepped back three hours, then time moves on for an hour: nothing due again.
    app.clock.set(t("2030-03-02T11:00:00Z"));
    app.advance(3600).await;
    let reminders =
        |evs: &[duehook::testing::Event]| evs.iter().filter(|e| e.scheduled_at.is_some()).count();
    assert_eq!(reminders(&app.events().await), 3, "nothing fired twice");
    // The receiver recovers; the clock jumps thirty hours without living through them.
    rx.set_default(Answer::status(200));
    app.clock.set(t("2030-03-03T18:00:00Z"));
    app.advance(3 * 86_400).await;

    let events = app.events().await;
    let mut kinds: Vec<&str> = events
        .iter()
        .filter(|e| e.scheduled_at.is_some())
        .map(|e| e.event_type.as_str())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "order.due_in_1_day",
            "order.due_in_1_hour",
            "order.overdue_1_day",
            "order.overdue_1_hour"
        ],
        "each reminder once"
    );
    let late = events
        .iter()
        .find(|e| e.event_type == "order.overdue_1_day")
        .expect("fired");
    assert_eq!(
        (late.scheduled_at, late.created),
        (Some(t("2030-03-03T12:00:00Z")), t("2030-03-03T18:00:00Z")),
        "missed during the jump, fired late"
    );
    let d = deliveries_of(&app, &ep).await;
    assert_eq!(d.len(), events.len(), "one delivery per event");
    let got: BTreeSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    for (ev, status, attempts) in &d {
        assert_eq!(status, "succeeded", "{ev}: {attempts:?}");
        assert!(got.contains(ev), "{ev} reached the receiver");
    }
    let ids: BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();
    assert!(got.is_subset(&ids), "re-sends carry their event's id");
}

both_backends!(
    advance_after_a_crash_mid_send,
    advance_after_a_crash_with_a_claimed_timer,
    connection_resets_are_retried_with_the_same_id,
    a_receiver_down_for_hours_gets_everything_back_and_never_delays_a_healthy_one,
    clock_steps_with_deliveries_pending_lose_and_double_nothing,
);
