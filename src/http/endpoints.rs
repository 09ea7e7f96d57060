//! Endpoint routes (`/v1/endpoints…`): create, list, read, change, delete, enable,
//! disable, send a test event, rotate and read the secret, and recover failed
//! deliveries. The secret appears only in the create and rotate responses and in
//! `GET /v1/endpoints/{id}/secret`, never in lists or logs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::api::Sorted;
use super::api::endpoints::{
    DisableInput, EndpointCreated, EndpointDeleted, EndpointInput, EndpointList, EndpointPatch,
    EndpointSecret, EndpointView, RecoverInput, Recovered, RotateInput, SecretRotated, TestSent,
};
use super::api::responses::{BodyErrors, Conflict, NotFound, StoreErrors};
use super::error::ApiError;
use super::json::JsonBody;

use crate::delivery::endpoint::Endpoint;

type ApiResult = Result<Response, ApiError>;

/// One endpoint as the API shows it.
fn one(ep: &Endpoint) -> Response {
    Sorted(EndpointView::from(ep)).into_response()
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
) -> ApiResult {
    let (ep, secret) = state.endpoints.create(input.into()).await?;
    let body = EndpointCreated {
        endpoint: EndpointView::from(&ep),
        secret,
    };
    Ok((StatusCode::CREATED, Sorted(body)).into_response())
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
pub async fn list(State(state): State<AppState>) -> ApiResult {
    let all = state.endpoints.list().await?;
    let body = EndpointList {
        endpoints: all.iter().map(EndpointView::from).collect(),
    };
    Ok(Sorted(body).into_response())
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
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(one(&state.endpoints.get(&id).await?))
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
) -> ApiResult {
    Ok(one(&state.endpoints.patch(&id, patch.into()).await?))
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
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    state.endpoints.delete(&id).await?;
    Ok(Sorted(EndpointDeleted { id, deleted: true }).into_response())
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
pub async fn enable(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(one(&state.endpoints.enable(&id).await?))
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
) -> ApiResult {
    Ok(one(&state.endpoints.disable(&id, input.reason).await?))
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
pub async fn test(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let (event_id, delivery_id) = state.endpoints.test(&id).await?;
    let body = TestSent {
        event_id,
        delivery_id,
    };
    Ok((StatusCode::ACCEPTED, Sorted(body)).into_response())
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
) -> ApiResult {
    let (secret, until) = state
        .endpoints
        .rotate_secret(&id, input.secret, input.grace_seconds)
        .await?;
    let body = SecretRotated {
        id,
        secret,
        previous_secret_expires_at: until,
    };
    Ok(Sorted(body).into_response())
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
pub async fn secret(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let s = state.endpoints.secrets(&id).await?;
    let (previous, until) = s.previous.unzip();
    let body = EndpointSecret {
        id,
        secret: s.secret,
        previous_secret: previous,
        previous_secret_expires_at: until,
    };
    Ok(Sorted(body).into_response())
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
) -> ApiResult {
    let recovered = state
        .endpoints
        .recover(&id, input.since, input.until)
        .await?;
    Ok(Sorted(Recovered { id, recovered }).into_response())
}
