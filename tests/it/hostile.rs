//! Hostile input (issue #22): names from the network never leave the directory through any
//! path component, crawls are bounded, sizes are bounded.

use std::process::Stdio;
use std::time::{Duration, Instant};

use haul::{ErrorKind, Request};

use crate::support::server::TestServer;
use crate::support::{Fixture, fast_downloader, haul, run, stderr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_directory_in_a_mirror_is_never_written_through() {
    let server = TestServer::start().await;
    let outside = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("evil")).unwrap();
    let files: &[(&str, &[u8])] = &[("evil/file.txt", b"payload"), ("ok.txt", b"fine")];
    server.put_tree("/hostile/", files);
    // Through a listing.
    let mut listing = haul();
    listing
        .args(["sync", "--recursive"])
        .arg(server.url("/hostile/"))
        .arg(&dir);
    let output = run(listing).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("symlink"), "{}", stderr(&output));
    // Through a manifest's dir=.
    let manifest = root.path().join("m.txt");
    std::fs::write(
        &manifest,
        format!("{}\n  dir=evil\n", server.url("/hostile/ok.txt")),
    )
    .unwrap();
    let mut by_manifest = haul();
    by_manifest.args(["sync"]).arg(&manifest).arg(&dir);
    let output = run(by_manifest).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing outside"
    );
    assert_eq!(std::fs::read(dir.join("ok.txt")).unwrap(), b"fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_below_a_symlink_fails_with_unsafe_path() {
    let fixture = Fixture::new().await;
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), fixture.path("link")).unwrap();
    let request = Request::new(&fixture.server.file_url(100, "f.bin", ""))
        .unwrap()
        .into_dir_at(fixture.dir.path(), "link/f.bin")
        .unwrap();
    let error = fixture.downloader.download(request).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnsafePath, "{error}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    // A path the user typed is theirs to follow.
    let typed = Request::new(&fixture.server.file_url(100, "g.bin", ""))
        .unwrap()
        .to_file(fixture.path("link/g.bin"));
    fixture.downloader.download(typed).await.unwrap();
    assert!(outside.path().join("g.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_disposition_name_never_replaces_a_symlink_or_writes_through_it() {
    let fixture = Fixture::with(fast_downloader().content_disposition(true)).await;
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("report.pdf");
    std::fs::write(&target, b"keep").unwrap();
    std::os::unix::fs::symlink(&target, fixture.path("report.pdf")).unwrap();
    let disposition = "attachment%3B%20filename%3D%22report.pdf%22";
    let request = fixture.request(100, "download", &format!("disposition={disposition}"));
    let done = fixture.downloader.download(request).await.unwrap();
    assert_eq!(done.path, fixture.path("report.pdf.1"));
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert!(
        std::fs::symlink_metadata(fixture.path("report.pdf"))
            .unwrap()
            .is_symlink()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_loop_served_by_python_is_synced_and_reported_within_seconds() {
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("real.txt"), b"the only file").unwrap();
    std::os::unix::fs::symlink(".", www.path().join("a")).unwrap();
    std::os::unix::fs::symlink(".", www.path().join("b")).unwrap();
    let port = crate::support::free_port();
    let mut server = std::process::Command::new("python3")
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
        .expect("python3 for http.server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http.server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stale.txt"), b"old").unwrap();
    let mut command = haul();
    command
        .args(["sync", "--recursive", "--delete"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg(&dir);
    let started = Instant::now();
    let output = run(command).await;
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("symlink loop"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read(dir.join("real.txt")).unwrap(),
        b"the only file"
    );
    assert!(
        dir.join("stale.txt").exists(),
        "an incomplete listing deletes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_of_a_hundred_thousand_links_ends_within_its_bounds() {
    let server = TestServer::start().await;
    let names: Vec<String> = (0..100_000).map(|i| format!("f{i}")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    server.put_tree("/many/", &files);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stale"), b"old").unwrap();
    let mut command = haul();
    command
        .args([
            "sync",
            "-q",
            "--recursive",
            "--delete",
            "--max-files",
            "100",
            "-j",
            "16",
        ])
        .arg(server.url("/many/"))
        .arg(&dir);
    let started = Instant::now();
    let output = run(command).await;
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--max-files"),
        "{}",
        stderr(&output)
    );
    assert!(
        dir.join("stale").exists(),
        "a bound reached deletes nothing"
    );
    // At most 100 files, the stale one, the sync's memory and its lock.
    let synced = std::fs::read_dir(&dir).unwrap().count();
    assert!(synced <= 103, "{synced} entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_filesize_stops_an_endless_body_and_refuses_a_large_announcement() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, query) in [("endless.bin", "endless=1"), ("large.bin", "")] {
        let mut command = haul();
        command
            .args(["get", "--json", "--max-filesize", "1M", "-d"])
            .arg(dir.path())
            .arg(server.file_url(64 << 20, name, query));
        let started = Instant::now();
        let output = run(command).await;
        // An endless body that was not stopped would never end.
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains("\"kind\":\"too_large\""));
        assert!(!dir.path().join(name).exists(), "no final name");
        assert!(
            !dir.path().join(format!("{name}.part")).exists(),
            "no part left"
        );
    }
}
