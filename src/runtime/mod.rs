//! The process around the library: running as a service (signals and graceful
//! shutdown, systemd notifications and its watchdog), the named background tasks a
//! shutdown waits for, logs and metrics, this node's identity, and progress lines for
//! long commands.

pub mod commands;
pub mod node;
pub mod progress;
pub mod service;
pub mod systemd;
pub mod tasks;
pub mod telemetry;
pub mod watchdog;
