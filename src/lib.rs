//! duehook: the scheduler, reminder engine and signed-webhook sender behind booking,
//! check-out, self-storage and coworking software.
//!
//! [`App::start`] wires the parts together and is what both `duehook serve` and the
//! tests run: the store (migrated), the ingest API and the background workers, all on
//! the [`clock::Clock`] they are given.

pub mod clock;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod node;
pub mod progress;
pub mod schedule;
pub mod service;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod watchdog;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use clock::SharedClock;
use config::Config;
use store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: key `{0}`: {1}")]
    Config(String, String),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] node::LockError),
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
    _sqlite_lock: Option<node::SqliteLock>,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    /// Background workers (scheduler, fan-out, delivery, cron). Each watches `shutdown`.
    tasks: tasks::Tasks,
    /// Where writers pass new deliveries to the delivery worker.
    handoff: Arc<delivery::handoff::Handoff>,
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
        let sqlite_lock = node::lock_sqlite(&config.store.url)?;
        let sealer = config
            .store
            .sealer()
            .map_err(|e| StartError::Config("store.secret_key".into(), e.to_string()))?;
        let store = Store::open(&config.store.url, config.store.max_connections)
            .await?
            .with_sealer(sealer);
        let (node_id, hostname) = node::new_id(&config.cluster.node_name);
        store::cluster::register(&store, &node_id, &hostname, clock.now()).await?;
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

        // Install the metrics recorder before anything records.
        let _ = telemetry::prometheus();
        let rules = config.rules().map_err(|(k, m)| StartError::Config(k, m))?;
        let catalogue = Arc::new(domain::catalogue::Catalogue::new(rules.iter().map(|r| {
            (
                r.event_type.as_str(),
                format!(
                    "Configured rule `{}`: {} {} {:?}",
                    r.name, r.entity, r.offset_text, r.anchor
                ),
            )
        })));
        let outbox = Arc::new(Notify::new());
        let planner = schedule::plan::Planner {
            rules: Arc::new(rules),
            default_tz: config.schedule.timezone,
            horizon: config.schedule.horizon,
            wake: Arc::new(Notify::new()),
            retention: chrono::TimeDelta::days(i64::from(config.schedule.retention_days)),
            digest: config.schedule.digest.enabled.then(|| {
                let zones = if config.schedule.digest.timezones.is_empty() {
                    vec![config.schedule.timezone]
                } else {
                    config.schedule.digest.timezones.clone()
                };
                (config.schedule.digest.at, zones)
            }),
        };
        let driver_stats = Arc::new(schedule::driver::DriverStats::default());
        let pipeline = delivery::pipeline::Pipeline::new(
            store.clone(),
            clock.clone(),
            &config.delivery,
            &config.alerts,
            outbox.clone(),
        );
        let ingest = ingest::Ingest::new(
            store.clone(),
            clock.clone(),
            outbox.clone(),
            planner.clone(),
            catalogue.clone(),
            pipeline.work.clone(),
            pipeline.handoff.clone(),
        );
        let state_planner = planner.clone();
        let delivery_work = pipeline.work.clone();
        let delivery_handoff = pipeline.handoff.clone();
        let handoff = pipeline.handoff.clone();
        let state = http::AppState {
            store: store.clone(),
            clock: clock.clone(),
            ingest,
            planner: planner.clone(),
            driver_stats: driver_stats.clone(),
            catalogue,
            delivery: pipeline.clone(),
            node_id: node_id.clone(),
        };
        let router = http::router(
            state,
            http::auth::Tokens::new(&config.auth),
            config.server.max_body_bytes,
        );

        let shutdown = CancellationToken::new();
        let mut tasks = tasks::Tasks::default();
        let heartbeat = Arc::new(watchdog::Heartbeat::default());
        tasks.spawn(
            "lease keeper",
            schedule::driver::Driver::keep_leases(
                store.clone(),
                clock.clone(),
                node_id.clone(),
                config.cluster.lease,
                shutdown.clone(),
            ),
        );
        if store.backend() == store::Backend::Postgres {
            tasks.spawn(
                "timer listener (PostgreSQL LISTEN)",
                node::listen_for_timers(
                    config.store.url.clone(),
                    planner.wake.clone(),
                    shutdown.clone(),
                ),
            );
        }
        let driver = schedule::driver::Driver {
            node: node_id.clone(),
            lease: config.cluster.lease,
            store: store.clone(),
            clock: clock.clone(),
            planner,
            misfire_after: config.schedule.misfire_after,
            outbox: outbox.clone(),
            deliveries: delivery_work,
            handoff: delivery_handoff,
            stats: driver_stats,
            heartbeat: heartbeat.clone(),
        };
        tasks.spawn(
            "cron (refill nudge, retention purge)",
            schedule::cron::run(
                store.clone(),
                clock.clone(),
                driver.planner.clone(),
                chrono::TimeDelta::days(i64::from(config.schedule.retention_days)),
                shutdown.clone(),
            ),
        );
        if store.backend() == store::Backend::Sqlite {
            tasks.spawn(
                "SQLite checkpoint when idle",
                store.clone().checkpoint_when_idle(shutdown.clone()),
            );
            // Away from the HTTP sends (see `Tasks::spawn_on_own_thread`); SQLite
            // needs no socket. On PostgreSQL the driver's connections are sockets.
            tasks.spawn_on_own_thread(
                "scheduler driver",
                "duehook-scheduler",
                driver.run(shutdown.clone()),
            );
        } else {
            tasks.spawn("scheduler driver", driver.run(shutdown.clone()));
        }
        for handle in pipeline.spawn_workers(&shutdown) {
            tasks.push_named("delivery worker", handle);
        }
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
            planner: state_planner,
            node_id,
            _sqlite_lock: sqlite_lock,
            shutdown,
            server,
            tasks,
            heartbeat,
            handoff,
        })
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
    /// claimed by the transaction that created them (see [`delivery::handoff`]).
    pub fn deliveries_handed_off(&self) -> u64 {
        self.handoff.taken()
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
