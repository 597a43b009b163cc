//! One road to the server (issue #14): every request path shares the exchange's deadlines, the
//! body pump's stall and low-speed rules, and the retry policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use haul::{CancellationToken, ChannelObserver, Error, Event, Request};

use crate::support::server::{SilentServer, TestServer, content};
use crate::support::{Fixture, fast_downloader, haul, run, stderr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_or_manifest_server_that_never_answers_fails_within_its_deadlines() {
    let silent = SilentServer::start().await;
    let root = tempfile::tempdir().unwrap();
    for (source, recursive) in [
        (silent.url("/pub/"), true),
        (silent.url("/manifest.txt"), false),
    ] {
        let mut command = haul();
        command.args([
            "sync",
            "--connect-timeout",
            "1s",
            "--stall-timeout",
            "1s",
            "--retries",
            "1",
        ]);
        command.args(["--max-retry-wait", "100ms"]);
        if recursive {
            command.arg("--recursive");
        }
        command.arg(&source).arg(root.path().join("mirror"));
        let started = Instant::now();
        let output = run(command).await;
        let took = started.elapsed();
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert!(
            took < Duration::from_secs(10),
            "two attempts of (1 s + 1 s) each, not forever: {took:?}"
        );
        let message = stderr(&output);
        assert!(
            message.contains("stalled") || message.contains("no data"),
            "{message}"
        );
    }
    assert!(silent.accepted() >= 4, "each fetch was tried twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_asks_for_patience_twice_is_synced() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let mirror = root.path().join("mirror");
    let mut command = haul();
    command.args(["sync", "-q", "--recursive", "--max-depth", "0"]);
    command.arg(server.url("/tree/?status=503&retry_after=1&fault_times=2"));
    command.arg(&mirror);
    let started = Instant::now();
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 1 was honoured twice"
    );
    assert!(
        std::fs::read(mirror.join("a.bin")).unwrap() == content("a.bin", 1, 1000),
        "the exact bytes"
    );
    let listing_requests = server.log().iter().filter(|r| r.path == "/tree/").count();
    assert_eq!(listing_requests, 3, "two 503s, then the listing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_answer_is_dropped_and_a_healthy_connection_finishes_the_file() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let size = 2 << 20;
    let url = server.file_url(size, "trickle.bin", "trickle_after=1024&fault_times=1");
    let mut command = haul();
    command.args([
        "get",
        "-q",
        "-x",
        "1",
        "--lowest-speed-limit",
        "10K",
        "--speed-time",
        "5s",
    ]);
    command.arg("-d").arg(dir.path()).arg(&url);
    let started = Instant::now();
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        std::fs::read(dir.path().join("trickle.bin")).unwrap() == content("trickle.bin", 1, size),
        "the exact bytes"
    );
    let log = server.log();
    assert_eq!(log.len(), 2, "the trickle, then one healthy request");
    let resumed_at: u64 = log[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse().ok())
        .expect("the second request resumes with a range");
    assert!(
        resumed_at >= 1024,
        "the bytes that trickled in are kept: {resumed_at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_trickles_forever_ends_in_a_clear_failure() {
    let fixture = Fixture::with(
        fast_downloader()
            .retries(2)
            .lowest_speed_limit(10_000, Duration::from_millis(500)),
    )
    .await;
    let request = fixture.request(2 << 20, "forever.bin", "trickle_after=10&trickle_ms=100");
    let error = fixture.downloader.download(request).await.unwrap_err();
    assert!(matches!(error, Error::TooSlow { .. }), "{error}");
    assert_eq!(
        fixture.server.requests(),
        3,
        "the retry count is not reset by a trickle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_refused_with_500_after_a_dropped_connection_restart_plainly() {
    let fixture = Fixture::new().await;
    let size = 4 << 20;
    let query = "ranged_status=500&drop_after=1048576&fault_times=1";
    let request = fixture.request(size, "r500.bin", query).with_connections(1);
    let done = fixture.downloader.download(request).await.unwrap();
    assert!(
        std::fs::read(done.path).unwrap() == content("r500.bin", 1, size),
        "the exact bytes"
    );
    let statuses: Vec<(bool, u16)> = fixture
        .server
        .log()
        .iter()
        .map(|r| (r.range.is_some(), r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![(false, 200), (true, 500), (true, 500), (false, 200)],
        "a drop, two refused ranges, then one plain request from byte 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_answer_finishes_a_segmented_file_whose_ranges_get_500() {
    let fixture = Fixture::with(fast_downloader().min_split_size(1 << 20)).await;
    let size = 16 << 20;
    // A healthy but not instant plain answer, so the extra connections' ranges fail first.
    let request = fixture
        .request(size, "seg500.bin", "ranged_status=500&rate=33554432")
        .with_connections(4);
    let done = fixture.downloader.download(request).await.unwrap();
    assert!(
        std::fs::read(done.path).unwrap() == content("seg500.bin", 1, size),
        "the exact bytes"
    );
    let plain = fixture
        .server
        .log()
        .iter()
        .filter(|r| r.range.is_none())
        .count();
    assert_eq!(plain, 1, "the one plain answer was never abandoned");
    assert!(fixture.server.body_bytes() <= size, "no byte fetched twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_refused_with_412_in_a_run_and_on_a_rerun_of_a_part() {
    let fixture = Fixture::new().await;
    let size = 4 << 20;
    // In a run: the first answer breaks off, the resume is refused with 412.
    let request = fixture
        .request(
            size,
            "r412.bin",
            "ranged_status=412&drop_after=1048576&fault_times=1",
        )
        .with_connections(1);
    let done = fixture.downloader.download(request).await.unwrap();
    assert!(
        std::fs::read(&done.path).unwrap() == content("r412.bin", 1, size),
        "the exact bytes"
    );

    // On a rerun: a `.part` from an interrupted run, then a server that refuses its ranges.
    let token = CancellationToken::new();
    let slow = fixture
        .request(size, "rerun.bin", "rate=4194304")
        .with_connections(1)
        .with_cancellation(token.clone());
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        token.cancel();
    });
    assert!(matches!(
        fixture.downloader.download(slow).await,
        Err(Error::Cancelled)
    ));
    stopper.await.unwrap();
    assert!(fixture.path("rerun.bin.part").exists(), "a part to resume");
    let refused = fixture
        .request(size, "rerun.bin", "ranged_status=412")
        .with_connections(1);
    let done = fixture.downloader.download(refused).await.unwrap();
    assert!(
        std::fs::read(done.path).unwrap() == content("rerun.bin", 1, size),
        "the exact bytes"
    );
    let last = fixture
        .server
        .log()
        .into_iter()
        .rev()
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!((last[1].range.is_some(), last[1].status), (true, 412));
    assert_eq!((last[0].range.is_some(), last[0].status), (false, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_to_a_range_is_patience_not_refusal() {
    let fixture = Fixture::new().await;
    let size = 4 << 20;
    let url = fixture.server.file_url(size, "patience.bin", "");
    // A part from an interrupted run.
    let token = CancellationToken::new();
    let slow = Request::new(&format!("{url}?rate=4194304"))
        .unwrap()
        .to_file(fixture.path("patience.bin"))
        .with_connections(1)
        .with_cancellation(token.clone());
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        token.cancel();
    });
    let _ = fixture.downloader.download(slow).await;
    stopper.await.unwrap();
    let kept = crate::support::resumable_prefix(&fixture.path("patience.bin.part.haul"));
    assert!(kept > 0);
    let busy = Request::new(&format!("{url}?status=503&retry_after=0&fault_times=3"))
        .unwrap()
        .to_file(fixture.path("patience.bin"))
        .with_connections(1);
    let done = fixture.downloader.download(busy).await.unwrap();
    assert_eq!(
        done.resumed_from, kept,
        "the bytes on disk were resumed, not thrown away"
    );
    assert!(
        std::fs::read(done.path).unwrap() == content("patience.bin", 1, size),
        "the exact bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_download_stops_promptly_when_cancelled() {
    let fixture = Fixture::new().await;
    let token = CancellationToken::new();
    let request = fixture
        .request(8 << 20, "pipe.bin", "rate=1048576")
        .with_cancellation(token.clone());
    let (observer, mut events) = ChannelObserver::new();
    let downloader = fixture.downloader.clone();
    let task = tokio::spawn(async move {
        let mut sink = tokio::io::sink();
        downloader
            .download_to_writer_observed(&request, &mut sink, Arc::new(observer))
            .await
    });
    // Cancel once the first bytes arrived.
    loop {
        match events.recv().await {
            Some(Event::Progress { .. }) => break,
            Some(_) => {}
            None => panic!("no progress before the end"),
        }
    }
    let cancelled_at = Instant::now();
    token.cancel();
    let result = task.await.unwrap();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(cancelled_at.elapsed() < Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_download_honours_retry_after_and_reports_events() {
    let fixture = Fixture::with(fast_downloader().max_retry_wait(Duration::from_secs(5))).await;
    let request = fixture.request(
        100_000,
        "busy.bin",
        "status=429&retry_after=1&fault_times=1",
    );
    let (observer, mut events) = ChannelObserver::new();
    let mut out = Vec::new();
    let started = Instant::now();
    let streamed = fixture
        .downloader
        .download_to_writer_observed(&request, &mut out, Arc::new(observer))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 honoured"
    );
    assert_eq!(streamed.bytes, 100_000);
    assert!(out == content("busy.bin", 1, 100_000), "the exact bytes");
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(match event {
            Event::Retrying { delay, .. } => {
                assert_eq!(delay, Duration::from_secs(1));
                "retrying"
            }
            Event::Queued { .. } => "queued",
            Event::Started { .. } => "started",
            Event::Progress { .. } => "progress",
            Event::Streamed { .. } => "streamed",
            _ => "other",
        });
    }
    seen.dedup();
    assert_eq!(
        seen,
        vec!["queued", "retrying", "started", "progress", "streamed"],
        "one terminal event, last"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hook_keeps_hauls_settings_and_adds_its_own() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = fast_downloader()
        .user_agent("haul-tests/1")
        .configure_client(|builder| {
            let mut headers = haul::reqwest::header::HeaderMap::new();
            headers.insert("authorization", "Bearer hook".parse().unwrap());
            builder.default_headers(headers)
        })
        .build()
        .unwrap();
    let request = Request::new(&server.url("/chain/2"))
        .unwrap()
        .into_dir(dir.path());
    let done = downloader.download(request).await.unwrap();
    assert!(
        std::fs::read(done.path).unwrap() == content("chained", 1, 10),
        "the exact bytes"
    );
    let log = server.log();
    assert!(
        log.iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer hook"))
    );
    assert!(
        log.iter()
            .all(|r| r.accept_encoding.as_deref() == Some("identity"))
    );
    let looped = Request::new(&server.url("/loop"))
        .unwrap()
        .into_dir(dir.path());
    let error = downloader.download(looped).await.unwrap_err();
    assert!(
        error.to_string().contains("redirect loop"),
        "haul's redirect policy holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_sends_headers_is_given_up_on() {
    let silent = SilentServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = fast_downloader()
        .retries(1)
        .stall_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = downloader
        .download(
            Request::new(&silent.url("/f.bin"))
                .unwrap()
                .into_dir(dir.path()),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Stalled { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
