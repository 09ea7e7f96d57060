//! The crash suite: the real `duehook` binary, killed with SIGKILL at random moments
//! while its manual clock moves and webhooks go out, restarted on the same store and
//! port each time. At the end every timer that should fire fired exactly once, every
//! acknowledged write is in the store, and every event reached the receiver at least
//! once, re-sends carrying the same `webhook-id`. A second endpoint orders its
//! deliveries (`ordering: endpoint`): whatever the kills interrupt, none of its webhooks
//! goes out before every earlier one was answered with success.
//!
//! `DUEHOOK_CRASH_SEED=<n>` replays a run; `DUEHOOK_CRASH_KILLS=<n>` (default 20) sets
//! how many kills a run survives (e.g. 200 for a soak).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::Row;
use support::process::Process;
use support::receiver::{Answer, Receiver};
use support::{Backend, StoreHandle, t};

const TOKEN: &str = "crash-test-token-0123456789";
const START: &str = "2030-03-01T08:00:00Z";
const ORDERS: usize = 16;
/// Orders `0..CHECKED_IN` are checked in at once: none of their reminders may fire.
const CHECKED_IN: usize = 4;

/// xorshift64*: small, seedable, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One `duehook serve` at a time on a manual clock, always on the same port and store.
struct Service(Process);

impl std::ops::Deref for Service {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl Service {
    fn new(store_url: &str) -> Service {
        Service(Process::new(
            &format!(
                "[store]\nurl = \"{store_url}\"\nmax_connections = 4\n\n[clock]\nmode = \"manual\"\nstart = \"{START}\"\n\n\
                 [auth]\ntokens = [\"{TOKEN}\"]\n\n[delivery]\nallow_private_destinations = true\n"
            ),
            Duration::from_secs(120),
        ))
    }

    /// Starts the service with its manual clock at `clock` and waits until it is ready.
    async fn start(&mut self, clock: DateTime<Utc>) {
        self.0
            .start(&[
                ("DUEHOOK_CLOCK_MODE", "manual".to_string()),
                ("DUEHOOK_CLOCK_START", clock.to_rfc3339()),
            ])
            .await;
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(&mut self) {
        self.0.kill();
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn clock(&self) -> Option<DateTime<Utc>> {
        let res = self
            .client
            .get(self.url("/admin/clock"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let body: Value = serde_json::from_str(&res.text().await.ok()?).ok()?;
        body["now"].as_str().map(t)
    }

    /// `POST /admin/clock/advance {to}`, which must succeed (answers the new now).
    async fn advance_to(&self, to: DateTime<Utc>) -> DateTime<Utc> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/admin/clock/advance",
                Some(json!({"to": to})),
            )
            .await;
        assert_eq!(status, 200, "advance: {body}\n{}", self.log());
        t(body["now"].as_str().expect("now"))
    }
}

/// What the store says at the end.
struct Stored {
    /// (timer id, entity id, event type, state, event id)
    timers: Vec<(i64, String, String, String, Option<String>)>,
    /// event id → (type, entity id, timer id, created at in ms)
    events: BTreeMap<String, (String, String, Option<i64>, i64)>,
    /// (event id, endpoint id, status), in the order the deliveries were created
    deliveries: Vec<(String, String, String)>,
}

async fn read_store(url: &str) -> Stored {
    sqlx::any::install_default_drivers();
    let url = if url.starts_with("sqlite:") {
        format!("{url}?mode=ro")
    } else {
        url.to_string()
    };
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("open the store");
    let timers = sqlx::query(
        "SELECT id, entity_id, event_type, state, event_id FROM timers WHERE entity_kind = 'order' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("timers")
    .iter()
    .map(|r| {
        (
            r.get::<i64, _>("id"),
            r.get::<String, _>("entity_id"),
            r.get::<String, _>("event_type"),
            r.get::<String, _>("state"),
            r.get::<Option<String>, _>("event_id"),
        )
    })
    .collect();
    let events =
        sqlx::query("SELECT id, type, entity_id, timer_id, created_at FROM events ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("events")
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>("id"),
                    (
                        r.get::<String, _>("type"),
                        r.get::<String, _>("entity_id"),
                        r.get::<Option<i64>, _>("timer_id"),
                        r.get::<i64, _>("created_at"),
                    ),
                )
            })
            .collect();
    let deliveries =
        sqlx::query("SELECT event_id, endpoint_id, status FROM deliveries ORDER BY seq")
            .fetch_all(&pool)
            .await
            .expect("deliveries")
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>("event_id"),
                    r.get::<String, _>("endpoint_id"),
                    r.get::<String, _>("status"),
                )
            })
            .collect();
    pool.close().await;
    Stored {
        timers,
        events,
        deliveries,
    }
}

async fn crash_suite(backend: Backend) {
    let Some(store) = StoreHandle::new(backend).await else {
        return;
    };
    let seed: u64 = std::env::var("DUEHOOK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1;
    let kills: usize = std::env::var("DUEHOOK_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("crash suite ({backend:?}): DUEHOOK_CRASH_SEED={seed} DUEHOOK_CRASH_KILLS={kills}");
    let mut rng = Rng(seed);

    let rx = Receiver::start().await;
    // A flaky receiver: about one answer in seven is a 500 (retried later).
    rx.script(
        (0..400)
            .map(|_| Answer::status(if rng.below(7) == 0 { 500 } else { 200 }))
            .collect(),
    );
    let mut svc = Service::new(store.url());
    let start = t(START);
    svc.start(start).await;

    // Load: an endpoint for everything, orders with various due dates, some events.
    let (s, ep) = svc
        .call(
            reqwest::Method::POST,
            "/v1/endpoints",
            Some(json!({"name": "all", "url": rx.url("/hook"), "topics": ["*"]})),
        )
        .await;
    assert_eq!(s, 201, "{ep}");
    let all_id = ep["id"].as_str().expect("id").to_string();
    // The ordered endpoint: the posted bookings, first in first out, on a flaky receiver.
    let ordered_rx = Receiver::start().await;
    ordered_rx.script(
        (0..400)
            .map(|_| Answer::status(if rng.below(5) == 0 { 500 } else { 200 }))
            .collect(),
    );
    let (s, ordered) = svc
        .call(
            reqwest::Method::POST,
            "/v1/endpoints",
            Some(
                json!({"name": "in order", "url": ordered_rx.url("/ordered"),
                        "topics": ["booking.*"], "ordering": "endpoint"}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{ordered}");
    let ordered_id = ordered["id"].as_str().expect("id").to_string();
    let mut last_due = start;
    for i in 0..ORDERS {
        // Due 26 h to ~4 days ahead, to the minute: every reminder is still ahead.
        let due = start + TimeDelta::minutes(26 * 60 + rng.below(70 * 60) as i64);
        last_due = last_due.max(due);
        let id = format!("o-{i}");
        let (s, b) = svc
            .call(
                reqwest::Method::PUT,
                &format!("/v1/orders/{id}"),
                Some(json!({"contact_id": "c", "item_ids": ["a"], "due_at": due})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let (s, b) = svc
            .call(
                reqwest::Method::POST,
                &format!("/v1/orders/{id}/checkout"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{b}");
        if i < CHECKED_IN {
            let (s, b) = svc
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/orders/{id}/checkin"),
                    Some(json!({})),
                )
                .await;
            assert_eq!(s, 200, "{b}");
        }
    }

    // The loop: an advance and a write in flight, a SIGKILL at a random moment, a restart.
    let mut known = start;
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut survived = 0;
    let mut mid_advance = 0;
    let mut n = 0u64;
    // Steps spread the kills over the whole span of the reminders (due_in_1_day to
    // overdue_1_day), however many kills are asked for.
    let span = (last_due + TimeDelta::days(1) - start).num_minutes();
    let max_step = (2 * span / kills.max(1) as i64).max(60);
    while survived < kills {
        let step = TimeDelta::minutes(1 + rng.below(max_step as u64) as i64);
        let to = known + step;
        let base = svc.url("");
        let client = svc.client.clone();
        let advance = tokio::spawn({
            let (client, base) = (client.clone(), base.clone());
            async move {
                let r = client
                    .post(format!("{base}/admin/clock/advance"))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(json!({"to": to}).to_string())
                    .send()
                    .await
                    .ok()?;
                if !r.status().is_success() {
                    return Some(Err(r.text().await.unwrap_or_default()));
                }
                let body: Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
                body["now"].as_str().map(|s| Ok(t(s)))
            }
        });
        let writes = tokio::spawn({
            let n0 = n;
            async move {
                let mut ok = Vec::new();
                for k in 0..5 {
                    let r = client
                        .post(format!("{base}/v1/events"))
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/json")
                        .body(json!({"type": "booking.create", "data": {"id": format!("b-{n0}-{k}")}}).to_string())
                        .send()
                        .await;
                    let Ok(r) = r else { break };
                    if r.status().as_u16() != 201 {
                        continue;
                    }
                    let Ok(text) = r.text().await else { break };
                    let Ok(body) = serde_json::from_str::<Value>(&text) else {
                        break;
                    };
                    if let Some(id) = body["id"].as_str() {
                        ok.push(id.to_string());
                    }
                }
                ok
            }
        });
        n += 1;
        // Half the kills come early (mid-advance, mid-write), half later: after a crash
        // an advance first waits up to 1 s for work the dead process still holds, and
        // the clock must get somewhere between kills.
        let wait = if rng.below(2) == 0 {
            rng.below(300)
        } else {
            300 + rng.below(2700)
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if let Some(now) = svc.clock().await {
            known = known.max(now);
        }
        svc.kill();
        survived += 1;
        match advance.await.expect("advance task") {
            Some(Ok(now)) => known = known.max(now),
            Some(Err(e)) => panic!("advance failed before the kill: {e}\n{}", svc.log()),
            None => mid_advance += 1,
        }
        acknowledged.extend(writes.await.expect("writes task"));
        svc.start(known).await;
    }

    let loop_end = known;
    // The end: well past every due date, every retry and every lease.
    let end = svc.advance_to(last_due + TimeDelta::days(3)).await;
    let end = svc.advance_to(end + TimeDelta::days(2)).await;
    eprintln!("clock at the end: {end}");
    svc.kill();

    let stored = read_store(store.url()).await;
    let received = rx.received();
    let mut sends: BTreeMap<String, usize> = BTreeMap::new();
    for r in &received {
        let id = r.header("webhook-id");
        assert_eq!(
            r.json()["id"].as_str(),
            Some(id.as_str()),
            "webhook-id names the event in the body"
        );
        *sends.entry(id).or_default() += 1;
    }

    // Timers: 4 per checked-out order never checked in, each fired once, with its event.
    let mut lost = Vec::new();
    let mut doubled = Vec::new();
    let mut fired_per_key: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (id, entity, ty, state, event) in &stored.timers {
        if state != "fired" {
            continue;
        }
        *fired_per_key
            .entry((entity.clone(), ty.clone()))
            .or_default() += 1;
        let ok = event
            .as_ref()
            .and_then(|e| stored.events.get(e))
            .is_some_and(|(_, _, timer, _)| *timer == Some(*id));
        assert!(ok, "timer {id} fired with its event row");
    }
    for i in 0..ORDERS {
        for ty in [
            "order.due_in_1_day",
            "order.due_in_1_hour",
            "order.overdue_1_hour",
            "order.overdue_1_day",
        ] {
            let key = (format!("o-{i}"), ty.to_string());
            let got = fired_per_key.get(&key).copied().unwrap_or(0);
            let want = usize::from(i >= CHECKED_IN);
            if got < want {
                lost.push(format!("timer {key:?}"));
            }
            if got > want {
                doubled.push(format!("timer {key:?} fired {got}x"));
            }
        }
    }
    let mut per_timer: BTreeMap<i64, usize> = BTreeMap::new();
    let mut per_reminder: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut fired_in_loop = 0;
    for (ty, entity, timer, created) in stored.events.values() {
        if let Some(timer) = timer {
            fired_in_loop += usize::from(*created <= loop_end.timestamp_millis());
            *per_timer.entry(*timer).or_default() += 1;
            *per_reminder
                .entry((entity.clone(), ty.clone()))
                .or_default() += 1;
        }
    }
    for (k, n) in per_timer.iter().filter(|(_, n)| **n > 1) {
        doubled.push(format!("timer {k} has {n} events"));
    }
    for (k, n) in per_reminder.iter().filter(|(_, n)| **n > 1) {
        doubled.push(format!("reminder {k:?} has {n} events"));
    }
    let reminders = per_timer.len();
    assert_eq!(
        reminders,
        4 * (ORDERS - CHECKED_IN),
        "4 reminders per checked-out order never checked in"
    );
    // Acknowledged writes are stored.
    for id in &acknowledged {
        if !stored.events.contains_key(id) {
            lost.push(format!("acknowledged event {id} not stored"));
        }
    }
    // One delivery per event and endpoint, succeeded; every event reached the receiver.
    let mut per_event: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (event, endpoint, status) in &stored.deliveries {
        *per_event
            .entry((event.as_str(), endpoint.as_str()))
            .or_default() += 1;
        assert_eq!(status, "succeeded", "delivery of {event} to {endpoint}");
    }
    for (id, (ty, ..)) in &stored.events {
        let mut endpoints = vec![all_id.as_str()];
        if ty.starts_with("booking.") {
            endpoints.push(ordered_id.as_str());
        }
        for ep in endpoints {
            match per_event.get(&(id.as_str(), ep)) {
                None => lost.push(format!("event {id} has no delivery to {ep}")),
                Some(n) if *n > 1 => doubled.push(format!("event {id} has {n} deliveries to {ep}")),
                _ => {}
            }
        }
        if !sends.contains_key(id) {
            lost.push(format!("event {id} never reached the receiver"));
        }
    }
    // The ordered endpoint's webhooks went out one after another in the order their
    // deliveries were created, across every kill and restart.
    let in_order: Vec<(String, String)> = stored
        .deliveries
        .iter()
        .filter(|(_, ep, _)| *ep == ordered_id)
        .map(|(event, ..)| (event.clone(), "*".to_string()))
        .collect();
    let ordered_log = ordered_rx.received();
    crate::ordering::assert_in_order(&ordered_log, &in_order, |key| key.to_string());
    let ordered_sent: BTreeSet<String> =
        ordered_log.iter().map(|r| r.header("webhook-id")).collect();
    for (event, _) in &in_order {
        if !ordered_sent.contains(event) {
            lost.push(format!("event {event} never reached the ordered receiver"));
        }
    }
    for id in sends.keys() {
        assert!(
            stored.events.contains_key(id),
            "the receiver got webhook-id {id}, which is no event"
        );
    }
    let resent = sends.values().filter(|n| **n > 1).count();
    eprintln!(
        "crash suite ({backend:?}, seed {seed}): kills survived {survived} ({mid_advance} with an advance in flight), \
         events checked {} ({reminders} reminders, {fired_in_loop} of them fired while the kills went on; \
         {} acknowledged writes), webhooks received {} ({resent} events sent more than once), \
         {} in order at the ordered endpoint ({} attempts), lost {}, doubled {}",
        stored.events.len(),
        acknowledged.len(),
        received.len(),
        in_order.len(),
        ordered_log.len(),
        lost.len(),
        doubled.len()
    );
    assert!(
        lost.is_empty() && doubled.is_empty(),
        "seed {seed}: lost {lost:?}, doubled {doubled:?}"
    );
    drop(svc);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_random_kills() {
    crash_suite(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_random_kills() {
    crash_suite(Backend::Postgres).await;
}
