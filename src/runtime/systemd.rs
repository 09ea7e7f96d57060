//! What systemd hears (a no-op without `NOTIFY_SOCKET`): readiness, status lines,
//! watchdog pings and the stop.

/// Tells systemd (when `NOTIFY_SOCKET` is set; a no-op otherwise). Failures are
/// logged, never fatal: systemd may simply not be listening.
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "systemd notification failed");
    }
}

/// A `STATUS=` line (`systemctl status` shows it).
pub fn status(text: &str) {
    notify(&[sd_notify::NotifyState::Status(text)]);
}
