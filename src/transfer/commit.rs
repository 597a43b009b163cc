//! The last phase: verify the finished `.part`, make it durable, give it its final name.

use std::time::Instant;

use std::ffi::OsString;
use std::path::PathBuf;

use super::look::{epoch_seconds, write_etag};
use crate::Error;
use crate::integrity::Checksum;
use crate::storage::PartPaths;
use crate::storage::durability::Syncer;
use crate::storage::files::{remove_part, remove_state};
use crate::storage::quick::on_pool;
use crate::storage::writer::CloseMode;

use super::session::Session;
use super::{Completed, Transfer};

impl Transfer<'_> {
    /// Verifies the finished `.part` and gives it its final name.
    pub(super) async fn commit(
        &self,
        mut session: Session,
        small: Option<super::small::SmallBody>,
        paths: &PartPaths,
        clock: Instant,
    ) -> Result<Completed, Error> {
        let (digest, locked) = match (small, session.writer.take()) {
            (Some(body), _) => {
                let (final_path, digest) = self.commit_small(&session, body, paths).await?;
                return Ok(session.completed(final_path, digest, clock));
            }
            (None, Some(writer)) => {
                let closed = writer.close(CloseMode::Complete).await?;
                (closed.digest, closed.locked)
            }
            (None, None) => {
                return Err(Error::Internal("completed without a writer".into()));
            }
        };
        if let Some(pieces) = &self.request.pieces {
            let (size, bad) = bad_pieces(paths, pieces).await?;
            if !bad.is_empty() {
                // Keep the good pieces, forget the bad ones: the next pass fetches exactly them.
                let mut state = session.state.clone();
                state.done = crate::storage::ranges::RangeSet::default();
                let mut from = 0;
                for (start, end) in &bad {
                    state.done.insert(from, *start);
                    from = *end;
                }
                state.done.insert(from, size);
                let part = paths.clone();
                let syncer = self.disk.syncer().clone();
                on_pool("saving a resume state", move || state.save(&part, &syncer)).await?;
                drop(locked);
                return Err(Error::PiecesMismatch {
                    path: paths.place.path(),
                    pieces: bad.len(),
                    algorithm: pieces
                        .hashes
                        .first()
                        .map_or("hash", |h| h.algorithm().name()),
                });
            }
        }
        if let Err(mismatch) = verify(session.expected.as_ref(), digest.as_ref(), paths) {
            remove_part(paths)?;
            remove_state(paths)?;
            return Err(mismatch);
        }
        let naming = self.naming(&session, paths);
        let part = paths.clone();
        let syncer = self.disk.syncer().clone();
        // The directory sync may wait for a shared flush: never on a runtime thread.
        let final_path = on_pool("renaming a file", move || {
            naming.apply(&part, true, &syncer)
        })
        .await?;
        drop(locked);
        let mut completed = session.completed(final_path, digest, clock);
        completed.repaired_pieces = self.repaired_pieces;
        Ok(completed)
    }
}

/// The finished `.part`'s length, and the byte ranges of its pieces whose hash is not the
/// Metalink's. Reads the whole file once, on a blocking thread.
async fn bad_pieces(
    paths: &PartPaths,
    pieces: &std::sync::Arc<crate::metalink::Pieces>,
) -> Result<(u64, Vec<(u64, u64)>), Error> {
    let paths = paths.clone();
    let pieces = std::sync::Arc::clone(pieces);
    on_pool("checking pieces", move || {
        use std::io::Read;
        let dir = paths
            .dir(false)?
            .ok_or_else(|| Error::Internal("the .part's directory vanished".into()))?;
        let mut file = dir
            .open_read(paths.part_name())
            .map_err(|e| Error::io("open", &paths.part, e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("inspect", &paths.part, e))?
            .len();
        let mut bad = Vec::new();
        let mut buffer = vec![0u8; 1 << 20];
        for (index, expected) in pieces.hashes.iter().enumerate() {
            let (start, end) = pieces.range(index, size);
            let mut hasher = crate::integrity::Hasher::new(expected.algorithm());
            let mut left = end - start;
            while left > 0 {
                let want = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(buffer.len());
                let read = file
                    .read(&mut buffer[..want])
                    .map_err(|e| Error::io("read", &paths.part, e))?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                left -= read as u64;
            }
            if left > 0 || &hasher.finish() != expected {
                bad.push((start, end));
            }
        }
        Ok((size, bad))
    })
    .await
}

/// Checks a finished file's digest against the expected one, when there is one.
pub(super) fn verify(
    expected: Option<&(Checksum, Option<&'static str>)>,
    actual: Option<&Checksum>,
    paths: &PartPaths,
) -> Result<(), Error> {
    check_digest(expected, actual, &paths.place.path())
}

/// `Ok` when nothing is expected or `actual` is what was expected.
pub(super) fn check_digest(
    expected: Option<&(Checksum, Option<&'static str>)>,
    actual: Option<&Checksum>,
    path: &std::path::Path,
) -> Result<(), Error> {
    match expected {
        Some((expected, announced_by)) if actual != Some(expected) => {
            Err(Error::ChecksumMismatch {
                path: path.to_path_buf(),
                algorithm: expected.algorithm().name(),
                expected: expected.hex(),
                actual: actual.map_or_else(|| "nothing".into(), Checksum::hex),
                announced_by: *announced_by,
            })
        }
        _ => Ok(()),
    }
}

impl Transfer<'_> {
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
            source: None,
            repaired_pieces: 0,
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
    /// The file keeps its planned name (no `Content-Disposition` name was claimed for it).
    pub(super) fn keeps_planned_name(&self) -> bool {
        self.suggested.is_none()
    }

    /// Gives a finished, synced `.part` its final name (the suggested one, or `NAME.1`, ...
    /// when that is taken; else the planned one), removes the state file when `drop_state`,
    /// and sets the server's time (unless `mtime` was taken to set it on an open file).
    /// Returns the final path. Blocking.
    pub(super) fn apply(
        self,
        paths: &PartPaths,
        drop_state: bool,
        syncer: &Syncer,
    ) -> Result<PathBuf, Error> {
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
        // The new name survives a power cut only once its directory is synced: before the
        // download is reported finished (grouped with other files renamed meanwhile).
        syncer
            .sync_names(dir.fd())
            .map_err(|e| Error::io("sync", dir.path(), e))?;
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
