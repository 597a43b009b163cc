//! Shared test helpers: the in-process server, a downloader tuned for tests, the real binary.

pub mod crashfs;
pub mod daemon;
pub mod nginx;
pub mod proxies;
pub mod server;
pub mod sim;
pub mod slurm;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use haul::Downloader;

/// A downloader with test-friendly retry timing.
pub fn fast_downloader() -> haul::DownloaderBuilder {
    Downloader::builder()
        .retry_delay(Duration::from_millis(10))
        .max_retry_wait(Duration::from_millis(100))
        .stall_timeout(Duration::from_secs(5))
}

/// What most tests need: the in-process server, a fresh directory, and a downloader with
/// test-friendly retry timing, in one line.
pub struct Fixture {
    pub server: server::TestServer,
    pub dir: tempfile::TempDir,
    pub downloader: Downloader,
}

impl Fixture {
    pub async fn new() -> Self {
        Self::with(fast_downloader()).await
    }

    /// With a downloader built from `builder`.
    pub async fn with(builder: haul::DownloaderBuilder) -> Self {
        Self {
            server: server::TestServer::start().await,
            dir: tempfile::tempdir().expect("a temporary directory"),
            downloader: builder.build().expect("a downloader"),
        }
    }

    /// A request for `/files/SIZE/NAME?query` saved into the fixture's directory.
    pub fn request(&self, size: u64, name: &str, query: &str) -> haul::Request {
        haul::Request::new(&self.server.file_url(size, name, query))
            .expect("a valid URL")
            .into_dir(self.dir.path())
    }

    /// The path of `name` in the fixture's directory.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// A loopback port nothing listens on (bound, then given back): for a server the test starts
/// itself, or for a connection that must be refused.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.local_addr().expect("its address").port()
}

/// The real `haul` binary.
/// Whether `check` (a command) succeeds: a tool a test needs is installed. Under `CI=true` it
/// must be (`.ci/run` installs it); elsewhere the caller skips, saying so.
pub fn tool(what: &str, check: &mut Command) -> bool {
    let present = check
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is needed under CI=true (see .ci/run)"
        );
        eprintln!("SKIPPED: {what} is not installed");
    }
    present
}

pub fn haul() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_haul"));
    // A developer's own configuration file never changes a test.
    command.env_remove("NO_COLOR").arg("--no-config");
    command
}

/// The real `haul` binary with `args`, under an open-file limit of `limit` (`ulimit -n`).
pub fn haul_with_open_file_limit(limit: u32) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$@\""))
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_haul"))
        .arg("--no-config");
    command
}

/// A file's modification time, in seconds since the Unix epoch.
pub fn mtime(path: &Path) -> u64 {
    std::fs::metadata(path)
        .expect("the file is there")
        .modified()
        .expect("a modification time")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Runs the binary off the async workers (the test server shares the runtime).
pub async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("run haul"))
        .await
        .expect("join")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The JSON events a `--json` run printed on stdout, one per line (a line that is not JSON
/// fails the test: stdout is for events only).
pub fn json_events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// Names of the entries of `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The bytes a `.part` file holds from offset 0, as its resume state says (the `.part` itself
/// may be preallocated to the full length).
pub fn resumable_prefix(part_state: &Path) -> u64 {
    let text = std::fs::read_to_string(part_state).expect("a resume state file");
    let state: serde_json::Value = serde_json::from_str(&text).expect("a JSON state");
    match state["done"].as_array().and_then(|d| d.first()) {
        Some(range) if range[0] == 0 => range[1].as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// A tmpfs of a few MiB mounted for the test (needs root; says so and skips otherwise).
pub struct SmallDisk {
    pub dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> Option<Self> {
        Self::mount_with(&format!("size={size}"))
    }

    /// A tmpfs mounted read-only: nothing can be written below it, root included.
    pub fn mount_read_only() -> Option<Self> {
        Self::mount_with("size=1m,ro")
    }

    fn mount_with(options: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        if !mounted {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root and must be able to mount a small tmpfs"
            );
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); full-disk test not run");
            return None;
        }
        Some(Self { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}
