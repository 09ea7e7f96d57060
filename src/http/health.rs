//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::openapi::{Liveness, Readiness};

/// `GET /healthz`: the process is alive and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Liveness))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
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
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
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
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "store": if store_ok { "ok" } else { "unreachable" },
            "pending_migrations": pending,
        })),
    )
}
