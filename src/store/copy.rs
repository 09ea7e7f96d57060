//! `duehook copy-store`: copies a whole store into another one (SQLite to PostgreSQL
//! when one node becomes several, PostgreSQL to SQLite for a restore drill) while no
//! service runs on either, and proves the copy table by table.
//!
//! What it owns, and why it is shaped this way:
//!
//! - **Everything that matters is copied as stored**: entities, timers with their
//!   states and reasons (the digest chain is timers too), events with their `seq`,
//!   deliveries (a pending one keeps its event id, so its `webhook-id` does not
//!   change), attempts, endpoints with their secrets as stored (sealed ones are copied
//!   as their text, never opened: the nodes on the target need the same
//!   `[store] secret_key`), alerts. Every column of every table, keys included, in key
//!   order. Autoincrement positions (`events.seq`, `timers.id`, …) are carried over,
//!   so the target never hands out a key the source already used.
//! - **Not copied**: the `nodes` table (the service that ran on the source is stopped;
//!   the target's nodes register themselves, and its own rows stay) and timer and delivery claims
//!   (`claimed_by`, `lease_until`: cleared, the new nodes claim afresh). The migration
//!   bookkeeping is each store's own; both are first migrated to this binary's version.
//! - **Nobody else on either store.** A SQLite store is held through the service's own
//!   lock file for the whole copy, so a service cannot start on it meanwhile. On
//!   PostgreSQL a node that has not stopped and was seen within `[cluster] lease` of
//!   the real time counts as running; the copy locks the `nodes` table (a node that
//!   starts meanwhile waits in its registration until the copy ends) and looks again.
//! - **One transaction on the target.** The target is written in one transaction that
//!   commits only after every table verified, so an interrupted copy (a kill, a lost
//!   connection, a failed check) leaves the target as it was before, and a re-run
//!   starts from there: no marker to recognise, nothing half-copied to clean up. Only
//!   the target's sequence positions may have moved (PostgreSQL sequences are not
//!   transactional); a re-run sets them again.
//! - **A non-empty target is refused** unless [`CopyOptions::replace_target`] says to
//!   delete what it holds (in the same transaction).
//! - **Verification.** For each table the row count and a checksum of the rows are
//!   computed on the source while it is read and on the target by reading it back
//!   within the copy's transaction. The checksum is the sum (mod 2^256) of the SHA-256
//!   of each row's canonical rendering (column by column: null, integer or text), so
//!   it does not depend on the order rows come in: PostgreSQL and SQLite order text
//!   keys by different collations. Rows whose claim was cleared are hashed as copied.

use std::io::Write;

use chrono::{DateTime, TimeDelta, Utc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Backend, Placeholders, Store, StoreError, statement_chunks, to_ms};

/// What a copy may do beyond copying.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Delete every row the target's tables hold before copying (a non-empty target is
    /// refused otherwise).
    pub replace_target: bool,
    /// The real time now: a PostgreSQL node seen within `lease` of it, and not stopped,
    /// counts as running.
    pub now: DateTime<Utc>,
    /// `[cluster] lease`: how long after its last heartbeat a node that did not stop
    /// may still be alive.
    pub lease: TimeDelta,
}

/// What a copy did; every table in it was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Migrations applied to the source and to the target before the copy.
    pub source_migrated: usize,
    pub target_migrated: usize,
    /// Rows deleted from the target first ([`CopyOptions::replace_target`]).
    pub replaced_rows: u64,
    /// Endpoint secrets stored sealed: the target's nodes need the same
    /// `[store] secret_key` to sign with them.
    pub sealed_secrets: u64,
    /// One per table copied, in the order copied.
    pub tables: Vec<TableReport>,
}

/// One table copied and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    pub table: &'static str,
    /// Rows on both sides.
    pub rows: u64,
    /// The same on both sides: 64 hex digits (see the module docs).
    pub checksum: String,
    /// For a table with an autoincrement key: the last key handed out, on both sides
    /// from now on (a new row on the target gets a larger one).
    pub last_key: Option<i64>,
}

/// Which store a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("--from and --to name the same store")]
    SameStore,
    #[error("the {0} is an in-memory SQLite database: name a file")]
    InMemory(Side),
    #[error("the source SQLite file {0} does not exist")]
    SourceMissing(String),
    #[error("the source is not a duehook store (it has no migrations table)")]
    NotAStore,
    #[error("a duehook service is running on the {side}: {detail}")]
    Held { side: Side, detail: String },
    #[error(
        "the {side} has migrations this binary does not know ({versions:?}): use the duehook version that wrote them"
    )]
    UnknownMigrations { side: Side, versions: Vec<i64> },
    #[error("the {side}'s table `{table}` {detail}")]
    Schema {
        side: Side,
        table: String,
        detail: String,
    },
    #[error(
        "the target is not empty ({0}): name an empty store, or pass --replace-target to delete what it holds"
    )]
    TargetNotEmpty(String),
    #[error(
        "verification failed for table `{table}`: source {source_rows} rows, checksum {source_checksum}; target {target_rows} rows, checksum {target_checksum} (nothing was committed)"
    )]
    Mismatch {
        table: &'static str,
        source_rows: u64,
        target_rows: u64,
        source_checksum: String,
        target_checksum: String,
    },
    #[error("the {side}'s lock file: {detail}")]
    LockFile { side: Side, detail: String },
    #[error("{side}: {error}")]
    Store {
        side: Side,
        #[source]
        error: StoreError,
    },
}

impl CopyError {
    /// True when the copy refused to start (the stores are as they were, apart from
    /// migrations applied), false when it failed on the way.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            CopyError::SameStore
                | CopyError::InMemory(_)
                | CopyError::SourceMissing(_)
                | CopyError::NotAStore
                | CopyError::Held { .. }
                | CopyError::UnknownMigrations { .. }
                | CopyError::Schema { .. }
                | CopyError::TargetNotEmpty(_)
        )
    }
}

/// A table copied: its key (the copy reads in key order), its autoincrement column if
/// any, and the columns cleared in the copy.
struct TableSpec {
    name: &'static str,
    key: &'static [&'static str],
    serial: Option<&'static str>,
    cleared: &'static [&'static str],
}

const CLAIMS: &[&str] = &["claimed_by", "lease_until"];

/// Every table copied, parents before the tables whose foreign keys name them.
const TABLES: &[TableSpec] = &[
    TableSpec::plain("contacts", &["id"]),
    TableSpec::plain("items", &["id"]),
    TableSpec::plain("reservations", &["id"]),
    TableSpec::plain("orders", &["id"]),
    TableSpec::plain("order_items", &["order_id", "item_id"]),
    TableSpec::plain("unit_rentals", &["id"]),
    TableSpec::plain("invoices", &["id"]),
    TableSpec::serial("events", &["seq"], &[]),
    TableSpec::serial("timers", &["id"], CLAIMS),
    TableSpec::plain("endpoints", &["id"]),
    TableSpec::serial("deliveries", &["seq"], CLAIMS),
    TableSpec::serial("attempts", &["id"], &[]),
    TableSpec::serial("alerts", &["id"], &[]),
];

/// Tables a store may hold that are not copied (see the module docs). Any other table
/// is refused: a table added by a later migration must be named here or in [`TABLES`].
const NOT_COPIED: &[&str] = &["_sqlx_migrations", "nodes"];

impl TableSpec {
    const fn plain(name: &'static str, key: &'static [&'static str]) -> Self {
        Self {
            name,
            key,
            serial: None,
            cleared: &[],
        }
    }

    /// A table keyed by one autoincrement column.
    const fn serial(
        name: &'static str,
        key: &'static [&'static str; 1],
        cleared: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            key,
            serial: Some(key[0]),
            cleared,
        }
    }
}

/// Rows read from the source before they are written to the target.
const READ_BATCH: usize = 4096;
/// Most bind values in one statement (SQLite's default limit; PostgreSQL allows more).
const MAX_BINDS: usize = 32_766;

/// Copies the whole store at `from` into the store at `to` and verifies it (see the
/// module docs), writing progress lines to `progress`.
pub async fn copy_store(
    from: &str,
    to: &str,
    options: &CopyOptions,
    progress: &mut (dyn Write + Send),
) -> Result<CopyReport, CopyError> {
    let mut out = Progress::new(progress);
    check_paths(from, to)?;
    // Held until the end: a service cannot start on either SQLite file meanwhile.
    let _source_lock = lock(from, Side::Source)?;
    let _target_lock = lock(to, Side::Target)?;
    let source = Store::connect(from, 2).await.map_err(on(Side::Source))?;
    let target = match Store::connect(to, 2).await {
        Ok(t) => t,
        Err(e) => {
            source.close().await;
            return Err(CopyError::Store {
                side: Side::Target,
                error: e,
            });
        }
    };
    let result = copy_between(&source, &target, options, &mut out).await;
    source.close().await;
    target.close().await;
    result
}

async fn copy_between(
    source: &Store,
    target: &Store,
    options: &CopyOptions,
    out: &mut Progress<'_>,
) -> Result<CopyReport, CopyError> {
    if applied_versions(source)
        .await
        .map_err(on(Side::Source))?
        .is_none()
    {
        return Err(CopyError::NotAStore);
    }
    for (side, store) in [(Side::Source, source), (Side::Target, target)] {
        refuse_unknown_migrations(store, side).await?;
        let mut conn = store
            .pool()
            .acquire()
            .await
            .map_err(|e| on(side)(e.into()))?;
        refuse_live_nodes(&mut conn, store.backend(), side, options).await?;
    }
    let source_migrated = migrate(source, Side::Source, out).await?;
    let target_migrated = migrate(target, Side::Target, out).await?;
    let mut columns = Vec::with_capacity(TABLES.len());
    for spec in TABLES {
        let cols = columns_of(source, Side::Source, spec.name).await?;
        let theirs = columns_of(target, Side::Target, spec.name).await?;
        if cols != theirs {
            return Err(CopyError::Schema {
                side: Side::Target,
                table: spec.name.into(),
                detail: format!(
                    "has columns {} where the source has {}",
                    describe(&theirs),
                    describe(&cols)
                ),
            });
        }
        columns.push(cols);
    }
    refuse_unknown_tables(source, Side::Source).await?;
    refuse_unknown_tables(target, Side::Target).await?;

    // The source is read in one snapshot; the target written in one transaction.
    let mut src = match source.backend() {
        Backend::Sqlite => source.pool().begin().await,
        Backend::Postgres => {
            source
                .pool()
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ")
                .await
        }
    }
    .map_err(|e| on(Side::Source)(e.into()))?;
    let mut dst = target.begin().await.map_err(on(Side::Target))?;
    if source.backend() == Backend::Postgres {
        // A node starting on the source now waits until the copy ends.
        exec(&mut src, "LOCK TABLE nodes IN SHARE MODE", Side::Source).await?;
        refuse_live_nodes(&mut src, Backend::Postgres, Side::Source, options).await?;
    }
    if target.backend() == Backend::Postgres {
        exec(&mut dst, "LOCK TABLE nodes IN EXCLUSIVE MODE", Side::Target).await?;
        refuse_live_nodes(&mut dst, Backend::Postgres, Side::Target, options).await?;
    }

    let replaced_rows = empty_target(&mut dst, target.backend(), options.replace_target).await?;
    if replaced_rows > 0 {
        out.line(&format!(
            "deleted {replaced_rows} rows the target held (--replace-target)"
        ));
    }
    let sealed_secrets: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM endpoints WHERE secret LIKE 'sealed:%' OR previous_secret LIKE 'sealed:%'",
    )
    .fetch_one(&mut *src)
    .await
    .map_err(|e| on(Side::Source)(e.into()))?;

    let mut copied = Vec::with_capacity(TABLES.len());
    for (spec, cols) in TABLES.iter().zip(&columns) {
        let (sum, counted) =
            copy_table(&mut src, &mut dst, target.backend(), spec, cols, out).await?;
        let last_key = match spec.serial {
            Some(column) => Some(
                carry_sequence(
                    &mut src,
                    source.backend(),
                    &mut dst,
                    target.backend(),
                    spec.name,
                    column,
                    sum.max_key,
                )
                .await?,
            ),
            None => None,
        };
        copied.push((sum, counted, last_key));
    }

    let mut tables = Vec::with_capacity(TABLES.len());
    for ((spec, cols), (sum, counted, last_key)) in TABLES.iter().zip(&columns).zip(copied) {
        let theirs = checksum_of(&mut dst, spec, cols).await?;
        // Three counts agree: the source's COUNT(*), the rows read from it (and
        // written), the rows read back from the target.
        if theirs.rows != sum.rows || counted != sum.rows || theirs.sum != sum.sum {
            return Err(CopyError::Mismatch {
                table: spec.name,
                source_rows: counted,
                target_rows: theirs.rows,
                source_checksum: sum.hex(),
                target_checksum: theirs.hex(),
            });
        }
        out.line(&format!(
            "verified {}: {} rows, checksum {}",
            spec.name,
            sum.rows,
            &sum.hex()[..16]
        ));
        tables.push(TableReport {
            table: spec.name,
            rows: sum.rows,
            checksum: sum.hex(),
            last_key,
        });
    }
    dst.commit().await.map_err(|e| on(Side::Target)(e))?;
    // The source was only read.
    let _ = src.rollback().await;
    out.line("committed");
    Ok(CopyReport {
        source_migrated,
        target_migrated,
        replaced_rows,
        sealed_secrets: u64::try_from(sealed_secrets).unwrap_or(0),
        tables,
    })
}

fn on(side: Side) -> impl Fn(StoreError) -> CopyError {
    move |error| CopyError::Store { side, error }
}

async fn exec(conn: &mut AnyConnection, sql: &'static str, side: Side) -> Result<(), CopyError> {
    sqlx::query(sql)
        .execute(conn)
        .await
        .map_err(|e| on(side)(e.into()))?;
    Ok(())
}

/// The file of a `sqlite:` URL, `Some("")` for an in-memory one, None for PostgreSQL.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    Some(if path.contains(":memory:") { "" } else { path })
}

/// Refuses in-memory databases, a missing source file and copying a store onto itself.
fn check_paths(from: &str, to: &str) -> Result<(), CopyError> {
    let (source, target) = (sqlite_path(from), sqlite_path(to));
    for (side, path) in [(Side::Source, source), (Side::Target, target)] {
        if path == Some("") {
            return Err(CopyError::InMemory(side));
        }
    }
    match (source, target) {
        (Some(s), _) if !std::path::Path::new(s).exists() => {
            Err(CopyError::SourceMissing(s.to_string()))
        }
        (Some(s), Some(t)) => {
            let same = match (std::fs::canonicalize(s), std::fs::canonicalize(t)) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            if same {
                Err(CopyError::SameStore)
            } else {
                Ok(())
            }
        }
        (None, None) => {
            let place = |u: &str| {
                url::Url::parse(u).ok().map(|u| {
                    (
                        u.host_str().unwrap_or("").to_string(),
                        u.port().unwrap_or(5432),
                        u.path().to_string(),
                    )
                })
            };
            match (place(from), place(to)) {
                (Some(a), Some(b)) if a == b => Err(CopyError::SameStore),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// The service's own lock on a SQLite file (nothing for PostgreSQL).
fn lock(url: &str, side: Side) -> Result<Option<super::lock::SqliteLock>, CopyError> {
    super::lock::lock_sqlite(url).map_err(|e| match e {
        super::lock::LockError::Held(path) => CopyError::Held {
            side,
            detail: format!(
                "another process holds the lock on {} (stop the service first)",
                path.display()
            ),
        },
        other => CopyError::LockFile {
            side,
            detail: other.to_string(),
        },
    })
}

/// The migration versions the store applied, None when it was never migrated.
async fn applied_versions(store: &Store) -> Result<Option<Vec<i64>>, StoreError> {
    let exists_sql = match store.backend() {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
        }
    };
    let exists: i64 = sqlx::query_scalar(exists_sql)
        .fetch_one(store.pool())
        .await?;
    if exists == 0 {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await?,
    ))
}

async fn refuse_unknown_migrations(store: &Store, side: Side) -> Result<(), CopyError> {
    let Some(applied) = applied_versions(store).await.map_err(on(side))? else {
        return Ok(());
    };
    let known: Vec<i64> = store.migrator().iter().map(|m| m.version).collect();
    let versions: Vec<i64> = applied.into_iter().filter(|v| !known.contains(v)).collect();
    if versions.is_empty() {
        Ok(())
    } else {
        Err(CopyError::UnknownMigrations { side, versions })
    }
}

/// Applies the store's pending migrations, saying so; how many.
async fn migrate(store: &Store, side: Side, out: &mut Progress<'_>) -> Result<usize, CopyError> {
    let pending = store.pending_migration_list().await.map_err(on(side))?;
    if !pending.is_empty() {
        out.line(&format!(
            "migrating the {side}: {} pending migration(s)",
            pending.len()
        ));
        store.migrate().await.map_err(on(side))?;
    }
    Ok(pending.len())
}

/// On PostgreSQL: refuses when a node that has not stopped was seen within the lease,
/// or a pending timer is claimed under a lease that has not run out. (SQLite's lock
/// file says the same for SQLite.)
async fn refuse_live_nodes(
    conn: &mut AnyConnection,
    backend: Backend,
    side: Side,
    options: &CopyOptions,
) -> Result<(), CopyError> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    let fail = |e: sqlx::Error| on(side)(e.into());
    let nodes_table: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name IN ('nodes', 'timers')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(fail)?;
    if nodes_table < 2 {
        // Not migrated yet: no service ever ran on it.
        return Ok(());
    }
    let alive: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, last_seen FROM nodes WHERE stopped_at IS NULL AND last_seen >= $1 ORDER BY last_seen DESC, id LIMIT 5",
    )
    .bind(to_ms(options.now - options.lease))
    .fetch_all(&mut *conn)
    .await
    .map_err(fail)?;
    if let Some((id, last_seen)) = alive.first() {
        let seen = DateTime::from_timestamp_millis(*last_seen)
            .map_or_else(|| last_seen.to_string(), |t| t.to_rfc3339());
        return Err(CopyError::Held {
            side,
            detail: format!(
                "node {id} (and {} more) has not stopped and was last seen at {seen}, within the lease of {}s; stop every node first (a node that died counts as gone once the lease has passed since it was last seen)",
                alive.len() - 1,
                options.lease.num_seconds()
            ),
        });
    }
    let claimed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM timers WHERE state = 'pending' AND claimed_by IS NOT NULL AND lease_until >= $1",
    )
    .bind(to_ms(options.now))
    .fetch_one(&mut *conn)
    .await
    .map_err(fail)?;
    if claimed > 0 {
        return Err(CopyError::Held {
            side,
            detail: format!(
                "{claimed} pending timer(s) are claimed under a lease that has not run out; stop every node first, or wait for the leases ({}s)",
                options.lease.num_seconds()
            ),
        });
    }
    Ok(())
}

/// A column's stored kind: every column of the schema is an integer or text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    kind: Kind,
}

fn describe(cols: &[Column]) -> String {
    let names: Vec<String> = cols
        .iter()
        .map(|c| format!("{} {:?}", c.name, c.kind))
        .collect();
    format!("({})", names.join(", "))
}

/// The table's columns as the store declares them, in declaration order.
async fn columns_of(store: &Store, side: Side, table: &str) -> Result<Vec<Column>, CopyError> {
    let sql = match store.backend() {
        Backend::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
        Backend::Postgres => {
            "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
        }
    };
    let rows: Vec<(String, String)> = sqlx::query_as(sql)
        .bind(table.to_string())
        .fetch_all(store.pool())
        .await
        .map_err(|e| on(side)(e.into()))?;
    if rows.is_empty() {
        return Err(CopyError::Schema {
            side,
            table: table.into(),
            detail: "is missing".into(),
        });
    }
    rows.into_iter()
        .map(|(name, declared)| {
            let upper = declared.to_ascii_uppercase();
            let kind = if upper.contains("INT") {
                Kind::Int
            } else if upper.contains("TEXT") || upper.contains("CHAR") {
                Kind::Text
            } else {
                return Err(CopyError::Schema {
                    side,
                    table: table.into(),
                    detail: format!("has column `{name}` of type {declared}, which is not copied"),
                });
            };
            Ok(Column { name, kind })
        })
        .collect()
}

async fn refuse_unknown_tables(store: &Store, side: Side) -> Result<(), CopyError> {
    let sql = match store.backend() {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        }
        Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
        }
    };
    let names: Vec<String> = sqlx::query_scalar(sql)
        .fetch_all(store.pool())
        .await
        .map_err(|e| on(side)(e.into()))?;
    match names
        .into_iter()
        .find(|n| !NOT_COPIED.contains(&n.as_str()) && !TABLES.iter().any(|t| t.name == n.as_str()))
    {
        Some(table) => Err(CopyError::Schema {
            side,
            table,
            detail: "is not known to copy-store: use the duehook version that created it".into(),
        }),
        None => Ok(()),
    }
}

/// Refuses a target whose tables hold rows, or deletes them when `replace`; the rows
/// deleted.
async fn empty_target(
    dst: &mut AnyConnection,
    backend: Backend,
    replace: bool,
) -> Result<u64, CopyError> {
    let fail = |e: sqlx::Error| on(Side::Target)(e.into());
    let mut held = Vec::new();
    let mut total = 0u64;
    for spec in TABLES {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            spec.name
        )))
        .fetch_one(&mut *dst)
        .await
        .map_err(fail)?;
        if n > 0 {
            held.push(format!("{} {n} rows", spec.name));
            total += n as u64;
        }
    }
    if total == 0 {
        return Ok(0);
    }
    if !replace {
        return Err(CopyError::TargetNotEmpty(held.join(", ")));
    }
    match backend {
        Backend::Postgres => {
            let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "TRUNCATE {}",
                names.join(", ")
            )))
            .execute(&mut *dst)
            .await
            .map_err(fail)?;
        }
        Backend::Sqlite => {
            // Children first: foreign keys are enforced.
            for spec in TABLES.iter().rev() {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {}", spec.name)))
                    .execute(&mut *dst)
                    .await
                    .map_err(fail)?;
            }
        }
    }
    Ok(total)
}

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Null,
    Int(i64),
    Text(String),
}

fn read_row(
    row: &AnyRow,
    table: &str,
    cols: &[Column],
    side: Side,
) -> Result<Vec<Value>, CopyError> {
    cols.iter()
        .enumerate()
        .map(|(i, col)| {
            let value = match col.kind {
                Kind::Int => row
                    .try_get::<Option<i64>, _>(i)
                    .map(|v| v.map_or(Value::Null, Value::Int)),
                Kind::Text => row
                    .try_get::<Option<String>, _>(i)
                    .map(|v| v.map_or(Value::Null, Value::Text)),
            };
            value.map_err(|e| CopyError::Store {
                side,
                error: StoreError::Corrupt(format!("{table}.{}: {e}", col.name)),
            })
        })
        .collect()
}

/// The count and order-independent checksum of a table's rows (see the module docs),
/// and the largest integer key seen.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Checksum {
    rows: u64,
    /// Little-endian limbs of the 256-bit sum.
    sum: [u64; 4],
    max_key: i64,
}

impl Checksum {
    fn add(&mut self, row: &[Value]) {
        let mut h = Sha256::new();
        for v in row {
            match v {
                Value::Null => h.update(b"N"),
                Value::Int(n) => {
                    h.update(b"I");
                    h.update(n.to_be_bytes());
                }
                Value::Text(s) => {
                    h.update(b"T");
                    h.update((s.len() as u64).to_be_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
        let digest = h.finalize();
        let mut carry = false;
        for (i, limb) in self.sum.iter_mut().enumerate() {
            let part = u64::from_le_bytes(digest[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            let (s1, c1) = limb.overflowing_add(part);
            let (s2, c2) = s1.overflowing_add(u64::from(carry));
            *limb = s2;
            carry = c1 || c2;
        }
        self.rows += 1;
    }

    fn hex(&self) -> String {
        self.sum
            .iter()
            .rev()
            .map(|limb| format!("{limb:016x}"))
            .collect()
    }
}

/// The SELECT of a table's columns, in key order.
fn select_sql(spec: &TableSpec, cols: &[Column]) -> String {
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        names.join(", "),
        spec.name,
        spec.key.join(", ")
    )
}

/// Copies one table in key order, in batches: the source side's checksum (of the
/// rows as written) and the source's own count of its rows.
async fn copy_table(
    src: &mut AnyConnection,
    dst: &mut AnyConnection,
    target: Backend,
    spec: &TableSpec,
    cols: &[Column],
    out: &mut Progress<'_>,
) -> Result<(Checksum, u64), CopyError> {
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {}",
        spec.name
    )))
    .fetch_one(&mut *src)
    .await
    .map_err(|e| on(Side::Source)(e.into()))?;
    let cleared: Vec<usize> = cols
        .iter()
        .enumerate()
        .filter(|(_, c)| spec.cleared.contains(&c.name.as_str()))
        .map(|(i, _)| i)
        .collect();
    let key_index = spec
        .serial
        .and_then(|k| cols.iter().position(|c| c.name == k));
    let mut sum = Checksum::default();
    let mut batch: Vec<Vec<Value>> = Vec::with_capacity(READ_BATCH);
    let sql = select_sql(spec, cols);
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&mut *src);
    loop {
        let row = rows
            .try_next()
            .await
            .map_err(|e| on(Side::Source)(e.into()))?;
        let done = row.is_none();
        if let Some(row) = row {
            let mut values = read_row(&row, spec.name, cols, Side::Source)?;
            for &i in &cleared {
                values[i] = Value::Null;
            }
            if let Some(Value::Int(k)) = key_index.map(|i| &values[i]) {
                sum.max_key = sum.max_key.max(*k);
            }
            sum.add(&values);
            batch.push(values);
        }
        if batch.len() >= READ_BATCH || (done && !batch.is_empty()) {
            insert_rows(dst, target, spec.name, cols, &batch).await?;
            batch.clear();
            out.table(spec.name, sum.rows, total, done);
        }
        if done {
            break;
        }
    }
    if sum.rows == 0 {
        out.table(spec.name, 0, total, true);
    }
    Ok((sum, u64::try_from(total).unwrap_or(0)))
}

/// Multi-row INSERTs of `rows` (statement sizes from [`statement_chunks`], kept within
/// [`MAX_BINDS`]).
async fn insert_rows(
    dst: &mut AnyConnection,
    target: Backend,
    table: &str,
    cols: &[Column],
    rows: &[Vec<Value>],
) -> Result<(), CopyError> {
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    let per_statement = max_rows_per_statement(cols.len());
    for chunk in statement_chunks(rows) {
        for part in chunk.chunks(per_statement) {
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES {}",
                names.join(", "),
                Placeholders::for_backend(target).rows(part.len(), cols.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in part {
                for (value, col) in row.iter().zip(cols) {
                    q = match (value, col.kind) {
                        (Value::Null, Kind::Int) => q.bind(None::<i64>),
                        (Value::Null, Kind::Text) => q.bind(None::<String>),
                        (Value::Int(n), _) => q.bind(*n),
                        (Value::Text(s), _) => q.bind(s.clone()),
                    };
                }
            }
            q.execute(&mut *dst)
                .await
                .map_err(|e| on(Side::Target)(e.into()))?;
        }
    }
    Ok(())
}

/// Rows per INSERT for a table of `width` columns: a power of two (so the chunks of
/// [`statement_chunks`] split evenly) within [`MAX_BINDS`].
fn max_rows_per_statement(width: usize) -> usize {
    let fit = (MAX_BINDS / width.max(1)).clamp(1, super::MAX_ROWS);
    1 << (usize::BITS - 1 - fit.leading_zeros())
}

/// Sets the target's autoincrement position of `table` to the source's (at least the
/// largest key copied); that position.
async fn carry_sequence(
    src: &mut AnyConnection,
    source: Backend,
    dst: &mut AnyConnection,
    target: Backend,
    table: &str,
    column: &str,
    max_key: i64,
) -> Result<i64, CopyError> {
    let at_source = sequence_position(src, source, table, column)
        .await
        .map_err(on(Side::Source))?;
    let last = at_source.max(max_key);
    let fail = |e: sqlx::Error| on(Side::Target)(e.into());
    match target {
        Backend::Postgres => {
            // setval(seq, n, true): the next value is n + 1; (seq, 1, false): it is 1.
            sqlx::query("SELECT setval(CAST(pg_get_serial_sequence($1, $2) AS regclass), $3, $4)")
                .bind(table.to_string())
                .bind(column.to_string())
                .bind(last.max(1))
                .bind(last > 0)
                .execute(&mut *dst)
                .await
                .map_err(fail)?;
        }
        Backend::Sqlite => {
            let n = sqlx::query("UPDATE sqlite_sequence SET seq = $1 WHERE name = $2")
                .bind(last)
                .bind(table.to_string())
                .execute(&mut *dst)
                .await
                .map_err(fail)?
                .rows_affected();
            if n == 0 {
                sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)")
                    .bind(table.to_string())
                    .bind(last)
                    .execute(&mut *dst)
                    .await
                    .map_err(fail)?;
            }
        }
    }
    let at_target = sequence_position(dst, target, table, column)
        .await
        .map_err(on(Side::Target))?;
    if at_target != last {
        return Err(CopyError::Store {
            side: Side::Target,
            error: StoreError::Corrupt(format!(
                "the autoincrement position of {table} is {at_target} after setting it to {last}"
            )),
        });
    }
    Ok(last)
}

/// The last key an autoincrement column handed out (0 for none).
async fn sequence_position(
    conn: &mut AnyConnection,
    backend: Backend,
    table: &str,
    column: &str,
) -> Result<i64, StoreError> {
    let at: Option<i64> =
        match backend {
            Backend::Sqlite => {
                sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
                    .bind(table.to_string())
                    .fetch_optional(&mut *conn)
                    .await?
            }
            Backend::Postgres => sqlx::query_scalar(
                "SELECT pg_sequence_last_value(CAST(pg_get_serial_sequence($1, $2) AS regclass))",
            )
            .bind(table.to_string())
            .bind(column.to_string())
            .fetch_one(&mut *conn)
            .await?,
        };
    Ok(at.unwrap_or(0))
}

/// The target's count and checksum of a table, read back within the copy's transaction.
async fn checksum_of(
    dst: &mut AnyConnection,
    spec: &TableSpec,
    cols: &[Column],
) -> Result<Checksum, CopyError> {
    let mut sum = Checksum::default();
    let sql = select_sql(spec, cols);
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch(&mut *dst);
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(|e| on(Side::Target)(e.into()))?
    {
        sum.add(&read_row(&row, spec.name, cols, Side::Target)?);
    }
    Ok(sum)
}

/// Progress lines: `copy-store: …`, a table's at most once a second while it is copied
/// and once when it is done. Write errors are ignored (a closed stderr is no reason to
/// fail a copy).
struct Progress<'a> {
    out: &'a mut (dyn Write + Send),
    last: Option<tokio::time::Instant>,
}

impl<'a> Progress<'a> {
    fn new(out: &'a mut (dyn Write + Send)) -> Self {
        Self { out, last: None }
    }

    fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "copy-store: {text}");
    }

    fn table(&mut self, table: &str, copied: u64, total: i64, done: bool) {
        let now = tokio::time::Instant::now();
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(1));
        if done || due {
            self.line(&format!("{table}: {copied} of {total} rows"));
            self.last = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_ignore_row_order_and_see_every_value() {
        let rows = [
            vec![Value::Int(1), Value::Text("a".into()), Value::Null],
            vec![Value::Int(2), Value::Text("b".into()), Value::Int(0)],
            vec![Value::Int(3), Value::Text(String::new()), Value::Null],
        ];
        let mut forward = Checksum::default();
        rows.iter().for_each(|r| forward.add(r));
        let mut backward = Checksum::default();
        rows.iter().rev().for_each(|r| backward.add(r));
        assert_eq!(forward, backward);
        assert_eq!(forward.rows, 3);
        assert_eq!(forward.hex().len(), 64);
        // A null is not an empty text, nor a zero; a value moved to another column is
        // another row.
        for changed in [
            vec![Value::Int(3), Value::Null, Value::Null],
            vec![Value::Int(3), Value::Text(String::new()), Value::Int(0)],
            vec![Value::Int(3), Value::Null, Value::Text(String::new())],
        ] {
            let mut other = Checksum::default();
            rows[..2].iter().for_each(|r| other.add(r));
            other.add(&changed);
            assert_ne!(other.sum, forward.sum, "{changed:?}");
        }
    }

    #[test]
    fn rows_per_statement_stay_within_the_bind_limit() {
        assert_eq!(max_rows_per_statement(11), 512);
        assert_eq!(max_rows_per_statement(26), 512);
        assert_eq!(max_rows_per_statement(100), 256);
        assert_eq!(max_rows_per_statement(40_000), 1);
        for width in 1..200 {
            let n = max_rows_per_statement(width);
            assert!(n.is_power_of_two() && n * width <= MAX_BINDS.max(width));
        }
    }

    #[test]
    fn the_same_store_and_missing_sources_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("a.db");
        std::fs::write(&file, b"").expect("file");
        let url = format!("sqlite://{}", file.display());
        let other = format!("sqlite://{}", dir.path().join("b.db").display());
        assert!(matches!(
            check_paths(&url, &format!("{url}?mode=rw")),
            Err(CopyError::SameStore)
        ));
        assert!(matches!(
            check_paths(&other, &url),
            Err(CopyError::SourceMissing(_))
        ));
        assert!(matches!(
            check_paths(&url, "sqlite::memory:"),
            Err(CopyError::InMemory(Side::Target))
        ));
        assert!(matches!(
            check_paths(
                "postgres://u:p@db:5432/duehook",
                "postgres://other@db/duehook"
            ),
            Err(CopyError::SameStore)
        ));
        assert!(check_paths("postgres://db/a", "postgres://db/b").is_ok());
        assert!(check_paths(&url, &other).is_ok());
    }

    /// Every table the migrations create is either copied or named as not copied,
    /// and every column has a kind the copy knows.
    #[tokio::test]
    async fn every_table_of_the_schema_is_accounted_for() {
        let (_dir, store, _path) = super::super::temp_sqlite_store().await;
        refuse_unknown_tables(&store, Side::Source)
            .await
            .expect("every table known");
        for spec in TABLES {
            let cols = columns_of(&store, Side::Source, spec.name)
                .await
                .expect("columns");
            for key in spec.key.iter().chain(spec.cleared) {
                assert!(
                    cols.iter().any(|c| c.name == *key),
                    "{}.{key} exists",
                    spec.name
                );
            }
        }
        store.close().await;
    }

    fn opts(replace_target: bool) -> CopyOptions {
        CopyOptions {
            replace_target,
            now: DateTime::from_timestamp_millis(1_900_000_000_000).expect("instant"),
            lease: TimeDelta::seconds(30),
        }
    }

    async fn run(from: &str, to: &str, replace: bool) -> (Result<CopyReport, CopyError>, String) {
        let mut progress = Vec::new();
        let result = copy_store(from, to, &opts(replace), &mut progress).await;
        (result, String::from_utf8_lossy(&progress).into_owned())
    }

    fn url(path: &std::path::Path) -> String {
        format!("sqlite://{}", path.display())
    }

    /// Events 1..=3 written, the last one deleted: the source's autoincrement
    /// position (3) is past its largest key (2), and the copy keeps the position.
    #[tokio::test]
    async fn sqlite_to_sqlite_keeps_rows_and_the_autoincrement_position() {
        let (_dir, store, path) = super::super::temp_sqlite_store().await;
        for i in 1..=3 {
            sqlx::query(
                "INSERT INTO events (id, type, entity_kind, entity_id, created_at, data) VALUES ($1, 'booking.create', 'contact', 'c', 0, '{}')",
            )
            .bind(format!("evt_{i}"))
            .execute(store.pool())
            .await
            .expect("event");
        }
        sqlx::query("DELETE FROM events WHERE seq = 3")
            .execute(store.pool())
            .await
            .expect("delete");
        store.close().await;
        let target_dir = tempfile::tempdir().expect("dir");
        let target = target_dir.path().join("copy.db");
        let (result, progress) = run(&url(&path), &url(&target), false).await;
        let report = result.expect("copied");
        let events = &report.tables[7];
        assert_eq!(
            (events.table, events.rows, events.last_key),
            ("events", 2, Some(3)),
            "{progress}"
        );
        assert_eq!(
            report.target_migrated,
            crate::store::SQLITE_MIGRATOR.iter().count(),
            "every migration applied to the new target"
        );
        let copy = Store::open(&url(&target), 1).await.expect("copy");
        sqlx::query(
            "INSERT INTO events (id, type, entity_kind, entity_id, created_at, data) VALUES ('evt_new', 'booking.create', 'contact', 'c', 0, '{}')",
        )
        .execute(copy.pool())
        .await
        .expect("a new event");
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM events WHERE id = 'evt_new'")
            .fetch_one(copy.pool())
            .await
            .expect("seq");
        assert_eq!(
            seq, 4,
            "a new event is numbered after every key the source used"
        );
        copy.close().await;
    }

    #[tokio::test]
    async fn unknown_migrations_and_tables_and_foreign_files_are_refused() {
        let (_dir, store, path) = super::super::temp_sqlite_store().await;
        let elsewhere = tempfile::tempdir().expect("dir");
        let target = url(&elsewhere.path().join("copy.db"));
        sqlx::query("CREATE TABLE notes (id TEXT PRIMARY KEY)")
            .execute(store.pool())
            .await
            .expect("table");
        let (result, _) = run(&url(&path), &target, false).await;
        assert!(
            matches!(&result, Err(CopyError::Schema { side: Side::Source, table, .. }) if table == "notes"),
            "{result:?}"
        );
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99999, 'future', 1, X'00', 0)",
        )
        .execute(store.pool())
        .await
        .expect("migration");
        store.close().await;
        let (result, _) = run(&url(&path), &target, false).await;
        match result {
            Err(
                e @ CopyError::UnknownMigrations {
                    side: Side::Source, ..
                },
            ) => {
                assert!(e.is_refusal() && e.to_string().contains("99999"), "{e}");
            }
            other => panic!("refused: {other:?}"),
        }
        let stranger = elsewhere.path().join("stranger.db");
        std::fs::write(&stranger, b"").expect("file");
        let (result, _) = run(&url(&stranger), &target, false).await;
        assert!(matches!(result, Err(CopyError::NotAStore)), "{result:?}");
    }
}
