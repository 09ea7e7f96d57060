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
use serde::Serialize;

use super::AppState;
use super::api::ingest::{
    CheckinInput, Contact, ContactInput, Entry, Event, EventTypes, Invoice, InvoiceInput, Item,
    ItemInput, Order, OrderInput, OrderPatch, PostEvent, Reservation, ReservationInput, UnitRental,
    UnitRentalInput,
};
use super::api::responses::{BodyErrors, Conflict, InvalidField, NotFound, StoreErrors};
use super::error::ApiError;
use super::json::JsonBody;
use crate::ingest::Applied;

pub const EVENT_ID_HEADER: HeaderName = HeaderName::from_static("duehook-event-id");

/// The answer to a change: 201 when it created the entity, else 200, with the entity
/// as the API body `body` makes of it and the event it emitted named in a header.
fn respond<T, B: Serialize>(applied: Applied<T>, body: impl FnOnce(T) -> B) -> Response {
    let mut res = (status_of(&applied), Json(body(applied.entity))).into_response();
    if let Some(id) = &applied.event_id
        && let Ok(v) = HeaderValue::from_str(id)
    {
        res.headers_mut().insert(EVENT_ID_HEADER, v);
    }
    res
}

/// 201 when the change created the entity, else 200.
pub fn status_of<T>(applied: &Applied<T>) -> StatusCode {
    if applied.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

type ApiResult = Result<Response, ApiError>;

#[utoipa::path(
    put,
    path = "/v1/reservations/{id}",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    request_body = ReservationInput,
    responses(
        (status = 200, description = "The reservation updated (or unchanged: no event)", body = Reservation, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        (status = 201, description = "The reservation created", body = Reservation, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        BodyErrors, Conflict,
        StoreErrors
    )
)]
pub async fn put_reservation(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReservationInput>,
) -> ApiResult {
    Ok(respond(
        s.ingest.put_reservation(&id, body.into()).await?,
        Reservation::from,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/reservations/{id}/cancel",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    responses(
        (status = 200, description = "The cancelled reservation (emits `reservation.cancel`)", body = Reservation, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        InvalidField, NotFound, Conflict,
        StoreErrors
    )
)]
pub async fn cancel_reservation(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(respond(
        s.ingest.cancel_reservation(&id).await?,
        Reservation::from,
    ))
}

#[utoipa::path(
    put,
    path = "/v1/orders/{id}",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    request_body = OrderInput,
    responses(
        (status = 200, description = "The order updated (or unchanged: no event)", body = Order, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        (status = 201, description = "The order created", body = Order, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        BodyErrors, Conflict,
        StoreErrors
    )
)]
pub async fn put_order(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<OrderInput>,
) -> ApiResult {
    Ok(respond(
        s.ingest.put_order(&id, body.into()).await?,
        Order::from,
    ))
}

#[utoipa::path(
    patch,
    path = "/v1/orders/{id}",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    request_body = OrderPatch,
    responses(
        (status = 200, description = "The order with its new due date; its timers are planned again", body = Order, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        BodyErrors,
        NotFound,
        Conflict,
        StoreErrors
    )
)]
pub async fn patch_order(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<OrderPatch>,
) -> ApiResult {
    Ok(respond(
        s.ingest.patch_order_due(&id, body.due_at).await?,
        Order::from,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/orders/{id}/checkout",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    responses(
        (status = 200, description = "The checked-out order (emits `order.checkout`)", body = Order, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        InvalidField, NotFound, Conflict,
        StoreErrors
    )
)]
pub async fn checkout(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(respond(s.ingest.checkout(&id).await?, Order::from))
}

#[utoipa::path(
    post,
    path = "/v1/orders/{id}/checkin",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    request_body = Option<CheckinInput>,
    responses(
        (status = 200, description = "The order, `closed` when no item is out any more (emits `order.checkin`)", body = Order, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        BodyErrors, NotFound, Conflict,
        StoreErrors
    )
)]
pub async fn checkin(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CheckinInput>,
) -> ApiResult {
    Ok(respond(
        s.ingest.checkin(&id, body.into()).await?,
        Order::from,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/orders/{id}/undo-checkout",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    responses(
        (status = 200, description = "The order, open again (emits `order.undocheckout`)", body = Order, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        InvalidField, NotFound, Conflict,
        StoreErrors
    )
)]
pub async fn undo_checkout(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    Ok(respond(s.ingest.undo_checkout(&id).await?, Order::from))
}

#[utoipa::path(
    put,
    path = "/v1/unit-rentals/{id}",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    request_body = UnitRentalInput,
    responses(
        (status = 200, description = "The unit rental updated (or unchanged: no event)", body = UnitRental, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        (status = 201, description = "The unit rental created", body = UnitRental, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        BodyErrors,
        StoreErrors
    )
)]
pub async fn put_unit_rental(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UnitRentalInput>,
) -> ApiResult {
    Ok(respond(
        s.ingest.put_unit_rental(&id, body.into()).await?,
        UnitRental::from,
    ))
}

#[utoipa::path(
    put,
    path = "/v1/invoices/{id}",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    request_body = InvoiceInput,
    responses(
        (status = 200, description = "The invoice updated (or unchanged: no event)", body = Invoice, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        (status = 201, description = "The invoice created", body = Invoice, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        BodyErrors,
        StoreErrors
    )
)]
pub async fn put_invoice(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<InvoiceInput>,
) -> ApiResult {
    Ok(respond(
        s.ingest.put_invoice(&id, body.into()).await?,
        Invoice::from,
    ))
}

#[utoipa::path(
    put,
    path = "/v1/items/{id}",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    request_body = ItemInput,
    responses(
        (status = 200, description = "The item updated (or unchanged: no event)", body = Item, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        (status = 201, description = "The item created", body = Item, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        BodyErrors,
        StoreErrors
    )
)]
pub async fn put_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ItemInput>,
) -> ApiResult {
    Ok(respond(
        s.ingest.put_item(&id, body.into()).await?,
        Item::from,
    ))
}

#[utoipa::path(
    put,
    path = "/v1/contacts/{id}",
    tag = "ingest",
    params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
    request_body = ContactInput,
    responses(
        (status = 200, description = "The contact updated (or unchanged: no event)", body = Contact, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        (status = 201, description = "The contact created", body = Contact, headers(("duehook-event-id" = String, description = "The event this request emitted; absent when it changed nothing"))),
        BodyErrors,
        StoreErrors
    )
)]
pub async fn put_contact(
    State(s): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ContactInput>,
) -> ApiResult {
    Ok(respond(
        s.ingest.put_contact(&id, body.into()).await?,
        Contact::from,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "ingest",
    request_body = PostEvent,
    responses(
        (status = 201, description = "The event, stored and on its way to subscribed endpoints", body = Event),
        BodyErrors,
        StoreErrors
    )
)]
pub async fn post_event(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<PostEvent>,
) -> ApiResult {
    let event = s.ingest.post_event(&body.event_type, &body.data).await?;
    Ok((StatusCode::CREATED, Json(Event::from(event))).into_response())
}

/// `GET /v1/event-types`: the built-in catalogue plus types added by configured rules.
#[utoipa::path(
    get,
    path = "/v1/event-types",
    tag = "ingest",
    responses((status = 200, description = "The catalogue: built-in types and those configured rules add", body = EventTypes))
)]
pub async fn event_types(State(s): State<AppState>) -> Response {
    Json(EventTypes {
        event_types: s.catalogue.entries().iter().map(Entry::from).collect(),
    })
    .into_response()
}

/// `GET /v1/{kind}/{id}`: the entity as the API returns it.
macro_rules! getter {
    ($name:ident, $read:ident, $path:tt, $entity:ident) => {
        #[utoipa::path(
            get,
            path = $path,
            tag = "ingest",
            params(("id" = String, Path, description = "The application's id: 1 to 128 letters, digits and `-_.:@`")),
            responses(
                (status = 200, description = "The entity as the API returns it", body = $entity),
                InvalidField,
                NotFound,
                StoreErrors
            )
        )]
        pub async fn $name(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
            Ok(Json($entity::from(s.ingest.$read(&id).await?)).into_response())
        }
    };
}

getter!(
    get_reservation,
    reservation,
    "/v1/reservations/{id}",
    Reservation
);
getter!(get_order, order, "/v1/orders/{id}", Order);
getter!(
    get_unit_rental,
    unit_rental,
    "/v1/unit-rentals/{id}",
    UnitRental
);
getter!(get_invoice, invoice, "/v1/invoices/{id}", Invoice);
getter!(get_item, item, "/v1/items/{id}", Item);
getter!(get_contact, contact, "/v1/contacts/{id}", Contact);
