//! Everything on disk before a file gets its final name: the `.part` file, the resume state
//! beside it, and the blocking writer that owns both while a download runs.

pub(crate) mod buffers;
pub(crate) mod files;
pub(crate) mod pool;
pub(crate) mod ranges;
pub(crate) mod state;
pub(crate) mod writeback;
pub(crate) mod writer;

use std::path::{Path, PathBuf};

/// The two working files of one download, beside its final path.
#[derive(Debug, Clone)]
pub(crate) struct PartPaths {
    pub(crate) part: PathBuf,
    pub(crate) state: PathBuf,
}

impl PartPaths {
    /// `NAME.part` holds the bytes; `NAME.part.haul` holds what is needed to trust them.
    pub(crate) fn beside(final_path: &Path) -> Self {
        let with_suffix = |suffix: &str| {
            let mut name = final_path.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        Self {
            part: with_suffix(".part"),
            state: with_suffix(".part.haul"),
        }
    }
}
