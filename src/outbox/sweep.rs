//! The sweeper: fans out events a store holds unfanned. The outbox fans every event out
//! in the transaction that writes it, so on a store it wrote the sweeper finds nothing;
//! it serves a store written otherwise (an older version, a copy) and is the safety net
//! that keeps "every event gets its deliveries" true whatever the store holds. One
//! cheap indexed read per poll interval when there is nothing to do.

use chrono::TimeDelta;
use tokio_util::sync::CancellationToken;

use super::Outbox;
use crate::clock::SharedClock;
use crate::store::{Store, StoreError, events};

/// Events fanned out per transaction.
const BATCH: i64 = 500;

/// Sweeps until `shutdown`, every `poll`.
pub async fn run(
    outbox: std::sync::Arc<Outbox>,
    store: Store,
    clock: SharedClock,
    poll: TimeDelta,
    shutdown: CancellationToken,
) {
    loop {
        let more = match sweep_batch(&outbox, &store, &clock).await {
            Ok(n) => n == BATCH as usize,
            Err(e) => {
                tracing::warn!(error = %e, "fan-out of unfanned events failed; will retry");
                false
            }
        };
        if more {
            continue;
        }
        let deadline = clock.now() + poll;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = clock.sleep_until(deadline) => {}
        }
    }
}

/// Fans out one batch of unfanned events; returns how many events it took.
async fn sweep_batch(
    outbox: &Outbox,
    store: &Store,
    clock: &SharedClock,
) -> Result<usize, StoreError> {
    // Look before queueing for the writer: nearly always there is nothing.
    if !events::any_unfanned(store.pool()).await? {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    let now = clock.now();
    let evs = events::unfanned(&mut tx, BATCH).await?;
    if evs.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }
    let (_, to_claim) = outbox
        .fan_out(
            &mut tx,
            evs.iter().map(|ev| super::Fanned {
                id: &ev.id,
                event_type: &ev.event_type,
                entity_kind: &ev.entity_kind,
                entity_id: &ev.entity_id,
            }),
            now,
            false,
        )
        .await?;
    let seqs: Vec<i64> = evs.iter().map(|ev| ev.seq).collect();
    events::mark_fanned_out(&mut tx, &seqs).await?;
    tx.commit().await?;
    if to_claim {
        outbox.requeued();
    }
    tracing::info!(
        events = evs.len(),
        "fanned out events the store held unfanned"
    );
    Ok(evs.len())
}
