//! Small files (up to `SMALL_FILE_BYTES`): received in memory and written once, without a
//! resume state, which would cost more than fetching them again.

use std::io::{IoSlice, Write};
use std::path::PathBuf;

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

    /// Commits a small file received in memory, in one call (with thousands of small files
    /// each trip to a blocking thread costs more than the work; without syncs the call runs
    /// inline once the file system has proven fast, see `storage::quick`): verify the digest (a
    /// mismatch never touches the disk), write the file with the server's time, sync it, and
    /// give it its final name: a file without a name until then where the file system makes
    /// one (`commit_anonymously`), else a locked `.part`, renamed. Returns that name and the
    /// digest.
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
        let syncer = self.disk.syncer().clone();
        let durable = syncer.durable();
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
            if !stale_state
                && naming.keeps_planned_name()
                && let Some(named) = commit_anonymously(&paths, &body, attributes, &syncer)?
            {
                return Ok((named, digest));
            }
            let mut file = create_part(&paths, true)?;
            let written = fill(&mut file, &body, attributes, &syncer)
                .map_err(|(doing, e)| Error::io(doing, &paths.part, e));
            if let Err(error) = written {
                // Without a state file these bytes could not be resumed; the body is fetched
                // again, and a full disk is not left fuller.
                let _ = remove_part(&paths);
                return Err(error);
            }
            // The `.part` stays open, and so locked, until it has its final name: another
            // process never takes it over between the write and the rename.
            let named = naming.apply(&paths, stale_state, &syncer);
            drop(file);
            Ok((named?, digest))
        };
        if durable {
            // The sync may wait for a shared flush: never on a runtime thread.
            return on_pool("writing a small file", commit).await;
        }
        self.disk
            .quick_fs()
            .run("writing a small file", commit)
            .await
    }
}

/// The server's time (seconds since the epoch) and `ETag`, when haul keeps them.
type Attributes<'a> = (Option<u64>, Option<&'a str>);

/// What either way does to the file before it is named: the body, the server's time and
/// `ETag` (only these are lost if setting them fails, never the file), and the sync. A
/// failure says what was being done.
fn fill(
    file: &mut std::fs::File,
    body: &SmallBody,
    (mtime, etag): Attributes<'_>,
    syncer: &Syncer,
) -> Result<(), (&'static str, std::io::Error)> {
    body.write_to(file).map_err(|e| ("write", e))?;
    if let Some(seconds) = mtime {
        let _ = file.set_modified(epoch_seconds(seconds));
    }
    if let Some(etag) = etag {
        super::look::write_etag(file, etag);
    }
    syncer.sync_grouped(file).map_err(|e| ("sync", e))
}

/// Writes a small body to a file without a name and names it at the planned name (see
/// `Dir::create_anonymous`): no `.part` is made, locked, renamed or left behind by a crash.
/// `Ok(None)` when this way is not open here: the final name was taken when the download
/// looked (`OnExists::Overwrite` replaces it), a `.part` is there (an earlier run's, or
/// another process's, which the `.part` way locks or takes over), or the file system cannot.
/// (The caller keeps the `.part` way also for a stale state to remove and for a claimed
/// `Content-Disposition` name.)
/// A final name that appears meanwhile (another process finished the file) is `Error::Busy`,
/// like the `.part` way's: the download looks again and keeps that file. (A process on the
/// `.part` way, a haul before this or a file system without anonymous files, that makes its
/// `.part` after this look may still rename it over this file: what stays is then that
/// process's complete version.) Blocking.
fn commit_anonymously(
    paths: &PartPaths,
    body: &SmallBody,
    attributes: Attributes<'_>,
    syncer: &Syncer,
) -> Result<Option<PathBuf>, Error> {
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
    let planned = paths.place.path();
    fill(&mut file, body, attributes, syncer)
        .map_err(|(doing, e)| Error::io(doing, &planned, e))?;
    match dir.link_anonymous(&file, paths.place.name()) {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Busy { path: planned });
        }
        Err(error) => return Err(Error::io("name", &planned, error)),
    }
    // The new name survives a power cut only once its directory is synced.
    syncer
        .sync_names(dir.fd())
        .map_err(|e| Error::io("sync", dir.path(), e))?;
    Ok(Some(planned))
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
