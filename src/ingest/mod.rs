//! Applying the application's changes. Each operation is one store transaction: the
//! entity row, its immediate event in the outbox, and (through the planner) its timers.
//! Either all of it is stored or none of it, and nothing is acknowledged before commit.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::clock::SharedClock;
use crate::domain::catalogue::Catalogue;
use crate::domain::contact::{Contact, ContactInput};
use crate::domain::event::{Event, NewEvent};
use crate::domain::item::{Item, ItemInput};
use crate::domain::order::{CheckinInput, Order, OrderInput, OrderStatus};
use crate::domain::reservation::{Reservation, ReservationInput};
use crate::domain::unit_rental::{Invoice, InvoiceInput, UnitRental, UnitRentalInput};
use crate::domain::{DomainError, EntityKind, input};
use crate::schedule::plan::{Planner, Subject};
use crate::store::{Store, StoreError, Tx, entities as db, events};

mod group;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for IngestError {
    fn from(e: sqlx::Error) -> Self {
        IngestError::Store(e.into())
    }
}

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

/// The ingest service, shared by the HTTP handlers.
#[derive(Clone)]
pub struct Ingest {
    store: Store,
    clock: SharedClock,
    /// Poked after every commit that wrote an event, so fan-out need not poll.
    outbox: Arc<Notify>,
    planner: Planner,
    catalogue: Arc<Catalogue>,
    /// Posted events go through group commit.
    events: group::EventWriter,
}

impl Ingest {
    pub fn new(
        store: Store,
        clock: SharedClock,
        outbox: Arc<Notify>,
        planner: Planner,
        catalogue: Arc<Catalogue>,
        delivery_work: Arc<Notify>,
        handoff: Arc<crate::delivery::handoff::Handoff>,
    ) -> Self {
        Self {
            events: group::EventWriter::start(store.clone(), clock.clone(), delivery_work, handoff),
            store,
            clock,
            outbox,
            planner,
            catalogue,
        }
    }

    /// Re-plans `subject`'s timers in `tx`; remembers whether the driver must be woken.
    async fn replan(
        &self,
        tx: &mut Tx,
        subject: Subject<'_>,
        now: DateTime<Utc>,
        wake: &mut bool,
    ) -> Result<(), IngestError> {
        *wake |= self.planner.replan(tx, subject, now).await?;
        Ok(())
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn commit<T>(
        &self,
        tx: Tx,
        applied: Applied<T>,
        wake: bool,
    ) -> Result<Applied<T>, IngestError> {
        let mut tx = tx;
        if wake && self.store.backend() == crate::store::Backend::Postgres {
            // Delivered at commit to every node's LISTEN: the node that claims the
            // timer may not be this one.
            sqlx::query("SELECT pg_notify($1, '')::text AS sent")
                .bind(crate::node::TIMERS_CHANNEL)
                .fetch_one(&mut *tx)
                .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        if let Some(ev) = &applied.event {
            metrics::counter!(crate::telemetry::names::EVENTS, "type" => ev.event_type.clone(), "trigger" => "immediate")
                .increment(1);
            self.outbox.notify_one();
        }
        if wake {
            self.planner.wake.notify_one();
        }
        Ok(applied)
    }

    async fn emit(
        tx: &mut Tx,
        event_type: &str,
        kind: EntityKind,
        id: &str,
        data: impl Serialize,
        now: DateTime<Utc>,
    ) -> Result<Option<Event>, IngestError> {
        let ev = NewEvent::immediate(event_type, kind.as_str(), id, data);
        Ok(Some(events::insert(tx, ev, now).await?))
    }

    pub async fn put_reservation(
        &self,
        id: &str,
        input: ReservationInput,
    ) -> Result<Applied<Reservation>, IngestError> {
        input::check_id("id", id)?;
        input.validate()?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_entity(&mut tx, "reservation", id).await?;
        let (entity, event_type, created) = match db::load_reservation(&mut tx, id).await? {
            Some(existing) if existing.matches(&input) => {
                return Ok(Applied {
                    entity: existing,
                    event: None,
                    created: false,
                });
            }
            Some(mut existing) => {
                existing.update(input, now)?;
                (existing, "reservation.update", false)
            }
            None => (
                Reservation::create(id, input, now),
                "reservation.reserve",
                true,
            ),
        };
        db::save_reservation(&mut tx, &entity).await?;
        let event = Self::emit(
            &mut tx,
            event_type,
            EntityKind::Reservation,
            id,
            &entity,
            now,
        )
        .await?;
        let mut wake = false;
        self.replan(&mut tx, Subject::Reservation(&entity), now, &mut wake)
            .await?;
        self.commit(
            tx,
            Applied {
                entity,
                event,
                created,
            },
            wake,
        )
        .await
    }

    pub async fn cancel_reservation(&self, id: &str) -> Result<Applied<Reservation>, IngestError> {
        input::check_id("id", id)?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_entity(&mut tx, "reservation", id).await?;
        let mut entity = db::load_reservation(&mut tx, id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("no reservation {id}")))?;
        entity.cancel(now)?;
        db::save_reservation(&mut tx, &entity).await?;
        let event = Self::emit(
            &mut tx,
            "reservation.cancel",
            EntityKind::Reservation,
            id,
            &entity,
            now,
        )
        .await?;
        let mut wake = false;
        self.replan(&mut tx, Subject::Reservation(&entity), now, &mut wake)
            .await?;
        self.commit(
            tx,
            Applied {
                entity,
                event,
                created: false,
            },
            wake,
        )
        .await
    }

    pub async fn put_order(
        &self,
        id: &str,
        input: OrderInput,
    ) -> Result<Applied<Order>, IngestError> {
        input::check_id("id", id)?;
        input.validate()?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_entity(&mut tx, "order", id).await?;
        if let Some(rid) = &input.reservation_id
            && db::load_reservation(&mut tx, rid).await?.is_none()
        {
            return Err(
                DomainError::invalid("reservation_id", format!("no reservation {rid}")).into(),
            );
        }
        let (entity, event_type, created) = match db::load_order(&mut tx, id).await? {
            Some(existing) if existing.matches(&input) => {
                return Ok(Applied {
                    entity: existing,
                    event: None,
                    created: false,
                });
            }
            Some(mut existing) => {
                existing.update(input, now)?;
                (existing, "order.update", false)
            }
            None => (Order::create(id, input, now), "order.create", true),
        };
        db::save_order(&mut tx, &entity).await?;
        let event = Self::emit(&mut tx, event_type, EntityKind::Order, id, &entity, now).await?;
        let mut wake = false;
        self.replan(&mut tx, Subject::Order(&entity), now, &mut wake)
            .await?;
        self.commit(
            tx,
            Applied {
                entity,
                event,
                created,
            },
            wake,
        )
        .await
    }

    async fn load_order_or_404(tx: &mut Tx, id: &str) -> Result<Order, IngestError> {
        Ok(db::load_order(tx, id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("no order {id}")))?)
    }

    /// The start of every change to an existing order: its id checked, the write
    /// transaction open, the order locked and loaded.
    async fn open_order(&self, id: &str) -> Result<(Tx, Order, DateTime<Utc>), IngestError> {
        input::check_id("id", id)?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_entity(&mut tx, "order", id).await?;
        let order = Self::load_order_or_404(&mut tx, id).await?;
        Ok((tx, order, now))
    }

    /// The end of every change to an order: save it, emit `event_type` carrying
    /// `data`, re-plan its timers, commit.
    async fn finish_order(
        &self,
        mut tx: Tx,
        entity: Order,
        event_type: &str,
        data: Value,
        now: DateTime<Utc>,
        mut wake: bool,
    ) -> Result<Applied<Order>, IngestError> {
        db::save_order(&mut tx, &entity).await?;
        let event = Self::emit(
            &mut tx,
            event_type,
            EntityKind::Order,
            &entity.id,
            data,
            now,
        )
        .await?;
        self.replan(&mut tx, Subject::Order(&entity), now, &mut wake)
            .await?;
        self.commit(
            tx,
            Applied {
                entity,
                event,
                created: false,
            },
            wake,
        )
        .await
    }

    fn order_data(entity: &Order) -> Result<Value, IngestError> {
        Ok(serde_json::to_value(entity).map_err(|e| StoreError::Corrupt(e.to_string()))?)
    }

    pub async fn patch_order_due(
        &self,
        id: &str,
        due_at: DateTime<Utc>,
    ) -> Result<Applied<Order>, IngestError> {
        let (tx, mut entity, now) = self.open_order(id).await?;
        if !entity.set_due(due_at, now)? {
            return Ok(Applied {
                entity,
                event: None,
                created: false,
            });
        }
        let data = Self::order_data(&entity)?;
        self.finish_order(tx, entity, "order.update", data, now, false)
            .await
    }

    pub async fn checkout(&self, id: &str) -> Result<Applied<Order>, IngestError> {
        let (mut tx, mut entity, now) = self.open_order(id).await?;
        entity.checkout(now)?;
        let mut wake = false;
        // Checking out an order made from a reservation is its pickup: the
        // reservation's pickup reminders stop.
        if let Some(rid) = &entity.reservation_id
            && let Some(mut reservation) = db::load_reservation(&mut tx, rid).await?
        {
            reservation.pick_up(now);
            db::save_reservation(&mut tx, &reservation).await?;
            self.replan(&mut tx, Subject::Reservation(&reservation), now, &mut wake)
                .await?;
        }
        let data = Self::order_data(&entity)?;
        self.finish_order(tx, entity, "order.checkout", data, now, wake)
            .await
    }

    pub async fn checkin(
        &self,
        id: &str,
        input: CheckinInput,
    ) -> Result<Applied<Order>, IngestError> {
        let (tx, mut entity, now) = self.open_order(id).await?;
        let checked_in = entity.checkin(input.item_ids.as_deref(), now)?;
        let mut data = Self::order_data(&entity)?;
        if let Value::Object(m) = &mut data {
            // Receivers need to know what this check-in covered, and whether it was partial.
            m.insert("checked_in_item_ids".into(), json!(checked_in));
            m.insert(
                "partial".into(),
                json!(entity.status != OrderStatus::Closed),
            );
        }
        self.finish_order(tx, entity, "order.checkin", data, now, false)
            .await
    }

    pub async fn undo_checkout(&self, id: &str) -> Result<Applied<Order>, IngestError> {
        let (tx, mut entity, now) = self.open_order(id).await?;
        entity.undo_checkout(now)?;
        let data = Self::order_data(&entity)?;
        self.finish_order(tx, entity, "order.undocheckout", data, now, false)
            .await
    }

    pub async fn put_item(&self, id: &str, input: ItemInput) -> Result<Applied<Item>, IngestError> {
        input::check_id("id", id)?;
        input.validate()?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_entity(&mut tx, "item", id).await?;
        let (entity, event_type, created) = match db::load_item(&mut tx, id).await? {
            Some(existing) if existing.matches(&input) => {
                return Ok(Applied {
                    entity: existing,
                    event: None,
                    created: false,
                });
            }
            Some(mut existing) => {
                existing.update(input, now);
                (existing, "item.update", false)
            }
            None => (Item::create(id, input, now), "item.create", true),
        };
        let mut entity = entity;
        // An expired item whose expiry is cleared or moved into the future is unexpired.
        let unexpire = entity.expired && entity.expires_at.is_none_or(|at| at > now);
        if unexpire {
            entity.expired = false;
        }
        db::save_item(&mut tx, &entity).await?;
        let event = Self::emit(&mut tx, event_type, EntityKind::Item, id, &entity, now).await?;
        if unexpire {
            Self::emit(
                &mut tx,
                "item.undoexpire",
                EntityKind::Item,
                id,
                &entity,
                now,
            )
            .await?;
        }
        let mut wake = false;
        self.replan(&mut tx, Subject::Item(&entity), now, &mut wake)
            .await?;
        self.commit(
            tx,
            Applied {
                entity,
                event,
                created,
            },
            wake,
        )
        .await
    }

    pub async fn put_contact(
        &self,
        id: &str,
        input: ContactInput,
    ) -> Result<Applied<Contact>, IngestError> {
        input::check_id("id", id)?;
        input.validate()?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_entity(&mut tx, "contact", id).await?;
        let (entity, event_type, created) = match db::load_contact(&mut tx, id).await? {
            Some(existing) if existing.matches(&input) => {
                return Ok(Applied {
                    entity: existing,
                    event: None,
                    created: false,
                });
            }
            Some(mut existing) => {
                existing.update(input, now);
                (existing, "contact.update", false)
            }
            None => (Contact::create(id, input, now), "contact.create", true),
        };
        db::save_contact(&mut tx, &entity).await?;
        let event = Self::emit(&mut tx, event_type, EntityKind::Contact, id, &entity, now).await?;
        self.commit(
            tx,
            Applied {
                entity,
                event,
                created,
            },
            false,
        )
        .await
    }

    pub async fn put_unit_rental(
        &self,
        id: &str,
        input: UnitRentalInput,
    ) -> Result<Applied<UnitRental>, IngestError> {
        input::check_id("id", id)?;
        input.validate()?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_entity(&mut tx, "unitRental", id).await?;
        let (entity, created) = match db::load_unit_rental(&mut tx, id).await? {
            Some(existing) if existing.matches(&input) => {
                return Ok(Applied {
                    entity: existing,
                    event: None,
                    created: false,
                });
            }
            Some(mut existing) => {
                existing.update(input, now);
                (existing, false)
            }
            None => (UnitRental::create(id, input, now), true),
        };
        db::save_unit_rental(&mut tx, &entity).await?;
        let event = Self::emit(
            &mut tx,
            "unitRental.updated",
            EntityKind::UnitRental,
            id,
            &entity,
            now,
        )
        .await?;
        self.commit(
            tx,
            Applied {
                entity,
                event,
                created,
            },
            false,
        )
        .await
    }

    pub async fn put_invoice(
        &self,
        id: &str,
        input: InvoiceInput,
    ) -> Result<Applied<Invoice>, IngestError> {
        input::check_id("id", id)?;
        input.validate()?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        self.store.lock_entity(&mut tx, "invoice", id).await?;
        let rental = db::load_unit_rental(&mut tx, &input.unit_rental_id)
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
        let (entity, event) = match db::load_invoice(&mut tx, id).await? {
            Some(existing) if existing.matches(&input) => {
                return Ok(Applied {
                    entity: existing,
                    event: None,
                    created: false,
                });
            }
            Some(mut existing) => {
                let old_state = existing.state;
                existing.update(input, now)?;
                db::save_invoice(&mut tx, &existing).await?;
                // A due-date or data change alone emits nothing immediate: Storeganise's
                // catalogue has no such event; the invoice's timers are re-planned.
                let event = if existing.state != old_state {
                    let mut data = serde_json::to_value(&existing)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    if let Value::Object(m) = &mut data {
                        m.insert("previous_state".into(), json!(old_state.as_str()));
                    }
                    Self::emit(
                        &mut tx,
                        "invoice.state.updated",
                        EntityKind::Invoice,
                        id,
                        data,
                        now,
                    )
                    .await?
                } else {
                    None
                };
                (existing, event)
            }
            None => {
                let invoice = Invoice::create(id, input, now);
                db::save_invoice(&mut tx, &invoice).await?;
                // The entity of a unitRental.* event is the rental; the invoice rides along.
                let mut data = serde_json::to_value(&rental)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if let Value::Object(m) = &mut data {
                    m.insert("invoice".into(), json!(&invoice));
                }
                let event = Self::emit(
                    &mut tx,
                    "unitRental.invoice.created",
                    EntityKind::UnitRental,
                    &rental.id,
                    data,
                    now,
                )
                .await?;
                (invoice, event)
            }
        };
        let created = matches!(&event, Some(e) if e.event_type == "unitRental.invoice.created");
        let mut wake = false;
        self.replan(&mut tx, Subject::Invoice(&entity, &rental), now, &mut wake)
            .await?;
        self.unmark_overdue_if_settled(&mut tx, rental, &entity, now)
            .await?;
        self.commit(
            tx,
            Applied {
                entity,
                event,
                created,
            },
            wake,
        )
        .await
    }

    /// A rental marked overdue stops being overdue once none of its invoices is unpaid
    /// past its due date plus grace (`unitRental.unmarkOverdue`, Storeganise's event).
    async fn unmark_overdue_if_settled(
        &self,
        tx: &mut Tx,
        mut rental: UnitRental,
        changed: &Invoice,
        now: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        if !rental.overdue {
            return Ok(());
        }
        let grace = self.planner.invoice_grace();
        let still_overdue = db::load_invoices_of_rental(tx, &rental.id)
            .await?
            .iter()
            .any(|i| i.state.is_unpaid() && i.due_at + grace <= now);
        if still_overdue {
            return Ok(());
        }
        rental.overdue = false;
        rental.updated_at = now;
        db::save_unit_rental(tx, &rental).await?;
        let mut data =
            serde_json::to_value(&rental).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if let Value::Object(m) = &mut data {
            m.insert("invoice".into(), json!(changed));
        }
        Self::emit(
            tx,
            "unitRental.unmarkOverdue",
            EntityKind::UnitRental,
            &rental.id,
            data,
            now,
        )
        .await?;
        Ok(())
    }

    /// `POST /v1/events`: any catalogue type, with the application's own data.
    pub async fn post_event(&self, event_type: &str, data: Value) -> Result<Event, IngestError> {
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
        let ev = NewEvent {
            event_type: known.name.to_string(),
            entity_kind: kind.to_string(),
            entity_id,
            data,
            scheduled_at: None,
            timer_id: None,
        };
        let event = self.events.write(ev).await?;
        Ok(event)
    }
}
