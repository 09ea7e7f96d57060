//! Progress for long command-line operations: a line on stderr every second while a
//! future is still running, nothing when it finishes within the first second.
//!
//! Deliberately tiny (no progress-bar crate): the one long operation is a migration,
//! whose progress sqlx cannot report, so elapsed time is all there is to show. The
//! seconds are measured on tokio's monotonic timer, not the wall clock.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

/// How often the still-running line is printed.
const EVERY: Duration = Duration::from_secs(1);

/// Runs `work`, printing `"{label}: still running ({n}s)"` on stderr every second
/// until it completes.
pub async fn with_progress<T>(label: &str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(started + EVERY, EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticks.tick() => {
                // stderr may be closed (a detached run); progress is not worth failing for.
                let _ = writeln!(
                    std::io::stderr(),
                    "{label}: still running ({}s)",
                    started.elapsed().as_secs()
                );
            }
        }
    }
}
