//! Items: equipment that may expire (a certificate, an inspection) at `expires_at`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DomainError, input, instant};

/// What `PUT /v1/items/{id}` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemInput {
    pub name: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub timezone: Option<String>,
    /// The application's own fields (a JSON object), returned as given.
    pub data: Option<Value>,
}

impl ItemInput {
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.name.trim().is_empty() || self.name.len() > 500 {
            return Err(DomainError::invalid("name", "must be 1 to 500 characters"));
        }
        input::check_timezone("timezone", self.timezone.as_deref())?;
        input::check_data(&self.data)
    }
}

/// An item as it is stored and as events carry it in `data`. The API answers with the
/// same fields: its body of the same name in `crate::http::api::ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "instant::serialize_option")]
    pub expires_at: Option<DateTime<Utc>>,
    pub timezone: Option<String>,
    /// Set by the scheduler when `expires_at` passes (`item.expire`).
    pub expired: bool,
    pub data: Value,
    #[serde(serialize_with = "instant::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "instant::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl Item {
    pub fn create(id: &str, input: ItemInput, now: DateTime<Utc>) -> Self {
        Self {
            id: id.to_string(),
            name: input.name,
            expires_at: input.expires_at.map(input::millis),
            timezone: input.timezone,
            expired: false,
            data: input::data_or_empty(input.data),
            created_at: now,
            updated_at: now,
        }
    }

    pub fn matches(&self, input: &ItemInput) -> bool {
        self.name == input.name
            && self.expires_at == input.expires_at.map(input::millis)
            && self.timezone == input.timezone
            && self.data == input::data_or_empty(input.data.clone())
    }

    pub fn update(&mut self, input: ItemInput, now: DateTime<Utc>) {
        let (expired, created_at) = (self.expired, self.created_at);
        *self = Self::create(&self.id, input, now);
        self.expired = expired;
        self.created_at = created_at;
    }
}
