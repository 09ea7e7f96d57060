//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, assembled from the
//! handlers' `#[utoipa::path]` attributes, which name the body types of
//! [`super::api`].
//!
//! Errors are reusable responses (`#/components/responses/...`, declared in
//! [`super::api::responses`]) whose body is the [`ApiError`] schema; each operation
//! lists the ones it can answer with. Every operation under `/v1/` and `/admin/` gets
//! the bearer security requirement and the 401 answer here, in one place, so no route
//! can forget them.

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api::responses::{
    BodyTooLarge, Conflict, Internal, InvalidField, MalformedJson, NotFound, StoreUnavailable,
    Unauthorized, UnsupportedMediaType, response_ref,
};
use super::error::ApiError;
use super::{admin, batch, deliveries, endpoints, health, ingest, metrics};

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
        batch::batch,
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
        deliveries::skip,
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
