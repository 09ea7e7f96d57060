//! The event record: what goes into the outbox and, rendered, onto the wire.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// A new event, before it is stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: String,
    pub entity_kind: String,
    pub entity_id: String,
    /// The event's `data`, as the JSON text that is stored and sent.
    pub data: Box<RawValue>,
    /// For a time-based event: the instant its timer was due.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// For a time-based event: the timer that produced it (one event per timer).
    pub timer_id: Option<i64>,
}

impl NewEvent {
    /// An event the application posted: `data` is its JSON text, already checked
    /// ([`super::json::posted_entity_id`]), kept in its own key order, compacted.
    pub fn posted(event_type: &str, entity_kind: &str, entity_id: String, data: &RawValue) -> Self {
        Self {
            event_type: event_type.to_string(),
            entity_kind: entity_kind.to_string(),
            entity_id,
            data: super::json::compact(data),
            scheduled_at: None,
            timer_id: None,
        }
    }

    /// An event caused by a change, carrying `data`.
    pub fn immediate(
        event_type: &str,
        entity_kind: &str,
        entity_id: &str,
        data: &impl Serialize,
    ) -> Self {
        Self {
            event_type: event_type.to_string(),
            entity_kind: entity_kind.to_string(),
            entity_id: entity_id.to_string(),
            data: json_text(data),
            scheduled_at: None,
            timer_id: None,
        }
    }
}

/// `data` as JSON text. Serialising our own plain structs and JSON values cannot fail;
/// `null` keeps the function total.
pub fn json_text(data: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(data).unwrap_or_else(|_| null())
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_string()).expect("`null` is JSON")
}

/// A stored event: what the default wire envelope shows (`id`, `type`, `created`,
/// `scheduled_at`, `data`) and where it sits in the outbox (`seq`, its entity).
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// The JSON text stored and sent, as [`NewEvent::data`].
    pub data: Box<RawValue>,
    pub seq: i64,
    pub entity_kind: String,
    pub entity_id: String,
}

impl Event {
    /// `data` read into a JSON value (`null` if the stored text is not one).
    pub fn data_value(&self) -> Value {
        serde_json::from_str(self.data.get()).unwrap_or(Value::Null)
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.event_type == other.event_type
            && self.created == other.created
            && self.scheduled_at == other.scheduled_at
            && self.data.get() == other.data.get()
            && self.seq == other.seq
            && self.entity_kind == other.entity_kind
            && self.entity_id == other.entity_id
    }
}

/// A fresh event id: `evt_` and a time-ordered UUID (v7) stamped with `now` from the
/// service's clock (not the wall clock), so ids sort by creation even on a manual clock.
pub fn new_event_id(now: DateTime<Utc>) -> String {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        now.timestamp().max(0) as u64,
        now.timestamp_subsec_nanos(),
    );
    format!("evt_{}", uuid::Uuid::new_v7(ts).simple())
}
