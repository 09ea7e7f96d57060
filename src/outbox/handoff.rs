//! Hand-off: deliveries the outbox creates for a writer on this node (a batch of fired
//! timers, a group of posted events, one change) are written already claimed by this node's delivery worker
//! and passed to it in memory when their transaction commits, so the worker neither
//! claims them (a write, on SQLite behind the one writer) nor reads them back with
//! their events (the writer has them in hand).
//!
//! Only as many as the worker has asked for go this way: each loop it publishes, per
//! endpoint, how many more deliveries it would hold — about a second of work for an
//! endpoint that has been answering with success quickly and has no rate limit,
//! nothing for any other. A writer reserves from that room before it inserts (the rest
//! of its deliveries are written unclaimed, for the worker's claims); what it
//! reserved counts as in transit until the worker takes it, or until the reservation
//! is dropped (its transaction failed). The worker's own claims leave out a lane whose
//! room hand-offs filled, so the two do not compete.
//!
//! Crash safety is that of a claim: a handed-off delivery carries this node's name and
//! a lease in the store from its first commit (its endpoint's request timeout plus the
//! node's lease margin, renewed with the heartbeat). If the process dies before the
//! attempt is recorded, the delivery is released as soon as the node is known dead (on
//! SQLite, when the next process starts; with several nodes, a lease after its last
//! heartbeat) and sent again (at least once, same `webhook-id`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;

use crate::domain::event::Event;
use crate::store::deliveries::Claimed;

/// What the worker wants and what is on its way to it, per endpoint.
#[derive(Default)]
struct Room {
    /// How many more deliveries the worker would take, as it last published.
    free: HashMap<String, usize>,
    /// Reserved by writers and not yet taken by the worker.
    in_transit: HashMap<String, usize>,
    /// Endpoints a writer left deliveries in the store for (it wanted more room than
    /// there was): nothing more is handed off to them until the worker's claims have
    /// taken those, so deliveries still go out oldest first.
    overflowed: HashSet<String>,
    /// The worker stopped: nothing more is reserved.
    closed: bool,
}

/// The meeting point of this node's writers and its delivery worker.
pub struct Handoff {
    node: String,
    /// What a delivery claim's lease adds to its endpoint's request timeout.
    margin: TimeDelta,
    room: Mutex<Room>,
    tx: mpsc::UnboundedSender<Vec<Claimed>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<Claimed>>>>,
    /// Deliveries the worker took from hand-offs since the start.
    taken: AtomicU64,
}

impl Handoff {
    /// A hand-off for the worker of `node` (its `claimed_by` in the store, the node's
    /// id, so that whoever takes over a dead node's timers takes its deliveries too),
    /// whose claims last their endpoint's request timeout plus `margin`.
    pub fn new(node: &str, margin: TimeDelta) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            node: node.to_string(),
            margin,
            room: Mutex::new(Room::default()),
            tx,
            rx: Mutex::new(Some(rx)),
            taken: AtomicU64::new(0),
        }
    }

    /// The worker's name in `claimed_by`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where the lease of a delivery claimed at `now` starts counting its endpoint's
    /// request timeout from (see `crate::store::deliveries::lease_until`): the claim
    /// covers the slowest send the endpoint allows, plus the margin, which also covers
    /// the wait in its lane and the time between two heartbeats that renew it.
    pub fn lease_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.margin
    }

    fn room(&self) -> std::sync::MutexGuard<'_, Room> {
        // A panic while holding this lock leaves plain counters behind: still usable.
        self.room
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves up to `wanted[endpoint]` deliveries per endpoint for the worker;
    /// returns what was granted. Release it by sending it ([`Handed::send`]) or
    /// dropping it.
    pub fn reserve(&self, wanted: &HashMap<&str, usize>) -> Reservation<'_> {
        let mut granted = HashMap::new();
        let mut room = self.room();
        if !room.closed {
            let room = &mut *room;
            for (ep, want) in wanted {
                if room.overflowed.contains(*ep) {
                    continue;
                }
                let free = room.free.get(*ep).copied().unwrap_or(0);
                let moving = room.in_transit.entry((*ep).to_string()).or_default();
                let take = free.saturating_sub(*moving).min(*want);
                if take < *want {
                    room.overflowed.insert((*ep).to_string());
                }
                if take > 0 {
                    *moving += take;
                    granted.insert((*ep).to_string(), take);
                }
            }
        }
        Reservation {
            handoff: self,
            granted,
        }
    }

    /// The worker's end of the channel (once).
    pub(crate) fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Vec<Claimed>>> {
        self.rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// The worker publishes how many more deliveries each endpoint's lane would take,
    /// and what it has taken off the channel since it last published (no longer in
    /// transit) — both under one lock, so a writer never counts a delivery twice —
    /// and the endpoints whose due deliveries its last claim took all of (`drained`).
    pub(crate) fn publish(
        &self,
        free: impl Iterator<Item = (String, usize)>,
        arrived: &HashMap<String, usize>,
        drained: &[String],
    ) {
        let mut room = self.room();
        for ep in drained {
            room.overflowed.remove(ep);
        }
        room.free.clear();
        room.free.extend(free.filter(|(_, n)| *n > 0));
        for (ep, n) in arrived {
            if let Some(moving) = room.in_transit.get_mut(ep) {
                *moving = moving.saturating_sub(*n);
            }
        }
        room.in_transit.retain(|_, n| *n > 0);
    }

    /// How many deliveries the worker has taken from hand-offs since the start (also
    /// the metric `duehook_deliveries_handed_off_total`).
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// The worker took `n` handed-off deliveries.
    pub(crate) fn count_taken(&self, n: usize) {
        self.taken.fetch_add(n as u64, Ordering::Relaxed);
        metrics::counter!("duehook_deliveries_handed_off_total").increment(n as u64);
    }

    /// The worker stopped: writers reserve nothing more.
    pub(crate) fn close(&self) {
        let mut room = self.room();
        room.closed = true;
        room.free.clear();
    }
}

/// Room reserved for the worker; given back when dropped unless sent.
pub struct Reservation<'a> {
    handoff: &'a Handoff,
    granted: HashMap<String, usize>,
}

impl Reservation<'_> {
    /// Takes one of the deliveries reserved for `endpoint`; false when none is left.
    pub fn take(&mut self, endpoint: &str) -> bool {
        match self.granted.get_mut(endpoint) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        // Whatever was reserved and not sent (left over, or the transaction failed) is
        // no longer in transit.
        if self.granted.values().all(|n| *n == 0) {
            return;
        }
        let mut room = self.handoff.room();
        for (ep, n) in &self.granted {
            if let Some(moving) = room.in_transit.get_mut(ep) {
                *moving = moving.saturating_sub(*n);
            }
        }
    }
}

/// Deliveries a writer inserted already claimed for the worker, waiting for the
/// writer's commit: `(index of the event among the writer's events, delivery id,
/// endpoint id)`.
pub struct Handed<'a> {
    reservation: Reservation<'a>,
    rows: Vec<(usize, String, String)>,
}

impl<'a> Handed<'a> {
    pub fn new(reservation: Reservation<'a>, rows: Vec<(usize, String, String)>) -> Self {
        Self { reservation, rows }
    }

    /// After the commit: passes the deliveries to the worker, each with its event as
    /// `event(index)` builds it (exactly what the store now holds: a retry read back
    /// from the store must render the same bytes).
    /// A row whose event cannot be built (never expected) stays in the store, claimed,
    /// and is sent once this node stops (its claims go back then).
    pub fn send(mut self, event: impl Fn(usize) -> Option<Event>) {
        let claimed: Vec<Claimed> = self
            .rows
            .drain(..)
            .filter_map(|(i, id, endpoint_id)| match event(i) {
                // Handed off only when unordered (see `Outbox::fan_out`).
                Some(event) => Some(Claimed {
                    id,
                    endpoint_id,
                    attempts: 0,
                    event,
                    order_key: None,
                    seq: 0,
                }),
                None => {
                    tracing::warn!(delivery = %id, "handed-off delivery without its event; it waits until this node stops");
                    None
                }
            })
            .collect();
        if claimed.is_empty() {
            return;
        }
        // In transit until the worker publishes that it took them (see `publish`);
        // what was reserved and not used is released when the reservation drops.
        if self.reservation.handoff.tx.send(claimed).is_err() {
            // The worker is gone (stopping): the app gives its claims back as it ends.
            tracing::debug!(
                "delivery worker gone; handed-off deliveries go back as the node stops"
            );
        }
    }
}

impl Drop for Handed<'_> {
    fn drop(&mut self) {
        // Not sent (the transaction failed): the rows' room goes back with the rest of
        // the reservation.
        for (_, _, endpoint) in self.rows.drain(..) {
            *self.reservation.granted.entry(endpoint).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(ep: &'static str, n: usize) -> HashMap<&'static str, usize> {
        HashMap::from([(ep, n)])
    }

    fn granted(r: &mut Reservation<'_>, ep: &str) -> usize {
        std::iter::from_fn(|| r.take(ep).then_some(())).count()
    }

    #[test]
    fn room_is_granted_once_until_the_worker_takes_it() {
        let h = Handoff::new("n", TimeDelta::seconds(30));
        assert_eq!(
            granted(&mut h.reserve(&want("a", 3)), "a"),
            0,
            "no room published"
        );
        // Those three went to the store; a claim took them all.
        h.publish(
            [("a".to_string(), 5)].into_iter(),
            &HashMap::new(),
            &["a".to_string()],
        );
        let mut first = h.reserve(&want("a", 3));
        assert_eq!(granted(&mut first, "a"), 3);
        // Used (taken) but not yet arrived: in transit, whatever the worker publishes
        // before it arrives.
        h.publish([("a".to_string(), 5)].into_iter(), &HashMap::new(), &[]);
        assert_eq!(granted(&mut h.reserve(&want("a", 2)), "a"), 2);
        // The worker took all five: its new room counts them, nothing is in transit.
        h.publish(
            [("a".to_string(), 2)].into_iter(),
            &HashMap::from([("a".to_string(), 5)]),
            &[],
        );
        assert_eq!(granted(&mut h.reserve(&want("a", 2)), "a"), 2);
        drop(first);
    }

    #[test]
    fn a_dropped_reservation_gives_its_room_back() {
        let h = Handoff::new("n", TimeDelta::seconds(30));
        h.publish([("a".to_string(), 4)].into_iter(), &HashMap::new(), &[]);
        drop(h.reserve(&want("a", 4)));
        assert_eq!(granted(&mut h.reserve(&want("a", 4)), "a"), 4);
    }

    #[test]
    fn an_endpoint_left_with_deliveries_in_the_store_gets_none_until_drained() {
        let h = Handoff::new("n", TimeDelta::seconds(30));
        h.publish([("a".to_string(), 2)].into_iter(), &HashMap::new(), &[]);
        // Wants 5, gets 2: three are written unclaimed.
        assert_eq!(granted(&mut h.reserve(&want("a", 5)), "a"), 2);
        h.publish([("a".to_string(), 10)].into_iter(), &HashMap::new(), &[]);
        assert_eq!(
            granted(&mut h.reserve(&want("a", 1)), "a"),
            0,
            "newer deliveries would go before the three in the store"
        );
        h.publish(
            [("a".to_string(), 10)].into_iter(),
            &HashMap::new(),
            &["a".to_string()],
        );
        assert_eq!(granted(&mut h.reserve(&want("a", 1)), "a"), 1);
    }

    #[test]
    fn nothing_is_reserved_once_closed() {
        let h = Handoff::new("n", TimeDelta::seconds(30));
        h.publish([("a".to_string(), 4)].into_iter(), &HashMap::new(), &[]);
        h.close();
        assert_eq!(granted(&mut h.reserve(&want("a", 1)), "a"), 0);
    }
}
