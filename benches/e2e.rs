//! End-to-end benchmark: the real `haul get` binary downloads large bodies from the in-process
//! test server on loopback. Reports throughput, CPU time and peak RSS (VmHWM of the child).
//!
//! Run: `cargo bench --bench e2e` (sizes in MiB can be set with `HAUL_BENCH_SIZES=1024,4096`
//! the number of runs with `HAUL_BENCH_RUNS=3`, and where files are written with
//! `HAUL_BENCH_DIR=/dev/shm`; the default, `.`, measures the real disk). With
//! `HAUL_BENCH_BASELINE=/path/to/an/older/haul`, every scenario also runs that binary, run for
//! run in turn with this one, so a before/after comparison shares the machine's drift.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../tests/it/support/server.rs"]
mod server;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

struct Run {
    seconds: f64,
    cpu_seconds: f64,
    peak_rss_kib: u64,
}

fn main() {
    // `cargo test --all-targets` runs this target without `--bench`: it is built, not run.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("e2e benchmark: skipped (run it with `cargo bench --bench e2e`)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(server::TestServer::start());
    let sizes: Vec<u64> = std::env::var("HAUL_BENCH_SIZES")
        .unwrap_or_else(|_| "1024".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes in MiB"))
        .collect();
    let runs: usize = std::env::var("HAUL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir_in(std::env::var("HAUL_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    println!("| scenario | size | median MB/s | min–max MB/s | CPU s | peak RSS MiB |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for size_mib in sizes {
        let size = size_mib << 20;
        let url = server.file_url(size, "bench.bin", "");
        let digest = expected_digest("bench.bin", size);
        let x1 = || vec!["-x".to_owned(), "1".to_owned()];
        let scenarios: Vec<(&str, Vec<String>)> = vec![
            ("-x 1", x1()),
            (
                "-x 1 --checksum sha-256",
                [x1(), vec!["--checksum".into(), format!("sha-256={digest}")]].concat(),
            ),
            (
                "-x 1, no checkpoints",
                [x1(), vec!["--checkpoint-interval".into(), "1h".into()]].concat(),
            ),
            ("defaults", vec![]),
        ];
        let mut binaries = vec![(String::new(), env!("CARGO_BIN_EXE_haul").to_owned())];
        if let Ok(baseline) = std::env::var("HAUL_BENCH_BASELINE") {
            binaries.push((" (baseline)".to_owned(), baseline));
        }
        let mut cases: Vec<(String, &str, &Vec<String>)> = Vec::new();
        for (label, extra) in &scenarios {
            for (suffix, binary) in &binaries {
                cases.push((format!("{label}{suffix}"), binary.as_str(), extra));
            }
        }
        // One warm-up run, then the scenarios alternate run by run so that drift in the
        // machine's state (page cache, disk writeback) spreads evenly over them.
        download(env!("CARGO_BIN_EXE_haul"), dir.path(), &url, &[], &digest);
        let mut results: Vec<Vec<Run>> = cases.iter().map(|_| Vec::new()).collect();
        for _ in 0..runs {
            for (index, (_, binary, extra)) in cases.iter().enumerate() {
                results[index].push(download(binary, dir.path(), &url, extra, &digest));
            }
        }
        for ((label, _, _), mut runs) in cases.iter().zip(results) {
            runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
            let rate = |run: &Run| size as f64 / run.seconds / 1e6;
            let median = &runs[runs.len() / 2];
            println!(
                "| {label} | {size_mib} MiB | {:.0} | {:.0}–{:.0} | {:.2} | {:.1} |",
                rate(median),
                rate(&runs[runs.len() - 1]),
                rate(&runs[0]),
                median.cpu_seconds,
                runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0
            );
        }
    }
}

fn download(binary: &str, dir: &Path, url: &str, extra: &[String], digest: &str) -> Run {
    let target = dir.join("bench.bin");
    let _ = std::fs::remove_file(&target);
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["get", "-q", "-d"])
        .arg(dir)
        .args(extra)
        .arg(url)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let stat_path = format!("/proc/{}/stat", child.id());
    let (mut peak, mut cpu_ticks) = (0, 0);
    let status = loop {
        if let Some(hwm) = read_hwm(&status_path) {
            peak = peak.max(hwm);
        }
        if let Some(ticks) = read_cpu_ticks(&stat_path) {
            cpu_ticks = ticks;
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "haul failed");
    assert_eq!(
        file_digest(&target),
        digest,
        "a fast wrong download does not count"
    );
    Run {
        seconds,
        cpu_seconds: cpu_ticks as f64 / 100.0,
        peak_rss_kib: peak,
    }
}

fn read_hwm(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn read_cpu_ticks(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let after_name = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// SHA-256 of the server's content for `name`, computed a period at a time (no big buffer).
fn expected_digest(name: &str, size: u64) -> String {
    let period = server::content(name, 1, 65_521);
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let take = left.min(period.len() as u64) as usize;
        hasher.update(&period[..take]);
        left -= take as u64;
    }
    hex::encode(hasher.finalize())
}

fn file_digest(path: &Path) -> String {
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).unwrap();
        if read == 0 {
            return hex::encode(hasher.finalize());
        }
        hasher.update(&buffer[..read]);
    }
}
