use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Router, routing::post};
use standardwebhooks::{Webhook, WebhookError};

/// `POST /duehook`: 204 for a verified webhook, 401 for anything else.
async fn receive(
    State(webhook): State<Arc<Webhook>>,
    headers: HeaderMap,
    body: Bytes, // the bytes as received
) -> StatusCode {
    if webhook.verify(&body, &headers).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    println!(
        "{:?} {} {}",
        headers["webhook-id"], event["type"], event["data"]["id"]
    );
    StatusCode::NO_CONTENT
}

/// `secret`: the endpoint's whsec_… secret.
pub fn duehook_routes(secret: &str) -> Result<Router, WebhookError> {
    let webhook = Arc::new(Webhook::new(secret)?);
    Ok(Router::new()
        .route("/duehook", post(receive))
        .with_state(webhook))
}
