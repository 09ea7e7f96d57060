//! Delivery: every delivery the outbox created, for an immediate or a time-based
//! event, goes through one pipeline: claim (or hand-off) → render → sign → POST →
//! record → retry / disable / alert.
//!
//! The pure parts live here as small modules with no I/O of their own: `render`
//! (formats and envelopes), `sign` (signature schemes), `retry` (policy, backoff,
//! Retry-After) and `guard` (destination checks against SSRF). [`Delivery`] is the
//! component the app builds and spawns.

pub mod guard;
pub mod render;
pub mod retry;
pub mod sign;

pub mod alert;
pub mod endpoint;
pub mod health;
pub mod pipeline;
mod queue;
pub mod ratelimit;
pub mod record;
pub mod send;
pub mod service;
pub mod worker;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::{AlertsConfig, DeliveryConfig};
use crate::outbox::Outbox;
use crate::runtime::tasks::Tasks;
use crate::store::Store;
use pipeline::Pipeline;

/// The delivery component: the outbox's sweeper, the delivery worker (with its
/// recorder) and the alert worker, around one [`Pipeline`].
pub struct Delivery {
    pipeline: Pipeline,
}

impl Delivery {
    pub fn build(
        store: Store,
        clock: SharedClock,
        config: &DeliveryConfig,
        alerts: &AlertsConfig,
        outbox: Arc<Outbox>,
    ) -> Self {
        Self {
            pipeline: Pipeline::new(store, clock, config, alerts, outbox),
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Starts the workers; each stops when `shutdown` is cancelled.
    pub fn spawn(self, tasks: &mut Tasks, shutdown: &CancellationToken) {
        let p = self.pipeline;
        tasks.spawn(
            "outbox sweeper",
            crate::outbox::sweep(
                p.outbox.clone(),
                p.store.clone(),
                p.clock.clone(),
                p.poll_interval(),
                shutdown.clone(),
            ),
        );
        tasks.spawn("delivery worker", worker::run(p.clone(), shutdown.clone()));
        tasks.spawn("alert worker", alert::run(p, shutdown.clone()));
    }
}
