//! The error of the service layer (ingest, endpoints and deliveries): a refusal the
//! client can act on, or the store failing. The HTTP layer maps each to its status.

use crate::domain::DomainError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Refused: a field's value, the entity's state, or something missing.
    #[error(transparent)]
    Refused(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
