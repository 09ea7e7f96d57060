//! The HTTP API: router, shared state, authentication and error mapping.
//! Route handlers live in one submodule per area; the bodies they parse and answer
//! live in [`api`].

pub mod admin;
pub mod api;
pub mod auth;
pub mod batch;
pub mod console;
pub mod deliveries;
pub mod endpoints;
pub mod error;
pub mod health;
pub mod ingest;
pub mod json;
pub mod metrics;
pub mod openapi;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post, put};

use crate::delivery::pipeline::Pipeline;
use crate::delivery::service::Endpoints;

use crate::clock::SharedClock;
use crate::domain::catalogue::Catalogue;
use crate::ingest::Ingest;
use crate::schedule::driver::DriverStats;
use crate::schedule::plan::Planner;
use crate::store::Store;
use error::ApiError;

/// What every handler can reach. Behind one `Arc`: axum clones the state for each
/// request, and one reference count is cheaper than cloning every part.
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

impl AppState {
    pub fn new(parts: Parts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Parts {
    pub store: Store,
    pub clock: SharedClock,
    pub ingest: Ingest,
    pub planner: Planner,
    pub driver_stats: Arc<DriverStats>,
    pub catalogue: Arc<Catalogue>,
    pub delivery: Pipeline,
    /// Endpoint and delivery commands.
    pub endpoints: Endpoints,
    /// This node's id: the name the scheduler driver claims timers under.
    pub node_id: String,
}

/// The whole API. `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and the console's
/// page and assets (`/admin/ui…`) are open; everything else needs a token.
/// `max_body_bytes` bounds every body but `POST /v1/batch`'s, which `max_batch_bytes`
/// bounds.
pub fn router(
    state: AppState,
    tokens: auth::Tokens,
    max_body_bytes: usize,
    max_batch_bytes: usize,
) -> Router {
    let v1 = Router::new()
        .route(
            "/v1/reservations/{id}",
            put(ingest::put_reservation).get(ingest::get_reservation),
        )
        .route(
            "/v1/reservations/{id}/cancel",
            post(ingest::cancel_reservation),
        )
        .route(
            "/v1/orders/{id}",
            put(ingest::put_order)
                .patch(ingest::patch_order)
                .get(ingest::get_order),
        )
        .route("/v1/orders/{id}/checkout", post(ingest::checkout))
        .route("/v1/orders/{id}/checkin", post(ingest::checkin))
        .route("/v1/orders/{id}/undo-checkout", post(ingest::undo_checkout))
        .route(
            "/v1/unit-rentals/{id}",
            put(ingest::put_unit_rental).get(ingest::get_unit_rental),
        )
        .route(
            "/v1/invoices/{id}",
            put(ingest::put_invoice).get(ingest::get_invoice),
        )
        .route(
            "/v1/items/{id}",
            put(ingest::put_item).get(ingest::get_item),
        )
        .route(
            "/v1/contacts/{id}",
            put(ingest::put_contact).get(ingest::get_contact),
        )
        .route("/v1/events", post(ingest::post_event))
        .route(
            "/v1/batch",
            post(batch::batch).layer(DefaultBodyLimit::max(max_batch_bytes)),
        )
        .route("/v1/event-types", get(ingest::event_types))
        .route("/admin/clock", get(admin::get_clock))
        .route("/admin/clock/advance", post(admin::advance_clock))
        .route("/admin/schedule", get(admin::schedule))
        .route("/admin/schedule/stats", get(admin::stats))
        .route("/admin/schedule/forecast", get(admin::forecast))
        .route("/admin/nodes", get(admin::nodes))
        .route("/admin/endpoints/health", get(admin::endpoint_health))
        .route("/admin/entities/{kind}/{id}/timeline", get(admin::timeline))
        .route(
            "/v1/endpoints",
            post(endpoints::create).get(endpoints::list),
        )
        .route(
            "/v1/endpoints/{id}",
            get(endpoints::get)
                .patch(endpoints::patch)
                .delete(endpoints::delete),
        )
        .route("/v1/endpoints/{id}/enable", post(endpoints::enable))
        .route("/v1/endpoints/{id}/disable", post(endpoints::disable))
        .route("/v1/endpoints/{id}/test", post(endpoints::test))
        .route(
            "/v1/endpoints/{id}/rotate-secret",
            post(endpoints::rotate_secret),
        )
        .route("/v1/endpoints/{id}/secret", get(endpoints::secret))
        .route("/v1/endpoints/{id}/recover", post(endpoints::recover))
        .route("/v1/deliveries", get(deliveries::list))
        .route("/v1/deliveries/{id}", get(deliveries::get))
        .route("/v1/deliveries/{id}/retry", post(deliveries::retry))
        .route("/v1/deliveries/{id}/skip", post(deliveries::skip))
        .route_layer(middleware::from_fn_with_state(tokens, auth::require_token));

    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(console::routes())
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(console::security_headers))
        .layer(middleware::from_fn(metrics::observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route (see /openapi.json)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
