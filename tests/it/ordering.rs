//! Ordered delivery: an endpoint's deliveries go out in the order their events were
//! written, per entity (`ordering: entity`) or for the whole endpoint (`endpoint`),
//! whatever fails on the way; unordered endpoints still get every event, each with a
//! `duehook-sequence` a receiver can drop stale events by.

use std::collections::{BTreeMap, HashMap, HashSet};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::receiver::{Received, Receiver};
use crate::support::{self, Backend, TestApp};

const ENTITIES: usize = 8;
const ROUNDS: usize = 6;

/// An endpoint on `rx` for `contact.*` with `ordering`, retrying quickly and long
/// enough that nothing fails for good.
async fn endpoint(app: &TestApp, rx: &Receiver, ordering: &str, extra: Value) -> Value {
    let mut body = json!({
        "name": format!("ordered {ordering}"),
        "url": rx.url("/hook"),
        "topics": ["contact.*"],
        "ordering": ordering,
        "retry": {"schedule": "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s"},
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let r = app.post("/v1/endpoints", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

/// Posts ROUNDS updates of ENTITIES contacts, round by round; returns the event ids in
/// the order they were written, each with its contact.
async fn post_updates(app: &TestApp) -> Vec<(String, String)> {
    let mut written = Vec::new();
    for round in 0..ROUNDS {
        for e in 0..ENTITIES {
            let contact = format!("c-{e}");
            let r = app
                .post(
                    "/v1/events",
                    Some(
                        json!({"type": "contact.update", "data": {"id": contact, "round": round}}),
                    ),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            written.push((r.body["id"].as_str().expect("id").to_string(), contact));
        }
    }
    written
}

/// Moves the manual clock on (retries come due) until every event in `written` was
/// answered 200 at `rx`.
async fn deliver_all(app: &TestApp, rx: &Receiver, written: &[(String, String)]) {
    let want: HashSet<&str> = written.iter().map(|(id, _)| id.as_str()).collect();
    for _ in 0..300 {
        let ok: HashSet<String> = rx
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.header("webhook-id"))
            .collect();
        if want.iter().all(|id| ok.contains(*id)) {
            return;
        }
        let r = app.advance(2).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let ok: HashSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    let missing: Vec<&&str> = want.iter().filter(|id| !ok.contains(**id)).collect();
    panic!("events never delivered: {missing:?}");
}

/// Checks, in the receiver's order of arrival, that no attempt at an event came before
/// every earlier event of its key (`key_of`) had been answered 200. `written` holds
/// the events in the order written, each with what `key_of` makes its key of.
pub fn assert_in_order(
    log: &[Received],
    written: &[(String, String)],
    key_of: impl Fn(&str) -> String,
) {
    let place: HashMap<&str, (usize, &str)> = written
        .iter()
        .enumerate()
        .map(|(i, (id, contact))| (id.as_str(), (i, contact.as_str())))
        .collect();
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (_, contact)) in written.iter().enumerate() {
        by_key.entry(key_of(contact)).or_default().push(i);
    }
    let mut done: HashSet<usize> = HashSet::new();
    let mut seen: Vec<(usize, u16)> = Vec::new();
    for r in log {
        let id = r.header("webhook-id");
        let Some(&(i, contact)) = place.get(id.as_str()) else {
            continue;
        };
        seen.push((i, r.status));
        let key = key_of(contact);
        for earlier in by_key[&key].iter().take_while(|&&j| j < i) {
            assert!(
                done.contains(earlier),
                "{id} (write #{i}, key {key}) was sent before write #{earlier} of its key was \
                 delivered; (write, status) in the order they arrived: {seen:?}"
            );
        }
        if r.status == 200 {
            done.insert(i);
        }
    }
}

/// `duehook-sequence` grows with each event of a contact, in the order written, and is
/// the same on every attempt of an event.
fn assert_sequences(log: &[Received], written: &[(String, String)]) {
    let mut seq_of: HashMap<String, i64> = HashMap::new();
    for r in log {
        let seq: i64 = r
            .header("duehook-sequence")
            .parse()
            .expect("a sequence number");
        let id = r.header("webhook-id");
        let first = *seq_of.entry(id.clone()).or_insert(seq);
        assert_eq!(first, seq, "{id}: the same sequence on every attempt");
    }
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (id, contact) in written {
        let seq = seq_of[id];
        if let Some(before) = last.insert(contact, seq) {
            assert!(before < seq, "{contact}: {id} carries {seq} after {before}");
        }
    }
}

async fn stream_in_order(backend: Backend, ordering: &str) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    let seed: u64 = std::env::var("DUEHOOK_ORDERING_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("ordering {ordering} ({backend:?}): DUEHOOK_ORDERING_SEED={seed}");
    rx.fail_first_attempts(0.3, seed);
    endpoint(&app, &rx, ordering, json!({})).await;
    let written = post_updates(&app).await;
    deliver_all(&app, &rx, &written).await;
    let log = rx.received();
    assert!(
        log.iter().any(|r| r.status == 500),
        "seed {seed}: some first attempts failed"
    );
    assert_sequences(&log, &written);
    match ordering {
        "entity" => assert_in_order(&log, &written, |contact| contact.to_string()),
        "endpoint" => assert_in_order(&log, &written, |_| "*".to_string()),
        _ => {}
    }
}

async fn entity_ordering_keeps_each_contacts_order(backend: Backend) {
    stream_in_order(backend, "entity").await;
}

async fn endpoint_ordering_keeps_the_endpoints_order(backend: Backend) {
    stream_in_order(backend, "endpoint").await;
}

async fn unordered_endpoints_get_every_event_with_its_sequence(backend: Backend) {
    stream_in_order(backend, "none").await;
}

/// A key whose first delivery fails for good: `move_on` lets the next go; `hold` keeps
/// the key until the failed one is skipped (or retried), and says so in the views.
async fn a_failed_head_moves_on_or_holds_its_key(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    // The first attempt of every webhook fails, and each gets one attempt only.
    rx.fail_first_attempts(1.0, 1);
    let hold = endpoint(
        &app,
        &rx,
        "entity",
        json!({"ordering_on_failure": "hold", "retry": {"max_attempts": 1}}),
    )
    .await;
    let hold_id = hold["id"].as_str().expect("id");
    assert_eq!(hold["ordering"], "entity");
    assert_eq!(hold["ordering_on_failure"], "hold");
    let first = app
        .post(
            "/v1/events",
            Some(json!({"type": "contact.update", "data": {"id": "c-1", "n": 1}})),
        )
        .await;
    let second = app
        .post(
            "/v1/events",
            Some(json!({"type": "contact.update", "data": {"id": "c-1", "n": 2}})),
        )
        .await;
    let (first, second) = (
        first.body["id"].as_str().expect("id").to_string(),
        second.body["id"].as_str().expect("id").to_string(),
    );
    app.advance(5).await;
    let seen: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(
        seen,
        vec![first.clone()],
        "the second waits behind the held first"
    );
    let list = app
        .get(&format!(
            "/v1/deliveries?endpoint_id={hold_id}&status=failed"
        ))
        .await;
    let failed = &list.body["deliveries"][0];
    assert_eq!(failed["held"], true, "{}", list.body);
    assert_eq!(failed["order_key"], "contact/c-1");
    let health = app.admin_get("/admin/endpoints/health").await;
    let ep = health.body["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["endpoint_id"] == hold_id)
        .expect("the endpoint")
        .clone();
    assert_eq!(ep["ordering"], "entity");
    assert_eq!(ep["held"]["keys"], 1, "{ep}");
    assert_eq!(ep["held"]["waiting"], 1, "{ep}");
    assert_eq!(ep["held"]["oldest_delivery_id"], failed["id"]);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("duehook_deliveries_held 1"),
        "the held gauge: {metrics}"
    );

    // Skipped: the key moves on (the second's own first attempt fails too, for good).
    let skipped = app
        .post(
            &format!("/v1/deliveries/{}/skip", failed["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(skipped.status, StatusCode::OK, "{}", skipped.body);
    assert_eq!(skipped.body["held"], false);
    let again = app
        .post(
            &format!("/v1/deliveries/{}/skip", failed["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    app.advance(5).await;
    let seen: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(seen, vec![first, second]);

    // move_on (the default): a failed head lets the next go at once.
    let rx2 = Receiver::start().await;
    rx2.fail_first_attempts(1.0, 2);
    let moving = endpoint(
        &app,
        &rx2,
        "endpoint",
        json!({"retry": {"max_attempts": 1}}),
    )
    .await;
    assert_eq!(moving["ordering_on_failure"], "move_on");
    for n in 0..3 {
        app.post(
            "/v1/events",
            Some(json!({"type": "contact.update", "data": {"id": format!("m-{n}")}})),
        )
        .await;
    }
    app.advance(5).await;
    assert_eq!(rx2.received().len(), 3, "each tried once, in turn");
}

/// `ordering` is set on create, changed with PATCH and shown by GET; a name it does not
/// know is refused naming the field.
async fn ordering_is_a_setting_of_the_endpoint(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    let ep = endpoint(&app, &rx, "none", json!({})).await;
    let id = ep["id"].as_str().expect("id");
    let patched = app
        .patch(
            &format!("/v1/endpoints/{id}"),
            json!({"ordering": "endpoint"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["ordering"], "endpoint");
    let got = app.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(got.body["ordering"], "endpoint");
    assert_eq!(got.body["ordering_on_failure"], "move_on");
    let bad = app
        .post(
            "/v1/endpoints",
            Some(json!({"name": "x", "url": rx.url("/"), "topics": ["*"], "ordering": "random"})),
        )
        .await;
    assert!(bad.status.is_client_error(), "{}", bad.body);
    assert!(bad.body.to_string().contains("ordering"), "{}", bad.body);
}

both_backends!(
    entity_ordering_keeps_each_contacts_order,
    endpoint_ordering_keeps_the_endpoints_order,
    unordered_endpoints_get_every_event_with_its_sequence,
    a_failed_head_moves_on_or_holds_its_key,
    ordering_is_a_setting_of_the_endpoint,
);

/// Three nodes on one PostgreSQL and one ordered endpoint whose receiver is slow: at
/// no moment do two deliveries of one key overlap at the receiver, and each key's
/// events arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_keep_one_in_flight_per_key() {
    let Some(store) = support::StoreHandle::new(Backend::Postgres).await else {
        return;
    };
    let clock = duehook::clock::ManualClock::shared(support::t(support::START));
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            duehook::App::start(
                support::test_config(store.url()),
                std::sync::Arc::new(clock.clone()),
            )
            .await
            .expect("node"),
        );
    }
    let rx = Receiver::start().await;
    rx.answer_after(std::time::Duration::from_millis(15));
    let client = reqwest::Client::new();
    let ep = client
        .post(format!("{}/v1/endpoints", nodes[0].url()))
        .bearer_auth(support::TOKEN)
        .header("content-type", "application/json")
        .body(
            json!({"name": "slow", "url": rx.url("/"), "topics": ["contact.*"], "ordering": "entity"})
                .to_string(),
        )
        .send()
        .await
        .expect("endpoint");
    assert_eq!(ep.status(), StatusCode::CREATED);
    // Events posted through every node, round by round.
    let mut written = Vec::new();
    for round in 0..5 {
        for e in 0..6 {
            let node = &nodes[(round + e) % 3];
            let r: Value = client
                .post(format!("{}/v1/events", node.url()))
                .bearer_auth(support::TOKEN)
                .header("content-type", "application/json")
                .body(
                    json!({"type": "contact.update", "data": {"id": format!("c-{e}"), "round": round}})
                        .to_string(),
                )
                .send()
                .await
                .expect("post")
                .text()
                .await
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .expect("json");
            written.push((r["id"].as_str().expect("id").to_string(), format!("c-{e}")));
        }
    }
    let log: Vec<Received> = support::receiver::eventually("every event delivered", || async {
        let log = rx.received();
        let ok: HashSet<String> = log.iter().map(|r| r.header("webhook-id")).collect();
        written.iter().all(|(id, _)| ok.contains(id)).then_some(log)
    })
    .await;
    assert_in_order(&log, &written, |contact| contact.to_string());
    // One in flight per key: each request answers 15 ms after it arrives, and the next
    // of its key may only start after that.
    let contact_of: HashMap<&str, &str> = written
        .iter()
        .map(|(id, c)| (id.as_str(), c.as_str()))
        .collect();
    let mut last_start: HashMap<&str, std::time::Instant> = HashMap::new();
    for r in &log {
        let id = r.header("webhook-id");
        let contact = contact_of[id.as_str()];
        if let Some(before) = last_start.insert(contact, r.at) {
            assert!(
                r.at.duration_since(before) >= std::time::Duration::from_millis(15),
                "{contact}: two deliveries overlapped"
            );
        }
    }
    for n in nodes {
        n.shutdown().await;
    }
}
