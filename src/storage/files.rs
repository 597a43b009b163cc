//! Opening and removing haul's working files in their directory: never through a symlink,
//! directories made only when the first byte is about to be written.

use std::fs::File;

use super::PartPaths;
use crate::Error;

/// Creates (or opens) a `.part` file, creating its directory when it is missing, and locks
/// it for this process: another haul process (a cron run that overlaps the previous one, a
/// duplicated pod) writing the same file gets `Error::Busy` and waits, never truncating or
/// renaming this one's bytes. The lock is a POSIX record lock (`fcntl`), which NFS honours; it
/// is released when the file is closed, or when the process dies. With `truncate`, the file is
/// emptied only once it is locked. Directories are made here, when the first byte is about to
/// be written, rather than before each request: a batch of many small files then pays for no
/// `mkdir` per file, and a download that fails early leaves no empty directory behind.
pub(crate) fn create_part(paths: &PartPaths, truncate: bool) -> Result<File, Error> {
    let dir = paths.made_dir()?;
    let file = dir
        .create_file(paths.part_name(), false)
        .map_err(|e| Error::io("open", &paths.part, e))?;
    let busy = || Error::Busy {
        path: paths.place.path(),
    };
    match rustix::fs::fcntl_lock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::ACCESS) => return Err(busy()),
        Err(error) => return Err(Error::io("lock", &paths.part, error.into())),
    }
    // The name may have moved on while the lock was taken (the other process finished and
    // renamed it): then this is not the `.part` any more.
    let ours = file
        .metadata()
        .map_err(|e| Error::io("inspect", &paths.part, e))?;
    let named = rustix::fs::statat(
        dir.fd(),
        paths.part_name(),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
    let same = named.is_ok_and(|stat| {
        use std::os::unix::fs::MetadataExt;
        stat.st_ino == ours.ino() && stat.st_dev == ours.dev()
    });
    if !same {
        return Err(busy());
    }
    // Another process finished the file since this one looked (and its `.part` is gone, so
    // this one just made an empty one): look again rather than download it a second time.
    let finished_meanwhile = paths.final_absent
        && rustix::fs::statat(
            dir.fd(),
            paths.place.name(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .is_ok();
    if finished_meanwhile {
        if ours.len() == 0 {
            let _ = dir.remove(paths.part_name());
        }
        return Err(busy());
    }
    // Seen empty under the lock: nothing to cut (a fresh `.part`, the common case, is spared a
    // metadata write).
    if truncate && ours.len() > 0 {
        file.set_len(0)
            .map_err(|e| Error::io("truncate", &paths.part, e))?;
    }
    Ok(file)
}

/// Removes the `.part` file, if there is one.
pub(crate) fn remove_part(paths: &PartPaths) -> Result<(), Error> {
    match paths.dir(false)? {
        Some(dir) => dir
            .remove(paths.part_name())
            .map_err(|e| Error::io("remove", &paths.part, e)),
        None => Ok(()),
    }
}

/// Removes the state file, if there is one.
pub(crate) fn remove_state(paths: &PartPaths) -> Result<(), Error> {
    match paths.dir(false)? {
        Some(dir) => dir
            .remove(paths.state_name())
            .map_err(|e| Error::io("remove", &paths.state, e)),
        None => Ok(()),
    }
}
