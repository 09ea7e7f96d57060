//! Time-based events, end to end through the real app on a ManualClock: every default
//! rule fires at its instant and once; changes cancel and re-plan; DST; downtime and
//! misfire; crashes; clock steps; the admin views.

use crate::support;

use chrono::{DateTime, TimeDelta, Utc};
use duehook::testing::Event;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Backend, ClockExt, START, TOKEN, TestApp, t};

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

fn start() -> DateTime<Utc> {
    t(START)
}

/// Time-based events (those with `scheduled_at`), as (type, entity id, scheduled_at, created).
async fn fired(app: &TestApp) -> Vec<(String, String, DateTime<Utc>, DateTime<Utc>)> {
    app.events()
        .await
        .into_iter()
        .filter_map(|e: Event| {
            e.scheduled_at
                .map(|s| (e.event_type, e.entity_id, s, e.created))
        })
        .collect()
}

fn count(f: &[(String, String, DateTime<Utc>, DateTime<Utc>)], ty: &str, id: &str) -> usize {
    f.iter().filter(|(t, i, ..)| t == ty && i == id).count()
}

async fn seed_everything(app: &TestApp) {
    // Pickup in 3 days at 10:00 UTC; nobody picks it up.
    let r = app
        .put(
            "/v1/reservations/res-1",
            json!({"contact_id": "c-1", "item_ids": ["cam-1"], "starts_at": "2030-03-04T10:00:00Z", "ends_at": "2030-03-06T10:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Checked out, due in 5 days; never returned.
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c-1", "item_ids": ["tripod-1"], "due_at": "2030-03-06T12:00:00Z"}),
    )
    .await;
    assert_eq!(
        app.post("/v1/orders/o-1/checkout", None).await.status,
        StatusCode::OK
    );
    // An invoice due in 4 days, never paid.
    app.put("/v1/unit-rentals/ur-1", json!({"unit_id": "A-12"}))
        .await;
    app.put(
        "/v1/invoices/inv-1",
        json!({"unit_rental_id": "ur-1", "due_at": "2030-03-05T00:00:00Z", "state": "sent"}),
    )
    .await;
    // An item that expires in 6 days.
    app.put(
        "/v1/items/cert-1",
        json!({"name": "Calibration", "expires_at": "2030-03-07T00:00:00Z"}),
    )
    .await;
}

async fn every_default_rule_fires_once_at_its_instant(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    seed_everything(&app).await;
    let planned = app
        .admin_get("/admin/schedule?state=pending&limit=1000")
        .await;
    assert_eq!(
        planned.body["timers"].as_array().map(Vec::len),
        Some(10),
        "{}",
        planned.body
    );

    app.advance(14 * DAY).await;
    let f = fired(&app).await;
    let expect = [
        ("reservation.due_in_1_day", "res-1", "2030-03-03T10:00:00Z"),
        ("reservation.due_in_1_hour", "res-1", "2030-03-04T09:00:00Z"),
        (
            "reservation.overdue_1_hour",
            "res-1",
            "2030-03-04T11:00:00Z",
        ),
        ("reservation.overdue_1_day", "res-1", "2030-03-05T10:00:00Z"),
        ("order.due_in_1_day", "o-1", "2030-03-05T12:00:00Z"),
        ("order.due_in_1_hour", "o-1", "2030-03-06T11:00:00Z"),
        ("order.overdue_1_hour", "o-1", "2030-03-06T13:00:00Z"),
        ("order.overdue_1_day", "o-1", "2030-03-07T12:00:00Z"),
        ("unitRental.markOverdue", "ur-1", "2030-03-05T00:00:00Z"),
        ("item.expire", "cert-1", "2030-03-07T00:00:00Z"),
    ];
    assert_eq!(f.len(), expect.len(), "exactly one event per rule: {f:#?}");
    for (ty, id, at) in expect {
        let hits: Vec<_> = f.iter().filter(|(t, i, ..)| t == ty && i == id).collect();
        assert_eq!(hits.len(), 1, "{ty} for {id} fired once");
        let (_, _, scheduled, created) = hits[0];
        assert_eq!(*scheduled, t(at), "{ty} scheduled at its instant");
        assert_eq!(
            created, scheduled,
            "{ty} fired exactly at its instant, not late"
        );
    }
    // Fired in time order.
    let mut sorted = f.clone();
    sorted.sort_by_key(|x| x.3);
    assert_eq!(sorted, f, "events were created in time order");
    // Side effects of firing.
    assert_eq!(app.get("/v1/items/cert-1").await.body["expired"], true);
    assert_eq!(app.get("/v1/unit-rentals/ur-1").await.body["overdue"], true);
    let mark = app
        .events()
        .await
        .into_iter()
        .find(|e| e.event_type == "unitRental.markOverdue")
        .expect("event");
    assert_eq!(
        (
            mark.data_value()["id"].clone(),
            mark.data_value()["invoice"]["id"].clone()
        ),
        (json!("ur-1"), json!("inv-1"))
    );
    // Nothing pending is left, every timer fired and names its event.
    let all = app.admin_get("/admin/schedule?limit=1000").await.body["timers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        all.iter().all(|t| t["state"] == "fired"
            && t["event_id"]
                .as_str()
                .is_some_and(|e| e.starts_with("evt_"))),
        "{all:#?}"
    );
    // Living through another week fires nothing more.
    app.advance(7 * DAY).await;
    assert_eq!(fired(&app).await.len(), expect.len());
}

async fn changes_cancel_and_replan(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    seed_everything(&app).await;
    // Day 1: extend the order by two days; the old reminders are cancelled with the reason.
    app.advance(DAY).await;
    let r = app
        .request(
            Method::PATCH,
            "/v1/orders/o-1",
            Some(json!({"due_at": "2030-03-08T12:00:00Z"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let timers = app.timers_of("order", "o-1").await;
    let cancelled: Vec<_> = timers
        .iter()
        .filter(|t| t["state"] == "cancelled")
        .collect();
    assert_eq!(cancelled.len(), 4, "{timers:#?}");
    assert!(
        cancelled.iter().all(|t| t["reason"]
            .as_str()
            .is_some_and(|r| r.contains("anchor moved"))),
        "{cancelled:#?}"
    );
    // Day 2 (2030-03-03 08:00): reservation.due_in_1_day fired at 10:00? not yet; cancel the reservation.
    app.advance(DAY + 3 * HOUR).await; // 2030-03-03T11:00 — due_in_1_day fired at 10:00
    assert_eq!(
        app.post("/v1/reservations/res-1/cancel", None).await.status,
        StatusCode::OK
    );
    // Pay the invoice before it is overdue.
    app.put(
        "/v1/invoices/inv-1",
        json!({"unit_rental_id": "ur-1", "due_at": "2030-03-05T00:00:00Z", "state": "paid"}),
    )
    .await;
    // A partial check-in keeps the order out: its reminders stay.
    app.put(
        "/v1/orders/o-2",
        json!({"contact_id": "c-1", "item_ids": ["a", "b"], "due_at": "2030-03-05T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-2/checkout", None).await;
    app.post("/v1/orders/o-2/checkin", Some(json!({"item_ids": ["a"]})))
        .await;
    // Move the item's expiry: re-planned.
    app.put(
        "/v1/items/cert-1",
        json!({"name": "Calibration", "expires_at": "2030-03-09T00:00:00Z"}),
    )
    .await;

    // 2030-03-07: fully check o-1 in before its new due date.
    app.advance_to("2030-03-07T00:00:00Z").await;
    app.post("/v1/orders/o-1/checkin", None).await;
    app.advance(14 * DAY).await;

    let f = fired(&app).await;
    assert_eq!(
        count(&f, "reservation.due_in_1_day", "res-1"),
        1,
        "fired before the cancel"
    );
    for ty in [
        "reservation.due_in_1_hour",
        "reservation.overdue_1_hour",
        "reservation.overdue_1_day",
    ] {
        assert_eq!(
            count(&f, ty, "res-1"),
            0,
            "{ty} cancelled with the reservation"
        );
    }
    assert_eq!(
        count(&f, "unitRental.markOverdue", "ur-1"),
        0,
        "paid before due"
    );
    // o-1 was due on the 8th: due_in_1_day (7th 12:00) would fire after the check-in → cancelled.
    assert_eq!(count(&f, "order.due_in_1_day", "o-1"), 0);
    assert_eq!(count(&f, "order.overdue_1_day", "o-1"), 0);
    // o-2, partially checked in, is still overdue.
    for ty in [
        "order.due_in_1_day",
        "order.due_in_1_hour",
        "order.overdue_1_hour",
        "order.overdue_1_day",
    ] {
        assert_eq!(
            count(&f, ty, "o-2"),
            1,
            "{ty} for the partially checked-in order"
        );
    }
    let expire: Vec<_> = f.iter().filter(|x| x.0 == "item.expire").collect();
    assert_eq!(expire.len(), 1);
    assert_eq!(
        expire[0].2,
        t("2030-03-09T00:00:00Z"),
        "fired at the moved expiry"
    );

    let res_timers = app.timers_of("reservation", "res-1").await;
    let cancelled: Vec<_> = res_timers
        .iter()
        .filter(|t| t["state"] == "cancelled")
        .collect();
    assert_eq!(cancelled.len(), 3);
    assert!(
        cancelled.iter().all(|t| t["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cancelled"))),
        "{cancelled:#?}"
    );
    let inv = app.timers_of("invoice", "inv-1").await;
    assert!(
        inv.iter().all(|t| t["state"] == "cancelled"
            && t["reason"].as_str().is_some_and(|r| r.contains("paid"))),
        "{inv:#?}"
    );
}

async fn paying_an_overdue_invoice_unmarks_the_rental(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.put("/v1/unit-rentals/ur-1", json!({})).await;
    app.put(
        "/v1/invoices/inv-1",
        json!({"unit_rental_id": "ur-1", "due_at": "2030-03-02T00:00:00Z", "state": "sent"}),
    )
    .await;
    app.put(
        "/v1/invoices/inv-2",
        json!({"unit_rental_id": "ur-1", "due_at": "2030-03-03T00:00:00Z", "state": "sent"}),
    )
    .await;
    app.advance(3 * DAY).await;
    assert_eq!(app.get("/v1/unit-rentals/ur-1").await.body["overdue"], true);
    app.put(
        "/v1/invoices/inv-1",
        json!({"unit_rental_id": "ur-1", "due_at": "2030-03-02T00:00:00Z", "state": "paid"}),
    )
    .await;
    assert_eq!(
        app.get("/v1/unit-rentals/ur-1").await.body["overdue"],
        true,
        "inv-2 is still overdue"
    );
    app.put(
        "/v1/invoices/inv-2",
        json!({"unit_rental_id": "ur-1", "due_at": "2030-03-03T00:00:00Z", "state": "paid"}),
    )
    .await;
    assert_eq!(
        app.get("/v1/unit-rentals/ur-1").await.body["overdue"],
        false
    );
    let types = app.event_types().await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "unitRental.markOverdue")
            .count(),
        2
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "unitRental.unmarkOverdue")
            .count(),
        1
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("unitRental.unmarkOverdue")
    );
}

async fn calendar_day_reminder_is_23_hours_before_across_dst(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Pickup 2030-03-31 09:00 Brussels summer time (07:00Z); clocks moved forward that night.
    app.put(
        "/v1/reservations/res-dst",
        json!({"contact_id": "c", "item_ids": [], "starts_at": "2030-03-31T09:00:00+02:00", "ends_at": "2030-04-01T09:00:00+02:00", "timezone": "Europe/Brussels"}),
    )
    .await;
    let timers = app.timers_of("reservation", "res-dst").await;
    let day = timers
        .iter()
        .find(|t| t["type"] == "reservation.due_in_1_day")
        .expect("planned");
    assert_eq!(
        day["fire_at"], "2030-03-30T08:00:00Z",
        "09:00 local (CET) the day before"
    );
    let hour = timers
        .iter()
        .find(|t| t["type"] == "reservation.due_in_1_hour")
        .expect("planned");
    assert_eq!(hour["fire_at"], "2030-03-31T06:00:00Z");
    app.advance_to("2030-04-02T00:00:00Z").await;
    let f = fired(&app).await;
    let d = f
        .iter()
        .find(|x| x.0 == "reservation.due_in_1_day")
        .expect("fired");
    assert_eq!(
        (d.2, d.3),
        (t("2030-03-30T08:00:00Z"), t("2030-03-30T08:00:00Z"))
    );
    assert_eq!(t("2030-03-31T07:00:00Z") - d.2, TimeDelta::hours(23));
}

async fn downtime_follows_the_misfire_policy(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    app.put(
        "/v1/orders/o-2",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-05T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-2/checkout", None).await;
    // Down from 2030-03-01 08:00 until 2030-03-03 08:00 (two days).
    let down_until = start() + TimeDelta::days(2);
    if let Some(a) = app.app.take() {
        a.shutdown().await;
    }
    app.clock.set(down_until);
    app.restart().await;
    app.advance(0).await;

    let f = fired(&app).await;
    // o-1 was due on the 2nd at 12:00: its due_in reminders are pointless now (skipped);
    // its overdue_1_hour fires late, keeping the instant it was due.
    assert_eq!(count(&f, "order.due_in_1_day", "o-1"), 0);
    assert_eq!(count(&f, "order.due_in_1_hour", "o-1"), 0);
    let late = f
        .iter()
        .find(|x| x.0 == "order.overdue_1_hour" && x.1 == "o-1")
        .expect("fired late");
    assert_eq!((late.2, late.3), (t("2030-03-02T13:00:00Z"), down_until));
    let timers = app.timers_of("order", "o-1").await;
    let skipped: Vec<_> = timers.iter().filter(|t| t["state"] == "skipped").collect();
    assert_eq!(skipped.len(), 2, "{timers:#?}");
    assert!(
        skipped
            .iter()
            .all(|t| t["reason"].as_str().is_some_and(|r| r.contains("anchor")))
    );
    let late_timer = timers
        .iter()
        .find(|t| t["type"] == "order.overdue_1_hour")
        .expect("timer");
    assert!(
        late_timer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("late")),
        "{late_timer}"
    );
    // o-2 (due on the 5th) lost nothing: its reminders fire on time afterwards.
    app.advance(5 * DAY).await;
    let f = fired(&app).await;
    for ty in [
        "order.due_in_1_day",
        "order.due_in_1_hour",
        "order.overdue_1_hour",
        "order.overdue_1_day",
    ] {
        let hit = f
            .iter()
            .find(|x| x.0 == ty && x.1 == "o-2")
            .expect("o-2 fired");
        assert_eq!(hit.2, hit.3, "{ty} on time");
    }
    assert_eq!(
        count(&f, "order.overdue_1_day", "o-1"),
        1,
        "o-1's overdue_1_day was still ahead and fired once"
    );
}

async fn a_crash_loses_nothing_and_doubles_nothing(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    for i in 0..20 {
        app.put(&format!("/v1/orders/o-{i}"), json!({"contact_id": "c", "item_ids": ["a"], "due_at": format!("2030-03-0{}T12:00:00Z", 2 + i % 3)}))
            .await;
        app.post(&format!("/v1/orders/o-{i}/checkout"), None).await;
    }
    app.advance(DAY).await;
    let before = fired(&app).await.len();
    assert!(before > 0);
    // Crash: every task dropped where it stands; then start again on the same store.
    if let Some(a) = app.app.take() {
        a.abort();
    }
    app.restart().await;
    app.advance(10 * DAY).await;
    let f = fired(&app).await;
    assert_eq!(
        f.len(),
        20 * 4,
        "four reminders per order, no more, no fewer"
    );
    let mut keys: Vec<_> = f.iter().map(|x| (x.0.clone(), x.1.clone())).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 80, "no reminder twice");
}

async fn a_clock_stepped_back_fires_nothing_twice(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    app.advance_to("2030-03-02T14:00:00Z").await;
    assert_eq!(fired(&app).await.len(), 3);
    // The system clock is stepped back three hours, then time moves on again.
    app.clock.set(t("2030-03-02T11:00:00Z"));
    app.advance_to("2030-03-04T00:00:00Z").await;
    let f = fired(&app).await;
    assert_eq!(f.len(), 4, "{f:#?}");
    assert_eq!(count(&f, "order.due_in_1_hour", "o-1"), 1);
    assert_eq!(count(&f, "order.overdue_1_hour", "o-1"), 1);
}

async fn schedule_filters_and_paging(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for i in 0..150 {
        app.put(
            &format!("/v1/items/it-{i:03}"),
            json!({"name": "x", "expires_at": format!("2030-04-01T00:{:02}:00Z", i % 60)}),
        )
        .await;
    }
    // Page through all 150 in fire_at order, 40 at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/schedule?type=item.expire&limit=40&cursor={c}"),
            None => "/admin/schedule?type=item.expire&limit=40".to_string(),
        };
        let page = app.admin_get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let timers = page.body["timers"].as_array().cloned().unwrap_or_default();
        seen.extend(timers.iter().map(|t| {
            (
                t["fire_at"].as_str().unwrap_or("").to_string(),
                t["id"].as_i64().unwrap_or(0),
            )
        }));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 150);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(
        seen, sorted,
        "sorted by fire_at then id, no duplicates across pages"
    );
    let r = app
        .admin_get("/admin/schedule?from=2030-04-01T00:10:00Z&to=2030-04-01T00:20:00Z&limit=1000")
        .await;
    assert_eq!(
        r.body["timers"].as_array().map(Vec::len),
        Some(30),
        "minutes 10..19 of each hour-block"
    );
    let r = app
        .admin_get("/admin/schedule?entity_kind=item&entity_id=it-007")
        .await;
    assert_eq!(r.body["timers"].as_array().map(Vec::len), Some(1));
    for (q, field) in [
        ("from=yesterday", "from"),
        ("state=asleep", "state"),
        ("limit=0", "limit"),
        ("entity_kind=ufo", "entity_kind"),
        ("cursor=zz", "cursor"),
    ] {
        let r = app.admin_get(&format!("/admin/schedule?{q}")).await;
        assert_eq!(
            (r.status, r.body["field"].clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, json!(field)),
            "{q}"
        );
    }
    let stats = app.admin_get("/admin/schedule/stats").await;
    assert_eq!(stats.body["timers"]["pending"], 150, "{}", stats.body);
    // Every state is counted, zeros included (a gauge of an emptied state falls to 0).
    for state in ["fired", "cancelled", "skipped"] {
        assert!(stats.body["timers"][state].is_i64(), "{}", stats.body);
    }
    assert_eq!(stats.body["next_fire_at"], "2030-04-01T00:00:00Z");
}

async fn admin_routes_need_the_admin_token(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for (method, path, body) in [
        (Method::GET, "/admin/clock", None),
        (
            Method::POST,
            "/admin/clock/advance",
            Some(json!({"seconds": 60})),
        ),
        (Method::GET, "/admin/schedule", None),
        (Method::GET, "/admin/schedule/stats", None),
    ] {
        for token in [None, Some(TOKEN)] {
            let r = app
                .request_as(method.clone(), path, body.clone(), token)
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
        }
        let r = app
            .request_as(method.clone(), path, body.clone(), Some(ADMIN_TOKEN))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{method} {path}: {}", r.body);
    }
    assert_eq!(
        app.admin_get("/admin/clock").await.body["now"],
        "2030-03-01T08:01:00Z"
    );
    for (body, field) in [
        (json!({"seconds": -5}), "seconds"),
        (json!({"to": "2030-01-01T00:00:00Z"}), "to"),
        (json!({}), "body"),
    ] {
        let r = app
            .request_as(
                Method::POST,
                "/admin/clock/advance",
                Some(body),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(
            (r.status, r.body["field"].clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, json!(field))
        );
    }
}

async fn advancing_the_system_clock_is_refused(backend: Backend) {
    let Some(store) = support::StoreHandle::new(backend).await else {
        return;
    };
    let config = support::test_config(store.url());
    let app = duehook::App::start(config, duehook::clock::SystemClock::shared())
        .await
        .expect("starts");
    let r = reqwest::Client::new()
        .post(format!("{}/admin/clock/advance", app.url()))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"seconds": 60}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("manual"))
    );
    app.shutdown().await;
}

async fn configured_rules_add_and_change_reminders(backend: Backend) {
    let Some(store) = support::StoreHandle::new(backend).await else {
        return;
    };
    let mut config = support::test_config(store.url());
    config.schedule.rules = toml::from_str::<toml::Table>(
        r#"
        [[rules]]
        name = "order.overdue_3_days"
        entity = "order"
        offset = "+3 days"
        [[rules]]
        name = "order.due_in_1_hour"
        offset = "-90m"
        [[rules]]
        name = "order.due_in_1_day"
        enabled = false
        "#,
    )
    .expect("toml")["rules"]
        .clone()
        .try_into()
        .expect("rules");
    let app = TestApp::spawn_with(store, config).await;
    let types = app.get("/v1/event-types").await;
    assert!(
        types.body["event_types"]
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e["type"] == "order.overdue_3_days")
    );
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    app.advance(7 * DAY).await;
    let f = fired(&app).await;
    let at = |ty: &str| f.iter().find(|x| x.0 == ty).map(|x| x.2);
    assert_eq!(at("order.overdue_3_days"), Some(t("2030-03-05T12:00:00Z")));
    assert_eq!(at("order.due_in_1_hour"), Some(t("2030-03-02T10:30:00Z")));
    assert_eq!(at("order.due_in_1_day"), None, "disabled");
    assert_eq!(f.len(), 4);
    // A subscriber could also post the configured type by hand.
    let r = app
        .post(
            "/v1/events",
            Some(json!({"type": "order.overdue_3_days", "data": {"id": "o-9"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

async fn daily_digest_lists_overdue_orders_once_a_day(backend: Backend) {
    let Some(store) = support::StoreHandle::new(backend).await else {
        return;
    };
    let mut config = support::test_config(store.url());
    config.schedule.digest.enabled = true;
    config.schedule.digest.timezones = vec!["Europe/Brussels".parse().expect("zone")];
    let mut app = TestApp::spawn_with(store, config).await;
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-01T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    // 08:00 Brussels (CET) is 07:00Z; the service started at 09:00 local on the 1st.
    app.advance_to("2030-03-03T12:00:00Z").await;
    let digests: Vec<_> = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "order.overdue_digest")
        .collect();
    assert_eq!(digests.len(), 2, "the 2nd and the 3rd");
    assert_eq!(digests[0].scheduled_at, Some(t("2030-03-02T07:00:00Z")));
    assert_eq!(digests[0].data_value()["id"], "Europe/Brussels/2030-03-02");
    assert_eq!(
        (
            digests[0].data_value()["count"].clone(),
            digests[0].data_value()["orders"][0]["id"].clone()
        ),
        (json!(1), json!("o-1"))
    );
    app.post("/v1/orders/o-1/checkin", None).await;
    app.advance_to("2030-03-04T12:00:00Z").await;
    let last = app
        .events()
        .await
        .into_iter()
        .rev()
        .find(|e| e.event_type == "order.overdue_digest")
        .expect("digest");
    assert_eq!(
        (last.scheduled_at, last.data_value()["count"].clone()),
        (Some(t("2030-03-04T07:00:00Z")), json!(0))
    );
    // Down for two days: the missed digests are skipped, the chain goes on.
    if let Some(a) = app.app.take() {
        a.shutdown().await;
    }
    app.clock.set(t("2030-03-06T12:00:00Z"));
    app.restart().await;
    app.advance_to("2030-03-07T12:00:00Z").await;
    let digests: Vec<_> = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "order.overdue_digest")
        .collect();
    assert_eq!(digests.len(), 4, "2nd, 3rd, 4th, then the 7th");
    assert_eq!(digests[3].scheduled_at, Some(t("2030-03-07T07:00:00Z")));
    let timers = app.timers_of("digest", "Europe/Brussels").await;
    assert_eq!(
        timers.iter().filter(|t| t["state"] == "skipped").count(),
        1,
        "{timers:#?}"
    );
    assert_eq!(
        timers.iter().filter(|t| t["state"] == "pending").count(),
        1,
        "the next one"
    );
}

async fn purged_history_never_refires(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    app.advance(40 * DAY).await;
    assert_eq!(fired(&app).await.len(), 4);
    let purged = app
        .app()
        .probe()
        .purge(app.clock.now_utc() - TimeDelta::days(30))
        .await
        .expect("purge");
    assert!(
        purged >= 4,
        "settled timers older than the retention are gone ({purged})"
    );
    // The purged events are gone with their timers.
    let left = fired(&app).await.len();
    assert_eq!(
        left, 0,
        "finished events older than the retention are purged too"
    );
    // A later change re-plans the order: its old overdue moments must not fire again.
    app.put("/v1/orders/o-1", json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z", "data": {"note": "x"}}))
        .await;
    app.advance(DAY).await;
    assert_eq!(fired(&app).await.len(), left, "nothing fired again");
    assert!(
        app.timers_of("order", "o-1")
            .await
            .iter()
            .all(|t| t["state"] != "pending")
    );
}

async fn sub_millisecond_instants_fire_and_do_not_churn(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body =
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00.123456789Z"});
    let r = app.put("/v1/orders/o-1", body.clone()).await;
    assert_eq!(
        r.body["due_at"], "2030-03-02T12:00:00.123Z",
        "kept at the store's precision"
    );
    app.post("/v1/orders/o-1/checkout", None).await;
    assert_eq!(app.put("/v1/orders/o-1", body).await.status, StatusCode::OK);
    assert!(
        app.put(
            "/v1/orders/o-1",
            json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00.123Z"})
        )
        .await
        .headers
        .get("duehook-event-id")
        .is_none(),
        "the same instant at ms precision is no change"
    );
    app.advance(3 * DAY).await;
    let timers = app.timers_of("order", "o-1").await;
    assert_eq!(
        timers.len(),
        4,
        "planned once, never re-planned: {timers:#?}"
    );
    assert!(timers.iter().all(|t| t["state"] == "fired"), "{timers:#?}");
    assert_eq!(timers[2]["fire_at"], "2030-03-02T13:00:00.123Z");
}

/// A burst larger than one firing transaction and one multi-row statement (500 rows):
/// 1,201 items expire at one instant, two of them changed before it. Every other item
/// is expired once with one event, the changed ones follow their change.
async fn a_burst_of_expiries_fires_each_once_in_bulk(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    const N: usize = 1_201;
    for i in 0..N {
        let r = app
            .put(
                &format!("/v1/items/burst-{i}"),
                json!({"name": format!("item {i}"), "expires_at": "2030-03-02T00:00:00Z"}),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
    }
    // Moved a day later: the old timer is cancelled, the new one fires a day later.
    app.put(
        "/v1/items/burst-7",
        json!({"name": "item 7", "expires_at": "2030-03-03T00:00:00Z"}),
    )
    .await;
    // No expiry any more: it never fires.
    app.put("/v1/items/burst-8", json!({"name": "item 8"}))
        .await;

    app.advance(DAY + 60).await;
    let f = fired(&app).await;
    assert_eq!(f.len(), N - 2, "one event per unchanged item");
    let ids: std::collections::HashSet<&str> = f.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(ids.len(), N - 2, "no item fired twice");
    assert!(!ids.contains("burst-7") && !ids.contains("burst-8"));
    assert!(
        f.iter()
            .all(|(ty, _, s, c)| ty == "item.expire" && *s == t("2030-03-02T00:00:00Z") && c == s),
        "every one at its instant"
    );
    for i in [0, 499, 500, 999, 1_000, N - 1] {
        let item = app.get(&format!("/v1/items/burst-{i}")).await.body;
        assert_eq!(item["expired"], true, "{item}");
        assert_eq!(item["name"], format!("item {i}"), "{item}");
    }
    let events = app.events().await;
    let e = events
        .iter()
        .find(|e| e.entity_id == "burst-500" && e.event_type == "item.expire")
        .expect("event of burst-500");
    assert_eq!(
        e.data_value()["expired"],
        true,
        "the event carries the expired item"
    );
    assert_eq!(app.get("/v1/items/burst-7").await.body["expired"], false);

    app.advance(DAY).await;
    let f = fired(&app).await;
    assert_eq!(f.len(), N - 1, "the moved item fired at its new instant");
    assert_eq!(app.get("/v1/items/burst-7").await.body["expired"], true);
    assert_eq!(app.get("/v1/items/burst-8").await.body["expired"], false);
}

/// Every wake-up from planning makes the driver claim again all it holds; the wheel
/// must still hold each pending timer once, and fire it once.
async fn refills_hold_each_timer_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let in_wheel = || async {
        app.admin_get("/admin/schedule/stats").await.body["in_wheel"]
            .as_u64()
            .expect("in_wheel")
    };
    const N: u64 = 5;
    for i in 0..N {
        let r = app
            .put(
                &format!("/v1/items/cam-{i}"),
                json!({"name": "Camera", "expires_at": format!("2030-03-01T08:05:0{i}Z")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        // Loaded before the next item wakes the driver again, so that wake-up's
        // refill claims this one a second time.
        support::receiver::eventually("the driver loads the item", || async {
            (in_wheel().await > i).then_some(())
        })
        .await;
    }
    assert_eq!(in_wheel().await, N, "each timer in the wheel once");

    app.advance(10 * 60).await;
    let f = fired(&app).await;
    for i in 0..N {
        assert_eq!(count(&f, "item.expire", &format!("cam-{i}")), 1);
    }
    assert_eq!(f.len(), N as usize);
    support::receiver::eventually("the wheel empties", || async {
        (in_wheel().await == 0).then_some(())
    })
    .await;
}

both_backends!(
    refills_hold_each_timer_once,
    a_burst_of_expiries_fires_each_once_in_bulk,
    sub_millisecond_instants_fire_and_do_not_churn,
    daily_digest_lists_overdue_orders_once_a_day,
    purged_history_never_refires,
    configured_rules_add_and_change_reminders,
    every_default_rule_fires_once_at_its_instant,
    changes_cancel_and_replan,
    paying_an_overdue_invoice_unmarks_the_rental,
    calendar_day_reminder_is_23_hours_before_across_dst,
    downtime_follows_the_misfire_policy,
    a_crash_loses_nothing_and_doubles_nothing,
    a_clock_stepped_back_fires_nothing_twice,
    schedule_filters_and_paging,
    admin_routes_need_the_admin_token,
    advancing_the_system_clock_is_refused,
);

/// PostgreSQL: firing an invoice's timer changes its unit rental (`overdue`), so it
/// takes the rental's lock as ingest does. While a request holds that lock (here: a
/// transaction of the test's own), the event waits; it fires once the lock is free.
/// Without the lock a `PUT /v1/unit-rentals/{id}` beside the firing could write back
/// the rental it read before and lose `overdue`.
#[tokio::test]
async fn postgres_firing_an_invoice_waits_for_its_rentals_lock() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    app.put("/v1/unit-rentals/ur-1", json!({"unit_id": "A-12"}))
        .await;
    let r = app
        .put(
            "/v1/invoices/inv-1",
            json!({"unit_rental_id": "ur-1", "due_at": "2030-03-05T00:00:00Z", "state": "sent"}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);

    let mut holder = <sqlx::AnyConnection as sqlx::Connection>::connect(app.store.url())
        .await
        .expect("second connection");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('unitRental/ur-1', 0))::text")
        .execute(&mut holder)
        .await
        .expect("rental lock");
    let marks = |events: Vec<Event>| {
        events
            .into_iter()
            .filter(|e| e.event_type == "unitRental.markOverdue")
            .count()
    };
    let ((), fired_while_locked) = tokio::join!(
        async {
            app.advance(5 * DAY).await;
        },
        async {
            // Long enough for the clock to reach the invoice's due instant and the
            // driver to try; then the lock is let go.
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            let n = marks(app.events().await);
            sqlx::query("COMMIT")
                .execute(&mut holder)
                .await
                .expect("commit");
            n
        }
    );
    assert_eq!(
        fired_while_locked, 0,
        "the invoice's timer fired while its rental was locked"
    );
    assert_eq!(marks(app.events().await), 1, "fired once the lock was free");
    assert_eq!(app.get("/v1/unit-rentals/ur-1").await.body["overdue"], true);
}
