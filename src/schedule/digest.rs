//! The daily overdue digest (`order.overdue_digest`): one timer per zone per day, fired
//! through the same exactly-once machinery as every other timer. Firing a digest plans
//! the next one in the same transaction, so the chain never breaks; a digest missed
//! during downtime is skipped (yesterday's list is stale) and the next one is planned.

use chrono::{DateTime, Days, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};
use sqlx::Row;

use crate::store::timers::{self, NewTimer};
use crate::store::{Store, StoreError, Tx, from_ms, to_ms};

pub const EVENT_TYPE: &str = "order.overdue_digest";
pub const ENTITY_KIND: &str = "digest";

/// The first `at` local time in `tz` strictly after `now`.
pub fn next_occurrence(tz: Tz, at: NaiveTime, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = now.with_timezone(&tz).date_naive();
    for offset in 0..3 {
        let Some(day) = today.checked_add_days(Days::new(offset)) else {
            break;
        };
        if let Some(t) = tz.from_local_datetime(&day.and_time(at)).earliest() {
            let t = t.with_timezone(&Utc);
            if t > now {
                return t;
            }
        }
    }
    // `at` fell in a DST gap on each day tried: an hour later exists.
    now + TimeDelta::days(1)
}

/// Plans the next digest for `tz` (a no-op when it is already planned).
pub async fn plan_next(
    tx: &mut Tx,
    tz: Tz,
    at: NaiveTime,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let fire_at = next_occurrence(tz, at, now);
    let t = NewTimer {
        entity_kind: ENTITY_KIND,
        entity_id: tz.name(),
        rule: EVENT_TYPE,
        event_type: EVENT_TYPE,
        anchor_at: fire_at,
        fire_at,
    };
    timers::insert_pending(tx, &t, now).await?;
    Ok(())
}

/// Plans the next digest of every zone; called when the driver starts.
pub async fn plan_all(
    store: &Store,
    zones: &[Tz],
    at: NaiveTime,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    for tz in zones {
        // Only if none is pending: a pending one (maybe overdue after downtime) stays.
        let pending =
            timers::of_entity(&mut tx, ENTITY_KIND, tz.name(), timers::TimerState::Pending).await?;
        if pending.is_empty() {
            plan_next(&mut tx, *tz, at, now).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The digest's data: every check-out still out past its due date at `now`.
pub async fn data(
    tx: &mut Tx,
    tz: Tz,
    scheduled_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    let rows = sqlx::query("SELECT id, contact_id, due_at FROM orders WHERE status = 'checked_out' AND due_at < $1 ORDER BY due_at, id")
        .bind(to_ms(now))
        .fetch_all(&mut **tx)
        .await?;
    let mut overdue = Vec::with_capacity(rows.len());
    for r in &rows {
        let due_at = from_ms(r.try_get("due_at")?)?;
        overdue.push(json!({
            "id": r.try_get::<String, _>("id")?,
            "contact_id": r.try_get::<String, _>("contact_id")?,
            "due_at": due_at,
            "overdue_seconds": (now - due_at).num_seconds(),
        }));
    }
    let date = scheduled_at.with_timezone(&tz).date_naive();
    Ok(json!({
        "id": format!("{}/{}", tz.name(), date),
        "timezone": tz.name(),
        "date": date,
        "count": overdue.len(),
        "orders": overdue,
    }))
}
