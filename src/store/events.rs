//! Queries for the outbox (`events`).

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;

use serde_json::value::RawValue;

use super::{Backend, Placeholders, StoreError, Tx, from_ms, statement_chunks, to_ms};
use crate::domain::event::{Event, NewEvent};

/// Inserts `evs` under `ids` (one each, in order), all created at `now`, in multi-row
/// statements; returns their `seq`s, in order. They are stored fanned out: their
/// deliveries are made in the same transaction (see `crate::outbox`).
///
/// The `seq`s without reading rows back where the backend allows it: on SQLite one
/// statement's rows take consecutive keys (one writer holds the file), so the last key
/// (`last_insert_rowid()`) says them all; PostgreSQL returns them.
pub async fn insert(
    tx: &mut Tx,
    ids: &[String],
    evs: &[NewEvent],
    now: DateTime<Utc>,
) -> Result<Vec<i64>, StoreError> {
    let mut seqs = Vec::with_capacity(evs.len());
    let returning = match tx.backend() {
        Backend::Sqlite => "",
        Backend::Postgres => " RETURNING id, seq",
    };
    for (ids, chunk) in statement_chunks(ids).zip(statement_chunks(evs)) {
        let sql = format!(
            "INSERT INTO events (id, type, entity_kind, entity_id, created_at, scheduled_at, timer_id, data, fanned_out)
             VALUES {}{returning}",
            Placeholders::for_tx(tx).rows(chunk.len(), 9)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, ev) in ids.iter().zip(chunk) {
            q = q
                .bind(id.clone())
                .bind(ev.event_type.clone())
                .bind(ev.entity_kind.clone())
                .bind(ev.entity_id.clone())
                .bind(to_ms(now))
                .bind(ev.scheduled_at.map(to_ms))
                .bind(ev.timer_id)
                .bind(ev.data.get().to_string())
                .bind(1_i64);
        }
        match tx.backend() {
            Backend::Sqlite => {
                q.execute(&mut **tx).await?;
                let last: i64 = sqlx::query_scalar("SELECT last_insert_rowid()")
                    .fetch_one(&mut **tx)
                    .await?;
                let first = last - chunk.len() as i64 + 1;
                seqs.extend(first..=last);
            }
            Backend::Postgres => {
                // RETURNING promises no order: match the rows by id.
                let by_id: std::collections::HashMap<String, i64> = q
                    .fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get("id")?, r.try_get("seq")?)))
                    .collect::<Result<_, StoreError>>()?;
                for id in ids {
                    seqs.push(
                        *by_id.get(id).ok_or_else(|| {
                            StoreError::Corrupt(format!("event {id} not returned"))
                        })?,
                    );
                }
            }
        }
    }
    Ok(seqs)
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
        data: RawValue::from_string(data).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

/// Events not fanned out yet (left by a store written without the outbox's
/// same-transaction fan-out), oldest first; on PostgreSQL locked so that two nodes
/// never take the same batch (the other skips it).
pub async fn unfanned(tx: &mut Tx, limit: i64) -> Result<Vec<Event>, StoreError> {
    let lock = match tx.backend() {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE fanned_out = 0 ORDER BY seq LIMIT $1{lock}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(event_from_row).collect()
}

/// Whether any event waits to be fanned out: a read outside any transaction, so the
/// sweeper takes the writer's turn only when there is work.
pub async fn any_unfanned(pool: &sqlx::AnyPool) -> Result<bool, StoreError> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM events WHERE fanned_out = 0 ORDER BY seq LIMIT 1")
            .fetch_optional(pool)
            .await?;
    Ok(found.is_some())
}

/// Marks the events with these `seq`s fanned out.
pub async fn mark_fanned_out(tx: &mut Tx, seqs: &[i64]) -> Result<(), StoreError> {
    for chunk in seqs.chunks(super::MAX_ROWS) {
        let sql = format!(
            "UPDATE events SET fanned_out = 1 WHERE seq IN ({})",
            Placeholders::for_tx(tx).padded_list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for seq in super::padded(chunk) {
            q = q.bind(*seq);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// How many events wait to be fanned out (a gauge).
pub async fn unfanned_count(pool: &sqlx::AnyPool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE fanned_out = 0")
            .fetch_one(pool)
            .await?,
    )
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
