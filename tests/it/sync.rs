//! `haul sync` (issue #8): listings and manifests mirrored incrementally and safely.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::server::{TREE, TestServer, content};
use crate::support::{haul, listing, run, stderr};

fn sync_command(source: &str, dir: &Path, extra: &[&str]) -> std::process::Command {
    let mut command = haul();
    command
        .args(["sync", "-q"])
        .args(extra)
        .arg(source)
        .arg(dir);
    command
}

/// Every file of the tree below `dir`, with its expected bytes at version 1.
fn assert_mirrored(dir: &Path, paths: &[&str]) {
    for path in paths {
        let size = TREE.iter().find(|(p, _)| p == path).unwrap().1;
        let got = std::fs::read(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            got == content(path, 1, size),
            "{path} has the server's bytes"
        );
    }
}

fn all_tree_paths() -> Vec<&'static str> {
    TREE.iter().map(|(p, _)| *p).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_transfers_no_body_bytes() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let output = run(sync_command(&server.url("/tree/"), &dir, &["--recursive"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_mirrored(&dir, &all_tree_paths());
    // The server's Last-Modified for version 1 is Sun, 01 Nov 1994 08:49:37 GMT.
    for path in ["a.bin", "big/large.bin"] {
        let modified = std::fs::metadata(dir.join(path))
            .unwrap()
            .modified()
            .unwrap();
        let seconds = modified
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(seconds, 783_679_777, "{path} has the server's time");
    }
    assert!(!root.path().join("outside.bin").exists() && !dir.join("outside.bin").exists());
    assert!(
        !dir.join("x.bin").exists(),
        "links to other hosts are not followed"
    );
    let bytes_after_first = server.body_bytes();

    let mut second = sync_command(&server.url("/tree/"), &dir, &["--recursive", "--json"]);
    second.env_remove("HAUL_NOTHING");
    let output = run(second).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        server.body_bytes(),
        bytes_after_first,
        "nothing was transferred again"
    );
    let summary = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "sync_summary")
        .unwrap();
    assert_eq!(summary["unchanged"], TREE.len());
    assert_eq!(summary["new"], 0);
    assert!(
        server
            .log()
            .iter()
            .rev()
            .take(TREE.len())
            .all(|r| r.status == 304 || r.path.ends_with('/')),
        "the files were revalidated with conditional requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_replaces_the_old_copy_only_once_complete() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let output = run(sync_command(&server.url("/tree/"), &dir, &["--recursive"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    server.set_version("/tree/big/large.bin", 2);

    // An update cut short by kill -9: the old copy must stay whole.
    let mut slow = sync_command(
        &server.url("/tree/"),
        &dir,
        &["--recursive", "--limit-rate", "1M"],
    );
    slow.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = slow.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let big = dir.join("big/large.bin");
    assert!(
        std::fs::read(&big).unwrap() == content("big/large.bin", 1, 4 << 20),
        "a reader never sees a half-written file"
    );
    assert!(
        dir.join("big/large.bin.part").exists(),
        "the update is resumable"
    );

    let output = run(sync_command(&server.url("/tree/"), &dir, &["--recursive"])).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(&big).unwrap() == content("big/large.bin", 2, 4 << 20));
    assert!(!dir.join("big/large.bin.part").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_exactly_the_extraneous_files_and_nothing_when_the_source_fails() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let outside = root.path().join("outside.txt");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("stale.bin"), b"old").unwrap();
    std::fs::write(dir.join("sub/old.bin"), b"old").unwrap();
    std::fs::write(&outside, b"not ours").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("link.bin")).unwrap();

    let broken = run(sync_command(
        &server.url("/tree-broken/"),
        &dir,
        &["--recursive", "--delete"],
    ))
    .await;
    assert_eq!(broken.status.code(), Some(1), "{}", stderr(&broken));
    assert!(
        dir.join("stale.bin").exists() && dir.join("sub/old.bin").exists(),
        "a failed listing deletes nothing"
    );

    let empty_manifest = root.path().join("empty.txt");
    std::fs::write(&empty_manifest, "# nothing here\n").unwrap();
    let empty = run(sync_command(
        empty_manifest.to_str().unwrap(),
        &dir,
        &["--delete"],
    ))
    .await;
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        stderr(&empty).contains("refusing to delete"),
        "{}",
        stderr(&empty)
    );
    assert!(dir.join("stale.bin").exists());

    let output = run(sync_command(
        &server.url("/tree/"),
        &dir,
        &["--recursive", "--delete"],
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!dir.join("stale.bin").exists() && !dir.join("sub/old.bin").exists());
    assert!(
        std::fs::symlink_metadata(dir.join("link.bin")).is_ok(),
        "symlinks are left alone"
    );
    assert_eq!(std::fs::read(&outside).unwrap(), b"not ours");
    assert_mirrored(&dir, &all_tree_paths());

    server.hide("/tree/b.txt");
    let output = run(sync_command(
        &server.url("/tree/"),
        &dir,
        &["--recursive", "--delete"],
    ))
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        !dir.join("b.txt").exists(),
        "a file gone from the source goes"
    );
    assert!(dir.join("a.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_and_exclude_choose_the_files() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let args = [
        "--recursive",
        "--include",
        "*.bin",
        "--exclude",
        "sub/deeper/**",
    ];
    let output = run(sync_command(&server.url("/tree/"), &dir, &args)).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_mirrored(&dir, &["a.bin", "sub/c.bin", "big/large.bin"]);
    assert!(!dir.join("b.txt").exists() && !dir.join("sub/deeper").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_together_cover_every_file_exactly_once() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let mut seen: Vec<String> = Vec::new();
    for k in 0..3 {
        let dir = root.path().join(format!("shard{k}"));
        let shard = format!("{k}/3");
        let output = run(sync_command(
            &server.url("/tree/"),
            &dir,
            &["--recursive", "--shard", &shard],
        ))
        .await;
        assert!(output.status.success(), "{}", stderr(&output));
        for (path, _) in TREE {
            if dir.join(path).exists() {
                seen.push((*path).to_owned());
            }
        }
    }
    seen.sort();
    let mut all: Vec<String> = all_tree_paths().into_iter().map(str::to_owned).collect();
    all.sort();
    assert_eq!(seen, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_with_sizes_and_a_checksums_file_is_verified() {
    use sha2::{Digest, Sha256};
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let manifest = root.path().join("manifest.txt");
    std::fs::write(
        &manifest,
        format!(
            "{}\n  out=docs/one.bin\n  size=1000\n{}\n",
            server.file_url(1000, "one", ""),
            server.file_url(2000, "two", "")
        ),
    )
    .unwrap();
    let sums = root.path().join("SHA256SUMS");
    std::fs::write(
        &sums,
        format!(
            "{}  docs/one.bin\n{} *two\n",
            hex::encode(Sha256::digest(content("one", 1, 1000))),
            "0".repeat(64)
        ),
    )
    .unwrap();
    let output = run(sync_command(
        manifest.to_str().unwrap(),
        &dir,
        &["--checksums", sums.to_str().unwrap()],
    ))
    .await;
    assert_eq!(
        output.status.code(),
        Some(3),
        "two's checksum is wrong: {}",
        stderr(&output)
    );
    assert!(std::fs::read(dir.join("docs/one.bin")).unwrap() == content("one", 1, 1000));
    assert!(
        !dir.join("two").exists(),
        "a file that fails verification never appears"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mirror");
    let output = run(sync_command(&server.url("/tree/"), &dir, &["--recursive"])).await;
    assert!(output.status.success());
    std::fs::write(dir.join("stale.bin"), b"old").unwrap();
    server.set_version("/tree/a.bin", 2);
    std::fs::remove_file(dir.join("b.txt")).unwrap();
    let before = server.body_bytes();
    let mut command = haul();
    command
        .args(["sync", "--dry-run", "--delete", "--recursive"])
        .arg(server.url("/tree/"))
        .arg(&dir);
    let output = run(command).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let plan = String::from_utf8_lossy(&output.stdout);
    assert!(plan.contains("update    a.bin"), "{plan}");
    assert!(plan.contains("new       b.txt"), "{plan}");
    assert!(plan.contains("unchanged sub/c.bin"), "{plan}");
    assert!(plan.contains("delete    stale.bin"), "{plan}");
    assert_eq!(server.body_bytes(), before, "no body was fetched");
    assert!(dir.join("stale.bin").exists() && !dir.join("b.txt").exists());
    assert!(listing(&dir).iter().all(|n| !n.contains(".part")));
}
