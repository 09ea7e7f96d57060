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
    with_progress_to(std::io::stderr(), label, work).await
}

/// [`with_progress`] writing to `out`.
pub async fn with_progress_to<T>(
    mut out: impl Write,
    label: &str,
    work: impl Future<Output = T>,
) -> T {
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
                    out,
                    "{label}: still running ({}s)",
                    started.elapsed().as_secs()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quick_work_prints_nothing_and_slow_work_a_line_per_second() {
        let mut quiet = Vec::new();
        let v = with_progress_to(&mut quiet, "quick", async { 7 }).await;
        assert_eq!(v, 7);
        assert!(quiet.is_empty());

        let mut lines = Vec::new();
        with_progress_to(
            &mut lines,
            "migration 2 delivery",
            tokio::time::sleep(Duration::from_millis(3500)),
        )
        .await;
        assert_eq!(
            String::from_utf8_lossy(&lines),
            "migration 2 delivery: still running (1s)\n\
             migration 2 delivery: still running (2s)\n\
             migration 2 delivery: still running (3s)\n"
        );
    }
}
