//! `GET /metrics` (Prometheus text) and the per-request span and counters.
//!
//! Counters and histograms are recorded where things happen; gauges that describe the
//! store (timers by state, outbox depth, pool use) are read at scrape time, so they are
//! right even after a restart or with several nodes.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::AppState;
use crate::runtime::telemetry::{self, names};
use crate::store::timers;

/// One span per request (method, route, status) and the request counters.
pub async fn observe(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let span = tracing::info_span!("request", %method, %route, status = tracing::field::Empty);
    let start = Instant::now();
    let res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    span.record("status", status);
    let elapsed = start.elapsed().as_secs_f64();
    tracing::debug!(parent: &span, status, elapsed, "request served");
    let labels = [
        ("method", method),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!(names::HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(names::HTTP_DURATION, &labels[..2]).record(elapsed);
    res
}

/// `GET /metrics`
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "The metrics recorder is not installed", body = String, content_type = "text/plain")
    )
)]
pub async fn metrics(State(s): State<AppState>) -> Response {
    let Some(handle) = telemetry::prometheus() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response();
    };
    if let Ok(by_state) = timers::count_by_state(s.store.pool()).await {
        for (state, n) in by_state {
            metrics::gauge!(names::TIMERS_BY_STATE, "state" => state).set(n as f64);
        }
    }
    if let Ok(n) = crate::store::events::unfanned_count(s.store.pool()).await {
        metrics::gauge!(names::OUTBOX_DEPTH).set(n as f64);
    }
    if let Ok((deliveries, endpoints)) = crate::store::deliveries::gauges(s.store.pool()).await {
        // Pending deliveries are the retry queue.
        for (status, n) in deliveries {
            metrics::gauge!("duehook_deliveries", "status" => status).set(n as f64);
        }
        for (state, n) in endpoints {
            metrics::gauge!("duehook_endpoints", "state" => state).set(n as f64);
        }
    }
    if let Ok(held) = crate::store::deliveries::held_keys(s.store.pool()).await {
        // Deliveries waiting behind a key whose first delivery failed, and those keys.
        let (keys, waiting) = held
            .iter()
            .fold((0, 0), |(k, w), h| (k + h.keys, w + h.waiting));
        metrics::gauge!(names::HELD_KEYS).set(keys as f64);
        metrics::gauge!(names::HELD_DELIVERIES).set(waiting as f64);
    }
    let pool = s.store.pool();
    let idle = pool.num_idle() as f64;
    metrics::gauge!(names::DB_POOL, "state" => "idle").set(idle);
    metrics::gauge!(names::DB_POOL, "state" => "used").set(f64::from(pool.size()) - idle);
    metrics::gauge!(names::WHEEL_TIMERS)
        .set(s.driver_stats.in_wheel.load(Ordering::Relaxed) as f64);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
