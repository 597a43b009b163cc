//! Small files (up to `SMALL_FILE_BYTES`): received in memory and written once, without a
//! resume state, which would cost more than fetching them again.

use std::io::Write;
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
use crate::storage::files::{create_part, remove_part, remove_state};
use crate::storage::quick::on_pool;
use crate::storage::writer::PartWriter;

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
        let mut body: Vec<u8> = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        let mut stream = reply
            .into_body(self.client, self.cancel)
            .with_file_rate(self.file_rate.clone());
        let outcome = loop {
            let chunk = match stream.next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) if (body.len() as u64) < length => {
                    break Err(Error::ShortBody {
                        url: self.url(),
                        received: body.len() as u64,
                        expected: length,
                    });
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            if body.len() as u64 + chunk.len() as u64 > length {
                break Err(Error::LongBody {
                    url: self.url(),
                    expected: length,
                });
            }
            body.extend_from_slice(&chunk);
            self.emit(&Event::Progress {
                id: self.report.id(),
                bytes_done: body.len() as u64,
            });
        };
        session.received += body.len() as u64;
        match outcome {
            Ok(()) => {
                session.offset = length;
                Ok(AttemptEnd::Small(body))
            }
            Err(error) => {
                if !body.is_empty() && error.keeps_partial() {
                    self.open_writer(session, paths, true);
                    if let Some(writer) = session.writer.as_ref().map(PartWriter::handle) {
                        let received = body.len() as u64;
                        writer.write(0, Bytes::from(body)).await?;
                        session.offset = received;
                    }
                }
                Err(error)
            }
        }
    }

    /// Commits a small file received in memory, in one call (with thousands of small files
    /// each trip to a blocking thread costs more than the work; without syncs the call runs
    /// inline once the file system has proven fast, see `storage::quick`): verify the digest (a
    /// mismatch never touches the disk), write the `.part` with the server's time, sync it,
    /// and give it its final name. Returns that name and the digest.
    pub(super) async fn commit_small(
        &self,
        session: &Session,
        body: Vec<u8>,
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
            let digest = algorithm.map(|algorithm| {
                let mut hasher = Hasher::new(algorithm);
                hasher.update(&body);
                hasher.finish()
            });
            if let Err(mismatch) = check_digest(expected.as_ref(), digest.as_ref(), &planned) {
                if stale_state {
                    remove_part(&paths)?;
                    remove_state(&paths)?;
                }
                return Err(mismatch);
            }
            let mut file = create_part(&paths, true)?;
            let written = file
                .write_all(&body)
                .map_err(|e| Error::io("write", &paths.part, e))
                .and_then(|()| {
                    if let Some(seconds) = mtime {
                        // Only the timestamp is lost if this fails, never the file.
                        let _ = file.set_modified(epoch_seconds(seconds));
                    }
                    if let Some(etag) = &etag {
                        super::look::write_etag(&file, etag);
                    }
                    syncer
                        .sync_grouped(&file)
                        .map_err(|e| Error::io("sync", &paths.part, e))
                });
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
