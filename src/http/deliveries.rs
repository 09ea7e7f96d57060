//! Delivery routes (`/v1/deliveries…`): list with filters and a cursor, read one with
//! its attempts and event, and retry one by hand.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::openapi::{
    Conflict, DeliveryDetail, DeliveryPage, DeliveryQuery, InvalidField, NotFound, StoreErrors,
};
use crate::delivery::service;
use crate::store::deliveries::{self, Delivery, Filter};

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

fn parse_filter(query: Option<&str>) -> Result<Filter, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::invalid("query", e.to_string()))?;
    let mut f = Filter {
        limit: DEFAULT_LIMIT,
        ..Filter::default()
    };
    for (key, value) in pairs {
        match key.as_str() {
            "endpoint_id" => f.endpoint_id = Some(value),
            "event_type" => f.event_type = Some(value),
            "status" => {
                let Some(status) = deliveries::Status::parse(&value) else {
                    return Err(ApiError::invalid(
                        "status",
                        "one of pending, succeeded, failed",
                    ));
                };
                f.status = Some(status);
            }
            "since" => {
                let t = DateTime::parse_from_rfc3339(&value).map_err(|e| {
                    ApiError::invalid("since", format!("not an RFC 3339 instant: {e}"))
                })?;
                f.since = Some(t.with_timezone(&Utc));
            }
            "limit" => {
                f.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("limit", format!("a number from 1 to {MAX_LIMIT}"))
                    })?;
            }
            "cursor" => {
                f.before_seq = Some(value.parse::<i64>().map_err(|_| {
                    ApiError::invalid("cursor", "use the next_cursor of the previous page")
                })?);
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    "unknown parameter (endpoint_id, status, event_type, since, limit, cursor)",
                ));
            }
        }
    }
    Ok(f)
}

/// Newest first; `next_cursor` (when present) fetches the next, older page.
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "deliveries",
    operation_id = "list_deliveries",
    params(DeliveryQuery),
    responses(
        (status = 200, description = "A page of deliveries, newest first", body = DeliveryPage),
        InvalidField,
        StoreErrors
    )
)]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let f = parse_filter(query.as_deref())?;
    let page = state.endpoints.deliveries(&f).await?;
    let next_cursor = (page.len() as i64 == f.limit)
        .then(|| page.last().map(|d| d.seq.to_string()))
        .flatten();
    Ok(Json(
        json!({"deliveries": page, "next_cursor": next_cursor}),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/deliveries/{id}",
    tag = "deliveries",
    operation_id = "get_delivery",
    params(("id" = String, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "The delivery with its attempts and its event", body = DeliveryDetail),
        NotFound,
        StoreErrors
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let service::DeliveryDetail {
        delivery: d,
        attempts,
        event,
    } = state.endpoints.delivery(&id).await?;
    let mut body = serde_json::to_value(&d).unwrap_or(Value::Null);
    body["attempts"] = serde_json::to_value(&attempts).unwrap_or(Value::Null);
    // The event as the standard envelope shows it (what was delivered, before the
    // endpoint's format and envelope were applied).
    body["event"] = serde_json::to_value(&event).unwrap_or(Value::Null);
    Ok(Json(body))
}

/// Makes a failed (or succeeded) delivery due again now: one more attempt.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/retry",
    tag = "deliveries",
    operation_id = "retry_delivery",
    params(("id" = String, Path, description = "The delivery's id")),
    responses(
        (status = 202, description = "The delivery, due again now", body = Delivery),
        NotFound,
        Conflict,
        StoreErrors
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let d = state.endpoints.retry(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(d))).into_response())
}
