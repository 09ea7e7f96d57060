//! Queries for `deliveries` (one per event and endpoint) and their `attempts`:
//! fan-out inserts, claiming with a lease, recording an attempt, listing, manual
//! retry and recovery.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::placeholders::padded_len;
use super::{
    Backend, MAX_ROWS, Placeholders, StoreError, Tx, from_ms, padded, statement_chunks, to_ms,
};
use crate::domain::event::Event;

/// A row of `deliveries`.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Order of creation: the list's cursor.
    pub seq: i64,
    /// The ordering key it goes out in (None: unordered).
    pub order_key: Option<String>,
    /// Failed for good, and holding its key until retried or skipped.
    pub held: bool,
}

/// One attempt at a delivery.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub number: i64,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub status_code: Option<i64>,
    /// `timeout`, `connect`, `tls`, `dns`, `refused` or `other` when no response came.
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub response_headers: Value,
    pub response_body: String,
}

/// A delivery's new state after an attempt.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: &'static str,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "seq, id, event_id, endpoint_id, event_type, status, attempts, \
     next_attempt_at, last_status, last_error, created_at, updated_at, order_key, held";

fn from_row(r: &AnyRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        endpoint_id: r.try_get("endpoint_id")?,
        event_type: r.try_get("event_type")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r
            .try_get::<Option<i64>, _>("next_attempt_at")?
            .map(from_ms)
            .transpose()?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        created_at: from_ms(r.try_get("created_at")?)?,
        updated_at: from_ms(r.try_get("updated_at")?)?,
        order_key: r.try_get("order_key")?,
        held: r.try_get::<i64, _>("held")? != 0,
    })
}

/// A fresh delivery id: `dlv_` and a time-ordered UUID stamped with the service clock.
pub fn new_id(now: DateTime<Utc>) -> String {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        now.timestamp().max(0) as u64,
        now.timestamp_subsec_nanos(),
    );
    format!("dlv_{}", uuid::Uuid::new_v7(ts).simple())
}

/// One delivery fan-out wants: event `event_id` (of type `event_type`) to
/// `endpoint_id`, first tried at `first_attempt_at`, under the id `id` (see [`new_id`]).
pub struct NewDelivery<'a> {
    pub id: String,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub endpoint_id: &'a str,
    pub first_attempt_at: DateTime<Utc>,
    /// The key it waits in behind the earlier deliveries of its endpoint's key (None:
    /// unordered).
    pub order_key: Option<String>,
}

/// When a claim on a delivery to an endpoint with a request timeout of `timeout_ms`
/// lapses, taken with its lease counted from `lease_from` (the claim's instant plus
/// its margin, see [`claim`]): the same sum the claim statements compute.
pub fn lease_until(lease_from: DateTime<Utc>, timeout_ms: u64) -> DateTime<Utc> {
    lease_from + chrono::TimeDelta::milliseconds(i64::try_from(timeout_ms).unwrap_or(i64::MAX / 2))
}

/// Inserts the deliveries that do not exist yet, 500 rows per statement; returns how
/// many were inserted. With `claim = Some((node, leases))` they are written already
/// claimed by `node` (a hand-off to this node's worker), row `i` until `leases[i]`
/// (see [`lease_until`]).
pub async fn insert_many(
    tx: &mut Tx,
    rows: &[NewDelivery<'_>],
    now: DateTime<Utc>,
    claim: Option<(&str, &[DateTime<Utc>])>,
) -> Result<u64, StoreError> {
    if let Some((_, leases)) = claim
        && leases.len() != rows.len()
    {
        return Err(StoreError::Corrupt(format!(
            "{} leases for {} handed-off deliveries",
            leases.len(),
            rows.len()
        )));
    }
    if tx.backend() == Backend::Postgres {
        // An ordered key goes by `seq`, which PostgreSQL hands out at insert, while
        // transactions commit in their own order: a claim between two commits could
        // see a later delivery of a key without the earlier one. Holding the endpoint's
        // lock from before the insert to the commit makes its ordered deliveries commit
        // in the order of their `seq`s.
        let ordered: std::collections::BTreeSet<String> = rows
            .iter()
            .filter(|r| r.order_key.is_some())
            .map(|r| format!("deliveries in order/{}", r.endpoint_id))
            .collect();
        if !ordered.is_empty() {
            super::lock_keys(tx, ordered).await?;
        }
    }
    let mut inserted = 0;
    let mut offset = 0;
    for chunk in statement_chunks(rows) {
        let mut p = Placeholders::for_tx(tx);
        let values: Vec<String> = (0..chunk.len())
            .map(|_| {
                let [id, event, endpoint, kind, first, created, updated, key] =
                    std::array::from_fn(|_| p.one());
                let (by, lease) = match claim {
                    Some(_) => (p.one(), p.one()),
                    None => ("NULL".to_string(), "NULL".to_string()),
                };
                format!(
                    "({id}, {event}, {endpoint}, {kind}, 'pending', 0, {first}, {created}, {updated}, {key}, {by}, {lease})"
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO deliveries (id, event_id, endpoint_id, event_type, status, attempts,
                 next_attempt_at, created_at, updated_at, order_key, claimed_by, lease_until)
             VALUES {}
             ON CONFLICT (event_id, endpoint_id) DO NOTHING",
            values.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, r) in chunk.iter().enumerate() {
            q = q
                .bind(r.id.clone())
                .bind(r.event_id.to_string())
                .bind(r.endpoint_id.to_string())
                .bind(r.event_type.to_string())
                .bind(to_ms(r.first_attempt_at))
                .bind(to_ms(now))
                .bind(to_ms(now))
                .bind(r.order_key.clone());
            if let Some((node, leases)) = claim {
                q = q.bind(node.to_string()).bind(to_ms(leases[offset + i]));
            }
        }
        offset += chunk.len();
        inserted += q.execute(&mut **tx).await?.rows_affected();
    }
    Ok(inserted)
}

/// Claims up to `limit` due deliveries of enabled endpoints whose circuit is closed,
/// at most `per_endpoint` of any one endpoint, leaving out `exclude` (endpoints at
/// their in-flight or rate limit), for `node`. Each claim's lease runs until
/// `lease_from` plus its endpoint's request timeout (see [`lease_until`]): it covers a
/// slow send, and the node's heartbeat renews it for as long as the node lives
/// ([`renew_leases`]). Returns `(delivery id, endpoint id)` pairs, in no particular
/// order.
///
/// The per-endpoint cap is applied to the `limit` most overdue candidates (a window
/// over them), so one busy endpoint cannot take the whole batch and then have most of
/// it given back. On PostgreSQL the candidates are locked `SKIP LOCKED` first: two
/// nodes never claim the same delivery.
///
/// An ordered delivery (one with an `order_key`) is a candidate only as the first of
/// its key: no earlier delivery of the key still pending, nor failed and holding the
/// key. Such a head is claimed with up to `run - 1` of the deliveries that follow it in
/// its key, due, in order (a run the worker sends one after another without asking the
/// store in between); while the head is pending nothing after it is a candidate, so one
/// node at a time holds a key, and the key goes out in order across the cluster.
#[allow(clippy::too_many_arguments)]
pub async fn claim(
    store: &super::Store,
    node: &str,
    now: DateTime<Utc>,
    lease_from: DateTime<Utc>,
    limit: i64,
    per_endpoint: i64,
    run: i64,
    exclude: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    let lock = match store.backend() {
        Backend::Postgres => " FOR UPDATE OF d SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let not_in = if exclude.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = (0..padded_len(exclude.len()))
            .map(|i| format!("${}", i + 6))
            .collect();
        format!(" AND d.endpoint_id NOT IN ({})", list.join(", "))
    };
    let sql = format!(
        "UPDATE deliveries SET claimed_by = $1, lease_until = $2 + {LEASE_TIMEOUT}
         WHERE id IN (
             SELECT w.id FROM (
                 SELECT c.id, ROW_NUMBER() OVER (
                     PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.seq) AS rn
                 FROM (
                     SELECT d.id, d.endpoint_id, d.next_attempt_at, d.seq
                     FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
                     WHERE d.status = 'pending' AND d.next_attempt_at <= $3
                       AND (d.lease_until IS NULL OR d.lease_until < $3)
                       AND e.enabled = 1
                       AND (e.circuit_open_until IS NULL OR e.circuit_open_until <= $3){not_in}
                       AND (d.order_key IS NULL OR NOT EXISTS (
                           SELECT 1 FROM deliveries b
                           WHERE b.endpoint_id = d.endpoint_id AND b.order_key = d.order_key
                             AND b.seq < d.seq AND (b.status = 'pending' OR b.held = 1)))
                     ORDER BY d.next_attempt_at, d.seq
                     LIMIT $4{lock}) c) w
             WHERE w.rn <= $5)
         RETURNING id, endpoint_id, order_key"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(node.to_string())
        .bind(to_ms(lease_from))
        .bind(to_ms(now))
        .bind(limit)
        .bind(per_endpoint);
    for e in padded(exclude) {
        q = q.bind(e.clone());
    }
    let _writer = store.exclusive().await;
    let rows = q.fetch_all(store.pool()).await?;
    let mut claimed = Vec::with_capacity(rows.len());
    let mut heads = Vec::new();
    for r in &rows {
        let id: String = r.try_get("id")?;
        if r.try_get::<Option<String>, _>("order_key")?.is_some() {
            heads.push(id.clone());
        }
        claimed.push((id, r.try_get("endpoint_id")?));
    }
    if run > 1 && !heads.is_empty() {
        claimed.extend(claim_runs(store, node, now, lease_from, run - 1, &heads).await?);
    }
    Ok(claimed)
}

/// Claims, behind each of the claimed ordered `heads`, up to `followers` of the
/// deliveries that come next in its key, in order, as long as they are due. (A held
/// delivery is always ahead of every pending one of its key: it held the key while
/// they queued behind it.)
async fn claim_runs(
    store: &super::Store,
    node: &str,
    now: DateTime<Utc>,
    lease_from: DateTime<Utc>,
    followers: i64,
    heads: &[String],
) -> Result<Vec<(String, String)>, StoreError> {
    let mut out = Vec::new();
    for chunk in heads.chunks(MAX_ROWS) {
        let ids: Vec<String> = (0..padded_len(chunk.len()))
            .map(|i| format!("${}", i + 5))
            .collect();
        let sql = format!(
            "UPDATE deliveries SET claimed_by = $1, lease_until = $2 + {LEASE_TIMEOUT}
             WHERE id IN (
                 SELECT r.id FROM (
                     SELECT f.id, f.next_attempt_at, ROW_NUMBER() OVER (
                         PARTITION BY f.endpoint_id, f.order_key ORDER BY f.seq) AS rn
                     FROM deliveries h JOIN deliveries f
                       ON f.endpoint_id = h.endpoint_id AND f.order_key = h.order_key
                      AND f.seq > h.seq AND f.status = 'pending'
                     WHERE h.id IN ({})) r
                 WHERE r.rn <= $4 AND r.next_attempt_at <= $3)
               AND status = 'pending' AND (lease_until IS NULL OR lease_until < $3)
             RETURNING id, endpoint_id",
            ids.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(node.to_string())
            .bind(to_ms(lease_from))
            .bind(to_ms(now))
            .bind(followers);
        for id in padded(chunk) {
            q = q.bind(id.clone());
        }
        for r in q.fetch_all(store.pool()).await? {
            out.push((r.try_get("id")?, r.try_get("endpoint_id")?));
        }
    }
    Ok(out)
}

/// A delivery `node` holds, with its event: what sending it needs besides the endpoint.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: String,
    pub endpoint_id: String,
    /// Attempts made before this one.
    pub attempts: i64,
    pub event: Event,
    /// The ordering key it goes out in, one after another (None: unordered).
    pub order_key: Option<String>,
    /// Its place in its key: the delivery's own `seq`.
    pub seq: i64,
}

/// The deliveries among `ids` that `node` holds and that are still pending, with
/// their events, most overdue first: one query for a whole claim.
pub async fn claimed(
    store: &super::Store,
    node: &str,
    ids: &[String],
) -> Result<Vec<Claimed>, StoreError> {
    let event_columns: Vec<String> = super::events::EVENT_COLUMNS
        .split(", ")
        .map(|c| format!("ev.{c}"))
        .collect();
    let event_columns = event_columns.join(", ");
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_ROWS) {
        let mut p = Placeholders::for_backend(store.backend());
        let node_param = p.one();
        let sql = format!(
            "SELECT d.id AS delivery_id, d.endpoint_id AS delivery_endpoint,
                 d.attempts AS delivery_attempts, d.order_key AS delivery_order_key,
                 d.seq AS delivery_seq, {event_columns}
             FROM deliveries d JOIN events ev ON ev.id = d.event_id
             WHERE d.claimed_by = {node_param} AND d.status = 'pending' AND d.id IN ({})
             ORDER BY d.next_attempt_at, d.seq",
            p.padded_list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(node.to_string());
        for id in padded(chunk) {
            q = q.bind(id.clone());
        }
        for r in q.fetch_all(store.pool()).await? {
            out.push(Claimed {
                id: r.try_get("delivery_id")?,
                endpoint_id: r.try_get("delivery_endpoint")?,
                attempts: r.try_get("delivery_attempts")?,
                event: super::events::event_from_row(&r)?,
                order_key: r.try_get("delivery_order_key")?,
                seq: r.try_get("delivery_seq")?,
            });
        }
    }
    Ok(out)
}

/// The request timeout of a claimed delivery's endpoint, in an `UPDATE deliveries`:
/// what a lease adds to its `lease_from` (see [`lease_until`]).
const LEASE_TIMEOUT: &str =
    "(SELECT lt.timeout_ms FROM endpoints lt WHERE lt.id = deliveries.endpoint_id)";

/// Extends the leases on every pending delivery `node` holds to `lease_from` plus its
/// endpoint's request timeout; returns how many. The node's heartbeat calls it with
/// its timer leases (see `super::cluster::heartbeat`), so a queued delivery or a long
/// ordered run keeps its claim for as long as the node lives, and a dead node's lapse
/// one lease after its last heartbeat.
pub async fn renew_leases(
    tx: &mut Tx,
    node: &str,
    lease_from: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let sql = format!(
        "UPDATE deliveries SET lease_until = $1 + {LEASE_TIMEOUT}
         WHERE claimed_by = $2 AND status = 'pending'"
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(to_ms(lease_from))
        .bind(node.to_string())
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// Gives back every pending delivery `node` holds, whoever asks: the node is gone (a
/// crashed process on SQLite, a node whose heartbeat stopped, a node that stopped).
/// With `node = None`, every claim in the store (SQLite at start: one process holds
/// the file, so any claim in it is a dead one's). Ordered keys go with their heads:
/// a key is held by whoever holds its first pending delivery, so releasing the head
/// frees the key for the next claim. Returns how many.
pub async fn release_all(tx: &mut Tx, node: Option<&str>) -> Result<u64, StoreError> {
    let q = match node {
        Some(node) => sqlx::query(
            "UPDATE deliveries SET claimed_by = NULL, lease_until = NULL
             WHERE claimed_by = $1 AND status = 'pending'",
        )
        .bind(node.to_string()),
        None => sqlx::query(
            "UPDATE deliveries SET claimed_by = NULL, lease_until = NULL
             WHERE claimed_by IS NOT NULL AND status = 'pending'",
        ),
    };
    Ok(q.execute(&mut **tx).await?.rows_affected())
}

/// Gives claimed deliveries back without an attempt, in one statement.
pub async fn release(store: &super::Store, node: &str, ids: &[String]) -> Result<(), StoreError> {
    for chunk in ids.chunks(MAX_ROWS) {
        let mut p = Placeholders::for_backend(store.backend());
        let node_param = p.one();
        let sql = format!(
            "UPDATE deliveries SET claimed_by = NULL, lease_until = NULL
             WHERE claimed_by = {node_param} AND id IN ({})",
            p.padded_list(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(node.to_string());
        for id in padded(chunk) {
            q = q.bind(id.clone());
        }
        let _writer = store.exclusive().await;
        q.execute(store.pool()).await?;
    }
    Ok(())
}

/// When there may next be something to claim: the earliest due unclaimed delivery,
/// circuit reopening or lease expiry after `now`.
pub async fn next_wake(
    pool: &sqlx::AnyPool,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let due: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(d.next_attempt_at) FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 'pending' AND e.enabled = 1 AND d.lease_until IS NULL
           AND (e.circuit_open_until IS NULL OR e.circuit_open_until <= $1)",
    )
    .bind(to_ms(now))
    .fetch_one(pool)
    .await?;
    let circuit: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(e.circuit_open_until) FROM endpoints e
         WHERE e.enabled = 1 AND e.circuit_open_until > $1
           AND EXISTS (SELECT 1 FROM deliveries d WHERE d.endpoint_id = e.id AND d.status = 'pending')",
    )
    .bind(to_ms(now))
    .fetch_one(pool)
    .await?;
    let lease: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(lease_until) FROM deliveries WHERE status = 'pending' AND lease_until IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    [due, circuit, lease]
        .into_iter()
        .flatten()
        .min()
        .map(from_ms)
        .transpose()
}

/// One attempt to record: which delivery, what happened, its new state.
#[derive(Clone, Debug)]
pub struct Record {
    pub delivery_id: String,
    pub attempt: Attempt,
    pub outcome: Outcome,
}

/// Records a batch of attempts with the deliveries' new states, in `tx`, for those
/// deliveries `node` still holds; returns the ids recorded. The others (another node
/// took the claim over after it lapsed) are left untouched. Per [`statement_chunks`]
/// slice: an `UPDATE … FROM (VALUES …)` and a multi-row `INSERT` of the attempts.
///
/// On SQLite a count comes first: this transaction holds the write lock, so when this
/// node holds every delivery of the slice (nearly always), the update need not return
/// the ids it changed. Returning them cost a row through sqlx's `Any` driver per
/// delivery; a slice with a lost claim, and PostgreSQL, still get them back.
pub async fn record_attempts(
    tx: &mut Tx,
    node: &str,
    records: &[&Record],
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let sqlite = tx.backend() == Backend::Sqlite;
    let mut recorded = Vec::with_capacity(records.len());
    for chunk in statement_chunks(records) {
        let kept: Vec<&Record> = if sqlite && held_by(tx, node, chunk).await? == chunk.len() {
            let updated = update_recorded(tx, node, chunk, now, false)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if updated != chunk.len() as u64 {
                return Err(StoreError::Corrupt(format!(
                    "{} of {} deliveries changed while the write lock was held",
                    chunk.len() as u64 - updated,
                    chunk.len()
                )));
            }
            chunk.to_vec()
        } else {
            let done: std::collections::HashSet<String> =
                update_recorded(tx, node, chunk, now, true)
                    .fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(|row| row.try_get("id"))
                    .collect::<Result<_, _>>()?;
            chunk
                .iter()
                .copied()
                .filter(|r| done.contains(&r.delivery_id))
                .collect()
        };
        insert_attempts(tx, &kept).await?;
        recorded.extend(kept.into_iter().map(|r| r.delivery_id.clone()));
    }
    Ok(recorded)
}

/// How many of the distinct deliveries of `records` `node` holds (SQLite).
async fn held_by(tx: &mut Tx, node: &str, records: &[&Record]) -> Result<usize, StoreError> {
    let ids: Vec<&str> = records.iter().map(|r| r.delivery_id.as_str()).collect();
    let ids = serde_json::to_string(&ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deliveries
         WHERE id IN (SELECT value FROM json_each(?)) AND claimed_by = ?",
    )
    .bind(ids)
    .bind(node.to_string())
    .fetch_one(&mut **tx)
    .await?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The `UPDATE` that sets the deliveries of `chunk` that `node` holds to their new
/// states; with `returning`, it returns the ids it changed.
fn update_recorded(
    tx: &Tx,
    node: &str,
    chunk: &[&Record],
    now: DateTime<Utc>,
    returning: bool,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    // Placeholders in the order they appear in the text: now, the rows, node.
    let mut p = Placeholders::for_tx(tx);
    let now_param = p.one();
    let values = p.rows(chunk.len(), 6);
    let node_param = p.one();
    let sql = format!(
        "UPDATE deliveries SET status = v.column2, attempts = v.column3,
             next_attempt_at = v.column4, last_status = v.column5, last_error = v.column6,
             claimed_by = NULL, lease_until = NULL, updated_at = {now_param},
             held = CASE WHEN v.column2 = 'failed' AND deliveries.order_key IS NOT NULL
                 AND EXISTS (SELECT 1 FROM endpoints e WHERE e.id = deliveries.endpoint_id
                     AND e.ordering_on_failure = 'hold') THEN 1 ELSE 0 END
         FROM (VALUES {values}) AS v
         WHERE deliveries.id = v.column1 AND deliveries.claimed_by = {node_param}{}",
        if returning {
            " RETURNING deliveries.id"
        } else {
            ""
        }
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(to_ms(now));
    for r in chunk {
        q = q
            .bind(r.delivery_id.clone())
            .bind(r.outcome.status)
            .bind(r.attempt.number)
            .bind(r.outcome.next_attempt_at.map(to_ms))
            .bind(r.attempt.status_code)
            .bind(r.attempt.error.clone());
    }
    q.bind(node.to_string())
}

/// The attempts of `records`, in multi-row `INSERT`s.
async fn insert_attempts(tx: &mut Tx, records: &[&Record]) -> Result<(), StoreError> {
    for chunk in statement_chunks(records) {
        let sql = format!(
            "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code,
                 error_kind, error, response_headers, response_body)
             VALUES {}",
            Placeholders::for_tx(tx).rows(chunk.len(), 9)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            let a = &r.attempt;
            q = q
                .bind(r.delivery_id.clone())
                .bind(a.number)
                .bind(to_ms(a.started_at))
                .bind(a.duration_ms)
                .bind(a.status_code)
                .bind(a.error_kind.clone())
                .bind(a.error.clone())
                .bind(a.response_headers.to_string())
                .bind(a.response_body.clone());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

pub async fn get(
    exec: impl sqlx::Executor<'_, Database = sqlx::Any>,
    id: &str,
) -> Result<Option<Delivery>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(exec)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn attempts(pool: &sqlx::AnyPool, delivery_id: &str) -> Result<Vec<Attempt>, StoreError> {
    let rows = sqlx::query(
        "SELECT number, started_at, duration_ms, status_code, error_kind, error,
             response_headers, response_body
         FROM attempts WHERE delivery_id = $1 ORDER BY id",
    )
    .bind(delivery_id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let headers: String = r.try_get("response_headers")?;
            Ok(Attempt {
                number: r.try_get("number")?,
                started_at: from_ms(r.try_get("started_at")?)?,
                duration_ms: r.try_get("duration_ms")?,
                status_code: r.try_get("status_code")?,
                error_kind: r.try_get("error_kind")?,
                error: r.try_get("error")?,
                response_headers: serde_json::from_str(&headers)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                response_body: r.try_get("response_body")?,
            })
        })
        .collect()
}

/// A delivery's status, as `GET /v1/deliveries?status=` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Succeeded,
    Failed,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Pending, Status::Succeeded, Status::Failed];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// The condition selecting deliveries in this status, with the status written as a
    /// literal: the indexes on `status` are partial (`deliveries_due` holds pending
    /// deliveries, `deliveries_failed` failed ones), and a planner uses a partial index
    /// only for a query that names its rows the same way, never through a bound value.
    fn condition(self) -> String {
        format!("status = '{}'", self.as_str())
    }
}

/// Filters of `GET /v1/deliveries`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub endpoint_id: Option<String>,
    pub status: Option<Status>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Only deliveries older than this one (`seq` below it): the cursor.
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// Deliveries matching `f`, newest first.
///
/// By status: failed ones are read newest first from their own index; succeeded ones,
/// the bulk of the table, by reading it from its newest row. Pending ones are few unless
/// a backlog formed (in flight, waiting for a retry, maybe days old), so they are found
/// through the due index and sorted; without statistics SQLite would rather walk the
/// whole table from its newest row to avoid the sort, so on SQLite the index is named.
pub async fn list(store: &super::Store, f: &Filter) -> Result<Vec<Delivery>, StoreError> {
    let mut conds = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if f.endpoint_id.is_some() {
        conds.push(format!("endpoint_id = {}", next()));
    }
    if let Some(status) = f.status {
        conds.push(status.condition());
    }
    if f.event_type.is_some() {
        conds.push(format!("event_type = {}", next()));
    }
    if f.since.is_some() {
        conds.push(format!("created_at >= {}", next()));
    }
    if f.before_seq.is_some() {
        conds.push(format!("seq < {}", next()));
    }
    let limit = next();
    let where_ = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let indexed_by = match (f.status, store.backend()) {
        (Some(Status::Pending), Backend::Sqlite) => " INDEXED BY deliveries_due",
        _ => "",
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM deliveries{indexed_by}{where_} ORDER BY seq DESC LIMIT {limit}"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(v) = &f.endpoint_id {
        q = q.bind(v.clone());
    }
    if let Some(v) = &f.event_type {
        q = q.bind(v.clone());
    }
    if let Some(v) = f.since {
        q = q.bind(to_ms(v));
    }
    if let Some(v) = f.before_seq {
        q = q.bind(v);
    }
    let rows = q.bind(f.limit).fetch_all(store.pool()).await?;
    rows.iter().map(from_row).collect()
}

/// Makes a finished (failed or succeeded) delivery due again at `now`. False when it
/// is still pending.
pub async fn retry(tx: &mut Tx, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = $2, claimed_by = NULL,
             lease_until = NULL, held = 0, updated_at = $2
         WHERE id = $1 AND status <> 'pending'",
    )
    .bind(id.to_string())
    .bind(to_ms(now))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Lets the key a failed delivery holds move on without it (it stays failed). False
/// when it held no key.
pub async fn skip(tx: &mut Tx, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE deliveries SET held = 0, updated_at = $2 WHERE id = $1 AND held = 1")
            .bind(id.to_string())
            .bind(to_ms(now))
            .execute(&mut **tx)
            .await?;
    Ok(done.rows_affected() > 0)
}

/// The ordered keys of each endpoint that are held back: their first delivery failed,
/// and waits for its retry or, failed for good, holds the key. How many keys, how many
/// deliveries wait behind them, and the longest-held first delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldKeys {
    pub endpoint_id: String,
    pub keys: i64,
    pub waiting: i64,
    /// The first delivery of a held key that was created first: its id and creation.
    pub oldest: Option<(String, DateTime<Utc>)>,
}

/// [`HeldKeys`] of every endpoint with a held key.
pub async fn held_keys(pool: &sqlx::AnyPool) -> Result<Vec<HeldKeys>, StoreError> {
    // The heads of held keys: failed at least once, pending or holding, with nothing
    // pending or holding ahead of them in their key.
    let heads = "SELECT h.endpoint_id, h.order_key, h.seq, h.id, h.created_at FROM deliveries h
        WHERE h.order_key IS NOT NULL AND (h.status = 'pending' OR h.held = 1)
          AND (h.held = 1 OR h.attempts > 0)
          AND NOT EXISTS (SELECT 1 FROM deliveries b
              WHERE b.endpoint_id = h.endpoint_id AND b.order_key = h.order_key
                AND b.seq < h.seq AND (b.status = 'pending' OR b.held = 1))";
    let sql = format!(
        "SELECT h.endpoint_id, h.id, h.created_at,
             (SELECT COUNT(*) FROM deliveries w WHERE w.endpoint_id = h.endpoint_id
                AND w.order_key = h.order_key AND w.seq > h.seq AND w.status = 'pending') AS waiting
         FROM ({heads}) h ORDER BY h.endpoint_id, h.created_at, h.seq"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?;
    let mut out: Vec<HeldKeys> = Vec::new();
    for r in &rows {
        let endpoint_id: String = r.try_get("endpoint_id")?;
        let waiting: i64 = r.try_get("waiting")?;
        match out.last_mut() {
            Some(h) if h.endpoint_id == endpoint_id => {
                h.keys += 1;
                h.waiting += waiting;
            }
            _ => out.push(HeldKeys {
                endpoint_id,
                keys: 1,
                waiting,
                oldest: Some((r.try_get("id")?, from_ms(r.try_get("created_at")?)?)),
            }),
        }
    }
    Ok(out)
}

/// Makes the endpoint's failed deliveries created in `[since, until)` due again at
/// `now`; returns how many.
pub async fn recover(
    tx: &mut Tx,
    endpoint_id: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = $4, claimed_by = NULL,
             lease_until = NULL, updated_at = $4
         WHERE endpoint_id = $1 AND status = 'failed' AND created_at >= $2 AND created_at < $3",
    )
    .bind(endpoint_id.to_string())
    .bind(to_ms(since))
    .bind(to_ms(until))
    .bind(to_ms(now))
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// What the delivery pipeline still has to do at instant `at` (for the manual clock's
/// advance, which must not move on while work is due).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueWork {
    /// Events not fanned out yet.
    pub unfanned: i64,
    /// The earliest end of a claim on a due delivery: a send in flight, or a claim
    /// left behind (a crashed process, an attempt that could not be recorded) until
    /// its lease lapses.
    pub claimed_until: Option<DateTime<Utc>>,
    /// Due deliveries nobody holds that could go now (about to be claimed, or held back
    /// by a rate limit or an in-flight cap until the clock moves on); an ordered one
    /// counts only as the first of its key: the rest wait for it, not for the clock.
    pub waiting: i64,
}

pub async fn due_work(pool: &sqlx::AnyPool, at: DateTime<Utc>) -> Result<DueWork, StoreError> {
    let unfanned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE fanned_out = 0")
        .fetch_one(pool)
        .await?;
    let row = sqlx::query(
        "SELECT
           MIN(CASE WHEN d.lease_until IS NOT NULL AND d.lease_until >= $1 THEN d.lease_until END) AS claimed_until,
           COALESCE(SUM(CASE WHEN (d.lease_until IS NULL OR d.lease_until < $1)
               AND (d.order_key IS NULL OR NOT EXISTS (
                   SELECT 1 FROM deliveries b
                   WHERE b.endpoint_id = d.endpoint_id AND b.order_key = d.order_key
                     AND b.seq < d.seq AND (b.status = 'pending' OR b.held = 1)))
               THEN 1 ELSE 0 END), 0) AS waiting
         FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND e.enabled = 1
           AND (e.circuit_open_until IS NULL OR e.circuit_open_until <= $1)",
    )
    .bind(to_ms(at))
    .fetch_one(pool)
    .await?;
    Ok(DueWork {
        unfanned,
        claimed_until: row
            .try_get::<Option<i64>, _>("claimed_until")?
            .map(from_ms)
            .transpose()?,
        waiting: row.try_get("waiting")?,
    })
}

/// The first instant after `after` when a delivery becomes due (a retry, or a circuit
/// reopening), if any.
pub async fn next_due_after(
    pool: &sqlx::AnyPool,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let retry: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(d.next_attempt_at) FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 'pending' AND e.enabled = 1 AND d.next_attempt_at > $1",
    )
    .bind(to_ms(after))
    .fetch_one(pool)
    .await?;
    let circuit: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(e.circuit_open_until) FROM endpoints e
         WHERE e.enabled = 1 AND e.circuit_open_until > $1
           AND EXISTS (SELECT 1 FROM deliveries d WHERE d.endpoint_id = e.id AND d.status = 'pending')",
    )
    .bind(to_ms(after))
    .fetch_one(pool)
    .await?;
    [retry, circuit]
        .into_iter()
        .flatten()
        .min()
        .map(from_ms)
        .transpose()
}

/// The deliveries of one event, oldest first (for an entity's timeline).
pub async fn of_event(pool: &sqlx::AnyPool, event_id: &str) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM deliveries WHERE event_id = $1 ORDER BY seq");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(event_id.to_string())
        .fetch_all(pool)
        .await?;
    rows.iter().map(from_row).collect()
}

/// One endpoint's delivery health over a window, for operators.
#[derive(Debug, Clone)]
pub struct EndpointHealth {
    pub endpoint_id: String,
    pub name: String,
    /// `enabled` or `disabled`.
    pub state: String,
    pub disabled_reason: Option<String>,
    /// `ok`, `failing` or `disabled` (what was last alerted).
    pub alert_state: String,
    pub attempts: i64,
    pub succeeded: i64,
    /// Share of attempts in the window answered with a 2xx (null without attempts).
    pub success_rate: Option<f64>,
    /// Deliveries waiting to be sent or retried.
    pub pending: i64,
    /// The last failed attempt: its error, or `HTTP <status>`.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// `none`, `entity` or `endpoint`.
    pub ordering: String,
    /// Its held keys, when it orders its deliveries and any is held.
    pub held: Option<HeldKeys>,
}

/// Health of every endpoint over the attempts started since `since`.
pub async fn endpoint_health(
    pool: &sqlx::AnyPool,
    since: DateTime<Utc>,
) -> Result<Vec<EndpointHealth>, StoreError> {
    let rows = sqlx::query(
        "SELECT e.id, e.name, e.enabled, e.disabled_reason, e.alert_state, e.ordering,
            (SELECT COUNT(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
              WHERE d.endpoint_id = e.id AND a.started_at >= $1) AS attempts,
            (SELECT COUNT(*) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
              WHERE d.endpoint_id = e.id AND a.started_at >= $1
                AND a.status_code >= 200 AND a.status_code < 300) AS succeeded,
            (SELECT COUNT(*) FROM deliveries d WHERE d.endpoint_id = e.id AND d.status = 'pending') AS pending,
            (SELECT COALESCE(a.error, 'HTTP ' || CAST(a.status_code AS TEXT)) FROM attempts a
               JOIN deliveries d ON d.id = a.delivery_id
              WHERE d.endpoint_id = e.id AND (a.status_code IS NULL OR a.status_code < 200 OR a.status_code >= 300)
              ORDER BY a.started_at DESC, a.id DESC LIMIT 1) AS last_error,
            (SELECT MAX(a.started_at) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
              WHERE d.endpoint_id = e.id AND (a.status_code IS NULL OR a.status_code < 200 OR a.status_code >= 300)) AS last_error_at
         FROM endpoints e ORDER BY e.name, e.id",
    )
    .bind(to_ms(since))
    .fetch_all(pool)
    .await?;
    let mut held: std::collections::HashMap<String, HeldKeys> = held_keys(pool)
        .await?
        .into_iter()
        .map(|h| (h.endpoint_id.clone(), h))
        .collect();
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            let attempts: i64 = r.try_get("attempts")?;
            let succeeded: i64 = r.try_get("succeeded")?;
            Ok(EndpointHealth {
                held: held.remove(&id),
                endpoint_id: id,
                name: r.try_get("name")?,
                state: if r.try_get::<i64, _>("enabled")? != 0 {
                    "enabled"
                } else {
                    "disabled"
                }
                .to_string(),
                disabled_reason: r.try_get("disabled_reason")?,
                alert_state: r.try_get("alert_state")?,
                attempts,
                succeeded,
                success_rate: (attempts > 0).then(|| succeeded as f64 / attempts as f64),
                pending: r.try_get("pending")?,
                last_error: r.try_get("last_error")?,
                last_error_at: r
                    .try_get::<Option<i64>, _>("last_error_at")?
                    .map(from_ms)
                    .transpose()?,
                ordering: r.try_get("ordering")?,
            })
        })
        .collect()
}

/// Deliveries per status (every status, zeros included, so a gauge falls back to 0),
/// and endpoints per state (for the metrics gauges).
pub async fn gauges(
    pool: &sqlx::AnyPool,
) -> Result<(Vec<(String, i64)>, Vec<(String, i64)>), StoreError> {
    // Pending and failed deliveries are counted through their partial indexes; the
    // succeeded ones, which have none, as the rest of the whole (a count of every row
    // reads the smallest index, not the rows).
    let r = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM deliveries) AS total,
                (SELECT COUNT(*) FROM deliveries WHERE status = 'pending') AS pending,
                (SELECT COUNT(*) FROM deliveries WHERE status = 'failed') AS failed",
    )
    .fetch_one(pool)
    .await?;
    let (total, pending, failed): (i64, i64, i64) = (
        r.try_get("total")?,
        r.try_get("pending")?,
        r.try_get("failed")?,
    );
    let d = vec![
        (Status::Pending.as_str().to_string(), pending),
        (
            Status::Succeeded.as_str().to_string(),
            total - pending - failed,
        ),
        (Status::Failed.as_str().to_string(), failed),
    ];
    let e = sqlx::query("SELECT CASE WHEN enabled = 1 THEN alert_state ELSE 'disabled' END AS state, COUNT(*) AS n FROM endpoints GROUP BY CASE WHEN enabled = 1 THEN alert_state ELSE 'disabled' END")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok((d, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record for `id`: attempt 1, succeeded with a 200.
    fn succeeded(id: &str, at: DateTime<Utc>) -> Record {
        Record {
            delivery_id: id.into(),
            attempt: Attempt {
                number: 1,
                started_at: at,
                duration_ms: 3,
                status_code: Some(200),
                error_kind: None,
                error: None,
                response_headers: serde_json::json!({}),
                response_body: "ok".into(),
            },
            outcome: Outcome {
                status: "succeeded",
                next_attempt_at: None,
            },
        }
    }

    /// Whether this node holds every delivery of a batch (SQLite asks first, then
    /// updates without returning rows) or not (the update returns what it changed), only
    /// the deliveries it holds are recorded, each with its attempt.
    #[tokio::test]
    async fn only_deliveries_still_held_are_recorded() {
        let (_dir, store, _) = crate::store::temp_sqlite_store().await;
        let now = from_ms(1_800_000_000_000).expect("instant");
        let mut tx = store.begin().await.expect("begin");
        sqlx::query(
            "INSERT INTO endpoints (id, name, url, topics, format, envelope, scheme, secret,
                 headers, retry_schedule, timeout_ms, alert_emails, created_at, updated_at)
             VALUES ('ep', 'ep', 'http://127.0.0.1/', '[\"*\"]', 'json', 'standard',
                 'standard_webhooks', 's', '{}', '[]', 1000, '[]', 0, 0)",
        )
        .execute(&mut *tx)
        .await
        .expect("endpoint");
        for (event, held_by) in [("e1", "n1"), ("e2", "n1"), ("e3", "n2"), ("e4", "n1")] {
            sqlx::query(
                "INSERT INTO events (id, type, entity_kind, entity_id, created_at, data)
                 VALUES ($1, 'order.checkout', 'order', 'o', 0, '{}')",
            )
            .bind(event)
            .execute(&mut *tx)
            .await
            .expect("event");
            let delivery = format!("d{}", &event[1..]);
            insert_many(
                &mut tx,
                &[NewDelivery {
                    id: delivery,
                    event_id: event,
                    event_type: "order.checkout",
                    endpoint_id: "ep",
                    first_attempt_at: now,
                    order_key: None,
                }],
                now,
                Some((held_by, &[now + chrono::TimeDelta::seconds(60)])),
            )
            .await
            .expect("delivery");
        }
        let state = |id: &'static str| {
            sqlx::query_as::<_, (String, Option<String>, i64)>(
                "SELECT status, claimed_by, (SELECT COUNT(*) FROM attempts WHERE delivery_id = $1)
                 FROM deliveries WHERE id = $1",
            )
            .bind(id)
        };

        let all_held = [succeeded("d1", now), succeeded("d2", now)];
        let recorded = record_attempts(&mut tx, "n1", &all_held.iter().collect::<Vec<_>>(), now)
            .await
            .expect("record");
        assert_eq!(recorded, vec!["d1".to_string(), "d2".to_string()]);

        let one_lost = [succeeded("d3", now), succeeded("d4", now)];
        let recorded = record_attempts(&mut tx, "n1", &one_lost.iter().collect::<Vec<_>>(), now)
            .await
            .expect("record");
        assert_eq!(recorded, vec!["d4".to_string()], "d3 is held by n2");

        for (id, want) in [
            ("d1", ("succeeded".to_string(), None, 1)),
            ("d2", ("succeeded".to_string(), None, 1)),
            ("d3", ("pending".to_string(), Some("n2".to_string()), 0)),
            ("d4", ("succeeded".to_string(), None, 1)),
        ] {
            let got = state(id).fetch_one(&mut *tx).await.expect("state");
            assert_eq!(got, want, "{id}");
        }
        tx.rollback().await.expect("rollback");
        store.close().await;
    }
}
