//! What the end-to-end benchmarks share: a store of their own (a temp SQLite file or a
//! PostgreSQL database created and dropped), a minimal receiver on 127.0.0.1 that
//! logs each `webhook-id` with its arrival, and the summary helpers.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use duehook::config::Config;
use serde_json::{Value, json};

/// Received requests kept whole (headers and body) to verify their signatures.
pub const SIGNATURE_SAMPLES: usize = 200;

/// The store a bench runs on; a PostgreSQL database of its own, dropped at the end.
pub enum BenchStore {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        db: String,
        url: String,
    },
}

impl BenchStore {
    /// `sqlite` (a temp file) or a `postgres://` URL where the bench may create databases.
    pub async fn create(spec: &str) -> BenchStore {
        if spec == "sqlite" {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            return BenchStore::Sqlite { _dir: dir, url };
        }
        assert!(
            spec.starts_with("postgres://") || spec.starts_with("postgresql://"),
            "the store must be `sqlite` or a postgres:// URL, not {spec}"
        );
        sqlx::any::install_default_drivers();
        let db = format!("duehook_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(spec)
            .await
            .expect("connect to the PostgreSQL server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut conn)
            .await
            .expect("create the bench database");
        let mut url = url::Url::parse(spec).expect("valid postgres URL");
        url.set_path(&db);
        BenchStore::Postgres {
            admin_url: spec.to_string(),
            db,
            url: url.to_string(),
        }
    }

    pub fn url(&self) -> &str {
        match self {
            BenchStore::Sqlite { url, .. } | BenchStore::Postgres { url, .. } => url,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            BenchStore::Sqlite { .. } => "SQLite (temp file)".into(),
            BenchStore::Postgres { db, .. } => format!("PostgreSQL (database {db})"),
        }
    }

    pub async fn drop_database(self) {
        if let BenchStore::Postgres { admin_url, db, .. } = self {
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
                .await
                .expect("connect to the PostgreSQL server");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .expect("drop the bench database");
        }
    }
}

/// What the receiver saw: per request, the `webhook-id` and its arrival (µs since the
/// epoch).
#[derive(Default)]
pub struct Log {
    pub hits: Vec<(String, i64)>,
    pub seen: HashSet<String>,
}

/// The minimal receiver: 200 with no body.
#[derive(Default)]
pub struct Receiver {
    pub count: AtomicU64,
    pub log: Mutex<Log>,
    pub samples: Mutex<Vec<(HeaderMap, Bytes)>>,
}

async fn receive(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Utc::now().timestamp_micros();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    {
        let mut log = rx.log.lock().expect("lock");
        log.seen.insert(id.clone());
        log.hits.push((id, at));
    }
    rx.count.fetch_add(1, Ordering::Relaxed);
    let mut samples = rx.samples.lock().expect("lock");
    if samples.len() < SIGNATURE_SAMPLES {
        samples.push((headers, body));
    }
    StatusCode::OK
}

/// Starts the receiver on 127.0.0.1; returns its URL.
pub async fn start_receiver(
    shutdown: tokio_util::sync::CancellationToken,
) -> (String, Arc<Receiver>) {
    let rx = Arc::new(Receiver::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(receive).with_state(rx.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    (format!("http://{addr}/hook"), rx)
}

/// `VmHWM` (peak resident set) and `VmRSS` of this process, in MiB.
pub fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The 1-minute, 5-minute and 15-minute load averages, to say how busy the machine was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// "p50 1.2 ms, p99 3.4 ms, max 5.6 ms (n = 7)" of unsorted milliseconds.
pub fn spread(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
        pct(&ms, 0.5),
        pct(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        ms.len()
    )
}

/// A whole number from the environment (`_` and `,` allowed), or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .replace(['_', ','], "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a whole number")),
        Err(_) => default,
    }
}

/// The service's configuration for a bench: defaults, then any `DUEHOOK_*` overrides
/// from the environment (as `duehook serve`), on a random port, with `token`, allowed
/// to send to the receiver on loopback, logging warnings only unless
/// `DUEHOOK_LOG_LEVEL` says otherwise.
pub fn config(store_url: &str, token: &str) -> Config {
    let mut config = Config::from_layers(None, std::env::vars()).expect("configuration");
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.store.url = store_url.to_string();
    config.auth.tokens = vec![token.into()];
    config.delivery.allow_private_destinations = true;
    if std::env::var_os("DUEHOOK_LOG_LEVEL").is_none() {
        config.log.level = "warn".into();
    }
    config
}

/// Posts `booking.create` number `n` to `POST {base}/v1/events`; the event's id when it
/// was answered 201.
pub async fn post_booking(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    n: u64,
) -> Option<String> {
    let body = json!({"type": "booking.create", "data": {"id": n, "status": "CONFIRMED"}});
    let res = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    if res.status() != reqwest::StatusCode::CREATED {
        return None;
    }
    let body = res.bytes().await.ok()?;
    let v: Value = serde_json::from_slice(&body).ok()?;
    v["id"].as_str().map(str::to_string)
}
