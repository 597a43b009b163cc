//! When data is made durable. With `Durability::Full` no file gets its final name before its
//! data is on the disk. A big file pays one `fdatasync` at its end, which the writeback
//! started during the download has mostly done already. Thousands of small files finishing at
//! once would each pay a device flush of their own; instead they commit as a group
//! (`group_commit`), one group per file system: a `syncfs` flushes only the one its descriptor
//! is on. Data and names (a directory synced after a rename or a link) share one group: a
//! `syncfs` makes both durable, so one flush carries the names of files whose data the flush
//! before carried, and the data of newer ones (5,000 tiny files to ext4: half the flushes of
//! one group for each). On FUSE every file syncs on its own; on tmpfs and ramfs nothing is
//! synced.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, PoisonError};

use super::group_commit::{GroupSync, run_blocking};
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

/// One file system's group commit, found by its device number.
#[derive(Debug)]
struct FileSystem {
    device: u64,
    kind: Kind,
    group: Arc<GroupSync>,
}

/// What syncing means on a file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A disk: shared flushes (`syncfs`), or a lone file's own `fdatasync`.
    Disk,
    /// FUSE: `syncfs` never reaches its server (sshfs, rclone, s3fs, ...), so each file is
    /// synced on its own.
    Fuse,
    /// tmpfs or ramfs: nothing survives a power cut, and a sync does nothing in the kernel;
    /// haul skips its machinery too (on tmpfs it cost a 64 KiB file a fifth of its CPU).
    Memory,
}

/// `f_type`s of `fstatfs`.
const FUSE_SUPER_MAGIC: u32 = 0x6573_5546;
const TMPFS_MAGIC: u32 = 0x0102_1994;
const RAMFS_MAGIC: u32 = 0x8584_58f6;

/// What kind of file system `fd` is on.
fn kind_of(fd: BorrowedFd<'_>) -> Kind {
    let f_type = rustix::fs::fstatfs(fd)
        .ok()
        .and_then(|stat| u32::try_from(stat.f_type).ok());
    match f_type {
        Some(FUSE_SUPER_MAGIC) => Kind::Fuse,
        Some(TMPFS_MAGIC | RAMFS_MAGIC) => Kind::Memory,
        _ => Kind::Disk,
    }
}

impl Syncer {
    pub(crate) fn new(durability: Durability) -> Self {
        Self {
            durability,
            file_systems: Arc::default(),
        }
    }

    /// The group commit of `fd`'s file system, made when it is first met.
    fn file_system(&self, fd: BorrowedFd<'_>) -> io::Result<Arc<FileSystem>> {
        let device = rustix::fs::fstat(fd)?.st_dev;
        let mut known = self
            .file_systems
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(fs) = known.iter().find(|fs| fs.device == device) {
            return Ok(Arc::clone(fs));
        }
        let fs = Arc::new(FileSystem {
            device,
            kind: kind_of(fd),
            group: Arc::default(),
        });
        known.push(Arc::clone(&fs));
        Ok(fs)
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

    /// Like `sync_data`, but shares one flush with the other files finishing at the same
    /// time. Blocking: for code on a blocking thread (`sync_shared` is the waiting task's).
    pub(crate) fn sync_grouped(&self, file: &File) -> io::Result<()> {
        self.sync_blocking(file.as_fd())
    }

    /// Makes the names in directory `dir` durable (a rename, a created or removed file): POSIX
    /// makes them survive a power cut only once their directory is synced. Shares one flush
    /// with the other files finishing at the same time, like `sync_grouped`. Blocking.
    pub(crate) fn sync_names(&self, dir: impl AsFd) -> io::Result<()> {
        self.sync_blocking(dir.as_fd())
    }

    /// Makes what `fd` holds durable (a file's data, or a directory's names), sharing one flush
    /// with the others finishing at the same time, as a task that holds no thread while it
    /// waits; nothing with relaxed durability.
    pub(crate) async fn sync_shared(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        if !self.durable() {
            return Ok(());
        }
        let fs = self.file_system(fd)?;
        match fs.kind {
            Kind::Disk => fs.group.sync(fd).await,
            Kind::Fuse => {
                let own = fd.try_clone_to_owned()?;
                run_blocking(move || rustix::fs::fdatasync(own).map_err(io::Error::from)).await
            }
            Kind::Memory => Ok(()),
        }
    }

    /// `sync_shared` for a blocking thread.
    fn sync_blocking(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        if !self.durable() {
            return Ok(());
        }
        let fs = self.file_system(fd)?;
        match fs.kind {
            Kind::Disk => fs.group.sync_blocking(fd),
            Kind::Fuse => rustix::fs::fdatasync(fd).map_err(io::Error::from),
            Kind::Memory => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The group commit of the file system `path` is on.
    fn file_system(syncer: &Syncer, path: &std::path::Path) -> Arc<FileSystem> {
        syncer
            .file_system(File::open(path).unwrap().as_fd())
            .unwrap()
    }

    /// A new directory on a disk (not tmpfs, which some machines mount at /tmp): where the
    /// group commit runs.
    fn on_disk() -> tempfile::TempDir {
        let target = concat!(env!("CARGO_MANIFEST_DIR"), "/target");
        std::fs::create_dir_all(target).unwrap();
        let dir = tempfile::tempdir_in(target).unwrap();
        let kind = kind_of(File::open(dir.path()).unwrap().as_fd());
        assert_eq!(kind, Kind::Disk, "the build directory is on a local disk");
        dir
    }

    /// A new file in `dir` holding `text`, not yet synced.
    fn written(dir: &std::path::Path, name: &str, text: &str) -> File {
        let mut file = File::create(dir.join(name)).unwrap();
        writeln!(file, "{text}").unwrap();
        file
    }

    #[test]
    fn each_file_system_has_its_own_shared_flushes() {
        let disk = on_disk();
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
            let memory = file_system(&syncer, memory.path());
            assert!(!Arc::ptr_eq(&here, &memory));
            assert_eq!(memory.kind, Kind::Memory, "nothing to sync in memory");
        }
    }

    #[test]
    fn many_threads_committing_at_once_all_return() {
        let dir = on_disk();
        let syncer = Syncer::new(Durability::Full);
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let syncer = syncer.clone();
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for round in 0..20 {
                        let file = written(&dir, &format!("f{i}"), &format!("{i} {round}"));
                        syncer.sync_grouped(&file).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let fs = file_system(&syncer, dir.path());
        let (started, finished, waiting) = fs.group.settled_counts();
        // Nobody is left waiting and no flush is left half done.
        assert_eq!(waiting, 0);
        assert_eq!(started, finished);
    }

    #[test]
    fn a_file_finishing_alone_syncs_only_itself() {
        let dir = on_disk();
        let syncer = Syncer::new(Durability::Full);
        let file = written(dir.path(), "alone", "alone");
        syncer.sync_grouped(&file).unwrap();
        let fs = file_system(&syncer, dir.path());
        let (started, _, waiting) = fs.group.settled_counts();
        assert_eq!(started, 0, "its own fdatasync, no shared flush");
        assert_eq!(waiting, 0);
    }

    #[test]
    fn relaxed_durability_syncs_nothing() {
        let dir = on_disk();
        let file = File::create(dir.path().join("f")).unwrap();
        let syncer = Syncer::new(Durability::Relaxed);
        syncer.sync_grouped(&file).unwrap();
        assert!(
            syncer.file_systems.lock().unwrap().is_empty(),
            "not even looked at"
        );
    }
}
