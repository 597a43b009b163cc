//! What is already on disk and where the finished file goes: the `OnExists` policy for an
//! existing file, the resume state a transfer may trust, the `304` outcome, the committed name
//! (`Content-Disposition`, `NAME.1`), and modification times. Every look and every change goes
//! through the file's open directory (`PartPaths::dir`), never through a symlink.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Completed, Session, Transfer};
use crate::Error;
use crate::config::OnExists;
use crate::integrity::{Checksum, Hasher};
use crate::progress::Event;
use crate::storage::PartPaths;
use crate::storage::place::{Dir, Entry, Kind};
use crate::storage::quick::QuickFs;
use crate::storage::state::{ResumeState, Unusable, Validators};

/// What is on disk for one transfer, looked at in one call (inline once the file system has
/// proven fast, else in one trip to a blocking thread: see `storage::quick`).
pub(super) struct OnDisk {
    /// What is at the final name (a symlink itself, not its target), when anything is there.
    pub(super) existing: Option<Entry>,
    /// The saved resume state.
    state: Result<ResumeState, Unusable>,
    /// The `.part` file's length when it is a regular file (looked at only when there is a
    /// state to go with it).
    part_len: Option<u64>,
    /// The `ETag` haul remembered on the existing file (`user.haul.etag`), when asked for.
    pub(super) etag: Option<String>,
}

impl OnDisk {
    /// Looks at the final name, the state and the `.part`; with `rename`, first moves the
    /// final name to the first free `NAME.N` (wget's way) and looks there.
    pub(super) async fn look(
        quick: &QuickFs,
        paths: &PartPaths,
        rename: bool,
        want_etag: bool,
    ) -> Result<(Self, PartPaths), Error> {
        let paths = paths.clone();
        quick
            .run("inspecting the output", move || {
                let dir = paths.dir(false)?;
                let paths = match (&dir, rename) {
                    (Some(dir), true) => {
                        let free = free_name(dir, paths.place.name())
                            .map_err(|e| Error::io("inspect", paths.place.path(), e))?;
                        PartPaths::beside(&paths.place.sibling(free))
                    }
                    _ => paths,
                };
                let existing = match &dir {
                    Some(dir) => dir
                        .entry(paths.place.name())
                        .map_err(|e| Error::io("inspect", paths.place.path(), e))?,
                    None => None,
                };
                let etag = match (&dir, &existing) {
                    (Some(dir), Some(entry)) if want_etag && entry.kind == Kind::File => dir
                        .open_read(paths.place.name())
                        .ok()
                        .and_then(|file| read_etag(&file)),
                    _ => None,
                };
                let state = ResumeState::load(&paths);
                let part_len = match (&state, &dir) {
                    (Ok(_), Some(dir)) => dir
                        .entry(paths.part_name())
                        .ok()
                        .flatten()
                        .filter(|entry| entry.kind == Kind::File)
                        .map(|entry| entry.len),
                    _ => None,
                };
                Ok((
                    Self {
                        existing,
                        state,
                        part_len,
                        etag,
                    },
                    paths,
                ))
            })
            .await
    }
}

impl Transfer<'_> {
    /// Applies the `OnExists` policy to a final file that is already there: `Some` when it
    /// is kept (and counts as complete), `None` when it is to be downloaded (again). A file
    /// is kept only when nothing known contradicts it: its checksum (a mismatch is an
    /// error, the file left alone), its expected size, or, with `check_existing`, the
    /// server's length (a different length is downloaded again, with a warning).
    pub(super) async fn existing_file(
        &self,
        on_disk: &OnDisk,
        paths: &PartPaths,
        revalidating: bool,
        clock: Instant,
    ) -> Result<Option<Completed>, Error> {
        let Some(entry) = &on_disk.existing else {
            return Ok(None);
        };
        if revalidating {
            // The server decides: unchanged (304) or a new version that replaces this one.
            return Ok(None);
        }
        let exists = || Error::AlreadyExists {
            path: paths.place.path(),
        };
        match self.on_exists() {
            OnExists::Overwrite if entry.kind != Kind::Directory => return Ok(None),
            OnExists::Skip if entry.kind == Kind::File => {}
            _ => return Err(exists()),
        }
        let digest = match &self.request.checksum {
            None => None,
            Some(expected) => {
                let actual = hash_file(paths, expected).await?;
                if &actual != expected {
                    return Err(Error::ExistingMismatch {
                        path: paths.place.path(),
                        algorithm: expected.algorithm().name(),
                        expected: expected.hex(),
                        actual: actual.hex(),
                    });
                }
                Some(actual)
            }
        };
        let expected_len = match self.request.size {
            Some(size) => Some(size),
            None if digest.is_none() && self.check_existing() => self.server_length().await?,
            None => None,
        };
        if let Some(expected) = expected_len
            && expected != entry.len
        {
            self.emit(&Event::Warning {
                id: self.report.id(),
                message: format!(
                    "`{}` is already there with {} bytes, not {expected}: downloading it again",
                    paths.place.path().display(),
                    entry.len
                ),
            });
            return Ok(None);
        }
        Ok(Some(Completed {
            path: paths.place.path(),
            bytes: entry.len,
            digest,
            resumed_from: entry.len,
            duration: clock.elapsed(),
            already_present: true,
            etag: None,
            last_modified: None,
        }))
    }

    fn check_existing(&self) -> bool {
        self.request
            .check_existing
            .unwrap_or(self.config().check_existing)
    }

    /// The file's length as the server says (a `HEAD`).
    async fn server_length(&self) -> Result<Option<u64>, Error> {
        self.client
            .probe(
                &self.request.url,
                Some(&self.request.headers),
                self.report,
                self.cancel,
            )
            .await
    }

    /// The resume state to start from: the saved one when it can be trusted for this request,
    /// otherwise an empty one (and a `Restarted` event saying why, when there was one).
    pub(super) fn resume_state(&self, paths: &PartPaths, on_disk: OnDisk) -> (ResumeState, bool) {
        let checksum = self.request.checksum.as_ref().map(ToString::to_string);
        let fresh = ResumeState::new(self.url(), Validators::default(), checksum.clone());
        let refuse = |why: String| {
            self.emit(&Event::Restarted {
                id: self.report.id(),
                reason: format!("not resuming `{}`: {why}", paths.part.display()),
            });
            fresh.clone()
        };
        let state = match on_disk.state {
            Err(Unusable::Missing) => return (fresh.clone(), false),
            Err(Unusable::Invalid(why)) => {
                return (refuse(format!("its state file is {why}")), true);
            }
            Ok(state) => state,
        };
        let part_len = on_disk.part_len;
        // Another URL (a mirror, a re-signed link) is fine when the server can vouch for the
        // bytes with If-Range; without a validator only the same URL is trusted.
        if state.url != fresh.url && state.validators.if_range().is_none() {
            return (
                refuse("it was downloaded from another URL and has no validator".into()),
                true,
            );
        }
        if state.checksum != checksum {
            return (refuse("it was started with another checksum".into()), true);
        }
        let Some(part_len) = part_len else {
            return (fresh.clone(), true);
        };
        if state.validators.if_range().is_none() && state.validators.total_bytes.is_none() {
            return (
                refuse("the server gave no validator and no length to check it against".into()),
                true,
            );
        }
        let mut state = state;
        state.done.clip(part_len);
        (state, true)
    }

    /// The outcome of a `304`: the existing file stays, with the server's validators.
    pub(super) async fn unchanged(
        &self,
        session: &Session,
        paths: &PartPaths,
        clock: Instant,
    ) -> Result<Completed, Error> {
        let lookup = paths.clone();
        let entry = tokio::task::spawn_blocking(move || match lookup.dir(false)? {
            Some(dir) => dir
                .entry(lookup.place.name())
                .map_err(|e| Error::io("inspect", lookup.place.path(), e)),
            None => Ok(None),
        })
        .await
        .map_err(|e| Error::Internal(format!("inspecting the output failed: {e}")))??;
        let bytes = entry.map_or(0, |entry| entry.len);
        let (old_etag, old_modified) = session.revalidate.clone().unwrap_or_default();
        let validators = &session.state.validators;
        Ok(Completed {
            path: paths.place.path(),
            bytes,
            digest: None,
            resumed_from: bytes,
            duration: clock.elapsed(),
            already_present: true,
            etag: validators.etag.clone().or(old_etag),
            last_modified: validators.last_modified.clone().or(old_modified),
        })
    }

    /// Where the finished file goes and what it keeps from the server, gathered here so that
    /// the naming itself (`Naming::apply`) runs on a blocking thread.
    pub(super) fn naming(&self, session: &Session, paths: &PartPaths) -> Naming {
        // With `content_disposition`, the name claimed for the server's suggestion.
        let suggested = session
            .claimed_name
            .clone()
            .filter(|claimed| claimed.as_os_str() != paths.place.name());
        let mtime = session
            .state
            .validators
            .last_modified
            .as_deref()
            .filter(|_| self.remote_time())
            .and_then(crate::client::http::parse_http_date);
        let etag = session.state.validators.etag.clone();
        Naming {
            suggested,
            mtime,
            etag,
        }
    }
}

/// Where a finished `.part` goes.
pub(super) struct Naming {
    /// The name claimed for the server's `Content-Disposition` name, when honoured.
    suggested: Option<OsString>,
    /// The server's `Last-Modified`, in seconds since the epoch, when haul keeps it.
    pub(super) mtime: Option<u64>,
    /// The server's `ETag`, remembered in the file's `user.haul.etag` attribute for a later
    /// conditional request (`-N`).
    pub(super) etag: Option<String>,
}

impl Naming {
    /// Gives a finished, synced `.part` its final name (the suggested one, or `NAME.1`, ...
    /// when that is taken; else the planned one), removes the state file when `drop_state`,
    /// and sets the server's time (unless `mtime` was taken to set it on an open file).
    /// Returns the final path. Blocking.
    pub(super) fn apply(self, paths: &PartPaths, drop_state: bool) -> Result<PathBuf, Error> {
        let dir = paths.made_dir()?;
        let name = self
            .suggested
            .clone()
            .unwrap_or_else(|| paths.place.name().to_owned());
        let final_path = paths.place.sibling(name.clone()).path();
        dir.rename(paths.part_name(), &name)
            .map_err(|e| Error::io("rename", &paths.part, e))?;
        if drop_state {
            dir.remove(paths.state_name())
                .map_err(|e| Error::io("remove", &paths.state, e))?;
        }
        if self.mtime.is_some() || self.etag.is_some() {
            // Only the timestamp or the ETag is lost if this fails, never the file.
            if let Ok(file) = dir.open_read(&name) {
                if let Some(seconds) = self.mtime {
                    let _ = file.set_modified(epoch_seconds(seconds));
                }
                if let Some(etag) = &self.etag {
                    write_etag(&file, etag);
                }
            }
        }
        Ok(final_path)
    }
}

/// The extended attribute that keeps a file's `ETag`.
const ETAG_ATTRIBUTE: &str = "user.haul.etag";

/// Remembers `etag` on `file` (where the file system has extended attributes; otherwise
/// `-N` asks with the modification time alone).
pub(super) fn write_etag(file: &std::fs::File, etag: &str) {
    let _ = rustix::fs::fsetxattr(
        file,
        ETAG_ATTRIBUTE,
        etag.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    );
}

/// The `ETag` remembered on `file`, if any.
fn read_etag(file: &std::fs::File) -> Option<String> {
    let mut buffer = [0u8; 512];
    let length = rustix::fs::fgetxattr(file, ETAG_ATTRIBUTE, &mut buffer).ok()?;
    String::from_utf8(buffer.get(..length)?.to_vec()).ok()
}

pub(super) fn epoch_seconds(seconds: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// `name` when nothing is there, else the first of `name.1`, `name.2`, ... that is free.
fn free_name(dir: &Dir, name: &OsStr) -> std::io::Result<OsString> {
    if dir.entry(name)?.is_none() {
        return Ok(name.to_owned());
    }
    for n in 1u32.. {
        let mut candidate = name.to_owned();
        candidate.push(format!(".{n}"));
        if dir.entry(&candidate)?.is_none() {
            return Ok(candidate);
        }
    }
    Err(std::io::Error::other("no free name"))
}

/// Hashes the final file of `paths` on a blocking thread.
pub(super) async fn hash_file(paths: &PartPaths, like: &Checksum) -> Result<Checksum, Error> {
    let paths = paths.clone();
    let algorithm = like.algorithm();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let path = paths.place.path();
        let dir = paths
            .dir(false)?
            .ok_or_else(|| Error::io("open", &path, std::io::ErrorKind::NotFound.into()))?;
        let mut file = dir
            .open_read(paths.place.name())
            .map_err(|e| Error::io("open", &path, e))?;
        let mut hasher = Hasher::new(algorithm);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(|e| Error::io("read", &path, e))?;
            if read == 0 {
                return Ok(hasher.finish());
            }
            hasher.update(&buffer[..read]);
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("hashing failed: {e}")))?
}
