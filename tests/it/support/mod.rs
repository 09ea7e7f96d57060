//! Test helpers: start the real app on a random port with a ManualClock and a real
//! store (a temp SQLite file, or a fresh PostgreSQL database when the test asks for it
//! and `DUEHOOK_TEST_POSTGRES_URL` is set).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use duehook::App;
use duehook::clock::ManualClock;
use duehook::config::Config;
pub use duehook::testing::{Arg, ProbeRow};
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test's data lives; dropped (file removed, database dropped) after the test.
pub enum StoreHandle {
    Sqlite {
        /// Holds the directory: it is removed when the handle drops.
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        db: String,
        url: String,
    },
}

/// With `DUEHOOK_TEST_LOG` set (a filter such as `duehook=debug`), the in-process apps
/// log to the output of the test that started them, which a failing test prints.
fn log_to_test_output() {
    if let Ok(filter) = std::env::var("DUEHOOK_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
}

impl StoreHandle {
    pub fn url(&self) -> &str {
        match self {
            StoreHandle::Sqlite { url, .. } | StoreHandle::Postgres { url, .. } => url,
        }
    }

    /// A fresh store, or None (with a printed reason) when PostgreSQL is not configured.
    pub async fn new(backend: Backend) -> Option<StoreHandle> {
        log_to_test_output();
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("duehook.db").display());
                Some(StoreHandle::Sqlite { _dir: dir, url })
            }
            Backend::Postgres => {
                let Ok(admin_url) = std::env::var("DUEHOOK_TEST_POSTGRES_URL") else {
                    eprintln!(
                        "skipped: DUEHOOK_TEST_POSTGRES_URL is not set, so this PostgreSQL test did not run (.ci/run sets it)"
                    );
                    return None;
                };
                let db = format!("duehook_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::any::install_default_drivers();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
                    .await
                    .expect("connect to DUEHOOK_TEST_POSTGRES_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let mut url = url::Url::parse(&admin_url).expect("valid postgres url");
                url.set_path(&db);
                Some(StoreHandle::Postgres {
                    admin_url,
                    db,
                    url: url.to_string(),
                })
            }
        }
    }
}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        if let StoreHandle::Postgres { admin_url, db, .. } = self {
            let (admin_url, db) = (admin_url.clone(), db.clone());
            // Drop runs inside the test's runtime; do the async cleanup on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut conn) =
                            <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url).await
                        {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                            )))
                            .execute(&mut conn)
                            .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// A pool of its own on the store at `url`, for a test that reads a store no app is
/// running on (after a copy, before a start).
pub async fn pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("connect to the store")
}

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("valid RFC 3339")
        .with_timezone(&Utc)
}

/// The manual clock's current instant, for tests.
pub trait ClockExt {
    fn now_utc(&self) -> DateTime<Utc>;
}

impl ClockExt for Arc<ManualClock> {
    fn now_utc(&self) -> DateTime<Utc> {
        use duehook::clock::Clock;
        self.as_ref().now()
    }
}

pub const START: &str = "2030-03-01T08:00:00Z";

pub fn test_config(store_url: &str) -> Config {
    let mut c = Config::defaults();
    c.server.listen = "127.0.0.1:0".parse().expect("addr");
    c.store.url = store_url.to_string();
    c.store.max_connections = 4;
    c.auth.tokens = vec![TOKEN.to_string()];
    c.auth.admin_tokens = Some(vec![ADMIN_TOKEN.to_string()]);
    c.delivery.allow_private_destinations = true;
    c
}

pub struct TestApp {
    pub app: Option<App>,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub config: Config,
    pub store: StoreHandle,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        let store = StoreHandle::new(backend).await?;
        let config = test_config(store.url());
        Some(Self::spawn_with(store, config).await)
    }

    pub async fn spawn_with(store: StoreHandle, config: Config) -> TestApp {
        let clock = ManualClock::shared(t(START));
        let app = App::start(config.clone(), Arc::new(clock.clone()))
            .await
            .expect("app starts");
        TestApp {
            app: Some(app),
            clock,
            client: reqwest::Client::new(),
            config,
            store,
        }
    }

    pub fn app(&self) -> &App {
        self.app.as_ref().expect("app is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.app().url(), path)
    }

    /// Stops the app gracefully and starts a new one on the same store and clock.
    pub async fn restart(&mut self) {
        if let Some(app) = self.app.take() {
            app.shutdown().await;
        }
        let app = App::start(self.config.clone(), Arc::new(self.clock.clone()))
            .await
            .expect("app restarts");
        self.app = Some(app);
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.request_as(method, path, body, Some(TOKEN)).await
    }

    pub async fn request_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().await.expect("request sent");
        Self::reply(res).await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: &'static [u8],
        content_type: &str,
    ) -> Reply {
        let res = self
            .client
            .request(method, self.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        Self::reply(res).await
    }

    async fn reply(res: reqwest::Response) -> Reply {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body read");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("response is not JSON ({status}): {text}"));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Reply {
        self.request(Method::POST, path, body).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None).await
    }

    /// `GET /metrics`: the Prometheus text (the recorder is the test process's, shared
    /// by the apps of every test).
    pub async fn metrics(&self) -> String {
        let r = reqwest::get(self.url("/metrics")).await.expect("scrape");
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.expect("text")
    }

    /// `POST /admin/clock/advance {seconds}`: lives through every timer on the way.
    pub async fn advance(&self, seconds: i64) -> Reply {
        let r = self
            .request_as(
                Method::POST,
                "/admin/clock/advance",
                Some(serde_json::json!({ "seconds": seconds })),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "advance: {}", r.body);
        r
    }

    /// `POST /admin/clock/advance {to}`.
    pub async fn advance_to(&self, to: &str) -> Reply {
        let r = self
            .request_as(
                Method::POST,
                "/admin/clock/advance",
                Some(serde_json::json!({ "to": to })),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "advance: {}", r.body);
        r
    }

    /// `GET /admin/...` with the admin token.
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.request_as(Method::GET, path, None, Some(ADMIN_TOKEN))
            .await
    }

    /// Timers of one entity, from `GET /admin/schedule`.
    pub async fn timers_of(&self, kind: &str, id: &str) -> Vec<Value> {
        let r = self
            .admin_get(&format!(
                "/admin/schedule?entity_kind={kind}&entity_id={id}&limit=1000"
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["timers"].as_array().cloned().unwrap_or_default()
    }

    /// Every event in the outbox, oldest first.
    pub async fn events(&self) -> Vec<duehook::testing::Event> {
        self.app().probe().events().await.expect("events listed")
    }

    /// The integer `sql` answers (a `COUNT`), read through the app's probe.
    pub async fn scalar(&self, sql: &str, args: &[Arg]) -> i64 {
        self.app().probe().scalar(sql, args).await.expect("query")
    }

    /// The rows `sql` answers, read through the app's probe.
    pub async fn rows(&self, sql: &str, args: &[Arg]) -> Vec<ProbeRow> {
        self.app().probe().rows(sql, args).await.expect("query")
    }

    pub async fn event_types(&self) -> Vec<String> {
        self.events()
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

/// Defines one test per backend from `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::support::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::support::Backend::Postgres).await }
            )*
        }
    };
}

pub mod process;
pub mod receiver;

impl TestApp {
    /// Starts the app with `config` on a fresh store of `backend`, or None when that
    /// backend is not configured.
    pub async fn spawn_config(backend: Backend, edit: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let store = StoreHandle::new(backend).await?;
        let mut config = test_config(store.url());
        edit(&mut config);
        Some(Self::spawn_with(store, config).await)
    }

    /// Starts the app with its manual clock at `start` instead of [`START`].
    pub async fn spawn_at(backend: Backend, start: DateTime<Utc>) -> Option<TestApp> {
        let store = StoreHandle::new(backend).await?;
        let config = test_config(store.url());
        let clock = ManualClock::shared(start);
        let app = App::start(config.clone(), Arc::new(clock.clone()))
            .await
            .expect("app starts");
        Some(TestApp {
            app: Some(app),
            clock,
            client: reqwest::Client::new(),
            config,
            store,
        })
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.request(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(Method::DELETE, path, None).await
    }

    /// Moves the manual clock forward directly (not through the admin API).
    pub fn forward(&self, by: chrono::TimeDelta) {
        self.clock.advance(by);
    }
}
