//! Typed configuration: built-in defaults, then the config file, then `DUEHOOK_*`
//! environment variables, validated once at start.
//!
//! Errors name the key and where its value came from (the file path, the environment
//! variable or the built-in defaults), so an operator can fix them without guessing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::schedule::rules::{self, Offset, Rule, RuleConfig};

/// The shipped `config.toml`, which documents every key; it is also the defaults.
pub const DEFAULTS: &str = include_str!("../config.toml");

const DEFAULTS_ORIGIN: &str = "built-in defaults";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub clock: ClockConfig,
    pub auth: AuthConfig,
    pub schedule: ScheduleConfig,
    pub delivery: DeliveryConfig,
    pub cluster: ClusterConfig,
    pub alerts: AlertsConfig,
    pub log: LogConfig,
}

/// `[cluster]`: several nodes on one PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// How long a node's claims last without a heartbeat (it beats every third of
    /// one): a node whose last heartbeat is this old is dead, and the others take its
    /// timers and deliveries over at once. A delivery's claim lasts its endpoint's
    /// timeout plus this.
    #[serde(deserialize_with = "de_duration")]
    pub lease: TimeDelta,
    /// Name of this node in `GET /admin/nodes`; the host name when empty.
    pub node_name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// The body limit of `POST /v1/batch`, which carries many changes at once.
    pub max_batch_bytes: usize,
    /// How long a graceful shutdown waits for in-flight requests and background work
    /// before it aborts what is left (uncommitted work stays pending in the store).
    #[serde(deserialize_with = "de_std_duration")]
    pub shutdown_timeout: std::time::Duration,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub url: String,
    pub max_connections: u32,
    /// Base64 of 32 bytes; when set, endpoint secrets are stored sealed.
    #[serde(default)]
    pub secret_key: String,
}

// The key is a secret: never print it.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url)
            .field("max_connections", &self.max_connections)
            .field(
                "secret_key",
                &if self.secret_key.is_empty() {
                    "unset"
                } else {
                    "[redacted]"
                },
            )
            .finish()
    }
}

impl StoreConfig {
    /// `url` without its password, for logs and summaries.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The sealer for `secret_key`, when one is set.
    pub fn sealer(
        &self,
    ) -> Result<Option<crate::store::sealed::Sealer>, crate::store::sealed::SealError> {
        if self.secret_key.is_empty() {
            return Ok(None);
        }
        crate::store::sealed::Sealer::from_base64(&self.secret_key).map(Some)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    System,
    Manual,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    pub mode: ClockMode,
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<String>,
    #[serde(default)]
    pub admin_tokens: Option<Vec<String>>,
}

// Tokens are secrets: never print them, not even in a debug dump of the config.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field(
                "admin_tokens",
                &self
                    .admin_tokens
                    .as_ref()
                    .map(|t| format!("[{} redacted]", t.len())),
            )
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub timezone: Tz,
    /// How far ahead the driver loads pending timers into its in-memory wheel.
    #[serde(deserialize_with = "de_duration")]
    pub horizon: TimeDelta,
    /// A timer found this late (downtime, a clock jump) follows its rule's misfire policy.
    #[serde(deserialize_with = "de_duration")]
    pub misfire_after: TimeDelta,
    /// Added to an invoice's due date before `unitRental.markOverdue` fires.
    #[serde(deserialize_with = "de_duration")]
    pub invoice_grace: TimeDelta,
    /// Fired, cancelled and skipped timers, and events, older than this are purged.
    pub retention_days: u32,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    pub digest: DigestConfig,
}

/// `[schedule.digest]`: a daily `order.overdue_digest` event per time zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    pub enabled: bool,
    /// Local time of day, `HH:MM`.
    #[serde(deserialize_with = "de_time_of_day")]
    pub at: chrono::NaiveTime,
    /// Zones to send a digest for; empty: `[schedule] timezone`.
    pub timezones: Vec<Tz>,
}

fn de_time_of_day<'de, D: serde::Deserializer<'de>>(d: D) -> Result<chrono::NaiveTime, D::Error> {
    let text = String::deserialize(d)?;
    chrono::NaiveTime::parse_from_str(&text, "%H:%M")
        .map_err(|_| serde::de::Error::custom(format!("`{text}`: use HH:MM, e.g. 08:00")))
}

/// A duration written like an exact rule offset: `10m`, `90s`, `2h`.
fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TimeDelta, D::Error> {
    let text = String::deserialize(d)?;
    match Offset::parse(&text) {
        Ok(Offset::Exact(t)) if t >= TimeDelta::zero() => Ok(t),
        Ok(_) => Err(serde::de::Error::custom(format!(
            "`{text}`: use a positive duration in s, m or h"
        ))),
        Err(e) => Err(serde::de::Error::custom(e)),
    }
}

/// [`de_duration`] as a `std::time::Duration`, for timeouts measured on the monotonic clock.
fn de_std_duration<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::time::Duration, D::Error> {
    let delta = de_duration(d)?;
    // de_duration only returns non-negative durations, so this cannot fail.
    delta
        .to_std()
        .map_err(|_| serde::de::Error::custom("use a positive duration in s, m or h"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    pub allow_private_destinations: bool,
    /// Ranges allowed even when private destinations are not.
    /// CIDR strings, checked by `validate`; see [`DeliveryConfig::allowed_subnets`].
    pub allowed_subnets: Vec<String>,
    pub https_only: bool,
    /// Most requests in flight at once, all endpoints together.
    pub max_concurrent_sends: usize,
    /// Most requests in flight at once to one endpoint.
    pub max_in_flight_per_endpoint: usize,
    /// Longest sleep between two looks at the store for due work, in milliseconds.
    pub poll_interval_ms: u64,
    /// Request timeout of endpoints that set none, in milliseconds.
    pub default_timeout_ms: u64,
    /// Disable an endpoint after this many deliveries in a row failed for good (0: never).
    pub disable_after_failed_deliveries: u32,
    /// Disable an endpoint that has failed every attempt for this many hours (0: never).
    pub disable_after_failing_hours: u32,
    /// Open the circuit after this many failed attempts in a row (0: no breaker).
    pub circuit_breaker_failures: u32,
    /// How long an open circuit holds an endpoint's deliveries back, in seconds.
    pub circuit_breaker_cooldown_seconds: u64,
    /// How long the previous secret keeps signing after a rotation, in seconds.
    pub rotation_grace_seconds: u64,
}

impl DeliveryConfig {
    /// `allowed_subnets`, parsed (invalid entries were refused by validation).
    pub fn allowed_subnets(&self) -> Vec<ipnet::IpNet> {
        self.allowed_subnets
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Failed attempts in a row after which an endpoint counts as failing.
    pub failing_after_attempts: u32,
    /// Optional URL that receives every alert as a JSON POST.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Outgoing mail server; without it no email is sent.
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub from: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

// The SMTP password is a secret: never print it.
impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "redacted"))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// A configuration error, naming the key and where its value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Key {
        origin: String,
        key: String,
        message: String,
    },
}

/// The token the shipped `config.toml` holds: public, so the service warns while it is in use.
pub const PLACEHOLDER_TOKEN: &str = "dev-token-change-me";

/// Minimum length of a bearer token; shorter ones are guessable.
const MIN_TOKEN_LEN: usize = 16;

/// Bounds of `[server] shutdown_timeout`. Zero would abort every in-flight request on
/// each stop; more than ten minutes outlives any sane `TimeoutStopSec`, after which
/// systemd kills the process anyway and the deadline means nothing.
const MIN_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl Config {
    /// The built-in defaults alone.
    pub fn defaults() -> Self {
        // The defaults are our own file, checked by a unit test; failing here is a build defect.
        Self::from_layers(None, std::iter::empty()).expect("built-in defaults are valid")
    }

    /// Defaults, then the file at `path` (a missing file is an error only when
    /// `required`), then the process environment.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        let file = match std::fs::read_to_string(path) {
            Ok(text) => Some((path.display().to_string(), text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::from_layers(file, std::env::vars())
    }

    /// Builds a config from an optional `(origin, toml text)` file layer and environment
    /// pairs (only `DUEHOOK_<SECTION>_<KEY>` for known sections are read).
    pub fn from_layers(
        file: Option<(String, String)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut origins = BTreeMap::new();
        let mut merged = parse_table(DEFAULTS_ORIGIN, DEFAULTS)?;
        record_origins(&merged, "", DEFAULTS_ORIGIN, &mut origins);

        if let Some((origin, text)) = file {
            let table = parse_table(&origin, &text)?;
            record_origins(&table, "", &origin, &mut origins);
            merge(&mut merged, table);
        }

        let sections: Vec<String> = merged.keys().cloned().collect();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("DUEHOOK_") else {
                continue;
            };
            let lower = rest.to_ascii_lowercase();
            let Some(section) = sections
                .iter()
                .find(|s| lower.starts_with(&format!("{s}_")))
            else {
                continue;
            };
            let key = lower[section.len() + 1..].to_string();
            let value = parse_env_value(&raw);
            let origin = format!("environment variable {name}");
            origins.insert(format!("{section}.{key}"), origin);
            if let Some(toml::Value::Table(t)) = merged.get_mut(section.as_str()) {
                t.insert(key, value);
            }
        }

        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Key {
                    origin: origin_of(&origins, &key),
                    message: e.into_inner().to_string(),
                    key,
                }
            })?;
        config.validate(&origins)?;
        Ok(config)
    }

    fn validate(&self, origins: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| ConfigError::Key {
            origin: origin_of(origins, key),
            key: key.to_string(),
            message,
        };
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(fail(
                "store.url",
                format!("`{url}` is neither sqlite://PATH nor postgres://…"),
            ));
        }
        if let Err(e) = self.store.sealer() {
            return Err(fail("store.secret_key", e.to_string()));
        }
        if self.store.max_connections == 0 {
            return Err(fail("store.max_connections", "must be at least 1".into()));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(fail(
                "server.max_body_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.server.max_batch_bytes < 1024 {
            return Err(fail(
                "server.max_batch_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.server.shutdown_timeout < MIN_SHUTDOWN_TIMEOUT
            || self.server.shutdown_timeout > MAX_SHUTDOWN_TIMEOUT
        {
            return Err(fail(
                "server.shutdown_timeout",
                format!(
                    "must be between {}s and {}s (the systemd unit's TimeoutStopSec must stay above it)",
                    MIN_SHUTDOWN_TIMEOUT.as_secs(),
                    MAX_SHUTDOWN_TIMEOUT.as_secs()
                ),
            ));
        }
        if self.auth.tokens.is_empty() {
            return Err(fail("auth.tokens", "at least one token is required".into()));
        }
        for (key, tokens) in [
            ("auth.tokens", Some(&self.auth.tokens)),
            ("auth.admin_tokens", self.auth.admin_tokens.as_ref()),
        ] {
            for (i, token) in tokens.into_iter().flatten().enumerate() {
                if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace()) {
                    return Err(fail(
                        key,
                        format!(
                            "token #{} must be at least {MIN_TOKEN_LEN} characters without spaces",
                            i + 1
                        ),
                    ));
                }
            }
        }
        if self.cluster.lease < TimeDelta::seconds(3) {
            return Err(fail("cluster.lease", "must be at least 3s".into()));
        }
        if self.schedule.retention_days == 0 {
            return Err(fail("schedule.retention_days", "must be at least 1".into()));
        }
        if self.schedule.horizon < TimeDelta::seconds(10) {
            return Err(fail("schedule.horizon", "must be at least 10s".into()));
        }
        if let Err((key, message)) = self.rules() {
            return Err(fail(&key, message));
        }
        for (i, net) in self.delivery.allowed_subnets.iter().enumerate() {
            if net.parse::<ipnet::IpNet>().is_err() {
                return Err(fail(
                    "delivery.allowed_subnets",
                    format!(
                        "entry #{} ({net:?}) is not a CIDR range like 10.1.2.0/24",
                        i + 1
                    ),
                ));
            }
        }
        if self.delivery.max_concurrent_sends == 0 {
            return Err(fail(
                "delivery.max_concurrent_sends",
                "must be at least 1".into(),
            ));
        }
        if self.delivery.max_in_flight_per_endpoint == 0 {
            return Err(fail(
                "delivery.max_in_flight_per_endpoint",
                "must be at least 1".into(),
            ));
        }
        if self.delivery.poll_interval_ms == 0 {
            return Err(fail(
                "delivery.poll_interval_ms",
                "must be at least 1".into(),
            ));
        }
        if !(100..=300_000).contains(&self.delivery.default_timeout_ms) {
            return Err(fail(
                "delivery.default_timeout_ms",
                "must be between 100 and 300000".into(),
            ));
        }
        if let Some(url) = &self.alerts.webhook_url
            && url::Url::parse(url).is_err()
        {
            return Err(fail("alerts.webhook_url", "is not a valid URL".into()));
        }
        if let Some(smtp) = &self.alerts.smtp
            && smtp.from.parse::<lettre::message::Mailbox>().is_err()
        {
            return Err(fail(
                "alerts.smtp.from",
                "is not a valid email address".into(),
            ));
        }
        if let Err(e) = self.log.level.parse::<tracing_subscriber::EnvFilter>() {
            return Err(fail("log.level", e.to_string()));
        }
        Ok(())
    }

    /// The rule set: defaults plus `[[schedule.rules]]`; errors name `schedule.rules[i].key`.
    pub fn rules(&self) -> Result<Vec<Rule>, (String, String)> {
        rules::build(self.schedule.invoice_grace, &self.schedule.rules)
    }

    /// True when the shipped placeholder token is still in use.
    pub fn uses_default_token(&self) -> bool {
        self.auth.tokens.iter().any(|t| t == PLACEHOLDER_TOKEN)
    }
}

/// A store URL without its password (`postgres://duehook:***@db/duehook`).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn parse_table(origin: &str, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn record_origins(
    table: &toml::Table,
    prefix: &str,
    origin: &str,
    out: &mut BTreeMap<String, String>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let toml::Value::Table(t) = v {
            record_origins(t, &key, origin, out);
        }
        out.insert(key, origin.to_string());
    }
}

/// Where the value of `key` (or its closest parent) came from.
fn origin_of(origins: &BTreeMap<String, String>, key: &str) -> String {
    let mut k = key;
    loop {
        if let Some(o) = origins.get(k) {
            return o.clone();
        }
        match k.rfind('.') {
            Some(i) => k = &k[..i],
            None => return DEFAULTS_ORIGIN.to_string(),
        }
    }
}

/// Deep merge: tables merge key by key, anything else is replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Option<(String, String)> {
        Some(("/etc/duehook/config.toml".into(), text.into()))
    }

    #[test]
    fn shipped_defaults_are_valid() {
        let c = Config::defaults();
        assert_eq!(c.store.url, "sqlite://duehook.db");
        assert_eq!(c.clock.mode, ClockMode::System);
        assert!(c.uses_default_token());
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let c = Config::from_layers(
            file("[store]\nurl = \"sqlite:///tmp/x.db\"\n[clock]\nmode = \"manual\"\nstart = \"2030-01-01T00:00:00Z\""),
            [
                ("DUEHOOK_SERVER_MAX_BODY_BYTES".to_string(), "4096".to_string()),
                ("DUEHOOK_AUTH_TOKENS".to_string(), r#"["0123456789abcdef"]"#.to_string()),
                ("DUEHOOK_TEST_POSTGRES_URL".to_string(), "ignored".to_string()),
            ],
        )
        .expect("valid");
        assert_eq!(c.store.url, "sqlite:///tmp/x.db");
        assert_eq!(c.clock.mode, ClockMode::Manual);
        assert_eq!(c.server.max_body_bytes, 4096);
        assert_eq!(c.auth.tokens, vec!["0123456789abcdef".to_string()]);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = Config::from_layers(file("[server]\nlistne = \"x\""), []).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/duehook/config.toml"), "{msg}");
        assert!(msg.contains("listne"), "{msg}");
    }

    #[test]
    fn bad_value_names_key_and_origin() {
        let err = Config::from_layers(file("[schedule]\ntimezone = \"Mars/Olympus\""), [])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("schedule.timezone") && err.contains("/etc/duehook/config.toml"),
            "{err}"
        );
        let err = Config::from_layers(None, [("DUEHOOK_STORE_URL".into(), "mysql://x".into())])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("store.url") && err.contains("DUEHOOK_STORE_URL"),
            "{err}"
        );
        let err = Config::from_layers(file("[auth]\ntokens = [\"short\"]"), [])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.tokens") && !err.contains("short"),
            "{err}"
        );
    }

    #[test]
    fn rules_are_validated_with_their_key() {
        let err = Config::from_layers(
            file("[[schedule.rules]]\nname = \"order.overdue_3_days\"\nentity = \"order\"\noffset = \"+3 fortnights\""),
            [],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("schedule.rules[0].offset") && err.contains("/etc/duehook/config.toml"),
            "{err}"
        );
        let err = Config::from_layers(file("[[schedule.rules]]\nname = \"x\"\nwhen = 1"), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("when"), "{err}");
        let ok = Config::from_layers(
            file("[[schedule.rules]]\nname = \"order.overdue_3_days\"\nentity = \"order\"\noffset = \"+3 days\""),
            [],
        )
        .expect("valid");
        assert_eq!(ok.rules().expect("rules").len(), 11);
    }

    #[test]
    fn shutdown_timeout_is_parsed_and_bounded() {
        assert_eq!(
            Config::defaults().server.shutdown_timeout,
            std::time::Duration::from_secs(30)
        );
        let c =
            Config::from_layers(file("[server]\nshutdown_timeout = \"2m\""), []).expect("valid");
        assert_eq!(
            c.server.shutdown_timeout,
            std::time::Duration::from_secs(120)
        );
        for bad in ["0s", "11m", "-5s", "soon"] {
            let err =
                Config::from_layers(file(&format!("[server]\nshutdown_timeout = \"{bad}\"")), [])
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains("server.shutdown_timeout") && err.contains("/etc/duehook/config.toml"),
                "{bad}: {err}"
            );
        }
        let err = Config::from_layers(
            None,
            [("DUEHOOK_SERVER_SHUTDOWN_TIMEOUT".into(), "0s".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("DUEHOOK_SERVER_SHUTDOWN_TIMEOUT"), "{err}");
    }

    #[test]
    fn delivery_and_alert_keys() {
        let c = Config::from_layers(
            file("[delivery]\nallowed_subnets = [\"10.1.2.0/24\"]\n[alerts]\nwebhook_url = \"https://ops.example.com/a\"\n[alerts.smtp]\nhost = \"127.0.0.1\"\nport = 25\nfrom = \"duehook@example.com\"\npassword = \"hunter2hunter2\""),
            [],
        )
        .expect("valid");
        assert_eq!(c.delivery.allowed_subnets().len(), 1);
        assert_eq!(c.delivery.default_timeout_ms, 5000);
        let smtp = c.alerts.smtp.expect("smtp");
        assert!(
            !format!("{smtp:?}").contains("hunter2"),
            "password not printed"
        );
        let err = Config::from_layers(file("[delivery]\nallowed_subnets = [\"ten\"]"), [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("delivery.allowed_subnets"), "{err}");
        let err = Config::from_layers(
            file("[alerts.smtp]\nhost = \"h\"\nport = 25\nfrom = \"nope\""),
            [],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("alerts.smtp.from"), "{err}");
        let c = Config::from_layers(
            None,
            [(
                "DUEHOOK_ALERTS_SMTP".to_string(),
                r#"{host = "relay", port = 2525, from = "d@example.com"}"#.to_string(),
            )],
        )
        .expect("smtp from the environment");
        assert_eq!(c.alerts.smtp.map(|s| s.port), Some(2525));
    }

    #[test]
    fn store_urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("postgres://duehook:s3cret@db.example.com/duehook"),
            "postgres://duehook:***@db.example.com/duehook"
        );
        assert_eq!(
            redact_url("postgres://duehook@db/duehook"),
            "postgres://duehook@db/duehook"
        );
        assert_eq!(redact_url("sqlite://duehook.db"), "sqlite://duehook.db");
    }

    #[test]
    fn syntax_error_names_file() {
        let err = Config::from_layers(file("[server\n"), [])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/duehook/config.toml: not valid TOML"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any file text gives a config or an error that names where it came from;
        /// never a panic.
        #[test]
        fn any_config_text_is_accepted_or_explained(text in "(\\[[a-z.]{0,12}\\]\n|[a-z_]{1,12} = (\"[^\"\n]{0,10}\"|[0-9]{1,4}|true|\\[\\])\n){0,8}") {
            match Config::from_layers(Some(("/etc/duehook/config.toml".into(), text)), []) {
                Ok(_) => {}
                Err(e) => prop_assert!(e.to_string().contains("/etc/duehook/config.toml") || e.to_string().contains("built-in defaults"), "{}", e),
            }
        }
    }
}
