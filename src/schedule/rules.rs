//! Rules: which timers an entity's state plans, when they fire, what must still be true
//! when they do, and what happens to a moment missed while the service was down.
//!
//! The defaults follow the seeds (Cheqroom's due/overdue reminders, Storeganise's
//! `unitRental.markOverdue`, Cheqroom's `item.expire`); `[[schedule.rules]]` in the config
//! adds rules or, under the same name, replaces or disables a default.

use chrono::{DateTime, Days, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::domain::EntityKind;

/// The instant of an entity a rule counts from. The names are the entities' fields
/// (`starts_at`, `due_at`, …), as written in `[[schedule.rules]]`.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// A reservation's `starts_at` (the pickup).
    StartsAt,
    /// An order's `due_at`.
    DueAt,
    /// An invoice's `due_at` (for unit-rental rules).
    InvoiceDueAt,
    /// An item's `expires_at`.
    ExpiresAt,
}

impl Anchor {
    pub fn for_entity(kind: EntityKind) -> Option<Anchor> {
        match kind {
            EntityKind::Reservation => Some(Anchor::StartsAt),
            EntityKind::Order => Some(Anchor::DueAt),
            EntityKind::UnitRental | EntityKind::Invoice => Some(Anchor::InvoiceDueAt),
            EntityKind::Item => Some(Anchor::ExpiresAt),
            EntityKind::Contact => None,
        }
    }
}

/// What must hold of the entity, when planned and again when fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Reservation: reserved, not cancelled and not picked up.
    Reserved,
    /// Order: checked out and not fully checked in (a partial check-in still counts).
    CheckedOut,
    /// Invoice: neither paid nor void.
    Unpaid,
    /// Item: not expired yet.
    NotExpired,
}

impl Condition {
    pub fn default_for(kind: EntityKind) -> Option<Condition> {
        match kind {
            EntityKind::Reservation => Some(Condition::Reserved),
            EntityKind::Order => Some(Condition::CheckedOut),
            EntityKind::UnitRental | EntityKind::Invoice => Some(Condition::Unpaid),
            EntityKind::Item => Some(Condition::NotExpired),
            EntityKind::Contact => None,
        }
    }

    fn fits(self, kind: EntityKind) -> bool {
        Self::default_for(kind) == Some(self)
    }
}

/// What to do with a timer whose moment passed while nobody could fire it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// Fire now; the event keeps `scheduled_at` = the missed instant.
    FireLate,
    /// Record it as skipped.
    Skip,
    /// Fire late unless the anchor itself has passed (a "due in 1 hour" reminder is
    /// pointless once the pickup time is gone); then skip.
    SkipIfAnchorPassed,
}

/// How far from the anchor a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// An exact duration (`-1h`, `+90m`, `+24h`).
    Exact(TimeDelta),
    /// Whole local days (`-1 day`, `+1 week` = 7 days): the same wall-clock time on
    /// another local day in the entity's time zone, right across DST changes.
    CalendarDays(i64),
}

impl Offset {
    /// Parses `-1h`, `+90m`, `30s`, `0`, `-1 day`, `+3 days`, `+1 week`, `-2 weeks`.
    pub fn parse(text: &str) -> Result<Offset, String> {
        let s = text.trim();
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'-') => (-1, s[1..].trim_start()),
            Some(b'+') => (1, s[1..].trim_start()),
            _ => (1, s),
        };
        if rest == "0" {
            return Ok(Offset::Exact(TimeDelta::zero()));
        }
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (num, unit) = rest.split_at(digits_end);
        let n: i64 = num.parse().map_err(|_| {
            format!("`{text}`: expected a number then a unit, like -1h, +90m or -1 day")
        })?;
        if n > 100_000 {
            return Err(format!("`{text}`: offset too large"));
        }
        let n = n * sign;
        match unit.trim() {
            "s" | "sec" | "secs" | "second" | "seconds" => Ok(Offset::Exact(TimeDelta::seconds(n))),
            "m" | "min" | "mins" | "minute" | "minutes" => Ok(Offset::Exact(TimeDelta::minutes(n))),
            "h" | "hour" | "hours" => Ok(Offset::Exact(TimeDelta::hours(n))),
            "day" | "days" => Ok(Offset::CalendarDays(n)),
            "week" | "weeks" => Ok(Offset::CalendarDays(n * 7)),
            other => Err(format!(
                "`{text}`: unknown unit `{other}` (use s, m, h for exact durations, day(s) or week(s) for calendar offsets)"
            )),
        }
    }

    /// The instant `anchor` moved by this offset, calendar offsets in `tz`.
    pub fn apply(self, anchor: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        match self {
            Offset::Exact(d) => anchor + d,
            Offset::CalendarDays(days) => {
                let local = anchor.with_timezone(&tz).naive_local();
                let shifted = if days >= 0 {
                    local.checked_add_days(Days::new(days.unsigned_abs()))
                } else {
                    local.checked_sub_days(Days::new(days.unsigned_abs()))
                };
                match shifted {
                    Some(naive) => local_to_utc(tz, naive),
                    None => anchor + TimeDelta::days(days),
                }
            }
        }
    }
}

/// Resolves a local wall-clock time: in a repeated hour (autumn) the first occurrence;
/// in a skipped hour (spring) the first local time that exists after the gap.
fn local_to_utc(tz: Tz, naive: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Walk forward to the first valid local minute: gaps are at most a few hours.
            (1..=24 * 60)
                .find_map(|m| {
                    tz.from_local_datetime(&(naive + TimeDelta::minutes(m)))
                        .earliest()
                })
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
        }
    }
}

/// One rule, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name; the default rules are named after their event type.
    pub name: String,
    pub entity: EntityKind,
    pub anchor: Anchor,
    pub event_type: String,
    pub offset: Offset,
    pub offset_text: String,
    pub condition: Condition,
    pub misfire: Misfire,
}

/// A `[[schedule.rules]]` table as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default)]
    pub entity: Option<String>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub offset: Option<String>,
    #[serde(default)]
    pub condition: Option<Condition>,
    #[serde(default)]
    pub misfire: Option<Misfire>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

fn default_misfire(event_type: &str) -> Misfire {
    if event_type
        .split('.')
        .nth(1)
        .is_some_and(|s| s.starts_with("due_in"))
    {
        Misfire::SkipIfAnchorPassed
    } else {
        Misfire::FireLate
    }
}

fn rule(entity: EntityKind, event_type: &str, offset: &str) -> Rule {
    Rule {
        name: event_type.to_string(),
        entity,
        anchor: Anchor::for_entity(entity).unwrap_or(Anchor::DueAt),
        event_type: event_type.to_string(),
        // Our own literals, covered by a unit test.
        offset: Offset::parse(offset).unwrap_or(Offset::Exact(TimeDelta::zero())),
        offset_text: offset.to_string(),
        condition: Condition::default_for(entity).unwrap_or(Condition::CheckedOut),
        misfire: default_misfire(event_type),
    }
}

/// The default rule table of DESIGN.md. `invoice_grace` is added to an invoice's due
/// date before `unitRental.markOverdue` fires.
pub fn default_rules(invoice_grace: TimeDelta) -> Vec<Rule> {
    use EntityKind::*;
    let mut mark = rule(UnitRental, "unitRental.markOverdue", "0");
    mark.offset = Offset::Exact(invoice_grace);
    mark.offset_text = format!("+{}s", invoice_grace.num_seconds());
    vec![
        rule(Reservation, "reservation.due_in_1_day", "-1 day"),
        rule(Reservation, "reservation.due_in_1_hour", "-1h"),
        rule(Reservation, "reservation.overdue_1_hour", "+1h"),
        rule(Reservation, "reservation.overdue_1_day", "+1 day"),
        rule(Order, "order.due_in_1_day", "-1 day"),
        rule(Order, "order.due_in_1_hour", "-1h"),
        rule(Order, "order.overdue_1_hour", "+1h"),
        rule(Order, "order.overdue_1_day", "+1 day"),
        mark,
        rule(Item, "item.expire", "0"),
    ]
}

/// Builds the rule set: defaults, then each configured rule adds a rule or (same name)
/// replaces or disables one. Errors name the offending `schedule.rules[i].key`.
pub fn build(
    invoice_grace: TimeDelta,
    configured: &[RuleConfig],
) -> Result<Vec<Rule>, (String, String)> {
    let mut rules = default_rules(invoice_grace);
    for (i, rc) in configured.iter().enumerate() {
        let key = |k: &str| format!("schedule.rules[{i}].{k}");
        let existing = rules.iter().position(|r| r.name == rc.name);
        if !rc.enabled {
            match existing {
                Some(pos) => {
                    rules.remove(pos);
                    continue;
                }
                None => {
                    return Err((
                        key("name"),
                        format!("no rule named `{}` to disable", rc.name),
                    ));
                }
            }
        }
        let base = existing.map(|p| rules[p].clone());
        let entity = match (&rc.entity, &base) {
            (Some(e), _) => EntityKind::parse(e)
                .filter(|k| Anchor::for_entity(*k).is_some() && *k != EntityKind::Invoice)
                .ok_or_else(|| {
                    (
                        key("entity"),
                        format!("`{e}`: use reservation, order, unitRental or item"),
                    )
                })?,
            (None, Some(b)) => b.entity,
            (None, None) => return Err((key("entity"), "required for a new rule".into())),
        };
        let event_type = match (&rc.event, &base) {
            (Some(ev), _) => ev.clone(),
            (None, Some(b)) => b.event_type.clone(),
            (None, None) => rc.name.clone(),
        };
        let prefix = format!("{}.", entity.as_str());
        let suffix = event_type.strip_prefix(&prefix).unwrap_or("");
        if suffix.is_empty()
            || !suffix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err((
                key("event"),
                format!("`{event_type}` must be `{prefix}<name>` (letters, digits, _ and .)"),
            ));
        }
        let (offset, offset_text) = match (&rc.offset, &base) {
            (Some(o), _) => (Offset::parse(o).map_err(|e| (key("offset"), e))?, o.clone()),
            (None, Some(b)) => (b.offset, b.offset_text.clone()),
            (None, None) => return Err((key("offset"), "required for a new rule".into())),
        };
        let condition = rc
            .condition
            .or(base.as_ref().map(|b| b.condition))
            .or(Condition::default_for(entity))
            .unwrap_or(Condition::CheckedOut);
        if !condition.fits(entity) {
            return Err((
                key("condition"),
                format!("{condition:?} does not apply to {entity}"),
            ));
        }
        let rule = Rule {
            name: rc.name.clone(),
            entity,
            anchor: Anchor::for_entity(entity).unwrap_or(Anchor::DueAt),
            misfire: rc
                .misfire
                .or(base.as_ref().map(|b| b.misfire))
                .unwrap_or_else(|| default_misfire(&event_type)),
            event_type,
            offset,
            offset_text,
            condition,
        };
        match existing {
            Some(pos) => rules[pos] = rule,
            None => rules.push(rule),
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(
            Offset::parse("-1h"),
            Ok(Offset::Exact(TimeDelta::hours(-1)))
        );
        assert_eq!(
            Offset::parse("+90m"),
            Ok(Offset::Exact(TimeDelta::minutes(90)))
        );
        assert_eq!(
            Offset::parse("-90m"),
            Ok(Offset::Exact(TimeDelta::minutes(-90)))
        );
        assert_eq!(Offset::parse("0"), Ok(Offset::Exact(TimeDelta::zero())));
        assert_eq!(Offset::parse("-1 day"), Ok(Offset::CalendarDays(-1)));
        assert_eq!(Offset::parse("+3 days"), Ok(Offset::CalendarDays(3)));
        assert_eq!(Offset::parse("+1 week"), Ok(Offset::CalendarDays(7)));
        assert!(Offset::parse("-1 fortnight").is_err());
        assert!(Offset::parse("soon").is_err());
        assert!(Offset::parse("").is_err());
    }

    #[test]
    fn calendar_day_across_spring_dst_is_23_hours() {
        let tz: Tz = "Europe/Brussels".parse().expect("zone");
        // Pickup 2030-03-31 09:00 CEST (07:00Z); clocks moved forward that night.
        let pickup = utc("2030-03-31T07:00:00Z");
        let reminder = Offset::CalendarDays(-1).apply(pickup, tz);
        assert_eq!(
            reminder,
            utc("2030-03-30T08:00:00Z"),
            "09:00 CET the day before"
        );
        assert_eq!(pickup - reminder, TimeDelta::hours(23));
        assert_eq!(
            Offset::Exact(TimeDelta::hours(-24)).apply(pickup, tz),
            utc("2030-03-30T07:00:00Z")
        );
    }

    #[test]
    fn calendar_day_into_a_dst_gap_lands_after_it() {
        let tz: Tz = "Europe/Brussels".parse().expect("zone");
        // 02:30 local on 2030-03-31 does not exist; one day after 02:30 on the 30th.
        let anchor = utc("2030-03-30T01:30:00Z"); // 02:30 CET
        assert_eq!(
            Offset::CalendarDays(1).apply(anchor, tz),
            utc("2030-03-31T01:00:00Z"),
            "03:00 CEST"
        );
    }

    #[test]
    fn default_rules_and_overrides() {
        let rules = default_rules(TimeDelta::zero());
        assert_eq!(rules.len(), 10);
        let due = rules
            .iter()
            .find(|r| r.name == "order.due_in_1_hour")
            .expect("rule");
        assert_eq!(due.misfire, Misfire::SkipIfAnchorPassed);
        let over = rules
            .iter()
            .find(|r| r.name == "order.overdue_1_day")
            .expect("rule");
        assert_eq!(
            (over.misfire, over.offset),
            (Misfire::FireLate, Offset::CalendarDays(1))
        );

        let cfg =
            |name: &str, entity: Option<&str>, offset: Option<&str>, enabled: bool| RuleConfig {
                name: name.into(),
                entity: entity.map(Into::into),
                event: None,
                offset: offset.map(Into::into),
                condition: None,
                misfire: None,
                enabled,
            };
        let built = build(
            TimeDelta::zero(),
            &[
                cfg("order.overdue_3_days", Some("order"), Some("+3 days"), true),
                cfg("reservation.due_in_1_hour", None, Some("-90m"), true),
                cfg("item.expire", None, None, false),
            ],
        )
        .expect("valid");
        assert_eq!(built.len(), 10);
        assert!(
            built
                .iter()
                .any(|r| r.name == "order.overdue_3_days" && r.offset == Offset::CalendarDays(3))
        );
        assert!(built.iter().any(|r| r.name == "reservation.due_in_1_hour"
            && r.offset == Offset::Exact(TimeDelta::minutes(-90))));
        assert!(!built.iter().any(|r| r.name == "item.expire"));

        let err = build(
            TimeDelta::zero(),
            &[cfg("x", Some("spaceship"), Some("1h"), true)],
        )
        .unwrap_err();
        assert_eq!(err.0, "schedule.rules[0].entity");
        let err = build(
            TimeDelta::zero(),
            &[cfg("order.late", Some("order"), Some("+1 fortnight"), true)],
        )
        .unwrap_err();
        assert_eq!(err.0, "schedule.rules[0].offset");
        let err = build(
            TimeDelta::zero(),
            &[cfg("reservation.x", Some("order"), Some("1h"), true)],
        )
        .unwrap_err();
        assert_eq!(err.0, "schedule.rules[0].event");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The offset parser never panics, and what it accepts round-trips through
        /// `apply` without overflow for any anchor in a sane range.
        #[test]
        fn offset_parser_never_panics(text in ".{0,40}", secs in 0i64..4_000_000_000) {
            if let Ok(offset) = Offset::parse(&text) {
                let anchor = DateTime::from_timestamp(secs, 0).unwrap_or_default();
                let tz: Tz = "Europe/Brussels".parse().unwrap_or(chrono_tz::UTC);
                let _ = offset.apply(anchor, tz);
            }
        }

        #[test]
        fn offsets_of_the_documented_forms_parse(n in 0i64..10_000, unit in prop::sample::select(vec!["s", "m", "h", " day", " days", " week", " weeks"]), sign in prop::sample::select(vec!["", "+", "-"])) {
            let text = format!("{sign}{n}{unit}");
            prop_assert!(Offset::parse(&text).is_ok(), "{}", text);
        }
    }
}
