//! Logging: a tracing subscriber, human-readable or JSON per `[log] format`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `[log] level`.
/// Calling it twice (tests) is harmless: the second call keeps the first subscriber.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: under systemd the journal (and any file
    // the output is sent to) would otherwise keep the escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. Several apps in one
/// process (tests) share it. None when another recorder was installed first.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ])
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// Metric names, in one place so dashboards and code agree.
pub mod names {
    pub const HTTP_REQUESTS: &str = "duehook_http_requests_total";
    pub const HTTP_DURATION: &str = "duehook_http_request_duration_seconds";
    pub const TIMER_OUTCOMES: &str = "duehook_timers_total";
    pub const TIMER_LAG: &str = "duehook_timer_lag_seconds";
    pub const EVENTS: &str = "duehook_events_total";
    pub const WHEEL_TIMERS: &str = "duehook_wheel_timers";
    pub const TIMERS_BY_STATE: &str = "duehook_timers";
    pub const OUTBOX_DEPTH: &str = "duehook_outbox_depth";
    pub const DB_POOL: &str = "duehook_db_pool_connections";
}
