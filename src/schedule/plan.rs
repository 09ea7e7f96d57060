//! Planning: turns an entity's current state into its pending timers, inside the
//! transaction that changed the entity. A moved anchor cancels the old timers (with the
//! reason) and plans new ones; a state that no longer qualifies cancels them.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use tokio::sync::Notify;

use super::rules::{Anchor, Condition, Misfire, Rule};
use crate::domain::EntityKind;
use crate::domain::item::Item;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::reservation::{Reservation, ReservationStatus};
use crate::domain::unit_rental::{Invoice, UnitRental};
use crate::store::timers::{self, NewTimer, TimerState};
use crate::store::{StoreError, Tx};

/// An entity whose timers are planned, as it now is.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    Reservation(&'a Reservation),
    Order(&'a Order),
    /// An invoice, planned for its unit rental's rules (`unitRental.markOverdue`).
    Invoice(&'a Invoice, &'a UnitRental),
    Item(&'a Item),
}

impl Subject<'_> {
    /// The rules' entity kind.
    pub fn rule_kind(&self) -> EntityKind {
        match self {
            Subject::Reservation(_) => EntityKind::Reservation,
            Subject::Order(_) => EntityKind::Order,
            Subject::Invoice(..) => EntityKind::UnitRental,
            Subject::Item(_) => EntityKind::Item,
        }
    }

    /// What timers are stored against: the invoice itself for rental rules, since a
    /// rental has one overdue moment per invoice.
    pub fn timer_key(&self) -> (&'static str, &str) {
        match self {
            Subject::Reservation(r) => ("reservation", &r.id),
            Subject::Order(o) => ("order", &o.id),
            Subject::Invoice(i, _) => ("invoice", &i.id),
            Subject::Item(i) => ("item", &i.id),
        }
    }

    /// The anchor instant, at the store's millisecond precision: timers are stored in
    /// milliseconds, and an anchor with finer precision would never equal its timer's
    /// (every re-plan would churn, every fire would see "anchor moved").
    pub fn anchor(&self, anchor: Anchor) -> Option<DateTime<Utc>> {
        let t = match (self, anchor) {
            (Subject::Reservation(r), Anchor::StartsAt) => Some(r.starts_at),
            (Subject::Order(o), Anchor::DueAt) => Some(o.due_at),
            (Subject::Invoice(i, _), Anchor::InvoiceDueAt) => Some(i.due_at),
            (Subject::Item(i), Anchor::ExpiresAt) => i.expires_at,
            _ => None,
        }?;
        DateTime::from_timestamp_millis(t.timestamp_millis())
    }

    fn timezone(&self) -> Option<&str> {
        match self {
            Subject::Reservation(r) => r.timezone.as_deref(),
            Subject::Order(o) => o.timezone.as_deref(),
            Subject::Invoice(_, rental) => rental.timezone.as_deref(),
            Subject::Item(i) => i.timezone.as_deref(),
        }
    }

    /// Whether `condition` holds; when not, a human reason why.
    pub fn check(&self, condition: Condition) -> Result<(), String> {
        match (self, condition) {
            (Subject::Reservation(r), Condition::Reserved) => match r.status {
                ReservationStatus::Reserved => Ok(()),
                s => Err(format!("reservation is {}", s.as_str())),
            },
            (Subject::Order(o), Condition::CheckedOut) => match o.status {
                OrderStatus::CheckedOut => Ok(()),
                OrderStatus::Closed => Err("order is fully checked in".into()),
                OrderStatus::Open => Err("order is not checked out".into()),
            },
            (Subject::Invoice(i, _), Condition::Unpaid) => {
                if i.state.is_unpaid() {
                    Ok(())
                } else {
                    Err(format!("invoice is {}", i.state.as_str()))
                }
            }
            (Subject::Item(i), Condition::NotExpired) => {
                if i.expired {
                    Err("item is already expired".into())
                } else {
                    Ok(())
                }
            }
            (_, c) => Err(format!("condition {c:?} does not apply to this entity")),
        }
    }
}

/// Plans timers from rules. Shared by ingest (planning) and the driver (firing).
#[derive(Clone)]
pub struct Planner {
    pub rules: Arc<Vec<Rule>>,
    pub default_tz: Tz,
    pub horizon: TimeDelta,
    /// Poked when a timer is planned inside the horizon, so the driver loads it now.
    pub wake: Arc<Notify>,
    /// Settled timers are purged after this long; a moment older than that is treated
    /// as done, so a purge can never make an old reminder fire again.
    pub retention: TimeDelta,
    /// The daily overdue digest, when enabled: its local time and zones.
    pub digest: Option<(chrono::NaiveTime, Vec<Tz>)>,
}

impl Planner {
    pub fn tz_of(&self, subject: &Subject<'_>) -> Tz {
        subject
            .timezone()
            .and_then(|name| name.parse().ok())
            .unwrap_or(self.default_tz)
    }

    /// The grace of `unitRental.markOverdue` (its exact offset), zero when not configured.
    pub fn invoice_grace(&self) -> TimeDelta {
        self.rules
            .iter()
            .find(|r| {
                r.entity == EntityKind::UnitRental && r.event_type == "unitRental.markOverdue"
            })
            .and_then(|r| match r.offset {
                super::rules::Offset::Exact(d) => Some(d),
                super::rules::Offset::CalendarDays(_) => None,
            })
            .unwrap_or_else(TimeDelta::zero)
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The instant `rule` fires for `subject`, if it has the anchor.
    pub fn fire_at(
        &self,
        rule: &Rule,
        subject: &Subject<'_>,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let anchor = subject.anchor(rule.anchor)?;
        Some((anchor, rule.offset.apply(anchor, self.tz_of(subject))))
    }

    /// The decision of planning, for one entity: given its pending timers (`pending`,
    /// in any order) and whether a moment of a rule already fired or was skipped
    /// (`done`), which pending timers to cancel (with why) and which timers to add
    /// (pending, or recorded as skipped). Pure: the caller reads and writes the store,
    /// one entity at a time ([`Planner::replan`]) or many at once (ingest's batches).
    pub fn plan(
        &self,
        subject: &Subject<'_>,
        now: DateTime<Utc>,
        pending: &[PendingTimer<'_>],
        done: impl Fn(&str, DateTime<Utc>) -> bool,
    ) -> Plan {
        let mut wanted = Vec::new();
        let mut not_wanted_because = None;
        for (index, rule) in self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.entity == subject.rule_kind())
        {
            if let Err(why) = subject.check(rule.condition) {
                not_wanted_because = Some(why);
                continue;
            }
            if let Some((anchor_at, fire_at)) = self.fire_at(rule, subject) {
                wanted.push((rule, index, anchor_at, fire_at));
            }
        }

        let mut plan = Plan::default();
        for (i, p) in pending.iter().enumerate() {
            let keep = wanted
                .iter()
                .position(|(r, _, _, fire_at)| r.name == p.rule && *fire_at == p.fire_at);
            match keep {
                Some(k) => {
                    wanted.remove(k);
                }
                None => {
                    let reason = match wanted.iter().find(|(r, ..)| r.name == p.rule) {
                        Some((_, _, anchor_at, fire_at)) => format!(
                            "re-planned: anchor moved from {} to {} (now fires at {})",
                            p.anchor_at.to_rfc3339(),
                            anchor_at.to_rfc3339(),
                            fire_at.to_rfc3339()
                        ),
                        None => match (&not_wanted_because, self.rule(p.rule)) {
                            (_, None) => "rule no longer configured".to_string(),
                            (Some(why), _) => format!("no longer applies: {why}"),
                            (None, Some(_)) => "no longer applies: anchor removed".to_string(),
                        },
                    };
                    plan.cancel.push((i, reason));
                }
            }
        }

        for (rule, index, anchor_at, fire_at) in wanted {
            if fire_at < now - self.retention || done(&rule.name, fire_at) {
                continue;
            }
            // A moment already gone when the entity reached this state is not owed:
            // "due in 1 day" for an order checked out 3 hours before its due date
            // would be wrong. Overdue-style rules (fire_late) still fire, at once.
            let skipped = (fire_at < now && rule.misfire != Misfire::FireLate).then(|| {
                format!(
                    "its moment ({}) had passed when it was planned",
                    fire_at.to_rfc3339()
                )
            });
            plan.wake |= skipped.is_none() && fire_at < now + self.horizon;
            plan.add.push(PlannedTimer {
                rule: index,
                anchor_at,
                fire_at,
                skipped,
            });
        }
        plan
    }

    /// Brings the subject's pending timers in line with its state ([`Planner::plan`]),
    /// reading and writing them in `tx`, the transaction that changed the subject. The
    /// driver is woken after commit by the caller when this returns true.
    pub async fn replan(
        &self,
        tx: &mut Tx,
        subject: Subject<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (kind, id) = subject.timer_key();
        let stored = timers::of_entity(tx, kind, id, TimerState::Pending).await?;
        let pending: Vec<PendingTimer<'_>> = stored
            .iter()
            .map(|t| PendingTimer {
                rule: &t.rule,
                anchor_at: t.anchor_at,
                fire_at: t.fire_at,
            })
            .collect();
        let done = timers::done_of_entity(tx, kind, id).await?;
        let plan = self.plan(&subject, now, &pending, |rule, at| {
            done.contains(&(rule.to_string(), at))
        });
        for (i, reason) in &plan.cancel {
            timers::close(tx, stored[*i].id, TimerState::Cancelled, reason, now).await?;
        }
        let mut wake = false;
        for p in &plan.add {
            let rule = &self.rules[p.rule];
            let t = NewTimer {
                entity_kind: kind,
                entity_id: id,
                rule: &rule.name,
                event_type: &rule.event_type,
                anchor_at: p.anchor_at,
                fire_at: p.fire_at,
            };
            match &p.skipped {
                Some(reason) => timers::insert_skipped(tx, &t, reason, now).await?,
                None => {
                    if timers::insert_pending(tx, &t, now).await?.is_some()
                        && p.fire_at < now + self.horizon
                    {
                        wake = true;
                    }
                }
            }
        }
        Ok(wake)
    }
}

/// A pending timer of the entity being planned, as [`Planner::plan`] weighs it.
#[derive(Debug, Clone, Copy)]
pub struct PendingTimer<'a> {
    pub rule: &'a str,
    pub anchor_at: DateTime<Utc>,
    pub fire_at: DateTime<Utc>,
}

/// A timer [`Planner::plan`] adds: pending, or recorded as skipped with the reason.
#[derive(Debug, Clone)]
pub struct PlannedTimer {
    /// The rule's index in [`Planner::rules`].
    pub rule: usize,
    pub anchor_at: DateTime<Utc>,
    pub fire_at: DateTime<Utc>,
    pub skipped: Option<String>,
}

/// What [`Planner::plan`] decided for one entity.
#[derive(Debug, Default)]
pub struct Plan {
    /// Pending timers to cancel: their index in the `pending` given, and why.
    pub cancel: Vec<(usize, String)>,
    /// Timers to add.
    pub add: Vec<PlannedTimer>,
    /// A timer added is due within the horizon: the driver should load it now.
    pub wake: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::reservation::{Reservation, ReservationInput};
    use crate::schedule::rules::default_rules;

    fn planner() -> Planner {
        Planner {
            rules: Arc::new(default_rules(TimeDelta::zero())),
            default_tz: chrono_tz::UTC,
            horizon: TimeDelta::hours(1),
            wake: Arc::new(Notify::new()),
            retention: TimeDelta::days(30),
            digest: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("instant")
    }

    fn reservation(starts_at: &str, now: DateTime<Utc>) -> Reservation {
        let starts_at = at(starts_at);
        Reservation::create(
            "r-1",
            ReservationInput {
                contact_id: "c-1".into(),
                item_ids: vec!["i-1".into()],
                starts_at,
                ends_at: starts_at + TimeDelta::days(1),
                timezone: None,
                data: None,
            },
            now,
        )
    }

    /// The decision alone: what a new reservation plans, what a moved one cancels and
    /// plans instead, what an earlier moment skips, and that a done moment is not
    /// planned again.
    #[test]
    fn plans_moves_skips_and_remembers() {
        let p = planner();
        let now = at("2030-03-01T08:00:00Z");
        let r = reservation("2030-03-05T09:00:00Z", now);
        let plan = p.plan(&Subject::Reservation(&r), now, &[], |_, _| false);
        assert!(plan.cancel.is_empty());
        let planned: Vec<(&str, DateTime<Utc>, bool)> = plan
            .add
            .iter()
            .map(|t| {
                (
                    p.rules[t.rule].name.as_str(),
                    t.fire_at,
                    t.skipped.is_some(),
                )
            })
            .collect();
        assert_eq!(
            planned,
            vec![
                (
                    "reservation.due_in_1_day",
                    at("2030-03-04T09:00:00Z"),
                    false
                ),
                (
                    "reservation.due_in_1_hour",
                    at("2030-03-05T08:00:00Z"),
                    false
                ),
                (
                    "reservation.overdue_1_hour",
                    at("2030-03-05T10:00:00Z"),
                    false
                ),
                (
                    "reservation.overdue_1_day",
                    at("2030-03-06T09:00:00Z"),
                    false
                ),
            ]
        );
        assert!(!plan.wake, "nothing within the hour");

        // Pending as planned, the anchor moved: each pending one cancelled with why,
        // the new ones planned; a moment already done is not planned again.
        let pending: Vec<PendingTimer<'_>> = plan
            .add
            .iter()
            .map(|t| PendingTimer {
                rule: &p.rules[t.rule].name,
                anchor_at: t.anchor_at,
                fire_at: t.fire_at,
            })
            .collect();
        let moved = reservation("2030-03-01T09:30:00Z", now);
        let again = p.plan(&Subject::Reservation(&moved), now, &pending, |rule, at_| {
            rule == "reservation.overdue_1_hour" && at_ == at("2030-03-01T10:30:00Z")
        });
        assert_eq!(
            again.cancel.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(again.cancel[0].1.starts_with("re-planned: anchor moved"));
        let planned: Vec<(&str, Option<&str>)> = again
            .add
            .iter()
            .map(|t| (p.rules[t.rule].name.as_str(), t.skipped.as_deref()))
            .collect();
        assert_eq!(planned.len(), 3, "{planned:?}");
        assert_eq!(planned[0].0, "reservation.due_in_1_day");
        assert!(
            planned[0].1.is_some_and(|why| why.contains("had passed")),
            "a reminder whose moment is gone is recorded skipped"
        );
        assert_eq!(planned[1], ("reservation.due_in_1_hour", None));
        assert_eq!(planned[2], ("reservation.overdue_1_day", None));
        assert!(again.wake, "due in 1 hour is within the horizon");

        // The same state again: nothing to do.
        let unchanged = p.plan(&Subject::Reservation(&r), now, &pending, |_, _| false);
        assert!(unchanged.cancel.is_empty() && unchanged.add.is_empty());
    }
}
