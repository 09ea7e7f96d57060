//! Firing one timer: a single transaction that re-reads the timer (still pending?) and
//! its entity (does the rule's condition still hold? is the anchor unchanged?), applies
//! the misfire policy when the timer is late, writes the event and marks the timer
//! fired. Whatever crashes where, a timer ends with at most one event.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::digest;
use super::plan::{Planner, Subject};
use super::rules::Misfire;
use crate::domain::event::NewEvent;
use crate::store::timers::{self, Timer, TimerState};
use crate::store::{Backend, Store, StoreError, Tx, entities as db, events};

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

/// Fires timer `id` at `now`, in a transaction of its own (the careful path: batches
/// fall back to it when a batch fails).
pub async fn fire(
    store: &Store,
    planner: &Planner,
    misfire_after: TimeDelta,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Fired, StoreError> {
    let mut tx = store.begin().await?;
    let outcome = fire_in(&mut tx, store, planner, misfire_after, id, now).await?;
    tx.commit().await?;
    Ok(outcome)
}

async fn fire_in(
    tx: &mut Tx,
    store: &Store,
    planner: &Planner,
    misfire_after: TimeDelta,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Fired, StoreError> {
    // SQLite: BEGIN IMMEDIATE holds the write lock until commit. PostgreSQL: lock the
    // entity first, then the timer row, the order ingest takes them in (no deadlock).
    let Some(timer) = timers::pending_for_fire(tx, id, false).await? else {
        return Ok(Fired::Nothing);
    };
    if timer.fire_at > now {
        return Ok(Fired::Nothing);
    }
    let timer = if store.backend() == Backend::Postgres {
        store
            .lock_entity(tx, &timer.entity_kind, &timer.entity_id)
            .await?;
        match timers::pending_for_fire(tx, id, true).await? {
            Some(t) => t,
            None => return Ok(Fired::Nothing),
        }
    } else {
        timer
    };
    let outcome = decide(tx, store, planner, misfire_after, &timer, now).await?;
    let done = match &outcome {
        Fired::Event { event_id, late, .. } => {
            let reason = late.then(|| {
                format!(
                    "fired late by {}s (misfire policy)",
                    (now - timer.fire_at).num_seconds()
                )
            });
            timers::mark_fired(tx, timer.id, event_id, reason.as_deref(), now).await?
        }
        Fired::Cancelled(why) => {
            timers::close(tx, timer.id, TimerState::Cancelled, why, now).await?
        }
        Fired::Skipped(why) => timers::close(tx, timer.id, TimerState::Skipped, why, now).await?,
        Fired::Nothing => return Ok(Fired::Nothing),
    };
    if !done {
        // Impossible while the lock holds; refuse to commit anything of this batch.
        return Err(StoreError::Corrupt(format!(
            "timer {id} changed while locked for firing"
        )));
    }
    Ok(outcome)
}

async fn decide(
    tx: &mut Tx,
    store: &Store,
    planner: &Planner,
    misfire_after: TimeDelta,
    timer: &Timer,
    now: DateTime<Utc>,
) -> Result<Fired, StoreError> {
    if timer.entity_kind == digest::ENTITY_KIND {
        return fire_digest(tx, planner, misfire_after, timer, now).await;
    }
    let Some(rule) = planner.rule(&timer.rule).cloned() else {
        return Ok(Fired::Cancelled("rule no longer configured".into()));
    };
    let id = timer.entity_id.as_str();
    // Load the entity as it is now; the event carries it.
    let (data, kind, entity_id): (Value, &str, String) = match timer.entity_kind.as_str() {
        "reservation" => {
            let Some(r) = db::load_reservation(tx, id).await? else {
                return Ok(Fired::Cancelled("reservation no longer exists".into()));
            };
            if let Some(c) = check(planner, &rule, Subject::Reservation(&r), timer) {
                return Ok(c);
            }
            (to_value(&r)?, "reservation", r.id.clone())
        }
        "order" => {
            let Some(o) = db::load_order(tx, id).await? else {
                return Ok(Fired::Cancelled("order no longer exists".into()));
            };
            if let Some(c) = check(planner, &rule, Subject::Order(&o), timer) {
                return Ok(c);
            }
            (to_value(&o)?, "order", o.id.clone())
        }
        "invoice" => {
            let Some(inv) = db::load_invoice(tx, id).await? else {
                return Ok(Fired::Cancelled("invoice no longer exists".into()));
            };
            // Firing may change the rental (`overdue`): hold its lock as ingest does,
            // after the invoice's (the order batches take them in, too).
            store
                .lock_entity(tx, "unitRental", &inv.unit_rental_id)
                .await?;
            let Some(mut rental) = db::load_unit_rental(tx, &inv.unit_rental_id).await? else {
                return Ok(Fired::Cancelled("unit rental no longer exists".into()));
            };
            if let Some(c) = check(planner, &rule, Subject::Invoice(&inv, &rental), timer) {
                return Ok(c);
            }
            if let Some(m) = misfire(&rule.misfire, misfire_after, timer, now) {
                return Ok(m);
            }
            if rule.event_type == "unitRental.markOverdue" && !rental.overdue {
                rental.overdue = true;
                rental.updated_at = now;
                db::save_unit_rental(tx, &rental).await?;
            }
            // The rental is the entity; the invoice that caused the event rides along.
            let mut data = to_value(&rental)?;
            if let Value::Object(m) = &mut data {
                m.insert("invoice".into(), json!(inv));
            }
            return write_event(
                tx,
                timer,
                "unitRental",
                &rental.id,
                data,
                now,
                misfire_after,
            )
            .await;
        }
        "item" => {
            let Some(mut item) = db::load_item(tx, id).await? else {
                return Ok(Fired::Cancelled("item no longer exists".into()));
            };
            if let Some(c) = check(planner, &rule, Subject::Item(&item), timer) {
                return Ok(c);
            }
            if let Some(m) = misfire(&rule.misfire, misfire_after, timer, now) {
                return Ok(m);
            }
            if rule.event_type == "item.expire" {
                item.expired = true;
                item.updated_at = now;
                db::save_item(tx, &item).await?;
            }
            return write_event(
                tx,
                timer,
                "item",
                &item.id,
                to_value(&item)?,
                now,
                misfire_after,
            )
            .await;
        }
        other => return Ok(Fired::Cancelled(format!("unknown entity kind `{other}`"))),
    };
    if let Some(m) = misfire(&rule.misfire, misfire_after, timer, now) {
        return Ok(m);
    }
    write_event(tx, timer, kind, &entity_id, data, now, misfire_after).await
}

/// A digest: skipped when missed (a stale list helps nobody), fired otherwise; either
/// way the next day's digest is planned in the same transaction.
pub(super) async fn fire_digest(
    tx: &mut Tx,
    planner: &Planner,
    misfire_after: TimeDelta,
    timer: &Timer,
    now: DateTime<Utc>,
) -> Result<Fired, StoreError> {
    let Some((at, zones)) = &planner.digest else {
        return Ok(Fired::Cancelled("the daily digest is disabled".into()));
    };
    let Some(tz) = zones.iter().find(|z| z.name() == timer.entity_id).copied() else {
        return Ok(Fired::Cancelled(format!(
            "zone {} is no longer configured for the digest",
            timer.entity_id
        )));
    };
    digest::plan_next(tx, tz, *at, now.max(timer.fire_at)).await?;
    if let Some(skip) = misfire(&Misfire::Skip, misfire_after, timer, now) {
        return Ok(skip);
    }
    let data = digest::data(tx, tz, timer.fire_at, now).await?;
    let id = data["id"].as_str().unwrap_or_default().to_string();
    write_event(
        tx,
        timer,
        digest::ENTITY_KIND,
        &id,
        data,
        now,
        misfire_after,
    )
    .await
}

/// The guard: the rule's condition must still hold and the anchor must not have moved.
pub(super) fn check(
    planner: &Planner,
    rule: &super::rules::Rule,
    subject: Subject<'_>,
    timer: &Timer,
) -> Option<Fired> {
    if let Err(why) = subject.check(rule.condition) {
        return Some(Fired::Cancelled(format!(
            "no longer applies at fire time: {why}"
        )));
    }
    match planner.fire_at(rule, &subject) {
        Some((_, fire_at)) if fire_at == timer.fire_at => None,
        Some((anchor, _)) => Some(Fired::Cancelled(format!(
            "anchor moved to {} before firing",
            anchor.to_rfc3339()
        ))),
        None => Some(Fired::Cancelled("anchor removed before firing".into())),
    }
}

/// The misfire policy, for a timer found `misfire_after` or more past its moment.
pub(super) fn misfire(
    policy: &Misfire,
    misfire_after: TimeDelta,
    timer: &Timer,
    now: DateTime<Utc>,
) -> Option<Fired> {
    let late = now - timer.fire_at;
    if late < misfire_after {
        return None;
    }
    match policy {
        Misfire::FireLate => None,
        Misfire::Skip => Some(Fired::Skipped(format!(
            "missed by {}s (service down or clock jump); misfire policy skip",
            late.num_seconds()
        ))),
        Misfire::SkipIfAnchorPassed if timer.anchor_at <= now => Some(Fired::Skipped(format!(
            "missed by {}s and its anchor {} has passed; misfire policy skip_if_anchor_passed",
            late.num_seconds(),
            timer.anchor_at.to_rfc3339()
        ))),
        Misfire::SkipIfAnchorPassed => None,
    }
}

async fn write_event(
    tx: &mut Tx,
    timer: &Timer,
    kind: &str,
    entity_id: &str,
    data: Value,
    now: DateTime<Utc>,
    misfire_after: TimeDelta,
) -> Result<Fired, StoreError> {
    let ev = NewEvent {
        event_type: timer.event_type.clone(),
        entity_kind: kind.to_string(),
        entity_id: entity_id.to_string(),
        data,
        scheduled_at: Some(timer.fire_at),
        timer_id: Some(timer.id),
    };
    let event = events::insert(tx, ev, now).await?;
    Ok(Fired::Event {
        event_id: event.id,
        late: now - timer.fire_at >= misfire_after,
        lag: now - timer.fire_at,
    })
}

pub(super) fn to_value(v: &impl serde::Serialize) -> Result<Value, StoreError> {
    serde_json::to_value(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}
