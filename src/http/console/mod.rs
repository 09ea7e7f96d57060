//! The admin console (`GET /admin/ui`): one page and its script, style sheet and icon,
//! embedded in the binary, and the security headers every `/admin/*` answer carries.
//!
//! The page shell holds no data and needs no token. The script asks for the admin
//! token, keeps it in `sessionStorage` and reads and acts through the same JSON API
//! as any other client, so the console can do nothing the API refuses that token.
//! It renders every value from the store as text (DOM `textContent`, never HTML), and
//! the Content-Security-Policy below allows only this page's own script and style
//! sheet: no inline script, no inline style, no other origin.

use axum::Router;
use axum::extract::Request;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, HeaderValue, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("index.html");
const CONSOLE_JS: &str = include_str!("console.js");
const CONSOLE_CSS: &str = include_str!("console.css");
const ICON_SVG: &str = include_str!("icon.svg");

/// The policy of every `/admin/*` answer. The page loads its script and style sheet
/// from this origin only and talks to this origin only; Trusted Types make any string
/// written into an HTML sink (`innerHTML` and the like) throw instead of parsing.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; \
require-trusted-types-for 'script'; trusted-types 'none'";

/// The console's routes. They are open: the shell and its assets hold no data.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/admin/ui", get(page))
        .route("/admin/ui/console.js", get(script))
        .route("/admin/ui/console.css", get(style))
        .route("/admin/ui/icon.svg", get(icon))
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON_SVG)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// Middleware: every answer under `/admin` (the console, the admin JSON API, its
/// refusals and its 404s) gets the console's Content-Security-Policy, `nosniff`, no
/// referrer, no framing, and `no-store` so no schedule or delivery lands in a cache.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let admin = path == "/admin" || path.starts_with("/admin/");
    let mut res = next.run(req).await;
    if admin {
        let headers = res.headers_mut();
        let set = [
            (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (REFERRER_POLICY, "no-referrer"),
            (X_FRAME_OPTIONS, "DENY"),
            (CACHE_CONTROL, "no-store"),
        ];
        for (name, value) in set {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers.insert(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The assets reference each other by the names the routes serve, and nothing in
    /// them needs what the policy forbids.
    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(INDEX_HTML.contains(r#"src="ui/console.js""#));
        assert!(INDEX_HTML.contains(r#"href="ui/console.css""#));
        assert!(INDEX_HTML.contains(r#"href="ui/icon.svg""#));
        for forbidden in [
            "<style",
            " style=",
            " onclick=",
            " onload=",
            "http://",
            "https://",
        ] {
            assert!(
                !INDEX_HTML.contains(forbidden),
                "index.html has {forbidden}"
            );
        }
        assert_eq!(
            INDEX_HTML.matches("<script").count(),
            1,
            "one script, by src"
        );
        for forbidden in [
            ".innerHTML",
            ".outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(
                !CONSOLE_JS.contains(forbidden),
                "console.js uses {forbidden}"
            );
        }
        assert!(!CONSOLE_CSS.contains("@import") && !CONSOLE_CSS.contains("url(http"));
    }
}
