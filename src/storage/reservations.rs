//! Output names claimed in this run, so that two downloads of one run never finish at one path.
//! Every download claims its output before a byte is written and holds it until its rename:
//! an exact name (`-o`, `out=`, the URL's name) is held while the download runs and a second
//! download of that path waits for the first; a name the server chooses (`Content-Disposition`)
//! and the URL's name standing in for it until the answer arrives are given once in a run
//! (the second gets `NAME.1`, `NAME.2`, ...). The `OnExists` policy keeps applying to a file
//! that was there before the run.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::dir::Dir;
use crate::Error;
use crate::config::OnExists;

/// What a claim gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This name is the download's.
    Name(OsString),
    /// A file was there before the run, and the policy keeps it: the download is complete.
    Present(u64),
}

/// Who holds a name, and whether it stays taken after its holder ended.
#[derive(Debug, Clone, Copy)]
struct Holder {
    owner: u64,
    /// Given once in a run: kept after the download ends.
    for_the_run: bool,
}

/// The names claimed in this run, by full path.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    names: Mutex<HashMap<PathBuf, Holder>>,
}

impl Reservations {
    fn names(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Holder>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the exact output `path` for `owner` while it runs: `false` when another download
    /// of this run holds it (the caller waits for it, as for another process).
    pub(crate) fn hold(&self, path: &Path, owner: u64) -> bool {
        let mut names = self.names();
        match names.get(path) {
            Some(holder) if holder.owner != owner => false,
            _ => {
                names.insert(
                    path.to_path_buf(),
                    Holder {
                        owner,
                        for_the_run: false,
                    },
                );
                true
            }
        }
    }

    /// Claims `wanted` in `dir` for `owner` as a name that stands in until the server names
    /// the file: `wanted` itself unless another download of this run has it, else the first
    /// free `wanted.N`. Blocking.
    pub(crate) fn claim_provisional(
        &self,
        dir: Option<&Dir>,
        dir_path: &Path,
        wanted: &OsStr,
        owner: u64,
    ) -> Result<OsString, Error> {
        let mut names = self.names();
        let chosen = choose(&names, dir, dir_path, wanted, owner, false)?;
        names.insert(
            dir_path.join(&chosen),
            Holder {
                owner,
                for_the_run: true,
            },
        );
        Ok(chosen)
    }

    /// Claims `wanted` in `dir` (`None`: the directory does not exist yet, so nothing is
    /// there) for `owner`'s download, under `policy` for a file that was there before the run.
    /// A name this download already holds is its own. Under `OnExists::Skip` a file that is
    /// there is kept only when `is_this_file` says it is this download's (the length and
    /// `ETag` the server gives now): another file of that name gets another name. Blocking.
    ///
    /// # Errors
    /// `AlreadyExists` under `OnExists::Error`; I/O errors looking at the directory.
    pub(crate) fn claim(
        &self,
        dir: Option<&Dir>,
        dir_path: &Path,
        wanted: &OsStr,
        policy: OnExists,
        owner: u64,
        is_this_file: &dyn Fn(&Dir, &OsStr, &super::dir::Entry) -> bool,
    ) -> Result<Claim, Error> {
        let mut names = self.names();
        let chosen = match names.get(&dir_path.join(wanted)) {
            Some(holder) if holder.owner == owner => wanted.to_owned(),
            // Claimed by another download of this run.
            Some(_) => choose(&names, dir, dir_path, wanted, owner, true)?,
            None => {
                let file = |entry: &super::dir::Entry| entry.kind == super::dir::Kind::File;
                match (taken(dir, dir_path, wanted)?, policy) {
                    (None, _) => wanted.to_owned(),
                    (Some(entry), OnExists::Overwrite) if file(&entry) => wanted.to_owned(),
                    (Some(entry), OnExists::Skip)
                        if file(&entry)
                            && dir.is_some_and(|dir| is_this_file(dir, wanted, &entry)) =>
                    {
                        // Kept as this download's: no other download of this run may claim
                        // the same file as its own.
                        names.insert(
                            dir_path.join(wanted),
                            Holder {
                                owner,
                                for_the_run: true,
                            },
                        );
                        return Ok(Claim::Present(entry.len));
                    }
                    (Some(entry), OnExists::Error) if file(&entry) => {
                        return Err(Error::AlreadyExists {
                            path: dir_path.join(wanted),
                        });
                    }
                    (Some(_), _) => choose(&names, dir, dir_path, wanted, owner, true)?,
                }
            }
        };
        names.insert(
            dir_path.join(&chosen),
            Holder {
                owner,
                for_the_run: true,
            },
        );
        Ok(Claim::Name(chosen))
    }

    /// Gives up what `owner` held while it ran; names given once in a run stay taken.
    pub(crate) fn release(&self, owner: u64) {
        self.names()
            .retain(|_, holder| holder.owner != owner || holder.for_the_run);
    }
}

/// What is at `name` in `dir`, if anything.
fn taken(
    dir: Option<&Dir>,
    dir_path: &Path,
    name: &OsStr,
) -> Result<Option<super::dir::Entry>, Error> {
    match dir {
        Some(dir) => dir
            .entry(name)
            .map_err(|e| Error::io("inspect", dir_path.join(name), e)),
        None => Ok(None),
    }
}

/// The first of `wanted` (unless `skip_first`), `wanted.1`, `wanted.2`, ... that no other
/// download of this run holds and, past the first, that nothing on disk has.
fn choose(
    names: &HashMap<PathBuf, Holder>,
    dir: Option<&Dir>,
    dir_path: &Path,
    wanted: &OsStr,
    owner: u64,
    skip_first: bool,
) -> Result<OsString, Error> {
    for n in u32::from(skip_first)..u32::MAX {
        let mut candidate = wanted.to_owned();
        if n > 0 {
            candidate.push(format!(".{n}"));
        }
        let held = names
            .get(&dir_path.join(&candidate))
            .is_some_and(|holder| holder.owner != owner);
        if !held && (n == 0 || taken(dir, dir_path, &candidate)?.is_none()) {
            return Ok(candidate);
        }
    }
    Err(Error::Internal("no free name".into()))
}

/// The names one download holds, given back when it ends (see `Reservations::release`).
pub(crate) struct Claims {
    reservations: Arc<Reservations>,
    owner: u64,
}

impl Claims {
    pub(crate) fn new(reservations: Arc<Reservations>, owner: u64) -> Self {
        Self {
            reservations,
            owner,
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        self.reservations.release(self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::place::Place;

    #[test]
    fn a_run_never_gives_one_name_twice_and_respects_files_from_before() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("old.pdf"), b"from before").unwrap();
        std::fs::write(root.path().join("kept.pdf"), b"from before").unwrap();
        let dir = Place::in_dir(root.path(), "x")
            .open_dir(false)
            .unwrap()
            .unwrap();
        let reservations = Reservations::default();
        let owner = std::cell::Cell::new(0);
        let claim = |name: &str, policy| {
            owner.set(owner.get() + 1);
            reservations.claim(
                Some(&dir),
                root.path(),
                OsStr::new(name),
                policy,
                owner.get(),
                &|_, _, _| true,
            )
        };
        assert_eq!(
            claim("r.pdf", OnExists::Skip).unwrap(),
            Claim::Name("r.pdf".into())
        );
        assert_eq!(
            claim("r.pdf", OnExists::Skip).unwrap(),
            Claim::Name("r.pdf.1".into())
        );
        assert_eq!(
            claim("r.pdf", OnExists::Overwrite).unwrap(),
            Claim::Name("r.pdf.2".into())
        );
        assert_eq!(
            claim("kept.pdf", OnExists::Overwrite).unwrap(),
            Claim::Name("kept.pdf".into()),
            "overwrite takes the name of a file from before"
        );
        assert_eq!(
            claim("old.pdf", OnExists::Rename).unwrap(),
            Claim::Name("old.pdf.1".into())
        );
        assert!(matches!(
            claim("old.pdf", OnExists::Error),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(
            claim("old.pdf", OnExists::Skip).unwrap(),
            Claim::Present(11)
        );
        assert_eq!(
            claim("old.pdf", OnExists::Skip).unwrap(),
            Claim::Name("old.pdf.2".into()),
            "a file kept for one download is no other download's"
        );
        assert_eq!(
            claim("old.pdf", OnExists::Overwrite).unwrap(),
            Claim::Name("old.pdf.3".into()),
            "a name is given once in a run"
        );
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("link.pdf")).unwrap();
        assert_eq!(
            claim("link.pdf", OnExists::Skip).unwrap(),
            Claim::Name("link.pdf.1".into()),
            "a symlink is neither kept as the file nor replaced"
        );
        assert_eq!(
            claim("link.pdf", OnExists::Overwrite).unwrap(),
            Claim::Name("link.pdf.2".into())
        );
    }

    #[test]
    fn a_file_from_before_is_kept_only_when_it_is_this_downloads() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("x.bin"), b"other file").unwrap();
        let dir = Place::in_dir(root.path(), "x")
            .open_dir(false)
            .unwrap()
            .unwrap();
        let reservations = Reservations::default();
        let claim = |owner| {
            reservations.claim(
                Some(&dir),
                root.path(),
                OsStr::new("x.bin"),
                OnExists::Skip,
                owner,
                &|_, _, entry| entry.len == 4,
            )
        };
        assert_eq!(
            claim(1).unwrap(),
            Claim::Name("x.bin.1".into()),
            "another file of that name is neither kept as this one nor replaced"
        );
    }

    #[test]
    fn a_name_is_held_by_one_download_at_a_time_and_a_provisional_one_gets_a_suffix() {
        let root = tempfile::tempdir().unwrap();
        let dir = Place::in_dir(root.path(), "x")
            .open_dir(false)
            .unwrap()
            .unwrap();
        let reservations = Reservations::default();
        let exact = root.path().join("a.iso");
        assert!(reservations.hold(&exact, 1));
        assert!(reservations.hold(&exact, 1), "its own");
        assert!(!reservations.hold(&exact, 2), "another waits");
        reservations.release(1);
        assert!(reservations.hold(&exact, 2), "free once the first ended");

        let provisional = |owner| {
            reservations.claim_provisional(Some(&dir), root.path(), OsStr::new("r.csv"), owner)
        };
        assert_eq!(provisional(3).unwrap(), "r.csv");
        assert_eq!(provisional(4).unwrap(), "r.csv.1");
        // The server names both `r.csv`: the first keeps it, the second gets another name.
        let named = |owner| {
            reservations.claim(
                Some(&dir),
                root.path(),
                OsStr::new("r.csv"),
                OnExists::Skip,
                owner,
                &|_, _, _| true,
            )
        };
        assert_eq!(named(3).unwrap(), Claim::Name("r.csv".into()));
        assert_eq!(
            named(4).unwrap(),
            Claim::Name("r.csv.1".into()),
            "its own stand-in"
        );
        reservations.release(3);
        assert_eq!(provisional(5).unwrap(), "r.csv.2", "given once in a run");
    }
}
