//! Delivery routes (`/v1/deliveries…`): list with filters and a cursor, read one with
//! its attempts and event, and retry one by hand.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::api::Sorted;
use super::api::deliveries::{Delivery, DeliveryDetail, DeliveryPage, DeliveryQuery};
use super::api::responses::{Conflict, InvalidField, NotFound, StoreErrors};
use super::error::ApiError;

type ApiResult = Result<Response, ApiError>;

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
pub async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> ApiResult {
    let filter = DeliveryQuery::parse(query.as_deref())?;
    let page = state.endpoints.deliveries(&filter).await?;
    Ok(Sorted(DeliveryPage::new(page, &filter)).into_response())
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
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let detail = state.endpoints.delivery(&id).await?;
    Ok(Sorted(DeliveryDetail::from(detail)).into_response())
}

/// Lets the ordered key a failed delivery holds move on without it (`ordering_on_failure:
/// hold`): the key's next deliveries go out; this one stays failed.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/skip",
    tag = "deliveries",
    operation_id = "skip_delivery",
    params(("id" = String, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "The delivery, no longer holding its key", body = Delivery),
        NotFound,
        Conflict,
        StoreErrors
    )
)]
pub async fn skip(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let d = state.endpoints.skip(&id).await?;
    Ok(Sorted(Delivery::from(d)).into_response())
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
pub async fn retry(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let d = state.endpoints.retry(&id).await?;
    Ok((StatusCode::ACCEPTED, Sorted(Delivery::from(d))).into_response())
}
