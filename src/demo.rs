//! `duehook demo`: three days of an equipment-rental and self-storage business, lived
//! in about thirty seconds, for someone who has just cloned the repository.
//!
//! This module owns the demo end to end: a throw-away SQLite store in a temporary
//! directory, the service itself (started in-process with [`App::start`] on a manual
//! clock), a webhook receiver on 127.0.0.1 that checks every Standard Webhooks
//! signature with the endpoint's `whsec_` secret, the scenario (contacts, items,
//! reservations, check-outs, a unit rental with an invoice) sent through the real HTTP
//! API, the walk of the clock through the days with `POST /admin/clock/advance`, and
//! the closing summary.
//!
//! The summary compares what arrived with what *should* arrive, and the "should" is
//! computed independently of the run: from the scenario's entities (their anchors, when
//! they were created and when their rule condition stopped holding) and the configured
//! rules (offsets and misfire policies), see [`Scenario::expected`]. It is also
//! checked against the service's own record of fired timers (`GET /admin/schedule`).
//! [`Summary::ok`] is false when anything differs; `duehook demo` then exits non-zero.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::App;
use crate::clock::ManualClock;
use crate::config::{ClockMode, Config};
use crate::domain::EntityKind;
use crate::schedule::rules::{Misfire, Rule};

/// Where the demo's clock starts: Monday 7 January 2030, 08:00 UTC ("day 1").
pub fn demo_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 7, 8, 0, 0)
        .single()
        .expect("a valid instant")
}

/// Real time the demo takes per simulated day when it is not run with `--fast`.
const REAL_TIME_PER_DAY: Duration = Duration::from_secs(10);
/// How long to wait (real time) at the end for webhooks still on their way.
const FINAL_WAIT: Duration = Duration::from_secs(15);

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulated days to live through, from day 1 08:00 (1 to 14).
    pub days: u32,
    /// Simulated time per clock advance.
    pub step: TimeDelta,
    /// Pause (real time) after each advance; None: no pauses at all.
    pub pace: Option<Duration>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions::new(3, 3600, false)
    }
}

impl DemoOptions {
    /// `days` simulated days in steps of `step_seconds`; paced so that a simulated day
    /// takes about ten real seconds unless `fast`.
    pub fn new(days: u32, step_seconds: u32, fast: bool) -> DemoOptions {
        let step_seconds = step_seconds.max(1);
        let pace = (!fast).then(|| REAL_TIME_PER_DAY * step_seconds / 86_400);
        DemoOptions {
            days,
            step: TimeDelta::seconds(i64::from(step_seconds)),
            pace,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("invalid option: {0}")]
    Options(String),
    #[error("cannot create the demo's temporary directory or receiver: {0}")]
    Io(#[from] std::io::Error),
    #[error("the service did not start: {0}")]
    Start(#[from] crate::StartError),
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what} answered {status}: {body}")]
    Api {
        what: String,
        status: u16,
        body: String,
    },
    #[error("configuration: key `{0}`: {1}")]
    Config(String, String),
}

/// What happened, against what the rules say should have happened.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Per event type: (expected, received).
    pub by_type: BTreeMap<String, (usize, usize)>,
    pub expected: usize,
    /// Distinct webhooks (by `webhook-id`) received.
    pub received: usize,
    /// Distinct webhooks whose signature verified.
    pub verified: usize,
    /// Webhooks received again with a `webhook-id` already seen.
    pub duplicates: usize,
    /// Time-based events the rules call for.
    pub timers_expected: usize,
    /// Timers the service reports as fired (`GET /admin/schedule?state=fired`).
    pub timers_fired: usize,
    /// Every difference found, in words; empty when all is as expected.
    pub problems: Vec<String>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<32} {:>8} {:>8}",
            "event type", "expected", "received"
        )?;
        writeln!(f, "{}", "-".repeat(50))?;
        for (ty, (expected, received)) in &self.by_type {
            let mark = if expected == received {
                ""
            } else {
                "  <-- differs"
            };
            writeln!(f, "{ty:<32} {expected:>8} {received:>8}{mark}")?;
        }
        writeln!(f, "{}", "-".repeat(50))?;
        writeln!(
            f,
            "timers fired (GET /admin/schedule): {}, time-based events expected: {}",
            self.timers_fired, self.timers_expected
        )?;
        writeln!(
            f,
            "expected per the rules: {}, received: {}, signatures verified: {}, duplicates: {}",
            self.expected, self.received, self.verified, self.duplicates
        )?;
        if self.ok() {
            write!(f, "result: OK")
        } else {
            writeln!(f, "result: MISMATCH")?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------
// The scenario: what the business does, and what follows from it per the rules.
// ---------------------------------------------------------------------------------

/// One thing the business's application does, through the ingest API, at `at`.
#[derive(Debug, Clone)]
struct Action {
    at: DateTime<Utc>,
    /// What it means, printed before it is sent.
    note: String,
    method: Method,
    path: String,
    body: Option<Value>,
    /// The immediate events this change emits (the ingest API's contract).
    emits: Vec<(&'static str, String)>,
    /// Paying an invoice: `unitRental.unmarkOverdue` for this rental follows when the
    /// rental had been marked overdue before.
    settles_rental: Option<String>,
}

/// An entity with an anchor that rules plan timers from.
#[derive(Debug, Clone)]
struct Timed {
    kind: EntityKind,
    /// The id the events carry in `data.id` (the rental for invoice rules).
    entity_id: String,
    anchor: DateTime<Utc>,
    /// When it was sent to the service (its timers were planned then).
    planned_at: DateTime<Utc>,
    /// When the rules' condition stopped holding (cancelled, fully checked in, paid).
    ends_at: Option<DateTime<Utc>>,
}

/// One webhook the rules call for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Expected {
    at: DateTime<Utc>,
    event_type: String,
    entity_id: String,
}

struct Scenario {
    actions: Vec<Action>,
    timed: Vec<Timed>,
}

fn day(start: DateTime<Utc>, n: i64, hh: u32, mm: u32) -> DateTime<Utc> {
    let midnight = start.date_naive() + chrono::Days::new(u64::try_from(n - 1).unwrap_or(0));
    let t = midnight
        .and_hms_opt(hh, mm, 0)
        .expect("valid wall-clock time");
    Utc.from_utc_datetime(&t)
}

impl Scenario {
    /// The three days. `start` is day 1 08:00; everything else is placed from it.
    fn build(start: DateTime<Utc>) -> Scenario {
        let mut actions = Vec::new();
        let mut timed = Vec::new();
        let mut act = |a: Action| actions.push(a);
        let t0 = start;
        for (id, name) in [
            ("alice", "Alice Martin"),
            ("bob", "Bob Okafor"),
            ("chen", "Chen Wei"),
        ] {
            act(action(
                t0,
                &format!("contact {id} ({name})"),
                Method::PUT,
                format!("/v1/contacts/{id}"),
                Some(json!({"name": name, "email": format!("{id}@example.com")})),
                &[("contact.create", id)],
            ));
        }
        let lens_expires = day(start, 2, 15, 0);
        for (id, name, expires) in [
            ("cam-1", "Camera body", None),
            ("tripod-1", "Tripod", None),
            ("mic-1", "Shotgun microphone", None),
            ("proj-1", "Projector", None),
            (
                "lens-9",
                "Lens (calibration certificate)",
                Some(lens_expires),
            ),
        ] {
            let mut body = json!({"name": name});
            if let Some(at) = expires {
                body["expires_at"] = json!(at);
                timed.push(Timed {
                    kind: EntityKind::Item,
                    entity_id: id.into(),
                    anchor: at,
                    planned_at: t0,
                    ends_at: None,
                });
            }
            let note = match expires {
                Some(at) => format!("item {id} ({name}), expires {}", short(at)),
                None => format!("item {id} ({name})"),
            };
            act(action(
                t0,
                &note,
                Method::PUT,
                format!("/v1/items/{id}"),
                Some(body),
                &[("item.create", id)],
            ));
        }

        // A reservation nobody picks up: reminders before, overdue reminders after.
        let res1_pickup = day(start, 1, 10, 0);
        act(action(
            t0,
            &format!(
                "reservation res-1: alice reserves proj-1, pickup {}",
                short(res1_pickup)
            ),
            Method::PUT,
            "/v1/reservations/res-1".into(),
            Some(json!({"contact_id": "alice", "item_ids": ["proj-1"],
                "starts_at": res1_pickup, "ends_at": day(start, 2, 18, 0)})),
            &[("reservation.reserve", "res-1")],
        ));
        timed.push(Timed {
            kind: EntityKind::Reservation,
            entity_id: "res-1".into(),
            anchor: res1_pickup,
            planned_at: t0,
            ends_at: None,
        });
        // A reservation cancelled before any of its reminders is due.
        let res2_pickup = day(start, 2, 14, 0);
        let res2_cancel = day(start, 1, 12, 30);
        act(action(
            t0,
            &format!(
                "reservation res-2: bob reserves cam-1, pickup {}",
                short(res2_pickup)
            ),
            Method::PUT,
            "/v1/reservations/res-2".into(),
            Some(json!({"contact_id": "bob", "item_ids": ["cam-1"],
                "starts_at": res2_pickup, "ends_at": day(start, 3, 18, 0)})),
            &[("reservation.reserve", "res-2")],
        ));
        timed.push(Timed {
            kind: EntityKind::Reservation,
            entity_id: "res-2".into(),
            anchor: res2_pickup,
            planned_at: t0,
            ends_at: Some(res2_cancel),
        });

        // A check-out returned late, in two parts.
        let ord1_due = day(start, 2, 17, 0);
        let ord1_partial = day(start, 3, 9, 30);
        let ord1_full = day(start, 3, 11, 30);
        act(action(
            t0,
            &format!(
                "order ord-1: chen takes cam-1 + tripod-1, due {}",
                short(ord1_due)
            ),
            Method::PUT,
            "/v1/orders/ord-1".into(),
            Some(
                json!({"contact_id": "chen", "item_ids": ["cam-1", "tripod-1"], "due_at": ord1_due}),
            ),
            &[("order.create", "ord-1")],
        ));
        act(action(
            t0,
            "order ord-1 checked out",
            Method::POST,
            "/v1/orders/ord-1/checkout".into(),
            None,
            &[("order.checkout", "ord-1")],
        ));
        timed.push(Timed {
            kind: EntityKind::Order,
            entity_id: "ord-1".into(),
            anchor: ord1_due,
            planned_at: t0,
            ends_at: Some(ord1_full),
        });
        // A check-out returned on time.
        let ord2_due = day(start, 2, 12, 0);
        let ord2_back = day(start, 2, 11, 30);
        act(action(
            t0,
            &format!("order ord-2: bob takes mic-1, due {}", short(ord2_due)),
            Method::PUT,
            "/v1/orders/ord-2".into(),
            Some(json!({"contact_id": "bob", "item_ids": ["mic-1"], "due_at": ord2_due})),
            &[("order.create", "ord-2")],
        ));
        act(action(
            t0,
            "order ord-2 checked out",
            Method::POST,
            "/v1/orders/ord-2/checkout".into(),
            None,
            &[("order.checkout", "ord-2")],
        ));
        timed.push(Timed {
            kind: EntityKind::Order,
            entity_id: "ord-2".into(),
            anchor: ord2_due,
            planned_at: t0,
            ends_at: Some(ord2_back),
        });

        // Self-storage: a unit rental whose invoice is paid a day late.
        let inv_due = day(start, 2, 9, 0);
        let inv_paid = day(start, 3, 10, 30);
        act(action(
            t0,
            "unit rental unit-a12: alice rents storage unit A12",
            Method::PUT,
            "/v1/unit-rentals/unit-a12".into(),
            Some(json!({"contact_id": "alice", "unit_id": "A12", "state": "occupied"})),
            &[("unitRental.updated", "unit-a12")],
        ));
        act(action(
            t0,
            &format!("invoice inv-1 for unit-a12, due {}, sent", short(inv_due)),
            Method::PUT,
            "/v1/invoices/inv-1".into(),
            Some(json!({"unit_rental_id": "unit-a12", "due_at": inv_due, "state": "sent"})),
            &[("unitRental.invoice.created", "unit-a12")],
        ));
        timed.push(Timed {
            kind: EntityKind::UnitRental,
            entity_id: "unit-a12".into(),
            anchor: inv_due,
            planned_at: t0,
            ends_at: Some(inv_paid),
        });

        // What happens during the days.
        act(action(
            res2_cancel,
            "bob cancels reservation res-2",
            Method::POST,
            "/v1/reservations/res-2/cancel".into(),
            None,
            &[("reservation.cancel", "res-2")],
        ));
        act(action(
            ord2_back,
            "bob returns mic-1 (ord-2), half an hour early",
            Method::POST,
            "/v1/orders/ord-2/checkin".into(),
            Some(json!({})),
            &[("order.checkin", "ord-2")],
        ));
        act(action(
            ord1_partial,
            "chen returns tripod-1 (ord-1, partial check-in), late",
            Method::POST,
            "/v1/orders/ord-1/checkin".into(),
            Some(json!({"item_ids": ["tripod-1"]})),
            &[("order.checkin", "ord-1")],
        ));
        act(action(
            inv_paid,
            "alice pays invoice inv-1",
            Method::PUT,
            "/v1/invoices/inv-1".into(),
            Some(json!({"unit_rental_id": "unit-a12", "due_at": inv_due, "state": "paid"})),
            &[("invoice.state.updated", "inv-1")],
        )
        .settling("unit-a12"));
        act(action(
            ord1_full,
            "chen returns cam-1 (ord-1, now fully checked in)",
            Method::POST,
            "/v1/orders/ord-1/checkin".into(),
            Some(json!({})),
            &[("order.checkin", "ord-1")],
        ));
        actions.sort_by_key(|a| a.at);
        Scenario { actions, timed }
    }

    /// The webhooks the rules call for between the start and `end`: the immediate
    /// events of every change sent by then, and every rule instant of every timed
    /// entity that arrives while the rule's condition still holds. An instant already
    /// past when the entity was sent is owed only by a `fire_late` rule (README,
    /// "Rules"); the clock never skips a pending timer here, so the misfire policy for
    /// missed timers does not come into play.
    fn expected(&self, rules: &[Rule], tz: Tz, end: DateTime<Utc>) -> Vec<Expected> {
        let mut out = Vec::new();
        for t in &self.timed {
            for rule in rules.iter().filter(|r| r.entity == t.kind) {
                let fire_at = rule.offset.apply(t.anchor, tz);
                // A moment already gone when the entity was sent is not owed, except
                // for fire_late rules (overdue-style), which fire at once.
                let when = if fire_at < t.planned_at {
                    (rule.misfire == Misfire::FireLate).then_some(t.planned_at)
                } else {
                    Some(fire_at)
                };
                // The clock lives through an instant before the demo acts at it, so a
                // timer due at the very instant its condition ends still fires.
                if let Some(at) = when
                    && at <= end
                    && t.ends_at.is_none_or(|e| at <= e)
                {
                    out.push(Expected {
                        at,
                        event_type: rule.event_type.clone(),
                        entity_id: t.entity_id.clone(),
                    });
                }
            }
        }
        for a in self.actions.iter().filter(|a| a.at <= end) {
            for (ty, id) in &a.emits {
                out.push(Expected {
                    at: a.at,
                    event_type: (*ty).to_string(),
                    entity_id: id.clone(),
                });
            }
            if let Some(rental) = &a.settles_rental {
                let was_marked = out.iter().any(|e| {
                    e.event_type == "unitRental.markOverdue"
                        && &e.entity_id == rental
                        && e.at <= a.at
                });
                if was_marked {
                    out.push(Expected {
                        at: a.at,
                        event_type: "unitRental.unmarkOverdue".into(),
                        entity_id: rental.clone(),
                    });
                }
            }
        }
        out.sort();
        out
    }
}

fn action(
    at: DateTime<Utc>,
    note: &str,
    method: Method,
    path: String,
    body: Option<Value>,
    emits: &[(&'static str, &str)],
) -> Action {
    Action {
        at,
        note: note.to_string(),
        method,
        path,
        body,
        emits: emits.iter().map(|(t, id)| (*t, id.to_string())).collect(),
        settles_rental: None,
    }
}

impl Action {
    fn settling(mut self, rental: &str) -> Action {
        self.settles_rental = Some(rental.to_string());
        self
    }
}

fn short(t: DateTime<Utc>) -> String {
    t.format("%a %H:%M").to_string()
}

// ---------------------------------------------------------------------------------
// The receiver.
// ---------------------------------------------------------------------------------

/// One webhook as the receiver saw it.
#[derive(Debug, Clone)]
struct Got {
    webhook_id: String,
    event_type: String,
    entity_id: String,
    verified: bool,
}

#[derive(Default)]
struct Inbox {
    /// The endpoint's `whsec_` secret, known once the endpoint is registered.
    secret: Mutex<Option<String>>,
    got: Mutex<Vec<Got>>,
}

type HmacSha256 = Hmac<Sha256>;

/// Standard Webhooks verification, done the way a receiver would: recompute
/// HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with the base64-decoded
/// part of the secret after `whsec_`, and compare (in constant time) with each `v1,`
/// signature in `webhook-signature`.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|k| BASE64.decode(k).ok())
    else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(&key) else {
        return false;
    };
    let (id, ts) = (header("webhook-id"), header("webhook-timestamp"));
    if id.is_empty() || ts.parse::<i64>().is_err() {
        return false;
    }
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = BASE64.encode(mac.finalize().into_bytes());
    header("webhook-signature")
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| bool::from(sig.as_bytes().ct_eq(expected.as_bytes())))
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let secret = inbox.secret.lock().map(|s| s.clone()).unwrap_or_default();
    let verified = secret.is_some_and(|s| verify(&s, &headers, &body));
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let got = Got {
        webhook_id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        event_type: text(&json["type"]),
        entity_id: text(&json["data"]["id"]),
        verified,
    };
    let when = |v: &Value| {
        v.as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let created = when(&json["created"]);
    let mut note = String::new();
    if let (Some(scheduled), Some(created)) = (when(&json["scheduled_at"]), created)
        && created - scheduled >= TimeDelta::seconds(60)
    {
        note = format!("  (due {}, fired late: misfire policy)", short(scheduled));
    }
    if json["data"]["partial"] == json!(true) {
        note.push_str("  (partial)");
    }
    let mut all = inbox.got.lock().unwrap_or_else(|e| e.into_inner());
    let duplicate = all.iter().any(|g| g.webhook_id == got.webhook_id);
    println!(
        "{}  {:<28} {:<10} {}{}{}",
        created.map_or_else(
            || "?".repeat(16),
            |t| t.format("%a %Y-%m-%d %H:%M").to_string()
        ),
        got.event_type,
        got.entity_id,
        if verified {
            "signature ok"
        } else {
            "signature INVALID"
        },
        if duplicate { "  DUPLICATE" } else { "" },
        note
    );
    all.push(got);
    StatusCode::OK
}

/// The receiver's task, stopped when the demo ends however it ends.
struct ReceiverTask(tokio::task::JoinHandle<()>);

impl Drop for ReceiverTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn start_receiver(inbox: Arc<Inbox>) -> Result<(SocketAddr, ReceiverTask), DemoError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = axum::Router::new()
        .route("/hooks/duehook", axum::routing::post(receive))
        .with_state(inbox);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((addr, ReceiverTask(task)))
}

// ---------------------------------------------------------------------------------
// Talking to the service.
// ---------------------------------------------------------------------------------

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, DemoError> {
        let what = format!("{method} {path}");
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().await.map_err(|source| DemoError::Http {
            what: what.clone(),
            source,
        })?;
        let status = res.status();
        let text = res.text().await.map_err(|source| DemoError::Http {
            what: what.clone(),
            source,
        })?;
        if !status.is_success() {
            return Err(DemoError::Api {
                what,
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Timers the service has fired, from `GET /admin/schedule` (all pages).
    async fn fired_timers(&self) -> Result<usize, DemoError> {
        let mut n = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/admin/schedule?state=fired&limit=1000".to_string();
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.call(Method::GET, &path, None).await?;
            n += page["timers"].as_array().map_or(0, Vec::len);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(n),
            }
        }
    }
}

/// The service's configuration for the demo: built-in defaults, a store in `dir`, a
/// manual clock, a random token, a free port on 127.0.0.1, quiet logs.
fn demo_config(dir: &std::path::Path, start: DateTime<Utc>, token: &str) -> Config {
    let mut c = Config::defaults();
    c.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.store.url = format!("sqlite://{}", dir.join("duehook-demo.db").display());
    c.clock.mode = ClockMode::Manual;
    c.clock.start = Some(start);
    c.auth.tokens = vec![token.to_string()];
    c.auth.admin_tokens = None;
    // The demo's receiver listens on 127.0.0.1, which the destination guard refuses by
    // default (a webhook URL pointing inside the host is the classic SSRF). That is
    // safe here: this service lives only for the demo, listens on loopback with a
    // random token nobody else knows, and the only endpoint is the one the demo
    // registers itself.
    c.delivery.allow_private_destinations = true;
    c
}

/// Runs the demo, printing each step, each webhook as it arrives and the summary.
pub async fn run(opts: DemoOptions) -> Result<Summary, DemoError> {
    if !(1..=14).contains(&opts.days) {
        return Err(DemoError::Options("--days must be 1 to 14".into()));
    }
    if opts.step < TimeDelta::seconds(60) || opts.step > TimeDelta::days(1) {
        return Err(DemoError::Options(
            "--step-seconds must be 60 to 86400".into(),
        ));
    }
    // Removed when dropped, also when the demo fails half-way.
    let dir = tempfile::Builder::new().prefix("duehook-demo-").tempdir()?;
    let start = demo_start();
    let end = start + TimeDelta::days(i64::from(opts.days));
    let token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let config = demo_config(dir.path(), start, &token);
    let rules = config.rules().map_err(|(k, m)| DemoError::Config(k, m))?;
    let scenario = Scenario::build(start);
    let expected = scenario.expected(&rules, config.schedule.timezone, end);

    let inbox = Arc::new(Inbox::default());
    let (rx_addr, receiver) = start_receiver(inbox.clone()).await?;
    let clock = ManualClock::shared(start);
    let app = App::start(config, clock).await?;
    let api = Api {
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|source| DemoError::Http {
                what: "HTTP client".into(),
                source,
            })?,
        base: app.url(),
        token,
    };
    println!("duehook demo");
    println!(
        "  service:  {} (manual clock, SQLite in {})",
        app.url(),
        dir.path().display()
    );
    println!("  receiver: http://{rx_addr}/hooks/duehook (verifies every signature)");
    println!(
        "  living through {} day(s) from {} in steps of {} min\n",
        opts.days,
        start.format("%a %Y-%m-%d %H:%M UTC"),
        opts.step.num_minutes()
    );

    let result = drive(&api, &inbox, &scenario, rx_addr, start, end, &opts).await;
    let summary = match result {
        Ok(()) => summarize(&api, &inbox, &expected).await,
        Err(e) => Err(e),
    };
    app.shutdown_within(Duration::from_secs(5)).await;
    drop(receiver);
    drop(dir);
    let summary = summary?;
    println!("\n{summary}");
    Ok(summary)
}

async fn drive(
    api: &Api,
    inbox: &Inbox,
    scenario: &Scenario,
    rx_addr: SocketAddr,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    opts: &DemoOptions,
) -> Result<(), DemoError> {
    let endpoint = api
        .call(
            Method::POST,
            "/v1/endpoints",
            Some(&json!({
                "name": "demo receiver",
                "url": format!("http://{rx_addr}/hooks/duehook"),
                "topics": ["*"],
            })),
        )
        .await?;
    let secret = endpoint["secret"].as_str().unwrap_or_default().to_string();
    println!(
        "registered endpoint {} for every event type (topics [\"*\"]), secret {}…\n",
        endpoint["id"].as_str().unwrap_or("?"),
        secret.chars().take(12).collect::<String>()
    );
    *inbox.secret.lock().unwrap_or_else(|e| e.into_inner()) = Some(secret);

    println!("== day 1: {} ==", start.format("%A %Y-%m-%d"));
    let mut pending = scenario.actions.iter().filter(|a| a.at <= end).peekable();
    let mut now = start;
    let mut next_step = start;
    let mut day_shown = start.date_naive();
    loop {
        while let Some(a) = pending.next_if(|a| a.at <= now) {
            println!("{}  -- {}", now.format("%a %Y-%m-%d %H:%M"), a.note);
            api.call(a.method.clone(), &a.path, a.body.as_ref()).await?;
        }
        if now >= end {
            break;
        }
        if next_step <= now {
            next_step += opts.step;
        }
        let target = pending
            .peek()
            .map_or(next_step, |a| a.at.min(next_step))
            .min(end);
        api.call(
            Method::POST,
            "/admin/clock/advance",
            Some(&json!({ "to": target })),
        )
        .await?;
        now = target;
        if now.date_naive() != day_shown && now < end {
            day_shown = now.date_naive();
            println!(
                "== day {}: {} ==",
                (day_shown - start.date_naive()).num_days() + 1,
                now.format("%A %Y-%m-%d")
            );
        }
        if target == next_step
            && let Some(pace) = opts.pace
        {
            tokio::time::sleep(pace).await;
        }
    }
    Ok(())
}

async fn summarize(api: &Api, inbox: &Inbox, expected: &[Expected]) -> Result<Summary, DemoError> {
    // Every timer up to the end has fired and been delivered once the last advance has
    // answered; the changes made at the very end may still be on their way.
    let deadline = tokio::time::Instant::now() + FINAL_WAIT;
    loop {
        let distinct: BTreeSet<String> = inbox
            .got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|g| g.webhook_id.clone())
            .collect();
        if distinct.len() >= expected.len() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A moment more, so a late duplicate would be seen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = inbox.got.lock().unwrap_or_else(|e| e.into_inner()).clone();

    let mut s = Summary::default();
    let mut seen = BTreeSet::new();
    let mut received: Vec<(String, String)> = Vec::new();
    for g in &got {
        if !seen.insert(g.webhook_id.clone()) {
            s.duplicates += 1;
            continue;
        }
        s.received += 1;
        s.verified += usize::from(g.verified);
        received.push((g.event_type.clone(), g.entity_id.clone()));
        s.by_type.entry(g.event_type.clone()).or_default().1 += 1;
    }
    for e in expected {
        s.by_type.entry(e.event_type.clone()).or_default().0 += 1;
    }
    s.expected = expected.len();
    s.timers_expected = expected
        .iter()
        .filter(|e| is_time_based(&e.event_type))
        .count();
    s.timers_fired = api.fired_timers().await?;

    // Which (type, entity) pairs differ, both ways.
    let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
    for e in expected {
        *want
            .entry((e.event_type.clone(), e.entity_id.clone()))
            .or_default() += 1;
    }
    for r in received {
        *want.entry(r).or_default() -= 1;
    }
    for ((ty, id), n) in want {
        if n > 0 {
            s.problems
                .push(format!("{ty} for {id}: expected {n} more than received"));
        } else if n < 0 {
            s.problems
                .push(format!("{ty} for {id}: received {} not expected", -n));
        }
    }
    if s.verified != s.received {
        s.problems.push(format!(
            "{} webhook(s) failed signature verification",
            s.received - s.verified
        ));
    }
    if s.duplicates > 0 {
        s.problems
            .push(format!("{} duplicate webhook(s)", s.duplicates));
    }
    if s.timers_fired != s.timers_expected {
        s.problems.push(format!(
            "the service fired {} timer(s); the rules call for {}",
            s.timers_fired, s.timers_expected
        ));
    }
    Ok(s)
}

/// Time-based event types of the default rules (the rest are immediate).
fn is_time_based(event_type: &str) -> bool {
    let suffix = event_type.split_once('.').map_or("", |(_, s)| s);
    suffix.starts_with("due_in_")
        || suffix.starts_with("overdue_")
        || event_type == "unitRental.markOverdue"
        || event_type == "item.expire"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected_for(days: i64) -> Vec<Expected> {
        let config = Config::defaults();
        let rules = config.rules().expect("default rules");
        let start = demo_start();
        Scenario::build(start).expected(
            &rules,
            config.schedule.timezone,
            start + TimeDelta::days(days),
        )
    }

    fn has(e: &[Expected], ty: &str, id: &str) -> bool {
        e.iter().any(|x| x.event_type == ty && x.entity_id == id)
    }

    #[test]
    fn the_rules_decide_what_the_three_days_bring() {
        let e = expected_for(3);
        // The late order: reminders before its due time, one hour overdue, but not a day
        // overdue (it was fully back before then).
        for ty in [
            "order.due_in_1_day",
            "order.due_in_1_hour",
            "order.overdue_1_hour",
        ] {
            assert!(has(&e, ty, "ord-1"), "{ty}");
        }
        assert!(!has(&e, "order.overdue_1_day", "ord-1"));
        // The on-time order is never overdue.
        assert!(has(&e, "order.due_in_1_hour", "ord-2"));
        assert!(!has(&e, "order.overdue_1_hour", "ord-2"));
        // The cancelled reservation reminds nobody.
        assert!(
            !e.iter()
                .any(|x| x.entity_id == "res-2" && is_time_based(&x.event_type))
        );
        // The no-show, reserved two hours before pickup: its "due in 1 day" moment had
        // already passed, so it is not owed; the other three come on time.
        assert!(!has(&e, "reservation.due_in_1_day", "res-1"));
        for ty in [
            "reservation.due_in_1_hour",
            "reservation.overdue_1_hour",
            "reservation.overdue_1_day",
        ] {
            assert!(has(&e, ty, "res-1"), "{ty}");
        }
        // Marked overdue, then unmarked when paid; the lens expires.
        assert!(has(&e, "unitRental.markOverdue", "unit-a12"));
        assert!(has(&e, "unitRental.unmarkOverdue", "unit-a12"));
        assert!(has(&e, "item.expire", "lens-9"));
        assert_eq!(e.len(), 32);
    }

    #[test]
    fn a_shorter_demo_expects_less() {
        let e = expected_for(1);
        assert!(!has(&e, "order.checkin", "ord-1"));
        assert!(!has(&e, "item.expire", "lens-9"));
        assert!(!has(&e, "unitRental.unmarkOverdue", "unit-a12"));
        assert!(has(&e, "reservation.cancel", "res-2"));
        assert!(e.iter().all(|x| x.at <= demo_start() + TimeDelta::days(1)));
    }

    #[test]
    fn verifies_standard_webhooks_signatures() {
        let secret = crate::delivery::sign::generate_secret();
        let body = br#"{"id":"evt_1"}"#;
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().expect("value"));
        headers.insert("webhook-timestamp", "1893916800".parse().expect("value"));
        let key = BASE64
            .decode(secret.trim_start_matches("whsec_"))
            .expect("base64");
        let mut mac = HmacSha256::new_from_slice(&key).expect("key");
        mac.update(b"evt_1.1893916800.");
        mac.update(body);
        let sig = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        headers.insert("webhook-signature", sig.parse().expect("value"));
        assert!(verify(&secret, &headers, body));
        assert!(!verify(&secret, &headers, br#"{"id":"evt_2"}"#));
        let other = crate::delivery::sign::generate_secret();
        assert!(!verify(&other, &headers, body));
    }
}
