//! The daily overdue digest (`order.overdue_digest`): one timer per zone per day, fired
//! through the same exactly-once machinery as every other timer (see
//! [`super::decide`]). Firing a digest plans the next one in the same transaction, so
//! the chain never breaks; a digest missed during downtime is skipped (yesterday's list
//! is stale) and the next one is planned.

use chrono::{DateTime, Days, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use crate::store::firing::{DIGEST_KIND, OverdueOrder};
use crate::store::timers::{self, NewTimer};
use crate::store::{Store, StoreError};

pub const EVENT_TYPE: &str = "order.overdue_digest";
pub const ENTITY_KIND: &str = DIGEST_KIND;

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

/// The timer of the first digest for `tz` after `after`.
pub fn next(tz: Tz, at: NaiveTime, after: DateTime<Utc>) -> NewTimer<'static> {
    let fire_at = next_occurrence(tz, at, after);
    NewTimer {
        entity_kind: ENTITY_KIND,
        entity_id: tz.name(),
        rule: EVENT_TYPE,
        event_type: EVENT_TYPE,
        anchor_at: fire_at,
        fire_at,
    }
}

/// Plans the next digest of every zone that has none pending; called when the
/// scheduler starts.
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
            timers::insert_pending(&mut tx, &next(*tz, at, now), now).await?;
        }
    }
    tx.commit().await
}

/// The digest's data: every check-out still out past its due date at `now`.
pub fn data(
    tz: Tz,
    overdue: &[OverdueOrder],
    scheduled_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Value {
    let orders: Vec<Value> = overdue
        .iter()
        .map(|o| {
            json!({
                "id": o.id,
                "contact_id": o.contact_id,
                "due_at": o.due_at,
                "overdue_seconds": (now - o.due_at).num_seconds(),
            })
        })
        .collect();
    let date = scheduled_at.with_timezone(&tz).date_naive();
    json!({
        "id": format!("{}/{}", tz.name(), date),
        "timezone": tz.name(),
        "date": date,
        "count": orders.len(),
        "orders": orders,
    })
}
