//! `tests/crashfs/crashfs.py` mounted by the tests: a FUSE file system that keeps what was
//! written since the last `fsync`/`fdatasync` of each file, and names changed since the last
//! `fsync` of their directory, in a volatile layer, and drops them at a simulated power cut.
//! Needs `/dev/fuse`, libfuse 3 (`fuse3`) and `mfusepy` (PyPI); without them the caller skips
//! loudly, except under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct CrashFs {
    backing: tempfile::TempDir,
    mount: tempfile::TempDir,
    child: Option<Child>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/crashfs/crashfs.py")
}

/// Whether crashfs can run here; under `CI=true` its absence fails the test.
fn available() -> bool {
    let python = Command::new("python3")
        .args(["-c", "import mfusepy"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let device = Path::new("/dev/fuse").exists();
    if !(python && device) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "crashfs needs /dev/fuse, fuse3 and mfusepy under CI=true (see .ci/run)"
        );
        eprintln!("SKIPPED: crashfs needs /dev/fuse, fuse3 and `pip install mfusepy`");
    }
    python && device
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|info| {
        info.lines()
            .any(|line| line.split(' ').nth(4) == Some(&*path.to_string_lossy()))
    })
}

impl CrashFs {
    /// An empty crashfs, mounted; `None` (after saying so) where it cannot run.
    pub fn start() -> Option<Self> {
        if !available() {
            return None;
        }
        let mut fs = Self {
            backing: tempfile::tempdir().expect("a backing directory"),
            mount: tempfile::tempdir().expect("a mount point"),
            child: None,
        };
        fs.remount();
        Some(fs)
    }

    /// Where programs write.
    pub fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Mounts the backing directory's durable state again.
    pub fn remount(&mut self) {
        assert!(self.child.is_none(), "already mounted");
        let child = Command::new("python3")
            .arg(script())
            .arg(self.backing.path())
            .arg(self.mount.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start crashfs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !mounted(self.mount.path()) {
            assert!(Instant::now() < deadline, "crashfs did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The power cut: only what was made durable is kept; then the file system is gone until
    /// `remount`. Whoever writes to it must be dead already (`kill -9`).
    pub fn cut(&mut self) {
        std::fs::write(self.mount.path().join(".crashfs-cut"), b"cut")
            .expect("the power cut is ordered");
        self.unmount();
    }

    fn unmount(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for CrashFs {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.unmount();
        }
    }
}
