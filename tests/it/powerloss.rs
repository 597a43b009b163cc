//! Durability against power loss (issue #34), not only `kill -9`: haul writes into crashfs, a
//! FUSE file system that drops, at a simulated power cut, every write not yet synced and every
//! name whose directory was not synced. After `kill -9` at a random moment (or just after haul
//! exited) the power is cut, the file system comes back with what survived, and these must hold:
//!
//! 1. no file under a final name that is not byte-exact;
//! 2. no state file claiming bytes its `.part` lacks (or holds wrong);
//! 3. every file reported finished before the cut is still there, exact (at `--durability full`);
//! 4. `haul sync`'s memory file claims no file that is not there;
//! 5. the same command run again ends exact.
//!
//! `HAUL_POWERLOSS_CUTS` sets the number of cuts (52 by default, spread over the
//! configurations) and `HAUL_POWERLOSS_SEED` where the random moments come from.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::crashfs::CrashFs;
use crate::support::server::{TestServer, content};
use crate::support::{haul, json_events};

/// crashfs itself, before haul is judged with it: a synced write survives, an unsynced one is
/// gone, a name survives only once its directory was synced, a rename without a directory sync
/// reverts.
#[test]
fn crashfs_keeps_exactly_what_was_synced() {
    use std::io::Write;
    let Some(mut fs) = CrashFs::start() else {
        return;
    };
    let root = fs.path().to_path_buf();
    let write = |name: &str, bytes: &[u8], sync: bool| {
        let mut file = std::fs::File::create(root.join(name)).unwrap();
        file.write_all(bytes).unwrap();
        if sync {
            file.sync_data().unwrap();
        }
    };
    let sync_dir = |dir: &Path| std::fs::File::open(dir).unwrap().sync_all().unwrap();
    write("old.txt", b"durable", true);
    sync_dir(&root);
    write("synced.txt", b"synced", true);
    write("unsynced.txt", b"lost", false);
    sync_dir(&root);
    std::fs::rename(root.join("old.txt"), root.join("renamed.txt")).unwrap();
    write("nameless.txt", b"data without a name", true);
    std::fs::create_dir(root.join("sub")).unwrap();
    write("sub/inside.txt", b"in a directory never synced", true);
    sync_dir(&root.join("sub"));
    fs.cut();
    fs.remount();
    let root = fs.path();
    let read = |name: &str| std::fs::read(root.join(name)).ok();
    assert_eq!(read("synced.txt").as_deref(), Some(&b"synced"[..]));
    assert_eq!(
        read("unsynced.txt").as_deref(),
        Some(&b""[..]),
        "its name was synced, its data not"
    );
    assert_eq!(
        read("old.txt").as_deref(),
        Some(&b"durable"[..]),
        "the rename reverted"
    );
    assert_eq!(read("renamed.txt"), None);
    assert_eq!(read("nameless.txt"), None, "its directory was not synced");
    assert!(
        !root.join("sub").exists(),
        "nor was the new directory's parent"
    );
}

/// What one configuration downloads and how.
struct Case {
    name: &'static str,
    /// Arguments after `haul`, with `{DIR}` for the output directory.
    args: Vec<String>,
    /// Expected final files: relative path and bytes.
    files: Vec<(String, Vec<u8>)>,
    /// How long a run takes, roughly: cuts fall within it.
    span_ms: u64,
}

fn cases(server: &TestServer) -> Vec<Case> {
    let large = |name: &str, size: u64, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "get".into(),
            "--json".into(),
            "--checkpoint-interval".into(),
            "250ms".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(server.file_url(size, name, "rate=3000000"));
        Case {
            name: "large",
            args,
            files: vec![(name.to_owned(), content(name, 1, size))],
            span_ms: 2_500,
        }
    };
    let mut x1 = large("big-x1.bin", 8 << 20, &["-x", "1"]);
    x1.name = "one large file, -x 1";
    let mut x4 = large(
        "big-x4.bin",
        8 << 20,
        &["-x", "4", "--min-split-size", "1M"],
    );
    x4.name = "one large file, -x 4";
    let small_files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let name = format!("s{i:02}.bin");
            let bytes = content(&name, 1, 500 + 997 * i);
            (name, bytes)
        })
        .collect();
    let mut small_args: Vec<String> = vec!["get".into(), "--json".into(), "-j".into(), "8".into()];
    for (i, (name, _)) in small_files.iter().enumerate() {
        small_args.push(server.file_url(500 + 997 * i as u64, name, "rate=200000"));
    }
    let tree: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            let name = format!("t{i:02}.txt");
            let bytes = content(&name, 1, 3_000 + 1_511 * i);
            (name, bytes)
        })
        .collect();
    let borrowed: Vec<(&str, &[u8])> = tree
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    server.put_tree("/mirror/", &borrowed);
    vec![
        x1,
        x4,
        Case {
            name: "40 small files",
            args: small_args,
            files: small_files,
            span_ms: 400,
        },
        Case {
            name: "haul sync of a listing",
            args: vec![
                "sync".into(),
                "--json".into(),
                "--recursive".into(),
                server.url("/mirror/"),
            ],
            files: tree,
            span_ms: 300,
        },
    ]
}

/// `haul ARGS` writing into `dir` (`get`: `-d DIR`; `sync`: DIR last).
fn command(case: &Case, dir: &Path, durability: &str) -> Command {
    let mut command = haul();
    command.args(&case.args).args(["--durability", durability]);
    if case.args[0] == "sync" {
        command.arg(dir);
    } else {
        command.arg("-d").arg(dir);
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// A small deterministic generator for the moments of the cuts.
struct Moments(u64);

impl Moments {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

/// Invariants 1 to 4 on the view that survived; `Err` says which broke.
fn check_survivors(case: &Case, dir: &Path, reported: &[String], full: bool) -> Result<(), String> {
    let expected: BTreeMap<&str, &[u8]> = case
        .files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return if reported.is_empty() || !full {
            Ok(())
        } else {
            Err(format!(
                "the directory is gone, {} files were reported",
                reported.len()
            ))
        };
    };
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path()).map_err(|e| format!("{name}: {e}"))?;
        if let Some(want) = expected.get(name.as_str()) {
            if bytes != *want {
                return Err(format!(
                    "{name} is under its final name with {} bytes, not the {} served",
                    bytes.len(),
                    want.len()
                ));
            }
        } else if let Some(part) = name.strip_suffix(".part.haul") {
            let state: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{name}: not a state file: {e}"))?;
            let data = std::fs::read(dir.join(format!("{part}.part"))).unwrap_or_default();
            let want = expected.get(part).ok_or(format!("{name}: for no file"))?;
            for range in state["done"].as_array().into_iter().flatten() {
                let (start, end) = (
                    range[0].as_u64().unwrap_or(0) as usize,
                    range[1].as_u64().unwrap_or(0) as usize,
                );
                if data.get(start..end) != want.get(start..end) {
                    return Err(format!(
                        "{name} claims bytes {start}..{end} that {part}.part lacks ({} bytes)",
                        data.len()
                    ));
                }
            }
        } else if name == ".haul-sync.json" {
            let memory: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| format!("{name}: {e}"))?;
            for (path, _) in memory["files"].as_object().into_iter().flatten() {
                let there = std::fs::read(dir.join(path)).ok();
                if there.as_deref() != expected.get(path.as_str()).copied() {
                    return Err(format!("the sync memory claims {path}, which is not there"));
                }
            }
        }
    }
    if full {
        for path in reported {
            let name = Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let there = std::fs::read(dir.join(&name)).ok();
            if there.as_deref() != expected.get(name.as_str()).copied() {
                return Err(format!("{name} was reported finished, and the cut lost it"));
            }
        }
    }
    Ok(())
}

/// Kills `child` with SIGKILL, and returns the paths it reported finished.
fn kill_and_read(mut child: Child) -> Vec<String> {
    let _ = child.kill();
    let output = child.wait_with_output().expect("haul's output");
    finished_paths(&output.stdout)
}

fn finished_paths(stdout: &[u8]) -> Vec<String> {
    // A line cut short by the kill is not an event.
    let complete = match stdout.iter().rposition(|b| *b == b'\n') {
        Some(end) => &stdout[..=end],
        None => &[][..],
    };
    json_events(complete)
        .into_iter()
        .filter(|e| e["event"] == "finished")
        .filter_map(|e| e["path"].as_str().map(str::to_owned))
        .collect()
}

fn power_loss_trials(durability: &str, cuts: usize) {
    let Some(mut fs) = CrashFs::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(TestServer::start());
    let cases = cases(&server);
    let seed = std::env::var("HAUL_POWERLOSS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x0048_4155_4c00_u64);
    let mut moments = Moments(seed);
    let full = durability == "full";
    let mut failures = Vec::new();
    let mut resumed = 0;
    for trial in 0..cuts {
        let case = &cases[trial % cases.len()];
        let dir = fs.path().join(format!("trial{trial}"));
        // One cut in five comes just after haul exited on its own.
        let after_exit = trial % 5 == 4;
        let child = command(case, &dir, durability).spawn().expect("haul");
        let reported = if after_exit {
            let output = child.wait_with_output().expect("haul's output");
            finished_paths(&output.stdout)
        } else {
            std::thread::sleep(Duration::from_millis(moments.next(case.span_ms)));
            kill_and_read(child)
        };
        fs.cut();
        fs.remount();
        let dir = fs.path().join(format!("trial{trial}"));
        if let Err(broken) = check_survivors(case, &dir, &reported, full) {
            failures.push(format!(
                "cut {trial} ({}, after exit: {after_exit}): {broken}",
                case.name
            ));
            continue;
        }
        let rerun = command(case, &dir, durability).output().expect("haul");
        resumed += json_events(&rerun.stdout)
            .iter()
            .filter(|e| e["event"] == "started" && e["resumed_from"].as_u64() > Some(0))
            .count();
        if !rerun.status.success() {
            failures.push(format!(
                "cut {trial} ({}): the rerun failed: {}",
                case.name,
                String::from_utf8_lossy(&rerun.stderr)
            ));
            continue;
        }
        for (name, bytes) in &case.files {
            if std::fs::read(dir.join(name)).ok().as_deref() != Some(bytes.as_slice()) {
                failures.push(format!(
                    "cut {trial} ({}): {name} not exact after the rerun",
                    case.name
                ));
            }
        }
        // crashfs holds everything in memory and writes its durable view out at every cut:
        // what a trial left goes, durably, so that a long run stays fast.
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::File::open(fs.path()).and_then(|root| root.sync_all());
    }
    eprintln!(
        "power loss, --durability {durability}: {cuts} cuts from seed {seed}, {} broke, {resumed} \
         downloads resumed from bytes that survived",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if full && cuts >= 8 {
        assert!(
            resumed > 0,
            "a resume survives a power cut at --durability full"
        );
    }
    drop(server);
}

#[test]
fn a_power_cut_at_any_moment_loses_nothing_reported_and_corrupts_nothing() {
    let cuts = std::env::var("HAUL_POWERLOSS_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(52);
    power_loss_trials("full", cuts);
}

/// `--durability relaxed` promises less (the README's Durability table): a cut may lose files
/// reported finished and any resume state, but never leaves a corrupt file under a final name
/// nor a state file that claims bytes the `.part` lacks.
#[test]
fn relaxed_durability_loses_only_what_it_says() {
    power_loss_trials("relaxed", 12);
}
