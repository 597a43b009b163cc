//! When data is made durable, and how the syncs of many small files share one flush.
//!
//! With `Durability::Full` no file gets its final name before its data is on the disk. A big
//! file pays one `fdatasync` at its end, which the writeback started during the download has
//! mostly done already. Thousands of small files finishing at once would each pay a device
//! flush of their own; instead they commit as a group: while one flush runs, every file that
//! finishes writing waits, and the next flush (`syncfs`, which writes back every dirty file of
//! the file system and flushes the device once) covers all of them. A file that finishes
//! while nothing else is waiting uses its own `fdatasync`, so a lone file never waits for
//! other writers of the file system. Groups are per file system: a `syncfs` flushes only the
//! one its descriptor is on. Before a shared flush starts, its leader waits as long as the
//! previous one took (at most `GATHER_CAP`), so that files finishing meanwhile join it: on a
//! fast disk flushes otherwise follow each other as fast as they end, two or three files each,
//! and every one is a journal commit (5,000 tiny files to ext4: 1,888 flushes, 1,000 with the
//! wait; 6% less time, 11% less CPU; benches/RESULTS.md, twelfth session).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Durability;

/// How a `Downloader`'s downloads make their data durable; cheap to clone, shared by all.
#[derive(Debug, Clone, Default)]
pub(crate) struct Syncer {
    durability: Durability,
    /// The shared flushes of each file system written to: a `syncfs` covers only the file
    /// system of the descriptor it is given, so files on two file systems (`dir=` lines on
    /// two disks) never share one.
    file_systems: Arc<Mutex<Vec<Arc<FileSystem>>>>,
}

/// One file system's group commits, found by its device number.
#[derive(Debug)]
struct FileSystem {
    device: u64,
    /// FUSE: `syncfs` never reaches its server (sshfs, rclone, s3fs, ...), so each file is
    /// synced on its own.
    fuse: bool,
    data: GroupSync,
    /// The flushes that make renamed and created names durable (their directories').
    names: GroupSync,
}

impl Syncer {
    pub(crate) fn new(durability: Durability) -> Self {
        Self {
            durability,
            file_systems: Arc::default(),
        }
    }

    /// The group commits of `fd`'s file system, made when it is first met.
    fn file_system(&self, fd: impl AsFd) -> io::Result<Arc<FileSystem>> {
        let device = rustix::fs::fstat(&fd)?.st_dev;
        let mut known = self
            .file_systems
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(fs) = known.iter().find(|fs| fs.device == device) {
            return Ok(Arc::clone(fs));
        }
        let fs = Arc::new(FileSystem {
            device,
            fuse: on_fuse(&fd),
            data: GroupSync::default(),
            names: GroupSync::default(),
        });
        known.push(Arc::clone(&fs));
        Ok(fs)
    }

    /// Makes what `fd` holds durable through `group` of its file system (on FUSE, its own
    /// `fdatasync`); nothing with relaxed durability.
    fn sync_in(&self, fd: impl AsFd, group: fn(&FileSystem) -> &GroupSync) -> io::Result<()> {
        if !self.durable() {
            return Ok(());
        }
        let fs = self.file_system(&fd)?;
        if fs.fuse {
            return rustix::fs::fdatasync(fd).map_err(io::Error::from);
        }
        group(&fs).sync(fd)
    }

    /// Whether data is synced at all.
    pub(crate) fn durable(&self) -> bool {
        self.durability == Durability::Full
    }

    /// Makes `file`'s written data durable (nothing with relaxed durability).
    pub(crate) fn sync_data(&self, file: &File) -> io::Result<()> {
        if self.durable() {
            file.sync_data()
        } else {
            Ok(())
        }
    }

    /// Like `sync_data`, but shares one flush with the other files finishing at the same time.
    pub(crate) fn sync_grouped(&self, file: &File) -> io::Result<()> {
        self.sync_in(file, |fs| &fs.data)
    }

    /// Makes the names in directory `dir` durable (a rename, a created or removed file): POSIX
    /// makes them survive a power cut only once their directory is synced. Shares one flush
    /// with the other files renamed at the same time, like `sync_grouped`.
    pub(crate) fn sync_names(&self, dir: impl AsFd) -> io::Result<()> {
        self.sync_in(dir, |fs| &fs.names)
    }
}

/// The longest a shared flush waits for more files to join it: a slow disk's flush (tens of
/// milliseconds) gathers many files by itself, and a file's commit never waits much longer.
const GATHER_CAP: Duration = Duration::from_millis(2);

/// Group commit: a flush that *starts* after a file's data was written covers that file.
#[derive(Debug)]
struct GroupSync {
    state: Mutex<Round>,
    finished: Condvar,
    /// At most this long a shared flush waits for more files (`GATHER_CAP`; tests widen it).
    gather_cap: Duration,
}

impl Default for GroupSync {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            finished: Condvar::new(),
            gather_cap: GATHER_CAP,
        }
    }
}

#[derive(Debug, Default)]
struct Round {
    /// Numbers of the shared flushes started and finished so far.
    started: u64,
    finished: u64,
    /// Whether a flush (shared or a lone file's own) is running.
    running: bool,
    /// Callers waiting for their data to be durable.
    waiting: usize,
    /// The latest shared flush that failed, and how.
    failed: Option<(u64, io::ErrorKind, String)>,
    /// How long the latest shared flush took.
    last_flush: Duration,
}

impl GroupSync {
    /// Makes `file`'s data durable, by itself or with others on its file system (the caller
    /// gives this file system's group).
    fn sync(&self, file: impl AsFd) -> io::Result<()> {
        let mut round = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Every flush numbered from here on starts after this file's data was written.
        let needed = round.started + 1;
        round.waiting += 1;
        loop {
            if round.finished >= needed {
                round.waiting -= 1;
                return match &round.failed {
                    Some((number, kind, message)) if *number >= needed => {
                        Err(io::Error::new(*kind, message.clone()))
                    }
                    _ => Ok(()),
                };
            }
            if round.running {
                round = self
                    .finished
                    .wait(round)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            round.running = true;
            if round.waiting == 1 {
                // Alone: this file's own sync, which does not wait for anyone else's data.
                drop(round);
                let result = rustix::fs::fdatasync(&file).map_err(io::Error::from);
                let mut round = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                round.running = false;
                round.waiting -= 1;
                drop(round);
                self.finished.notify_all();
                return result;
            }
            // Shared: files finishing while the leader waits (`running` keeps them waiting)
            // are numbered into this flush, which starts after their data was written.
            let gather = round.last_flush.min(self.gather_cap);
            if !gather.is_zero() {
                drop(round);
                std::thread::sleep(gather);
                round = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            }
            round.started += 1;
            let number = round.started;
            drop(round);
            let flush_started = Instant::now();
            let result = rustix::fs::syncfs(&file);
            round = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            round.last_flush = flush_started.elapsed();
            round.running = false;
            round.finished = number;
            if let Err(errno) = result {
                let error = io::Error::from(errno);
                round.failed = Some((number, error.kind(), error.to_string()));
            }
            self.finished.notify_all();
        }
    }
}

/// `FUSE_SUPER_MAGIC`, the `f_type` of every FUSE file system.
const FUSE_SUPER_MAGIC: u32 = 0x6573_5546;

/// Whether `fd` is on a FUSE file system.
fn on_fuse(fd: &impl AsFd) -> bool {
    rustix::fs::fstatfs(fd)
        .is_ok_and(|stat| u32::try_from(stat.f_type).is_ok_and(|kind| kind == FUSE_SUPER_MAGIC))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The group commits of the file system `path` is on.
    fn file_system(syncer: &Syncer, path: &std::path::Path) -> Arc<FileSystem> {
        let fs = syncer.file_system(File::open(path).unwrap()).unwrap();
        assert!(!fs.fuse, "the tests' files are on a local disk");
        fs
    }

    #[test]
    fn each_file_system_has_its_own_shared_flushes() {
        let disk = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(Durability::Full);
        let here = file_system(&syncer, disk.path());
        std::fs::create_dir(disk.path().join("sub")).unwrap();
        assert!(
            Arc::ptr_eq(&here, &file_system(&syncer, &disk.path().join("sub"))),
            "one file system, one group"
        );
        // tmpfs beside the disk: a flush of one does not cover the other.
        let Ok(memory) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let device = |p: &std::path::Path| rustix::fs::stat(p).unwrap().st_dev;
        if device(memory.path()) != device(disk.path()) {
            assert!(!Arc::ptr_eq(&here, &file_system(&syncer, memory.path())));
        }
    }

    #[test]
    fn files_finishing_during_a_flush_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(Durability::Full);
        let fs = file_system(&syncer, dir.path());
        let group = &fs.data;
        // A flush is running: whoever finishes now must wait for the next one.
        group.state.lock().unwrap().running = true;
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let syncer = syncer.clone();
                let path = dir.path().join(format!("f{i}"));
                std::thread::spawn(move || {
                    let mut file = File::create(&path).unwrap();
                    writeln!(file, "{i}").unwrap();
                    syncer.sync_grouped(&file).unwrap();
                })
            })
            .collect();
        while group.state.lock().unwrap().waiting < 4 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // The running flush ends: one of the four flushes for all of them.
        group.state.lock().unwrap().running = false;
        group.finished.notify_all();
        for thread in threads {
            thread.join().unwrap();
        }
        let round = group.state.lock().unwrap();
        assert_eq!(round.started, 1, "four files, one shared flush");
        assert_eq!(round.finished, 1);
        assert_eq!(round.waiting, 0);
    }

    #[test]
    fn a_file_finishing_while_a_shared_flush_gathers_joins_that_flush() {
        let dir = tempfile::tempdir().unwrap();
        // Widened so that a loaded machine cannot miss the window: the last flush "took" 2 s.
        let group = GroupSync {
            gather_cap: Duration::from_secs(2),
            ..GroupSync::default()
        };
        let group = Arc::new(group);
        let commit = |name: &str| {
            let group = Arc::clone(&group);
            let path = dir.path().join(name);
            std::thread::spawn(move || {
                let mut file = File::create(&path).unwrap();
                writeln!(file, "data").unwrap();
                group.sync(&file).unwrap();
            })
        };
        {
            let mut round = group.state.lock().unwrap();
            round.last_flush = Duration::from_secs(2);
            round.running = true;
        }
        let first = [commit("a"), commit("b")];
        while group.state.lock().unwrap().waiting < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The running flush ends; one of the two leads the next and gathers.
        group.state.lock().unwrap().running = false;
        group.finished.notify_all();
        while !group.state.lock().unwrap().running {
            std::thread::sleep(Duration::from_millis(1));
        }
        let late = commit("c");
        for thread in first.into_iter().chain([late]) {
            thread.join().unwrap();
        }
        let round = group.state.lock().unwrap();
        assert_eq!(round.started, 1, "three files, one shared flush");
        assert_eq!(round.waiting, 0);
    }

    #[test]
    fn many_threads_committing_at_once_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(Durability::Full);
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let syncer = syncer.clone();
                let path = dir.path().join(format!("f{i}"));
                std::thread::spawn(move || {
                    for round in 0..20 {
                        let mut file = File::create(&path).unwrap();
                        writeln!(file, "{i} {round}").unwrap();
                        syncer.sync_grouped(&file).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let fs = file_system(&syncer, dir.path());
        let round = fs.data.state.lock().unwrap();
        // Nobody is left waiting and no flush is left half done.
        assert_eq!(round.waiting, 0);
        assert!(!round.running);
        assert_eq!(round.started, round.finished);
    }

    #[test]
    fn a_file_finishing_alone_syncs_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::new(Durability::Full);
        let mut file = File::create(dir.path().join("alone")).unwrap();
        writeln!(file, "alone").unwrap();
        syncer.sync_grouped(&file).unwrap();
        let fs = file_system(&syncer, dir.path());
        let round = fs.data.state.lock().unwrap();
        assert_eq!(round.started, 0, "its own fdatasync, no shared flush");
        assert_eq!(round.waiting, 0);
    }

    #[test]
    fn relaxed_durability_syncs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let syncer = Syncer::new(Durability::Relaxed);
        syncer.sync_grouped(&file).unwrap();
        assert!(
            syncer.file_systems.lock().unwrap().is_empty(),
            "not even looked at"
        );
    }
}
