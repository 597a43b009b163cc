//! An open directory: every look at a name and every change to one happens relative to it,
//! without following a symlink at the name (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), so a symlink
//! planted at a `.part`, a state file or a final name is an error, never a write elsewhere.
//! `Place::open_dir` opens one below a download's root (see `storage::place`).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

/// What is at a name, seen without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) kind: Kind,
    pub(crate) len: u64,
    pub(crate) modified: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Directory,
    Symlink,
    Other,
}

/// An open directory; names in it are opened relative to it, never through a symlink.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    /// Held while a name is made, changed or removed here. The kernel takes the directory's
    /// own lock for each anyway; taken by two threads at once, that lock spins while the
    /// other's create runs (a third of all CPU for small files on ext4): here the waiter
    /// sleeps instead.
    naming: Mutex<()>,
    /// The file system here cannot make a file without a name (`O_TMPFILE`): seen once, not
    /// asked again.
    no_anonymous_files: std::sync::atomic::AtomicBool,
}

impl Dir {
    pub(super) fn new(fd: OwnedFd, path: PathBuf) -> Self {
        Self {
            fd,
            path,
            naming: Mutex::default(),
            no_anonymous_files: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The turn to make, change or remove a name here.
    fn naming(&self) -> std::sync::MutexGuard<'_, ()> {
        self.naming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The directory's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open directory itself.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Opens `name` for reading and writing, creating it; never through a symlink.
    pub(crate) fn create_file(&self, name: &OsStr, truncate: bool) -> io::Result<File> {
        let mut flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if truncate {
            flags |= OFlags::TRUNC;
        }
        let _naming = self.naming();
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from(0o666))?;
        Ok(File::from(fd))
    }

    /// A new file in this directory without a name (`O_TMPFILE`), for `link_anonymous` to
    /// name once it is complete: a file that is never named (a crash, an error) leaves nothing
    /// behind, and the directory changes once instead of three times (a `.part` made, then
    /// renamed away). `None` where the file system or the kernel cannot make one (FUSE, NFS,
    /// older kernels) or `/proc` is not there to name it through.
    pub(crate) fn create_anonymous(&self) -> Option<File> {
        use std::sync::atomic::Ordering;
        if self.no_anonymous_files.load(Ordering::Relaxed) {
            return None;
        }
        #[cfg(target_os = "linux")]
        {
            let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
            match rustix::fs::openat(&self.fd, c".", flags, Mode::from(0o666)) {
                Ok(fd) => Some(File::from(fd)),
                Err(error) => {
                    // Not supported here (`EISDIR` from kernels that predate it): remembered.
                    // Any other failure (a full disk, no descriptors) the named way meets and
                    // reports.
                    if matches!(
                        error,
                        rustix::io::Errno::OPNOTSUPP
                            | rustix::io::Errno::ISDIR
                            | rustix::io::Errno::INVAL
                    ) {
                        self.no_anonymous_files.store(true, Ordering::Relaxed);
                    }
                    None
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.no_anonymous_files.store(true, Ordering::Relaxed);
            None
        }
    }

    /// Names a file `create_anonymous` made: never over an existing name (`EEXIST` then).
    /// `/proc` names the open file (`AT_EMPTY_PATH` needs a capability users lack); without
    /// `/proc`, `Ok(false)` and no more anonymous files here.
    pub(crate) fn link_anonymous(&self, file: &File, name: &OsStr) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let linked = {
            let _naming = self.naming();
            rustix::fs::linkat(
                CWD,
                proc_path.as_str(),
                &self.fd,
                name,
                AtFlags::SYMLINK_FOLLOW,
            )
        };
        match linked {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) if !Path::new("/proc/self/fd").exists() => {
                self.no_anonymous_files
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Opens `name` for reading; never through a symlink.
    pub(crate) fn open_read(&self, name: &OsStr) -> io::Result<File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(File::from(fd))
    }

    /// What is at `name`, without following a symlink; `None` when nothing is.
    pub(crate) fn entry(&self, name: &OsStr) -> io::Result<Option<Entry>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                let kind = match FileType::from_raw_mode(stat.st_mode) {
                    FileType::RegularFile => Kind::File,
                    FileType::Directory => Kind::Directory,
                    FileType::Symlink => Kind::Symlink,
                    _ => Kind::Other,
                };
                let modified = u64::try_from(stat.st_mtime).ok().map(|seconds| {
                    let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0);
                    UNIX_EPOCH + Duration::new(seconds, nanos)
                });
                Ok(Some(Entry {
                    kind,
                    len: u64::try_from(stat.st_size).unwrap_or(0),
                    modified,
                }))
            }
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Renames `from` to `to` within this directory.
    pub(crate) fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let _naming = self.naming();
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(io::Error::from)
    }

    /// Removes the file `name`; nothing there is fine.
    pub(crate) fn remove(&self, name: &OsStr) -> io::Result<()> {
        let _naming = self.naming();
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Reads the whole file `name`.
    pub(crate) fn read(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut bytes = Vec::new();
        self.open_read(name)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Opens the subdirectory `name`, never through a symlink; `None` when it is not one.
    pub(crate) fn subdir(&self, name: &OsStr) -> io::Result<Option<Dir>> {
        match open_no_follow_dir(&self.fd, name) {
            Ok(fd) => Ok(Some(Dir::new(fd, self.path.join(name)))),
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ENOTDIR | libc::ELOOP | libc::ENOENT)
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// The names in this directory (without `.` and `..`).
    pub(crate) fn names(&self) -> io::Result<Vec<OsString>> {
        let listing = rustix::fs::Dir::read_from(&self.fd)?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                use std::os::unix::ffi::OsStrExt;
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }
}

/// Opens the directory `name` in `at`, never through a symlink.
pub(super) fn open_no_follow_dir(at: &OwnedFd, name: &OsStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::place::Place;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_without_a_name_appears_only_when_named_and_never_over_another() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let dir = Place::in_dir(root.path(), "f.bin")
            .open_dir(false)
            .unwrap()
            .unwrap();
        let names = || std::fs::read_dir(root.path()).unwrap().count();

        let mut file = dir.create_anonymous().expect("ext4 and tmpfs make them");
        file.write_all(b"complete").unwrap();
        assert_eq!(names(), 0, "nothing to see before it is named");
        assert!(dir.link_anonymous(&file, OsStr::new("f.bin")).unwrap());
        assert_eq!(
            std::fs::read(root.path().join("f.bin")).unwrap(),
            b"complete"
        );

        let mut other = dir.create_anonymous().unwrap();
        other.write_all(b"another version").unwrap();
        let error = dir.link_anonymous(&other, OsStr::new("f.bin")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read(root.path().join("f.bin")).unwrap(),
            b"complete",
            "the file there is kept"
        );

        let mut dropped = dir.create_anonymous().unwrap();
        dropped.write_all(b"never named").unwrap();
        drop((other, dropped));
        assert_eq!(names(), 1, "a file never named leaves nothing behind");
    }

    #[test]
    fn a_symlink_at_the_name_is_never_opened() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("f.part")).unwrap();
        let dir = Place::in_dir(root.path(), "f")
            .open_dir(false)
            .unwrap()
            .unwrap();
        assert!(dir.create_file(OsStr::new("f.part"), true).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(
            dir.entry(OsStr::new("f.part")).unwrap().unwrap().kind,
            Kind::Symlink
        );
    }
}
