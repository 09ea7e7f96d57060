//! The README's "Verify a webhook" Rust snippet, kept in `tests/it/readme/verify_webhook.rs`
//! and checked here: the README holds it verbatim, and it accepts real webhooks from the
//! real service (immediate and time-based) and refuses a body parsed and serialized
//! again, the pitfall the README warns about.

use crate::support;
#[path = "readme/verify_webhook.rs"]
mod verify_webhook;

use std::net::SocketAddr;

use chrono::{TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::receiver::{Receiver, eventually};
use support::{Backend, ClockExt, TestApp};

const SNIPPET: &str = include_str!("readme/verify_webhook.rs");
const README: &str = include_str!("../../README.md");

#[test]
fn the_readme_holds_the_rust_snippet_verbatim() {
    let block = format!("```rust\n{SNIPPET}```\n");
    assert!(
        README.contains(&block),
        "README.md must show tests/it/readme/verify_webhook.rs as it is, in a ```rust block"
    );
}

/// Serves the snippet's routes for `secret` on 127.0.0.1; returns where.
async fn serve_snippet(secret: &str) -> SocketAddr {
    let routes = verify_webhook::duehook_routes(secret).expect("a whsec_ secret");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, routes).await;
    });
    addr
}

async fn create_endpoint(app: &TestApp, url: &str) -> Value {
    let r = app
        .post(
            "/v1/endpoints",
            Some(json!({"name": "readme", "url": url, "topics": ["*"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body
}

/// The endpoint's deliveries once every one has its final state.
async fn settled_deliveries(app: &TestApp, endpoint: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} settled deliveries"), || async {
        let r = app
            .get(&format!("/v1/deliveries?endpoint_id={endpoint}"))
            .await;
        let list = r.body["deliveries"].as_array()?.clone();
        (list.len() == n && list.iter().all(|d| d["status"] != "pending")).then_some(list)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_snippet_verifies_real_webhooks_and_refuses_a_reserialized_body() {
    // The libraries compare webhook-timestamp with the receiver's clock (±5 minutes):
    // the service's clock starts at the real time.
    let Some(app) = TestApp::spawn_at(Backend::Sqlite, Utc::now()).await else {
        return;
    };
    // The snippet as a real receiver: an endpoint points at it with its own secret.
    let capture = Receiver::start().await;
    let captured = create_endpoint(&app, &capture.url("/capture")).await;
    let direct_secret = {
        let ep = create_endpoint(&app, "http://127.0.0.1:9/placeholder").await;
        let id = ep["id"].as_str().expect("id");
        let addr = serve_snippet(ep["secret"].as_str().expect("secret")).await;
        let r = app
            .patch(
                &format!("/v1/endpoints/{id}"),
                json!({"url": format!("http://{addr}/duehook")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        id.to_string()
    };

    // An immediate event and a time-based one.
    let expires = app.clock.now_utc() + TimeDelta::seconds(30);
    let r = app
        .put(
            "/v1/items/cam-1",
            json!({"name": "Camera", "expires_at": expires.to_rfc3339()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    app.advance(60).await;

    let done = settled_deliveries(&app, &direct_secret, 2).await;
    for d in &done {
        let full = app
            .get(&format!("/v1/deliveries/{}", d["id"].as_str().expect("id")))
            .await
            .body;
        assert_eq!(full["status"], "succeeded", "{full}");
        assert_eq!(full["attempts"][0]["status_code"], 204, "{full}");
    }
    let mut types: Vec<&str> = done
        .iter()
        .map(|d| d["event_type"].as_str().unwrap_or_default())
        .collect();
    types.sort();
    assert_eq!(types, ["item.create", "item.expire"]);

    // The same webhooks as received, replayed to the snippet with the capturing
    // endpoint's secret: the bytes verify; the same JSON serialized again does not.
    let addr = serve_snippet(captured["secret"].as_str().expect("secret")).await;
    let http = reqwest::Client::new();
    for got in capture.wait_for(2).await {
        let send = |body: Vec<u8>| {
            let mut req = http.post(format!("http://{addr}/duehook")).body(body);
            for name in [
                "content-type",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
            ] {
                req = req.header(name, got.header(name));
            }
            req.send()
        };
        let as_received = send(got.body.clone()).await.expect("sent");
        assert_eq!(as_received.status(), StatusCode::NO_CONTENT);
        let reserialized = serde_json::to_vec(&got.json()).expect("JSON");
        assert_ne!(reserialized, got.body, "serde_json orders the keys anew");
        let parsed_first = send(reserialized).await.expect("sent");
        assert_eq!(parsed_first.status(), StatusCode::UNAUTHORIZED);
    }
}
