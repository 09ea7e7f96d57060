//! Bodies of the open operational routes: liveness and readiness.

use serde::Serialize;
use utoipa::ToSchema;

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `ok` or `unreachable`.
    pub store: String,
    /// Migrations this binary knows that the store lacks; null when it cannot tell.
    #[schema(value_type = Option<i64>)]
    pub pending_migrations: Option<usize>,
}
