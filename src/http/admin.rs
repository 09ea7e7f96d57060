//! Admin routes (`/admin/*`): the manual clock and schedule inspection.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, TimeDelta, Utc};

use super::AppState;
use super::api::Sorted;
use super::api::admin::{
    AdvanceBody, ClockAdvanced, ClockView, EndpointHealth, EndpointHealthList, Forecast,
    ForecastQuery, Node, NodeList, RuleView, SchedulePage, ScheduleQuery, ScheduleStats, Timeline,
    TimelineEntry, is_timer_kind,
};
use super::api::responses::{BodyErrors, Internal, InvalidField, NotFound, StoreErrors};
use super::error::ApiError;
use super::json::JsonBody;
use crate::schedule::advance::{AdvanceError, Workers, live_through};
use crate::store::timers::{self, TimerFilter, TimerState};

/// `GET /admin/clock`
#[utoipa::path(
    get,
    path = "/admin/clock",
    tag = "admin",
    responses((status = 200, description = "The clock's mode and current instant", body = ClockView))
)]
pub async fn get_clock(State(s): State<AppState>) -> Sorted<ClockView> {
    Sorted(ClockView {
        mode: s.clock.mode().to_string(),
        now: s.clock.now(),
    })
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
) -> Result<Sorted<ClockAdvanced>, ApiError> {
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
    Ok(Sorted(ClockAdvanced {
        mode: "manual".to_string(),
        now: clock_now(&s),
        from: advanced.from,
        steps: advanced.steps,
    }))
}

fn clock_now(s: &AppState) -> DateTime<Utc> {
    s.clock.now()
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
    let filter = q.filter()?;
    let timers = timers::list(&s.store, &filter).await?;
    Ok(Json(SchedulePage::new(timers, &filter)))
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
pub async fn stats(State(s): State<AppState>) -> Result<Sorted<ScheduleStats>, ApiError> {
    let now = s.clock.now();
    let by_state = timers::count_by_state(s.store.pool()).await?;
    let oldest_due = timers::list(
        &s.store,
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
    Ok(Sorted(ScheduleStats {
        now,
        clock: s.clock.mode().to_string(),
        timers: by_state.into_iter().collect(),
        in_wheel: d.in_wheel.load(Ordering::Relaxed),
        wheel_bytes: d.wheel_bytes.load(Ordering::Relaxed),
        horizon_seconds: s.planner.horizon.num_seconds(),
        next_fire_at: next_pending,
        lag_ms,
        fired_since_start: d.fired.load(Ordering::Relaxed),
        fired_late_since_start: d.late.load(Ordering::Relaxed),
        cancelled_at_fire_since_start: d.cancelled.load(Ordering::Relaxed),
        skipped_since_start: d.skipped.load(Ordering::Relaxed),
        rules: s.planner.rules.iter().map(RuleView::from).collect(),
    }))
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
) -> Result<Sorted<Forecast>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let now = s.clock.now();
    let until = q.until(now)?;
    let rows = timers::forecast(s.store.pool(), until).await?;
    Ok(Sorted(Forecast::new(now, until, rows)))
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
) -> Result<Sorted<Timeline>, ApiError> {
    if !is_timer_kind(&kind) {
        return Err(ApiError::invalid(
            "kind",
            "use reservation, order, invoice, unitRental, item, contact or digest",
        ));
    }
    // Each entry with its rank among entries at the same instant: timers planned, then
    // events, then timers fired, cancelled or skipped, then delivery attempts, then
    // where the deliveries stand.
    let mut entries: Vec<(u8, TimelineEntry)> = Vec::new();
    let events = crate::store::events::for_entity(s.store.pool(), &kind, &id).await?;
    for ev in &events {
        entries.push((2, TimelineEntry::event(ev)));
        // Where each event went: its deliveries, each attempt at its own time.
        for d in crate::store::deliveries::of_event(s.store.pool(), &ev.id).await? {
            for a in crate::store::deliveries::attempts(s.store.pool(), &d.id).await? {
                entries.push((4, TimelineEntry::attempt(&ev.id, &d, &a)));
            }
            entries.push((5, TimelineEntry::delivery(&ev.id, &d)));
        }
    }
    let timers = timers::list(
        &s.store,
        &TimerFilter {
            entity_kind: Some(kind.clone()),
            entity_id: Some(id.clone()),
            limit: 10_000,
            ..Default::default()
        },
    )
    .await?;
    for t in &timers {
        entries.push((1, TimelineEntry::timer_planned(t)));
        if t.state != TimerState::Pending {
            entries.push((3, TimelineEntry::timer_settled(t)));
        }
    }
    if entries.is_empty() {
        return Err(ApiError::not_found(format!(
            "nothing is known about {kind} {id}"
        )));
    }
    entries.sort_by_key(|(rank, entry)| (entry.at, *rank));
    Ok(Sorted(Timeline {
        entity_kind: kind,
        entity_id: id,
        timeline: entries.into_iter().map(|(_, entry)| entry).collect(),
    }))
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
pub async fn nodes(State(s): State<AppState>) -> Result<Sorted<NodeList>, ApiError> {
    let now = s.clock.now();
    let nodes = crate::store::cluster::list(&s.store, now).await?;
    Ok(Sorted(NodeList {
        now,
        nodes: nodes.into_iter().map(Node::from).collect(),
    }))
}

/// `GET /admin/endpoints/health`: per endpoint, its state, the share of attempts in the
/// last 24 hours that succeeded, what waits to be sent, and the last error.
#[utoipa::path(
    get,
    path = "/admin/endpoints/health",
    tag = "admin",
    responses(
        (status = 200, description = "Every endpoint's delivery health over the last 24 hours", body = EndpointHealthList),
        StoreErrors
    )
)]
pub async fn endpoint_health(
    State(s): State<AppState>,
) -> Result<Sorted<EndpointHealthList>, ApiError> {
    let now = s.clock.now();
    let since = now - TimeDelta::hours(24);
    let endpoints = crate::store::deliveries::endpoint_health(s.store.pool(), since).await?;
    Ok(Sorted(EndpointHealthList {
        now,
        since,
        endpoints: endpoints.into_iter().map(EndpointHealth::from).collect(),
    }))
}
