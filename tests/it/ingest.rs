//! Black-box tests of the ingest API on SQLite and PostgreSQL: every path, idempotent
//! upserts, every class of bad input, authentication, and restarts.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Backend, TOKEN, TestApp};

fn reservation() -> Value {
    json!({
        "contact_id": "c-1",
        "item_ids": ["cam-1", "tripod-2"],
        "starts_at": "2030-03-12T09:00:00+01:00",
        "ends_at": "2030-03-14T17:00:00+01:00",
        "timezone": "Europe/Brussels",
        "data": {"note": "wedding shoot"}
    })
}

fn order(due_at: &str) -> Value {
    json!({"contact_id": "c-1", "item_ids": ["cam-1", "tripod-2"], "due_at": due_at})
}

async fn reservation_life_cycle(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app.put("/v1/reservations/res-1", reservation()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "reserved");
    assert_eq!(r.body["starts_at"], "2030-03-12T08:00:00Z", "stored in UTC");
    let event_id = r.headers["duehook-event-id"]
        .to_str()
        .expect("ascii")
        .to_string();

    // The same PUT again is a no-op: 200, no new event.
    let again = app.put("/v1/reservations/res-1", reservation()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(again.headers.get("duehook-event-id").is_none());

    let mut changed = reservation();
    changed["ends_at"] = json!("2030-03-15T17:00:00+01:00");
    let r = app.put("/v1/reservations/res-1", changed).await;
    assert_eq!(r.status, StatusCode::OK);

    let r = app.post("/v1/reservations/res-1/cancel", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "cancelled");
    let r = app.post("/v1/reservations/res-1/cancel", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "cancel twice");
    let r = app.put("/v1/reservations/res-1", reservation()).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "a cancelled reservation cannot change"
    );

    let events = app.events().await;
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "reservation.reserve",
            "reservation.update",
            "reservation.cancel"
        ]
    );
    assert_eq!(events[0].id, event_id);
    assert_eq!(events[0].data_value()["id"], "res-1");
    assert_eq!(
        events[0].created,
        support::t(support::START),
        "created on the app's clock"
    );

    let r = app.get("/v1/reservations/res-1").await;
    assert_eq!(
        (r.status, r.body["status"].clone()),
        (StatusCode::OK, json!("cancelled"))
    );
    assert_eq!(
        app.get("/v1/reservations/nope").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn order_life_cycle(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.put("/v1/reservations/res-1", reservation()).await;
    let mut body = order("2030-03-05T12:00:00Z");
    body["reservation_id"] = json!("res-1");
    let r = app.put("/v1/orders/o-1", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "open");

    // Illegal: check in before check-out.
    let r = app.post("/v1/orders/o-1/checkin", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["error"], "conflict");

    let r = app.post("/v1/orders/o-1/checkout", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["status"].clone(), r.body["items_out"].clone()),
        (json!("checked_out"), json!(2))
    );
    assert_eq!(
        app.get("/v1/reservations/res-1").await.body["status"],
        "picked_up"
    );

    let r = app
        .request(
            Method::PATCH,
            "/v1/orders/o-1",
            Some(json!({"due_at": "2030-03-06T12:00:00Z"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["due_at"].clone()),
        (StatusCode::OK, json!("2030-03-06T12:00:00Z"))
    );

    // Partial check-in keeps the order out.
    let r = app
        .post(
            "/v1/orders/o-1/checkin",
            Some(json!({"item_ids": ["cam-1"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["status"].clone(), r.body["items_out"].clone()),
        (json!("checked_out"), json!(1))
    );
    let r = app
        .post(
            "/v1/orders/o-1/checkin",
            Some(json!({"item_ids": ["nope"]})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("item_ids[0]"))
    );

    let r = app.post("/v1/orders/o-1/undo-checkout", None).await;
    assert_eq!(
        (r.status, r.body["status"].clone()),
        (StatusCode::OK, json!("open"))
    );
    app.post("/v1/orders/o-1/checkout", None).await;
    let r = app.post("/v1/orders/o-1/checkin", None).await;
    assert_eq!(
        (r.status, r.body["status"].clone()),
        (StatusCode::OK, json!("closed"))
    );
    assert_eq!(
        app.post("/v1/orders/o-1/undo-checkout", None).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.post("/v1/orders/nope/checkout", None).await.status,
        StatusCode::NOT_FOUND
    );

    let events = app.events().await;
    let order_events: Vec<_> = events.iter().filter(|e| e.entity_kind == "order").collect();
    let types: Vec<_> = order_events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "order.create",
            "order.checkout",
            "order.update",
            "order.checkin",
            "order.undocheckout",
            "order.checkout",
            "order.checkin"
        ]
    );
    let partial = order_events[3];
    assert_eq!(partial.data_value()["partial"], true);
    assert_eq!(
        partial.data_value()["checked_in_item_ids"],
        json!(["cam-1"])
    );
    assert_eq!(order_events[6].data_value()["partial"], false);
    assert_eq!(
        order_events[6].data_value()["checked_in_item_ids"],
        json!(["cam-1", "tripod-2"]),
        "undo reset both"
    );
}

async fn rentals_items_contacts_and_free_events(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let r = app
        .put(
            "/v1/invoices/inv-1",
            json!({"unit_rental_id": "ur-1", "due_at": "2030-03-10T00:00:00Z", "state": "sent"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("unit_rental_id"))
    );

    let r = app
        .put(
            "/v1/unit-rentals/ur-1",
            json!({"contact_id": "c-1", "unit_id": "A-12", "state": "occupied"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app
        .put(
            "/v1/invoices/inv-1",
            json!({"unit_rental_id": "ur-1", "due_at": "2030-03-10T00:00:00Z", "state": "sent"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = app
        .put(
            "/v1/invoices/inv-1",
            json!({"unit_rental_id": "ur-1", "due_at": "2030-03-10T00:00:00Z", "state": "paid"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["state"].clone()),
        (StatusCode::OK, json!("paid"))
    );
    let r = app
        .put(
            "/v1/invoices/inv-1",
            json!({"unit_rental_id": "ur-1", "due_at": "2030-03-10T00:00:00Z", "state": "lost"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("state"))
    );

    let r = app
        .put(
            "/v1/items/cam-1",
            json!({"name": "Camera", "expires_at": "2031-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        app.put(
            "/v1/items/cam-1",
            json!({"name": "Camera", "expires_at": "2031-01-01T00:00:00Z"})
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        app.put("/v1/items/cam-1", json!({"name": "Camera 2"}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.put(
            "/v1/contacts/c-1",
            json!({"name": "Ada", "email": "ada@example.com"})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.put(
            "/v1/contacts/c-1",
            json!({"name": "Ada L.", "email": "ada@example.com"})
        )
        .await
        .status,
        StatusCode::OK
    );

    let r = app
        .post(
            "/v1/events",
            Some(json!({"type": "booking.create", "data": {"id": 123456, "status": "CONFIRMED"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(
        r.body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("evt_"))
    );
    let r = app
        .post(
            "/v1/events",
            Some(json!({"type": "booking.explode", "data": {}})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("type"))
    );

    let events = app.events().await;
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "unitRental.updated",
            "unitRental.invoice.created",
            "invoice.state.updated",
            "item.create",
            "item.update",
            "contact.create",
            "contact.update",
            "booking.create"
        ]
    );
    let created = &events[1];
    assert_eq!(
        (
            created.entity_kind.as_str(),
            created.data_value()["id"].clone()
        ),
        ("unitRental", json!("ur-1"))
    );
    assert_eq!(
        created.data_value()["invoice"]["id"],
        "inv-1",
        "the invoice is named inside data"
    );
    assert_eq!(events[2].data_value()["previous_state"], "sent");
    assert_eq!(events[7].entity_id, "123456");

    let r = app.get("/v1/event-types").await;
    let list = r.body["event_types"].as_array().expect("a list");
    for wanted in [
        "order.overdue_1_day",
        "reservation.due_in_1_hour",
        "unitRental.markOverdue",
        "invoice.state.updated",
        "booking.update",
        "item.expire",
    ] {
        let entry = list
            .iter()
            .find(|e| e["type"] == wanted)
            .unwrap_or_else(|| panic!("{wanted} listed"));
        assert!(entry["description"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

async fn bad_input_is_a_clear_4xx_and_changes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.put("/v1/orders/o-1", order("2030-03-05T12:00:00Z"))
        .await;
    let before = app.get("/v1/orders/o-1").await.body;
    let events_before = app.events().await.len();

    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"contact_id": 7, "item_ids": ["a"], "due_at": "2030-03-05T12:00:00Z"}),
            "contact_id",
        ),
        (
            json!({"contact_id": "c", "item_ids": "a", "due_at": "2030-03-05T12:00:00Z"}),
            "item_ids",
        ),
        (
            json!({"contact_id": "c", "item_ids": ["a"], "due_at": "next tuesday"}),
            "due_at",
        ),
        (
            json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-02-30T12:00:00Z"}),
            "due_at",
        ),
        (
            json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-05T12:00:00Z", "timezone": "Europe/Atlantis"}),
            "timezone",
        ),
        (
            json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-05T12:00:00Z", "colour": "red"}),
            "colour",
        ),
        (
            json!({"contact_id": "c", "item_ids": [], "due_at": "2030-03-05T12:00:00Z"}),
            "item_ids",
        ),
        (
            json!({"contact_id": "c", "item_ids": ["a", "a"], "due_at": "2030-03-05T12:00:00Z"}),
            "item_ids[1]",
        ),
        (
            json!({"contact_id": "c d", "item_ids": ["a"], "due_at": "2030-03-05T12:00:00Z"}),
            "contact_id",
        ),
        (
            json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-05T12:00:00Z", "data": [1]}),
            "data",
        ),
        (
            json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-05T12:00:00Z", "reservation_id": "nope"}),
            "reservation_id",
        ),
    ];
    for (body, field) in cases {
        let r = app.put("/v1/orders/o-1", body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {}",
            r.body
        );
        assert_eq!(r.body["field"], field, "{body} → {}", r.body);
        assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let r = app.put("/v1/reservations/r-1", json!({"contact_id": "c", "item_ids": [], "starts_at": "2030-03-05T12:00:00Z", "ends_at": "2030-03-05T11:00:00Z"})).await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("ends_at"))
    );
    let r = app
        .put(
            &format!("/v1/orders/{}", "x".repeat(200)),
            order("2030-03-05T12:00:00Z"),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("id"))
    );

    let r = app
        .raw(
            Method::PUT,
            "/v1/orders/o-1",
            b"{\"contact_id\": ",
            "application/json",
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("malformed_json"))
    );
    let r = app
        .raw(
            Method::PUT,
            "/v1/orders/o-1",
            b"contact_id=c",
            "application/x-www-form-urlencoded",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = json!({"contact_id": "c", "item_ids": ["a"], "due_at": "2030-03-05T12:00:00Z", "data": {"blob": "x".repeat(300_000)}});
    let r = app.put("/v1/orders/o-1", huge).await;
    assert_eq!(
        (r.status, r.body["error"].clone()),
        (StatusCode::PAYLOAD_TOO_LARGE, json!("body_too_large"))
    );
    let deep = format!(
        "{{\"type\": \"booking.create\", \"data\": {}{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let r = app
        .raw(
            Method::POST,
            "/v1/events",
            Box::leak(deep.into_boxed_str()).as_bytes(),
            "application/json",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.request(Method::DELETE, "/v1/orders/o-1", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = app.get("/v1/nothing-here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    assert_eq!(
        app.get("/v1/orders/o-1").await.body,
        before,
        "nothing stored changed"
    );
    assert_eq!(
        app.events().await.len(),
        events_before,
        "no event was written"
    );
}

async fn auth_is_required(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for token in [None, Some("wrong-token-0123456789"), Some(ADMIN_TOKEN)] {
        let r = app
            .request_as(
                Method::PUT,
                "/v1/orders/o-1",
                Some(order("2030-03-05T12:00:00Z")),
                token,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(r.body["error"], "unauthorized");
        let r = app
            .request_as(Method::GET, "/v1/event-types", None, token)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    let r = app
        .request_as(Method::GET, "/v1/event-types", None, Some(TOKEN))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Health needs no token; readiness reports the store.
    let r = app.request_as(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.request_as(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.body["pending_migrations"].clone()),
        (StatusCode::OK, json!(0))
    );
    assert!(app.events().await.is_empty());
}

async fn restart_keeps_every_entity_and_event(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    app.put("/v1/contacts/c-1", json!({"name": "Ada"})).await;
    app.put("/v1/reservations/res-1", reservation()).await;
    app.put("/v1/orders/o-1", order("2030-03-05T12:00:00Z"))
        .await;
    app.post("/v1/orders/o-1/checkout", None).await;
    app.put("/v1/unit-rentals/ur-1", json!({})).await;
    app.put(
        "/v1/invoices/inv-1",
        json!({"unit_rental_id": "ur-1", "due_at": "2030-03-10T00:00:00Z", "state": "sent"}),
    )
    .await;
    app.put("/v1/items/cam-1", json!({"name": "Camera"})).await;
    let entities: Vec<Value> = futures::future::join_all(
        [
            "/v1/contacts/c-1",
            "/v1/reservations/res-1",
            "/v1/orders/o-1",
            "/v1/unit-rentals/ur-1",
            "/v1/invoices/inv-1",
            "/v1/items/cam-1",
        ]
        .map(|p| app.get(p)),
    )
    .await
    .into_iter()
    .map(|r| r.body)
    .collect();
    let events = app.events().await;
    assert_eq!(events.len(), 7);

    app.restart().await;
    for (path, before) in [
        "/v1/contacts/c-1",
        "/v1/reservations/res-1",
        "/v1/orders/o-1",
        "/v1/unit-rentals/ur-1",
        "/v1/invoices/inv-1",
        "/v1/items/cam-1",
    ]
    .iter()
    .zip(&entities)
    {
        assert_eq!(
            &app.get(path).await.body,
            before,
            "{path} survived the restart"
        );
    }
    assert_eq!(app.events().await, events);
    // And the restarted app still refuses what it should: idempotency survives too.
    assert_eq!(
        app.put("/v1/items/cam-1", json!({"name": "Camera"}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(app.events().await.len(), 7);
}

async fn concurrent_puts_of_one_entity_emit_one_event(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let replies = futures::future::join_all(
        (0..8).map(|_| app.put("/v1/items/drill-9", json!({"name": "Drill"}))),
    )
    .await;
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert!(replies.iter().all(|r| r.status.is_success()), "all succeed");
    assert_eq!(created, 1, "exactly one PUT created the item");
    assert_eq!(app.event_types().await, ["item.create"]);
}

/// Posted events are written in groups (one transaction for those that arrive
/// together): each request still gets its own event, stored before it is answered,
/// with the data it sent.
async fn concurrent_posted_events_are_each_stored_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let replies = futures::future::join_all((0..300).map(|i| {
        app.post(
            "/v1/events",
            Some(json!({"type": "booking.create", "data": {"id": i, "n": i}})),
        )
    }))
    .await;
    let mut ids = std::collections::HashSet::new();
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, StatusCode::CREATED, "{i}: {}", r.body);
        assert_eq!(
            r.body["data"]["n"],
            json!(i),
            "each answer is its own event"
        );
        assert!(ids.insert(r.body["id"].as_str().expect("id").to_string()));
    }
    let stored = app.events().await;
    assert_eq!(stored.len(), 300);
    for ev in &stored {
        assert!(ids.contains(&ev.id), "stored event {} was answered", ev.id);
        let n = ev.data_value()["n"].as_i64().expect("n");
        assert_eq!(ev.entity_id, n.to_string(), "data kept with its own event");
    }
}

/// An event's type and `data`.
struct Emitted {
    event_type: String,
    data: Value,
}

/// The event a change emitted, as the outbox holds it (and every endpoint receives it),
/// found by the id the answer names in `duehook-event-id`.
async fn emitted(app: &TestApp, r: &support::Reply) -> Emitted {
    let id = r
        .headers
        .get("duehook-event-id")
        .unwrap_or_else(|| panic!("the answer names its event: {}", r.body))
        .to_str()
        .expect("ascii");
    app.events()
        .await
        .into_iter()
        .find(|e| e.id == id)
        .map(|e| Emitted {
            data: e.data_value(),
            event_type: e.event_type,
        })
        .unwrap_or_else(|| panic!("event {id} is in the outbox"))
}

/// `r.body` without the keys `extra` (what an event adds to the entity it carries).
fn without(mut v: Value, extra: &[&str]) -> Value {
    let map = v.as_object_mut().expect("an object");
    for key in extra {
        assert!(map.remove(*key).is_some(), "`{key}` in {map:?}");
    }
    v
}

/// The wire format's promise: an event's `data` is the entity as its API returns it.
/// For every kind of entity, the answer to each change equals the `data` of the event
/// that change emitted (field names, null against absent, instants written the same
/// way), and `GET` answers the same entity.
async fn answers_are_what_events_carry(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Changes whose event carries exactly the entity, with the event type they emit.
    let mut changes = vec![
        (
            app.put(
                "/v1/contacts/c-1",
                json!({"name": "Ada", "email": "ada@example.com", "data": {"tier": "gold"}}),
            )
            .await,
            "contact.create",
        ),
        (
            app.put("/v1/contacts/c-2", json!({})).await,
            "contact.create",
        ),
        (
            app.put(
                "/v1/items/cam-1",
                json!({"name": "Camera", "expires_at": "2031-01-01T10:00:00.123456+01:00"}),
            )
            .await,
            "item.create",
        ),
        (
            app.put(
                "/v1/items/cam-2",
                json!({"name": "Tripod", "timezone": "Europe/Brussels"}),
            )
            .await,
            "item.create",
        ),
        (
            app.put("/v1/reservations/res-1", reservation()).await,
            "reservation.reserve",
        ),
    ];
    let mut moved = reservation();
    moved["ends_at"] = json!("2030-03-15T17:00:00.5+01:00");
    changes.push((
        app.put("/v1/reservations/res-1", moved).await,
        "reservation.update",
    ));
    app.put("/v1/reservations/res-2", reservation()).await;
    changes.push((
        app.post("/v1/reservations/res-2/cancel", None).await,
        "reservation.cancel",
    ));
    let mut body = order("2030-03-05T12:00:00Z");
    body["reservation_id"] = json!("res-1");
    body["data"] = json!({"desk": "front", "n": [1, null]});
    changes.push((app.put("/v1/orders/o-1", body).await, "order.create"));
    changes.push((
        app.patch(
            "/v1/orders/o-1",
            json!({"due_at": "2030-03-06T12:00:00.250Z"}),
        )
        .await,
        "order.update",
    ));
    changes.push((
        app.post("/v1/orders/o-1/checkout", None).await,
        "order.checkout",
    ));
    changes.push((
        app.post("/v1/orders/o-1/undo-checkout", None).await,
        "order.undocheckout",
    ));
    changes.push((
        app.put(
            "/v1/unit-rentals/ur-1",
            json!({"contact_id": "c-1", "unit_id": "A-12", "state": "occupied"}),
        )
        .await,
        "unitRental.updated",
    ));
    for (r, event_type) in &changes {
        assert!(r.status.is_success(), "{event_type}: {}", r.body);
        let ev = emitted(&app, r).await;
        assert_eq!(ev.event_type, *event_type);
        assert_eq!(
            ev.data, r.body,
            "{event_type}: data is the entity as answered"
        );
    }

    // A check-in's event adds what it covered to the order.
    app.post("/v1/orders/o-1/checkout", None).await;
    let r = app
        .post(
            "/v1/orders/o-1/checkin",
            Some(json!({"item_ids": ["cam-1"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ev = emitted(&app, &r).await;
    assert_eq!(ev.event_type, "order.checkin");
    assert_eq!(
        without(ev.data, &["checked_in_item_ids", "partial"]),
        r.body
    );

    // An invoice's creation is an event of its rental, which carries the invoice; a
    // change of state is the invoice's own event, with the state it left.
    let r = app
        .put(
            "/v1/invoices/inv-1",
            json!({"unit_rental_id": "ur-1", "due_at": "2030-03-10T00:00:00Z", "state": "sent"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let ev = emitted(&app, &r).await;
    assert_eq!(ev.event_type, "unitRental.invoice.created");
    assert_eq!(ev.data["invoice"], r.body);
    assert_eq!(
        without(ev.data, &["invoice"]),
        app.get("/v1/unit-rentals/ur-1").await.body
    );
    let r = app
        .put(
            "/v1/invoices/inv-1",
            json!({"unit_rental_id": "ur-1", "due_at": "2030-03-10T00:00:00Z", "state": "paid"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ev = emitted(&app, &r).await;
    assert_eq!(ev.event_type, "invoice.state.updated");
    assert_eq!(without(ev.data, &["previous_state"]), r.body);

    // GET answers each entity as its last change did.
    let last = |id: &str| {
        changes
            .iter()
            .rev()
            .find(|(r, _)| r.body["id"] == id)
            .map(|(r, _)| r.body.clone())
            .unwrap_or_else(|| panic!("a change of {id}"))
    };
    for (path, answered) in [
        ("/v1/contacts/c-1", last("c-1")),
        ("/v1/items/cam-1", last("cam-1")),
        ("/v1/reservations/res-2", last("res-2")),
        ("/v1/unit-rentals/ur-1", last("ur-1")),
        ("/v1/invoices/inv-1", r.body.clone()),
    ] {
        let got = app.get(path).await;
        assert_eq!((got.status, got.body), (StatusCode::OK, answered), "{path}");
    }

    // A posted event is answered as it is stored and sent.
    let r = app
        .post(
            "/v1/events",
            Some(json!({"type": "booking.create", "data": {"id": 7, "when": "2030-03-01T08:00:00Z"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().expect("id");
    let ev = app
        .events()
        .await
        .into_iter()
        .find(|e| e.id == id)
        .expect("stored");
    assert_eq!(
        r.body,
        json!({"id": ev.id, "type": ev.event_type, "created": ev.created, "data": ev.data})
    );
}

both_backends!(
    answers_are_what_events_carry,
    concurrent_posted_events_are_each_stored_once,
    reservation_life_cycle,
    order_life_cycle,
    rentals_items_contacts_and_free_events,
    bad_input_is_a_clear_4xx_and_changes_nothing,
    auth_is_required,
    restart_keeps_every_entity_and_event,
    concurrent_puts_of_one_entity_emit_one_event,
);
