//! Controlling one download while it lives (what a daemon or a UI does): pause keeps the
//! `.part` and frees the places, resume continues from it with a range request, cancelling a
//! paused download ends it, queue positions and `jobs` change while downloads run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haul::{Event, Observer};

use crate::support::server::content;
use crate::support::{Fixture, fast_downloader};

/// Every event, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Observer for Recorder {
    fn on_event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn has(&self, wanted: impl Fn(&Event) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(wanted)
    }

    /// The bytes on disk the download last reported.
    fn bytes_done(&self) -> u64 {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|event| match event {
                Event::Progress { bytes_done, .. } => Some(*bytes_done),
                _ => None,
            })
            .unwrap_or(0)
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_download_frees_its_slot_keeps_its_part_and_resumes_with_a_range() {
    let recorder = Arc::new(Recorder::default());
    let fixture = Fixture::with(fast_downloader().jobs(1).observer(recorder.clone())).await;
    let size = 2_000_000;
    let handle = fixture
        .downloader
        .submit(fixture.request(size, "paused.bin", "rate=400000"));
    let control = handle.control();
    wait_until("some of the body", || recorder.bytes_done() > 200_000).await;
    assert!(control.pause());
    wait_until("the Paused event", || {
        recorder.has(|e| matches!(e, Event::Paused { .. }))
    })
    .await;
    assert!(control.is_paused());
    assert!(!control.pause(), "pausing twice does nothing");

    // With jobs(1), another download runs while the first is paused: its slot was freed.
    let other = fixture
        .downloader
        .download(fixture.request(1000, "other.bin", ""));
    let other = tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("the paused download gave its slot back")
        .unwrap();
    assert_eq!(other.bytes, 1000);
    let kept = crate::support::resumable_prefix(&fixture.path("paused.bin.part.haul"));
    assert!(kept > 0, "the .part was kept");
    assert!(!fixture.path("paused.bin").exists());

    assert!(control.resume());
    let done = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the resumed download ends")
        .unwrap();
    assert_eq!(done.bytes, size);
    assert!(done.resumed_from > 0, "it continued from the .part");
    assert_eq!(
        std::fs::read(fixture.path("paused.bin")).unwrap(),
        content("paused.bin", 1, size)
    );
    let ranges: Vec<_> = fixture
        .server
        .log()
        .into_iter()
        .filter(|l| l.path.ends_with("paused.bin"))
        .filter_map(|l| l.range)
        .collect();
    assert!(
        ranges.iter().any(|r| r != "bytes=0-"),
        "the resume asked for the rest: {ranges:?}"
    );
    assert!(recorder.has(|e| matches!(e, Event::Resumed { .. })));
    assert!(recorder.has(|e| matches!(e, Event::Finished { .. })));
    assert!(
        !recorder.has(|e| matches!(e, Event::Failed { .. })),
        "a pause is not a failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_download_can_be_paused_moved_and_a_paused_one_cancelled() {
    let fixture = Fixture::with(fast_downloader().jobs(1).per_host(8)).await;
    // The first occupies the only slot; the rest wait.
    let first = fixture
        .downloader
        .submit(fixture.request(1000, "first.bin", "delay_ms=800"));
    let a = fixture.downloader.submit(fixture.request(10, "a.bin", ""));
    let b = fixture.downloader.submit(fixture.request(10, "b.bin", ""));
    let c = fixture.downloader.submit(fixture.request(10, "c.bin", ""));
    wait_until("the first to start", || {
        fixture.downloader.queued().len() == 3
    })
    .await;
    assert_eq!(fixture.downloader.queued(), vec![a.id(), b.id(), c.id()]);

    assert_eq!(c.control().move_in_queue(0), Some(0));
    assert_eq!(fixture.downloader.queued(), vec![c.id(), a.id(), b.id()]);
    assert_eq!(a.control().move_in_queue(99), Some(2), "past the end: last");
    assert_eq!(fixture.downloader.queued(), vec![c.id(), b.id(), a.id()]);
    assert_eq!(first.control().move_in_queue(0), None, "it is running");

    assert!(b.control().pause());
    assert_eq!(fixture.downloader.queued(), vec![c.id(), a.id()]);
    let b_control = b.control();
    b_control.cancel();
    let b_result = tokio::time::timeout(Duration::from_secs(5), b)
        .await
        .unwrap();
    assert!(
        matches!(b_result, Err(haul::Error::Cancelled)),
        "{b_result:?}"
    );

    // The order they ran in is the order they were put in.
    let (first, c, a) = tokio::join!(first, c, a);
    first.unwrap();
    c.unwrap();
    a.unwrap();
    let order: Vec<String> = fixture
        .server
        .log()
        .into_iter()
        .map(|l| l.path.rsplit('/').next().unwrap().to_owned())
        .collect();
    assert_eq!(order, ["first.bin", "c.bin", "a.bin"], "{order:?}");
    assert!(!fixture.path("b.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_a_downloads_rate_change_while_downloads_run() {
    let fixture = Fixture::with(fast_downloader().jobs(1).per_host(16)).await;
    assert_eq!(fixture.downloader.jobs(), 1);
    let handles: Vec<_> = (0..6)
        .map(|i| {
            fixture
                .downloader
                .submit(fixture.request(1000, &format!("j{i}"), "delay_ms=600"))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fixture.server.peak_in_flight(), 1);
    fixture.downloader.set_jobs(4);
    assert_eq!(fixture.downloader.jobs(), 4);
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(
        fixture.server.peak_in_flight(),
        4,
        "the raised limit was used, and held"
    );

    // A download's own rate: slow at first, then lifted.
    let recorder = Arc::new(Recorder::default());
    let handle = fixture.downloader.submit_with_observer(
        fixture
            .request(3_000_000, "rated.bin", "")
            .with_rate_limit(100_000),
        recorder.clone(),
    );
    let control = handle.control();
    assert_eq!(control.rate_limit(), Some(100_000));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        recorder.bytes_done() < 300_000,
        "the limit held: {} bytes",
        recorder.bytes_done()
    );
    control.set_rate_limit(None);
    let done = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("lifting the limit lets it finish")
        .unwrap();
    assert_eq!(done.bytes, 3_000_000);
}
