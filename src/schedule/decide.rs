//! The firing decision: one pure function from a due timer and its entity as it is now
//! to what becomes of the timer — fire (on time or late), skip or cancel, with the
//! reason — and the change firing makes to the entity. It reads no clock and no store:
//! the batch that fires timers loads the entities, asks [`decide`] for each timer in
//! turn (applying each decision's [`Effect`] before the next, so two timers of one
//! entity see each other), then writes everything at once.
//!
//! The rules, in order:
//! 1. The timer's rule must still be configured (the digest: still enabled for the
//!    timer's zone) and its entity must still exist; otherwise cancel.
//! 2. The guard: the rule's condition must still hold (a checked-in order is never
//!    overdue) and the anchor must not have moved; otherwise cancel.
//! 3. The misfire policy, for a timer found `misfire_after` or more past its instant:
//!    fire late, or skip with the reason.
//! 4. Otherwise fire.

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::plan::{Planner, Subject};
use super::rules::{Misfire, Rule};
use crate::domain::item::Item;
use crate::domain::order::Order;
use crate::domain::reservation::Reservation;
use crate::domain::unit_rental::{Invoice, UnitRental};
use crate::store::timers::Timer;

/// A timer's entity as it is at fire time (`None`: it no longer exists).
#[derive(Debug, Clone, Copy)]
pub enum Current<'a> {
    Reservation(Option<&'a Reservation>),
    Order(Option<&'a Order>),
    /// An invoice, with its unit rental (the entity of `unitRental.*` events).
    Invoice(Option<&'a Invoice>, Option<&'a UnitRental>),
    Item(Option<&'a Item>),
    /// The daily digest of the zone named by the timer's entity id.
    Digest,
    /// An entity kind this version does not know.
    Unknown,
}

/// What becomes of a timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// What firing (or skipping) changes besides the timer.
    pub effect: Option<Effect>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Write its event; `late` when the misfire policy let it fire late.
    Fire {
        late: bool,
    },
    Skip(String),
    Cancel(String),
}

/// A change firing makes beside the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// `item.expire`: the item is expired from now on.
    ExpireItem,
    /// `unitRental.markOverdue`: the rental is overdue from now on.
    MarkRentalOverdue,
    /// A digest fired or was skipped: the zone's next digest is planned.
    PlanNextDigest(Tz),
}

impl Decision {
    fn cancel(why: impl Into<String>) -> Self {
        Decision {
            verdict: Verdict::Cancel(why.into()),
            effect: None,
        }
    }
}

/// Decides `timer` at `now` against its entity as it is now. See the module doc.
pub fn decide(
    timer: &Timer,
    current: Current<'_>,
    planner: &Planner,
    misfire_after: TimeDelta,
    now: DateTime<Utc>,
) -> Decision {
    if let Current::Digest = current {
        return decide_digest(timer, planner, misfire_after, now);
    }
    let Some(rule) = planner.rule(&timer.rule) else {
        return Decision::cancel("rule no longer configured");
    };
    let (subject, effect) = match current {
        Current::Reservation(Some(r)) => (Subject::Reservation(r), None),
        Current::Order(Some(o)) => (Subject::Order(o), None),
        Current::Invoice(Some(inv), Some(rental)) => (
            Subject::Invoice(inv, rental),
            (rule.event_type == "unitRental.markOverdue" && !rental.overdue)
                .then_some(Effect::MarkRentalOverdue),
        ),
        Current::Item(Some(item)) => (
            Subject::Item(item),
            (rule.event_type == "item.expire").then_some(Effect::ExpireItem),
        ),
        Current::Reservation(None) => return Decision::cancel("reservation no longer exists"),
        Current::Order(None) => return Decision::cancel("order no longer exists"),
        Current::Invoice(None, _) => return Decision::cancel("invoice no longer exists"),
        Current::Invoice(Some(_), None) => {
            return Decision::cancel("unit rental no longer exists");
        }
        Current::Item(None) => return Decision::cancel("item no longer exists"),
        Current::Digest | Current::Unknown => {
            return Decision::cancel(format!("unknown entity kind `{}`", timer.entity_kind));
        }
    };
    if let Some(why) = guard(planner, rule, subject, timer) {
        return Decision::cancel(why);
    }
    if let Some(why) = missed(rule.misfire, misfire_after, timer, now) {
        return Decision {
            verdict: Verdict::Skip(why),
            effect: None,
        };
    }
    Decision {
        verdict: Verdict::Fire {
            late: now - timer.fire_at >= misfire_after,
        },
        effect,
    }
}

/// The digest: fired, or skipped when missed (a stale list helps nobody); either way
/// the zone's next digest is planned, so the chain never breaks.
fn decide_digest(
    timer: &Timer,
    planner: &Planner,
    misfire_after: TimeDelta,
    now: DateTime<Utc>,
) -> Decision {
    let Some((_, zones)) = &planner.digest else {
        return Decision::cancel("the daily digest is disabled");
    };
    let Some(tz) = zones.iter().find(|z| z.name() == timer.entity_id).copied() else {
        return Decision::cancel(format!(
            "zone {} is no longer configured for the digest",
            timer.entity_id
        ));
    };
    let verdict = match missed(Misfire::Skip, misfire_after, timer, now) {
        Some(why) => Verdict::Skip(why),
        None => Verdict::Fire { late: false },
    };
    Decision {
        verdict,
        effect: Some(Effect::PlanNextDigest(tz)),
    }
}

/// The guard: why the timer no longer applies (the rule's condition no longer holds,
/// or the anchor moved), if it does not.
fn guard(planner: &Planner, rule: &Rule, subject: Subject<'_>, timer: &Timer) -> Option<String> {
    if let Err(why) = subject.check(rule.condition) {
        return Some(format!("no longer applies at fire time: {why}"));
    }
    match planner.fire_at(rule, &subject) {
        Some((_, fire_at)) if fire_at == timer.fire_at => None,
        Some((anchor, _)) => Some(format!(
            "anchor moved to {} before firing",
            anchor.to_rfc3339()
        )),
        None => Some("anchor removed before firing".into()),
    }
}

/// The misfire policy: why a timer found `misfire_after` or more past its instant is
/// skipped, if it is.
fn missed(
    policy: Misfire,
    misfire_after: TimeDelta,
    timer: &Timer,
    now: DateTime<Utc>,
) -> Option<String> {
    let late = now - timer.fire_at;
    if late < misfire_after {
        return None;
    }
    match policy {
        Misfire::FireLate => None,
        Misfire::Skip => Some(format!(
            "missed by {}s (service down or clock jump); misfire policy skip",
            late.num_seconds()
        )),
        Misfire::SkipIfAnchorPassed if timer.anchor_at <= now => Some(format!(
            "missed by {}s and its anchor {} has passed; misfire policy skip_if_anchor_passed",
            late.num_seconds(),
            timer.anchor_at.to_rfc3339()
        )),
        Misfire::SkipIfAnchorPassed => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::NaiveTime;

    use super::*;
    use crate::domain::order::{OrderInput, OrderStatus};
    use crate::store::timers::TimerState;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("instant")
            .with_timezone(&Utc)
    }

    fn planner() -> Planner {
        let rules = super::super::rules::build(TimeDelta::zero(), &[]).expect("default rules");
        Planner {
            rules: Arc::new(rules),
            default_tz: chrono_tz::UTC,
            horizon: TimeDelta::hours(1),
            wake: Arc::new(tokio::sync::Notify::new()),
            retention: TimeDelta::days(30),
            digest: Some((
                NaiveTime::from_hms_opt(8, 0, 0).expect("time"),
                vec![chrono_tz::Europe::Paris],
            )),
        }
    }

    /// An order due at 12:00, checked out.
    fn order() -> Order {
        let input = OrderInput {
            contact_id: "c1".into(),
            item_ids: vec!["i1".into()],
            due_at: t("2030-03-01T12:00:00Z"),
            reservation_id: None,
            timezone: None,
            data: None,
        };
        let mut o = Order::create("o1", input, t("2030-03-01T08:00:00Z"));
        o.checkout(t("2030-03-01T08:00:00Z")).expect("checkout");
        o
    }

    /// The pending timer of `rule` for order o1 (anchor 12:00), due at `fire_at`.
    fn timer(rule: &str, fire_at: &str) -> Timer {
        Timer {
            id: 1,
            entity_kind: "order".into(),
            entity_id: "o1".into(),
            rule: rule.into(),
            event_type: rule.into(),
            anchor_at: t("2030-03-01T12:00:00Z"),
            fire_at: t(fire_at),
            state: TimerState::Pending,
            reason: None,
            event_id: None,
            created_at: t("2030-03-01T08:00:00Z"),
            updated_at: t("2030-03-01T08:00:00Z"),
        }
    }

    fn verdict(d: Decision) -> Verdict {
        d.verdict
    }

    const LATE: TimeDelta = TimeDelta::seconds(60);

    #[test]
    fn an_overdue_reminder_fires_on_time_and_late() {
        let (p, o) = (planner(), order());
        let timer = timer("order.overdue_1_hour", "2030-03-01T13:00:00Z");
        let on_time = decide(
            &timer,
            Current::Order(Some(&o)),
            &p,
            LATE,
            t("2030-03-01T13:00:00.005Z"),
        );
        assert_eq!(on_time.verdict, Verdict::Fire { late: false });
        assert_eq!(on_time.effect, None);
        let late = decide(
            &timer,
            Current::Order(Some(&o)),
            &p,
            LATE,
            t("2030-03-01T15:00:00Z"),
        );
        assert_eq!(
            late.verdict,
            Verdict::Fire { late: true },
            "overdue reminders fire late"
        );
    }

    #[test]
    fn a_due_reminder_missed_past_its_anchor_is_skipped() {
        let (p, o) = (planner(), order());
        let timer = timer("order.due_in_1_hour", "2030-03-01T11:00:00Z");
        let late_but_before_anchor = decide(
            &timer,
            Current::Order(Some(&o)),
            &p,
            LATE,
            t("2030-03-01T11:30:00Z"),
        );
        assert_eq!(late_but_before_anchor.verdict, Verdict::Fire { late: true });
        match verdict(decide(
            &timer,
            Current::Order(Some(&o)),
            &p,
            LATE,
            t("2030-03-01T12:30:00Z"),
        )) {
            Verdict::Skip(why) => assert!(why.contains("skip_if_anchor_passed"), "{why}"),
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn a_checked_in_order_is_never_overdue() {
        let p = planner();
        let mut o = order();
        o.checkin(None, t("2030-03-01T12:30:00Z")).expect("checkin");
        assert_eq!(o.status, OrderStatus::Closed);
        let timer = timer("order.overdue_1_hour", "2030-03-01T13:00:00Z");
        match verdict(decide(
            &timer,
            Current::Order(Some(&o)),
            &p,
            LATE,
            t("2030-03-01T13:00:00Z"),
        )) {
            Verdict::Cancel(why) => assert!(why.contains("fully checked in"), "{why}"),
            other => panic!("expected a cancel, got {other:?}"),
        }
    }

    #[test]
    fn a_moved_anchor_cancels_the_old_timer() {
        let p = planner();
        let mut o = order();
        o.set_due(t("2030-03-02T12:00:00Z"), t("2030-03-01T09:00:00Z"))
            .expect("new due date");
        let timer = timer("order.overdue_1_hour", "2030-03-01T13:00:00Z");
        match verdict(decide(
            &timer,
            Current::Order(Some(&o)),
            &p,
            LATE,
            t("2030-03-01T13:00:00Z"),
        )) {
            Verdict::Cancel(why) => assert!(
                why.starts_with("anchor moved to 2030-03-02T12:00:00"),
                "{why}"
            ),
            other => panic!("expected a cancel, got {other:?}"),
        }
    }

    #[test]
    fn a_gone_entity_or_rule_cancels() {
        let p = planner();
        let timer_of = timer("order.overdue_1_hour", "2030-03-01T13:00:00Z");
        let now = t("2030-03-01T13:00:00Z");
        assert_eq!(
            decide(&timer_of, Current::Order(None), &p, LATE, now).verdict,
            Verdict::Cancel("order no longer exists".into())
        );
        let o = order();
        let unknown_rule = timer("order.overdue_3_days", "2030-03-01T13:00:00Z");
        assert_eq!(
            decide(&unknown_rule, Current::Order(Some(&o)), &p, LATE, now).verdict,
            Verdict::Cancel("rule no longer configured".into())
        );
    }

    #[test]
    fn a_digest_plans_its_successor_whether_fired_or_skipped() {
        let p = planner();
        let mut digest = timer("order.overdue_digest", "2030-03-01T07:00:00Z");
        digest.entity_kind = "digest".into();
        digest.entity_id = "Europe/Paris".into();
        let paris = Some(Effect::PlanNextDigest(chrono_tz::Europe::Paris));
        let fired = decide(
            &digest,
            Current::Digest,
            &p,
            LATE,
            t("2030-03-01T07:00:00Z"),
        );
        assert_eq!(
            fired,
            Decision {
                verdict: Verdict::Fire { late: false },
                effect: paris
            }
        );
        let missed = decide(
            &digest,
            Current::Digest,
            &p,
            LATE,
            t("2030-03-01T09:00:00Z"),
        );
        assert!(matches!(missed.verdict, Verdict::Skip(_)), "{missed:?}");
        assert_eq!(missed.effect, paris);
        digest.entity_id = "Asia/Tokyo".into();
        assert!(matches!(
            decide(
                &digest,
                Current::Digest,
                &p,
                LATE,
                t("2030-03-01T07:00:00Z")
            )
            .verdict,
            Verdict::Cancel(_)
        ));
    }
}
