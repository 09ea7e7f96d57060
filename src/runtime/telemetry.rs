//! Logging: a tracing subscriber, human-readable or JSON per `[log] format`, filtered
//! so that duehook's own lines show at info and its libraries' only from warn up
//! (the shipped `[log] level`), unless `RUST_LOG` or the configured level says otherwise.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The filter when neither `RUST_LOG` nor `[log] level` gives a valid one: the shipped
/// `[log] level`. Libraries (the HTTP stack, sqlx, the cron scheduler) announce routine
/// steps at info, which would bury the lines an operator needs.
pub const DEFAULT_FILTER: &str = "warn,duehook=info";

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `[log] level`.
/// Calling it twice (tests) is harmless: the second call keeps the first subscriber.
pub fn init(log: &LogConfig) {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let filter = filter(rust_log.as_deref(), &log.level);
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

/// `RUST_LOG` when set and valid, else `level`, else [`DEFAULT_FILTER`].
fn filter(rust_log: Option<&str>, level: &str) -> EnvFilter {
    rust_log
        .filter(|r| !r.trim().is_empty())
        .and_then(|r| EnvFilter::try_new(r).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER))
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

/// Folds the values recorded into histograms since the last scrape or upkeep into
/// their buckets, so that they take no memory of their own.
pub fn upkeep() {
    if let Some(handle) = prometheus() {
        handle.run_upkeep();
    }
}

/// Metric names, in one place so dashboards and code agree.
pub mod names {
    pub const HTTP_REQUESTS: &str = "duehook_http_requests_total";
    pub const HTTP_DURATION: &str = "duehook_http_request_duration_seconds";
    pub const TIMER_OUTCOMES: &str = "duehook_timers_total";
    pub const TIMER_LAG: &str = "duehook_timer_lag_seconds";
    pub const EVENTS: &str = "duehook_events_total";
    /// Ingest transactions committed, by `applied`: `ahead` when the group was applied
    /// while the transaction before it was written, `in_turn` otherwise.
    pub const INGEST_TRANSACTIONS: &str = "duehook_ingest_transactions_total";
    pub const WHEEL_TIMERS: &str = "duehook_wheel_timers";
    pub const TIMERS_BY_STATE: &str = "duehook_timers";
    pub const OUTBOX_DEPTH: &str = "duehook_outbox_depth";
    /// Ordered keys held back by a failed first delivery.
    pub const HELD_KEYS: &str = "duehook_ordered_keys_held";
    /// Deliveries waiting behind those keys.
    pub const HELD_DELIVERIES: &str = "duehook_deliveries_held";
    pub const DB_POOL: &str = "duehook_db_pool_connections";
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::config::Config;

    /// The lines `emit` logs through a text subscriber with `filter`.
    fn logged(filter: EnvFilter, emit: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buffer").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().expect("buffer").clone();
        String::from_utf8(bytes).expect("UTF-8 log")
    }

    fn emit_ours_and_a_library_s() {
        tracing::info!(target: "duehook::service", "our info line");
        tracing::debug!(target: "duehook::service", "our debug line");
        tracing::info!(target: "tokio_cron_scheduler::job_scheduler", "library info line");
        tracing::warn!(target: "sqlx::pool", "library warning");
    }

    #[test]
    fn the_shipped_level_shows_our_info_and_only_warnings_from_libraries() {
        let level = Config::defaults().log.level;
        assert_eq!(
            level, DEFAULT_FILTER,
            "config.toml ships the default filter"
        );
        let out = logged(filter(None, &level), emit_ours_and_a_library_s);
        assert!(out.contains("our info line"), "{out}");
        assert!(out.contains("library warning"), "{out}");
        assert!(!out.contains("library info line"), "{out}");
        assert!(!out.contains("our debug line"), "{out}");
    }

    #[test]
    fn rust_log_wins_over_the_configured_level_and_a_bad_one_is_ignored() {
        let out = logged(
            filter(Some("debug"), DEFAULT_FILTER),
            emit_ours_and_a_library_s,
        );
        assert!(
            out.contains("library info line") && out.contains("our debug line"),
            "{out}"
        );

        let out = logged(
            filter(Some("duehook=loud"), "warn"),
            emit_ours_and_a_library_s,
        );
        assert!(
            !out.contains("our info line") && out.contains("library warning"),
            "{out}"
        );
    }
}
