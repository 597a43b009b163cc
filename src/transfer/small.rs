//! Small files (up to `SMALL_FILE_BYTES`): received in memory and written once, without a
//! resume state, which would cost more than fetching them again.

use std::io::{IoSlice, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::client::exchange::Reply;

use super::Transfer;
use super::commit::check_digest;
use super::look::epoch_seconds;
use super::session::{AttemptEnd, Session};
use crate::Error;
use crate::integrity::{Checksum, Hasher};
use crate::progress::Event;
use crate::storage::PartPaths;
use crate::storage::dir::Dir;
use crate::storage::durability::Syncer;
use crate::storage::files::{create_part, remove_part, remove_state};
use crate::storage::quick::on_pool;
use crate::storage::writer::PartWriter;

/// A small file's body as the chunks it arrived in: kept, not copied into one buffer (the copy
/// was half of the user-space copying for 64 KiB files), and written with one `writev`.
#[derive(Debug, Default)]
pub(crate) struct SmallBody {
    chunks: Vec<Bytes>,
    len: usize,
}

impl SmallBody {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    fn len(&self) -> u64 {
        self.len as u64
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn digest(&self, algorithm: crate::integrity::Algorithm) -> Checksum {
        let mut hasher = Hasher::new(algorithm);
        for chunk in &self.chunks {
            hasher.update(chunk);
        }
        hasher.finish()
    }

    /// Writes every chunk, in order, with as few `writev` calls as the kernel allows.
    fn write_to(&self, file: &mut impl Write) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self
            .chunks
            .iter()
            .map(|chunk| IoSlice::new(chunk))
            .collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match file.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(written) => IoSlice::advance_slices(&mut rest, written),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

impl Transfer<'_> {
    /// Receives a small file into memory. If the body breaks off, what arrived goes to a
    /// normal `.part` with its state, and the retry resumes from there.
    pub(super) async fn download_small(
        &self,
        session: &mut Session,
        reply: Reply,
        length: u64,
        paths: &PartPaths,
    ) -> Result<AttemptEnd, Error> {
        let mut body = SmallBody::default();
        let mut stream = reply
            .into_body(self.client, self.cancel)
            .with_file_rate(self.file_rate.clone());
        let outcome = loop {
            let chunk = match stream.next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) if body.len() < length => {
                    break Err(Error::ShortBody {
                        url: self.url(),
                        received: body.len(),
                        expected: length,
                    });
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            if body.len() + chunk.len() as u64 > length {
                break Err(Error::LongBody {
                    url: self.url(),
                    expected: length,
                });
            }
            body.push(chunk);
            self.emit(&Event::Progress {
                id: self.report.id(),
                bytes_done: body.len(),
            });
        };
        session.received += body.len();
        match outcome {
            Ok(()) => {
                session.offset = length;
                Ok(AttemptEnd::Small(body))
            }
            Err(error) => {
                if !body.is_empty() && error.keeps_partial() {
                    self.open_writer(session, paths, true);
                    if let Some(writer) = session.writer.as_ref().map(PartWriter::handle) {
                        let mut offset = 0;
                        for chunk in body.chunks {
                            let len = chunk.len() as u64;
                            writer.write(offset, chunk).await?;
                            offset += len;
                        }
                        session.offset = offset;
                    }
                }
                Err(error)
            }
        }
    }

    /// Commits a small file received in memory: verify the digest (a mismatch never touches
    /// the disk), write the file with the server's time, sync it, and give it its final name:
    /// a file without a name until then where the file system makes one (`write_nameless`,
    /// `name_nameless`), else a locked `.part`, renamed. Returns that name and the digest.
    ///
    /// Without syncs this is one call (with thousands of small files each trip to a blocking
    /// thread costs more than the work; it runs inline once the file system has proven fast,
    /// see `storage::quick`). With syncs the nameless way goes in steps, and its two waits for
    /// a shared flush (the data, then the name) hold no thread: the task waits.
    pub(super) async fn commit_small(
        &self,
        session: &Session,
        body: SmallBody,
        paths: &PartPaths,
    ) -> Result<(PathBuf, Option<Checksum>), Error> {
        let paths = paths.clone();
        let planned = paths.place.path();
        let expected = session.expected.clone();
        let algorithm = self.hash_algorithm(session);
        let mut naming = self.naming(session, &paths);
        // Set on the open file below: no second open after the rename.
        let mtime = naming.mtime.take();
        let etag = naming.etag.take();
        let stale_state = session.stale_state;
        let nameless = !stale_state && naming.keeps_planned_name();
        let syncer = self.disk.syncer().clone();
        let quick_fs = self.disk.quick_fs();
        let durable = syncer.durable();
        if durable && nameless {
            let written = {
                let paths = paths.clone();
                quick_fs
                    .run("writing a small file", move || {
                        let digest = algorithm.map(|algorithm| body.digest(algorithm));
                        check_digest(expected.as_ref(), digest.as_ref(), &paths.place.path())?;
                        let file = write_nameless(&paths, &body, (mtime, etag.as_deref()))?;
                        // Written: the memory is not held while the file waits for its flush.
                        let body = if file.is_some() {
                            SmallBody::default()
                        } else {
                            body
                        };
                        Ok((file, body, digest, etag))
                    })
                    .await?
            };
            let (body, digest, etag) = match written {
                (Some((file, dir)), _, digest, etag) => {
                    match self.name_durably(file, dir, &paths).await? {
                        None => return Ok((planned, digest)),
                        Some(body) => (body, digest, etag),
                    }
                }
                (None, body, digest, etag) => (body, digest, etag),
            };
            // The nameless way is not open here: the `.part` way, whose syncs wait on a
            // blocking thread.
            return on_pool("writing a small file", move || {
                let attributes = (mtime, etag.as_deref());
                let named =
                    commit_as_part(&paths, &body, attributes, naming, stale_state, &syncer)?;
                Ok((named, digest))
            })
            .await;
        }
        let commit = move || {
            let digest = algorithm.map(|algorithm| body.digest(algorithm));
            if let Err(mismatch) = check_digest(expected.as_ref(), digest.as_ref(), &planned) {
                if stale_state {
                    remove_part(&paths)?;
                    remove_state(&paths)?;
                }
                return Err(mismatch);
            }
            let attributes = (mtime, etag.as_deref());
            if nameless && let Some((file, dir)) = write_nameless(&paths, &body, attributes)? {
                // Only without syncs: a durable nameless commit took the way above.
                debug_assert!(!durable, "a durable nameless commit is not synced here");
                if name_nameless(&paths, &dir, &file)? {
                    return Ok((planned, digest));
                }
            }
            let named = commit_as_part(&paths, &body, attributes, naming, stale_state, &syncer)?;
            Ok((named, digest))
        };
        if durable {
            // The sync may wait for a shared flush: never on a runtime thread.
            return on_pool("writing a small file", commit).await;
        }
        quick_fs.run("writing a small file", commit).await
    }

    /// Makes a file `write_nameless` wrote durable, names it, and makes the name durable, each
    /// wait a task's (see `Syncer::sync_shared`). `Some(body)`, read back, when it cannot be
    /// named here after all (no `/proc`): the caller takes the `.part` way.
    async fn name_durably(
        &self,
        file: std::fs::File,
        dir: Arc<Dir>,
        paths: &PartPaths,
    ) -> Result<Option<SmallBody>, Error> {
        let syncer = self.disk.syncer();
        syncer
            .sync_shared(file.as_fd())
            .await
            .map_err(|e| Error::io("sync", paths.place.path(), e))?;
        let named = {
            let paths = paths.clone();
            self.disk
                .quick_fs()
                .run("naming a small file", move || {
                    if name_nameless(&paths, &dir, &file)? {
                        Ok(Ok(dir))
                    } else {
                        read_back(&file, &paths).map(Err)
                    }
                })
                .await?
        };
        match named {
            Ok(dir) => {
                // The new name survives a power cut only once its directory is synced.
                syncer
                    .sync_shared(dir.fd())
                    .await
                    .map_err(|e| Error::io("sync", dir.path(), e))?;
                Ok(None)
            }
            Err(body) => Ok(Some(body)),
        }
    }
}

/// The server's time (seconds since the epoch) and `ETag`, when haul keeps them.
type Attributes<'a> = (Option<u64>, Option<&'a str>);

/// What either way does to the file before it is synced and named: the body, the server's
/// time and `ETag` (only these are lost if setting them fails, never the file). A failure
/// says what was being done.
fn fill(
    file: &mut std::fs::File,
    body: &SmallBody,
    (mtime, etag): Attributes<'_>,
) -> Result<(), (&'static str, std::io::Error)> {
    body.write_to(file).map_err(|e| ("write", e))?;
    if let Some(seconds) = mtime {
        let _ = file.set_modified(epoch_seconds(seconds));
    }
    if let Some(etag) = etag {
        super::look::write_etag(file, etag);
    }
    Ok(())
}

/// The `.part` way: a locked `.part` is made (or taken over), filled, synced and renamed to
/// its final name (the claimed `Content-Disposition` name, when there is one). Blocking.
fn commit_as_part(
    paths: &PartPaths,
    body: &SmallBody,
    attributes: Attributes<'_>,
    naming: super::commit::Naming,
    stale_state: bool,
    syncer: &Syncer,
) -> Result<PathBuf, Error> {
    let mut file = create_part(paths, true)?;
    let written = fill(&mut file, body, attributes)
        .and_then(|()| syncer.sync_grouped(&file).map_err(|e| ("sync", e)))
        .map_err(|(doing, e)| Error::io(doing, &paths.part, e));
    if let Err(error) = written {
        // Without a state file these bytes could not be resumed; the body is fetched
        // again, and a full disk is not left fuller.
        let _ = remove_part(paths);
        return Err(error);
    }
    // The `.part` stays open, and so locked, until it has its final name: another
    // process never takes it over between the write and the rename.
    let named = naming.apply(paths, stale_state, syncer);
    drop(file);
    named
}

/// Writes a small body to a file without a name in the planned name's directory (see
/// `Dir::create_anonymous`), for `name_nameless` to name once it is durable: no `.part` is
/// made, locked, renamed or left behind by a crash. `None` when this way is not open here:
/// the final name was taken when the download looked (`OnExists::Overwrite` replaces it), a
/// `.part` is there (an earlier run's, or another process's, which the `.part` way locks or
/// takes over), or the file system cannot. (The caller keeps the `.part` way also for a
/// stale state to remove and for a claimed `Content-Disposition` name.) Blocking.
fn write_nameless(
    paths: &PartPaths,
    body: &SmallBody,
    attributes: Attributes<'_>,
) -> Result<Option<(std::fs::File, Arc<Dir>)>, Error> {
    if !paths.final_absent {
        return Ok(None);
    }
    let dir = paths.made_dir()?;
    let part_there = dir
        .entry(paths.part_name())
        .map_err(|e| Error::io("inspect", &paths.part, e))?
        .is_some();
    if part_there {
        return Ok(None);
    }
    let Some(mut file) = dir.create_anonymous() else {
        return Ok(None);
    };
    fill(&mut file, body, attributes)
        .map_err(|(doing, e)| Error::io(doing, paths.place.path(), e))?;
    Ok(Some((file, dir)))
}

/// The body of a file `write_nameless` wrote, read back for the `.part` way when it could not
/// be named (rare: once per directory, and only where `/proc` is missing).
fn read_back(file: &std::fs::File, paths: &PartPaths) -> Result<SmallBody, Error> {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    let mut reader = file;
    reader
        .seek(std::io::SeekFrom::Start(0))
        .and_then(|_| reader.read_to_end(&mut bytes))
        .map_err(|e| Error::io("read", paths.place.path(), e))?;
    let mut body = SmallBody::default();
    body.push(Bytes::from(bytes));
    Ok(body)
}

/// Names a file `write_nameless` wrote (and the caller made durable) at the planned name;
/// `false` when it cannot be named here after all (no `/proc`: the `.part` way then). A final
/// name that appeared meanwhile (another process finished the file) is `Error::Busy`, like the
/// `.part` way's: the download looks again and keeps that file. (A process on the `.part`
/// way, a haul before this or a file system without anonymous files, that makes its `.part`
/// after this look may still rename it over this file: what stays is then that process's
/// complete version.) Blocking.
fn name_nameless(paths: &PartPaths, dir: &Dir, file: &std::fs::File) -> Result<bool, Error> {
    match dir.link_anonymous(file, paths.place.name()) {
        Ok(named) => Ok(named),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Busy {
            path: paths.place.path(),
        }),
        Err(error) => Err(Error::io("name", paths.place.path(), error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most a few bytes per call, from the first slices only, as a kernel may.
    struct Stingy(Vec<u8>);

    impl Write for Stingy {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let taken = bytes.len().min(3);
            self.0.extend_from_slice(&bytes[..taken]);
            Ok(taken)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_body_kept_as_chunks_is_written_whole_and_in_order_however_short_the_writes() {
        let mut body = SmallBody::default();
        for chunk in ["hello, ", "", "chunked ", "w", "orld"] {
            body.push(Bytes::from(chunk));
        }
        assert_eq!(body.len(), 20);
        let mut file = Stingy(Vec::new());
        body.write_to(&mut file).unwrap();
        assert_eq!(file.0, b"hello, chunked world");
        let mut whole = Hasher::new(crate::integrity::Algorithm::Sha256);
        whole.update(b"hello, chunked world");
        assert_eq!(
            body.digest(crate::integrity::Algorithm::Sha256),
            whole.finish()
        );
    }
}
