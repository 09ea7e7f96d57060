//! Running as a service: the clock chosen by config, systemd notifications, and
//! shutdown on SIGTERM/SIGINT (a second signal exits at once).

use std::sync::Arc;

use crate::clock::{ManualClock, SharedClock, SystemClock};
use crate::config::{ClockMode, Config};
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

/// Tells systemd (when `NOTIFY_SOCKET` is set; a no-op otherwise).
fn notify(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::debug!(error = %e, "systemd notification failed");
    }
}

/// Runs until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve(config: Config) -> Result<(), StartError> {
    if config.uses_default_token() {
        tracing::warn!(
            "[auth] tokens still holds the shipped placeholder token: change it before exposing the service"
        );
    }
    let clock = clock_from_config(&config);
    let app = App::start(config, clock).await?;
    notify(sd_notify::NotifyState::Ready);

    wait_for_signal().await;
    tracing::info!("shutdown requested; finishing in-flight work (a second signal exits at once)");
    notify(sd_notify::NotifyState::Stopping);
    tokio::select! {
        _ = app.shutdown() => tracing::info!("stopped cleanly"),
        _ = wait_for_signal() => {
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
