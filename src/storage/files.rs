//! Opening and removing haul's working files: never through a symlink planted at the path,
//! directories made only when the first byte is about to be written.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use crate::Error;

/// Opens a file for reading and writing without following a symlink planted at `path`.
pub(crate) fn create_no_follow(path: &Path, truncate: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Creates (or opens) a `.part` file, creating its directory when it is missing. Directories
/// are made here, when the first byte is about to be written, rather than before each request:
/// a batch of many small files then pays for no `mkdir` per file, and a download that fails
/// early leaves no empty directory behind.
pub(crate) fn create_part(path: &Path, truncate: bool) -> Result<File, Error> {
    match create_no_follow(path, truncate) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io("create directory", parent, e))?;
            }
            create_no_follow(path, truncate).map_err(|e| Error::io("open", path, e))
        }
        opened => opened.map_err(|e| Error::io("open", path, e)),
    }
}

pub(crate) fn remove_if_present(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}
