//! The real `duehook` binary as systemd runs it: a subprocess with a config file, a
//! SQLite store and a manual clock, telling a notify socket this test owns what it
//! does, and stopped with real signals. Also `duehook migrate` and the shipped unit file.
//!
//! Waits are bounded polls on conditions (a datagram, an exit status, a line of
//! output), never sleeps followed by assertions about time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support;

const BIN: &str = env!("CARGO_BIN_EXE_duehook");
const TOKEN: &str = "service-test-token-0123456789";
/// Upper bound of every wait. Generous: the machine may be busy compiling; a healthy
/// run takes a fraction of it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A port that was free a moment ago: bind port 0, read the port, close the socket.
/// The service is told the number itself (`DUEHOOK_SERVER_LISTEN`), because with
/// port 0 nobody outside the process could learn which port it got.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

#[derive(Default)]
struct Options {
    shutdown_timeout: &'static str,
    /// Start with the placeholder token of the shipped config.toml instead of [`TOKEN`].
    placeholder_token: bool,
    /// `WATCHDOG_USEC` to set, with `WATCHDOG_PID` naming the service's own pid.
    watchdog_usec: Option<u64>,
}

/// A running `duehook serve` and the systemd notify socket it reports to.
struct Service {
    child: Child,
    notify: UnixDatagram,
    /// Every notify datagram received so far, in order.
    messages: Vec<String>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Service {
    fn start(opts: Options) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = if opts.placeholder_token {
            duehook::config::PLACEHOLDER_TOKEN
        } else {
            TOKEN
        };
        write_config(dir.path(), opts.shutdown_timeout, token);
        let (child, notify, port) = launch(dir.path(), opts.watchdog_usec);
        Service {
            child,
            notify,
            messages: Vec::new(),
            port,
            dir,
        }
    }

    /// Once the service has exited: a new `duehook serve` on the same directory
    /// (same config, same store).
    fn restart(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(Some(_))),
            "restart of a running service"
        );
        (self.child, self.notify, self.port) = launch(self.dir.path(), None);
        self.messages.clear();
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default()
    }

    /// Waits for a notify datagram holding the line `line` (e.g. `READY=1`), or a line
    /// starting with `line` when `prefix`; returns that line. Datagrams already seen
    /// count too.
    fn expect_line(&mut self, line: &str, prefix: bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let matches = |l: &str| {
            if prefix {
                l.starts_with(line)
            } else {
                l == line
            }
        };
        if let Some(found) = self
            .messages
            .iter()
            .flat_map(|m| m.lines())
            .find(|l| matches(l))
        {
            return found.to_string();
        }
        let mut buf = vec![0u8; 64 * 1024];
        while Instant::now() < deadline {
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let found = msg.lines().find(|l| matches(l)).map(str::to_string);
                    self.messages.push(msg);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "duehook exited ({status}) before sending {line}; got {:?}\n{}",
                            self.messages,
                            self.log()
                        );
                    }
                }
                Err(e) => panic!("notify socket: {e}"),
            }
        }
        panic!(
            "no {line} within {PATIENCE:?}; got {:?}\n{}",
            self.messages,
            self.log()
        );
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for duehook") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("duehook did not exit within {PATIENCE:?}\n{}", self.log());
    }

    /// Starts `PUT /v1/contacts/{id}` and returns once the handler is reading the
    /// body, which the test never finishes sending: a request held in flight. The
    /// proof that it reached the handler is `100 Continue`, which the server sends
    /// only when the handler first asks for the body.
    fn hold_request_in_flight(&self, id: &str) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to API");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        write!(
            stream,
            "PUT /v1/contacts/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
        )
        .expect("send request head");
        let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
        let mut status_line = String::new();
        reader
            .read_line(&mut status_line)
            .expect("read interim response");
        assert!(
            status_line.starts_with("HTTP/1.1 100"),
            "expected 100 Continue, got {status_line:?}"
        );
        stream
            .write_all(br#"{"name": "Ada"#)
            .expect("send part of the body");
        stream
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `duehook serve` on `dir/config.toml` with a fresh notify socket in `dir`
/// and a free port.
fn launch(dir: &Path, watchdog_usec: Option<u64>) -> (Child, UnixDatagram, u16) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("output.log"))
        .expect("log file");
    let socket_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let notify = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("socket timeout");
    let port = free_port();

    let mut cmd = match watchdog_usec {
        // WATCHDOG_PID must be the service's pid, unknown before it starts: let a
        // shell export its own pid and then become the service.
        Some(_) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(r#"WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@""#)
                .arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env_remove("WATCHDOG_PID")
        .env_remove("WATCHDOG_USEC")
        .env_remove("RUST_LOG")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("DUEHOOK_SERVER_LISTEN", format!("127.0.0.1:{port}"))
        .env("DUEHOOK_CLOCK_MODE", "manual")
        .stdin(Stdio::null())
        // Logs go to stdout, notices to stderr: one file keeps them in order.
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    if let Some(usec) = watchdog_usec {
        cmd.env("WATCHDOG_USEC", usec.to_string());
    }
    let child = cmd.spawn().expect("duehook starts");
    (child, notify, port)
}

fn write_config(dir: &Path, shutdown_timeout: &str, token: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let db = dir.join("duehook.db");
    let shutdown = if shutdown_timeout.is_empty() {
        String::new()
    } else {
        format!("shutdown_timeout = \"{shutdown_timeout}\"\n")
    };
    std::fs::write(
        &path,
        format!(
            "[server]\n{shutdown}\n[store]\nurl = \"sqlite://{}\"\n\n[clock]\nstart = \"2030-03-01T08:00:00Z\"\n\n[auth]\ntokens = [\"{token}\"]\n",
            db.display()
        ),
    )
    .expect("write config");
    path
}

/// A plain HTTP/1.1 GET (with the token); returns the status code.
fn http_get(port: u16, path: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to API");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

#[test]
fn ready_then_sigterm_stops_gracefully_with_status_0() {
    let mut svc = Service::start(Options::default());
    svc.expect_line("READY=1", false);
    let status = svc.expect_line("STATUS=serving on", true);
    assert!(
        status.contains(&format!("127.0.0.1:{}", svc.port)) && status.contains("manual clock"),
        "{status}"
    );
    // READY means the store is migrated and the API answers.
    assert_eq!(http_get(svc.port, "/readyz"), 200);

    svc.signal("TERM");
    svc.expect_line("STOPPING=1", false);
    let status = svc.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", svc.log());
    svc.expect_line("STATUS=stopped cleanly", false);
    // Without WATCHDOG_USEC nobody asked for pings.
    assert!(
        !svc.messages.iter().any(|m| m.contains("WATCHDOG=1")),
        "{:?}",
        svc.messages
    );
}

/// The lines a new user reads first: where it listens, on which store, on which clock;
/// nothing from the libraries underneath. A clean stop leaves only the database.
#[test]
fn first_lines_say_where_it_listens_on_what_and_a_clean_stop_leaves_no_lock_file() {
    let mut svc = Service::start(Options::default());
    svc.expect_line("READY=1", false);
    let log = svc.log();
    let db = svc.dir.path().join("duehook.db");
    let listening = log
        .lines()
        .find(|l| l.contains("listening on"))
        .unwrap_or_else(|| panic!("no line says where it listens:\n{log}"));
    for part in [
        format!("http://127.0.0.1:{}", svc.port),
        format!("store sqlite://{}", db.display()),
        "manual clock at 2030-03-01T08:00:00".to_string(),
    ] {
        assert!(
            listening.contains(&part),
            "{part:?} missing from {listening:?}"
        );
    }
    assert!(
        !log.contains("placeholder token"),
        "no placeholder warning with a token of our own:\n{log}"
    );
    let lock = svc.dir.path().join("duehook.db.lock");
    assert!(lock.exists(), "the single-node lock is held while serving");

    svc.signal("TERM");
    assert_eq!(svc.wait_exit().code(), Some(0), "{}", svc.log());
    assert!(!lock.exists(), "a clean stop removes the lock file");
    // `<time> <LEVEL> <target>: <message>`: every line of the run, start to stop.
    let log = svc.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let target = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            target.starts_with("duehook"),
            "a line not from duehook at the default level: {line:?}\n{log}"
        );
    }
    let mut left: Vec<String> = std::fs::read_dir(svc.dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["config.toml", "duehook.db", "notify.sock", "output.log"],
        "only the database beside what the test made"
    );
}

#[test]
fn the_placeholder_token_is_named_in_a_warning_at_start() {
    let mut svc = Service::start(Options {
        placeholder_token: true,
        ..Options::default()
    });
    svc.expect_line("READY=1", false);
    let log = svc.log();
    let warning = log
        .lines()
        .find(|l| l.contains("placeholder token"))
        .unwrap_or_else(|| panic!("no placeholder warning:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains(duehook::config::PLACEHOLDER_TOKEN),
        "{warning}"
    );
    svc.signal("TERM");
    assert_eq!(svc.wait_exit().code(), Some(0), "{}", svc.log());
}

#[test]
fn second_signal_during_a_slow_shutdown_exits_130_at_once() {
    // A deadline far beyond PATIENCE: only the second signal can end this shutdown
    // in time, so exit status 130 (not 0, not a timeout) proves it did.
    let mut svc = Service::start(Options {
        shutdown_timeout: "10m",
        ..Options::default()
    });
    svc.expect_line("READY=1", false);
    let _held = svc.hold_request_in_flight("c-held");

    svc.signal("TERM");
    svc.expect_line("STOPPING=1", false);
    svc.signal("INT");
    let status = svc.wait_exit();
    assert_eq!(status.code(), Some(130), "{}", svc.log());
    assert!(svc.log().contains("second signal"), "{}", svc.log());
}

#[test]
fn shutdown_deadline_aborts_held_work_names_it_and_exits_0() {
    let mut svc = Service::start(Options {
        shutdown_timeout: "1s",
        ..Options::default()
    });
    svc.expect_line("READY=1", false);
    let _held = svc.hold_request_in_flight("c-held");

    svc.signal("TERM");
    svc.expect_line("STOPPING=1", false);
    let status = svc.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", svc.log());
    let aborted = svc.expect_line("STATUS=stopped at the deadline; aborted:", true);
    assert!(aborted.contains("HTTP server"), "{aborted}");
    let log = svc.log();
    assert!(
        log.contains("still running at the shutdown deadline") && log.contains("HTTP server"),
        "{log}"
    );

    // The held request never committed, and the store opens cleanly again: a second
    // run becomes ready on the same file and knows nothing of the contact.
    svc.restart();
    svc.expect_line("READY=1", false);
    assert_eq!(
        http_get(svc.port, "/v1/contacts/c-held"),
        404,
        "{}",
        svc.log()
    );
    svc.signal("TERM");
    assert_eq!(svc.wait_exit().code(), Some(0), "{}", svc.log());
}

#[test]
fn watchdog_pings_arrive_when_systemd_asks_for_them() {
    let mut svc = Service::start(Options {
        watchdog_usec: Some(2_000_000),
        ..Options::default()
    });
    svc.expect_line("READY=1", false);
    svc.expect_line("WATCHDOG=1", false);
    assert!(
        svc.log().contains("systemd watchdog enabled"),
        "{}",
        svc.log()
    );
    svc.signal("TERM");
    svc.expect_line("STOPPING=1", false);
    assert_eq!(svc.wait_exit().code(), Some(0), "{}", svc.log());
}

/// `duehook migrate` on `config`, which must succeed; returns its stdout.
fn migrate(config: &Path) -> String {
    let out = Command::new(BIN)
        .arg("migrate")
        .arg("--config")
        .arg(config)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run duehook migrate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn migrate_names_each_migration_it_applies_and_counts_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "", TOKEN);
    let first = migrate(&config);
    assert!(first.contains("applying 1/"), "{first}");
    assert!(first.contains(": 1 init"), "{first}");
    let applied = first.lines().filter(|l| l.starts_with("applying ")).count();
    assert!(
        first.contains(&format!("{applied} migration(s) applied")),
        "{first}"
    );

    let second = migrate(&config);
    assert!(second.contains("no pending migrations"), "{second}");
    assert!(!second.contains("applying"), "{second}");
}

#[test]
fn shipped_unit_file_passes_systemd_analyze_verify() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/duehook.service");
    let text = std::fs::read_to_string(&unit).expect("deploy/duehook.service exists");
    for required in [
        "Type=notify",
        "WatchdogSec=",
        "KillMode=mixed",
        "DynamicUser=yes",
        "StateDirectory=duehook",
    ] {
        assert!(text.contains(required), "unit lacks {required}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-analyze is not installed, so the unit file was not verified");
        return;
    }
    // verify insists that ExecStart's binary exists: point a copy at the one just built.
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("duehook.service");
    std::fs::write(&copy, text.replace("/usr/bin/duehook", BIN)).expect("write unit copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown or malformed directives are only warnings ("…, ignoring") with status 0,
    // so any line about our unit counts as a failure.
    let ours: Vec<&str> = output.lines().filter(|l| l.contains("duehook")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{output}",
        out.status
    );
}

/// Polls `cond` until it holds, at most [`PATIENCE`] (yielding to the app's tasks).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The watchdog watches the real scheduler driver: it parks while waiting, beats when
/// woken to work, and reports its end when its task is gone (here: a crash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_follows_the_scheduler_driver() {
    let Some(app) = support::TestApp::spawn(support::Backend::Sqlite).await else {
        return;
    };
    let heartbeat = app.app().heartbeat();
    eventually("driver parks", || heartbeat.pulse().parked).await;
    let before = heartbeat.pulse().beats;

    // A timer inside the horizon wakes the driver; firing it takes more turns.
    let r = app
        .put(
            "/v1/items/cam-1",
            serde_json::json!({"name": "Camera", "expires_at": "2030-03-01T08:05:00Z"}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    app.advance(600).await;
    assert!(
        app.event_types().await.iter().any(|t| t == "item.expire"),
        "the timer fired"
    );
    let pulse = heartbeat.pulse();
    assert!(pulse.beats > before && !pulse.ended, "{pulse:?}");

    let mut app = app;
    if let Some(running) = app.app.take() {
        running.abort();
    }
    eventually("driver reports its end", || heartbeat.pulse().ended).await;
}

/// The configuration the Debian package installs as `/etc/duehook/config.toml`: valid,
/// with the SQLite store in the unit's state directory.
#[test]
fn packaged_config_is_valid_and_keeps_the_store_in_the_state_directory() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.toml");
    let text = std::fs::read_to_string(&path).expect("deploy/config.toml exists");
    let config = duehook::config::Config::from_layers(
        Some((path.display().to_string(), text)),
        std::iter::empty(),
    )
    .expect("the packaged config is valid");
    assert_eq!(config.store.url, "sqlite:///var/lib/duehook/duehook.db");
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/duehook.service"),
    )
    .expect("unit");
    assert!(
        unit.contains("StateDirectory=duehook"),
        "the unit creates /var/lib/duehook"
    );
    assert!(unit.contains("--config /etc/duehook/config.toml"), "{unit}");
}
