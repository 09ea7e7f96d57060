//! Admin routes (`/admin/*`): the manual clock and schedule inspection.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::json::JsonBody;
use super::openapi::{
    BodyErrors, ClockAdvanced, ClockView, Forecast, Internal, InvalidField, NodeList, NotFound,
    ScheduleStats, StoreErrors, Timeline,
};
use crate::domain::EntityKind;
use crate::schedule::advance::{AdvanceError, Workers, live_through};
use crate::store::from_ms;
use crate::store::timers::{self, Timer, TimerFilter, TimerState};

/// `GET /admin/clock`
#[utoipa::path(
    get,
    path = "/admin/clock",
    tag = "admin",
    responses((status = 200, description = "The clock's mode and current instant", body = ClockView))
)]
pub async fn get_clock(State(s): State<AppState>) -> Json<Value> {
    Json(json!({ "mode": s.clock.mode(), "now": s.clock.now() }))
}

/// Body of `POST /admin/clock/advance`: exactly one of `seconds` and `to`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    /// Move forward by this many seconds (0 to one year).
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Move forward to this instant (not before now, at most one year ahead).
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
}

/// Longest single advance: a year, so a typo cannot spin for ages.
const MAX_ADVANCE_SECONDS: f64 = 366.0 * 24.0 * 3600.0;

/// `POST /admin/clock/advance`: manual clock only. Lives through every timer on the
/// way, each at its own instant, before answering.
#[utoipa::path(
    post,
    path = "/admin/clock/advance",
    tag = "admin",
    request_body = AdvanceBody,
    responses(
        (status = 200, description = "The clock moved; every timer on the way fired at its own instant", body = ClockAdvanced),
        BodyErrors,
        (status = 409, description = "The clock is the system clock (`conflict`): advancing needs `[clock] mode = \"manual\"`", body = ApiError),
        Internal,
        (status = 503, description = "The work on the way did not settle (`not_settled`), or the store is unreachable (`store_unavailable`)", body = ApiError)
    )
)]
pub async fn advance_clock(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<AdvanceBody>,
) -> Result<Json<Value>, ApiError> {
    let Some(clock) = s.clock.as_manual() else {
        return Err(ApiError::conflict(
            "the clock is the system clock; advancing needs [clock] mode = \"manual\"",
        ));
    };
    let now = clock_now(&s);
    let target = match (body.seconds, body.to) {
        (Some(secs), None) => {
            if !(0.0..=MAX_ADVANCE_SECONDS).contains(&secs) || !secs.is_finite() {
                return Err(ApiError::invalid(
                    "seconds",
                    "must be between 0 and one year",
                ));
            }
            now + TimeDelta::milliseconds((secs * 1000.0).round() as i64)
        }
        (None, Some(to)) => {
            if to < now {
                return Err(ApiError::invalid(
                    "to",
                    format!("must not be before the current time {}", now.to_rfc3339()),
                ));
            }
            if (to - now).num_seconds() as f64 > MAX_ADVANCE_SECONDS {
                return Err(ApiError::invalid("to", "at most one year ahead per call"));
            }
            to
        }
        _ => {
            return Err(ApiError::invalid(
                "body",
                "give exactly one of `seconds` and `to`",
            ));
        }
    };
    let workers = Workers {
        driver: &s.driver_stats,
        node: &s.node_id,
        sending: &s.delivery.sending,
        wake: &s.planner.wake,
        work: s.delivery.outbox.delivery_wake(),
    };
    let advanced = live_through(&s.store, &workers, clock, target)
        .await
        .map_err(|e| match e {
            AdvanceError::Store(e) => ApiError::from(e),
            AdvanceError::Stuck(..) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_settled",
                e.to_string(),
            ),
        })?;
    Ok(Json(
        json!({ "mode": "manual", "now": clock_now(&s), "from": advanced.from, "steps": advanced.steps }),
    ))
}

fn clock_now(s: &AppState) -> DateTime<Utc> {
    s.clock.now()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
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

#[derive(Serialize, utoipa::ToSchema)]
pub struct SchedulePage {
    pub timers: Vec<Timer>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

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

/// `GET /admin/schedule`: timers sorted by `fire_at`, filtered, paged by cursor.
#[utoipa::path(
    get,
    path = "/admin/schedule",
    tag = "admin",
    params(ScheduleQuery),
    responses(
        (status = 200, description = "Timers sorted by `fire_at`", body = SchedulePage),
        InvalidField,
        StoreErrors
    )
)]
pub async fn schedule(
    State(s): State<AppState>,
    query: Result<Query<ScheduleQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SchedulePage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let limit = match &q.limit {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", format!("must be 1 to {MAX_LIMIT}")))?,
    };
    let state = q
        .state
        .as_deref()
        .map(|st| {
            TimerState::parse(st).ok_or_else(|| {
                ApiError::invalid("state", "use pending, fired, cancelled or skipped")
            })
        })
        .transpose()?;
    if let Some(k) = &q.entity_kind
        && EntityKind::parse(k).is_none()
        && k != crate::schedule::digest::ENTITY_KIND
    {
        return Err(ApiError::invalid(
            "entity_kind",
            "use reservation, order, invoice, unitRental, item, contact or digest",
        ));
    }
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            c.split_once('.')
                .and_then(|(a, b)| Some((from_ms(a.parse().ok()?).ok()?, b.parse::<i64>().ok()?)))
                .ok_or_else(|| ApiError::invalid("cursor", "not a cursor from a previous page"))
        })
        .transpose()?;
    let filter = TimerFilter {
        from: instant("from", &q.from)?,
        to: instant("to", &q.to)?,
        event_type: q.event_type,
        entity_kind: q.entity_kind,
        entity_id: q.entity_id,
        state,
        after,
        limit: limit + 1,
    };
    let mut timers = timers::list(s.store.pool(), &filter).await?;
    let next_cursor = if timers.len() as i64 > limit {
        timers.truncate(limit as usize);
        timers
            .last()
            .map(|t| format!("{}.{}", t.fire_at.timestamp_millis(), t.id))
    } else {
        None
    };
    Ok(Json(SchedulePage {
        timers,
        next_cursor,
    }))
}

/// `GET /admin/schedule/stats`
#[utoipa::path(
    get,
    path = "/admin/schedule/stats",
    tag = "admin",
    responses(
        (status = 200, description = "Timer counts, the wheel, lag, fires since start and the rules in force", body = ScheduleStats),
        StoreErrors
    )
)]
pub async fn stats(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = s.clock.now();
    let by_state: serde_json::Map<String, Value> = timers::count_by_state(s.store.pool())
        .await?
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    let oldest_due = timers::list(
        s.store.pool(),
        &TimerFilter {
            state: Some(TimerState::Pending),
            to: Some(now + TimeDelta::milliseconds(1)),
            limit: 1,
            ..Default::default()
        },
    )
    .await?;
    let lag_ms = oldest_due
        .first()
        .map_or(0, |t| (now - t.fire_at).num_milliseconds().max(0));
    let next_pending = timers::next_pending(s.store.pool()).await?;
    let d = &s.driver_stats;
    Ok(Json(json!({
        "now": now,
        "clock": s.clock.mode(),
        "timers": by_state,
        "in_wheel": d.in_wheel.load(Ordering::Relaxed),
        "wheel_bytes": d.wheel_bytes.load(Ordering::Relaxed),
        "horizon_seconds": s.planner.horizon.num_seconds(),
        "next_fire_at": next_pending,
        "lag_ms": lag_ms,
        "fired_since_start": d.fired.load(Ordering::Relaxed),
        "fired_late_since_start": d.late.load(Ordering::Relaxed),
        "cancelled_at_fire_since_start": d.cancelled.load(Ordering::Relaxed),
        "skipped_since_start": d.skipped.load(Ordering::Relaxed),
        "rules": s.planner.rules.iter().map(|r| json!({
            "name": r.name, "entity": r.entity, "type": r.event_type, "offset": r.offset_text,
            "condition": r.condition, "misfire": r.misfire,
        })).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ForecastQuery {
    /// Required: the end of the forecast (RFC 3339, not before now).
    #[param(value_type = DateTime<Utc>, required = true)]
    pub until: Option<String>,
}

/// `GET /admin/schedule/forecast?until=`: what would fire between now and `until` if
/// nothing changes (the pending timers, which ingest keeps in line with every change),
/// per type and per hour. Reads only.
#[utoipa::path(
    get,
    path = "/admin/schedule/forecast",
    tag = "admin",
    params(ForecastQuery),
    responses(
        (status = 200, description = "What would fire until then, by type and by hour", body = Forecast),
        InvalidField,
        StoreErrors
    )
)]
pub async fn forecast(
    State(s): State<AppState>,
    query: Result<Query<ForecastQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let now = s.clock.now();
    let until = instant("until", &q.until)?
        .ok_or_else(|| ApiError::invalid("until", "required (RFC 3339)"))?;
    if until < now {
        return Err(ApiError::invalid("until", "must not be before now"));
    }
    let rows = timers::forecast(s.store.pool(), until).await?;
    let mut by_type = serde_json::Map::new();
    let mut by_hour: Vec<(i64, serde_json::Map<String, Value>, i64)> = Vec::new();
    let mut total = 0;
    for (event_type, hour, n) in rows {
        total += n;
        let e = by_type.entry(event_type.clone()).or_insert(json!(0));
        *e = json!(e.as_i64().unwrap_or(0) + n);
        match by_hour.last_mut() {
            Some((h, m, c)) if *h == hour => {
                m.insert(event_type, json!(n));
                *c += n;
            }
            _ => {
                let mut m = serde_json::Map::new();
                m.insert(event_type, json!(n));
                by_hour.push((hour, m, n));
            }
        }
    }
    let by_hour: Vec<Value> = by_hour
        .into_iter()
        .map(|(h, m, c)| {
            json!({
                "hour": DateTime::from_timestamp(h * 3600, 0),
                "count": c,
                "by_type": m,
            })
        })
        .collect();
    Ok(Json(
        json!({ "now": now, "until": until, "total": total, "by_type": by_type, "by_hour": by_hour }),
    ))
}

/// `GET /admin/entities/{kind}/{id}/timeline`: everything about one entity in time
/// order: the changes received (its immediate events, with their data), its timers
/// planned, cancelled, skipped and fired (with why), the time-based events, and each
/// event's deliveries with every attempt (status, duration, error, the response's first
/// bytes).
#[utoipa::path(
    get,
    path = "/admin/entities/{kind}/{id}/timeline",
    tag = "admin",
    params(
        ("kind" = String, Path, description = "`reservation`, `order`, `invoice`, `unitRental`, `item`, `contact` or `digest`"),
        ("id" = String, Path, description = "The entity's id"),
    ),
    responses(
        (status = 200, description = "The entity's story in time order", body = Timeline),
        InvalidField,
        NotFound,
        StoreErrors
    )
)]
pub async fn timeline(
    State(s): State<AppState>,
    axum::extract::Path((kind, id)): axum::extract::Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if EntityKind::parse(&kind).is_none() && kind != crate::schedule::digest::ENTITY_KIND {
        return Err(ApiError::invalid(
            "kind",
            "use reservation, order, invoice, unitRental, item, contact or digest",
        ));
    }
    let mut entries: Vec<(DateTime<Utc>, u8, Value)> = Vec::new();
    let events = crate::store::events::for_entity(s.store.pool(), &kind, &id).await?;
    for ev in &events {
        let what = if ev.scheduled_at.is_some() {
            "event.scheduled"
        } else {
            "event.change"
        };
        entries.push((
            ev.created,
            2,
            json!({ "at": ev.created, "what": what, "type": ev.event_type, "event_id": ev.id, "scheduled_at": ev.scheduled_at, "data": ev.data }),
        ));
        // Where each event went: its deliveries, each attempt at its own time.
        for d in crate::store::deliveries::of_event(s.store.pool(), &ev.id).await? {
            for a in crate::store::deliveries::attempts(s.store.pool(), &d.id).await? {
                entries.push((
                    a.started_at,
                    4,
                    json!({
                        "at": a.started_at, "what": "delivery.attempt", "event_id": ev.id,
                        "delivery_id": d.id, "endpoint_id": d.endpoint_id, "attempt": a.number,
                        "status_code": a.status_code, "error_kind": a.error_kind,
                        "error": a.error, "duration_ms": a.duration_ms,
                        "response_excerpt": excerpt(&a.response_body, RESPONSE_EXCERPT_BYTES),
                    }),
                ));
            }
            entries.push((
                d.updated_at,
                5,
                json!({
                    "at": d.updated_at, "what": format!("delivery.{}", d.status), "event_id": ev.id,
                    "delivery_id": d.id, "endpoint_id": d.endpoint_id, "attempts": d.attempts,
                    "next_attempt_at": d.next_attempt_at,
                }),
            ));
        }
    }
    let timers = timers::list(
        s.store.pool(),
        &TimerFilter {
            entity_kind: Some(kind.clone()),
            entity_id: Some(id.clone()),
            limit: 10_000,
            ..Default::default()
        },
    )
    .await?;
    for t in &timers {
        entries.push((
            t.created_at,
            1,
            json!({ "at": t.created_at, "what": "timer.planned", "timer_id": t.id, "type": t.event_type, "rule": t.rule, "fire_at": t.fire_at }),
        ));
        if t.state != TimerState::Pending {
            entries.push((
                t.updated_at,
                3,
                json!({
                    "at": t.updated_at, "what": format!("timer.{}", t.state.as_str()), "timer_id": t.id,
                    "type": t.event_type, "fire_at": t.fire_at, "reason": t.reason, "event_id": t.event_id,
                }),
            ));
        }
    }
    if entries.is_empty() {
        return Err(ApiError::not_found(format!(
            "nothing is known about {kind} {id}"
        )));
    }
    entries.sort_by_key(|(at, order, _)| (*at, *order));
    Ok(Json(json!({
        "entity_kind": kind,
        "entity_id": id,
        "timeline": entries.into_iter().map(|(_, _, v)| v).collect::<Vec<_>>(),
    })))
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

/// `GET /admin/nodes`: every node that ran on this store (newest first), when each was
/// last seen, and how many pending timers each holds a live lease on.
#[utoipa::path(
    get,
    path = "/admin/nodes",
    tag = "admin",
    responses(
        (status = 200, description = "Every node that ran on this store, newest first", body = NodeList),
        StoreErrors
    )
)]
pub async fn nodes(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = s.clock.now();
    let nodes = crate::store::cluster::list(&s.store, now).await?;
    Ok(Json(json!({ "now": now, "nodes": nodes })))
}

/// `GET /admin/endpoints/health`: per endpoint, its state, the share of attempts in the
/// last 24 hours that succeeded, what waits to be sent, and the last error.
#[utoipa::path(
    get,
    path = "/admin/endpoints/health",
    tag = "admin",
    responses(
        (status = 200, description = "Every endpoint's delivery health over the last 24 hours", body = crate::http::openapi::EndpointHealthList),
        StoreErrors
    )
)]
pub async fn endpoint_health(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = s.clock.now();
    let since = now - TimeDelta::hours(24);
    let endpoints = crate::store::deliveries::endpoint_health(s.store.pool(), since).await?;
    Ok(Json(
        json!({ "now": now, "since": since, "endpoints": endpoints }),
    ))
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
