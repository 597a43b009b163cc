//! Where features meet (issue #27): a resume answered by a server that ignores `If-Range`, names
//! from `Content-Disposition` that equal a URL's name, mirrors after a failed first URL, running
//! out of descriptors, raw UTF-8 in a redirect, the obsolete date forms, the low-speed window,
//! answers a retry cannot change. Each test states the invariant a user relies on.

use std::path::Path;

use crate::support::server::{TestServer, content};
use crate::support::{haul, haul_with_open_file_limit, json_events, mtime, run, stderr};

fn get(dir: &Path, extra: &[&str], urls: &[String]) -> std::process::Command {
    let mut command = haul();
    command
        .args(["get", "--json", "-d"])
        .arg(dir)
        .args(extra)
        .args(urls);
    command
}

/// Behaviour 6: a `Last-Modified` in RFC 850 or asctime form gives the file its time, as the
/// IMF-fixdate form does (RFC 9110 §5.6.7: recipients accept all three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_date_form_gives_the_file_its_time() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    for form in ["rfc850", "asctime", "imf"] {
        let name = format!("{form}.bin");
        let url = server.file_url(3000, &name, &format!("date_form={form}"));
        let output = run(get(dir.path(), &[], &[url])).await;
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            mtime(&dir.path().join(&name)),
            783_679_777,
            "{form}: 01 Nov 1994 08:49:37 GMT"
        );
    }
}

/// Behaviour 5: a redirect whose `Location` holds raw UTF-8 and a space is followed (the bytes
/// percent-encoded, as curl, wget and aria2c do), not reported as "answered HTTP 302".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_with_raw_utf8_is_followed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let target = "/files/1000/caf\u{e9} menu.bin";
    let encoded: String =
        percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let url = server.url(&format!("/redirect?raw=1&to={encoded}"));
    let output = run(get(dir.path(), &["-o", "menu.bin"], &[url])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(dir.path().join("menu.bin")).unwrap(),
        content("caf%C3%A9%20menu.bin", 1, 1000)
    );
}

/// Behaviour 7: the low-speed window slides. A body that sends 1 MiB at once and then a byte
/// every 300 ms is dropped about one `--speed-time` after the trickle starts (the burst ages out
/// of the window), not at twice `--speed-time` on the burst's average.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_after_a_burst_is_dropped_one_window_after_it_starts() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(2 << 20, "burst.bin", "trickle_after=1048576&trickle_ms=300");
    let flags = [
        "--lowest-speed-limit",
        "10K",
        "--speed-time",
        "2s",
        "--retries",
        "0",
    ];
    let began = std::time::Instant::now();
    let output = run(get(dir.path(), &flags, &[url])).await;
    let took = began.elapsed();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let failed = json_events(&output.stdout)
        .into_iter()
        .find(|e| e["event"] == "failed")
        .unwrap();
    assert!(
        failed["message"].as_str().unwrap().contains("slow"),
        "{failed}"
    );
    assert!(
        took >= std::time::Duration::from_millis(1900)
            && took < std::time::Duration::from_millis(3500),
        "dropped after {took:?}: one 2 s window (and a slice) after the trickle began"
    );
}

/// Behaviour 8: an answer that a retry cannot change (two different `Content-Length` values)
/// fails at once, with one request, instead of being retried for half a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_no_retry_can_change_fails_at_once() {
    let server = crate::support::server::RawServer::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 12\r\n\r\n0123456789ab",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let began = std::time::Instant::now();
    let output = run(get(
        dir.path(),
        &["--retries", "5"],
        &[server.url("/f.bin")],
    ))
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(server.accepted(), 1, "not retried");
    assert!(began.elapsed() < std::time::Duration::from_secs(5));
    assert!(!dir.path().join("f.bin").exists());
}

/// Behaviour 1 and the identity rule: a server that ignores `If-Range` answers a resume with a
/// `206` of a changed file (new strong `ETag`, new `Last-Modified`, same size). The `.part` is
/// never spliced: haul sees the new version, says so, and fetches it from byte 0; the final file
/// is exactly the new version. On one connection and on four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_answered_with_another_version_is_never_spliced() {
    let server = TestServer::start().await;
    for connections in ["1", "4"] {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("changed-x{connections}.bin");
        let size = 24u64 << 20;
        let dropping = server.file_url(size, &name, "ignore_if_range=1&drop_after=3000000");
        let url = server.file_url(size, &name, "ignore_if_range=1");
        let flags = [
            "-x",
            connections,
            "--min-split-size",
            "1M",
            "--retries",
            "0",
        ];
        let first = run(get(dir.path(), &flags, &[dropping])).await;
        assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
        assert!(dir.path().join(format!("{name}.part")).exists());
        server.set_version(&format!("/files/{size}/{name}"), 2);
        let second = run(get(dir.path(), &flags, std::slice::from_ref(&url))).await;
        assert!(
            second.status.success(),
            "-x {connections}: {}",
            stderr(&second)
        );
        assert!(
            std::fs::read(dir.path().join(&name)).unwrap() == content(&name, 2, size),
            "-x {connections}: the final file is exactly the new version"
        );
        let restarted: Vec<_> = json_events(&second.stdout)
            .into_iter()
            .filter(|e| e["event"] == "restarted")
            .collect();
        assert!(
            restarted
                .iter()
                .any(|e| e["reason"].as_str().unwrap().contains("changed")),
            "-x {connections}: {restarted:?}"
        );
    }
}

/// Behaviour 2 and the name claim: three URLs whose own name is `report.csv`, each answered
/// with `Content-Disposition: report.csv` and a different body, at once and as large files too.
/// No body is lost: three files, three bodies, exit 0; nothing left beside them; and the names
/// follow the input order, as the `queued` events said, however the answers interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_names_equal_to_the_urls_name_never_share_a_path() {
    let server = TestServer::start().await;
    let disposition = "disposition=attachment%3B%20filename%3D%22report.csv%22";
    for sizes in [[1000u64, 2000, 3000], [3 << 20, 2 << 20, 5 << 20]] {
        let dir = tempfile::tempdir().unwrap();
        let urls: Vec<String> = sizes
            .iter()
            .enumerate()
            .map(|(id, size)| {
                server.file_url(
                    *size,
                    "report.csv",
                    &format!("id={id}&{disposition}&rate=4000000"),
                )
            })
            .collect();
        let output = run(get(
            dir.path(),
            &["--content-disposition", "-j", "3"],
            &urls,
        ))
        .await;
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            crate::support::listing(dir.path()),
            vec!["report.csv", "report.csv.1", "report.csv.2"],
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            stderr(&output)
        );
        // In input order, whichever answer came first: the names the batch planned, which
        // its `queued` events showed.
        for (name, size) in ["report.csv", "report.csv.1", "report.csv.2"]
            .iter()
            .zip(sizes)
        {
            assert!(
                std::fs::read(dir.path().join(name)).unwrap() == content("report.csv", 1, size),
                "{name} holds the body of the URL planned for it"
            );
        }
        let queued: Vec<String> = json_events(&output.stdout)
            .into_iter()
            .filter(|e| e["event"] == "queued")
            .map(|e| {
                e["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(queued, ["report.csv", "report.csv.1", "report.csv.2"]);
    }
}

/// A port on which nothing listens.
fn closed_port_url(path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", crate::support::free_port())
}

/// Behaviour 3: a first URL that answers 404 or 410, refuses the connection, does not resolve,
/// stalls again and again, or breaks off mid-body and is then gone hands the file to its
/// mirror, small files too; the
/// file ends exact, the mirror's log shows it served, and an event says why the first was left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_takes_over_when_the_first_url_fails() {
    let first = TestServer::start().await;
    let mirror = TestServer::start().await;
    let cases: [(&str, u64, String, &[&str]); 6] = [
        (
            "gone-small",
            3000,
            first.file_url(3000, "gone-small", "status=404"),
            &[],
        ),
        (
            "gone-large",
            6 << 20,
            first.file_url(6 << 20, "gone-large", "status=410"),
            &["-x", "4", "--min-split-size", "1M"],
        ),
        ("refused", 5000, closed_port_url("/files/5000/refused"), &[]),
        (
            "stalls",
            4000,
            first.file_url(4000, "stalls", "stall_after=0"),
            &["--stall-timeout", "1s"],
        ),
        (
            "breaks-x1",
            4 << 20,
            first.file_url(
                4 << 20,
                "breaks-x1",
                "drop_after=1000000&fault_times=1&ranged_status=404",
            ),
            &["-x", "1", "--retries", "1"],
        ),
        (
            "unknown-host",
            2 << 20,
            "http://no-such-host.invalid/files/2097152/unknown-host".to_owned(),
            &[],
        ),
    ];
    for (name, size, url, flags) in cases {
        let dir = tempfile::tempdir().unwrap();
        let served_before = mirror.body_bytes();
        let mirror_url = mirror.file_url(size, name, "");
        let output = run(get(
            dir.path(),
            &[flags, &["--mirror", &mirror_url]].concat(),
            &[url],
        ))
        .await;
        assert!(output.status.success(), "{name}: {}", stderr(&output));
        assert!(
            std::fs::read(dir.path().join(name)).unwrap() == content(name, 1, size),
            "{name}: exact"
        );
        assert!(
            mirror.body_bytes() > served_before,
            "{name}: the mirror served"
        );
        let all = json_events(&output.stdout);
        let finished = all.iter().find(|e| e["event"] == "finished").unwrap();
        if name != "breaks-x1" {
            // (That one's pieces are shared between both sources by the segment engine.)
            assert_eq!(
                finished["source"],
                mirror_url.as_str(),
                "{name}: which source served"
            );
        }
        let warnings: Vec<String> = all
            .into_iter()
            .filter(|e| e["event"] == "warning")
            .map(|e| e["message"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("left") || w.contains("dropped")),
            "{name}: the events say the first source was left: {warnings:?}"
        );
    }
    // The bytes the first URL gave before it broke off were kept: the mirror was asked for the
    // rest, not the whole file.
    let resumed = mirror
        .log()
        .into_iter()
        .filter(|l| l.path.ends_with("breaks-x1"))
        .filter_map(|l| l.range)
        .any(|range| !range.starts_with("bytes=0-"));
    assert!(resumed, "{:?}", mirror.log());
}

/// Behaviour 4: under a low `ulimit -n` (40: the 64 failed files only with a server as
/// fast as nginx, or a release build), 300 small files at `-j 8` all finish (exit 0): haul caps
/// its concurrency to the descriptors it has, says so once, and treats running out as a wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_file_limit_slows_a_batch_and_fails_nothing() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let lists = tempfile::tempdir().unwrap();
    let list = lists.path().join("urls.txt");
    let names: Vec<String> = (0..300).map(|i| format!("n{i:03}.bin")).collect();
    let mut text = String::new();
    for name in &names {
        text.push_str(&server.file_url(2000, name, ""));
        text.push('\n');
    }
    std::fs::write(&list, text).unwrap();
    let mut command = haul_with_open_file_limit(40);
    command
        .args(["get", "-j", "8", "-d"])
        .arg(dir.path())
        .arg("-i")
        .arg(&list);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stderr(&output).matches("lowered to").count(),
        1,
        "the cap is said once: {}",
        stderr(&output)
    );
    assert_eq!(crate::support::listing(dir.path()), names);
}

/// A small file's final name that another program fills while the download runs is never
/// written over: the download finds the file there and keeps it (`--on-exists skip`, the
/// default), and nothing else is left in the directory — no `.part`, no file without a name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_name_filled_by_another_program_meanwhile_is_never_written_over() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 20 kB at 20 kB/s: about a second in flight.
    let url = server.file_url(20_000, "late.bin", "rate=20000");
    let mut command = get(dir.path(), &[], &[url]);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    std::fs::write(dir.path().join("late.bin"), b"theirs").unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(dir.path().join("late.bin")).unwrap(),
        b"theirs"
    );
    assert_eq!(crate::support::listing(dir.path()), ["late.bin"]);
    let events = json_events(&output.stdout);
    let finished: Vec<_> = events.iter().filter(|e| e["event"] == "finished").collect();
    assert_eq!(finished.len(), 1, "{events:?}");
    assert_eq!(finished[0]["already_present"], true, "{events:?}");
}
