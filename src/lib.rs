//! duehook: the scheduler, reminder engine and signed-webhook sender behind booking,
//! check-out, self-storage and coworking software.
//!
//! [`App::start`] wires the parts together and is what both `duehook serve` and the
//! tests run: the store (migrated), the ingest API and the background workers, all on
//! the [`clock::Clock`] they are given.

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
