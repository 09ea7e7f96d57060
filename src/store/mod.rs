//! The store: one sqlx pool on SQLite (embedded, the default) or PostgreSQL, its
//! migrations, and the queries of each table (one submodule per table group).
//!
//! Both backends speak the same SQL through sqlx's `Any` driver: `$N` placeholders
//! (SQLite accepts them too), instants as i64 milliseconds, JSON as text. Where the
//! dialects differ (claiming with `FOR UPDATE SKIP LOCKED`, write locks) the code asks
//! [`Store::backend`].

pub mod alerts;
pub mod cluster;
pub mod copy;
pub mod deliveries;
pub mod endpoints;
pub mod entities;
pub mod events;
pub mod firing;
pub mod lock;
mod pg_nodelay;
mod placeholders;
pub mod retention;
pub mod sealed;
mod sqlite_memory;
pub mod timers;

pub use placeholders::{MAX_ROWS, Placeholders, padded, statement_chunks};

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

/// A transaction on the store. On SQLite it also holds the process's writer lock
/// (see [`Store::begin`]) until it ends. It dereferences to the connection, so queries
/// run on `&mut **tx` (or `&mut *tx` for an owned one).
pub struct Tx {
    inner: Transaction<'static, Any>,
    backend: Backend,
    _writer: Option<OwnedMutexGuard<()>>,
}

impl Tx {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.inner.commit().await?)
    }

    /// Whether this transaction holds the process's writer lock (SQLite), which
    /// [`Tx::commit_keeping_turn`] can keep for the next transaction.
    pub fn holds_writer(&self) -> bool {
        self._writer.is_some()
    }

    /// Commits, keeping the process's writer lock (SQLite) for the next transaction
    /// ([`Store::begin_in_turn`]): between the two no other writer of this process
    /// runs, and no other process writes a SQLite store (see [`lock`]), so what was
    /// read in this transaction still holds in the next. `None` on PostgreSQL, whose
    /// writers do not exclude each other.
    pub async fn commit_keeping_turn(mut self) -> Result<Option<Turn>, StoreError> {
        let writer = self._writer.take();
        self.inner.commit().await?;
        Ok(writer.map(Turn))
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.inner.rollback().await?)
    }

    /// Runs one statement per slice of `rows` ([`statement_chunks`]), as `build` makes
    /// each with the placeholders of this transaction's backend, one after another
    /// (see [`Tx::execute_each`]).
    pub async fn execute_chunks<'r, T>(
        &mut self,
        rows: &'r [T],
        build: impl Fn(&'r [T], Placeholders) -> Result<Statement, StoreError>,
    ) -> Result<(), StoreError> {
        self.execute_each(statement_chunks(rows), build).await
    }

    /// Runs one statement per part, as `build` makes each with the placeholders of
    /// this transaction's backend, one after another. Each next statement is built
    /// while the connection runs the one before: a statement runs on the connection's
    /// own thread (SQLite) or on the server, and building one of hundreds of rows
    /// (their values bound, entity bodies serialised) is work of the same order as
    /// running it, which the transaction would otherwise wait through in turn.
    pub async fn execute_each<P>(
        &mut self,
        parts: impl IntoIterator<Item = P>,
        build: impl Fn(P, Placeholders) -> Result<Statement, StoreError>,
    ) -> Result<(), StoreError> {
        let backend = self.backend;
        let build = |part| build(part, Placeholders::for_backend(backend));
        let mut parts = parts.into_iter();
        let mut next = parts.next().map(build).transpose()?;
        while let Some(statement) = next.take() {
            let (done, built) = futures::join!(statement.execute(&mut *self.inner), async {
                parts.next().map(build).transpose()
            });
            done?;
            next = built?;
        }
        Ok(())
    }
}

/// The process's writer lock kept from one committed transaction for the next (see
/// [`Tx::commit_keeping_turn`]).
pub struct Turn(OwnedMutexGuard<()>);

/// A statement built at run time with its bound values (see [`Tx::execute_chunks`]).
pub type Statement = sqlx::query::Query<'static, Any, sqlx::any::AnyArguments>;

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Longest wait for [`Store::ping`]'s answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("store error: {0}")]
    Query(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Sealed(#[from] sealed::SealError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e),
            sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref()) => {
                StoreError::Unavailable(e)
            }
            _ => StoreError::Query(e),
        }
    }
}

/// Database error codes that mean "try again later", not "your query is wrong":
/// SQLite busy/locked/full/IO errors and PostgreSQL connection and shutdown classes.
fn is_unavailable_code(code: Option<&str>) -> bool {
    match code {
        // SQLite primary result codes: BUSY, LOCKED, IOERR, FULL, CANTOPEN (and extended ones).
        Some(c)
            if c.parse::<i32>()
                .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13 | 14)) =>
        {
            true
        }
        // PostgreSQL: connection exceptions (08), insufficient resources (53), operator intervention (57).
        Some(c) => c.starts_with("08") || c.starts_with("53") || c.starts_with("57"),
        None => false,
    }
}

/// A migration the database has not applied yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMigration {
    pub version: i64,
    pub description: String,
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// SQLite only: the one connection a chain of write transactions runs on (see
    /// [`Store::begin_in_turn`]).
    writes: Option<AnyPool>,
    backend: Backend,
    /// Seals endpoint secrets at rest when `[store] secret_key` is set.
    sealer: Option<std::sync::Arc<sealed::Sealer>>,
    /// SQLite only: admits one writer of this process at a time (see [`Store::begin`]).
    writer: Option<Arc<Mutex<()>>>,
    /// SQLite only: writers waiting for the writer lock (see [`Store::writer_wanted`]).
    waiting: Arc<AtomicU64>,
    /// SQLite only: WAL checkpoints, taken beside the writers.
    checkpoints: Option<Arc<Checkpoints>>,
    /// PostgreSQL only: when the timers' planner statistics are refreshed.
    statistics: Option<Arc<Statistics>>,
}

/// PostgreSQL plans a statement with the table statistics it last gathered. Its own
/// refresh (autovacuum's `ANALYZE`) comes after a table changed by a tenth, checked once
/// a minute: an import into a new store outgrows the statistics many times over before
/// then. Planned with statistics of a near-empty `timers`, reading the timers of 512
/// entities walks every timer of their kind (a bitmap scan on `entity_kind` alone,
/// `entity_id` filtered after): 50–130 ms per statement at 150,000 timers, longer as the
/// import goes on. So the store refreshes them itself whenever the timers planned since
/// the last refresh outnumber those there were then (and [`STATISTICS_MIN_ROWS`]): a
/// handful of refreshes for a million entities, each a sample of the table.
#[derive(Debug, Default)]
struct Statistics {
    /// Timers planned since the last refresh started.
    added: std::sync::atomic::AtomicUsize,
    /// Timers planned before it (the table's growth as this process saw it).
    before: std::sync::atomic::AtomicUsize,
    running: std::sync::atomic::AtomicBool,
}

/// Timers planned at least before their statistics are refreshed.
const STATISTICS_MIN_ROWS: usize = 20_000;

/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold
/// (1,000 pages): that one write then copies the WAL into the database and syncs it
/// while every other writer of this process waits in the queue behind it — the worst
/// latency of a burst. Instead, every [`CHECKPOINT_EVERY`] writers admitted, a task of
/// its own checkpoints on another connection in two steps: a passive checkpoint beside
/// the writers (WAL mode lets it run beside them) copies what the WAL holds, then a
/// second one, in the writers' queue, copies the few frames written meanwhile. Only
/// that short second step holds the writers back, and it is what lets the next writer
/// start the WAL over (a checkpoint that never catches up with the writers would let
/// the WAL grow without end). When the writers pause, [`Store::checkpoint_when_idle`]
/// takes the same two steps, so a quiet store does not keep the last busy spell's
/// frames for the next burst to copy. A checkpoint cut short by a crash is safe, and
/// SQLite checkpoints when the last connection closes.
///
/// The task is a task: on a starved machine it may not run for a while. A writer
/// admitted more than [`CHECKPOINT_LAG_MAX`] writers after the last checkpoint that
/// completed checkpoints itself, holding the lock, before it writes: the WAL stays
/// bounded however the tasks are scheduled.
#[derive(Debug, Default)]
struct Checkpoints {
    writes: AtomicU64,
    running: AtomicBool,
    /// `writes` when the last checkpoint taken in the writers' queue began.
    done_at: AtomicU64,
}

/// Writers admitted between two checkpoints (about half a second in a burst).
const CHECKPOINT_EVERY: u64 = 64;
/// How long the writers must have paused before [`Store::checkpoint_when_idle`] copies
/// what they left in the WAL.
const CHECKPOINT_IDLE: Duration = Duration::from_millis(500);
/// Writers since the last checkpoint that make a pause worth a checkpoint: an idle
/// service that writes a row now and then (the node's lease) need not checkpoint
/// after each one.
const CHECKPOINT_IDLE_MIN: u64 = 8;
/// Writers admitted since the last completed checkpoint before one checkpoints itself.
const CHECKPOINT_LAG_MAX: u64 = 2 * CHECKPOINT_EVERY;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Connects (creating a missing SQLite file) without migrating.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = normalise_url(url);
        if backend == Backend::Sqlite {
            sqlite_memory::untrack();
        }
        let options = AnyConnectOptions::from_str(&url).map_err(StoreError::Unavailable)?;
        let pool = pool_options(backend)
            .max_connections(max_connections)
            .connect_with(options.clone())
            .await?;
        // SQLite: the connection a chain of write transactions runs on (see
        // `begin_in_turn`).
        let writes = match backend {
            Backend::Sqlite => Some(
                pool_options(backend)
                    .max_connections(1)
                    .connect_with(options)
                    .await?,
            ),
            Backend::Postgres => None,
        };
        Ok(Self {
            pool,
            writes,
            backend,
            sealer: None,
            writer: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
            waiting: Arc::new(AtomicU64::new(0)),
            checkpoints: (backend == Backend::Sqlite).then(|| Arc::new(Checkpoints::default())),
            statistics: (backend == Backend::Postgres).then(|| Arc::new(Statistics::default())),
        })
    }

    /// Connects and applies every pending migration (named in the log first, so an
    /// operator sees what an upgrade did to the store).
    pub async fn open(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let store = Self::connect(url, max_connections).await?;
        let pending = store.pending_migration_list().await?;
        if !pending.is_empty() {
            let names: Vec<String> = pending
                .iter()
                .map(|m| format!("{} {}", m.version, m.description))
                .collect();
            tracing::info!(count = pending.len(), migrations = %names.join(", "), "applying store migrations");
        }
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        }
    }

    /// How many migrations known to this binary the database has not applied yet.
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        Ok(self.pending_migration_list().await?.len())
    }

    /// The migrations known to this binary that the database has not applied yet,
    /// oldest first. A database never migrated (no bookkeeping table) has them all
    /// pending.
    pub async fn pending_migration_list(&self) -> Result<Vec<PendingMigration>, StoreError> {
        let exists_sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
        };
        let exists: i64 = sqlx::query_scalar(exists_sql).fetch_one(&self.pool).await?;
        let applied: Vec<i64> = if exists > 0 {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(self
            .migrator()
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .map(|m| PendingMigration {
                version: m.version,
                description: m.description.to_string(),
            })
            .collect())
    }

    /// Applies every pending migration up to and including `version` (one at a time
    /// when called in order over [`Store::pending_migration_list`], so a caller can
    /// report each one).
    pub async fn migrate_to(&self, version: i64) -> Result<(), StoreError> {
        self.migrator().run_to(version, &self.pool).await?;
        Ok(())
    }

    /// Seals secrets written from now on with `sealer` (and opens sealed ones).
    pub fn with_sealer(mut self, sealer: Option<sealed::Sealer>) -> Self {
        self.sealer = sealer.map(std::sync::Arc::new);
        self
    }

    /// A secret as it is to be stored (sealed when a key is configured).
    pub fn seal(&self, secret: &str) -> String {
        sealed::seal(self.sealer.as_deref(), secret)
    }

    /// The plaintext of a stored secret.
    pub fn open_secret(&self, stored: &str) -> Result<String, StoreError> {
        Ok(sealed::open(self.sealer.as_deref(), stored)?)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes can fail
    /// with SQLITE_BUSY when another writer got there first, whatever the busy timeout.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let writer = self.exclusive().await;
        self.begin_holding(&self.pool, writer).await
    }

    /// Begins a write transaction in a turn kept from the last one (SQLite's writer
    /// lock, see [`Tx::commit_keeping_turn`]).
    ///
    /// On SQLite such a chain of transactions (an import, a batch written in
    /// several) runs on one connection of its own, which wrote the one before: its
    /// page cache is still valid. A connection's cache lasts only while no other
    /// connection writes, and the pool lends its connections in turn, so each
    /// transaction of the chain would otherwise begin with an empty cache and read the
    /// indexes' pages back from the operating system. Other writes (single changes,
    /// firing, delivery records) take any pool connection: waiting for one connection
    /// to come back to its pool (sqlx checks each one returned) would cost them more
    /// than its cache saves them.
    pub async fn begin_in_turn(&self, turn: Turn) -> Result<Tx, StoreError> {
        self.count_write().await;
        let chained = self.writes.as_ref().unwrap_or(&self.pool);
        self.begin_holding(chained, Some(turn.0)).await
    }

    /// Begins a write transaction that holds `writer` (the writer lock on SQLite,
    /// none on PostgreSQL) until it ends.
    async fn begin_holding(
        &self,
        pool: &AnyPool,
        writer: Option<OwnedMutexGuard<()>>,
    ) -> Result<Tx, StoreError> {
        let inner = match self.backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        };
        Ok(Tx {
            inner,
            backend: self.backend,
            _writer: writer,
        })
    }

    /// Whether another writer of this process waits for the writer lock (SQLite): a
    /// writer that keeps its turn from one transaction to the next
    /// ([`Tx::commit_keeping_turn`]) lets it go instead when one does, so that the
    /// scheduler and the delivery recorder wait no longer than they would otherwise.
    pub fn writer_wanted(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Waits for the writer lock, counted among those waiting for it (until it has
    /// the lock, or stops waiting: a request may go away meanwhile).
    async fn wait_for_writer(&self, writer: &Arc<Mutex<()>>) -> OwnedMutexGuard<()> {
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        writer.clone().lock_owned().await
    }

    /// Begins a read-only transaction (a consistent snapshot); it takes no write lock.
    pub async fn begin_read(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            inner: self.pool.begin().await?,
            backend: self.backend,
            _writer: None,
        })
    }

    /// On SQLite, waits for this process's writer lock; hold the guard while running
    /// a write outside a transaction (an autocommitted `UPDATE`). `None` on PostgreSQL,
    /// whose writers do not exclude each other.
    ///
    /// Why: SQLite has one writer, and a connection that finds the write lock taken
    /// sleeps in its busy handler (1, 2, 5, 10… ms) before trying again. Under load the
    /// lock then sits idle between writers while they sleep, and a writer that keeps
    /// losing the race (the delivery recorder against a stream of ingest requests)
    /// starves. Queueing in process instead hands the lock over at once, in order.
    pub async fn exclusive(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.writer {
            Some(m) => {
                let guard = self.wait_for_writer(m).await;
                self.count_write().await;
                Some(guard)
            }
            None => None,
        }
    }

    /// Counts a writer admitted (it holds the writer lock); every [`CHECKPOINT_EVERY`]
    /// starts a checkpoint unless one is still running, and a writer too far ahead of
    /// the last one checkpoints first (see [`Checkpoints`]).
    async fn count_write(&self) {
        let Some(c) = &self.checkpoints else {
            return;
        };
        let n = c.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if n.saturating_sub(c.done_at.load(Ordering::Acquire)) > CHECKPOINT_LAG_MAX {
            // This writer holds the lock, so no frame is added meanwhile: a checkpoint
            // already running beside the writers (the task's first step, which holds
            // SQLite's checkpointer lock) finishes soon, then this one runs.
            for _ in 0..CHECKPOINT_BUSY_TRIES {
                match passive_checkpoint(&self.pool).await {
                    Checkpoint::Ran(_) => {
                        c.done_at.fetch_max(n, Ordering::AcqRel);
                        break;
                    }
                    Checkpoint::Busy => tokio::time::sleep(Duration::from_millis(1)).await,
                    Checkpoint::Failed => break,
                }
            }
        }
        if n % CHECKPOINT_EVERY != 0 || c.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move { store.checkpoint_in_two_steps().await });
    }

    /// The checkpoint task's work (see [`Checkpoints`]); the caller set `running`.
    /// The step beside the writers is taken again while the frames written during
    /// the last one were many: the step in their queue copies what they wrote during
    /// the last step beside them, and in an import a step beside them can last long
    /// enough for that to hold the writers back for a tenth of a second.
    async fn checkpoint_in_two_steps(&self) {
        let Some(c) = &self.checkpoints else {
            return;
        };
        if let Some(writer) = &self.writer
            && self.checkpoint_beside_writers().await
        {
            let _queued = self.wait_for_writer(writer).await;
            let at = c.writes.load(Ordering::Acquire);
            if let Checkpoint::Ran(_) = passive_checkpoint(&self.pool).await {
                c.done_at.fetch_max(at, Ordering::AcqRel);
            }
        }
        c.running.store(false, Ordering::Release);
    }

    /// Passive checkpoints beside the writers, until one finds few frames written
    /// during the one before it (at most [`CHECKPOINT_PASSES`]); whether they ran.
    async fn checkpoint_beside_writers(&self) -> bool {
        let mut last = None;
        for _ in 0..CHECKPOINT_PASSES {
            let Checkpoint::Ran(frames) = passive_checkpoint(&self.pool).await else {
                return false;
            };
            let written_meanwhile = match last {
                Some(before) => frames.saturating_sub(before),
                None => frames,
            };
            if written_meanwhile < CHECKPOINT_QUEUED_FRAMES {
                break;
            }
            last = Some(frames);
        }
        true
    }

    /// SQLite: checkpoints once the writers have paused for [`CHECKPOINT_IDLE`] after
    /// at least [`CHECKPOINT_IDLE_MIN`] writers since the last checkpoint, until
    /// `shutdown`. Counting writers alone leaves a quiet store with up to
    /// [`CHECKPOINT_EVERY`] writers' frames in its WAL, and the next burst's first
    /// checkpoint then copies them while the burst runs: a burst planned ahead started
    /// with ~30 ms of copying beside its writers and ~13 ms in their queue. Nothing on
    /// PostgreSQL.
    pub async fn checkpoint_when_idle(self, shutdown: tokio_util::sync::CancellationToken) {
        let Some(c) = self.checkpoints.clone() else {
            return;
        };
        let mut seen = c.writes.load(Ordering::Acquire);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECKPOINT_IDLE) => {}
            }
            let writes = c.writes.load(Ordering::Acquire);
            if writes == seen
                && writes.saturating_sub(c.done_at.load(Ordering::Acquire)) >= CHECKPOINT_IDLE_MIN
                && !c.running.swap(true, Ordering::AcqRel)
            {
                self.checkpoint_in_two_steps().await;
            }
            seen = writes;
        }
    }

    /// Serialises changes to the entities `keys` (`kind/id`) until `tx` ends. Two
    /// requests about the same entity must not both read "absent" and both emit a
    /// create event. SQLite needs nothing here: `BEGIN IMMEDIATE` already admits one
    /// writer at a time.
    pub async fn lock_entities(
        &self,
        tx: &mut Tx,
        keys: std::collections::BTreeSet<String>,
    ) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            lock_keys(tx, keys).await?;
        }
        Ok(())
    }

    /// PostgreSQL: plans `tx`'s statements for the values they are given, not once for
    /// any values, until [`Store::plan_for_any_values`]. A statement run many times gets
    /// a generic plan, chosen with the table statistics of the moment: taken while a
    /// table was small (a new store, a first import), it scans the whole table for
    /// every `IN (…)` list even after the table grew to millions of rows. Transactions
    /// that read many rows by key ask for this for their reads.
    pub async fn plan_for_values(&self, tx: &mut Tx) -> Result<(), StoreError> {
        self.plan_cache_mode(tx, "force_custom_plan").await
    }

    /// PostgreSQL: back to the server's own choice for the rest of `tx`, after the
    /// reads [`Store::plan_for_values`] was for. The multi-row writes that follow
    /// gain nothing from plans made for their values (an insert's plan does not depend
    /// on them), and planning a statement of hundreds of rows again at every run is
    /// work the server, the bound of a PostgreSQL import, does for nothing.
    pub async fn plan_for_any_values(&self, tx: &mut Tx) -> Result<(), StoreError> {
        self.plan_cache_mode(tx, "auto").await
    }

    async fn plan_cache_mode(&self, tx: &mut Tx, mode: &'static str) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            let sql = format!("SET LOCAL plan_cache_mode = {mode}");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Counts `n` timers planned by a committed transaction. On PostgreSQL, once they
    /// outnumber the timers planned before the last refresh of the planner's statistics
    /// (see [`Statistics`]), refreshes them in a task of its own (`ANALYZE timers`); a
    /// refresh under way is not started twice.
    pub fn timers_planned(&self, n: usize) {
        use std::sync::atomic::Ordering::{AcqRel, Relaxed, Release};
        let Some(stats) = &self.statistics else {
            return;
        };
        let added = stats.added.fetch_add(n, Relaxed) + n;
        let before = stats.before.load(Relaxed);
        if added < STATISTICS_MIN_ROWS.max(before) || stats.running.swap(true, AcqRel) {
            return;
        }
        stats.added.fetch_sub(added, Relaxed);
        stats.before.fetch_add(added, Relaxed);
        let (pool, stats) = (self.pool.clone(), stats.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match sqlx::query("ANALYZE timers").execute(&pool).await {
                Ok(_) => tracing::debug!(
                    timers_planned = before + added,
                    took_ms = started.elapsed().as_millis() as u64,
                    "refreshed the planner's statistics of the timers"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot refresh the planner's statistics of the timers")
                }
            }
            stats.running.store(false, Release);
        });
    }

    /// True when the store answers a trivial query.
    /// Whether the store answers within [`PING_TIMEOUT`] (a readiness probe must not
    /// hang for the pool's acquire timeout while the store is gone).
    pub async fn ping(&self) -> bool {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    pub async fn close(&self) {
        if let Some(writes) = &self.writes {
            writes.close().await;
        }
        self.pool.close().await;
    }
}

/// What a checkpoint did.
#[derive(Debug, PartialEq, Eq)]
enum Checkpoint {
    /// It copied what the WAL held (up to what open reads still need); the WAL's
    /// frames when it began.
    Ran(i64),
    /// Another checkpoint held SQLite's checkpointer lock: this one copied nothing. The
    /// pragma says so in its first column, not as an error, so taking this for a
    /// checkpoint let writers run on while the WAL grew.
    Busy,
    /// It failed (logged): the next one catches up, the WAL only grows meanwhile.
    Failed,
}

/// Passive checkpoints beside the writers at most before the one in their queue.
const CHECKPOINT_PASSES: usize = 4;
/// WAL frames (pages, 4 KiB each) that the checkpoint in the writers' queue may
/// have to copy: a few milliseconds of their time.
const CHECKPOINT_QUEUED_FRAMES: i64 = 1_000;

/// How often a writer over [`CHECKPOINT_LAG_MAX`] tries again, 1 ms apart, while
/// another checkpoint runs.
const CHECKPOINT_BUSY_TRIES: u32 = 1000;

/// One passive checkpoint on a connection of `pool`. Its result row is read to the
/// end: a statement left un-reset on its pooled connection would keep a read open and
/// stop the next writer from starting the WAL over.
async fn passive_checkpoint(pool: &AnyPool) -> Checkpoint {
    match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_all(pool)
        .await
    {
        // (busy, frames in the WAL, frames checkpointed)
        Ok(rows) => match rows
            .first()
            .map(|r| Ok::<_, sqlx::Error>((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
        {
            Some(Ok((0, frames))) => Checkpoint::Ran(frames),
            Some(Ok(_)) => Checkpoint::Busy,
            other => {
                tracing::warn!(result = ?other, "SQLite checkpoint answered no result");
                Checkpoint::Failed
            }
        },
        // A checkpoint started by one of the last writers may find the store closing:
        // SQLite checkpoints the WAL itself when its last connection closes.
        Err(sqlx::Error::PoolClosed) => {
            tracing::debug!("SQLite checkpoint skipped: the store is closing");
            Checkpoint::Failed
        }
        Err(e) => {
            tracing::warn!(error = %e, "SQLite checkpoint failed");
            Checkpoint::Failed
        }
    }
}

/// The pool settings of a store's connections: how they are opened, checked and lent.
fn pool_options(backend: Backend) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings an idle connection before lending it out. A PostgreSQL socket
        // can die while idle; a SQLite connection is a file handle served by a
        // thread of its own, and the ping is a round trip to that thread (two
        // thread wake-ups) before every transaction and every pooled query.
        .test_before_acquire(backend != Backend::Sqlite)
        // A SQLite transaction that fails to commit on a full disk (SQLITE_FULL) is
        // rolled back by SQLite itself; sqlx's ROLLBACK then fails and it keeps
        // counting the transaction as open, so every later BEGIN on that pooled
        // connection fails ("begin_with at non-zero transaction depth") even after
        // space is freed. Such a connection is closed instead of reused.
        .before_acquire(move |conn, _meta| {
            Box::pin(async move {
                Ok(backend != Backend::Sqlite || !sqlx::Connection::is_in_transaction(conn))
            })
        })
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // WAL lets readers run beside the one writer; NORMAL is durable
                    // in WAL mode across process crashes (not power loss mid-checkpoint).
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    // Checkpoints are taken beside the writers, not by whichever
                    // write happens to commit the 1,000th page (see `Checkpoints`).
                    conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                    // Pages of the indexes a large import or a busy hour walks. With
                    // SQLite's default (2 MiB) a transaction of a thousand entities
                    // outgrows the cache, spills dirty pages to the WAL before it
                    // commits and reads its index pages back through system calls.
                    // The cache grows only as pages are used, up to this bound per
                    // connection.
                    conn.execute("PRAGMA cache_size = -65536").await?;
                    // A multi-row statement keeps its undo (the statement journal)
                    // in memory rather than in a temporary file created and deleted
                    // for each one.
                    conn.execute("PRAGMA temp_store = MEMORY").await?;
                } else if let Err(e) = pg_nodelay::set_on(conn).await {
                    // Only a latency matter (see `pg_nodelay`): the connection works.
                    tracing::warn!(error = %e, "cannot check the PostgreSQL connection's socket for TCP_NODELAY");
                }
                Ok(())
            })
        })
}

/// Makes `sqlite://path` create the file when missing, and tells the backend.
fn normalise_url(url: &str) -> (String, Backend) {
    if url.starts_with("sqlite:") {
        let url = if url.contains("mode=") {
            url.to_string()
        } else if url.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        (url, Backend::Sqlite)
    } else {
        (url.to_string(), Backend::Postgres)
    }
}

/// Milliseconds since the epoch for a UTC instant (how instants are stored).
pub fn to_ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// The UTC instant of stored milliseconds.
pub fn from_ms(ms: i64) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("instant {ms} out of range")))
}

/// A migrated SQLite store in a temporary directory, for the store's unit tests: the
/// directory (the store lives as long as it does), the store, and its file's path.
#[cfg(test)]
pub(crate) async fn temp_sqlite_store() -> (tempfile::TempDir, Store, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("duehook.db");
    let store = Store::open(&format!("sqlite://{}", path.display()), 4)
        .await
        .expect("open");
    (dir, store, path)
}

/// PostgreSQL: the advisory locks of `keys` (`kind/id`, the locks
/// [`Store::lock_entities`] takes), in one statement per [`MAX_ROWS`] keys instead of one
/// round trip each. Always in the same (sorted) order, so two transactions locking
/// many entities cannot deadlock over them: PostgreSQL evaluates volatile select-list
/// functions after the ORDER BY.
async fn lock_keys(
    tx: &mut Tx,
    keys: std::collections::BTreeSet<String>,
) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `wal_autocheckpoint` the WAL would grow with every write until the last
    /// connection closes: the checkpoints taken beside the writers keep it bounded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_wal_is_checkpointed_beside_the_writers() {
        let (_dir, store, path) = temp_sqlite_store().await;
        // 1,000 writes of ~8 KiB (three pages each, and the index): about 12 MiB of WAL
        // frames in all.
        write_contacts(&store, 1000).await;
        let wal = std::fs::metadata(path.with_extension("db-wal"))
            .expect("WAL file")
            .len();
        assert!(
            wal < 4 * 1024 * 1024,
            "the WAL stays small: {wal} bytes after 1,000 writes of 8 KiB"
        );
        store.close().await;
    }

    /// A chain of write transactions, each begun in the turn the one before kept,
    /// runs on one connection (its page cache stays valid from one to the next),
    /// whichever connections the pool lends meanwhile. A temporary table lives on the
    /// connection that made it: the chain's next transaction sees it, a read on a
    /// pool connection does not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_a_chain_of_writes_runs_on_one_connection() {
        let (_dir, store, _) = temp_sqlite_store().await;
        let tx = store.begin().await.expect("begin");
        let mut turn = tx.commit_keeping_turn().await.expect("commit");
        for round in 0..4 {
            if round > 0 {
                // Every pool connection open and lent at once, then back in the pool.
                let mut reads = Vec::new();
                for _ in 0..4 {
                    reads.push(store.begin_read().await.expect("read"));
                }
                for read in &mut reads {
                    let seen = sqlx::query("SELECT 1 FROM temp.written_here")
                        .execute(&mut **read)
                        .await;
                    assert!(seen.is_err(), "a read runs on a pool connection");
                }
            }
            let mut tx = store
                .begin_in_turn(turn.expect("SQLite keeps the turn"))
                .await
                .expect("begin in turn");
            let write = if round == 0 {
                "CREATE TEMP TABLE written_here (x INTEGER)"
            } else {
                "INSERT INTO temp.written_here VALUES (1)"
            };
            sqlx::query(write)
                .execute(&mut *tx)
                .await
                .expect("the chain's own connection");
            turn = tx.commit_keeping_turn().await.expect("commit");
        }
        drop(turn);
        store.close().await;
    }

    /// `n` write transactions, each a contact of ~8 KiB.
    async fn write_contacts(store: &Store, n: u64) {
        let body = "x".repeat(8192);
        for i in 0..n {
            let mut tx = store.begin().await.expect("begin");
            sqlx::query(
                "INSERT INTO contacts (id, body, created_at, updated_at) VALUES ($1, $2, 0, 0)",
            )
            .bind(format!("c-{i}"))
            .bind(body.clone())
            .execute(&mut *tx)
            .await
            .expect("insert");
            tx.commit().await.expect("commit");
        }
    }

    /// `(mxFrame, nBackfill)` from the wal-index (the `-shm` file, laid out in
    /// <https://www.sqlite.org/walformat.html>): the frames in the WAL and how many of
    /// them a checkpoint has copied. Read from the file, because asking SQLite
    /// (`PRAGMA wal_checkpoint`) would checkpoint.
    fn wal_index(db: &std::path::Path) -> (u32, u32) {
        let shm = std::fs::read(db.with_extension("db-shm")).expect("wal-index");
        let at = |o: usize| u32::from_ne_bytes(shm[o..o + 4].try_into().expect("4 bytes"));
        (at(16), at(96))
    }

    /// A few writers, fewer than a checkpoint is counted for, then a pause: the WAL is
    /// checkpointed while nobody writes, not by the next burst.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_wal_is_checkpointed_when_writers_pause() {
        let (_dir, store, path) = temp_sqlite_store().await;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let idle = tokio::spawn(store.clone().checkpoint_when_idle(shutdown.clone()));
        write_contacts(&store, CHECKPOINT_EVERY / 2).await;
        let (frames, copied) = wal_index(&path);
        assert!(
            frames > 0 && copied < frames,
            "the writes are in the WAL, not yet copied: {copied} of {frames} frames"
        );
        let mut waited = Duration::ZERO;
        while wal_index(&path).1 < frames {
            assert!(
                waited < Duration::from_secs(20),
                "no checkpoint after {waited:?} without writers: {:?}",
                wal_index(&path)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
        shutdown.cancel();
        idle.await.expect("idle checkpoints end with the shutdown");
        store.close().await;
    }
}
