//! Time-based events: rules turn entity state into planned timers (stored in the same
//! transaction as the change), the driver loads what is due soon into a timing wheel,
//! sleeps on the Clock, and fires each timer in one transaction that re-checks the
//! entity and writes exactly one event.

pub mod advance;
pub mod cron;
pub mod decide;
pub mod digest;
pub mod driver;
pub mod fire;
pub mod plan;
pub mod rules;
pub mod wheel;

use std::sync::Arc;

use chrono::TimeDelta;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::outbox::Outbox;
use crate::runtime::tasks::Tasks;
use crate::runtime::watchdog::Heartbeat;
use crate::store::{Backend, Store};
use driver::{Driver, DriverStats};
use plan::Planner;

/// The scheduler component: the planner ingest plans with, and the tasks that fire
/// what it planned — the driver, the lease keeper, the housekeeping jobs and, on
/// PostgreSQL, the listener that hears timers planned by other nodes.
pub struct Scheduler {
    planner: Planner,
    driver: Driver,
    stats: Arc<DriverStats>,
    retention: TimeDelta,
    store_url: String,
}

impl Scheduler {
    pub fn build(
        config: &Config,
        rules: Vec<rules::Rule>,
        store: Store,
        clock: SharedClock,
        outbox: Arc<Outbox>,
        node: String,
        heartbeat: Arc<Heartbeat>,
    ) -> Self {
        let schedule = &config.schedule;
        let retention = TimeDelta::days(i64::from(schedule.retention_days));
        let planner = Planner {
            rules: Arc::new(rules),
            default_tz: schedule.timezone,
            horizon: schedule.horizon,
            wake: Arc::new(Notify::new()),
            retention,
            digest: schedule.digest.enabled.then(|| {
                let zones = if schedule.digest.timezones.is_empty() {
                    vec![schedule.timezone]
                } else {
                    schedule.digest.timezones.clone()
                };
                (schedule.digest.at, zones)
            }),
        };
        let stats = Arc::new(DriverStats::default());
        let driver = Driver {
            node,
            lease: config.cluster.lease,
            store,
            clock,
            firing: fire::Firing {
                planner: planner.clone(),
                outbox,
                misfire_after: schedule.misfire_after,
            },
            planner: planner.clone(),
            stats: stats.clone(),
            heartbeat,
        };
        Self {
            planner,
            driver,
            stats,
            retention,
            store_url: config.store.url.clone(),
        }
    }

    /// The rules, zones and horizon ingest plans with; its `wake` reaches the driver.
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// What the driver publishes (the admin API's stats, the manual clock's advance).
    pub fn stats(&self) -> &Arc<DriverStats> {
        &self.stats
    }

    /// Starts the scheduler's tasks; each stops when `shutdown` is cancelled.
    pub fn spawn(self, tasks: &mut Tasks, shutdown: &CancellationToken) {
        let d = self.driver;
        tasks.spawn(
            "lease keeper",
            Driver::keep_leases(
                d.store.clone(),
                d.clock.clone(),
                d.node.clone(),
                d.lease,
                self.planner.wake.clone(),
                d.firing.outbox.delivery_wake().clone(),
                shutdown.clone(),
            ),
        );
        tasks.spawn(
            "cron (refill nudge, retention purge, metrics upkeep)",
            cron::run(
                d.store.clone(),
                d.clock.clone(),
                self.planner.clone(),
                self.retention,
                shutdown.clone(),
            ),
        );
        match d.store.backend() {
            Backend::Postgres => {
                tasks.spawn(
                    "timer listener (PostgreSQL LISTEN)",
                    crate::store::cluster::listen_for_timers(
                        self.store_url,
                        self.planner.wake.clone(),
                        shutdown.clone(),
                    ),
                );
                tasks.spawn("scheduler driver", d.run(shutdown.clone()));
            }
            // Away from the HTTP sends (see `Tasks::spawn_on_own_thread`); SQLite needs
            // no socket. On PostgreSQL the driver's connections are sockets.
            Backend::Sqlite => tasks.spawn_on_own_thread(
                "scheduler driver",
                "duehook-scheduler",
                d.run(shutdown.clone()),
            ),
        }
    }
}
