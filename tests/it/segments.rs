//! Segmented downloads and mirrors (issue #4): byte-for-byte results over several ranged
//! connections, retries of one segment, work stealing, mirrors failing or disagreeing, the
//! per-host limit across segments, and the silent fall-back for servers without ranges.

use std::time::Duration;

use haul::{Event, Request};
use sha2::{Digest, Sha256};

use crate::support::server::{TestServer, content};
use crate::support::{Fixture, fast_downloader, listing};

const MIB: u64 = 1 << 20;

/// A downloader splitting files over `connections`, in pieces of at least 1 MiB.
fn split_over(connections: usize) -> haul::Downloader {
    fast_downloader()
        .connections(connections)
        .min_split_size(MIB)
        .build()
        .unwrap()
}

/// Downloads `url` into `dir` and checks the bytes are `name`'s at version 1.
async fn fetch_exact(
    downloader: &haul::Downloader,
    url: &str,
    dir: &std::path::Path,
    name: &str,
    size: u64,
) {
    let done = downloader
        .download(Request::new(url).unwrap().into_dir(dir))
        .await
        .unwrap();
    assert!(
        std::fs::read(&done.path).unwrap() == content(name, 1, size),
        "{name} is exact"
    );
}

fn ranged_requests(server: &TestServer) -> Vec<String> {
    server.log().into_iter().filter_map(|r| r.range).collect()
}

/// Where each ranged request the server saw started (`bytes=START-END`).
fn range_starts(server: &TestServer) -> Vec<u64> {
    ranged_requests(server)
        .iter()
        .map(|r| {
            r.trim_start_matches("bytes=")
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_split_over_connections_is_exact_for_awkward_sizes() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = split_over(8);
    for size in [0u64, 1, 2 * MIB - 1, 33_554_467] {
        let name = format!("s{size}.bin");
        let body = content(&name, 1, size);
        let checksum = format!("sha-256={}", hex::encode(Sha256::digest(&body)));
        let request = Request::new(&server.file_url(size, &name, ""))
            .unwrap()
            .into_dir(dir.path())
            .with_checksum(checksum.parse().unwrap());
        let done = downloader.download(request).await.unwrap();
        assert!(
            std::fs::read(&done.path).unwrap() == body,
            "{name} is exact"
        );
        assert_eq!(done.digest.unwrap().to_string(), checksum);
    }
    let ranged = ranged_requests(&server);
    assert!(
        ranged.len() >= 7,
        "the 32 MiB file used 8 connections: {ranged:?}"
    );
    assert!(listing(dir.path()).iter().all(|n| !n.contains(".part")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_segment_is_resumed_from_its_last_byte() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = split_over(4);
    let size = 16 * MIB;
    // The first three answers (of any connection) break after 1 MB.
    let url = server.file_url(size, "d.bin", "drop_after=1000000&fault_times=3");
    fetch_exact(&downloader, &url, dir.path(), "d.bin", size).await;
    // Each broken answer is continued from its last byte (by its own connection, or by an
    // idle one that took the piece over), never from the start of its piece again: the three
    // broken answers each started at a piece's start (pieces are 4 MiB) and broke 1,000,000
    // bytes in.
    let log = server.log();
    let resumed: std::collections::HashSet<u64> = range_starts(&server)
        .into_iter()
        .filter(|start| start % (4 * MIB) == 1_000_000)
        .collect();
    assert!(
        resumed.len() >= 3,
        "each broken answer is continued from where it broke: {log:?}"
    );
    assert!(
        server.body_bytes() < size * 3 / 2,
        "no piece was fetched again wholesale: {}",
        server.body_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_connection_takes_over_half_of_a_slow_one() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = fast_downloader()
        .connections(2)
        .min_split_size(4 * MIB)
        .build()
        .unwrap();
    let size = 16 * MIB;
    // Answers that start in the second half crawl at 4 MiB/s; the first half is fast.
    let url = server.file_url(
        size,
        "w.bin",
        &format!("rate={}&slow_from={}", 4 * MIB, size / 2),
    );
    let done = downloader
        .download(Request::new(&url).unwrap().into_dir(dir.path()))
        .await
        .unwrap();
    assert!(std::fs::read(&done.path).unwrap() == content("w.bin", 1, size));
    let stolen: Vec<u64> = range_starts(&server)
        .into_iter()
        .filter(|start| *start > size / 2)
        .collect();
    assert!(
        !stolen.is_empty(),
        "the fast connection took over part of the slow half: {:?}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_takes_over_the_rest_of_a_stalled_one() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = fast_downloader()
        .connections(2)
        .min_split_size(MIB)
        .stall_timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap();
    let size = 8 * MIB;
    // The first answer (the first connection's piece, [0, 4 MiB)) goes silent 1 MiB before
    // the end of that piece; the other connection's piece arrives at full speed.
    let url = server.file_url(
        size,
        "t.bin",
        &format!("stall_after={}&fault_times=1", 3 * MIB),
    );
    let request = Request::new(&url).unwrap().into_dir(dir.path());
    let done = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        downloader.download(request),
    )
    .await
    .expect("the stalled rest is taken over, long before the 120 s stall timeout")
    .unwrap();
    assert!(std::fs::read(&done.path).unwrap() == content("t.bin", 1, size));
    // The second connection asked for bytes of the first piece: the stalled rest, or (when
    // it was done early enough to see the first piece still moving) a half of it.
    assert!(
        range_starts(&server).iter().any(|start| *start < 4 * MIB),
        "the idle connection took part of the first piece over: {:?}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_waiting_at_a_files_tail_lets_another_download_use_the_host() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = fast_downloader()
        .connections(2)
        .per_host(2)
        .min_split_size(MIB)
        .stall_timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap();
    // Every answer of the large file waits 400 ms, so its pieces count as stalled only after
    // 800 ms without a byte (twice the slowest answer). Its first answer (the first piece,
    // 2 MiB) goes silent 512 KiB before its end at ~0.4 s; the second connection's piece
    // has arrived by ~0.8 s, and that connection then has nothing to do until it may take the
    // stalled rest over at ~1.2 s.
    let size = 4 * MIB;
    let large = Request::new(&server.file_url(
        size,
        "l.bin",
        &format!("delay_ms=400&stall_after={}&fault_times=1", 3 * MIB / 2),
    ))
    .unwrap()
    .into_dir(dir.path());
    let small = Request::new(&server.file_url(100, "s.bin", ""))
        .unwrap()
        .into_dir(dir.path());
    let both = async {
        let large_done = tokio::spawn({
            let downloader = downloader.clone();
            async move { downloader.download(large).await.unwrap() }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        downloader.download(small).await.unwrap();
        large_done.await.unwrap()
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), both)
        .await
        .expect("both finish long before the stall timeout");
    assert!(std::fs::read(dir.path().join("l.bin")).unwrap() == content("l.bin", 1, size));
    let log = server.log();
    let position = |wanted: &dyn Fn(&crate::support::server::Logged) -> bool| {
        log.iter()
            .position(wanted)
            .unwrap_or_else(|| panic!("not in {log:#?}"))
    };
    let small_asked = position(&|r| r.path.ends_with("/s.bin"));
    let takeover = format!("bytes={}-{}", 3 * MIB / 2, 2 * MIB - 1);
    let taken_over = position(&|r| r.range.as_deref() == Some(takeover.as_str()));
    assert!(
        small_asked < taken_over,
        "the idle connection gave its host permit back: the other download did not wait for \
         the large file's tail: {log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_mirror_is_reported_and_the_others_finish() {
    for fault in ["status=500", "drop_after=0"] {
        let server = TestServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let downloader = fast_downloader()
            .connections(4)
            .min_split_size(MIB)
            .retries(1)
            .build()
            .unwrap();
        let size = 8 * MIB;
        let (observer, mut events) = haul::ChannelObserver::new();
        let request = Request::new(&server.file_url(size, "m.bin", ""))
            .unwrap()
            .with_mirror(&server.file_url(size, "m.bin", fault))
            .unwrap()
            .into_dir(dir.path());
        let outcomes = downloader
            .batch(vec![request])
            .with_observer(std::sync::Arc::new(observer))
            .run()
            .await
            .unwrap();
        let done = outcomes[0].as_ref().unwrap();
        assert!(
            std::fs::read(&done.path).unwrap() == content("m.bin", 1, size),
            "{fault}"
        );
        // The mirror's failures are reported: as retries, and as a drop when its connection
        // runs out of retries before an idle connection has taken its piece over.
        let mut warned = false;
        while let Ok(event) = events.try_recv() {
            match event {
                Event::Warning { message, .. }
                | Event::Retrying {
                    reason: message, ..
                } => {
                    warned |= message.contains(fault);
                }
                _ => {}
            }
        }
        assert!(warned, "{fault}: the failing mirror is reported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_with_another_length_is_refused() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = split_over(4);
    let size = 8 * MIB;
    let (observer, mut events) = haul::ChannelObserver::new();
    let request = Request::new(&server.file_url(size, "l.bin", ""))
        .unwrap()
        .with_mirror(&server.file_url(size + 1, "l.bin", ""))
        .unwrap()
        .into_dir(dir.path());
    let outcomes = downloader
        .batch(vec![request])
        .with_observer(std::sync::Arc::new(observer))
        .run()
        .await
        .unwrap();
    let done = outcomes[0].as_ref().unwrap();
    assert!(std::fs::read(&done.path).unwrap() == content("l.bin", 1, size));
    let mut refused = None;
    while let Ok(event) = events.try_recv() {
        if let Event::Warning { message, .. } = event {
            refused = Some(message);
        }
    }
    let message = refused.expect("a warning about the mirror");
    assert!(
        message.contains("differs") && message.contains("refused"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_host_limit_counts_every_segment() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = fast_downloader()
        .jobs(4)
        .per_host(6)
        .connections(8)
        .min_split_size(MIB)
        .build()
        .unwrap();
    let requests: Vec<Request> = (0..4)
        .map(|i| {
            Request::new(&server.file_url(8 * MIB, &format!("p{i}"), &format!("rate={}", 16 * MIB)))
                .unwrap()
                .into_dir(dir.path())
        })
        .collect();
    let outcomes = downloader.batch(requests).run().await.unwrap();
    for (i, outcome) in outcomes.iter().enumerate() {
        let done = outcome.as_ref().unwrap();
        assert!(std::fs::read(&done.path).unwrap() == content(&format!("p{i}"), 1, 8 * MIB));
    }
    let peak = server.peak_in_flight();
    assert!(peak <= 6, "peak {peak} exceeds --per-host 6");
    assert!(
        peak >= 5,
        "segments used the room the limit leaves (peak {peak})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_without_ranges_or_length_fall_back_to_one_connection() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = split_over(4);
    let size = 8 * MIB;
    // Advertises ranges but ignores them: the segments' 200s send it back to one stream.
    let liar = server.file_url(size, "n.bin", "no_ranges=1");
    fetch_exact(&downloader, &liar, dir.path(), "n.bin", size).await;
    // Streams without a length and ignores ranges (a generated answer).
    let chunked = server.file_url(size, "c.bin", "chunked=1&no_ranges=1");
    let before = server.requests();
    fetch_exact(&downloader, &chunked, dir.path(), "c.bin", size).await;
    assert_eq!(server.requests() - before, 1, "no length: one request");
}

/// Without a connection count, a file starts on one connection and adds more only while they
/// raise its rate: a server that limits each connection's rate gets all four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_count_connections_are_added_while_they_raise_the_rate() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::with(fast_downloader().min_split_size(MIB)).await;
    // 2 MiB/s per connection: 16 MiB would take 8 s on one.
    let url = server.file_url(16 * MIB, "ramp", &format!("rate={}", 2 * MIB));
    fetch_exact(&downloader, &url, dir.path(), "ramp", 16 * MIB).await;
    let peak = server.peak_in_flight();
    assert_eq!(
        peak,
        haul::DEFAULT_CONNECTIONS,
        "ramped up to the default ceiling"
    );
    // The first request had the file to itself for a while, and the trials came one by one,
    // each after the rate with the one before was measured (`-x 4` opens all at once).
    let log = server.log();
    let ranged: Vec<_> = log.iter().filter(|r| r.range.is_some()).collect();
    assert!(ranged.len() >= 3, "each added connection asked for a range");
    let first = log[0].at;
    for pair in ranged.windows(2).take(2) {
        assert!(pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(200));
    }
    assert!(ranged[0].at.duration_since(first) >= Duration::from_millis(200));
}

/// At the defaults (8 MiB --min-split-size), a 20 MB file from a server that gives each
/// connection 1 MiB/s still gets all four connections, the last within 1.5 s of the first
/// answer: the ramp keeps a connection only when it pays, so it may cut smaller pieces (it
/// stayed on 2 connections for the whole file before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_defaults_a_per_connection_limit_gets_four_connections_within_a_second_and_a_half() {
    let Fixture {
        server,
        dir,
        downloader,
    } = Fixture::new().await;
    let size = 20_000_000;
    let url = server.file_url(size, "limited", &format!("rate={MIB}"));
    fetch_exact(&downloader, &url, dir.path(), "limited", size).await;
    let log = server.log();
    assert!(
        log.len() >= haul::DEFAULT_CONNECTIONS,
        "{} requests",
        log.len()
    );
    let last_added = log[haul::DEFAULT_CONNECTIONS - 1]
        .at
        .duration_since(log[0].at);
    assert!(
        last_added <= Duration::from_millis(1500),
        "the fourth connection came {last_added:?} after the first answer"
    );
    assert_eq!(server.peak_in_flight(), haul::DEFAULT_CONNECTIONS);
}

/// With a connection count, the first request asks for the first piece only: its answer ends
/// where the piece does, and the connection goes on with the rest of its share instead of
/// being cut off in the middle of a whole-file answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_connection_count_the_first_request_asks_for_the_first_piece() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = split_over(4);
    // 8 MiB/s per answer: the other connections are busy with their 4 MiB pieces while the
    // first receives its first 2 MiB.
    let size = 16 * MIB;
    let url = server.file_url(size, "f.bin", &format!("rate={}", 8 * MIB));
    fetch_exact(&downloader, &url, dir.path(), "f.bin", size).await;
    let log = server.log();
    let first = &log[0];
    assert_eq!(
        first.range.as_deref(),
        Some("bytes=0-2097151"),
        "the first piece is twice the smallest split: {log:?}"
    );
    assert_eq!(first.if_range, None, "nothing to compare with yet");
    let rest = log
        .iter()
        .find(|r| {
            r.range
                .as_deref()
                .is_some_and(|r| r.starts_with("bytes=2097152-"))
        })
        .unwrap_or_else(|| panic!("the rest of the first piece was asked for: {log:?}"));
    assert!(rest.if_range.is_some(), "the rest asks for the same file");
    assert_eq!(
        server.body_bytes(),
        size,
        "every answer ended where it said: no answer was cut off, no byte sent twice"
    );

    // A file within the first piece comes whole in that one answer.
    let before = server.requests();
    fetch_exact(
        &downloader,
        &server.file_url(100, "s.bin", ""),
        dir.path(),
        "s.bin",
        100,
    )
    .await;
    assert_eq!(
        server.requests() - before,
        1,
        "one request for a small file"
    );
    // An empty file cannot be asked for by range (416): a plain request settles it.
    fetch_exact(
        &downloader,
        &server.file_url(0, "e.bin", ""),
        dir.path(),
        "e.bin",
        0,
    )
    .await;
    assert!(listing(dir.path()).iter().all(|n| !n.contains(".part")));
}

/// A server that fails every ranged request, or answers it wrongly (while plain ones work),
/// costs one extra request at the start, not a retry: with no retries allowed the download
/// still succeeds, on the plain answer alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_failing_the_first_piece_is_asked_plainly_at_once() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let downloader = fast_downloader()
        .connections(4)
        .min_split_size(MIB)
        .retries(0)
        .build()
        .unwrap();
    let size = 8 * MIB;
    for (fault, status) in [
        ("ranged_status=500", 500),
        ("ranged_status=412", 412),
        // A `206` whose Content-Range starts one byte off.
        ("wrong_range=1", 206),
    ] {
        let name = format!("r{status}.bin");
        let url = server.file_url(size, &name, fault);
        let before = server.log().len();
        fetch_exact(&downloader, &url, dir.path(), &name, size).await;
        let asked: Vec<_> = server.log()[before..]
            .iter()
            .map(|r| (r.range.is_some(), r.status))
            .collect();
        assert_eq!(asked, [(true, status), (false, 200)], "ranged, then plain");
    }
}
