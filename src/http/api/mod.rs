//! API bodies: every request and response body of the HTTP API, and the shapes
//! `GET /openapi.json` describes. Each derives its JSON and its schema from one
//! definition, so what the document says is what the routes parse and answer.
//!
//! Requests convert into the services' inputs; answers are built from domain values
//! and store rows. A stored field, a column or a domain type can change without
//! changing the API, and the API can change without touching the store: the
//! conversions here are where the two meet, written out field by field so that a new
//! field on either side is a decision, not an accident.
//!
//! [`responses`] declares the error answers the operations list.

pub mod admin;
pub mod deliveries;
pub mod endpoints;
pub mod ingest;
pub mod operations;
pub mod responses;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;

/// An answer whose JSON objects list their keys in alphabetical order, at every level
/// (it is written through `serde_json::Value`, whose maps are sorted). The endpoint,
/// delivery, admin and health routes answer this way; the ingest routes and
/// `GET /admin/schedule` write their fields in the order the body type declares them.
pub struct Sorted<T>(pub T);

impl<T: Serialize> IntoResponse for Sorted<T> {
    fn into_response(self) -> Response {
        match serde_json::to_value(&self.0) {
            Ok(value) => Json(value).into_response(),
            // Only a map with non-string keys fails here; no body type has one.
            Err(e) => ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the answer could not be written: {e}"),
            )
            .into_response(),
        }
    }
}
