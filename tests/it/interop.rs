//! Interop with real servers (issue #10): Debian's nginx (HTTP, `Range`/`If-Range`/`ETag` as
//! nginx implements them, HTTPS with a private CA, HTTP/2) and Python's `http.server`, which
//! ignores `Range`: the real "no ranges" case.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use haul::{CancellationToken, Event, Request};
use serde_json::Value;

use crate::support::nginx::Nginx;
use crate::support::server::content;
use crate::support::{fast_downloader, haul, listing, run, stderr};

fn put(www: &Path, relative: &str, bytes: &[u8]) {
    let path = www.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_single_and_batch_downloads() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sizes = [0u64, 1, 1_000_003, 3 << 20];
    for (i, size) in sizes.iter().enumerate() {
        put(
            &nginx.www(),
            &format!("f{i}.bin"),
            &content(&format!("f{i}"), 1, *size),
        );
    }
    let mut command = haul();
    command.args(["get", "-q", "-j", "4", "-d"]).arg(dir.path());
    for i in 0..sizes.len() {
        command.arg(nginx.http_url(&format!("/f{i}.bin")));
    }
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    for (i, size) in sizes.iter().enumerate() {
        let got = std::fs::read(dir.path().join(format!("f{i}.bin"))).unwrap();
        assert_eq!(got, content(&format!("f{i}"), 1, *size), "f{i}.bin");
    }
}

/// Starts a download from nginx's throttled location and cancels it after `after`.
async fn interrupted(nginx: &Nginx, path: &str, dir: &Path, after: Duration) -> u64 {
    let token = CancellationToken::new();
    let request = Request::new(&nginx.http_url(path))
        .unwrap()
        .into_dir(dir)
        .with_cancellation(token.clone());
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(after).await;
        token.cancel();
    });
    let result = fast_downloader().build().unwrap().download(request).await;
    canceller.await.unwrap();
    assert!(matches!(result, Err(haul::Error::Cancelled)), "{result:?}");
    let name = Path::new(path)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    crate::support::resumable_prefix(&dir.join(format!("{name}.part.haul")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_resume_uses_its_real_range_and_if_range() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let size = 6 << 20;
    put(&nginx.www(), "slow/r.bin", &content("r", 1, size));
    let kept = interrupted(
        &nginx,
        "/slow/r.bin",
        dir.path(),
        Duration::from_millis(400),
    )
    .await;
    assert!(
        kept > 0 && kept < size,
        "{kept} {}",
        std::fs::read_to_string(dir.path().join("r.bin.part.haul")).unwrap()
    );
    let done = fast_downloader()
        .build()
        .unwrap()
        .download(
            Request::new(&nginx.http_url("/slow/r.bin"))
                .unwrap()
                .into_dir(dir.path()),
        )
        .await
        .unwrap();
    assert_eq!(done.resumed_from, kept);
    assert_eq!(std::fs::read(&done.path).unwrap(), content("r", 1, size));
    let log = nginx.access_log();
    let last = log.last().unwrap();
    assert!(
        last.starts_with("GET /slow/r.bin 206 ") && last.contains(&format!("\"bytes={kept}-\"")),
        "{log:?}"
    );
    assert!(!last.contains("\"-\" HTTP"), "If-Range was sent: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_file_replaced_between_runs_is_fetched_whole() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let size = 6 << 20;
    put(&nginx.www(), "slow/c.bin", &content("c", 1, size));
    interrupted(
        &nginx,
        "/slow/c.bin",
        dir.path(),
        Duration::from_millis(400),
    )
    .await;
    // Same size, new bytes and a new mtime: nginx's ETag changes.
    let path = nginx.www().join("slow/c.bin");
    std::fs::write(&path, content("c", 2, size)).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let done = fast_downloader()
        .build()
        .unwrap()
        .download(
            Request::new(&nginx.http_url("/slow/c.bin"))
                .unwrap()
                .into_dir(dir.path()),
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&done.path).unwrap(),
        content("c", 2, size),
        "never spliced"
    );
    assert!(
        nginx.access_log().last().unwrap().contains(" 200 "),
        "{:?}",
        nginx.access_log()
    );
}

fn started_event(stdout: &[u8]) -> Value {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "started")
        .expect("a started event")
}

/// Many files from one HTTP/2 server, 16 at once: one TLS connection carries every stream
/// (the first request goes alone, and the others follow once the server's protocol is known),
/// as curl does, instead of sixteen connections that each did the same handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_files_over_http2_share_one_connection() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let mut urls = String::new();
    for i in 0..40 {
        put(
            &nginx.www(),
            &format!("h2/f{i}"),
            &content(&format!("f{i}"), 1, 64 << 10),
        );
        urls.push_str(&nginx.https_url(&format!("/h2/f{i}")));
        urls.push('\n');
    }
    std::fs::write(&list, urls).unwrap();
    let mut command = haul();
    command
        .args(["get", "-q", "-j", "16", "--per-host", "16", "--ca-cert"])
        .arg(nginx.ca_pem())
        .arg("-d")
        .arg(dir.path().join("out"))
        .arg("-i")
        .arg(&list);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    for i in 0..40 {
        assert_eq!(
            std::fs::read(dir.path().join(format!("out/f{i}"))).unwrap(),
            content(&format!("f{i}"), 1, 64 << 10)
        );
    }
    let connections: std::collections::BTreeSet<String> = nginx
        .access_log()
        .iter()
        .filter(|line| line.contains(" /h2/"))
        .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
        .collect();
    assert_eq!(connections.len(), 1, "one connection: {connections:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_uses_http2_and_fails_clearly_without_it() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    put(&nginx.www(), "s.bin", &content("s", 1, 2 << 20));
    let url = nginx.https_url("/s.bin");

    let mut untrusted = haul();
    untrusted
        .args(["get", "--json", "--retries", "3", "-d"])
        .arg(dir.path())
        .arg(&url);
    let output = run(untrusted).await;
    assert_eq!(output.status.code(), Some(1));
    let failed = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "failed")
        .unwrap();
    assert_eq!(failed["kind"], "tls", "{failed} {}", stderr(&output));
    assert!(
        failed["message"].as_str().unwrap().contains("certificate"),
        "{failed}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("\"retry\""),
        "an untrusted certificate is not retried"
    );
    assert!(listing(dir.path()).is_empty());

    let mut trusted = haul();
    trusted
        .args(["get", "--json", "--ca-cert"])
        .arg(nginx.ca_pem())
        .arg("-d")
        .arg(dir.path())
        .arg(&url);
    let output = run(trusted).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(started_event(&output.stdout)["http_version"], "HTTP/2.0");
    assert_eq!(
        std::fs::read(dir.path().join("s.bin")).unwrap(),
        content("s", 1, 2 << 20)
    );

    std::fs::remove_file(dir.path().join("s.bin")).unwrap();
    let mut insecure = haul();
    insecure
        .args(["get", "--insecure", "-d"])
        .arg(dir.path())
        .arg(&url);
    let output = run(insecure).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("warning: --insecure"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_brings_its_own_client_downloads_over_https_without_panicking() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    put(&nginx.www(), "own.bin", &content("own", 1, 1 << 20));
    // A separate program: the test process itself installed a TLS provider long ago.
    let mut own = std::process::Command::new(crate::embedding::example("own_client"));
    own.arg(nginx.https_url("/own.bin"))
        .arg(dir.path())
        .arg(nginx.ca_pem());
    let output = run(own).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(dir.path().join("own.bin")).unwrap(),
        content("own", 1, 1 << 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_ranges_python_http_server_restarts_cleanly() {
    let Some(python) = ["python3", "python"].into_iter().find(|p| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .is_ok()
    }) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is needed under CI"
        );
        eprintln!("SKIPPED: no python3 for the http.server interop test");
        return;
    };
    let www = tempfile::tempdir().unwrap();
    let size = 2_000_000u64;
    put(www.path(), "p.bin", &content("p", 1, size));
    let port = crate::support::free_port();
    let mut server = std::process::Command::new(python)
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(www.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("http://127.0.0.1:{port}/p.bin");
    let dir = tempfile::tempdir().unwrap();
    // A part from an earlier run, with http.server's own validator (Last-Modified).
    let head = {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }
    .head(&url)
    .send()
    .await
    .unwrap();
    let last_modified = head.headers()["last-modified"].to_str().unwrap().to_owned();
    std::fs::write(
        dir.path().join("p.bin.part"),
        &content("p", 1, size)[..500_000],
    )
    .unwrap();
    let state = serde_json::json!({
        "version": 1, "url": url, "checksum": null, "done": [[0, 500_000]],
        "validators": {"total_bytes": size, "etag": null, "last_modified": last_modified},
    });
    std::fs::write(dir.path().join("p.bin.part.haul"), state.to_string()).unwrap();

    let (observer, mut events) = haul::ChannelObserver::new();
    let outcomes = fast_downloader()
        .build()
        .unwrap()
        .batch(vec![Request::new(&url).unwrap().into_dir(dir.path())])
        .with_observer(std::sync::Arc::new(observer))
        .run()
        .await
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let done = outcomes[0].as_ref().unwrap();
    assert_eq!(std::fs::read(&done.path).unwrap(), content("p", 1, size));
    let mut restarted = false;
    while let Ok(event) = events.try_recv() {
        restarted |= matches!(event, Event::Restarted { .. });
    }
    assert!(restarted, "the 200 answer to a range request is reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_four_connections_count_each_byte_once_in_the_summary() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 64 << 20;
    put(&nginx.www(), "big64.bin", &content("big64", 1, size));
    let mut command = haul();
    command
        .args(["get", "--json", "-x", "4", "--min-split-size", "1M", "-d"])
        .arg(dir.path())
        .arg(nginx.http_url("/big64.bin"));
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = events.iter().find(|e| e["event"] == "summary").unwrap();
    let finished = events.iter().find(|e| e["event"] == "finished").unwrap();
    assert_eq!(summary["bytes"], size, "{summary}");
    assert_eq!(finished["bytes"], size);
    let ranged = nginx
        .access_log()
        .iter()
        .filter(|line| line.contains(" 206 "))
        .count();
    assert!(ranged >= 3, "several connections were used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_a_segmented_download_and_its_resume() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    // nginx lets each answer send its first second's worth (4 MiB) at once: 40 MiB over four
    // connections is still on its way after half a second.
    let size = 40 << 20;
    put(&nginx.www(), "slow/seg.bin", &content("seg", 1, size));
    let url = nginx.http_url("/slow/seg.bin");
    let token = CancellationToken::new();
    let downloader = fast_downloader()
        .connections(4)
        .min_split_size(1 << 20)
        .build()
        .unwrap();
    let first = Request::new(&url)
        .unwrap()
        .into_dir(dir.path())
        .with_cancellation(token.clone());
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel();
    });
    let interrupted = downloader.download(first).await;
    assert!(
        matches!(interrupted, Err(haul::Error::Cancelled)),
        "{interrupted:?}"
    );
    canceller.await.unwrap();
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("seg.bin.part.haul")).unwrap(),
    )
    .unwrap();
    assert!(
        state["done"].as_array().unwrap().len() > 1,
        "several segments were on their way: {state}"
    );
    let before = nginx.access_log().len();
    let done = downloader
        .download(Request::new(&url).unwrap().into_dir(dir.path()))
        .await
        .unwrap();
    assert!(
        std::fs::read(&done.path).unwrap() == content("seg", 1, size),
        "exact bytes"
    );
    let resumed: Vec<String> = nginx.access_log()[before..].to_vec();
    assert!(
        resumed.len() > 1,
        "the rerun used several connections: {resumed:?}"
    );
    assert!(
        resumed.iter().all(|line| line.contains(" 206 ")),
        "only the holes were fetched, as ranges: {resumed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_autoindex_syncs_incrementally_in_html_and_json() {
    let Some(nginx) = Nginx::start() else { return };
    let files = [
        ("a.bin", 1000u64),
        ("sub/b.bin", 300_000),
        ("sub/deep/c.bin", 2 << 20),
    ];
    for (path, size) in files {
        put(
            &nginx.www(),
            &format!("tree/{path}"),
            &content(path, 1, size),
        );
    }
    for location in ["/tree/", "/jtree/"] {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mirror");
        let sync = || {
            let mut command = haul();
            command
                .args(["sync", "-q", "--recursive", "--delete"])
                .arg(nginx.http_url(location))
                .arg(&dir);
            command
        };
        let output = run(sync()).await;
        assert!(output.status.success(), "{location}: {}", stderr(&output));
        for (path, size) in files {
            assert!(
                std::fs::read(dir.join(path)).unwrap() == content(path, 1, size),
                "{location} {path}"
            );
        }
        let before = nginx.access_log().len();
        let output = run(sync()).await;
        assert!(output.status.success(), "{}", stderr(&output));
        let second: Vec<String> = nginx.access_log()[before..]
            .iter()
            .filter(|line| !line.split(' ').nth(1).unwrap_or("").ends_with('/'))
            .cloned()
            .collect();
        assert_eq!(second.len(), files.len(), "{second:?}");
        assert!(
            second.iter().all(|line| line.contains(" 304 0 ")),
            "{location}: the second sync transferred no body: {second:?}"
        );
    }
}

/// The identity rule and failover against nginx (issue #27): a file whose first URL is gone
/// (404) comes from its mirror; and a file interrupted on its first URL, which is then removed,
/// is finished by a mirror that has the same file (same length and `Last-Modified`) from the
/// byte the `.part` holds, not from zero (nginx's log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_a_mirror_takes_over_a_gone_url_and_keeps_the_bytes() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let size = 6 << 20;
    put(&nginx.www(), "mirror/m.bin", &content("m", 1, size));
    let output = run({
        let mut command = haul();
        command
            .args(["get", "-q", "-d"])
            .arg(dir.path())
            .arg(nginx.http_url("/gone/m.bin"))
            .arg("--mirror")
            .arg(nginx.http_url("/mirror/m.bin"));
        command
    })
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.path().join("m.bin")).unwrap() == content("m", 1, size));

    let dir = tempfile::tempdir().unwrap();
    put(&nginx.www(), "slow/r.bin", &content("r", 1, size));
    put(&nginx.www(), "mirror/r.bin", &content("r", 1, size));
    let when = std::time::SystemTime::now() - Duration::from_secs(3600);
    for copy in ["slow/r.bin", "mirror/r.bin"] {
        let file = std::fs::File::options()
            .write(true)
            .open(nginx.www().join(copy))
            .unwrap();
        file.set_modified(when).unwrap();
    }
    let kept = interrupted(
        &nginx,
        "/slow/r.bin",
        dir.path(),
        Duration::from_millis(400),
    )
    .await;
    assert!(kept > 0 && kept < size, "{kept}");
    std::fs::remove_file(nginx.www().join("slow/r.bin")).unwrap();
    let done = fast_downloader()
        .build()
        .unwrap()
        .download(
            Request::new(&nginx.http_url("/slow/r.bin"))
                .unwrap()
                .with_mirror(&nginx.http_url("/mirror/r.bin"))
                .unwrap()
                .into_dir(dir.path()),
        )
        .await
        .unwrap();
    assert!(std::fs::read(&done.path).unwrap() == content("r", 1, size));
    let log = nginx.access_log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /mirror/r.bin 206 ") && !l.contains("\"bytes=0-")),
        "the mirror went on from the kept bytes: {log:?}"
    );
}

/// A segmented `.part` whose file nginx then serves in a new version (same length, new
/// `ETag`): the next run never splices, and ends with exactly the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_a_segmented_part_of_a_replaced_file_is_never_spliced() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let size = 64 << 20;
    put(&nginx.www(), "slow/s.bin", &content("s", 1, size));
    let downloader = || {
        fast_downloader()
            .connections(4)
            .min_split_size(1 << 20)
            .build()
            .unwrap()
    };
    let token = CancellationToken::new();
    let request = Request::new(&nginx.http_url("/slow/s.bin"))
        .unwrap()
        .into_dir(dir.path());
    let stop = token.clone();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        stop.cancel();
    });
    let first = downloader()
        .download(request.clone().with_cancellation(token))
        .await;
    canceller.await.unwrap();
    assert!(matches!(first, Err(haul::Error::Cancelled)), "{first:?}");
    let path = nginx.www().join("slow/s.bin");
    std::fs::write(&path, content("s", 2, size)).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let done = downloader().download(request).await.unwrap();
    assert!(
        std::fs::read(&done.path).unwrap() == content("s", 2, size),
        "exactly the new version"
    );
}

/// Issue #27, behaviour 4, against nginx (fast enough that finished small files queue up for
/// their commit): under `ulimit -n 40`, 300 small files at `-j 8` all finish. (1afe729's debug
/// build failed 67 of them with "Too many open files"; its release build fails at 64 too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_a_low_open_file_limit_fails_nothing() {
    let Some(nginx) = Nginx::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let lists = tempfile::tempdir().unwrap();
    let list = lists.path().join("urls.txt");
    let mut text = String::new();
    let mut names = Vec::new();
    for i in 0..300 {
        let name = format!("fd{i:03}.bin");
        put(
            &nginx.www(),
            &format!("fd/{name}"),
            &content(&name, 1, 2_000),
        );
        text.push_str(&nginx.http_url(&format!("/fd/{name}")));
        text.push('\n');
        names.push(name);
    }
    std::fs::write(&list, text).unwrap();
    let mut command = crate::support::haul_with_open_file_limit(40);
    command
        .args(["get", "-q", "-j", "8", "-d"])
        .arg(dir.path())
        .arg("-i")
        .arg(&list);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(listing(dir.path()), names);
}
