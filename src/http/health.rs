//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use super::api::Sorted;
use super::api::operations::{Liveness, Readiness};

/// `GET /healthz`: the process is alive and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Liveness))
)]
pub async fn healthz() -> Sorted<Liveness> {
    Sorted(Liveness {
        status: "ok".to_string(),
    })
}

/// `GET /readyz`: the store answers and every migration this binary knows is applied.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready: the store answers and is fully migrated", body = Readiness),
        (status = 503, description = "Not ready", body = Readiness)
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Sorted<Readiness>) {
    let store_ok = state.store.ping().await;
    let pending = if store_ok {
        state.store.pending_migrations().await.ok()
    } else {
        None
    };
    let ready = store_ok && pending == Some(0);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" }.to_string(),
        store: if store_ok { "ok" } else { "unreachable" }.to_string(),
        pending_migrations: pending,
    };
    (status, Sorted(body))
}
