//! The library as a long-lived service (issue #15): one queue and one set of limits per
//! downloader, dropping is cancelling, ids unique per downloader, and progress totals that
//! stay right under several connections, restarts and resumes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use haul::{BatchView, Event, Observer, Request};
use serde_json::Value;

use crate::support::server::{TestServer, content};
use crate::support::{Fixture, fast_downloader, haul, resumable_prefix, run, stderr};

fn requests(server: &TestServer, dir: &std::path::Path, prefix: &str, n: usize) -> Vec<Request> {
    (0..n)
        .map(|i| {
            Request::new(&server.file_url(1000, &format!("{prefix}{i}"), "delay_ms=500"))
                .unwrap()
                .into_dir(dir)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tasks_of_single_downloads_share_one_jobs_limit() {
    let fixture = Fixture::with(fast_downloader().jobs(4).per_host(100)).await;
    let mut tasks = Vec::new();
    for task in 0..3 {
        let downloader = fixture.downloader.clone();
        let batch = requests(
            &fixture.server,
            fixture.dir.path(),
            &format!("t{task}-"),
            10,
        );
        tasks.push(tokio::spawn(async move {
            let calls = batch.into_iter().map(|r| downloader.download(r));
            futures_util::future::join_all(calls).await
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().iter().all(Result::is_ok));
    }
    let peak = fixture.server.peak_in_flight();
    assert!(peak <= 4, "{peak} requests in flight with jobs(4)");
    assert!(peak >= 3, "the downloads overlapped: {peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_share_one_jobs_limit_and_one_per_host_limit() {
    for (jobs, per_host, limit) in [(4, 100, 4), (100, 2, 2)] {
        let fixture = Fixture::with(fast_downloader().jobs(jobs).per_host(per_host)).await;
        let mut batches = Vec::new();
        for batch in 0..3 {
            let requests = requests(
                &fixture.server,
                fixture.dir.path(),
                &format!("b{batch}-"),
                10,
            );
            batches.push(fixture.downloader.batch(requests).run());
        }
        for outcomes in futures_util::future::join_all(batches).await {
            assert!(outcomes.unwrap().iter().all(Result::is_ok));
        }
        let peak = fixture.server.peak_in_flight();
        assert!(
            peak <= limit,
            "jobs {jobs}, per-host {per_host}: peak {peak}"
        );
        assert!(peak >= limit.min(3) - 1, "they overlapped: {peak}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_download_cancels_it_keeps_its_part_and_a_new_one_resumes() {
    let fixture = Fixture::new().await;
    let size: u64 = 10 << 20;
    let throttled = || {
        fixture
            .request(size, "dropped.bin", "rate=1048576")
            .with_connections(1)
    };
    let outcome = tokio::time::timeout(
        Duration::from_millis(1500),
        fixture.downloader.download(throttled()),
    )
    .await;
    assert!(outcome.is_err(), "the timeout fired first");
    let dropped_at = Instant::now();
    while fixture.server.in_flight() > 0 {
        assert!(
            dropped_at.elapsed() < Duration::from_secs(1),
            "the connection was closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its task saves the state as it stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = fixture.path("dropped.bin.part.haul");
    let kept = resumable_prefix(&state);
    assert!(kept > 0 && kept < size, "a resumable part: {kept}");
    let sent_before = fixture.server.body_bytes();
    let done = fixture
        .downloader
        .download(fixture.request(size, "dropped.bin", "").with_connections(1))
        .await
        .unwrap();
    assert_eq!(done.resumed_from, kept);
    assert_eq!(fixture.server.body_bytes() - sent_before, size - kept);
    assert!(std::fs::read(done.path).unwrap() == content("dropped.bin", 1, size));
}

/// Collects events from every source.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Observer for Recorder {
    fn on_event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_unique_per_downloader_and_observers_attach_per_downloader_and_per_call() {
    let everything = Arc::new(Recorder::default());
    let fixture = Fixture::with(fast_downloader().observer(everything.clone())).await;
    let mine = Arc::new(Recorder::default());
    let single = fixture
        .downloader
        .download_with_observer(fixture.request(100, "one", ""), mine.clone())
        .await
        .unwrap();
    assert_eq!(single.bytes, 100);
    let outcomes: Vec<_> = fixture
        .downloader
        .batch(vec![
            fixture.request(10, "two", ""),
            fixture.request(10, "three", ""),
        ])
        .start()
        .unwrap()
        .collect()
        .await;
    let mut ids: Vec<u64> = outcomes.iter().map(|o| o.id.get()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec![1, 2],
        "the batch's ids follow the single download's"
    );
    let handle = fixture.downloader.submit(fixture.request(10, "four", ""));
    assert_eq!(handle.id().get(), 3);
    handle.await.unwrap();
    let seen: Vec<u64> = everything
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.id().get())
        .collect();
    assert!(seen.contains(&0) && seen.contains(&1) && seen.contains(&2) && seen.contains(&3));
    let kinds: Vec<String> = mine
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| {
            format!("{e:?}")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("Queued"));
    assert_eq!(kinds.last().map(String::as_str), Some("Finished"));
    assert!(
        kinds.iter().any(|k| k == "Started"),
        "a single download reports progress"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_handle_never_starts_and_frees_the_queue() {
    let fixture = Fixture::with(fast_downloader().jobs(1)).await;
    let blocker = fixture
        .downloader
        .submit(fixture.request(1000, "first", "delay_ms=300"));
    let queued = fixture
        .downloader
        .submit(fixture.request(1000, "second", ""));
    queued.cancel();
    let result = queued.await;
    assert!(matches!(result, Err(haul::Error::Cancelled)), "{result:?}");
    blocker.await.unwrap();
    assert_eq!(
        fixture.server.requests(),
        1,
        "the cancelled download never asked"
    );
}

fn summary_and_finished(stdout: &[u8]) -> (Value, Value, Vec<Value>) {
    let events: Vec<Value> = String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |kind: &str| events.iter().find(|e| e["event"] == kind).cloned().unwrap();
    (find("summary"), find("finished"), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_bytes_equal_the_file_size_with_four_connections() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 64 << 20;
    let mut command = haul();
    command
        .args(["get", "--json", "-x", "4", "--min-split-size", "1M", "-d"])
        .arg(dir.path())
        .arg(server.file_url(size, "sixty-four.bin", ""));
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let (summary, finished, events) = summary_and_finished(&output.stdout);
    assert_eq!(summary["bytes"], size, "{summary}");
    assert_eq!(finished["bytes"], size);
    assert!(
        server.log().iter().filter(|r| r.range.is_some()).count() >= 3,
        "segmented"
    );
    for event in events.iter().filter(|e| e["event"] == "progress") {
        assert!(event["bytes_done"].as_u64().unwrap() <= size, "{event}");
    }
}

/// Folds events, notes any progress past a file's size, and replaces the file on the server
/// once 6 MiB have arrived.
struct Watch {
    view: Arc<Mutex<BatchView>>,
    beyond: Arc<Mutex<Vec<u64>>>,
    server: Arc<TestServer>,
    changed: std::sync::atomic::AtomicBool,
}
impl Observer for Watch {
    fn on_event(&self, event: &Event) {
        let mut view = self.view.lock().unwrap();
        view.apply(event);
        if let Some(file) = view.file(event.id()) {
            if file.bytes_done > file.total_bytes.unwrap_or(u64::MAX) {
                self.beyond.lock().unwrap().push(file.bytes_done);
            }
            if file.bytes_done > 6 << 20
                && !self.changed.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                // The file is replaced on the server while it downloads; the connections
                // break off soon after, and their resumes find the new version.
                self.server.set_version("/files/16777216/changing.bin", 2);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_download_never_drives_progress_past_the_size() {
    let server = Arc::new(TestServer::start().await);
    let size: u64 = 16 << 20;
    let path = "/files/16777216/changing.bin";
    let view = Arc::new(Mutex::new(BatchView::new()));
    let beyond = Arc::new(Mutex::new(Vec::new()));
    let watch = Arc::new(Watch {
        view: view.clone(),
        beyond: beyond.clone(),
        server: server.clone(),
        changed: false.into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let downloader = fast_downloader().min_split_size(1 << 20).build().unwrap();
    let query = "rate=8388608&drop_after=2097152&fault_times=4";
    let request = Request::new(&server.url(&format!("{path}?{query}")))
        .unwrap()
        .into_dir(dir.path())
        .with_connections(4);
    let done = downloader
        .download_with_observer(request, watch)
        .await
        .unwrap();
    assert!(
        std::fs::read(done.path).unwrap() == content("changing.bin", 2, size),
        "the new version, whole"
    );
    assert!(
        beyond.lock().unwrap().is_empty(),
        "progress past the size: {beyond:?}"
    );
    let view = view.lock().unwrap();
    assert!(
        view.received_bytes <= server.body_bytes(),
        "{} counted, {} sent",
        view.received_bytes,
        server.body_bytes()
    );
    let (bar, length) = view.batch_progress();
    assert!(bar <= length);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segmented_resume_reports_every_reused_byte() {
    let fixture = Fixture::with(fast_downloader().min_split_size(1 << 20)).await;
    let size: u64 = 16 << 20;
    let token = haul::CancellationToken::new();
    let request = fixture
        .request(size, "holes.bin", "rate=2097152")
        .with_connections(4)
        .with_cancellation(token.clone());
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        token.cancel();
    });
    assert!(fixture.downloader.download(request).await.is_err());
    stopper.await.unwrap();
    let state: Value =
        serde_json::from_slice(&std::fs::read(fixture.path("holes.bin.part.haul")).unwrap())
            .unwrap();
    let ranges = state["done"].as_array().unwrap();
    assert!(ranges.len() > 1, "a state with holes: {state}");
    let recorded: u64 = ranges
        .iter()
        .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap())
        .sum();
    let done = fixture
        .downloader
        .download(fixture.request(size, "holes.bin", "").with_connections(4))
        .await
        .unwrap();
    assert_eq!(done.resumed_from, recorded);
    assert!(std::fs::read(done.path).unwrap() == content("holes.bin", 1, size));
}

/// Folds every event of a downloader into one app-wide view, as a service's status page does.
#[derive(Default)]
struct AppView(Mutex<BatchView>);

impl Observer for AppView {
    fn on_event(&self, event: &Event) {
        self.0.lock().unwrap().apply(event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_into_a_writer_ends_with_exactly_one_terminal_event() {
    let app = Arc::new(AppView::default());
    let recorder = Arc::new(Recorder::default());
    let fixture = Fixture::with(fast_downloader().observer(app.clone())).await;
    let mut written = Vec::new();
    let request = fixture.request(5000, "piped.bin", "").with_tag("pipe-1");
    let streamed = fixture
        .downloader
        .download_to_writer_observed(&request, &mut written, recorder.clone())
        .await
        .unwrap();
    assert_eq!(written, content("piped.bin", 1, 5000));
    let missing = fixture.request(10, "missing.bin", "status=404");
    let mut nothing = Vec::new();
    let failed = fixture
        .downloader
        .download_to_writer_observed(&missing, &mut nothing, recorder.clone())
        .await;
    assert!(failed.is_err());
    let events = recorder.0.lock().unwrap().clone();
    let terminal: Vec<&Event> = events.iter().filter(|e| e.is_terminal()).collect();
    assert_eq!(terminal.len(), 2, "one per download: {terminal:?}");
    assert!(
        matches!(terminal[0], Event::Streamed { streamed: s, tag: Some(tag), .. }
            if *s == streamed && &**tag == "pipe-1"),
        "{:?}",
        terminal[0]
    );
    assert!(matches!(
        terminal[1],
        Event::Failed {
            status: Some(404),
            ..
        }
    ));
    let view = app.0.lock().unwrap();
    assert_eq!(
        (view.queued, view.ended(), view.downloaded, view.failed),
        (2, 2, 1, 1),
        "the app-wide view sees both end"
    );
    assert!(view.unfinished().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_view_counts_cancelled_downloads_as_ended_and_reaches_100_percent() {
    let app = Arc::new(AppView::default());
    let fixture = Fixture::with(fast_downloader().jobs(2).observer(app.clone())).await;
    let slow = fixture.downloader.submit(
        fixture
            .request(1 << 20, "slow.bin", "rate=65536")
            .with_tag("slow"),
    );
    let waiting = fixture
        .downloader
        .submit(fixture.request(1000, "waiting.bin", "delay_ms=200"));
    let quick = fixture
        .downloader
        .submit(fixture.request(3000, "quick.bin", ""));
    quick.await.unwrap();
    waiting.await.unwrap();
    // The slow one is cancelled from elsewhere while its handle is awaited.
    let canceller = slow.canceller();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        canceller.cancel();
    });
    assert!(matches!(slow.await, Err(haul::Error::Cancelled)));
    let view = app.0.lock().unwrap();
    assert_eq!(view.cancelled, 1);
    assert_eq!(
        view.ended(),
        view.queued,
        "cancelled downloads count as ended"
    );
    assert!(
        view.unfinished().is_empty(),
        "nothing listed as running forever"
    );
    let (done, total) = view.batch_progress();
    assert_eq!(done, total, "100% once everything ended: {done} of {total}");
    let kept: Vec<(&str, haul::FileState)> = view
        .recently_ended()
        .map(|(_, f)| (f.name.as_str(), f.state))
        .collect();
    assert!(
        kept.contains(&("quick.bin", haul::FileState::Finished)),
        "{kept:?}"
    );
    assert!(
        kept.contains(&("slow.bin", haul::FileState::Cancelled)),
        "{kept:?}"
    );
    let slow_view = view
        .recently_ended()
        .find(|(_, f)| f.name == "slow.bin")
        .unwrap()
        .1;
    assert_eq!(slow_view.tag.as_deref(), Some("slow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_come_back_in_events_and_outcomes_and_a_canceller_stops_one_download() {
    let recorder = Arc::new(Recorder::default());
    let fixture = Fixture::new().await;
    let requests = vec![
        fixture.request(2000, "a.bin", "").with_tag("job-a"),
        fixture
            .request(2000, "b.bin", "rate=1024")
            .with_tag("job-b"),
        fixture
            .request(2000, "c.bin", "status=404")
            .with_tag("job-c"),
    ];
    let outcomes: Vec<haul::Outcome> = fixture
        .downloader
        .batch(requests)
        .with_observer(recorder.clone())
        .start()
        .unwrap()
        .take(2)
        .collect()
        .await;
    let mut tags: Vec<&str> = outcomes.iter().filter_map(|o| o.tag.as_deref()).collect();
    tags.sort_unstable();
    assert_eq!(tags, ["job-a", "job-c"], "the two quick ones end first");
    // The rest of the batch was dropped with the stream: cancelled.
    let handle = fixture.downloader.submit(
        fixture
            .request(1 << 20, "d.bin", "rate=65536")
            .with_tag("job-d"),
    );
    assert_eq!(handle.tag().map(|t| &**t), Some("job-d"));
    let canceller = handle.canceller();
    let other = canceller.clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    other.cancel();
    assert!(canceller.is_cancelled());
    assert!(matches!(handle.await, Err(haul::Error::Cancelled)));
    let events = recorder.0.lock().unwrap().clone();
    for tag in ["job-a", "job-b", "job-c"] {
        let tagged: Vec<&Event> = events
            .iter()
            .filter(|e| e.tag().map(|t| &**t) == Some(tag))
            .collect();
        assert!(
            matches!(tagged.first(), Some(Event::Queued { .. })),
            "{tag}: {tagged:?}"
        );
        assert!(
            tagged.last().is_some_and(|e| e.is_terminal()),
            "{tag} ends with a tagged terminal event: {tagged:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_made_on_a_callers_behalf_take_jobs_slots() {
    let fixture = Fixture::with(fast_downloader().jobs(3).per_host(100)).await;
    let downloader = &fixture.downloader;
    let url =
        |name: &str| url::Url::parse(&fixture.server.file_url(100, name, "delay_ms=150")).unwrap();
    let documents = (0..8).map(|i| {
        let url = url(&format!("doc{i}"));
        async move { downloader.fetch_document(&url).await.map(|_| ()) }
    });
    let listings = (0..8).map(|i| {
        fixture
            .server
            .put_tree(&format!("/tree{i}/"), &[("a.bin", b"a")]);
        let url = url::Url::parse(&fixture.server.url(&format!("/tree{i}/?delay_ms=150"))).unwrap();
        async move {
            let files = downloader.list_directory(&url, 0).await?;
            assert_eq!(files.len(), 1, "{files:?}");
            Ok::<(), haul::Error>(())
        }
    });
    let manifest = (0..8)
        .map(|i| url(&format!("probe{i}")).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let source = haul::sync::manifest_source(&manifest).unwrap();
    let options = haul::sync::SyncOptions {
        dry_run: true,
        ..Default::default()
    };
    let probes = async {
        let prepared = haul::sync::prepare(fixture.dir.path(), &source, &options)
            .await
            .unwrap();
        let dry_run = haul::sync::dry_run(downloader, &prepared).await;
        assert_eq!(dry_run.lines.len(), 8);
        Ok::<(), haul::Error>(())
    };
    let downloads = (0..4).map(|i| {
        let request = fixture.request(100, &format!("file{i}"), "delay_ms=150");
        async move { downloader.download(request).await.map(|_| ()) }
    });
    let (a, b, c, d) = tokio::join!(
        futures_util::future::join_all(documents),
        futures_util::future::join_all(listings),
        probes,
        futures_util::future::join_all(downloads),
    );
    assert!(a.iter().chain(&b).chain(&d).all(Result::is_ok));
    c.unwrap();
    let peak = fixture.server.peak_in_flight();
    assert!(peak <= 3, "{peak} requests in flight with jobs(3)");
    assert!(peak >= 2, "they overlapped: {peak}");
}
