//! `haul sync` as a mirror job relies on it (issue #16): exact names, conflicts reported and
//! never dropped, local changes repaired, deletion rules, an honest dry run, S3 listings, and
//! an interrupted sync that never leaves a half-written file under a final name.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::server::{TREE, TestServer, content};
use crate::support::{haul, run, stderr};

fn sync(source: &str, dir: &Path, extra: &[&str]) -> std::process::Command {
    let mut command = haul();
    command
        .args(["sync", "-q"])
        .args(extra)
        .arg(source)
        .arg(dir);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_differ_by_dots_are_mirrored_exactly() {
    let server = TestServer::start().await;
    let files: &[(&str, &[u8])] = &[
        (".x.txt", b"dot x"),
        ("x.txt", b"plain x"),
        ("y.txt", b"plain y"),
        ("y.txt.", b"y with a trailing dot"),
        (".well-known/.htaccess", b"deny from all"),
    ];
    server.put_tree("/names/", files);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let output = run(sync(&server.url("/names/"), &dir, &["--recursive"])).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for (path, bytes) in files {
        assert_eq!(std::fs::read(dir.join(path)).unwrap(), *bytes, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_names_are_reported_and_fail_the_sync_unless_skipped() {
    let server = TestServer::start().await;
    let files: &[(&str, &[u8])] = &[
        ("good.bin", b"good"),
        ("a b", b"spaced"),
        ("trap.part", b"looks like a working file"),
    ];
    server.put_tree("/clash/", files);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    // The same file twice in a manifest: one path, two URLs.
    let manifest = root.path().join("m.txt");
    std::fs::write(
        &manifest,
        format!(
            "{}\n  out=same.bin\n{}\n  out=same.bin\n{}\n",
            server.url("/clash/good.bin"),
            server.url("/clash/a%20b"),
            server.url("/clash/trap.part"),
        ),
    )
    .unwrap();
    let output = run(sync(manifest.to_str().unwrap(), &dir, &[])).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("conflict: same.bin"), "{message}");
    assert!(message.contains("conflict: trap.part"), "{message}");
    assert!(
        !dir.join("same.bin").exists(),
        "neither of two claimants is chosen"
    );
    assert!(!dir.join("trap.part").exists());

    let output = run(sync(
        manifest.to_str().unwrap(),
        &dir,
        &["--on-conflict", "skip"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("warning: conflict"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locally_corrupted_file_is_fetched_again() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let source = server.url("/tree/");
    let output = run(sync(&source, &dir, &["--recursive"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    // Same size, new bytes, new time: a zeroed file.
    let victim = dir.join("sub/c.bin");
    std::fs::write(&victim, vec![0u8; 3000]).unwrap();
    let before = server.body_bytes();
    let output = run(sync(&source, &dir, &["--recursive"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(&victim).unwrap() == content("sub/c.bin", 1, 3000));
    assert_eq!(
        server.body_bytes() - before,
        3000,
        "only the damaged file is fetched"
    );

    // Zeroed and given back its old time: only --verify-local notices.
    let output = run(sync(&source, &dir, &["--recursive", "--verify-local"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let time = std::fs::metadata(&victim).unwrap().modified().unwrap();
    std::fs::write(&victim, vec![0u8; 3000]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(time)
        .unwrap();
    let output = run(sync(&source, &dir, &["--recursive"])).await;
    assert!(output.status.success());
    assert!(
        std::fs::read(&victim).unwrap() != content("sub/c.bin", 1, 3000),
        "not noticed without"
    );
    let output = run(sync(&source, &dir, &["--recursive", "--verify-local"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(&victim).unwrap() == content("sub/c.bin", 1, 3000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_link_blocks_deletion_unless_asked_and_max_delete_bounds_it() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    std::fs::create_dir_all(&dir).unwrap();
    for stale in ["stale1", "stale2", "stale3"] {
        std::fs::write(dir.join(stale), b"old").unwrap();
    }
    let manifest = root.path().join("m.txt");
    std::fs::write(
        &manifest,
        format!(
            "{}\n{}\n",
            server.file_url(100, "ok.bin", ""),
            server.url("/files/100/gone.bin?status=404")
        ),
    )
    .unwrap();
    let source = manifest.to_str().unwrap();
    let output = run(sync(source, &dir, &["--delete"])).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        dir.join("stale1").exists(),
        "a failed download blocks deletion"
    );
    assert!(
        stderr(&output).contains("--delete-on-errors"),
        "{}",
        stderr(&output)
    );

    let output = run(sync(
        source,
        &dir,
        &["--delete", "--delete-on-errors", "--max-delete", "2"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("more than the limit of 2"),
        "{}",
        stderr(&output)
    );
    assert!(dir.join("stale1").exists() && dir.join("stale3").exists());

    let output = run(sync(
        source,
        &dir,
        &["--delete", "--delete-on-errors", "--max-delete", "3"],
    ))
    .await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "the 404 still fails the sync"
    );
    assert!(!dir.join("stale1").exists() && !dir.join("stale3").exists());
    assert!(dir.join("ok.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_shows_a_file_that_would_fail_and_exits_as_a_real_run_would() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let manifest = root.path().join("m.txt");
    std::fs::write(
        &manifest,
        format!(
            "{}\n{}\n",
            server.file_url(100, "fine.bin", ""),
            server.url("/files/100/missing.bin?status=404")
        ),
    )
    .unwrap();
    let mut command = haul();
    command.args(["sync", "--dry-run"]).arg(&manifest).arg(&dir);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let plan = String::from_utf8_lossy(&output.stdout);
    assert!(plan.contains("new       fine.bin"), "{plan}");
    assert!(plan.contains("fail      missing.bin: "), "{plan}");
    assert!(plan.contains("404"), "{plan}");
    assert!(!dir.exists(), "a dry run changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_then_a_rerun_never_leaves_a_half_written_file() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let source = server.url("/tree/");
    let output = run(sync(&source, &dir, &["--recursive"])).await;
    assert!(output.status.success());
    server.set_version("/tree/big/large.bin", 2);
    let mut command = haul();
    command
        .args(["sync", "--recursive", "--limit-rate", "1M"])
        .arg(&source)
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
    assert!(stderr(&output).contains("SIGTERM"), "{}", stderr(&output));
    let big = dir.join("big/large.bin");
    assert!(
        std::fs::read(&big).unwrap() == content("big/large.bin", 1, 4 << 20),
        "the old copy stays whole until the new one is complete"
    );
    assert!(dir.join("big/large.bin.part").exists());
    let output = run(sync(&source, &dir, &["--recursive"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(&big).unwrap() == content("big/large.bin", 2, 4 << 20));
    for (path, size) in TREE {
        if *path != "big/large.bin" {
            assert!(std::fs::read(dir.join(path)).unwrap() == content(path, 1, *size));
        }
    }
}

/// moto's S3 server, started by the test, with a public bucket `pub` holding `files` under
/// `sets/`.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto(files: &[(&str, &[u8])]) -> Option<Moto> {
    let found = std::process::Command::new("python3")
        .args(["-c", "import moto.server, boto3"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "moto is required under CI=true (pip install 'moto[server]')"
        );
        eprintln!("SKIPPED: moto is not installed (pip install 'moto[server]'); S3 test not run");
        return None;
    }
    let port = crate::support::free_port();
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Moto { child, port };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut script = format!(
        "import boto3\ns3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', \
         aws_access_key_id='t', aws_secret_access_key='t', region_name='us-east-1')\n\
         s3.create_bucket(Bucket='pub', ACL='public-read')\n"
    );
    for (key, bytes) in files {
        let _ = writeln!(
            script,
            "s3.put_object(Bucket='pub', Key={key:?}, Body=bytes({bytes:?}), ACL='public-read')"
        );
    }
    let status = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success(), "filling the bucket failed");
    Some(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_bucket_listing_is_mirrored_page_by_page() {
    let files: &[(&str, &[u8])] = &[
        ("sets/a.csv", b"a,b\n1,2\n"),
        ("sets/.hidden/x y&z.bin", b"hidden"),
        ("sets/deep/er/file.txt", b"deep"),
        ("sets/last.txt", b"last"),
        ("other/not-mine.txt", b"outside the prefix"),
    ];
    let Some(moto) = tokio::task::spawn_blocking(move || moto(files))
        .await
        .unwrap()
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let source = format!(
        "http://127.0.0.1:{}/pub?list-type=2&prefix=sets/&max-keys=2",
        moto.port
    );
    let output = run(sync(&source, &dir, &["--recursive"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    for (key, bytes) in files.iter().filter(|(k, _)| k.starts_with("sets/")) {
        let path = key.strip_prefix("sets/").unwrap();
        assert_eq!(std::fs::read(dir.join(path)).unwrap(), *bytes, "{path}");
    }
    assert!(!dir.join("not-mine.txt").exists() && !dir.join("other").exists());
    let mut again = haul();
    again
        .args(["sync", "--json", "--recursive"])
        .arg(&source)
        .arg(&dir);
    let output = run(again).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "sync_summary")
        .unwrap();
    assert_eq!(summary["new"], 0, "{summary}");
}
