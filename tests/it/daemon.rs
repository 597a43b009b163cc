//! `haul daemon` driven the way aria2 front-ends drive aria2: by aria2p (Python) and the
//! `aria2` npm package (Node, over WebSocket), by a kill -9 and a restart from the session,
//! and by bad input that must change nothing.

use std::collections::HashSet;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::daemon::{self, Daemon, SECRET};
use crate::support::server::{TestServer, content};
use crate::support::{haul, listing, run, stderr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aria2p_adds_pauses_resumes_removes_and_limits_concurrency() {
    if !daemon::aria2p_available() {
        return;
    }
    let (server, _dir, root) = server_and_root().await;
    let daemon = Daemon::start(&root, &[]);
    let slow_size = 3_000_000u64;
    let urls = json!({
        "slow": server.file_url(slow_size, "slow.bin", "rate=500000"),
        "slow_size": slow_size,
        "one_at_a_time": (0..3).map(|i| server.file_url(1000, &format!("one{i}"), "delay_ms=400")).collect::<Vec<_>>(),
        "three_at_a_time": (0..3).map(|i| server.file_url(1000, &format!("three{i}"), "delay_ms=700")).collect::<Vec<_>>(),
        "never": [server.file_url(10, "never0", ""), server.file_url(10, "never1", "")],
    });
    let mut script = Command::new("python3");
    script
        .arg(crate::support::daemon::node_client_dir().join("aria2p_flow.py"))
        .env("HAUL_RPC_PORT", daemon.port.to_string())
        .env("HAUL_RPC_SECRET", SECRET)
        .env("HAUL_TEST_URLS", urls.to_string())
        .env("HAUL_ROOT", &root);
    daemon.run_client("aria2p's flow", script).await;
    assert_eq!(
        std::fs::read(root.join("a/slow.bin")).unwrap(),
        content("slow.bin", 1, slow_size)
    );
    assert!(
        asked_for_the_rest(&server, "slow.bin"),
        "the resume after the pause asked for the rest"
    );
    let log = server.log();
    let peak = |prefix: &str| {
        log.iter()
            .filter(|l| l.path.rsplit('/').next().unwrap().starts_with(prefix))
            .map(|l| l.in_flight)
            .max()
            .unwrap()
    };
    assert_eq!(
        peak("one"),
        1,
        "max-concurrent-downloads 1 ran one at a time"
    );
    assert!(
        peak("three") >= 2,
        "max-concurrent-downloads 3 ran them together"
    );
    assert!(
        !log.iter().any(|l| l.path.contains("never")),
        "paused ones never started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aria2_npm_package_adds_and_is_notified_over_websocket() {
    if !daemon::node_aria2_available() {
        return;
    }
    let (server, _dir, root) = server_and_root().await;
    let daemon = Daemon::start(&root, &[]);
    let size = 200_000u64;
    let mut script = Command::new("node");
    script
        .arg("aria2_ws.js")
        .current_dir(daemon::node_client_dir())
        .env("HAUL_RPC_PORT", daemon.port.to_string())
        .env("HAUL_RPC_SECRET", SECRET)
        .env(
            "HAUL_TEST_URL",
            server.file_url(size, "ws.bin", "delay_ms=300"),
        )
        .env("HAUL_TEST_SIZE", size.to_string())
        .env(
            "HAUL_SLOW_URL",
            server.file_url(1_500_000, "slow.bin", "rate=500000"),
        );
    daemon.run_client("the Node client", script).await;
    assert_eq!(
        std::fs::read(root.join("node/ws.bin")).unwrap(),
        content("ws.bin", 1, size)
    );
    assert_eq!(
        std::fs::read(root.join("slow.bin")).unwrap(),
        content("slow.bin", 1, 1_500_000)
    );
    assert!(
        asked_for_the_rest(&server, "slow.bin"),
        "the unpaused download asked for the rest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_queue_resumes_its_session_and_fetches_nothing_twice() {
    let (server, dir, root) = server_and_root().await;
    let session = dir.path().join("session");
    let session_arg = session.to_str().unwrap();
    let mut first = Daemon::start(&root, &["--save-session", session_arg]);
    let size = 1_500_000u64;
    let done = first
        .result("addUri", json!([[server.file_url(1000, "done.bin", "")]]))
        .await;
    first.wait_status(done.as_str().unwrap(), "complete").await;
    let mut slow = Vec::new();
    for name in ["s1.bin", "s2.bin"] {
        let url = server.file_url(size, name, "rate=300000");
        let gid = first.result("addUri", json!([[url], {"dir": "q"}])).await;
        slow.push(gid.as_str().unwrap().to_owned());
    }
    let held = first
        .result(
            "addUri",
            json!([[server.file_url(5000, "held.bin", "")], {"pause": "true"}]),
        )
        .await;
    let held = held.as_str().unwrap().to_owned();
    for gid in &slow {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while first.status(gid).await["completedLength"]
            .as_str()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
            < 200_000
        {
            assert!(std::time::Instant::now() < deadline, "{}", first.log());
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // A checkpoint of the .part state has been made by now (every second by default).
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    first.kill_9();

    let second = Daemon::start(&root, &["--save-session", session_arg]);
    // Each GID is asked for by itself: a download that starts between a tellWaiting and a
    // tellActive would be in neither list.
    for gid in slow.iter().chain([&held]) {
        let status = second.status(gid).await;
        assert!(
            ["active", "waiting", "paused"].contains(&status["status"].as_str().unwrap_or("")),
            "{gid} came back with its GID: {status}"
        );
    }
    let expected: HashSet<&str> = slow.iter().chain([&held]).map(String::as_str).collect();
    for (method, params) in [
        ("tellActive", json!([["gid"]])),
        ("tellWaiting", json!([0, 100, ["gid"]])),
    ] {
        for entry in second.result(method, params).await.as_array().unwrap() {
            assert!(
                expected.contains(entry["gid"].as_str().unwrap()),
                "nothing but the session's downloads came back: {entry}"
            );
        }
    }
    let finished = second
        .call("tellStatus", json!([done.as_str().unwrap()]))
        .await;
    assert_eq!(
        finished["error"]["code"], 1,
        "a finished download is not in the session: {finished}"
    );
    assert_eq!(second.status(&held).await["status"], "paused");
    for (gid, name) in slow.iter().zip(["s1.bin", "s2.bin"]) {
        second.wait_status(gid, "complete").await;
        assert_eq!(
            std::fs::read(root.join("q").join(name)).unwrap(),
            content(name, 1, size),
            "{name} is exact"
        );
    }
    second.result("unpause", json!([held])).await;
    second.wait_status(&held, "complete").await;
    let log = server.log();
    assert_eq!(
        log.iter().filter(|l| l.path.ends_with("done.bin")).count(),
        1,
        "a finished download is not fetched again"
    );
    for name in ["s1.bin", "s2.bin"] {
        let resumed = log
            .iter()
            .filter(|l| l.path.ends_with(name))
            .filter_map(|l| l.range.as_deref())
            .filter_map(|r| r.strip_prefix("bytes="))
            .filter_map(|r| r.split('-').next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        assert!(
            resumed >= 100_000,
            "{name} resumed from its .part, at {resumed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_aria2s_error_objects_and_changes_nothing() {
    let (server, dir, root) = server_and_root().await;
    let daemon = Daemon::start(&root, &["--rpc-max-request-size", "64K"]);
    let url = server.file_url(100, "x.bin", "");

    let (status, answer) = daemon.post("{not json").await;
    assert_eq!((status, &answer["error"]["code"]), (200, &json!(-32700)));
    let (_, answer) = daemon.post("[]").await;
    assert_eq!(answer["error"]["code"], -32600);
    let (_, answer) = daemon.post(r#"{"jsonrpc":"2.0","id":1,"method":"aria2.addUri","params":["token:wrong",["http://x/y"]]}"#).await;
    assert_eq!(
        answer["error"],
        json!({"code": 1, "message": "Unauthorized"})
    );
    let (_, answer) = daemon
        .post(r#"{"jsonrpc":"2.0","id":1,"method":"aria2.addUri","params":[["http://x/y"]]}"#)
        .await;
    assert_eq!(
        answer["error"]["message"], "Unauthorized",
        "no token at all"
    );
    let (status, answer) = daemon.post(format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"aria2.addUri","params":["token:{SECRET}",["{}"],{{"header":"{}"}}]}}"#,
        url,
        "a".repeat(100_000)
    )).await;
    assert_eq!(status, 413);
    assert_eq!(answer["error"]["code"], 1);

    let wrong: Vec<(&str, Value)> = vec![
        ("addUri", json!(["not-a-list"])),
        ("addUri", json!([[1, 2]])),
        ("addUri", json!([[url], "not-an-object"])),
        ("addUri", json!([["ftp://example.org/f"]])),
        ("addUri", json!([[url], {"dir": "../outside"}])),
        ("addUri", json!([[url], {"dir": "/etc"}])),
        ("addUri", json!([[url], {"out": "../../escape"}])),
        ("addUri", json!([[url], {"out": "a/../../b"}])),
        ("addUri", json!([[url], {"split": "lots"}])),
        ("addUri", json!([[url], {"checksum": "sha-256=nothex"}])),
        ("tellStatus", json!(["nothex"])),
        ("tellStatus", json!(["0123456789abcdef"])),
        ("tellWaiting", json!(["zero", 10])),
        (
            "changePosition",
            json!(["0123456789abcdef", 0, "POS_SIDEWAYS"]),
        ),
        (
            "changeGlobalOption",
            json!([{"max-concurrent-downloads": "none"}]),
        ),
        ("changeGlobalOption", json!([{"bt-max-peers": "5"}])),
        ("removeDownloadResult", json!(["0123456789abcdef"])),
        ("addTorrent", json!(["AAAA"])),
        ("noSuchMethod", json!([])),
    ];
    for (method, params) in wrong {
        let answer = daemon.call(method, params.clone()).await;
        assert_eq!(
            answer["error"]["code"], 1,
            "aria2.{method} {params} was not refused: {answer}"
        );
        assert!(answer["error"]["message"].is_string());
        assert!(answer.get("result").is_none());
    }
    let (_, answer) = daemon
        .post(r#"{"jsonrpc":"2.0","id":7,"method":"no.such","params":[]}"#)
        .await;
    assert_eq!(answer["error"]["code"], 1);
    assert_eq!(answer["id"], 7);

    // Nothing changed: no download, no file, the global options as they were.
    for (method, params) in [
        ("tellActive", json!([])),
        ("tellWaiting", json!([0, 100])),
        ("tellStopped", json!([0, 100])),
    ] {
        assert_eq!(daemon.result(method, params).await, json!([]), "{method}");
    }
    assert_eq!(
        daemon.result("getGlobalOption", json!([])).await["max-concurrent-downloads"],
        "8"
    );
    assert!(listing(&root).is_empty(), "{:?}", listing(&root));
    assert!(listing(dir.path()).iter().all(|n| n.starts_with("root")));
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_edge_get_form_cors_sigterm_and_listening_rules() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let session = dir.path().join("session");
    let mut daemon = Daemon::start(
        &root,
        &[
            "--save-session",
            session.to_str().unwrap(),
            "--rpc-allow-origin",
            "https://ariang.example",
            // aria2's name for --limit-rate.
            "--max-overall-download-limit",
            "1M",
        ],
    );
    let globals = daemon.result("getGlobalOption", json!([])).await;
    assert_eq!(globals["max-overall-download-limit"], "1048576");
    let http = haul::Downloader::client_builder().build().unwrap();
    // aria2's GET form: params as base64 of the JSON array; JSONP with jsoncallback.
    let params = base64::engine::general_purpose::STANDARD.encode(format!(r#"["token:{SECRET}"]"#));
    let answer = http
        .get(format!(
            "{}?method=aria2.getGlobalStat&id=g&params={params}",
            daemon.url()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["result"]["numActive"], "0", "{answer}");
    let jsonp = http
        .get(format!(
            "{}?method=aria2.getVersion&id=v&params={params}&jsoncallback=cb",
            daemon.url()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(jsonp.starts_with("cb({") && jsonp.ends_with(')'), "{jsonp}");

    // CORS: the listed origin gets its header; another origin gets none.
    for (origin, allowed) in [
        ("https://ariang.example", true),
        ("https://evil.example", false),
    ] {
        let preflight = http
            .request(reqwest::Method::OPTIONS, daemon.url())
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .unwrap();
        let header = preflight.headers().get("access-control-allow-origin");
        assert_eq!(header.is_some(), allowed, "{origin}");
    }

    // A WebSocket upgrade: from a page of another origin refused; from the listed origin or
    // without an Origin (a script's client) accepted.
    for (origin, expected) in [
        (Some("https://evil.example"), "403"),
        (Some("https://ariang.example"), "101"),
        (None, "101"),
    ] {
        let status = websocket_handshake(daemon.port, origin).await;
        assert!(status.contains(expected), "{origin:?}: {status}");
    }

    // SIGTERM: the session is written, readable by its owner only, and the exit code is 143.
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(143), "{}", daemon.log());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&session).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the session may hold credentials");

    // Beyond loopback only with a secret.
    let mut open = haul();
    open.args(["daemon", "-d"])
        .arg(&root)
        .args(["--rpc-listen-all", "--rpc-listen-port", "0"]);
    let output = run(open).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--rpc-secret"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metalink_live_limits_and_what_front_ends_read() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let server = TestServer::start().await;
    let mirror = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // Given with a trailing slash: `dir` and the paths in the answers have none.
    let daemon = Daemon::start(&root.join(""), &[]);

    // aria2.addMetalink: each file with its mirrors and hash, beneath the root.
    let size = 5000u64;
    let hash = hex::encode(sha2::Sha256::digest(content("m.bin", 1, size)));
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <file name="m.bin">
    <size>{size}</size>
    <hash type="sha-256">{hash}</hash>
    <url priority="1">{}</url>
    <url priority="2">{}</url>
  </file>
</metalink>"#,
        server.file_url(size, "m.bin", ""),
        mirror.file_url(size, "m.bin", "")
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(document);
    let gids = daemon
        .result("addMetalink", json!([encoded, {"dir": "ml"}]))
        .await;
    let gid = gids[0].as_str().unwrap().to_owned();
    daemon.wait_status(&gid, "complete").await;
    assert_eq!(
        std::fs::read(root.join("ml/m.bin")).unwrap(),
        content("m.bin", 1, size)
    );
    let uris = daemon.result("getUris", json!([gid])).await;
    assert_eq!(uris.as_array().unwrap().len(), 2, "{uris}");
    assert_eq!(uris[0]["status"], "used");
    let files = daemon.result("getFiles", json!([gid])).await;
    assert_eq!(
        files[0]["path"],
        root.join("ml/m.bin").to_str().unwrap(),
        "{files}"
    );
    assert_eq!(
        daemon.result("getGlobalOption", json!([])).await["dir"],
        root.to_str().unwrap()
    );
    assert_eq!(
        daemon.status(&gid).await["dir"],
        root.join("ml").to_str().unwrap()
    );
    assert_eq!(daemon.result("getServers", json!([gid])).await, json!([]));

    // A download's own limit, read back and lifted while it runs (changeOption).
    let gid = daemon
        .result(
            "addUri",
            json!([[server.file_url(2_000_000, "limited.bin", "")], {"max-download-limit": "100K"}]),
        )
        .await;
    let gid = gid.as_str().unwrap().to_owned();
    daemon.wait_status(&gid, "active").await;
    assert_eq!(
        daemon.result("getOption", json!([gid])).await["max-download-limit"],
        "102400"
    );
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let early: u64 = daemon.status(&gid).await["completedLength"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(early < 400_000, "the limit held: {early}");
    assert_eq!(
        daemon
            .result("changeOption", json!([gid, {"max-download-limit": "0"}]))
            .await,
        "OK"
    );
    let started = std::time::Instant::now();
    daemon.wait_status(&gid, "complete").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // `"jsonrpc": 2` as a number is accepted, as aria2 accepts it.
    let (_, answer) = daemon
        .post(format!(
            r#"{{"jsonrpc":2,"id":3,"method":"aria2.getGlobalStat","params":["token:{SECRET}"]}}"#
        ))
        .await;
    assert_eq!(answer["result"]["numStopped"], "2", "{answer}");
}

/// Whether a request for `name` asked for a range that does not start at 0 (a resume).
fn asked_for_the_rest(server: &TestServer, name: &str) -> bool {
    server
        .log()
        .iter()
        .filter(|l| l.path.ends_with(name))
        .filter_map(|l| l.range.as_deref())
        .any(|r| r.starts_with("bytes=") && r != "bytes=0-")
}

/// changePosition on downloads that wait in the downloader's queue: they start in the new
/// order (the daemon's queue and the library's stay in step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_position_reorders_what_starts_next() {
    let (server, _dir, root) = server_and_root().await;
    // aria2's name for -j.
    let daemon = Daemon::start(&root, &["--max-concurrent-downloads", "1"]);
    let mut gids = Vec::new();
    for (name, query) in [("first.bin", "delay_ms=800"), ("b.bin", ""), ("c.bin", "")] {
        let url = server.file_url(1000, name, query);
        let gid = daemon.result("addUri", json!([[url]])).await;
        gids.push(gid.as_str().unwrap().to_owned());
    }
    let [first, b, c] = [&gids[0], &gids[1], &gids[2]];
    assert_eq!(
        daemon
            .result("changePosition", json!([c, 0, "POS_SET"]))
            .await,
        0
    );
    for gid in [first, b, c] {
        daemon.wait_status(gid, "complete").await;
    }
    let order: Vec<String> = server
        .log()
        .into_iter()
        .map(|l| l.path.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(order, ["first.bin", "c.bin", "b.bin"]);
}

/// A test server, a temporary directory, and the download root in it.
async fn server_and_root() -> (TestServer, tempfile::TempDir, std::path::PathBuf) {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    (server, dir, root)
}

/// Sends a WebSocket handshake (with `origin`, if any) and returns the answer's status line.
async fn websocket_handshake(port: u16, origin: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let request = format!(
        "GET /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{origin}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("the daemon answers the handshake")
        .unwrap();
    String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
