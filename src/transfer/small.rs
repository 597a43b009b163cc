//! Small files (up to `SMALL_FILE_BYTES`): received in memory and written once, without a
//! resume state, which would cost more than fetching them again.

use bytes::Bytes;

use super::{AttemptEnd, PartWriter, Session, Transfer};
use crate::Error;
use crate::integrity::{Checksum, Hasher};
use crate::progress::Event;
use crate::storage::PartPaths;

impl Transfer<'_> {
    /// Receives a small file into memory. If the body breaks off, what arrived goes to a
    /// normal `.part` with its state, and the retry resumes from there.
    pub(super) async fn download_small(
        &self,
        session: &mut Session,
        response: reqwest::Response,
        length: u64,
        paths: &PartPaths,
    ) -> Result<AttemptEnd, Error> {
        let mut body: Vec<u8> = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
        let mut stream = response.bytes_stream();
        let url = self.url();
        let outcome = loop {
            let chunk = match self.next_chunk(&mut stream, None, &url).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) if (body.len() as u64) < length => {
                    break Err(Error::ShortBody {
                        url: url.clone(),
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
            if let Some(rate) = &self.shared.rate {
                rate.take(chunk.len()).await;
            }
            body.extend_from_slice(&chunk);
            self.emit(&Event::Progress {
                id: self.id,
                bytes_done: body.len() as u64,
            });
        };
        match outcome {
            Ok(()) => {
                session.offset = length;
                session.small = Some(body);
                Ok(AttemptEnd::Complete)
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

    /// Writes a small file received in memory to its `.part`, synced, and returns its digest.
    pub(super) async fn write_small(
        &self,
        body: Vec<u8>,
        paths: &PartPaths,
    ) -> Result<Option<Checksum>, Error> {
        let part = paths.part.clone();
        let algorithm = self.request.checksum.as_ref().map(Checksum::algorithm);
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut file = crate::storage::writer::create_no_follow(&part, true)
                .map_err(|e| Error::io("open", &part, e))?;
            file.write_all(&body)
                .map_err(|e| Error::io("write", &part, e))?;
            file.sync_data().map_err(|e| Error::io("sync", &part, e))?;
            Ok(algorithm.map(|algorithm| {
                let mut hasher = Hasher::new(algorithm);
                hasher.update(&body);
                hasher.finish()
            }))
        })
        .await
        .map_err(|e| Error::io("write", &paths.part, std::io::Error::other(e)))?
    }
}
