//! One attempt over HTTP: render and sign the event as the endpoint wants it, POST it
//! through the guarded client, keep what came back, and judge the answer (the
//! delivery's next state and what it means for the endpoint's health). No store
//! access: the worker hands the verdict to the recorder.

use std::error::Error as _;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};
use url::Url;

use super::endpoint::{Endpoint, OnExhausted};
use super::guard::GuardError;
use super::health::AttemptResult;
use super::pipeline::Pipeline;
use super::render::{self, EventView};
use super::retry::{self, Outcome};
use super::sign;
use crate::domain::event::Event;
use crate::store::deliveries::{self, Attempt};

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

/// An attempt judged: what to record, and what it means.
pub struct Verdict {
    pub attempt: Attempt,
    pub outcome: deliveries::Outcome,
    pub result: AttemptResult,
    /// `2xx`…`5xx`, or the error kind when no answer came (for the metrics).
    pub class: String,
    pub duration: Duration,
}

/// Judges attempt `number` at a delivery to `endpoint` that came back as `sent`.
pub fn judge(
    endpoint: &Endpoint,
    number: i64,
    started_at: DateTime<Utc>,
    sent: Sent,
    now: DateTime<Utc>,
) -> Verdict {
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
    let class = match sent.status {
        Some(code) => format!("{}xx", code / 100),
        None => sent.error.as_ref().map_or("error", |(k, _)| *k).to_string(),
    };
    Verdict {
        attempt: Attempt {
            number,
            started_at,
            duration_ms: i64::try_from(sent.duration.as_millis()).unwrap_or(i64::MAX),
            status_code: sent.status.map(i64::from),
            error_kind: sent.error.as_ref().map(|(k, _)| k.to_string()),
            error: sent.error.map(|(_, e)| e),
            response_headers: Value::Object(sent.headers),
            response_body: sent.body,
        },
        outcome: state,
        result,
        class,
        duration: sent.duration,
    }
}

/// What came back from one request.
pub struct Sent {
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
    headers.push((sign::HEADER_SEQUENCE.into(), event.seq.to_string()));
    headers.extend(signature);
    Ok(Prepared {
        body: rendered.body,
        headers,
    })
}

/// Sends `event` to `endpoint` at `url`, the endpoint's URL as the destination guard
/// checked it (or why the guard refused it).
pub async fn send(
    p: &Pipeline,
    client: &reqwest::Client,
    endpoint: &Endpoint,
    url: Result<Url, String>,
    event: &Event,
    now: DateTime<Utc>,
) -> Sent {
    let url = match url {
        Ok(url) => url,
        Err(e) => return Sent::failed("refused", e, false),
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
