//! The recorder: writes finished attempts to the store in batches. Each batch is one
//! transaction: every attempt with its delivery's new state (for the deliveries this
//! node still holds), then each endpoint's health folded over its attempts in order,
//! written once per endpoint and only when it changed, with any alerts.
//!
//! Why a task of its own: a send that waited for its own commit held its endpoint's
//! in-flight slot for the length of a write transaction, and SQLite has one writer.
//! Here the send ends when the answer is in; whatever finished while the previous
//! batch was being written makes up the next one, so the number of transactions per
//! second stays low however many webhooks go out.
//!
//! Crash safety is unchanged: a delivery stays claimed (leased) until its attempt is
//! recorded. A crash before the commit leaves the claim to be released once the node
//! is known dead, and the delivery is sent again with the same `webhook-id` (at least
//! once). An unreachable store is waited out: the attempt is recorded when it is back.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::health::{self, AttemptResult};
use super::pipeline::Pipeline;
use crate::store::deliveries::{self, Record};
use crate::store::{StoreError, alerts, endpoints};

/// Attempts written per transaction at most.
const BATCH: usize = 512;
/// A batch whose transaction failed for another reason than an unreachable store is
/// tried again this often before its deliveries are given back.
const TRIES: usize = 3;
/// How long a batch is kept and tried again while the store is unreachable (a
/// PostgreSQL restart or failover, a full disk): the webhooks went out, and left to
/// their leases they would be sent twice. Recorded late is recorded all the same, as
/// long as this node still holds the claims.
const UNREACHABLE_PATIENCE: Duration = Duration::from_secs(120);
/// The longest pause between two tries while the store is unreachable.
const UNREACHABLE_PAUSE: Duration = Duration::from_secs(1);

/// One finished attempt on its way to the store.
pub struct Finished {
    pub record: Record,
    pub endpoint_id: String,
    pub result: AttemptResult,
    /// `2xx`…`5xx` or the error kind (for the metrics).
    pub class: String,
    pub duration: Duration,
}

/// What the worker learns once a batch is written (or given up).
pub struct Recorded {
    /// Deliveries this node no longer holds in memory: recorded, or left to their
    /// leases after the write failed.
    pub ids: Vec<String>,
    /// Endpoints whose circuit opened or that were disabled: queued deliveries to them
    /// go back to the store.
    pub stopped: Vec<String>,
    /// The earliest retry among the attempts written: when to look for work again.
    pub retry_at: Option<DateTime<Utc>>,
    /// The batch could not be written: its deliveries are still claimed by this node
    /// and must be given back (sent again, same `webhook-id`), or the heartbeat would
    /// keep renewing claims nobody works on.
    pub unrecorded: bool,
}

/// Writes what arrives on `rx` until every sender is gone, reporting each batch on
/// `done`.
pub async fn run(
    p: Pipeline,
    node: String,
    mut rx: mpsc::UnboundedReceiver<Finished>,
    done: mpsc::UnboundedSender<Recorded>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let ids: Vec<String> = batch.iter().map(|f| f.record.delivery_id.clone()).collect();
        let mut stopped = Vec::new();
        let mut unrecorded = false;
        let give_up = tokio::time::Instant::now() + UNREACHABLE_PATIENCE;
        let mut failures = 0;
        loop {
            match write(&p, &node, &batch).await {
                Ok(s) => {
                    if failures > 0 {
                        tracing::info!(
                            attempts = batch.len(),
                            failures,
                            "attempts recorded after the store came back"
                        );
                    }
                    stopped = s;
                    break;
                }
                Err(e) => {
                    failures += 1;
                    let unreachable = matches!(e, StoreError::Unavailable(_));
                    let pause = Duration::from_millis(100 * failures as u64).min(UNREACHABLE_PAUSE);
                    let again = if unreachable {
                        tokio::time::Instant::now() + pause < give_up
                    } else {
                        failures < TRIES
                    };
                    if !again {
                        tracing::warn!(
                            error = %e,
                            attempts = batch.len(),
                            "attempts not recorded; their deliveries go back and will be sent again"
                        );
                        unrecorded = true;
                        break;
                    }
                    if failures == 1 || failures % 10 == 0 {
                        tracing::warn!(error = %e, attempts = batch.len(), failures, "recording attempts failed; trying again");
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
        let retry_at = batch
            .iter()
            .filter_map(|f| f.record.outcome.next_attempt_at)
            .min();
        let _ = done.send(Recorded {
            ids,
            stopped,
            retry_at,
            unrecorded,
        });
    }
}

/// One transaction for `batch`; returns the endpoints to stop sending to.
async fn write(p: &Pipeline, node: &str, batch: &[Finished]) -> Result<Vec<String>, StoreError> {
    let mut tx = p.store.begin().await?;
    let now = p.clock.now();
    let records: Vec<&Record> = batch.iter().map(|f| &f.record).collect();
    let recorded: HashSet<String> = deliveries::record_attempts(&mut tx, node, &records, now)
        .await?
        .into_iter()
        .collect();

    // Each endpoint's results in the order they finished.
    let mut per_endpoint: Vec<(&str, Vec<AttemptResult>)> = Vec::new();
    for f in batch {
        if !recorded.contains(&f.record.delivery_id) {
            tracing::info!(delivery = %f.record.delivery_id, "claim lost before the attempt was recorded");
            continue;
        }
        match per_endpoint.iter_mut().find(|(ep, _)| *ep == f.endpoint_id) {
            Some((_, results)) => results.push(f.result),
            None => per_endpoint.push((&f.endpoint_id, vec![f.result])),
        }
    }
    let mut stopped = Vec::new();
    let mut alerted = false;
    for (endpoint_id, results) in per_endpoint {
        // Read inside the transaction (locked on PostgreSQL): other nodes' sends to the
        // same endpoint may have changed its health meanwhile.
        let Some(current) = endpoints::get_locked(&mut tx, endpoint_id).await? else {
            continue;
        };
        let mut health = current.health.clone();
        let mut disable = None;
        let mut new_alerts = Vec::new();
        for result in results {
            let change = health::after_attempt(&health, &p.health, now, result);
            health = change.health;
            disable = disable.or(change.disable);
            new_alerts.extend(change.alerts);
        }
        let disable = disable.filter(|_| current.enabled);
        if health != current.health || disable.is_some() {
            endpoints::set_health(&mut tx, endpoint_id, &health, disable.as_deref(), now).await?;
        }
        for (kind, detail) in &new_alerts {
            alerts::insert(&mut tx, endpoint_id, kind.as_str(), detail, now).await?;
            alerted = true;
        }
        if let Some(reason) = &disable {
            tracing::warn!(endpoint = %endpoint_id, %reason, "endpoint disabled");
        }
        if disable.is_some() || health.circuit_open_until.is_some_and(|t| t > now) {
            stopped.push(endpoint_id.to_string());
        }
    }
    tx.commit().await?;

    for f in batch
        .iter()
        .filter(|f| recorded.contains(&f.record.delivery_id))
    {
        metrics::counter!(
            "duehook_delivery_attempts_total",
            "result" => f.record.outcome.status,
            "status_class" => f.class.clone()
        )
        .increment(1);
        metrics::histogram!("duehook_delivery_attempt_seconds").record(f.duration.as_secs_f64());
        tracing::debug!(
            delivery = %f.record.delivery_id,
            attempt = f.record.attempt.number,
            status = ?f.record.attempt.status_code,
            next = f.record.outcome.status,
            "attempt recorded"
        );
    }
    if alerted {
        p.alert.notify_one();
    }
    Ok(stopped)
}
