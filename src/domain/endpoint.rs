//! Endpoints as duehook keeps them: where webhooks go, how they are shaped, signed and
//! retried, and how the endpoint has been doing. The names of formats, envelopes,
//! signature schemes and exhaustion policies are fixed here (they are stored and shown
//! in the API); what each means for a request is the delivery pipeline's.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A name that is not one of the known ones (a stored or configured value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
}

impl UnknownName {
    fn new(what: &'static str, value: &str) -> Self {
        Self {
            what,
            value: value.to_owned(),
        }
    }
}

/// An endpoint as stored.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub id: String,
    pub settings: Settings,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub health: Health,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How an endpoint has been doing lately (see `crate::delivery::health`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// First failed attempt since the last success.
    pub failing_since: Option<DateTime<Utc>>,
    /// Failed attempts in a row.
    pub failed_attempts: i64,
    /// Deliveries failed for good (retries used up) in a row.
    pub failed_deliveries: i64,
    /// While set and in the future, the endpoint's deliveries are held back.
    pub circuit_open_until: Option<DateTime<Utc>>,
    /// Which alert was sent last: `ok`, `failing` or `disabled`.
    pub alert_state: String,
}

/// Everything a client configures about an endpoint, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub name: String,
    pub url: String,
    pub topics: Vec<String>,
    pub format: Format,
    pub envelope: Envelope,
    pub scheme: Scheme,
    pub signature_header: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub retry_schedule: Vec<Duration>,
    pub on_exhausted: OnExhausted,
    pub timeout_ms: u64,
    pub rate_limit: Option<u32>,
    pub alert_emails: Vec<String>,
    pub ordering: Ordering,
    pub ordering_on_failure: OrderingOnFailure,
}

impl Endpoint {
    /// The secrets that sign now, newest first: the previous one only during its
    /// grace period after a rotation.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(prev), Some(until)) = (&self.previous_secret, self.previous_secret_until)
            && now < until
        {
            secrets.push(prev.as_str());
        }
        secrets
    }

    /// Whether an event of `event_type` goes to this endpoint (enabled or not).
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        self.settings
            .topics
            .iter()
            .any(|t| topic_matches(t, event_type))
    }
}

/// What a delivery that used up its attempts does to its endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// The delivery fails; the endpoint is disabled only by the `[delivery]` rules
    /// (Storeganise: "retried 2 more times, then failed").
    #[default]
    Fail,
    /// The delivery fails and the endpoint is disabled at once (Checkfront: "retries up
    /// to 5 times, then the endpoint is disabled").
    Disable,
}

impl OnExhausted {
    pub fn as_str(self) -> &'static str {
        match self {
            OnExhausted::Fail => "fail",
            OnExhausted::Disable => "disable",
        }
    }
}

impl FromStr for OnExhausted {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail" => Ok(OnExhausted::Fail),
            "disable" => Ok(OnExhausted::Disable),
            other => Err(UnknownName::new("on_exhausted", other)),
        }
    }
}

/// In which order an endpoint's deliveries go out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ordering {
    /// Concurrently, each as soon as it can.
    #[default]
    None,
    /// The events of one entity (same kind and id) one after another, in the order they
    /// were written; different entities in parallel.
    Entity,
    /// First in, first out for the whole endpoint.
    Endpoint,
}

/// The ordering key of every delivery of an endpoint that orders by endpoint.
pub const WHOLE_ENDPOINT_KEY: &str = "*";

impl Ordering {
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::Entity => "entity",
            Ordering::Endpoint => "endpoint",
        }
    }

    /// The key a delivery of an event about `entity_kind/entity_id` waits in: its
    /// deliveries go out one after another, in the order their events were written.
    /// `None`: no key, no waiting.
    pub fn key(self, entity_kind: &str, entity_id: &str) -> Option<String> {
        match self {
            Ordering::None => None,
            Ordering::Entity => Some(format!("{entity_kind}/{entity_id}")),
            Ordering::Endpoint => Some(WHOLE_ENDPOINT_KEY.to_string()),
        }
    }
}

impl FromStr for Ordering {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Ordering::None),
            "entity" => Ok(Ordering::Entity),
            "endpoint" => Ok(Ordering::Endpoint),
            other => Err(UnknownName::new("ordering", other)),
        }
    }
}

/// What an ordered key does when its first delivery fails for good.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OrderingOnFailure {
    /// The next delivery of the key goes out (the failed one stays failed, for a retry).
    #[default]
    MoveOn,
    /// The key waits until an operator retries or skips the failed delivery.
    Hold,
}

impl OrderingOnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderingOnFailure::MoveOn => "move_on",
            OrderingOnFailure::Hold => "hold",
        }
    }
}

impl FromStr for OrderingOnFailure {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "move_on" => Ok(OrderingOnFailure::MoveOn),
            "hold" => Ok(OrderingOnFailure::Hold),
            other => Err(UnknownName::new("ordering_on_failure", other)),
        }
    }
}

/// Body format of an endpoint.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Xml,
    Form,
}

impl Format {
    /// The name used in configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Xml => "xml",
            Format::Form => "form",
        }
    }

    /// The `content-type` of bodies in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Xml => "application/xml",
            Format::Form => "application/x-www-form-urlencoded",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "xml" => Ok(Format::Xml),
            "form" => Ok(Format::Form),
            _ => Err(UnknownName::new("format", s)),
        }
    }
}

/// Which keys surround the event data.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// `{"id","type","created","scheduled_at"?,"data"}` (Standard Webhooks
    /// style, the documented default).
    #[default]
    Standard,
    /// `{"id","type","scheduled_at"?,"payload"}` (House Check).
    TypePayload,
    /// `{"event","<entity>","id","created","scheduled_at"?}` (Checkfront).
    EventEntity,
}

impl Envelope {
    /// The name used in configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Envelope::Standard => "standard",
            Envelope::TypePayload => "type_payload",
            Envelope::EventEntity => "event_entity",
        }
    }
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Envelope {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "standard" => Ok(Envelope::Standard),
            "type_payload" => Ok(Envelope::TypePayload),
            "event_entity" => Ok(Envelope::EventEntity),
            _ => Err(UnknownName::new("envelope", s)),
        }
    }
}

/// How an endpoint's requests are signed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// Standard Webhooks (`webhook-signature: v1,<base64>`), the default.
    #[default]
    StandardWebhooks,
    /// Lower-case hex HMAC-SHA256 of the body in a named header.
    Hex,
    /// Base64 HMAC-SHA256 of the body in a named header.
    Base64,
}

impl Scheme {
    /// The name used in configuration and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "standard_webhooks",
            Scheme::Hex => "hex",
            Scheme::Base64 => "base64",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = UnknownName;

    /// Accepts the serde names, case-insensitively, plus `standard` as a
    /// shorter alias of `standard_webhooks`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "standard_webhooks" | "standard" => Ok(Scheme::StandardWebhooks),
            "hex" => Ok(Scheme::Hex),
            "base64" => Ok(Scheme::Base64),
            _ => Err(UnknownName::new("signature scheme", s)),
        }
    }
}

/// Whether a subscription to `topic` covers `event_type`: the same type, `*`, or
/// `prefix.*` for every type that starts with `prefix.`.
pub fn topic_matches(topic: &str, event_type: &str) -> bool {
    if topic == "*" || topic == event_type {
        return true;
    }
    match topic.strip_suffix(".*") {
        Some(prefix) if !prefix.is_empty() => event_type
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        _ => false,
    }
}
