//! The library's promises for single downloads and batches (issue #2).

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use haul::{ChannelObserver, Checksum, Error, ErrorKind, Event, Observer, Request};
use sha2::{Digest, Sha256, Sha512};

use crate::support::server::{TestServer, content};
use crate::support::{Fixture, fast_downloader, listing};

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_arrives_byte_for_byte_under_its_url_name() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    for size in [0u64, 1, 65_521, 1_234_567, 5 << 20] {
        let name = format!("f{size}.bin");
        let request = Request::new(&server.file_url(size, &name, ""))
            .unwrap()
            .into_dir(dir.path());
        let done = downloader.download(request).await.unwrap();
        assert_eq!(done.path, dir.path().join(&name));
        assert_eq!(done.bytes, size);
        assert!(!done.already_present);
        assert_eq!(
            std::fs::read(&done.path).unwrap(),
            content(&name, 1, size),
            "{name}"
        );
    }
    assert!(
        listing(dir.path()).iter().all(|n| !n.contains(".part")),
        "no working files are left: {:?}",
        listing(dir.path())
    );
    assert!(
        server
            .log()
            .iter()
            .all(|r| r.accept_encoding.as_deref() == Some("identity"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_length_is_streamed_to_its_end() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    let url = server.file_url(300_000, "chunked.bin", "chunked=1");
    let done = downloader
        .download(Request::new(&url).unwrap().into_dir(dir.path()))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(done.path).unwrap(),
        content("chunked.bin", 1, 300_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_never_exceeds_the_per_host_limit() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::with(fast_downloader().jobs(8).per_host(3)).await;
    let requests: Vec<Request> = (0..200)
        .map(|i| {
            Request::new(&server.file_url(1000 + i, &format!("s{i}"), "delay_ms=5"))
                .unwrap()
                .into_dir(dir.path())
        })
        .collect();
    let outcomes = downloader.batch(requests).run().await.unwrap();
    assert_eq!(outcomes.len(), 200);
    for (i, outcome) in outcomes.iter().enumerate() {
        let done = outcome.as_ref().unwrap();
        assert_eq!(done.path, dir.path().join(format!("s{i}")), "input order");
        assert_eq!(
            std::fs::read(&done.path).unwrap(),
            content(&format!("s{i}"), 1, 1000 + i as u64)
        );
    }
    assert_eq!(server.requests(), 200);
    let peak = server.peak_in_flight();
    assert!(peak <= 3, "peak {peak} exceeds the per-host limit");
    assert!(peak >= 2, "downloads should overlap (peak {peak})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_never_exceeds_the_global_limit() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::with(fast_downloader().jobs(4).per_host(100)).await;
    let requests: Vec<Request> = (0..60)
        .map(|i| {
            Request::new(&server.file_url(10, &format!("g{i}"), "delay_ms=10"))
                .unwrap()
                .into_dir(dir.path())
        })
        .collect();
    let outcomes = downloader.batch(requests).run().await.unwrap();
    assert!(outcomes.iter().all(Result::is_ok));
    let peak = server.peak_in_flight();
    assert!((2..=4).contains(&peak), "peak {peak} with jobs = 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_stream_in_completion_order() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::with(fast_downloader().jobs(2)).await;
    let slow = Request::new(&server.file_url(10, "slow", "delay_ms=400"))
        .unwrap()
        .into_dir(dir.path());
    let fast = Request::new(&server.file_url(10, "fast", ""))
        .unwrap()
        .into_dir(dir.path());
    let mut outcomes = downloader.batch(vec![slow, fast]).start().unwrap();
    let first = outcomes.next().await.unwrap();
    assert_eq!(first.id.get(), 1, "the fast download ends first");
    let second = outcomes.next().await.unwrap();
    assert_eq!(second.id.get(), 0);
    assert!(outcomes.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_are_verified_while_writing() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    let size = 3_000_001;
    let body = content("sum.bin", 1, size);
    let url = server.file_url(size, "sum.bin", "");

    let good256: Checksum = format!("sha-256={}", sha256(&body)).parse().unwrap();
    let done = downloader
        .download(
            Request::new(&url)
                .unwrap()
                .into_dir(dir.path())
                .with_checksum(good256.clone()),
        )
        .await
        .unwrap();
    assert_eq!(done.digest, Some(good256));
    std::fs::remove_file(&done.path).unwrap();

    let good512: Checksum = format!("sha-512={}", hex::encode(Sha512::digest(&body)))
        .parse()
        .unwrap();
    let done = downloader
        .download(
            Request::new(&url)
                .unwrap()
                .into_dir(dir.path())
                .with_checksum(good512.clone()),
        )
        .await
        .unwrap();
    assert_eq!(done.digest, Some(good512));
    std::fs::remove_file(&done.path).unwrap();

    let wrong: Checksum = format!("sha-256={}", sha256(b"something else"))
        .parse()
        .unwrap();
    let error = downloader
        .download(
            Request::new(&url)
                .unwrap()
                .into_dir(dir.path())
                .with_checksum(wrong.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Integrity);
    let message = error.to_string();
    assert!(message.contains(&wrong.hex()), "{message}");
    assert!(message.contains(&sha256(&body)), "{message}");
    assert_eq!(
        listing(dir.path()),
        Vec::<String>::new(),
        "no final file and no .part after a mismatch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failure_does_not_stop_the_others() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    let requests = vec![
        Request::new(&server.file_url(100, "a", "")).unwrap(),
        Request::new(&server.url("/missing")).unwrap(),
        Request::new(&server.file_url(200, "b", "")).unwrap(),
    ]
    .into_iter()
    .map(|r| r.into_dir(dir.path()))
    .collect();
    let outcomes = downloader.batch(requests).run().await.unwrap();
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok());
    let error = outcomes[1].as_ref().unwrap_err();
    assert!(
        matches!(error, Error::Status { status: 404, .. }),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(listing(dir.path()), vec!["a", "b"]);
    assert_eq!(server.requests(), 3, "a 404 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_are_made_for_files_that_arrive_and_not_for_failures() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    let small = Request::new(&server.file_url(100, "a", ""))
        .unwrap()
        .to_file(dir.path().join("new/deeper/a"));
    let large = Request::new(&server.file_url(3_000_000, "b", ""))
        .unwrap()
        .to_file(dir.path().join("other/b"));
    let missing = Request::new(&server.url("/missing"))
        .unwrap()
        .to_file(dir.path().join("never/made/c"));
    let outcomes = downloader
        .batch(vec![small, large, missing])
        .run()
        .await
        .unwrap();
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    assert!(outcomes[2].is_err());
    assert_eq!(
        std::fs::read(dir.path().join("new/deeper/a")).unwrap(),
        content("a", 1, 100)
    );
    assert_eq!(
        std::fs::read(dir.path().join("other/b")).unwrap(),
        content("b", 1, 3_000_000)
    );
    assert!(
        !dir.path().join("never").exists(),
        "a download that failed before its first byte leaves no directory"
    );
}

/// A failure says what it kept: the bytes of a cut body (`kept_bytes` in its `Failed`
/// event), nothing for a 404 before any byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_leaves_a_resumable_part_and_no_final_file() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (observer, mut events) = haul::ChannelObserver::new();
    let downloader = fast_downloader()
        .retries(0)
        .observer(Arc::new(observer))
        .build()
        .unwrap();
    let url = server.file_url(2_000_000, "cut.bin", "drop_after=700000");
    let error = downloader
        .download(Request::new(&url).unwrap().into_dir(dir.path()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Network, "{error}");
    assert_eq!(
        listing(dir.path()),
        vec!["cut.bin.part", "cut.bin.part.haul"]
    );
    let part = std::fs::read(dir.path().join("cut.bin.part")).unwrap();
    let kept = crate::support::resumable_prefix(&dir.path().join("cut.bin.part.haul"));
    assert_eq!(kept, 700_000);
    assert!(part[..700_000] == content("cut.bin", 1, 700_000));
    let missing = server.file_url(10, "missing.bin", "status=404");
    let error = downloader
        .download(Request::new(&missing).unwrap().into_dir(dir.path()))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{missing} answered HTTP 404 Not Found"),
        "a reason phrase"
    );
    // A 404 for a file whose `.part` an earlier attempt left still keeps that `.part`.
    let gone = server.file_url(10, "gone.bin", "status=404");
    let error = downloader
        .download(
            Request::new(&gone)
                .unwrap()
                .into_dir_at(dir.path(), "cut.bin")
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::HttpStatus, "{error}");
    let mut kept_by_event = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Failed { kept_bytes, .. } = event {
            kept_by_event.push(kept_bytes);
        }
    }
    assert_eq!(
        kept_by_event,
        vec![700_000, 0, 700_000],
        "what each failure kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_for_one_path_are_refused_before_anything_starts() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    let requests = vec![
        Request::new(&server.file_url(10, "same", "")).unwrap(),
        Request::new(&server.file_url(20, "same", "")).unwrap(),
    ]
    .into_iter()
    .map(|r| r.into_dir(dir.path()))
    .collect();
    let error = downloader.batch(requests).run().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::DuplicateOutput {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(server.requests(), 0);
}

/// Records every event in arrival order.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Observer for Recorder {
    fn on_event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

/// Runs `urls` as one batch into the fixture's directory, with `observer` watching.
async fn run_watched(fixture: &Fixture, urls: &[String], observer: Arc<dyn Observer>) {
    let requests = urls
        .iter()
        .map(|url| Request::new(url).unwrap().into_dir(fixture.dir.path()))
        .collect();
    fixture
        .downloader
        .batch(requests)
        .with_observer(observer)
        .run()
        .await
        .unwrap();
}

/// Reads byte counts at its own pace instead of taking `Progress` events: records the other
/// events, and at each terminal event what the download's counter says.
#[derive(Default)]
struct CounterReader {
    events: Mutex<Vec<Event>>,
    counters: Mutex<Vec<(haul::TransferId, haul::ProgressCounter, usize)>>,
    at_the_end: Mutex<Vec<(u64, u64)>>,
}

impl Observer for CounterReader {
    fn on_event(&self, event: &Event) {
        let mut events = self.events.lock().unwrap();
        events.push(event.clone());
        if event.is_terminal() {
            let counters = self.counters.lock().unwrap();
            if let Some((_, counter, _)) = counters.iter().find(|(id, ..)| *id == event.id()) {
                let bytes = counter.bytes_done();
                self.at_the_end
                    .lock()
                    .unwrap()
                    .push((event.id().get(), bytes));
            }
        }
    }

    fn wants_progress_events(&self) -> bool {
        false
    }

    fn on_counter(&self, id: haul::TransferId, counter: &haul::ProgressCounter) {
        let events_before = self.events.lock().unwrap().len();
        self.counters
            .lock()
            .unwrap()
            .push((id, counter.clone(), events_before));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_that_reads_counters_gets_no_progress_events_and_the_final_figures() {
    let fixture = Fixture::new().await;
    let reader = Arc::new(CounterReader::default());
    let urls = [
        fixture.server.file_url(3_000_000, "big", ""),
        fixture.server.file_url(5_000, "small", ""),
        fixture.server.url("/nope"),
    ];
    run_watched(&fixture, &urls, reader.clone()).await;
    let events = reader.events.lock().unwrap().clone();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Progress { .. })),
        "no Progress events for an observer that does not want them"
    );
    let counters = reader.counters.lock().unwrap();
    let mut given: Vec<u64> = counters.iter().map(|(id, ..)| id.get()).collect();
    given.sort_unstable();
    assert_eq!(
        given,
        [0, 1],
        "one counter per download that started, none for the 404"
    );
    for (id, _, events_before) in counters.iter() {
        let started_at = events
            .iter()
            .position(|e| e.id() == *id && matches!(e, Event::Started { .. }))
            .unwrap();
        assert_eq!(
            *events_before, started_at,
            "given just before its first Started"
        );
    }
    let mut at_the_end = reader.at_the_end.lock().unwrap().clone();
    at_the_end.sort_unstable();
    assert_eq!(
        at_the_end,
        [(0, 3_000_000), (1, 5_000)],
        "the last figure by the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_life_of_each_download() {
    let fixture = Fixture::new().await;
    let recorder = Arc::new(Recorder::default());
    let urls = [
        fixture.server.file_url(3_000_000, "big", ""),
        fixture.server.url("/nope"),
    ];
    run_watched(&fixture, &urls, recorder.clone()).await;
    let events = recorder.0.lock().unwrap().clone();
    let of =
        |index: u64| -> Vec<&Event> { events.iter().filter(|e| e.id().get() == index).collect() };
    let big = of(0);
    assert!(matches!(big[0], Event::Queued { .. }));
    assert!(matches!(
        big[1],
        Event::Started {
            total_bytes: Some(3_000_000),
            resumed_from: 0,
            ..
        }
    ));
    let progress: Vec<u64> = big
        .iter()
        .filter_map(|e| match e {
            Event::Progress { bytes_done, .. } => Some(*bytes_done),
            _ => None,
        })
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "monotonic");
    assert_eq!(progress.last(), Some(&3_000_000));
    assert!(matches!(big.last().unwrap(), Event::Finished { .. }));
    let missing = of(1);
    assert!(matches!(missing[0], Event::Queued { .. }));
    assert!(matches!(
        missing.last().unwrap(),
        Event::Failed {
            kind: ErrorKind::HttpStatus,
            ..
        }
    ));
    for index in 0..2 {
        let terminal = of(index)
            .iter()
            .filter(|e| matches!(e, Event::Finished { .. } | Event::Failed { .. }))
            .count();
        assert_eq!(terminal, 1, "one terminal event for request {index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_can_be_received_from_a_channel() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    let (observer, mut events) = ChannelObserver::new();
    let request = Request::new(&server.file_url(10, "c", ""))
        .unwrap()
        .into_dir(dir.path());
    downloader
        .batch(vec![request])
        .with_observer(Arc::new(observer))
        .run()
        .await
        .unwrap();
    let mut last = None;
    while let Ok(event) = events.try_recv() {
        last = Some(event);
    }
    assert!(matches!(last, Some(Event::Finished { .. })));
}

/// A refused connection is never silent: every retry is an event with its cause and delay,
/// and the error's `Display` names the cause (no need to walk `source()`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_retry_is_reported_with_its_cause_and_the_error_shows_its_cause() {
    let port = crate::support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let (observer, mut events) = ChannelObserver::new();
    let downloader = fast_downloader()
        .retries(2)
        .observer(Arc::new(observer))
        .build()
        .unwrap();
    let error = downloader
        .download(
            Request::new(&format!("http://127.0.0.1:{port}/f.bin"))
                .unwrap()
                .into_dir(dir.path()),
        )
        .await
        .unwrap_err();
    let shown = error.to_string();
    assert!(shown.contains("Connection refused"), "{shown}");
    assert!(
        !shown.contains("client error (Connect)"),
        "no wrapper noise: {shown}"
    );
    let mut retries = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Retrying {
            attempt, reason, ..
        } = event
        {
            retries.push((attempt, reason));
        }
    }
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert_eq!(retries[0].0, 2);
    assert!(
        retries
            .iter()
            .all(|(_, r)| r.contains("Connection refused")),
        "{retries:?}"
    );
}

/// The test server never hides its own bugs: a handler that panics fails the test that used
/// it (the client would only see a reset connection and retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "a handler of the test server panicked")]
async fn a_panicking_test_server_handler_fails_the_test() {
    let fixture = Fixture::with(fast_downloader().retries(0)).await;
    // `status=1000` is no HTTP status: the handler's `StatusCode::from_u16(..).unwrap()` panics.
    let _ = fixture
        .downloader
        .download(fixture.request(10, "x", "status=1000"))
        .await;
    drop(fixture);
}
