//! Endpoint routes (`/v1/endpoints…`): create, list, read, change, delete, enable,
//! disable, send a test event, rotate and read the secret, and recover failed
//! deliveries. The secret appears only in the create and rotate responses and in
//! `GET /v1/endpoints/{id}/secret`, never in lists or logs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::json::JsonBody;
use super::openapi::{
    BodyErrors, Conflict, EndpointCreated, EndpointDeleted, EndpointList, EndpointSecret, NotFound,
    Recovered, SecretRotated, StoreErrors, TestSent,
};
use crate::delivery::endpoint::{Endpoint, EndpointInput, EndpointPatch, EndpointView};

fn view(ep: &Endpoint) -> Value {
    serde_json::to_value(ep.view()).unwrap_or(Value::Null)
}

#[utoipa::path(
    post,
    path = "/v1/endpoints",
    tag = "endpoints",
    operation_id = "create_endpoint",
    request_body = EndpointInput,
    responses(
        (status = 201, description = "The endpoint, with its signing secret (shown here, on rotation and at `GET /v1/endpoints/{id}/secret` only)", body = EndpointCreated),
        BodyErrors,
        StoreErrors
    )
)]
pub async fn create(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<EndpointInput>,
) -> Result<Response, ApiError> {
    let (ep, secret) = state.endpoints.create(input).await?;
    let mut body = view(&ep);
    body["secret"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/endpoints",
    tag = "endpoints",
    operation_id = "list_endpoints",
    responses(
        (status = 200, description = "Every endpoint (without secrets)", body = EndpointList),
        StoreErrors
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let all = state.endpoints.list().await?;
    Ok(Json(
        json!({"endpoints": all.iter().map(view).collect::<Vec<_>>()}),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    operation_id = "get_endpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint (without secrets)", body = EndpointView),
        NotFound,
        StoreErrors
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&state.endpoints.get(&id).await?)))
}

#[utoipa::path(
    patch,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    operation_id = "patch_endpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body = EndpointPatch,
    responses(
        (status = 200, description = "The changed endpoint", body = EndpointView),
        BodyErrors,
        NotFound,
        StoreErrors
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<EndpointPatch>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&state.endpoints.patch(&id, patch).await?)))
}

#[utoipa::path(
    delete,
    path = "/v1/endpoints/{id}",
    tag = "endpoints",
    operation_id = "delete_endpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint is gone", body = EndpointDeleted),
        NotFound,
        StoreErrors
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.endpoints.delete(&id).await?;
    Ok(Json(json!({"id": id, "deleted": true})))
}

#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/enable",
    tag = "endpoints",
    operation_id = "enable_endpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint, enabled and with its health reset", body = EndpointView),
        NotFound,
        StoreErrors
    )
)]
pub async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&state.endpoints.enable(&id).await?)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableInput {
    /// Shown as `disabled_reason` (default "disabled by an operator"); at most 500
    /// characters.
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/disable",
    tag = "endpoints",
    operation_id = "disable_endpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body = Option<DisableInput>,
    responses(
        (status = 200, description = "The endpoint, disabled: nothing is sent to it until it is enabled", body = EndpointView),
        BodyErrors,
        NotFound,
        StoreErrors
    )
)]
pub async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<DisableInput>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(
        &state.endpoints.disable(&id, input.reason).await?,
    )))
}

/// Sends a `webhook.test` event to this endpoint only (whatever its topics), through
/// the normal pipeline: it is signed, retried and recorded like any delivery.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/test",
    tag = "endpoints",
    operation_id = "test_endpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 202, description = "A `webhook.test` event is on its way to this endpoint only", body = TestSent),
        NotFound,
        Conflict,
        StoreErrors
    )
)]
pub async fn test(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (event, delivery) = state.endpoints.test(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event_id": event, "delivery_id": delivery})),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// The new secret (generated when absent); it must suit the endpoint's scheme.
    #[serde(default)]
    secret: Option<String>,
    /// How long the previous secret keeps signing beside the new one (at most 30 days;
    /// default `[delivery] rotation_grace_seconds`).
    #[serde(default)]
    grace_seconds: Option<u64>,
}

/// A new secret signs from now on; the previous one keeps signing beside it (two
/// signatures) for the grace period.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/rotate-secret",
    tag = "endpoints",
    operation_id = "rotate_endpoint_secret",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body = Option<RotateInput>,
    responses(
        (status = 200, description = "The new secret", body = SecretRotated),
        BodyErrors,
        NotFound,
        StoreErrors
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<RotateInput>,
) -> Result<Json<Value>, ApiError> {
    let (secret, until) = state
        .endpoints
        .rotate_secret(&id, input.secret, input.grace_seconds)
        .await?;
    Ok(Json(json!({
        "id": id,
        "secret": secret,
        "previous_secret_expires_at": until,
    })))
}

/// The signing secret (and the previous one while it still signs).
#[utoipa::path(
    get,
    path = "/v1/endpoints/{id}/secret",
    tag = "endpoints",
    operation_id = "get_endpoint_secret",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The signing secret, and the previous one while it still signs", body = EndpointSecret),
        NotFound,
        StoreErrors
    )
)]
pub async fn secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = state.endpoints.secrets(&id).await?;
    let (previous, until) = s.previous.unzip();
    Ok(Json(json!({
        "id": id,
        "secret": s.secret,
        "previous_secret": previous,
        "previous_secret_expires_at": until,
    })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverInput {
    /// Failed deliveries created at or after this instant…
    since: DateTime<Utc>,
    /// …and before this one (default now).
    #[serde(default)]
    until: Option<DateTime<Utc>>,
}

/// Sends the endpoint's failed deliveries created in `[since, until)` again.
#[utoipa::path(
    post,
    path = "/v1/endpoints/{id}/recover",
    tag = "endpoints",
    operation_id = "recover_endpoint_deliveries",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body = RecoverInput,
    responses(
        (status = 200, description = "How many failed deliveries are due again", body = Recovered),
        BodyErrors,
        NotFound,
        StoreErrors
    )
)]
pub async fn recover(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<RecoverInput>,
) -> Result<Json<Value>, ApiError> {
    let n = state
        .endpoints
        .recover(&id, input.since, input.until)
        .await?;
    Ok(Json(json!({"id": id, "recovered": n})))
}
