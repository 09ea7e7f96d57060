//! The systemd watchdog (`WatchdogSec=` in the unit), fed only while the scheduler
//! driver is alive.
//!
//! A timer that pings systemd unconditionally would only prove that the tokio runtime
//! still runs. The part of duehook that can hang silently and matters is the scheduler
//! driver: if it stops turning, reminders stop firing while `/healthz` stays green. So
//! the driver carries a [`Heartbeat`] and the pings depend on it:
//!
//! - the driver bumps the heartbeat on every loop turn and every timer it fires;
//! - while it waits in its `select!` (for the clock, a wake-up or shutdown) it is
//!   *parked*: waiting is healthy however long it lasts, because on a manual clock, or
//!   with no timer due, it may legitimately wait forever;
//! - when its task ends (returned, panicked or aborted) the heartbeat says so.
//!
//! Every half watchdog interval the watchdog sends `WATCHDOG=1` when the driver is
//! running and either parked or has beaten within the last full interval. A driver
//! stuck outside its `select!` (a query that never returns, a busy loop) therefore
//! stops the pings after one to one-and-a-half intervals, and systemd restarts the
//! service one interval after the last ping. Nothing is lost by that restart: the
//! store is the truth.
//!
//! Time here is tokio's monotonic clock, not the wall clock: watchdog intervals are
//! durations of real process time, whatever a manual scheduling clock says.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Signs of life of the scheduler driver, written by the driver, read by the watchdog.
#[derive(Debug, Default)]
pub struct Heartbeat {
    beats: AtomicU64,
    parked: AtomicBool,
    ended: AtomicBool,
}

/// What the watchdog sees of a [`Heartbeat`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulse {
    pub beats: u64,
    pub parked: bool,
    pub ended: bool,
}

impl Heartbeat {
    /// One unit of progress (a loop turn, a fired timer).
    pub fn beat(&self) {
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the driver as waiting until the guard is dropped.
    pub fn park(&self) -> Parked<'_> {
        self.parked.store(true, Ordering::Relaxed);
        Parked(self)
    }

    /// Held for the whole life of the driver task: when it is dropped (the task
    /// returned, panicked or was aborted) the heartbeat reports the driver as ended.
    pub fn running(&self) -> Running<'_> {
        Running(self)
    }

    pub fn pulse(&self) -> Pulse {
        Pulse {
            beats: self.beats.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            ended: self.ended.load(Ordering::Relaxed),
        }
    }
}

/// See [`Heartbeat::park`].
#[must_use = "the driver counts as parked only while the guard lives"]
pub struct Parked<'a>(&'a Heartbeat);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked.store(false, Ordering::Relaxed);
    }
}

/// See [`Heartbeat::running`].
#[must_use = "the driver counts as ended as soon as the guard is dropped"]
pub struct Running<'a>(&'a Heartbeat);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::Relaxed);
    }
}

/// The watchdog's judgement of one pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// The driver task is gone.
    Ended,
    /// Not parked and no beat for this long.
    Stuck(Duration),
}

/// Decides, pulse by pulse, whether the driver deserves a ping. Pure: time is passed in.
#[derive(Debug)]
pub struct Judge {
    /// The systemd watchdog interval (`WATCHDOG_USEC`).
    interval: Duration,
    last_beats: u64,
    last_progress: Instant,
}

impl Judge {
    pub fn new(interval: Duration, first: Pulse, now: Instant) -> Self {
        Self {
            interval,
            last_beats: first.beats,
            last_progress: now,
        }
    }

    pub fn judge(&mut self, pulse: Pulse, now: Instant) -> Verdict {
        if pulse.ended {
            return Verdict::Ended;
        }
        if pulse.parked || pulse.beats != self.last_beats {
            self.last_beats = pulse.beats;
            self.last_progress = now;
            return Verdict::Healthy;
        }
        let quiet = now.saturating_duration_since(self.last_progress);
        if quiet < self.interval {
            Verdict::Healthy
        } else {
            Verdict::Stuck(quiet)
        }
    }
}

/// Starts feeding the systemd watchdog when systemd asked for it (`WATCHDOG_USEC` set
/// and `WATCHDOG_PID` naming this process); None otherwise. The task ends when
/// `stop` is cancelled: once shutdown begins, systemd's stop timeout takes over.
pub fn spawn(heartbeat: Arc<Heartbeat>, stop: CancellationToken) -> Option<JoinHandle<()>> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let interval = Duration::from_micros(usec);
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(run(heartbeat, interval, stop)))
}

async fn run(heartbeat: Arc<Heartbeat>, interval: Duration, stop: CancellationToken) {
    // Half the interval, as sd_watchdog_enabled(3) recommends: one late tick is not fatal.
    let mut ticks = tokio::time::interval(interval / 2);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut judge = Judge::new(interval, heartbeat.pulse(), Instant::now());
    let mut was_healthy = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let verdict = judge.judge(heartbeat.pulse(), Instant::now());
        match verdict {
            Verdict::Healthy => {
                if !was_healthy {
                    tracing::info!("scheduler driver is turning again; watchdog pings resume");
                    super::systemd::notify(&[sd_notify::NotifyState::Status(
                        "serving: scheduler driver recovered",
                    )]);
                }
                super::systemd::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Verdict::Ended | Verdict::Stuck(_) if was_healthy => {
                let status = match verdict {
                    Verdict::Stuck(quiet) => format!(
                        "scheduler driver stuck for {}s; withholding watchdog pings so systemd restarts the service",
                        quiet.as_secs()
                    ),
                    _ => "scheduler driver has stopped; withholding watchdog pings so systemd restarts the service".to_string(),
                };
                tracing::error!("{status}");
                super::systemd::notify(&[sd_notify::NotifyState::Status(&status)]);
            }
            _ => {}
        }
        was_healthy = verdict == Verdict::Healthy;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(30);

    #[test]
    fn parked_driver_is_healthy_however_long_it_waits() {
        let hb = Heartbeat::default();
        let _running = hb.running();
        let t0 = Instant::now();
        let mut judge = Judge::new(INTERVAL, hb.pulse(), t0);
        let _parked = hb.park();
        for hours in 1..5 {
            let now = t0 + Duration::from_secs(3600 * hours);
            assert_eq!(judge.judge(hb.pulse(), now), Verdict::Healthy);
        }
    }

    #[test]
    fn busy_driver_is_healthy_while_it_beats_and_stuck_once_it_stops() {
        let hb = Heartbeat::default();
        let _running = hb.running();
        let t0 = Instant::now();
        let mut judge = Judge::new(INTERVAL, hb.pulse(), t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        hb.beat();
        assert_eq!(judge.judge(hb.pulse(), at(15)), Verdict::Healthy);
        hb.beat();
        assert_eq!(judge.judge(hb.pulse(), at(30)), Verdict::Healthy);
        // No beat since 30 s: a quiet spell shorter than the interval is tolerated
        // (one slow query), a full interval is not.
        assert_eq!(judge.judge(hb.pulse(), at(45)), Verdict::Healthy);
        assert_eq!(
            judge.judge(hb.pulse(), at(60)),
            Verdict::Stuck(Duration::from_secs(30))
        );
        // Still nothing: still stuck.
        assert!(matches!(judge.judge(hb.pulse(), at(75)), Verdict::Stuck(_)));
        // The query returned and the loop went back to sleep: healthy again.
        hb.beat();
        let parked = hb.park();
        assert_eq!(judge.judge(hb.pulse(), at(90)), Verdict::Healthy);
        drop(parked);
        assert_eq!(judge.judge(hb.pulse(), at(105)), Verdict::Healthy);
    }

    #[test]
    fn ended_driver_is_never_healthy() {
        let hb = Heartbeat::default();
        let t0 = Instant::now();
        let mut judge = Judge::new(INTERVAL, hb.pulse(), t0);
        {
            let _running = hb.running();
            let _parked = hb.park();
            assert_eq!(judge.judge(hb.pulse(), t0), Verdict::Healthy);
        }
        assert_eq!(judge.judge(hb.pulse(), t0), Verdict::Ended);
    }

    #[tokio::test]
    async fn aborting_the_driver_task_reports_it_ended() {
        let hb = Arc::new(Heartbeat::default());
        let task = {
            let hb = hb.clone();
            tokio::spawn(async move {
                let _running = hb.running();
                let _parked = hb.park();
                std::future::pending::<()>().await;
            })
        };
        // Abort it once it runs (a task aborted before its first poll never held the guard).
        for _ in 0..1000 {
            if hb.pulse().parked {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(hb.pulse().parked, "driver stand-in never started");
        task.abort();
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
        assert!(hb.pulse().ended);
    }
}
