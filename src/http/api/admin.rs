//! Bodies of the admin routes: the clock, the schedule and its statistics, the
//! forecast, an entity's timeline, the nodes and the endpoints' health.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::domain::EntityKind;
use crate::domain::event;
use crate::http::error::ApiError;
use crate::schedule::rules::{Condition, Misfire, Rule};
use crate::store::{cluster, deliveries, from_ms, timers};

/// `GET /admin/clock`.
#[derive(Serialize, ToSchema)]
pub struct ClockView {
    /// `system` or `manual`.
    pub mode: String,
    pub now: DateTime<Utc>,
}

/// Body of `POST /admin/clock/advance`: exactly one of `seconds` and `to`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    /// Move forward by this many seconds (0 to one year).
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Move forward to this instant (not before now, at most one year ahead).
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
}

/// `POST /admin/clock/advance`.
#[derive(Serialize, ToSchema)]
pub struct ClockAdvanced {
    /// Always `manual`.
    pub mode: String,
    /// Where the clock is now.
    pub now: DateTime<Utc>,
    /// Where it was before.
    pub from: DateTime<Utc>,
    /// Distinct instants the clock stopped at on the way.
    pub steps: u64,
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScheduleQuery {
    /// Timers firing at or after this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Timers firing before this instant (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
    /// Only this event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// `reservation`, `order`, `invoice`, `unitRental`, `item`, `contact` or `digest`.
    pub entity_kind: Option<String>,
    pub entity_id: Option<String>,
    /// `pending`, `fired`, `cancelled` or `skipped`.
    pub state: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Whether `kind` names what timers can be about: an entity kind or the digest.
pub fn is_timer_kind(kind: &str) -> bool {
    EntityKind::parse(kind).is_some() || kind == crate::schedule::digest::ENTITY_KIND
}

/// An RFC 3339 instant from a query parameter.
fn instant(field: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::invalid(field, format!("`{s}` is not an RFC 3339 instant: {e}"))
                })
        })
        .transpose()
}

impl ScheduleQuery {
    /// The store's filter for this query. It reads one timer more than the page holds,
    /// so that [`SchedulePage::new`] knows whether another page follows.
    pub fn filter(self) -> Result<timers::TimerFilter, ApiError> {
        let limit = match &self.limit {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| ApiError::invalid("limit", format!("must be 1 to {MAX_LIMIT}")))?,
        };
        let state = self
            .state
            .as_deref()
            .map(|st| {
                timers::TimerState::parse(st).ok_or_else(|| {
                    ApiError::invalid("state", "use pending, fired, cancelled or skipped")
                })
            })
            .transpose()?;
        if let Some(k) = &self.entity_kind
            && !is_timer_kind(k)
        {
            return Err(ApiError::invalid(
                "entity_kind",
                "use reservation, order, invoice, unitRental, item, contact or digest",
            ));
        }
        let after = self
            .cursor
            .as_deref()
            .map(|c| {
                c.split_once('.')
                    .and_then(|(a, b)| {
                        Some((from_ms(a.parse().ok()?).ok()?, b.parse::<i64>().ok()?))
                    })
                    .ok_or_else(|| ApiError::invalid("cursor", "not a cursor from a previous page"))
            })
            .transpose()?;
        Ok(timers::TimerFilter {
            from: instant("from", &self.from)?,
            to: instant("to", &self.to)?,
            event_type: self.event_type,
            entity_kind: self.entity_kind,
            entity_id: self.entity_id,
            state,
            after,
            limit: limit + 1,
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimerState {
    Pending,
    Fired,
    Cancelled,
    Skipped,
}

impl From<timers::TimerState> for TimerState {
    fn from(s: timers::TimerState) -> Self {
        use timers::TimerState as S;
        match s {
            S::Pending => Self::Pending,
            S::Fired => Self::Fired,
            S::Cancelled => Self::Cancelled,
            S::Skipped => Self::Skipped,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timer {
    pub id: i64,
    pub entity_kind: String,
    pub entity_id: String,
    pub rule: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub anchor_at: DateTime<Utc>,
    pub fire_at: DateTime<Utc>,
    pub state: TimerState,
    pub reason: Option<String>,
    pub event_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<timers::Timer> for Timer {
    fn from(t: timers::Timer) -> Self {
        let timers::Timer {
            id,
            entity_kind,
            entity_id,
            rule,
            event_type,
            anchor_at,
            fire_at,
            state,
            reason,
            event_id,
            created_at,
            updated_at,
        } = t;
        Self {
            id,
            entity_kind,
            entity_id,
            rule,
            event_type,
            anchor_at,
            fire_at,
            state: state.into(),
            reason,
            event_id,
            created_at,
            updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SchedulePage {
    pub timers: Vec<Timer>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl SchedulePage {
    /// The page of `rows` read with `filter` from [`ScheduleQuery::filter`]: a timer
    /// beyond the page means another page follows, starting after the page's last.
    pub fn new(mut rows: Vec<timers::Timer>, filter: &timers::TimerFilter) -> Self {
        let size = usize::try_from(filter.limit - 1).unwrap_or(0);
        let next_cursor = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|t| format!("{}.{}", t.fire_at.timestamp_millis(), t.id))
        } else {
            None
        };
        Self {
            timers: rows.into_iter().map(Timer::from).collect(),
            next_cursor,
        }
    }
}

/// A configured rule, as `GET /admin/schedule/stats` lists it.
#[derive(Serialize, ToSchema)]
pub struct RuleView {
    pub name: String,
    /// The entity kind: `reservation`, `order`, `invoice`, `item`…
    pub entity: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The offset from the anchor as configured (`-1h`, `+1 day`…).
    pub offset: String,
    /// `reserved`, `checked_out`, `unpaid` or `not_expired`.
    pub condition: Option<String>,
    /// `fire_late`, `skip` or `skip_if_anchor_passed`.
    pub misfire: String,
}

impl From<&Rule> for RuleView {
    fn from(r: &Rule) -> Self {
        let condition = match r.condition {
            Condition::Reserved => "reserved",
            Condition::CheckedOut => "checked_out",
            Condition::Unpaid => "unpaid",
            Condition::NotExpired => "not_expired",
        };
        let misfire = match r.misfire {
            Misfire::FireLate => "fire_late",
            Misfire::Skip => "skip",
            Misfire::SkipIfAnchorPassed => "skip_if_anchor_passed",
        };
        Self {
            name: r.name.clone(),
            entity: r.entity.as_str().to_string(),
            event_type: r.event_type.clone(),
            offset: r.offset_text.clone(),
            condition: Some(condition.to_string()),
            misfire: misfire.to_string(),
        }
    }
}

/// `GET /admin/schedule/stats`.
#[derive(Serialize, ToSchema)]
pub struct ScheduleStats {
    pub now: DateTime<Utc>,
    /// `system` or `manual`.
    pub clock: String,
    /// Timers by state (`pending`, `fired`, `cancelled`, `skipped`).
    pub timers: BTreeMap<String, i64>,
    /// Timers held in this node's timing wheel.
    pub in_wheel: u64,
    /// Approximate memory of the wheel.
    pub wheel_bytes: u64,
    pub horizon_seconds: i64,
    /// The earliest pending timer.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Now minus the oldest pending timer already due (0 when none is).
    pub lag_ms: i64,
    pub fired_since_start: u64,
    pub fired_late_since_start: u64,
    pub cancelled_at_fire_since_start: u64,
    pub skipped_since_start: u64,
    pub rules: Vec<RuleView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ForecastQuery {
    /// Required: the end of the forecast (RFC 3339, not before now).
    #[param(value_type = DateTime<Utc>, required = true)]
    pub until: Option<String>,
}

impl ForecastQuery {
    /// The end of the forecast, required and not before `now`.
    pub fn until(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
        let until = instant("until", &self.until)?
            .ok_or_else(|| ApiError::invalid("until", "required (RFC 3339)"))?;
        if until < now {
            return Err(ApiError::invalid("until", "must not be before now"));
        }
        Ok(until)
    }
}

/// One hour of `GET /admin/schedule/forecast`.
#[derive(Serialize, ToSchema)]
pub struct ForecastHour {
    pub hour: DateTime<Utc>,
    pub count: i64,
    pub by_type: BTreeMap<String, i64>,
}

/// `GET /admin/schedule/forecast`.
#[derive(Serialize, ToSchema)]
pub struct Forecast {
    pub now: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub total: i64,
    pub by_type: BTreeMap<String, i64>,
    pub by_hour: Vec<ForecastHour>,
}

impl Forecast {
    /// Sums the store's counts per (event type, hour since the epoch), sorted by hour.
    pub fn new(now: DateTime<Utc>, until: DateTime<Utc>, rows: Vec<(String, i64, i64)>) -> Self {
        let mut by_type = BTreeMap::new();
        let mut by_hour: Vec<(i64, ForecastHour)> = Vec::new();
        let mut total = 0;
        for (event_type, hour, n) in rows {
            total += n;
            *by_type.entry(event_type.clone()).or_insert(0) += n;
            match by_hour.last_mut() {
                Some((h, bucket)) if *h == hour => {
                    bucket.by_type.insert(event_type, n);
                    bucket.count += n;
                }
                _ => by_hour.push((
                    hour,
                    ForecastHour {
                        // Hours come from stored instants, which are all representable.
                        hour: DateTime::from_timestamp(hour * 3600, 0).unwrap_or_default(),
                        count: n,
                        by_type: BTreeMap::from([(event_type, n)]),
                    },
                )),
            }
        }
        Self {
            now,
            until,
            total,
            by_type,
            by_hour: by_hour.into_iter().map(|(_, bucket)| bucket).collect(),
        }
    }
}

/// How much of each attempt's response body an entity's timeline shows.
const RESPONSE_EXCERPT_BYTES: usize = 256;

/// The first `max` bytes of `text`, cut back to a character boundary.
fn excerpt(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

// Each kind of entry has its own fields: a field that does not apply to the kind is
// absent, one that applies but has no value is null (the `Option<Option<_>>` fields).
/// One entry of an entity's timeline.
#[derive(Default, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// `event.change`, `event.scheduled`, `timer.planned`, `timer.fired`,
    /// `timer.cancelled`, `timer.skipped`, `delivery.attempt`, `delivery.pending`,
    /// `delivery.succeeded` or `delivery.failed`.
    pub what: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub event_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timer_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub scheduled_at: Option<Option<DateTime<Utc>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fire_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<Option<String>>,
    /// An event's `data`, as delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    /// A `delivery.attempt`'s number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// A `delivery.*` entry's attempts so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub next_attempt_at: Option<Option<DateTime<Utc>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub status_code: Option<Option<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub error_kind: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub error: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// The first 256 bytes of the attempt's response body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
}

impl TimelineEntry {
    /// An event the entity emitted: a change, or a time-based one.
    pub fn event(ev: &event::Event) -> Self {
        let what = if ev.scheduled_at.is_some() {
            "event.scheduled"
        } else {
            "event.change"
        };
        Self {
            at: ev.created,
            what: what.to_string(),
            event_type: Some(ev.event_type.clone()),
            event_id: Some(Some(ev.id.clone())),
            scheduled_at: Some(ev.scheduled_at),
            data: Some(ev.data_value()),
            ..Self::default()
        }
    }

    /// One attempt at delivering event `event_id`.
    pub fn attempt(event_id: &str, d: &deliveries::Delivery, a: &deliveries::Attempt) -> Self {
        Self {
            at: a.started_at,
            what: "delivery.attempt".to_string(),
            event_id: Some(Some(event_id.to_string())),
            delivery_id: Some(d.id.clone()),
            endpoint_id: Some(d.endpoint_id.clone()),
            attempt: Some(a.number),
            status_code: Some(a.status_code),
            error_kind: Some(a.error_kind.clone()),
            error: Some(a.error.clone()),
            duration_ms: Some(a.duration_ms),
            response_excerpt: Some(excerpt(&a.response_body, RESPONSE_EXCERPT_BYTES).to_string()),
            ..Self::default()
        }
    }

    /// Where a delivery of event `event_id` stands.
    pub fn delivery(event_id: &str, d: &deliveries::Delivery) -> Self {
        Self {
            at: d.updated_at,
            what: format!("delivery.{}", d.status),
            event_id: Some(Some(event_id.to_string())),
            delivery_id: Some(d.id.clone()),
            endpoint_id: Some(d.endpoint_id.clone()),
            attempts: Some(d.attempts),
            next_attempt_at: Some(d.next_attempt_at),
            ..Self::default()
        }
    }

    /// A timer planned for the entity.
    pub fn timer_planned(t: &timers::Timer) -> Self {
        Self {
            at: t.created_at,
            what: "timer.planned".to_string(),
            timer_id: Some(t.id),
            event_type: Some(t.event_type.clone()),
            rule: Some(t.rule.clone()),
            fire_at: Some(t.fire_at),
            ..Self::default()
        }
    }

    /// What became of a timer that is no longer pending: fired, cancelled or skipped.
    pub fn timer_settled(t: &timers::Timer) -> Self {
        Self {
            at: t.updated_at,
            what: format!("timer.{}", t.state.as_str()),
            timer_id: Some(t.id),
            event_type: Some(t.event_type.clone()),
            fire_at: Some(t.fire_at),
            reason: Some(t.reason.clone()),
            event_id: Some(t.event_id.clone()),
            ..Self::default()
        }
    }
}

/// `GET /admin/entities/{kind}/{id}/timeline`.
#[derive(Serialize, ToSchema)]
pub struct Timeline {
    pub entity_kind: String,
    pub entity_id: String,
    pub timeline: Vec<TimelineEntry>,
}

/// One endpoint's delivery health over a window, for operators.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointHealth {
    pub endpoint_id: String,
    pub name: String,
    /// `enabled` or `disabled`.
    pub state: String,
    pub disabled_reason: Option<String>,
    /// `ok`, `failing` or `disabled` (what was last alerted).
    pub alert_state: String,
    pub attempts: i64,
    pub succeeded: i64,
    /// Share of attempts in the window answered with a 2xx (null without attempts).
    pub success_rate: Option<f64>,
    /// Deliveries waiting to be sent or retried.
    pub pending: i64,
    /// The last failed attempt: its error, or `HTTP <status>`.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// `none`, `entity` or `endpoint`: in which order its deliveries go out.
    pub ordering: String,
    /// On an ordered endpoint, its keys held back by a failed first delivery (retrying,
    /// or failed for good and holding the key); null when none is.
    pub held: Option<HeldKeys>,
}

/// An ordered endpoint's keys held back: their first delivery failed and waits for its
/// retry, or failed for good and holds the key until retried or skipped.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeldKeys {
    /// How many keys are held.
    pub keys: i64,
    /// How many deliveries wait behind them.
    pub waiting: i64,
    /// The first delivery of a held key that was created first.
    pub oldest_delivery_id: Option<String>,
    pub oldest_created_at: Option<DateTime<Utc>>,
}

impl From<deliveries::HeldKeys> for HeldKeys {
    fn from(h: deliveries::HeldKeys) -> Self {
        let (oldest_delivery_id, oldest_created_at) = h.oldest.unzip();
        Self {
            keys: h.keys,
            waiting: h.waiting,
            oldest_delivery_id,
            oldest_created_at,
        }
    }
}

impl From<deliveries::EndpointHealth> for EndpointHealth {
    fn from(h: deliveries::EndpointHealth) -> Self {
        let deliveries::EndpointHealth {
            endpoint_id,
            name,
            state,
            disabled_reason,
            alert_state,
            attempts,
            succeeded,
            success_rate,
            pending,
            last_error,
            last_error_at,
            ordering,
            held,
        } = h;
        Self {
            endpoint_id,
            name,
            state,
            disabled_reason,
            alert_state,
            attempts,
            succeeded,
            success_rate,
            pending,
            last_error,
            last_error_at,
            ordering,
            held: held.map(HeldKeys::from),
        }
    }
}

/// `GET /admin/endpoints/health`.
#[derive(Serialize, ToSchema)]
pub struct EndpointHealthList {
    pub now: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub endpoints: Vec<EndpointHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    pub pid: i64,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Pending timers it holds a live lease on.
    pub timers_held: i64,
}

impl From<cluster::Node> for Node {
    fn from(n: cluster::Node) -> Self {
        let cluster::Node {
            id,
            hostname,
            pid,
            started_at,
            last_seen,
            stopped_at,
            timers_held,
        } = n;
        Self {
            id,
            hostname,
            pid,
            started_at,
            last_seen,
            stopped_at,
            timers_held,
        }
    }
}

/// `GET /admin/nodes`.
#[derive(Serialize, ToSchema)]
pub struct NodeList {
    pub now: DateTime<Utc>,
    pub nodes: Vec<Node>,
}

#[cfg(test)]
mod tests {
    use super::excerpt;

    #[test]
    fn an_excerpt_stops_at_a_character_boundary() {
        assert_eq!(excerpt("receiver says hi", 256), "receiver says hi");
        assert_eq!(excerpt("abcdef", 3), "abc");
        // "é" is two bytes: cutting inside it keeps the whole characters before it.
        assert_eq!(excerpt("aé", 2), "a");
        assert_eq!(excerpt("", 4), "");
    }
}
