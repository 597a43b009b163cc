//! `haul daemon` started by a test on a free loopback port, with a secret, and a JSON-RPC
//! caller for it; and whether the real aria2 clients the tests use (aria2p, the `aria2` npm
//! package) are installed (under `CI=true` their absence fails the test).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const SECRET: &str = "s3cret-for-tests";

pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub root: PathBuf,
    log: PathBuf,
    http: reqwest::Client,
}

impl Daemon {
    /// Starts `haul daemon -d ROOT` with the test secret and `extra` arguments, and waits until
    /// it accepts connections.
    pub fn start(root: &Path, extra: &[&str]) -> Self {
        let port = super::free_port();
        let log = root.with_extension("daemon.log");
        let mut command = super::haul();
        command
            .arg("daemon")
            .arg("-d")
            .arg(root)
            .args(["--rpc-listen-port", &port.to_string()])
            .args([
                "--rpc-secret",
                SECRET,
                "--progress",
                "lines",
                "--retries",
                "2",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"));
        let child = command.spawn().expect("start haul daemon");
        let daemon = Self {
            child,
            port,
            root: root.to_path_buf(),
            log,
            http: haul::Downloader::client_builder()
                .build()
                .expect("an HTTP client"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the daemon did not listen: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/jsonrpc", self.port)
    }

    /// What the daemon printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// POSTs `body` as it is; the HTTP status and the parsed answer.
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self
            .http
            .post(self.url())
            .body(body)
            .send()
            .await
            .expect("the daemon answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (status, value)
    }

    /// Runs a client program against the daemon (a test's aria2p or Node script): its failure
    /// fails the test, with what the client and the daemon printed.
    pub async fn run_client(&self, what: &str, script: Command) {
        let output = super::run(script).await;
        assert!(
            output.status.success(),
            "{what} failed:\n{}\n{}\ndaemon:\n{}",
            String::from_utf8_lossy(&output.stdout),
            super::stderr(&output),
            self.log()
        );
    }

    /// Calls `aria2.METHOD` with the secret; the whole answer (`result` or `error`).
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let mut all = vec![json!(format!("token:{SECRET}"))];
        all.extend(params.as_array().cloned().unwrap_or_default());
        let body = json!({"jsonrpc": "2.0", "id": "t", "method": format!("aria2.{method}"), "params": all});
        self.post(body.to_string()).await.1
    }

    /// [`Self::call`]'s `result`; an error answer fails the test.
    pub async fn result(&self, method: &str, params: Value) -> Value {
        let answer = self.call(method, params).await;
        match answer.get("result") {
            Some(result) => result.clone(),
            None => panic!("aria2.{method} failed: {answer}"),
        }
    }

    /// A download's status string.
    pub async fn status(&self, gid: &str) -> Value {
        self.result("tellStatus", json!([gid])).await
    }

    /// Waits until `gid`'s status is `wanted`.
    pub async fn wait_status(&self, gid: &str, wanted: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status(gid).await;
            if status["status"] == wanted {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{gid} never became {wanted}: {status}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "SIGTERM did not stop the daemon");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// aria2p, the Python client (`pip install aria2p`).
pub fn aria2p_available() -> bool {
    super::tool(
        "aria2p",
        Command::new("python3").args(["-c", "import aria2p"]),
    )
}

/// The folder of the Node client's test (its `node_modules` installed by `.ci/run`).
pub fn node_client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/daemon")
}

/// Node and the `aria2` npm package (`npm install --prefix tests/daemon`).
pub fn node_aria2_available() -> bool {
    super::tool(
        "node with the aria2 npm package",
        Command::new("node")
            .args(["-e", "require('aria2')"])
            .current_dir(node_client_dir()),
    )
}
