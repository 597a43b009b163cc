//! Integrity everywhere (issue #18): digests servers announce are verified, checksum files for
//! `get`, MD5 and SHA-1, `--digest`, honest skips, server times, and `-N`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use haul::CancellationToken;
use serde_json::Value;
use sha2::Digest as _;

use crate::support::server::{TestServer, content};
use crate::support::{Fixture, fast_downloader, haul, mtime, run, stderr};

fn get(dir: &Path, extra: &[&str], urls: &[String]) -> std::process::Command {
    let mut command = haul();
    command
        .args(["get", "--json", "-d"])
        .arg(dir)
        .args(extra)
        .args(urls);
    command
}

fn events(stdout: &[u8], kind: &str) -> Vec<Value> {
    crate::support::json_events(stdout)
        .into_iter()
        .filter(|e| e["event"] == kind)
        .collect()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_announced_digest_is_verified_right_and_wrong() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    for kind in ["repr", "content", "digest", "amz", "goog"] {
        for algorithm in ["sha-256", "sha-512"] {
            let name = format!("{kind}-{algorithm}.bin");
            let right = server.file_url(
                100_000,
                &name,
                &format!("digest={kind}&digest_alg={algorithm}"),
            );
            let output = run(get(dir.path(), &[], &[right])).await;
            assert_eq!(output.status.code(), Some(0), "{name}: {}", stderr(&output));
            let finished = &events(&output.stdout, "finished")[0];
            let digest = finished["digest"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {finished}"));
            let expected = if kind == "goog" {
                "md5="
            } else if algorithm == "sha-512" && kind != "amz" {
                "sha-512="
            } else {
                "sha-256="
            };
            assert!(digest.starts_with(expected), "{name}: {digest}");

            let bad = format!("bad-{name}");
            let wrong = server.file_url(
                100_000,
                &bad,
                &format!("digest={kind}&digest_alg={algorithm}&digest_wrong=1"),
            );
            let output = run(get(dir.path(), &[], std::slice::from_ref(&wrong))).await;
            assert_eq!(output.status.code(), Some(3), "{bad}: {}", stderr(&output));
            assert!(
                !dir.path().join(&bad).exists(),
                "no final name for a wrong file"
            );
            let failed = &events(&output.stdout, "failed")[0];
            assert_eq!(failed["kind"], "integrity");
            assert!(
                !failed["message"].as_str().unwrap().contains("--"),
                "the library's message names no flag"
            );
            assert!(
                failed["hint"]
                    .as_str()
                    .unwrap()
                    .contains("--no-server-digest")
            );
            let output = run(get(dir.path(), &["--no-server-digest"], &[wrong])).await;
            assert_eq!(
                output.status.code(),
                Some(0),
                "--no-server-digest: {}",
                stderr(&output)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segmented_and_resumed_downloads_verify_the_representation_digest_only() {
    let fixture = Fixture::with(fast_downloader().min_split_size(1 << 20)).await;
    let size: u64 = 8 << 20;
    // Segmented: ranged answers carry Repr-Digest; a wrong one fails the file.
    let right = fixture
        .request(size, "seg.bin", "digest=repr")
        .with_connections(4);
    let done = fixture.downloader.download(right).await.unwrap();
    assert_eq!(
        done.digest.unwrap().hex(),
        sha256(&content("seg.bin", 1, size))
    );
    let wrong = fixture
        .request(size, "segw.bin", "digest=repr&digest_wrong=1")
        .with_connections(4);
    let error = fixture.downloader.download(wrong).await.unwrap_err();
    assert_eq!(error.kind(), haul::ErrorKind::Integrity, "{error}");
    // A 206's Content-Digest describes only its part: ignored, even when it does not match.
    leave_a_part(&fixture, size, "resumed.bin").await;
    let resumed = fixture
        .request(size, "resumed.bin", "digest=content&digest_wrong=partial")
        .with_connections(1);
    let done = fixture.downloader.download(resumed).await.unwrap();
    assert!(done.resumed_from > 0);
    assert!(done.digest.is_none(), "nothing to verify");
    assert!(std::fs::read(&done.path).unwrap() == content("resumed.bin", 1, size));
    // A resume whose 206 carries a wrong Repr-Digest fails.
    leave_a_part(&fixture, size, "resumed2.bin").await;
    let wrong = fixture
        .request(size, "resumed2.bin", "digest=repr&digest_wrong=1")
        .with_connections(1);
    let error = fixture.downloader.download(wrong).await.unwrap_err();
    assert_eq!(
        error.kind(),
        haul::ErrorKind::Integrity,
        "the prefix on disk is hashed too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_file_verifies_a_batch_in_every_syntax() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "gnu.bin", "star.bin", "bsd.bin", "md5.bin", "sha1.bin", "bad.bin",
    ];
    let urls: Vec<String> = names.iter().map(|n| server.file_url(5000, n, "")).collect();
    let data = |name: &str| content(name, 1, 5000);
    let md5 = hex::encode(md5::Md5::digest(data("md5.bin")));
    let sha1 = hex::encode(sha1::Sha1::digest(data("sha1.bin")));
    let sums = format!(
        "{}  gnu.bin\n{} *./star.bin\nSHA256 (bsd.bin) = {}\n{md5}  md5.bin\n{sha1}  sha1.bin\n{}  bad.bin\n",
        sha256(&data("gnu.bin")),
        sha256(&data("star.bin")),
        sha256(&data("bsd.bin")),
        sha256(b"something else"),
    );
    let file = dir.path().join("SHA256SUMS");
    std::fs::write(&file, sums).unwrap();
    let output = run(get(
        dir.path(),
        &["--checksums", file.to_str().unwrap()],
        &urls,
    ))
    .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let finished = events(&output.stdout, "finished");
    assert_eq!(finished.len(), 5);
    assert!(
        finished.iter().all(|e| e["digest"].is_string()),
        "every file was verified"
    );
    assert!(!dir.path().join("bad.bin").exists());
    for name in &names[..5] {
        assert!(std::fs::read(dir.path().join(name)).unwrap() == data(name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_sha1_checksums_and_digest_reports() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = content("m.bin", 1, 3000);
    let url = server.file_url(3000, "m.bin", "");
    let md5 = format!("md5={}", hex::encode(md5::Md5::digest(&body)));
    let output = run(get(
        dir.path(),
        &["--checksum", &md5],
        std::slice::from_ref(&url),
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::remove_file(dir.path().join("m.bin")).unwrap();
    let sha1 = format!("sha-1={}", hex::encode(sha1::Sha1::digest(&body)));
    let output = run(get(
        dir.path(),
        &["--checksum", &sha1],
        std::slice::from_ref(&url),
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::remove_file(dir.path().join("m.bin")).unwrap();
    let output = run(get(dir.path(), &["--digest", "sha-512"], &[url])).await;
    assert!(output.status.success());
    let finished = &events(&output.stdout, "finished")[0];
    assert_eq!(
        finished["digest"],
        format!("sha-512={}", hex::encode(sha2::Sha512::digest(&body)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_keeps_only_what_nothing_contradicts() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(2000, "small.bin", "");
    // A file with bytes is kept when nothing known contradicts it (an empty one never is:
    // see newcomer.rs).
    std::fs::write(dir.path().join("small.bin"), b"short").unwrap();
    let output = run(get(dir.path(), &[], std::slice::from_ref(&url))).await;
    assert!(output.status.success());
    assert_eq!(
        events(&output.stdout, "finished")[0]["already_present"],
        true,
        "nothing known"
    );

    let output = run(get(
        dir.path(),
        &["--check-existing"],
        std::slice::from_ref(&url),
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.path().join("small.bin")).unwrap() == content("small.bin", 1, 2000));
    assert_eq!(
        events(&output.stdout, "warning").len(),
        1,
        "the re-download is said"
    );

    std::fs::write(dir.path().join("small.bin"), vec![7u8; 1500]).unwrap();
    let input = dir.path().join("list.txt");
    std::fs::write(&input, format!("{url}\n  size=2000\n")).unwrap();
    let mut with_size = haul();
    with_size
        .args(["get", "--json", "-d"])
        .arg(dir.path())
        .arg("-i")
        .arg(&input);
    let output = run(with_size).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.path().join("small.bin")).unwrap() == content("small.bin", 1, 2000));

    let before = server.body_bytes();
    let output = run(get(
        dir.path(),
        &["--check-existing"],
        std::slice::from_ref(&url),
    ))
    .await;
    assert!(output.status.success());
    assert_eq!(
        server.body_bytes(),
        before,
        "a right file transfers no body"
    );

    let wrong = format!("sha-256={}", sha256(b"not it"));
    let output = run(get(dir.path(), &["--checksum", &wrong], &[url])).await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let failed = &events(&output.stdout, "failed")[0];
    assert_eq!(failed["kind"], "integrity");
    assert!(
        failed["hint"]
            .as_str()
            .unwrap()
            .contains("--on-exists overwrite")
    );
    assert!(
        std::fs::read(dir.path().join("small.bin")).unwrap() == content("small.bin", 1, 2000),
        "left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_get_the_servers_time_and_timestamping_asks_before_fetching() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(5000, "t.bin", "");
    let output = run(get(dir.path(), &[], std::slice::from_ref(&url))).await;
    assert!(output.status.success());
    let path = dir.path().join("t.bin");
    assert_eq!(
        mtime(&path),
        783_679_777,
        "Last-Modified: Sun, 01 Nov 1994 08:49:37 GMT"
    );

    let before = server.body_bytes();
    let output = run(get(dir.path(), &["-N"], std::slice::from_ref(&url))).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(server.body_bytes(), before, "a 304 transfers nothing");
    assert_eq!(events(&output.stdout, "summary")[0]["skipped"], 1);
    let asked = server.log().last().unwrap().clone();
    assert_eq!(asked.status, 304);

    server.set_version("/files/5000/t.bin", 2);
    let output = run(get(dir.path(), &["-N"], std::slice::from_ref(&url))).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        std::fs::read(&path).unwrap() == content("t.bin", 2, 5000),
        "a 200 replaces it"
    );

    std::fs::remove_file(&path).unwrap();
    let output = run(get(dir.path(), &["--no-remote-time"], &[url])).await;
    assert!(output.status.success());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now - mtime(&path) < 60, "the download's own time");
}

/// Starts a throttled download of `name` and cancels it after half a second: a `.part` with
/// its state is left for the next request to resume.
async fn leave_a_part(fixture: &Fixture, size: u64, name: &str) {
    let token = CancellationToken::new();
    let slow = fixture
        .request(size, name, "rate=4194304")
        .with_connections(1)
        .with_cancellation(token.clone());
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel();
    });
    assert!(fixture.downloader.download(slow).await.is_err());
    stopper.await.unwrap();
}
