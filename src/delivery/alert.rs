//! Alerts: tells people when an endpoint starts failing, is disabled, and recovers.
//!
//! The delivery worker writes alerts into the `alerts` table in the transaction that
//! changes the endpoint's health; this worker sends them: an email over SMTP
//! (`[alerts.smtp]`, with `lettre`) to the endpoint's `alert_emails`, and a JSON POST
//! to `[alerts] webhook_url` when set. A send that fails is tried again later, a few
//! times, then given up (and logged).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::endpoint::Endpoint;
use super::pipeline::Pipeline;
use crate::config::SmtpConfig;
use crate::store::alerts::{self, PendingAlert};
use crate::store::{StoreError, endpoints};

/// Tries per alert before it is given up.
const MAX_TRIES: i64 = 5;
/// How long a node holds an alert it is sending (after a crash, another sends it).
const CLAIM: TimeDelta = TimeDelta::minutes(10);

pub async fn run(p: Pipeline, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the alert HTTP client; no alerts will be sent");
            return;
        }
    };
    loop {
        if let Err(e) = send_due(&p, &client).await {
            tracing::warn!(error = %e, "sending alerts failed; will retry");
        }
        let now = p.clock.now();
        let mut wake_at = now + p.poll_interval();
        if let Ok(Some(at)) = alerts::next_try(p.store.pool()).await
            && at > now
        {
            wake_at = wake_at.min(at);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = p.alert.notified() => {}
            _ = p.clock.sleep_until(wake_at) => {}
        }
    }
}

async fn send_due(p: &Pipeline, client: &reqwest::Client) -> Result<(), StoreError> {
    let now = p.clock.now();
    for alert in alerts::due(p.store.pool(), now, 50).await? {
        if !alerts::claim(&p.store, &alert, now + CLAIM).await? {
            continue;
        }
        let endpoint = endpoints::get(p.store.pool(), &alert.endpoint_id).await?;
        let result = send(p, client, &alert, endpoint.as_ref(), now).await;
        let next = match result {
            Ok(()) => None,
            Err(e) if alert.tries + 1 >= MAX_TRIES => {
                tracing::error!(alert = alert.id, error = %e, "alert given up after {MAX_TRIES} tries");
                None
            }
            Err(e) => {
                tracing::warn!(alert = alert.id, error = %e, "alert not sent; will retry");
                Some(now + TimeDelta::minutes(1) * 2_i32.pow(alert.tries.clamp(0, 10) as u32))
            }
        };
        alerts::finish(&p.store, alert.id, now, next).await?;
    }
    Ok(())
}

fn subject(alert: &PendingAlert, name: &str) -> String {
    match alert.kind.as_str() {
        "failing" => format!("duehook: webhook endpoint \"{name}\" is failing"),
        "disabled" => format!("duehook: webhook endpoint \"{name}\" was disabled"),
        "recovered" => format!("duehook: webhook endpoint \"{name}\" recovered"),
        other => format!("duehook: webhook endpoint \"{name}\": {other}"),
    }
}

async fn send(
    p: &Pipeline,
    client: &reqwest::Client,
    alert: &PendingAlert,
    endpoint: Option<&Endpoint>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let name = endpoint.map_or(alert.endpoint_id.as_str(), |e| e.settings.name.as_str());
    let url = endpoint.map_or("", |e| e.settings.url.as_str());
    if let (Some(smtp), Some(endpoint)) = (&p.alerts.smtp, endpoint)
        && !endpoint.settings.alert_emails.is_empty()
    {
        let text = format!(
            "{}\n\nEndpoint: {name} ({})\nURL: {url}\nWhat happened: {}\nWhen: {}\n",
            subject(alert, name),
            alert.endpoint_id,
            alert.detail,
            alert.created_at.to_rfc3339(),
        );
        send_email(
            smtp,
            &endpoint.settings.alert_emails,
            &subject(alert, name),
            text,
        )
        .await?;
    }
    if let Some(webhook) = &p.alerts.webhook_url {
        let body = json!({
            "kind": alert.kind,
            "endpoint_id": alert.endpoint_id,
            "endpoint_name": name,
            "endpoint_url": url,
            "detail": alert.detail,
            "at": alert.created_at,
            "sent_at": now,
        });
        let res = client
            .post(webhook)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("alert webhook: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("alert webhook answered {}", res.status()));
        }
    }
    Ok(())
}

async fn send_email(
    smtp: &SmtpConfig,
    to: &[String],
    subject: &str,
    text: String,
) -> Result<(), String> {
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| format!("[alerts.smtp] from: {e}"))?;
    let mut builder = Message::builder().from(from).subject(subject);
    for addr in to {
        let mailbox: Mailbox = addr
            .parse()
            .map_err(|e| format!("alert address {addr:?}: {e}"))?;
        builder = builder.to(mailbox);
    }
    let message = builder
        .body(text)
        .map_err(|e| format!("alert email: {e}"))?;
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host).port(smtp.port);
    if let (Some(user), Some(pass)) = (&smtp.username, &smtp.password) {
        transport = transport.credentials(Credentials::new(user.clone(), pass.clone()));
    }
    transport
        .build()
        .send(message)
        .await
        .map_err(|e| format!("SMTP {}:{}: {e}", smtp.host, smtp.port))?;
    Ok(())
}
