//! Just enough W3C WebDriver, spoken over reqwest to Debian's `chromedriver`, to drive
//! headless Chromium through the console: open a page, find, type, click, read, run a
//! script, take a screenshot. Each browser is its own chromedriver process (and its
//! own Chromium profile in a fresh directory), ended when the `Browser` is dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a wait for the page may take on a loaded two-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The W3C key code of Enter.
pub const ENTER: &str = "\u{E007}";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends chromedriver and the Chromium it started: the process group it leads.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

/// A WebDriver element reference.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Element {
    /// From a script's answer: `{"element-6066-11e4-a52e-4f735466cecf": id}`.
    fn from_value(v: &Value) -> Element {
        let id = v
            .get("element-6066-11e4-a52e-4f735466cecf")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("not an element reference: {v}"));
        Element(id.to_string())
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a window of `width` x `height`
    /// and the browser's time zone set to `time_zone`. Panics with what to install when
    /// either binary is missing: the browser tests must run, not pass by skipping.
    pub async fn start(width: u32, height: u32, time_zone: &str) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the console's browser tests need Debian's chromium and \
                 chromedriver (apt-get install -y chromium chromium-driver; .ci/run installs them)"
            );
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg("--port=0")
            .env("TZ", time_zone)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut driver = command.spawn().expect("chromedriver starts");
        // "ChromeDriver was started successfully on port 36327." Its output is read to
        // the end on a thread of its own, so chromedriver never writes into a full pipe.
        let stdout = driver.stdout.take().expect("stdout");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((_, rest)) = line.split_once("started successfully on port ") {
                    let _ = port_tx.send(rest.trim_end_matches('.').trim().parse::<u16>());
                }
            }
        });
        let port = port_rx
            .recv_timeout(PATIENCE)
            .expect("chromedriver says its port")
            .expect("a port number");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            "--lang=en-GB".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let created = browser
            .command(
                reqwest::Method::POST,
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                    "goog:loggingPrefs": {"browser": "ALL"},
                }}})),
            )
            .await
            .unwrap_or_else(|e| panic!("a Chromium session starts: {e}"));
        browser.session = created["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        browser
    }

    /// One WebDriver command; Err carries the driver's error.
    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut req = self.http.request(method, url);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        let status = res.status();
        let text = res.text().await.map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if status.is_success() {
            Ok(value["value"].clone())
        } else {
            Err(format!("{status}: {}", value["value"]))
        }
    }

    async fn must(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.command(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.must(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.must(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Polls `script` until it returns something other than null or false, then returns
    /// that; panics after [`PATIENCE`] saying what it waited for.
    pub async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = self.run(script, args.clone()).await;
            if !(v.is_null() || v == Value::Bool(false)) {
                return v;
            }
            if Instant::now() > deadline {
                let text = self.run("return document.body.innerText", json!([])).await;
                panic!("timed out waiting for {what}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the visible text of the page contains `text`.
    pub async fn wait_for_text(&self, text: &str) {
        self.wait_for(
            &format!("the text {text:?}"),
            "return document.body.innerText.includes(arguments[0])",
            json!([text]),
        )
        .await;
    }

    /// The element matching a CSS selector, once it exists and is displayed.
    pub async fn find(&self, css: &str) -> Element {
        let v = self
            .wait_for(
                &format!("a visible {css}"),
                "const e = document.querySelector(arguments[0]);
                 return e && e.checkVisibility() ? e : null;",
                json!([css]),
            )
            .await;
        Element::from_value(&v)
    }

    /// The button labelled `label` inside the first element matching `scope` (a table
    /// row, a section), once it is there, displayed and enabled.
    pub async fn button_in(&self, scope: &str, label: &str) -> Element {
        let v = self
            .wait_for(
                &format!("an enabled {label:?} button in {scope}"),
                "const s = document.querySelector(arguments[0]);
                 const b = s && [...s.querySelectorAll('button')]
                   .find(b => b.textContent.trim() === arguments[1]);
                 return b && !b.disabled && b.checkVisibility() ? b : null;",
                json!([scope, label]),
            )
            .await;
        Element::from_value(&v)
    }

    /// Types `text` into an element (WebDriver "send keys": it focuses the element).
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.must(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn clear(&self, e: &Element) {
        self.must(
            reqwest::Method::POST,
            &format!("/element/{}/clear", e.0),
            Some(json!({})),
        )
        .await;
    }

    pub async fn click(&self, e: &Element) {
        self.must(
            reqwest::Method::POST,
            &format!("/element/{}/click", e.0),
            Some(json!({})),
        )
        .await;
    }

    /// The browser console's messages since the last call (chromedriver's log).
    pub async fn console_messages(&self) -> Vec<String> {
        let v = self
            .must(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .map(|m| format!("{} {}", m["level"], m["message"]))
            .collect()
    }

    /// Whether a JavaScript dialog (`alert`, `confirm`) is open.
    pub async fn alert_open(&self) -> bool {
        self.command(reqwest::Method::GET, "/alert/text", None)
            .await
            .is_ok()
    }

    /// Emulates `prefers-color-scheme` through the DevTools protocol.
    pub async fn color_scheme(&self, scheme: &str) {
        self.must(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Emulation.setEmulatedMedia",
                "params": {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
            })),
        )
        .await;
    }

    /// Saves a PNG of the viewport as `dir/name.png` and returns its path.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let v = self.must(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .expect("valid base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Ends the session (Chromium closes); chromedriver ends on drop.
    pub async fn close(self) {
        let _ = self.command(reqwest::Method::DELETE, "", None).await;
    }
}
