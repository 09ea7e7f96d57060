//! Firing many due timers in one transaction with a handful of set-based statements
//! instead of several round trips per timer: the timers and their entities are read in
//! bulk, each timer is decided in memory exactly as [`super::fire`] decides one, and the
//! events, entity changes and timer states are written in bulk. Same guarantees: the
//! timers are locked (PostgreSQL rows, SQLite's write lock), every one still pending is
//! settled once, and the whole batch commits or none of it does.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::Row;

use super::digest;
use super::fire::{Fired, check, fire_digest, misfire, to_value};
use super::plan::{Planner, Subject};
use crate::delivery::fanout;
use crate::delivery::handoff::{Handed, Handoff};
use crate::domain::event::{Event, new_event_id};
use crate::domain::item::Item;
use crate::domain::order::Order;
use crate::domain::reservation::Reservation;
use crate::domain::unit_rental::{Invoice, UnitRental};
use crate::store::timers::{self, Timer, TimerState};
use crate::store::{Backend, Store, StoreError, Tx, from_ms, to_ms};
use crate::store::{MAX_ROWS, Placeholders, entities, padded, statement_chunks};

/// Entities of a batch, by id, as they are now (changed in memory as timers fire).
#[derive(Default)]
struct Loaded {
    reservations: HashMap<String, Reservation>,
    orders: HashMap<String, Order>,
    invoices: HashMap<String, Invoice>,
    rentals: HashMap<String, UnitRental>,
    items: HashMap<String, Item>,
    changed_items: BTreeSet<String>,
    changed_rentals: BTreeSet<String>,
}

struct NewRow {
    id: String,
    event_type: String,
    entity_kind: &'static str,
    entity_id: String,
    scheduled_at: DateTime<Utc>,
    timer_id: i64,
    data: String,
}

/// Fires the timers `ids` at `now` in one transaction. See the module doc.
pub async fn fire_many(
    store: &Store,
    planner: &Planner,
    misfire_after: TimeDelta,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<Vec<Fired>, StoreError> {
    let mut tx = store.begin().await?;
    let (outcomes, _) =
        fire_many_in(&mut tx, store, planner, misfire_after, ids, now, None).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// [`fire_many`] in a transaction the caller began (from [`Store::begin`]) and commits.
/// On an error the caller must roll it back: part of the batch may be written.
/// With a `handoff`, the deliveries this node's worker has room for are written
/// claimed by it: after the commit the caller passes them on with
/// [`FiredHandoff::send`] (dropping it instead gives the room back).
pub async fn fire_many_in<'h>(
    tx: &mut Tx,
    store: &Store,
    planner: &Planner,
    misfire_after: TimeDelta,
    ids: &[i64],
    now: DateTime<Utc>,
    handoff: Option<&'h Handoff>,
) -> Result<(Vec<Fired>, Option<FiredHandoff<'h>>), StoreError> {
    let pg = store.backend() == Backend::Postgres;
    let (due, mut loaded) = if pg {
        // Entity locks first, then timer rows: the order ingest takes them in, so the
        // two can never deadlock.
        let (due, bodies) = load_due(tx, ids, now, false).await?;
        if due.is_empty() {
            (due, Loaded::default())
        } else {
            // An invoice's timer changes its unit rental (`overdue`): that rental is
            // locked too, or a PUT of the rental beside this batch would write back
            // what it read before and lose the change.
            let rentals = rentals_of_invoices(&due, &bodies);
            lock_entities(tx, &due, &rentals).await?;
            let (due, bodies) = load_due(tx, ids, now, true).await?;
            let loaded = load_entities(tx, &due, bodies).await?;
            if let Some(r) = loaded.rentals.keys().find(|r| !rentals.contains(*r)) {
                // The invoice moved to another rental between the two reads: the
                // one-by-one fallback fires it with the right lock.
                return Err(StoreError::Corrupt(format!(
                    "unit rental {r} was not locked for firing (its invoice changed meanwhile)"
                )));
            }
            (due, loaded)
        }
    } else {
        // SQLite: BEGIN IMMEDIATE holds the write lock; one read for timers and bodies.
        let (due, bodies) = load_due(tx, ids, now, false).await?;
        let loaded = load_entities(tx, &due, bodies).await?;
        (due, loaded)
    };

    let mut rows = Vec::with_capacity(due.len());
    let mut closes = Vec::new();
    let mut outcome: HashMap<i64, Fired> = HashMap::with_capacity(due.len());
    for timer in &due {
        if timer.entity_kind == digest::ENTITY_KIND {
            // Rare (one a day per zone); it plans its successor, so it goes its own way.
            let fired = fire_digest(tx, planner, misfire_after, timer, now).await?;
            settle_one(tx, timer, &fired, now).await?;
            outcome.insert(timer.id, fired);
            continue;
        }
        match decide(planner, misfire_after, timer, &mut loaded, now)? {
            Decision::Fire {
                kind,
                entity_id,
                data,
            } => {
                let id = new_event_id(now);
                rows.push(NewRow {
                    id: id.clone(),
                    event_type: timer.event_type.clone(),
                    entity_kind: kind,
                    entity_id,
                    scheduled_at: timer.fire_at,
                    timer_id: timer.id,
                    data,
                });
                outcome.insert(
                    timer.id,
                    Fired::Event {
                        event_id: id,
                        late: now - timer.fire_at >= misfire_after,
                        lag: now - timer.fire_at,
                    },
                );
            }
            Decision::Close(fired) => {
                closes.push((timer.id, fired.clone()));
                outcome.insert(timer.id, fired);
            }
        }
    }

    save_entities(tx, &loaded).await?;
    insert_events(tx, &rows, now).await?;
    // Fanned out here, so an event fired costs no fan-out transaction of its own and
    // its deliveries can be claimed as soon as this commits.
    let created = fanout::deliveries_for(
        tx,
        rows.iter().map(|r| (r.id.as_str(), r.event_type.as_str())),
        now,
        handoff,
    )
    .await?;
    mark_fired(tx, &rows, now, misfire_after).await?;
    for (id, fired) in &closes {
        let (state, why) = match fired {
            Fired::Cancelled(w) => (TimerState::Cancelled, w),
            Fired::Skipped(w) => (TimerState::Skipped, w),
            _ => continue,
        };
        if !timers::close(tx, *id, state, why, now).await? {
            return Err(StoreError::Corrupt(format!(
                "timer {id} changed while locked for firing"
            )));
        }
    }
    let outcomes = ids
        .iter()
        .map(|id| outcome.remove(id).unwrap_or(Fired::Nothing))
        .collect();
    let handed = created
        .handed
        .filter(|h| !h.is_empty())
        .map(|handed| FiredHandoff { handed, rows, now });
    Ok((outcomes, handed))
}

/// The deliveries of a fired batch written claimed for this node's worker, with the
/// events they carry, waiting for the batch's commit.
pub struct FiredHandoff<'h> {
    handed: Handed<'h>,
    rows: Vec<NewRow>,
    now: DateTime<Utc>,
}

impl FiredHandoff<'_> {
    /// After the commit: passes the deliveries to the worker, each with its event as
    /// the store now holds it (instants at the store's millisecond precision, `data`
    /// parsed from the text written), so a retry read back renders the same bytes.
    pub fn send(self) {
        let Self { handed, rows, now } = self;
        let created = from_ms(to_ms(now)).ok();
        handed.send(|i| {
            let r = rows.get(i)?;
            Some(Event {
                id: r.id.clone(),
                event_type: r.event_type.clone(),
                created: created?,
                scheduled_at: Some(from_ms(to_ms(r.scheduled_at)).ok()?),
                data: serde_json::from_str(&r.data).ok()?,
                seq: 0,
                entity_kind: r.entity_kind.to_string(),
                entity_id: r.entity_id.clone(),
            })
        });
    }
}

async fn settle_one(
    tx: &mut Tx,
    timer: &Timer,
    fired: &Fired,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let done = match fired {
        Fired::Event { event_id, .. } => {
            timers::mark_fired(tx, timer.id, event_id, None, now).await?
        }
        Fired::Cancelled(w) => timers::close(tx, timer.id, TimerState::Cancelled, w, now).await?,
        Fired::Skipped(w) => timers::close(tx, timer.id, TimerState::Skipped, w, now).await?,
        Fired::Nothing => true,
    };
    if done {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "timer {} changed while locked for firing",
            timer.id
        )))
    }
}

/// Written before the `state` and `fire_at` terms of a statement that names its timers
/// by id: on SQLite a unary `+` keeps a term from choosing an index, so the rows are
/// found by id. Without statistics SQLite otherwise picks `timers_pending (state, …)`
/// and walks every pending timer for each batch (a million with 1M pending).
fn by_id(tx: &Tx) -> &'static str {
    if tx.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME {
        "+"
    } else {
        ""
    }
}

/// The pending timers among `ids` that are due at `now`, oldest first, each with its
/// entity's stored body (None when the entity is gone), in one statement: the rows the
/// batch needs cross from the store once. With `lock` (PostgreSQL, after the entity
/// locks) the timer rows are locked for the rest of the transaction.
async fn load_due(
    tx: &mut Tx,
    ids: &[i64],
    now: DateTime<Utc>,
    lock: bool,
) -> Result<(Vec<Timer>, Vec<Option<String>>), StoreError> {
    if ids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    if tx.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME {
        // No row locks on SQLite: its write lock is held from `BEGIN IMMEDIATE`.
        load_due_as_json(tx, ids, now).await
    } else {
        load_due_bound(tx, ids, now, lock).await
    }
}

/// [`load_due`] with one bind per id and the rows as sqlx returns them (PostgreSQL).
async fn load_due_bound(
    tx: &mut Tx,
    ids: &[i64],
    now: DateTime<Utc>,
    lock: bool,
) -> Result<(Vec<Timer>, Vec<Option<String>>), StoreError> {
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

/// One due timer as [`load_due_as_json`] reads it: the timer's columns, then its
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

/// [`load_due`] on SQLite, the batch's largest read, as one value each way: the ids go
/// in as one JSON array and the rows come back as one JSON array built by SQLite.
/// sqlx's `Any` driver copies every value of every row into a value of its own and
/// decodes it again; ten values per timer made this read ~17 µs per timer in a burst's
/// statement log, ~9 µs as one text. (Writes do not gain the same way: binding rows as
/// one JSON array that `json_each` takes apart made the batch's inserts ~2× slower in
/// SQLite than binding their values one by one.)
async fn load_due_as_json(
    tx: &mut Tx,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<(Vec<Timer>, Vec<Option<String>>), StoreError> {
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

fn parse<T: serde::de::DeserializeOwned>(
    rows: Vec<(String, String)>,
) -> Result<HashMap<String, T>, StoreError> {
    rows.into_iter()
        .map(|(id, body)| {
            serde_json::from_str(&body)
                .map(|v| (id.clone(), v))
                .map_err(|e| StoreError::Corrupt(format!("{id}: {e}")))
        })
        .collect()
}

/// The entities of `due` from the bodies [`load_due`] read, plus the unit rentals of
/// their invoices.
async fn load_entities(
    tx: &mut Tx,
    due: &[Timer],
    bodies: Vec<Option<String>>,
) -> Result<Loaded, StoreError> {
    fn put<T: serde::de::DeserializeOwned>(
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
    let mut loaded = Loaded::default();
    for (t, body) in due.iter().zip(bodies) {
        let Some(body) = body else { continue };
        let id = t.entity_id.as_str();
        match t.entity_kind.as_str() {
            "reservation" => put(&mut loaded.reservations, id, &body)?,
            "order" => put(&mut loaded.orders, id, &body)?,
            "invoice" => put(&mut loaded.invoices, id, &body)?,
            "item" => put(&mut loaded.items, id, &body)?,
            _ => {}
        }
    }
    let rental_ids: BTreeSet<String> = loaded
        .invoices
        .values()
        .map(|i| i.unit_rental_id.clone())
        .collect();
    loaded.rentals = parse(load_bodies(tx, "unit_rentals", &rental_ids).await?)?;
    Ok(loaded)
}

/// The unit rentals of the invoices among `due` (their stored `bodies`, as
/// [`load_due`] returns them).
fn rentals_of_invoices(due: &[Timer], bodies: &[Option<String>]) -> BTreeSet<String> {
    due.iter()
        .zip(bodies)
        .filter(|(t, _)| t.entity_kind == "invoice")
        .filter_map(|(_, body)| serde_json::from_str::<Invoice>(body.as_deref()?).ok())
        .map(|inv| inv.unit_rental_id)
        .collect()
}

enum Decision {
    Fire {
        kind: &'static str,
        entity_id: String,
        /// The event's `data`, as JSON text.
        data: String,
    },
    Close(Fired),
}

/// One timer, decided as `fire::decide` would, on the entities in memory.
fn decide(
    planner: &Planner,
    misfire_after: TimeDelta,
    timer: &Timer,
    loaded: &mut Loaded,
    now: DateTime<Utc>,
) -> Result<Decision, StoreError> {
    let close = |f: Fired| Ok(Decision::Close(f));
    let Some(rule) = planner.rule(&timer.rule).cloned() else {
        return close(Fired::Cancelled("rule no longer configured".into()));
    };
    let id = timer.entity_id.as_str();
    macro_rules! guard {
        ($subject:expr) => {
            if let Some(c) = check(planner, &rule, $subject, timer) {
                return close(c);
            }
            if let Some(m) = misfire(&rule.misfire, misfire_after, timer, now) {
                return close(m);
            }
        };
    }
    match timer.entity_kind.as_str() {
        "reservation" => {
            let Some(r) = loaded.reservations.get(id) else {
                return close(Fired::Cancelled("reservation no longer exists".into()));
            };
            guard!(Subject::Reservation(r));
            Ok(Decision::Fire {
                kind: "reservation",
                entity_id: r.id.clone(),
                data: to_json(r)?,
            })
        }
        "order" => {
            let Some(o) = loaded.orders.get(id) else {
                return close(Fired::Cancelled("order no longer exists".into()));
            };
            guard!(Subject::Order(o));
            Ok(Decision::Fire {
                kind: "order",
                entity_id: o.id.clone(),
                data: to_json(o)?,
            })
        }
        "invoice" => {
            let Some(inv) = loaded.invoices.get(id) else {
                return close(Fired::Cancelled("invoice no longer exists".into()));
            };
            let Some(rental) = loaded.rentals.get_mut(&inv.unit_rental_id) else {
                return close(Fired::Cancelled("unit rental no longer exists".into()));
            };
            guard!(Subject::Invoice(inv, rental));
            if rule.event_type == "unitRental.markOverdue" && !rental.overdue {
                rental.overdue = true;
                rental.updated_at = now;
                loaded.changed_rentals.insert(rental.id.clone());
            }
            let mut data = to_value(&*rental)?;
            if let Value::Object(m) = &mut data {
                m.insert("invoice".into(), json!(inv));
            }
            Ok(Decision::Fire {
                kind: "unitRental",
                entity_id: rental.id.clone(),
                data: to_json(&data)?,
            })
        }
        "item" => {
            let Some(item) = loaded.items.get_mut(id) else {
                return close(Fired::Cancelled("item no longer exists".into()));
            };
            guard!(Subject::Item(item));
            if rule.event_type == "item.expire" {
                item.expired = true;
                item.updated_at = now;
                loaded.changed_items.insert(item.id.clone());
            }
            Ok(Decision::Fire {
                kind: "item",
                entity_id: item.id.clone(),
                data: to_json(&*item)?,
            })
        }
        other => close(Fired::Cancelled(format!("unknown entity kind `{other}`"))),
    }
}

/// JSON text of an event's data, serialised straight from the entity.
fn to_json(v: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Entity columns and body of the items and rentals whose state firing changed, in
/// multi-row statements (one per 500 rows instead of one per entity).
async fn save_entities(tx: &mut Tx, loaded: &Loaded) -> Result<(), StoreError> {
    let items: Vec<&Item> = loaded
        .changed_items
        .iter()
        .filter_map(|id| loaded.items.get(id))
        .collect();
    entities::save_items(tx, &items).await?;
    let rentals: Vec<&UnitRental> = loaded
        .changed_rentals
        .iter()
        .filter_map(|id| loaded.rentals.get(id))
        .collect();
    entities::save_unit_rentals(tx, &rentals).await
}

/// PostgreSQL: the advisory lock of every entity of `due` (the lock ingest takes, see
/// [`Store::lock_entity`]), in one statement per 1,000 entities instead of one round
/// trip each. Always in the same (sorted) order, so two batches cannot deadlock:
/// PostgreSQL evaluates volatile select-list functions after the ORDER BY.
async fn lock_entities(
    tx: &mut Tx,
    due: &[Timer],
    rentals: &BTreeSet<String>,
) -> Result<(), StoreError> {
    let keys: BTreeSet<String> = due
        .iter()
        .map(|t| format!("{}/{}", t.entity_kind, t.entity_id))
        .chain(rentals.iter().map(|r| format!("unitRental/{r}")))
        .collect();
    let keys: Vec<String> = keys.into_iter().collect();
    for chunk in statement_chunks(&keys) {
        let values = (1..=chunk.len())
            .map(|i| format!("(${i})"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))::text AS locked
             FROM (VALUES {values}) AS v(k) ORDER BY k"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for k in chunk {
            q = q.bind(k.clone());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Multi-row INSERTs (see [`statement_chunks`]).
async fn insert_events(tx: &mut Tx, rows: &[NewRow], now: DateTime<Utc>) -> Result<(), StoreError> {
    for chunk in statement_chunks(rows) {
        let sql = format!(
            "INSERT INTO events (id, type, entity_kind, entity_id, created_at, scheduled_at, timer_id, data, fanned_out) VALUES {}",
            Placeholders::for_tx(tx).rows(chunk.len(), 9)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(r.id.clone())
                .bind(r.event_type.clone())
                .bind(r.entity_kind)
                .bind(r.entity_id.clone())
                .bind(to_ms(now))
                .bind(to_ms(r.scheduled_at))
                .bind(r.timer_id)
                .bind(r.data.clone())
                // Fanned out in this same transaction (see `fire_many_in`).
                .bind(1_i64);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Marks the fired timers with their events (found by `timer_id`), noting lateness.
async fn mark_fired(
    tx: &mut Tx,
    rows: &[NewRow],
    now: DateTime<Utc>,
    misfire_after: TimeDelta,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(MAX_ROWS) {
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
        let ids: Vec<i64> = chunk.iter().map(|r| r.timer_id).collect();
        for id in padded(&ids) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::timers::NewTimer;

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
        let (json_due, json_bodies) = load_due_as_json(&mut tx, &ids, now).await.expect("json");
        let (bound_due, bound_bodies) = load_due_bound(&mut tx, &ids, now, false)
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
