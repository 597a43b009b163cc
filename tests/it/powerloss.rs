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
//! crashfs is FUSE, which makes no file without a name and receives no `syncfs`: the way most
//! small files take on a local disk is checked from haul's system calls instead (the last test).
//!
//! `HAUL_POWERLOSS_CUTS` sets the number of cuts (52 by default, spread over the
//! configurations) and `HAUL_POWERLOSS_SEED` where the random moments come from.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::crashfs::CrashFs;
use crate::support::server::{TestServer, content};
use crate::support::{haul, json_events, tool};

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

/// crashfs is FUSE, where haul syncs each file on its own and makes no file without a name, so
/// the way most small files take on a real disk (written without a name, made durable by a
/// shared `syncfs`, then linked under their name) is checked from haul's system calls instead,
/// traced by strace: for every file linked under its final name,
///
/// 1. a flush of all files (`syncfs`) or of that file started after its last write and ended
///    before the link;
/// 2. a flush of all files or of its directory started after the link and ended before haul
///    reported the file finished.
///
/// These are the orders a power cut needs (POSIX makes nothing durable otherwise); what a cut
/// then keeps is crashfs's question above.
#[test]
fn on_a_real_disk_each_small_file_is_durable_before_its_name_and_its_name_before_it_is_reported() {
    if !tool("strace", Command::new("strace").arg("-V")) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start());
    // On the build's disk: /tmp may be tmpfs, where haul has nothing to sync.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let names: Vec<String> = (0..120).map(|i| format!("n{i:03}.bin")).collect();
    let trace = dir.path().join("trace");
    let out = dir.path().join("out");
    let mut command = Command::new("strace");
    command
        .args(["-f", "-qq", "-ttt", "-T", "-s", "4096", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=openat,fcntl,write,writev,linkat,syncfs,fdatasync,fsync,close",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_haul"))
        .args(["--no-config", "get", "--json", "-j", "8", "-d"])
        .arg(&out);
    for (i, name) in names.iter().enumerate() {
        command.arg(server.file_url(300 + 211 * i as u64, name, ""));
    }
    let output = command.output().expect("strace runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (i, name) in names.iter().enumerate() {
        let bytes = std::fs::read(out.join(name)).unwrap();
        assert_eq!(bytes, content(name, 1, 300 + 211 * i as u64), "{name}");
    }
    let calls = traced_calls(&std::fs::read_to_string(&trace).unwrap());
    let linked = nameless_links(&calls);
    assert_eq!(
        linked.len(),
        names.len(),
        "every file took the nameless way (else this test checks nothing)"
    );
    let flushes: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c.name.as_str(), "syncfs" | "fdatasync" | "fsync") && c.ret == "0")
        .collect();
    assert!(
        flushes.iter().any(|f| f.name == "syncfs"),
        "eight downloads at once shared flushes"
    );
    let flushed = |file: Option<u64>, after: f64, before: f64| {
        flushes.iter().any(|f| {
            (f.name == "syncfs" || (file.is_some() && f.file == file))
                && f.start > after
                && f.end < before
        })
    };
    for link in &linked {
        assert!(
            flushed(Some(link.file), link.written, link.call.start),
            "{}: linked without a flush of its data after its last write",
            link.name
        );
        let reported = calls
            .iter()
            .find(|c| {
                c.name == "write"
                    && c.first_arg() == "1"
                    && c.args.split("\\n").any(|event| {
                        event.contains("\\\"event\\\":\\\"finished\\\"")
                            && event.contains(&format!("/{}\\\"", link.name))
                    })
            })
            .unwrap_or_else(|| panic!("{} was never reported finished", link.name));
        assert!(
            flushed(link.dir, link.call.end, reported.start),
            "{}: reported finished before its name was flushed",
            link.name
        );
    }
    drop(server);
}

/// One system call strace saw: its name, arguments and result as strace prints them, when it
/// started and ended (seconds), and the open files it named (see `open_files`).
#[derive(Debug)]
struct Call {
    name: String,
    args: String,
    ret: String,
    start: f64,
    end: f64,
    /// The open file its first argument is (for `linkat`, the file it names).
    file: Option<u64>,
    /// The open file an `openat` made; for `linkat`, the directory it links into.
    other: Option<u64>,
}

impl Call {
    fn first_arg(&self) -> &str {
        self.args.split(',').next().unwrap_or("").trim()
    }
}

/// The calls of an `strace -f -ttt -T` log, a call split over two lines (`<unfinished ...>`,
/// `<... resumed>`) made whole, in the order they started.
fn traced_calls(log: &str) -> Vec<Call> {
    let mut pending: HashMap<&str, (f64, String)> = HashMap::default();
    let mut calls = Vec::new();
    for line in log.lines() {
        let Some((thread, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        let Ok(time) = time.parse::<f64>() else {
            continue;
        };
        let (start, text, resumed) = if let Some(tail) = rest.strip_prefix("<... ") {
            let Some((started, head)) = pending.remove(thread) else {
                continue;
            };
            let Some((_, after)) = tail.split_once(" resumed>") else {
                continue;
            };
            (started, format!("{head}{after}"), true)
        } else if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(thread, (time, head.to_owned()));
            continue;
        } else {
            (time, rest.to_owned(), false)
        };
        // NAME(ARGS) = RET <DURATION>
        let Some((name, after_name)) = text.split_once('(') else {
            continue;
        };
        // strace pads short calls: `syncfs(31)      = 0`.
        let Some((args, result)) = after_name.rsplit_once(" = ") else {
            continue;
        };
        let Some(args) = args.trim_end().strip_suffix(')') else {
            continue;
        };
        let mut result = result.split_whitespace();
        let ret = result.next().unwrap_or("").to_owned();
        let duration = result
            .last()
            .and_then(|d| d.strip_prefix('<')?.strip_suffix('>')?.parse::<f64>().ok())
            .unwrap_or(0.0);
        calls.push(Call {
            name: name.to_owned(),
            args: args.to_owned(),
            ret,
            start,
            end: if resumed { time } else { time + duration },
            file: None,
            other: None,
        });
    }
    open_files(&mut calls);
    calls.sort_by(|a, b| a.start.total_cmp(&b.start));
    calls
}

/// Names the open file each call's first argument is, across the descriptors that share it
/// (`fcntl(F_DUPFD_CLOEXEC)`: a sync may run on a copy of the file's descriptor) and numbers
/// reused after a `close`. A descriptor exists from the end of the call that made it until
/// the start of its `close`.
fn open_files(calls: &mut [Call]) {
    let mut moments: Vec<(f64, usize)> = (0..calls.len())
        .map(|i| {
            let call = &calls[i];
            let makes = matches!(call.name.as_str(), "openat" | "fcntl");
            (if makes { call.end } else { call.start }, i)
        })
        .collect();
    moments.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut files: HashMap<String, u64> = HashMap::default();
    let mut next_file = 0;
    for (_, i) in moments {
        let call = &mut calls[i];
        let first = call.first_arg().to_owned();
        call.file = files.get(&first).copied();
        match call.name.as_str() {
            "openat" if !call.ret.starts_with('-') => {
                next_file += 1;
                files.insert(call.ret.clone(), next_file);
                call.other = Some(next_file);
            }
            "fcntl" if call.args.contains("F_DUPFD") && !call.ret.starts_with('-') => {
                let file = call.file.unwrap_or_else(|| {
                    next_file += 1;
                    next_file
                });
                files.insert(call.ret.clone(), file);
            }
            "close" => {
                files.remove(&first);
            }
            "linkat" => {
                // linkat(AT_FDCWD, "/proc/self/fd/N", DIR, "NAME", AT_SYMLINK_FOLLOW)
                let args: Vec<&str> = call.args.split(", ").collect();
                let named = args
                    .get(1)
                    .and_then(|a| a.strip_prefix("\"/proc/self/fd/")?.strip_suffix('"'));
                call.file = named.and_then(|fd| files.get(fd).copied());
                call.other = args.get(2).and_then(|dir| files.get(dir.trim()).copied());
            }
            _ => {}
        }
    }
}

/// A file made without a name (`openat(..., O_TMPFILE)`) and linked under its name.
struct Link<'a> {
    name: String,
    /// The open file, and the directory it was linked into (see `open_files`).
    file: u64,
    dir: Option<u64>,
    /// When its last write ended.
    written: f64,
    call: &'a Call,
}

fn nameless_links(calls: &[Call]) -> Vec<Link<'_>> {
    // The nameless files made so far, with the end of their last write.
    let mut nameless: HashMap<u64, f64> = HashMap::default();
    let mut links = Vec::new();
    for call in calls {
        match call.name.as_str() {
            "openat" if call.args.contains("O_TMPFILE") => {
                if let Some(made) = call.other {
                    nameless.insert(made, 0.0);
                }
            }
            "write" | "writev" => {
                if let Some(written) = call.file.and_then(|f| nameless.get_mut(&f)) {
                    *written = written.max(call.end);
                }
            }
            "linkat" if call.ret == "0" => {
                let Some((file, written)) = call
                    .file
                    .and_then(|file| Some((file, *nameless.get(&file)?)))
                else {
                    continue;
                };
                let name = call.args.split(", ").nth(3).unwrap_or("");
                links.push(Link {
                    name: name.trim_matches('"').to_owned(),
                    file,
                    dir: call.other,
                    written,
                    call,
                });
            }
            _ => {}
        }
    }
    links
}
