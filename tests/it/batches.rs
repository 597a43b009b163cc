//! The CLI a batch user keeps: signals, batches as people write them, logs, per-file rates,
//! shards and two processes in one directory (issue #16 of the CLI: "signals, batches,
//! logs, and scale-out").

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::nginx::Nginx;
use crate::support::server::{TestServer, content};
use crate::support::{haul, listing, run, stderr};

/// Every JSON event a `--json` run printed.
fn events(output: &Output) -> Vec<serde_json::Value> {
    crate::support::json_events(&output.stdout)
}

/// `haul get FLAGS -d DIR -i LIST`.
fn get_list(flags: &[&str], dir: &Path, list: &Path) -> Command {
    let mut command = haul();
    command
        .arg("get")
        .args(flags)
        .arg("-d")
        .arg(dir)
        .arg("-i")
        .arg(list);
    command
}

fn of_kind<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

async fn wait(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Item 1: SIGTERM (and SIGHUP) end a batch like Ctrl-C: state saved, a summary marked
/// interrupted, the unfinished files listed, exit 143 (129); a rerun resumes each at its byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_batch_saves_state_and_a_rerun_resumes_every_file_exactly() {
    const SIZE: u64 = 4 << 20;
    let server = TestServer::start().await;
    for (signal_name, code) in [("TERM", 143), ("HUP", 129)] {
        let dir = tempfile::tempdir().unwrap();
        let urls: Vec<String> = (0..3)
            .map(|i| server.file_url(SIZE, &format!("t{i}.bin"), "rate=2097152"))
            .collect();
        let mut command = haul();
        command
            .args(["get", "--json", "-j", "3", "-d"])
            .arg(dir.path())
            .args(&urls)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        signal(&child, signal_name);
        let output = wait(child).await;
        assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
        let all = events(&output);
        let summary = of_kind(&all, "summary");
        assert_eq!(summary.len(), 1, "one summary: {all:?}");
        assert_eq!(summary[0]["interrupted"], true);
        assert_eq!(summary[0]["exit_code"], code);
        assert_eq!(summary[0]["unfinished"], 3);

        let prefixes: Vec<u64> = (0..3)
            .map(|i| {
                crate::support::resumable_prefix(&dir.path().join(format!("t{i}.bin.part.haul")))
            })
            .collect();
        assert!(prefixes.iter().all(|&p| p > 0), "{prefixes:?}");
        let before = server.log().len();
        let mut command = haul();
        command
            .args(["get", "-q", "-d"])
            .arg(dir.path())
            .args(&urls);
        let output = run(command).await;
        assert!(output.status.success(), "{}", stderr(&output));
        for (i, prefix) in prefixes.iter().enumerate() {
            let name = format!("t{i}.bin");
            assert_eq!(
                std::fs::read(dir.path().join(&name)).unwrap(),
                content(&name, 1, SIZE)
            );
            let resumed = server.log()[before..]
                .iter()
                .find(|entry| entry.path.contains(&name))
                .and_then(|entry| entry.range.clone());
            assert_eq!(resumed, Some(format!("bytes={prefix}-")), "{name}");
        }
    }
}

/// Item 2: the same URL twice is downloaded once and reported for each line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_url_twice_is_downloaded_once() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(5000, "twice.bin", "");
    let list = dir.path().join("list.txt");
    std::fs::write(&list, format!("{url}\n{url}\n")).unwrap();
    let output = run(get_list(&["--json"], dir.path(), &list)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(server.requests(), 1);
    assert_eq!(
        std::fs::read(dir.path().join("twice.bin")).unwrap(),
        content("twice.bin", 1, 5000)
    );
    let all = events(&output);
    assert_eq!(of_kind(&all, "finished").len(), 2, "{all:?}");
}

/// Item 2: names from Content-Disposition are reserved as the headers arrive; a second file
/// given a taken name is saved as NAME.1, never dropped and never sharing a `.part`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_disposition_names_are_reserved_and_a_taken_name_gets_a_suffix() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let disposition = "disposition=attachment%3B%20filename%3D%22report.pdf%22";
    let first = server.file_url(1000, "download", &format!("id=1&{disposition}"));
    let second = server.file_url(2000, "download", &format!("id=2&{disposition}"));
    let mut command = haul();
    command
        .args(["get", "-q", "--content-disposition", "-d"])
        .arg(dir.path())
        .args([&first, &second]);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(listing(dir.path()), vec!["report.pdf", "report.pdf.1"]);
    let mut sizes: Vec<u64> = ["report.pdf", "report.pdf.1"]
        .iter()
        .map(|n| std::fs::metadata(dir.path().join(n)).unwrap().len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![1000, 2000]);
}

/// Item 3: aria2's keys are accepted; unknown keys warn once each and are ignored, unless
/// --strict-input restores refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aria2_input_files_run_and_unknown_keys_warn() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("aria2.txt");
    std::fs::write(
        &list,
        format!(
            "{}\n  split=4\n  max-connection-per-server=2\n  referer=http://example.org/\n  \
             user-agent=aria2/1.37\n  max-download-limit=1M\n  out=a.bin\n  \
             auto-file-renaming=false\n",
            server.file_url(3000, "a", "")
        ),
    )
    .unwrap();
    let output = run(get_list(&[], dir.path(), &list)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(dir.path().join("a.bin").exists());
    let text = stderr(&output);
    assert_eq!(text.matches("auto-file-renaming").count(), 1, "{text}");
    assert!(!text.contains("split"), "known keys do not warn: {text}");
    let logged = server.log();
    assert_eq!(logged[0].user_agent.as_deref(), Some("aria2/1.37"));

    std::fs::remove_file(dir.path().join("a.bin")).unwrap();
    let output = run(get_list(&["--strict-input"], dir.path(), &list)).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("auto-file-renaming"));
    assert!(!dir.path().join("a.bin").exists());
}

/// Items 4 and 6: `--limit-rate 0` means unlimited, and a URL without a scheme is read as
/// http:// the way curl and wget read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_rate_0_is_unlimited_and_a_url_without_scheme_is_http() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(2000, "plain.txt", "");
    let schemeless = url.trim_start_matches("http://").to_owned();
    let mut command = haul();
    command
        .args(["get", "-q", "--limit-rate", "0", "-d"])
        .arg(dir.path())
        .arg(&schemeless);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(dir.path().join("plain.txt")).unwrap(),
        content("plain.txt", 1, 2000)
    );

    let mut command = haul();
    command.args(["get", "-d"]).arg(dir.path()).arg("/no/host");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("scheme"), "{}", stderr(&output));
}

/// Item 5: `--progress none` hides progress but keeps the summary and the failure list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_none_still_prints_the_summary_and_failures() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "--progress", "none", "--retries", "0", "-d"])
        .arg(dir.path())
        .arg(server.file_url(100, "good", ""))
        .arg(server.file_url(100, "bad", "status=404"));
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("1 ok") && text.contains("1 failed"), "{text}");
    assert!(text.contains("failed:") && text.contains("bad"), "{text}");
    assert!(!text.contains("progress:"), "{text}");
}

/// Items 8 and 10: a body cut short says so, and `failed` events name their URL, path and
/// HTTP status without a join against `queued`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_what_happened_and_failed_events_are_self_contained() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cut = server.file_url(100_000, "cut.bin", "drop_after=1000&no_ranges=1");
    let missing = server.file_url(100, "missing.bin", "status=404");
    let mut command = haul();
    command
        .args(["get", "--json", "--retries", "0", "-d"])
        .arg(dir.path())
        .args([&cut, &missing]);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let all = events(&output);
    let failed = of_kind(&all, "failed");
    assert_eq!(failed.len(), 2, "{all:?}");
    let by_url = |url: &str| *failed.iter().find(|e| e["url"] == url).unwrap();
    let cut_event = by_url(&cut);
    assert!(
        cut_event["message"]
            .as_str()
            .unwrap()
            .contains("broke off after"),
        "{cut_event}"
    );
    assert!(
        cut_event["path"].as_str().unwrap().ends_with("cut.bin"),
        "{cut_event}"
    );
    let missing_event = by_url(&missing);
    assert_eq!(missing_event["status"], 404);
    assert!(
        missing_event["path"]
            .as_str()
            .unwrap()
            .ends_with("missing.bin")
    );
}

/// Item 7: a TLS failure points at --ca-cert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_error_points_at_ca_cert() {
    let Some(nginx) = Nginx::start() else {
        eprintln!("nginx is not installed; skipping");
        return;
    };
    std::fs::write(nginx.www().join("tls.txt"), b"secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "--retries", "0", "-d"])
        .arg(dir.path())
        .arg(nginx.https_url("/tls.txt"));
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--ca-cert"), "{}", stderr(&output));
    let mut command = haul();
    command
        .args(["get", "-q", "--ca-cert"])
        .arg(nginx.ca_pem())
        .arg("-d")
        .arg(dir.path())
        .arg(nginx.https_url("/tls.txt"));
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
}

/// Item 11: `--log-file` gets one timestamped line per event and `--json-file` the NDJSON
/// events, while the terminal shows its usual output; their directories are made when missing
/// (a job array's `logs/shard-3.log`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_and_json_file_record_every_event() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("new/logs/run.log");
    let json = logs.path().join("other/run.ndjson");
    let mut command = haul();
    command
        .args(["get", "--retries", "0", "--log-file"])
        .arg(&log)
        .arg("--json-file")
        .arg(&json)
        .arg("-d")
        .arg(dir.path())
        .arg(server.file_url(100, "one", ""))
        .arg(server.file_url(100, "two", "status=404"));
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stdout.is_empty(),
        "events go to the file, not stdout"
    );
    let json_text = std::fs::read_to_string(&json).unwrap();
    let kinds: Vec<String> = json_text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].to_string())
        .collect();
    for kind in ["\"queued\"", "\"finished\"", "\"failed\"", "\"summary\""] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {json_text}");
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    let failed_line = log_text.lines().find(|l| l.contains(" failed ")).unwrap();
    // An RFC 3339 timestamp leads every line.
    assert!(
        failed_line.len() > 20 && failed_line.as_bytes()[4] == b'-',
        "{failed_line}"
    );
    assert!(failed_line.contains("404"), "{failed_line}");
}

/// Item 12: `max-download-limit=` on an input line limits that file alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_file_rate_limit_slows_only_its_file() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "{}\n  max-download-limit=100K\n{}\n",
            server.file_url(300_000, "slow.bin", ""),
            server.file_url(3_000_000, "fast.bin", "")
        ),
    )
    .unwrap();
    let started = Instant::now();
    let output = run(get_list(&["--json"], dir.path(), &list)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    // A limit can only make a file slower: 300 kB at 100 KiB/s needs well over 2 s.
    assert!(started.elapsed() >= Duration::from_secs(2));
    let all = events(&output);
    let finished = of_kind(&all, "finished");
    let duration_of = |name: &str| {
        finished
            .iter()
            .find(|e| e["path"].as_str().unwrap_or("").ends_with(name))
            .map(|e| e["duration_ms"].as_u64().unwrap())
            .unwrap()
    };
    assert!(duration_of("slow.bin") >= 2000, "{finished:?}");
    assert!(duration_of("fast.bin") < duration_of("slow.bin"));
}

/// Item 13 and the two-processes rule: N shard processes and a duplicated shard run at once
/// into one directory; every file lands exactly once, complete, and no process corrupts
/// another's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_and_a_duplicated_shard_share_one_directory() {
    const SHARDS: usize = 3;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let lists = tempfile::tempdir().unwrap();
    let list = lists.path().join("urls.txt");
    let names: Vec<String> = (0..24).map(|i| format!("f{i:02}.bin")).collect();
    let sizes = |i: usize| 20_000 + 7_919 * i as u64;
    let mut text = String::new();
    for (i, name) in names.iter().enumerate() {
        text.push_str(&server.file_url(sizes(i), name, "rate=400000"));
        text.push('\n');
    }
    std::fs::write(&list, text).unwrap();

    let spawn = |shard: usize| {
        let mut command = haul();
        command
            .args(["get", "--json", "-j", "4", "--shard"])
            .arg(format!("{shard}/{SHARDS}"))
            .arg("-d")
            .arg(dir.path())
            .arg("-i")
            .arg(&list)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().unwrap()
    };
    // Shard 0 twice, as a duplicated pod would run it.
    let children: Vec<Child> = [0, 0, 1, 2].into_iter().map(spawn).collect();
    let mut outputs = Vec::new();
    for child in children {
        outputs.push(wait(child).await);
    }
    for output in &outputs {
        assert!(output.status.success(), "{}", stderr(output));
    }
    assert_eq!(listing(dir.path()), names, "every file once, no .part left");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            content(name, 1, sizes(i)),
            "{name}"
        );
    }
    // The three distinct shards split the list between them.
    let finished_by = |output: &Output| {
        let all = events(output);
        let mut paths: Vec<String> = all
            .iter()
            .filter(|e| e["event"] == "finished" || e["event"] == "skipped")
            .filter_map(|e| e["path"].as_str().map(str::to_owned))
            .collect();
        paths.sort();
        paths
    };
    let distinct: usize = outputs[1..].iter().map(|o| finished_by(o).len()).sum();
    assert_eq!(distinct, names.len());
    assert_eq!(finished_by(&outputs[0]), finished_by(&outputs[1]));
    for shard in 1..SHARDS {
        assert!(!finished_by(&outputs[shard + 1]).is_empty());
    }
    // Each of shard 0's files was written by one copy; the other found it complete.
    let written = |output: &Output| -> Vec<String> {
        events(output)
            .iter()
            .filter(|e| e["event"] == "finished" && e["already_present"] == false)
            .filter_map(|e| e["path"].as_str().map(str::to_owned))
            .collect()
    };
    let mut by_both = written(&outputs[0]);
    by_both.extend(written(&outputs[1]));
    by_both.sort();
    let mut expected = finished_by(&outputs[0]);
    expected.sort();
    assert_eq!(by_both, expected);
}

/// Two copies of one list at once into one directory (a requeued job racing its straggler),
/// against a server that sends different bytes on every request: every small file is written
/// by exactly one process, the other finds it complete, both exit 0, and the digest a process
/// reports for a file it wrote is the digest of the file on disk. On every path the `.part`
/// stays locked until it has its final name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_of_one_list_never_overwrite_each_other() {
    use sha2::Digest as _;
    let server = TestServer::start().await;
    let lists = tempfile::tempdir().unwrap();
    let list = lists.path().join("urls.txt");
    let names: Vec<String> = (0..400).map(|i| format!("s{i:03}.bin")).collect();
    let size = |i: usize| 100 + 7 * i as u64;
    let mut text = String::new();
    for (i, name) in names.iter().enumerate() {
        text.push_str(&server.file_url(size(i), name, "version_per_hit=1"));
        text.push('\n');
    }
    std::fs::write(&list, text).unwrap();
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let spawn = || {
            get_list(
                &["--json", "-j", "16", "--digest", "sha-256"],
                dir.path(),
                &list,
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        };
        let children = [spawn(), spawn()];
        let mut outputs = Vec::new();
        for child in children {
            outputs.push(wait(child).await);
        }
        for output in &outputs {
            assert!(output.status.success(), "round {round}: {}", stderr(output));
        }
        assert_eq!(listing(dir.path()), names, "round {round}: no .part left");
        let mut writers = std::collections::HashMap::<String, usize>::new();
        for output in &outputs {
            for event in of_kind(&events(output), "finished") {
                if event["already_present"] == true {
                    continue;
                }
                let path = event["path"].as_str().unwrap().to_owned();
                let on_disk = hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()));
                assert_eq!(
                    event["digest"].as_str().unwrap(),
                    format!("sha-256={on_disk}"),
                    "round {round}: {path} reported with another digest than it has"
                );
                *writers.entry(path).or_default() += 1;
            }
        }
        assert!(
            writers.values().all(|count| *count == 1),
            "round {round}: a file written by both processes: {writers:?}"
        );
    }
}

/// A sync into a directory that does not exist yet takes its lock at once: a second sync of
/// the same mirror started while the first runs refuses, as for an existing directory. (Two
/// processes: POSIX record locks never conflict within one.) A dry run makes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_into_a_new_directory_is_locked_from_the_start() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let manifest = root.path().join("manifest.txt");
    std::fs::write(
        &manifest,
        format!("{}\n", server.file_url(400_000, "slow.bin", "rate=200000")),
    )
    .unwrap();
    let dir = root.path().join("new/mirror");
    let sync = |extra: &[&str]| {
        let mut command = haul();
        command.arg("sync").args(extra).arg(&manifest).arg(&dir);
        command
    };
    let dry = run(sync(&["--dry-run"])).await;
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(!dir.exists(), "a dry run makes nothing");
    let first = sync(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join(".haul-sync.lock").exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = run(sync(&[])).await;
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("another haul sync is running"),
        "{}",
        stderr(&second)
    );
    let first = wait(first).await;
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(
        std::fs::read(dir.join("slow.bin")).unwrap(),
        content("slow.bin", 1, 400_000)
    );
}

/// `--max-time` is a hard deadline for the whole run, ending like SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_time_ends_the_run_like_sigterm() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "--json", "--max-time", "1s", "-d"])
        .arg(dir.path())
        .arg(server.file_url(8 << 20, "long.bin", "rate=1048576"));
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
    let all = events(&output);
    assert_eq!(of_kind(&all, "summary")[0]["interrupted"], true);
    assert!(crate::support::resumable_prefix(&dir.path().join("long.bin.part.haul")) > 0);
}

/// Two syncs of one mirror at once (a cron run overlapping the previous one): the second
/// refuses at once with a clear message and touches nothing; the lock goes with its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_of_the_same_mirror_refuses_while_the_first_runs() {
    let server = TestServer::start().await;
    server.put_tree("/locked/", &[("a.txt", b"alpha")]);
    let dir = tempfile::tempdir().unwrap();
    // The test process plays the first sync: it holds the mirror's lock.
    let lock = std::fs::File::create(dir.path().join(".haul-sync.lock")).unwrap();
    rustix::fs::fcntl_lock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let sync = || {
        let mut command = haul();
        command
            .args(["sync", "--recursive"])
            .arg(server.url("/locked/"))
            .arg(dir.path());
        command
    };
    let output = run(sync()).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("another haul sync is running"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.path().join("a.txt").exists());

    drop(lock);
    let output = run(sync()).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"alpha");
}

/// Item 9: before any length is known the total bar is not drawn full (`████ 0 B/0 B`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_bar_is_not_drawn_full_before_any_length_is_known() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: util-linux `script` is not installed; no pseudo-terminal test");
        assert!(std::env::var("CI").is_err(), "CI must have `script`");
        return;
    }
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let shell = format!(
        "COLUMNS=100 LINES=30 {} --no-config get -d {} {}",
        env!("CARGO_BIN_EXE_haul"),
        dir.path().display(),
        server.file_url(1000, "late.bin", "delay_ms=1500")
    );
    let mut command = std::process::Command::new("script");
    command.args(["-qec", &shell, "/dev/null"]);
    let output = run(command).await;
    assert!(output.status.success());
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(screen.contains('\x1b'), "a terminal gets escape codes");
    assert!(!screen.contains("0 B/0 B"), "{screen}");
}
