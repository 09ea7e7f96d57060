//! duehook: the scheduler, reminder engine and signed-webhook sender behind booking,
//! check-out, self-storage and coworking software.
//!
//! [`App::start`] wires the parts together and is what both `duehook serve` and the
//! tests run: the store (migrated), the ingest API and the background workers, all on
//! the [`clock::Clock`] they are given.

pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod service;
pub mod store;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use clock::SharedClock;
use config::Config;
use store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running duehook.
pub struct App {
    addr: SocketAddr,
    store: Store,
    clock: SharedClock,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    /// Background workers (scheduler, fan-out, delivery, cron). Each watches `shutdown`.
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Opens and migrates the store, starts the workers and the HTTP API, and returns
    /// once the API listens (on `config.server.listen`; port 0 picks a free port).
    pub async fn start(config: Config, clock: SharedClock) -> Result<App, StartError> {
        let store = Store::open(&config.store.url, config.store.max_connections).await?;
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

        let outbox = Arc::new(Notify::new());
        let ingest = ingest::Ingest::new(store.clone(), clock.clone(), outbox.clone());
        let pipeline = delivery::pipeline::Pipeline::new(
            store.clone(),
            clock.clone(),
            &config.delivery,
            &config.alerts,
            outbox,
        );
        let state = http::AppState {
            store: store.clone(),
            clock: clock.clone(),
            ingest,
            delivery: pipeline.clone(),
        };
        let router = http::router(
            state,
            http::auth::Tokens::new(&config.auth),
            config.server.max_body_bytes,
        );

        let shutdown = CancellationToken::new();
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        tasks.extend(pipeline.spawn_workers(&shutdown));
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
        tracing::info!(%addr, clock = clock.mode(), backend = ?store.backend(), "duehook is listening");
        Ok(App {
            addr,
            store,
            clock,
            shutdown,
            server,
            tasks,
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

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// A token that is cancelled when the app begins shutting down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Graceful stop: no new requests, in-flight ones finish, the store is closed.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Err(e) = self.server.await {
            tracing::warn!(error = %e, "HTTP server task ended abnormally");
        }
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "background task ended abnormally");
            }
        }
        self.store.close().await;
    }

    /// Simulates a crash: every task is dropped where it stands, nothing is flushed or
    /// released. What the store committed is all that survives.
    pub fn abort(self) {
        self.server.abort();
        for task in &self.tasks {
            task.abort();
        }
    }
}
