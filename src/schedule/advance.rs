//! Moving a manual clock through time the way real time would pass: every pending
//! timer and every delivery retry between now and the target happens at its own
//! instant, in order, and the pipeline settles at each instant before the clock moves.
//!
//! Work held under a lease that this process is not doing (a timer claimed by another
//! node, a send in flight elsewhere, a claim left behind by a crash or by an attempt
//! that could not be recorded) is waited for a short while; if it does not finish, its
//! holder is taken for dead and the clock lives through the end of the lease, when this
//! node takes the work over, as real time would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use tokio::sync::Notify;

use super::driver::DriverStats;
use crate::clock::{Clock, ManualClock};
use crate::store::deliveries::{self, DueWork};
use crate::store::{Store, StoreError, timers};

/// Longest wait for the workers to settle at one instant before giving up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Deliveries due but left unclaimed this long (real time) with nothing in flight are
/// held back by a rate limit or an in-flight cap: they go out as the clock moves on.
/// Generous, so a worker slowed by a loaded machine is not mistaken for a held-back one
/// (the clock would then move on before its sends).
const STALL: Duration = Duration::from_millis(400);
/// The step taken past an instant where held-back deliveries wait (rate limits count
/// per second).
const HELD_BACK_STEP: TimeDelta = TimeDelta::seconds(1);
/// How long (real time) work due now may stay under another process's lease before its
/// holder is taken for dead and the clock moves on to the end of that lease.
const HELD_ELSEWHERE_GRACE: Duration = Duration::from_secs(1);

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

/// This process's workers, as an advance needs to know them: whose claims are its own
/// and how to wake them.
pub struct Workers<'a> {
    pub driver: &'a DriverStats,
    /// The name the scheduler driver claims timers under.
    pub node: &'a str,
    /// Sends the delivery worker has in flight.
    pub sending: &'a AtomicUsize,
    /// Wakes the scheduler driver (it then loads what it may fire).
    pub wake: &'a Notify,
    /// Wakes the delivery worker.
    pub work: &'a Notify,
}

/// Advances `clock` to `target` through every timer's and every delivery retry's
/// instant on the way, settling at each.
pub async fn live_through(
    store: &Store,
    workers: &Workers<'_>,
    clock: &ManualClock,
    target: DateTime<Utc>,
) -> Result<Advanced, AdvanceError> {
    let from = clock.now();
    let mut steps = 0;
    // One grace per advance: a crash can leave many claims behind, each lapsing at an
    // instant of its own; waiting the grace again at each would crawl.
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let now = clock.now();
        let settled = wait_settled(store, workers, now, &mut grace).await?;
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
        if settled.held_back {
            next = next.min(now + HELD_BACK_STEP);
        }
        if let Some(until) = settled.held_elsewhere_until {
            // The instant the lease lapses and the work may be taken over.
            next = next.min(until + TimeDelta::milliseconds(1));
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

/// How an instant settled.
struct Settled {
    /// Due deliveries held back by a rate limit or an in-flight cap.
    held_back: bool,
    /// Due work left under another process's lease, until when.
    held_elsewhere_until: Option<DateTime<Utc>>,
}

/// Waits until nothing is due at `at` that this process can do: no pending timer it may
/// fire, no event to fan out, no send of its own in flight, and no due delivery left
/// unclaimed (unless held back). Work under a lease this process is not working on is
/// waited for until `grace` (set to [`HELD_ELSEWHERE_GRACE`] from now when such work is
/// first seen).
async fn wait_settled(
    store: &Store,
    workers: &Workers<'_>,
    at: DateTime<Utc>,
    grace: &mut Option<tokio::time::Instant>,
) -> Result<Settled, AdvanceError> {
    let start = tokio::time::Instant::now();
    let mut last_waiting: Option<(i64, tokio::time::Instant)> = None;
    let mut woken = false;
    loop {
        // Ask the store once this node's driver has caught up with `at` (or after a
        // short wait, for timers other nodes hold): a query per step, not a spin.
        let notified = workers.driver.settled.notified();
        let caught_up = workers.driver.settled_ms.load(Ordering::Acquire) >= at.timestamp_millis();
        if !caught_up {
            let _ = tokio::time::timeout(Duration::from_millis(5), notified).await;
        }
        let mine = timers::due_count_for(store.pool(), at, workers.node).await?;
        if mine > 0 && caught_up && !woken {
            // Due timers the driver has not loaded: taken over from a lapsed lease.
            workers.wake.notify_one();
            workers.work.notify_one();
            woken = true;
        }
        if mine == 0 {
            let DueWork {
                unfanned,
                claimed_until,
                waiting,
            } = deliveries::due_work(store.pool(), at).await?;
            if unfanned == 0 && workers.sending.load(Ordering::Acquire) == 0 {
                let held = [
                    timers::held_elsewhere_until(store.pool(), at, workers.node).await?,
                    claimed_until,
                ]
                .into_iter()
                .flatten()
                .min();
                let held_done = held.is_none() || {
                    let until = *grace
                        .get_or_insert_with(|| tokio::time::Instant::now() + HELD_ELSEWHERE_GRACE);
                    tokio::time::Instant::now() >= until
                };
                let settled = |held_back| Settled {
                    held_back,
                    held_elsewhere_until: held,
                };
                if waiting == 0 {
                    if held_done {
                        return Ok(settled(false));
                    }
                } else {
                    match last_waiting {
                        Some((n, since)) if n == waiting && since.elapsed() >= STALL => {
                            if held_done {
                                return Ok(settled(true));
                            }
                        }
                        Some((n, _)) if n == waiting => {}
                        _ => {
                            // Due and unclaimed: the delivery worker may be asleep until
                            // a poll that a manual clock never reaches (work another
                            // node gave back, or skipped while another held it).
                            workers.work.notify_one();
                            last_waiting = Some((waiting, tokio::time::Instant::now()));
                        }
                    }
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
