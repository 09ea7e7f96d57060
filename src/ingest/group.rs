//! Group commit: the ops that arrive while a transaction is being written wait for the
//! next one, which applies all of them at once ([`super::work`]). A single route's op
//! waits for no one when alone and shares a transaction under load; a batch's ops go
//! in transactions of up to [`TX_OPS`] ([`TX_OPS_POSTGRES`] on PostgreSQL). Each op is
//! answered only after the transaction holding it committed, so nothing is
//! acknowledged that a crash could lose.
//!
//! Why: a change is a few small rows, and a transaction of its own costs far more than
//! the rows (SQLite's single writer and its sync, a WAL flush on PostgreSQL); and many
//! entities planned together are written with multi-row statements.
//!
//! A transaction that the store refuses is applied again one op per transaction, so
//! one op the database refuses fails alone and the others still succeed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{Core, Op, Results, work, writer_gone};
use crate::store::{Backend, StoreError};

/// Ops applied per transaction at most on SQLite (a batch larger than this is split,
/// in order). SQLite has one writer, and the scheduler waits for the transaction under
/// way before it fires what came due meanwhile: a longer transaction plans faster,
/// most of all an import in no particular time order (each timer then changes a page
/// of the due index of its own, and a longer transaction changes each page for more
/// timers), but holds firing back longer. At 2,048 the reminders bench fires a batch
/// of reminders as early as at 1,024; at 4,096 its lateness doubled.
pub const TX_OPS: usize = 2048;
/// Ops applied per transaction at most on PostgreSQL. Each op's entity lock is an
/// advisory lock, which holds a slot of the server's shared lock table until the
/// transaction ends; the table has `max_locks_per_transaction` × `max_connections`
/// slots (6,400 by default) for every session together, so the writers' transactions
/// stay well within it.
pub const TX_OPS_POSTGRES: usize = 512;
/// Groups of ops waiting for a transaction at most; more wait to be queued
/// (backpressure).
const QUEUE: usize = 1024;

/// Ops and where their results go.
struct Unit {
    ops: Vec<Op>,
    reply: oneshot::Sender<Results>,
}

/// The handle ops are applied through.
#[derive(Clone)]
pub struct Writer {
    queues: Arc<[mpsc::Sender<Unit>]>,
    next: Arc<AtomicUsize>,
    /// Ops per transaction at most.
    tx_ops: usize,
}

impl Writer {
    /// Starts the writer tasks: one on SQLite (one writer at a time anyway), a few on
    /// PostgreSQL, whose transactions proceed side by side (entity locks keep two
    /// changes of one entity apart). They end when the last handle is dropped.
    pub fn start(core: Arc<Core>) -> Self {
        let (writers, tx_ops) = match core.store.backend() {
            Backend::Sqlite => (1, TX_OPS),
            Backend::Postgres => (4, TX_OPS_POSTGRES),
        };
        let queues: Vec<_> = (0..writers)
            .map(|_| {
                let (queue, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(core.clone(), rx, tx_ops));
                queue
            })
            .collect();
        Self {
            queues: queues.into(),
            next: Arc::new(AtomicUsize::new(0)),
            tx_ops,
        }
    }

    /// Applies `ops` in order; one result per op once its transaction committed.
    pub async fn apply(&self, mut ops: Vec<Op>) -> Results {
        if ops.is_empty() {
            return Vec::new();
        }
        // One entity's single ops always through the same writer: their transactions
        // commit one after another, so its events are stored in the order sent (their
        // `seq`, what `duehook-sequence` carries, grows with that order). A batch's
        // parts go through one writer, in order.
        let n = match (ops.len(), ops.first().and_then(Op::entity_key)) {
            (1, Some(key)) => {
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&key, &mut h);
                std::hash::Hasher::finish(&h) as usize
            }
            _ => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let queue = &self.queues[n % self.queues.len()];
        let mut answers = Vec::new();
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(self.tx_ops));
            let chunk = std::mem::replace(&mut ops, rest);
            let len = chunk.len();
            let (reply, answer) = oneshot::channel();
            let sent = queue.send(Unit { ops: chunk, reply }).await.is_ok();
            answers.push((sent.then_some(answer), len));
        }
        let mut out = Vec::new();
        for (answer, len) in answers {
            match answer {
                Some(a) => match a.await {
                    Ok(results) => out.extend(results),
                    Err(_) => out.extend((0..len).map(|_| Err(writer_gone().into()))),
                },
                None => out.extend((0..len).map(|_| Err(writer_gone().into()))),
            }
        }
        out
    }
}

impl Op {
    /// The entity an op changes (`kind/id`), when it names one.
    pub(super) fn entity_key(&self) -> Option<String> {
        let (kind, id) = match self {
            Op::PutReservation(id, _) | Op::CancelReservation(id) => ("reservation", id),
            Op::PutOrder(id, _)
            | Op::PatchOrder(id, _)
            | Op::Checkout(id)
            | Op::Checkin(id, _)
            | Op::UndoCheckout(id) => ("order", id),
            Op::PutUnitRental(id, _) => ("unitRental", id),
            Op::PutInvoice(id, _) => ("invoice", id),
            Op::PutItem(id, _) => ("item", id),
            Op::PutContact(id, _) => ("contact", id),
            Op::PostEvent(ev) if ev.entity_id.is_empty() => return None,
            Op::PostEvent(ev) => (ev.entity_kind.as_str(), &ev.entity_id),
        };
        Some(format!("{kind}/{id}"))
    }
}

async fn run(core: Arc<Core>, mut rx: mpsc::Receiver<Unit>, tx_ops: usize) {
    let core: &Core = &core;
    // The group queued behind the last one, applied already when that one's write
    // could carry it (see `work::Prepared::write`).
    let mut queued: Option<(Vec<Unit>, Option<work::Prepared<'_>>)> = None;
    loop {
        let (units, prepared) = match queued.take() {
            Some(group) => group,
            None => match rx.recv().await {
                Some(first) => (gather(vec![first], &mut rx, tx_ops), None),
                None => break,
            },
        };
        let ops: Vec<&Op> = units.iter().flat_map(|u| u.ops.iter()).collect();
        // A full group means a queue: the next one is taken now, to be applied while
        // this one is written. A smaller group gathers what arrives meanwhile, as one
        // transaction, once it is done.
        let next = if ops.len() >= tx_ops {
            gather(Vec::new(), &mut rx, tx_ops)
        } else {
            Vec::new()
        };
        let next_ops: Vec<&Op> = next.iter().flat_map(|u| u.ops.iter()).collect();
        let prepared = match prepared {
            Some(p) => Ok(p),
            None => work::Prepared::start(core, &ops).await,
        };
        let (outcome, ahead) = match prepared {
            Ok(p) => {
                p.write(core, (!next_ops.is_empty()).then_some(&next_ops[..]))
                    .await
            }
            Err(e) => (Err(e), None),
        };
        drop(next_ops);
        let results = match outcome {
            Ok(results) => results,
            Err(e) if ops.len() == 1 => vec![Err(e.into())],
            // The store is away: one op at a time would only wait for it longer.
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, ops = ops.len(), "store unavailable; nothing of this group was stored");
                ops.iter()
                    .map(|_| Err(StoreError::Unavailable(sqlx::Error::PoolClosed).into()))
                    .collect()
            }
            Err(e) => {
                tracing::debug!(error = %e, ops = ops.len(), "group commit failed; applying one by one");
                let mut one_by_one = Vec::with_capacity(ops.len());
                for op in &ops {
                    one_by_one.push(match work::run(core, std::slice::from_ref(op)).await {
                        Ok(mut r) => r.pop().unwrap_or_else(|| Err(writer_gone().into())),
                        Err(e) => Err(e.into()),
                    });
                }
                one_by_one
            }
        };
        drop(ops);
        let mut results = results.into_iter();
        for u in units {
            let mine: Vec<_> = results.by_ref().take(u.ops.len()).collect();
            // The request may have gone away (client disconnected): its changes stay.
            let _ = u.reply.send(mine);
        }
        if !next.is_empty() {
            queued = Some((next, ahead));
        }
    }
}

/// `units` and the units queued now behind them, up to `tx_ops` ops in all.
fn gather(mut units: Vec<Unit>, rx: &mut mpsc::Receiver<Unit>, tx_ops: usize) -> Vec<Unit> {
    let mut n: usize = units.iter().map(|u| u.ops.len()).sum();
    while n < tx_ops {
        match rx.try_recv() {
            Ok(u) => {
                n += u.ops.len();
                units.push(u);
            }
            Err(_) => break,
        }
    }
    units
}
