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

/// The allocator of the `duehook` binary, so a service run inside a bench allocates as
/// the shipped one does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
/// epoch), and beside it its `duehook-sequence` (-1 when absent).
#[derive(Default)]
pub struct Log {
    pub hits: Vec<(String, i64)>,
    pub sequences: Vec<i64>,
    pub seen: HashSet<String>,
}

/// The minimal receiver: 200 with no body.
#[derive(Default)]
pub struct Receiver {
    pub count: AtomicU64,
    /// Webhooks whose payload carries a `scheduled_at`: events of timers that fired.
    pub scheduled: AtomicU64,
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
    let sequence = headers
        .get("duehook-sequence")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(-1);
    {
        let mut log = rx.log.lock().expect("lock");
        log.seen.insert(id.clone());
        log.hits.push((id, at));
        log.sequences.push(sequence);
    }
    rx.count.fetch_add(1, Ordering::Relaxed);
    // The payload's fields come in a fixed order (`id`, `type`, `created`,
    // `scheduled_at`, `data`): the head is enough, whatever the size of `data`.
    const SCHEDULED: &[u8] = b"\"scheduled_at\":\"";
    let head = &body[..body.len().min(256)];
    if head.windows(SCHEDULED.len()).any(|w| w == SCHEDULED) {
        rx.scheduled.fetch_add(1, Ordering::Relaxed);
    }
    let mut samples = rx.samples.lock().expect("lock");
    if samples.len() < SIGNATURE_SAMPLES {
        samples.push((headers, body));
    }
    StatusCode::OK
}

impl Receiver {
    /// The kept samples checked with the official Standard Webhooks library and the
    /// endpoint's `secret`: (how many were checked, how many did not verify).
    pub fn verify_samples(&self, secret: &str) -> (usize, usize) {
        let samples = std::mem::take(&mut *self.samples.lock().expect("lock"));
        let wh = standardwebhooks::Webhook::new(secret).expect("secret");
        let bad = samples
            .iter()
            .filter(|(h, b)| wh.verify(b, h).is_err())
            .count();
        (samples.len(), bad)
    }
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

/// The machine's speed right now, as one core's SHA-256 throughput over 64 MiB (MB/s;
/// about 35 ms of work). On shared virtual machines the same bench can run over 3×
/// slower in one hour than in another; a figure is only comparable with runs whose
/// speed was close to its own.
fn calibrate() -> f64 {
    use sha2::{Digest, Sha256};
    let block = vec![0x5au8; 1 << 20];
    let started = std::time::Instant::now();
    let mut h = Sha256::new();
    for _ in 0..64 {
        h.update(&block);
    }
    std::hint::black_box(h.finalize());
    64.0 * (1 << 20) as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// The median round trip, in µs, of a message passed to another thread and back (2,000
/// trips). Each statement sqlx runs on SQLite is such a round trip to the connection's
/// thread; on a virtual machine it costs most when the other thread sleeps on an idle
/// CPU that must be woken.
fn handoff_round_trip_us() -> f64 {
    let (to_tx, to_rx) = std::sync::mpsc::channel::<u32>();
    let (back_tx, back_rx) = std::sync::mpsc::channel::<u32>();
    let echo = std::thread::spawn(move || {
        while let Ok(v) = to_rx.recv() {
            if back_tx.send(v).is_err() {
                break;
            }
        }
    });
    let mut trips = Vec::with_capacity(2_000);
    for i in 0..2_000 {
        let started = std::time::Instant::now();
        to_tx.send(i).expect("echo thread");
        back_rx.recv().expect("echo thread");
        trips.push(started.elapsed().as_secs_f64() * 1e6);
    }
    drop(to_tx);
    let _ = echo.join();
    trips.sort_by(f64::total_cmp);
    trips[trips.len() / 2]
}

/// How fast the machine is right now: [`calibrate`] and [`handoff_round_trip_us`],
/// taken at the start of a run and again at its end for the `machine:` line.
#[derive(Clone, Copy)]
pub struct MachineSpeed {
    sha256_mb_s: f64,
    round_trip_us: f64,
}

impl MachineSpeed {
    pub fn read() -> Self {
        Self {
            sha256_mb_s: calibrate(),
            round_trip_us: handoff_round_trip_us(),
        }
    }

    /// The `machine:` line: this reading as the start, a new one as the end.
    pub fn line_until_now(&self) -> String {
        let end = Self::read();
        format!(
            "machine:     SHA-256 on one core {:.0} MB/s at the start, {:.0} MB/s at the end; a thread hand-off round trip {:.1} µs at the start, {:.1} µs at the end (figures are comparable only at similar readings)",
            self.sha256_mb_s, end.sha256_mb_s, self.round_trip_us, end.round_trip_us
        )
    }
}

/// Where the machine's CPU time went since a starting point: this process, everything
/// else, idle, and steal (time the hypervisor gave the virtual CPUs to someone else).
/// Read from `/proc/stat` and `/proc/self/stat` in clock ticks, so no clock is read.
/// On shared virtual machines the same bench can run over 3× slower in one hour than in
/// another; this tells a slow hour (steal, other load) from a slower binary.
#[derive(Clone, Copy, Default)]
pub struct CpuTicks {
    /// All CPUs: user + nice + system + irq + softirq.
    busy: u64,
    idle: u64,
    steal: u64,
    /// This process: utime + stime.
    process: u64,
}

impl CpuTicks {
    /// Now, or zeros where `/proc` cannot be read (the summary then says so).
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu  user nice system idle iowait irq softirq steal guest guest_nice
        let f: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        let process = process_cpu_ticks("self");
        Self {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            idle: at(3) + at(4),
            steal: at(7),
            process,
        }
    }

    /// "this process 61 %, others 3 %, idle 35 %, steal 1 % of the CPUs' time (n ticks)"
    /// for the time from `self` to `later`.
    pub fn share_until(&self, later: &CpuTicks) -> String {
        let busy = later.busy.saturating_sub(self.busy);
        let idle = later.idle.saturating_sub(self.idle);
        let steal = later.steal.saturating_sub(self.steal);
        let process = later.process.saturating_sub(self.process).min(busy);
        let total = busy + idle + steal;
        if total == 0 {
            return "not measured (/proc/stat unreadable or no tick passed)".into();
        }
        let pct = |x: u64| x as f64 * 100.0 / total as f64;
        format!(
            "this process {:.0} %, others {:.0} %, idle {:.0} %, steal {:.0} % of the CPUs' time ({total} ticks)",
            pct(process),
            pct(busy - process),
            pct(idle),
            pct(steal)
        )
    }
}

/// The 1-minute, 5-minute and 15-minute load averages, to say how busy the machine was.
/// utime + stime of process `pid` (`"self"`: this one) from `/proc/<pid>/stat`, in
/// clock ticks (USER_HZ, which Linux fixes at 100 for user space); 0 where unreadable.
pub fn process_cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: fields 3.. ; utime and stime are 14, 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let v: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    v.get(11).copied().unwrap_or(0) + v.get(12).copied().unwrap_or(0)
}

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

/// Creates the endpoint `body` describes at `POST {base}/v1/endpoints` (which must answer
/// 201); returns what it answered, the endpoint with its `secret`.
pub async fn create_endpoint(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    body: Value,
) -> Value {
    let res = http
        .post(format!("{base}/v1/endpoints"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("create endpoint");
    assert_eq!(
        res.status(),
        reqwest::StatusCode::CREATED,
        "endpoint created"
    );
    serde_json::from_slice(&res.bytes().await.expect("body")).expect("JSON")
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

/// Operations per `POST /v1/batch` the benches send (the most one batch may carry).
pub const BATCH_OPS: usize = 10_000;

/// Sends the `count` operations `op(i)` through `POST {base}/v1/batch`, [`BATCH_OPS`]
/// per request, `concurrency` requests in flight (so that one request's JSON is read
/// while the store writes another's); asserts every operation answered 2xx. `done` is
/// told how many operations have been answered so far. Each request says
/// `Prefer: return=minimal` unless [`full_answers`]. An answered batch is committed:
/// when this returns, every operation is stored.
pub async fn send_batches(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    count: usize,
    concurrency: usize,
    op: impl Fn(usize) -> Value,
    done: impl Fn(usize),
) {
    let full = full_answers();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut answered = 0;
    let mut next = 0;
    while next < count || !in_flight.is_empty() {
        while next < count && in_flight.len() < concurrency.max(1) {
            let end = count.min(next + BATCH_OPS);
            let ops: Vec<Value> = (next..end).map(&op).collect();
            let body = json!({ "operations": ops }).to_string();
            let mut req = http
                .post(format!("{base}/v1/batch"))
                .bearer_auth(token)
                .header("content-type", "application/json");
            if !full {
                req = req.header("prefer", "return=minimal");
            }
            let req = req.body(body);
            in_flight.spawn(async move {
                let res = req.send().await.expect("batch sent");
                let status = res.status();
                let bytes = res.bytes().await.expect("batch answer");
                assert_eq!(
                    status,
                    reqwest::StatusCode::OK,
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
                let answer: BatchAnswer = serde_json::from_slice(&bytes).expect("JSON");
                for r in &answer.results {
                    assert!(
                        (200..300).contains(&r.status),
                        "an operation refused: {} {}",
                        r.status,
                        r.body.as_ref().map_or("", |b| b.get())
                    );
                    assert_eq!(r.body.is_some(), full, "a result's body as asked");
                }
                answer.results.len()
            });
            next = end;
        }
        if let Some(n) = in_flight.join_next().await {
            answered += n.expect("batch task");
            done(answered);
        }
    }
}

/// Whether batches ask for every applied operation's entity back (`BATCH_ANSWERS=full`)
/// instead of their statuses only (`Prefer: return=minimal`, what an import that
/// checks statuses sends).
pub fn full_answers() -> bool {
    std::env::var("BATCH_ANSWERS").is_ok_and(|v| v == "full")
}

/// The answer of `POST /v1/batch`, read as far as the bench checks it.
#[derive(serde::Deserialize)]
struct BatchAnswer {
    results: Vec<BatchResult>,
}

#[derive(serde::Deserialize)]
struct BatchResult {
    status: u16,
    #[serde(default)]
    body: Option<Box<serde_json::value::RawValue>>,
}
