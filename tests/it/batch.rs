//! `POST /v1/batch`: many ingest operations in one request, each answered as its own
//! route would answer it, committed many per transaction before the answer.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Backend, TestApp};

/// A mix of every kind of ingest operation, valid in this order.
fn mixed() -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        (
            "PUT",
            "/v1/contacts/c-1".into(),
            Some(json!({"name": "Ada"})),
        ),
        (
            "PUT",
            "/v1/items/i-1".into(),
            Some(json!({"name": "Camera", "expires_at": "2030-03-20T00:00:00Z"})),
        ),
        (
            "PUT",
            "/v1/reservations/r-1".into(),
            Some(
                json!({"contact_id": "c-1", "item_ids": ["i-1"], "starts_at": "2030-03-05T09:00:00Z", "ends_at": "2030-03-06T09:00:00Z"}),
            ),
        ),
        (
            "PUT",
            "/v1/orders/o-1".into(),
            Some(
                json!({"contact_id": "c-1", "item_ids": ["i-1", "i-2"], "due_at": "2030-03-04T09:00:00Z", "reservation_id": "r-1"}),
            ),
        ),
        ("POST", "/v1/orders/o-1/checkout".into(), None),
        (
            "PATCH",
            "/v1/orders/o-1".into(),
            Some(json!({"due_at": "2030-03-07T09:00:00Z"})),
        ),
        (
            "POST",
            "/v1/orders/o-1/checkin".into(),
            Some(json!({"item_ids": ["i-1"]})),
        ),
        (
            "PUT",
            "/v1/reservations/r-2".into(),
            Some(
                json!({"contact_id": "c-1", "item_ids": ["i-1"], "starts_at": "2030-03-08T09:00:00Z", "ends_at": "2030-03-09T09:00:00Z"}),
            ),
        ),
        ("POST", "/v1/reservations/r-2/cancel".into(), None),
        ("PUT", "/v1/unit-rentals/u-1".into(), Some(json!({}))),
        (
            "PUT",
            "/v1/invoices/n-1".into(),
            Some(
                json!({"unit_rental_id": "u-1", "due_at": "2030-03-10T00:00:00Z", "state": "sent"}),
            ),
        ),
        (
            "PUT",
            "/v1/orders/o-2".into(),
            Some(
                json!({"contact_id": "c-1", "item_ids": ["i-3"], "due_at": "2030-03-04T09:00:00Z"}),
            ),
        ),
        ("POST", "/v1/orders/o-2/checkout".into(), None),
        ("POST", "/v1/orders/o-2/undo-checkout".into(), None),
        (
            "POST",
            "/v1/events".into(),
            Some(json!({"type": "item.create", "data": {"id": "i-9"}})),
        ),
    ]
}

fn operations(ops: &[(&str, String, Option<Value>)]) -> Value {
    let ops: Vec<Value> = ops
        .iter()
        .map(|(method, path, body)| match body {
            Some(b) => json!({"method": method, "path": path, "body": b}),
            None => json!({"method": method, "path": path}),
        })
        .collect();
    json!({ "operations": ops })
}

/// What the app holds for the comparison: each entity through the API, every event
/// (type, entity, data without instants of the moment it was written) and every
/// timer of each entity.
async fn snapshot(app: &TestApp) -> Value {
    picture(
        app,
        &[
            "/v1/contacts/c-1",
            "/v1/items/i-1",
            "/v1/reservations/r-1",
            "/v1/reservations/r-2",
            "/v1/orders/o-1",
            "/v1/orders/o-2",
            "/v1/unit-rentals/u-1",
            "/v1/invoices/n-1",
        ],
        None,
        &[
            ("item", "i-1"),
            ("reservation", "r-1"),
            ("reservation", "r-2"),
            ("order", "o-1"),
            ("order", "o-2"),
            ("invoice", "n-1"),
        ],
    )
    .await
}

/// Entities as the app holds them, to compare two apps: each at `paths` through the
/// API, the events of the entities `ids` (every event with `None`), and the timers of
/// the entities `timers`, without what names the moment or the node (ids).
async fn picture(
    app: &TestApp,
    paths: &[&str],
    ids: Option<&[&str]>,
    timers: &[(&str, &str)],
) -> Value {
    let mut entities = Vec::new();
    for path in paths {
        let r = app.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        entities.push(r.body);
    }
    let events: Vec<Value> = app
        .events()
        .await
        .into_iter()
        .filter(|e| ids.is_none_or(|ids| ids.contains(&e.entity_id.as_str())))
        .map(|e| json!([e.event_type, e.entity_kind, e.entity_id, e.data]))
        .collect();
    let mut rows = Vec::new();
    for (kind, id) in timers {
        for mut t in app.timers_of(kind, id).await {
            if let Some(m) = t.as_object_mut() {
                m.remove("id");
                m.remove("event_id");
            }
            rows.push(t);
        }
    }
    json!({"entities": entities, "events": events, "timers": rows})
}

async fn same_as_sent_singly(backend: Backend) {
    let Some(single) = TestApp::spawn(backend).await else {
        return;
    };
    let Some(batched) = TestApp::spawn(backend).await else {
        return;
    };
    let ops = mixed();
    let mut expected = Vec::new();
    for (method, path, body) in &ops {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let r = single.request(method, path, body.clone()).await;
        assert!(r.status.is_success(), "{path}: {}", r.body);
        expected.push((r.status.as_u16(), r.body));
    }
    let r = batched.post("/v1/batch", Some(operations(&ops))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let results = r.body["results"].as_array().expect("results");
    assert_eq!(results.len(), ops.len(), "one result per operation");
    for ((status, body), result) in expected.iter().zip(results) {
        assert_eq!(result["status"], json!(status), "{result}");
        if body.get("type").is_some() {
            // A posted event: its id and instant are its own.
            assert_eq!(result["body"]["type"], body["type"]);
            assert_eq!(result["body"]["data"], body["data"]);
        } else {
            assert_eq!(
                result["body"], *body,
                "the entity as the single route answers it"
            );
        }
    }
    assert_eq!(snapshot(&batched).await, snapshot(&single).await);
    assert!(
        !batched.timers_of("order", "o-1").await.is_empty(),
        "the batch planned timers"
    );
}

async fn a_bad_operation_fails_alone(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = json!({"operations": [
        {"method": "PUT", "path": "/v1/items/i-1", "body": {"name": "Camera"}},
        {"method": "PUT", "path": "/v1/orders/o-1", "body": {"contact_id": "c-1", "item_ids": ["i-1"], "due_at": "next tuesday"}},
        {"method": "PUT", "path": "/v1/items/i-2", "body": {"name": "Tripod", "colour": "red"}},
        {"method": "POST", "path": "/v1/endpoints", "body": {"name": "x", "url": "http://127.0.0.1:9/", "topics": ["*"]}},
        {"method": "GET", "path": "/v1/items/i-1"},
        {"method": "POST", "path": "/v1/orders/nobody/checkout"},
        {"method": "PUT", "path": "/v1/items/i-6"},
        {"path": "/v1/items/i-3"},
        "not an operation",
        {"method": "POST", "path": "/v1/events", "body": {"type": "no.such.type", "data": {}}},
        {"method": "PUT", "path": "/v1/items/i-4", "body": {"name": "Lamp \u{0}"}},
        {"method": "PUT", "path": "/v1/items/i-5", "body": {"name": "Lens"}}
    ]});
    let r = app.post("/v1/batch", Some(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let results = r.body["results"].as_array().expect("results");
    let summary: Vec<(u64, Option<&str>)> = results
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().expect("status"),
                r["body"]["field"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (201, None),
            (422, Some("due_at")),
            (422, Some("colour")),
            (422, Some("path")),
            (405, Some("method")),
            (404, None),
            (422, Some("body")),
            (422, Some("body")),
            (422, Some("body")),
            (422, Some("type")),
            (422, Some("body")),
            (201, None),
        ],
        "{}",
        r.body
    );
    assert_eq!(results[5]["body"]["error"], "not_found");
    assert_eq!(app.get("/v1/items/i-1").await.status, StatusCode::OK);
    assert_eq!(app.get("/v1/items/i-5").await.status, StatusCode::OK);
    for gone in ["/v1/items/i-2", "/v1/items/i-4", "/v1/orders/o-1"] {
        assert_eq!(app.get(gone).await.status, StatusCode::NOT_FOUND, "{gone}");
    }
    let endpoints = app.get("/v1/endpoints").await;
    assert_eq!(
        endpoints.body["endpoints"],
        json!([]),
        "no endpoint created"
    );
    assert_eq!(
        app.event_types().await,
        vec!["item.create", "item.create"],
        "the good operations' events only"
    );
}

/// `Prefer: return=minimal`: applied operations answer their status only, failed ones
/// keep their error, and everything applied is stored as without the preference.
async fn a_minimal_answer_carries_statuses_and_errors(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = json!({"operations": [
        {"method": "PUT", "path": "/v1/items/i-1", "body": {"name": "Camera", "expires_at": "2030-06-01T00:00:00Z"}},
        {"method": "PUT", "path": "/v1/orders/o-1", "body": {"contact_id": "c-1", "item_ids": ["i-1"], "due_at": "next tuesday"}},
        {"method": "POST", "path": "/v1/events", "body": {"type": "booking.create", "data": {"id": "b-1"}}},
        {"method": "PUT", "path": "/v1/items/i-1", "body": {"name": "Camera A", "expires_at": "2030-06-01T00:00:00Z"}}
    ]});
    let (applied, answer) =
        batch_preferring(&app, "handling=lenient, Return=\"minimal\"; x=1", body).await;
    assert_eq!(applied.as_deref(), Some("return=minimal"));
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results[0], json!({"status": 201}), "{answer}");
    assert_eq!(results[1]["status"], 422, "{answer}");
    assert_eq!(
        results[1]["body"]["field"], "due_at",
        "a failed operation keeps its error: {answer}"
    );
    assert_eq!(results[2], json!({"status": 201}), "{answer}");
    assert_eq!(results[3], json!({"status": 200}), "{answer}");
    assert_eq!(app.get("/v1/items/i-1").await.body["name"], "Camera A");
    assert_eq!(
        app.event_types().await,
        vec!["item.create", "booking.create", "item.update"]
    );
    assert_eq!(app.timers_of("item", "i-1").await.len(), 1);

    // Any other preference leaves the answer whole.
    let body = json!({"operations": [
        {"method": "PUT", "path": "/v1/contacts/c-1", "body": {"name": "Ada"}}
    ]});
    let (applied, answer) = batch_preferring(&app, "return=representation", body).await;
    assert_eq!(applied, None);
    assert_eq!(answer["results"][0]["body"]["name"], "Ada", "{answer}");
}

/// `POST /v1/batch` with `body` and the header `Prefer: {prefer}`; asserts a 200 and
/// returns the answer's `Preference-Applied` and its JSON.
async fn batch_preferring(app: &TestApp, prefer: &str, body: Value) -> (Option<String>, Value) {
    let res = app
        .client
        .post(app.url("/v1/batch"))
        .bearer_auth(support::TOKEN)
        .header("prefer", prefer)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("batch");
    assert_eq!(res.status(), StatusCode::OK);
    let applied = res
        .headers()
        .get("preference-applied")
        .map(|v| v.to_str().expect("header text").to_string());
    let answer = serde_json::from_str(&res.text().await.expect("answer")).expect("JSON");
    (applied, answer)
}

async fn limits(backend: Backend) {
    let Some(app) = TestApp::spawn_config(backend, |c| {
        c.server.max_body_bytes = 4096;
        c.server.max_batch_bytes = 64 * 1024;
    })
    .await
    else {
        return;
    };
    let op = json!({"method": "PUT", "path": "/v1/contacts/c-1", "body": {"name": "Ada"}});
    let too_many = json!({"operations": vec![op.clone(); 10_001]});
    let big = app.post("/v1/batch", Some(too_many)).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", big.body);
    assert_eq!(big.body["error"], "body_too_large");
    assert_eq!(
        big.headers["connection"], "close",
        "the unread rest of the body ends the connection, and the answer says so"
    );
    assert!(
        big.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("max_batch_bytes"),
        "{}",
        big.body
    );
    // A batch is bounded by its own limit, not by the single routes' one.
    let under = json!({"operations": vec![op.clone(); 500]});
    assert!(under.to_string().len() > app.config.server.max_body_bytes);
    let r = app.post("/v1/batch", Some(under)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["results"][0]["status"], 201);
    assert_eq!(r.body["results"][499]["status"], 200, "the same PUT again");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM events", &[]).await, 1);

    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let too_many = json!({"operations": vec![op; 10_001]});
    let r = app.post("/v1/batch", Some(too_many)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["field"], "operations");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM contacts", &[]).await, 0);
    let r = app.post("/v1/batch", Some(json!({"operations": []}))).await;
    assert_eq!(
        (r.status, &r.body),
        (StatusCode::OK, &json!({"results": []}))
    );
    let r = app.post("/v1/batch", Some(json!({"ops": []}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
}

async fn one_entity_twice_in_order(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let order = |due: &str| json!({"contact_id": "c-1", "item_ids": ["i-1"], "due_at": due});
    let body = json!({"operations": [
        {"method": "PUT", "path": "/v1/orders/o-1", "body": order("2030-03-04T09:00:00Z")},
        {"method": "POST", "path": "/v1/orders/o-1/checkout"},
        {"method": "PUT", "path": "/v1/orders/o-1", "body": order("2030-03-06T09:00:00Z")},
        {"method": "POST", "path": "/v1/orders/o-1/checkout"},
        {"method": "PATCH", "path": "/v1/orders/o-1", "body": {"due_at": "2030-03-04T09:00:00Z"}}
    ]});
    let r = app.post("/v1/batch", Some(body)).await;
    assert_eq!(statuses(&r), vec![201, 200, 200, 409, 200], "{}", r.body);
    assert_eq!(
        r.body["results"][2]["body"]["due_at"],
        "2030-03-06T09:00:00Z"
    );
    assert_eq!(r.body["results"][2]["body"]["status"], "checked_out");
    let o = app.get("/v1/orders/o-1").await;
    assert_eq!(
        o.body["due_at"], "2030-03-04T09:00:00Z",
        "the last change wins"
    );
    let events: Vec<(String, i64)> = app
        .events()
        .await
        .into_iter()
        .map(|e| (e.event_type, e.seq))
        .collect();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "order.create",
            "order.checkout",
            "order.update",
            "order.update"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].1 < w[1].1), "in order");
    // Planned at the second due date, moved back to the first: the pending timers
    // are the last plan's, each moment once.
    let timers = app.timers_of("order", "o-1").await;
    let pending: Vec<&Value> = timers.iter().filter(|t| t["state"] == "pending").collect();
    assert_eq!(pending.len(), 4, "{timers:#?}");
    assert!(
        pending
            .iter()
            .all(|t| t["anchor_at"] == "2030-03-04T09:00:00Z"),
        "{timers:#?}"
    );
    let cancelled = timers.iter().filter(|t| t["state"] == "cancelled").count();
    assert_eq!(cancelled, 8, "the two earlier plans' timers, cancelled");
}

async fn an_answered_batch_survives_a_restart(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    // More operations than one transaction takes on either backend.
    let ops: Vec<Value> = (0..5_000)
        .map(|i| {
            json!({"method": "PUT", "path": format!("/v1/reservations/r-{i}"), "body":
                {"contact_id": "c-1", "item_ids": ["i-1"], "starts_at": "2030-03-05T09:00:00Z", "ends_at": "2030-03-06T09:00:00Z"}})
        })
        .collect();
    let r = app
        .post("/v1/batch", Some(json!({ "operations": ops })))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    app.restart().await;
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM reservations", &[]).await,
        5_000
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM timers WHERE state = 'pending'", &[])
            .await,
        20_000,
        "four timers each"
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM events", &[]).await, 5_000);
    let r = app.get("/v1/reservations/r-4999").await;
    assert_eq!(r.status, StatusCode::OK);
    // And the timers fire: the first reminder of each, a day before pickup.
    app.advance_to("2030-03-04T09:00:00Z").await;
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM events WHERE type = 'reservation.due_in_1_day'",
            &[]
        )
        .await,
        5_000
    );
}

/// A batch larger than a transaction is written as a queue of transactions; on SQLite
/// the writer applies the next while the one before it is written, reading what the
/// next names before the writes it must not see, and applies afresh, after the commit,
/// a group that names a row the one before it held or that needs a read of its own.
/// Either way each operation sees the ones before it, exactly as when sent alone: here
/// a group cancels the reservations the group before it created, another changes
/// reservations created three groups earlier, and a paid invoice lifts its rental's
/// overdue mark (a read of the rental's other invoices, made while applying).
async fn transactions_of_a_batch_see_the_ones_before(backend: Backend) {
    let Some(batched) = TestApp::spawn(backend).await else {
        return;
    };
    let Some(single) = TestApp::spawn(backend).await else {
        return;
    };
    let invoice = |state: &str| json!({"unit_rental_id": "u-1", "due_at": "2030-03-05T00:00:00Z", "state": state});
    for app in [&batched, &single] {
        app.put("/v1/unit-rentals/u-1", json!({})).await;
        app.put("/v1/invoices/n-1", invoice("sent")).await;
        app.advance_to("2030-03-05T00:00:01Z").await;
        assert_eq!(app.get("/v1/unit-rentals/u-1").await.body["overdue"], true);
    }
    let reservation = |day: u32| {
        json!({"contact_id": "c-1", "item_ids": ["i-1"],
               "starts_at": format!("2030-03-{day}T09:00:00Z"),
               "ends_at": format!("2030-03-{}T09:00:00Z", day + 1)})
    };
    // SQLite's transactions of a batch hold 2,048 operations (PostgreSQL's 512).
    let group = 2048;
    let mut ops: Vec<(&str, String, Option<Value>)> = Vec::new();
    for i in 0..group {
        ops.push((
            "PUT",
            format!("/v1/reservations/r-{i}"),
            Some(reservation(10)),
        ));
    }
    for i in 0..group {
        ops.push((
            "PUT",
            format!("/v1/reservations/q-{i}"),
            Some(reservation(10)),
        ));
    }
    for i in 0..group {
        ops.push(("POST", format!("/v1/reservations/q-{i}/cancel"), None));
    }
    for i in 0..10 {
        ops.push((
            "PUT",
            format!("/v1/reservations/r-{i}"),
            Some(reservation(12)),
        ));
    }
    ops.push(("PUT", "/v1/invoices/n-1".into(), Some(invoice("paid"))));

    let ahead_before = applied_ahead(&batched).await;
    let r = batched.post("/v1/batch", Some(operations(&ops))).await;
    let mut expected = vec![201; 2 * group];
    expected.extend(vec![200; group + 11]);
    assert_eq!(statuses(&r), expected);

    // The same operations of three of the entities, sent alone.
    for (method, path, body) in ops.iter().filter(|(_, path, _)| {
        path.ends_with("/r-3") || path.contains("/q-3") || path.ends_with("/n-1")
    }) {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let r = single.request(method, path, body.clone()).await;
        assert!(r.status.is_success(), "{path}: {}", r.body);
    }
    let paths = [
        "/v1/reservations/r-3",
        "/v1/reservations/q-3",
        "/v1/unit-rentals/u-1",
        "/v1/invoices/n-1",
    ];
    let ids: &[&str] = &["r-3", "q-3", "u-1"];
    let timers = [
        ("reservation", "r-3"),
        ("reservation", "q-3"),
        ("invoice", "n-1"),
    ];
    let got = picture(&batched, &paths, Some(ids), &timers).await;
    let want = picture(&single, &paths, Some(ids), &timers).await;
    assert_eq!(got, want);
    assert_eq!(got["entities"][1]["status"], "cancelled");
    assert_eq!(got["entities"][2]["overdue"], false, "{got:#}");
    assert_eq!(
        batched.get("/v1/reservations/q-1023").await.body["status"],
        "cancelled"
    );

    if backend == Backend::Sqlite {
        assert!(
            applied_ahead(&batched).await > ahead_before,
            "a transaction of the batch was applied while the one before it was written"
        );
    }
}

/// The status of each operation of an answered batch, in order.
fn statuses(r: &support::Reply) -> Vec<u64> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect()
}

/// Ingest transactions applied ahead so far, in the apps of every test.
async fn applied_ahead(app: &TestApp) -> f64 {
    app.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("duehook_ingest_transactions_total{applied=\"ahead\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// PostgreSQL plans reads with the statistics it last gathered; an import into a new
/// store outgrows them long before autovacuum's refresh, so the store refreshes the
/// timers' statistics itself (`last_analyze`, not autovacuum's `last_autoanalyze`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statistics_follow_an_import() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let analyzed = "SELECT COUNT(*) FROM pg_stat_user_tables
                    WHERE relname = 'timers' AND last_analyze IS NOT NULL";
    let import = |from: usize| -> Value {
        let ops: Vec<Value> = (from..from + 3_000)
            .map(|i| {
                json!({"method": "PUT", "path": format!("/v1/reservations/r-{i}"), "body":
                    {"contact_id": "c-1", "item_ids": ["i-1"], "starts_at": "2030-03-05T09:00:00Z", "ends_at": "2030-03-06T09:00:00Z"}})
            })
            .collect();
        json!({ "operations": ops })
    };
    // 12,000 timers: fewer than a refresh waits for.
    let r = app.post("/v1/batch", Some(import(0))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.scalar(analyzed, &[]).await, 0, "not refreshed yet");
    // 24,000: refreshed in the background.
    let r = app.post("/v1/batch", Some(import(3_000))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.scalar(analyzed, &[]).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the timers' statistics were not refreshed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

both_backends!(
    same_as_sent_singly,
    a_bad_operation_fails_alone,
    a_minimal_answer_carries_statuses_and_errors,
    limits,
    one_entity_twice_in_order,
    an_answered_batch_survives_a_restart,
    transactions_of_a_batch_see_the_ones_before,
);
