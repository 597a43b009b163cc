//! Resuming within a run and across runs, and every way a server can make resuming unsafe
//! (issue #3). The end state is always checked byte for byte.

use std::path::Path;
use std::sync::Arc;

use haul::{ChannelObserver, ErrorKind, Event, Request};

use crate::support::server::{TestServer, content};
use crate::support::{Fixture, fast_downloader, listing};

const SIZE: u64 = 3_000_000;

fn request(url: &str, dir: &Path) -> Request {
    Request::new(url).unwrap().into_dir(dir)
}

/// Runs the first attempt with `faults` and no retries, so it stops with a `.part`.
async fn interrupted_once(server: &TestServer, dir: &Path, name: &str, faults: &str) {
    let downloader = fast_downloader().retries(0).build().unwrap();
    let url = server.file_url(SIZE, name, faults);
    let error = downloader.download(request(&url, dir)).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(dir.join(format!("{name}.part")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_mid_body_is_retried_from_the_last_byte_written() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    // Three drops, each after 500 kB of its own response.
    let url = server.file_url(SIZE, "flaky.bin", "drop_after=500000&fault_times=3");
    let done = downloader
        .download(request(&url, dir.path()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&done.path).unwrap(),
        content("flaky.bin", 1, SIZE)
    );
    let ranges: Vec<Option<String>> = server.log().into_iter().map(|r| r.range).collect();
    assert_eq!(
        ranges,
        vec![
            None,
            Some("bytes=500000-".into()),
            Some("bytes=1000000-".into()),
            Some("bytes=1500000-".into()),
        ]
    );
    assert!(server.body_bytes() <= SIZE, "nothing was fetched twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_abandoned_and_resumed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = fast_downloader()
        .stall_timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let url = server.file_url(SIZE, "stall.bin", "stall_after=1000000&fault_times=1");
    let done = downloader
        .download(request(&url, dir.path()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&done.path).unwrap(),
        content("stall.bin", 1, SIZE)
    );
    assert_eq!(server.log()[1].range.as_deref(), Some("bytes=1000000-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_resumes_with_range_and_a_strong_if_range() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    interrupted_once(&server, dir.path(), "r.bin", "drop_after=1200000").await;
    let done = downloader
        .download(request(&server.file_url(SIZE, "r.bin", ""), dir.path()))
        .await
        .unwrap();
    assert_eq!(done.resumed_from, 1_200_000);
    assert_eq!(
        std::fs::read(&done.path).unwrap(),
        content("r.bin", 1, SIZE)
    );
    let second = &server.log()[1];
    assert_eq!(second.range.as_deref(), Some("bytes=1200000-"));
    assert_eq!(second.if_range.as_deref(), Some("\"r.bin-v1-3000000\""));
    assert_eq!(second.status, 206);
    assert_eq!(listing(dir.path()), vec!["r.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_between_runs_is_fetched_whole_never_spliced() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    interrupted_once(&server, dir.path(), "c.bin", "drop_after=1000000").await;
    server.set_version(&format!("/files/{SIZE}/c.bin"), 2);
    let done = downloader
        .download(request(&server.file_url(SIZE, "c.bin", ""), dir.path()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&done.path).unwrap(),
        content("c.bin", 2, SIZE)
    );
    let log = server.log();
    assert_eq!(
        log.len(),
        2,
        "the 200 answer is used, without a second request"
    );
    assert_eq!(log[1].status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_range_restarts_from_the_same_response() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    interrupted_once(&server, dir.path(), "n.bin", "drop_after=1000000").await;
    let url = server.file_url(SIZE, "n.bin", "no_ranges=1");
    let done = downloader
        .download(request(&url, dir.path()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&done.path).unwrap(),
        content("n.bin", 1, SIZE)
    );
    assert_eq!(server.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_content_range_is_rejected_and_the_part_kept() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    interrupted_once(&server, dir.path(), "w.bin", "drop_after=1000000").await;
    let url = server.file_url(SIZE, "w.bin", "wrong_range=1");
    let error = downloader
        .download(request(&url, dir.path()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Protocol, "{error}");
    assert_eq!(listing(dir.path()), vec!["w.bin.part", "w.bin.part.haul"]);
    let part = std::fs::read(dir.path().join("w.bin.part")).unwrap();
    assert!(
        part[..1_000_000] == content("w.bin", 1, 1_000_000),
        "the part is untouched"
    );
    assert_eq!(
        crate::support::resumable_prefix(&dir.path().join("w.bin.part.haul")),
        1_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_strong_validator_resume_relies_on_the_length_alone() {
    for validators in ["weak", "none"] {
        let server = TestServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let faults = format!("validators={validators}&drop_after=1000000&fault_times=1");
        interrupted_once(&server, dir.path(), "v.bin", &faults).await;
        let downloader = fast_downloader().build().unwrap();
        let url = server.file_url(SIZE, "v.bin", &faults);
        let done = downloader
            .download(request(&url, dir.path()))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(&done.path).unwrap(),
            content("v.bin", 1, SIZE)
        );
        let second = &server.log()[1];
        assert_eq!(
            second.range.as_deref(),
            Some("bytes=1000000-"),
            "{validators}"
        );
        assert_eq!(second.if_range, None, "never a weak ETag in If-Range");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_modified_is_the_validator_when_there_is_no_etag() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    interrupted_once(
        &server,
        dir.path(),
        "lm.bin",
        "validators=lm&drop_after=1000000",
    )
    .await;
    let url = server.file_url(SIZE, "lm.bin", "validators=lm");
    downloader
        .download(request(&url, dir.path()))
        .await
        .unwrap();
    assert_eq!(
        server.log()[1].if_range.as_deref(),
        Some("Sun, 01 Nov 1994 08:49:37 GMT")
    );
}

/// Leaves a `.part` holding the whole file and a state that says so, as a crash between the
/// last write and the rename would.
fn complete_part(dir: &Path, name: &str, url: &str) {
    std::fs::write(dir.join(format!("{name}.part")), content(name, 1, SIZE)).unwrap();
    let state = serde_json::json!({
        "version": 1,
        "url": url,
        "validators": {"total_bytes": SIZE, "etag": format!("\"{name}-v1-{SIZE}\""), "last_modified": null},
        "done": [[0, SIZE]],
        "checksum": null,
    });
    std::fs::write(dir.join(format!("{name}.part.haul")), state.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_part_answered_with_416_is_finished_without_a_body() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(SIZE, "full.bin", "");
    complete_part(dir.path(), "full.bin", &url);
    let done = fast_downloader()
        .build()
        .unwrap()
        .download(request(&url, dir.path()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&done.path).unwrap(),
        content("full.bin", 1, SIZE)
    );
    assert_eq!(server.log()[0].status, 416);
    assert_eq!(server.body_bytes(), 0);
    assert_eq!(listing(dir.path()), vec!["full.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_means_starting_over_with_a_warning() {
    for garbage in [
        &b"{\"version\":1,\"url\":"[..],
        b"\x00\x01\x02 not json",
        b"{\"version\":7}",
    ] {
        let server = TestServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let url = server.file_url(SIZE, "g.bin", "");
        std::fs::write(dir.path().join("g.bin.part"), vec![0xAA; 500_000]).unwrap();
        std::fs::write(dir.path().join("g.bin.part.haul"), garbage).unwrap();
        let (observer, mut events) = ChannelObserver::new();
        let outcomes = fast_downloader()
            .build()
            .unwrap()
            .batch(vec![request(&url, dir.path())])
            .with_observer(Arc::new(observer))
            .run()
            .await
            .unwrap();
        let done = outcomes[0].as_ref().unwrap();
        assert_eq!(
            std::fs::read(&done.path).unwrap(),
            content("g.bin", 1, SIZE)
        );
        assert_eq!(
            server.log()[0].range,
            None,
            "no resume from untrusted bytes"
        );
        let mut warned = false;
        while let Ok(event) = events.try_recv() {
            warned |= matches!(event, Event::Restarted { .. });
        }
        assert!(warned, "the unusable state is reported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_without_state_is_not_trusted() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.bin.part"), vec![0xAA; 500_000]).unwrap();
    let url = server.file_url(SIZE, "x.bin", "");
    let done = fast_downloader()
        .build()
        .unwrap()
        .download(request(&url, dir.path()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&done.path).unwrap(),
        content("x.bin", 1, SIZE)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_a_completed_batch_transfers_nothing() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    let requests = || -> Vec<Request> {
        (0..5)
            .map(|i| request(&server.file_url(50_000, &format!("k{i}"), ""), dir.path()))
            .collect()
    };
    downloader.batch(requests()).run().await.unwrap();
    let (requests_before, bytes_before) = (server.requests(), server.body_bytes());
    let again = downloader.batch(requests()).run().await.unwrap();
    assert!(again.iter().all(|o| o.as_ref().unwrap().already_present));
    assert_eq!(server.requests(), requests_before);
    assert_eq!(server.body_bytes(), bytes_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_download_is_hashed_whole() {
    use sha2::{Digest, Sha256};
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let expected = format!(
        "sha-256={}",
        hex::encode(Sha256::digest(content("h.bin", 1, SIZE)))
    );
    let checksum: haul::Checksum = expected.parse().unwrap();
    let downloader = fast_downloader().retries(0).build().unwrap();
    let url = server.file_url(SIZE, "h.bin", "drop_after=1000000&fault_times=1");
    let first = request(&url, dir.path()).with_checksum(checksum.clone());
    assert!(downloader.download(first.clone()).await.is_err());
    let done = downloader.download(first).await.unwrap();
    assert_eq!(done.resumed_from, 1_000_000);
    assert_eq!(done.digest, Some(checksum));
}
