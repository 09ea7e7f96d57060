//! The `duehook` binary as a real process: a config file of its own in a temp
//! directory, a fixed port, output to a log file whose tail failures print, and the
//! signals a service gets (SIGKILL for a crash, SIGTERM for a clean stop).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_duehook");
/// How long a start or a clean stop may take before the test gives up (the machine may
/// be busy compiling).
const PATIENCE: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("addr").port()
}

/// One `duehook serve` at a time on `dir/config.toml`, always on `port`.
pub struct Process {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    pub client: reqwest::Client,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Process {
    /// A process to be started on `config` (TOML); its HTTP client gives up after
    /// `timeout`.
    pub fn new(config: &str, timeout: Duration) -> Process {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        Process {
            child: None,
            dir,
            port: free_port(),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The last 40 lines of its output.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Starts it with `env` added and returns the instant `/readyz` first answered 200.
    pub async fn start(&mut self, env: &[(&str, String)]) -> Instant {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("output.log"))
            .expect("log file");
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(self.config())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            // Info: if a start hangs, the tail of its log says in which step.
            .env("RUST_LOG", "info")
            .env("DUEHOOK_SERVER_LISTEN", format!("127.0.0.1:{}", self.port))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("duehook starts");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("duehook exited ({status}) while starting\n{}", self.log());
            }
            if self.ready().await == Some(200) {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {PATIENCE:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET /readyz`'s status, None when nothing answers within 5 s.
    pub async fn ready(&self) -> Option<u16> {
        let r = self
            .client
            .get(self.url("/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        Some(r.status().as_u16())
    }

    /// SIGKILL, and wait until the process is gone; returns the instant it was sent.
    pub fn kill(&mut self) -> Instant {
        let at = Instant::now();
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
        at
    }

    /// SIGTERM, and wait (bounded) until the process has exited with status 0.
    pub fn terminate(&mut self) {
        let mut c = self.child.take().expect("running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                assert!(status.success(), "{status}\n{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "no exit\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
