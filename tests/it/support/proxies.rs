//! Real proxies from Debian's packages, started by the tests on loopback ports: tinyproxy (an
//! HTTP forward proxy, optionally with Basic credentials), dante (a SOCKS5 server that logs
//! every connection) and microsocks (a SOCKS5 server with user/password that connects out
//! from 127.0.0.2, so the target sees the proxy, not the client). Without the binaries the
//! tests say so and skip, except under `CI=true` (`.ci/run` installs them).

use super::free_port;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proxy {
    child: Child,
    pub port: u16,
    log: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// The proxy's own log.
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }
}

fn find(binary: &str, package: &str) -> Option<PathBuf> {
    let found = ["/usr/bin", "/usr/sbin"]
        .iter()
        .map(|dir| PathBuf::from(dir).join(binary))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{binary} is required under CI=true (apt-get install -y {package})"
        );
        eprintln!("SKIPPED: {binary} is not installed (apt-get install -y {package})");
    }
    found
}

/// Starts `command`, a proxy that will listen on `port`, and waits until it does.
fn start(mut command: Command, port: u16, log: Option<PathBuf>, dir: tempfile::TempDir) -> Proxy {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(port, &mut child);
    Proxy {
        child,
        port,
        log,
        _dir: dir,
    }
}

fn wait_for(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "the proxy on port {port} exited"
        );
        assert!(
            Instant::now() < deadline,
            "the proxy on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// tinyproxy, with Basic credentials when `auth` is given.
pub fn tinyproxy(auth: Option<(&str, &str)>) -> Option<Proxy> {
    let binary = find("tinyproxy", "tinyproxy")?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("tinyproxy.log");
    let mut config = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\n\
         MaxClients 64\nAllow 127.0.0.1\nDisableViaHeader Yes\n",
        log.display()
    );
    if let Some((user, password)) = auth {
        let _ = writeln!(config, "BasicAuth {user} {password}");
    }
    let config_path = dir.path().join("tinyproxy.conf");
    std::fs::write(&config_path, config).unwrap();
    let mut command = Command::new(binary);
    command.arg("-d").arg("-c").arg(&config_path);
    Some(start(command, port, Some(log), dir))
}

/// dante, without authentication, logging every connection.
pub fn dante() -> Option<Proxy> {
    let binary = find("danted", "dante-server")?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("danted.log");
    let config = format!(
        "logoutput: {}\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
         socksmethod: none\nclientmethod: none\nuser.privileged: root\n\
         user.unprivileged: nobody\n\
         client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect disconnect }}\n\
         socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect disconnect }}\n",
        log.display()
    );
    let config_path = dir.path().join("danted.conf");
    std::fs::write(&config_path, config).unwrap();
    let mut command = Command::new(binary);
    command.arg("-f").arg(&config_path).args(["-N", "1"]);
    Some(start(command, port, Some(log), dir))
}

/// microsocks with a user and password, connecting out from 127.0.0.2.
pub fn microsocks(user: &str, password: &str) -> Option<Proxy> {
    let binary = find("microsocks", "microsocks")?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = Command::new(binary);
    command
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-u",
            user,
            "-P",
            password,
        ])
        .args(["-b", "127.0.0.2"]);
    Some(start(command, port, None, dir))
}
