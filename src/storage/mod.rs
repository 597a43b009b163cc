//! Everything on disk before a file gets its final name: the `.part` file, the resume state
//! beside it, and the blocking writer that owns both while a download runs. Every file
//! operation goes through the open directory of the file's `Place`, never through a symlink.

pub(crate) mod buffers;
pub(crate) mod descriptors;
pub(crate) mod dir;
pub(crate) mod disk;
pub(crate) mod durability;
pub(crate) mod files;
mod group_commit;
pub(crate) mod open_dirs;
pub(crate) mod place;
pub(crate) mod pool;
pub(crate) mod quick;
pub(crate) mod ranges;
pub(crate) mod reservations;
pub(crate) mod state;
pub(crate) mod writeback;
pub(crate) mod writer;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Error;
use dir::Dir;
use place::Place;

/// The two working files of one download, beside its final name, and the directory they are
/// all in, opened once and shared by the transfer and its writer. A clone shares the names
/// (one counter, not seven allocations: the file work of every request clones them to move
/// into blocking calls).
#[derive(Debug, Clone)]
pub(crate) struct PartPaths {
    names: Arc<PartNames>,
    /// The final name was free when this download looked: a file appearing there later was
    /// made by another process (a duplicated pod, an overlapping cron run) and is not to be
    /// downloaded over.
    pub(crate) final_absent: bool,
}

/// What [`PartPaths`] names, made once per look.
#[derive(Debug)]
pub(crate) struct PartNames {
    /// Where the finished file goes.
    pub(crate) place: Place,
    /// `NAME.part`, for messages.
    pub(crate) part: PathBuf,
    /// `NAME.part.haul`, for messages.
    pub(crate) state: PathBuf,
    part_name: OsString,
    state_name: OsString,
    dir: Mutex<Option<Arc<Dir>>>,
}

impl std::ops::Deref for PartPaths {
    type Target = PartNames;

    fn deref(&self) -> &PartNames {
        &self.names
    }
}

impl PartPaths {
    /// `NAME.part` holds the bytes; `NAME.part.haul` holds what is needed to trust them.
    pub(crate) fn beside(place: &Place) -> Self {
        // Every buffer sized once (this runs for every request).
        let with_suffix = |suffix: &str| {
            let mut name = OsString::with_capacity(place.name().len() + suffix.len());
            name.push(place.name());
            name.push(suffix);
            name
        };
        let part_name = with_suffix(".part");
        let state_name = with_suffix(".part.haul");
        let final_path = place.path();
        let sibling = |name: &OsStr| {
            let parent = final_path.parent().unwrap_or(Path::new(""));
            let mut path = PathBuf::with_capacity(parent.as_os_str().len() + name.len() + 1);
            path.push(parent);
            path.push(name);
            path
        };
        Self {
            names: Arc::new(PartNames {
                part: sibling(&part_name),
                state: sibling(&state_name),
                place: place.clone(),
                part_name,
                state_name,
                dir: Mutex::default(),
            }),
            final_absent: false,
        }
    }

    pub(crate) fn part_name(&self) -> &OsStr {
        &self.part_name
    }

    pub(crate) fn state_name(&self) -> &OsStr {
        &self.state_name
    }

    /// The files' directory, opened once (blocking). With `create`, the directories that are
    /// missing are made (below the root, never through a symlink); without, `None` when it
    /// does not exist.
    pub(crate) fn dir(&self, create: bool) -> Result<Option<Arc<Dir>>, Error> {
        self.dir_or(|| Ok(self.place.open_dir(create)?.map(Arc::new)))
    }

    /// The files' directory like [`PartPaths::dir`], shared with the downloads running now
    /// through `dirs` (see `storage::open_dirs`) rather than opened for each.
    pub(crate) fn shared_dir(&self, dirs: &open_dirs::OpenDirs) -> Result<Option<Arc<Dir>>, Error> {
        self.dir_or(|| {
            if let Some(dir) = dirs.get(&self.place.dir_path()) {
                return Ok(Some(dir));
            }
            let opened = self.place.open_dir(false)?.map(Arc::new);
            if let Some(dir) = &opened {
                dirs.offer(dir);
            }
            Ok(opened)
        })
    }

    /// The directory this download already holds, or the one `open` gives, then held.
    fn dir_or(
        &self,
        open: impl FnOnce() -> Result<Option<Arc<Dir>>, Error>,
    ) -> Result<Option<Arc<Dir>>, Error> {
        let mut slot = self.dir.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(dir) = slot.as_ref() {
            return Ok(Some(Arc::clone(dir)));
        }
        let opened = open()?;
        slot.clone_from(&opened);
        Ok(opened)
    }

    /// The directory, made when missing.
    pub(crate) fn made_dir(&self) -> Result<Arc<Dir>, Error> {
        self.dir(true)?
            .ok_or_else(|| Error::Internal("a directory was made and is not there".into()))
    }
}
