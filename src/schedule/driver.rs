//! The driver: keeps the timing wheel filled with the pending timers due within the
//! horizon, sleeps on the Clock until the next one, and fires each in its own
//! transaction. It is woken at once when ingest plans a timer inside the horizon.
//!
//! The wheel may hold stale entries (a timer cancelled or re-planned since it was
//! loaded): firing re-reads the timer and does nothing unless it is still pending, so
//! staleness costs a query, never a wrong event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::fire::{Fired, Firing};
use super::plan::Planner;
use super::wheel::{ByValue, TimingWheel};
use crate::clock::SharedClock;
use crate::runtime::watchdog::Heartbeat;
use crate::store::{Store, StoreError, Tx, cluster};

/// Most timers claimed per refill; the next refill comes when half of them are due, so
/// the wheel never runs dry at the instant a burst needs it. Small enough that one node
/// never hoards a burst that several nodes could share.
const LOAD_BATCH: i64 = 2_000;
/// Timers fired per transaction: one commit for many fires, short enough that ingest
/// never waits long for the write lock.
const FIRE_BATCH: usize = 1_000;
/// Pause after a store error before trying again (real time: the store's outage is real).
const STORE_RETRY: Duration = Duration::from_millis(500);

/// Figures the driver publishes for `/admin/schedule/stats` and metrics.
#[derive(Debug, Default)]
pub struct DriverStats {
    pub in_wheel: AtomicU64,
    pub wheel_bytes: AtomicU64,
    /// Next deadline in the wheel (ms since epoch), or -1.
    pub next_fire_ms: AtomicI64,
    pub fired: AtomicU64,
    pub cancelled: AtomicU64,
    pub skipped: AtomicU64,
    pub late: AtomicU64,
    /// End of what is loaded (ms since epoch).
    pub loaded_until_ms: AtomicI64,
    /// The instant up to which this driver has fired everything it holds (ms since
    /// epoch), and a signal when it moves: the manual clock's advance waits on it.
    pub settled_ms: AtomicI64,
    pub settled: Notify,
}

pub struct Driver {
    /// This node's id in the `nodes` table; claims carry it.
    pub node: String,
    /// How long a claim holds without renewal; another node takes over after it.
    pub lease: TimeDelta,
    pub store: Store,
    pub clock: SharedClock,
    pub planner: Planner,
    /// Decides and writes each batch of due timers.
    pub firing: Firing,
    pub stats: Arc<DriverStats>,
    /// Signs of life for the systemd watchdog (see `crate::runtime::watchdog`).
    pub heartbeat: Arc<Heartbeat>,
}

fn ms(t: DateTime<Utc>) -> u64 {
    t.timestamp_millis().max(0) as u64
}

impl Driver {
    pub async fn run(self, shutdown: CancellationToken) {
        let _running = self.heartbeat.running();
        let wake = self.planner.wake.clone();
        let horizon = self.planner.horizon;
        // Keyed by timer id: a refill claims again what the wheel holds, and the wheel
        // refuses an id it holds already.
        let mut wheel: TimingWheel<i64, ByValue> = TimingWheel::unique(ms(self.clock.now()));
        let mut refill_at: Option<DateTime<Utc>> = None;
        // Where a refill that found more than one batch stopped: the next one claims
        // from there (what came before is in the wheel). Cleared by anything that may
        // have put or left timers before it (a wake-up from planning, a failure).
        let mut cursor: Option<(DateTime<Utc>, i64)> = None;
        let mut expired = Vec::new();

        if let Some((at, zones)) = &self.planner.digest {
            // Retried at the next start if the store is down now; the digest is not critical.
            if let Err(e) = super::digest::plan_all(&self.store, zones, *at, self.clock.now()).await
            {
                tracing::warn!(error = %e, "cannot plan the daily digest");
            }
        }

        loop {
            self.heartbeat.beat();
            let now = self.clock.now();
            if refill_at.is_none_or(|at| now >= at) {
                match self.refill(&mut wheel, now, horizon, cursor).await {
                    Ok((at, next)) => {
                        refill_at = Some(at);
                        cursor = next;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot load timers; retrying");
                        refill_at = None;
                        cursor = None;
                        if pause(&shutdown, STORE_RETRY).await {
                            return;
                        }
                        continue;
                    }
                }
            }

            wheel.advance(ms(now), &mut expired);
            let mut failed = false;
            let mut settled = now;
            let mut due: VecDeque<i64> = VecDeque::new();
            take_expired(&mut expired, &mut due);
            while !due.is_empty() {
                self.heartbeat.beat();
                // The store first (on SQLite: this process's queue of writers), then
                // whatever is due by the time it is ours, so timers that came due while
                // waiting go in this batch rather than wait for the next. Each batch
                // fires at its own instant: an event's `created` is when it was written.
                let tx = match self.store.begin().await {
                    Ok(tx) => tx,
                    Err(e) => {
                        tracing::warn!(error = %e, "firing failed; the timers stay pending and are retried");
                        failed = true;
                        break;
                    }
                };
                let at = self.clock.now().max(settled);
                wheel.advance(ms(at), &mut expired);
                take_expired(&mut expired, &mut due);
                let chunk: Vec<i64> = due.drain(..due.len().min(FIRE_BATCH)).collect();
                match self.fire_chunk(tx, &chunk, at).await {
                    Ok(()) => settled = at,
                    Err(e) => {
                        // Left pending in the store: the next refill loads them again.
                        tracing::warn!(error = %e, "firing failed; the timers stay pending and are retried");
                        failed = true;
                        break;
                    }
                }
            }
            if !failed {
                self.stats
                    .settled_ms
                    .store(settled.timestamp_millis(), Ordering::Release);
                self.stats.settled.notify_waiters();
            }
            // Scanning for the next deadline costs a slot walk: once per turn.
            let next_deadline = wheel.next_deadline();
            self.publish(&wheel, next_deadline);
            if failed {
                refill_at = None;
                cursor = None;
                if pause(&shutdown, STORE_RETRY).await {
                    return;
                }
                continue;
            }

            let next = match (next_deadline, refill_at) {
                (Some(d), Some(r)) => {
                    DateTime::from_timestamp_millis(d as i64).map_or(r, |d| d.min(r))
                }
                (None, Some(r)) => r,
                (Some(d), None) => DateTime::from_timestamp_millis(d as i64).unwrap_or(now),
                (None, None) => now + horizon,
            };
            // Waiting here is healthy however long it lasts (see crate::runtime::watchdog).
            let parked = self.heartbeat.park();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {
                    refill_at = None;
                    cursor = None;
                }
                _ = self.clock.sleep_until(next) => {}
            }
            drop(parked);
        }
    }

    /// Loads pending timers due before `now + horizon` that are not in the wheel yet
    /// (after `cursor`, when given). Returns when the next refill is due, and where it
    /// may start.
    async fn refill(
        &self,
        wheel: &mut TimingWheel<i64, ByValue>,
        now: DateTime<Utc>,
        horizon: TimeDelta,
        cursor: Option<(DateTime<Utc>, i64)>,
    ) -> Result<(DateTime<Utc>, Option<(DateTime<Utc>, i64)>), StoreError> {
        let until = now + horizon;
        let rows = cluster::claim_timers(
            &self.store,
            &self.node,
            now,
            until,
            now + self.lease,
            LOAD_BATCH,
            cursor,
        )
        .await?;
        let full = rows.len() as i64 == LOAD_BATCH;
        // Halfway through what is held: the next refill claims ahead of the wheel.
        let halfway = rows.get(rows.len() / 2).map(|(_, at)| *at);
        // During a burst (more due than one batch) the next refill starts after the
        // last timer of this one, rather than claiming again the half still in the
        // wheel. A refill that finds less than a batch starts over from the beginning
        // (it also takes over what a dead node left).
        let next_cursor = if full {
            rows.last().map(|(id, at)| (*at, *id))
        } else {
            None
        };
        for (id, fire_at) in rows {
            wheel.insert_if_absent(ms(fire_at), id);
        }
        self.stats
            .loaded_until_ms
            .store(until.timestamp_millis(), Ordering::Relaxed);
        let next = match (full, halfway) {
            // More are due inside the horizon than one batch: claim more once half of this
            // batch is due.
            (true, Some(halfway)) => halfway,
            // Come back at least once a lease, to take over what a dead node held.
            _ => now + (horizon / 2).min(self.lease),
        };
        Ok((next, next_cursor))
    }

    /// Renews this node's heartbeat and its leases (timers and deliveries) every third
    /// of a lease (on the service clock, like the leases themselves), and takes over
    /// what a dead node held the moment it is known dead: a whole lease after its last
    /// heartbeat, looked at when the next of the others would reach that age. Taken-over
    /// work wakes the driver (`wake`) and the delivery worker (`work`), which claim it
    /// at once. Until shutdown; then gives back every timer claim so the other nodes
    /// need not wait (the delivery worker gives back its own).
    ///
    /// A node judges others only after it has reached the store for a whole lease
    /// itself: after an outage of the store every node's heartbeat is old, and the
    /// first to come back must not take the others, which have not beaten yet, for dead.
    pub async fn keep_leases(
        store: Store,
        clock: SharedClock,
        node: String,
        lease: TimeDelta,
        wake: Arc<Notify>,
        work: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        let mut next_beat = clock.now();
        let mut next_look = clock.now();
        // Since when every heartbeat has reached the store.
        let mut reachable_since: Option<DateTime<Utc>> = None;
        loop {
            let now = clock.now();
            if now >= next_beat {
                match cluster::heartbeat(&store, &node, now, now + lease).await {
                    Ok(beat) => {
                        reachable_since.get_or_insert(now);
                        if beat.was_taken_for_dead {
                            tracing::warn!(
                                "this node was taken for dead (no heartbeat for a whole lease) and its claims went to other nodes; webhooks it was sending may go out twice, with the same webhook-id"
                            );
                        }
                    }
                    Err(e) => {
                        reachable_since = None;
                        tracing::warn!(error = %e, "heartbeat failed; leases may lapse and other nodes take over");
                    }
                }
                next_beat = now + lease / 3;
            }
            if now >= next_look {
                next_look = next_beat;
                if reachable_since.is_some_and(|since| now - since >= lease) {
                    match cluster::take_over_dead(&store, &node, now, lease).await {
                        Ok(taken) => {
                            if !taken.nodes.is_empty() {
                                tracing::warn!(
                                    nodes = ?taken.nodes,
                                    timers = taken.timers,
                                    deliveries = taken.deliveries,
                                    "took over the work of nodes whose heartbeat stopped"
                                );
                                metrics::counter!("duehook_nodes_taken_over_total")
                                    .increment(taken.nodes.len() as u64);
                                wake.notify_one();
                                work.notify_one();
                            }
                            if let Some(at) = taken.next_death {
                                // Just past it: at that instant it is not dead yet.
                                next_look = next_look.min(at + TimeDelta::milliseconds(1)).max(now);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot look for dead nodes; retrying")
                        }
                    }
                } else if let Some(since) = reachable_since {
                    next_look = next_look.min(since + lease);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = clock.sleep_until(next_beat.min(next_look)) => {}
            }
        }
        match cluster::release(&store, &node, clock.now()).await {
            Ok(n) => tracing::info!(released = n, "released timer claims"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release claims; they lapse with their leases")
            }
        }
    }

    /// Fires a chunk of due timers in `tx` (already begun: on SQLite it holds the
    /// writer lock); if that fails (a deadlock with another node, say), each in a
    /// transaction of its own, so one bad timer cannot hold up the rest.
    async fn fire_chunk(
        &self,
        mut tx: Tx,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let batch = match self.firing.fire(&mut tx, ids, now).await {
            Ok((outcomes, written)) => match tx.commit().await {
                Ok(()) => {
                    written.committed();
                    Ok(outcomes)
                }
                Err(e) => Err(e),
            },
            Err(e) => {
                // Ends the transaction (and frees the writer lock) before the fallback
                // begins transactions of its own.
                let _ = tx.rollback().await;
                Err(e)
            }
        };
        let outcomes = match batch {
            Ok(outcomes) => outcomes,
            Err(e) if ids.len() > 1 => {
                tracing::info!(error = %e, batch = ids.len(), "batch fire failed; firing one by one");
                let mut outcomes = Vec::with_capacity(ids.len());
                for &id in ids {
                    let mut tx = self.store.begin().await?;
                    let (mut one, written) = self.firing.fire(&mut tx, &[id], now).await?;
                    tx.commit().await?;
                    written.committed();
                    outcomes.push(one.pop().unwrap_or(Fired::Nothing));
                }
                outcomes
            }
            Err(e) => return Err(e),
        };
        for (id, outcome) in ids.iter().zip(outcomes) {
            self.record(*id, &outcome);
        }
        Ok(())
    }

    /// Logs and counts one timer's outcome.
    fn record(&self, id: i64, outcome: &Fired) {
        let span = tracing::info_span!("fire", timer = id);
        let _enter = span.enter();
        let label = match outcome {
            Fired::Event { late: true, .. } => "fired_late",
            Fired::Event { .. } => "fired",
            Fired::Cancelled(_) => "cancelled",
            Fired::Skipped(_) => "skipped",
            Fired::Nothing => "nothing",
        };
        metrics::counter!(crate::runtime::telemetry::names::TIMER_OUTCOMES, "outcome" => label)
            .increment(1);
        match &outcome {
            Fired::Event {
                event_id,
                late,
                lag,
            } => {
                metrics::histogram!(crate::runtime::telemetry::names::TIMER_LAG)
                    .record(lag.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6);
                self.stats.fired.fetch_add(1, Ordering::Relaxed);
                if *late {
                    self.stats.late.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(event = %event_id, late, "timer fired");
            }
            Fired::Cancelled(why) => {
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(reason = %why, "timer cancelled at fire time");
            }
            Fired::Skipped(why) => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(reason = %why, "timer skipped");
            }
            Fired::Nothing => {}
        }
    }

    fn publish(&self, wheel: &TimingWheel<i64, ByValue>, next_deadline: Option<u64>) {
        self.stats
            .in_wheel
            .store(wheel.len() as u64, Ordering::Relaxed);
        self.stats
            .wheel_bytes
            .store(wheel.memory_bytes() as u64, Ordering::Relaxed);
        self.stats
            .next_fire_ms
            .store(next_deadline.map_or(-1, |d| d as i64), Ordering::Relaxed);
    }
}

/// Moves the timers the wheel expired into `due`: they are no longer in the wheel, so
/// the next refill may load them again if they are not fired.
fn take_expired(expired: &mut Vec<(u64, i64)>, due: &mut VecDeque<i64>) {
    due.extend(expired.drain(..).map(|(_, id)| id));
}

/// Sleeps `d` unless shutdown comes first; true when shutting down.
async fn pause(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
