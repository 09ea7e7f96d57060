//! Real webhook receivers and a tiny SMTP sink on 127.0.0.1, for delivery tests.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
    /// When it arrived (real time).
    pub at: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// How a receiver answers one request.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Hold the answer until `Receiver::release` is called.
    pub hold: bool,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            headers: vec![],
            hold: false,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn held(mut self) -> Self {
        self.hold = true;
        self
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Option<Answer>>,
    release: Notify,
    flaky: Mutex<Option<Flaky>>,
    /// How long each answer waits before it goes (a slow receiver).
    delay: Mutex<Duration>,
}

/// Answers 500 to the first attempt of a share of the webhooks (by `webhook-id`),
/// drawn from a seeded generator; every later attempt of any webhook gets the default.
struct Flaky {
    share: f64,
    rng: rand::rngs::StdRng,
    seen: std::collections::HashSet<String>,
}

/// An HTTP server on 127.0.0.1 that records every request and answers from a script
/// (then 200).
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    started: std::time::Instant,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let shared = Arc::new(Shared::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = shared.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { answer(state, uri.path().to_string(), headers, body).await }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            shared,
            task,
            started: std::time::Instant::now(),
        }
    }

    /// When it started: a reference for the instants it reports.
    pub fn started(&self) -> std::time::Instant {
        self.started
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The next answers, in order; after them, the default (200 unless set).
    pub fn script(&self, answers: Vec<Answer>) {
        self.shared.script.lock().expect("lock").extend(answers);
    }

    pub fn set_default(&self, answer: Answer) {
        *self.shared.default.lock().expect("lock") = Some(answer);
    }

    /// Answers 500 to the first attempt of about `share` of the webhooks, drawn with
    /// `seed`; 200 (or the default) to everything else.
    pub fn fail_first_attempts(&self, share: f64, seed: u64) {
        use rand::SeedableRng as _;
        *self.shared.flaky.lock().expect("lock") = Some(Flaky {
            share,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            seen: Default::default(),
        });
    }

    /// Every answer waits `d` before it goes.
    pub fn answer_after(&self, d: Duration) {
        *self.shared.delay.lock().expect("lock") = d;
    }

    /// Lets every held request answer.
    pub fn release(&self) {
        self.shared.release.notify_waiters();
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Waits (bounded) until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(&format!("{n} requests at {}", self.addr), || async {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

async fn answer(state: Arc<Shared>, path: String, headers: HeaderMap, body: Bytes) -> Response {
    let at = std::time::Instant::now();
    let flaky_failure = {
        use rand::Rng as _;
        let id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        match state.flaky.lock().expect("lock").as_mut() {
            Some(f) => f.seen.insert(id) && f.rng.random_bool(f.share),
            None => false,
        }
    };
    let answer = {
        let next = state.script.lock().expect("lock").pop_front();
        next.or_else(|| state.default.lock().expect("lock").clone())
            .unwrap_or(Answer::status(200))
    };
    let answer = if flaky_failure {
        Answer::status(500)
    } else {
        answer
    };
    let received = Received {
        path: path.clone(),
        headers,
        body: body.to_vec(),
        status: answer.status,
        at,
    };
    if answer.hold {
        let released = state.release.notified();
        state.received.lock().expect("lock").push(received);
        released.await;
    } else {
        state.received.lock().expect("lock").push(received);
    }
    let delay = *state.delay.lock().expect("lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut res = (
        StatusCode::from_u16(answer.status).expect("status"),
        "receiver says hi",
    )
        .into_response();
    for (k, v) in answer.headers {
        res.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            v.parse().expect("value"),
        );
    }
    res
}

/// Polls `f` until it returns Some, for at most 15 s of real time.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..1500 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A mail received by the SMTP sink.
#[derive(Clone, Debug, Default)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// Speaks just enough SMTP to accept mail: 220, EHLO/HELO → 250, MAIL/RCPT → 250,
/// DATA → 354, "." → 250, QUIT → 221.
pub struct SmtpSink {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mails = Arc::new(Mutex::new(Vec::new()));
        let store = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = session(stream, store).await;
                });
            }
        });
        SmtpSink { addr, mails, task }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("lock").clone()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        eventually(&format!("{n} mails"), || async {
            let got = self.mails();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut mail = Mail::default();
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write.write_all(b"250 sink\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = line[10..].trim().to_string();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(line[8..].trim().to_string());
            write.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            while let Some(data) = lines.next_line().await? {
                if data == "." {
                    break;
                }
                mail.data.push_str(&data);
                mail.data.push('\n');
            }
            store.lock().expect("lock").push(std::mem::take(&mut mail));
            write.write_all(b"250 OK queued\r\n").await?;
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 OK\r\n").await?;
        }
    }
    Ok(())
}
