//! The CLI a person keeps, round 3 (issue #33): what surprised a new user in the first ten
//! minutes, each fixed and run here with the real binary.

use std::time::{Duration, Instant};

use crate::support::server::{TestServer, content};
use crate::support::{SmallDisk, haul, listing, run, stderr};

/// Surprise 1: a directory listing given to `sync` without `-r` is recognised as one, with
/// one line that says what to do (not one "is not a URL" per line of HTML).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_of_a_listing_without_recursive_says_to_add_it() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    server.put_tree("/pub/", &[("a.txt", b"a"), ("b.txt", b"b")]);
    let mut command = haul();
    command
        .arg("sync")
        .arg(server.url("/pub/"))
        .arg(dir.path().join("mirror"));
    let output = run(command).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(
        said.contains("directory listing") && said.contains("--recursive"),
        "{said}"
    );
    assert!(!said.contains("is not a URL"), "{said}");
    assert_eq!(said.lines().count(), 1, "one line: {said}");
}

/// Surprise 2: a cookie a login redirect sets is kept for the rest of the run by default,
/// as wget does (`--no-cookies` turns that off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_a_server_sets_are_kept_for_the_run() {
    let server = TestServer::start().await;
    for (flag, expected) in [(None, 0), (Some("--no-cookies"), 1)] {
        let dir = tempfile::tempdir().unwrap();
        let login = server.url(&format!(
            "/login?to={}",
            percent_encoding::utf8_percent_encode(
                &server.file_url(10, "welcome.txt", ""),
                percent_encoding::NON_ALPHANUMERIC
            )
        ));
        let mut command = haul();
        command
            .args(["get", "-j", "1", "--retries", "0", "-d"])
            .arg(dir.path());
        command
            .args(flag)
            .arg(login)
            .arg(server.url("/members/report.pdf"));
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(expected),
            "{flag:?}: {}",
            stderr(&output)
        );
        if expected == 0 {
            assert!(
                std::fs::read(dir.path().join("report.pdf")).unwrap()
                    == content("report.pdf", 1, 1000)
            );
        }
    }
}

/// Surprise 4: nothing listens on the port: two quick retries, each said as it happens, then
/// one clear failure, within seconds (not 20 s of silence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_fails_within_seconds_and_says_each_retry() {
    let port = crate::support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path())
        .arg(format!("http://127.0.0.1:{port}/file.iso"));
    let started = Instant::now();
    let output = run(command).await;
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        said.contains("attempt 2") && said.contains("attempt 3"),
        "{said}"
    );
    assert!(!said.contains("attempt 4"), "{said}");
    assert_eq!(
        said.matches("Connection refused").count(),
        3,
        "two retries and the failure, each said once: {said}"
    );
}

/// Surprise 6: a default configuration file that cannot be read ($HOME not a directory, as
/// under `sudo -u` or some CI runners) is no error; a file named with --config still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_default_configuration_is_no_error() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bare = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_haul"));
        command
            .env("HOME", "/dev/null")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("HAUL_CONFIG");
        command
    };
    let mut command = bare();
    command
        .args(["get", "-q", "-d"])
        .arg(dir.path())
        .arg(server.file_url(10, "ok.txt", ""));
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let mut named = bare();
    named
        .args(["get", "--config", "/dev/null/haul.conf", "-d"])
        .arg(dir.path())
        .arg(server.file_url(10, "x.txt", ""));
    assert_eq!(run(named).await.status.code(), Some(2));
}

/// Surprise 7: a directory that cannot be written is one clear error before any request, not
/// a `Permission denied` per file after asking the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_directory_fails_once_before_any_request() {
    let Some(disk) = SmallDisk::mount_read_only() else {
        return;
    };
    let server = TestServer::start().await;
    for subcommand in ["get", "sync"] {
        let mut command = haul();
        command.arg(subcommand);
        if subcommand == "get" {
            command.arg("-d").arg(disk.dir.path().join("new"));
            for n in 0..10 {
                command.arg(server.file_url(10, &format!("f{n}"), ""));
            }
        } else {
            let manifest = tempfile::NamedTempFile::new().unwrap();
            let urls: Vec<String> = (0..10)
                .map(|n| server.file_url(10, &format!("s{n}"), ""))
                .collect();
            std::fs::write(manifest.path(), urls.join("\n")).unwrap();
            command.arg(manifest.path()).arg(disk.dir.path());
            // The manifest lives until the command has run.
            std::mem::forget(manifest);
        }
        let output = run(command).await;
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{subcommand}: {said}");
        assert_eq!(said.lines().count(), 1, "{subcommand}: one line: {said}");
        assert!(said.contains("cannot write into"), "{said}");
    }
    assert_eq!(server.requests(), 0, "nothing was asked of the server");
}

/// Surprise 8: a failure is said once; a run that ends quickly starts with no `progress:`
/// line; `sync` prints one summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_said_once_and_each_summary_once() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "--retries", "0", "-d"])
        .arg(dir.path())
        .arg(server.file_url(6, "tiny.txt", ""))
        .arg(server.file_url(6, "gone.txt", "status=404"));
    let output = run(command).await;
    let said = stderr(&output);
    assert_eq!(said.matches("404 Not Found").count(), 1, "{said}");
    assert!(!said.contains("progress:"), "{said}");
    let manifest = dir.path().join("manifest.txt");
    std::fs::write(&manifest, server.file_url(6, "m.txt", "")).unwrap();
    let mut sync = haul();
    sync.arg("sync")
        .arg(&manifest)
        .arg(dir.path().join("mirror"));
    let output = run(sync).await;
    let said = stderr(&output);
    assert!(output.status.success(), "{said}");
    assert_eq!(
        said.lines().filter(|l| l.starts_with("sync: ")).count(),
        1,
        "{said}"
    );
    assert!(!said.contains(" ok, "), "one summary, the sync's: {said}");
}

/// Surprise 8 (words): a mistyped scheme, an unknown host and refused credentials each get
/// words that say what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_unknown_hosts_and_refused_credentials_say_what_is_wrong() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut typo = haul();
    typo.args(["get", "ht!tp://example.org/f"]);
    let output = run(typo).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("`ht!tp` is not a scheme"),
        "{}",
        stderr(&output)
    );

    let mut unknown = haul();
    unknown
        .args(["get", "--retries", "0", "-d"])
        .arg(dir.path())
        .arg("http://no-such-host.invalid/f");
    let said = stderr(&run(unknown).await);
    assert!(
        said.contains("hint: the host name does not resolve"),
        "{said}"
    );

    let mut refused = haul();
    refused
        .args(["get", "--retries", "0", "--user", "me:wrong", "-d"])
        .arg(dir.path())
        .arg(server.file_url(10, "private", "status=401"));
    let said = stderr(&run(refused).await);
    assert!(said.contains("refused the credentials given"), "{said}");
}

/// Surprise 9: wget's and curl's habits: `-O`, `-P`, `-c`, and `--spider` (= `get --dry-run`),
/// which checks every URL and downloads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wget_and_curl_habits_work() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut habits = haul();
    habits
        .args(["get", "-c", "-P"])
        .arg(dir.path())
        .args(["-O", "named.bin"])
        .arg(server.file_url(100, "x", ""));
    let output = run(habits).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(listing(dir.path()), vec!["named.bin"]);

    let empty = tempfile::tempdir().unwrap();
    for flag in ["--spider", "--dry-run"] {
        let mut spider = haul();
        spider
            .args(["get", flag, "-d"])
            .arg(empty.path())
            .arg(server.file_url(1234, "there.bin", ""))
            .arg(server.file_url(10, "missing.bin", "status=404"));
        let output = run(spider).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(
            output.status.code(),
            Some(1),
            "{flag}: {stdout}{}",
            stderr(&output)
        );
        assert!(
            stdout.contains("ok ") && stdout.contains("1234 bytes"),
            "{stdout}"
        );
        assert!(
            stdout.contains("fail ") && stdout.contains("404"),
            "{stdout}"
        );
        assert!(listing(empty.path()).is_empty(), "{flag} downloads nothing");
    }
}

/// Surprise 10: an empty file left under the final name is not "already complete": its
/// length is asked for, and it is fetched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_under_the_final_name_is_fetched_again() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.bin"), b"").unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path())
        .arg(server.file_url(5000, "data.bin", ""));
    let output = run(command).await;
    let said = stderr(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("downloading it again"), "{said}");
    assert!(std::fs::read(dir.path().join("data.bin")).unwrap() == content("data.bin", 1, 5000));
}

/// Surprise 5: `--checksums` says which downloads its file does not list (they are not
/// verified), and `--checksums-strict` fails them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_name_unlisted_files_and_strict_fails_them() {
    use sha2::Digest as _;
    let server = TestServer::start().await;
    let sums = tempfile::NamedTempFile::new().unwrap();
    let listed = hex::encode(sha2::Sha256::digest(content("listed.bin", 1, 100)));
    std::fs::write(sums.path(), format!("{listed}  listed.bin\n")).unwrap();
    for (strict, code) in [(false, 0), (true, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = haul();
        command
            .args(["get", "--checksums"])
            .arg(sums.path())
            .args(strict.then_some("--checksums-strict"))
            .arg("-d")
            .arg(dir.path())
            .arg(server.file_url(100, "listed.bin", ""))
            .arg(server.file_url(100, "stray.bin", ""));
        let output = run(command).await;
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{said}");
        assert!(said.contains("stray.bin"), "{said}");
        assert_eq!(dir.path().join("stray.bin").exists(), !strict, "{said}");
        assert!(dir.path().join("listed.bin").exists());
    }
}

/// `--save-failed FILE`: the downloads that failed are written as an input file, and
/// `haul get -i FILE` reruns exactly them, to the same places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_failed_writes_an_input_file_that_reruns_the_failures() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let retry = dir.path().join("retry.txt");
    let flaky = server.file_url(300, "flaky.bin", "status=503&fault_times=1");
    let mut first = haul();
    first
        .args(["get", "--retries", "0", "--save-failed"])
        .arg(&retry)
        .arg("-d")
        .arg(dir.path().join("out"))
        .arg(server.file_url(100, "good.bin", ""))
        .arg(&flaky)
        .arg(server.file_url(10, "gone.bin", "status=404"));
    let output = run(first).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let saved = std::fs::read_to_string(&retry).unwrap();
    let entries = haul::input::parse_input(&saved).unwrap();
    assert_eq!(entries.len(), 2, "{saved}");
    assert!(
        saved.contains("flaky.bin") && saved.contains("gone.bin"),
        "{saved}"
    );
    assert!(!saved.contains("good.bin"), "{saved}");
    assert!(
        stderr(&output).contains("retries them"),
        "{}",
        stderr(&output)
    );

    // The rerun, from elsewhere, puts files where the first run would have.
    let mut rerun = haul();
    rerun
        .current_dir(std::env::temp_dir())
        .args(["get", "--retries", "0", "--save-failed"])
        .arg(&retry)
        .arg("-i")
        .arg(&retry);
    let output = run(rerun).await;
    assert_eq!(output.status.code(), Some(1), "gone.bin is still gone");
    assert!(
        std::fs::read(dir.path().join("out/flaky.bin")).unwrap() == content("flaky.bin", 1, 300)
    );
    let left = std::fs::read_to_string(&retry).unwrap();
    assert_eq!(haul::input::parse_input(&left).unwrap().len(), 1, "{left}");
    assert!(left.contains("gone.bin"), "{left}");
}

/// `--on-finished` / `--on-failed`: a command per file, with the path, URL and status in its
/// environment; a hook that fails is reported and changes nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_per_file_and_their_failures_are_never_fatal() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hooks.log");
    let mut command = haul();
    command
        .args(["get", "--retries", "0", "--on-finished"])
        .arg(format!(
            "echo \"$HAUL_STATUS $HAUL_BYTES $HAUL_PATH\" >> {}",
            log.display()
        ))
        .arg("--on-failed")
        .arg(format!(
            "echo \"$HAUL_STATUS $HAUL_URL\" >> {}; exit 7",
            log.display()
        ))
        .arg("-d")
        .arg(dir.path())
        .arg(server.file_url(100, "a.bin", ""))
        .arg(server.file_url(200, "b.bin", ""))
        .arg(server.file_url(10, "c.bin", "status=404"));
    let output = run(command).await;
    let said = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the 404, not the hook: {said}"
    );
    let mut lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("failed http://") && lines[0].contains("c.bin"),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!("finished 100 {}", dir.path().join("a.bin").display())
    );
    assert_eq!(
        lines[2],
        format!("finished 200 {}", dir.path().join("b.bin").display())
    );
    assert!(said.contains("warning: --on-failed for"), "{said}");
}

/// A bandwidth schedule (`--limit-rate "HH:MM:SS,RATE HH:MM:SS,off"`) switches while the run
/// goes on: 32 KiB/s at first, no limit three seconds later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bandwidth_schedule_switches_while_the_batch_runs() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = std::process::Command::new("date")
        .arg("+%H:%M:%S")
        .output()
        .unwrap();
    let now: Vec<u32> = String::from_utf8_lossy(&local.stdout)
        .trim()
        .split(':')
        .map(|p| p.parse().unwrap())
        .collect();
    let now = now[0] * 3600 + now[1] * 60 + now[2];
    let clock = |seconds: u32| {
        let seconds = seconds % 86_400;
        format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    };
    let schedule = format!("{},32K {},off", clock(now + 86_399), clock(now + 3));
    let mut command = haul();
    command
        .args(["get", "-x", "1", "--limit-rate", &schedule, "-d"])
        .arg(dir.path())
        .arg(server.file_url(4 << 20, "big.bin", ""));
    let started = Instant::now();
    let output = run(command).await;
    let took = started.elapsed();
    let said = stderr(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("the limit is now off"), "{said}");
    // 4 MiB at 32 KiB/s would take over two minutes; the limit lifted after about 3 s.
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(30),
        "{took:?}"
    );
    assert!(std::fs::read(dir.path().join("big.bin")).unwrap() == content("big.bin", 1, 4 << 20));
}

/// `haul check`: a directory re-hashed against a checksum file, or against what the last sync
/// remembered; missing, extra and corrupt files reported, nothing downloaded, exit 3 for
/// corruption, 1 for a missing or extra file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_missing_extra_and_corrupt_files_without_downloading() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("isos");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    let mut sums = String::new();
    for name in ["a.iso", "sub/b.iso", "c.iso"] {
        let body = content(name, 1, 3000);
        let digest = hex::encode(sha2::Sha256::digest(&body));
        sums = format!(
            "{sums}{digest}  {name}
"
        );
        if name != "c.iso" {
            std::fs::write(files.join(name), &body).unwrap();
        }
    }
    std::fs::write(files.join("SHA256SUMS"), &sums).unwrap();
    let check = |args: &[&str]| {
        let mut command = haul();
        command.arg("check").args(args);
        command
    };
    let sums_path = files.join("SHA256SUMS");
    let dir_arg = files.to_str().unwrap();
    let output = run(check(&[
        "--checksums",
        sums_path.to_str().unwrap(),
        dir_arg,
    ]))
    .await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "c.iso is missing: {}",
        stderr(&output)
    );
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        said.trim(),
        "missing    c.iso",
        "the sums file is not extra: {said}"
    );

    // Bit rot: one byte of b.iso changes, its size does not; and a stray file appears.
    let mut rotten = std::fs::read(files.join("sub/b.iso")).unwrap();
    rotten[1234] ^= 0x01;
    std::fs::write(files.join("sub/b.iso"), &rotten).unwrap();
    std::fs::write(files.join("stray.txt"), b"?").unwrap();
    let output = run(check(&[
        "--checksums",
        sums_path.to_str().unwrap(),
        dir_arg,
    ]))
    .await;
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(said.contains("corrupt    sub/b.iso: sha-256 is "), "{said}");
    assert!(said.contains("extra      stray.txt"), "{said}");
    assert!(
        stderr(&output).contains("1 ok, 0 unverified (size only), 1 corrupt, 1 missing, 1 extra")
    );
}

/// `haul check DIR` after a sync that remembered digests: fine, then bit rot found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_uses_what_the_last_sync_remembered() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.txt");
    let urls: Vec<String> = (0..3)
        .map(|n| server.file_url(2000, &format!("f{n}.bin"), ""))
        .collect();
    std::fs::write(&manifest, urls.join("\n")).unwrap();
    let mirror = dir.path().join("mirror");
    let mut sync = haul();
    sync.args(["sync", "-q", "--verify-local"])
        .arg(&manifest)
        .arg(&mirror);
    assert!(run(sync).await.status.success());
    let requests = server.requests();
    let check = || {
        let mut command = haul();
        command.args(["check", "--json"]).arg(&mirror);
        command
    };
    let output = run(check()).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let events = crate::support::json_events(&output.stdout);
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "check_summary");
    assert_eq!(summary["ok"], 3, "{summary}");
    let mut rotten = std::fs::read(mirror.join("f1.bin")).unwrap();
    rotten[0] ^= 0xff;
    std::fs::write(mirror.join("f1.bin"), &rotten).unwrap();
    let output = run(check()).await;
    assert_eq!(output.status.code(), Some(3));
    let events = crate::support::json_events(&output.stdout);
    assert!(
        events
            .iter()
            .any(|e| e["path"] == "f1.bin" && e["verdict"] == "corrupt"),
        "{events:?}"
    );
    assert_eq!(server.requests(), requests, "a check downloads nothing");
}

/// Hooks run at most 4 at once, however many files end together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_four_hooks_run_at_once() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let running = dir.path().join("running");
    std::fs::create_dir(&running).unwrap();
    let seen = dir.path().join("seen.log");
    // Each hook marks itself running, notes how many are, and stays a moment.
    let hook = format!(
        "touch {r}/$$; ls {r} | wc -l >> {s}; sleep 0.3; rm {r}/$$",
        r = running.display(),
        s = seen.display()
    );
    let mut command = haul();
    command
        .args(["get", "-q", "-j", "12", "--on-finished", &hook, "-d"])
        .arg(dir.path().join("out"));
    for n in 0..12 {
        command.arg(server.file_url(100, &format!("f{n}"), ""));
    }
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let counts: Vec<usize> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 12, "one hook per file");
    assert!(counts.iter().all(|n| *n <= 4), "{counts:?}");
    assert!(
        counts.iter().any(|n| *n > 1),
        "they did overlap: {counts:?}"
    );
}
