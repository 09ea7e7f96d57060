//! Several nodes on one store: node heartbeats, timer claims with leases, and taking
//! over what a dead node held.
//!
//! A node claims the pending timers it will fire (due within its horizon, unclaimed or
//! with an expired lease) and the deliveries it will send (`super::deliveries`), renews
//! both leases with its heartbeat and gives them back on a graceful stop. A node that
//! dies stops beating; a whole lease after its last heartbeat the first survivor to
//! look releases everything it held in one transaction ([`take_over_dead`]) and the
//! others claim it at once. Claims only spread the work: exactly-once comes from
//! firing, which moves a timer from pending to fired in one transaction whoever holds
//! it, and from recording, which only the holder of a delivery's claim does. On SQLite
//! one process holds the file, so whatever a previous one left claimed is released
//! when the next registers ([`register`]). On PostgreSQL every node also LISTENs for
//! timers another node planned inside the horizon ([`listen_for_timers`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::timers::PLANNED_CHANNEL;
use super::{Backend, Store, StoreError, deliveries, from_ms, to_ms};

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub pid: i64,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Pending timers it holds a live lease on.
    pub timers_held: i64,
}

pub async fn register(
    store: &Store,
    id: &str,
    hostname: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let query = sqlx::query(
        "INSERT INTO nodes (id, hostname, pid, started_at, last_seen) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(id.to_string())
    .bind(hostname.to_string())
    .bind(i64::from(std::process::id()))
    .bind(to_ms(now));
    let mut tx = store.begin().await?;
    query.execute(&mut *tx).await?;
    if store.backend() == Backend::Sqlite {
        // One process holds a SQLite file (`super::lock`): whatever an earlier one left
        // claimed is a dead process's, known dead now, before any worker starts. Its
        // timers (this node claims them by reading, see `claim_timers`), its deliveries
        // (handed off in memory or claimed, ordered keys with their heads) all go back
        // here, so the first claims take them at once instead of after their leases.
        sqlx::query(
            "UPDATE timers SET claimed_by = NULL, lease_until = NULL WHERE claimed_by IS NOT NULL",
        )
        .execute(&mut *tx)
        .await?;
        deliveries::release_all(&mut tx, None).await?;
        sqlx::query(
            "UPDATE nodes SET stopped_at = last_seen WHERE stopped_at IS NULL AND id <> $1",
        )
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What a heartbeat found and renewed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// Pending timers and deliveries whose leases it extended.
    pub timers: u64,
    pub deliveries: u64,
    /// Another node had taken this one for dead (its heartbeat had stopped for a whole
    /// lease) and released what it held; the heartbeat marks it alive again.
    pub was_taken_for_dead: bool,
}

/// Records that the node is alive and extends the leases on what it holds: its timers
/// until `lease_until`, its deliveries until `lease_until` plus their endpoint's request
/// timeout (see [`deliveries::claim`]).
pub async fn heartbeat(
    store: &Store,
    id: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Beat, StoreError> {
    let mut tx = store.begin().await?;
    let stopped: Option<Option<i64>> =
        sqlx::query_scalar("SELECT stopped_at FROM nodes WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
    sqlx::query("UPDATE nodes SET last_seen = $1, stopped_at = NULL WHERE id = $2")
        .bind(to_ms(now))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    let timers = sqlx::query(
        "UPDATE timers SET lease_until = $1 WHERE claimed_by = $2 AND state = 'pending'",
    )
    .bind(to_ms(lease_until))
    .bind(id.to_string())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let deliveries = deliveries::renew_leases(&mut tx, id, lease_until).await?;
    tx.commit().await?;
    Ok(Beat {
        timers,
        deliveries,
        was_taken_for_dead: matches!(stopped, Some(Some(_))),
    })
}

/// Gives back every timer the node holds (graceful stop) and marks it stopped. Its
/// deliveries stay claimed: sends in flight finish and are recorded, the delivery
/// worker gives back what it had queued, and [`release_deliveries`] the rest once
/// nothing of the node runs any more.
pub async fn release(store: &Store, id: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    let n = sqlx::query("UPDATE timers SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = $1 AND state = 'pending'")
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE nodes SET stopped_at = $1, last_seen = $1 WHERE id = $2")
        .bind(to_ms(now))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Gives back every delivery the node still holds: called when it has stopped sending
/// (the end of a graceful stop, after work cut short by its deadline).
pub async fn release_deliveries(store: &Store, id: &str) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    let n = deliveries::release_all(&mut tx, Some(id)).await?;
    tx.commit().await?;
    Ok(n)
}

/// What [`take_over_dead`] released.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// The nodes found dead, whose claims were released.
    pub nodes: Vec<String>,
    pub timers: u64,
    pub deliveries: u64,
    /// When the next of the other live nodes would be dead if it sent no heartbeat
    /// before (its last heartbeat plus `lease`): when to look again.
    pub next_death: Option<DateTime<Utc>>,
}

/// Releases, in one transaction, everything held by the nodes (other than `me`) whose
/// last heartbeat is older than `lease` at `now`: their pending timers and deliveries,
/// ordered keys with their heads. A node is dead once its heartbeat is a whole lease
/// old (it beats every third of one), and so are its claims: waiting for each to lapse
/// on its own would keep a delivery's for its endpoint's timeout besides. Also a node
/// that stopped while holding something (a graceful stop cut short) once as long has
/// passed. The dead are marked stopped at their last heartbeat; one that was only cut
/// off from the store learns it at its next heartbeat (see [`Beat`]).
///
/// Times compare the clocks of two nodes (the dead one's heartbeat, the survivor's
/// now): a survivor whose clock runs ahead by `s` takes a node for dead `s` early, so
/// clocks must agree to well within two thirds of the lease (see `deploy/README.md`).
pub async fn take_over_dead(
    store: &Store,
    me: &str,
    now: DateTime<Utc>,
    lease: TimeDelta,
) -> Result<TakenOver, StoreError> {
    let lock = match store.backend() {
        Backend::Postgres => " FOR UPDATE OF n SKIP LOCKED",
        // One process per file (`super::lock`): no other node can be alive, and what
        // earlier ones held was released when this one registered.
        Backend::Sqlite => return Ok(TakenOver::default()),
    };
    let cut = to_ms(now - lease);
    let mut tx = store.begin().await?;
    let dead: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT n.id FROM nodes n
         WHERE n.id <> $1 AND n.last_seen < $2
           AND (n.stopped_at IS NULL
                OR EXISTS (SELECT 1 FROM timers t WHERE t.claimed_by = n.id AND t.state = 'pending')
                OR EXISTS (SELECT 1 FROM deliveries d WHERE d.claimed_by = n.id AND d.status = 'pending'))
         ORDER BY n.id{lock}"
    )))
    .bind(me.to_string())
    .bind(cut)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = TakenOver::default();
    for node in &dead {
        out.timers += sqlx::query(
            "UPDATE timers SET claimed_by = NULL, lease_until = NULL
             WHERE claimed_by = $1 AND state = 'pending'",
        )
        .bind(node.clone())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        out.deliveries += deliveries::release_all(&mut tx, Some(node)).await?;
        sqlx::query("UPDATE nodes SET stopped_at = last_seen WHERE id = $1 AND stopped_at IS NULL")
            .bind(node.clone())
            .execute(&mut *tx)
            .await?;
    }
    let oldest: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(last_seen) FROM nodes WHERE id <> $1 AND stopped_at IS NULL AND last_seen >= $2",
    )
    .bind(me.to_string())
    .bind(cut)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    out.nodes = dead;
    out.next_death = oldest
        .map(|at| from_ms(at).map(|at| at + lease))
        .transpose()?;
    Ok(out)
}

/// Claims up to `limit` pending timers due before `until` that nobody holds (or whose
/// lease expired), plus re-reads those this node already holds. Returns (id, fire_at),
/// in `(fire_at, id)` order. With `after = Some((fire_at, id))` only timers after that
/// one are looked at: the caller holds everything up to it already.
///
/// On SQLite a claim is a read: one process holds the file (`super::lock::lock_sqlite`),
/// so there is no other node to split the work with or to take it over from, and
/// writing `claimed_by` would only cost the one writer time in the middle of a burst
/// (a refill rewrote 2,000 timer rows and their index entries). Claims an earlier
/// process left behind were released when this one registered ([`register`]).
pub async fn claim_timers(
    store: &Store,
    node: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
    after: Option<(DateTime<Utc>, i64)>,
) -> Result<Vec<(i64, DateTime<Utc>)>, StoreError> {
    if store.backend() == Backend::Sqlite {
        return due_timers(store, until, limit, after).await;
    }
    let after_clause = if after.is_some() {
        " AND (fire_at > $6 OR (fire_at = $6 AND id > $7))"
    } else {
        ""
    };
    // Rows another node is claiming right now are skipped, not waited on.
    let sql = format!(
        "UPDATE timers SET claimed_by = $1, lease_until = $2
         WHERE id IN (
           SELECT id FROM timers
           WHERE state = 'pending' AND fire_at < $3
             AND (claimed_by IS NULL OR claimed_by = $1 OR lease_until < $4){after_clause}
           ORDER BY fire_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)
         RETURNING id, fire_at"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(node.to_string())
        .bind(to_ms(lease_until))
        .bind(to_ms(until))
        .bind(to_ms(now))
        .bind(limit);
    if let Some((at, id)) = after {
        q = q.bind(to_ms(at)).bind(id);
    }
    let mut tx = store.begin().await?;
    let rows = q.fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let mut out = rows
        .iter()
        .map(|r| Ok((r.try_get("id")?, from_ms(r.try_get("fire_at")?)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    out.sort_by_key(|(id, at)| (*at, *id));
    Ok(out)
}

/// [`due_timers`]'s statement: the pending timers due before `$1` after (`$2`, `$3`),
/// read in due order from `timers_pending`.
pub(super) const DUE_TIMERS: &str = "SELECT id, fire_at FROM timers
     WHERE state = 'pending' AND fire_at >= $2 AND fire_at < $1 AND (fire_at > $2 OR id > $3)
     ORDER BY fire_at, id LIMIT $4";

/// SQLite's claim (see [`claim_timers`]): the pending timers due before `until`, after
/// `after`, read without the writer lock.
async fn due_timers(
    store: &Store,
    until: DateTime<Utc>,
    limit: i64,
    after: Option<(DateTime<Utc>, i64)>,
) -> Result<Vec<(i64, DateTime<Utc>)>, StoreError> {
    let (at, id) = after.map_or((i64::MIN, i64::MIN), |(at, id)| (to_ms(at), id));
    let rows = sqlx::query(DUE_TIMERS)
        .bind(to_ms(until))
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, from_ms(r.try_get("fire_at")?)?)))
        .collect()
}

pub async fn list(store: &Store, now: DateTime<Utc>) -> Result<Vec<Node>, StoreError> {
    let rows = sqlx::query(
        "SELECT n.id, n.hostname, n.pid, n.started_at, n.last_seen, n.stopped_at,
                (SELECT COUNT(*) FROM timers t WHERE t.claimed_by = n.id AND t.state = 'pending' AND t.lease_until >= $1) AS held
         FROM nodes n ORDER BY n.started_at DESC, n.id LIMIT 100",
    )
    .bind(to_ms(now))
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Node {
                id: r.try_get("id")?,
                hostname: r.try_get("hostname")?,
                pid: r.try_get("pid")?,
                started_at: from_ms(r.try_get("started_at")?)?,
                last_seen: from_ms(r.try_get("last_seen")?)?,
                stopped_at: r
                    .try_get::<Option<i64>, _>("stopped_at")?
                    .map(from_ms)
                    .transpose()?,
                timers_held: r.try_get("held")?,
            })
        })
        .collect()
}

/// Wakes `wake` on every notification on [`PLANNED_CHANNEL`] until shutdown. Reconnects
/// after a lost connection; meanwhile the driver's periodic refill is the fallback.
pub async fn listen_for_timers(url: String, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect(&url).await?;
            l.listen(PLANNED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN for timer wake-ups; polling meanwhile");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    }
                }
            },
        };
        // A reconnect may have missed notifications: look again now.
        wake.notify_one();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = listener.try_recv() => match msg {
                    Ok(Some(_)) => wake.notify_one(),
                    // The connection dropped; try_recv reconnects on the next call.
                    Ok(None) => wake.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "timer wake-up listener failed; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}
