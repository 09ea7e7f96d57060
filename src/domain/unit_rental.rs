//! Self-storage unit rentals (Storeganise's `unitRental`) and their invoices.
//!
//! A rental is `overdue` while at least one of its invoices is unpaid past its due date
//! plus grace; the scheduler sets and clears that flag (`unitRental.markOverdue` /
//! `unitRental.unmarkOverdue`). An invoice is unpaid unless its state is `paid` or `void`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DomainError, input, instant};

/// What `PUT /v1/unit-rentals/{id}` asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnitRentalInput {
    pub contact_id: Option<String>,
    pub unit_id: Option<String>,
    /// The application's own rental state (e.g. `occupied`, `ended`); free text.
    pub state: Option<String>,
    pub timezone: Option<String>,
    /// The application's own fields (a JSON object), returned as given.
    pub data: Option<Value>,
}

impl UnitRentalInput {
    pub fn validate(&self) -> Result<(), DomainError> {
        if let Some(c) = &self.contact_id {
            input::check_id("contact_id", c)?;
        }
        if let Some(u) = &self.unit_id {
            input::check_id("unit_id", u)?;
        }
        if self
            .state
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > 64)
        {
            return Err(DomainError::invalid("state", "must be 1 to 64 characters"));
        }
        input::check_timezone("timezone", self.timezone.as_deref())?;
        input::check_data(&self.data)
    }
}

/// A unit rental as it is stored and as events carry it in `data`. The API answers with
/// the same fields: its body of the same name in `crate::http::api::ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRental {
    pub id: String,
    pub contact_id: Option<String>,
    pub unit_id: Option<String>,
    pub state: Option<String>,
    pub timezone: Option<String>,
    pub overdue: bool,
    pub data: Value,
    #[serde(serialize_with = "instant::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "instant::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl UnitRental {
    pub fn create(id: &str, input: UnitRentalInput, now: DateTime<Utc>) -> Self {
        Self {
            id: id.to_string(),
            contact_id: input.contact_id,
            unit_id: input.unit_id,
            state: input.state,
            timezone: input.timezone,
            overdue: false,
            data: input::data_or_empty(input.data),
            created_at: now,
            updated_at: now,
        }
    }

    pub fn matches(&self, input: &UnitRentalInput) -> bool {
        self.contact_id == input.contact_id
            && self.unit_id == input.unit_id
            && self.state == input.state
            && self.timezone == input.timezone
            && self.data == input::data_or_empty(input.data.clone())
    }

    pub fn update(&mut self, input: UnitRentalInput, now: DateTime<Utc>) {
        let (overdue, created_at) = (self.overdue, self.created_at);
        *self = Self::create(&self.id, input, now);
        self.overdue = overdue;
        self.created_at = created_at;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceState {
    Draft,
    Sent,
    Paid,
    Failed,
    Void,
}

impl InvoiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Sent => "sent",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Void => "void",
        }
    }

    /// Whether money is still owed on an invoice in this state.
    pub fn is_unpaid(self) -> bool {
        !matches!(self, Self::Paid | Self::Void)
    }
}

/// What `PUT /v1/invoices/{id}` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceInput {
    pub unit_rental_id: String,
    pub due_at: DateTime<Utc>,
    pub state: InvoiceState,
    /// The application's own fields (a JSON object), returned as given.
    pub data: Option<Value>,
}

impl InvoiceInput {
    pub fn validate(&self) -> Result<(), DomainError> {
        input::check_id("unit_rental_id", &self.unit_rental_id)?;
        input::check_data(&self.data)
    }
}

/// An invoice as it is stored and as events carry it in `data`. The API answers with
/// the same fields: its body of the same name in `crate::http::api::ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub id: String,
    pub unit_rental_id: String,
    #[serde(serialize_with = "instant::serialize")]
    pub due_at: DateTime<Utc>,
    pub state: InvoiceState,
    pub data: Value,
    #[serde(serialize_with = "instant::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "instant::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl Invoice {
    pub fn create(id: &str, input: InvoiceInput, now: DateTime<Utc>) -> Self {
        Self {
            id: id.to_string(),
            unit_rental_id: input.unit_rental_id,
            due_at: input::millis(input.due_at),
            state: input.state,
            data: input::data_or_empty(input.data),
            created_at: now,
            updated_at: now,
        }
    }

    pub fn matches(&self, input: &InvoiceInput) -> bool {
        self.unit_rental_id == input.unit_rental_id
            && self.due_at == input::millis(input.due_at)
            && self.state == input.state
            && self.data == input::data_or_empty(input.data.clone())
    }

    /// Applies a changed PUT; an invoice cannot move to another rental.
    pub fn update(&mut self, input: InvoiceInput, now: DateTime<Utc>) -> Result<(), DomainError> {
        if input.unit_rental_id != self.unit_rental_id {
            return Err(DomainError::invalid(
                "unit_rental_id",
                format!(
                    "invoice {} belongs to unit rental {} and cannot move",
                    self.id, self.unit_rental_id
                ),
            ));
        }
        let created_at = self.created_at;
        *self = Self::create(&self.id, input, now);
        self.created_at = created_at;
        Ok(())
    }
}
