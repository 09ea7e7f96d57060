//! The front door: the release binary as a separate process, loaded over HTTP as a user
//! loads it. Clients post ~250-byte `contact.update` events to `POST /v1/events` as
//! fast as they are answered (closed loop); one Standard-Webhooks endpoint points at a
//! minimal receiver on 127.0.0.1 that answers 200; webhooks are counted there.
//!
//! Run: `cargo bench --bench frontdoor`. Parameters (environment):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `FRONTDOOR_SECONDS` | 10 | how long the clients post, per run |
//! | `FRONTDOOR_CONNECTIONS` | `16,64` | the runs' connection counts |
//! | `FRONTDOOR_STORES` | `sqlite` | `sqlite`, and/or `postgres://…` URLs where the bench may create (and drop) its own database, comma-separated |
//! | `FRONTDOOR_BIN` | this build's `duehook` | the binary to start (to compare two builds) |
//! | `FRONTDOOR_CLIENT` | `wrk` when installed, else `tree` | `wrk -t1 -cC -dDs --latency`, or the in-tree client (reqwest, one task per connection) |
//!
//! Reported per run: webhooks/s at the receiver (from the first POST to the last
//! webhook), ingest latency p50/p99 as the client saw it, the server's CPU seconds per
//! webhook (utime + stime of its process from `/proc`), its peak RSS (`VmHWM`), and lost
//! and doubled webhooks (asserted: none).

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{
    BenchStore, MachineSpeed, create_endpoint, env_usize, loadavg, process_cpu_ticks, spread,
    start_receiver,
};

const TOKEN: &str = "frontdoor-bench-token-0123456789";
/// Give up waiting for webhooks when nothing new arrived for this long.
const QUIET: Duration = Duration::from_secs(20);
/// Distinct contacts the events are about.
const CONTACTS: usize = 10_000;

/// The event body number `n` posts: about 250 bytes.
fn body(n: usize) -> String {
    json!({
        "type": "contact.update",
        "data": {
            "id": format!("c-{}", n % CONTACTS),
            "name": "Ada Lovelace",
            "email": "ada.lovelace@example.com",
            "phone": "+32 470 12 34 56",
            "company": "Analytical Engines Ltd",
            "address": {"street": "12 St James's Square", "city": "London", "postcode": "SW1Y 4JH"},
            "tags": ["vip", "newsletter"],
            "updated_by": "frontdesk"
        }
    })
    .to_string()
}

/// The service, started from its binary on a config file of its own.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(bin: &Path, store_url: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\nurl = \"{store_url}\"\n\
                 [auth]\ntokens = [\"{TOKEN}\"]\n[delivery]\nallow_private_destinations = true\n\
                 [log]\nlevel = \"warn\"\n"
            ),
        )
        .expect("config");
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return Server {
                    child,
                    base,
                    _dir: dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{} did not become ready", bin.display());
    }

    /// utime + stime of the server process, in seconds.
    fn cpu_seconds(&self) -> f64 {
        process_cpu_ticks(&self.child.id().to_string()) as f64 / 100.0
    }

    /// The server's peak resident set, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// What the clients saw: answers 201, others, and latencies in ms.
struct Load {
    accepted: usize,
    refused: usize,
    p50_ms: f64,
    p99_ms: f64,
    detail: String,
}

/// The in-tree client: `connections` tasks, each posting and waiting for its answer.
async fn load_in_tree(base: &str, connections: usize, seconds: u64) -> Load {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (http, next, url) = (http.clone(), next.clone(), format!("{base}/v1/events"));
        tasks.spawn(async move {
            let (mut ok, mut bad, mut ms) = (0, 0, Vec::new());
            while Instant::now() < until {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let res = http
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(body(n))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        let _ = r.bytes().await;
                        ok += 1;
                        ms.push(sent.elapsed().as_secs_f64() * 1e3);
                    }
                    _ => bad += 1,
                }
            }
            (ok, bad, ms)
        });
    }
    let (mut accepted, mut refused, mut ms) = (0, 0, Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (ok, bad, m) = done.expect("client task");
        accepted += ok;
        refused += bad;
        ms.extend(m);
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms.get(((ms.len() as f64 - 1.0) * p) as usize).copied();
    Load {
        accepted,
        refused,
        p50_ms: pct(0.5).unwrap_or(0.0),
        p99_ms: pct(0.99).unwrap_or(0.0),
        detail: format!("in-tree client: {}", spread(ms)),
    }
}

/// `wrk -t1 -cC -dDs --latency` with a script that posts numbered bodies.
fn load_wrk(base: &str, connections: usize, seconds: u64, dir: &Path) -> Load {
    let script = dir.join("post.lua");
    let template = body(0).replace("\"c-0\"", "\"c-%d\"");
    std::fs::write(
        &script,
        format!(
            "local n = 0\n\
             wrk.method = \"POST\"\n\
             wrk.headers[\"content-type\"] = \"application/json\"\n\
             wrk.headers[\"authorization\"] = \"Bearer {TOKEN}\"\n\
             request = function()\n  n = n + 1\n  return wrk.format(nil, \"/v1/events\", nil, string.format([[{template}]], n % {CONTACTS}))\nend\n"
        ),
    )
    .expect("script");
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(base)
        .output()
        .expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let number = |prefix: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
        let v = line.trim_start()[prefix.len()..]
            .split_whitespace()
            .next()?;
        parse_wrk_value(v)
    };
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(0);
    let non2xx = number("Non-2xx or 3xx responses:").unwrap_or(0.0) as usize;
    let errors = text
        .lines()
        .find(|l| l.trim_start().starts_with("Socket errors:"))
        .map_or(0, |l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|d| d.parse::<usize>().ok())
                .sum()
        });
    Load {
        accepted: requests.saturating_sub(non2xx),
        refused: non2xx + errors,
        p50_ms: number("50%").unwrap_or(0.0),
        p99_ms: number("99%").unwrap_or(0.0),
        detail: text
            .lines()
            .find(|l| l.contains("Requests/sec"))
            .unwrap_or("")
            .trim()
            .to_string(),
    }
}

/// wrk's "12.34ms", "1.20s", "850.00us" as milliseconds; a bare number as itself.
fn parse_wrk_value(v: &str) -> Option<f64> {
    for (unit, scale) in [("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3)] {
        if let Some(n) = v.strip_suffix(unit)
            && let Ok(x) = n.parse::<f64>()
        {
            return Some(x * scale);
        }
    }
    v.parse().ok()
}

struct Run {
    store: String,
    connections: usize,
    webhooks_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_webhook: f64,
    peak_rss_mib: f64,
    lost: usize,
    doubled: usize,
}

async fn run(bin: &Path, store_spec: &str, connections: usize, seconds: u64, wrk: bool) -> Run {
    let store = BenchStore::create(store_spec).await;
    let server = Server::start(bin, store.url()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let (hook_url, rx) = start_receiver(stop.clone()).await;
    let created = create_endpoint(
        &reqwest::Client::new(),
        &server.base,
        TOKEN,
        json!({"name": "frontdoor", "url": hook_url, "topics": ["*"]}),
    )
    .await;
    let secret = created["secret"].as_str().expect("secret").to_string();

    let cpu_before = server.cpu_seconds();
    let t0 = Instant::now();
    let load = if wrk {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = server.base.clone();
        tokio::task::spawn_blocking(move || load_wrk(&base, connections, seconds, dir.path()))
            .await
            .expect("wrk")
    } else {
        load_in_tree(&server.base, connections, seconds).await
    };
    let mut last = 0;
    let mut last_change = Instant::now();
    let mut last_arrival = t0.elapsed();
    loop {
        let got = rx.count.load(Ordering::Relaxed) as usize;
        if got != last {
            last = got;
            last_change = Instant::now();
            last_arrival = t0.elapsed();
        }
        if got >= load.accepted || last_change.elapsed() > QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = server.cpu_seconds() - cpu_before;
    let peak_rss_mib = server.peak_rss_mib();
    server.stop();
    stop.cancel();
    let store_name = store.describe();
    store.drop_database().await;

    let (hits, distinct) = {
        let log = rx.log.lock().expect("lock");
        (log.hits.len(), log.seen.len())
    };
    let (sampled, bad) = rx.verify_samples(&secret);
    let lost = load.accepted.saturating_sub(distinct);
    let doubled = hits - distinct;
    let webhooks_per_s = hits as f64 / last_arrival.as_secs_f64();
    println!(
        "{store_name}, {connections} connections: accepted {} ({} refused) in {seconds} s; {hits} webhooks in {:.2} s; {}; signatures verified {}/{}",
        load.accepted,
        load.refused,
        last_arrival.as_secs_f64(),
        load.detail,
        sampled - bad,
        sampled
    );
    assert_eq!(bad, 0, "signatures that do not verify");
    assert_eq!(load.refused, 0, "posts refused");
    Run {
        store: store_name,
        connections,
        webhooks_per_s,
        p50_ms: load.p50_ms,
        p99_ms: load.p99_ms,
        cpu_us_per_webhook: if hits == 0 {
            0.0
        } else {
            cpu * 1e6 / hits as f64
        },
        peak_rss_mib,
        lost,
        doubled,
    }
}

fn binary() -> PathBuf {
    std::env::var_os("FRONTDOOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_duehook")))
}

fn wrk_installed() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

async fn main_async() {
    let seconds = env_usize("FRONTDOOR_SECONDS", 10) as u64;
    let connections: Vec<usize> = std::env::var("FRONTDOOR_CONNECTIONS")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let stores = std::env::var("FRONTDOOR_STORES").unwrap_or_else(|_| "sqlite".into());
    let wrk = match std::env::var("FRONTDOOR_CLIENT").as_deref() {
        Ok("tree") => false,
        Ok("wrk") => true,
        _ => wrk_installed(),
    };
    let bin = binary();
    let load = loadavg();
    let speed = MachineSpeed::read();
    println!("== duehook front door: {} ==", bin.display());
    let mut runs = Vec::new();
    for store in stores.split(',').map(str::trim) {
        for &c in &connections {
            runs.push(run(&bin, store, c, seconds, wrk).await);
        }
    }
    // The ceiling: the same client against the receiver alone (what loopback HTTP and
    // this machine allow for one exchange; each webhook costs two).
    let ceiling = if wrk {
        let stop = tokio_util::sync::CancellationToken::new();
        let (hook_url, _rx) = start_receiver(stop.clone()).await;
        let base = hook_url.trim_end_matches("/hook").to_string();
        let c = connections.last().copied().unwrap_or(64);
        let dir = tempfile::tempdir().expect("temp dir");
        let load = tokio::task::spawn_blocking(move || load_wrk(&base, c, seconds, dir.path()))
            .await
            .expect("wrk");
        stop.cancel();
        Some((c, load.accepted as f64 / seconds as f64))
    } else {
        None
    };
    println!();
    println!("{}", speed.line_until_now());
    if let Some((c, per_s)) = ceiling {
        println!(
            "ceiling:     the same wrk against the receiver alone, {c} connections: {per_s:.0} POST/s"
        );
    }
    println!(
        "{} CPUs, load average at start {load}; client {}; FRONTDOOR_SECONDS={seconds}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if wrk { "wrk -t1" } else { "in-tree" }
    );
    println!(
        "| store | connections | webhooks/s | ingest p50 / p99 | server CPU per webhook | peak RSS | lost | doubled |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {:.0} | {:.1} / {:.1} ms | {:.0} µs | {:.0} MiB | {} | {} |",
            r.store,
            r.connections,
            r.webhooks_per_s,
            r.p50_ms,
            r.p99_ms,
            r.cpu_us_per_webhook,
            r.peak_rss_mib,
            r.lost,
            r.doubled
        );
    }
    let failures: HashMap<String, (usize, usize)> = runs
        .iter()
        .filter(|r| r.lost + r.doubled > 0)
        .map(|r| {
            (
                format!("{} c{}", r.store, r.connections),
                (r.lost, r.doubled),
            )
        })
        .collect();
    assert!(failures.is_empty(), "lost or doubled: {failures:?}");
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(main_async());
}
