//! Bodies of the ingest routes: the entities as the API returns them (what events
//! carry in `data`), the bodies the application sends, posted events and the
//! catalogue.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::domain::{catalogue, contact, event, item, order, reservation, unit_rental};

/// Body of `PUT /v1/reservations/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationInput {
    pub contact_id: String,
    pub item_ids: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[serde(default)]
    pub timezone: Option<String>,
    /// The application's own fields (a JSON object), returned as given.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub data: Option<Value>,
}

impl From<ReservationInput> for reservation::ReservationInput {
    fn from(b: ReservationInput) -> Self {
        let ReservationInput {
            contact_id,
            item_ids,
            starts_at,
            ends_at,
            timezone,
            data,
        } = b;
        Self {
            contact_id,
            item_ids,
            starts_at,
            ends_at,
            timezone,
            data,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Reserved,
    Cancelled,
    PickedUp,
}

impl From<reservation::ReservationStatus> for ReservationStatus {
    fn from(s: reservation::ReservationStatus) -> Self {
        use reservation::ReservationStatus as S;
        match s {
            S::Reserved => Self::Reserved,
            S::Cancelled => Self::Cancelled,
            S::PickedUp => Self::PickedUp,
        }
    }
}

/// A reservation as the API returns it and as events carry it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reservation {
    pub id: String,
    pub contact_id: String,
    pub item_ids: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub timezone: Option<String>,
    pub status: ReservationStatus,
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<reservation::Reservation> for Reservation {
    fn from(r: reservation::Reservation) -> Self {
        let reservation::Reservation {
            id,
            contact_id,
            item_ids,
            starts_at,
            ends_at,
            timezone,
            status,
            data,
            created_at,
            updated_at,
        } = r;
        Self {
            id,
            contact_id,
            item_ids,
            starts_at,
            ends_at,
            timezone,
            status: status.into(),
            data,
            created_at,
            updated_at,
        }
    }
}

/// Body of `PUT /v1/orders/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderInput {
    pub contact_id: String,
    pub item_ids: Vec<String>,
    pub due_at: DateTime<Utc>,
    #[serde(default)]
    pub reservation_id: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    /// The application's own fields (a JSON object), returned as given.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub data: Option<Value>,
}

impl From<OrderInput> for order::OrderInput {
    fn from(b: OrderInput) -> Self {
        let OrderInput {
            contact_id,
            item_ids,
            due_at,
            reservation_id,
            timezone,
            data,
        } = b;
        Self {
            contact_id,
            item_ids,
            due_at,
            reservation_id,
            timezone,
            data,
        }
    }
}

/// Body of `PATCH /v1/orders/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPatch {
    pub due_at: DateTime<Utc>,
}

/// Body of `POST /v1/orders/{id}/checkin` (all items still out when `item_ids` is absent).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckinInput {
    #[serde(default)]
    pub item_ids: Option<Vec<String>>,
}

impl From<CheckinInput> for order::CheckinInput {
    fn from(b: CheckinInput) -> Self {
        Self {
            item_ids: b.item_ids,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Open,
    CheckedOut,
    Closed,
}

impl From<order::OrderStatus> for OrderStatus {
    fn from(s: order::OrderStatus) -> Self {
        use order::OrderStatus as S;
        match s {
            S::Open => Self::Open,
            S::CheckedOut => Self::CheckedOut,
            S::Closed => Self::Closed,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItem {
    pub id: String,
    pub checked_in_at: Option<DateTime<Utc>>,
}

impl From<order::OrderItem> for OrderItem {
    fn from(i: order::OrderItem) -> Self {
        let order::OrderItem { id, checked_in_at } = i;
        Self { id, checked_in_at }
    }
}

/// An order as the API returns it and as events carry it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Order {
    pub id: String,
    pub contact_id: String,
    pub item_ids: Vec<String>,
    pub items: Vec<OrderItem>,
    pub due_at: DateTime<Utc>,
    pub reservation_id: Option<String>,
    pub timezone: Option<String>,
    pub status: OrderStatus,
    /// Items handed out and not yet back (0 unless checked out).
    pub items_out: usize,
    pub checked_out_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<order::Order> for Order {
    fn from(o: order::Order) -> Self {
        let order::Order {
            id,
            contact_id,
            item_ids,
            items,
            due_at,
            reservation_id,
            timezone,
            status,
            items_out,
            checked_out_at,
            closed_at,
            data,
            created_at,
            updated_at,
        } = o;
        Self {
            id,
            contact_id,
            item_ids,
            items: items.into_iter().map(OrderItem::from).collect(),
            due_at,
            reservation_id,
            timezone,
            status: status.into(),
            items_out,
            checked_out_at,
            closed_at,
            data,
            created_at,
            updated_at,
        }
    }
}

/// Body of `PUT /v1/unit-rentals/{id}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitRentalInput {
    #[serde(default)]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub unit_id: Option<String>,
    /// The application's own rental state (e.g. `occupied`, `ended`); free text.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    /// The application's own fields (a JSON object), returned as given.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub data: Option<Value>,
}

impl From<UnitRentalInput> for unit_rental::UnitRentalInput {
    fn from(b: UnitRentalInput) -> Self {
        let UnitRentalInput {
            contact_id,
            unit_id,
            state,
            timezone,
            data,
        } = b;
        Self {
            contact_id,
            unit_id,
            state,
            timezone,
            data,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnitRental {
    pub id: String,
    pub contact_id: Option<String>,
    pub unit_id: Option<String>,
    pub state: Option<String>,
    pub timezone: Option<String>,
    pub overdue: bool,
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<unit_rental::UnitRental> for UnitRental {
    fn from(r: unit_rental::UnitRental) -> Self {
        let unit_rental::UnitRental {
            id,
            contact_id,
            unit_id,
            state,
            timezone,
            overdue,
            data,
            created_at,
            updated_at,
        } = r;
        Self {
            id,
            contact_id,
            unit_id,
            state,
            timezone,
            overdue,
            data,
            created_at,
            updated_at,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceState {
    Draft,
    Sent,
    Paid,
    Failed,
    Void,
}

impl From<unit_rental::InvoiceState> for InvoiceState {
    fn from(s: unit_rental::InvoiceState) -> Self {
        use unit_rental::InvoiceState as S;
        match s {
            S::Draft => Self::Draft,
            S::Sent => Self::Sent,
            S::Paid => Self::Paid,
            S::Failed => Self::Failed,
            S::Void => Self::Void,
        }
    }
}

impl From<InvoiceState> for unit_rental::InvoiceState {
    fn from(s: InvoiceState) -> Self {
        match s {
            InvoiceState::Draft => Self::Draft,
            InvoiceState::Sent => Self::Sent,
            InvoiceState::Paid => Self::Paid,
            InvoiceState::Failed => Self::Failed,
            InvoiceState::Void => Self::Void,
        }
    }
}

/// Body of `PUT /v1/invoices/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceInput {
    pub unit_rental_id: String,
    pub due_at: DateTime<Utc>,
    pub state: InvoiceState,
    /// The application's own fields (a JSON object), returned as given.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub data: Option<Value>,
}

impl From<InvoiceInput> for unit_rental::InvoiceInput {
    fn from(b: InvoiceInput) -> Self {
        let InvoiceInput {
            unit_rental_id,
            due_at,
            state,
            data,
        } = b;
        Self {
            unit_rental_id,
            due_at,
            state: state.into(),
            data,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Invoice {
    pub id: String,
    pub unit_rental_id: String,
    pub due_at: DateTime<Utc>,
    pub state: InvoiceState,
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<unit_rental::Invoice> for Invoice {
    fn from(i: unit_rental::Invoice) -> Self {
        let unit_rental::Invoice {
            id,
            unit_rental_id,
            due_at,
            state,
            data,
            created_at,
            updated_at,
        } = i;
        Self {
            id,
            unit_rental_id,
            due_at,
            state: state.into(),
            data,
            created_at,
            updated_at,
        }
    }
}

/// Body of `PUT /v1/items/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    pub name: String,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub timezone: Option<String>,
    /// The application's own fields (a JSON object), returned as given.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub data: Option<Value>,
}

impl From<ItemInput> for item::ItemInput {
    fn from(b: ItemInput) -> Self {
        let ItemInput {
            name,
            expires_at,
            timezone,
            data,
        } = b;
        Self {
            name,
            expires_at,
            timezone,
            data,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Item {
    pub id: String,
    pub name: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub timezone: Option<String>,
    /// Set by the scheduler when `expires_at` passes (`item.expire`).
    pub expired: bool,
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<item::Item> for Item {
    fn from(i: item::Item) -> Self {
        let item::Item {
            id,
            name,
            expires_at,
            timezone,
            expired,
            data,
            created_at,
            updated_at,
        } = i;
        Self {
            id,
            name,
            expires_at,
            timezone,
            expired,
            data,
            created_at,
            updated_at,
        }
    }
}

/// Body of `PUT /v1/contacts/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    /// The application's own fields (a JSON object), returned as given.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub data: Option<Value>,
}

impl From<ContactInput> for contact::ContactInput {
    fn from(b: ContactInput) -> Self {
        let ContactInput {
            name,
            email,
            phone,
            timezone,
            data,
        } = b;
        Self {
            name,
            email,
            phone,
            timezone,
            data,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Contact {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub timezone: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<contact::Contact> for Contact {
    fn from(c: contact::Contact) -> Self {
        let contact::Contact {
            id,
            name,
            email,
            phone,
            timezone,
            data,
            created_at,
            updated_at,
        } = c;
        Self {
            id,
            name,
            email,
            phone,
            timezone,
            data,
            created_at,
            updated_at,
        }
    }
}

/// Body of `POST /v1/events`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostEvent {
    /// A type of the catalogue (`GET /v1/event-types`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// A JSON object; its `id` (string or number), when present, names the entity.
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
}

/// A stored event, in the default wire envelope's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<DateTime<Utc>>,
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
}

impl From<event::Event> for Event {
    fn from(e: event::Event) -> Self {
        // The outbox's own bookkeeping (sequence, entity) is not part of the envelope.
        let event::Event {
            id,
            event_type,
            created,
            scheduled_at,
            data,
            seq: _,
            entity_kind: _,
            entity_id: _,
        } = e;
        Self {
            id,
            event_type,
            created,
            scheduled_at,
            data,
        }
    }
}

/// How an event comes to be.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Emitted at once when the application reports a change.
    Immediate,
    /// Emitted by the scheduler when a moment arrives.
    Scheduled,
}

impl From<catalogue::Trigger> for Trigger {
    fn from(t: catalogue::Trigger) -> Self {
        match t {
            catalogue::Trigger::Immediate => Self::Immediate,
            catalogue::Trigger::Scheduled => Self::Scheduled,
        }
    }
}

/// One entry of a running service's catalogue: the built-in types plus those that
/// configured rules add (e.g. `order.overdue_3_days`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Entry<'a> {
    #[serde(rename = "type")]
    pub name: &'a str,
    pub trigger: Trigger,
    pub origin: &'a str,
    pub description: &'a str,
}

impl<'a> From<&'a catalogue::Entry> for Entry<'a> {
    fn from(e: &'a catalogue::Entry) -> Self {
        let catalogue::Entry {
            name,
            trigger,
            origin,
            description,
        } = e;
        Self {
            name,
            trigger: (*trigger).into(),
            origin,
            description,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypes<'a> {
    pub event_types: Vec<Entry<'a>>,
}

/// Body of `POST /v1/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to 10,000 operations, applied in order. Each is read on its own: one that
    /// is not a valid operation gets its own error result.
    #[schema(value_type = Vec<BatchOperation>)]
    pub operations: Vec<Box<serde_json::value::RawValue>>,
}

/// One operation of a batch: the method, path and body of an ingest route.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchOperation {
    /// `PUT`, `POST` or `PATCH`, as the route takes.
    #[schema(example = "PUT")]
    pub method: String,
    /// The route's path with its id, e.g. `/v1/orders/o-1` or `/v1/orders/o-1/checkout`.
    #[schema(example = "/v1/orders/o-1")]
    pub path: String,
    /// The route's body; absent for routes that take none.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub body: Option<Box<serde_json::value::RawValue>>,
}

/// Answer of `POST /v1/batch`: one result per operation, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchResult>,
}

/// What the operation's own route would have answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    /// Its status: 200 or 201 when applied, 4xx (or 503) when not.
    #[schema(example = 201)]
    pub status: u16,
    /// Its body: the entity (or the posted event), or an `ApiError` naming the field.
    /// Left out of an applied operation's result when the request said
    /// `Prefer: return=minimal`.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<serde_json::value::RawValue>>,
}
