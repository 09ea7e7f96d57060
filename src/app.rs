//! The composition root: [`App::start`] builds the components — the store, the outbox,
//! the scheduler, delivery and the API — then spawns each, and [`App`] is the running
//! service: its address, its graceful stop and, for tests, its crash.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::delivery::Delivery;
use crate::domain::catalogue::Catalogue;
use crate::outbox::Outbox;
use crate::runtime::{node, tasks, telemetry, watchdog};
use crate::schedule::Scheduler;
use crate::store::lock::{self, LockError, SqliteLock};
use crate::store::{Backend, Store, StoreError};
use crate::{delivery, http, ingest, schedule};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: key `{0}`: {1}")]
    Config(String, String),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Longest wait for the store's connections to close after a bounded shutdown.
const STORE_CLOSE: Duration = Duration::from_secs(5);

/// A running duehook.
pub struct App {
    addr: SocketAddr,
    store: Store,
    clock: SharedClock,
    planner: schedule::plan::Planner,
    node_id: String,
    /// Held for the life of the app on SQLite; dropped (released) with it.
    _sqlite_lock: Option<SqliteLock>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    /// Background workers (scheduler, delivery, housekeeping). Each watches `shutdown`.
    tasks: tasks::Tasks,
    /// Where every event enters; it hands new deliveries to the delivery worker.
    outbox: Arc<Outbox>,
    /// The scheduler driver's signs of life, for the systemd watchdog.
    heartbeat: Arc<watchdog::Heartbeat>,
}

/// How a graceful shutdown went.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Tasks still running at the deadline, aborted (their uncommitted work stays
    /// pending in the store and is retried after the next start).
    pub aborted: Vec<String>,
}

impl App {
    /// Opens and migrates the store, starts the workers and the HTTP API, and returns
    /// once the API listens (on `config.server.listen`; port 0 picks a free port).
    pub async fn start(config: Config, clock: SharedClock) -> Result<App, StartError> {
        // The store: one process per SQLite file, migrated, with this node registered.
        let sqlite_lock = lock::lock_sqlite(&config.store.url)?;
        let sealer = config
            .store
            .sealer()
            .map_err(|e| StartError::Config("store.secret_key".into(), e.to_string()))?;
        let store = Store::open(&config.store.url, config.store.max_connections)
            .await?
            .with_sealer(sealer);
        let (node_id, hostname) = node::new_id(&config.cluster.node_name);
        crate::store::cluster::register(&store, &node_id, &hostname, clock.now()).await?;
        let listener = TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.server.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.server.listen,
            source,
        })?;
        // Installed before anything records.
        let _ = telemetry::prometheus();

        // The components, built.
        let rules = config.rules().map_err(|(k, m)| StartError::Config(k, m))?;
        let catalogue = Arc::new(Catalogue::new(rules.iter().map(|r| {
            (
                r.event_type.as_str(),
                format!(
                    "Configured rule `{}`: {} {} {:?}",
                    r.name, r.entity, r.offset_text, r.anchor
                ),
            )
        })));
        let outbox = Arc::new(Outbox::new(&node_id, config.cluster.lease));
        let heartbeat = Arc::new(watchdog::Heartbeat::default());
        let scheduler = Scheduler::build(
            &config,
            rules,
            store.clone(),
            clock.clone(),
            outbox.clone(),
            node_id.clone(),
            heartbeat.clone(),
        );
        let delivery = Delivery::build(
            store.clone(),
            clock.clone(),
            &config.delivery,
            &config.alerts,
            outbox.clone(),
        );
        let pipeline = delivery.pipeline().clone();
        let state = http::AppState::new(http::Parts {
            store: store.clone(),
            clock: clock.clone(),
            ingest: ingest::Ingest::new(
                store.clone(),
                clock.clone(),
                outbox.clone(),
                scheduler.planner().clone(),
                catalogue.clone(),
            ),
            endpoints: delivery::service::Endpoints::new(
                store.clone(),
                clock.clone(),
                outbox.clone(),
                pipeline.guard.clone(),
                pipeline.config.clone(),
                catalogue.clone(),
            ),
            planner: scheduler.planner().clone(),
            driver_stats: scheduler.stats().clone(),
            catalogue,
            delivery: pipeline,
            node_id: node_id.clone(),
        });
        let router = http::router(
            state,
            http::auth::Tokens::new(&config.auth),
            config.server.max_body_bytes,
            config.server.max_batch_bytes,
        );
        let planner = scheduler.planner().clone();

        // The components, spawned.
        let shutdown = CancellationToken::new();
        let mut tasks = tasks::Tasks::default();
        if store.backend() == Backend::Sqlite {
            tasks.spawn(
                "SQLite checkpoint when idle",
                store.clone().checkpoint_when_idle(shutdown.clone()),
            );
        }
        scheduler.spawn(&mut tasks, &shutdown);
        delivery.spawn(&mut tasks, &shutdown);
        let server = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let serve = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            })
        };
        // The line a new user reads first: where to reach it, what it stores in, whose time.
        let clock_text = match clock.mode() {
            "manual" => format!("manual clock at {}", clock.now().to_rfc3339()),
            mode => format!("{mode} clock"),
        };
        tracing::info!(
            "duehook {} listening on http://{addr}; store {}; {clock_text}",
            env!("CARGO_PKG_VERSION"),
            config.store.redacted_url(),
        );
        Ok(App {
            addr,
            store,
            clock,
            planner,
            node_id,
            _sqlite_lock: sqlite_lock,
            shutdown,
            server,
            tasks,
            heartbeat,
            outbox,
        })
    }

    /// A look into this app's store, for tests (see [`crate::testing`]).
    pub fn probe(&self) -> crate::testing::Probe {
        crate::testing::Probe::new(self.store.clone(), self.planner.clone())
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or whatever address the API listens on).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How many deliveries went to the delivery worker in memory, written already
    /// claimed by the transaction that created them (see [`outbox`]).
    pub fn deliveries_handed_off(&self) -> u64 {
        self.outbox.handoff().taken()
    }

    /// This node's id (`GET /admin/nodes`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The planner ingest uses (rules, zones, horizon), for in-process bulk planning.
    pub fn planner(&self) -> &schedule::plan::Planner {
        &self.planner
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// A token that is cancelled when the app begins shutting down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The scheduler driver's signs of life (what the systemd watchdog watches).
    pub fn heartbeat(&self) -> Arc<watchdog::Heartbeat> {
        self.heartbeat.clone()
    }

    /// Graceful stop: no new requests, in-flight ones finish, the store is closed.
    /// Waits as long as that takes; see [`App::shutdown_within`] for a bounded stop.
    pub async fn shutdown(self) {
        self.stop(None).await;
    }

    /// Graceful stop within `deadline`: no new connections; in-flight requests and
    /// background work get until the deadline to finish, then whatever still runs is
    /// aborted and named in the log and the report. Aborting loses nothing committed:
    /// a transaction cut short rolls back and its timer or delivery stays pending.
    pub async fn shutdown_within(self, deadline: Duration) -> ShutdownReport {
        self.stop(Some(tokio::time::Instant::now() + deadline))
            .await
    }

    async fn stop(self, deadline: Option<tokio::time::Instant>) -> ShutdownReport {
        self.shutdown.cancel();
        // They all run at once; waiting for them one after the other against a single
        // deadline bounds the whole wait by that deadline.
        let mut all = tasks::Tasks::default();
        all.push_named("HTTP server (in-flight requests)", self.server);
        all.extend(self.tasks);
        let aborted = all.join_until(deadline).await;
        for name in &aborted {
            tracing::warn!(task = %name, "still running at the shutdown deadline: aborted; its uncommitted work stays pending in the store");
        }
        // Nothing of this node sends any more: deliveries it still holds (sends the
        // deadline cut off, claims an aborted worker could not give back) go back now,
        // for the other nodes or the next start, rather than when their leases lapse.
        let release = crate::store::cluster::release_deliveries(&self.store, &self.node_id);
        match tokio::time::timeout(STORE_CLOSE, release).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(released = n, "released the deliveries still held"),
            Ok(Err(_)) | Err(_) => tracing::warn!(
                "could not release held deliveries; they go back when this node is taken for dead"
            ),
        }
        // Connections held by work cut short are released as it unwinds; do not hang
        // on one that never comes back (a stuck request of the HTTP server, whose
        // connection tasks are not ours to abort).
        if deadline.is_some() {
            if tokio::time::timeout(STORE_CLOSE, self.store.close())
                .await
                .is_err()
            {
                tracing::warn!("store connections still busy at exit; closing anyway");
            }
        } else {
            self.store.close().await;
        }
        ShutdownReport { aborted }
    }

    /// Simulates a crash: every task is dropped where it stands, nothing is flushed or
    /// released. What the store committed is all that survives.
    pub fn abort(self) {
        self.server.abort();
        self.tasks.abort_all();
    }
}
