//! Segmented downloads: one file over several ranged connections, spread across its mirrors,
//! written in place through one writer. Work is split into pieces up front; a connection that
//! finishes its piece takes the next unassigned one, or else half of the largest piece still
//! running (work stealing), so one slow connection never holds the finish line.

mod plan;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use plan::{MIN_TAIL, Plan, Span};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, IF_RANGE, RANGE};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{AttemptEnd, Session, Transfer};
use crate::Error;
use crate::client::hosts::HostPermit;
use crate::client::http;
use crate::client::retry::retry_delay;
use crate::naming::redact_url;
use crate::progress::{Event, error_chain};
use crate::request::host_key;
use crate::storage::buffers::Coalescer;
use crate::storage::state::Validators;
use crate::storage::writer::WriteHandle;

/// After cutting an answer short (its second half was taken over), a connection waits this
/// long before its next request, so that the server has seen the old one close: the per-host
/// limit holds as the server counts, not only as haul does.
const CLOSE_GRACE: Duration = Duration::from_millis(25);

/// How often a connection with nothing to do looks again for a stalled or slow piece.
const LINGER_POLL: Duration = Duration::from_millis(10);

/// One URL the file can come from.
struct Mirror {
    url: Url,
    host: String,
    /// What this server said about the file; `None` until it first answered.
    validators: Option<Validators>,
    alive: bool,
}

/// How an answer was consumed.
enum Streamed {
    /// Everything the server sent was used.
    ToTheEnd,
    /// The piece ended before the answer did, and the connection was dropped.
    CutShort,
}

/// Why a connection stopped.
enum Stop {
    Failed(Error),
    /// The server no longer serves the same bytes (or ignores ranges): start from zero.
    StartOver(String),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Self::Failed(error)
    }
}

/// Everything the connections of one segmented download share.
struct Engine<'t, 'a> {
    transfer: &'t Transfer<'a>,
    plan: Plan,
    mirrors: Mutex<Vec<Mirror>>,
    total: u64,
    writer: WriteHandle,
    /// Cancelled when one connection fails for good, to stop the others.
    abort: CancellationToken,
    /// The longest a range request has waited for its answer, in microseconds.
    slowest_answer_micros: AtomicU64,
}

impl Transfer<'_> {
    /// How many connections this file may use.
    pub(super) fn connections(&self) -> usize {
        self.request
            .connections
            .unwrap_or(self.shared.config.connections)
            .max(1)
    }

    /// Whether the file should go through the segment engine rather than one plain stream.
    pub(super) fn wants_segments(&self, session: &Session, total: u64) -> bool {
        let gaps = session_gaps(session, total);
        let remaining: u64 = gaps.iter().map(|(s, e)| e - s).sum();
        let split = self.shared.config.min_split_bytes;
        let splits = self.connections() > 1 && remaining >= 2 * split;
        splits || gaps.len() > 1 || !self.request.mirrors.is_empty()
    }

    /// Downloads what is missing of the file over several connections. `first` is the answer
    /// to this attempt's first request, for bytes from `first_start` on.
    pub(super) async fn download_segments(
        &self,
        session: &mut Session,
        first: reqwest::Response,
        first_start: u64,
    ) -> Result<AttemptEnd, Error> {
        let total = session.state.validators.total_bytes.unwrap_or(0);
        let gaps = session_gaps(session, total);
        let remaining: u64 = gaps.iter().map(|(s, e)| e - s).sum();
        let split = self.shared.config.min_split_bytes;
        let wanted = usize::try_from(remaining / split)
            .unwrap_or(usize::MAX)
            .clamp(1, self.connections());
        let Some(writer) = session.writer.as_ref().map(super::PartWriter::handle) else {
            return Err(Error::Config("internal: no writer for the segments".into()));
        };
        let mut mirrors = vec![Mirror {
            host: host_key(&self.request.url),
            url: self.request.url.clone(),
            validators: Some(session.state.validators.clone()),
            alive: true,
        }];
        mirrors.extend(self.request.mirrors.iter().map(|url| Mirror {
            host: host_key(url),
            url: url.clone(),
            validators: None,
            alive: true,
        }));
        let engine = Engine {
            transfer: self,
            plan: Plan::new(&gaps, wanted, total - remaining),
            mirrors: Mutex::new(mirrors),
            total,
            writer,
            abort: CancellationToken::new(),
            slowest_answer_micros: AtomicU64::new(0),
        };
        // The first connection's answer starts at the first gap: it takes the first piece.
        engine.plan.claim(0, Instant::now(), MIN_TAIL);
        let mut workers = FuturesUnordered::new();
        workers.push(engine.work(0, 0, Some((first, first_start)), None));
        for worker in 1..wanted {
            let Some((mirror, permit)) = engine.permit_for(worker) else {
                break;
            };
            workers.push(engine.work(worker, mirror, None, Some(permit)));
        }
        let mut outcome = Ok(());
        while let Some(result) = workers.next().await {
            if let Err(stop) = result {
                engine.abort.cancel();
                if outcome.is_ok() {
                    outcome = Err(stop);
                }
            }
        }
        match outcome {
            Err(Stop::StartOver(reason)) => {
                session.single_only = true;
                Ok(AttemptEnd::StartOver(reason))
            }
            Err(Stop::Failed(error)) => Err(error),
            Ok(()) if engine.plan.is_complete() => {
                session.offset = total;
                Ok(AttemptEnd::Complete)
            }
            Ok(()) => Err(Error::Config(
                "internal: segments ended with bytes missing".into(),
            )),
        }
    }
}

/// What is missing of the file: not in the saved ranges and not streamed in this run.
fn session_gaps(session: &Session, total: u64) -> Vec<(u64, u64)> {
    let mut done = session.state.done.clone();
    done.insert(0, session.offset);
    done.gaps(total)
}

impl Engine<'_, '_> {
    fn mirrors(&self) -> MutexGuard<'_, Vec<Mirror>> {
        self.mirrors.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A mirror for an extra connection, with a permit for its host (the per-host limit counts
    /// every connection). Prefers mirror `worker % mirrors`, then any other with room.
    fn permit_for(&self, worker: usize) -> Option<(usize, HostPermit)> {
        let mirrors = self.mirrors();
        let count = mirrors.len();
        (0..count)
            .map(|shift| (worker + shift) % count)
            .filter(|index| mirrors[*index].alive)
            .find_map(|index| {
                self.transfer
                    .shared
                    .hosts
                    .try_acquire(&mirrors[index].host)
                    .map(|permit| (index, permit))
            })
    }

    /// Drops mirror `index` for this file; returns another live one.
    fn drop_mirror(&self, index: usize, error: &Error) -> Option<usize> {
        let mut mirrors = self.mirrors();
        let count = mirrors.len();
        if count == 1 {
            return None;
        }
        let was_alive = std::mem::replace(&mut mirrors[index].alive, false);
        let next = (1..count)
            .map(|shift| (index + shift) % count)
            .find(|other| mirrors[*other].alive);
        if was_alive && next.is_some() {
            self.transfer.emit(&Event::Warning {
                id: self.transfer.id,
                message: format!(
                    "mirror {} dropped for this file: {}",
                    redact_url(&mirrors[index].url),
                    error_chain(error)
                ),
            });
        }
        next
    }

    /// One connection: works on pieces until none is left.
    async fn work(
        &self,
        worker: usize,
        mut mirror: usize,
        mut first: Option<(reqwest::Response, u64)>,
        mut permit: Option<HostPermit>,
    ) -> Result<(), Stop> {
        let config = &self.transfer.shared.config;
        let mut failures = 0u32;
        // When this connection last cut an answer short (see `CLOSE_GRACE`).
        let mut cut_short: Option<Instant> = None;
        loop {
            let Some(span) = self.next_span(worker, &mut mirror, &mut permit).await else {
                return Ok(());
            };
            let result = match first.take() {
                Some((response, start)) => self.stream(worker, response, start).await,
                None => {
                    if let Some(cut) = cut_short.take() {
                        tokio::select! {
                            () = self.abort.cancelled() => {}
                            () = self.transfer.cancelled() => {}
                            () = tokio::time::sleep(CLOSE_GRACE.saturating_sub(cut.elapsed())) => {}
                        }
                    }
                    match self.request_range(mirror, span.next, span.end).await {
                        Ok(response) => self.stream(worker, response, span.next).await,
                        Err(stop) => Err(stop),
                    }
                }
            };
            let error = match result {
                Ok(Streamed::ToTheEnd) => continue,
                Ok(Streamed::CutShort) => {
                    cut_short = Some(Instant::now());
                    continue;
                }
                Err(Stop::StartOver(reason)) => {
                    self.plan.release(worker);
                    return Err(Stop::StartOver(reason));
                }
                Err(Stop::Failed(error)) => error,
            };
            if self.abort.is_cancelled() || matches!(error, Error::Cancelled) {
                self.plan.release(worker);
                return Err(Stop::Failed(error));
            }
            if let Error::Status {
                status: 429 | 503, ..
            } = &error
            {
                let host = self.mirrors()[mirror].host.clone();
                self.transfer.shared.hosts.penalize(&host);
                if worker != 0 {
                    // The host pushes back: an extra connection steps aside and its piece
                    // goes to the others.
                    self.plan.release(worker);
                    return Ok(());
                }
            }
            if self
                .plan
                .span(worker)
                .is_some_and(|now| now.next > span.next)
            {
                failures = 0;
            }
            failures += 1;
            if error.is_retryable() && failures <= config.retries {
                let delay = retry_delay(
                    failures,
                    config.retry_delay,
                    config.max_retry_wait,
                    error.retry_after(),
                );
                self.transfer.emit(&Event::Retrying {
                    id: self.transfer.id,
                    attempt: failures + 1,
                    delay,
                    reason: error_chain(&error),
                });
                tokio::select! {
                    () = self.transfer.cancelled() => {
                        self.plan.release(worker);
                        return Err(Stop::Failed(Error::Cancelled));
                    }
                    () = self.abort.cancelled() => {
                        self.plan.release(worker);
                        return Err(Stop::Failed(Error::Cancelled));
                    }
                    () = tokio::time::sleep(delay) => {}
                }
                continue;
            }
            // This URL is done for this file; another mirror may take over the piece.
            match self.drop_mirror(mirror, &error) {
                Some(next) => {
                    mirror = next;
                    failures = 0;
                }
                None => {
                    self.plan.release(worker);
                    return Err(Stop::Failed(error));
                }
            }
        }
    }

    /// The piece `worker` works on next: the rest of its own, a new one, or a taken-over
    /// rest; `None` when the download needs nothing more from it. A connection with nothing to
    /// do gives its host permit (`permit`, held by every connection but the first) back while
    /// it waits, so other downloads from the host are not held up by this file's tail, and
    /// takes one again (possibly for another mirror) before it takes anything over.
    async fn next_span(
        &self,
        worker: usize,
        mirror: &mut usize,
        permit: &mut Option<HostPermit>,
    ) -> Option<Span> {
        loop {
            match self.plan.span(worker) {
                Some(span) if span.next < span.end => return Some(span),
                Some(_) => self.plan.finish(worker),
                None => {
                    if let Some(span) = self.plan.claim(worker, Instant::now(), self.min_tail()) {
                        if worker == 0 || permit.is_some() {
                            return Some(span);
                        }
                        if let Some((index, again)) = self.permit_for(worker) {
                            *mirror = index;
                            *permit = Some(again);
                            return Some(span);
                        }
                        // The host is busy with other downloads: the piece waits for a
                        // connection of this file that still holds a permit.
                        self.plan.release(worker);
                    }
                    if !self.plan.others_running(worker) && !self.plan.has_pending() {
                        return None;
                    }
                    // Stay until the others are done: one of them may stall or slow down,
                    // and this connection can then take its rest over (or, when a piece waits
                    // for a host permit, until one is free).
                    *permit = None;
                    tokio::select! {
                        () = self.abort.cancelled() => return None,
                        () = self.transfer.cancelled() => return None,
                        () = self.plan.changed.notified() => {}
                        () = tokio::time::sleep(LINGER_POLL) => {}
                    }
                }
            }
        }
    }

    /// The shortest rest of a piece worth a new request: a thief waits a whole answer's
    /// latency before its first byte, so splitting pays only when the rest takes clearly longer.
    fn min_tail(&self) -> Duration {
        let slowest = Duration::from_micros(self.slowest_answer_micros.load(Ordering::Relaxed));
        MIN_TAIL.max(slowest * 2)
    }

    /// Asks mirror `index` for `[start, end)` and checks that the answer is that range of the
    /// same file.
    async fn request_range(
        &self,
        index: usize,
        start: u64,
        end: u64,
    ) -> Result<reqwest::Response, Stop> {
        let (url, validators) = {
            let mirrors = self.mirrors();
            (
                mirrors[index].url.clone(),
                mirrors[index].validators.clone(),
            )
        };
        let shown = redact_url(&url);
        let mut builder = self
            .transfer
            .shared
            .client
            .get(url)
            .header(ACCEPT_ENCODING, "identity")
            .headers(self.transfer.request.headers.clone())
            .header(RANGE, format!("bytes={start}-{}", end - 1));
        if let Some(validator) = validators.as_ref().and_then(Validators::if_range) {
            builder = builder.header(IF_RANGE, validator);
        }
        let asked = Instant::now();
        let response = self.transfer.send_request(builder, &shown).await?;
        let waited = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.slowest_answer_micros
            .fetch_max(waited, Ordering::Relaxed);
        let status = response.status();
        let headers = response.headers();
        let refuse = |detail: String| {
            Stop::Failed(Error::BadRange {
                url: shown.clone(),
                detail,
            })
        };
        match status {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK | StatusCode::RANGE_NOT_SATISFIABLE if index == 0 => {
                return Err(Stop::StartOver(
                    "the server answered a range request with the whole file (it changed, or \
                     ranges are unsupported); starting over on one connection"
                        .into(),
                ));
            }
            StatusCode::OK | StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(refuse(
                    "this mirror does not serve ranges of the file; refused".into(),
                ));
            }
            status => {
                return Err(Stop::Failed(Error::Status {
                    url: shown,
                    status: status.as_u16(),
                    retry_after: http::retry_after(headers),
                }));
            }
        }
        let Some(range) = http::content_range(headers) else {
            return Err(refuse("missing or malformed Content-Range".into()));
        };
        if range.start != start {
            return Err(refuse(format!(
                "asked for bytes from {start}, got {}-{}",
                range.start,
                range.end.saturating_sub(1)
            )));
        }
        if range.total != Some(self.total) {
            let length = range.total.map_or("unknown".into(), |t| t.to_string());
            if index == 0 {
                return Err(Stop::StartOver(format!(
                    "the file's length changed from {} to {length} bytes",
                    self.total
                )));
            }
            return Err(refuse(format!(
                "its length {length} differs from the first answer's {}; mirror refused",
                self.total
            )));
        }
        if validators.is_none() {
            let seen = http::validators(headers, Some(self.total));
            let first_modified = self.mirrors()[0]
                .validators
                .as_ref()
                .and_then(|v| v.last_modified.clone());
            if let (Some(ours), Some(theirs)) = (&first_modified, &seen.last_modified)
                && ours != theirs
            {
                return Err(refuse(format!(
                    "its Last-Modified `{theirs}` differs from the first answer's `{ours}`; \
                     mirror refused"
                )));
            }
            self.mirrors()[index].validators = Some(seen);
        }
        Ok(response)
    }

    /// Streams one answer into the writer, from `start`, until the worker's piece ends (it
    /// may shrink while this runs, when another connection takes its second half).
    async fn stream(
        &self,
        worker: usize,
        response: reqwest::Response,
        start: u64,
    ) -> Result<Streamed, Stop> {
        let answer_end =
            http::content_range(response.headers()).map_or(self.total, |range| range.end);
        let transfer = self.transfer;
        let url = redact_url(response.url());
        let Some(span) = self.plan.span(worker) else {
            return Ok(Streamed::ToTheEnd);
        };
        let mut body = response.bytes_stream();
        let mut position = start;
        let mut end = span.end;
        let first_kept = span.next.max(start);
        let mut buffer = Coalescer::new(first_kept, end - first_kept, self.writer.pool());
        let outcome = loop {
            let next = tokio::select! {
                next = transfer.next_chunk(&mut body, Some(&self.abort), &url) => next,
                () = self.plan.changed.notified() => {
                    // An idle connection may have taken this piece's rest over.
                    end = self.plan.advance(worker, position, Instant::now()).0;
                    if position >= end {
                        break Ok(());
                    }
                    continue;
                }
            };
            let mut chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) if position < end => {
                    break Err(Error::ShortBody {
                        url,
                        received: position,
                        expected: end,
                    });
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            if let Some(rate) = &transfer.shared.rate {
                tokio::select! {
                    () = transfer.cancelled() => break Err(Error::Cancelled),
                    () = rate.take(chunk.len()) => {}
                }
            }
            // Bytes before the piece (the first answer may start at an earlier gap's end).
            if position < span.next {
                let skip = usize::try_from(span.next - position)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                let _ = chunk.split_to(skip);
                position += skip as u64;
            }
            let room = usize::try_from(end.saturating_sub(position)).unwrap_or(usize::MAX);
            chunk.truncate(room);
            position += chunk.len() as u64;
            let (now_end, received) = self.plan.advance(worker, position, Instant::now());
            end = now_end;
            if let Err(error) = buffer.push(chunk, &self.writer).await {
                break Err(error);
            }
            transfer.emit(&Event::Progress {
                id: transfer.id,
                bytes_done: received,
            });
            if position >= end {
                break Ok(());
            }
        };
        let flushed = buffer.flush(&self.writer).await;
        outcome.map_err(Stop::Failed)?;
        flushed?;
        self.plan.finish(worker);
        Ok(if position < answer_end {
            Streamed::CutShort
        } else {
            Streamed::ToTheEnd
        })
    }
}
