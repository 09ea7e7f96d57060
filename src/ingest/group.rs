//! Group commit for `POST /v1/events`: requests that arrive while a transaction is
//! being written wait for the next one, which stores all of them at once. Each request
//! is answered only after the transaction holding its event committed, so nothing is
//! acknowledged that a crash could lose.
//!
//! Why: a posted event is one small row, and a transaction of its own costs far more
//! than the row (SQLite's single writer, a WAL flush on PostgreSQL). Under load the
//! batches grow by themselves; alone, a request waits for no one.
//!
//! The events enter through the outbox like every other event, in the batch's
//! transaction.
//!
//! A batch that fails is written again one event per transaction, so one bad request
//! (a value the database refuses) fails alone and the others still succeed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::clock::SharedClock;
use crate::domain::event::{Event, NewEvent};
use crate::outbox::Outbox;
use crate::store::{Backend, Store, StoreError};

/// Events written per transaction at most.
const BATCH: usize = 256;
/// Requests waiting for a transaction at most; more wait to be queued (backpressure).
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<Event, StoreError>>;

/// The handle requests post their events through.
#[derive(Clone)]
pub struct EventWriter {
    queues: Arc<[mpsc::Sender<(NewEvent, Reply)>]>,
    next: Arc<AtomicUsize>,
}

impl EventWriter {
    /// Starts the writer tasks: one on SQLite (one writer at a time anyway), a few on
    /// PostgreSQL, whose transactions proceed side by side. They end when the last
    /// handle is dropped.
    pub fn start(store: Store, clock: SharedClock, outbox: Arc<Outbox>) -> Self {
        let writers = match store.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        let queues: Vec<_> = (0..writers)
            .map(|_| {
                let (queue, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(store.clone(), clock.clone(), outbox.clone(), rx));
                queue
            })
            .collect();
        Self {
            queues: queues.into(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Stores `ev`; returns it once committed.
    pub async fn write(&self, ev: NewEvent) -> Result<Event, StoreError> {
        let (reply, answer) = oneshot::channel();
        // The writer stops only with the service: answer as the store being away would.
        let gone = || StoreError::Unavailable(sqlx::Error::PoolClosed);
        // One entity's events always through the same writer: its transactions commit
        // one after another, so the entity's events are stored in the order posted
        // (their `seq`, what `duehook-sequence` carries, grows with that order).
        let n = if ev.entity_id.is_empty() {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&(&ev.entity_kind, &ev.entity_id), &mut h);
            std::hash::Hasher::finish(&h) as usize
        };
        let queue = &self.queues[n % self.queues.len()];
        queue.send((ev, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(
    store: Store,
    clock: SharedClock,
    outbox: Arc<Outbox>,
    mut rx: mpsc::Receiver<(NewEvent, Reply)>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let (evs, replies): (Vec<NewEvent>, Vec<Reply>) =
            std::mem::take(&mut batch).into_iter().unzip();
        let written = match write_all(&store, &clock, &outbox, &evs).await {
            Ok(written) => written.into_iter().map(Ok).collect(),
            Err(e) if evs.len() == 1 => vec![Err(e)],
            Err(e) => {
                tracing::debug!(error = %e, events = evs.len(), "group commit failed; writing one by one");
                let mut one_by_one = Vec::with_capacity(evs.len());
                for ev in &evs {
                    one_by_one.push(
                        write_all(&store, &clock, &outbox, std::slice::from_ref(ev))
                            .await
                            .map(|mut w| w.remove(0)),
                    );
                }
                one_by_one
            }
        };
        for (reply, result) in replies.into_iter().zip(written) {
            // The request may have gone away (client disconnected): its event stays.
            let _ = reply.send(result);
        }
    }
}

/// One transaction for `evs`, through the outbox; returns them as stored.
async fn write_all(
    store: &Store,
    clock: &SharedClock,
    outbox: &Outbox,
    evs: &[NewEvent],
) -> Result<Vec<Event>, StoreError> {
    let mut tx = store.begin().await?;
    let now = clock.now();
    let written = outbox.write(&mut tx, evs, now).await?;
    tx.commit().await?;
    let out = (0..written.count())
        .map(|i| {
            written
                .event(i)
                .ok_or_else(|| StoreError::Corrupt("event written without its data".into()))
        })
        .collect();
    written.committed();
    out
}
