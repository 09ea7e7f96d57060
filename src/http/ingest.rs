//! Ingest routes (`/v1/...`): the application reports its entities and changes here.
//! Handlers only translate HTTP; [`crate::ingest::Ingest`] does the work.
//!
//! A PUT answers 201 when it created the entity and 200 otherwise; every answer carries
//! the entity as the API returns it (what events carry in `data`), and the
//! `duehook-event-id` header names the event it emitted (absent on an idempotent repeat).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::json::JsonBody;
use crate::domain::catalogue::Entry;
use crate::domain::contact::ContactInput;
use crate::domain::item::ItemInput;
use crate::domain::order::{CheckinInput, OrderInput, OrderPatch};
use crate::domain::reservation::ReservationInput;
use crate::domain::unit_rental::{InvoiceInput, UnitRentalInput};
use crate::ingest::Applied;
use crate::store::{StoreError, entities as db};

pub const EVENT_ID_HEADER: HeaderName = HeaderName::from_static("duehook-event-id");

fn respond<T: Serialize>(applied: Applied<T>) -> Response {
    let status = if applied.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut res = (status, Json(&applied.entity)).into_response();
    if let Some(ev) = &applied.event
        && let Ok(v) = HeaderValue::from_str(&ev.id)
    {
        res.headers_mut().insert(EVENT_ID_HEADER, v);
    }
    res
}

type ApiResult = Result<Response, ApiError>;

pub async fn put_reservation(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReservationInput>,
) -> ApiResult {
    Ok(respond(s.ingest.put_reservation(&id, body).await?))
}

pub async fn cancel_reservation(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(respond(s.ingest.cancel_reservation(&id).await?))
}

pub async fn put_order(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<OrderInput>,
) -> ApiResult {
    Ok(respond(s.ingest.put_order(&id, body).await?))
}

pub async fn patch_order(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<OrderPatch>,
) -> ApiResult {
    Ok(respond(s.ingest.patch_order_due(&id, body.due_at).await?))
}

pub async fn checkout(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(respond(s.ingest.checkout(&id).await?))
}

pub async fn checkin(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CheckinInput>,
) -> ApiResult {
    Ok(respond(s.ingest.checkin(&id, body).await?))
}

pub async fn undo_checkout(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(respond(s.ingest.undo_checkout(&id).await?))
}

pub async fn put_unit_rental(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UnitRentalInput>,
) -> ApiResult {
    Ok(respond(s.ingest.put_unit_rental(&id, body).await?))
}

pub async fn put_invoice(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<InvoiceInput>,
) -> ApiResult {
    Ok(respond(s.ingest.put_invoice(&id, body).await?))
}

pub async fn put_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ItemInput>,
) -> ApiResult {
    Ok(respond(s.ingest.put_item(&id, body).await?))
}

pub async fn put_contact(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ContactInput>,
) -> ApiResult {
    Ok(respond(s.ingest.put_contact(&id, body).await?))
}

/// Body of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostEvent {
    #[serde(rename = "type")]
    pub event_type: String,
    pub data: Value,
}

pub async fn post_event(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<PostEvent>,
) -> ApiResult {
    let event = s.ingest.post_event(&body.event_type, body.data).await?;
    Ok((StatusCode::CREATED, Json(event)).into_response())
}

#[derive(Serialize)]
pub struct EventTypes<'a> {
    pub event_types: &'a [Entry],
}

/// `GET /v1/event-types`: the built-in catalogue plus types added by configured rules.
pub async fn event_types(State(s): State<AppState>) -> Response {
    Json(EventTypes {
        event_types: s.catalogue.entries(),
    })
    .into_response()
}

/// `GET /v1/{kind}/{id}`: the entity as the API returns it.
macro_rules! getter {
    ($name:ident, $load:path, $what:literal) => {
        pub async fn $name(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
            crate::domain::input::check_id("id", &id)?;
            let mut tx = s.store.pool().begin().await.map_err(StoreError::from)?;
            match $load(&mut tx, &id).await? {
                Some(entity) => Ok(Json(entity).into_response()),
                None => Err(ApiError::not_found(format!(
                    concat!("no ", $what, " {}"),
                    id
                ))),
            }
        }
    };
}

getter!(get_reservation, db::load_reservation, "reservation");
getter!(get_order, db::load_order, "order");
getter!(get_unit_rental, db::load_unit_rental, "unit rental");
getter!(get_invoice, db::load_invoice, "invoice");
getter!(get_item, db::load_item, "item");
getter!(get_contact, db::load_contact, "contact");
