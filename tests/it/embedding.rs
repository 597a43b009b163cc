//! The library as an embedder uses it (issue #7): cancellation, a custom client, error kinds
//! for each failure class, and the runnable examples against the in-process server.

use std::path::PathBuf;
use std::time::Duration;

use haul::{CancellationToken, Error, ErrorKind, OnExists, Request};

use crate::support::server::{TestServer, content};
use crate::support::{Fixture, fast_downloader, listing, run, stderr};

const SIZE: u64 = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_one_download_leaves_the_others_running_and_it_resumes_later() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    let slow = server.file_url(SIZE, "one.bin", "rate=4194304");
    let token = CancellationToken::new();
    let requests = vec![
        Request::new(&slow)
            .unwrap()
            .into_dir(dir.path())
            .with_cancellation(token.clone()),
        Request::new(&server.file_url(SIZE, "other.bin", "rate=8388608"))
            .unwrap()
            .into_dir(dir.path()),
    ];
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel();
    });
    let outcomes = downloader.batch(requests).run().await.unwrap();
    canceller.await.unwrap();
    let error = outcomes[0].as_ref().unwrap_err();
    assert!(matches!(error, Error::Cancelled), "{error}");
    assert_eq!(error.kind(), ErrorKind::Cancelled);
    assert!(outcomes[1].is_ok(), "the other download finished");
    let kept = crate::support::resumable_prefix(&dir.path().join("one.bin.part.haul"));
    let _ = std::fs::metadata(dir.path().join("one.bin.part"))
        .unwrap()
        .len();
    assert!(kept > 0 && kept < SIZE, "a resumable part: {kept}");

    let done = downloader
        .download(Request::new(&slow).unwrap().into_dir(dir.path()))
        .await
        .unwrap();
    assert_eq!(done.resumed_from, kept);
    assert_eq!(
        std::fs::read(done.path).unwrap(),
        content("one.bin", 1, SIZE)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_batch_stops_running_and_queued_downloads() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::with(fast_downloader().jobs(2)).await;
    let requests: Vec<Request> = (0..5)
        .map(|i| {
            Request::new(&server.file_url(SIZE, &format!("b{i}"), "rate=4194304"))
                .unwrap()
                .into_dir(dir.path())
        })
        .collect();
    let token = CancellationToken::new();
    let canceller = {
        let token = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            token.cancel();
        })
    };
    let outcomes = downloader
        .batch(requests)
        .with_cancellation(token)
        .run()
        .await
        .unwrap();
    canceller.await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Err(Error::Cancelled))));
    assert_eq!(server.requests(), 2, "queued downloads never started");
    assert_eq!(
        listing(dir.path()),
        vec!["b0.part", "b0.part.haul", "b1.part", "b1.part.haul"]
    );
}

/// A client of the embedder's own, started from `Downloader::client_builder()` *before* any
/// `Downloader::builder()` call: no panic for want of a TLS provider, its `User-Agent` kept
/// (unless the builder sets one), and redirects still followed by haul (a `Location` with the
/// file name decides the name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_can_bring_its_own_client() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let own = || {
        haul::Downloader::client_builder()
            .user_agent("embedder/1.0")
            .no_proxy()
            .build()
            .unwrap()
    };
    let downloader = fast_downloader().client(own()).build().unwrap();
    let target = server.file_url(1000, "c.bin", "");
    let redirect = server.url(&format!(
        "/redirect?to={}",
        percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC)
    ));
    let done = downloader
        .download(Request::new(&redirect).unwrap().into_dir(dir.path()))
        .await
        .unwrap();
    assert_eq!(std::fs::read(done.path).unwrap(), content("c.bin", 1, 1000));
    let agents: Vec<Option<String>> = server.log().into_iter().map(|l| l.user_agent).collect();
    assert_eq!(
        agents.len(),
        2,
        "haul followed the redirect itself: {agents:?}"
    );
    assert!(
        agents.iter().all(|a| a.as_deref() == Some("embedder/1.0")),
        "the client's own User-Agent is kept: {agents:?}"
    );
    let chosen = fast_downloader()
        .client(own())
        .user_agent("chosen/2")
        .build()
        .unwrap();
    chosen
        .download(
            Request::new(&server.file_url(10, "d.bin", ""))
                .unwrap()
                .into_dir(dir.path()),
        )
        .await
        .unwrap();
    let last = server.log().pop().unwrap();
    assert_eq!(
        last.user_agent.as_deref(),
        Some("chosen/2"),
        "the builder's wins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_class_has_its_own_kind() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let quick = fast_downloader().retries(0).build().unwrap();
    let fetch = |url: String| {
        let quick = quick.clone();
        let dir = dir.path().to_path_buf();
        async move {
            quick
                .download(Request::new(&url).unwrap().into_dir(dir))
                .await
                .unwrap_err()
        }
    };
    assert_eq!(
        fetch(server.url("/missing")).await.kind(),
        ErrorKind::HttpStatus
    );
    assert_eq!(
        fetch(server.file_url(100_000, "cut", "drop_after=1000"))
            .await
            .kind(),
        ErrorKind::Network
    );
    // Nothing listens on port 9 of loopback.
    assert_eq!(
        fetch("http://127.0.0.1:9/x".into()).await.kind(),
        ErrorKind::Network
    );

    let mismatch = quick
        .download(
            Request::new(&server.file_url(10, "sum", ""))
                .unwrap()
                .into_dir(dir.path())
                .with_checksum(format!("sha-512={}", "0".repeat(128)).parse().unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(mismatch.kind(), ErrorKind::Integrity);

    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"a file where a directory should be").unwrap();
    let io = quick
        .download(
            Request::new(&server.file_url(10, "f", ""))
                .unwrap()
                .into_dir(&blocked),
        )
        .await
        .unwrap_err();
    assert_eq!(io.kind(), ErrorKind::Io, "{io}");

    std::fs::write(dir.path().join("exists"), b"mine").unwrap();
    let strict = fast_downloader()
        .on_exists(OnExists::Error)
        .build()
        .unwrap();
    let exists = strict
        .download(
            Request::new(&server.file_url(10, "exists", ""))
                .unwrap()
                .into_dir(dir.path()),
        )
        .await
        .unwrap_err();
    assert_eq!(exists.kind(), ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(dir.path().join("exists")).unwrap(), b"mine");

    let invalid = Request::new("gopher://h/x").unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::InvalidInput);
}

/// The examples directory next to the test binary (`target/<profile>/examples`).
/// An example's binary, next to the test binary (`target/<profile>/examples`). `cargo test
/// --all-targets` compiles examples only in test mode, so they are built here, once, with the
/// cargo that runs the tests.
pub fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let target_dir = profile_dir.parent().unwrap();
    BUILT.call_once(|| {
        let mut command = std::process::Command::new(env!("CARGO"));
        command
            .args(["build", "--quiet", "--examples", "--manifest-path"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            command.arg("--release");
        }
        let status = command.status().expect("run cargo to build the examples");
        assert!(status.success(), "building the examples failed");
    });
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_run_against_a_real_server() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();

    let mut simple = std::process::Command::new(example("simple"));
    simple
        .arg(server.file_url(5000, "s.bin", ""))
        .arg(dir.path());
    let output = run(simple).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("5000 bytes"));

    let mut batch = std::process::Command::new(example("batch_with_progress"));
    batch
        .arg(dir.path())
        .arg(server.file_url(100, "b1", ""))
        .arg(server.file_url(200, "b2", ""));
    let output = run(batch).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 2);

    let url = server.file_url(SIZE, "c.bin", "rate=4194304");
    let mut cancel = std::process::Command::new(example("cancel"));
    cancel.arg(&url).arg(dir.path()).arg("300");
    let output = run(cancel).await;
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(dir.path().join("c.bin.part").exists());
    let mut resume = std::process::Command::new(example("cancel"));
    resume.arg(&url).arg(dir.path()).arg("60000");
    let output = run(resume).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.path().join("c.bin")).unwrap() == content("c.bin", 1, SIZE));

    let mirror_dir = dir.path().join("mirror");
    std::fs::create_dir_all(&mirror_dir).unwrap();
    std::fs::write(mirror_dir.join("stale.bin"), b"old").unwrap();
    let mut mirror = std::process::Command::new(example("mirror"));
    mirror
        .arg(server.url("/tree/"))
        .arg(&mirror_dir)
        .arg("--delete");
    let output = run(mirror).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("6 new, 0 updated, 0 unchanged, 1 deleted")
    );
    assert!(!mirror_dir.join("stale.bin").exists());
    assert!(std::fs::read(mirror_dir.join("sub/c.bin")).unwrap() == content("sub/c.bin", 1, 3000));
}

/// The service example: tags, a cancellation by tag, a retry shown as it happens, and a last
/// progress line at 100% although one download was cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_example_tags_cancels_shows_retries_and_reaches_100_percent() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut commands: Vec<String> = (0..6)
        .map(|i| server.file_url(1000 + i, &format!("svc{i}"), "delay_ms=200"))
        .collect();
    commands.push(format!(
        "flaky {}",
        server.file_url(500, "flaky", "status=503&fault_times=1")
    ));
    commands.push(format!(
        "slow {}",
        server.file_url(4 << 20, "slow.bin", "rate=262144")
    ));
    commands.push("cancel slow".to_owned());
    let served = server.requests();
    let mut service = std::process::Command::new(example("service"));
    service
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = service.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for command in &commands {
            writeln!(stdin, "{command}").unwrap();
            let pause = if command.starts_with("slow") { 700 } else { 50 };
            std::thread::sleep(std::time::Duration::from_millis(pause));
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let said = stderr(&output);
    assert!(output.status.success(), "{said}");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let saved = stdout.lines().filter(|l| l.starts_with("saved ")).count();
    assert_eq!(saved, 7, "{stdout}");
    assert!(
        stdout.contains("saved #1 "),
        "a line's number is its tag: {stdout}"
    );
    assert!(stdout.lines().any(|l| l == "cancelled slow"), "{stdout}");
    assert!(said.contains("retrying flaky: attempt 2"), "{said}");
    let last = said
        .lines()
        .rfind(|l| l.contains("downloads ended"))
        .unwrap();
    assert!(
        last.starts_with("8/8 downloads ended (1 cancelled)") && last.ends_with("(100%)"),
        "{last}"
    );
    assert!(said.contains("slow: slow.bin (cancelled, "), "{said}");
    assert!(server.requests() - served >= 9);
    for i in 0..6u64 {
        let name = format!("svc{i}");
        assert!(std::fs::read(dir.path().join(&name)).unwrap() == content(&name, 1, 1000 + i));
    }
    assert!(
        dir.path().join("slow.bin.part").exists(),
        "kept for a resume"
    );
}

/// An embedder runs the library's long operations on tasks of their own: every one of them is
/// a `Send` future that `tokio::spawn` takes (a sync's dry run was not, for a borrow held in a
/// stream's closure). Spawned here for real, on a source with one file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_librarys_long_operations_can_run_on_spawned_tasks() {
    let fixture = Fixture::new().await;
    let lists = tempfile::tempdir().unwrap();
    let manifest = lists.path().join("manifest.txt");
    std::fs::write(
        &manifest,
        format!("{}\n", fixture.server.file_url(100, "one.bin", "")),
    )
    .unwrap();
    let source = haul::sync::Source::parse(
        manifest.to_str().unwrap(),
        false,
        haul::sync::CrawlLimits::default(),
    )
    .unwrap();
    let downloader = fixture.downloader.clone();
    let dir = fixture.dir.path().to_path_buf();
    let options = haul::sync::SyncOptions {
        dry_run: true,
        ..haul::sync::SyncOptions::default()
    };
    let dry = tokio::spawn(async move {
        let files = source.read(&downloader).await.unwrap();
        let prepared = haul::sync::prepare(&dir, &files, &options).await.unwrap();
        haul::sync::dry_run(&downloader, &prepared).await
    })
    .await
    .unwrap();
    assert_eq!(dry.lines.len(), 1);
    let downloader = fixture.downloader.clone();
    let request = fixture.request(100, "one.bin", "");
    let done = tokio::spawn(async move { downloader.download(request).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.bytes, 100);
}
