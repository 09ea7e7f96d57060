//! Queries for `alerts`: written in the transaction that changes an endpoint's health,
//! sent afterwards by the alert worker, retried a few times when sending fails.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{StoreError, Tx, from_ms, to_ms};

/// An alert waiting to be sent.
#[derive(Clone, Debug)]
pub struct PendingAlert {
    pub id: i64,
    pub endpoint_id: String,
    pub kind: String,
    pub detail: String,
    pub created_at: DateTime<Utc>,
    pub tries: i64,
    /// As read; [`claim`] succeeds only if nobody changed it since.
    pub next_try_at: i64,
}

pub async fn insert(
    tx: &mut Tx,
    endpoint_id: &str,
    kind: &str,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO alerts (endpoint_id, kind, detail, created_at, tries, next_try_at)
         VALUES ($1, $2, $3, $4, 0, $4)",
    )
    .bind(endpoint_id.to_string())
    .bind(kind.to_string())
    .bind(detail.to_string())
    .bind(to_ms(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Unsent alerts due at `now`, oldest first.
pub async fn due(
    pool: &sqlx::AnyPool,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<PendingAlert>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, endpoint_id, kind, detail, created_at, tries, next_try_at FROM alerts
         WHERE sent_at IS NULL AND next_try_at <= $1 ORDER BY id LIMIT $2",
    )
    .bind(to_ms(now))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PendingAlert {
                id: r.try_get("id")?,
                endpoint_id: r.try_get("endpoint_id")?,
                kind: r.try_get("kind")?,
                detail: r.try_get("detail")?,
                created_at: from_ms(r.try_get("created_at")?)?,
                tries: r.try_get("tries")?,
                next_try_at: r.try_get("next_try_at")?,
            })
        })
        .collect()
}

/// Takes the alert for sending until `until` (so that another node does not send it
/// too). False when someone else took it first.
pub async fn claim(
    store: &super::Store,
    alert: &PendingAlert,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE alerts SET next_try_at = $3 WHERE id = $1 AND sent_at IS NULL AND next_try_at = $2",
    )
    .bind(alert.id)
    .bind(alert.next_try_at)
    .bind(to_ms(until));
    let _writer = store.exclusive().await;
    let done = done.execute(store.pool()).await?;
    Ok(done.rows_affected() > 0)
}

/// The earliest retry of an unsent alert.
pub async fn next_try(pool: &sqlx::AnyPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    let at: Option<i64> =
        sqlx::query_scalar("SELECT MIN(next_try_at) FROM alerts WHERE sent_at IS NULL")
            .fetch_one(pool)
            .await?;
    at.map(from_ms).transpose()
}

/// Marks the alert sent (`next_try_at` None) or schedules another try.
pub async fn finish(
    store: &super::Store,
    id: i64,
    now: DateTime<Utc>,
    next_try_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let query = match next_try_at {
        None => sqlx::query("UPDATE alerts SET sent_at = $2, tries = tries + 1 WHERE id = $1")
            .bind(id)
            .bind(to_ms(now)),
        Some(at) => {
            sqlx::query("UPDATE alerts SET next_try_at = $2, tries = tries + 1 WHERE id = $1")
                .bind(id)
                .bind(to_ms(at))
        }
    };
    let _writer = store.exclusive().await;
    query.execute(store.pool()).await?;
    Ok(())
}
