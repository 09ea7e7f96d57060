//! Firing a batch of due timers in one transaction: the timers and their entities are
//! read at once ([`store::firing::load_due`], which locks them), each timer is decided
//! in memory by [`decide`], the events enter through the outbox, and what was decided
//! is written at once ([`store::firing::settle`]). One timer is a batch of one. The
//! timers are locked (PostgreSQL rows, SQLite's write lock), every one still pending is
//! settled once, and the whole batch commits or none of it does: whatever crashes where,
//! a timer ends with at most one event.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::decide::{Current, Effect, Verdict, decide};
use super::digest;
use super::plan::Planner;
use crate::domain::event::{NewEvent, json_text};
use crate::outbox::{Outbox, Written};
use crate::store::firing::{self, DIGEST_KIND, DueBatch, Settled};
use crate::store::timers::{Timer, TimerState};
use crate::store::{StoreError, Tx};

/// What became of a timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    /// The event was written.
    Event {
        event_id: String,
        late: bool,
        /// How long after its instant the timer fired.
        lag: TimeDelta,
    },
    Cancelled(String),
    Skipped(String),
    /// Not pending any more (fired by another node or an earlier run), or not due yet.
    Nothing,
}

/// What firing needs besides the store: the rules, the outbox, the misfire threshold.
#[derive(Clone)]
pub struct Firing {
    pub planner: Planner,
    pub outbox: Arc<Outbox>,
    pub misfire_after: TimeDelta,
}

impl Firing {
    /// Fires the timers `ids` that are pending and due at `now`, in `tx` (begun by the
    /// caller, who commits it and then calls [`Written::committed`]). On an error the
    /// caller must roll back: part of the batch may be written. Returns one outcome
    /// per id, in order.
    pub async fn fire<'a>(
        &'a self,
        tx: &mut Tx,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<(Vec<Fired>, Written<'a>), StoreError> {
        let mut batch = firing::load_due(tx, ids, now).await?;
        let timers = std::mem::take(&mut batch.timers);
        let mut events = Vec::new();
        // (timer, index of its event, lateness) of the timers that fire.
        let mut fires = Vec::new();
        let mut closed = Vec::new();
        let mut changed_items = BTreeSet::new();
        let mut changed_rentals = BTreeSet::new();
        let mut next_digests = Vec::new();
        for timer in &timers {
            let d = decide(
                timer,
                current(&batch, timer),
                &self.planner,
                self.misfire_after,
                now,
            );
            match d.effect {
                Some(Effect::ExpireItem) => {
                    if let Some(item) = batch.items.get_mut(&timer.entity_id) {
                        item.expired = true;
                        item.updated_at = now;
                        changed_items.insert(item.id.clone());
                    }
                }
                Some(Effect::MarkRentalOverdue) => {
                    let rental_id = batch
                        .invoices
                        .get(&timer.entity_id)
                        .map(|i| &i.unit_rental_id);
                    if let Some(rental) = rental_id.and_then(|r| batch.rentals.get_mut(r)) {
                        rental.overdue = true;
                        rental.updated_at = now;
                        changed_rentals.insert(rental.id.clone());
                    }
                }
                Some(Effect::PlanNextDigest(tz)) => {
                    next_digests.push((tz, now.max(timer.fire_at)));
                }
                None => {}
            }
            match d.verdict {
                Verdict::Fire { late } => {
                    fires.push((timer, events.len(), late));
                    events.push(event_of(&batch, timer, &self.planner, now)?);
                }
                Verdict::Cancel(why) => closed.push((timer.id, TimerState::Cancelled, why)),
                Verdict::Skip(why) => closed.push((timer.id, TimerState::Skipped, why)),
            }
        }
        let written = self.outbox.write(tx, events, now).await?;
        let planned = match &self.planner.digest {
            Some((at, _)) => next_digests
                .iter()
                .map(|(tz, after)| digest::next(*tz, *at, *after))
                .collect(),
            None => Vec::new(),
        };
        let settled = Settled {
            fired: fires.iter().map(|(t, ..)| t.id).collect(),
            closed,
            items: changed_items
                .iter()
                .filter_map(|id| batch.items.get(id))
                .collect(),
            rentals: changed_rentals
                .iter()
                .filter_map(|id| batch.rentals.get(id))
                .collect(),
            planned,
        };
        firing::settle(tx, &settled, now, self.misfire_after).await?;

        let mut outcome: HashMap<i64, Fired> = HashMap::with_capacity(timers.len());
        for (timer, i, late) in fires {
            outcome.insert(
                timer.id,
                Fired::Event {
                    event_id: written.id(i).unwrap_or_default().to_string(),
                    late,
                    lag: now - timer.fire_at,
                },
            );
        }
        for (id, state, why) in settled.closed {
            let fired = match state {
                TimerState::Skipped => Fired::Skipped(why),
                _ => Fired::Cancelled(why),
            };
            outcome.insert(id, fired);
        }
        let outcomes = ids
            .iter()
            .map(|id| outcome.remove(id).unwrap_or(Fired::Nothing))
            .collect();
        Ok((outcomes, written))
    }
}

/// `timer`'s entity as the batch holds it now.
fn current<'b>(batch: &'b DueBatch, timer: &Timer) -> Current<'b> {
    let id = timer.entity_id.as_str();
    match timer.entity_kind.as_str() {
        "reservation" => Current::Reservation(batch.reservations.get(id)),
        "order" => Current::Order(batch.orders.get(id)),
        "invoice" => {
            let inv = batch.invoices.get(id);
            Current::Invoice(inv, inv.and_then(|i| batch.rentals.get(&i.unit_rental_id)))
        }
        "item" => Current::Item(batch.items.get(id)),
        DIGEST_KIND => Current::Digest,
        _ => Current::Unknown,
    }
}

/// The event of a timer that fires: its entity as it now is (after the decision's
/// effect); for a unit rental's invoice, the rental with the invoice inside.
fn event_of(
    batch: &DueBatch,
    timer: &Timer,
    planner: &Planner,
    now: DateTime<Utc>,
) -> Result<NewEvent, StoreError> {
    let gone = || {
        StoreError::Corrupt(format!(
            "timer {}: its entity vanished while firing",
            timer.id
        ))
    };
    let id = timer.entity_id.as_str();
    let (kind, entity_id, data) = match timer.entity_kind.as_str() {
        "reservation" => {
            let r = batch.reservations.get(id).ok_or_else(gone)?;
            ("reservation", r.id.clone(), json_text(r))
        }
        "order" => {
            let o = batch.orders.get(id).ok_or_else(gone)?;
            ("order", o.id.clone(), json_text(o))
        }
        "invoice" => {
            let inv = batch.invoices.get(id).ok_or_else(gone)?;
            let rental = batch.rentals.get(&inv.unit_rental_id).ok_or_else(gone)?;
            let mut data =
                serde_json::to_value(rental).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if let Value::Object(m) = &mut data {
                m.insert("invoice".into(), json!(inv));
            }
            ("unitRental", rental.id.clone(), json_text(&data))
        }
        "item" => {
            let item = batch.items.get(id).ok_or_else(gone)?;
            ("item", item.id.clone(), json_text(item))
        }
        DIGEST_KIND => {
            let tz = planner
                .digest
                .as_ref()
                .and_then(|(_, zones)| zones.iter().find(|z| z.name() == id))
                .ok_or_else(gone)?;
            let data = digest::data(
                *tz,
                batch.overdue.as_deref().unwrap_or_default(),
                timer.fire_at,
                now,
            );
            let entity_id = data["id"].as_str().unwrap_or_default().to_string();
            (DIGEST_KIND, entity_id, json_text(&data))
        }
        _ => return Err(gone()),
    };
    Ok(NewEvent {
        event_type: timer.event_type.clone(),
        entity_kind: kind.to_string(),
        entity_id,
        data,
        scheduled_at: Some(timer.fire_at),
        timer_id: Some(timer.id),
    })
}
