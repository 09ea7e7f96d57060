//! The error answers operations list in the document: reusable responses
//! (`#/components/responses/...`) whose body is the [`ApiError`] schema, and the groups
//! most routes share ([`BodyErrors`], [`StoreErrors`]).

use std::collections::BTreeMap;

use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, ToSchema};

use crate::http::error::ApiError;

/// A reference to the reusable response `R`.
pub fn response_ref<'a, R: utoipa::ToResponse<'a>>() -> RefOr<Response> {
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
    BodyTooLarge = "413", "The body is over its limit (`body_too_large`): `[server] max_batch_bytes` for `POST /v1/batch`, `[server] max_body_bytes` for every other route.",
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
