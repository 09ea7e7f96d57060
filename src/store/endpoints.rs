//! Queries for `endpoints`: create, read, change, delete, enable/disable, health and
//! secret rotation.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{StoreError, Tx, from_ms, to_ms};
use crate::domain::endpoint::{Endpoint, Health, Settings};

const COLUMNS: &str = "id, name, url, topics, format, envelope, scheme, signature_header, secret, \
     previous_secret, previous_secret_until, headers, retry_schedule, on_exhausted, timeout_ms, rate_limit, \
     alert_emails, enabled, disabled_reason, failing_since, failed_attempts, failed_deliveries, \
     circuit_open_until, alert_state, created_at, updated_at, ordering, ordering_on_failure";

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(corrupt)
}

fn opt_ms(r: &AnyRow, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    r.try_get::<Option<i64>, _>(col)?.map(from_ms).transpose()
}

fn schedule_ms(s: &[Duration]) -> Vec<u64> {
    s.iter()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .collect()
}

fn from_row(r: &AnyRow) -> Result<Endpoint, StoreError> {
    let topics: String = r.try_get("topics")?;
    let headers: String = r.try_get("headers")?;
    let schedule: String = r.try_get("retry_schedule")?;
    let emails: String = r.try_get("alert_emails")?;
    let schedule: Vec<u64> = serde_json::from_str(&schedule).map_err(corrupt)?;
    let settings = Settings {
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        topics: serde_json::from_str(&topics).map_err(corrupt)?,
        format: r.try_get::<String, _>("format")?.parse().map_err(corrupt)?,
        envelope: r
            .try_get::<String, _>("envelope")?
            .parse()
            .map_err(corrupt)?,
        scheme: r.try_get::<String, _>("scheme")?.parse().map_err(corrupt)?,
        signature_header: r.try_get("signature_header")?,
        headers: serde_json::from_str::<BTreeMap<String, String>>(&headers).map_err(corrupt)?,
        retry_schedule: schedule.into_iter().map(Duration::from_millis).collect(),
        on_exhausted: r
            .try_get::<String, _>("on_exhausted")?
            .parse()
            .map_err(corrupt)?,
        timeout_ms: u64::try_from(r.try_get::<i64, _>("timeout_ms")?).map_err(corrupt)?,
        rate_limit: r
            .try_get::<Option<i64>, _>("rate_limit")?
            .map(u32::try_from)
            .transpose()
            .map_err(corrupt)?,
        alert_emails: serde_json::from_str(&emails).map_err(corrupt)?,
        ordering: r
            .try_get::<String, _>("ordering")?
            .parse()
            .map_err(corrupt)?,
        ordering_on_failure: r
            .try_get::<String, _>("ordering_on_failure")?
            .parse()
            .map_err(corrupt)?,
    };
    Ok(Endpoint {
        id: r.try_get("id")?,
        settings,
        secret: r.try_get("secret")?,
        previous_secret: r.try_get("previous_secret")?,
        previous_secret_until: opt_ms(r, "previous_secret_until")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        disabled_reason: r.try_get("disabled_reason")?,
        health: Health {
            failing_since: opt_ms(r, "failing_since")?,
            failed_attempts: r.try_get("failed_attempts")?,
            failed_deliveries: r.try_get("failed_deliveries")?,
            circuit_open_until: opt_ms(r, "circuit_open_until")?,
            alert_state: r.try_get("alert_state")?,
        },
        created_at: from_ms(r.try_get("created_at")?)?,
        updated_at: from_ms(r.try_get("updated_at")?)?,
    })
}

/// A fresh endpoint id: `ep_` and a random UUID.
pub fn new_id() -> String {
    format!("ep_{}", uuid::Uuid::new_v4().simple())
}

pub async fn insert(
    tx: &mut Tx,
    id: &str,
    s: &Settings,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let q = sqlx::query(
        "INSERT INTO endpoints (id, secret, name, url, topics, format, envelope, scheme,
             signature_header, headers, retry_schedule, timeout_ms, rate_limit, alert_emails,
             updated_at, on_exhausted, ordering, ordering_on_failure, created_at, enabled,
             alert_state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
             $18, $15, 1, 'ok')",
    )
    .bind(id.to_string())
    .bind(secret.to_string());
    bind_settings(q, s, now)?.execute(&mut **tx).await?;
    Ok(())
}

pub async fn update_settings(
    tx: &mut Tx,
    id: &str,
    s: &Settings,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let q = sqlx::query(
        "UPDATE endpoints SET name = $2, url = $3, topics = $4, format = $5, envelope = $6,
             scheme = $7, signature_header = $8, headers = $9, retry_schedule = $10,
             timeout_ms = $11, rate_limit = $12, alert_emails = $13, updated_at = $14,
             on_exhausted = $15, ordering = $16, ordering_on_failure = $17
         WHERE id = $1",
    )
    .bind(id.to_string());
    bind_settings(q, s, now)?.execute(&mut **tx).await?;
    Ok(())
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, <sqlx::Any as sqlx::Database>::Arguments>;

/// Binds an endpoint's settings and `now` (its `updated_at`) in the order both
/// [`insert`] and [`update_settings`] name them: name, url, topics, format, envelope,
/// scheme, signature header, headers, retry schedule, timeout, rate limit, alert
/// emails, now, on-exhausted.
fn bind_settings<'q>(
    q: AnyQuery<'q>,
    s: &Settings,
    now: DateTime<Utc>,
) -> Result<AnyQuery<'q>, StoreError> {
    Ok(q.bind(s.name.clone())
        .bind(s.url.clone())
        .bind(json(&s.topics)?)
        .bind(s.format.as_str())
        .bind(s.envelope.as_str())
        .bind(s.scheme.as_str())
        .bind(s.signature_header.clone())
        .bind(json(&s.headers)?)
        .bind(json(&schedule_ms(&s.retry_schedule))?)
        .bind(i64::try_from(s.timeout_ms).map_err(corrupt)?)
        .bind(s.rate_limit.map(i64::from))
        .bind(json(&s.alert_emails)?)
        .bind(to_ms(now))
        .bind(s.on_exhausted.as_str())
        .bind(s.ordering.as_str())
        .bind(s.ordering_on_failure.as_str()))
}

pub async fn get(
    exec: impl sqlx::Executor<'_, Database = sqlx::Any>,
    id: &str,
) -> Result<Option<Endpoint>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM endpoints WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(exec)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The endpoints among `ids` (for a claimed batch of deliveries).
pub async fn get_many(store: &super::Store, ids: &[String]) -> Result<Vec<Endpoint>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(super::MAX_ROWS) {
        let sql = format!(
            "SELECT {COLUMNS} FROM endpoints WHERE id IN ({})",
            super::Placeholders::for_backend(store.backend()).padded_list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in super::padded(chunk) {
            q = q.bind(id.clone());
        }
        for r in q.fetch_all(store.pool()).await? {
            out.push(from_row(&r)?);
        }
    }
    Ok(out)
}

/// The endpoint, locked until `tx` ends (SQLite's `BEGIN IMMEDIATE` already holds the
/// write lock). On PostgreSQL `FOR NO KEY UPDATE`: it excludes other changes to the row
/// but not the key-share locks that inserting deliveries (a foreign key to the
/// endpoint) takes, so recording attempts does not wait for fan-out.
pub async fn get_locked(tx: &mut Tx, id: &str) -> Result<Option<Endpoint>, StoreError> {
    let lock = match tx.backend() {
        super::Backend::Postgres => " FOR NO KEY UPDATE",
        super::Backend::Sqlite => "",
    };
    let sql = format!("SELECT {COLUMNS} FROM endpoints WHERE id = $1{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Every endpoint, oldest first.
pub async fn list(
    exec: impl sqlx::Executor<'_, Database = sqlx::Any>,
) -> Result<Vec<Endpoint>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM endpoints ORDER BY created_at, id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(exec)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Enabled endpoints only (what fan-out matches events against).
pub async fn list_enabled(tx: &mut Tx) -> Result<Vec<Endpoint>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM endpoints WHERE enabled = 1 ORDER BY id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Deletes the endpoint with its deliveries and their attempts. False when absent.
pub async fn delete(tx: &mut Tx, id: &str) -> Result<bool, StoreError> {
    sqlx::query(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE endpoint_id = $1)",
    )
    .bind(id.to_string())
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM deliveries WHERE endpoint_id = $1")
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query("DELETE FROM endpoints WHERE id = $1")
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Enables the endpoint and forgets its failures (the circuit closes; the alert state
/// stays, so the first success sends "recovered").
pub async fn enable(tx: &mut Tx, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE endpoints SET enabled = 1, disabled_reason = NULL, failing_since = NULL,
             failed_attempts = 0, failed_deliveries = 0, circuit_open_until = NULL, updated_at = $2
         WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(to_ms(now))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn disable(
    tx: &mut Tx,
    id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE endpoints SET enabled = 0, disabled_reason = $2, circuit_open_until = NULL,
             updated_at = $3
         WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(reason.to_string())
    .bind(to_ms(now))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Stores the endpoint's health (and disables it when `disable` names a reason).
pub async fn set_health(
    tx: &mut Tx,
    id: &str,
    h: &Health,
    disable: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE endpoints SET failing_since = $2, failed_attempts = $3, failed_deliveries = $4,
             circuit_open_until = $5, alert_state = $6,
             enabled = CASE WHEN $7 = 1 THEN 0 ELSE enabled END,
             disabled_reason = CASE WHEN $7 = 1 THEN $8 ELSE disabled_reason END,
             updated_at = $9
         WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(h.failing_since.map(to_ms))
    .bind(h.failed_attempts)
    .bind(h.failed_deliveries)
    .bind(h.circuit_open_until.map(to_ms))
    .bind(h.alert_state.clone())
    .bind(i64::from(disable.is_some()))
    .bind(disable.map(str::to_string))
    .bind(to_ms(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Makes `secret` the signing secret; the old one keeps signing until `grace_until`.
pub async fn rotate_secret(
    tx: &mut Tx,
    id: &str,
    secret: &str,
    grace_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE endpoints SET previous_secret = secret, previous_secret_until = $3, secret = $2,
             updated_at = $4
         WHERE id = $1",
    )
    .bind(id.to_string())
    .bind(secret.to_string())
    .bind(to_ms(grace_until))
    .bind(to_ms(now))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}
