//! Reminders end to end: timers fire on the manual clock, their events go through the
//! delivery pipeline to a real receiver on 127.0.0.1, signed, with `scheduled_at`;
//! retries happen at their own instants; a crash between firing and delivery loses
//! nothing and doubles nothing.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde_json::json;
use support::receiver::{Answer, Received, Receiver};
use support::{Backend, TestApp};

const DAY: i64 = 86_400;

fn verify_standard(secret: &str, r: &Received) {
    let wh = standardwebhooks::Webhook::new(secret).expect("secret");
    let id = r.header("webhook-id");
    let ts: i64 = r.header("webhook-timestamp").parse().expect("timestamp");
    let expected = wh.sign(&id, ts, &r.body).expect("sign");
    assert!(
        r.header("webhook-signature")
            .split(' ')
            .any(|s| s == expected),
        "signature verifies"
    );
}

async fn subscribe(app: &TestApp, rx: &Receiver, topics: serde_json::Value) -> String {
    let r = app
        .post(
            "/v1/endpoints",
            Some(json!({"name": "rx", "url": rx.url("/hook"), "topics": topics})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["secret"].as_str().expect("secret").to_string()
}

async fn reminders_reach_the_receiver_at_their_instant(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    let secret = subscribe(
        &app,
        &rx,
        json!([
            "order.due_in_1_day",
            "order.due_in_1_hour",
            "order.overdue_1_hour",
            "order.overdue_1_day"
        ]),
    )
    .await;
    // The overdue_1_day webhook fails twice (500, 503) before it is accepted.
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    app.advance_to("2030-03-03T11:00:00Z").await;
    assert_eq!(rx.received().len(), 3, "three reminders so far");
    rx.script(vec![Answer::status(500), Answer::status(503)]);
    app.advance(2 * DAY).await;

    let got = rx.received();
    assert_eq!(got.len(), 6, "4 reminders, one of them sent 3 times");
    let mut by_id: BTreeMap<String, Vec<&Received>> = BTreeMap::new();
    for r in &got {
        verify_standard(&secret, r);
        by_id.entry(r.header("webhook-id")).or_default().push(r);
    }
    assert_eq!(by_id.len(), 4, "one webhook-id per reminder");
    let expected = [
        ("order.due_in_1_day", "2030-03-01T12:00:00.000Z"),
        ("order.due_in_1_hour", "2030-03-02T11:00:00.000Z"),
        ("order.overdue_1_hour", "2030-03-02T13:00:00.000Z"),
        ("order.overdue_1_day", "2030-03-03T12:00:00.000Z"),
    ];
    for (ty, at) in expected {
        let sends: Vec<_> = by_id
            .values()
            .filter(|v| v[0].json()["type"] == ty)
            .collect();
        assert_eq!(sends.len(), 1, "{ty} sent as one event");
        let body = sends[0][0].json();
        assert_eq!(
            (body["scheduled_at"].as_str(), body["created"].as_str()),
            (Some(at), Some(at)),
            "{ty} fired at its instant"
        );
        assert_eq!(body["data"]["id"], "o-1");
    }
    let retried = by_id
        .values()
        .find(|v| v[0].json()["type"] == "order.overdue_1_day")
        .expect("sent");
    assert_eq!(
        retried.len(),
        3,
        "500, 503, then 200, with the same webhook-id"
    );
    assert!(
        retried.iter().all(|r| r.body == retried[0].body),
        "the same bytes each time"
    );
    // The retries happened at their own instants on the clock: immediately, then ~5 s later.
    let d = app
        .get("/v1/deliveries?event_type=order.overdue_1_day")
        .await;
    let delivery = &d.body["deliveries"][0];
    assert_eq!(delivery["status"], "succeeded", "{}", d.body);
}

async fn a_crash_between_firing_and_delivery_loses_nothing(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    subscribe(&app, &rx, json!(["order.*"])).await;
    for i in 0..5 {
        app.put(
            &format!("/v1/orders/o-{i}"),
            json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
        )
        .await;
        app.post(&format!("/v1/orders/o-{i}/checkout"), None).await;
    }
    // The receiver is down while the reminders fire.
    rx.set_default(Answer::status(503));
    app.advance_to("2030-03-02T14:00:00Z").await;
    let fired_before: Vec<_> = app
        .events()
        .await
        .into_iter()
        .filter(|e| e.scheduled_at.is_some())
        .collect();
    assert_eq!(fired_before.len(), 15, "3 reminders x 5 orders fired");
    // Crash: tasks dropped mid-flight; restart on the same store; the receiver recovers.
    if let Some(a) = app.app.take() {
        a.abort();
    }
    rx.set_default(Answer::status(200));
    app.restart().await;
    app.advance(2 * DAY).await;

    let events = app.events().await;
    let reminders: Vec<_> = events.iter().filter(|e| e.scheduled_at.is_some()).collect();
    assert_eq!(
        reminders.len(),
        20,
        "4 reminders x 5 orders, each fired once"
    );
    let accepted: BTreeSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    for e in &events {
        assert!(
            accepted.contains(&e.id),
            "{} ({}) reached the receiver",
            e.event_type,
            e.id
        );
    }
    let ids: BTreeSet<_> = reminders.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 20);
    // Every webhook the receiver saw is one of our events: re-sends carried the same id.
    let all_ids: BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();
    assert!(
        rx.received()
            .iter()
            .all(|r| all_ids.contains(&r.header("webhook-id")))
    );
}

async fn retention_purges_only_what_is_finished(backend: Backend) {
    use support::ClockExt;
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ok = Receiver::start().await;
    subscribe(&app, &ok, json!(["order.*"])).await;
    let down = Receiver::start().await;
    down.set_default(Answer::status(503));
    let r = app
        .post(
            "/v1/endpoints",
            Some(json!({"name": "off", "url": down.url("/off"), "topics": ["item.*"]})),
        )
        .await;
    let off = r.body["id"].as_str().expect("id").to_string();
    app.put(
        "/v1/orders/o-1",
        json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
    )
    .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    app.put("/v1/items/i-1", json!({"name": "x"})).await;
    // The item's webhook fails once; then the endpoint is switched off: it stays pending.
    app.advance(1).await;
    down.wait_for(1).await;
    assert_eq!(
        app.post(&format!("/v1/endpoints/{off}/disable"), Some(json!({})))
            .await
            .status,
        StatusCode::OK
    );
    app.advance(40 * DAY).await;
    let before = app.events().await.len();
    assert_eq!(
        before, 7,
        "order.create, checkout, 4 reminders, item.create"
    );
    let n = app
        .app()
        .probe()
        .purge(app.clock.now_utc() - chrono::TimeDelta::days(30))
        .await
        .expect("purge");
    assert!(n > 0);
    let left = app.events().await;
    assert_eq!(
        left.iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["item.create"],
        "its delivery is still pending"
    );
    let d = app.get(&format!("/v1/deliveries?endpoint_id={off}")).await;
    assert_eq!(
        d.body["deliveries"].as_array().map(Vec::len),
        Some(1),
        "{}",
        d.body
    );
}

/// Fired reminders whose endpoint has room go to the delivery worker in memory,
/// written already claimed by the firing transaction (a hand-off): they are sent once,
/// signed, and a retry read back from the store carries the same bytes.
async fn fired_reminders_are_handed_to_the_worker(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    let secret = subscribe(&app, &rx, json!(["order.*"])).await;
    const ORDERS: usize = 30;
    for i in 0..ORDERS {
        app.put(
            &format!("/v1/orders/o-{i}"),
            json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-02T12:00:00Z"}),
        )
        .await;
        app.post(&format!("/v1/orders/o-{i}/checkout"), None).await;
    }
    // The orders' webhooks (create, checkout) succeed: the endpoint answers quickly, so
    // its lane asks for hand-offs.
    let immediate = app.events().await.len();
    rx.wait_for(immediate).await;
    let before = app.app().deliveries_handed_off();
    // due_in_1_day: all thirty fire at one instant, in one batch.
    app.advance_to("2030-03-01T12:00:01Z").await;
    rx.wait_for(immediate + ORDERS).await;
    let handed = app.app().deliveries_handed_off() - before;
    assert!(
        handed >= ORDERS as u64,
        "the batch's {ORDERS} deliveries were handed to the worker ({handed})"
    );
    // due_in_1_hour: the first ten sends fail and are retried from the store.
    rx.script(vec![Answer::status(500); 10]);
    app.advance_to("2030-03-02T11:30:00Z").await;
    app.advance(60).await;

    let got = rx.wait_for(immediate + 2 * ORDERS + 10).await;
    let mut by_id: BTreeMap<String, Vec<&Received>> = BTreeMap::new();
    for r in &got {
        verify_standard(&secret, r);
        by_id.entry(r.header("webhook-id")).or_default().push(r);
    }
    assert_eq!(
        by_id.len(),
        immediate + 2 * ORDERS,
        "one webhook-id per event"
    );
    let retried: Vec<_> = by_id.values().filter(|v| v.len() > 1).collect();
    assert_eq!(retried.len(), 10, "ten sent twice");
    for sends in &retried {
        assert_eq!(sends.len(), 2);
        assert_eq!(
            sends[0].body, sends[1].body,
            "a retry read from the store sends the bytes the hand-off sent"
        );
        assert_eq!(sends[0].json()["type"], "order.due_in_1_hour");
    }
    let d = app
        .get("/v1/deliveries?event_type=order.due_in_1_hour&status=succeeded")
        .await;
    assert_eq!(
        d.body["deliveries"].as_array().map(Vec::len),
        Some(ORDERS),
        "{}",
        d.body
    );
}

both_backends!(
    retention_purges_only_what_is_finished,
    reminders_reach_the_receiver_at_their_instant,
    a_crash_between_firing_and_delivery_loses_nothing,
    fired_reminders_are_handed_to_the_worker
);
