//! The only place in duehook that reads the wall clock.
//!
//! Every component receives a [`SharedClock`] and asks it for "now" and for sleeps.
//! In production that is [`SystemClock`]; tests and `[clock] mode = "manual"` use
//! [`ManualClock`], which only moves when told to and wakes every sleeper when it does,
//! so a test can live through weeks of reminders in milliseconds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

/// A boxed sleep future, so `Clock` stays object safe.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The clock every component is given.
pub type SharedClock = Arc<dyn Clock>;

/// Source of time. Implementations must be cheap to call: the scheduler asks often.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once `now() >= deadline`, or a little earlier than that on the system
    /// clock when the wall clock is stepped: callers always re-check `now()` after waking.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep<'_>;
    /// The manual clock behind this clock, when there is one.
    fn as_manual(&self) -> Option<&ManualClock> {
        None
    }
    /// Short name for logs and `/admin/clock`.
    fn mode(&self) -> &'static str;
}

/// Longest single sleep on the system clock. The wall clock can be stepped (NTP, an
/// operator) while we sleep on the monotonic timer; waking at least this often bounds
/// how late a step is noticed.
const MAX_SYSTEM_SLEEP: Duration = Duration::from_secs(1);

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep<'_> {
        Box::pin(async move {
            let remaining = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            if !remaining.is_zero() {
                tokio::time::sleep(remaining.min(MAX_SYSTEM_SLEEP)).await;
            }
        })
    }

    fn mode(&self) -> &'static str {
        "system"
    }
}

/// A clock that moves only when [`ManualClock::set`] or [`ManualClock::advance`] is
/// called. Sleepers are woken on every move and re-check their deadline.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        let (now, _) = watch::channel(start);
        Self { now }
    }

    /// A manual clock starting at the current system time (for `[clock] start` unset).
    pub fn starting_now() -> Self {
        Self::new(Utc::now())
    }

    pub fn shared(start: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(Self::new(start))
    }

    /// Moves the clock to `to` (backwards too: tests use that to simulate a stepped clock).
    pub fn set(&self, to: DateTime<Utc>) {
        self.now.send_replace(to);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: TimeDelta) {
        self.now.send_modify(|now| *now += by);
    }

    /// A receiver that sees every move of the clock.
    pub fn subscribe(&self) -> watch::Receiver<DateTime<Utc>> {
        self.now.subscribe()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep<'_> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, so `changed` only fails if the clock
            // is being dropped; then there is nothing left to wait for.
            while *rx.borrow_and_update() < deadline {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    fn as_manual(&self) -> Option<&ManualClock> {
        Some(self)
    }

    fn mode(&self) -> &'static str {
        "manual"
    }
}

impl Clock for Arc<ManualClock> {
    fn now(&self) -> DateTime<Utc> {
        self.as_ref().now()
    }
    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep<'_> {
        self.as_ref().sleep_until(deadline)
    }
    fn as_manual(&self) -> Option<&ManualClock> {
        Some(self.as_ref())
    }
    fn mode(&self) -> &'static str {
        "manual"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_deadline_reached() {
        let start = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .expect("valid instant")
            .with_timezone(&Utc);
        let clock = Arc::new(ManualClock::new(start));
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(start + TimeDelta::hours(1)).await })
        };
        clock.advance(TimeDelta::minutes(59));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke before its deadline");
        clock.advance(TimeDelta::minutes(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("sleeper woke")
            .expect("sleeper did not panic");
        assert_eq!(clock.now(), start + TimeDelta::hours(1));
    }

    #[tokio::test]
    async fn system_clock_sleep_in_the_past_returns_at_once() {
        let clock = SystemClock;
        let past = clock.now() - TimeDelta::hours(1);
        tokio::time::timeout(Duration::from_millis(100), clock.sleep_until(past))
            .await
            .expect("returned at once");
    }
}
