//! Operator views: forecast, entity timeline, metrics.

use crate::support;

use reqwest::StatusCode;
use serde_json::json;
use support::{Backend, TestApp};

const DAY: i64 = 86_400;

async fn forecast_equals_what_then_fires(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for i in 0..12 {
        app.put(&format!("/v1/orders/o-{i}"), json!({"contact_id": "c", "item_ids": ["a"], "due_at": format!("2030-03-0{}T1{}:00:00Z", 2 + i % 4, i % 6)}))
            .await;
        app.post(&format!("/v1/orders/o-{i}/checkout"), None).await;
    }
    app.put(
        "/v1/items/cert",
        json!({"name": "c", "expires_at": "2030-03-03T00:30:00Z"}),
    )
    .await;
    // One order is checked in: its reminders leave the forecast.
    app.post("/v1/orders/o-0/checkin", None).await;
    let until = "2030-03-04T12:00:00Z";
    let f = app
        .admin_get(&format!("/admin/schedule/forecast?until={until}"))
        .await;
    assert_eq!(f.status, StatusCode::OK, "{}", f.body);
    let before = app.events().await.len();
    app.advance_to(until).await;
    let fired: Vec<_> = app
        .events()
        .await
        .into_iter()
        .skip(before)
        .filter(|e| e.scheduled_at.is_some())
        .collect();
    assert!(!fired.is_empty());
    assert_eq!(f.body["total"], json!(fired.len()), "{}", f.body);
    for (ty, n) in f.body["by_type"].as_object().expect("map") {
        assert_eq!(
            n,
            &json!(fired.iter().filter(|e| &e.event_type == ty).count()),
            "{ty}"
        );
    }
    // Per hour, too: each event fired in the hour the forecast said.
    for hour in f.body["by_hour"].as_array().expect("list") {
        let start = support::t(hour["hour"].as_str().expect("hour"));
        let in_hour = fired
            .iter()
            .filter(|e| e.created >= start && e.created < start + chrono::TimeDelta::hours(1))
            .count();
        assert_eq!(hour["count"], json!(in_hour), "{hour}");
    }
    let r = app.admin_get("/admin/schedule/forecast").await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("until"))
    );
}

async fn timeline_tells_the_story_of_one_entity(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-03T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    // Extended: the first four timers are cancelled (anchor moved).
    app.request(
        reqwest::Method::PATCH,
        "/v1/orders/o-1",
        Some(json!({"due_at": "2030-03-05T12:00:00Z"})),
    )
    .await;
    // Down over the due_in_1_hour moment and past the anchor: skipped on restart.
    if let Some(a) = app.app.take() {
        a.shutdown().await;
    }
    app.clock.set(support::t("2030-03-05T12:30:00Z"));
    app.restart().await;
    app.advance(2 * DAY).await;
    let r = app.admin_get("/admin/entities/order/o-1/timeline").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let tl = r.body["timeline"].as_array().expect("list");
    let whats: Vec<&str> = tl
        .iter()
        .map(|e| e["what"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        whats.iter().filter(|w| **w == "event.change").count(),
        3,
        "create, checkout, update: {whats:?}"
    );
    assert_eq!(
        whats.iter().filter(|w| **w == "timer.cancelled").count(),
        4,
        "{whats:?}"
    );
    assert_eq!(
        whats.iter().filter(|w| **w == "timer.skipped").count(),
        2,
        "{whats:?}"
    );
    assert_eq!(
        whats.iter().filter(|w| **w == "timer.fired").count(),
        2,
        "{whats:?}"
    );
    assert_eq!(
        whats.iter().filter(|w| **w == "event.scheduled").count(),
        2,
        "{whats:?}"
    );
    let skip = tl
        .iter()
        .find(|e| e["what"] == "timer.skipped")
        .expect("skip");
    assert!(
        skip["reason"]
            .as_str()
            .is_some_and(|r| r.contains("misfire")),
        "{skip}"
    );
    let cancel = tl
        .iter()
        .find(|e| e["what"] == "timer.cancelled")
        .expect("cancel");
    assert!(
        cancel["reason"]
            .as_str()
            .is_some_and(|r| r.contains("anchor moved")),
        "{cancel}"
    );
    let ats: Vec<&str> = tl.iter().map(|e| e["at"].as_str().unwrap_or("")).collect();
    let mut sorted = ats.clone();
    sorted.sort();
    assert_eq!(ats, sorted, "in time order");
    assert_eq!(
        app.admin_get("/admin/entities/order/nope/timeline")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.admin_get("/admin/entities/ufo/x/timeline").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_move_when_things_happen(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let before = app.metrics().await;
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    app.advance(3 * DAY).await;
    let after = app.metrics().await;
    // Counters are process-wide (other tests run beside this one): they only grow by at least ours.
    let grew = |name: &str, label: &str, by: f64| {
        let (a, b) = (metric(&before, name, label), metric(&after, name, label));
        assert!(
            b - a >= by,
            "{name}{{{label}}} grew by {} (< {by})\n{after}",
            b - a
        );
    };
    grew("duehook_timers_total", "outcome=\"fired\"", 4.0);
    grew("duehook_events_total", "type=\"order.checkout\"", 1.0);
    grew(
        "duehook_http_requests_total",
        "route=\"/v1/orders/{id}/checkout\"",
        1.0,
    );
    grew("duehook_timer_lag_seconds_count", "", 4.0);
    assert!(after.contains("duehook_timers{state=\"fired\"}"), "{after}");
    assert!(after.contains("duehook_db_pool_connections"), "{after}");
}

async fn endpoint_health_for_operators(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let good = support::receiver::Receiver::start().await;
    let bad = support::receiver::Receiver::start().await;
    bad.set_default(support::receiver::Answer::status(503));
    for (name, rx) in [("good", &good), ("bad", &bad)] {
        let r = app
            .post(
                "/v1/endpoints",
                Some(json!({"name": name, "url": rx.url("/h"), "topics": ["item.*"]})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    app.put("/v1/items/i-1", json!({"name": "x"})).await;
    app.put("/v1/items/i-2", json!({"name": "y"})).await;
    app.advance(60).await;
    let r = app.admin_get("/admin/endpoints/health").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let eps = r.body["endpoints"].as_array().expect("list");
    let find = |n: &str| {
        eps.iter()
            .find(|e| e["name"] == n)
            .cloned()
            .expect("endpoint")
    };
    let (g, b) = (find("good"), find("bad"));
    assert_eq!(
        (
            g["success_rate"].clone(),
            g["pending"].clone(),
            g["state"].clone()
        ),
        (json!(1.0), json!(0), json!("enabled"))
    );
    assert_eq!(b["success_rate"], json!(0.0), "{b}");
    assert!(
        b["attempts"].as_i64().is_some_and(|n| n >= 4),
        "two events, retried: {b}"
    );
    assert_eq!(b["pending"], json!(2), "{b}");
    assert!(
        b["last_error"].as_str().is_some_and(|e| e.contains("503")),
        "{b}"
    );
    // Every status has its gauge, zeros included, and each agrees with the listing.
    let mut listed = Vec::new();
    for status in ["pending", "succeeded", "failed"] {
        let r = app.get(&format!("/v1/deliveries?status={status}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let n = r.body["deliveries"].as_array().expect("deliveries").len();
        listed.push(format!("duehook_deliveries{{status=\"{status}\"}} {n}"));
    }
    assert!(listed[0].ends_with("} 2"), "{listed:?}");
    // Gauges are process-wide and the other tests in this binary scrape their own apps
    // too: a scrape of ours may render another app's values set in between, so look
    // at a few scrapes before calling it wrong.
    let mut text = String::new();
    for _ in 0..20 {
        text = app.metrics().await;
        if listed.iter().all(|l| text.lines().any(|t| t == l)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for l in &listed {
        assert!(text.lines().any(|t| t == l), "{l} missing from:\n{text}");
    }
    assert!(text.contains("duehook_endpoints{state="), "{text}");
    assert!(text.contains("status_class=\"5xx\""), "{text}");
}

both_backends!(
    endpoint_health_for_operators,
    forecast_equals_what_then_fires,
    timeline_tells_the_story_of_one_entity,
    metrics_move_when_things_happen,
);
