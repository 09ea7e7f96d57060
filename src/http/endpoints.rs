//! Endpoint routes (`/v1/endpoints…`): create, list, read, change, delete, enable,
//! disable, send a test event, rotate and read the secret, and recover failed
//! deliveries. The secret appears only in the create and rotate responses and in
//! `GET /v1/endpoints/{id}/secret`, never in lists or logs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::json::JsonBody;
use super::openapi::{
    BodyErrors, Conflict, EndpointCreated, EndpointDeleted, EndpointList, EndpointSecret, NotFound,
    Recovered, SecretRotated, StoreErrors, TestSent,
};
use crate::delivery::endpoint::{
    Endpoint, EndpointInput, EndpointPatch, EndpointView, check_destination,
};
use crate::delivery::sign;
use crate::domain::event::NewEvent;
use crate::store::{deliveries, endpoints, events};

/// Event type of the events sent by `POST /v1/endpoints/{id}/test`.
pub const TEST_EVENT_TYPE: &str = "webhook.test";
/// Longest rotation grace period accepted, in seconds (30 days).
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

fn view(ep: &Endpoint) -> Value {
    serde_json::to_value(ep.view()).unwrap_or(Value::Null)
}

async fn load(state: &AppState, id: &str) -> Result<Endpoint, ApiError> {
    endpoints::get(state.store.pool(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no endpoint {id:?}")))
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
    let p = &state.delivery;
    let (settings, secret) =
        input.validate(&p.guard, p.config.default_timeout_ms, &state.catalogue)?;
    check_destination(&p.guard, &settings.url).await?;
    let now = state.clock.now();
    let id = endpoints::new_id();
    let mut tx = state.store.begin().await?;
    endpoints::insert(&mut tx, &id, &settings, &state.store.seal(&secret), now).await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    let ep = load(&state, &id).await?;
    let mut body = view(&ep);
    body["secret"] = Value::String(secret);
    // Only the host: some receivers put a token in the URL's path or query.
    let host = url::Url::parse(&ep.settings.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    tracing::info!(endpoint = %id, %host, "endpoint created");
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
    let all = endpoints::list(state.store.pool()).await?;
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
    Ok(Json(view(&load(&state, &id).await?)))
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
    // Resolving a name can take a while: not inside the write transaction.
    if let Some(url) = &patch.url {
        check_destination(&state.delivery.guard, url).await?;
    }
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let current = endpoints::get_locked(&mut tx, state.store.backend(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no endpoint {id:?}")))?;
    let settings = patch.apply(
        &current.settings,
        &state.store.open_secret(&current.secret)?,
        &state.delivery.guard,
        &state.catalogue,
    )?;
    endpoints::update_settings(&mut tx, &id, &settings, now).await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    state.delivery.work.notify_one();
    Ok(Json(view(&load(&state, &id).await?)))
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
    let mut tx = state.store.begin().await?;
    if !endpoints::delete(&mut tx, &id).await? {
        return Err(ApiError::not_found(format!("no endpoint {id:?}")));
    }
    tx.commit().await.map_err(crate::store::StoreError::from)?;
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
    let mut tx = state.store.begin().await?;
    if !endpoints::enable(&mut tx, &id, state.clock.now()).await? {
        return Err(ApiError::not_found(format!("no endpoint {id:?}")));
    }
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    state.delivery.work.notify_one();
    Ok(Json(view(&load(&state, &id).await?)))
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
    let reason = input
        .reason
        .unwrap_or_else(|| "disabled by an operator".into());
    if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "reason",
            "at most 500 characters, without control characters",
        ));
    }
    let mut tx = state.store.begin().await?;
    if !endpoints::disable(&mut tx, &id, &reason, state.clock.now()).await? {
        return Err(ApiError::not_found(format!("no endpoint {id:?}")));
    }
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    Ok(Json(view(&load(&state, &id).await?)))
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
    let ep = load(&state, &id).await?;
    if !ep.enabled {
        return Err(ApiError::conflict(
            "the endpoint is disabled; enable it first (POST /v1/endpoints/{id}/enable)",
        ));
    }
    let now = state.clock.now();
    let ev = NewEvent::immediate(
        TEST_EVENT_TYPE,
        "endpoint",
        &id,
        json!({
            "id": id,
            "name": ep.settings.name,
            "message": "This is a test webhook from duehook.",
        }),
    );
    let mut tx = state.store.begin().await?;
    let event = events::insert(&mut tx, ev, now).await?;
    deliveries::mark_fanned_out(&mut tx, event.seq).await?;
    let delivery = deliveries::insert(&mut tx, &event, &id, now, now).await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    state.delivery.work.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event_id": event.id, "delivery_id": delivery})),
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
    let grace = input
        .grace_seconds
        .unwrap_or(state.delivery.config.rotation_grace_seconds);
    if grace > MAX_GRACE_SECONDS {
        return Err(ApiError::invalid(
            "grace_seconds",
            format!("at most {MAX_GRACE_SECONDS} (30 days)"),
        ));
    }
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let ep = endpoints::get_locked(&mut tx, state.store.backend(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no endpoint {id:?}")))?;
    let secret = match input.secret {
        Some(s) => {
            sign::validate_secret(ep.settings.scheme, &s)
                .map_err(|e| ApiError::invalid("secret", e.to_string()))?;
            s
        }
        None => sign::generate_secret(),
    };
    let until = now + TimeDelta::seconds(i64::try_from(grace).unwrap_or(0));
    endpoints::rotate_secret(&mut tx, &id, &state.store.seal(&secret), until, now).await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    tracing::info!(endpoint = %id, "endpoint secret rotated");
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
    let ep = load(&state, &id).await?;
    let now = state.clock.now();
    let previous = ep
        .previous_secret
        .as_ref()
        .filter(|_| ep.previous_secret_until.is_some_and(|u| now < u))
        .map(|p| state.store.open_secret(p))
        .transpose()?;
    Ok(Json(json!({
        "id": ep.id,
        "secret": state.store.open_secret(&ep.secret)?,
        "previous_secret": previous,
        "previous_secret_expires_at": previous.and(ep.previous_secret_until),
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
    let now = state.clock.now();
    let until = input.until.unwrap_or(now);
    if until <= input.since {
        return Err(ApiError::invalid("until", "must be after `since`"));
    }
    load(&state, &id).await?;
    let mut tx = state.store.begin().await?;
    let n = deliveries::recover(&mut tx, &id, input.since, until, now).await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    state.delivery.work.notify_one();
    Ok(Json(json!({"id": id, "recovered": n})))
}
