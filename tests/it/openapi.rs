//! `GET /openapi.json`: the document lists exactly the routes the router serves, and
//! walking it (one request per operation, with plausible path values, the token where
//! the document asks for one, `{}` where it declares a body) gets only answers it
//! documents, with every 4xx an `ApiError`.

use crate::support;

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Backend, TOKEN, TestApp};

/// Every route of the public contract (DESIGN.md).
const CONTRACT: &[(&str, &str)] = &[
    ("PUT", "/v1/reservations/{id}"),
    ("POST", "/v1/reservations/{id}/cancel"),
    ("PUT", "/v1/orders/{id}"),
    ("POST", "/v1/orders/{id}/checkout"),
    ("POST", "/v1/orders/{id}/checkin"),
    ("POST", "/v1/orders/{id}/undo-checkout"),
    ("PATCH", "/v1/orders/{id}"),
    ("PUT", "/v1/unit-rentals/{id}"),
    ("PUT", "/v1/invoices/{id}"),
    ("PUT", "/v1/items/{id}"),
    ("PUT", "/v1/contacts/{id}"),
    ("POST", "/v1/events"),
    ("POST", "/v1/batch"),
    ("GET", "/v1/event-types"),
    ("POST", "/v1/endpoints"),
    ("GET", "/v1/endpoints"),
    ("GET", "/v1/endpoints/{id}"),
    ("PATCH", "/v1/endpoints/{id}"),
    ("DELETE", "/v1/endpoints/{id}"),
    ("POST", "/v1/endpoints/{id}/test"),
    ("POST", "/v1/endpoints/{id}/enable"),
    ("GET", "/v1/deliveries"),
    ("GET", "/v1/deliveries/{id}"),
    ("POST", "/v1/deliveries/{id}/retry"),
    ("GET", "/admin/schedule"),
    ("GET", "/admin/schedule/stats"),
    ("GET", "/admin/clock"),
    ("POST", "/admin/clock/advance"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// The routes `src/http/mod.rs` serves beyond the contract. The console's page and its
/// assets (`GET /admin/ui…`) are a page, not API operations: `tests/it/console.rs` covers them.
const EXTRA: &[(&str, &str)] = &[
    ("GET", "/v1/reservations/{id}"),
    ("GET", "/v1/orders/{id}"),
    ("GET", "/v1/unit-rentals/{id}"),
    ("GET", "/v1/invoices/{id}"),
    ("GET", "/v1/items/{id}"),
    ("GET", "/v1/contacts/{id}"),
    ("GET", "/admin/schedule/forecast"),
    ("GET", "/admin/nodes"),
    ("GET", "/admin/endpoints/health"),
    ("GET", "/admin/entities/{kind}/{id}/timeline"),
    ("POST", "/v1/endpoints/{id}/disable"),
    ("POST", "/v1/endpoints/{id}/rotate-secret"),
    ("GET", "/v1/endpoints/{id}/secret"),
    ("POST", "/v1/endpoints/{id}/recover"),
    ("POST", "/v1/deliveries/{id}/skip"),
];

const METHODS: &[&str] = &["get", "put", "post", "patch", "delete"];

struct Op<'a> {
    method: Method,
    path: &'a str,
    op: &'a Value,
}

impl Op<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn secured(&self) -> bool {
        self.op
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty())
    }

    fn has_body(&self) -> bool {
        self.op.get("requestBody").is_some()
    }

    fn documents(&self, status: u16) -> bool {
        self.op["responses"].get(status.to_string()).is_some()
    }

    /// The path with every `{param}` replaced by a plausible value.
    fn url_path(&self) -> String {
        let mut out = String::new();
        let mut rest = self.path;
        while let Some(start) = rest.find('{') {
            let end = rest[start..].find('}').expect("closing brace") + start;
            out.push_str(&rest[..start]);
            out.push_str("nope-1");
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn operations(doc: &Value) -> Vec<Op<'_>> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                ops.push(Op {
                    method: method.to_uppercase().parse().expect("method"),
                    path,
                    op,
                });
            }
        }
    }
    ops
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local reference");
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling reference {r}"));
            resolve(doc, target)
        }
        None => v,
    }
}

/// Every `$ref` anywhere in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The properties an object schema requires, following `allOf`.
fn required<'a>(doc: &'a Value, schema: &'a Value, out: &mut BTreeSet<&'a str>) {
    let schema = resolve(doc, schema);
    if let Some(r) = schema.get("required").and_then(Value::as_array) {
        out.extend(r.iter().filter_map(Value::as_str));
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        required(doc, part, out);
    }
}

/// Sends one request for `op` (at `path`, with `token` and a JSON `body`) and checks the
/// answer against the document: its status is listed, its content type is documented,
/// a 4xx is an `ApiError`, and a JSON body has every property its schema requires.
async fn call(
    app: &TestApp,
    doc: &Value,
    op: &Op<'_>,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.client.request(op.method.clone(), app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = res.text().await.expect("body read");
    assert!(
        op.documents(status),
        "{} ({path}): answered {status}, which the document does not list: {text}",
        op.name()
    );
    let response = resolve(doc, &op.op["responses"][status.to_string()]);
    let content = response["content"].as_object().expect("content");
    let essence = |t: &str| t.split(';').next().unwrap_or("").trim().to_string();
    assert!(
        content.keys().any(|k| essence(k) == essence(&ct)),
        "{}: {status} came as {ct}, documented as {:?}",
        op.name(),
        content.keys()
    );
    if essence(&ct) != "application/json" {
        return (status, Value::Null);
    }
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {status} is not JSON ({e}): {text}", op.name()));
    if (400..500).contains(&status) {
        assert!(body["error"].is_string(), "{}: {body}", op.name());
        assert!(body["detail"].is_string(), "{}: {body}", op.name());
        assert_eq!(
            content["application/json"]["schema"]["$ref"],
            "#/components/schemas/ApiError",
            "{}: {status} is documented as an ApiError",
            op.name()
        );
    }
    // Whatever the documented schema requires is there.
    let mut needed = BTreeSet::new();
    required(doc, &content["application/json"]["schema"], &mut needed);
    for field in needed {
        assert!(
            body.get(field).is_some(),
            "{}: {status} lacks `{field}`: {body}",
            op.name()
        );
    }
    (status, body)
}

async fn fetch_document(app: &TestApp) -> Value {
    let res = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("request sent");
    assert_eq!(res.status(), 200, "/openapi.json needs no token");
    let ct = res.headers()["content-type"].to_str().expect("ascii");
    assert!(ct.starts_with("application/json"), "{ct}");
    serde_json::from_str(&res.text().await.expect("body read")).expect("the document is JSON")
}

#[tokio::test]
async fn the_document_covers_every_route_and_walking_it_gets_only_documented_answers() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let doc = fetch_document(&app).await;

    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert_eq!(doc["info"]["title"], "duehook");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        doc["info"]["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );

    // Exactly the routes the router serves.
    let ops = operations(&doc);
    let documented: BTreeSet<(String, String)> = ops
        .iter()
        .map(|o| (o.method.to_string(), o.path.to_string()))
        .collect();
    let served: BTreeSet<(String, String)> = CONTRACT
        .iter()
        .chain(EXTRA)
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented.len(), ops.len());
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not served"
    );
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );

    // Unique operation ids, no dangling reference, the bearer scheme.
    let ids: BTreeSet<&str> = ops
        .iter()
        .map(|o| o.op["operationId"].as_str().expect("operationId"))
        .collect();
    assert_eq!(ids.len(), ops.len(), "operation ids are unique");
    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    assert!(!all_refs.is_empty());
    for r in all_refs {
        assert!(
            doc.pointer(r.trim_start_matches('#')).is_some(),
            "dangling reference {r}"
        );
    }
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&"http".into(), &"bearer".into())
    );

    // Walk: one request per operation, every answer documented.
    let mut walked = 0;
    let mut statuses = BTreeSet::new();
    for op in &ops {
        let admin = op.path.starts_with("/admin/");
        let secured = op.path.starts_with("/v1/") || admin;
        assert_eq!(op.secured(), secured, "{}: security", op.name());
        if secured {
            assert_eq!(op.op["security"][0]["bearer"], Value::Array(vec![]));
        }
        let token = secured.then_some(if admin { ADMIN_TOKEN } else { TOKEN });
        let body = op.has_body().then(|| json!({}));
        let (status, _) = call(&app, &doc, op, &op.url_path(), token, body).await;
        statuses.insert(status);
        walked += 1;
    }
    assert_eq!(walked, CONTRACT.len() + EXTRA.len());
    // The walk reached successes and refusals alike, not just one kind of answer.
    for s in [200, 201, 404, 422] {
        assert!(
            statuses.contains(&s),
            "no operation answered {s}: {statuses:?}"
        );
    }
    eprintln!("walked {walked} operations; statuses seen: {statuses:?}");
}

#[tokio::test]
async fn every_secured_operation_documents_and_answers_401_without_a_token() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let doc = fetch_document(&app).await;
    let mut secured = 0;
    for op in operations(&doc).iter().filter(|o| o.secured()) {
        assert!(op.documents(401), "{}: 401 is not documented", op.name());
        let admin = op.path.starts_with("/admin/");
        // Endpoints and deliveries take both kinds of token (operators act there).
        let both = op.path.starts_with("/v1/endpoints") || op.path.starts_with("/v1/deliveries");
        // No token, an unknown one, and one that does not open this route (API vs admin).
        let wrong = if admin { TOKEN } else { ADMIN_TOKEN };
        let mut tokens = vec![None, Some("unknown-token-0123456789")];
        if !both {
            tokens.push(Some(wrong));
        }
        for token in tokens {
            let mut req = app
                .client
                .request(op.method.clone(), app.url(&op.url_path()));
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            if op.has_body() {
                req = req.header("content-type", "application/json").body("{}");
            }
            let res = req.send().await.expect("request sent");
            assert_eq!(res.status(), 401, "{} with {token:?}", op.name());
            assert_eq!(res.headers()["www-authenticate"], "Bearer");
            let body: Value =
                serde_json::from_str(&res.text().await.expect("body read")).expect("JSON");
            assert_eq!(body["error"], "unauthorized", "{}", op.name());
            assert!(body["detail"].is_string());
        }
        secured += 1;
    }
    assert_eq!(
        secured,
        CONTRACT.len() + EXTRA.len() - 4,
        "all but the 4 open routes"
    );
}

/// Valid requests get the answers the document describes, with the properties their
/// schemas require (the walk above mostly reaches refusals).
#[tokio::test]
async fn successful_answers_have_what_their_schemas_require() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let doc = fetch_document(&app).await;
    let ops = operations(&doc);
    let op = |method: &str, path: &str| {
        ops.iter()
            .find(|o| o.method.as_str() == method && o.path == path)
            .unwrap_or_else(|| panic!("{method} {path} is documented"))
    };
    let t = Some(TOKEN);
    let steps: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        (
            "PUT",
            "/v1/contacts/{id}",
            "/v1/contacts/c-1".into(),
            Some(json!({"name": "Ada"})),
            201,
        ),
        (
            "PUT",
            "/v1/items/{id}",
            "/v1/items/i-1".into(),
            Some(json!({"name": "Camera"})),
            201,
        ),
        (
            "PUT",
            "/v1/reservations/{id}",
            "/v1/reservations/r-1".into(),
            Some(
                json!({"contact_id": "c-1", "item_ids": ["i-1"], "starts_at": "2030-03-02T09:00:00Z", "ends_at": "2030-03-03T09:00:00Z"}),
            ),
            201,
        ),
        (
            "PUT",
            "/v1/orders/{id}",
            "/v1/orders/o-1".into(),
            Some(
                json!({"contact_id": "c-1", "item_ids": ["i-1"], "due_at": "2030-03-04T09:00:00Z"}),
            ),
            201,
        ),
        (
            "POST",
            "/v1/orders/{id}/checkout",
            "/v1/orders/o-1/checkout".into(),
            None,
            200,
        ),
        (
            "PATCH",
            "/v1/orders/{id}",
            "/v1/orders/o-1".into(),
            Some(json!({"due_at": "2030-03-05T09:00:00Z"})),
            200,
        ),
        (
            "POST",
            "/v1/orders/{id}/checkin",
            "/v1/orders/o-1/checkin".into(),
            Some(json!({})),
            200,
        ),
        ("GET", "/v1/orders/{id}", "/v1/orders/o-1".into(), None, 200),
        (
            "PUT",
            "/v1/unit-rentals/{id}",
            "/v1/unit-rentals/u-1".into(),
            Some(json!({})),
            201,
        ),
        (
            "PUT",
            "/v1/invoices/{id}",
            "/v1/invoices/n-1".into(),
            Some(
                json!({"unit_rental_id": "u-1", "due_at": "2030-03-10T00:00:00Z", "state": "sent"}),
            ),
            201,
        ),
        (
            "POST",
            "/v1/reservations/{id}/cancel",
            "/v1/reservations/r-1/cancel".into(),
            None,
            200,
        ),
        (
            "POST",
            "/v1/events",
            "/v1/events".into(),
            Some(json!({"type": "item.create", "data": {"id": "i-2"}})),
            201,
        ),
        (
            "POST",
            "/v1/endpoints",
            "/v1/endpoints".into(),
            Some(json!({"name": "hook", "url": "http://127.0.0.1:9/hook", "topics": ["*"]})),
            201,
        ),
    ];
    for (method, template, path, body, expected) in steps {
        let (status, _) = call(&app, &doc, op(method, template), &path, t, body).await;
        assert_eq!(status, expected, "{method} {path}");
    }
    let (_, list) = call(
        &app,
        &doc,
        op("GET", "/v1/endpoints"),
        "/v1/endpoints",
        t,
        None,
    )
    .await;
    let id = list["endpoints"][0]["id"]
        .as_str()
        .expect("an endpoint")
        .to_string();
    for (method, template, suffix, body, expected) in [
        ("GET", "/v1/endpoints/{id}", "", None, 200),
        (
            "PATCH",
            "/v1/endpoints/{id}",
            "",
            Some(json!({"name": "hook 2"})),
            200,
        ),
        ("GET", "/v1/endpoints/{id}/secret", "/secret", None, 200),
        (
            "POST",
            "/v1/endpoints/{id}/rotate-secret",
            "/rotate-secret",
            Some(json!({})),
            200,
        ),
        ("POST", "/v1/endpoints/{id}/disable", "/disable", None, 200),
        ("POST", "/v1/endpoints/{id}/test", "/test", None, 409),
        ("POST", "/v1/endpoints/{id}/enable", "/enable", None, 200),
        ("POST", "/v1/endpoints/{id}/test", "/test", None, 202),
        (
            "POST",
            "/v1/endpoints/{id}/recover",
            "/recover",
            Some(json!({"since": "2030-01-01T00:00:00Z"})),
            200,
        ),
    ] {
        let path = format!("/v1/endpoints/{id}{suffix}");
        let (status, _) = call(&app, &doc, op(method, template), &path, t, body).await;
        assert_eq!(status, expected, "{method} {path}");
    }
    let (_, page) = call(
        &app,
        &doc,
        op("GET", "/v1/deliveries"),
        "/v1/deliveries",
        t,
        None,
    )
    .await;
    let delivery = page["deliveries"][0]["id"]
        .as_str()
        .expect("a delivery")
        .to_string();
    let path = format!("/v1/deliveries/{delivery}");
    let (status, _) = call(&app, &doc, op("GET", "/v1/deliveries/{id}"), &path, t, None).await;
    assert_eq!(status, 200);
    let a = Some(ADMIN_TOKEN);
    for (method, template, path, body, expected) in [
        (
            "GET",
            "/admin/schedule",
            "/admin/schedule".to_string(),
            None,
            200,
        ),
        (
            "GET",
            "/admin/schedule/forecast",
            "/admin/schedule/forecast?until=2030-04-01T00:00:00Z".into(),
            None,
            200,
        ),
        (
            "GET",
            "/admin/entities/{kind}/{id}/timeline",
            "/admin/entities/order/o-1/timeline".into(),
            None,
            200,
        ),
        (
            "POST",
            "/admin/clock/advance",
            "/admin/clock/advance".into(),
            Some(json!({"seconds": 60})),
            200,
        ),
    ] {
        let (status, _) = call(&app, &doc, op(method, template), &path, a, body).await;
        assert_eq!(status, expected, "{method} {path}");
    }
    let path = format!("/v1/endpoints/{id}");
    let (status, _) = call(
        &app,
        &doc,
        op("DELETE", "/v1/endpoints/{id}"),
        &path,
        t,
        None,
    )
    .await;
    assert_eq!(status, 200);
}
