//! Contacts: the people who reserve and check out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DomainError, input, instant};

/// What `PUT /v1/contacts/{id}` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactInput {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub timezone: Option<String>,
    /// The application's own fields (a JSON object), returned as given.
    pub data: Option<Value>,
}

impl ContactInput {
    pub fn validate(&self) -> Result<(), DomainError> {
        for (field, value) in [
            ("name", &self.name),
            ("email", &self.email),
            ("phone", &self.phone),
        ] {
            if value.as_ref().is_some_and(|v| v.len() > 500) {
                return Err(DomainError::invalid(
                    field,
                    "must be at most 500 characters",
                ));
            }
        }
        if let Some(email) = &self.email
            && !email.contains('@')
        {
            return Err(DomainError::invalid("email", "is not an e-mail address"));
        }
        input::check_timezone("timezone", self.timezone.as_deref())?;
        input::check_data(&self.data)
    }
}

/// A contact as it is stored and as events carry it in `data`. The API answers with the
/// same fields: its body of the same name in `crate::http::api::ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub timezone: Option<String>,
    pub data: Value,
    #[serde(serialize_with = "instant::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "instant::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl Contact {
    pub fn create(id: &str, input: ContactInput, now: DateTime<Utc>) -> Self {
        Self {
            id: id.to_string(),
            name: input.name,
            email: input.email,
            phone: input.phone,
            timezone: input.timezone,
            data: input::data_or_empty(input.data),
            created_at: now,
            updated_at: now,
        }
    }

    pub fn matches(&self, input: &ContactInput) -> bool {
        self.name == input.name
            && self.email == input.email
            && self.phone == input.phone
            && self.timezone == input.timezone
            && self.data == input::data_or_empty(input.data.clone())
    }

    pub fn update(&mut self, input: ContactInput, now: DateTime<Utc>) {
        let created_at = self.created_at;
        *self = Self::create(&self.id, input, now);
        self.created_at = created_at;
    }
}
