//! Reach (issue #17): downloads through real proxies (tinyproxy, dante, microsocks), Basic
//! credentials against nginx (`--user`, `.netrc`, input-file keys), a login flow's cookies,
//! client certificates against nginx, and the configuration file.

use std::path::Path;

use serde_json::Value;

use crate::support::nginx::{Nginx, PRIVATE_USER};
use crate::support::proxies;
use crate::support::server::{TestServer, content};
use crate::support::{haul, run, stderr};

fn get(dir: &Path, extra: &[&str], url: &str) -> std::process::Command {
    let mut command = haul();
    command
        .args(["get", "--retries", "1", "-d"])
        .arg(dir)
        .args(extra)
        .arg(url);
    command
}

fn started(stdout: &[u8]) -> Value {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "started")
        .expect("a started event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_proxy_carries_downloads_with_and_without_credentials_and_no_proxy_bypasses() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(open) = proxies::tinyproxy(None) else {
        return;
    };
    let Some(guarded) = proxies::tinyproxy(Some(("alice", "s3cret"))) else {
        return;
    };
    let url = server.file_url(200_000, "via-http.bin", "");

    let proxy = format!("http://127.0.0.1:{}", open.port);
    let output = run(get(dir.path(), &["--json", "--proxy", &proxy], &url)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        open.log().contains("GET http://127.0.0.1"),
        "{}",
        open.log()
    );
    assert_eq!(started(&output.stdout)["proxy"], proxy.as_str());

    let with_user = format!("http://alice:s3cret@127.0.0.1:{}", guarded.port);
    std::fs::remove_file(dir.path().join("via-http.bin")).unwrap();
    let output = run(get(dir.path(), &["--json", "--proxy", &with_user], &url)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        guarded.log().contains("GET http://127.0.0.1"),
        "{}",
        guarded.log()
    );
    let shown = started(&output.stdout)["proxy"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !shown.contains("s3cret"),
        "the proxy password is never shown: {shown}"
    );
    assert!(
        std::fs::read(dir.path().join("via-http.bin")).unwrap()
            == content("via-http.bin", 1, 200_000)
    );

    std::fs::remove_file(dir.path().join("via-http.bin")).unwrap();
    let without = format!("http://127.0.0.1:{}", guarded.port);
    let output = run(get(dir.path(), &["--proxy", &without], &url)).await;
    assert_eq!(output.status.code(), Some(1), "a 407 without credentials");
    assert!(stderr(&output).contains("407"), "{}", stderr(&output));

    let before = open.log().matches("GET http://").count();
    let output = run(get(
        dir.path(),
        &["--json", "--proxy", &proxy, "--no-proxy", "127.0.0.1"],
        &url,
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        open.log().matches("GET http://").count(),
        before,
        "--no-proxy bypasses"
    );
    assert_eq!(started(&output.stdout)["proxy"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_proxies_carry_downloads_from_the_environment_and_with_credentials() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(dante) = proxies::dante() else {
        return;
    };
    let Some(guarded) = proxies::microsocks("bob", "hunter2") else {
        return;
    };
    let url = server.file_url(300_000, "via-socks.bin", "");

    let mut through_env = get(dir.path(), &[], &url);
    through_env.env("ALL_PROXY", format!("socks5://127.0.0.1:{}", dante.port));
    let output = run(through_env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(dante.log().contains("tcp/connect"), "{}", dante.log());
    assert!(
        std::fs::read(dir.path().join("via-socks.bin")).unwrap()
            == content("via-socks.bin", 1, 300_000)
    );

    std::fs::remove_file(dir.path().join("via-socks.bin")).unwrap();
    let proxy = format!("socks5h://bob:hunter2@127.0.0.1:{}", guarded.port);
    let output = run(get(dir.path(), &["--proxy", &proxy], &url)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let peer = server.log().last().unwrap().peer.unwrap();
    assert_eq!(
        peer.ip().to_string(),
        "127.0.0.2",
        "the request came out of the proxy"
    );

    std::fs::remove_file(dir.path().join("via-socks.bin")).unwrap();
    let wrong = format!("socks5h://bob:wrong@127.0.0.1:{}", guarded.port);
    let started = std::time::Instant::now();
    let output = run(get(dir.path(), &["--proxy", &wrong], &url)).await;
    let said = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "wrong proxy credentials fail"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "at once, not retried: {:?}",
        started.elapsed()
    );
    assert!(!said.contains("attempt 2"), "{said}");
    assert!(
        said.contains(&format!(
            "connection to the proxy socks5h://bob:***@127.0.0.1:{} (for {url}) failed",
            guarded.port
        )),
        "the proxy is named, not the server: {said}"
    );
    assert!(said.contains("hint: the proxy refused"), "{said}");
    assert!(!said.contains("wrong"), "the password is never shown");
}

/// A proxy that is down is named as what failed (not the server behind it), and is retried
/// like any refused connection: twice, quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_is_down_is_named_as_what_failed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let url = server.file_url(10, "behind.bin", "");
    let proxy = format!("http://127.0.0.1:{port}");
    let output = run(get(dir.path(), &["--proxy", &proxy], &url)).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "connection to the proxy http://127.0.0.1:{port} (for {url}) failed"
        )),
        "{said}"
    );
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_from_the_command_line_netrc_and_input_files() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(nginx.www().join("private/p.bin"), content("p", 1, 5000)).unwrap();
    let url = nginx.http_url("/private/p.bin");
    let (user, password) = PRIVATE_USER;

    let output = run(get(dir.path(), &["--no-netrc"], &url)).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("401"), "{}", stderr(&output));
    let unauthorized = nginx
        .access_log()
        .iter()
        .filter(|l| l.contains(" 401 "))
        .count();
    assert_eq!(unauthorized, 1, "a 401 is not retried");

    let credentials = format!("{user}:{password}");
    let output = run(get(dir.path(), &["--user", &credentials], &url)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        nginx
            .access_log()
            .last()
            .unwrap()
            .ends_with(&format!(" {user}"))
    );
    std::fs::remove_file(dir.path().join("p.bin")).unwrap();

    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".netrc"),
        format!("machine 127.0.0.1 login {user} password \"{password}\"\n"),
    )
    .unwrap();
    let mut with_netrc = get(dir.path(), &[], &url);
    with_netrc.env("HOME", home.path());
    let output = run(with_netrc).await;
    assert!(
        output.status.success(),
        "the default ~/.netrc: {}",
        stderr(&output)
    );
    std::fs::remove_file(dir.path().join("p.bin")).unwrap();

    let input = dir.path().join("urls.txt");
    std::fs::write(
        &input,
        format!("{url}\n  http-user={user}\n  http-passwd={password}\n"),
    )
    .unwrap();
    let mut from_file = haul();
    from_file
        .args(["get", "--no-netrc", "-d"])
        .arg(dir.path())
        .arg("-i")
        .arg(&input);
    let output = run(from_file).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.path().join("p.bin")).unwrap() == content("p", 1, 5000));

    std::fs::remove_file(dir.path().join("p.bin")).unwrap();
    let output = run(get(
        dir.path(),
        &["--json", "--no-netrc", "--user", &format!("{user}:wrong")],
        &url,
    ))
    .await;
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output);
    assert!(!text.contains("wrong"), "passwords never appear: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_redirect_sets_a_cookie_that_later_requests_carry() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jar = dir.path().join("cookies.txt");
    let login = server.url("/login?to=%2Fmembers%2Freport.bin");
    let output = run(get(
        dir.path(),
        &["--save-cookies", jar.to_str().unwrap()],
        &login,
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.path().join("login")).unwrap() == content("report.bin", 1, 1000));
    let saved = std::fs::read_to_string(&jar).unwrap();
    assert!(saved.contains("session\tok"), "{saved}");

    let direct = server.url("/members/second.bin");
    let output = run(get(dir.path(), &[], &direct)).await;
    assert_eq!(output.status.code(), Some(1), "no cookie, no entry");
    let output = run(get(
        dir.path(),
        &["--load-cookies", jar.to_str().unwrap()],
        &direct,
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        std::fs::read(dir.path().join("second.bin")).unwrap() == content("second.bin", 1, 1000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_opens_a_server_that_requires_one() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(nginx.www().join("m.bin"), content("m", 1, 4000)).unwrap();
    let url = nginx.mtls_url("/m.bin");
    let ca = nginx.ca_pem();
    let output = run(get(dir.path(), &["--ca-cert", ca.to_str().unwrap()], &url)).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("400"),
        "nginx refuses it: {}",
        stderr(&output)
    );
    let (cert, key) = nginx.client_identity();
    let output = run(get(
        dir.path(),
        &[
            "--ca-cert",
            ca.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &url,
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.path().join("m.bin")).unwrap() == content("m", 1, 4000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_file_sets_defaults_the_command_line_wins_and_bad_lines_are_numbered() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        "# defaults\n--user-agent from-config\nquiet\njson\n",
    )
    .unwrap();
    let url = server.file_url(100, "c.bin", "");
    let configured = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_haul"));
        command
            .env("HAUL_CONFIG", &config)
            .arg("get")
            .args(extra)
            .arg("-d")
            .arg(dir.path())
            .arg(&url);
        command
    };
    let output = run(configured(&[])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("\"event\":\"summary\""),
        "json from the file"
    );
    assert!(
        stderr(&output).is_empty(),
        "quiet from the file: {}",
        stderr(&output)
    );
    let agents: Vec<Option<String>> = server.log().iter().map(|r| r.user_agent.clone()).collect();
    assert_eq!(agents, vec![Some("from-config".to_owned())]);

    std::fs::remove_file(dir.path().join("c.bin")).unwrap();
    let output = run(configured(&["--no-json", "--no-quiet"])).await;
    assert!(output.status.success());
    assert!(output.stdout.is_empty(), "the command line wins");
    assert!(stderr(&output).contains("1 ok"), "{}", stderr(&output));

    std::fs::write(&config, "jobs 4\n\njobs lots\n").unwrap();
    let output = run(configured(&[])).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("line 3"), "{}", stderr(&output));
    let ignored = run(configured(&["--no-config"])).await;
    assert!(
        ignored.status.success(),
        "--no-config ignores it: {}",
        stderr(&ignored)
    );
}
