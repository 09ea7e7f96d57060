//! Security by default: secrets sealed at rest, never in lists or logs; tokens apart.

use crate::support;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::json;
use support::receiver::Receiver;
use support::{Backend, StoreHandle, TestApp, test_config};

async fn endpoint_secrets_are_sealed_at_rest(backend: Backend) {
    let Some(store) = StoreHandle::new(backend).await else {
        return;
    };
    let mut config = test_config(store.url());
    config.store.secret_key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let mut app = TestApp::spawn_with(store, config).await;
    let rx = Receiver::start().await;
    let r = app
        .post(
            "/v1/endpoints",
            Some(json!({"name": "rx", "url": rx.url("/h"), "topics": ["item.*"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().expect("id").to_string();
    let secret = r.body["secret"].as_str().expect("secret").to_string();
    // Not in the database in the clear, nor in lists.
    let stored = app
        .rows(
            "SELECT secret FROM endpoints WHERE id = $1",
            &[id.as_str().into()],
        )
        .await[0]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    assert!(
        stored.starts_with("sealed:v1:") && !stored.contains(&secret),
        "{stored}"
    );
    let list = app.get("/v1/endpoints").await;
    assert!(
        !list.body.to_string().contains(&secret),
        "no secret in the list"
    );
    let one = app.get(&format!("/v1/endpoints/{id}")).await;
    assert!(
        !one.body.to_string().contains(&secret),
        "no secret in the endpoint view"
    );
    // It still signs, and the dedicated route reveals it to the operator.
    assert_eq!(
        app.get(&format!("/v1/endpoints/{id}/secret")).await.body["secret"],
        secret.as_str()
    );
    app.put("/v1/items/i-1", json!({"name": "x"})).await;
    app.advance(1).await;
    let got = rx.wait_for(1).await;
    let wh = standardwebhooks::Webhook::new(&secret).expect("secret");
    let expected = wh
        .sign(
            &got[0].header("webhook-id"),
            got[0].header("webhook-timestamp").parse().expect("ts"),
            &got[0].body,
        )
        .expect("sign");
    assert!(
        got[0]
            .header("webhook-signature")
            .split(' ')
            .any(|s| s == expected)
    );
    // Rotation seals the new one too; both sign during the grace period.
    let rot = app
        .post(
            &format!("/v1/endpoints/{id}/rotate-secret"),
            Some(json!({})),
        )
        .await;
    assert_eq!(rot.status, StatusCode::OK, "{}", rot.body);
    let new_secret = rot.body["secret"].as_str().expect("secret").to_string();
    let stored = app
        .rows(
            "SELECT secret FROM endpoints WHERE id = $1",
            &[id.as_str().into()],
        )
        .await[0]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    assert!(stored.starts_with("sealed:v1:") && !stored.contains(&new_secret));
    // Restarted without the key, the service cannot read the secret: it says so rather
    // than signing with garbage.
    app.config.store.secret_key = String::new();
    app.restart().await;
    let r = app.get(&format!("/v1/endpoints/{id}/secret")).await;
    assert!(
        r.status.is_server_error() || r.status.is_client_error(),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn a_bad_secret_key_is_a_config_error_naming_the_key() {
    let err = duehook::config::Config::from_layers(
        Some((
            "/etc/duehook/config.toml".into(),
            "[store]\nsecret_key = \"tooshort\"".into(),
        )),
        [],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("store.secret_key") && !err.contains("tooshort"),
        "{err}"
    );
}

both_backends!(endpoint_secrets_are_sealed_at_rest);
