//! Fan-out: turns each event in the outbox into one delivery per matching enabled
//! endpoint, in one transaction with marking the event `fanned_out`. Woken by the
//! outbox Notify after every committed event; polls as a fallback (work written by
//! another node).

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::handoff::{self, Handed, Handoff};
use super::pipeline::Pipeline;
use crate::domain::event::Event;
use crate::store::{StoreError, Tx, deliveries, endpoints};

/// Events fanned out per transaction.
const BATCH: i64 = 500;

pub async fn run(p: Pipeline, shutdown: CancellationToken) {
    loop {
        let more = match fan_out_batch(&p).await {
            Ok(n) => n == BATCH as usize,
            Err(e) => {
                tracing::warn!(error = %e, "fan-out failed; will retry");
                false
            }
        };
        if more {
            continue;
        }
        let deadline = p.clock.now() + p.poll_interval();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = p.outbox.notified() => {}
            _ = p.clock.sleep_until(deadline) => {}
        }
    }
}

/// Fans out one batch of events; returns how many events it took.
pub async fn fan_out_batch(p: &Pipeline) -> Result<usize, StoreError> {
    // Most wake-ups find nothing: fired and posted events are fanned out as they are
    // written. Look before queueing for the writer.
    if !deliveries::any_unfanned(p.store.pool()).await? {
        return Ok(0);
    }
    let mut tx = p.store.begin().await?;
    let now = p.clock.now();
    let events = deliveries::unfanned_events(&mut tx, p.store.backend(), BATCH).await?;
    if events.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let created = fan_out_in(&mut tx, &events, now).await?;
    tx.commit().await?;
    if created > 0 {
        p.work.notify_one();
    }
    tracing::debug!(events = events.len(), deliveries = created, "fanned out");
    Ok(events.len())
}

/// Fans `events` out inside `tx`: one delivery per enabled endpoint subscribed to the
/// event's type (see [`deliveries_for`]), and the events marked fanned out. Returns how
/// many deliveries were created.
pub async fn fan_out_in(
    tx: &mut Tx,
    events: &[Event],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let created = deliveries_for(
        tx,
        events
            .iter()
            .map(|ev| (ev.id.as_str(), ev.event_type.as_str())),
        now,
        None,
    )
    .await?
    .count;
    let seqs: Vec<i64> = events.iter().map(|ev| ev.seq).collect();
    deliveries::mark_many_fanned_out(tx, &seqs).await?;
    Ok(created)
}

/// Creates, inside `tx`, the deliveries of events given as `(id, type)`: one per
/// enabled endpoint subscribed to the type, first tried after the endpoint's first
/// retry delay (zero by default). Marking the events fanned out is the caller's part:
/// group commit (posted events) and the scheduler (fired batches) write their events
/// already marked, in the transaction that creates their deliveries, so they need no
/// fan-out transaction of their own.
///
/// With a `handoff`, the deliveries due at once that this node's worker has room for
/// are written claimed by it; the caller passes them on after its commit
/// ([`Created::handed`], see [`super::handoff`]).
pub async fn deliveries_for<'a, 'h>(
    tx: &mut Tx,
    events: impl Iterator<Item = (&'a str, &'a str)>,
    now: DateTime<Utc>,
    handoff: Option<&'h Handoff>,
) -> Result<Created<'h>, StoreError> {
    let endpoints = endpoints::list_enabled(tx).await?;
    // (event index, delivery)
    let mut rows = Vec::new();
    for (i, (event_id, event_type)) in events.enumerate() {
        for ep in endpoints.iter().filter(|ep| ep.subscribes_to(event_type)) {
            let first_delay = ep
                .settings
                .retry_schedule
                .first()
                .and_then(|d| TimeDelta::from_std(*d).ok())
                .unwrap_or_default();
            rows.push((
                i,
                deliveries::NewDelivery {
                    id: deliveries::new_id(now),
                    event_id,
                    event_type,
                    endpoint_id: &ep.id,
                    first_attempt_at: now + first_delay,
                },
            ));
        }
    }
    let Some(handoff) = handoff.filter(|_| !rows.is_empty()) else {
        let rows: Vec<_> = rows.into_iter().map(|(_, r)| r).collect();
        let count = if rows.is_empty() {
            0
        } else {
            deliveries::insert_many(tx, &rows, now, None).await?
        };
        return Ok(Created {
            count,
            handed: None,
        });
    };
    let mut wanted: HashMap<&str, usize> = HashMap::new();
    for (_, r) in rows.iter().filter(|(_, r)| r.first_attempt_at <= now) {
        *wanted.entry(r.endpoint_id).or_default() += 1;
    }
    let mut reservation = handoff.reserve(&wanted);
    let (mut claimed, mut unclaimed) = (Vec::new(), Vec::new());
    let mut handed_rows = Vec::new();
    for (i, r) in rows {
        if r.first_attempt_at <= now && reservation.take(r.endpoint_id) {
            handed_rows.push((i, r.id.clone(), r.endpoint_id.to_string()));
            claimed.push(r);
        } else {
            unclaimed.push(r);
        }
    }
    let mut count = 0;
    if !unclaimed.is_empty() {
        count += deliveries::insert_many(tx, &unclaimed, now, None).await?;
    }
    if !claimed.is_empty() {
        let n = deliveries::insert_many(
            tx,
            &claimed,
            now,
            Some((handoff.node(), handoff::lease_until(now))),
        )
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
        count += n;
    }
    Ok(Created {
        count,
        handed: Some(Handed {
            reservation,
            rows: handed_rows,
        }),
    })
}

/// What [`deliveries_for`] created.
pub struct Created<'h> {
    /// Deliveries inserted.
    pub count: u64,
    /// Those written claimed for this node's worker, to pass on after the commit.
    pub handed: Option<Handed<'h>>,
}
