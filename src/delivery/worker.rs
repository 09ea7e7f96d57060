//! The delivery worker: claims due deliveries with a lease, sends each one in a task
//! of its own (render → sign → POST) and records the attempt, the delivery's new state
//! and the endpoint's health in one transaction.
//!
//! Sends to different endpoints proceed concurrently: at most
//! `[delivery] max_concurrent_sends` in all, at most `max_in_flight_per_endpoint` to
//! one endpoint, so a slow or dead endpoint never holds back the healthy ones. Each
//! endpoint's rate limit is enforced here too, and an open circuit (see
//! [`super::health`]) keeps an endpoint's deliveries out of the claim.
//!
//! Crash safety: a delivery is claimed (`claimed_by`, `lease_until`) before it is
//! sent and its attempt is recorded in one transaction afterwards. A crash in
//! between leaves the claim to expire; the delivery is then sent again with the same
//! `webhook-id` (at least once).

use std::collections::{HashMap, HashSet};
use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::endpoint::{Endpoint, OnExhausted};
use super::guard::GuardError;
use super::health::{self, AttemptResult};
use super::pipeline::Pipeline;
use super::ratelimit::RateLimiter;
use super::render::{self, EventView};
use super::retry::{self, Outcome};
use super::sign;
use crate::domain::event::Event;
use crate::store::deliveries::{self, Attempt};
use crate::store::{StoreError, alerts, endpoints, events};

/// How much of a response body is kept.
const MAX_BODY_KEPT: usize = 4096;
/// Response headers worth keeping with an attempt.
const HEADERS_OF_INTEREST: &[&str] = &[
    "content-type",
    "retry-after",
    "location",
    "server",
    "x-request-id",
    "date",
];
/// How long a claim lasts: the longest endpoint timeout (300 s) plus a margin.
const LEASE: TimeDelta = TimeDelta::seconds(360);
const USER_AGENT: &str = concat!("duehook/", env!("CARGO_PKG_VERSION"));

/// Builds the HTTP client: guarded resolver, no proxy, no redirects, rustls,
/// connection reuse across deliveries.
pub fn client(p: &Pipeline) -> Result<reqwest::Client, reqwest::Error> {
    p.guard
        .client_builder()
        .user_agent(USER_AGENT)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .build()
}

pub async fn run(p: Pipeline, shutdown: CancellationToken) {
    let client = match client(&p) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client; no webhooks will be sent");
            return;
        }
    };
    let node = format!("node_{}", uuid::Uuid::new_v4().simple());
    let permits = Arc::new(Semaphore::new(p.config.max_concurrent_sends));
    let per_endpoint = p.config.max_in_flight_per_endpoint;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, String)>();
    let mut in_flight: HashMap<String, usize> = HashMap::new();
    let mut claimed: HashSet<String> = HashSet::new();
    let mut limiter = RateLimiter::default();
    let mut tasks = JoinSet::new();

    loop {
        if shutdown.is_cancelled() {
            break;
        }
        while let Ok((delivery, endpoint)) = done_rx.try_recv() {
            finished(&mut in_flight, &mut claimed, &delivery, &endpoint);
        }
        while tasks.try_join_next().is_some() {}
        let now = p.clock.now();
        let (mut exclude, limiter_wake) = limiter.blocked(now);
        exclude.extend(
            in_flight
                .iter()
                .filter(|(_, n)| **n >= per_endpoint)
                .map(|(ep, _)| ep.clone()),
        );
        let free = permits.available_permits();
        let mut started = 0;
        if free > 0 {
            let lease_until = now + LEASE;
            match deliveries::claim(
                p.store.pool(),
                p.store.backend(),
                &node,
                now,
                lease_until,
                i64::try_from(free).unwrap_or(1),
                &exclude,
            )
            .await
            {
                Ok(batch) => {
                    let mut give_back = Vec::new();
                    let limits = rate_limits(&p, &batch).await;
                    for (delivery, endpoint) in batch {
                        if claimed.contains(&delivery) {
                            // Our own send, still in flight past its lease (the clock
                            // jumped): the claim just renewed the lease; do not send twice.
                            continue;
                        }
                        let busy = in_flight.get(&endpoint).copied().unwrap_or(0) >= per_endpoint;
                        let limit = limits.get(&endpoint).copied().flatten();
                        if busy || !limiter.try_take(&endpoint, limit, now) {
                            give_back.push(delivery);
                            continue;
                        }
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            give_back.push(delivery);
                            continue;
                        };
                        *in_flight.entry(endpoint.clone()).or_default() += 1;
                        claimed.insert(delivery.clone());
                        started += 1;
                        p.sending.fetch_add(1, Ordering::AcqRel);
                        let (p, client, node, done) =
                            (p.clone(), client.clone(), node.clone(), done_tx.clone());
                        tasks.spawn(async move {
                            if let Err(e) = deliver(&p, &client, &node, &delivery).await {
                                tracing::warn!(error = %e, delivery = %delivery, "delivery attempt not recorded; its claim will expire and it will be sent again");
                            }
                            p.sending.fetch_sub(1, Ordering::AcqRel);
                            drop(permit);
                            let _ = done.send((delivery, endpoint));
                        });
                    }
                    if let Err(e) = deliveries::release(p.store.pool(), &node, &give_back).await {
                        tracing::warn!(error = %e, "could not release deliveries; their claims will expire");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming deliveries failed; will retry"),
            }
        }
        if started > 0 && started == free {
            continue;
        }
        let mut wake_at = now + p.poll_interval();
        if let Ok(Some(at)) = deliveries::next_wake(p.store.pool(), now).await
            && at > now
        {
            wake_at = wake_at.min(at);
        }
        if let Some(at) = limiter_wake {
            wake_at = wake_at.min(at);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = p.work.notified() => {}
            Some((delivery, endpoint)) = done_rx.recv() => {
                finished(&mut in_flight, &mut claimed, &delivery, &endpoint);
            }
            _ = p.clock.sleep_until(wake_at) => {}
        }
    }
    // Stop sending; what was in flight is released so it is sent again after a restart
    // (at least once, same webhook-id). Attempts already recorded are not affected.
    tasks.shutdown().await;
    let ids: Vec<String> = claimed.into_iter().collect();
    if let Err(e) = deliveries::release(p.store.pool(), &node, &ids).await {
        tracing::warn!(error = %e, "could not release in-flight deliveries; their claims will expire");
    }
}

fn finished(
    in_flight: &mut HashMap<String, usize>,
    claimed: &mut HashSet<String>,
    delivery: &str,
    endpoint: &str,
) {
    claimed.remove(delivery);
    if let Some(n) = in_flight.get_mut(endpoint) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            in_flight.remove(endpoint);
        }
    }
}

/// The rate limit of each endpoint in `batch`.
async fn rate_limits(p: &Pipeline, batch: &[(String, String)]) -> HashMap<String, Option<u32>> {
    let mut out = HashMap::new();
    for (_, ep) in batch {
        if out.contains_key(ep) {
            continue;
        }
        if let Ok(Some(endpoint)) = endpoints::get(p.store.pool(), ep).await {
            out.insert(ep.clone(), endpoint.settings.rate_limit);
        }
    }
    out
}

/// One attempt at one claimed delivery, recorded.
async fn deliver(
    p: &Pipeline,
    client: &reqwest::Client,
    node: &str,
    delivery_id: &str,
) -> Result<(), StoreError> {
    let pool = p.store.pool();
    let Some(delivery) = deliveries::get(pool, delivery_id).await? else {
        return Ok(());
    };
    let endpoint = endpoints::get(pool, &delivery.endpoint_id).await?;
    let event = events::get(pool, &delivery.event_id).await?;
    let (Some(endpoint), Some(event)) = (endpoint, event) else {
        return Ok(());
    };
    if !endpoint.enabled || delivery.status != "pending" {
        deliveries::release(pool, node, &[delivery.id]).await?;
        return Ok(());
    }
    let number = delivery.attempts + 1;
    let started_at = p.clock.now();
    let sent = send(p, client, &endpoint, &event, started_at).await;
    let attempt = Attempt {
        number,
        started_at,
        duration_ms: i64::try_from(sent.duration.as_millis()).unwrap_or(i64::MAX),
        status_code: sent.status.map(i64::from),
        error_kind: sent.error.as_ref().map(|(k, _)| k.to_string()),
        error: sent.error.as_ref().map(|(_, e)| e.clone()),
        response_headers: Value::Object(sent.headers),
        response_body: sent.body,
    };

    let now = p.clock.now();
    let outcome = if sent.unsendable {
        Outcome::Retry {
            reason: retry::RetryReason::Network,
        }
    } else {
        retry::classify(sent.status)
    };
    let next = if sent.unsendable {
        None
    } else {
        retry::next_delay(
            &endpoint.retry_policy(),
            u32::try_from(number).unwrap_or(u32::MAX),
            outcome,
            sent.retry_after,
            &mut rand::rng(),
        )
    };
    let state = match (outcome, next) {
        (Outcome::Success, _) => deliveries::Outcome {
            status: "succeeded",
            next_attempt_at: None,
        },
        (_, Some(delay)) => deliveries::Outcome {
            status: "pending",
            next_attempt_at: Some(now + TimeDelta::from_std(delay).unwrap_or(TimeDelta::days(7))),
        },
        (_, None) => deliveries::Outcome {
            status: "failed",
            next_attempt_at: None,
        },
    };
    let result = match (outcome, state.status) {
        (Outcome::Success, _) => AttemptResult::Success,
        (Outcome::Gone, _) => AttemptResult::Gone,
        (_, "failed") => AttemptResult::Failed {
            final_: true,
            disable: endpoint.settings.on_exhausted == OnExhausted::Disable,
        },
        _ => AttemptResult::Failed {
            final_: false,
            disable: false,
        },
    };

    let mut tx = p.store.begin().await?;
    if !deliveries::record_attempt(&mut tx, &delivery.id, node, &attempt, &state, now).await? {
        tx.rollback().await?;
        tracing::info!(delivery = %delivery.id, "claim lost before the attempt was recorded");
        return Ok(());
    }
    // Re-read the endpoint's health inside the transaction: other sends to it may have
    // changed it meanwhile.
    let current = endpoints::get_locked(&mut tx, p.store.backend(), &endpoint.id).await?;
    let mut alerted = false;
    if let Some(current) = current {
        let change = health::after_attempt(&current.health, &p.health, now, result);
        let disable = change.disable.as_deref().filter(|_| current.enabled);
        endpoints::set_health(&mut tx, &current.id, &change.health, disable, now).await?;
        for (kind, detail) in &change.alerts {
            alerts::insert(&mut tx, &current.id, kind.as_str(), detail, now).await?;
            alerted = true;
        }
        if let Some(reason) = disable {
            tracing::warn!(endpoint = %current.id, %reason, "endpoint disabled");
        }
    }
    tx.commit().await?;
    let class = match sent.status {
        Some(code) => format!("{}xx", code / 100),
        None => sent.error.as_ref().map_or("error", |(k, _)| *k).to_string(),
    };
    metrics::counter!("duehook_delivery_attempts_total", "result" => state.status, "status_class" => class).increment(1);
    metrics::histogram!("duehook_delivery_attempt_seconds").record(sent.duration.as_secs_f64());
    if alerted {
        p.alert.notify_one();
    }
    tracing::debug!(delivery = %delivery.id, attempt = number, status = ?sent.status, next = state.status, "attempt recorded");
    Ok(())
}

/// What came back from one request.
struct Sent {
    status: Option<u16>,
    headers: Map<String, Value>,
    body: String,
    retry_after: Option<Duration>,
    /// `(kind, message)` when no response came.
    error: Option<(&'static str, String)>,
    duration: Duration,
    /// The request could not even be built (render or signing failed): retrying
    /// would give the same result, so the delivery fails at once.
    unsendable: bool,
}

impl Sent {
    fn failed(kind: &'static str, message: String, unsendable: bool) -> Self {
        Sent {
            status: None,
            headers: Map::new(),
            body: String::new(),
            retry_after: None,
            error: Some((kind, message)),
            duration: Duration::ZERO,
            unsendable,
        }
    }
}

/// The rendered and signed request for `event`, as `endpoint` wants it.
pub struct Prepared {
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

pub fn prepare(
    store: &crate::store::Store,
    endpoint: &Endpoint,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<Prepared, String> {
    let s = &endpoint.settings;
    let view = EventView {
        id: &event.id,
        event_type: &event.event_type,
        created: event.created,
        scheduled_at: event.scheduled_at,
        data: &event.data,
    };
    let rendered = render::render(s.format, s.envelope, &view).map_err(|e| e.to_string())?;
    let secrets = endpoint
        .signing_secrets(now)
        .into_iter()
        .map(|stored| store.open_secret(stored))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let signature = sign::sign(
        s.scheme,
        s.signature_header.as_deref(),
        &secrets,
        &event.id,
        now.timestamp(),
        &rendered.body,
    )
    .map_err(|e| e.to_string())?;
    let mut headers: Vec<(String, String)> = s
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.push(("content-type".into(), rendered.content_type.into()));
    headers.extend(signature);
    Ok(Prepared {
        body: rendered.body,
        headers,
    })
}

async fn send(
    p: &Pipeline,
    client: &reqwest::Client,
    endpoint: &Endpoint,
    event: &Event,
    now: DateTime<Utc>,
) -> Sent {
    let url = match p.guard.check_url(&endpoint.settings.url) {
        Ok(url) => url,
        Err(e) => return Sent::failed("refused", e.to_string(), false),
    };
    let prepared = match prepare(&p.store, endpoint, event, now) {
        Ok(prepared) => prepared,
        Err(e) => return Sent::failed("render", e, true),
    };
    let mut req = client
        .post(url)
        .timeout(Duration::from_millis(endpoint.settings.timeout_ms));
    for (k, v) in &prepared.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    // A monotonic stopwatch for the attempt's duration only; no decision depends on it.
    let stopwatch = tokio::time::Instant::now();
    let mut sent = match req.body(prepared.body).send().await {
        Ok(mut res) => {
            let status = res.status().as_u16();
            let mut headers = Map::new();
            for name in HEADERS_OF_INTEREST {
                if let Some(v) = res.headers().get(*name).and_then(|v| v.to_str().ok()) {
                    headers.insert((*name).to_string(), Value::String(v.to_string()));
                }
            }
            let retry_after = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, now));
            let mut body = Vec::new();
            let mut error = None;
            loop {
                match res.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = MAX_BODY_KEPT.saturating_sub(body.len());
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        if body.len() >= MAX_BODY_KEPT {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // The status counts; a broken body is only noted.
                        error = Some((error_kind(&e), e.to_string()));
                        break;
                    }
                }
            }
            Sent {
                status: Some(status),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                retry_after,
                error,
                duration: Duration::ZERO,
                unsendable: false,
            }
        }
        Err(e) => Sent::failed(error_kind(&e), error_chain(&e), false),
    };
    sent.duration = stopwatch.elapsed();
    sent
}

/// `timeout`, `dns`, `refused` (the destination guard), `tls`, `connect` or `other`.
fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        return "timeout";
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(g) = s.downcast_ref::<GuardError>() {
            return match g {
                GuardError::Resolve { .. } => "dns",
                _ => "refused",
            };
        }
        let text = s.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
            return "tls";
        }
        if text.contains("dns error") || text.contains("failed to lookup") {
            return "dns";
        }
        source = s.source();
    }
    if e.is_connect() { "connect" } else { "other" }
}

/// The error and its causes, which is where reqwest keeps the useful part.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
