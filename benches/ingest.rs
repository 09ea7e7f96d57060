//! Messages in, webhooks out: the comparison with a webhook service such as
//! Svix, measured the way one measures those — clients pushing messages over HTTP as
//! fast as they are answered (closed loop, like `wrk` with C connections), a minimal
//! receiver on 127.0.0.1, one endpoint subscribed to `*` with Standard Webhooks
//! signing. No timers: every message is an immediate event (`POST /v1/events`).
//!
//! Run: `cargo bench --bench ingest`. Parameters (environment):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `INGEST_MESSAGES` | 50000 | messages posted in all |
//! | `INGEST_CLIENTS` | 64 | clients posting concurrently, each waiting for its answer |
//! | `INGEST_STORE` | `sqlite` | `sqlite` (a temp file) or a `postgres://` URL where the bench may create (and then drops) its own database |
//! | `INGEST_ORDERING` | `none` | the endpoint's `ordering`; a list (`none,entity,endpoint`) runs each in turn, each on a fresh store |
//! | `INGEST_ENTITIES` | 1000 | distinct bookings the messages are about (message n is about booking n mod this) |
//!
//! Any `DUEHOOK_<SECTION>_<KEY>` variable overrides the service configuration. Reported:
//! messages accepted per second; signed webhooks received per second end to end (from
//! the first POST to the last webhook); the latency from each POST to its webhook;
//! lost and doubled webhooks (asserted: none), signatures of a sample (asserted).

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use duehook::App;
use duehook::clock::{SharedClock, SystemClock};
use serde_json::json;
use support::{
    BenchStore, CpuTicks, MachineSpeed, config, create_endpoint, env_usize, loadavg, memory_mib,
    post_booking, spread, start_receiver,
};

const TOKEN: &str = "ingest-bench-token-0123456789";
/// Give up waiting when nothing new arrived at the receiver for this long.
const QUIET: Duration = Duration::from_secs(30);

/// One accepted message: its event id, when its POST was sent (µs since the epoch).
struct Posted {
    id: String,
    sent_us: i64,
    /// The message's number (it is about booking `n` mod `INGEST_ENTITIES`).
    n: usize,
}

/// `clients` tasks post `messages` in all, each waiting for its answer before the next.
async fn push(
    base: &str,
    messages: usize,
    clients: usize,
    entities: usize,
) -> (Vec<Posted>, usize) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, next, base) = (http.clone(), next.clone(), base.to_string());
        tasks.spawn(async move {
            let mut posted = Vec::new();
            let mut failed = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= messages {
                    break;
                }
                let sent_us = Utc::now().timestamp_micros();
                let id = post_booking(&http, &base, TOKEN, (n % entities) as u64).await;
                match id {
                    Some(id) => posted.push(Posted { id, sent_us, n }),
                    None => failed += 1,
                }
            }
            (posted, failed)
        });
    }
    let mut all = Vec::with_capacity(messages);
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (posted, f) = done.expect("client task");
        all.extend(posted);
        failed += f;
    }
    (all, failed)
}

/// What one mode's run gave, for the closing comparison.
struct Outcome {
    ordering: String,
    webhooks_per_s: f64,
}

async fn run(ordering: &str) -> Outcome {
    let messages = env_usize("INGEST_MESSAGES", 50_000);
    let clients = env_usize("INGEST_CLIENTS", 64).max(1);
    let entities = env_usize("INGEST_ENTITIES", 1000).max(1);
    let store_spec = std::env::var("INGEST_STORE").unwrap_or_else(|_| "sqlite".into());
    let load = loadavg();
    let speed_at_start = MachineSpeed::read();
    let store = BenchStore::create(&store_spec).await;
    let config = config(store.url(), TOKEN);
    duehook::init_logging(&config.log);
    let clock: SharedClock = SystemClock::shared();
    let receiver_stop = tokio_util::sync::CancellationToken::new();
    let (hook_url, rx) = start_receiver(receiver_stop.clone()).await;
    let app = App::start(config.clone(), clock).await.expect("app");
    let created = create_endpoint(
        &reqwest::Client::new(),
        &app.url(),
        TOKEN,
        json!({"name": "ingest", "url": hook_url, "topics": ["*"], "ordering": ordering}),
    )
    .await;
    let secret = created["secret"].as_str().expect("secret").to_string();

    let t0 = Instant::now();
    let cpu_start = CpuTicks::read();
    let (posted, failed) = push(&app.url(), messages, clients, entities).await;
    let pushed = t0.elapsed();

    let mut last = 0;
    let mut last_change = Instant::now();
    let mut timed_out = false;
    while (rx.log.lock().expect("lock").seen.len()) < posted.len() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = rx.count.load(Ordering::Relaxed);
        if got != last {
            last = got;
            last_change = Instant::now();
        } else if last_change.elapsed() > QUIET {
            eprintln!(
                "  nothing arrived for {} s; giving up waiting",
                QUIET.as_secs()
            );
            timed_out = true;
            break;
        }
    }
    let cpu_done = CpuTicks::read();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (hwm, _) = memory_mib();
    app.shutdown().await;
    receiver_stop.cancel();
    let store_name = store.describe();
    store.drop_database().await;

    let (hits, sequences) = {
        let mut log = rx.log.lock().expect("lock");
        (
            std::mem::take(&mut log.hits),
            std::mem::take(&mut log.sequences),
        )
    };
    let mut arrivals: HashMap<&str, Vec<i64>> = HashMap::new();
    for (id, at) in &hits {
        arrivals.entry(id.as_str()).or_default().push(*at);
    }
    let lost = posted
        .iter()
        .filter(|p| !arrivals.contains_key(p.id.as_str()))
        .count();
    let doubled: usize = arrivals.values().map(|a| a.len() - 1).sum();
    let latency: Vec<f64> = posted
        .iter()
        .filter_map(|p| {
            let first = arrivals.get(p.id.as_str())?.iter().min()?;
            Some((first - p.sent_us) as f64 / 1000.0)
        })
        .collect();
    let first_sent = posted.iter().map(|p| p.sent_us).min().unwrap_or(0);
    let last_hit = hits.iter().map(|h| h.1).max().unwrap_or(0);
    let end_to_end = (last_hit - first_sent) as f64 / 1e6;
    let (sampled, bad) = rx.verify_samples(&secret);

    println!();
    println!("== duehook ingest benchmark (messages in, webhooks out) ==");
    println!("{}", speed_at_start.line_until_now());
    println!(
        "store {store_name}; {} CPUs, load average at start {load}; INGEST_MESSAGES={messages} INGEST_CLIENTS={clients} INGEST_ENTITIES={entities}; ordering {ordering}; max_connections {}, max_concurrent_sends {}, max_in_flight_per_endpoint {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        config.store.max_connections,
        config.delivery.max_concurrent_sends,
        config.delivery.max_in_flight_per_endpoint,
    );
    println!(
        "accepted:    {} messages in {:.2} s = {:.0}/s ({failed} failed)",
        posted.len(),
        pushed.as_secs_f64(),
        posted.len() as f64 / pushed.as_secs_f64()
    );
    println!(
        "delivered:   {} signed webhooks, first POST to last webhook {:.2} s = {:.0}/s end to end",
        hits.len(),
        end_to_end,
        hits.len() as f64 / end_to_end
    );
    println!(
        "latency:     POST sent -> webhook received: {}",
        spread(latency)
    );
    println!(
        "correctness: lost {lost}, doubled {doubled}; signatures verified {}/{}{}",
        sampled - bad,
        sampled,
        if timed_out { "; WAIT TIMED OUT" } else { "" }
    );
    println!(
        "cpu:         first POST to last webhook: {}",
        cpu_start.share_until(&cpu_done)
    );
    println!("memory:      peak RSS (VmHWM) {hwm:.0} MiB (bench, receiver and service together)");

    assert_eq!(failed, 0, "messages refused");
    assert_eq!(lost, 0, "webhooks lost");
    assert_eq!(doubled, 0, "webhooks doubled");
    assert_eq!(bad, 0, "signatures that do not verify");
    assert!(!timed_out, "the run did not finish");
    if ordering != "none" {
        let out_of_order = out_of_order(&posted, &hits, &sequences, ordering, entities);
        println!(
            "order:       {out_of_order} webhooks arrived before one written earlier in their key"
        );
        assert_eq!(out_of_order, 0, "webhooks out of order");
    }
    Outcome {
        ordering: ordering.to_string(),
        webhooks_per_s: hits.len() as f64 / end_to_end,
    }
}

/// Webhooks that reached the receiver after a later one of their key: message n is
/// about booking n mod `entities`, and `duehook-sequence` numbers the events in the
/// order they were written.
fn out_of_order(
    posted: &[Posted],
    hits: &[(String, i64)],
    sequences: &[i64],
    ordering: &str,
    entities: usize,
) -> usize {
    let key_of: HashMap<&str, usize> = posted
        .iter()
        .map(|p| {
            let key = if ordering == "endpoint" {
                0
            } else {
                p.n % entities
            };
            (p.id.as_str(), key)
        })
        .collect();
    let mut last: HashMap<usize, i64> = HashMap::new();
    let mut late = 0;
    for ((id, _), seq) in hits.iter().zip(sequences) {
        let Some(key) = key_of.get(id.as_str()) else {
            continue;
        };
        let before = last.entry(*key).or_insert(-1);
        if *seq <= *before {
            late += 1;
        }
        *before = (*before).max(*seq);
    }
    late
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let modes = std::env::var("INGEST_ORDERING").unwrap_or_else(|_| "none".into());
    let outcomes: Vec<Outcome> = modes
        .split(',')
        .map(|mode| rt.block_on(run(mode.trim())))
        .collect();
    if let Some(first) = outcomes.first().filter(|_| outcomes.len() > 1) {
        println!();
        println!("== ordering, same run ==");
        for o in &outcomes {
            println!(
                "{:<9} {:>7.0} webhooks/s  {:>5.0} % of {}",
                o.ordering,
                o.webhooks_per_s,
                100.0 * o.webhooks_per_s / first.webhooks_per_s,
                first.ordering
            );
        }
    }
}
