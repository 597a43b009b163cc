//! Bulk scale (issue "a million URLs in one run"): memory independent of the list's length,
//! and tiny-file batches that survive `kill -9`.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::nginx::Nginx;
use crate::support::{haul, stderr};

/// Runs haul with `args` to its end and returns its exit code and its own peak RSS in KiB,
/// as GNU time reads it with `wait4` on haul's pid. Not `wait4` from this process: Linux
/// carries a process's peak RSS across `execve`, and a child spawned from the test process
/// starts out sharing the test binary's memory (other tests' servers included), which would
/// be charged to haul.
async fn exit_and_peak_rss(args: Vec<std::ffi::OsString>) -> (i32, u64) {
    tokio::task::spawn_blocking(move || {
        let report = tempfile::NamedTempFile::new().unwrap();
        let status = Command::new("/usr/bin/time")
            .arg("-o")
            .arg(report.path())
            .args(["-f", "%M"])
            .arg(env!("CARGO_BIN_EXE_haul"))
            .arg("--no-config")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run /usr/bin/time (Debian package `time`)");
        let text = std::fs::read_to_string(report.path()).unwrap();
        let peak_kib = text
            .lines()
            .filter_map(|line| line.trim().parse::<u64>().ok())
            .next_back()
            .unwrap_or_else(|| panic!("no peak RSS in {text:?}"));
        (status.code().unwrap_or(-1), peak_kib)
    })
    .await
    .unwrap()
}

fn tiny(i: usize) -> Vec<u8> {
    format!("tiny file {i}\n").repeat(1 + i % 40).into_bytes()
}

/// A 10^5-line input file (mostly URLs that 404 at once, plus 2,000 tiny files) runs in
/// bounded memory: the list is streamed, finished URLs keep only a fingerprint, failures keep
/// bounded detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_urls_run_in_bounded_memory() {
    const LINES: usize = 100_000;
    const FILES: usize = 2_000;
    if !std::path::Path::new("/usr/bin/time").exists() {
        eprintln!("SKIPPED: GNU time is not installed (apt-get install time)");
        assert!(std::env::var("CI").is_err(), "CI must have /usr/bin/time");
        return;
    }
    let Some(nginx) = Nginx::start() else {
        eprintln!("nginx is not installed; skipping");
        return;
    };
    let www = nginx.www().join("bulk");
    std::fs::create_dir_all(&www).unwrap();
    for i in 0..FILES {
        std::fs::write(www.join(format!("f{i}")), tiny(i)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let mut writer = std::io::BufWriter::new(std::fs::File::create(&list).unwrap());
    for line in 0..LINES {
        let url = if line % (LINES / FILES) == 0 {
            nginx.http_url(&format!("/bulk/f{}", line / (LINES / FILES)))
        } else {
            nginx.http_url(&format!("/missing/m{line}"))
        };
        writeln!(writer, "{url}").unwrap();
    }
    writer.flush().unwrap();
    drop(writer);
    let out = dir.path().join("out");
    let json = dir.path().join("events.ndjson");
    let mut args: Vec<std::ffi::OsString> = [
        "get",
        "-j",
        "32",
        "--retries",
        "0",
        "--progress",
        "none",
        "--json-file",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.extend([json.clone().into(), "-d".into(), out.clone().into()]);
    args.extend(["-i".into(), list.clone().into()]);
    let (code, peak_kib) = exit_and_peak_rss(args).await;
    eprintln!("peak RSS {peak_kib} KiB for {LINES} URLs");
    assert_eq!(code, 1, "the 404s fail the run");
    assert!(
        peak_kib < 64 * 1024,
        "peak RSS {peak_kib} KiB for {LINES} URLs"
    );
    for i in 0..FILES {
        assert_eq!(std::fs::read(out.join(format!("f{i}"))).unwrap(), tiny(i));
    }
    let events = std::fs::read_to_string(&json).unwrap();
    let summary: serde_json::Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["ok"], FILES);
    assert_eq!(summary["failed"], LINES - FILES);
    let failed_events = events.lines().filter(|l| l.contains(r#""event":"failed""#));
    assert_eq!(
        failed_events.count(),
        LINES - FILES,
        "every failure is in the events"
    );
}

/// `kill -9` in the middle of a tiny-file batch (whose files commit in groups), then a rerun:
/// every file present is complete and correct, and the rest are downloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_tiny_file_batch_then_rerun_gives_every_file_exactly() {
    kill_9_mid_tiny_file_batch(3_000, &[]).await;
}

/// The same with relaxed durability: nothing is synced, and a crash of haul still leaves
/// only complete files under final names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_durability_survives_kill_9_the_same_way() {
    kill_9_mid_tiny_file_batch(1_500, &["--durability", "relaxed"]).await;
}

async fn kill_9_mid_tiny_file_batch(files: usize, extra: &'static [&'static str]) {
    let Some(nginx) = Nginx::start() else {
        eprintln!("nginx is not installed; skipping");
        return;
    };
    let www = nginx.www().join("tiny");
    std::fs::create_dir_all(&www).unwrap();
    for i in 0..files {
        std::fs::write(www.join(format!("t{i}")), tiny(i)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let mut text = String::new();
    for i in 0..files {
        text.push_str(&nginx.http_url(&format!("/tiny/t{i}")));
        text.push('\n');
    }
    std::fs::write(&list, text).unwrap();
    let out = dir.path().join("out");
    let (list_for_run, out_for_run) = (list.clone(), out.clone());
    let get = move || {
        let mut command = haul();
        command
            .args(["get", "-q", "-j", "16"])
            .args(extra)
            .arg("-d")
            .arg(&out_for_run)
            .arg("-i")
            .arg(&list_for_run);
        command
    };
    let mut first = get();
    let mut child = first
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some files have landed and before all have.
    let mut landed = 0;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        landed = std::fs::read_dir(&out).map_or(0, Iterator::count);
        if landed >= 50 {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(landed > 0, "some files landed before the kill");
    // Whatever carries a final name now is complete and correct.
    for entry in std::fs::read_dir(&out).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(i) = name.strip_prefix('t').and_then(|n| n.parse::<usize>().ok()) {
            assert_eq!(std::fs::read(out.join(&name)).unwrap(), tiny(i), "{name}");
        }
    }
    let output = tokio::task::spawn_blocking(move || get().output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    for i in 0..files {
        assert_eq!(std::fs::read(out.join(format!("t{i}"))).unwrap(), tiny(i));
    }
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        files,
        "no working files left"
    );
}
