//! The output directories that running downloads have open, shared between them. With
//! thousands of small files (or 404s) in one directory, opening and closing the directory for
//! each was two of a request's few file-system calls. A directory is shared only while some
//! download still holds it and only for `FRESH` after it was opened, so a directory replaced
//! under a running batch (removed and made again) is seen within that time, as it was when
//! every download opened its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use super::dir::Dir;

/// How long after it was opened a directory is handed to another download: short enough that
/// a directory replaced under a batch is seen at once, long enough for hundreds of requests.
const FRESH: Duration = Duration::from_millis(100);
/// Entries kept before the ones no download holds any more are swept out.
const SWEEP_ABOVE: usize = 64;

/// Directories opened recently, by path; one per downloader.
#[derive(Debug, Default)]
pub(crate) struct OpenDirs {
    opened: Mutex<HashMap<PathBuf, Opened>>,
}

#[derive(Debug)]
struct Opened {
    dir: Weak<Dir>,
    at: Instant,
}

impl OpenDirs {
    /// The directory at `path`, when a running download opened it within `FRESH`.
    pub(crate) fn get(&self, path: &Path) -> Option<Arc<Dir>> {
        let opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = opened.get(path)?;
        if entry.at.elapsed() >= FRESH {
            return None;
        }
        entry.dir.upgrade()
    }

    /// Offers a directory just opened to the downloads that follow.
    pub(crate) fn offer(&self, dir: &Arc<Dir>) {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        if opened.len() >= SWEEP_ABOVE {
            opened.retain(|_, entry| entry.dir.strong_count() > 0);
        }
        opened.insert(
            dir.path().to_path_buf(),
            Opened {
                dir: Arc::downgrade(dir),
                at: Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::place::Place;

    fn open(root: &Path) -> Arc<Dir> {
        Arc::new(Place::in_dir(root, "f").open_dir(false).unwrap().unwrap())
    }

    #[test]
    fn a_directory_is_shared_only_while_a_download_holds_it() {
        let root = tempfile::tempdir().unwrap();
        let dirs = OpenDirs::default();
        let held = open(root.path());
        dirs.offer(&held);
        let shared = dirs.get(root.path()).expect("shared while held");
        assert!(Arc::ptr_eq(&held, &shared));
        drop((held, shared));
        assert!(
            dirs.get(root.path()).is_none(),
            "closed once nobody holds it"
        );
    }

    #[test]
    fn a_directory_replaced_under_a_running_batch_is_opened_anew() {
        let parent = tempfile::tempdir().unwrap();
        let out = parent.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let dirs = OpenDirs::default();
        let held = open(&out);
        dirs.offer(&held);
        std::fs::remove_dir(&out).unwrap();
        std::fs::create_dir(&out).unwrap();
        // Within `FRESH` the old one may still be handed out; after it, never.
        dirs.opened
            .lock()
            .unwrap()
            .get_mut(out.as_path())
            .unwrap()
            .at = Instant::now().checked_sub(FRESH).unwrap();
        assert!(dirs.get(&out).is_none());
        let fresh = open(&out);
        fresh.create_file("f".as_ref(), false).unwrap();
        assert!(out.join("f").is_file());
    }
}
