//! Where a download's files live, resolved so that a path from the network never leaves its
//! directory. A `Place` is a directory the user chose (`root`: symlinks in it are the user's,
//! and are followed), directories below it that came from the network (`dirs`), and a file
//! name. The directories below the root are opened one by one without following any symlink
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it, an
//! `O_NOFOLLOW | O_DIRECTORY` walk otherwise), and every file operation then happens relative
//! to that open directory (`storage::dir`), with `O_NOFOLLOW` on the name: the `.part`, its
//! state, the final rename, the directories made on the way, and sync's deletions. A symlink
//! in the way is an error, never a write elsewhere.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};

use super::dir::{Dir, open_no_follow_dir};
use crate::Error;

/// A file's location: a trusted root, untrusted directories below it, a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Place {
    root: PathBuf,
    dirs: Vec<OsString>,
    name: OsString,
}

impl Place {
    /// `name` in `root` (a name that came from the network: a single safe component).
    pub(crate) fn in_dir(root: &Path, name: impl Into<OsString>) -> Self {
        Self {
            root: root.to_path_buf(),
            dirs: Vec::new(),
            name: name.into(),
        }
    }

    /// `relative` (`/`-separated, from the network) below `root`.
    ///
    /// # Errors
    /// [`Error::UnsafeName`] when a segment is empty, `.`, `..`, or holds a NUL.
    pub(crate) fn below(root: &Path, relative: &str) -> Result<Self, Error> {
        let unsafe_name = || Error::UnsafeName {
            name: relative.to_owned(),
        };
        let mut segments: Vec<OsString> = Vec::new();
        for segment in relative.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." || segment.contains('\0') {
                return Err(unsafe_name());
            }
            segments.push(segment.into());
        }
        let name = segments.pop().ok_or_else(unsafe_name)?;
        Ok(Self {
            root: root.to_path_buf(),
            dirs: segments,
            name,
        })
    }

    /// A path the user typed: all of it is theirs, symlinks included.
    ///
    /// # Errors
    /// [`Error::UnsafeName`] when it names no file (`dir/`, `..`).
    pub(crate) fn user_path(path: &Path) -> Result<Self, Error> {
        let name = path.file_name().ok_or_else(|| Error::UnsafeName {
            name: path.display().to_string(),
        })?;
        let root = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Self::in_dir(&root, name))
    }

    /// The full path, for messages and results.
    pub(crate) fn path(&self) -> PathBuf {
        // Sized once: built for every request, and growing it reallocated twice or more.
        let length = self.root.as_os_str().len()
            + self.dirs.iter().map(|dir| dir.len() + 1).sum::<usize>()
            + self.name.len()
            + 1;
        let mut path = PathBuf::with_capacity(length);
        path.push(&self.root);
        path.extend(&self.dirs);
        path.push(&self.name);
        path
    }

    pub(crate) fn name(&self) -> &OsStr {
        &self.name
    }

    /// The same directory, another name.
    pub(crate) fn sibling(&self, name: impl Into<OsString>) -> Self {
        Self {
            name: name.into(),
            ..self.clone()
        }
    }

    /// The directory as a path (for messages, and the key of a name claimed in it).
    pub(crate) fn dir_path(&self) -> PathBuf {
        let mut path = self.root.clone();
        path.extend(&self.dirs);
        path
    }

    /// Opens the file's directory; with `create`, makes what is missing on the way (below the
    /// root, never through a symlink). `None` when it does not exist and `create` is false.
    ///
    /// # Errors
    /// [`Error::UnsafePath`] for a symlink (or a non-directory) in the way; I/O errors.
    pub(crate) fn open_dir(&self, create: bool) -> Result<Option<Dir>, Error> {
        let root = match open_directory(CWD, &self.root) {
            Ok(fd) => fd,
            Err(error) if error.kind() == io::ErrorKind::NotFound && create => {
                create_dirs_durably(&self.root)
                    .map_err(|e| Error::io("create directory", &self.root, e))?;
                open_directory(CWD, &self.root).map_err(|e| Error::io("open", &self.root, e))?
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(Error::io("open", &self.root, error)),
        };
        if self.dirs.is_empty() {
            return Ok(Some(Dir::new(root, self.root.clone())));
        }
        let path = self.dir_path();
        let relative: PathBuf = self.dirs.iter().collect();
        match open_beneath(&root, &relative) {
            Ok(fd) => return Ok(Some(Dir::new(fd, path))),
            Err(Beneath::Unsupported) => {}
            Err(Beneath::Missing) if !create => return Ok(None),
            Err(Beneath::Missing) => {}
            Err(Beneath::Failed(error)) => return Err(self.refusal(&root, error)),
        }
        self.walk(root, create)
            .map(|fd| fd.map(|fd| Dir::new(fd, path)))
    }

    /// Opens `dirs` one by one below `root`, never following a symlink.
    fn walk(&self, root: OwnedFd, create: bool) -> Result<Option<OwnedFd>, Error> {
        let mut current = root;
        let mut so_far = self.root.clone();
        for segment in &self.dirs {
            so_far.push(segment);
            let next = match open_no_follow_dir(&current, segment) {
                Ok(fd) => fd,
                Err(error) if error.kind() == io::ErrorKind::NotFound && create => {
                    match rustix::fs::mkdirat(&current, segment.as_os_str(), Mode::from(0o777)) {
                        Ok(()) => {
                            // The new directory's name survives a power cut only once its
                            // parent is synced (once per directory made).
                            rustix::fs::fsync(&current).map_err(|error| {
                                Error::io("sync directory", &so_far, error.into())
                            })?;
                        }
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(error) => {
                            return Err(Error::io("create directory", &so_far, error.into()));
                        }
                    }
                    open_no_follow_dir(&current, segment)
                        .map_err(|error| self.refusal(&current, error))?
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(self.refusal(&current, error)),
            };
            current = next;
        }
        Ok(Some(current))
    }

    /// The error for a directory that could not be opened: a symlink or a file in the way is
    /// named as such.
    fn refusal(&self, _at: &OwnedFd, error: io::Error) -> Error {
        let code = error.raw_os_error();
        if code == Some(libc::ELOOP) || code == Some(libc::EXDEV) {
            return Error::UnsafePath {
                path: self.path(),
                reason: "a directory on the way is a symlink; haul never follows symlinks on \
                         paths that came from the network"
                    .into(),
            };
        }
        if code == Some(libc::ENOTDIR) {
            return Error::UnsafePath {
                path: self.path(),
                reason: "a directory on the way is a file or a symlink".into(),
            };
        }
        Error::io("open directory", self.dir_path(), error)
    }
}

enum Beneath {
    /// The kernel has no `openat2` (or a filter forbids it): walk instead.
    Unsupported,
    Missing,
    Failed(io::Error),
}

/// `mkdir -p`, syncing the parent of every directory it makes, so that the new names survive a
/// power cut (once per directory made).
fn create_dirs_durably(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = path;
    while !at.as_os_str().is_empty() && !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn open_directory(at: impl std::os::fd::AsFd, path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

#[cfg(target_os = "linux")]
fn open_beneath(root: &OwnedFd, relative: &Path) -> Result<OwnedFd, Beneath> {
    match rustix::fs::openat2(
        root,
        relative,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(fd),
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM | rustix::io::Errno::AGAIN) => {
            Err(Beneath::Unsupported)
        }
        Err(rustix::io::Errno::NOENT) => Err(Beneath::Missing),
        Err(error) => Err(Beneath::Failed(error.into())),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_beneath(_root: &OwnedFd, _relative: &Path) -> Result<OwnedFd, Beneath> {
    Err(Beneath::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::dir::Kind;

    #[test]
    fn a_symlinked_directory_below_the_root_is_refused_and_nothing_is_written_through_it() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let place = Place::below(root.path(), "evil/file.txt").unwrap();
        let error = place.open_dir(true).unwrap_err();
        assert!(matches!(error, Error::UnsafePath { .. }), "{error}");
        let deeper = Place::below(root.path(), "evil/sub/file.txt").unwrap();
        assert!(matches!(
            deeper.open_dir(true),
            Err(Error::UnsafePath { .. })
        ));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_directories_are_made_below_the_root_and_files_opened_in_them() {
        let root = tempfile::tempdir().unwrap();
        let place = Place::below(root.path(), "a/b/c.bin").unwrap();
        assert!(place.open_dir(false).unwrap().is_none());
        let dir = place.open_dir(true).unwrap().unwrap();
        dir.create_file(OsStr::new("c.bin"), true).unwrap();
        assert!(root.path().join("a/b/c.bin").is_file());
        assert_eq!(place.path(), root.path().join("a/b/c.bin"));
        let entry = dir.entry(OsStr::new("c.bin")).unwrap().unwrap();
        assert_eq!((entry.kind, entry.len), (Kind::File, 0));
    }

    #[test]
    fn unsafe_relative_paths_are_refused() {
        for bad in ["", "a//b", "../x", "a/../b", "a/.", "a\0b"] {
            assert!(Place::below(Path::new("/r"), bad).is_err(), "{bad:?}");
        }
        let place = Place::below(Path::new("/r"), ".well-known/.htaccess").unwrap();
        assert_eq!(place.path(), Path::new("/r/.well-known/.htaccess"));
    }
}
