//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, generated from the
//! handlers' `#[utoipa::path]` attributes and the request and response types.
//!
//! Errors are reusable responses (`#/components/responses/...`) whose body is the
//! [`ApiError`] schema; each operation lists the ones it can answer with. Every
//! operation under `/v1/` and `/admin/` gets the bearer security requirement and the
//! 401 answer here, in one place, so no route can forget them.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

use super::error::ApiError;
use super::{admin, deliveries, endpoints, health, ingest, metrics};
use crate::delivery::endpoint::EndpointView;
use crate::domain::event::Event;
use crate::store::cluster::Node;
use crate::store::deliveries::{Attempt, Delivery};

/// Name of the security scheme every `/v1/` and `/admin/` operation requires.
pub const SECURITY_SCHEME: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "duehook",
        description = "Scheduler, reminder engine and signed webhook sender for booking, \
check-out, self-storage and coworking software.\n\n\
The application reports its entities and changes under `/v1/` (ingest); duehook emits \
immediate and time-based events and delivers them, signed, to the endpoints subscribed \
to them (`/v1/endpoints`, `/v1/deliveries`). `/admin/` inspects the schedule and moves \
a manual clock.\n\n\
Every `/v1/` and `/admin/` route needs `Authorization: Bearer <token>` (`[auth] tokens`; \
`/admin/` takes `[auth] admin_tokens` instead when those are set). Every error is JSON: \
`{\"error\", \"field\"?, \"detail\"}` (schema `ApiError`). Instants are RFC 3339. \
`/v1/endpoints` and `/v1/deliveries` take the admin tokens too (operators manage \
endpoints and retry deliveries, from the console at `/admin/ui` or otherwise)."
    ),
    paths(
        ingest::put_reservation,
        ingest::get_reservation,
        ingest::cancel_reservation,
        ingest::put_order,
        ingest::patch_order,
        ingest::get_order,
        ingest::checkout,
        ingest::checkin,
        ingest::undo_checkout,
        ingest::put_unit_rental,
        ingest::get_unit_rental,
        ingest::put_invoice,
        ingest::get_invoice,
        ingest::put_item,
        ingest::get_item,
        ingest::put_contact,
        ingest::get_contact,
        ingest::post_event,
        ingest::event_types,
        endpoints::create,
        endpoints::list,
        endpoints::get,
        endpoints::patch,
        endpoints::delete,
        endpoints::enable,
        endpoints::disable,
        endpoints::test,
        endpoints::rotate_secret,
        endpoints::secret,
        endpoints::recover,
        deliveries::list,
        deliveries::get,
        deliveries::retry,
        admin::get_clock,
        admin::advance_clock,
        admin::schedule,
        admin::stats,
        admin::forecast,
        admin::nodes,
        admin::endpoint_health,
        admin::timeline,
        health::healthz,
        health::readyz,
        metrics::metrics,
        openapi_json,
    ),
    components(
        schemas(ApiError),
        responses(
            MalformedJson,
            Unauthorized,
            NotFound,
            Conflict,
            BodyTooLarge,
            UnsupportedMediaType,
            InvalidField,
            Internal,
            StoreUnavailable
        )
    ),
    modifiers(&Secured),
    tags(
        (name = "ingest", description = "The application reports its entities and changes."),
        (name = "endpoints", description = "Where webhooks go and how they are shaped, signed and retried."),
        (name = "deliveries", description = "Every webhook sent or to be sent, with its attempts."),
        (name = "admin", description = "The schedule, the nodes and the clock."),
        (name = "operations", description = "Health, readiness, metrics and this document; no token."),
    )
)]
pub struct ApiDoc;

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json().unwrap_or_else(|_| "{}".to_string())
});

/// The OpenAPI document of this API, generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object))
)]
pub async fn openapi_json() -> axum::response::Response {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

/// Adds the bearer scheme, and the requirement and 401 answer to every operation under
/// `/v1/` and `/admin/`.
struct Secured;

impl Modify for Secured {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <token>`: one of `[auth] tokens`; for `/admin/` \
                         one of `[auth] admin_tokens` when that list is set, which also open \
                         `/v1/endpoints` and `/v1/deliveries`.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !(path.starts_with("/v1/") || path.starts_with("/admin/")) {
                continue;
            }
            let operations: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                op.security = Some(vec![SecurityRequirement::new(
                    SECURITY_SCHEME,
                    Vec::<String>::new(),
                )]);
                op.responses
                    .responses
                    .insert("401".to_string(), response_ref::<Unauthorized>());
            }
        }
    }
}

fn response_ref<'a, R: utoipa::ToResponse<'a>>() -> RefOr<Response> {
    RefOr::Ref(Ref::from_response_name(R::response().0))
}

fn error_response(description: &str, example: serde_json::Value) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ApiError::name())))
                .example(Some(example))
                .build(),
        )
        .build()
        .into()
}

/// Declares a reusable error response: a unit type implementing `ToResponse` and, to
/// list it in `responses(...)`, `IntoResponses` with its status code.
macro_rules! error_responses {
    ($($ty:ident = $status:literal, $description:literal, $example:tt;)*) => {$(
        #[doc = $description]
        pub struct $ty;

        impl<'a> utoipa::ToResponse<'a> for $ty {
            fn response() -> (&'a str, RefOr<Response>) {
                (stringify!($ty), error_response($description, serde_json::json!($example)))
            }
        }

        impl IntoResponses for $ty {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([($status.to_string(), response_ref::<$ty>())])
            }
        }
    )*};
}

error_responses! {
    MalformedJson = "400", "The body is not JSON (`malformed_json`) or could not be read (`bad_body`).",
        {"error": "malformed_json", "detail": "body is not valid JSON: EOF while parsing an object at line 1 column 1"};
    Unauthorized = "401", "No bearer token, or one that does not open this route (`unauthorized`).",
        {"error": "unauthorized", "detail": "missing or wrong bearer token (Authorization: Bearer <token>)"};
    NotFound = "404", "Nothing with this id (`not_found`).",
        {"error": "not_found", "detail": "no order o-1"};
    Conflict = "409", "The change is not allowed in the current state (`conflict`).",
        {"error": "conflict", "detail": "order o-1 is open: only a checked-out order can be checked in"};
    BodyTooLarge = "413", "The body is over `[server] max_body_bytes` (`body_too_large`).",
        {"error": "body_too_large", "detail": "request body is over the limit ([server] max_body_bytes)"};
    UnsupportedMediaType = "415", "The body is not sent as `application/json` (`unsupported_media_type`).",
        {"error": "unsupported_media_type", "detail": "send the body as application/json"};
    InvalidField = "422", "A value is not acceptable (`invalid_field`); `field` names it.",
        {"error": "invalid_field", "field": "due_at", "detail": "input contains invalid characters"};
    Internal = "500", "The store failed unexpectedly (`internal`); nothing was stored.",
        {"error": "internal", "detail": "internal store error; nothing was stored"};
    StoreUnavailable = "503", "The store is unreachable (`store_unavailable`); nothing was stored, retry later.",
        {"error": "store_unavailable", "detail": "the store is unavailable; nothing was stored, retry later"};
}

/// The errors of every route taking a JSON body: 400, 413, 415 and 422.
pub struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = MalformedJson::responses();
        all.append(&mut BodyTooLarge::responses());
        all.append(&mut UnsupportedMediaType::responses());
        all.append(&mut InvalidField::responses());
        all
    }
}

/// The errors of every route that reads or writes the store: 500 and 503.
pub struct StoreErrors;

impl IntoResponses for StoreErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = Internal::responses();
        all.append(&mut StoreUnavailable::responses());
        all
    }
}

// Shapes of the answers that handlers build as JSON values. Never constructed: they
// exist to describe those answers in the document.

/// `GET /admin/clock`.
#[derive(ToSchema)]
pub struct ClockView {
    /// `system` or `manual`.
    pub mode: String,
    pub now: DateTime<Utc>,
}

/// `POST /admin/clock/advance`.
#[derive(ToSchema)]
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

/// A configured rule, as `GET /admin/schedule/stats` lists it.
#[derive(ToSchema)]
pub struct RuleView {
    pub name: String,
    /// The entity kind: `reservation`, `order`, `invoice`, `item`…
    pub entity: String,
    #[schema(rename = "type")]
    pub event_type: String,
    /// The offset from the anchor as configured (`-1h`, `+1 day`…).
    pub offset: String,
    /// `reserved`, `checked_out`, `unpaid` or `not_expired`.
    pub condition: Option<String>,
    /// `fire_late`, `skip` or `skip_if_anchor_passed`.
    pub misfire: String,
}

/// `GET /admin/schedule/stats`.
#[derive(ToSchema)]
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

/// One hour of `GET /admin/schedule/forecast`.
#[derive(ToSchema)]
pub struct ForecastHour {
    pub hour: DateTime<Utc>,
    pub count: i64,
    pub by_type: BTreeMap<String, i64>,
}

/// `GET /admin/schedule/forecast`.
#[derive(ToSchema)]
pub struct Forecast {
    pub now: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub total: i64,
    pub by_type: BTreeMap<String, i64>,
    pub by_hour: Vec<ForecastHour>,
}

/// One entry of an entity's timeline.
#[derive(ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// `event.change`, `event.scheduled`, `timer.planned`, `timer.fired`,
    /// `timer.cancelled`, `timer.skipped`, `delivery.attempt`, `delivery.pending`,
    /// `delivery.succeeded` or `delivery.failed`.
    pub what: String,
    #[schema(rename = "type")]
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    pub timer_id: Option<i64>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub fire_at: Option<DateTime<Utc>>,
    pub rule: Option<String>,
    pub reason: Option<String>,
    /// An event's `data`, as delivered.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    pub delivery_id: Option<String>,
    pub endpoint_id: Option<String>,
    /// A `delivery.attempt`'s number.
    pub attempt: Option<i64>,
    /// A `delivery.*` entry's attempts so far.
    pub attempts: Option<i64>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub status_code: Option<i64>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    /// The first 256 bytes of the attempt's response body.
    pub response_excerpt: Option<String>,
}

/// `GET /admin/entities/{kind}/{id}/timeline`.
#[derive(ToSchema)]
pub struct Timeline {
    pub entity_kind: String,
    pub entity_id: String,
    pub timeline: Vec<TimelineEntry>,
}

/// `GET /admin/endpoints/health`.
#[derive(ToSchema)]
pub struct EndpointHealthList {
    pub now: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub endpoints: Vec<crate::store::deliveries::EndpointHealth>,
}

/// `GET /admin/nodes`.
#[derive(ToSchema)]
pub struct NodeList {
    pub now: DateTime<Utc>,
    pub nodes: Vec<Node>,
}

/// `POST /v1/endpoints`: the endpoint and, this once, its signing secret.
#[derive(Serialize, ToSchema)]
pub struct EndpointCreated<'a> {
    #[serde(flatten)]
    pub endpoint: EndpointView<'a>,
    pub secret: String,
}

/// `GET /v1/endpoints`.
#[derive(ToSchema)]
pub struct EndpointList<'a> {
    pub endpoints: Vec<EndpointView<'a>>,
}

/// `DELETE /v1/endpoints/{id}`.
#[derive(ToSchema)]
pub struct EndpointDeleted {
    pub id: String,
    /// Always `true`.
    pub deleted: bool,
}

/// `POST /v1/endpoints/{id}/test`.
#[derive(ToSchema)]
pub struct TestSent {
    pub event_id: String,
    pub delivery_id: String,
}

/// `POST /v1/endpoints/{id}/rotate-secret`.
#[derive(ToSchema)]
pub struct SecretRotated {
    pub id: String,
    pub secret: String,
    /// Until then the previous secret signs too (a second signature).
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// `GET /v1/endpoints/{id}/secret`.
#[derive(ToSchema)]
pub struct EndpointSecret {
    pub id: String,
    pub secret: String,
    /// The previous secret while it still signs, else null.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// `POST /v1/endpoints/{id}/recover`.
#[derive(ToSchema)]
pub struct Recovered {
    pub id: String,
    /// Failed deliveries made due again.
    pub recovered: i64,
}

/// `GET /v1/deliveries`: newest first.
#[derive(ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    /// Pass as `cursor` for the next, older page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/deliveries/{id}`: the delivery, its attempts and its event.
#[derive(Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
    /// The event in the standard envelope (before the endpoint's format and envelope).
    pub event: Option<Event>,
}

/// `GET /healthz`.
#[derive(ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`.
#[derive(ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `ok` or `unreachable`.
    pub store: String,
    /// Migrations this binary knows that the store lacks; null when it cannot tell.
    pub pending_migrations: Option<i64>,
}

/// The filters of `GET /v1/deliveries` (any other parameter is refused with 422).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only this endpoint's deliveries.
    pub endpoint_id: Option<String>,
    /// `pending`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// Only deliveries of this event type.
    pub event_type: Option<String>,
    /// Only deliveries created at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}
