//! Reliability and safety (issue #5): retries and Retry-After, politeness towards a host that
//! pushes back, the rate limit, hostile servers (redirects, encodings, names), existing files,
//! planted symlinks, a full disk, and a big batch under a low file-descriptor limit. Each test
//! checks the end state on disk and the requests the server saw.

use std::time::{Duration, Instant};

use haul::{Downloader, ErrorKind, OnExists, Request};

use crate::support::SmallDisk;
use crate::support::server::{TestServer, content};
use crate::support::{Fixture, fast_downloader, haul, listing, run, stderr};

fn into(url: &str, dir: &std::path::Path) -> Request {
    Request::new(url).unwrap().into_dir(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_failures_are_retried_and_permanent_ones_are_not() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::with(fast_downloader().retries(3)).await;
    for code in [408, 429, 500, 502, 503, 504] {
        let url = server.file_url(
            1000,
            &format!("t{code}"),
            &format!("status={code}&fault_times=2"),
        );
        let done = downloader.download(into(&url, dir.path())).await.unwrap();
        assert!(std::fs::read(done.path).unwrap() == content(&format!("t{code}"), 1, 1000));
    }
    assert_eq!(server.requests(), 6 * 3, "two failures and a success each");
    for code in [401, 403, 404, 410] {
        let before = server.requests();
        let url = server.file_url(1000, &format!("p{code}"), &format!("status={code}"));
        let error = downloader
            .download(into(&url, dir.path()))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::HttpStatus);
        assert!(error.to_string().contains(&code.to_string()));
        assert_eq!(server.requests() - before, 1, "{code} is not retried");
    }
    let before = server.requests();
    let url = server.file_url(1000, "always", "status=500");
    assert!(downloader.download(into(&url, dir.path())).await.is_err());
    assert_eq!(
        server.requests() - before,
        4,
        "one attempt and three retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_up_to_the_maximum_wait() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let patient = Downloader::builder()
        .retry_delay(Duration::from_millis(10))
        .max_retry_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = server.file_url(10, "ra", "status=429&retry_after=1&fault_times=1");
    let clock = Instant::now();
    patient.download(into(&url, dir.path())).await.unwrap();
    assert!(
        clock.elapsed() >= Duration::from_millis(950),
        "waited as asked"
    );

    let capped = fast_downloader().build().unwrap(); // max_retry_wait 100 ms
    let url = server.file_url(10, "rb", "status=503&retry_after=3600&fault_times=1");
    let clock = Instant::now();
    capped.download(into(&url, dir.path())).await.unwrap();
    assert!(
        clock.elapsed() < Duration::from_secs(5),
        "an hour is capped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_answers_503_gets_fewer_connections_for_a_while() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::with(fast_downloader().jobs(8).per_host(8)).await;
    let requests: Vec<Request> = (0..16)
        .map(|i| {
            let faults = "status=503&retry_after=0&fault_times=1&delay_ms=150";
            into(&server.file_url(100, &format!("h{i}"), faults), dir.path())
        })
        .collect();
    let outcomes = downloader.batch(requests).run().await.unwrap();
    assert!(outcomes.iter().all(Result::is_ok));
    let log = server.log();
    let first_wave = log.iter().filter(|r| r.status == 503).count();
    let after: Vec<usize> = log
        .iter()
        .skip_while(|r| r.status == 503)
        .map(|r| r.in_flight)
        .collect();
    assert!(first_wave >= 2, "{first_wave}");
    let peak_after = after.iter().copied().max().unwrap_or(0);
    assert!(
        peak_after <= 4,
        "after the 503s at most half the connections: {peak_after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_shared_by_all_transfers() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rate = 2 << 20;
    let downloader = fast_downloader().limit_rate(rate).build().unwrap();
    let requests = (0..2)
        .map(|i| into(&server.file_url(2 << 20, &format!("r{i}"), ""), dir.path()))
        .collect();
    let clock = Instant::now();
    let outcomes = downloader.batch(requests).run().await.unwrap();
    let elapsed = clock.elapsed().as_secs_f64();
    assert!(outcomes.iter().all(Result::is_ok));
    // 4 MiB at 2 MiB/s: 2 s; a generous window, checked from both sides.
    assert!(
        (1.8..4.0).contains(&elapsed),
        "{elapsed:.2}s for 4 MiB at 2 MiB/s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_limited_loops_fail_and_only_http_is_followed() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::with(fast_downloader().max_redirects(10)).await;
    let done = downloader
        .download(into(&server.url("/chain/9"), dir.path()))
        .await
        .unwrap();
    assert!(std::fs::read(&done.path).unwrap() == content("chained", 1, 10));
    for (path, words) in [
        ("/chain/10".to_owned(), "more than 10 redirects"),
        ("/loop".to_owned(), "redirect loop"),
        (
            "/redirect?to=ftp%3A%2F%2Fh%2Ff".to_owned(),
            "`ftp` URL refused",
        ),
        (
            "/redirect?to=file%3A%2F%2F%2Fetc%2Fpasswd".to_owned(),
            "only http and https",
        ),
    ] {
        let error = downloader
            .download(into(&server.url(&path), dir.path()).to_file(dir.path().join("r")))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Protocol, "{path}");
        assert!(error.to_string().contains(words), "{path}: {error}");
        assert!(!error.is_retryable());
    }
    assert!(!dir.path().join("r").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_do_not_follow_a_redirect_to_another_host() {
    let origin = TestServer::start().await;
    let other = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let target = other.file_url(10, "x", "");
    let encoded: String =
        percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let request = into(&origin.url(&format!("/redirect?to={encoded}")), dir.path())
        .with_header("Authorization", "Bearer secret")
        .unwrap()
        .with_header("Cookie", "session=secret")
        .unwrap();
    fast_downloader()
        .build()
        .unwrap()
        .download(request)
        .await
        .unwrap();
    assert_eq!(
        origin.log()[0].authorization.as_deref(),
        Some("Bearer secret")
    );
    let seen = &other.log()[0];
    assert_eq!(
        seen.authorization, None,
        "no Authorization for another host"
    );
    assert_eq!(seen.cookie, None, "no Cookie for another host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_body_is_saved_as_sent_never_decoded() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(5000, "g.bin", "gzip=1");
    let done = fast_downloader()
        .build()
        .unwrap()
        .download(into(&url, dir.path()))
        .await
        .unwrap();
    assert!(std::fs::read(&done.path).unwrap() == content("g.bin", 1, 5000));
    assert_eq!(server.log()[0].accept_encoding.as_deref(), Some("identity"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_disposition_names_are_used_only_when_asked_and_made_safe() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let encode = |value: &str| {
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let cases = [
        ("attachment; filename=\"../../escape.txt\"", "escape.txt"),
        ("attachment; filename=\"/etc/cron.d/evil\"", "evil"),
        (
            "attachment; filename=\"plain.txt\"; filename*=UTF-8''%E2%82%AC.txt",
            "€.txt",
        ),
        ("attachment; filename=\"..\"", "d3"),
    ];
    let asked = fast_downloader().content_disposition(true).build().unwrap();
    for (i, (header, expected)) in cases.iter().enumerate() {
        let url = server.file_url(
            10,
            &format!("d{i}"),
            &format!("disposition={}", encode(header)),
        );
        let done = asked.download(into(&url, dir.path())).await.unwrap();
        assert_eq!(done.path, dir.path().join(expected), "{header}");
    }
    let url = server.file_url(10, "plain", &format!("disposition={}", encode(cases[0].0)));
    let done = fast_downloader()
        .build()
        .unwrap()
        .download(into(&url, dir.path()))
        .await
        .unwrap();
    assert_eq!(done.path, dir.path().join("plain"), "off by default");
    let parent = dir.path().parent().unwrap();
    assert!(!parent.join("escape.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_files_follow_the_chosen_policy() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(100, "e.bin", "");
    let path = dir.path().join("e.bin");
    std::fs::write(&path, b"mine").unwrap();
    let with = |policy| fast_downloader().on_exists(policy).build().unwrap();

    let skipped = with(OnExists::Skip)
        .download(into(&url, dir.path()))
        .await
        .unwrap();
    assert!(skipped.already_present);
    assert_eq!(std::fs::read(&path).unwrap(), b"mine");

    let renamed = with(OnExists::Rename)
        .download(into(&url, dir.path()))
        .await
        .unwrap();
    assert_eq!(renamed.path, dir.path().join("e.bin.1"));
    assert_eq!(std::fs::read(&path).unwrap(), b"mine");

    let refused = with(OnExists::Error)
        .download(into(&url, dir.path()))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::AlreadyExists);

    let replaced = with(OnExists::Overwrite)
        .download(into(&url, dir.path()))
        .await
        .unwrap();
    assert_eq!(replaced.path, path);
    assert!(std::fs::read(&path).unwrap() == content("e.bin", 1, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_planted_at_the_part_path_is_not_followed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("s.bin.part")).unwrap();
    let error = fast_downloader()
        .build()
        .unwrap()
        .download(into(&server.file_url(100, "s.bin", ""), dir.path()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Io, "{error}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!dir.path().join("s.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_before_the_download_and_nothing_is_lost() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let server = TestServer::start().await;
    let dir = disk.dir.path();
    std::fs::write(dir.join("filler"), vec![0u8; 3 << 20]).unwrap();
    let url = server.file_url(2 << 20, "big.bin", "");
    let mut command = haul();
    command.args(["get", "-d"]).arg(dir).arg(&url);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains("big.bin.part") && text.contains("No space left"),
        "{text}"
    );
    assert!(!dir.join("big.bin").exists());
    assert!(
        !dir.join("big.bin.part").exists(),
        "the space was checked before any byte was written: {:?}",
        listing(dir)
    );

    std::fs::remove_file(dir.join("filler")).unwrap();
    let output = run({
        let mut command = haul();
        command.args(["get", "-q", "-d"]).arg(dir).arg(&url);
        command
    })
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.join("big.bin")).unwrap() == content("big.bin", 1, 2 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_mid_download_keeps_a_consistent_resumable_part() {
    let Some(disk) = SmallDisk::mount("3m") else {
        return;
    };
    let server = TestServer::start().await;
    let dir = disk.dir.path();
    // No length: nothing can be reserved, the disk fills while writing.
    let url = server.file_url(4 << 20, "grow.bin", "chunked=1");
    let error = fast_downloader()
        .build()
        .unwrap()
        .download(into(&url, dir))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Io, "{error}");
    assert!(error.to_string().contains("No space left"), "{error}");
    assert!(!dir.join("grow.bin").exists());
    let names = listing(dir);
    assert!(
        names.iter().all(|n| n.starts_with("grow.bin.part")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_urls_run_under_a_low_file_descriptor_limit() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let out = dir.path().join("out");
    let urls: Vec<String> = (0..10_000)
        .map(|i| server.file_url(16, &format!("n{i}"), ""))
        .collect();
    std::fs::write(&list, urls.join("\n")).unwrap();
    let shell = format!(
        "ulimit -n 256 && exec {} get -q -j 32 --per-host 32 -d {} -i {}",
        env!("CARGO_BIN_EXE_haul"),
        out.display(),
        list.display()
    );
    let mut command = std::process::Command::new("sh");
    command.args(["-c", &shell]);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(listing(&out).len(), 10_000);
    assert!(std::fs::read(out.join("n9999")).unwrap() == content("n9999", 1, 16));
    assert!(server.peak_in_flight() <= 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_does_not_exist_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // `.invalid` never resolves (RFC 6761); without network the resolver fails the same way.
    let downloader = Downloader::builder()
        .retry_delay(Duration::from_secs(5))
        .build()
        .unwrap();
    let clock = Instant::now();
    let error = downloader
        .download(into("http://no-such-host.invalid/f", dir.path()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Network);
    if error.to_string().contains("Name or service not known") {
        assert!(!error.is_retryable());
        assert!(
            clock.elapsed() < Duration::from_secs(5),
            "no retry for an unknown host"
        );
    } else {
        eprintln!("resolver said something else here: {error}");
    }
}
