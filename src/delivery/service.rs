//! The endpoint and delivery commands of the API, each one transaction: create, change,
//! delete, enable and disable an endpoint, send it a test event, rotate its secret,
//! recover its failed deliveries, retry one delivery; and the reads that go with them.
//! The HTTP layer only translates to and from these.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::endpoint::{Endpoint, EndpointInput, EndpointPatch, check_destination};
use super::guard::DestinationGuard;
use super::sign;
use crate::clock::SharedClock;
use crate::config::DeliveryConfig;
use crate::domain::DomainError;
use crate::domain::catalogue::Catalogue;
use crate::domain::event::{Event, NewEvent};
use crate::error::ServiceError;
use crate::outbox::Outbox;
use crate::store::deliveries::{self, Attempt, Delivery, Filter};
use crate::store::{Store, endpoints, events};

/// Event type of the events sent by [`Endpoints::test`].
pub const TEST_EVENT_TYPE: &str = "webhook.test";
/// Longest rotation grace period accepted, in seconds (30 days).
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;
/// Longest reason an operator may give for disabling an endpoint, in characters.
const MAX_REASON_CHARS: usize = 500;

type Result<T> = std::result::Result<T, ServiceError>;

/// The endpoints and their deliveries, as the API manages them.
#[derive(Clone)]
pub struct Endpoints {
    store: Store,
    clock: SharedClock,
    outbox: Arc<Outbox>,
    guard: Arc<DestinationGuard>,
    config: Arc<DeliveryConfig>,
    catalogue: Arc<Catalogue>,
}

/// An endpoint's signing secrets in plain text.
pub struct Secrets {
    pub secret: String,
    /// The previous secret, while it still signs beside the new one.
    pub previous: Option<(String, DateTime<Utc>)>,
}

/// A delivery with its attempts and its event.
pub struct DeliveryDetail {
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
    pub event: Option<Event>,
}

fn no_endpoint(id: &str) -> ServiceError {
    DomainError::not_found(format!("no endpoint {id:?}")).into()
}

impl Endpoints {
    pub fn new(
        store: Store,
        clock: SharedClock,
        outbox: Arc<Outbox>,
        guard: Arc<DestinationGuard>,
        config: Arc<DeliveryConfig>,
        catalogue: Arc<Catalogue>,
    ) -> Self {
        Self {
            store,
            clock,
            outbox,
            guard,
            config,
            catalogue,
        }
    }

    /// Creates an endpoint; returns it with its secret (generated when none was given).
    pub async fn create(&self, input: EndpointInput) -> Result<(Endpoint, String)> {
        let (settings, secret) =
            input.validate(&self.guard, self.config.default_timeout_ms, &self.catalogue)?;
        check_destination(&self.guard, &settings.url).await?;
        let now = self.clock.now();
        let id = endpoints::new_id();
        let mut tx = self.store.begin().await?;
        endpoints::insert(&mut tx, &id, &settings, &self.store.seal(&secret), now).await?;
        tx.commit().await?;
        let ep = self.get(&id).await?;
        // Only the host: some receivers put a token in the URL's path or query.
        let host = url::Url::parse(&ep.settings.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        tracing::info!(endpoint = %id, %host, "endpoint created");
        Ok((ep, secret))
    }

    pub async fn list(&self) -> Result<Vec<Endpoint>> {
        Ok(endpoints::list(self.store.pool()).await?)
    }

    pub async fn get(&self, id: &str) -> Result<Endpoint> {
        endpoints::get(self.store.pool(), id)
            .await?
            .ok_or_else(|| no_endpoint(id))
    }

    pub async fn patch(&self, id: &str, patch: EndpointPatch) -> Result<Endpoint> {
        // Resolving a name can take a while: not inside the write transaction.
        if let Some(url) = &patch.url {
            check_destination(&self.guard, url).await?;
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let current = endpoints::get_locked(&mut tx, id)
            .await?
            .ok_or_else(|| no_endpoint(id))?;
        let settings = patch.apply(
            &current.settings,
            &self.store.open_secret(&current.secret)?,
            &self.guard,
            &self.catalogue,
        )?;
        endpoints::update_settings(&mut tx, id, &settings, now).await?;
        tx.commit().await?;
        // A new rate limit or timeout may let held deliveries go.
        self.outbox.requeued();
        self.get(id).await
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        let mut tx = self.store.begin().await?;
        if !endpoints::delete(&mut tx, id).await? {
            return Err(no_endpoint(id));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Enables the endpoint and resets its health; its due deliveries go out now.
    pub async fn enable(&self, id: &str) -> Result<Endpoint> {
        let mut tx = self.store.begin().await?;
        if !endpoints::enable(&mut tx, id, self.clock.now()).await? {
            return Err(no_endpoint(id));
        }
        tx.commit().await?;
        self.outbox.requeued();
        self.get(id).await
    }

    /// Disables the endpoint: nothing is sent to it until it is enabled.
    pub async fn disable(&self, id: &str, reason: Option<String>) -> Result<Endpoint> {
        let reason = reason.unwrap_or_else(|| "disabled by an operator".into());
        if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                "reason",
                format!("at most {MAX_REASON_CHARS} characters, without control characters"),
            )
            .into());
        }
        let mut tx = self.store.begin().await?;
        if !endpoints::disable(&mut tx, id, &reason, self.clock.now()).await? {
            return Err(no_endpoint(id));
        }
        tx.commit().await?;
        self.get(id).await
    }

    /// Sends a `webhook.test` event to this endpoint only (whatever its topics),
    /// through the outbox like any event: signed, retried and recorded like any
    /// delivery. Returns the event's and the delivery's ids.
    pub async fn test(&self, id: &str) -> Result<(String, String)> {
        let ep = self.get(id).await?;
        if !ep.enabled {
            return Err(DomainError::conflict(
                "the endpoint is disabled; enable it first (POST /v1/endpoints/{id}/enable)",
            )
            .into());
        }
        let now = self.clock.now();
        let ev = NewEvent::immediate(
            TEST_EVENT_TYPE,
            "endpoint",
            id,
            &json!({
                "id": id,
                "name": ep.settings.name,
                "message": "This is a test webhook from duehook.",
            }),
        );
        let mut tx = self.store.begin().await?;
        let (written, delivery) = self.outbox.write_to(&mut tx, &ev, id, now).await?;
        tx.commit().await?;
        let event = written.id(0).unwrap_or_default().to_string();
        written.committed();
        Ok((event, delivery))
    }

    /// A new secret signs from now on (generated when none is given; it must suit the
    /// endpoint's scheme); the previous one keeps signing beside it for `grace_seconds`
    /// (default `[delivery] rotation_grace_seconds`). Returns the new secret and when
    /// the previous one stops signing.
    pub async fn rotate_secret(
        &self,
        id: &str,
        secret: Option<String>,
        grace_seconds: Option<u64>,
    ) -> Result<(String, DateTime<Utc>)> {
        let grace = grace_seconds.unwrap_or(self.config.rotation_grace_seconds);
        if grace > MAX_GRACE_SECONDS {
            return Err(DomainError::invalid(
                "grace_seconds",
                format!("at most {MAX_GRACE_SECONDS} (30 days)"),
            )
            .into());
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let ep = endpoints::get_locked(&mut tx, id)
            .await?
            .ok_or_else(|| no_endpoint(id))?;
        let secret = match secret {
            Some(s) => {
                sign::validate_secret(ep.settings.scheme, &s)
                    .map_err(|e| DomainError::invalid("secret", e.to_string()))?;
                s
            }
            None => sign::generate_secret(),
        };
        let until = now + TimeDelta::seconds(i64::try_from(grace).unwrap_or(0));
        endpoints::rotate_secret(&mut tx, id, &self.store.seal(&secret), until, now).await?;
        tx.commit().await?;
        tracing::info!(endpoint = %id, "endpoint secret rotated");
        Ok((secret, until))
    }

    /// The signing secret, and the previous one while it still signs.
    pub async fn secrets(&self, id: &str) -> Result<Secrets> {
        let ep = self.get(id).await?;
        let now = self.clock.now();
        let previous = match (&ep.previous_secret, ep.previous_secret_until) {
            (Some(p), Some(until)) if now < until => Some((self.store.open_secret(p)?, until)),
            _ => None,
        };
        Ok(Secrets {
            secret: self.store.open_secret(&ep.secret)?,
            previous,
        })
    }

    /// Makes the endpoint's failed deliveries created in `[since, until)` (until: now
    /// by default) due again now; returns how many.
    pub async fn recover(
        &self,
        id: &str,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> Result<u64> {
        let now = self.clock.now();
        let until = until.unwrap_or(now);
        if until <= since {
            return Err(DomainError::invalid("until", "must be after `since`").into());
        }
        self.get(id).await?;
        let mut tx = self.store.begin().await?;
        let n = deliveries::recover(&mut tx, id, since, until, now).await?;
        tx.commit().await?;
        self.outbox.requeued();
        Ok(n)
    }

    /// A page of deliveries, newest first.
    pub async fn deliveries(&self, filter: &Filter) -> Result<Vec<Delivery>> {
        Ok(deliveries::list(&self.store, filter).await?)
    }

    pub async fn delivery(&self, id: &str) -> Result<DeliveryDetail> {
        let delivery = deliveries::get(self.store.pool(), id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("no delivery {id:?}")))?;
        let attempts = deliveries::attempts(self.store.pool(), id).await?;
        let event = events::get(self.store.pool(), &delivery.event_id).await?;
        Ok(DeliveryDetail {
            delivery,
            attempts,
            event,
        })
    }

    /// Lets the ordered key a failed delivery holds move on without it: the key's next
    /// deliveries go out; this one stays failed (a retry sends it again).
    pub async fn skip(&self, id: &str) -> Result<Delivery> {
        self.change_delivery(id, DeliveryChange::Skip).await
    }

    /// Makes a failed (or succeeded) delivery due again now: one more attempt.
    pub async fn retry(&self, id: &str) -> Result<Delivery> {
        self.change_delivery(id, DeliveryChange::Retry).await
    }

    /// Applies `change` to delivery `id` in one transaction (404 when there is no such
    /// delivery, 409 when the change does not apply to it), wakes the worker, and
    /// answers the delivery as it is then.
    async fn change_delivery(&self, id: &str, change: DeliveryChange) -> Result<Delivery> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if deliveries::get(&mut *tx, id).await?.is_none() {
            return Err(DomainError::not_found(format!("no delivery {id:?}")).into());
        }
        let (applied, refused) = match change {
            DeliveryChange::Skip => (
                deliveries::skip(&mut tx, id, now).await?,
                "the delivery holds no key: only a delivery failed for good on an endpoint with `ordering_on_failure: hold` does",
            ),
            DeliveryChange::Retry => (
                deliveries::retry(&mut tx, id, now).await?,
                "the delivery is still pending; it will be attempted on its schedule",
            ),
        };
        if !applied {
            return Err(DomainError::conflict(refused).into());
        }
        tx.commit().await?;
        self.outbox.requeued();
        deliveries::get(self.store.pool(), id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("no delivery {id:?}")).into())
    }
}

/// What an operator may do to one delivery.
enum DeliveryChange {
    Skip,
    Retry,
}
