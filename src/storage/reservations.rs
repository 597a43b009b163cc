//! Names given in this run to files named by the server (`Content-Disposition`): a name is
//! claimed when the answer's headers arrive, so two downloads of one run never end under one
//! name (the second gets `NAME.1`, `NAME.2`, ...), while the `OnExists` policy keeps applying
//! to a file that was there before the run.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use super::place::Dir;
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

/// The names claimed in this run, per directory.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    names: Mutex<HashSet<PathBuf>>,
}

impl Reservations {
    /// Claims `wanted` in `dir` (`None`: the directory does not exist yet, so nothing is
    /// there) for a download, under `policy` for a file that was there before the run.
    /// Blocking.
    ///
    /// # Errors
    /// `AlreadyExists` under `OnExists::Error`; I/O errors looking at the directory.
    pub(crate) fn claim(
        &self,
        dir: Option<&Dir>,
        dir_path: &std::path::Path,
        wanted: &OsStr,
        policy: OnExists,
    ) -> Result<Claim, Error> {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = |name: &OsStr| -> Result<Option<super::place::Entry>, Error> {
            match dir {
                Some(dir) => dir
                    .entry(name)
                    .map_err(|e| Error::io("inspect", dir_path.join(name), e)),
                None => Ok(None),
            }
        };
        let ours = |name: &OsStr, names: &HashSet<PathBuf>| names.contains(&dir_path.join(name));
        let choose_free = |names: &HashSet<PathBuf>| -> Result<OsString, Error> {
            for n in 0u32.. {
                let mut candidate = wanted.to_owned();
                if n > 0 {
                    candidate.push(format!(".{n}"));
                }
                if !ours(&candidate, names) && taken(&candidate)?.is_none() {
                    return Ok(candidate);
                }
            }
            Err(Error::Internal("no free name".into()))
        };
        let chosen = if ours(wanted, &names) {
            // Claimed by another download of this run.
            choose_free(&names)?
        } else {
            let file = |entry: &super::place::Entry| entry.kind == super::place::Kind::File;
            match (taken(wanted)?, policy) {
                (None, _) => wanted.to_owned(),
                (Some(entry), OnExists::Overwrite) if file(&entry) => wanted.to_owned(),
                (Some(entry), OnExists::Skip) if file(&entry) => {
                    return Ok(Claim::Present(entry.len));
                }
                (Some(entry), OnExists::Error) if file(&entry) => {
                    return Err(Error::AlreadyExists {
                        path: dir_path.join(wanted),
                    });
                }
                (Some(_), _) => choose_free(&names)?,
            }
        };
        names.insert(dir_path.join(&chosen));
        Ok(Claim::Name(chosen))
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
        let dir = Place::in_dir(root.path(), "x")
            .open_dir(false)
            .unwrap()
            .unwrap();
        let reservations = Reservations::default();
        let claim = |name: &str, policy| {
            reservations.claim(Some(&dir), root.path(), OsStr::new(name), policy)
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
            claim("old.pdf", OnExists::Skip).unwrap(),
            Claim::Present(11)
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
            claim("old.pdf", OnExists::Overwrite).unwrap(),
            Claim::Name("old.pdf".into())
        );
        assert_eq!(
            claim("old.pdf", OnExists::Overwrite).unwrap(),
            Claim::Name("old.pdf.2".into()),
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
}
