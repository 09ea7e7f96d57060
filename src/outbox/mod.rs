//! The outbox: the one way an event enters duehook.
//!
//! Whoever causes events (ingest, single or grouped; the scheduler firing timers; an
//! endpoint's test event) writes them with [`Outbox::write`] inside its own
//! transaction. In that same transaction the outbox stores the events, creates one
//! delivery per enabled endpoint subscribed to each event's type (the fan-out), and
//! writes the deliveries this node's delivery worker has room for already claimed by
//! it (the hand-off, see [`handoff`]). After the caller commits, [`Written::committed`]
//! passes those deliveries to the worker in memory and wakes it for the rest. A
//! transaction that rolls back takes its events and deliveries with it: an event is
//! never stored without its deliveries, nor acknowledged before both are.
//!
//! Deliveries made due again (a retry, a recovery) enter through [`Outbox::requeued`].
//!
//! The [`sweep`] task fans out events a store holds unfanned (written by a process that
//! did not fan out in the same transaction); it finds nothing on a store this outbox
//! wrote.

mod handoff;
mod sweep;

pub(crate) use handoff::Handoff;
pub(crate) use sweep::run as sweep;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use tokio::sync::Notify;

use crate::domain::event::{Event, NewEvent, new_event_id};
use crate::store::deliveries::{self, NewDelivery};
use crate::store::{StoreError, Tx, endpoints, events};
use handoff::Handed;

/// The outbox of this node: where its writers put events, and how its delivery worker
/// hears of them.
pub struct Outbox {
    handoff: Arc<Handoff>,
    /// Wakes the delivery worker: deliveries were written for it to claim.
    deliveries: Arc<Notify>,
}

impl Outbox {
    /// The outbox of `node`, whose delivery claims last their endpoint's request
    /// timeout plus `lease_margin` (the cluster lease; see [`Handoff::lease_from`]).
    pub fn new(node: &str, lease_margin: TimeDelta) -> Self {
        Self {
            handoff: Arc::new(Handoff::new(node, lease_margin)),
            deliveries: Arc::new(Notify::new()),
        }
    }

    /// The meeting point with this node's delivery worker.
    pub(crate) fn handoff(&self) -> &Arc<Handoff> {
        &self.handoff
    }

    /// What the delivery worker waits on besides its hand-offs.
    pub(crate) fn delivery_wake(&self) -> &Arc<Notify> {
        &self.deliveries
    }

    /// Writes `evs` in `tx`, all created at `now`, with one delivery per enabled
    /// endpoint subscribed to each event's type, first tried after the endpoint's first
    /// retry delay (zero by default). Call [`Written::committed`] once `tx` commits.
    pub async fn write<'a>(
        &'a self,
        tx: &mut Tx,
        evs: impl Into<Cow<'a, [NewEvent]>>,
        now: DateTime<Utc>,
    ) -> Result<Written<'a>, StoreError> {
        let evs = evs.into();
        let (ids, seqs) = self.store_events(tx, &evs, now).await?;
        let (handed, to_claim) = if evs.is_empty() {
            (None, false)
        } else {
            self.fan_out(
                tx,
                ids.iter().zip(evs.iter()).map(|(id, ev)| Fanned {
                    id,
                    event_type: &ev.event_type,
                    entity_kind: &ev.entity_kind,
                    entity_id: &ev.entity_id,
                }),
                now,
                true,
            )
            .await?
        };
        Ok(Written {
            outbox: self,
            ids,
            seqs,
            events: evs,
            now,
            handed,
            to_claim,
        })
    }

    /// Writes `ev` in `tx` with one delivery, to `endpoint_id` only, due at once
    /// whatever the endpoint's topics (an endpoint's test event).
    pub async fn write_to<'a>(
        &'a self,
        tx: &mut Tx,
        ev: &'a NewEvent,
        endpoint_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(Written<'a>, String), StoreError> {
        let evs = Cow::Borrowed(std::slice::from_ref(ev));
        let (ids, seqs) = self.store_events(tx, &evs, now).await?;
        let delivery = deliveries::new_id(now);
        let ordering = endpoints::get_locked(tx, endpoint_id)
            .await?
            .map(|ep| ep.settings.ordering)
            .unwrap_or_default();
        let row = NewDelivery {
            id: delivery.clone(),
            event_id: &ids[0],
            event_type: &ev.event_type,
            endpoint_id,
            first_attempt_at: now,
            order_key: ordering.key(&ev.entity_kind, &ev.entity_id),
        };
        deliveries::insert_many(tx, std::slice::from_ref(&row), now, None).await?;
        Ok((
            Written {
                outbox: self,
                ids,
                seqs,
                events: evs,
                now,
                handed: None,
                to_claim: true,
            },
            delivery,
        ))
    }

    /// Deliveries were made due again (retried, recovered) and committed: the worker
    /// claims them now rather than at its next poll.
    pub fn requeued(&self) {
        self.deliveries.notify_one();
    }

    /// Inserts `evs`; returns their new ids and `seq`s, in order.
    async fn store_events(
        &self,
        tx: &mut Tx,
        evs: &[NewEvent],
        now: DateTime<Utc>,
    ) -> Result<(Vec<String>, Vec<i64>), StoreError> {
        let ids: Vec<String> = evs.iter().map(|_| new_event_id(now)).collect();
        let seqs = events::insert(tx, &ids, evs, now).await?;
        Ok((ids, seqs))
    }

    /// Creates in `tx` the deliveries of `evs`: one per enabled endpoint subscribed to
    /// the event's type, first tried after the endpoint's first retry delay (zero by
    /// default), in its ordering key when the endpoint orders its deliveries. With
    /// `hand_off`, those due at once that the worker has room for are written claimed
    /// by it and returned, to pass on after the commit; an ordered delivery never is:
    /// it goes out when it is first of its key, which only a claim can tell across
    /// nodes. Also says whether any delivery was left for the worker to claim.
    async fn fan_out<'a>(
        &self,
        tx: &mut Tx,
        evs: impl Iterator<Item = Fanned<'a>>,
        now: DateTime<Utc>,
        hand_off: bool,
    ) -> Result<(Option<Handed<'_>>, bool), StoreError> {
        let endpoints = endpoints::list_enabled(tx).await?;
        let mut rows = Vec::new();
        for (i, ev) in evs.enumerate() {
            let (event_id, event_type) = (ev.id, ev.event_type);
            for ep in endpoints.iter().filter(|ep| ep.subscribes_to(event_type)) {
                let first_delay = ep
                    .settings
                    .retry_schedule
                    .first()
                    .and_then(|d| TimeDelta::from_std(*d).ok())
                    .unwrap_or_default();
                rows.push((
                    i,
                    NewDelivery {
                        id: deliveries::new_id(now),
                        event_id,
                        event_type,
                        endpoint_id: &ep.id,
                        first_attempt_at: now + first_delay,
                        order_key: ep.settings.ordering.key(ev.entity_kind, ev.entity_id),
                    },
                ));
            }
        }
        if rows.is_empty() {
            return Ok((None, false));
        }
        if !hand_off {
            let rows: Vec<_> = rows.into_iter().map(|(_, r)| r).collect();
            deliveries::insert_many(tx, &rows, now, None).await?;
            return Ok((None, true));
        }
        let mut wanted: HashMap<&str, usize> = HashMap::new();
        let handable = |r: &NewDelivery<'_>| r.first_attempt_at <= now && r.order_key.is_none();
        for (_, r) in rows.iter().filter(|(_, r)| handable(r)) {
            *wanted.entry(r.endpoint_id).or_default() += 1;
        }
        let mut reservation = self.handoff.reserve(&wanted);
        let (mut claimed, mut unclaimed) = (Vec::new(), Vec::new());
        let mut handed_rows = Vec::new();
        for (i, r) in rows {
            if handable(&r) && reservation.take(r.endpoint_id) {
                handed_rows.push((i, r.id.clone(), r.endpoint_id.to_string()));
                claimed.push(r);
            } else {
                unclaimed.push(r);
            }
        }
        if !unclaimed.is_empty() {
            deliveries::insert_many(tx, &unclaimed, now, None).await?;
        }
        if !claimed.is_empty() {
            let lease_from = self.handoff.lease_from(now);
            let timeouts: HashMap<&str, u64> = endpoints
                .iter()
                .map(|ep| (ep.id.as_str(), ep.settings.timeout_ms))
                .collect();
            let leases: Vec<DateTime<Utc>> = claimed
                .iter()
                .map(|r| {
                    let timeout = timeouts.get(r.endpoint_id).copied().unwrap_or(0);
                    deliveries::lease_until(lease_from, timeout)
                })
                .collect();
            let n =
                deliveries::insert_many(tx, &claimed, now, Some((self.handoff.node(), &leases)))
                    .await?;
            if n != claimed.len() as u64 {
                // Fresh events have no deliveries yet; if some already existed, the
                // worker would be handed ids the store does not hold for it.
                return Err(StoreError::Corrupt(format!(
                    "{} of {} handed-off deliveries already existed",
                    claimed.len() as u64 - n,
                    claimed.len()
                )));
            }
        }
        let handed = (!handed_rows.is_empty()).then(|| Handed::new(reservation, handed_rows));
        Ok((handed, !unclaimed.is_empty()))
    }
}

/// An event being fanned out: what picks its endpoints and its ordering key.
struct Fanned<'a> {
    id: &'a str,
    event_type: &'a str,
    entity_kind: &'a str,
    entity_id: &'a str,
}

/// Events written in a transaction that has not committed yet.
#[must_use = "call `committed` once the transaction commits"]
pub struct Written<'a> {
    outbox: &'a Outbox,
    ids: Vec<String>,
    seqs: Vec<i64>,
    events: Cow<'a, [NewEvent]>,
    now: DateTime<Utc>,
    handed: Option<Handed<'a>>,
    to_claim: bool,
}

impl Written<'_> {
    /// The id of the `i`th event written.
    pub fn id(&self, i: usize) -> Option<&str> {
        self.ids.get(i).map(String::as_str)
    }

    /// The `i`th event as the store holds it (instants at its millisecond precision,
    /// `data` as stored), so that what is handed to the worker renders the same bytes
    /// as a retry read back from the store.
    pub fn event(&self, i: usize) -> Option<Event> {
        let (id, ev) = (self.ids.get(i)?, self.events.get(i)?);
        Some(Event {
            id: id.clone(),
            event_type: ev.event_type.clone(),
            created: self.now.trunc_subsecs(3),
            scheduled_at: ev.scheduled_at.map(|t| t.trunc_subsecs(3)),
            data: ev.data.clone(),
            seq: *self.seqs.get(i)?,
            entity_kind: ev.entity_kind.clone(),
            entity_id: ev.entity_id.clone(),
        })
    }

    /// After the commit: passes the handed-off deliveries to the worker and wakes it
    /// for the ones it must claim. Dropping a `Written` instead (the transaction
    /// failed) gives the reserved room back.
    pub fn committed(mut self) {
        if let Some(handed) = self.handed.take() {
            handed.send(|i| self.event(i));
        }
        if self.to_claim {
            self.outbox.deliveries.notify_one();
        }
        for ev in self.events.iter() {
            let trigger = if ev.timer_id.is_some() {
                "scheduled"
            } else {
                "immediate"
            };
            metrics::counter!(crate::runtime::telemetry::names::EVENTS, "type" => ev.event_type.clone(), "trigger" => trigger)
                .increment(1);
        }
    }
}
