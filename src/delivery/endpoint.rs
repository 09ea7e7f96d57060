//! Endpoints: where webhooks go and how they are shaped, signed and retried.
//!
//! This module owns the validation of what a client asks for when it creates or
//! changes an endpoint ([`EndpointInput`], [`EndpointPatch`] → [`Settings`], every
//! refusal naming its field) and which topics the running catalogue knows. The record
//! itself is [`crate::domain::endpoint`].

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::HeaderValue;

use super::guard::DestinationGuard;
use super::render::{Envelope, Format};
use super::retry::{self, RetryPolicy};
use super::sign::{self, Scheme};
use crate::domain::DomainError;
use crate::domain::catalogue::Catalogue;
pub use crate::domain::endpoint::{
    Endpoint, Health, OnExhausted, Ordering, OrderingOnFailure, Settings, topic_matches,
};

/// Longest endpoint name, in characters.
const MAX_NAME_CHARS: usize = 200;
/// Most topics, extra headers and alert addresses an endpoint may have.
const MAX_LIST_LEN: usize = 100;
/// Request timeout bounds, in milliseconds.
const MIN_TIMEOUT_MS: u64 = 100;
const MAX_TIMEOUT_MS: u64 = 300_000;
/// Highest rate limit accepted, in messages per second.
const MAX_RATE_LIMIT: u32 = 10_000;

/// What the delivery pipeline makes of an endpoint.
impl Endpoint {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            schedule: self.settings.retry_schedule.clone(),
            jitter: retry::DEFAULT_JITTER,
        }
    }
}

/// What `POST /v1/endpoints` asks for.
#[derive(Debug)]
pub struct EndpointInput {
    pub name: String,
    pub url: String,
    pub topics: Vec<String>,
    pub format: Option<Format>,
    pub envelope: Option<Envelope>,
    pub signature: Option<SignatureInput>,
    pub secret: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub retry: Option<RetryInput>,
    pub timeout_ms: Option<u64>,
    pub rate_limit: Option<u32>,
    pub alert_emails: Option<Vec<String>>,
    pub ordering: Option<Ordering>,
    pub ordering_on_failure: Option<OrderingOnFailure>,
}

#[derive(Debug, Clone)]
pub struct SignatureInput {
    pub scheme: Scheme,
    pub header: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RetryInput {
    pub max_attempts: Option<u32>,
    pub schedule: Option<String>,
    pub on_exhausted: Option<OnExhausted>,
}

/// What `PATCH /v1/endpoints/{id}` asks for: `None` leaves a setting as it is;
/// `rate_limit: Some(None)` clears the limit.
#[derive(Debug, Default)]
pub struct EndpointPatch {
    pub name: Option<String>,
    pub url: Option<String>,
    pub topics: Option<Vec<String>>,
    pub format: Option<Format>,
    pub envelope: Option<Envelope>,
    pub signature: Option<SignatureInput>,
    pub headers: Option<BTreeMap<String, String>>,
    pub retry: Option<RetryInput>,
    pub timeout_ms: Option<u64>,
    pub rate_limit: Option<Option<u32>>,
    pub alert_emails: Option<Vec<String>>,
    pub ordering: Option<Ordering>,
    pub ordering_on_failure: Option<OrderingOnFailure>,
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> DomainError {
    DomainError::invalid(field, detail)
}

impl EndpointInput {
    /// Validates the input; returns the settings and the secret (generated when none
    /// was given).
    pub fn validate(
        self,
        guard: &DestinationGuard,
        default_timeout_ms: u64,
        catalogue: &Catalogue,
    ) -> Result<(Settings, String), DomainError> {
        let signature = self.signature.unwrap_or(SignatureInput {
            scheme: Scheme::default(),
            header: None,
        });
        let settings = Settings {
            name: self.name,
            url: self.url,
            topics: self.topics,
            format: self.format.unwrap_or_default(),
            envelope: self.envelope.unwrap_or_default(),
            scheme: signature.scheme,
            signature_header: signature.header,
            headers: self.headers.unwrap_or_default(),
            retry_schedule: retry_schedule(self.retry.as_ref(), None)?,
            on_exhausted: self
                .retry
                .as_ref()
                .and_then(|r| r.on_exhausted)
                .unwrap_or_default(),
            timeout_ms: self.timeout_ms.unwrap_or(default_timeout_ms),
            rate_limit: self.rate_limit,
            alert_emails: self.alert_emails.unwrap_or_default(),
            ordering: self.ordering.unwrap_or_default(),
            ordering_on_failure: self.ordering_on_failure.unwrap_or_default(),
        };
        settings.validate(guard, catalogue)?;
        let secret = match self.secret {
            Some(secret) => {
                sign::validate_secret(settings.scheme, &secret)
                    .map_err(|e| invalid("secret", e.to_string()))?;
                secret
            }
            None => sign::generate_secret(),
        };
        Ok((settings, secret))
    }
}

impl EndpointPatch {
    /// `current` with this patch applied, validated; `secret` must still fit the scheme.
    pub fn apply(
        self,
        current: &Settings,
        secret: &str,
        guard: &DestinationGuard,
        catalogue: &Catalogue,
    ) -> Result<Settings, DomainError> {
        let mut s = current.clone();
        if let Some(v) = self.name {
            s.name = v;
        }
        if let Some(v) = self.url {
            s.url = v;
        }
        if let Some(v) = self.topics {
            s.topics = v;
        }
        if let Some(v) = self.format {
            s.format = v;
        }
        if let Some(v) = self.envelope {
            s.envelope = v;
        }
        if let Some(sig) = self.signature {
            s.scheme = sig.scheme;
            s.signature_header = sig.header;
            sign::validate_secret(s.scheme, secret).map_err(|e| {
                invalid(
                    "signature.scheme",
                    format!("the endpoint's secret cannot sign with this scheme ({e}); rotate the secret with one that can"),
                )
            })?;
        }
        if let Some(v) = self.headers {
            s.headers = v;
        }
        if let Some(r) = &self.retry {
            s.retry_schedule = retry_schedule(Some(r), Some(&current.retry_schedule))?;
            if let Some(on) = r.on_exhausted {
                s.on_exhausted = on;
            }
        }
        if let Some(v) = self.timeout_ms {
            s.timeout_ms = v;
        }
        if let Some(v) = self.rate_limit {
            s.rate_limit = v;
        }
        if let Some(v) = self.ordering {
            s.ordering = v;
        }
        if let Some(v) = self.ordering_on_failure {
            s.ordering_on_failure = v;
        }
        if let Some(v) = self.alert_emails {
            s.alert_emails = v;
        }
        s.validate(guard, catalogue)?;
        Ok(s)
    }
}

/// The schedule from a `retry` input: `schedule` (retry delays) or the base (the
/// default schedule, or the current one on PATCH), cut or extended to `max_attempts`.
fn retry_schedule(
    input: Option<&RetryInput>,
    base: Option<&[Duration]>,
) -> Result<Vec<Duration>, DomainError> {
    let base = base.map_or_else(|| retry::DEFAULT_SCHEDULE.to_vec(), <[_]>::to_vec);
    let Some(input) = input else {
        return Ok(base);
    };
    let schedule = match &input.schedule {
        Some(text) => RetryPolicy::parse_schedule(text)
            .map_err(|e| invalid("retry.schedule", e.to_string()))?,
        None => base,
    };
    let mut policy = RetryPolicy {
        schedule,
        jitter: retry::DEFAULT_JITTER,
    };
    if let Some(n) = input.max_attempts {
        if !(1..=retry::MAX_ATTEMPTS).contains(&n) {
            return Err(invalid(
                "retry.max_attempts",
                format!("must be between 1 and {}", retry::MAX_ATTEMPTS),
            ));
        }
        policy = policy.with_max_attempts(n);
    }
    Ok(policy.schedule)
}

impl Settings {
    fn validate(&self, guard: &DestinationGuard, catalogue: &Catalogue) -> Result<(), DomainError> {
        let name = self.name.trim();
        if name.is_empty() || self.name.chars().count() > MAX_NAME_CHARS {
            return Err(invalid(
                "name",
                format!("must be 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        if self.name.chars().any(char::is_control) {
            return Err(invalid("name", "must not contain control characters"));
        }
        guard
            .check_url(&self.url)
            .map_err(|e| invalid("url", e.to_string()))?;
        if self.topics.is_empty() {
            return Err(invalid(
                "topics",
                "name at least one event type, `prefix.*` or `*`",
            ));
        }
        if self.topics.len() > MAX_LIST_LEN {
            return Err(invalid("topics", format!("at most {MAX_LIST_LEN} topics")));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            if !topic_is_known(topic, catalogue) {
                return Err(invalid(
                    format!("topics[{i}]"),
                    format!(
                        "unknown topic {topic:?}: use an event type from GET /v1/event-types, `prefix.*` or `*`"
                    ),
                ));
            }
        }
        if let Some(header) = &self.signature_header {
            if self.scheme == Scheme::StandardWebhooks {
                return Err(invalid(
                    "signature.header",
                    "standard_webhooks always uses the webhook-signature header; name a header only with hex or base64",
                ));
            }
            sign::validate_header_name(header)
                .map_err(|e| invalid("signature.header", e.to_string()))?;
        }
        if self.headers.len() > MAX_LIST_LEN {
            return Err(invalid(
                "headers",
                format!("at most {MAX_LIST_LEN} headers"),
            ));
        }
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            sign::validate_header_name(name).map_err(|e| invalid(&field, e.to_string()))?;
            if self.signature_header.as_deref().is_some_and(|h| {
                h.eq_ignore_ascii_case(name)
                    || format!("{h}{}", sign::PREVIOUS_SUFFIX).eq_ignore_ascii_case(name)
            }) {
                return Err(invalid(&field, "is the signature header"));
            }
            if value.len() > 4096 || HeaderValue::from_str(value).is_err() {
                return Err(invalid(
                    &field,
                    "value must be visible text of at most 4096 bytes, without control characters",
                ));
            }
        }
        if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(invalid(
                "timeout_ms",
                format!("must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS}"),
            ));
        }
        if let Some(r) = self.rate_limit
            && !(1..=MAX_RATE_LIMIT).contains(&r)
        {
            return Err(invalid(
                "rate_limit",
                format!("messages per second, 1 to {MAX_RATE_LIMIT} (null: unlimited)"),
            ));
        }
        if self.alert_emails.len() > MAX_LIST_LEN {
            return Err(invalid(
                "alert_emails",
                format!("at most {MAX_LIST_LEN} addresses"),
            ));
        }
        for (i, email) in self.alert_emails.iter().enumerate() {
            if email.parse::<lettre::Address>().is_err() {
                return Err(invalid(
                    format!("alert_emails[{i}]"),
                    "is not an email address",
                ));
            }
        }
        Ok(())
    }
}

/// Checks that a URL's host does not resolve only to forbidden addresses (a name such
/// as `localhost` or one pointing at 127.0.0.1). A name that does not resolve at all is
/// accepted: DNS may not be set up yet, and the resolver checks again at every send.
pub async fn check_destination(guard: &DestinationGuard, url: &str) -> Result<(), DomainError> {
    let parsed = guard
        .check_url(url)
        .map_err(|e| invalid("url", e.to_string()))?;
    if let Some(url::Host::Domain(host)) = parsed.host()
        && let Err(e @ super::guard::GuardError::NoAllowedAddress { .. }) =
            guard.resolve_allowed(host).await
    {
        return Err(invalid("url", e.to_string()));
    }
    Ok(())
}

/// Whether `topic` names a type of the running catalogue (built-in and configured
/// rules' types), a `prefix.*` wildcard that matches one, or `*`.
pub fn topic_is_known(topic: &str, catalogue: &Catalogue) -> bool {
    topic == "*"
        || catalogue
            .entries()
            .iter()
            .any(|t| t.name == topic || topic_matches(topic, &t.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert!(topic_matches("*", "order.checkout"));
        assert!(topic_matches("order.*", "order.checkout"));
        assert!(topic_matches("unitRental.*", "unitRental.invoice.created"));
        assert!(!topic_matches("order.*", "orders.checkout"));
        assert!(!topic_matches("order.checkout", "order.checkin"));
        let c = Catalogue::new([("order.overdue_3_days", "configured".to_string())]);
        assert!(topic_is_known("order.*", &c));
        assert!(topic_is_known("order.checkout", &c));
        assert!(topic_is_known("order.overdue_3_days", &c));
        assert!(!topic_is_known("nothing.*", &c));
        assert!(!topic_is_known("order.explode", &c));
        assert!(!topic_is_known(".*", &c));
    }

    #[test]
    fn retry_overrides() {
        let five_retries = RetryInput {
            max_attempts: Some(6),
            schedule: None,
            on_exhausted: None,
        };
        assert_eq!(
            retry_schedule(Some(&five_retries), None).map(|s| s.len()),
            Ok(6)
        );
        let custom = RetryInput {
            max_attempts: None,
            schedule: Some("1s,2s".into()),
            on_exhausted: None,
        };
        assert_eq!(
            retry_schedule(Some(&custom), None),
            Ok(vec![
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(2)
            ])
        );
        let bad = RetryInput {
            max_attempts: None,
            schedule: Some("soon".into()),
            on_exhausted: None,
        };
        assert!(retry_schedule(Some(&bad), None).is_err());
    }
}
