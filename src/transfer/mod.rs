//! One file's life: check what is already on disk, fetch (resuming where it can, retrying what
//! is worth retrying), verify, and commit under the final name. A final name appears only for a
//! complete, verified file; any failure leaves a resumable `.part` or nothing.

mod local;
mod segments;
mod small;
mod sources;
pub(crate) mod to_writer;

use local::OnDisk;
use sources::Sources;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::client::cancel::Cancel;
use crate::client::exchange::{Answer, Ask, Reply};
use crate::client::hosts::HostPermit;
use crate::client::retry::RetryPolicy;
use crate::config::{Config, OnExists};
use crate::integrity::Checksum;
use crate::naming::redact_url;
use crate::progress::{Event, Reporter};
use crate::storage::PartPaths;
use crate::storage::buffers::Coalescer;
use crate::storage::files::{remove_part, remove_state};
use crate::storage::place::{Kind, Place};
use crate::storage::reservations::Claims;
use crate::storage::state::{ResumeState, Validators};
use crate::storage::writer::{CloseMode, PartWriter};
use crate::{Error, Request};

/// A download's place among the `jobs` running at once, handed in by whoever schedules it and
/// given back by dropping it (once the body has arrived, or when the download ends).
pub(crate) type JobLease = Box<dyn Send + Sync>;

/// A file up to this size is received in memory and written once, without a resume state:
/// creating, syncing and deleting a state file would cost more than fetching it again.
const SMALL_FILE_BYTES: u64 = 1 << 20;
/// How often a download whose file another haul process is writing looks again.
const BUSY_POLL: Duration = Duration::from_millis(500);
/// How long a download waits when the process is out of file descriptors before it tries again.
const DESCRIPTOR_WAIT: Duration = Duration::from_millis(200);
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

/// Everything one download needs: the means to reach the server, the request, where its
/// events go, what stops it, and the places it holds.
pub(crate) struct Transfer<'a> {
    pub(crate) client: &'a Client,
    pub(crate) request: &'a Request,
    pub(crate) report: &'a Reporter,
    pub(crate) cancel: &'a Cancel,
    /// Where the finished file goes.
    pub(crate) place: Place,
    /// The host permit of the first connection, held for the whole transfer except while it
    /// backs off from a host that pushed back.
    pub(crate) permit: Option<HostPermit>,
    /// The job's place, given up once the body has arrived.
    pub(crate) job: Option<JobLease>,
    /// The file's own rate limit (`Request::with_rate_limit`), shared by its connections.
    pub(crate) file_rate: Option<std::sync::Arc<crate::client::rate::RateLimiter>>,
}

/// What the server has shown about ranges during this download. Some origins answer any
/// request carrying `Range` with `412` or a server error, while plain requests work: haul then
/// treats them as servers without ranges (one connection, from byte 0). A `429`, or a `503`
/// with `Retry-After`, asks for patience and never counts here.
#[derive(Debug, Default)]
struct RangeTrust {
    /// Ranged requests answered with a server error, in a row.
    ranged_errors: u32,
    /// The next attempt goes without `Range`, to learn whether plain requests work.
    probe: bool,
    /// Ranges are refused: whole answers only.
    refused: bool,
    /// The first request asked for the first piece only and the server answered with an
    /// error or a refused range: later requests of this download start plain.
    first_piece_failed: bool,
}

/// Server errors to a ranged request in a row before a plain request is tried.
const RANGED_ERRORS_BEFORE_PROBE: u32 = 2;

impl RangeTrust {
    /// Whether this failure of a ranged request says something about ranges; `true` when the
    /// server refused them outright (`412`).
    fn after_ranged_failure(&mut self, error: &Error) -> bool {
        match error {
            Error::Status { status: 412, .. } => {
                self.refused = true;
                true
            }
            error if is_server_error_without_patience(error) => {
                self.ranged_errors += 1;
                self.probe = self.ranged_errors >= RANGED_ERRORS_BEFORE_PROBE;
                false
            }
            _ => {
                self.ranged_errors = 0;
                false
            }
        }
    }

    /// A plain request (the probe) failed as well: the server is unwell, ranges are not the
    /// problem, and the bytes on disk are worth resuming.
    fn after_plain_failure(&mut self) {
        self.probe = false;
        self.ranged_errors = 0;
    }
}

/// Whether a request for the first piece failed in a way a plain request may not: the
/// server refused the range (`412`, a wrong `Content-Range`) or failed on it with a server
/// error. Nothing says yet that it serves ranges at all.
fn refuses_first_piece(error: &Error) -> bool {
    matches!(
        error,
        Error::Status { status: 412, .. } | Error::BadRange { .. }
    ) || is_server_error_without_patience(error)
}

/// `500`, `502`, `504`, or a `503` without `Retry-After`.
fn is_server_error_without_patience(error: &Error) -> bool {
    matches!(
        error,
        Error::Status {
            status: 500 | 502 | 504,
            ..
        } | Error::Status {
            status: 503,
            retry_after: None,
            ..
        }
    )
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
    /// What the server has shown about ranges.
    ranges: RangeTrust,
    /// Body bytes received in this run (to tell an attempt that made progress).
    received: u64,
    /// The digest the file must have: the request's checksum, else the one the server
    /// announced (with its header).
    expected: Option<(Checksum, Option<&'static str>)>,
    /// The name the server's `Content-Disposition` suggested, made safe.
    disposition_name: Option<String>,
    /// The final name claimed for it in this run (see `storage::reservations`).
    claimed_name: Option<std::ffi::OsString>,
    /// A file named by the server was there before the run and is kept: its length.
    present: Option<u64>,
    /// A small file's whole body, kept in memory and written once at the end.
    small: Option<Vec<u8>>,
    /// A state file from an earlier run was found (to be removed when done).
    stale_state: bool,
    /// The output exists and the request asks the server whether it changed.
    revalidating: bool,
    /// The validators to ask with (`If-None-Match`, `If-Modified-Since`).
    revalidate: Option<(Option<String>, Option<String>)>,
    /// The server answered `304`: the existing file is current.
    not_modified: bool,
    /// The file's URL and mirrors, and which one is asked now.
    sources: Sources,
    /// The source `state.validators` came from (its `ETag` speaks only for that server).
    validators_from: usize,
}

/// How an attempt ended when it did not fail.
enum AttemptEnd {
    Complete,
    /// The server named the file, and a file of that name is kept as it is.
    Present,
    /// The server said the existing file is current (`304`).
    NotModified,
    /// The bytes on disk cannot be continued; fetch again from zero.
    StartOver(String),
    /// The answer ended where it said, before the end of the file (an answer to a request
    /// for the first piece only): the next request asks for the rest, at once.
    MoreToFetch,
    /// The source asked serves another version than the bytes kept come from (a mirror): it
    /// is left for this file.
    SourceDiffers(String),
}

impl Transfer<'_> {
    pub(crate) async fn run(mut self) -> Result<Completed, Error> {
        let clock = Instant::now();
        let owner = self.report.id().0;
        // Whatever this download claims is given back when it ends, however it ends.
        let _claims = Claims::new(self.client.reservations().clone(), owner);
        self.claim_output(owner).await?;
        let mut waiting = false;
        loop {
            match self.run_once(clock).await {
                Err(Error::Busy { path }) => {
                    // Another haul process writes this file: wait for it, then look again (it
                    // may be complete by then, or its `.part` ours to resume).
                    if !std::mem::replace(&mut waiting, true) {
                        self.emit(&Event::Warning {
                            id: self.report.id(),
                            message: format!(
                                "another haul process is downloading `{}`; waiting for it",
                                path.display()
                            ),
                        });
                    }
                    RetryPolicy::wait(BUSY_POLL, self.cancel).await?;
                    if self.permit.is_none() {
                        let host = self.request.host_key();
                        self.permit = Some(self.client.hosts().acquire(&host, self.cancel).await?);
                    }
                }
                other => return other,
            }
        }
    }

    /// Claims the output before anything is written: a name the server may still change
    /// (`Content-Disposition`) stands in as the first free one of this run; an exact name is
    /// held, and while another download of this run holds it, this one waits.
    async fn claim_output(&mut self, owner: usize) -> Result<(), Error> {
        let reservations = self.client.reservations().clone();
        if self.server_names_the_file() {
            let lookup = PartPaths::beside(&self.place);
            let chosen = tokio::task::spawn_blocking(move || {
                let dir = lookup.dir(false)?;
                let dir_path = lookup
                    .place
                    .path()
                    .parent()
                    .map(std::path::Path::to_path_buf)
                    .unwrap_or_default();
                reservations.claim_provisional(
                    dir.as_deref(),
                    &dir_path,
                    lookup.place.name(),
                    owner,
                )
            })
            .await
            .map_err(|e| Error::Internal(format!("claiming a name failed: {e}")))??;
            if chosen != self.place.name() {
                self.place = self.place.sibling(chosen);
            }
            return Ok(());
        }
        let path = self.place.path();
        let mut waiting = false;
        while !reservations.hold(&path, owner) {
            if !std::mem::replace(&mut waiting, true) {
                self.emit(&Event::Warning {
                    id: self.report.id(),
                    message: format!(
                        "another download of this run writes `{}`; waiting for it",
                        path.display()
                    ),
                });
            }
            RetryPolicy::wait(BUSY_POLL, self.cancel).await?;
        }
        Ok(())
    }

    /// Whether the server's `Content-Disposition` names this file (the URL's name only stands
    /// in until the answer arrives).
    fn server_names_the_file(&self) -> bool {
        self.config().content_disposition
            && matches!(self.request.destination, crate::Destination::Directory(_))
    }

    async fn run_once(&mut self, clock: Instant) -> Result<Completed, Error> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let rename = self.on_exists() == OnExists::Rename;
        let timestamping = self.request.revalidate.is_none()
            && self
                .request
                .timestamping
                .unwrap_or(self.config().timestamping);
        let (on_disk, mut paths) = OnDisk::look(
            self.client.quick_fs(),
            &PartPaths::beside(&self.place),
            rename,
            timestamping,
        )
        .await?;
        paths.final_absent = on_disk.existing.is_none();
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
            return Ok(done);
        }
        let (state, stale_state) = self.resume_state(&paths, on_disk);
        let offset = state.done.contiguous_prefix();
        let mut session = Session {
            state,
            offset,
            writer: None,
            started: false,
            resumed_from: 0,
            single_only: false,
            ranges: RangeTrust::default(),
            received: 0,
            expected: None,
            disposition_name: None,
            claimed_name: None,
            present: None,
            small: None,
            stale_state,
            revalidating: false,
            revalidate,
            not_modified: false,
            sources: Sources::new(&self.request.url, &self.request.mirrors),
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
        session.revalidating = session.revalidate.is_some()
            && session.offset == 0
            && session.state.done.is_empty()
            && output_is_file;
        match self.fetch(&mut session, &paths).await {
            Ok(()) if session.not_modified => self.unchanged(&session, &paths, clock).await,
            Ok(()) if session.present.is_some() => Self::kept(session, &paths, clock).await,
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
                    if let (Err(cause), Error::WriterStopped { .. }) = (closed, &error) {
                        return Err(cause);
                    }
                }
                Err(error)
            }
        }
    }

    fn config(&self) -> &Config {
        self.client.config()
    }

    fn on_exists(&self) -> OnExists {
        self.request.on_exists.unwrap_or(self.config().on_exists)
    }

    /// The size limit of this file, if any.
    fn max_bytes(&self) -> Option<u64> {
        self.request.max_bytes.or(self.config().max_file_bytes)
    }

    /// `TooLarge` when `bytes` is over the size limit.
    fn check_size(&self, bytes: u64, announced: bool) -> Result<(), Error> {
        match self.max_bytes() {
            Some(limit) if bytes > limit => Err(Error::TooLarge {
                url: self.url(),
                limit,
                announced: announced.then_some(bytes),
            }),
            _ => Ok(()),
        }
    }

    fn remote_time(&self) -> bool {
        self.request
            .remote_time
            .unwrap_or(self.config().remote_time)
    }

    /// The algorithm the writer hashes with: the expected digest's, else the one asked for.
    fn hash_algorithm(&self, session: &Session) -> Option<crate::Algorithm> {
        session
            .expected
            .as_ref()
            .map(|(checksum, _)| checksum.algorithm())
            .or(self.request.digest)
    }

    /// Takes the digest the server announces for the whole file as the one to verify, when
    /// the request has none and nothing was written yet.
    fn adopt_server_digest(&self, session: &mut Session, reply: &Reply, whole: bool) {
        if !self.config().server_digests || session.expected.is_some() || session.writer.is_some() {
            return;
        }
        if let Some(announced) = crate::client::digest::announced(reply.headers(), whole) {
            session.state.server_digest =
                Some((announced.checksum.to_string(), announced.header.to_owned()));
            session.expected = Some((announced.checksum, Some(announced.header)));
        }
    }

    fn url(&self) -> String {
        redact_url(&self.request.url)
    }

    fn emit(&self, event: &Event) {
        self.report.emit(event);
    }

    /// Attempts until the file is complete, a permanent error occurs, or retries run out.
    async fn fetch(&mut self, session: &mut Session, paths: &PartPaths) -> Result<(), Error> {
        let mut policy = RetryPolicy::new(self.client, &self.request.url, self.report);
        let mut start_overs = 0u32;
        loop {
            let before = session.received;
            let asked_range = session.asks_range();
            let asked_first_piece = self.asks_first_piece(session);
            let probing = session.ranges.probe && session.offset > 0;
            let error = match self.attempt(session, paths, asked_first_piece).await {
                Ok(AttemptEnd::Complete) => return Ok(()),
                Ok(AttemptEnd::MoreToFetch) => continue,
                Ok(AttemptEnd::NotModified) => {
                    session.not_modified = true;
                    return Ok(());
                }
                Ok(AttemptEnd::Present) => return Ok(()),
                Ok(AttemptEnd::SourceDiffers(reason)) => Error::BadRange {
                    url: crate::naming::redact_url(session.sources.current()),
                    detail: reason,
                },
                Ok(AttemptEnd::StartOver(reason)) => {
                    start_overs += 1;
                    if start_overs > MAX_START_OVERS {
                        return Err(Error::BadRange {
                            url: self.url(),
                            detail: format!("gave up after {MAX_START_OVERS} restarts: {reason}"),
                        });
                    }
                    self.emit(&Event::Restarted {
                        id: self.report.id(),
                        reason,
                    });
                    session.offset = 0;
                    session.state.validators = Validators::default();
                    continue;
                }
                Err(error) => error,
            };
            if asked_first_piece && refuses_first_piece(&error) {
                // Nothing says yet that this server serves ranges: ask plainly, at once.
                session.ranges.first_piece_failed = true;
                continue;
            }
            if asked_range && session.ranges.after_ranged_failure(&error) {
                start_overs += 1;
                if start_overs > MAX_START_OVERS {
                    return Err(error);
                }
                self.emit(&Event::Warning {
                    id: self.report.id(),
                    message: format!(
                        "the server refuses range requests ({}); continuing on one connection \
                         without ranges",
                        crate::error_chain(&error)
                    ),
                });
                session.single_only = true;
                continue;
            }
            if probing {
                session.ranges.after_plain_failure();
            }
            if error.is_out_of_descriptors() {
                // Not the file's fault: wait for descriptors to come back, without counting
                // a retry.
                RetryPolicy::wait(DESCRIPTOR_WAIT, self.cancel).await?;
                continue;
            }
            let pushed_back = crate::client::retry::pushes_back(&error);
            let terminal_here =
                session.sources.several() && session.sources.is_terminal_for_source(&error);
            let delay = if terminal_here {
                None
            } else {
                policy.next_delay(&error, session.received > before)
            };
            let Some(delay) = delay else {
                // This source is done with; the next one, if any, goes on from the bytes
                // already verified.
                let Some(message) = session.sources.leave(&crate::error_chain(&error)) else {
                    return Err(error);
                };
                self.emit(&Event::Warning {
                    id: self.report.id(),
                    message,
                });
                policy = RetryPolicy::new(self.client, session.sources.current(), self.report);
                self.permit = None;
                let host = crate::request::host_key(session.sources.current());
                self.permit = Some(self.client.hosts().acquire(&host, self.cancel).await?);
                continue;
            };
            if pushed_back {
                // Give the host's place back while waiting: the host gets fewer connections.
                self.permit = None;
            }
            RetryPolicy::wait(delay, self.cancel).await?;
            if self.permit.is_none() {
                let host = crate::request::host_key(session.sources.current());
                self.permit = Some(self.client.hosts().acquire(&host, self.cancel).await?);
            }
        }
    }

    /// One request: send, judge the answer, stream the body to the writer. `first_piece`:
    /// the request asks for the first piece only (see `asks_first_piece`).
    async fn attempt(
        &self,
        session: &mut Session,
        paths: &PartPaths,
        first_piece: bool,
    ) -> Result<AttemptEnd, Error> {
        let answer = self.send(session, first_piece).await?;
        let resuming = session.offset > 0;
        let (reply, body_end) = match answer {
            Answer::NotModified(validators) if session.revalidating => {
                session.state.validators = validators;
                return Ok(AttemptEnd::NotModified);
            }
            Answer::NotModified(_) => {
                return Err(Error::Internal("a 304 to an unconditional request".into()));
            }
            Answer::Partial(reply, range) if !resuming => {
                match self
                    .begin_first_piece(session, reply, &range, paths)
                    .await?
                {
                    ControlFlow::Continue(body) => body,
                    ControlFlow::Break(end) => return Ok(end),
                }
            }
            Answer::Unsatisfiable { .. } if !resuming => {
                // A refused first piece: an empty file, or a server that is wrong about
                // ranges. A plain request settles it.
                session.ranges.first_piece_failed = true;
                return Ok(AttemptEnd::MoreToFetch);
            }
            Answer::Partial(reply, range) => {
                self.adopt_server_digest(session, &reply, false);
                if let Some(start_over) = self.accept_partial(session, &reply.validators, paths) {
                    return Ok(start_over);
                }
                (reply, range.end)
            }
            Answer::Unsatisfiable { total: said } => {
                let total = session.state.validators.total_bytes;
                // The server's own word on the length, when it gave one, must agree.
                let agrees = said.is_none_or(|said| Some(said) == total);
                if resuming && agrees && total == Some(session.offset) {
                    if session.writer.is_none() {
                        self.open_writer(session, paths, false);
                    }
                    self.report_started(session, total, "HTTP/1.1");
                    return Ok(AttemptEnd::Complete);
                }
                return Ok(AttemptEnd::StartOver(
                    "the server refused the range; the file changed".into(),
                ));
            }
            Answer::Whole(reply) => {
                if first_piece || session.ranges.first_piece_failed {
                    // A range was ignored, or failed where this plain request worked: the
                    // answer carries the whole file on its own connection.
                    session.single_only = true;
                }
                if resuming {
                    if session.ranges.probe {
                        // Plain requests work where ranged ones failed: the server refuses ranges.
                        session.ranges.refused = true;
                        session.single_only = true;
                    }
                    self.emit(&Event::Restarted {
                        id: self.report.id(),
                        reason: "the server sent the whole file (it changed, or ranges are \
                                 unsupported); starting over"
                            .into(),
                    });
                }
                match self.begin_whole(session, reply, paths).await? {
                    ControlFlow::Continue(body) => body,
                    ControlFlow::Break(end) => return Ok(end),
                }
            }
        };
        Self::remember_disposition(session, &reply);
        if self.claim_disposition_name(session, paths).await? {
            return Ok(AttemptEnd::Present);
        }
        let total = session.state.validators.total_bytes;
        if let Some(total) = total {
            self.check_size(total, true)?;
        }
        self.report_started(session, total, &reply.version);
        if let Some(total) = total
            && reply.accepts_ranges
            && !session.single_only
            && self.wants_segments(session, total)
        {
            let start = session.offset;
            return self.download_segments(session, reply, start).await;
        }
        self.stream_body(session, reply, body_end).await?;
        match total {
            Some(total) if session.offset < total => Ok(AttemptEnd::MoreToFetch),
            _ => Ok(AttemptEnd::Complete),
        }
    }

    /// Starts on the answer to a request for the first piece of a fresh download (a `206`).
    async fn begin_first_piece(
        &self,
        session: &mut Session,
        reply: Reply,
        range: &crate::client::http::ContentRange,
        paths: &PartPaths,
    ) -> Result<ControlFlow<AttemptEnd, (Reply, u64)>, Error> {
        if range.total.is_none() {
            // The server does not say where the file ends: a plain request tells.
            session.ranges.first_piece_failed = true;
            return Ok(ControlFlow::Break(AttemptEnd::MoreToFetch));
        }
        if range.total == Some(range.end) {
            // The answer holds the whole file.
            return self.begin_whole(session, reply, paths).await;
        }
        // The file's validators are this answer's.
        self.adopt_server_digest(session, &reply, false);
        session.state.done = crate::storage::ranges::RangeSet::default();
        session.state.validators = reply.validators.clone();
        session.validators_from = session.sources.index();
        match session.writer.as_mut() {
            Some(writer) => writer.restart(reply.validators.clone()).await?,
            None => self.open_writer(session, paths, true),
        }
        Ok(ControlFlow::Continue((reply, range.end)))
    }

    /// Starts on an answer that holds the whole file (a `200`, or a `206` for all of it): the
    /// file's validators, its size, the server's name for it, then the small-file path or a
    /// writer from byte zero. `Continue` with the answer and where its body ends.
    async fn begin_whole(
        &self,
        session: &mut Session,
        reply: Reply,
        paths: &PartPaths,
    ) -> Result<ControlFlow<AttemptEnd, (Reply, u64)>, Error> {
        Self::remember_disposition(session, &reply);
        let total = reply.validators.total_bytes;
        if let Some(total) = total {
            self.check_size(total, true)?;
        }
        session.offset = 0;
        session.state.done = crate::storage::ranges::RangeSet::default();
        session.state.validators = reply.validators.clone();
        session.validators_from = session.sources.index();
        self.adopt_server_digest(session, &reply, true);
        if self.claim_disposition_name(session, paths).await? {
            return Ok(ControlFlow::Break(AttemptEnd::Present));
        }
        if let (None, Some(length)) = (&session.writer, total)
            && length <= SMALL_FILE_BYTES
        {
            self.report_started(session, total, &reply.version);
            return self
                .download_small(session, reply, length, paths)
                .await
                .map(ControlFlow::Break);
        }
        match session.writer.as_mut() {
            Some(writer) => writer.restart(reply.validators.clone()).await?,
            None => self.open_writer(session, paths, true),
        }
        Ok(ControlFlow::Continue((reply, total.unwrap_or(u64::MAX))))
    }

    /// The outcome when the server's name is a file kept as it is: this download's bytes go.
    async fn kept(
        mut session: Session,
        paths: &PartPaths,
        clock: Instant,
    ) -> Result<Completed, Error> {
        if let Some(writer) = session.writer.take() {
            writer.close(CloseMode::Discard).await?;
        }
        let bytes = session.present.unwrap_or(0);
        let name = session.disposition_name.clone().unwrap_or_default();
        Ok(Completed {
            path: paths.place.sibling(name).path(),
            bytes,
            digest: None,
            resumed_from: bytes,
            duration: clock.elapsed(),
            already_present: true,
            etag: None,
            last_modified: None,
        })
    }

    /// Claims the final name the server suggested (once), when such names are used: `true`
    /// when a file of that name from before the run is to be kept instead.
    async fn claim_disposition_name(
        &self,
        session: &mut Session,
        paths: &PartPaths,
    ) -> Result<bool, Error> {
        if session.claimed_name.is_some() || !self.server_names_the_file() {
            return Ok(false);
        }
        // The server's name, or without one the URL's name that stood in for it: claimed
        // either way, so two downloads of this run never finish at one path.
        let wanted = session
            .disposition_name
            .clone()
            .unwrap_or_else(|| paths.place.name().to_string_lossy().into_owned());
        let owner = self.report.id().0;
        let client = self.client.clone();
        let lookup = paths.clone();
        let policy = self.on_exists();
        let claim = tokio::task::spawn_blocking(move || {
            let dir = lookup.dir(false)?;
            let dir_path = lookup
                .place
                .path()
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            client.reservations().claim(
                dir.as_deref(),
                &dir_path,
                std::ffi::OsStr::new(&wanted),
                policy,
                owner,
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("claiming a name failed: {e}")))??;
        match claim {
            crate::storage::reservations::Claim::Name(name) => {
                session.claimed_name = Some(name);
                Ok(false)
            }
            crate::storage::reservations::Claim::Present(len) => {
                session.present = Some(len);
                Ok(true)
            }
        }
    }

    fn remember_disposition(session: &mut Session, reply: &Reply) {
        if session.disposition_name.is_none() {
            session.disposition_name = reply
                .disposition()
                .and_then(crate::naming::content_disposition_name);
        }
    }

    /// The identity rule for a `206` that continues the `.part`: `Some` when it is another
    /// version of the file (or says no length), which must be fetched anew from byte zero.
    /// (The exchange checked that the range starts where asked.)
    fn accept_partial(
        &self,
        session: &mut Session,
        answer: &crate::storage::state::Validators,
        paths: &PartPaths,
    ) -> Option<AttemptEnd> {
        let known = &session.state.validators;
        let same_source = session.validators_from == session.sources.index();
        let origin = if same_source {
            crate::storage::state::Origin::SameSource
        } else {
            crate::storage::state::Origin::OtherSource
        };
        let changed = if answer.total_bytes.is_none() {
            Some("the server does not say the file's length".to_owned())
        } else {
            known.differs(answer, origin)
        };
        if let Some(reason) = changed {
            if !same_source && session.sources.usable().len() > 1 {
                // This mirror serves another version: it is left, the bytes are kept.
                return Some(AttemptEnd::SourceDiffers(reason));
            }
            return Some(AttemptEnd::StartOver(format!(
                "{reason}; discarding the partial file and starting over"
            )));
        }
        if session.writer.is_none() {
            self.open_writer(session, paths, false);
        }
        None
    }

    /// The request of this attempt: a resume asks for the rest with `If-Range` (unless the
    /// server refuses ranges, or a plain request is being tried); a revalidation asks whether
    /// the file changed; with `first_piece`, a fresh download asks for its first piece.
    async fn send(&self, session: &Session, first_piece: bool) -> Result<Answer, Error> {
        let mut ask = Ask::get(session.sources.current())
            .with_headers(&self.request.headers)
            .with_auth(self.request.auth.as_ref());
        if let (true, 0, Some((etag, last_modified))) =
            (session.revalidating, session.offset, &session.revalidate)
        {
            ask = ask.if_changed(etag.as_deref(), last_modified.as_deref());
        }
        if session.asks_range() {
            // Another server's `ETag` means nothing here: only `Last-Modified` can carry over.
            let if_range = if session.validators_from == session.sources.index() {
                session.state.validators.if_range()
            } else {
                session.state.validators.last_modified.as_deref()
            };
            ask = ask.with_range(session.offset, None, if_range);
        } else if first_piece {
            ask = ask.with_range(0, Some(self.first_piece_bytes()), None);
        }
        self.client.exchange(&ask, self.cancel).await
    }

    /// Whether this attempt asks for the first piece only: a fresh download that opens
    /// several connections at once (`-x N`). Its answer then ends exactly where the first
    /// piece does, and its connection goes on with the next request instead of being cut
    /// off mid-answer; a `200` means no ranges, and that answer simply carries the whole file.
    /// The ramp (no `-x`) asks plainly: its first connection may well fetch the whole file.
    fn asks_first_piece(&self, session: &Session) -> bool {
        self.connections() > 1
            && !self.adaptive_connections()
            && session.offset == 0
            && session.writer.is_none()
            && session.state.done.is_empty()
            && !session.revalidating
            && !session.single_only
            && !session.ranges.refused
            && !session.ranges.first_piece_failed
    }

    /// The length of the first piece: a file up to this long comes in one answer (the
    /// segment engine splits only files of at least twice `min_split_bytes`).
    fn first_piece_bytes(&self) -> u64 {
        self.config().min_split_bytes.saturating_mul(2).max(1)
    }

    fn open_writer(&self, session: &mut Session, paths: &PartPaths, fresh: bool) {
        if fresh {
            session.offset = 0;
        }
        session.writer = Some(PartWriter::spawn(
            paths.clone(),
            session.state.clone(),
            fresh,
            self.hash_algorithm(session),
            self.config().checkpoint_interval,
            self.config().syncer.clone(),
        ));
    }

    /// Reports `Started` once. Every byte reused counts as resumed, holes or not (a
    /// segmented download's state may hold several runs of bytes).
    fn report_started(&self, session: &mut Session, total_bytes: Option<u64>, version: &str) {
        if !session.started {
            session.started = true;
            let mut reused = session.state.done.clone();
            reused.insert(0, session.offset);
            session.resumed_from = reused.covered();
            self.emit(&Event::Started {
                id: self.report.id(),
                total_bytes,
                resumed_from: session.resumed_from,
                http_version: version.to_owned(),
                proxy: self.client.proxy_for(&self.request.url),
            });
        }
    }

    /// Streams the body into the writer until `end` (one past the last byte the response
    /// carries; `u64::MAX` when unknown). Chunks are coalesced into large buffers; on any
    /// failure what was received is still handed over, so a retry resumes after it.
    async fn stream_body(
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

    /// Verifies the finished `.part` and gives it its final name.
    async fn commit(
        &self,
        mut session: Session,
        paths: &PartPaths,
        clock: Instant,
    ) -> Result<Completed, Error> {
        let (digest, locked) = match (session.small.take(), session.writer.take()) {
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
        if let Err(mismatch) = verify(session.expected.as_ref(), digest.as_ref(), paths) {
            remove_part(paths)?;
            remove_state(paths)?;
            return Err(mismatch);
        }
        let naming = self.naming(&session, paths);
        let part = paths.clone();
        let final_path = tokio::task::spawn_blocking(move || naming.apply(&part, true))
            .await
            .map_err(|e| Error::io("rename", &paths.part, std::io::Error::other(e)))??;
        drop(locked);
        Ok(session.completed(final_path, digest, clock))
    }
}

/// Checks a finished file's digest against the expected one, when there is one.
fn verify(
    expected: Option<&(Checksum, Option<&'static str>)>,
    actual: Option<&Checksum>,
    paths: &PartPaths,
) -> Result<(), Error> {
    check_digest(expected, actual, &paths.place.path())
}

impl Session {
    /// Whether this attempt asks for the rest of a file with `Range`.
    fn asks_range(&self) -> bool {
        self.offset > 0 && !self.ranges.refused && !self.ranges.probe
    }

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
