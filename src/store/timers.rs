//! Queries for `timers`: planned time-based events. A timer is `pending` until it is
//! `fired` (with its event id), `cancelled` (with why) or `skipped` (with why).
//! A timer holds its moment (entity, fire instant, rule) while it is pending or fired
//! (`live` = 1, under a unique index), so planning twice plans once and a fired moment
//! is never planned again; a cancelled or skipped timer lets go of it (`live` NULL).

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Placeholders, Store, StoreError, Tx, from_ms, to_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerState {
    Pending,
    Fired,
    Cancelled,
    Skipped,
}

impl TimerState {
    pub const ALL: [TimerState; 4] = [Self::Pending, Self::Fired, Self::Cancelled, Self::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Fired => "fired",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timer {
    pub id: i64,
    pub entity_kind: String,
    pub entity_id: String,
    pub rule: String,
    pub event_type: String,
    pub anchor_at: DateTime<Utc>,
    pub fire_at: DateTime<Utc>,
    pub state: TimerState,
    pub reason: Option<String>,
    pub event_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const COLUMNS: &str = "id, entity_kind, entity_id, rule, event_type, anchor_at, fire_at, state, reason, event_id, created_at, updated_at";

/// The PostgreSQL channel on which a commit that planned a timer inside the horizon
/// wakes every node's scheduler (the node that claims the timer may not be this one).
pub const PLANNED_CHANNEL: &str = "duehook_timers";

/// Wakes every node's scheduler when `tx` commits (PostgreSQL; nothing on SQLite, whose
/// one process wakes its scheduler in memory).
pub async fn notify_planned(tx: &mut Tx) -> Result<(), StoreError> {
    if tx.backend() == super::Backend::Postgres {
        sqlx::query("SELECT pg_notify($1, '')::text AS sent")
            .bind(PLANNED_CHANNEL)
            .fetch_one(&mut **tx)
            .await?;
    }
    Ok(())
}

pub fn from_row(r: &AnyRow) -> Result<Timer, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(Timer {
        id: r.try_get("id")?,
        entity_kind: r.try_get("entity_kind")?,
        entity_id: r.try_get("entity_id")?,
        rule: r.try_get("rule")?,
        event_type: r.try_get("event_type")?,
        anchor_at: from_ms(r.try_get("anchor_at")?)?,
        fire_at: from_ms(r.try_get("fire_at")?)?,
        state: TimerState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("timer state `{state}`")))?,
        reason: r.try_get("reason")?,
        event_id: r.try_get("event_id")?,
        created_at: from_ms(r.try_get("created_at")?)?,
        updated_at: from_ms(r.try_get("updated_at")?)?,
    })
}

/// A timer to plan.
#[derive(Debug, Clone)]
pub struct NewTimer<'a> {
    pub entity_kind: &'a str,
    pub entity_id: &'a str,
    pub rule: &'a str,
    pub event_type: &'a str,
    pub anchor_at: DateTime<Utc>,
    pub fire_at: DateTime<Utc>,
}

/// What a pending timer's insert gives way to: the timer already holding the same
/// moment (pending or fired), in the unique index on the moment.
const SAME_MOMENT: &str = "ON CONFLICT (entity_kind, entity_id, fire_at, rule, live) DO NOTHING";

/// The head of [`insert_many`]'s statement. Its rows never repeat a moment
/// already held: ingest plans them against the entity's pending and done timers, read
/// in the same transaction under the entity's lock (on PostgreSQL the advisory lock
/// every writer and the scheduler take first; on SQLite the one writer), and a closed
/// row holds no moment. So the insert need not give way, and each backend takes the
/// form that costs it least.
///
/// On SQLite, `INSERT OR IGNORE`: a statement that writes many rows and may stop
/// halfway on a conflict keeps a statement journal, a copy of every page it changes
/// taken before its first change, so that it can undo its own rows alone; an import
/// whose timers land all over the due index copies a page for almost every row. With
/// `OR IGNORE` no conflict stops the statement and SQLite keeps no such copy. The
/// moment's unique index is the one constraint a timer row can meet: every `NOT NULL`
/// column is filled from a value that cannot be null, and `timers` has no check,
/// foreign key or trigger.
///
/// On PostgreSQL, a plain `INSERT`: `ON CONFLICT … DO NOTHING` makes each row a
/// speculative insertion (a probe of the unique index before the row is written, a
/// token lock, a confirmation record in the WAL), about 40 % more server time per
/// timer row, and the server's time is what bounds an import there. Should a row
/// repeat a held moment after all, the unique index refuses the transaction and
/// nothing of it is written (its ops are then applied one by one, see
/// `ingest::group`): a planning fault shows instead of hiding.
fn insert_head(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "INSERT OR IGNORE INTO",
        Backend::Postgres => "INSERT INTO",
    }
}

/// The `state` column in a condition that also names one entity, so that the entity
/// index answers it. SQLite keeps no statistics of its own here: asked for an entity's
/// timers in one state by due order, it prefers the state index (`timers_pending`),
/// which gives that order, and walks every timer in that state instead of reading the
/// entity's few from the entity index and sorting them. A unary `+` keeps a column out
/// of SQLite's choice of index (its documented way); PostgreSQL, which weighs its
/// statistics, gets the column as is.
fn state_beside_entity(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "+state",
        Backend::Postgres => "state",
    }
}

/// [`of_entity`]'s statement.
fn of_entity_sql(backend: Backend) -> String {
    let state_col = state_beside_entity(backend);
    format!(
        "SELECT {COLUMNS} FROM timers WHERE entity_kind = $1 AND entity_id = $2 AND {state_col} = $3 ORDER BY fire_at, id"
    )
}

/// Timers of one entity in the given state.
pub async fn of_entity(
    tx: &mut Tx,
    entity_kind: &str,
    entity_id: &str,
    state: TimerState,
) -> Result<Vec<Timer>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(of_entity_sql(tx.backend())))
        .bind(entity_kind.to_string())
        .bind(entity_id.to_string())
        .bind(state.as_str())
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(from_row).collect()
}

/// [`done_of_entity`]'s statement.
const DONE_OF_ENTITY: &str =
    "SELECT rule, fire_at FROM timers WHERE entity_kind = $1 AND entity_id = $2
   AND state IN ('fired', 'skipped')";

/// The moments (rule, fire instant) of one entity that already fired or were skipped.
pub async fn done_of_entity(
    tx: &mut Tx,
    entity_kind: &str,
    entity_id: &str,
) -> Result<std::collections::HashSet<(String, DateTime<Utc>)>, StoreError> {
    let rows = sqlx::query(DONE_OF_ENTITY)
        .bind(entity_kind.to_string())
        .bind(entity_id.to_string())
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("rule")?, from_ms(r.try_get("fire_at")?)?)))
        .collect()
}

/// A timer of an entity as planning weighs it: pending, or a moment done (fired or
/// skipped).
#[derive(Debug, Clone)]
pub struct PlanRow {
    pub id: i64,
    pub entity_id: String,
    pub rule: String,
    pub anchor_at: DateTime<Utc>,
    pub fire_at: DateTime<Utc>,
    pub pending: bool,
}

/// [`plan_rows_of`]'s statement for `ids` entities: their kind, then their ids
/// (padded, see [`super::padded`]).
fn plan_rows_sql(backend: Backend, ids: usize) -> String {
    let mut p = Placeholders::for_backend(backend);
    let kind = p.one();
    format!(
        "SELECT id, entity_id, rule, anchor_at, fire_at, state FROM timers
         WHERE entity_kind = {kind} AND entity_id IN ({})
           AND state IN ('pending', 'fired', 'skipped')
         ORDER BY entity_id, fire_at, id",
        p.padded_list(ids)
    )
}

/// The pending and done (fired or skipped) timers of the `entity_kind` entities
/// `ids`, in statements of many ids (see [`super::padded`]), by (entity, fire_at, id).
pub async fn plan_rows_of(
    tx: &mut Tx,
    entity_kind: &str,
    ids: &[&str],
) -> Result<Vec<PlanRow>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(super::MAX_ROWS) {
        let sql = plan_rows_sql(tx.backend(), chunk.len());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(entity_kind.to_string());
        for id in super::padded(chunk) {
            q = q.bind(id.to_string());
        }
        for r in q.fetch_all(&mut **tx).await? {
            let state: String = r.try_get("state")?;
            out.push(PlanRow {
                id: r.try_get("id")?,
                entity_id: r.try_get("entity_id")?,
                rule: r.try_get("rule")?,
                anchor_at: from_ms(r.try_get("anchor_at")?)?,
                fire_at: from_ms(r.try_get("fire_at")?)?,
                pending: state == "pending",
            });
        }
    }
    Ok(out)
}

/// A timer row to insert with [`insert_many`]: pending (holding its moment), or
/// already skipped or cancelled (with why).
#[derive(Debug, Clone)]
pub struct TimerRow<'a> {
    pub timer: NewTimer<'a>,
    pub state: TimerState,
    pub reason: Option<String>,
}

/// Inserts `rows` as [`insert_pending`] inserts one, in multi-row statements (a
/// skipped or cancelled row with its reason). A pending row must not repeat a moment
/// already pending or fired (see [`insert_head`]): SQLite leaves such a row out,
/// PostgreSQL refuses the transaction.
pub async fn insert_many(
    tx: &mut Tx,
    rows: &[TimerRow<'_>],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    // One statement per rule and slice of its rows: the rule's entity kind, name and
    // event type are bound once per statement, each row binds its entity, instants
    // and (only in a statement with a row not pending) its state and reason. Every
    // value bound is a copy and a call on the connection's thread, the one thread all
    // writes wait for; an entity planned with four rules binds 12 values, not 24.
    let mut by_rule: Vec<Vec<&TimerRow<'_>>> = Vec::new();
    for row in rows {
        let t = &row.timer;
        match by_rule.iter_mut().find(|g| {
            let first = &g[0].timer;
            first.rule == t.rule
                && first.entity_kind == t.entity_kind
                && first.event_type == t.event_type
        }) {
            Some(group) => group.push(row),
            None => by_rule.push(vec![row]),
        }
    }
    let parts: Vec<&[&TimerRow<'_>]> = by_rule
        .iter()
        .flat_map(|g| super::statement_chunks(g))
        .collect();
    let insert = insert_head(tx.backend());
    tx.execute_each(parts, |chunk, mut p| {
        let all_pending = chunk
            .iter()
            .all(|r| r.state == TimerState::Pending && r.reason.is_none());
        let (width, state) = match all_pending {
            true => (3, "'pending', NULL, 1"),
            false => (
                5,
                "column4, column5, CASE WHEN column4 = 'pending' THEN 1 END",
            ),
        };
        let (kind, rule, event_type) = (p.one(), p.one(), p.one());
        let (created, updated) = (p.one(), p.one());
        let sql = format!(
            "{insert} timers (entity_kind, entity_id, rule, event_type, anchor_at, fire_at, state, reason, live, created_at, updated_at)
             SELECT {kind}, column1, {rule}, {event_type}, column2, column3, {state}, {created}, {updated}
             FROM (VALUES {}) AS v",
            p.rows(chunk.len(), width)
        );
        let first = &chunk[0].timer;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(first.entity_kind.to_string())
            .bind(first.rule.to_string())
            .bind(first.event_type.to_string())
            .bind(to_ms(now))
            .bind(to_ms(now));
        for r in chunk {
            let t = &r.timer;
            q = q
                .bind(t.entity_id.to_string())
                .bind(to_ms(t.anchor_at))
                .bind(to_ms(t.fire_at));
            if !all_pending {
                q = q.bind(r.state.as_str()).bind(r.reason.clone());
            }
        }
        Ok(q)
    })
    .await
}

/// Moves many pending timers to `state`, each with its reason, as [`close`] moves
/// one, in multi-row statements (an `UPDATE … FROM (VALUES …)`, which both backends
/// read the same way: the list's columns are `column1`, `column2`).
pub async fn close_many(
    tx: &mut Tx,
    closes: &[(i64, String)],
    state: TimerState,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for chunk in super::statement_chunks(closes) {
        let mut p = Placeholders::for_tx(tx);
        let head = format!(
            "UPDATE timers SET state = {}, updated_at = {}, live = NULL, reason = v.column2 FROM (VALUES ",
            p.one(),
            p.one()
        );
        let sql = format!(
            "{head}{}) AS v WHERE timers.id = v.column1 AND timers.state = 'pending'",
            p.rows(chunk.len(), 2)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(state.as_str())
            .bind(to_ms(now));
        for (id, reason) in chunk {
            q = q.bind(*id).bind(reason.clone());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Plans a pending timer; a repeat of the same plan is a no-op. Returns its id when new.
pub async fn insert_pending(
    tx: &mut Tx,
    t: &NewTimer<'_>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    let sql = format!(
        "INSERT INTO timers (entity_kind, entity_id, rule, event_type, anchor_at, fire_at, state, live, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 1, $7, $7)
         {SAME_MOMENT} RETURNING id"
    );
    let id: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(t.entity_kind.to_string())
        .bind(t.entity_id.to_string())
        .bind(t.rule.to_string())
        .bind(t.event_type.to_string())
        .bind(to_ms(t.anchor_at))
        .bind(to_ms(t.fire_at))
        .bind(to_ms(now))
        .fetch_optional(&mut **tx)
        .await?;
    Ok(id)
}

/// Records a timer that was skipped when it was planned (its moment had already passed).
pub async fn insert_skipped(
    tx: &mut Tx,
    t: &NewTimer<'_>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let row = TimerRow {
        timer: t.clone(),
        state: TimerState::Skipped,
        reason: Some(reason.to_string()),
    };
    insert_many(tx, std::slice::from_ref(&row), now).await
}

/// Moves a pending timer to cancelled or skipped. False when it was no longer pending.
pub async fn close(
    tx: &mut Tx,
    id: i64,
    state: TimerState,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE timers SET state = $1, reason = $2, live = NULL, updated_at = $3 WHERE id = $4 AND state = 'pending'",
    )
    .bind(state.as_str())
    .bind(reason.to_string())
    .bind(to_ms(now))
    .bind(id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// [`next_pending`]'s statement.
const NEXT_PENDING: &str = "SELECT MIN(fire_at) FROM timers WHERE state = 'pending'";

/// The earliest pending fire instant, if any.
pub async fn next_pending(pool: &sqlx::AnyPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    let ms: Option<i64> = sqlx::query_scalar(NEXT_PENDING).fetch_one(pool).await?;
    ms.map(from_ms).transpose()
}

/// How many pending timers due at or before `at` `node` may fire: unclaimed, claimed by
/// `node`, or under a lapsed lease.
pub async fn due_count_for(
    pool: &sqlx::AnyPool,
    at: DateTime<Utc>,
    node: &str,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM timers WHERE state = 'pending' AND fire_at <= $1
           AND (claimed_by IS NULL OR claimed_by = $2 OR lease_until < $1)",
    )
    .bind(to_ms(at))
    .bind(node.to_string())
    .fetch_one(pool)
    .await?)
}

/// The earliest end of another node's lease on a pending timer due at or before `at`:
/// until then only that node may fire it (and a dead node never will).
pub async fn held_elsewhere_until(
    pool: &sqlx::AnyPool,
    at: DateTime<Utc>,
    node: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let ms: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(lease_until) FROM timers WHERE state = 'pending' AND fire_at <= $1
           AND claimed_by IS NOT NULL AND claimed_by <> $2 AND lease_until >= $1",
    )
    .bind(to_ms(at))
    .bind(node.to_string())
    .fetch_one(pool)
    .await?;
    ms.map(from_ms).transpose()
}

/// Timer counts per state: every state, zeros included (a gauge whose state emptied,
/// say every cancelled timer purged, must fall to 0 rather than keep its last value).
pub async fn count_by_state(pool: &sqlx::AnyPool) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM timers GROUP BY state")
        .fetch_all(pool)
        .await?;
    let mut counts = TimerState::ALL.map(|t| (t, 0_i64));
    for r in &rows {
        let state: String = r.try_get("state")?;
        let state = TimerState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("timer state `{state}`")))?;
        if let Some(count) = counts.iter_mut().find(|(t, _)| *t == state) {
            count.1 = r.try_get("n")?;
        }
    }
    Ok(counts
        .iter()
        .map(|(t, n)| (t.as_str().to_string(), *n))
        .collect())
}

/// Filters of `GET /admin/schedule`.
#[derive(Debug, Default, Clone)]
pub struct TimerFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub event_type: Option<String>,
    pub entity_kind: Option<String>,
    pub entity_id: Option<String>,
    pub state: Option<TimerState>,
    /// Cursor: only timers after this (fire_at, id).
    pub after: Option<(DateTime<Utc>, i64)>,
    pub limit: i64,
}

/// [`list`]'s statement for the filters `f` sets, its values bound in this order.
fn list_sql(backend: Backend, f: &TimerFilter) -> String {
    let mut sql = format!("SELECT {COLUMNS} FROM timers WHERE 1 = 1");
    let mut n = 0;
    let mut next = |cond: &str, sql: &mut String| {
        n += 1;
        sql.push_str(&cond.replace('?', &format!("${n}")));
    };
    if f.from.is_some() {
        next(" AND fire_at >= ?", &mut sql);
    }
    if f.to.is_some() {
        next(" AND fire_at < ?", &mut sql);
    }
    if f.event_type.is_some() {
        next(" AND event_type = ?", &mut sql);
    }
    if f.entity_kind.is_some() {
        next(" AND entity_kind = ?", &mut sql);
    }
    if f.entity_id.is_some() {
        next(" AND entity_id = ?", &mut sql);
    }
    if let Some(state) = f.state {
        let state_col = match f.entity_id {
            Some(_) => state_beside_entity(backend),
            None => "state",
        };
        // A literal, as the partial indexes name their rows: `timers_pending` holds
        // the pending timers, `timers_closed` the others, and either database picks a
        // partial index only for a query that names its condition.
        sql.push_str(&format!(" AND {state_col} = '{}'", state.as_str()));
        if state != TimerState::Pending {
            sql.push_str(&format!(" AND {state_col} <> 'pending'"));
        }
    }
    if f.after.is_some() {
        // (fire_at, id) > (a, b), written out: row values are not portable to every SQLite.
        n += 1;
        let a = n;
        n += 1;
        let b = n;
        sql.push_str(&format!(
            " AND (fire_at > ${a} OR (fire_at = ${a} AND id > ${b}))"
        ));
    }
    n += 1;
    sql.push_str(&format!(" ORDER BY fire_at, id LIMIT ${n}"));
    sql
}

/// Timers matching `f`, sorted by (fire_at, id).
pub async fn list(store: &Store, f: &TimerFilter) -> Result<Vec<Timer>, StoreError> {
    let sql = list_sql(store.backend(), f);
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(v) = f.from {
        q = q.bind(to_ms(v));
    }
    if let Some(v) = f.to {
        q = q.bind(to_ms(v));
    }
    if let Some(v) = &f.event_type {
        q = q.bind(v.clone());
    }
    if let Some(v) = &f.entity_kind {
        q = q.bind(v.clone());
    }
    if let Some(v) = &f.entity_id {
        q = q.bind(v.clone());
    }
    if let Some((at, id)) = f.after {
        q = q.bind(to_ms(at)).bind(id);
    }
    q = q.bind(f.limit);
    let rows = q.fetch_all(store.pool()).await?;
    rows.iter().map(from_row).collect()
}

/// Pending timers due up to `until`, counted per (event type, hour since the epoch).
pub async fn forecast(
    pool: &sqlx::AnyPool,
    until: DateTime<Utc>,
) -> Result<Vec<(String, i64, i64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT event_type, fire_at / 3600000 AS hour, COUNT(*) AS n FROM timers
         WHERE state = 'pending' AND fire_at <= $1 GROUP BY event_type, fire_at / 3600000 ORDER BY hour, event_type",
    )
    .bind(to_ms(until))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("event_type")?,
                r.try_get("hour")?,
                r.try_get("n")?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan of `sql` (its `EXPLAIN QUERY PLAN` lines). The store keeps no
    /// statistics for SQLite's planner, so an empty store is planned as a full one.
    async fn plan_of(store: &Store, sql: &str) -> String {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(store.pool())
            .await
            .expect("explain");
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").expect("detail"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A planned row gives way to the timer holding its moment, pending or fired, and
    /// only to that: the other rows of its statement are written, a closed row may
    /// share a moment, and a cancelled moment may be planned again.
    #[tokio::test]
    async fn insert_many_gives_way_to_the_same_moment_only() {
        let (_dir, store, _) = super::super::temp_sqlite_store().await;
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("instant");
        let at = |h: i64| now + chrono::TimeDelta::hours(h);
        let row = |id: &'static str, h: i64, state: TimerState| TimerRow {
            timer: NewTimer {
                entity_kind: "order",
                entity_id: id,
                rule: "due_in_1_hour",
                event_type: "order.due_in_1_hour",
                anchor_at: at(h + 1),
                fire_at: at(h),
            },
            state,
            reason: (state != TimerState::Pending).then(|| "test".to_string()),
        };
        let pending = |id: &'static str, h| row(id, h, TimerState::Pending);
        let mut tx = store.begin().await.expect("begin");
        insert_many(&mut tx, &[pending("o1", 1), pending("o2", 1)], now)
            .await
            .expect("first plan");
        // o1's moment is held: its repeat gives way, o3 beside it is written.
        insert_many(&mut tx, &[pending("o1", 1), pending("o3", 1)], now)
            .await
            .expect("repeat");
        // A closed row beside a held moment, in a statement of mixed states.
        insert_many(
            &mut tx,
            &[row("o2", 1, TimerState::Skipped), pending("o2", 2)],
            now,
        )
        .await
        .expect("mixed");
        let o1 = of_entity(&mut tx, "order", "o1", TimerState::Pending)
            .await
            .expect("o1");
        assert!(
            close(&mut tx, o1[0].id, TimerState::Cancelled, "moved", now)
                .await
                .expect("cancel")
        );
        insert_many(&mut tx, &[pending("o1", 1)], now)
            .await
            .expect("planned again");
        tx.commit().await.expect("commit");
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT entity_id, state, fire_at FROM timers ORDER BY entity_id, fire_at, state",
        )
        .fetch_all(store.pool())
        .await
        .expect("rows");
        let ms = |h| to_ms(at(h));
        let want = [
            ("o1", "cancelled", ms(1)),
            ("o1", "pending", ms(1)),
            ("o2", "pending", ms(1)),
            ("o2", "skipped", ms(1)),
            ("o2", "pending", ms(2)),
            ("o3", "pending", ms(1)),
        ]
        .map(|(id, state, at)| (id.to_string(), state.to_string(), at));
        assert_eq!(rows, want);
        store.close().await;
    }

    /// The queries about one entity read its few timers through the entity index, never
    /// every timer in a state through the state index (on SQLite, which keeps no
    /// statistics, the state index gives the due order they ask for); the queries
    /// across entities read the pending timers' index or the closed timers' one.
    #[tokio::test]
    async fn an_entitys_timers_are_read_through_the_entity_index() {
        let (_dir, store, _) = super::super::temp_sqlite_store().await;
        let by_entity = "USING INDEX timers_by_entity (entity_kind=? AND entity_id=?";
        let one = TimerFilter {
            entity_kind: Some("order".into()),
            entity_id: Some("o1".into()),
            state: Some(TimerState::Pending),
            limit: 10,
            ..Default::default()
        };
        for (what, sql) in [
            ("of_entity", of_entity_sql(Backend::Sqlite)),
            ("done_of_entity", DONE_OF_ENTITY.to_string()),
            ("plan_rows_of, one id", plan_rows_sql(Backend::Sqlite, 1)),
            ("plan_rows_of, 512 ids", plan_rows_sql(Backend::Sqlite, 512)),
            ("list, entity and state", list_sql(Backend::Sqlite, &one)),
            (
                "list, entity",
                list_sql(
                    Backend::Sqlite,
                    &TimerFilter {
                        state: None,
                        ..one.clone()
                    },
                ),
            ),
        ] {
            let plan = plan_of(&store, &sql).await;
            assert!(plan.contains(by_entity), "{what}: {plan}");
        }
        let due = TimerFilter {
            state: Some(TimerState::Pending),
            to: DateTime::from_timestamp(1_800_000_000, 0),
            limit: 1,
            ..Default::default()
        };
        let pending = "INDEX timers_pending (fire_at";
        for (what, sql) in [
            ("list, pending and due", list_sql(Backend::Sqlite, &due)),
            ("due_timers", super::super::cluster::DUE_TIMERS.to_string()),
        ] {
            let plan = plan_of(&store, &sql).await;
            assert!(plan.contains(pending), "{what}: {plan}");
        }
        let plan = plan_of(&store, NEXT_PENDING).await;
        assert!(
            plan.contains("USING COVERING INDEX timers_pending"),
            "{plan}"
        );
        for state in [
            TimerState::Fired,
            TimerState::Cancelled,
            TimerState::Skipped,
        ] {
            let closed = TimerFilter {
                state: Some(state),
                ..due.clone()
            };
            let plan = plan_of(&store, &list_sql(Backend::Sqlite, &closed)).await;
            assert!(
                plan.contains("USING INDEX timers_closed (state=? AND fire_at<?)"),
                "{state:?}: {plan}"
            );
        }
        store.close().await;
    }
}
