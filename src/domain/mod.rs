//! Domain types: the entities duehook is told about, their legal transitions, the
//! event-type catalogue and the event record. No I/O here: the store persists these
//! types and the HTTP layer translates them.

pub mod catalogue;
pub mod contact;
pub mod endpoint;
pub mod event;
pub mod input;
mod instant;
pub mod item;
pub mod json;
pub mod order;
pub mod reservation;
pub mod unit_rental;

/// Why a change was refused. The HTTP layer maps each variant to a 4xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field's value is not acceptable.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    /// The entity is not in a state that allows this change.
    #[error("{detail}")]
    Conflict { detail: String },
    /// The entity (or one it refers to) does not exist.
    #[error("{detail}")]
    NotFound { detail: String },
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict {
            detail: detail.into(),
        }
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound {
            detail: detail.into(),
        }
    }
}

/// Kinds of entity an event or timer can be about (the prefix of its event type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EntityKind {
    #[serde(rename = "reservation")]
    Reservation,
    #[serde(rename = "order")]
    Order,
    #[serde(rename = "unitRental")]
    UnitRental,
    #[serde(rename = "invoice")]
    Invoice,
    #[serde(rename = "item")]
    Item,
    #[serde(rename = "contact")]
    Contact,
}

impl EntityKind {
    pub const ALL: [EntityKind; 6] = [
        EntityKind::Reservation,
        EntityKind::Order,
        EntityKind::UnitRental,
        EntityKind::Invoice,
        EntityKind::Item,
        EntityKind::Contact,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Reservation => "reservation",
            EntityKind::Order => "order",
            EntityKind::UnitRental => "unitRental",
            EntityKind::Invoice => "invoice",
            EntityKind::Item => "item",
            EntityKind::Contact => "contact",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EntityKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
