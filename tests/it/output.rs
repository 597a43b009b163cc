//! What people and scripts see: JSON events, plain lines, bars in a terminal (issue #6).

use crate::support::server::TestServer;
use crate::support::{haul, json_events, run, stderr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_events_follow_the_schema_for_success_and_failure() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "--json", "-q", "-d"])
        .arg(dir.path())
        .arg(server.file_url(2_000_000, "ok.bin", ""))
        .arg(server.url("/missing"));
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(1));
    let events = json_events(&output.stdout);
    assert!(
        events.iter().all(|e| e["v"] == 1),
        "every event is versioned"
    );
    let kinds = |id: u64| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["id"] == id)
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect()
    };
    let ok = kinds(0);
    assert_eq!(ok.first().map(String::as_str), Some("queued"));
    assert_eq!(ok.get(1).map(String::as_str), Some("started"));
    assert!(ok.contains(&"progress".to_owned()));
    assert_eq!(ok.last().map(String::as_str), Some("finished"));
    assert_eq!(kinds(1), vec!["queued", "failed"]);
    let finished = events.iter().find(|e| e["event"] == "finished").unwrap();
    assert_eq!(finished["bytes"], 2_000_000);
    assert!(finished["path"].as_str().unwrap().ends_with("ok.bin"));
    assert!(finished["duration_ms"].is_u64());
    let failed = events.iter().find(|e| e["event"] == "failed").unwrap();
    assert_eq!(failed["kind"], "http_status");
    assert!(failed["message"].as_str().unwrap().contains("404"));
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["ok"], 1);
    assert_eq!(summary["failed"], 1);
    assert_eq!(summary["exit_code"], 1);
}

/// The CLI takes no event per chunk: it reads each download's byte count at its tick. A
/// download that lasts about a second reports how far it is while it runs, not only at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_progress_comes_while_a_download_runs() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 1_500_000;
    let mut command = haul();
    command
        .args(["get", "--json", "-q", "--limit-rate", "1500k", "-d"])
        .arg(dir.path())
        .arg(server.file_url(size, "slow.bin", ""));
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let events = json_events(&output.stdout);
    let midway: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "progress")
        .map(|e| e["bytes_done"].as_u64().unwrap())
        .filter(|&bytes| bytes > 0 && bytes < size)
        .collect();
    assert!(
        !midway.is_empty(),
        "progress while running, not only at the end: {events:?}"
    );
    assert!(midway.windows(2).all(|w| w[0] <= w[1]), "{midway:?}");
    let last = events.iter().rfind(|e| e["event"] == "progress").unwrap();
    assert_eq!(
        last["bytes_done"], size,
        "the last figure is the whole file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_reports_retries_and_digests() {
    use sha2::{Digest, Sha256};
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = crate::support::server::content("r.bin", 1, 1_000_000);
    let checksum = format!("sha-256={}", hex::encode(Sha256::digest(&body)));
    let mut command = haul();
    command
        .args(["get", "--json", "-q", "--checksum", &checksum, "-d"])
        .arg(dir.path())
        .arg(server.file_url(1_000_000, "r.bin", "status=503&retry_after=0&fault_times=1"));
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let events = json_events(&output.stdout);
    let retry = events.iter().find(|e| e["event"] == "retry").unwrap();
    assert_eq!(retry["attempt"], 2);
    assert!(retry["reason"].as_str().unwrap().contains("503"));
    let finished = events.iter().find(|e| e["event"] == "finished").unwrap();
    assert_eq!(finished["digest"], checksum.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_output_has_no_escape_codes_and_a_summary_with_reasons() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "--progress", "auto", "-d"])
        .arg(dir.path())
        .arg(server.file_url(100, "a", ""))
        .arg(server.url("/forbidden?status=403"));
    let output = run(command).await;
    let text = stderr(&output);
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains("✓ a"), "{text}");
    assert!(
        text.contains("1 ok, 0 skipped (already complete), 1 failed"),
        "{text}"
    );
    assert!(text.contains("✗ forbidden  error: "), "{text}");
    assert_eq!(
        text.matches("answered HTTP 403").count(),
        1,
        "the failure said once: {text}"
    );
    assert!(output.stdout.is_empty(), "stdout is for --json only");
}

/// Runs haul in a pseudo-terminal (util-linux `script`) and checks that bars were drawn and
/// cleared, and that the finished-file lines and the summary remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_are_drawn_in_a_terminal_and_finish_cleanly() {
    if which("script").is_none() {
        eprintln!("SKIPPED: util-linux `script` is not installed; no pseudo-terminal test");
        assert!(std::env::var("CI").is_err(), "CI must have `script`");
        return;
    }
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let haul_path = env!("CARGO_BIN_EXE_haul");
    let shell = format!(
        "COLUMNS=100 LINES=30 {haul_path} get -d {} {} {}",
        dir.path().display(),
        server.file_url(8 << 20, "slow.bin", "rate=8388608"),
        server.file_url(1000, "quick.bin", "")
    );
    let mut command = std::process::Command::new("script");
    command.args(["-qec", &shell, "/dev/null"]);
    let output = run(command).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(screen.contains('\x1b'), "a terminal gets escape codes");
    assert!(
        screen.contains("files 0/2") || screen.contains("files 1/2"),
        "{screen}"
    );
    assert!(screen.contains("slow.bin"), "{screen}");
    assert!(
        screen.contains("✓ quick.bin") && screen.contains("✓ slow.bin"),
        "{screen}"
    );
    assert!(screen.contains("2 ok, 0 skipped"), "{screen}");
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// More active files than the terminal has rows: the rest are summed in one line, and nothing
/// breaks when bars come and go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_beyond_the_terminal_height_are_summed_in_one_line() {
    if which("script").is_none() {
        eprintln!("SKIPPED: util-linux `script` is not installed; no pseudo-terminal test");
        assert!(std::env::var("CI").is_err(), "CI must have `script`");
        return;
    }
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = (0..6)
        .map(|i| server.file_url(2 << 20, &format!("f{i}.bin"), "rate=4194304"))
        .collect();
    let shell = format!(
        "stty rows 7 cols 120; {} get -j 6 -d {} {}",
        env!("CARGO_BIN_EXE_haul"),
        dir.path().display(),
        urls.join(" ")
    );
    let mut command = std::process::Command::new("script");
    command.args(["-qec", &shell, "/dev/null"]);
    let output = run(command).await;
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{screen}");
    assert!(screen.contains("more downloading"), "{screen}");
    assert!(screen.contains("6 ok, 0 skipped"), "{screen}");
}

/// What a person sees at the end of a run in a real terminal (tmux): the finished lines and the
/// summary, and no leftover frames of bars.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_screen_keeps_results_and_no_leftover_bars() {
    if which("tmux").is_none() {
        eprintln!("SKIPPED: tmux is not installed; the screen test did not run");
        assert!(
            std::env::var("CI").is_err(),
            "CI must have tmux (.ci/run installs it)"
        );
        return;
    }
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("haul-test-{}", std::process::id());
    let shell = format!(
        "{} get -j 3 -d {} {} {} {}; echo EXIT=$?; sleep 30",
        env!("CARGO_BIN_EXE_haul"),
        dir.path().display(),
        server.file_url(6 << 20, "big.bin", "rate=12582912"),
        server.file_url(1000, "small.bin", ""),
        server.url("/nope")
    );
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .unwrap()
    };
    let started = tmux(&["new-session", "-d", "-x", "120", "-y", "20", &shell]);
    assert!(started.status.success(), "{started:?}");
    let mut screen = String::new();
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        screen = String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
        if screen.contains("EXIT=") {
            break;
        }
    }
    tmux(&["kill-server"]);
    assert!(screen.contains("EXIT=1"), "{screen}");
    assert!(
        screen.contains("✓ big.bin") && screen.contains("✓ small.bin"),
        "{screen}"
    );
    assert!(screen.contains("✗ nope"), "{screen}");
    assert!(
        screen.contains("2 ok, 0 skipped (already complete), 1 failed"),
        "{screen}"
    );
    assert!(
        !screen.contains('░') && !screen.contains('█'),
        "no bar is left on the screen:\n{screen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_dash_streams_one_download_to_stdout_verified() {
    use sha2::{Digest, Sha256};
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let body = crate::support::server::content("o.bin", 1, 3_000_000);
    let url = server.file_url(3_000_000, "o.bin", "drop_after=1000000&fault_times=1");
    let checksum = format!("sha-256={}", hex::encode(Sha256::digest(&body)));
    let mut command = haul();
    command.current_dir(dir.path()).args([
        "get",
        "--retries",
        "2",
        "--checksum",
        &checksum,
        "-o",
        "-",
        &url,
    ]);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        output.stdout == body,
        "stdout carries the exact bytes, resumed after a drop"
    );
    assert!(
        crate::support::listing(dir.path()).is_empty(),
        "no file is written"
    );

    let mut wrong = haul();
    wrong.args([
        "get",
        "--checksum",
        &format!("sha-256={}", "0".repeat(64)),
        "-o",
        "-",
    ]);
    wrong.arg(server.file_url(10, "w", ""));
    let output = run(wrong).await;
    assert_eq!(
        output.status.code(),
        Some(3),
        "a mismatch is still reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_completions_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let mut command = haul();
        command.args(["completions", shell]);
        let output = run(command).await;
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(
            script.contains("haul") && script.contains("sync"),
            "{shell}"
        );
    }
}

/// `NO_COLOR` turns colours off; the bars still move with cursor codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_color_is_honoured_in_a_terminal() {
    if which("script").is_none() {
        eprintln!("SKIPPED: util-linux `script` is not installed; no pseudo-terminal test");
        assert!(std::env::var("CI").is_err(), "CI must have `script`");
        return;
    }
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let shell = format!(
        "NO_COLOR=1 {} get -d {} {}",
        env!("CARGO_BIN_EXE_haul"),
        dir.path().display(),
        server.file_url(4 << 20, "c.bin", "rate=8388608")
    );
    let mut command = std::process::Command::new("script");
    command.args(["-qec", &shell, "/dev/null"]);
    let output = run(command).await;
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{screen}");
    assert!(screen.contains("c.bin"), "{screen}");
    for colour in ["\x1b[32m", "\x1b[36m", "\x1b[34m"] {
        assert!(
            !screen.contains(colour),
            "no colour with NO_COLOR: {screen:?}"
        );
    }
}
