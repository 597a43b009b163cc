//! One file's life: check what is already on disk, fetch (resuming where it can, retrying what
//! is worth retrying), verify, and commit under the final name. A final name appears only for a
//! complete, verified file; any failure leaves a resumable `.part` or nothing.

mod local;
mod segments;
mod small;

use crate::client::http;
use crate::client::retry::retry_delay;
use local::{OnDisk, free_name};

use std::fs::Metadata;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_DISPOSITION, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_RANGE, LOCATION, RANGE,
};
use tokio_util::sync::CancellationToken;

use crate::client::hosts::HostPermit;
use crate::config::OnExists;
use crate::downloader::Shared;
use crate::integrity::Checksum;
use crate::naming::redact_url;
use crate::progress::{Event, Observer, TransferId, error_chain};
use crate::scheduler::JobSlot;
use crate::storage::PartPaths;
use crate::storage::buffers::Coalescer;
use crate::storage::state::{ResumeState, Validators};
use crate::storage::writer::{CloseMode, PartWriter, WRITER_STOPPED, remove_if_present};
use crate::{Error, Request};

/// A file up to this size is received in memory and written once, without a resume state:
/// creating, syncing and deleting a state file would cost more than fetching it again.
const SMALL_FILE_BYTES: u64 = 1 << 20;
/// How many times in a row one download may be sent back to byte zero before haul gives up.
const MAX_START_OVERS: u32 = 3;

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completed {
    /// The final path of the file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: u64,
    /// Its digest, when a checksum was asked for (then it equals the expected one).
    pub digest: Option<Checksum>,
    /// Bytes that were already on disk from an earlier attempt or run.
    pub resumed_from: u64,
    /// Wall time of this download.
    pub duration: Duration,
    /// The file was already complete (or unchanged on the server) and nothing was transferred.
    pub already_present: bool,
    /// The server's `ETag` for this version of the file, when it sent one.
    pub etag: Option<String>,
    /// The server's `Last-Modified` for this version, when it sent one.
    pub last_modified: Option<String>,
}

/// Everything one download needs from its batch.
pub(crate) struct Transfer<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) request: &'a Request,
    pub(crate) id: TransferId,
    pub(crate) observer: &'a dyn Observer,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) final_path: PathBuf,
    /// The host permit of the first connection, held for the whole transfer except while it
    /// backs off from a host that pushed back.
    pub(crate) permit: Option<HostPermit>,
    /// The batch's job slot, given up once the body has arrived.
    pub(crate) job: Option<JobSlot>,
}

/// What one download has reached so far, carried across attempts.
struct Session {
    /// The state a writer starts from: validators and the ranges already on disk.
    state: ResumeState,
    /// Bytes of the file handed to the writer, from offset 0 without a gap.
    offset: u64,
    writer: Option<PartWriter>,
    /// Whether `Started` was reported.
    started: bool,
    resumed_from: u64,
    /// Set when the server turned out not to serve ranges: no more segments.
    single_only: bool,
    /// The name the server's `Content-Disposition` suggested, made safe.
    disposition_name: Option<String>,
    /// A small file's whole body, kept in memory and written once at the end.
    small: Option<Vec<u8>>,
    /// A state file from an earlier run was found (to be removed when done).
    stale_state: bool,
    /// The output exists and the request asks the server whether it changed.
    revalidating: bool,
    /// The server answered `304`: the existing file is current.
    not_modified: bool,
}

/// How an attempt ended when it did not fail.
enum AttemptEnd {
    Complete,
    /// The server said the existing file is current (`304`).
    NotModified,
    /// The bytes on disk cannot be continued; fetch again from zero.
    StartOver(String),
}

impl Transfer<'_> {
    pub(crate) async fn run(mut self) -> Result<Completed, Error> {
        let clock = Instant::now();
        if self.request.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if self.shared.config.on_exists == OnExists::Rename {
            self.final_path = free_name(&self.final_path).await;
        }
        let paths = PartPaths::beside(&self.final_path);
        let on_disk = OnDisk::look(&self.final_path, &paths).await?;
        if let Some(done) = self.existing_file(&on_disk, clock).await? {
            return Ok(done);
        }
        let output_is_file = on_disk.existing.as_ref().is_some_and(Metadata::is_file);
        let (state, stale_state) = self.resume_state(&paths, on_disk);
        let offset = state.done.contiguous_prefix();
        let mut session = Session {
            state,
            offset,
            writer: None,
            started: false,
            resumed_from: 0,
            single_only: false,
            disposition_name: None,
            small: None,
            stale_state,
            revalidating: false,
            not_modified: false,
        };
        session.revalidating = self.request.revalidate.is_some()
            && session.offset == 0
            && session.state.done.is_empty()
            && output_is_file;
        match self.fetch(&mut session, &paths).await {
            Ok(()) if session.not_modified => self.unchanged(&session, clock).await,
            Ok(()) => {
                // The network's part is done: the next download may start while this one is
                // synced and renamed.
                self.permit = None;
                self.job = None;
                self.commit(session, &paths, clock).await
            }
            Err(error) => {
                if let Some(writer) = session.writer.take() {
                    let mode = if error.keeps_partial() {
                        CloseMode::Suspend
                    } else {
                        CloseMode::Discard
                    };
                    let closed = writer.close(mode).await;
                    // A segment that saw the writer stop reports that; the writer knows why.
                    if let (Err(cause), true) = (closed, is_writer_stopped(&error)) {
                        return Err(cause);
                    }
                }
                Err(error)
            }
        }
    }

    /// Completes when the batch or this request is cancelled.
    async fn cancelled(&self) {
        match &self.request.cancel {
            Some(own) => tokio::select! {
                () = self.cancel.cancelled() => {}
                () = own.cancelled() => {}
            },
            None => self.cancel.cancelled().await,
        }
    }

    fn url(&self) -> String {
        redact_url(&self.request.url)
    }

    fn emit(&self, event: &Event) {
        self.observer.on_event(event);
    }

    /// Attempts until the file is complete, a permanent error occurs, or retries run out.
    async fn fetch(&mut self, session: &mut Session, paths: &PartPaths) -> Result<(), Error> {
        let config = &self.shared.config;
        let mut failures = 0u32;
        let mut start_overs = 0u32;
        loop {
            let before = session.offset;
            let error = match self.attempt(session, paths).await {
                Ok(AttemptEnd::Complete) => return Ok(()),
                Ok(AttemptEnd::NotModified) => {
                    session.not_modified = true;
                    return Ok(());
                }
                Ok(AttemptEnd::StartOver(reason)) => {
                    start_overs += 1;
                    if start_overs > MAX_START_OVERS {
                        return Err(Error::BadRange {
                            url: self.url(),
                            detail: format!("gave up after {MAX_START_OVERS} restarts: {reason}"),
                        });
                    }
                    self.emit(&Event::Restarted {
                        id: self.id,
                        reason,
                    });
                    session.offset = 0;
                    session.state.validators = Validators::default();
                    continue;
                }
                Err(error) => error,
            };
            let pushed_back = matches!(
                error,
                Error::Status {
                    status: 429 | 503,
                    ..
                }
            );
            if pushed_back {
                self.shared.hosts.penalize(&self.request.host_key());
            }
            if !error.is_retryable() {
                return Err(error);
            }
            if session.offset > before {
                failures = 0;
            }
            failures += 1;
            if failures > config.retries {
                return Err(error);
            }
            let delay = retry_delay(
                failures,
                config.retry_delay,
                config.max_retry_wait,
                error.retry_after(),
            );
            self.emit(&Event::Retrying {
                id: self.id,
                attempt: failures + 1,
                delay,
                reason: error_chain(&error),
            });
            if pushed_back {
                // Give the slot back while waiting: the host gets fewer connections.
                self.permit = None;
            }
            tokio::select! {
                () = self.cancelled() => return Err(Error::Cancelled),
                () = tokio::time::sleep(delay) => {}
            }
            if self.permit.is_none() {
                self.permit = Some(self.reacquire_permit().await?);
            }
        }
    }

    /// Waits for room at the host again (polling: released slots wake the scheduler, not us).
    async fn reacquire_permit(&self) -> Result<HostPermit, Error> {
        let host = self.request.host_key();
        loop {
            if let Some(permit) = self.shared.hosts.try_acquire(&host) {
                return Ok(permit);
            }
            tokio::select! {
                () = self.cancelled() => return Err(Error::Cancelled),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// One request: send, judge the answer, stream the body to the writer.
    async fn attempt(&self, session: &mut Session, paths: &PartPaths) -> Result<AttemptEnd, Error> {
        let response = self.send(session).await?;
        let status = response.status();
        let version = response.version();
        let headers = response.headers();
        let ranges_ok = status == StatusCode::PARTIAL_CONTENT
            || headers
                .get(ACCEPT_RANGES)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|unit| unit.trim() == "bytes"));
        let resuming = session.offset > 0;
        if session.disposition_name.is_none() && status.is_success() {
            session.disposition_name = headers
                .get(CONTENT_DISPOSITION)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::naming::content_disposition_name);
        }
        if status == StatusCode::NOT_MODIFIED && session.revalidating {
            session.state.validators = http::validators(headers, None);
            return Ok(AttemptEnd::NotModified);
        }
        let body_total = match status {
            StatusCode::PARTIAL_CONTENT => match self.accept_partial(session, headers, paths)? {
                Ok(end) => end,
                Err(start_over) => return Ok(start_over),
            },
            StatusCode::RANGE_NOT_SATISFIABLE if resuming => {
                let total = session.state.validators.total_bytes;
                if total == Some(session.offset) {
                    if session.writer.is_none() {
                        self.open_writer(session, paths, false);
                    }
                    self.report_started(session, total, version);
                    return Ok(AttemptEnd::Complete);
                }
                return Ok(AttemptEnd::StartOver(
                    "the server refused the range; the file changed".into(),
                ));
            }
            status if status.is_success() && status != StatusCode::PARTIAL_CONTENT => {
                let total = response.content_length();
                let validators = http::validators(headers, total);
                if resuming {
                    self.emit(&Event::Restarted {
                        id: self.id,
                        reason: "the server sent the whole file (it changed, or ranges are \
                                 unsupported); starting over"
                            .into(),
                    });
                }
                session.offset = 0;
                session.state.done = crate::storage::ranges::RangeSet::default();
                session.state.validators = validators.clone();
                if let (None, Some(length)) = (&session.writer, total)
                    && length <= SMALL_FILE_BYTES
                {
                    self.report_started(session, total, version);
                    return self.download_small(session, response, length, paths).await;
                }
                match session.writer.as_mut() {
                    Some(writer) => writer.restart(validators).await?,
                    None => self.open_writer(session, paths, true),
                }
                total.unwrap_or(u64::MAX)
            }
            status if status.is_redirection() && headers.contains_key(LOCATION) => {
                return Err(self.unfollowed_redirect(headers));
            }
            status => {
                return Err(Error::Status {
                    url: self.url(),
                    status: status.as_u16(),
                    retry_after: http::retry_after(headers),
                });
            }
        };
        let total = session.state.validators.total_bytes;
        self.report_started(session, total, version);
        if let Some(total) = total
            && ranges_ok
            && !session.single_only
            && self.wants_segments(session, total)
        {
            let start = session.offset;
            return self.download_segments(session, response, start).await;
        }
        self.stream_body(session, response, body_total).await?;
        Ok(AttemptEnd::Complete)
    }

    /// Checks a `206` against what was asked: the range must start at the offset and carry
    /// the recorded total. `Ok(Err(..))` means the file changed and must be fetched anew.
    fn accept_partial(
        &self,
        session: &mut Session,
        headers: &reqwest::header::HeaderMap,
        paths: &PartPaths,
    ) -> Result<Result<u64, AttemptEnd>, Error> {
        let Some(range) = http::content_range(headers) else {
            return Err(self.bad_range("missing or malformed Content-Range"));
        };
        if range.start != session.offset {
            return Err(self.bad_range(&format!(
                "asked for bytes from {}, got {}-{}",
                session.offset,
                range.start,
                range.end.saturating_sub(1)
            )));
        }
        let known = session.state.validators.total_bytes;
        if range.total.is_none() || (known.is_some() && range.total != known) {
            return Ok(Err(AttemptEnd::StartOver(format!(
                "the file's length changed from {} to {} bytes",
                known.map_or("unknown".into(), |t| t.to_string()),
                range.total.map_or("unknown".into(), |t| t.to_string()),
            ))));
        }
        if session.writer.is_none() {
            self.open_writer(session, paths, false);
        }
        Ok(Ok(range.end))
    }

    /// reqwest hands back the redirects it would not follow (to other schemes).
    fn unfollowed_redirect(&self, headers: &reqwest::header::HeaderMap) -> Error {
        let location = headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        Error::BadRedirect {
            url: self.url(),
            location,
        }
    }

    async fn send(&self, session: &Session) -> Result<reqwest::Response, Error> {
        let mut builder = self
            .shared
            .client
            .get(self.request.url.clone())
            .header(ACCEPT_ENCODING, "identity")
            .headers(self.request.headers.clone());
        if let (true, 0, Some((etag, last_modified))) = (
            session.revalidating,
            session.offset,
            &self.request.revalidate,
        ) {
            if let Some(etag) = etag {
                builder = builder.header(IF_NONE_MATCH, etag);
            }
            if let Some(last_modified) = last_modified {
                builder = builder.header(IF_MODIFIED_SINCE, last_modified);
            }
        }
        if session.offset > 0 {
            builder = builder.header(RANGE, format!("bytes={}-", session.offset));
            if let Some(validator) = session.state.validators.if_range() {
                builder = builder.header(IF_RANGE, validator);
            }
        }
        self.send_request(builder, &self.url()).await
    }

    /// Sends a request, giving up after the connect plus stall timeouts, or on cancellation.
    async fn send_request(
        &self,
        builder: reqwest::RequestBuilder,
        shown_url: &str,
    ) -> Result<reqwest::Response, Error> {
        let config = &self.shared.config;
        let deadline = config.connect_timeout + config.stall_timeout;
        tokio::select! {
            () = self.cancelled() => Err(Error::Cancelled),
            sent = tokio::time::timeout(deadline, builder.send()) => match sent {
                Err(_) => Err(Error::Stalled { url: shown_url.to_owned(), timeout: deadline }),
                Ok(Err(source)) => Err(Error::Network {
                    url: shown_url.to_owned(),
                    source: source.without_url(),
                }),
                Ok(Ok(response)) => Ok(response),
            },
        }
    }

    fn bad_range(&self, detail: &str) -> Error {
        Error::BadRange {
            url: self.url(),
            detail: detail.to_owned(),
        }
    }

    fn open_writer(&self, session: &mut Session, paths: &PartPaths, fresh: bool) {
        if fresh {
            session.offset = 0;
        }
        session.writer = Some(PartWriter::spawn(
            paths.clone(),
            session.state.clone(),
            fresh,
            self.request.checksum.as_ref().map(Checksum::algorithm),
            self.shared.config.checkpoint_interval,
        ));
    }

    fn report_started(
        &self,
        session: &mut Session,
        total_bytes: Option<u64>,
        version: reqwest::Version,
    ) {
        if !session.started {
            session.started = true;
            session.resumed_from = session.offset;
            self.emit(&Event::Started {
                id: self.id,
                total_bytes,
                resumed_from: session.offset,
                http_version: format!("{version:?}"),
            });
        }
    }

    /// Streams the body into the writer until `end` (one past the last byte the response
    /// carries; `u64::MAX` when unknown). Chunks are coalesced into large buffers; on any
    /// failure what was received is still handed over, so a retry resumes after it.
    async fn stream_body(
        &self,
        session: &mut Session,
        response: reqwest::Response,
        end: u64,
    ) -> Result<(), Error> {
        let Some(writer) = session.writer.as_ref().map(PartWriter::handle) else {
            return Err(Error::Config("internal: no writer for the body".into()));
        };
        let mut body = response.bytes_stream();
        let mut buffer = Coalescer::new(session.offset, end - session.offset, writer.pool());
        let url = self.url();
        let outcome = loop {
            let chunk = match self.next_chunk(&mut body, None, &url).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            if let Some(rate) = &self.shared.rate {
                tokio::select! {
                    () = self.cancelled() => break Err(Error::Cancelled),
                    () = rate.take(chunk.len()) => {}
                }
            }
            let received = buffer.position() + chunk.len() as u64;
            if received > end {
                break Err(Error::LongBody {
                    url: self.url(),
                    expected: end,
                });
            }
            if let Err(error) = buffer.push(chunk, &writer).await {
                break Err(error);
            }
            self.emit(&Event::Progress {
                id: self.id,
                bytes_done: received,
            });
        };
        // What was received is handed over even after a failure: a retry resumes after it.
        let flushed = buffer.flush(&writer).await;
        session.offset = buffer.position();
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

    /// The next chunk of a body, `None` at its end. A stall (no byte for the stall timeout),
    /// a transport error, and a cancellation of the transfer (or of `abort`) are errors.
    async fn next_chunk<S>(
        &self,
        body: &mut S,
        abort: Option<&CancellationToken>,
        url: &str,
    ) -> Result<Option<Bytes>, Error>
    where
        S: futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin,
    {
        let stall = self.shared.config.stall_timeout;
        let aborted = async {
            match abort {
                Some(token) => token.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = self.cancelled() => Err(Error::Cancelled),
            () = aborted => Err(Error::Cancelled),
            next = tokio::time::timeout(stall, body.next()) => match next {
                Err(_) => Err(Error::Stalled { url: url.to_owned(), timeout: stall }),
                Ok(None) => Ok(None),
                Ok(Some(Err(source))) => Err(Error::Network {
                    url: url.to_owned(),
                    source: source.without_url(),
                }),
                Ok(Some(Ok(chunk))) => Ok(Some(chunk)),
            },
        }
    }

    /// Verifies the finished `.part` and gives it its final name.
    async fn commit(
        &self,
        mut session: Session,
        paths: &PartPaths,
        clock: Instant,
    ) -> Result<Completed, Error> {
        let digest = match (session.small.take(), session.writer.take()) {
            (Some(body), _) => {
                let (final_path, digest) = self.commit_small(&session, body, paths).await?;
                return Ok(session.completed(final_path, digest, clock));
            }
            (None, Some(writer)) => writer.close(CloseMode::Complete).await?.digest,
            (None, None) => {
                return Err(Error::Config("internal: completed without a writer".into()));
            }
        };
        if let Err(mismatch) = self.verify(digest.as_ref()) {
            remove_if_present(&paths.part)?;
            remove_if_present(&paths.state)?;
            return Err(mismatch);
        }
        let naming = self.naming(&session);
        let part = paths.clone();
        let final_path = tokio::task::spawn_blocking(move || naming.apply(&part, true))
            .await
            .map_err(|e| Error::io("rename", &paths.part, std::io::Error::other(e)))??;
        Ok(session.completed(final_path, digest, clock))
    }

    /// Checks a finished file's digest against the expected one, when there is one.
    fn verify(&self, actual: Option<&Checksum>) -> Result<(), Error> {
        check_digest(self.request.checksum.as_ref(), actual, &self.final_path)
    }
}

impl Session {
    /// What a download that just committed `path` reports.
    fn completed(self, path: PathBuf, digest: Option<Checksum>, clock: Instant) -> Completed {
        Completed {
            path,
            bytes: self.offset,
            digest,
            resumed_from: self.resumed_from,
            duration: clock.elapsed(),
            already_present: false,
            etag: self.state.validators.etag,
            last_modified: self.state.validators.last_modified,
        }
    }
}

/// `Ok` when nothing is expected or `actual` is what was expected.
fn check_digest(
    expected: Option<&Checksum>,
    actual: Option<&Checksum>,
    path: &std::path::Path,
) -> Result<(), Error> {
    match expected {
        Some(expected) if actual != Some(expected) => Err(Error::ChecksumMismatch {
            path: path.to_path_buf(),
            algorithm: expected.algorithm().name(),
            expected: expected.hex(),
            actual: actual.map_or_else(|| "nothing".into(), Checksum::hex),
        }),
        _ => Ok(()),
    }
}

fn is_writer_stopped(error: &Error) -> bool {
    matches!(error, Error::Io { source, .. } if source.to_string() == WRITER_STOPPED)
}
