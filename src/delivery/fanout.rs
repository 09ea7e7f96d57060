//! Fan-out: turns each event in the outbox into one delivery per matching enabled
//! endpoint, in one transaction with marking the event `fanned_out`. Woken by the
//! outbox Notify after every committed event; polls as a fallback (work written by
//! another node).

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

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
    )
    .await?;
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
/// Returns how many deliveries were created.
pub async fn deliveries_for<'a>(
    tx: &mut Tx,
    events: impl Iterator<Item = (&'a str, &'a str)>,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let endpoints = endpoints::list_enabled(tx).await?;
    let mut rows = Vec::new();
    for (event_id, event_type) in events {
        for ep in endpoints.iter().filter(|ep| ep.subscribes_to(event_type)) {
            let first_delay = ep
                .settings
                .retry_schedule
                .first()
                .and_then(|d| TimeDelta::from_std(*d).ok())
                .unwrap_or_default();
            rows.push(deliveries::NewDelivery {
                event_id,
                event_type,
                endpoint_id: &ep.id,
                first_attempt_at: now + first_delay,
            });
        }
    }
    if rows.is_empty() {
        return Ok(0);
    }
    deliveries::insert_many(tx, &rows, now).await
}
