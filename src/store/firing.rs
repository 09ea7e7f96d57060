//! What firing a batch of due timers reads and writes, in a handful of set-based
//! statements instead of several round trips per timer: [`load_due`] reads the due
//! timers with their entities (locking them on PostgreSQL), [`settle`] writes what the
//! scheduler decided (timer states, entities changed by firing). The events go through
//! the outbox in between.
//!
//! Locks: on SQLite `BEGIN IMMEDIATE` holds the write lock for the whole transaction.
//! On PostgreSQL the entities' advisory locks are taken first, then the timer rows
//! (`FOR UPDATE`): the order ingest takes them in, so the two never deadlock.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use sqlx::Row;

use super::timers::{Timer, TimerState};
use super::{Backend, MAX_ROWS, Placeholders, StoreError, Tx, entities, from_ms, padded, to_ms};
use crate::domain::item::Item;
use crate::domain::order::Order;
use crate::domain::reservation::Reservation;
use crate::domain::unit_rental::{Invoice, UnitRental};

/// The entity kind of the daily digest's timers; their entity id is the zone's name.
pub const DIGEST_KIND: &str = "digest";

/// A batch of due timers and everything firing them reads.
#[derive(Debug, Default)]
pub struct DueBatch {
    /// The pending timers among those asked for that are due, oldest first.
    pub timers: Vec<Timer>,
    pub reservations: HashMap<String, Reservation>,
    pub orders: HashMap<String, Order>,
    pub invoices: HashMap<String, Invoice>,
    /// The unit rentals of the invoices.
    pub rentals: HashMap<String, UnitRental>,
    pub items: HashMap<String, Item>,
    /// Every order still out past its due date, when a digest is among the timers.
    pub overdue: Option<Vec<OverdueOrder>>,
}

/// An order checked out and past its due date (what the daily digest lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverdueOrder {
    pub id: String,
    pub contact_id: String,
    pub due_at: DateTime<Utc>,
}

/// The pending timers among `ids` that are due at `now`, with their entities as they
/// are now, locked for the rest of `tx`.
pub async fn load_due(
    tx: &mut Tx,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<DueBatch, StoreError> {
    let (timers, bodies) = match tx.backend() {
        // One read for timers and bodies: the write lock is held from `BEGIN IMMEDIATE`.
        Backend::Sqlite => read_due_as_json(tx, ids, now).await?,
        Backend::Postgres => {
            let (timers, bodies) = read_due_bound(tx, ids, now, false).await?;
            if timers.is_empty() {
                return Ok(DueBatch::default());
            }
            // An invoice's timer changes its unit rental (`overdue`): that rental is
            // locked too, or a PUT of the rental beside this batch would write back
            // what it read before and lose the change.
            let rentals = rentals_of_invoices(&timers, &bodies);
            lock_entities(tx, &timers, &rentals).await?;
            let (timers, bodies) = read_due_bound(tx, ids, now, true).await?;
            let batch = with_entities(tx, timers, bodies, now).await?;
            if let Some(r) = batch.rentals.keys().find(|r| !rentals.contains(*r)) {
                // The invoice moved to another rental between the two reads: firing
                // one by one takes the right lock.
                return Err(StoreError::Corrupt(format!(
                    "unit rental {r} was not locked for firing (its invoice changed meanwhile)"
                )));
            }
            return Ok(batch);
        }
    };
    with_entities(tx, timers, bodies, now).await
}

/// What firing decided, to be written: the timers fired (their events, found by
/// `timer_id`, are in the same transaction), those closed, the entities firing changed
/// and the timers it planned (the next digest).
#[derive(Debug, Default)]
pub struct Settled<'a> {
    pub fired: Vec<i64>,
    pub closed: Vec<(i64, TimerState, String)>,
    pub items: Vec<&'a Item>,
    pub rentals: Vec<&'a UnitRental>,
    pub planned: Vec<super::timers::NewTimer<'a>>,
}

/// Writes what firing decided. Fails if any timer was no longer pending (impossible
/// while the locks hold): the caller must then roll back.
pub async fn settle(
    tx: &mut Tx,
    s: &Settled<'_>,
    now: DateTime<Utc>,
    misfire_after: TimeDelta,
) -> Result<(), StoreError> {
    entities::save_items(tx, &s.items).await?;
    entities::save_unit_rentals(tx, &s.rentals).await?;
    mark_fired(tx, &s.fired, now, misfire_after).await?;
    for (id, state, why) in &s.closed {
        if !super::timers::close(tx, *id, *state, why, now).await? {
            return Err(StoreError::Corrupt(format!(
                "timer {id} changed while locked for firing"
            )));
        }
    }
    for t in &s.planned {
        super::timers::insert_pending(tx, t, now).await?;
    }
    Ok(())
}

/// Marks the fired timers with their events (found by `timer_id`), noting lateness.
async fn mark_fired(
    tx: &mut Tx,
    ids: &[i64],
    now: DateTime<Utc>,
    misfire_after: TimeDelta,
) -> Result<(), StoreError> {
    for chunk in ids.chunks(MAX_ROWS) {
        let mut p = Placeholders::for_tx(tx);
        let (now1, now2, late, now3) = (p.one(), p.one(), p.one(), p.one());
        let sql = format!(
            "UPDATE timers SET state = 'fired', updated_at = {now1},
                 event_id = (SELECT e.id FROM events e WHERE e.timer_id = timers.id),
                 reason = CASE WHEN {now2} - fire_at >= {late}
                     THEN 'fired late by ' || CAST(({now3} - fire_at) / 1000 AS TEXT) || 's (misfire policy)'
                     ELSE NULL END
             WHERE {}state = 'pending' AND id IN ({})",
            by_id(tx),
            p.padded_list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_ms(now))
            .bind(to_ms(now))
            .bind(misfire_after.num_milliseconds())
            .bind(to_ms(now));
        for id in padded(chunk) {
            q = q.bind(*id);
        }
        let n = q.execute(&mut **tx).await?.rows_affected();
        if n != chunk.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "{} of {} timers changed while locked for firing",
                chunk.len() as u64 - n,
                chunk.len()
            )));
        }
    }
    Ok(())
}

/// Written before the `state` and `fire_at` terms of a statement that names its timers
/// by id: on SQLite a unary `+` keeps a term from choosing an index, so the rows are
/// found by id. Without statistics SQLite otherwise picks `timers_pending` (the pending
/// timers by instant) and walks every due timer for each batch (a million with 1M due).
fn by_id(tx: &Tx) -> &'static str {
    match tx.backend() {
        Backend::Sqlite => "+",
        Backend::Postgres => "",
    }
}

/// [`load_due`]'s read with one bind per id and the rows as sqlx returns them
/// (PostgreSQL). With `lock` (after the entity locks) the timer rows are locked for the
/// rest of the transaction.
async fn read_due_bound(
    tx: &mut Tx,
    ids: &[i64],
    now: DateTime<Utc>,
    lock: bool,
) -> Result<(Vec<Timer>, Vec<Option<String>>), StoreError> {
    if ids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut p = Placeholders::for_tx(tx);
    let now_p = p.one();
    let by_id = by_id(tx);
    let sql = format!(
        "SELECT t.id, t.entity_kind, t.entity_id, t.rule, t.event_type, t.anchor_at, t.fire_at,
                t.created_at, t.updated_at, COALESCE(r.body, o.body, i.body, it.body) AS body
         FROM timers t
         LEFT JOIN reservations r ON t.entity_kind = 'reservation' AND r.id = t.entity_id
         LEFT JOIN orders o ON t.entity_kind = 'order' AND o.id = t.entity_id
         LEFT JOIN invoices i ON t.entity_kind = 'invoice' AND i.id = t.entity_id
         LEFT JOIN items it ON t.entity_kind = 'item' AND it.id = t.entity_id
         WHERE {by_id}t.state = 'pending' AND {by_id}t.fire_at <= {now_p} AND t.id IN ({})
         ORDER BY t.fire_at, t.id{}",
        p.padded_list(ids.len()),
        if lock { " FOR UPDATE OF t" } else { "" }
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(to_ms(now));
    for id in padded(ids) {
        q = q.bind(*id);
    }
    let rows = q.fetch_all(&mut **tx).await?;
    let mut due = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    for r in &rows {
        due.push(Timer {
            id: r.try_get("id")?,
            entity_kind: r.try_get("entity_kind")?,
            entity_id: r.try_get("entity_id")?,
            rule: r.try_get("rule")?,
            event_type: r.try_get("event_type")?,
            anchor_at: from_ms(r.try_get("anchor_at")?)?,
            fire_at: from_ms(r.try_get("fire_at")?)?,
            // Selected as pending; the rest is not read by firing.
            state: TimerState::Pending,
            reason: None,
            event_id: None,
            created_at: from_ms(r.try_get("created_at")?)?,
            updated_at: from_ms(r.try_get("updated_at")?)?,
        });
        bodies.push(r.try_get("body")?);
    }
    Ok((due, bodies))
}

/// One due timer as [`read_due_as_json`] reads it: the timer's columns, then its
/// entity's body (JSON itself, so it is not escaped into a string and back).
#[derive(serde::Deserialize)]
struct DueRow<'a>(
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    #[serde(borrow)] Option<&'a serde_json::value::RawValue>,
);

/// [`load_due`]'s read on SQLite, the batch's largest, as one value each way: the ids
/// go in as one JSON array and the rows come back as one JSON array built by SQLite.
/// sqlx's `Any` driver copies every value of every row into a value of its own and
/// decodes it again; ten values per timer cost about twice as much that way as one
/// text. (Writes do not gain the same way: binding rows as one JSON array that
/// `json_each` takes apart makes inserts slower in SQLite than binding their values
/// one by one.)
async fn read_due_as_json(
    tx: &mut Tx,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<(Vec<Timer>, Vec<Option<String>>), StoreError> {
    if ids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let ids = serde_json::to_string(ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let text: Option<String> = sqlx::query_scalar(
        "SELECT json_group_array(json_array(t.id, t.entity_kind, t.entity_id, t.rule,
                    t.event_type, t.anchor_at, t.fire_at, t.created_at, t.updated_at,
                    json(COALESCE(r.body, o.body, i.body, it.body))))
         FROM timers t
         LEFT JOIN reservations r ON t.entity_kind = 'reservation' AND r.id = t.entity_id
         LEFT JOIN orders o ON t.entity_kind = 'order' AND o.id = t.entity_id
         LEFT JOIN invoices i ON t.entity_kind = 'invoice' AND i.id = t.entity_id
         LEFT JOIN items it ON t.entity_kind = 'item' AND it.id = t.entity_id
         WHERE +t.state = 'pending' AND +t.fire_at <= ?
           AND t.id IN (SELECT value FROM json_each(?))",
    )
    .bind(to_ms(now))
    .bind(ids)
    .fetch_one(&mut **tx)
    .await?;
    let text = text.unwrap_or_else(|| "[]".into());
    let mut rows: Vec<DueRow<'_>> =
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("due timers: {e}")))?;
    // Oldest first, as the statement for PostgreSQL orders them.
    rows.sort_unstable_by_key(|r| (r.6, r.0));
    let mut due = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    for r in rows {
        due.push(Timer {
            id: r.0,
            entity_kind: r.1,
            entity_id: r.2,
            rule: r.3,
            event_type: r.4,
            anchor_at: from_ms(r.5)?,
            fire_at: from_ms(r.6)?,
            // Selected as pending; the rest is not read by firing.
            state: TimerState::Pending,
            reason: None,
            event_id: None,
            created_at: from_ms(r.7)?,
            updated_at: from_ms(r.8)?,
        });
        bodies.push(r.9.map(|b| b.get().to_string()));
    }
    Ok((due, bodies))
}

/// The batch of `timers` with their entities from the `bodies` read beside them, the
/// unit rentals of their invoices, and the overdue orders when a digest is due.
async fn with_entities(
    tx: &mut Tx,
    timers: Vec<Timer>,
    bodies: Vec<Option<String>>,
    now: DateTime<Utc>,
) -> Result<DueBatch, StoreError> {
    fn put<T: DeserializeOwned>(
        map: &mut HashMap<String, T>,
        id: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        if !map.contains_key(id) {
            let v = serde_json::from_str(body)
                .map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))?;
            map.insert(id.to_string(), v);
        }
        Ok(())
    }
    let mut batch = DueBatch::default();
    for (t, body) in timers.iter().zip(bodies) {
        let Some(body) = body else { continue };
        let id = t.entity_id.as_str();
        match t.entity_kind.as_str() {
            "reservation" => put(&mut batch.reservations, id, &body)?,
            "order" => put(&mut batch.orders, id, &body)?,
            "invoice" => put(&mut batch.invoices, id, &body)?,
            "item" => put(&mut batch.items, id, &body)?,
            _ => {}
        }
    }
    let rental_ids: BTreeSet<String> = batch
        .invoices
        .values()
        .map(|i| i.unit_rental_id.clone())
        .collect();
    for (id, body) in load_bodies(tx, "unit_rentals", &rental_ids).await? {
        put(&mut batch.rentals, &id, &body)?;
    }
    if timers.iter().any(|t| t.entity_kind == DIGEST_KIND) {
        batch.overdue = Some(overdue_orders(tx, now).await?);
    }
    batch.timers = timers;
    Ok(batch)
}

async fn load_bodies(
    tx: &mut Tx,
    table: &str,
    ids: &BTreeSet<String>,
) -> Result<Vec<(String, String)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id, body FROM {table} WHERE id IN ({})",
        Placeholders::for_tx(tx).padded_list(ids.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    let ids: Vec<&String> = ids.iter().collect();
    for id in padded(&ids) {
        q = q.bind((*id).clone());
    }
    q.fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("id")?, r.try_get("body")?)))
        .collect()
}

/// Every check-out still out past its due date at `now`, oldest due first.
async fn overdue_orders(tx: &mut Tx, now: DateTime<Utc>) -> Result<Vec<OverdueOrder>, StoreError> {
    let rows = sqlx::query("SELECT id, contact_id, due_at FROM orders WHERE status = 'checked_out' AND due_at < $1 ORDER BY due_at, id")
        .bind(to_ms(now))
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(OverdueOrder {
                id: r.try_get("id")?,
                contact_id: r.try_get("contact_id")?,
                due_at: from_ms(r.try_get("due_at")?)?,
            })
        })
        .collect()
}

/// The unit rentals of the invoices among `timers` (their stored `bodies`).
fn rentals_of_invoices(timers: &[Timer], bodies: &[Option<String>]) -> BTreeSet<String> {
    timers
        .iter()
        .zip(bodies)
        .filter(|(t, _)| t.entity_kind == "invoice")
        .filter_map(|(_, body)| serde_json::from_str::<Invoice>(body.as_deref()?).ok())
        .map(|inv| inv.unit_rental_id)
        .collect()
}

/// PostgreSQL: the advisory lock of every entity of `timers` (the lock ingest takes,
/// see [`super::Store::lock_entities`]), in one statement per 512 entities instead of
/// one round trip each. Always in the same (sorted) order, so two batches cannot
/// deadlock: PostgreSQL evaluates volatile select-list functions after the ORDER BY.
async fn lock_entities(
    tx: &mut Tx,
    timers: &[Timer],
    rentals: &BTreeSet<String>,
) -> Result<(), StoreError> {
    let keys: BTreeSet<String> = timers
        .iter()
        .map(|t| format!("{}/{}", t.entity_kind, t.entity_id))
        .chain(rentals.iter().map(|r| format!("unitRental/{r}")))
        .collect();
    super::lock_keys(tx, keys).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::timers::{self, NewTimer};
    use serde_json::json;

    /// The JSON read (SQLite) returns what the read with one bind per id returns: the
    /// due pending timers among the ids, oldest first, a missing entity as `None`.
    #[tokio::test]
    async fn due_timers_read_as_json_match_the_bound_read() {
        let (_dir, store, _) = crate::store::temp_sqlite_store().await;
        let t0 = from_ms(1_800_000_000_000).expect("instant");
        let s = TimeDelta::seconds;
        let mut tx = store.begin().await.expect("begin");
        let item = Item {
            id: "drill \"7\"".into(),
            name: "Drill ✓".into(),
            expires_at: Some(t0 + s(2)),
            timezone: None,
            expired: false,
            data: json!({"shelf": "B2", "tags": ["a", "b"]}),
            created_at: t0,
            updated_at: t0,
        };
        entities::save_item(&mut tx, &item).await.expect("item");
        let plan = |entity_id: &'static str, rule: &'static str, fire_at| NewTimer {
            entity_kind: "item",
            entity_id,
            rule,
            event_type: "item.expire",
            anchor_at: t0 + s(2),
            fire_at,
        };
        let mut ids = Vec::new();
        for t in [
            plan("drill \"7\"", "late", t0 + s(2)),
            plan("gone", "a", t0 + s(1)),
            plan("drill \"7\"", "b", t0 + s(1)),
            plan("drill \"7\"", "not-due", t0 + s(10)),
        ] {
            let id = timers::insert_pending(&mut tx, &t, t0)
                .await
                .expect("timer");
            ids.push(id.expect("new timer"));
        }
        ids.push(999_999);
        let now = t0 + s(5);
        let (json_due, json_bodies) = read_due_as_json(&mut tx, &ids, now).await.expect("json");
        let (bound_due, bound_bodies) = read_due_bound(&mut tx, &ids, now, false)
            .await
            .expect("bound");
        assert_eq!(
            json_due.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![ids[1], ids[2], ids[0]],
            "due and pending only, by (fire_at, id)"
        );
        assert_eq!(json_due, bound_due);
        assert_eq!(json_bodies[0], None, "the timer whose item is gone");
        let parsed = |b: &Option<String>| -> Option<Item> {
            b.as_deref()
                .map(|b| serde_json::from_str(b).expect("item body"))
        };
        assert_eq!(
            json_bodies.iter().map(parsed).collect::<Vec<_>>(),
            bound_bodies.iter().map(parsed).collect::<Vec<_>>()
        );
        assert_eq!(parsed(&json_bodies[1]).expect("body").name, "Drill ✓");
        tx.rollback().await.expect("rollback");
        store.close().await;
    }
}
