//! The admin console (`GET /admin/ui`): the open page shell and its headers, the admin
//! answers' security headers, the tokens it works with, the story's extra data, and the
//! page itself driven in headless Chromium against the real app (manual clock, SQLite
//! file, receivers on 127.0.0.1): sign in, the schedule, moving the clock, an entity's
//! story, retrying a failed delivery, endpoints, and hostile values that stay text.

use crate::support;
#[path = "console/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::receiver::{Answer, Receiver};
use support::{ADMIN_TOKEN, Backend, ClockExt, TOKEN, TestApp, t};
use webdriver::{Browser, ENTER};

const SCRIPT_PAYLOAD: &str = "<script>window.__xss=1</script>";
const IMG_PAYLOAD: &str = "<img src=x onerror=window.__xss=2>";
const NAME_PAYLOAD: &str = "<img src=x onerror=window.__xss=3>";
const SEARCH_PAYLOAD: &str = "<script>alert(1)</script>";

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The headers every `/admin/*` answer carries.
fn assert_admin_headers(headers: &reqwest::header::HeaderMap, what: &str) {
    let csp = header(headers, "content-security-policy");
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("unsafe"), "{what}: CSP {csp:?}");
    assert_eq!(
        header(headers, "x-content-type-options"),
        "nosniff",
        "{what}"
    );
    assert_eq!(header(headers, "referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header(headers, "x-frame-options"), "DENY", "{what}");
    assert_eq!(header(headers, "cache-control"), "no-store", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shell_is_open_and_every_admin_answer_carries_the_security_headers() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let get = |path: &str| app.client.get(app.url(path)).send();

    let page = get("/admin/ui").await.expect("sent");
    assert_eq!(page.status(), StatusCode::OK, "the shell needs no token");
    assert_admin_headers(page.headers(), "/admin/ui");
    assert_eq!(
        header(page.headers(), "content-type"),
        "text/html; charset=utf-8"
    );
    let html = page.text().await.expect("body");
    // The first form has one input: the password field for the admin token.
    let first_form = &html[html.find("<form").expect("a form")..];
    let first_form = &first_form[..first_form.find("</form>").expect("closed")];
    assert_eq!(first_form.matches("<input").count(), 1, "{first_form}");
    assert!(first_form.contains(r#"type="password""#), "{first_form}");
    for (path, content_type) in [
        ("/admin/ui/console.js", "text/javascript; charset=utf-8"),
        ("/admin/ui/console.css", "text/css; charset=utf-8"),
        ("/admin/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = get(path).await.expect("sent");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(header(r.headers(), "content-type"), content_type, "{path}");
        assert_admin_headers(r.headers(), path);
    }

    // JSON answers, refusals and unknown admin routes alike.
    let r = app.admin_get("/admin/clock").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_admin_headers(&r.headers, "GET /admin/clock");
    let r = app
        .request_as(Method::GET, "/admin/schedule", None, None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_admin_headers(&r.headers, "401 on /admin/schedule");
    let r = app.admin_get("/admin/no-such-thing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_admin_headers(&r.headers, "404 under /admin");
}

/// The console acts with the admin token: it opens the endpoint and delivery routes,
/// never ingest; the API token keeps its routes and stays out of `/admin/*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_opens_endpoints_and_deliveries_but_not_ingest() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let r = app
        .request_as(
            Method::POST,
            "/v1/endpoints",
            Some(json!({"name": "ops", "url": "http://127.0.0.1:9/h", "topics": ["*"]})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().expect("id").to_string();
    for (method, path, expected) in [
        (Method::GET, "/v1/endpoints".to_string(), StatusCode::OK),
        (
            Method::POST,
            format!("/v1/endpoints/{id}/disable"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/v1/endpoints/{id}/enable"),
            StatusCode::OK,
        ),
        (Method::GET, "/v1/deliveries".into(), StatusCode::OK),
        (
            Method::POST,
            "/v1/deliveries/dlv_none/retry".into(),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = app
            .request_as(method.clone(), &path, None, Some(ADMIN_TOKEN))
            .await;
        assert_eq!(r.status, expected, "{method} {path}: {}", r.body);
    }
    let r = app
        .request_as(
            Method::PUT,
            "/v1/items/i-1",
            Some(json!({"name": "camera"})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "ingest stays the app's");
    assert_eq!(
        app.get("/v1/endpoints").await.status,
        StatusCode::OK,
        "the API token still opens them"
    );
    assert_eq!(
        app.request_as(Method::GET, "/admin/clock", None, Some(TOKEN))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

/// What the story shows beyond the timers: each event's data, and for each attempt its
/// error and the first bytes of the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_carries_event_data_and_each_attempts_answer() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let rx = Receiver::start().await;
    rx.set_default(Answer::status(500));
    let r = app
        .post(
            "/v1/endpoints",
            Some(
                json!({"name": "rx", "url": rx.url("/h"), "topics": ["item.*"],
                        "retry": {"max_attempts": 1}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    app.put(
        "/v1/items/cam-1",
        json!({"name": "Camera", "data": {"shelf": "B4"}}),
    )
    .await;
    rx.wait_for(1).await;
    let attempt = support::receiver::eventually("the attempt in the timeline", || async {
        let r = app.admin_get("/admin/entities/item/cam-1/timeline").await;
        r.body["timeline"]
            .as_array()
            .and_then(|tl| tl.iter().find(|e| e["what"] == "delivery.attempt").cloned())
    })
    .await;
    assert_eq!(attempt["status_code"], 500, "{attempt}");
    assert_eq!(attempt["response_excerpt"], "receiver says hi", "{attempt}");
    assert!(attempt["duration_ms"].is_i64(), "{attempt}");
    let r = app.admin_get("/admin/entities/item/cam-1/timeline").await;
    let change = r.body["timeline"]
        .as_array()
        .and_then(|tl| tl.iter().find(|e| e["what"] == "event.change"))
        .cloned()
        .expect("the change");
    assert_eq!(change["data"]["data"]["shelf"], "B4", "{change}");
}

/// Where the test's screenshots go: `target/tmp/console/` (Cargo's directory for
/// integration tests' files), kept after the run so a person can look at them.
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// No view makes a 1280 px wide window scroll sideways.
async fn assert_no_horizontal_scroll(browser: &Browser, view: &str) {
    let v = browser
        .run(
            "const d = document.documentElement; return [d.scrollWidth, d.clientWidth];",
            json!([]),
        )
        .await;
    let (scroll, client) = (v[0].as_i64().unwrap_or(0), v[1].as_i64().unwrap_or(0));
    assert!(
        scroll <= client,
        "{view}: {scroll} px wide in a {client} px window"
    );
}

/// Rows of `table` (a CSS selector) whose text contains every one of `needles`.
const ROW_WITH: &str = "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]
    .find(tr => arguments[1].every(n => tr.innerText.includes(n))) || null;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_moves_the_clock_reads_a_story_and_retries_a_delivery() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let shop = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.set_default(Answer::status(500));
    let r = app
        .post(
            "/v1/endpoints",
            Some(json!({"name": "Shop backend", "url": shop.url("/hooks"), "topics": ["order.*", "reservation.*"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let shop_id = r.body["id"].as_str().expect("id").to_string();
    let r = app
        .post(
            "/v1/endpoints",
            Some(json!({"name": NAME_PAYLOAD, "url": failing.url("/fail"),
                        "topics": ["order.due_in_1_hour"], "retry": {"max_attempts": 1}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // The order whose story is told, with hostile text in its data; and a few more
    // entities so the schedule has something to show.
    let r = app
        .put(
            "/v1/orders/o-1001",
            json!({"contact_id": "c-7", "item_ids": ["cam-1"], "due_at": "2030-03-01T12:00:00Z",
                   "data": {"note": SCRIPT_PAYLOAD, "gift": IMG_PAYLOAD}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    app.post("/v1/orders/o-1001/checkout", None).await;
    for (i, starts) in [
        "2030-03-01T15:00:00Z",
        "2030-03-01T18:30:00Z",
        "2030-03-02T02:00:00Z",
    ]
    .iter()
    .enumerate()
    {
        let r = app
            .put(
                &format!("/v1/reservations/r-20{i}"),
                json!({"contact_id": "c-1", "item_ids": ["tripod-2"], "starts_at": starts,
                       "ends_at": "2030-03-03T09:00:00Z"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    for (i, due) in ["2030-03-01T20:00:00Z", "2030-03-02T06:00:00Z"]
        .iter()
        .enumerate()
    {
        app.put(
            &format!("/v1/orders/o-30{i}"),
            json!({"contact_id": "c-2", "item_ids": ["light-3"], "due_at": due}),
        )
        .await;
        app.post(&format!("/v1/orders/o-30{i}/checkout"), None)
            .await;
    }
    let planned = app.timers_of("order", "o-1001").await;
    assert!(
        planned
            .iter()
            .any(|t| t["type"] == "order.due_in_1_hour" && t["state"] == "pending"),
        "{planned:?}"
    );

    let shots = screenshot_dir();
    let browser = Browser::start(1280, 800, "Europe/Brussels").await;

    // Sign in: a wrong token is refused and not kept; the admin token opens the console.
    browser.goto(&app.url("/admin/ui")).await;
    let field = browser.find("#login input[type=password]").await;
    let first_form = browser
        .run(
            "const f = document.forms[0]; const i = f.querySelectorAll('input');
             return f.id === 'login' && i.length === 1 && i[0].type === 'password';",
            json!([]),
        )
        .await;
    assert_eq!(
        first_form,
        json!(true),
        "the first form: one password field"
    );
    browser
        .type_into(&field, &format!("not-the-token-0123456789{ENTER}"))
        .await;
    browser.wait_for_text("Wrong token").await;
    let kept = browser.run("return sessionStorage.length", json!([])).await;
    assert_eq!(kept, json!(0), "a refused token is not kept");
    browser.clear(&field).await;
    browser
        .type_into(&field, &format!("{ADMIN_TOKEN}{ENTER}"))
        .await;

    // The schedule: the order's timer with its entity id, and the forecast chart.
    browser
        .wait_for(
            "o-1001's reminder in the schedule",
            ROW_WITH,
            json!([
                "#schedule-table",
                ["order o-1001", "order.due_in_1_hour", "pending"]
            ]),
        )
        .await;
    let bars = browser
        .run(
            "return document.querySelectorAll('#forecast-svg rect[class^=t]').length",
            json!([]),
        )
        .await;
    assert!(bars.as_i64().unwrap_or(0) > 0, "the chart has bars: {bars}");
    browser.wait_for_text("2030-03-01 11:00:00 UTC").await;
    browser.wait_for_text("Europe/Brussels").await;
    let where_token = browser
        .run(
            "return [sessionStorage.getItem('duehook.console.token'), location.href, document.cookie]",
            json!([]),
        )
        .await;
    assert_eq!(where_token[0], ADMIN_TOKEN, "kept in sessionStorage");
    assert!(
        !where_token[1]
            .as_str()
            .unwrap_or_default()
            .contains(ADMIN_TOKEN),
        "not in the URL"
    );
    assert_eq!(where_token[2], "", "no cookie");
    assert_no_horizontal_scroll(&browser, "schedule").await;
    browser.screenshot(&shots, "schedule").await;

    // The week ahead: the overdue-by-a-day reminders join the chart.
    let week = browser.find(".toggle button[data-hours='168']").await;
    browser.click(&week).await;
    browser.wait_for_text("in the next 7 days").await;
    browser.wait_for_text("order.overdue_1_day").await;
    browser.wait_for_text("18 timers, by time of firing.").await;
    browser.screenshot(&shots, "schedule-7-days").await;

    // Dark, from the system's preference.
    browser.color_scheme("dark").await;
    let background = browser
        .run(
            "return getComputedStyle(document.body).backgroundColor",
            json!([]),
        )
        .await;
    assert_eq!(background, "rgb(21, 23, 26)", "dark background");
    browser.screenshot(&shots, "schedule-dark").await;
    browser.color_scheme("light").await;

    // The clock: a day forward, by keyboard; the reminder fires on the way.
    let tab = browser.find("#tabs button[data-view=clock]").await;
    browser.type_into(&tab, ENTER).await;
    let day = browser.button_in("#clock-controls", "+1 day").await;
    browser.type_into(&day, ENTER).await;
    browser
        .wait_for(
            "o-1001's reminder among what fired",
            ROW_WITH,
            json!([
                "#fired-table",
                ["order o-1001", "order.due_in_1_hour", "fired"]
            ]),
        )
        .await;
    browser.wait_for_text("2030-03-02 08:00:00 UTC").await;
    assert_eq!(app.clock.now_utc(), t("2030-03-02T08:00:00Z"));
    assert_no_horizontal_scroll(&browser, "clock").await;
    browser.screenshot(&shots, "clock").await;

    // The story, opened from what fired: the timer fired, the webhook went out.
    let story = browser.button_in("#fired-table", "order o-1001").await;
    browser.click(&story).await;
    for (what, needles) in [
        ("timer.fired", vec!["order.due_in_1_hour"]),
        ("delivery.attempt", vec!["Shop backend", "HTTP 200"]),
        ("delivery.succeeded", vec!["Shop backend"]),
        (
            "delivery.attempt",
            vec![NAME_PAYLOAD, "HTTP 500", "receiver says hi"],
        ),
        ("delivery.failed", vec![NAME_PAYLOAD]),
    ] {
        browser
            .wait_for(
                &format!("{what} with {needles:?} in the story"),
                "return [...document.querySelectorAll('#story-table tr[data-what]')]
                   .find(tr => tr.dataset.what === arguments[0]
                     && arguments[1].every(n => tr.innerText.includes(n))) || null;",
                json!([what, needles]),
            )
            .await;
    }
    let data = browser
        .find("#story-table tr[data-what='event.change'] summary")
        .await;
    browser.click(&data).await;
    browser.wait_for_text(SCRIPT_PAYLOAD).await;
    browser.wait_for_text(IMG_PAYLOAD).await;
    assert_no_horizontal_scroll(&browser, "story").await;
    // The picture starts at the reminder firing, with its deliveries below.
    browser
        .run(
            "document.querySelector(\"#story-table tr[data-what='timer.fired']\")
               .scrollIntoView({block: 'start'}); window.scrollBy(0, -80);",
            json!([]),
        )
        .await;
    browser.screenshot(&shots, "story").await;
    let got = shop.wait_for(1).await;
    assert!(
        got.iter().any(
            |r| r.json()["type"] == "order.due_in_1_hour" && r.json()["data"]["id"] == "o-1001"
        ),
        "the shop got the reminder"
    );

    // Deliveries: the failed one, its attempt, and a retry that now succeeds.
    let story = app.admin_get("/admin/entities/order/o-1001/timeline").await;
    let delivery_id = story.body["timeline"]
        .as_array()
        .and_then(|tl| tl.iter().find(|e| e["what"] == "delivery.failed"))
        .and_then(|e| e["delivery_id"].as_str())
        .expect("o-1001's failed delivery")
        .to_string();
    let tab = browser.find("#tabs button[data-view=deliveries]").await;
    browser.click(&tab).await;
    let row_css = format!("#deliveries-failed tr[data-delivery='{delivery_id}']");
    browser
        .wait_for(
            "o-1001's failed reminder delivery",
            "const tr = document.querySelector(arguments[0]);
             return !!tr && arguments[1].every(n => tr.innerText.includes(n));",
            json!([
                row_css,
                ["order.due_in_1_hour", NAME_PAYLOAD, "failed", "HTTP 500"]
            ]),
        )
        .await;
    let attempts = browser.button_in(&row_css, "Attempts").await;
    browser.click(&attempts).await;
    browser.wait_for_text("receiver says hi").await;
    failing.set_default(Answer::status(200));
    let retry = browser.button_in(&row_css, "Retry").await;
    browser.click(&retry).await;
    browser
        .wait_for(
            "the retried delivery to succeed",
            "const tr = document.querySelector(arguments[0]);
             return !!tr && tr.innerText.includes('succeeded') && tr.innerText.includes('HTTP 200');",
            json!([row_css]),
        )
        .await;
    failing.wait_for(2).await;
    let d = app
        .request_as(
            Method::GET,
            &format!("/v1/deliveries/{delivery_id}"),
            None,
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(d.body["status"], "succeeded", "{}", d.body);
    assert_eq!(d.body["attempt_count"], 2, "{}", d.body);
    assert_no_horizontal_scroll(&browser, "deliveries").await;
    browser.screenshot(&shots, "deliveries").await;

    // Endpoints: health as text, a test event, disable and enable again.
    let tab = browser.find("#tabs button[data-view=endpoints]").await;
    browser.click(&tab).await;
    let shop_row = format!("#endpoints-table tr[data-endpoint='{shop_id}']");
    let test = browser.button_in(&shop_row, "Send test").await;
    browser.click(&test).await;
    browser
        .wait_for_text("Sent a test event to Shop backend")
        .await;
    support::receiver::eventually("the test webhook", || async {
        shop.received()
            .iter()
            .any(|r| r.json()["type"] == "webhook.test")
            .then_some(())
    })
    .await;
    let disable = browser.button_in(&shop_row, "Disable").await;
    browser.click(&disable).await;
    browser.wait_for_text("Shop backend is disabled.").await;
    let r = app.get(&format!("/v1/endpoints/{shop_id}")).await;
    assert_eq!(r.body["enabled"], false, "{}", r.body);
    let enable = browser.button_in(&shop_row, "Enable").await;
    browser.click(&enable).await;
    browser.wait_for_text("Shop backend is enabled.").await;
    browser.wait_for_text(NAME_PAYLOAD).await;
    assert_no_horizontal_scroll(&browser, "endpoints").await;
    browser.screenshot(&shots, "endpoints").await;

    // A hostile id typed into the story's search comes back as text in the error.
    let tab = browser.find("#tabs button[data-view=story]").await;
    browser.click(&tab).await;
    let id = browser.find("#story-form input[name=id]").await;
    browser.clear(&id).await;
    browser
        .type_into(&id, &format!("{SEARCH_PAYLOAD}{ENTER}"))
        .await;
    browser
        .wait_for_text(&format!("nothing is known about order {SEARCH_PAYLOAD}"))
        .await;

    // Nothing hostile ran or became markup.
    let ran = browser
        .run(
            "return [window.__xss === undefined, document.querySelectorAll('img').length,
                     document.querySelectorAll('script').length]",
            json!([]),
        )
        .await;
    assert_eq!(
        ran,
        json!([true, 0, 1]),
        "no payload ran or became an element"
    );
    assert!(!browser.alert_open().await, "no alert");
    // The page ran under its policy: nothing refused, no uncaught error.
    let refused: Vec<String> = browser
        .console_messages()
        .await
        .into_iter()
        .filter(|m| {
            [
                "Content Security Policy",
                "Trusted Type",
                "Uncaught",
                "Refused",
            ]
            .iter()
            .any(|w| m.contains(w))
        })
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
    // Trusted Types are enforced: a string written as HTML throws instead of parsing.
    let probe = browser
        .run(
            "const d = document.createElement('div');
             try { d.innerHTML = '<b>x</b>'; return 'parsed'; } catch (e) { return e.name; }",
            json!([]),
        )
        .await;
    assert_eq!(probe, "TypeError", "innerHTML with a string is refused");
    let logged = browser.console_messages().await;
    assert!(
        logged.iter().any(|m| m.contains("TrustedHTML")),
        "the console log reports the refusal: {logged:#?}"
    );

    // Signing out forgets the token.
    let out = browser.find("#sign-out").await;
    browser.click(&out).await;
    browser.find("#login input[type=password]").await;
    let kept = browser.run("return sessionStorage.length", json!([])).await;
    assert_eq!(kept, json!(0));
    browser.close().await;
    eprintln!("console screenshots: {}", shots.display());
}
