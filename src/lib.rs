//! duehook: the scheduler, reminder engine and signed-webhook sender behind booking,
//! check-out, self-storage and coworking software.
//!
//! # How an event travels, and which module owns each step
//!
//! ```text
//!  app ──PUT/POST /v1/…──► http ──► ingest ──────── one transaction ────────┐
//!                         (translates) (entity, its     │ events            │
//!                                      change's events, ▼                   │
//!                                      re-planned    outbox ── deliveries ──┤
//!                                      timers)       (the one way in)       │
//!                                         │                                 ▼
//!                                         ▼                               store
//!  clock ──► schedule::driver ◄── due soon ── timers                 (SQLite or
//!            wheel (in memory)                                        PostgreSQL;
//!              │ expired                                              all the SQL)
//!              ▼                                                            ▲
//!            schedule::fire ── load ── decide (pure) ── outbox ── settle ───┘
//!                                                          │ hand-off (memory)
//!                                                          ▼
//!            delivery: worker (claims, lanes) → render → sign → send → record
//!                      → retry / health (disable, alert)
//! ```
//!
//! - `http`: routes that translate requests and answers, the console,
//!   auth, errors, the OpenAPI document. API bodies are its own types.
//! - `ingest`: every change is an op (a single route sends one, `POST /v1/batch` many);
//!   the ops waiting together are applied in one transaction: the entities, their
//!   events through the outbox, their timers re-planned by `schedule::plan`, written
//!   with multi-row statements.
//! - `outbox`: the one way an event enters: it writes the events, fans them out to the
//!   subscribed endpoints and hands this node's worker its deliveries, all in the
//!   caller's transaction.
//! - `schedule`: `rules` (which timers an entity's state plans), `plan`, the timing
//!   `wheel` (a pure data structure), the `driver` (loads what is due soon, sleeps on
//!   the clock), `decide` (timer + entity now → fire, fire late, skip or cancel, with the
//!   reason) and `fire` (a batch of due timers in one transaction).
//! - `delivery`: the worker, render, sign, send, record, retry, health, alerts and the
//!   destination guard; `delivery::service` holds the endpoint and delivery commands.
//! - `store`: the pool, every query, every SQLite/PostgreSQL difference, migrations,
//!   the cluster's claims and leases, copy-store.
//! - `domain`: entities and their transitions, the event catalogue, the event and
//!   endpoint records; no I/O.
//! - `runtime`: the process: serving as a systemd service, shutdown, the watchdog,
//!   named tasks, logs and metrics, the node's id, the commands of the command line.
//!
//! [`App::start`] is the composition root: it builds the store, the outbox, the
//! scheduler, delivery and the API, then spawns each, all on the [`clock::Clock`] it is
//! given (nothing else reads the wall clock). The store is the truth: the wheel and
//! the hand-off only hold what is due soon, and a crash at any point loses nothing.
//!
//! # The public face
//!
//! [`App`], [`config::Config`], the [`clock`]s, the [`commands`] the binary runs,
//! [`copy`] (copying a whole store) and [`testing`], the documented surface the
//! project's own tests and benchmarks use to look into a running app.

pub mod clock;
pub mod config;
pub mod testing;

mod app;
mod delivery;
mod demo;
mod domain;
mod error;
mod http;
mod ingest;
mod outbox;
mod runtime;
mod schedule;
mod store;

pub use app::{App, ShutdownReport, StartError};
/// What each command of the command line does.
pub use runtime::commands;
/// Installs the log subscriber `[log]` asks for (`RUST_LOG` wins when set).
pub use runtime::telemetry::init as init_logging;
/// Copying a whole store into another (`duehook copy-store`).
pub use store::copy;
