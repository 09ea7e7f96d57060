//! The delivery pipeline's shared handle: what its workers (delivery, recorder,
//! alerts) and the API's endpoint commands all need, and the wake-ups between them.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio::sync::Notify;

use super::guard::DestinationGuard;
use super::health::HealthPolicy;
use crate::clock::SharedClock;
use crate::config::{AlertsConfig, DeliveryConfig};
use crate::outbox::Outbox;
use crate::store::Store;

#[derive(Clone)]
pub struct Pipeline {
    pub store: Store,
    pub clock: SharedClock,
    pub guard: Arc<DestinationGuard>,
    pub config: Arc<DeliveryConfig>,
    pub alerts: Arc<AlertsConfig>,
    pub health: HealthPolicy,
    /// Where deliveries come from: the worker takes its hand-offs and wake-ups there.
    pub outbox: Arc<Outbox>,
    /// Poked when alerts were written: the alert worker waits on it.
    pub alert: Arc<Notify>,
    /// Sends this process has in flight (claimed and not yet recorded or given up).
    pub sending: Arc<AtomicUsize>,
}

impl Pipeline {
    pub fn new(
        store: Store,
        clock: SharedClock,
        config: &DeliveryConfig,
        alerts: &AlertsConfig,
        outbox: Arc<Outbox>,
    ) -> Self {
        Self {
            store,
            clock,
            guard: Arc::new(DestinationGuard::new(
                config.allow_private_destinations,
                config.allowed_subnets(),
                config.https_only,
            )),
            config: Arc::new(config.clone()),
            alerts: Arc::new(alerts.clone()),
            health: HealthPolicy::from_config(config, alerts),
            outbox,
            alert: Arc::new(Notify::new()),
            sending: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// `poll_interval_ms` as a clock delta: the longest any worker sleeps.
    pub fn poll_interval(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::milliseconds(i64::try_from(self.config.poll_interval_ms).unwrap_or(1000))
    }
}
