//! Bodies of the endpoint routes: an endpoint as the API shows it (never with its
//! secrets), what a client sends to create, change, disable or recover one, and the
//! answers of the secret and test routes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::delivery::endpoint::{self as endpoint, Endpoint};
use crate::delivery::retry;
use crate::domain::endpoint as names;

/// Body format of an endpoint.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Xml,
    Form,
}

/// Which keys surround the event data.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, ToSchema)]
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

/// How an endpoint's requests are signed.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, ToSchema)]
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

/// What a delivery that used up its attempts does to its endpoint.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, ToSchema)]
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

/// In which order an endpoint's deliveries go out.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Concurrently, each as soon as it can (the default).
    #[default]
    None,
    /// The events of one entity (same kind and id) one after another, in the order
    /// they were written; different entities in parallel.
    Entity,
    /// First in, first out for the whole endpoint.
    Endpoint,
}

/// What an ordered key does when its first delivery fails for good (its retries used
/// up).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderingOnFailure {
    /// The next delivery of the key goes out; the failed one stays failed, for a retry
    /// (the default).
    #[default]
    MoveOn,
    /// The key waits until an operator retries the failed delivery
    /// (`POST /v1/deliveries/{id}/retry`) or skips it (`POST /v1/deliveries/{id}/skip`).
    Hold,
}

/// Converts between an API name and the domain's name of the same thing, both ways.
macro_rules! same_names {
    ($api:ident <=> $domain:path { $($variant:ident),* $(,)? }) => {
        impl From<$domain> for $api {
            fn from(v: $domain) -> Self {
                use $domain as D;
                match v {
                    $(D::$variant => Self::$variant,)*
                }
            }
        }

        impl From<$api> for $domain {
            fn from(v: $api) -> Self {
                match v {
                    $($api::$variant => Self::$variant,)*
                }
            }
        }
    };
}

same_names!(Format <=> names::Format { Json, Xml, Form });
same_names!(Envelope <=> names::Envelope { Standard, TypePayload, EventEntity });
same_names!(Scheme <=> names::Scheme { StandardWebhooks, Hex, Base64 });
same_names!(OnExhausted <=> names::OnExhausted { Fail, Disable });
same_names!(Ordering <=> names::Ordering { None, Entity, Endpoint });
same_names!(OrderingOnFailure <=> names::OrderingOnFailure { MoveOn, Hold });

/// How an endpoint has been doing lately (see `crate::delivery::health`).
#[derive(Debug, Serialize, ToSchema)]
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

impl From<&names::Health> for Health {
    fn from(h: &names::Health) -> Self {
        let names::Health {
            failing_since,
            failed_attempts,
            failed_deliveries,
            circuit_open_until,
            alert_state,
        } = h;
        Self {
            failing_since: *failing_since,
            failed_attempts: *failed_attempts,
            failed_deliveries: *failed_deliveries,
            circuit_open_until: *circuit_open_until,
            alert_state: alert_state.clone(),
        }
    }
}

// An endpoint as the API shows it: everything but its secrets.
#[derive(Serialize, ToSchema)]
pub struct EndpointView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub url: &'a str,
    pub topics: &'a [String],
    pub format: Format,
    pub envelope: Envelope,
    pub signature: SignatureView<'a>,
    pub headers: &'a BTreeMap<String, String>,
    pub retry: RetryView,
    pub timeout_ms: u64,
    pub rate_limit: Option<u32>,
    pub alert_emails: &'a [String],
    pub ordering: Ordering,
    pub ordering_on_failure: OrderingOnFailure,
    pub enabled: bool,
    pub disabled_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub health: Health,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct SignatureView<'a> {
    pub scheme: Scheme,
    pub header: Option<&'a str>,
}

#[derive(Serialize, ToSchema)]
pub struct RetryView {
    pub max_attempts: u32,
    pub schedule: String,
    pub on_exhausted: OnExhausted,
}

impl<'a> From<&'a Endpoint> for EndpointView<'a> {
    fn from(ep: &'a Endpoint) -> Self {
        let s = &ep.settings;
        EndpointView {
            id: &ep.id,
            name: &s.name,
            url: &s.url,
            topics: &s.topics,
            format: s.format.into(),
            envelope: s.envelope.into(),
            signature: SignatureView {
                scheme: s.scheme.into(),
                header: s.signature_header.as_deref(),
            },
            headers: &s.headers,
            retry: RetryView {
                // The schedule holds one delay per attempt, the first one zero.
                max_attempts: ep.retry_policy().max_attempts(),
                schedule: retry::format_schedule(&s.retry_schedule),
                on_exhausted: s.on_exhausted.into(),
            },
            timeout_ms: s.timeout_ms,
            rate_limit: s.rate_limit,
            alert_emails: &s.alert_emails,
            ordering: s.ordering.into(),
            ordering_on_failure: s.ordering_on_failure.into(),
            enabled: ep.enabled,
            disabled_reason: ep.disabled_reason.as_deref(),
            previous_secret_expires_at: ep.previous_secret_until,
            health: (&ep.health).into(),
            created_at: ep.created_at,
            updated_at: ep.updated_at,
        }
    }
}

/// `POST /v1/endpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    pub name: String,
    pub url: String,
    pub topics: Vec<String>,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    pub envelope: Option<Envelope>,
    #[serde(default)]
    pub signature: Option<SignatureInput>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub retry: Option<RetryInput>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub rate_limit: Option<u32>,
    #[serde(default)]
    pub alert_emails: Option<Vec<String>>,
    /// In which order the endpoint's deliveries go out (default `none`).
    #[serde(default)]
    pub ordering: Option<Ordering>,
    /// What an ordered key does when its first delivery fails for good (default
    /// `move_on`).
    #[serde(default)]
    pub ordering_on_failure: Option<OrderingOnFailure>,
}

impl From<EndpointInput> for endpoint::EndpointInput {
    fn from(b: EndpointInput) -> Self {
        let EndpointInput {
            name,
            url,
            topics,
            format,
            envelope,
            signature,
            secret,
            headers,
            retry,
            timeout_ms,
            rate_limit,
            alert_emails,
            ordering,
            ordering_on_failure,
        } = b;
        Self {
            name,
            url,
            topics,
            format: format.map(Into::into),
            envelope: envelope.map(Into::into),
            signature: signature.map(Into::into),
            secret,
            headers,
            retry: retry.map(Into::into),
            timeout_ms,
            rate_limit,
            alert_emails,
            ordering: ordering.map(Into::into),
            ordering_on_failure: ordering_on_failure.map(Into::into),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureInput {
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default)]
    pub header: Option<String>,
}

impl From<SignatureInput> for endpoint::SignatureInput {
    fn from(b: SignatureInput) -> Self {
        Self {
            scheme: b.scheme.into(),
            header: b.header,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryInput {
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub on_exhausted: Option<OnExhausted>,
}

impl From<RetryInput> for endpoint::RetryInput {
    fn from(b: RetryInput) -> Self {
        Self {
            max_attempts: b.max_attempts,
            schedule: b.schedule,
            on_exhausted: b.on_exhausted.map(Into::into),
        }
    }
}

/// `PATCH /v1/endpoints/{id}`: every field optional; `null` clears `rate_limit`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    pub envelope: Option<Envelope>,
    #[serde(default)]
    pub signature: Option<SignatureInput>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub retry: Option<RetryInput>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    pub rate_limit: Option<Option<u32>>,
    #[serde(default)]
    pub alert_emails: Option<Vec<String>>,
    /// Applies to deliveries created from now on; those already waiting keep the order
    /// they were created with.
    #[serde(default)]
    pub ordering: Option<Ordering>,
    #[serde(default)]
    pub ordering_on_failure: Option<OrderingOnFailure>,
}

/// Tells a present `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl From<EndpointPatch> for endpoint::EndpointPatch {
    fn from(b: EndpointPatch) -> Self {
        let EndpointPatch {
            name,
            url,
            topics,
            format,
            envelope,
            signature,
            headers,
            retry,
            timeout_ms,
            rate_limit,
            alert_emails,
            ordering,
            ordering_on_failure,
        } = b;
        Self {
            name,
            url,
            topics,
            format: format.map(Into::into),
            envelope: envelope.map(Into::into),
            signature: signature.map(Into::into),
            headers,
            retry: retry.map(Into::into),
            timeout_ms,
            rate_limit,
            alert_emails,
            ordering: ordering.map(Into::into),
            ordering_on_failure: ordering_on_failure.map(Into::into),
        }
    }
}

/// `POST /v1/endpoints`: the endpoint and, this once, its signing secret.
#[derive(Serialize, ToSchema)]
pub struct EndpointCreated<'a> {
    #[serde(flatten)]
    pub endpoint: EndpointView<'a>,
    pub secret: String,
}

/// `GET /v1/endpoints`.
#[derive(Serialize, ToSchema)]
pub struct EndpointList<'a> {
    pub endpoints: Vec<EndpointView<'a>>,
}

/// `DELETE /v1/endpoints/{id}`.
#[derive(Serialize, ToSchema)]
pub struct EndpointDeleted {
    pub id: String,
    /// Always `true`.
    pub deleted: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableInput {
    /// Shown as `disabled_reason` (default "disabled by an operator"); at most 500
    /// characters.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/endpoints/{id}/test`.
#[derive(Serialize, ToSchema)]
pub struct TestSent {
    pub event_id: String,
    pub delivery_id: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateInput {
    /// The new secret (generated when absent); it must suit the endpoint's scheme.
    #[serde(default)]
    pub secret: Option<String>,
    /// How long the previous secret keeps signing beside the new one (at most 30 days;
    /// default `[delivery] rotation_grace_seconds`).
    #[serde(default)]
    pub grace_seconds: Option<u64>,
}

/// `POST /v1/endpoints/{id}/rotate-secret`.
#[derive(Serialize, ToSchema)]
pub struct SecretRotated {
    pub id: String,
    pub secret: String,
    /// Until then the previous secret signs too (a second signature).
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// `GET /v1/endpoints/{id}/secret`.
#[derive(Serialize, ToSchema)]
pub struct EndpointSecret {
    pub id: String,
    pub secret: String,
    /// The previous secret while it still signs, else null.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverInput {
    /// Failed deliveries created at or after this instant…
    pub since: DateTime<Utc>,
    /// …and before this one (default now).
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// `POST /v1/endpoints/{id}/recover`.
#[derive(Serialize, ToSchema)]
pub struct Recovered {
    pub id: String,
    /// Failed deliveries made due again.
    #[schema(value_type = i64)]
    pub recovered: u64,
}
