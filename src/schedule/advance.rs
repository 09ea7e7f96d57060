//! Moving a manual clock through time the way real time would pass: every pending
//! timer between now and the target fires at its own instant, in order, and the
//! pipeline settles at each instant before the clock moves on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use std::sync::atomic::Ordering;

use super::driver::DriverStats;
use crate::clock::ManualClock;
use crate::store::{Store, StoreError, timers};

/// Longest wait for the workers to settle at one instant before giving up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AdvanceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the scheduler did not settle within {0:?} at {1}")]
    Stuck(Duration, DateTime<Utc>),
}

#[derive(Debug, Serialize)]
pub struct Advanced {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Distinct instants the clock stopped at on the way.
    pub steps: u64,
}

/// True when no pending timer is due at `now`.
async fn settled(store: &Store, now: DateTime<Utc>) -> Result<bool, StoreError> {
    Ok(timers::due_count(store.pool(), now).await? == 0)
}

/// Advances `clock` to `target` through every pending timer's instant on the way.
/// `extra_settled` lets other workers (delivery) say whether they are done at an instant.
pub async fn live_through<F, Fut>(
    store: &Store,
    driver: &DriverStats,
    clock: &ManualClock,
    target: DateTime<Utc>,
    extra_settled: F,
) -> Result<Advanced, AdvanceError>
where
    F: Fn(DateTime<Utc>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<DateTime<Utc>>, StoreError>>,
{
    use crate::clock::Clock;
    let from = clock.now();
    let mut steps = 0;
    loop {
        let now = clock.now();
        // The next instant something is due: a timer, or (from `extra_settled`) a retry.
        let mut next = target;
        if let Some(t) = timers::next_pending(store.pool()).await? {
            next = next.min(t);
        }
        if let Some(t) = extra_settled(now).await? {
            next = next.min(t);
        }
        let step = next.max(now);
        if step > now {
            clock.set(step);
            steps += 1;
        }
        wait_settled(store, driver, step, &extra_settled).await?;
        if step >= target {
            break;
        }
    }
    Ok(Advanced {
        from,
        to: clock.now(),
        steps,
    })
}

async fn wait_settled<F, Fut>(
    store: &Store,
    driver: &DriverStats,
    at: DateTime<Utc>,
    extra_settled: &F,
) -> Result<(), AdvanceError>
where
    F: Fn(DateTime<Utc>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<DateTime<Utc>>, StoreError>>,
{
    let start = tokio::time::Instant::now();
    loop {
        // Ask the store only once this node's driver has caught up with `at` (or after
        // a short wait, for timers other nodes hold): one query per step, not a spin.
        let notified = driver.settled.notified();
        if driver.settled_ms.load(Ordering::Acquire) < at.timestamp_millis() {
            let _ = tokio::time::timeout(Duration::from_millis(5), notified).await;
        }
        let extra_due = extra_settled(at).await?.is_some_and(|t| t <= at);
        if !extra_due && settled(store, at).await? {
            return Ok(());
        }
        if start.elapsed() > SETTLE_TIMEOUT {
            return Err(AdvanceError::Stuck(SETTLE_TIMEOUT, at));
        }
        if extra_due || driver.settled_ms.load(Ordering::Acquire) >= at.timestamp_millis() {
            // Others still working at this instant (delivery, another node): brief pause.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
