//! Test support: what the project's own tests and benchmarks need besides the HTTP
//! API, in one documented place, so that nothing else reaches into the library's
//! modules. A test drives the service through its API; where it must look into the
//! store (what a crash left, which node holds a claim) or set up a state no API call
//! makes, it goes through a [`Probe`] (`App::probe`).
//!
//! Not for production code: the SQL a probe runs is the caller's, unchecked.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Column, Row};

use crate::schedule::plan::{Planner, Subject};
use crate::store::{Store, StoreError, entities, events};

pub use crate::domain::event::Event;
pub use crate::domain::item::{Item, ItemInput};
pub use crate::schedule::wheel::TimingWheel;
pub use crate::store::StoreError as Error;

/// A value bound to a probe's statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Int(i64),
    Null,
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Text(s.to_string())
    }
}

impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Text(s)
    }
}

impl From<i64> for Arg {
    fn from(n: i64) -> Self {
        Arg::Int(n)
    }
}

impl From<DateTime<Utc>> for Arg {
    /// An instant as the store keeps it: milliseconds since the epoch.
    fn from(t: DateTime<Utc>) -> Self {
        Arg::Int(t.timestamp_millis())
    }
}

/// A look into a running app's store, for tests (see the module doc).
#[derive(Clone)]
pub struct Probe {
    store: Store,
    planner: Planner,
}

/// One row a probe read, by column name: text, integers, reals and NULL as JSON.
pub type ProbeRow = BTreeMap<String, Value>;

impl Probe {
    pub(crate) fn new(store: Store, planner: Planner) -> Self {
        Self { store, planner }
    }

    fn query<'q>(
        sql: &'q str,
        args: &[Arg],
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in args {
            q = match a {
                Arg::Text(s) => q.bind(s.clone()),
                Arg::Int(n) => q.bind(*n),
                Arg::Null => q.bind(None::<String>),
            };
        }
        q
    }

    /// The integer `sql` answers in its first column of its first row (a `COUNT`).
    pub async fn scalar(&self, sql: &str, args: &[Arg]) -> Result<i64, StoreError> {
        let row = Self::query(sql, args).fetch_one(self.store.pool()).await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// Every row `sql` answers.
    pub async fn rows(&self, sql: &str, args: &[Arg]) -> Result<Vec<ProbeRow>, StoreError> {
        let rows = Self::query(sql, args).fetch_all(self.store.pool()).await?;
        rows.iter()
            .map(|r| {
                r.columns()
                    .iter()
                    .map(|c| {
                        let i = c.ordinal();
                        let v = if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                            v.map_or(Value::Null, Value::from)
                        } else if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
                            v.map_or(Value::Null, Value::from)
                        } else {
                            r.try_get::<Option<String>, _>(i)?
                                .map_or(Value::Null, Value::from)
                        };
                        Ok((c.name().to_string(), v))
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs `sql` (a set-up no API call makes); returns the rows it changed.
    pub async fn execute(&self, sql: &str, args: &[Arg]) -> Result<u64, StoreError> {
        Ok(Self::query(sql, args)
            .execute(self.store.pool())
            .await?
            .rows_affected())
    }

    /// Every event the store holds, oldest first.
    pub async fn events(&self) -> Result<Vec<Event>, StoreError> {
        events::list_after(self.store.pool(), 0, i64::MAX).await
    }

    /// The event `id`.
    pub async fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        events::get(self.store.pool(), id).await
    }

    /// The retention purge the hourly job runs, at `cutoff`; returns the rows deleted.
    pub async fn purge(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        crate::store::retention::purge(&self.store, cutoff).await
    }

    /// Stores `items` and plans their timers, 1,000 per transaction, without events:
    /// a quick set-up of many pending timers for tests and benchmarks (the product's
    /// way is `POST /v1/batch`). The scheduler loads them at its next refill, or at
    /// once after [`Probe::wake_scheduler`].
    pub async fn plan_items(&self, items: &[Item], now: DateTime<Utc>) -> Result<(), StoreError> {
        for chunk in items.chunks(1_000) {
            let mut tx = self.store.begin().await?;
            for item in chunk {
                entities::save_item(&mut tx, item).await?;
                self.planner
                    .replan(&mut tx, Subject::Item(item), now)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Wakes this app's scheduler: it loads what is due within its horizon now (what
    /// ingest does after planning inside the horizon).
    pub fn wake_scheduler(&self) {
        self.planner.wake.notify_one();
    }
}
