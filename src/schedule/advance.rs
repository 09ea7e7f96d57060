//! Moving a manual clock through time the way real time would pass: every pending
//! timer between now and the target fires at its own instant, in order, and the
//! pipeline settles at each instant before the clock moves on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

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
        wait_settled(store, step, &extra_settled).await?;
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
    at: DateTime<Utc>,
    extra_settled: &F,
) -> Result<(), AdvanceError>
where
    F: Fn(DateTime<Utc>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<DateTime<Utc>>, StoreError>>,
{
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let extra_due = extra_settled(at).await?.is_some_and(|t| t <= at);
        if settled(store, at).await? && !extra_due {
            return Ok(());
        }
        if start.elapsed() > SETTLE_TIMEOUT {
            return Err(AdvanceError::Stuck(SETTLE_TIMEOUT, at));
        }
        // Real time, briefly: the workers run on other tasks; the manual clock stays put.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}
