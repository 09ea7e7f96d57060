//! Applying the application's changes. Each operation is one store transaction: the
//! entity row, its immediate event in the outbox, and (through the planner) its timers.
//! Either all of it is stored or none of it, and nothing is acknowledged before commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::SharedClock;
use crate::domain::catalogue::Catalogue;
use crate::domain::contact::{Contact, ContactInput};
use crate::domain::event::{Event, NewEvent};
use crate::domain::item::{Item, ItemInput};
use crate::domain::order::{CheckinInput, Order, OrderInput, OrderStatus};
use crate::domain::reservation::{Reservation, ReservationInput};
use crate::domain::unit_rental::{Invoice, InvoiceInput, UnitRental, UnitRentalInput};
use crate::domain::{DomainError, EntityKind, input};
use crate::error::ServiceError;
use crate::outbox::Outbox;
use crate::schedule::plan::{Planner, Subject};
use crate::store::{Store, StoreError, Tx, entities as db, timers};

mod group;
mod read;

/// What a change produced: the entity as it now is and the event it emitted, if any
/// (an idempotent repeat emits none).
#[derive(Debug, Serialize)]
pub struct Applied<T> {
    #[serde(flatten)]
    pub entity: T,
    #[serde(skip)]
    pub event: Option<Event>,
    #[serde(skip)]
    pub created: bool,
}

impl<T> Applied<T> {
    /// Nothing changed: no event.
    fn unchanged(entity: T) -> Self {
        Applied {
            entity,
            event: None,
            created: false,
        }
    }
}

/// One change in progress: its transaction, its instant, the events it emits (in
/// order) and whether it planned a timer the scheduler must load now.
struct Change {
    tx: Tx,
    now: DateTime<Utc>,
    events: Vec<NewEvent>,
    wake: bool,
}

impl Change {
    fn emit(&mut self, event_type: &str, kind: EntityKind, id: &str, data: &impl Serialize) {
        self.events
            .push(NewEvent::immediate(event_type, kind.as_str(), id, data));
    }
}

/// The ingest service, shared by the HTTP handlers.
#[derive(Clone)]
pub struct Ingest {
    store: Store,
    clock: SharedClock,
    outbox: Arc<Outbox>,
    planner: Planner,
    catalogue: Arc<Catalogue>,
    /// Posted events go through group commit.
    events: group::EventWriter,
}

impl Ingest {
    pub fn new(
        store: Store,
        clock: SharedClock,
        outbox: Arc<Outbox>,
        planner: Planner,
        catalogue: Arc<Catalogue>,
    ) -> Self {
        Self {
            events: group::EventWriter::start(store.clone(), clock.clone(), outbox.clone()),
            store,
            clock,
            outbox,
            planner,
            catalogue,
        }
    }

    /// Begins the change of entity `kind/id`: its id checked, the write transaction
    /// open and the entity locked.
    async fn begin(&self, kind: &str, id: &str) -> Result<Change, ServiceError> {
        input::check_id("id", id)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_entity(&mut tx, kind, id).await?;
        Ok(Change {
            tx,
            now,
            events: Vec::new(),
            wake: false,
        })
    }

    /// Re-plans `subject`'s timers in the change's transaction.
    async fn replan(&self, c: &mut Change, subject: Subject<'_>) -> Result<(), ServiceError> {
        c.wake |= self.planner.replan(&mut c.tx, subject, c.now).await?;
        Ok(())
    }

    /// Ends a change: its events through the outbox, commit, then the hand-off and the
    /// scheduler's wake-up. The first event emitted is the one the answer names.
    async fn commit<T>(
        &self,
        c: Change,
        entity: T,
        created: bool,
    ) -> Result<Applied<T>, ServiceError> {
        let Change {
            mut tx,
            now,
            events,
            wake,
        } = c;
        if wake {
            timers::notify_planned(&mut tx).await?;
        }
        let written = self.outbox.write(&mut tx, events, now).await?;
        tx.commit().await?;
        let event = written.event(0);
        written.committed();
        if wake {
            self.planner.wake.notify_one();
        }
        Ok(Applied {
            entity,
            event,
            created,
        })
    }

    pub async fn put_reservation(
        &self,
        id: &str,
        input: ReservationInput,
    ) -> Result<Applied<Reservation>, ServiceError> {
        input::check_id("id", id)?;
        input.validate()?;
        let mut c = self.begin("reservation", id).await?;
        let (entity, event_type, created) = match db::load_reservation(&mut c.tx, id).await? {
            Some(existing) if existing.matches(&input) => return Ok(Applied::unchanged(existing)),
            Some(mut existing) => {
                existing.update(input, c.now)?;
                (existing, "reservation.update", false)
            }
            None => (
                Reservation::create(id, input, c.now),
                "reservation.reserve",
                true,
            ),
        };
        db::save_reservation(&mut c.tx, &entity).await?;
        c.emit(event_type, EntityKind::Reservation, id, &entity);
        self.replan(&mut c, Subject::Reservation(&entity)).await?;
        self.commit(c, entity, created).await
    }

    pub async fn cancel_reservation(&self, id: &str) -> Result<Applied<Reservation>, ServiceError> {
        let mut c = self.begin("reservation", id).await?;
        let mut entity = db::load_reservation(&mut c.tx, id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("no reservation {id}")))?;
        entity.cancel(c.now)?;
        db::save_reservation(&mut c.tx, &entity).await?;
        c.emit("reservation.cancel", EntityKind::Reservation, id, &entity);
        self.replan(&mut c, Subject::Reservation(&entity)).await?;
        self.commit(c, entity, false).await
    }

    pub async fn put_order(
        &self,
        id: &str,
        input: OrderInput,
    ) -> Result<Applied<Order>, ServiceError> {
        input::check_id("id", id)?;
        input.validate()?;
        let mut c = self.begin("order", id).await?;
        if let Some(rid) = &input.reservation_id
            && db::load_reservation(&mut c.tx, rid).await?.is_none()
        {
            return Err(
                DomainError::invalid("reservation_id", format!("no reservation {rid}")).into(),
            );
        }
        let (entity, event_type, created) = match db::load_order(&mut c.tx, id).await? {
            Some(existing) if existing.matches(&input) => return Ok(Applied::unchanged(existing)),
            Some(mut existing) => {
                existing.update(input, c.now)?;
                (existing, "order.update", false)
            }
            None => (Order::create(id, input, c.now), "order.create", true),
        };
        self.finish_order(c, entity, event_type, None, created)
            .await
    }

    /// The start of every change to an existing order: the order locked and loaded.
    async fn open_order(&self, id: &str) -> Result<(Change, Order), ServiceError> {
        let mut c = self.begin("order", id).await?;
        let order = db::load_order(&mut c.tx, id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("no order {id}")))?;
        Ok((c, order))
    }

    /// The end of every change to an order: save it, emit `event_type` carrying the
    /// order (with `extra` fields), re-plan its timers, commit.
    async fn finish_order(
        &self,
        mut c: Change,
        entity: Order,
        event_type: &str,
        extra: Option<Value>,
        created: bool,
    ) -> Result<Applied<Order>, ServiceError> {
        db::save_order(&mut c.tx, &entity).await?;
        match extra {
            None => c.emit(event_type, EntityKind::Order, &entity.id, &entity),
            Some(Value::Object(extra)) => {
                let mut data = to_value(&entity)?;
                if let Value::Object(m) = &mut data {
                    m.extend(extra);
                }
                c.emit(event_type, EntityKind::Order, &entity.id, &data);
            }
            Some(other) => c.emit(event_type, EntityKind::Order, &entity.id, &other),
        }
        self.replan(&mut c, Subject::Order(&entity)).await?;
        self.commit(c, entity, created).await
    }

    pub async fn patch_order_due(
        &self,
        id: &str,
        due_at: DateTime<Utc>,
    ) -> Result<Applied<Order>, ServiceError> {
        let (c, mut entity) = self.open_order(id).await?;
        if !entity.set_due(due_at, c.now)? {
            return Ok(Applied::unchanged(entity));
        }
        self.finish_order(c, entity, "order.update", None, false)
            .await
    }

    pub async fn checkout(&self, id: &str) -> Result<Applied<Order>, ServiceError> {
        let (mut c, mut entity) = self.open_order(id).await?;
        entity.checkout(c.now)?;
        // Checking out an order made from a reservation is its pickup: the
        // reservation's pickup reminders stop.
        if let Some(rid) = &entity.reservation_id
            && let Some(mut reservation) = db::load_reservation(&mut c.tx, rid).await?
        {
            reservation.pick_up(c.now);
            db::save_reservation(&mut c.tx, &reservation).await?;
            self.replan(&mut c, Subject::Reservation(&reservation))
                .await?;
        }
        self.finish_order(c, entity, "order.checkout", None, false)
            .await
    }

    pub async fn checkin(
        &self,
        id: &str,
        input: CheckinInput,
    ) -> Result<Applied<Order>, ServiceError> {
        let (c, mut entity) = self.open_order(id).await?;
        let checked_in = entity.checkin(input.item_ids.as_deref(), c.now)?;
        // Receivers need to know what this check-in covered, and whether it was partial.
        let extra = json!({
            "checked_in_item_ids": checked_in,
            "partial": entity.status != OrderStatus::Closed,
        });
        self.finish_order(c, entity, "order.checkin", Some(extra), false)
            .await
    }

    pub async fn undo_checkout(&self, id: &str) -> Result<Applied<Order>, ServiceError> {
        let (c, mut entity) = self.open_order(id).await?;
        entity.undo_checkout(c.now)?;
        self.finish_order(c, entity, "order.undocheckout", None, false)
            .await
    }

    pub async fn put_item(
        &self,
        id: &str,
        input: ItemInput,
    ) -> Result<Applied<Item>, ServiceError> {
        input::check_id("id", id)?;
        input.validate()?;
        let mut c = self.begin("item", id).await?;
        let (mut entity, event_type, created) = match db::load_item(&mut c.tx, id).await? {
            Some(existing) if existing.matches(&input) => return Ok(Applied::unchanged(existing)),
            Some(mut existing) => {
                existing.update(input, c.now);
                (existing, "item.update", false)
            }
            None => (Item::create(id, input, c.now), "item.create", true),
        };
        // An expired item whose expiry is cleared or moved into the future is unexpired.
        let unexpire = entity.expired && entity.expires_at.is_none_or(|at| at > c.now);
        if unexpire {
            entity.expired = false;
        }
        db::save_item(&mut c.tx, &entity).await?;
        c.emit(event_type, EntityKind::Item, id, &entity);
        if unexpire {
            c.emit("item.undoexpire", EntityKind::Item, id, &entity);
        }
        self.replan(&mut c, Subject::Item(&entity)).await?;
        self.commit(c, entity, created).await
    }

    pub async fn put_contact(
        &self,
        id: &str,
        input: ContactInput,
    ) -> Result<Applied<Contact>, ServiceError> {
        input::check_id("id", id)?;
        input.validate()?;
        let mut c = self.begin("contact", id).await?;
        let (entity, event_type, created) = match db::load_contact(&mut c.tx, id).await? {
            Some(existing) if existing.matches(&input) => return Ok(Applied::unchanged(existing)),
            Some(mut existing) => {
                existing.update(input, c.now);
                (existing, "contact.update", false)
            }
            None => (Contact::create(id, input, c.now), "contact.create", true),
        };
        db::save_contact(&mut c.tx, &entity).await?;
        c.emit(event_type, EntityKind::Contact, id, &entity);
        self.commit(c, entity, created).await
    }

    pub async fn put_unit_rental(
        &self,
        id: &str,
        input: UnitRentalInput,
    ) -> Result<Applied<UnitRental>, ServiceError> {
        input::check_id("id", id)?;
        input.validate()?;
        let mut c = self.begin("unitRental", id).await?;
        let (entity, created) = match db::load_unit_rental(&mut c.tx, id).await? {
            Some(existing) if existing.matches(&input) => return Ok(Applied::unchanged(existing)),
            Some(mut existing) => {
                existing.update(input, c.now);
                (existing, false)
            }
            None => (UnitRental::create(id, input, c.now), true),
        };
        db::save_unit_rental(&mut c.tx, &entity).await?;
        c.emit("unitRental.updated", EntityKind::UnitRental, id, &entity);
        self.commit(c, entity, created).await
    }

    pub async fn put_invoice(
        &self,
        id: &str,
        input: InvoiceInput,
    ) -> Result<Applied<Invoice>, ServiceError> {
        input::check_id("id", id)?;
        input.validate()?;
        let mut c = self.begin("invoice", id).await?;
        let rental = db::load_unit_rental(&mut c.tx, &input.unit_rental_id)
            .await?
            .ok_or_else(|| {
                DomainError::invalid(
                    "unit_rental_id",
                    format!(
                        "no unit rental {} (PUT /v1/unit-rentals/{{id}} first)",
                        input.unit_rental_id
                    ),
                )
            })?;
        let (entity, created) = match db::load_invoice(&mut c.tx, id).await? {
            Some(existing) if existing.matches(&input) => return Ok(Applied::unchanged(existing)),
            Some(mut existing) => {
                let old_state = existing.state;
                existing.update(input, c.now)?;
                db::save_invoice(&mut c.tx, &existing).await?;
                // A due-date or data change alone emits nothing immediate: Storeganise's
                // catalogue has no such event; the invoice's timers are re-planned.
                if existing.state != old_state {
                    let mut data = to_value(&existing)?;
                    if let Value::Object(m) = &mut data {
                        m.insert("previous_state".into(), json!(old_state.as_str()));
                    }
                    c.emit("invoice.state.updated", EntityKind::Invoice, id, &data);
                }
                (existing, false)
            }
            None => {
                let invoice = Invoice::create(id, input, c.now);
                db::save_invoice(&mut c.tx, &invoice).await?;
                // The entity of a unitRental.* event is the rental; the invoice rides along.
                let mut data = to_value(&rental)?;
                if let Value::Object(m) = &mut data {
                    m.insert("invoice".into(), json!(&invoice));
                }
                c.emit(
                    "unitRental.invoice.created",
                    EntityKind::UnitRental,
                    &rental.id,
                    &data,
                );
                (invoice, true)
            }
        };
        self.replan(&mut c, Subject::Invoice(&entity, &rental))
            .await?;
        self.unmark_overdue_if_settled(&mut c, rental, &entity)
            .await?;
        self.commit(c, entity, created).await
    }

    /// A rental marked overdue stops being overdue once none of its invoices is unpaid
    /// past its due date plus grace (`unitRental.unmarkOverdue`, Storeganise's event).
    async fn unmark_overdue_if_settled(
        &self,
        c: &mut Change,
        mut rental: UnitRental,
        changed: &Invoice,
    ) -> Result<(), ServiceError> {
        if !rental.overdue {
            return Ok(());
        }
        let grace = self.planner.invoice_grace();
        let now = c.now;
        let still_overdue = db::load_invoices_of_rental(&mut c.tx, &rental.id)
            .await?
            .iter()
            .any(|i| i.state.is_unpaid() && i.due_at + grace <= now);
        if still_overdue {
            return Ok(());
        }
        rental.overdue = false;
        rental.updated_at = now;
        db::save_unit_rental(&mut c.tx, &rental).await?;
        let mut data = to_value(&rental)?;
        if let Value::Object(m) = &mut data {
            m.insert("invoice".into(), json!(changed));
        }
        c.emit(
            "unitRental.unmarkOverdue",
            EntityKind::UnitRental,
            &rental.id,
            &data,
        );
        Ok(())
    }

    /// `POST /v1/events`: any catalogue type, with the application's own data.
    pub async fn post_event(&self, event_type: &str, data: Value) -> Result<Event, ServiceError> {
        let known = self.catalogue.find(event_type).ok_or_else(|| {
            DomainError::invalid(
                "type",
                format!("unknown event type `{event_type}` (see GET /v1/event-types)"),
            )
        })?;
        let Value::Object(map) = &data else {
            return Err(DomainError::invalid("data", "must be a JSON object").into());
        };
        let entity_id = match map.get("id") {
            Some(Value::String(s)) => {
                input::check_id("data.id", s)?;
                s.clone()
            }
            Some(Value::Number(n)) => n.to_string(),
            None => String::new(),
            Some(_) => {
                return Err(DomainError::invalid("data.id", "must be a string or a number").into());
            }
        };
        let kind = known.name.split('.').next().unwrap_or(&known.name);
        let ev = NewEvent::immediate(&known.name, kind, &entity_id, &data);
        Ok(self.events.write(ev).await?)
    }
}

fn to_value(v: &impl Serialize) -> Result<Value, ServiceError> {
    Ok(serde_json::to_value(v).map_err(|e| StoreError::Corrupt(e.to_string()))?)
}
