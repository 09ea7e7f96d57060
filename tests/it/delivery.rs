//! Black-box tests of the delivery pipeline on SQLite and PostgreSQL: endpoints, fan-out,
//! formats and signatures checked the way a receiver would, retries on the manual
//! clock, Retry-After, 410, exhaustion, rate limits, secret rotation, SMTP alerts and
//! destination (SSRF) refusals. Every receiver is a real HTTP server on 127.0.0.1.

use crate::support;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use duehook::clock::Clock as _;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use support::receiver::{Answer, Receiver, SmtpSink, eventually};
use support::{Backend, TestApp, t};

async fn create_endpoint(app: &TestApp, body: Value) -> Value {
    let r = app.post("/v1/endpoints", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
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

async fn deliveries(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app.get(&format!("/v1/deliveries?{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["deliveries"].as_array().expect("array").clone()
}

/// Waits until the endpoint's only delivery satisfies `pred`, and returns it with its
/// attempts.
async fn wait_delivery(app: &TestApp, endpoint: &str, pred: impl Fn(&Value) -> bool) -> Value {
    eventually(
        &format!("a delivery of {endpoint} in the expected state"),
        || async {
            let list = deliveries(app, &format!("endpoint_id={endpoint}")).await;
            let d = list.first()?;
            let full = app
                .get(&format!("/v1/deliveries/{}", d["id"].as_str()?))
                .await
                .body;
            pred(&full).then_some(full)
        },
    )
    .await
}

fn attempts(n: i64) -> impl Fn(&Value) -> bool {
    move |d| {
        d["attempt_count"] == json!(n)
            && d["attempts"]
                .as_array()
                .is_some_and(|a| a.len() == n as usize)
    }
}

fn instant(v: &Value) -> DateTime<Utc> {
    t(v.as_str().expect("instant string"))
}

fn verify_standard(secret: &str, r: &support::receiver::Received) {
    let wh = standardwebhooks::Webhook::new(secret).expect("secret");
    let id = r.header("webhook-id");
    let ts: i64 = r.header("webhook-timestamp").parse().expect("timestamp");
    let expected = wh.sign(&id, ts, &r.body).expect("sign");
    let sig = r.header("webhook-signature");
    assert!(
        sig.split(' ').any(|s| s == expected),
        "signature {sig} does not verify with the secret"
    );
}

fn hmac(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

async fn endpoint_crud_and_bad_input(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    let ep = create_endpoint(
        &app,
        json!({"name": "shop", "url": rx.url("/hook"), "topics": ["order.*", "item.create"]}),
    )
    .await;
    let id = ep["id"].as_str().expect("id").to_string();
    assert!(ep["secret"].as_str().expect("secret").starts_with("whsec_"));
    assert_eq!(ep["timeout_ms"], 5000);
    assert_eq!(ep["format"], "json");
    assert_eq!(ep["signature"]["scheme"], "standard_webhooks");
    assert_eq!(ep["retry"]["max_attempts"], 10);
    assert_eq!(ep["enabled"], true);

    let list = app.get("/v1/endpoints").await;
    assert_eq!(list.body["endpoints"].as_array().expect("list").len(), 1);
    assert!(
        list.body["endpoints"][0].get("secret").is_none(),
        "no secret in lists"
    );
    let one = app.get(&format!("/v1/endpoints/{id}")).await;
    assert!(one.body.get("secret").is_none(), "no secret in GET");
    let secret = app.get(&format!("/v1/endpoints/{id}/secret")).await;
    assert_eq!(secret.body["secret"], ep["secret"]);

    let r = app
        .patch(
            &format!("/v1/endpoints/{id}"),
            json!({"name": "shop 2", "retry": {"max_attempts": 6}, "rate_limit": 5, "format": "xml"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], "shop 2");
    assert_eq!(r.body["retry"]["max_attempts"], 6);
    assert_eq!(r.body["rate_limit"], 5);
    assert_eq!(r.body["format"], "xml");
    let r = app
        .patch(&format!("/v1/endpoints/{id}"), json!({"rate_limit": null}))
        .await;
    assert_eq!(r.body["rate_limit"], Value::Null);

    let base = || json!({"name": "x", "url": rx.url("/"), "topics": ["*"]});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("url", json!("not a url"), "url"),
        ("url", json!("ftp://example.com/"), "url"),
        ("topics", json!(["order.*", "order.explode"]), "topics[1]"),
        ("topics", json!([]), "topics"),
        ("format", json!("yaml"), "format"),
        ("envelope", json!("soap"), "envelope"),
        ("signature", json!({"scheme": "md5"}), "signature.scheme"),
        (
            "signature",
            json!({"scheme": "hex", "header": "bad header"}),
            "signature.header",
        ),
        ("headers", json!({"bad header": "x"}), "headers.bad header"),
        ("headers", json!({"X-Ok": "line\nbreak"}), "headers.X-Ok"),
        ("timeout_ms", json!(10), "timeout_ms"),
        ("rate_limit", json!(0), "rate_limit"),
        (
            "alert_emails",
            json!(["ops@example.com", "nope"]),
            "alert_emails[1]",
        ),
        ("secret", json!("whsec_tooshort"), "secret"),
        ("retry", json!({"schedule": "soon"}), "retry.schedule"),
        ("retry", json!({"max_attempts": 0}), "retry.max_attempts"),
        ("colour", json!("blue"), "colour"),
    ];
    for (key, value, field) in cases {
        let mut body = base();
        body[key] = value;
        let r = app.post("/v1/endpoints", Some(body.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.body
        );
        assert_eq!(r.body["field"], field, "{body}: {}", r.body);
    }
    let r = app
        .post("/v1/endpoints", Some(json!({"name": "x", "url": rx.url("/"), "topics": ["*"], "secret": "short", "signature": {"scheme": "hex"}})))
        .await;
    assert_eq!(r.body["field"], "secret", "{}", r.body);
    let r = app.get("/v1/deliveries?status=lost").await;
    assert_eq!(
        (r.status, r.body["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("status"))
    );
    let r = app.get("/v1/deliveries?since=yesterday").await;
    assert_eq!(r.body["field"], "since");
    let r = app.get("/v1/deliveries?limit=0").await;
    assert_eq!(r.body["field"], "limit");
    let r = app.get("/v1/deliveries?colour=1").await;
    assert_eq!(r.body["field"], "colour");

    let r = app
        .patch(&format!("/v1/endpoints/{id}"), json!({"secret": "whsec_x"}))
        .await;
    assert_eq!(
        r.body["field"], "secret",
        "rotation has its own route: {}",
        r.body
    );
    let r = app
        .patch(
            &format!("/v1/endpoints/{id}"),
            json!({"topics": ["*", "nope"]}),
        )
        .await;
    assert_eq!(r.body["field"], "topics[1]");
    let r = app
        .patch(&format!("/v1/endpoints/{id}"), json!({"rate_limit": -1}))
        .await;
    assert_eq!(r.body["field"], "rate_limit");
    let r = app
        .patch("/v1/endpoints/ep_nope", json!({"name": "n"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .post(
            &format!("/v1/endpoints/{id}/disable"),
            Some(json!({"reason": "maintenance"})),
        )
        .await;
    assert_eq!(
        (r.body["enabled"].clone(), r.body["disabled_reason"].clone()),
        (json!(false), json!("maintenance"))
    );
    let r = app.post(&format!("/v1/endpoints/{id}/test"), None).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "no test sends to a disabled endpoint"
    );
    let r = app
        .post(
            &format!("/v1/endpoints/{id}/rotate-secret"),
            Some(json!({"grace_seconds": 99999999})),
        )
        .await;
    assert_eq!(r.body["field"], "grace_seconds");
    let r = app
        .post(
            &format!("/v1/endpoints/{id}/rotate-secret"),
            Some(json!({"secret": "plain-not-whsec-0123456789"})),
        )
        .await;
    assert_eq!(
        r.body["field"], "secret",
        "a standard_webhooks secret must be whsec_"
    );
    let r = app
        .post(
            &format!("/v1/endpoints/{id}/recover"),
            Some(json!({"since": "2030-03-02T00:00:00Z", "until": "2030-03-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(r.body["field"], "until");

    let r = app.delete(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.get(&format!("/v1/endpoints/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get("/v1/deliveries/dlv_nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn ingest_event_reaches_subscribers_only(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let items = Receiver::start().await;
    let orders = Receiver::start().await;
    let a = create_endpoint(
        &app,
        json!({"name": "items", "url": items.url("/items"), "topics": ["item.*"]}),
    )
    .await;
    let b = create_endpoint(
        &app,
        json!({"name": "orders", "url": orders.url("/orders"), "topics": ["order.*"]}),
    )
    .await;
    let r = app.put("/v1/items/x", json!({"name": "Camera"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let event_id = r.headers["duehook-event-id"]
        .to_str()
        .expect("ascii")
        .to_string();

    let got = items.wait_for(1).await;
    let d = wait_delivery(&app, a["id"].as_str().expect("id"), |d| {
        d["status"] == "succeeded"
    })
    .await;
    assert_eq!(d["event_id"], json!(event_id));
    assert_eq!(d["event"]["data"]["name"], "Camera");
    assert_eq!(d["attempts"][0]["status_code"], 200);
    assert_eq!(d["attempts"][0]["response_body"], "receiver says hi");
    let req = &got[0];
    assert_eq!(req.header("webhook-id"), event_id);
    assert_eq!(req.header("content-type"), "application/json");
    verify_standard(a["secret"].as_str().expect("secret"), req);
    let body = req.json();
    assert_eq!(body["id"], json!(event_id));
    assert_eq!(body["type"], "item.create");
    assert_eq!(body["data"]["id"], "x");
    assert_eq!(body["data"]["name"], "Camera");
    assert!(
        body.get("scheduled_at").is_none(),
        "immediate events have no scheduled_at"
    );

    // Fan-out wrote every delivery of the event in one transaction: none for `orders`.
    assert!(
        deliveries(
            &app,
            &format!("endpoint_id={}", b["id"].as_str().expect("id"))
        )
        .await
        .is_empty()
    );
    assert!(orders.received().is_empty());
}

async fn formats_and_schemes(backend: Backend) {
    // Near the real time, so the official library's timestamp tolerance accepts it.
    let Some(app) = TestApp::spawn_at(backend, Utc::now()).await else {
        return;
    };
    let rx = Receiver::start().await;
    let standard = create_endpoint(
        &app,
        json!({"name": "std", "url": rx.url("/std"), "topics": ["booking.create"]}),
    )
    .await;
    let hex_secret = "cheqroom-secret-0123456789";
    create_endpoint(
        &app,
        json!({"name": "cheqroom", "url": rx.url("/hex"), "topics": ["booking.*"], "format": "xml",
               "signature": {"scheme": "hex", "header": "X-CHEQROOM-Signature"}, "secret": hex_secret}),
    )
    .await;
    let b64_secret = "storeganise-secret-0123456789";
    create_endpoint(
        &app,
        json!({"name": "storeganise", "url": rx.url("/b64"), "topics": ["*"], "format": "form",
               "signature": {"scheme": "base64", "header": "sg-signature"}, "secret": b64_secret,
               "headers": {"X-Tenant": "acme"}}),
    )
    .await;
    create_endpoint(
        &app,
        json!({"name": "housecheck", "url": rx.url("/tp"), "topics": ["*"], "envelope": "type_payload",
               "signature": {"scheme": "hex", "header": "signature"}, "secret": hex_secret}),
    )
    .await;
    create_endpoint(
        &app,
        json!({"name": "checkfront", "url": rx.url("/ee"), "topics": ["*"], "envelope": "event_entity"}),
    )
    .await;
    let id = emit(&app, "booking.create", json!({"id": "b-1", "total": 12})).await;
    let got = rx.wait_for(5).await;
    let find = |path: &str| {
        got.iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("no request for {path}"))
            .clone()
    };
    for r in &got {
        assert_eq!(r.header("webhook-id"), id, "every request names the event");
    }

    let std_req = find("/std");
    let wh = standardwebhooks::Webhook::new(standard["secret"].as_str().expect("secret"))
        .expect("secret");
    wh.verify(&std_req.body, &std_req.headers)
        .expect("verifies with the official Standard Webhooks library");

    let hex_req = find("/hex");
    assert_eq!(hex_req.header("content-type"), "application/xml");
    let expected: String = hmac(hex_secret, &hex_req.body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex_req.header("x-cheqroom-signature"), expected);
    let xml = String::from_utf8(hex_req.body.clone()).expect("utf8");
    assert!(
        xml.contains("<webhook>") && xml.contains("<type>booking.create</type>"),
        "{xml}"
    );

    let b64_req = find("/b64");
    assert_eq!(
        b64_req.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(b64_req.header("x-tenant"), "acme");
    let expected =
        base64::engine::general_purpose::STANDARD.encode(hmac(b64_secret, &b64_req.body));
    assert_eq!(b64_req.header("sg-signature"), expected);
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&b64_req.body).expect("form");
    assert!(
        form.contains(&("type".into(), "booking.create".into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("data[total]".into(), "12".into())),
        "{form:?}"
    );

    let tp = find("/tp").json();
    assert_eq!(tp["type"], "booking.create");
    assert_eq!(tp["payload"]["id"], "b-1");
    let ee = find("/ee").json();
    assert_eq!(ee["event"], "booking.create");
    assert_eq!(ee["booking"]["total"], 12);
}

/// A posted event's data goes out as the application wrote it: JSON bodies keep its
/// key order and its numbers' text, without the whitespace between tokens; XML and form
/// bodies list its keys sorted. Data no body format could render is refused at the door.
async fn posted_data_keeps_its_key_order(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    for (name, format) in [("json", "json"), ("xml", "xml")] {
        create_endpoint(
            &app,
            json!({"name": name, "url": rx.url(&format!("/{name}")), "topics": ["booking.*"], "format": format}),
        )
        .await;
    }
    let posted = app
        .raw(
            reqwest::Method::POST,
            "/v1/events",
            b"{\"type\": \"booking.create\", \"data\": {\"z\": 1.50, \"id\": \"b-9\",\n  \"a\": {\"y\": [1, 2], \"b\": \"x  y\"}}}",
            "application/json",
        )
        .await;
    assert_eq!(posted.status, StatusCode::CREATED, "{}", posted.body);
    let got = rx.wait_for(2).await;
    let body = |path: &str| {
        let r = got.iter().find(|r| r.path == path).expect("delivered");
        String::from_utf8(r.body.clone()).expect("utf8")
    };
    let json_body = body("/json");
    assert!(
        json_body.ends_with(r#","data":{"z":1.50,"id":"b-9","a":{"y":[1,2],"b":"x  y"}}}"#),
        "{json_body}"
    );
    let xml = body("/xml");
    assert!(
        xml.contains("<data><a><b>x  y</b><y><item>1</item><item>2</item></y></a><id>b-9</id><z>1.5</z></data>"),
        "{xml}"
    );

    let refused = app
        .raw(
            reqwest::Method::POST,
            "/v1/events",
            br#"{"type": "booking.create", "data": {"id": "b-10", "n": 1e400}}"#,
            "application/json",
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("data")),
        "{}",
        refused.body
    );
}

/// Retries that come due while the attempts before them are still being recorded (the
/// clock runs on fast, as after a pause): a claim then finds a delivery due whose last
/// attempt the worker has not yet heard recorded. Every delivery still gets its retry,
/// once, and none is left claimed with nothing sending it.
async fn retries_due_while_attempts_are_recorded_each_go_out_once(backend: Backend) {
    const N: i64 = 300;
    // No circuit breaker: a run of first attempts failing would open it, and the
    // deliveries would wait for it rather than race their own recording.
    let Some(app) = TestApp::spawn_config(backend, |c| {
        c.delivery.circuit_breaker_failures = 0;
        c.delivery.disable_after_failing_hours = 0;
    })
    .await
    else {
        return;
    };
    let rx = Receiver::start().await;
    // Every webhook's first attempt fails; its retry, a second later, succeeds.
    rx.fail_first_attempts(1.0, 7);
    create_endpoint(
        &app,
        json!({"name": "r", "url": rx.url("/"), "topics": ["*"], "retry": {"schedule": "1s"}}),
    )
    .await;
    let mut emitted = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let done = app
            .scalar(
                "SELECT COUNT(*) FROM deliveries WHERE status = 'succeeded'",
                &[],
            )
            .await;
        if done == N {
            break;
        }
        if std::time::Instant::now() > deadline {
            let left = app
                .rows(
                    "SELECT status, attempts, CASE WHEN claimed_by IS NULL THEN 0 ELSE 1 END AS claimed,
                         COUNT(*) AS n
                     FROM deliveries WHERE status <> 'succeeded'
                     GROUP BY status, attempts, CASE WHEN claimed_by IS NULL THEN 0 ELSE 1 END",
                    &[],
                )
                .await;
            panic!(
                "{done} of {N} delivered; the rest (status, attempts, claimed, count): {left:?}"
            );
        }
        // New events keep the worker claiming, and a second of service time passes
        // with each: retries come due while attempts are in flight and being recorded.
        if emitted < N {
            emit(
                &app,
                "booking.create",
                json!({"id": format!("b-{emitted}")}),
            )
            .await;
            emitted += 1;
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        app.forward(TimeDelta::seconds(1));
    }
    let attempts = app.scalar("SELECT COUNT(*) FROM attempts", &[]).await;
    assert_eq!(attempts, 2 * N, "two attempts each");
    let mut per_id = std::collections::BTreeMap::<String, usize>::new();
    for r in rx.received() {
        *per_id.entry(r.header("webhook-id")).or_default() += 1;
    }
    assert_eq!(per_id.len(), N as usize, "every webhook arrived");
    assert!(
        per_id.values().all(|n| *n == 2),
        "each arrived twice, its failed attempt and its retry: {:?}",
        per_id.values().filter(|n| **n != 2).collect::<Vec<_>>()
    );
}

async fn retries_keep_the_webhook_id(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.script(vec![Answer::status(500), Answer::status(503)]);
    let ep = create_endpoint(
        &app,
        json!({"name": "r", "url": rx.url("/"), "topics": ["*"]}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id");
    let event = emit(&app, "booking.create", json!({"id": "b-1"})).await;

    let d = wait_delivery(&app, ep_id, attempts(1)).await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["attempts"][0]["status_code"], 500);
    let first = instant(&d["attempts"][0]["started_at"]);
    let next = instant(&d["next_attempt_at"]);
    assert!(
        next >= first + TimeDelta::seconds(4) && next <= first + TimeDelta::seconds(6),
        "5 s ± 20 %: {next}"
    );

    app.forward(TimeDelta::seconds(7));
    let d = wait_delivery(&app, ep_id, attempts(2)).await;
    assert_eq!(d["attempts"][1]["status_code"], 503);
    let second = instant(&d["attempts"][1]["started_at"]);
    let next = instant(&d["next_attempt_at"]);
    assert!(
        next >= second + TimeDelta::minutes(4) && next <= second + TimeDelta::minutes(6),
        "5 min ± 20 %: {next}"
    );

    app.forward(TimeDelta::minutes(7));
    let d = wait_delivery(&app, ep_id, attempts(3)).await;
    assert_eq!(d["status"], "succeeded");
    let got = rx.wait_for(3).await;
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.header("webhook-id"), event);
    }
    assert_eq!(got[0].body, got[2].body, "a retry sends the same bytes");
}

async fn retry_after_is_honoured(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.script(vec![Answer::status(429).with_header("retry-after", "600")]);
    let ep = create_endpoint(
        &app,
        json!({"name": "r", "url": rx.url("/"), "topics": ["*"], "retry": {"schedule": "1s,1s"}}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id");
    emit(&app, "booking.create", json!({"id": "b-1"})).await;
    let d = wait_delivery(&app, ep_id, attempts(1)).await;
    let first = instant(&d["attempts"][0]["started_at"]);
    assert_eq!(
        instant(&d["next_attempt_at"]),
        first + TimeDelta::seconds(600)
    );
    assert_eq!(d["attempts"][0]["response_headers"]["retry-after"], "600");

    app.forward(TimeDelta::seconds(599));
    let d = app
        .get(&format!("/v1/deliveries/{}", d["id"].as_str().expect("id")))
        .await
        .body;
    assert_eq!(d["attempt_count"], 1, "not before Retry-After");
    app.forward(TimeDelta::seconds(1));
    let d = wait_delivery(&app, ep_id, attempts(2)).await;
    assert_eq!(d["status"], "succeeded");
}

async fn gone_disables_the_endpoint(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(410));
    let ep = create_endpoint(
        &app,
        json!({"name": "g", "url": rx.url("/"), "topics": ["*"]}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id");
    emit(&app, "booking.create", json!({"id": "b-1"})).await;
    let d = wait_delivery(&app, ep_id, |d| d["status"] == "failed").await;
    assert_eq!(d["attempt_count"], 1, "410 is not retried");
    let e = app.get(&format!("/v1/endpoints/{ep_id}")).await.body;
    assert_eq!(e["enabled"], false);
    assert!(
        e["disabled_reason"]
            .as_str()
            .expect("reason")
            .contains("410")
    );

    // A disabled endpoint gets no new deliveries.
    let other = Receiver::start().await;
    let witness = create_endpoint(
        &app,
        json!({"name": "w", "url": other.url("/"), "topics": ["booking.update"]}),
    )
    .await;
    emit(&app, "booking.update", json!({"id": "b-1"})).await;
    wait_delivery(&app, witness["id"].as_str().expect("id"), |d| {
        d["status"] == "succeeded"
    })
    .await;
    assert_eq!(
        deliveries(&app, &format!("endpoint_id={ep_id}"))
            .await
            .len(),
        1
    );
    let r = app
        .post(&format!("/v1/endpoints/{ep_id}/enable"), None)
        .await;
    assert_eq!(r.body["enabled"], true);
    assert_eq!(r.body["disabled_reason"], Value::Null);
}

async fn exhausted_retries_fail_then_retry_and_recover(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500));
    let ep = create_endpoint(
        &app,
        json!({"name": "x", "url": rx.url("/"), "topics": ["*"], "retry": {"schedule": "1s,1s"}}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id");
    emit(&app, "booking.create", json!({"id": "b-1"})).await;
    wait_delivery(&app, ep_id, attempts(1)).await;
    app.forward(TimeDelta::seconds(2));
    wait_delivery(&app, ep_id, attempts(2)).await;
    app.forward(TimeDelta::seconds(2));
    let d = wait_delivery(&app, ep_id, attempts(3)).await;
    assert_eq!(d["status"], "failed");
    assert_eq!(d["next_attempt_at"], Value::Null);
    assert_eq!(deliveries(&app, "status=failed").await.len(), 1);

    // A manual retry is one more attempt.
    rx.set_default(Answer::status(200));
    let id = d["id"].as_str().expect("id");
    let r = app.post(&format!("/v1/deliveries/{id}/retry"), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let d = wait_delivery(&app, ep_id, attempts(4)).await;
    assert_eq!(d["status"], "succeeded");
    let r = app.post(&format!("/v1/deliveries/{id}/retry"), None).await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "a delivered one can be sent again"
    );
    wait_delivery(&app, ep_id, attempts(5)).await;

    // Recover: failed deliveries in a time range are sent again.
    rx.set_default(Answer::status(500));
    emit(&app, "booking.update", json!({"id": "b-1"})).await;
    let failed = eventually("the second delivery failed", || async {
        let list = deliveries(
            &app,
            &format!("endpoint_id={ep_id}&event_type=booking.update"),
        )
        .await;
        let d = list.first()?;
        if d["status"] == "pending" && d["attempt_count"] != 0 {
            app.forward(TimeDelta::seconds(2));
        }
        (d["status"] == "failed").then(|| d.clone())
    })
    .await;
    rx.set_default(Answer::status(204));
    let r = app
        .post(
            &format!("/v1/endpoints/{ep_id}/recover"),
            Some(json!({"since": "2000-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(r.body["recovered"], 1, "{}", r.body);
    let fid = failed["id"].as_str().expect("id");
    eventually("recovered delivery succeeded", || async {
        let d = app.get(&format!("/v1/deliveries/{fid}")).await.body;
        (d["status"] == "succeeded").then_some(())
    })
    .await;
    let r = app
        .post(
            &format!("/v1/endpoints/{ep_id}/recover"),
            Some(json!({"since": "yesterday"})),
        )
        .await;
    assert_eq!(r.body["field"], "since");
}

async fn rate_limit_holds(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    let ep = create_endpoint(
        &app,
        json!({"name": "slowpoke", "url": rx.url("/"), "topics": ["*"], "rate_limit": 2}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    for i in 0..7 {
        emit(&app, "booking.create", json!({"id": format!("b-{i}")})).await;
    }
    let mut seconds = 0;
    loop {
        let expected = (2 * (seconds + 1)).min(7);
        eventually(&format!("{expected} deliveries done"), || async {
            let done = deliveries(&app, &format!("endpoint_id={ep_id}&status=succeeded")).await;
            (done.len() >= expected).then_some(())
        })
        .await;
        if expected == 7 {
            break;
        }
        app.forward(TimeDelta::seconds(1));
        seconds += 1;
    }
    let mut starts = Vec::new();
    for d in deliveries(&app, &format!("endpoint_id={ep_id}")).await {
        let full = app
            .get(&format!("/v1/deliveries/{}", d["id"].as_str().expect("id")))
            .await
            .body;
        starts.push(instant(&full["attempts"][0]["started_at"]));
    }
    starts.sort();
    for window in starts.windows(3) {
        assert!(
            window[2] - window[0] >= TimeDelta::seconds(1),
            "three sends within one second: {window:?}"
        );
    }
    assert_eq!(rx.received().len(), 7);
}

async fn rotation_sends_two_signatures(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    let ep = create_endpoint(
        &app,
        json!({"name": "rot", "url": rx.url("/"), "topics": ["*"]}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id");
    let old = ep["secret"].as_str().expect("secret").to_string();
    let r = app
        .post(
            &format!("/v1/endpoints/{ep_id}/rotate-secret"),
            Some(json!({"grace_seconds": 3600})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new = r.body["secret"].as_str().expect("secret").to_string();
    assert_ne!(old, new);
    let s = app.get(&format!("/v1/endpoints/{ep_id}/secret")).await.body;
    assert_eq!(
        (s["secret"].as_str(), s["previous_secret"].as_str()),
        (Some(new.as_str()), Some(old.as_str()))
    );

    let r = app.post(&format!("/v1/endpoints/{ep_id}/test"), None).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
    verify_standard(&old, &got[0]);
    verify_standard(&new, &got[0]);
    assert_eq!(got[0].json()["type"], "webhook.test");

    // After the grace period only the new secret signs.
    app.forward(TimeDelta::hours(2));
    app.post(&format!("/v1/endpoints/{ep_id}/test"), None).await;
    let got = rx.wait_for(2).await;
    assert_eq!(got[1].header("webhook-signature").split(' ').count(), 1);
    verify_standard(&new, &got[1]);
}

async fn smtp_alerts(backend: Backend) {
    let smtp = SmtpSink::start().await;
    let hook = Receiver::start().await;
    let port = smtp.addr.port();
    let alert_url = hook.url("/alerts");
    let Some(app) = TestApp::spawn_config(backend, |c| {
        c.alerts.smtp = Some(duehook::config::SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            from: "duehook <duehook@example.com>".into(),
            username: None,
            password: None,
        });
        c.alerts.webhook_url = Some(alert_url);
    })
    .await
    else {
        return;
    };
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(410));
    let ep = create_endpoint(
        &app,
        json!({"name": "partner", "url": rx.url("/"), "topics": ["*"], "alert_emails": ["ops@example.com"]}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id");
    emit(&app, "booking.create", json!({"id": "b-1"})).await;
    let mails = smtp.wait_for(1).await;
    assert!(
        mails[0].to.iter().any(|t| t.contains("ops@example.com")),
        "{:?}",
        mails[0]
    );
    assert!(mails[0].data.contains("was disabled"), "{}", mails[0].data);
    assert!(mails[0].data.contains("410"), "{}", mails[0].data);
    let alerts = hook.wait_for(1).await;
    assert_eq!(alerts[0].json()["kind"], "disabled");
    assert_eq!(alerts[0].json()["endpoint_id"], json!(ep_id));

    rx.set_default(Answer::status(200));
    app.post(&format!("/v1/endpoints/{ep_id}/enable"), None)
        .await;
    app.post(&format!("/v1/endpoints/{ep_id}/test"), None).await;
    let mails = smtp.wait_for(2).await;
    assert!(mails[1].data.contains("recovered"), "{}", mails[1].data);
}

async fn slow_endpoint_does_not_delay_healthy_one(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let slow = Receiver::start().await;
    slow.set_default(Answer::status(200).held());
    let fast = Receiver::start().await;
    let s = create_endpoint(
        &app,
        json!({"name": "slow", "url": slow.url("/"), "topics": ["*"], "timeout_ms": 1000}),
    )
    .await;
    create_endpoint(
        &app,
        json!({"name": "fast", "url": fast.url("/"), "topics": ["*"]}),
    )
    .await;
    for i in 0..3 {
        emit(&app, "booking.create", json!({"id": format!("b-{i}")})).await;
    }
    // Every request to `slow` hangs; `fast` still gets all three.
    fast.wait_for(3).await;
    let d = wait_delivery(&app, s["id"].as_str().expect("id"), |d| {
        d["attempts"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(d["attempts"][0]["error_kind"], "timeout", "{d}");
    slow.release();
}

async fn destinations_are_guarded(backend: Backend) {
    let Some(app) =
        TestApp::spawn_config(backend, |c| c.delivery.allow_private_destinations = false).await
    else {
        return;
    };
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://[::1]:9/",
        "http://2130706433/",
        "http://user:pw@example.com/",
    ] {
        let r = app
            .post(
                "/v1/endpoints",
                Some(json!({"name": "x", "url": url, "topics": ["*"]})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            r.body
        );
        assert_eq!(r.body["field"], "url", "{url}");
    }
    // A name other than `localhost` that resolves to loopback (from /etc/hosts).
    if let Some(name) = loopback_alias() {
        let r = app
            .post(
                "/v1/endpoints",
                Some(json!({"name": "x", "url": format!("http://{name}:9/"), "topics": ["*"]})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {}",
            r.body
        );
        assert_eq!(r.body["field"], "url");
    } else {
        eprintln!("no loopback alias in /etc/hosts; the resolver case did not run");
    }
}

/// A host name other than localhost that /etc/hosts maps to 127.0.0.0/8.
fn loopback_alias() -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let ip = parts.next()?;
        if !ip.starts_with("127.") {
            return None;
        }
        parts
            .find(|n| !n.starts_with('#') && !n.contains("localhost"))
            .map(str::to_string)
    })
}

both_backends!(
    endpoint_crud_and_bad_input,
    ingest_event_reaches_subscribers_only,
    formats_and_schemes,
    posted_data_keeps_its_key_order,
    retries_keep_the_webhook_id,
    retries_due_while_attempts_are_recorded_each_go_out_once,
    retry_after_is_honoured,
    gone_disables_the_endpoint,
    exhausted_retries_fail_then_retry_and_recover,
    rate_limit_holds,
    rotation_sends_two_signatures,
    smtp_alerts,
    slow_endpoint_does_not_delay_healthy_one,
    destinations_are_guarded,
);

async fn time_based_event_carries_scheduled_at(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    create_endpoint(
        &app,
        json!({"name": "due", "url": rx.url("/"), "topics": ["order.overdue_1_day"]}),
    )
    .await;
    // A time-based event as a store may hold it unfanned (written without the
    // outbox's same-transaction fan-out): an events row with scheduled_at.
    let due = app.clock.now() - TimeDelta::minutes(3);
    let created = app.clock.now();
    let ms = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis();
    let ev_id = "evt_0196f0c2b0a87c3e9a1d5b2f4c6e8a01";
    app.app()
        .probe()
        .execute(
            "INSERT INTO events (id, type, entity_kind, entity_id, created_at, scheduled_at, data, fanned_out)
             VALUES ($1, 'order.overdue_1_day', 'order', 'o-1', $2, $3, $4, 0)",
            &[
                ev_id.into(),
                ms(created).into(),
                ms(due).into(),
                json!({"id": "o-1", "status": "checked_out"}).to_string().into(),
            ],
        )
        .await
        .expect("insert");
    // Nobody poked the outbox: the sweeper's poll picks the event up.
    app.forward(TimeDelta::seconds(1));
    let got = rx.wait_for(1).await;
    let body = got[0].json();
    assert_eq!(body["id"], json!(ev_id));
    assert_eq!(
        body["scheduled_at"],
        json!(due.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
    );
    assert_eq!(
        body["created"],
        json!(created.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
    );
    assert_eq!(body["data"]["status"], "checked_out");
}

async fn interrupted_send_is_sent_again_with_the_same_id(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.script(vec![Answer::status(200).held(), Answer::status(200).held()]);
    let ep = create_endpoint(
        &app,
        json!({"name": "c", "url": rx.url("/"), "topics": ["*"]}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    let event = emit(&app, "booking.create", json!({"id": "b-1"})).await;
    rx.wait_for(1).await;

    // Graceful stop while the request hangs: the send is given its endpoint's timeout
    // (cut off, the receiver may have had it, and another node would send it twice),
    // recorded as timed out, and retried after the restart.
    app.restart().await;
    app.forward(TimeDelta::seconds(10));
    rx.wait_for(2).await;

    // Crash while the request hangs: the claim goes back when the process is known
    // dead (at the next start on SQLite, a lease later on PostgreSQL), then it is sent
    // again.
    if let Some(running) = app.app.take() {
        running.abort();
    }
    app.app = Some(
        duehook::App::start(app.config.clone(), std::sync::Arc::new(app.clock.clone()))
            .await
            .expect("restart after crash"),
    );
    app.forward(TimeDelta::minutes(7));
    let got = rx.wait_for(3).await;
    let d = wait_delivery(&app, &ep_id, |d| d["status"] == "succeeded").await;
    assert_eq!(
        d["attempt_count"], 2,
        "the timed-out send and the success; the send a crash cut off leaves no attempt"
    );
    for r in &got {
        assert_eq!(r.header("webhook-id"), event);
    }
    rx.release();
}

async fn sustained_failure_disables_and_alerts(backend: Backend) {
    let smtp = SmtpSink::start().await;
    let port = smtp.addr.port();
    let Some(app) = TestApp::spawn_config(backend, |c| {
        c.delivery.disable_after_failed_deliveries = 2;
        c.alerts.failing_after_attempts = 2;
        c.alerts.smtp = Some(duehook::config::SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            from: "duehook@example.com".into(),
            username: None,
            password: None,
        });
    })
    .await
    else {
        return;
    };
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500));
    let ep = create_endpoint(
        &app,
        json!({"name": "flaky", "url": rx.url("/"), "topics": ["*"], "retry": {"schedule": "none"},
               "alert_emails": ["a@example.com", "b@example.com"]}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    emit(&app, "booking.create", json!({"id": "b-1"})).await;
    wait_delivery(&app, &ep_id, |d| d["status"] == "failed").await;
    let e = app.get(&format!("/v1/endpoints/{ep_id}")).await.body;
    assert_eq!(
        (
            e["enabled"].clone(),
            e["health"]["failed_deliveries"].clone()
        ),
        (json!(true), json!(1))
    );
    emit(&app, "booking.update", json!({"id": "b-1"})).await;
    let e = eventually("the endpoint is disabled", || async {
        let e = app.get(&format!("/v1/endpoints/{ep_id}")).await.body;
        (e["enabled"] == false).then_some(e)
    })
    .await;
    assert!(
        e["disabled_reason"]
            .as_str()
            .expect("reason")
            .contains("2 deliveries in a row"),
        "{e}"
    );
    let mails = smtp.wait_for(2).await;
    assert!(mails[0].data.contains("is failing"), "{}", mails[0].data);
    assert!(mails[1].data.contains("was disabled"), "{}", mails[1].data);
    assert_eq!(mails[0].to.len(), 2);
}

async fn deliveries_page_with_a_cursor(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    let ep = create_endpoint(
        &app,
        json!({"name": "p", "url": rx.url("/"), "topics": ["*"]}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    for i in 0..3 {
        emit(&app, "booking.create", json!({"id": format!("b-{i}")})).await;
    }
    rx.wait_for(3).await;
    let page = app
        .get(&format!("/v1/deliveries?endpoint_id={ep_id}&limit=2"))
        .await
        .body;
    assert_eq!(page["deliveries"].as_array().expect("page").len(), 2);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let rest = app
        .get(&format!(
            "/v1/deliveries?endpoint_id={ep_id}&limit=2&cursor={cursor}"
        ))
        .await
        .body;
    assert_eq!(rest["deliveries"].as_array().expect("page").len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    let since = app.clock.now() + TimeDelta::seconds(1);
    let none = deliveries(
        &app,
        &format!("since={}", since.to_rfc3339().replace('+', "%2B")),
    )
    .await;
    assert!(none.is_empty());
}

async fn circuit_breaker_holds_a_dead_endpoint_back(backend: Backend) {
    let Some(app) = TestApp::spawn_config(backend, |c| {
        c.delivery.circuit_breaker_failures = 2;
        c.delivery.circuit_breaker_cooldown_seconds = 600;
    })
    .await
    else {
        return;
    };
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500));
    let ep = create_endpoint(
        &app,
        json!({"name": "dead", "url": rx.url("/"), "topics": ["*"], "retry": {"schedule": "1s,1s,1s"}}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    emit(&app, "booking.create", json!({"id": "b-1"})).await;
    wait_delivery(&app, &ep_id, attempts(1)).await;
    app.forward(TimeDelta::seconds(2));
    let d = wait_delivery(&app, &ep_id, attempts(2)).await;
    let second = instant(&d["attempts"][1]["started_at"]);
    let e = app.get(&format!("/v1/endpoints/{ep_id}")).await.body;
    assert_eq!(
        instant(&e["health"]["circuit_open_until"]),
        second + TimeDelta::seconds(600)
    );
    // Due after 1 s, but the open circuit holds it until the cooldown ends.
    rx.set_default(Answer::status(200));
    app.forward(TimeDelta::seconds(600));
    let d = wait_delivery(&app, &ep_id, attempts(3)).await;
    assert_eq!(d["status"], "succeeded");
    assert!(instant(&d["attempts"][2]["started_at"]) >= second + TimeDelta::seconds(600));
    let e = app.get(&format!("/v1/endpoints/{ep_id}")).await.body;
    assert_eq!(e["health"]["circuit_open_until"], Value::Null);
}

async fn two_nodes_send_each_delivery_once(backend: Backend) {
    if backend == Backend::Sqlite {
        // Several nodes share a PostgreSQL; a SQLite file belongs to one node.
        return;
    }
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // A second node on the same store and clock.
    let second = duehook::App::start(app.config.clone(), std::sync::Arc::new(app.clock.clone()))
        .await
        .expect("second node starts");
    let rx = Receiver::start().await;
    let ep = create_endpoint(
        &app,
        json!({"name": "n", "url": rx.url("/"), "topics": ["*"]}),
    )
    .await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    let client = reqwest::Client::new();
    for i in 0..20 {
        // Alternate the node that takes the event in.
        let base = if i % 2 == 0 {
            app.app().url()
        } else {
            second.url()
        };
        let r = client
            .post(format!("{base}/v1/events"))
            .bearer_auth(support::TOKEN)
            .header("content-type", "application/json")
            .body(json!({"type": "booking.create", "data": {"id": format!("b-{i}")}}).to_string())
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    eventually("20 deliveries succeeded", || async {
        let done = deliveries(&app, &format!("endpoint_id={ep_id}&status=succeeded")).await;
        (done.len() == 20).then_some(())
    })
    .await;
    for d in deliveries(&app, &format!("endpoint_id={ep_id}")).await {
        assert_eq!(d["attempt_count"], 1, "{d}");
    }
    let mut ids: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!((ids.len(), rx.received().len()), (20, 20));
    second.shutdown().await;
}

async fn checkfront_style_disables_after_its_retries(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500));
    let ep = create_endpoint(
        &app,
        json!({"name": "cf", "url": rx.url("/"), "topics": ["*"], "envelope": "event_entity",
               "retry": {"max_attempts": 2, "schedule": "1s", "on_exhausted": "disable"}}),
    )
    .await;
    assert_eq!(ep["retry"]["on_exhausted"], "disable");
    let ep_id = ep["id"].as_str().expect("id").to_string();
    emit(&app, "booking.create", json!({"id": "b-1"})).await;
    wait_delivery(&app, &ep_id, attempts(1)).await;
    app.forward(TimeDelta::seconds(2));
    let d = wait_delivery(&app, &ep_id, attempts(2)).await;
    assert_eq!(d["status"], "failed");
    let e = app.get(&format!("/v1/endpoints/{ep_id}")).await.body;
    assert_eq!(e["enabled"], false, "{e}");
    assert!(
        e["disabled_reason"]
            .as_str()
            .expect("reason")
            .contains("on_exhausted")
    );
    let r = app
        .post("/v1/endpoints", Some(json!({"name": "x", "url": rx.url("/"), "topics": ["*"], "retry": {"on_exhausted": "explode"}})))
        .await;
    assert_eq!(r.body["field"], "retry.on_exhausted", "{}", r.body);
}

mod more {
    use super::*;
    both_backends!(
        time_based_event_carries_scheduled_at,
        interrupted_send_is_sent_again_with_the_same_id,
        sustained_failure_disables_and_alerts,
        deliveries_page_with_a_cursor,
        circuit_breaker_holds_a_dead_endpoint_back,
        two_nodes_send_each_delivery_once,
        checkfront_style_disables_after_its_retries,
    );
}
