//! Periodic housekeeping on tokio-cron-scheduler: a few fixed jobs, never one job per
//! reminder (its bounded channel drops one-shot jobs under load; reminders live in the
//! store and the wheel). Cron timing is wall-clock and approximate by nature; what the
//! jobs decide (the retention cutoff) is computed on the service's Clock.
//!
//! - every minute: nudge the driver to reload its horizon (a safety net; ingest wakes it
//!   at once anyway);
//! - every hour: purge settled timers, finished events with their deliveries and
//!   attempts, and sent alerts older than `[schedule] retention_days`;
//! - every five seconds: fold the values recorded into the metrics' histograms into
//!   their buckets. The Prometheus recorder keeps each recorded value until it is
//!   folded, which otherwise happens only when `/metrics` is scraped: a busy service
//!   nobody scrapes would grow by eight bytes per observation (a request's duration,
//!   an attempt's, a timer's lag) for as long as it runs.

use chrono::TimeDelta;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tokio_util::sync::CancellationToken;

use super::plan::Planner;
use crate::clock::SharedClock;
use crate::store::Store;

/// Starts the housekeeping jobs and keeps them until `shutdown`.
pub async fn run(
    store: Store,
    clock: SharedClock,
    planner: Planner,
    retention: TimeDelta,
    shutdown: CancellationToken,
) {
    let mut sched = match start(store, clock, planner, retention).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the housekeeping scheduler; refill safety net, retention purge and metrics upkeep are off");
            return;
        }
    };
    shutdown.cancelled().await;
    if let Err(e) = sched.shutdown().await {
        tracing::debug!(error = %e, "housekeeping scheduler shutdown");
    }
}

async fn start(
    store: Store,
    clock: SharedClock,
    planner: Planner,
    retention: TimeDelta,
) -> Result<JobScheduler, JobSchedulerError> {
    let sched = JobScheduler::new().await?;
    let wake = planner.wake.clone();
    sched
        .add(Job::new_async("0 * * * * *", move |_, _| {
            let wake = wake.clone();
            Box::pin(async move { wake.notify_one() })
        })?)
        .await?;
    sched
        .add(Job::new("*/5 * * * * *", |_, _| {
            crate::runtime::telemetry::upkeep()
        })?)
        .await?;
    sched
        .add(Job::new_async("0 17 * * * *", move |_, _| {
            let (store, clock) = (store.clone(), clock.clone());
            Box::pin(async move {
                let cutoff = clock.now() - retention;
                match purge(&store, cutoff).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(purged = n, cutoff = %cutoff, "retention purge")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "retention purge failed; retried next hour")
                    }
                }
            })
        })?)
        .await?;
    sched.start().await?;
    Ok(sched)
}

/// Deletes what is settled and older than `cutoff` (see [`crate::store::retention`]);
/// returns the rows deleted.
pub async fn purge(
    store: &Store,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<u64, crate::store::StoreError> {
    crate::store::retention::purge(store, cutoff).await
}
