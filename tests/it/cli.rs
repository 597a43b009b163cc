//! The real binary: arguments, exit codes, messages, and crash/interrupt resume (issues #2, #3).

use std::process::Stdio;
use std::time::Duration;

use crate::support::server::{TestServer, content};
use crate::support::{haul, listing, run, stderr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_downloads_a_url_into_the_directory() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path())
        .arg(server.file_url(1_000_000, "one.bin", ""));
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(dir.path().join("one.bin")).unwrap(),
        content("one.bin", 1, 1_000_000)
    );
    let text = stderr(&output);
    assert!(
        !text.contains('\x1b'),
        "no escape codes off a terminal: {text:?}"
    );
    assert!(text.contains("1 ok, 0 skipped"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_prints_nothing_on_success() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "-q", "-o", "named.bin", "-d"])
        .arg(dir.path())
        .arg(server.file_url(1000, "x", ""));
    let output = run(command).await;
    assert!(output.status.success());
    assert!(output.stderr.is_empty() && output.stdout.is_empty());
    assert_eq!(listing(dir.path()), vec!["named.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_among_good_urls_exits_1_and_the_rest_succeed() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path())
        .arg(server.file_url(10, "a", ""))
        .arg(server.url("/gone"))
        .arg(server.file_url(20, "b", ""));
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(listing(dir.path()), vec!["a", "b"]);
    let text = stderr(&output);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains("HTTP 404"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_exits_3_and_leaves_no_file() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args([
            "get",
            "--checksum",
            &format!("sha-256={}", "0".repeat(64)),
            "-d",
        ])
        .arg(dir.path())
        .arg(server.file_url(5000, "bad.bin", ""));
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("checksum mismatch"),
        "{}",
        stderr(&output)
    );
    assert!(listing(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_input_file_exits_2_naming_every_bad_line_and_starts_nothing() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    std::fs::write(
        &list,
        format!(
            "# mirror list\n{}\nftp://old.example/file\n\n{}\n  colour=blue\n",
            server.file_url(10, "ok", ""),
            server.file_url(10, "ok2", "")
        ),
    )
    .unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path())
        .arg("-i")
        .arg(&list);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("line 3:"), "{text}");
    assert!(text.contains("line 6:"), "{text}");
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_can_come_from_standard_input() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = format!(
        "{}\n{}\n  out=renamed\n",
        server.file_url(10, "s1", ""),
        server.file_url(10, "s2", "")
    );
    let mut command = haul();
    command
        .args(["get", "-i", "-", "-d"])
        .arg(dir.path())
        .stdin(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(list.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(listing(dir.path()), vec!["renamed", "s1"]);
}

/// URLs piped in slowly (`tail -f log | haul get -i -`) start as they come, not when a batch of
/// them has gathered or the input ends: the input reaches the downloads in chunks, and a chunk
/// goes whenever nothing more is waiting to be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_piped_in_slowly_start_before_the_input_ends() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "-i", "-", "-d"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    // An entry is complete when the next URL line comes (its options could follow it).
    let first_two = format!(
        "{}\n{}\n",
        server.file_url(10, "p1", ""),
        server.file_url(10, "p2", "")
    );
    std::io::Write::write_all(&mut input, first_two.as_bytes()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dir.path().join("p1").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first URL did not start while the input stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(input);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(listing(dir.path()), vec!["p1", "p2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_outputs_exit_2_before_anything_starts() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path())
        .arg(server.file_url(10, "dup", ""))
        .arg(server.file_url(20, "dup", "x=1"));
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("more than one download"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.requests(), 0);
}

/// In an input file, two URLs to one output are found by the first pass (which keeps 16 bytes
/// per line, not the lines): both lines are named, with the output, and nothing starts. The
/// same URL twice is no conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_outputs_in_an_input_file_are_named_by_line() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let lines = [
        server.file_url(10, "a", ""),
        server.file_url(10, "dup", ""),
        server.file_url(10, "a", ""),
        server.file_url(10, "b", ""),
        server.file_url(20, "dup", "x=1"),
    ];
    std::fs::write(&list, lines.join("\n")).unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path().join("out"))
        .arg("-i")
        .arg(&list);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("1 bad line(s)"), "{message}");
    assert!(
        message.contains("dup` is the output of more than one download (line 2 and line 5"),
        "{message}"
    );
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_urls_never_leave_the_directory() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("inside");
    std::fs::create_dir(&dir).unwrap();
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(&dir)
        .arg(server.url("/files/10/..%2F..%2Fescaped"))
        .arg(server.url("/files/10/%2Fetc%2Fpasswd"))
        .arg(server.url("/files/10/a%5Cb%00c"));
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(listing(root.path()), vec!["inside"]);
    assert_eq!(listing(&dir), vec!["_.._escaped", "_etc_passwd", "a_b_c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    for args in [
        vec!["get"],
        vec!["get", "--jobs", "0", "http://h/f"],
        vec!["get", "-o", "x", "http://h/a", "http://h/b"],
        vec!["get", "--checksum", "md5=00", "http://h/a"],
        vec!["get", "not-a-url"],
        vec!["frobnicate"],
    ] {
        let mut command = haul();
        command.args(&args);
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains("error"), "{args:?}");
    }
}

/// Kills haul with SIGKILL at random moments of a throttled download; every rerun resumes,
/// the state never claims bytes the `.part` lacks, and the last run ends with the exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_then_rerun_gives_the_exact_file() {
    const SIZE: u64 = 32 << 20;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(SIZE, "k.bin", "rate=8388608");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(100 + seed % 400);
        let mut command = haul();
        command
            .args(["get", "-q", "--checkpoint-interval", "100ms", "-d"])
            .arg(dir.path())
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        tokio::time::sleep(delay).await;
        child.kill().unwrap();
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        if dir.path().join("k.bin").exists() {
            break;
        }
        let state_path = dir.path().join("k.bin.part.haul");
        if let Ok(text) = std::fs::read_to_string(&state_path) {
            let state: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("round {round}: state is always whole JSON: {e}"));
            let part = std::fs::read(dir.path().join("k.bin.part")).unwrap_or_default();
            let expected = content("k.bin", 1, SIZE);
            for range in state["done"].as_array().unwrap() {
                let (start, end) = (
                    range[0].as_u64().unwrap() as usize,
                    range[1].as_u64().unwrap() as usize,
                );
                assert!(
                    end <= part.len(),
                    "round {round}: state claims bytes beyond the part"
                );
                assert!(
                    part[start..end] == expected[start..end],
                    "round {round}: claimed bytes {start}..{end} are not the file's"
                );
            }
        }
    }
    let mut command = haul();
    command.args(["get", "-q", "-d"]).arg(dir.path()).arg(&url);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        std::fs::read(dir.path().join("k.bin")).unwrap() == content("k.bin", 1, SIZE),
        "the final file has the exact bytes"
    );
    assert_eq!(listing(dir.path()), vec!["k.bin"]);
    assert!(
        server.log().iter().any(|r| r.status == 206),
        "at least one run resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_saves_state_exits_130_and_a_rerun_resumes() {
    const SIZE: u64 = 8 << 20;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = server.file_url(SIZE, "i.bin", "rate=4194304");
    let mut command = haul();
    command
        .args(["get", "-d"])
        .arg(dir.path())
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("i.bin") && text.contains("resume"), "{text}");
    let part_len = crate::support::resumable_prefix(&dir.path().join("i.bin.part.haul"));
    let _ = std::fs::metadata(dir.path().join("i.bin.part"))
        .unwrap()
        .len();
    assert!(part_len > 0);

    let mut command = haul();
    command.args(["get", "-q", "-d"]).arg(dir.path()).arg(&url);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(dir.path().join("i.bin")).unwrap(),
        content("i.bin", 1, SIZE)
    );
    let resumed = server.log().last().unwrap().range.clone().unwrap();
    assert_eq!(
        resumed,
        format!("bytes={part_len}-"),
        "resumed exactly where it stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_file_options_place_files_and_stay_inside_the_directory() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("d");
    let elsewhere = root.path().join("abs");
    let list = root.path().join("urls.txt");
    std::fs::write(
        &list,
        format!(
            "{}\n  dir=sub\n  out=renamed.bin\n{}\n  dir={}\n",
            server.file_url(10, "a", ""),
            server.file_url(20, "b", ""),
            elsewhere.display()
        ),
    )
    .unwrap();
    let mut command = haul();
    command
        .args(["get", "-q", "-d"])
        .arg(&dir)
        .arg("-i")
        .arg(&list);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(dir.join("sub/renamed.bin")).unwrap() == content("a", 1, 10));
    assert!(std::fs::read(elsewhere.join("b")).unwrap() == content("b", 1, 20));

    std::fs::write(
        &list,
        format!("{}\n  out=../escape\n", server.file_url(10, "c", "")),
    )
    .unwrap();
    let mut command = haul();
    command
        .args(["get", "-q", "-d"])
        .arg(&dir)
        .arg("-i")
        .arg(&list);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(!root.path().join("escape").exists());
}
