//! What is already on disk and where the finished file goes: the `OnExists` policy for an
//! existing file, the resume state a transfer may trust, the `304` outcome, the committed name
//! (`Content-Disposition`, `NAME.1`), and modification times.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Completed, Session, Transfer};
use crate::Error;
use crate::config::OnExists;
use crate::integrity::{Checksum, Hasher};
use crate::progress::Event;
use crate::storage::PartPaths;
use crate::storage::files::remove_if_present;
use crate::storage::state::{ResumeState, Unusable, Validators};

/// What is on disk for one transfer, looked at in a single trip to a blocking thread: with
/// thousands of small files, each trip costs more than the system calls it makes.
pub(super) struct OnDisk {
    /// The final path's metadata (of a symlink itself, not its target), when anything is there.
    pub(super) existing: Option<std::fs::Metadata>,
    /// The saved resume state.
    state: Result<ResumeState, Unusable>,
    /// The `.part` file's length when it is a regular file (looked at only when there is a
    /// state to go with it).
    part_len: Option<u64>,
}

impl OnDisk {
    pub(super) async fn look(final_path: &Path, paths: &PartPaths) -> Result<Self, Error> {
        let final_path = final_path.to_path_buf();
        let paths = paths.clone();
        tokio::task::spawn_blocking(move || {
            let existing = std::fs::symlink_metadata(&final_path).ok();
            let state = ResumeState::load(&paths.state);
            let part_len = match state {
                Ok(_) => std::fs::symlink_metadata(&paths.part)
                    .ok()
                    .filter(std::fs::Metadata::is_file)
                    .map(|m| m.len()),
                Err(_) => None,
            };
            Self {
                existing,
                state,
                part_len,
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("inspecting the output failed: {e}")))
    }
}

impl Transfer<'_> {
    /// Applies the `OnExists` policy to a final file that is already there.
    pub(super) async fn existing_file(
        &self,
        on_disk: &OnDisk,
        clock: Instant,
    ) -> Result<Option<Completed>, Error> {
        let Some(metadata) = &on_disk.existing else {
            return Ok(None);
        };
        if self.request.revalidate.is_some() {
            // The server decides: unchanged (304) or a new version that replaces this one.
            return Ok(None);
        }
        let exists = || Error::AlreadyExists {
            path: self.final_path.clone(),
        };
        match self.config().on_exists {
            OnExists::Overwrite if !metadata.is_dir() => return Ok(None),
            OnExists::Skip if metadata.is_file() => {}
            _ => return Err(exists()),
        }
        let digest = match &self.request.checksum {
            None => None,
            Some(expected) => {
                let actual = hash_file(&self.final_path, expected).await?;
                if &actual != expected {
                    return Err(exists());
                }
                Some(actual)
            }
        };
        Ok(Some(Completed {
            path: self.final_path.clone(),
            bytes: metadata.len(),
            digest,
            resumed_from: metadata.len(),
            duration: clock.elapsed(),
            already_present: true,
            etag: None,
            last_modified: None,
        }))
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
        clock: Instant,
    ) -> Result<Completed, Error> {
        let bytes = tokio::fs::metadata(&self.final_path)
            .await
            .map_err(|e| Error::io("inspect", &self.final_path, e))?
            .len();
        let (old_etag, old_modified) = self.request.revalidate.clone().unwrap_or_default();
        let validators = &session.state.validators;
        Ok(Completed {
            path: self.final_path.clone(),
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
    pub(super) fn naming(&self, session: &Session) -> Naming {
        // With `content_disposition`, the name the server suggested, in the same directory.
        let suggested = session
            .disposition_name
            .as_ref()
            .filter(|_| self.config().content_disposition)
            .filter(|_| matches!(self.request.destination, crate::Destination::Directory(_)))
            .and_then(|name| Some(self.final_path.parent()?.join(name)))
            .filter(|wanted| *wanted != self.final_path);
        let mtime = session
            .state
            .validators
            .last_modified
            .as_deref()
            .filter(|_| self.config().remote_time)
            .and_then(crate::client::http::parse_http_date);
        Naming {
            planned: self.final_path.clone(),
            suggested,
            mtime,
        }
    }
}

/// Where a finished `.part` goes.
pub(super) struct Naming {
    planned: PathBuf,
    /// The server's `Content-Disposition` name, when honoured and different (it may be taken).
    suggested: Option<PathBuf>,
    /// The server's `Last-Modified`, in seconds since the epoch, when haul keeps it.
    pub(super) mtime: Option<u64>,
}

impl Naming {
    /// Gives a finished, synced `.part` its final name (the suggested one, or `NAME.1`, ...
    /// when that is taken; else the planned one), removes the state file when `drop_state`,
    /// and sets the server's time (unless `mtime` was taken to set it on an open file).
    /// Returns the final path. Blocking.
    pub(super) fn apply(self, paths: &PartPaths, drop_state: bool) -> Result<PathBuf, Error> {
        let final_path = self
            .suggested
            .map_or(self.planned, |wanted| free_name_blocking(&wanted));
        std::fs::rename(&paths.part, &final_path)
            .map_err(|e| Error::io("rename", &paths.part, e))?;
        if drop_state {
            remove_if_present(&paths.state)?;
        }
        if let Some(seconds) = self.mtime {
            set_modified(&final_path, seconds);
        }
        Ok(final_path)
    }
}

/// Sets a file's modification time to `seconds` since the epoch; a failure only loses the
/// timestamp, never the file, so it is ignored.
fn set_modified(path: &Path, seconds: u64) {
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(epoch_seconds(seconds));
    }
}

pub(super) fn epoch_seconds(seconds: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// `path` when nothing is there, else the first of `path.1`, `path.2`, ... that is free.
pub(super) async fn free_name(path: &Path) -> PathBuf {
    let wanted = path.to_path_buf();
    tokio::task::spawn_blocking(move || free_name_blocking(&wanted))
        .await
        // Never a name that may be taken: if the thread is gone, look here.
        .unwrap_or_else(|_| free_name_blocking(path))
}

/// `free_name` for a caller already on a blocking thread.
fn free_name_blocking(path: &Path) -> PathBuf {
    if std::fs::symlink_metadata(path).is_err() {
        return path.to_path_buf();
    }
    for n in 1u32.. {
        let mut candidate = path.as_os_str().to_owned();
        candidate.push(format!(".{n}"));
        let candidate = PathBuf::from(candidate);
        if std::fs::symlink_metadata(&candidate).is_err() {
            return candidate;
        }
    }
    path.to_path_buf()
}

/// Hashes a whole file on a blocking thread.
pub(super) async fn hash_file(path: &Path, like: &Checksum) -> Result<Checksum, Error> {
    let path = path.to_path_buf();
    let algorithm = like.algorithm();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
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
