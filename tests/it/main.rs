//! The integration tests, in one binary (a cold `cargo test` links the stack once).
//! Each module drives the real app: on a random port, on a real SQLite file or a fresh
//! PostgreSQL database, with real receivers on 127.0.0.1 (see `support`).

#[macro_use]
mod support;

mod admin;
mod batch;
mod cluster;
mod console;
mod copy_store;
mod crash;
mod delivery;
mod demo;
mod faults;
mod hostile;
mod ingest;
mod nodes;
mod openapi;
mod ordering;
mod readme;
mod reminders;
mod schedule;
mod security;
mod service;
