//! Moving a manual clock through time the way real time would pass: every pending
//! timer and every delivery retry between now and the target happens at its own
//! instant, in order, and the pipeline settles at each instant before the clock moves.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::driver::DriverStats;
use crate::clock::{Clock, ManualClock};
use crate::store::deliveries::{self, DueWork};
use crate::store::{Store, StoreError, timers};

/// Longest wait for the workers to settle at one instant before giving up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Deliveries due but left unclaimed this long (real time) with nothing in flight are
/// held back by a rate limit or an in-flight cap: they go out as the clock moves on.
const STALL: Duration = Duration::from_millis(150);
/// The step taken past an instant where held-back deliveries wait (rate limits count
/// per second).
const HELD_BACK_STEP: TimeDelta = TimeDelta::seconds(1);

#[derive(Debug, thiserror::Error)]
pub enum AdvanceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the scheduler and delivery workers did not settle within {0:?} at {1}")]
    Stuck(Duration, DateTime<Utc>),
}

#[derive(Debug, Serialize)]
pub struct Advanced {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Distinct instants the clock stopped at on the way.
    pub steps: u64,
}

/// Advances `clock` to `target` through every timer's and every delivery retry's
/// instant on the way, settling at each.
pub async fn live_through(
    store: &Store,
    driver: &DriverStats,
    clock: &ManualClock,
    target: DateTime<Utc>,
) -> Result<Advanced, AdvanceError> {
    let from = clock.now();
    let mut steps = 0;
    loop {
        let now = clock.now();
        let held_back = wait_settled(store, driver, now).await?;
        if now >= target {
            break;
        }
        let mut next = target;
        if let Some(t) = timers::next_pending(store.pool()).await?
            && t > now
        {
            next = next.min(t);
        }
        if let Some(t) = deliveries::next_due_after(store.pool(), now).await? {
            next = next.min(t);
        }
        if held_back {
            next = next.min(now + HELD_BACK_STEP);
        }
        clock.set(next);
        steps += 1;
    }
    Ok(Advanced {
        from,
        to: clock.now(),
        steps,
    })
}

/// Waits until nothing is due at `at`: no pending timer, no event to fan out, no send
/// in flight, and no due delivery left unclaimed (unless held back; then true).
async fn wait_settled(
    store: &Store,
    driver: &DriverStats,
    at: DateTime<Utc>,
) -> Result<bool, AdvanceError> {
    let start = tokio::time::Instant::now();
    let mut last_waiting: Option<(i64, tokio::time::Instant)> = None;
    loop {
        // Ask the store once this node's driver has caught up with `at` (or after a
        // short wait, for timers other nodes hold): a query per step, not a spin.
        let notified = driver.settled.notified();
        if driver.settled_ms.load(Ordering::Acquire) < at.timestamp_millis() {
            let _ = tokio::time::timeout(Duration::from_millis(5), notified).await;
        }
        if timers::due_count(store.pool(), at).await? == 0 {
            let DueWork {
                unfanned,
                in_flight,
                waiting,
            } = deliveries::due_work(store.pool(), at).await?;
            if unfanned == 0 && in_flight == 0 {
                if waiting == 0 {
                    return Ok(false);
                }
                match last_waiting {
                    Some((n, since)) if n == waiting && since.elapsed() >= STALL => {
                        return Ok(true);
                    }
                    Some((n, _)) if n == waiting => {}
                    _ => last_waiting = Some((waiting, tokio::time::Instant::now())),
                }
            } else {
                last_waiting = None;
            }
        }
        if start.elapsed() > SETTLE_TIMEOUT {
            return Err(AdvanceError::Stuck(SETTLE_TIMEOUT, at));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
