//! Streaming a body into the `.part` writer, and the `Started` report.

use std::sync::atomic::Ordering;

use crate::Error;
use crate::client::exchange::Reply;
use crate::progress::Event;
use crate::storage::PartPaths;
use crate::storage::buffers::Coalescer;
use crate::storage::writer::PartWriter;

use super::Transfer;
use super::session::Session;

impl Transfer<'_> {
    pub(super) fn open_writer(&self, session: &mut Session, paths: &PartPaths, fresh: bool) {
        if fresh {
            session.offset = 0;
        }
        self.state_may_exist.store(true, Ordering::Relaxed);
        session.writer = Some(PartWriter::spawn(
            paths.clone(),
            session.state.clone(),
            fresh,
            self.hash_algorithm(session),
            self.config().checkpoint_interval,
            self.disk.syncer().clone(),
        ));
    }

    /// Reports `Started` once. Every byte reused counts as resumed, holes or not (a
    /// segmented download's state may hold several runs of bytes).
    pub(super) fn report_started(
        &self,
        session: &mut Session,
        total_bytes: Option<u64>,
        version: &str,
    ) {
        if session.resumed_from.is_none() {
            let mut reused = session.state.done.clone();
            reused.insert(0, session.offset);
            let resumed_from = reused.covered();
            session.resumed_from = Some(resumed_from);
            self.emit(&Event::Started {
                id: self.report.id(),
                total_bytes,
                resumed_from,
                http_version: version.to_owned(),
                proxy: self.client.proxy_for(&self.request.url),
            });
        }
    }

    /// Streams the body into the writer until `end` (one past the last byte the response
    /// carries; `u64::MAX` when unknown). Chunks are coalesced into large buffers; on any
    /// failure what was received is still handed over, so a retry resumes after it.
    pub(super) async fn stream_body(
        &self,
        session: &mut Session,
        reply: Reply,
        end: u64,
    ) -> Result<(), Error> {
        let Some(writer) = session.writer.as_ref().map(PartWriter::handle) else {
            return Err(Error::Internal("no writer for the body".into()));
        };
        let mut body = reply
            .into_body(self.client, self.cancel)
            .with_file_rate(self.file_rate.clone());
        let mut buffer = Coalescer::new(session.offset, end - session.offset, writer.pool());
        let start = session.offset;
        let outcome = loop {
            let chunk = match body.next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            let received = buffer.position() + chunk.len() as u64;
            if received > end {
                break Err(Error::LongBody {
                    url: self.url(),
                    expected: end,
                });
            }
            if let Err(error) = self.check_size(received, false) {
                break Err(error);
            }
            if let Err(error) = buffer.push(chunk, &writer).await {
                break Err(error);
            }
            self.emit(&Event::Progress {
                id: self.report.id(),
                bytes_done: received,
            });
        };
        // What was received is handed over even after a failure: a retry resumes after it.
        let flushed = buffer.flush(&writer).await;
        session.offset = buffer.position();
        session.received += session.offset - start;
        outcome?;
        flushed?;
        if end != u64::MAX && session.offset < end {
            return Err(Error::ShortBody {
                url: self.url(),
                received: session.offset,
                expected: end,
            });
        }
        Ok(())
    }
}
