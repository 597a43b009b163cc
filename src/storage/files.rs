//! Opening and removing haul's working files in their directory: never through a symlink,
//! directories made only when the first byte is about to be written.

use std::fs::File;

use super::PartPaths;
use crate::Error;

/// Creates (or opens) a `.part` file, creating its directory when it is missing. Directories
/// are made here, when the first byte is about to be written, rather than before each request:
/// a batch of many small files then pays for no `mkdir` per file, and a download that fails
/// early leaves no empty directory behind.
pub(crate) fn create_part(paths: &PartPaths, truncate: bool) -> Result<File, Error> {
    paths
        .made_dir()?
        .create_file(paths.part_name(), truncate)
        .map_err(|e| Error::io("open", &paths.part, e))
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
