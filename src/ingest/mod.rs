//! Applying the application's changes. Every change is an [`Op`]; a single route sends
//! one, `POST /v1/batch` sends many, and both go the same way: checked first (an op
//! whose input is invalid is answered at once and is part of no transaction), then
//! through the writer ([`group`]), which applies the ops waiting for it together in
//! one store transaction ([`work`]): each op's entity row, its immediate events in the
//! outbox and (through the planner) its timers. Either a transaction is stored whole
//! or not at all, and nothing is acknowledged before its commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::clock::SharedClock;
use crate::domain::catalogue::Catalogue;
use crate::domain::contact::{Contact, ContactInput};
use crate::domain::event::{Event, NewEvent};
use crate::domain::item::{Item, ItemInput};
use crate::domain::order::{CheckinInput, Order, OrderInput};
use crate::domain::reservation::{Reservation, ReservationInput};
use crate::domain::unit_rental::{Invoice, InvoiceInput, UnitRental, UnitRentalInput};
use crate::domain::{DomainError, input, json};
use crate::error::ServiceError;
use crate::outbox::Outbox;
use crate::schedule::plan::Planner;
use crate::store::{Store, StoreError};

mod group;
mod read;
mod work;

/// Most operations one `POST /v1/batch` may carry.
pub const MAX_BATCH_OPS: usize = 10_000;

/// What a change produced: the entity as it now is, the event it emitted, if any
/// (an idempotent repeat emits none), and whether it created the entity.
#[derive(Debug, Serialize)]
pub struct Applied<T> {
    #[serde(flatten)]
    pub entity: T,
    #[serde(skip)]
    pub event_id: Option<String>,
    #[serde(skip)]
    pub created: bool,
}

/// One change the application asks for: the ingest routes, one variant each.
#[derive(Debug, Clone)]
pub enum Op {
    PutReservation(String, ReservationInput),
    CancelReservation(String),
    PutOrder(String, OrderInput),
    PatchOrder(String, DateTime<Utc>),
    Checkout(String),
    Checkin(String, CheckinInput),
    UndoCheckout(String),
    PutUnitRental(String, UnitRentalInput),
    PutInvoice(String, InvoiceInput),
    PutItem(String, ItemInput),
    PutContact(String, ContactInput),
    /// `POST /v1/events`: the event to store, checked when the op was made
    /// ([`Ingest::event_op`]).
    PostEvent(NewEvent),
}

/// What an [`Op`] produced.
#[derive(Debug)]
pub enum Outcome {
    Reservation(Applied<Reservation>),
    Order(Applied<Order>),
    UnitRental(Applied<UnitRental>),
    Invoice(Applied<Invoice>),
    Item(Applied<Item>),
    Contact(Applied<Contact>),
    /// A posted event, as stored.
    Event(Event),
}

/// What applying ops needs: the store, the clock, the outbox and the planner.
struct Core {
    store: Store,
    clock: SharedClock,
    outbox: Arc<Outbox>,
    planner: Planner,
    catalogue: Arc<Catalogue>,
}

/// The ingest service, shared by the HTTP handlers.
#[derive(Clone)]
pub struct Ingest {
    store: Store,
    core: Arc<Core>,
    writer: group::Writer,
}

/// One result per op: its outcome, or why it was refused (or the store failing).
pub type Results = Vec<Result<Outcome, ServiceError>>;

impl Ingest {
    pub fn new(
        store: Store,
        clock: SharedClock,
        outbox: Arc<Outbox>,
        planner: Planner,
        catalogue: Arc<Catalogue>,
    ) -> Self {
        let core = Arc::new(Core {
            store: store.clone(),
            clock,
            outbox,
            planner,
            catalogue,
        });
        Self {
            writer: group::Writer::start(core.clone()),
            store,
            core,
        }
    }

    /// Applies `ops` in order, as if each had been sent to its own route one after
    /// another, and answers one result per op, in order, once every op that succeeded
    /// is committed. Ops are committed many per transaction; an op refused (invalid
    /// input, missing entity, a transition its entity's state forbids) changes
    /// nothing and does not hold back the others.
    pub async fn apply(&self, ops: Vec<Op>) -> Results {
        let mut results: Vec<Option<Result<Outcome, ServiceError>>> =
            (0..ops.len()).map(|_| None).collect();
        let mut valid = Vec::with_capacity(ops.len());
        let mut positions = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            match self.core.check(&op) {
                Ok(()) => {
                    valid.push(op);
                    positions.push(i);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let applied = self.writer.apply(valid).await;
        for (i, r) in positions.into_iter().zip(applied) {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(writer_gone().into())))
            .collect()
    }

    /// Applies one op (a single route: a batch of one).
    async fn one(&self, op: Op) -> Result<Outcome, ServiceError> {
        self.apply(vec![op])
            .await
            .pop()
            .unwrap_or_else(|| Err(writer_gone().into()))
    }

    pub async fn put_reservation(
        &self,
        id: &str,
        input: ReservationInput,
    ) -> Result<Applied<Reservation>, ServiceError> {
        reservation(self.one(Op::PutReservation(id.into(), input)).await)
    }

    pub async fn cancel_reservation(&self, id: &str) -> Result<Applied<Reservation>, ServiceError> {
        reservation(self.one(Op::CancelReservation(id.into())).await)
    }

    pub async fn put_order(
        &self,
        id: &str,
        input: OrderInput,
    ) -> Result<Applied<Order>, ServiceError> {
        order(self.one(Op::PutOrder(id.into(), input)).await)
    }

    pub async fn patch_order_due(
        &self,
        id: &str,
        due_at: DateTime<Utc>,
    ) -> Result<Applied<Order>, ServiceError> {
        order(self.one(Op::PatchOrder(id.into(), due_at)).await)
    }

    pub async fn checkout(&self, id: &str) -> Result<Applied<Order>, ServiceError> {
        order(self.one(Op::Checkout(id.into())).await)
    }

    pub async fn checkin(
        &self,
        id: &str,
        input: CheckinInput,
    ) -> Result<Applied<Order>, ServiceError> {
        order(self.one(Op::Checkin(id.into(), input)).await)
    }

    pub async fn undo_checkout(&self, id: &str) -> Result<Applied<Order>, ServiceError> {
        order(self.one(Op::UndoCheckout(id.into())).await)
    }

    pub async fn put_item(
        &self,
        id: &str,
        input: ItemInput,
    ) -> Result<Applied<Item>, ServiceError> {
        match self.one(Op::PutItem(id.into(), input)).await? {
            Outcome::Item(a) => Ok(a),
            other => Err(mismatch(&other)),
        }
    }

    pub async fn put_contact(
        &self,
        id: &str,
        input: ContactInput,
    ) -> Result<Applied<Contact>, ServiceError> {
        match self.one(Op::PutContact(id.into(), input)).await? {
            Outcome::Contact(a) => Ok(a),
            other => Err(mismatch(&other)),
        }
    }

    pub async fn put_unit_rental(
        &self,
        id: &str,
        input: UnitRentalInput,
    ) -> Result<Applied<UnitRental>, ServiceError> {
        match self.one(Op::PutUnitRental(id.into(), input)).await? {
            Outcome::UnitRental(a) => Ok(a),
            other => Err(mismatch(&other)),
        }
    }

    pub async fn put_invoice(
        &self,
        id: &str,
        input: InvoiceInput,
    ) -> Result<Applied<Invoice>, ServiceError> {
        match self.one(Op::PutInvoice(id.into(), input)).await? {
            Outcome::Invoice(a) => Ok(a),
            other => Err(mismatch(&other)),
        }
    }

    /// The op of `POST /v1/events` for `event_type` and `data`: the type looked up in
    /// the catalogue, `data` checked, its entity named, the event made, once.
    pub fn event_op(&self, event_type: &str, data: &RawValue) -> Result<Op, ServiceError> {
        Ok(Op::PostEvent(self.core.posted_event(event_type, data)?))
    }

    /// `POST /v1/events`: any catalogue type, with the application's own data.
    pub async fn post_event(
        &self,
        event_type: &str,
        data: &RawValue,
    ) -> Result<Event, ServiceError> {
        match self.one(self.event_op(event_type, data)?).await? {
            Outcome::Event(e) => Ok(e),
            other => Err(mismatch(&other)),
        }
    }
}

impl Core {
    /// The checks an op passes before it joins a transaction: ids and inputs valid,
    /// a posted event's type in the catalogue.
    fn check(&self, op: &Op) -> Result<(), ServiceError> {
        match op {
            Op::PutReservation(id, i) => {
                input::check_id("id", id)?;
                i.validate()?;
            }
            Op::PutOrder(id, i) => {
                input::check_id("id", id)?;
                i.validate()?;
            }
            Op::PutUnitRental(id, i) => {
                input::check_id("id", id)?;
                i.validate()?;
            }
            Op::PutInvoice(id, i) => {
                input::check_id("id", id)?;
                i.validate()?;
            }
            Op::PutItem(id, i) => {
                input::check_id("id", id)?;
                i.validate()?;
            }
            Op::PutContact(id, i) => {
                input::check_id("id", id)?;
                i.validate()?;
            }
            Op::CancelReservation(id)
            | Op::PatchOrder(id, _)
            | Op::Checkout(id)
            | Op::Checkin(id, _)
            | Op::UndoCheckout(id) => input::check_id("id", id)?,
            Op::PostEvent(_) => {}
        }
        Ok(())
    }

    /// The event `POST /v1/events` stores for `event_type` and `data`.
    fn posted_event(&self, event_type: &str, data: &RawValue) -> Result<NewEvent, DomainError> {
        let known = self.catalogue.find(event_type).ok_or_else(|| {
            DomainError::invalid(
                "type",
                format!("unknown event type `{event_type}` (see GET /v1/event-types)"),
            )
        })?;
        let entity_id = json::posted_entity_id(data)?;
        let kind = known.name.split('.').next().unwrap_or(&known.name);
        Ok(NewEvent::posted(&known.name, kind, entity_id, data))
    }
}

fn reservation(r: Result<Outcome, ServiceError>) -> Result<Applied<Reservation>, ServiceError> {
    match r? {
        Outcome::Reservation(a) => Ok(a),
        other => Err(mismatch(&other)),
    }
}

fn order(r: Result<Outcome, ServiceError>) -> Result<Applied<Order>, ServiceError> {
    match r? {
        Outcome::Order(a) => Ok(a),
        other => Err(mismatch(&other)),
    }
}

/// An op answered with another op's kind of outcome: a fault of ours, reported as the
/// store's (nothing the client can correct).
fn mismatch(o: &Outcome) -> ServiceError {
    let kind = match o {
        Outcome::Reservation(_) => "reservation",
        Outcome::Order(_) => "order",
        Outcome::UnitRental(_) => "unit rental",
        Outcome::Invoice(_) => "invoice",
        Outcome::Item(_) => "item",
        Outcome::Contact(_) => "contact",
        Outcome::Event(_) => "event",
    };
    StoreError::Corrupt(format!("an op answered with a {kind}")).into()
}

/// The writer stops only with the service: answer as the store being away would.
fn writer_gone() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

fn to_value(v: &impl Serialize) -> Result<Value, ServiceError> {
    Ok(serde_json::to_value(v).map_err(|e| StoreError::Corrupt(e.to_string()))?)
}
