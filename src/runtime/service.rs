//! Running as a service: the clock chosen by config, systemd notifications, the
//! watchdog, and shutdown on SIGTERM/SIGINT (a second signal exits at once).
//!
//! What systemd hears (a no-op without `NOTIFY_SOCKET`):
//! - `STATUS=` lines saying what the service is doing (`systemctl status` shows them);
//! - `READY=1` once the store is migrated and the API listens;
//! - `WATCHDOG=1` while the scheduler driver is alive, when the unit sets
//!   `WatchdogSec=` (see [`super::watchdog`]);
//! - `STOPPING=1` as soon as a stop signal arrives.

use std::sync::Arc;
use std::time::Duration;

use super::watchdog;
use crate::clock::{ManualClock, SharedClock, SystemClock};
use crate::config::{ClockMode, Config, PLACEHOLDER_TOKEN};
use crate::{App, StartError};

/// The clock `[clock]` asks for.
pub fn clock_from_config(config: &Config) -> SharedClock {
    match config.clock.mode {
        ClockMode::System => SystemClock::shared(),
        ClockMode::Manual => match config.clock.start {
            Some(start) => Arc::new(ManualClock::new(start)),
            None => Arc::new(ManualClock::starting_now()),
        },
    }
}

use super::systemd::{notify, status};

/// Exit status after a second stop signal: 128 + SIGINT, what shells report for an
/// interrupted program, so scripts and systemd see an interrupted (not clean) stop.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs until SIGTERM or SIGINT, then shuts down gracefully within
/// `[server] shutdown_timeout`. A second signal during the shutdown exits the process
/// at once with [`EXIT_INTERRUPTED`].
pub async fn serve(config: Config) -> Result<(), StartError> {
    // Listen before READY=1: a stop that arrives right after readiness must be a
    // graceful one, not the default action of SIGTERM (death by signal).
    let mut signals = Signals::new();
    let deadline = config.server.shutdown_timeout;
    let clock = clock_from_config(&config);
    status("starting: opening the store and applying migrations");
    // A stop during start (a long migration) should not wait for the start to end:
    // dropping it mid-way rolls the running migration back, like any transaction.
    let placeholder_token = config.uses_default_token();
    let app = tokio::select! {
        started = App::start(config, clock) => match started {
            Ok(app) => app,
            Err(e) => {
                status(&format!("failed to start: {e}"));
                return Err(e);
            }
        },
        _ = signals.recv() => {
            tracing::info!("stop requested while starting; not starting");
            notify(&[
                sd_notify::NotifyState::Stopping,
                sd_notify::NotifyState::Status("stopped while starting"),
            ]);
            return Ok(());
        }
    };
    if placeholder_token {
        tracing::warn!(
            "[auth] tokens holds the placeholder token \"{PLACEHOLDER_TOKEN}\" from the shipped config.toml: anyone can use it; set your own (16 characters or more) before exposing the service"
        );
    }
    let _watchdog = watchdog::spawn(app.heartbeat(), app.shutdown_token());
    let serving = format!(
        "serving on {} ({} clock); scheduler running",
        app.addr(),
        app.clock().mode()
    );
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&serving),
    ]);

    signals.recv().await;
    tracing::info!(
        deadline_s = deadline.as_secs_f64(),
        "shutdown requested; finishing in-flight work (a second signal exits at once)"
    );
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status(&format!(
            "stopping: finishing in-flight work (at most {}; a second signal exits at once)",
            human(deadline)
        )),
    ]);
    tokio::select! {
        report = app.shutdown_within(deadline) => {
            if report.aborted.is_empty() {
                tracing::info!("stopped cleanly");
                status("stopped cleanly");
            } else {
                let names = report.aborted.join(", ");
                tracing::warn!(aborted = %names, "stopped at the shutdown deadline; uncommitted work stays pending in the store");
                status(&format!("stopped at the deadline; aborted: {names}"));
            }
        }
        _ = signals.recv() => {
            tracing::warn!("second signal: exiting at once");
            status("second signal: exiting at once");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    }
    Ok(())
}

/// `30s`, `2m`, `90s`: the way durations are written in config.toml.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// SIGTERM and SIGINT, listened for once for the whole life of the service, so a
/// second signal is never lost between two waits.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for {name}");
                    None
                }
            };
            Signals {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                int: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The next SIGTERM or SIGINT.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut self.term) => {}
                _ = next(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_config() {
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_secs(90)), "90s");
    }
}
