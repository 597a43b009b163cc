//! Many machines, proven on a real scheduler (issue #31): the repo's own
//! `examples/deploy/slurm-array.sh`, not a copy, run as Slurm job arrays on a single-node cluster
//! started here, against nginx and the in-process server on loopback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::support::json_events;
use crate::support::nginx::Nginx;
use crate::support::server::{TestServer, content};
use crate::support::slurm::{Slurm, run_ok};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deploy/slurm-array.sh")
}

/// `sbatch` of the example as an array of `tasks`, with its paths in the environment.
fn sbatch(
    slurm: &Slurm,
    work: &Path,
    tasks: usize,
    urls: &Path,
    out: &Path,
    logs: &Path,
) -> Command {
    let mut command = slurm.command("sbatch");
    command
        .current_dir(work)
        .arg("--parsable")
        .arg(format!("--array=0-{}", tasks - 1))
        .args(["--cpus-per-task=1", "-o", "slurm-%A_%a.out"])
        .env("HAUL", env!("CARGO_BIN_EXE_haul"))
        .env("HAUL_URLS", urls)
        .env("HAUL_OUT", out)
        .env("HAUL_LOGS", logs)
        .env("HAUL_ARGS", "--no-config --digest sha-256")
        .arg(script());
    command
}

/// Submits and returns the job id.
fn submit(command: Command) -> String {
    let mut command = command;
    let output = run_ok(&mut command);
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until no job is left, releasing requeued tasks held back by their begin time (Slurm
/// holds a requeued task for about two minutes). A task is released two seconds after it was
/// first seen held, not at once: slurmd refuses a relaunch in the same second as the revocation
/// of the task's previous credential ("Killing non-startable batch JobId=6: Job credential
/// revoked", seen under load), and the task then never runs again.
fn wait_for_all(slurm: &Slurm, within: Duration) {
    let deadline = Instant::now() + within;
    let mut held_since: std::collections::HashMap<String, Instant> =
        std::collections::HashMap::new();
    while !slurm.idle() {
        assert!(
            Instant::now() < deadline,
            "jobs still queued: {}",
            slurm.logs()
        );
        let pending = slurm
            .command("squeue")
            .args(["-h", "-t", "PD", "-o", "%i %r"])
            .output()
            .expect("squeue");
        for line in String::from_utf8_lossy(&pending.stdout).lines() {
            if let Some((id, "BeginTime")) = line.split_once(' ') {
                let since = *held_since.entry(id.to_owned()).or_insert_with(Instant::now);
                if since.elapsed() < Duration::from_secs(2) {
                    continue;
                }
                let _ = slurm
                    .command("scontrol")
                    .args(["update", &format!("JobId={id}"), "StartTime=now"])
                    .status();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Every task's exit code and state, from the Slurm output files' tasks (`scontrol` forgets
/// finished jobs, so each task's last line of events is read instead).
fn shard_events(logs: &Path) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(logs).expect("the logs directory was made") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            all.extend(json_events(&std::fs::read(&path).unwrap()));
        }
    }
    all
}

/// No file failed in any run of any task (a run stopped by SIGTERM leaves its files to the
/// next run of its shard); the number of `finished` events.
fn every_file_finished(events: &[serde_json::Value]) -> usize {
    // A run stopped by SIGTERM reports its unfinished files as cancelled; nothing else fails.
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "failed" && e["kind"] != "cancelled")
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    events.iter().filter(|e| e["event"] == "finished").count()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// nginx's access log: body bytes sent per URI, and the `Range` headers asked per URI.
fn served(nginx: &Nginx) -> (HashMap<String, u64>, HashMap<String, Vec<String>>) {
    let mut bytes: HashMap<String, u64> = HashMap::new();
    let mut ranges: HashMap<String, Vec<String>> = HashMap::new();
    for line in nginx.access_log() {
        let fields: Vec<&str> = line.split(' ').collect();
        // `METHOD URI STATUS BYTES cCONNECTION "RANGE" "IF-RANGE" PROTOCOL USER`
        if fields.len() < 6 {
            continue;
        }
        *bytes.entry(fields[1].to_owned()).or_default() += fields[3].parse::<u64>().unwrap_or(0);
        ranges
            .entry(fields[1].to_owned())
            .or_default()
            .push(fields[5].trim_matches('"').to_owned());
    }
    (bytes, ranges)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slurm_job_array_fetches_every_file_once_resumes_after_requeue_and_survives_a_duplicate()
{
    let Some(nginx) = Nginx::start() else { return };
    let server = TestServer::start().await;
    let (nginx, server) = tokio::task::spawn_blocking(move || {
        let Some(slurm) = Slurm::start() else {
            return (nginx, server);
        };
        let began = Instant::now();
        every_file_once(&slurm, &nginx);
        requeue_resumes_at_the_byte(&slurm, &nginx);
        two_copies_at_once(&slurm, &server);
        eprintln!(
            "Slurm scenarios took {:.1} s",
            began.elapsed().as_secs_f64()
        );
        (nginx, server)
    })
    .await
    .unwrap();
    drop((nginx, server));
}

/// 4 tasks, 60 files of mixed sizes: every file exactly once (nginx sent each file's length,
/// no more) and exact; the log directory is made by haul.
fn every_file_once(slurm: &Slurm, nginx: &Nginx) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let logs = work.path().join("logs");
    let mut urls = String::new();
    let mut files = Vec::new();
    for i in 0..60u64 {
        let name = format!("once/f{i:02}.bin");
        let size = if i % 15 == 0 {
            3 << 20
        } else {
            1_000 + i * 4_099
        };
        let bytes = content(&name, 1, size);
        let path = nginx.www().join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        urls.push_str(&nginx.http_url(&format!("/{name}")));
        urls.push('\n');
        files.push((name, bytes));
    }
    let list = work.path().join("urls.txt");
    std::fs::write(&list, urls).unwrap();
    let mut command = sbatch(slurm, work.path(), 4, &list, &out, &logs);
    command.arg("--wait");
    submit(command);
    wait_for_all(slurm, Duration::from_secs(120));
    let finished = every_file_finished(&shard_events(&logs));
    assert_eq!(finished, files.len(), "each file finished by one task");
    let (bytes, _) = served(nginx);
    for (name, expected) in &files {
        let file = name.rsplit('/').next().unwrap();
        assert!(
            std::fs::read(out.join(file)).unwrap() == *expected,
            "{name}"
        );
        assert_eq!(
            bytes.get(&format!("/{name}")).copied(),
            Some(expected.len() as u64),
            "{name} sent exactly once"
        );
    }
}

/// `scancel --signal=TERM --full` on one task: haul saves its state and exits 143, the script
/// requeues the task, and its next run resumes each file from the bytes it had (a `Range`
/// from there in nginx's log); every file ends exact.
fn requeue_resumes_at_the_byte(slurm: &Slurm, nginx: &Nginx) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let logs = work.path().join("logs");
    let size = 48u64 << 20;
    let mut urls = String::new();
    let mut files = Vec::new();
    for i in 0..4 {
        let name = format!("slow/requeue-{i}.bin");
        let bytes = content(&name, 1, size);
        std::fs::write(nginx.www().join(&name), &bytes).unwrap();
        urls.push_str(&nginx.http_url(&format!("/{name}")));
        urls.push('\n');
        files.push((name, bytes));
    }
    let list = work.path().join("urls.txt");
    std::fs::write(&list, urls).unwrap();
    let job = submit(sbatch(slurm, work.path(), 2, &list, &out, &logs));
    // Until the tasks have bytes on disk.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(&out).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "part"))
    }) {
        assert!(
            Instant::now() < deadline,
            "no task started: {}",
            slurm.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(800));
    for task in 0..2 {
        // A task with no file of its own may be done already: then there is nothing to stop.
        let _ = slurm
            .command("scancel")
            .args(["--signal=TERM", "--full", &format!("{job}_{task}")])
            .status();
    }
    wait_for_all(slurm, Duration::from_secs(180));
    // A stopped task is requeued by its script just before it ends, so the queue can look
    // empty for a moment between the first run and the requeued one (seen once under a full
    // suite's load): wait for the files themselves, nudging the queue meanwhile.
    let deadline = Instant::now() + Duration::from_secs(120);
    while files
        .iter()
        .any(|(name, _)| !out.join(name.rsplit('/').next().unwrap_or(name)).exists())
    {
        assert!(
            Instant::now() < deadline,
            "a requeued task never finished its files: {}",
            slurm.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
        wait_for_all(slurm, Duration::from_secs(60));
    }
    let events = shard_events(&logs);
    let summaries: Vec<_> = events.iter().filter(|e| e["event"] == "summary").collect();
    assert!(
        summaries.iter().any(|s| s["interrupted"] == true),
        "a run was stopped by SIGTERM: {summaries:?}"
    );
    every_file_finished(&events);
    let (_, ranges) = served(nginx);
    for (name, bytes) in &files {
        let file = name.rsplit('/').next().unwrap();
        assert!(std::fs::read(out.join(file)).unwrap() == *bytes, "{name}");
    }
    let resumed = files.iter().any(|(name, _)| {
        ranges.get(&format!("/{name}")).is_some_and(|asked| {
            asked
                .iter()
                .any(|r| r.starts_with("bytes=") && !r.starts_with("bytes=0-"))
        })
    });
    assert!(
        resumed,
        "a requeued task resumed from its bytes: {ranges:?}"
    );
    let output = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("slurm-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .unwrap_or_default();
    assert!(
        !output.is_empty(),
        "the task's output was kept across its requeue"
    );
}

/// Two copies of the same array at once into one directory (a requeue racing a straggler),
/// against a server that sends different bytes on every request: every task exits 0, and every
/// digest a task reports for a file it wrote is the digest of the file on disk.
fn two_copies_at_once(slurm: &Slurm, server: &TestServer) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let mut urls = String::new();
    let names: Vec<String> = (0..200).map(|i| format!("dup{i:03}.bin")).collect();
    for (i, name) in names.iter().enumerate() {
        urls.push_str(&server.file_url(300 + 37 * i as u64, name, "version_per_hit=1"));
        urls.push('\n');
    }
    let list = work.path().join("urls.txt");
    std::fs::write(&list, urls).unwrap();
    let copies: Vec<std::thread::JoinHandle<Output>> = ["a", "b"]
        .iter()
        .map(|copy| {
            let mut command = sbatch(slurm, work.path(), 4, &list, &out, &work.path().join(copy));
            command.arg("--wait");
            std::thread::spawn(move || command.output().expect("sbatch"))
        })
        .collect();
    for copy in copies {
        let output = copy.join().unwrap();
        assert!(
            output.status.success(),
            "every task of both copies exits 0: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    wait_for_all(slurm, Duration::from_secs(60));
    let mut on_disk: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, names, "every file once, no .part left");
    for copy in ["a", "b"] {
        for event in shard_events(&work.path().join(copy)) {
            if event["event"] != "finished" || event["already_present"] == true {
                continue;
            }
            let path = event["path"].as_str().unwrap();
            let actual = sha256_hex(&std::fs::read(path).unwrap());
            assert_eq!(
                event["digest"].as_str().unwrap(),
                format!("sha-256={actual}"),
                "{path}: the reported digest is the file's"
            );
        }
    }
}
