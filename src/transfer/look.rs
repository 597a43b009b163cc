//! What is already on disk and where the finished file goes: the `OnExists` policy for an
//! existing file, the resume state a transfer may trust, the `304` outcome, the committed name
//! (`Content-Disposition`, `NAME.1`), and modification times. Every look and every change goes
//! through the file's open directory (`PartPaths::dir`), never through a symlink.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::session::{RangeTrust, Session};
use super::sources::Sources;
use super::{Completed, Transfer};
use crate::Error;
use crate::config::OnExists;
use crate::integrity::{Checksum, Hasher};
use crate::progress::Event;
use crate::storage::PartPaths;
use crate::storage::dir::{Dir, Entry, Kind};
use crate::storage::open_dirs::OpenDirs;
use crate::storage::quick::QuickFs;
use crate::storage::state::{ResumeState, Unusable, Validators};

/// What the look at the disk decided.
pub(super) enum Look {
    /// The file is there and kept: the download is complete without a request.
    Done(Completed),
    /// Fetch, starting from this session (at these paths).
    Fetch(Box<Session>, PartPaths),
}

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
        dirs: &Arc<OpenDirs>,
        paths: &PartPaths,
        rename: bool,
        want_etag: bool,
    ) -> Result<(Self, PartPaths), Error> {
        let paths = paths.clone();
        let dirs = Arc::clone(dirs);
        quick
            .run("inspecting the output", move || {
                let dir = paths.shared_dir(&dirs)?;
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
                if matches!(state, Err(Unusable::OutOfDescriptors)) {
                    // Never a reason to throw the `.part` away: the download waits for
                    // descriptors and looks again.
                    return Err(Error::io(
                        "read resume state",
                        &paths.state,
                        std::io::Error::from_raw_os_error(libc::EMFILE),
                    ));
                }
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
        // An empty file is what a crashed tool, a `touch` or a `> file` leaves: never
        // trusted as complete on its name alone, its length is asked for (a `HEAD`).
        let empty = entry.len == 0;
        let asked =
            digest.is_none() && self.request.size.is_none() && (self.check_existing() || empty);
        let expected_len = match self.request.size {
            Some(size) => Some(size),
            None if asked => self.server_length().await?,
            None => None,
        };
        let contradicted = match expected_len {
            Some(expected) => (expected != entry.len).then(|| {
                format!(
                    "`{}` is already there with {} bytes, not {expected}: downloading it again",
                    paths.place.path().display(),
                    entry.len
                )
            }),
            // A server that announces no length cannot vouch for an empty file.
            None if asked && empty => Some(format!(
                "`{}` is already there but empty, and the server announces no length: \
                 downloading it again",
                paths.place.path().display()
            )),
            None => None,
        };
        if let Some(message) = contradicted {
            self.emit(&Event::Warning {
                id: self.report.id(),
                message,
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
            source: None,
            repaired_pieces: 0,
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
            Err(Unusable::Missing | Unusable::OutOfDescriptors) => return (fresh.clone(), false),
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

    /// The first phase: what is on disk for this download, and so what to do: nothing (a
    /// file that is there and kept), or fetch with the session it starts from (a revalidation
    /// of the existing file, a resume of the `.part`, or a fresh download).
    pub(super) async fn look(&self, clock: Instant) -> Result<Look, Error> {
        let rename = self.on_exists() == OnExists::Rename;
        let timestamping = self.request.revalidate.is_none()
            && self
                .request
                .timestamping
                .unwrap_or(self.config().timestamping);
        let (on_disk, mut paths) = OnDisk::look(
            self.disk.quick_fs(),
            self.disk.open_dirs(),
            &PartPaths::beside(&self.place),
            rename,
            timestamping,
        )
        .await?;
        paths.final_absent = on_disk.existing.is_none();
        let no_state =
            matches!(on_disk.state, Err(Unusable::Missing)) && on_disk.part_len.is_none();
        self.state_may_exist.store(!no_state, Ordering::Relaxed);
        let output_is_file = on_disk
            .existing
            .as_ref()
            .is_some_and(|entry| entry.kind == Kind::File);
        // What to ask the server, when the output exists: the request's validators, or with
        // timestamping the file's own `ETag` attribute and modification time.
        let revalidate = match (&self.request.revalidate, timestamping, &on_disk.existing) {
            (Some(given), _, _) => Some(given.clone()),
            (None, true, Some(entry)) if output_is_file => Some((
                on_disk.etag.clone(),
                entry
                    .modified
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| crate::client::http::format_http_date(d.as_secs())),
            )),
            _ => None,
        };
        if let Some(done) = self
            .existing_file(&on_disk, &paths, revalidate.is_some(), clock)
            .await?
        {
            return Ok(Look::Done(done));
        }
        let (state, stale_state) = self.resume_state(&paths, on_disk);
        let offset = state.done.contiguous_prefix();
        let mut session = Session {
            state,
            offset,
            writer: None,
            resumed_from: None,
            single_only: false,
            ranges: RangeTrust::default(),
            received: 0,
            expected: None,
            disposition_name: None,
            claimed_name: None,
            stale_state,
            revalidate: None,
            sources: Sources::new(&self.request.url, &self.request.mirrors)
                .starting_at(self.repairs as usize),
            validators_from: 0,
        };
        session.expected = self
            .request
            .checksum
            .clone()
            .map(|c| (c, None))
            .or_else(|| {
                let (digest, header) = session.state.server_digest.as_ref()?;
                let checksum = digest.parse().ok()?;
                Some((checksum, crate::client::digest::header_name(header)))
            });
        // Asked only when nothing partial is on disk: a `.part` is resumed instead.
        session.revalidate = revalidate
            .filter(|_| session.offset == 0 && session.state.done.is_empty() && output_is_file);
        Ok(Look::Fetch(Box::new(session), paths))
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
pub(super) fn read_etag(file: &std::fs::File) -> Option<String> {
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
