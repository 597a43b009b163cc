//! A real single-node Slurm cluster (Debian's `slurm-wlm` and `munge`), started by the test on
//! loopback ports: munged (shared, started once), then slurmctld and slurmd with a generated
//! `slurm.conf` in a temporary directory (no cgroups, no accounting). Every daemon it started is
//! stopped on drop. Without Slurm the caller skips loudly, except under `CI=true`.

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub struct Slurm {
    pub dir: tempfile::TempDir,
    conf: PathBuf,
}

/// Whether Slurm can run here; under `CI=true` its absence fails the test.
fn installed() -> bool {
    let found = [
        "/usr/sbin/slurmctld",
        "/usr/sbin/slurmd",
        "/usr/sbin/munged",
    ]
    .iter()
    .all(|p| Path::new(p).exists());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Slurm is required under CI=true (apt-get install -y slurm-wlm munge)"
        );
        eprintln!("SKIPPED: Slurm is not installed (apt-get install -y slurm-wlm munge)");
    }
    found
}

/// Starts munged as the `munge` user unless one answers already.
fn ensure_munged() {
    let answers = || {
        Command::new("sh")
            .args(["-c", "munge -n | unmunge"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if answers() {
        return;
    }
    if !Path::new("/etc/munge/munge.key").exists() {
        run_ok(Command::new("mungekey").arg("-c"));
        run_ok(Command::new("chown").args(["munge:munge", "/etc/munge/munge.key"]));
    }
    std::fs::create_dir_all("/run/munge").expect("/run/munge");
    run_ok(Command::new("chown").args(["munge:munge", "/run/munge"]));
    run_ok(Command::new("runuser").args(["-u", "munge", "--", "/usr/sbin/munged"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers() {
        assert!(Instant::now() < deadline, "munged did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `command`, failing the test with its output when it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("run a Slurm command");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Slurm {
    /// Starts the cluster and waits until its node is idle; `None` (after saying so) when Slurm
    /// is not installed.
    pub fn start() -> Option<Self> {
        if !installed() {
            return None;
        }
        ensure_munged();
        let dir = tempfile::tempdir().expect("a directory for Slurm");
        let root = dir.path();
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir_all(root.join(sub)).expect("Slurm's directories");
        }
        let r = root.display();
        let conf = root.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=haultest\n\
                 SlurmctldHost=localhost(127.0.0.1)\n\
                 SlurmctldPort={}\nSlurmdPort={}\n\
                 SlurmUser=root\nSlurmdUser=root\nAuthType=auth/munge\n\
                 StateSaveLocation={r}/state\nSlurmdSpoolDir={r}/spool\n\
                 SlurmctldPidFile={r}/slurmctld.pid\nSlurmdPidFile={r}/slurmd.pid\n\
                 SlurmctldLogFile={r}/log/slurmctld.log\nSlurmdLogFile={r}/log/slurmd.log\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
                 JobAcctGatherType=jobacct_gather/none\n\
                 AccountingStorageType=accounting_storage/none\n\
                 SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nMpiDefault=none\n\
                 ReturnToService=2\nSlurmdParameters=config_overrides\n\
                 SchedulerParameters=sched_interval=1\n\
                 NodeName=localhost NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN\n\
                 PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
                free_port(),
                free_port()
            ),
        )
        .expect("slurm.conf");
        let slurm = Self { dir, conf };
        run_ok(
            Command::new("/usr/sbin/slurmctld")
                .arg("-f")
                .arg(&slurm.conf),
        );
        run_ok(
            Command::new("/usr/sbin/slurmd")
                .arg("-f")
                .arg(&slurm.conf)
                .args(["-N", "localhost"]),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = slurm.command("sinfo").args(["-h", "-o", "%T"]).output();
            if state.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Slurm node did not become idle: {}",
                slurm.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(slurm)
    }

    /// A Slurm client command (`sbatch`, `scontrol`, ...) for this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        ["slurmctld.log", "slurmd.log"]
            .iter()
            .map(|name| {
                std::fs::read_to_string(self.dir.path().join("log").join(name)).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether no job of the cluster is pending or running.
    pub fn idle(&self) -> bool {
        self.command("squeue")
            .args(["-h"])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.is_empty())
    }

    fn stop(&self, pid_file: &str) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join(pid_file)) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = self
            .command("scancel")
            .args(["--full", "-u", "root"])
            .status();
        self.stop("slurmd.pid");
        self.stop("slurmctld.pid");
        std::thread::sleep(Duration::from_millis(300));
    }
}
