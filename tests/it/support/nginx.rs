//! Debian's nginx, started by the tests themselves: a generated config in a temporary
//! directory, free loopback ports, `daemon off` under the test's control, killed on drop.
//! Serves plain HTTP (with a `limit_rate` location and an autoindex location) and HTTPS with
//! HTTP/2, using a private CA and a server certificate made with the `openssl` command.

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub https_port: u16,
    /// HTTPS that requires a client certificate signed by the private CA.
    pub mtls_port: u16,
}

/// The user and password nginx's `/private/` location (Basic auth) accepts.
pub const PRIVATE_USER: (&str, &str) = ("alice", "s3cret pass");

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds the nginx binary. Without one the caller skips loudly, except under `CI=true`,
/// where a missing nginx is a failure (`.ci/run` installs it).
pub fn nginx_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nginx is required under CI=true (apt-get install -y nginx)"
        );
        eprintln!(
            "SKIPPED: nginx is not installed (apt-get install -y nginx); interop test not run"
        );
    }
    found
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is needed for the HTTPS tests");
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

/// A private CA and a server certificate for localhost and 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=haul test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

/// A client certificate for `haul test client`, signed by the private CA.
fn make_client_certificate(dir: &Path) {
    let mut csr = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    csr.extend([
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=haul test client",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "2",
            "-extfile",
            "client.ext",
        ],
    );
}

/// An htpasswd line for `user` and `password` (`openssl passwd -apr1`).
fn htpasswd(dir: &Path, user: &str, password: &str) {
    let output = Command::new("openssl")
        .args(["passwd", "-apr1", password])
        .output()
        .expect("openssl passwd");
    assert!(output.status.success());
    let hash = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
}

impl Nginx {
    /// Starts nginx, or returns `None` (after saying so) when it is not installed.
    pub fn start() -> Option<Self> {
        let binary = nginx_binary()?;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["www/slow", "www/tree", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        make_certificates(root);
        make_client_certificate(root);
        htpasswd(root, PRIVATE_USER.0, PRIVATE_USER.1);
        std::fs::create_dir_all(root.join("www/private")).unwrap();
        let (http_port, https_port, mtls_port) = (free_port(), free_port(), free_port());
        let r = root.display();
        let config = format!(
            "daemon off;\nmaster_process off;\npid {r}/nginx.pid;\nerror_log {r}/error.log warn;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
               log_format haul '$request_method $uri $status $body_bytes_sent c$connection \"$http_range\" \"$http_if_range\" $server_protocol $remote_user';\n\
               access_log {r}/access.log haul;\n\
               client_body_temp_path {r}/tmp/body; proxy_temp_path {r}/tmp/proxy;\n\
               fastcgi_temp_path {r}/tmp/fastcgi; uwsgi_temp_path {r}/tmp/uwsgi; scgi_temp_path {r}/tmp/scgi;\n\
               default_type application/octet-stream;\n\
               sendfile on;\n\
               server {{\n\
                 listen 127.0.0.1:{http_port};\n\
                 root {r}/www;\n\
                 location /slow/ {{ limit_rate 4m; }}\n\
                 location /tree/ {{ autoindex on; }}\n\
                 location /jtree/ {{ alias {r}/www/tree/; autoindex on; autoindex_format json; }}\n\
                 location /private/ {{ auth_basic \"haul\"; auth_basic_user_file {r}/htpasswd; }}\n\
               }}\n\
               server {{\n\
                 listen 127.0.0.1:{mtls_port} ssl;\n\
                 ssl_certificate {r}/server.pem;\n\
                 ssl_certificate_key {r}/server.key;\n\
                 ssl_client_certificate {r}/ca.pem;\n\
                 ssl_verify_client on;\n\
                 root {r}/www;\n\
               }}\n\
               server {{\n\
                 listen 127.0.0.1:{https_port} ssl http2;\n\
                 ssl_certificate {r}/server.pem;\n\
                 ssl_certificate_key {r}/server.key;\n\
                 root {r}/www;\n\
               }}\n\
             }}\n"
        );
        let config_path = root.join("nginx.conf");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(root)
            .arg("-e")
            .arg(root.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx");
        let nginx = Self {
            child,
            dir,
            http_port,
            https_port,
            mtls_port,
        };
        nginx.wait_until_listening();
        Some(nginx)
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [self.http_port, self.https_port, self.mtls_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nginx did not start: {}",
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The client certificate and key the `mtls` server accepts.
    pub fn client_identity(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("client.pem"),
            self.dir.path().join("client.key"),
        )
    }

    pub fn mtls_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.mtls_port)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https_port)
    }

    /// Access-log lines: `METHOD URI STATUS BYTES "RANGE" "IF-RANGE" PROTOCOL`.
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
