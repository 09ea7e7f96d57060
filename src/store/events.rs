//! Queries for the outbox (`events`).

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{StoreError, Tx, from_ms, to_ms};
use crate::domain::event::{Event, NewEvent, new_event_id};

/// Inserts an event created at `now` and returns it as stored.
pub async fn insert(tx: &mut Tx, ev: NewEvent, now: DateTime<Utc>) -> Result<Event, StoreError> {
    insert_many(tx, std::slice::from_ref(&ev), now)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("inserted event not returned".into()))
}

/// Inserts `evs`, all created at `now`, 500 rows per statement; returns them
/// stored, in the order given. The fan-out task makes their deliveries.
pub async fn insert_many(
    tx: &mut Tx,
    evs: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    insert_rows(tx, evs, now, false).await
}

/// [`insert_many`] for a caller that creates the events' deliveries in the same
/// transaction: the events are stored already marked fanned out (one statement
/// fewer than marking them after).
pub async fn insert_fanned_out(
    tx: &mut Tx,
    evs: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    insert_rows(tx, evs, now, true).await
}

async fn insert_rows(
    tx: &mut Tx,
    evs: &[NewEvent],
    now: DateTime<Utc>,
    fanned_out: bool,
) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::with_capacity(evs.len());
    for chunk in super::statement_chunks(evs) {
        let mut ids = Vec::with_capacity(chunk.len());
        let sql = format!(
            "INSERT INTO events (id, type, entity_kind, entity_id, created_at, scheduled_at, timer_id, data, fanned_out)
             VALUES {} RETURNING id, seq",
            super::Placeholders::for_tx(tx).rows(chunk.len(), 9)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for ev in chunk {
            let id = new_event_id(now);
            let data =
                serde_json::to_string(&ev.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            q = q
                .bind(id.clone())
                .bind(ev.event_type.clone())
                .bind(ev.entity_kind.clone())
                .bind(ev.entity_id.clone())
                .bind(to_ms(now))
                .bind(ev.scheduled_at.map(to_ms))
                .bind(ev.timer_id)
                .bind(data)
                .bind(i64::from(fanned_out));
            ids.push(id);
        }
        // RETURNING promises no order: match the rows by id.
        let seqs: std::collections::HashMap<String, i64> = q
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("seq")?)))
            .collect::<Result<_, StoreError>>()?;
        for (ev, id) in chunk.iter().zip(ids) {
            let seq = *seqs
                .get(&id)
                .ok_or_else(|| StoreError::Corrupt(format!("event {id} not returned")))?;
            out.push(Event {
                id,
                event_type: ev.event_type.clone(),
                created: now,
                scheduled_at: ev.scheduled_at,
                data: ev.data.clone(),
                seq,
                entity_kind: ev.entity_kind.clone(),
                entity_id: ev.entity_id.clone(),
            });
        }
    }
    Ok(out)
}

pub(crate) const EVENT_COLUMNS: &str =
    "seq, id, type, entity_kind, entity_id, created_at, scheduled_at, data";

pub(crate) fn event_from_row(r: &AnyRow) -> Result<Event, StoreError> {
    let data: String = r.try_get("data")?;
    Ok(Event {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        event_type: r.try_get("type")?,
        entity_kind: r.try_get("entity_kind")?,
        entity_id: r.try_get("entity_id")?,
        created: from_ms(r.try_get("created_at")?)?,
        scheduled_at: r
            .try_get::<Option<i64>, _>("scheduled_at")?
            .map(from_ms)
            .transpose()?,
        data: serde_json::from_str(&data).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

/// Events about one entity, oldest first.
pub async fn for_entity(
    pool: &sqlx::AnyPool,
    entity_kind: &str,
    entity_id: &str,
) -> Result<Vec<Event>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE entity_kind = $1 AND entity_id = $2 ORDER BY seq"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(entity_kind.to_string())
        .bind(entity_id.to_string())
        .fetch_all(pool)
        .await?;
    rows.iter().map(event_from_row).collect()
}

/// Events with `seq` greater than `after`, oldest first (for tests and the admin API).
pub async fn list_after(
    pool: &sqlx::AnyPool,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(event_from_row).collect()
}

pub async fn get(pool: &sqlx::AnyPool, id: &str) -> Result<Option<Event>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(event_from_row).transpose()
}
