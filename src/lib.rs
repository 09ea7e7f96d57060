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
pub mod error;
pub mod http;
pub mod ingest;
pub mod outbox;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod testing;

mod app;

pub use app::{App, ShutdownReport, StartError};
