//! Reservations: equipment or a booking reserved for a contact from `starts_at`
//! (the pickup) to `ends_at`. A reservation is `reserved` until it is cancelled or
//! picked up (an order that refers to it is checked out).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DomainError, input, instant};

/// What `PUT /v1/reservations/{id}` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservationInput {
    pub contact_id: String,
    pub item_ids: Vec<String>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub timezone: Option<String>,
    /// The application's own fields (a JSON object), returned as given.
    pub data: Option<Value>,
}

impl ReservationInput {
    pub fn validate(&self) -> Result<(), DomainError> {
        input::check_id("contact_id", &self.contact_id)?;
        input::check_ids("item_ids", &self.item_ids)?;
        input::check_timezone("timezone", self.timezone.as_deref())?;
        input::check_data(&self.data)?;
        if self.ends_at <= self.starts_at {
            return Err(DomainError::invalid("ends_at", "must be after starts_at"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    Reserved,
    Cancelled,
    PickedUp,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Cancelled => "cancelled",
            Self::PickedUp => "picked_up",
        }
    }
}

/// A reservation as it is stored and as events carry it in `data`. The API answers with
/// the same fields: its body of the same name in `crate::http::api::ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub contact_id: String,
    pub item_ids: Vec<String>,
    #[serde(serialize_with = "instant::serialize")]
    pub starts_at: DateTime<Utc>,
    #[serde(serialize_with = "instant::serialize")]
    pub ends_at: DateTime<Utc>,
    pub timezone: Option<String>,
    pub status: ReservationStatus,
    pub data: Value,
    #[serde(serialize_with = "instant::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "instant::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl Reservation {
    pub fn create(id: &str, input: ReservationInput, now: DateTime<Utc>) -> Self {
        Self {
            id: id.to_string(),
            contact_id: input.contact_id,
            item_ids: input.item_ids,
            starts_at: input::millis(input.starts_at),
            ends_at: input::millis(input.ends_at),
            timezone: input.timezone,
            status: ReservationStatus::Reserved,
            data: input::data_or_empty(input.data),
            created_at: now,
            updated_at: now,
        }
    }

    /// True when `input` would change nothing (an idempotent repeat).
    pub fn matches(&self, input: &ReservationInput) -> bool {
        self.contact_id == input.contact_id
            && self.item_ids == input.item_ids
            && self.starts_at == input::millis(input.starts_at)
            && self.ends_at == input::millis(input.ends_at)
            && self.timezone == input.timezone
            && self.data == input::data_or_empty(input.data.clone())
    }

    /// Applies a changed PUT. Only a reservation still `reserved` can change.
    pub fn update(
        &mut self,
        input: ReservationInput,
        now: DateTime<Utc>,
    ) -> Result<(), DomainError> {
        if self.status != ReservationStatus::Reserved {
            return Err(DomainError::conflict(format!(
                "reservation {} is {} and can no longer change",
                self.id,
                self.status.as_str()
            )));
        }
        let status = self.status;
        let created_at = self.created_at;
        *self = Self::create(&self.id, input, now);
        self.status = status;
        self.created_at = created_at;
        Ok(())
    }

    pub fn cancel(&mut self, now: DateTime<Utc>) -> Result<(), DomainError> {
        match self.status {
            ReservationStatus::Reserved => {
                self.status = ReservationStatus::Cancelled;
                self.updated_at = now;
                Ok(())
            }
            other => Err(DomainError::conflict(format!(
                "reservation {} is {} and cannot be cancelled",
                self.id,
                other.as_str()
            ))),
        }
    }

    /// An order made from this reservation was checked out.
    pub fn pick_up(&mut self, now: DateTime<Utc>) {
        if self.status == ReservationStatus::Reserved {
            self.status = ReservationStatus::PickedUp;
            self.updated_at = now;
        }
    }
}
