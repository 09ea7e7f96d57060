//! One error type for the HTTP layer, rendered as a JSON problem:
//! `{"error": code, "field": name?, "detail": text}` with a 4xx or 503 status.
//! Inner layers' errors map onto it here and nowhere else.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::DomainError;
use crate::error::ServiceError;
use crate::store::StoreError;

/// Every error answer: a stable machine-readable `error` code, the `field` at fault
/// when there is one, and a human-readable `detail`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "invalid_field", "field": "due_at", "detail": "input contains invalid characters"}))]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// `malformed_json`, `bad_body`, `invalid_field`, `unauthorized`, `not_found`,
    /// `conflict`, `body_too_large`, `unsupported_media_type`, `method_not_allowed`,
    /// `not_settled`, `store_unavailable`, `secret_key` (a sealed secret that the configured `[store] secret_key` cannot open) or `internal`.
    #[schema(value_type = String)]
    pub error: &'static str,
    /// The field at fault (`due_at`, `item_ids[1]`, `body`, `query`…), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            error,
            field: None,
            detail: detail.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail)
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(&self)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was not read: the connection is closed after this
            // answer, and says so, so that no client sends its next request on it.
            res.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        res
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid { field, detail } => ApiError::invalid(field, detail),
            DomainError::Conflict { detail } => ApiError::conflict(detail),
            DomainError::NotFound { detail } => ApiError::not_found(detail),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // Nothing was acknowledged: the transaction rolled back. Say so, and let the
        // client retry; the detail is logged, not returned (it may name internals).
        tracing::error!(error = %e, "store error while handling a request");
        match e {
            StoreError::Sealed(e) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "secret_key",
                format!("{e}; nothing was changed"),
            ),
            StoreError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable; nothing was stored, retry later",
            ),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal store error; nothing was stored",
            ),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Refused(d) => d.into(),
            ServiceError::Store(s) => s.into(),
        }
    }
}
