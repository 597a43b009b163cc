//! Segmented downloads: one file over several ranged connections, spread across its mirrors,
//! written in place through one writer. Work is split into pieces up front; a connection that
//! finishes its piece takes the next unassigned one, or else half of the largest piece still
//! running (work stealing), so one slow connection never holds the finish line.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, IF_RANGE, RANGE};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{AttemptEnd, Session, Transfer, http, retry_delay};
use crate::Error;
use crate::hosts::HostPermit;
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

/// A running piece whose speed is not known yet is split only while at least this much of it
/// remains.
const STEAL_MIN_BYTES: u64 = 2 << 20;
/// Once a piece's speed is known, it is split while its rest would take at least `min_tail`
/// (see `Engine::min_tail`) to arrive, down to this size: at the end of a download from a
/// server that limits each connection's rate, the last slow megabytes decide the finish time,
/// and a new request for half of them gets them sooner (a fresh request also starts with the
/// server's per-request allowance).
const STEAL_FLOOR_BYTES: u64 = 256 << 10;
/// How long a piece must have run before its speed is trusted.
const RATE_WINDOW: Duration = Duration::from_millis(200);
/// The shortest tail worth a new request, whatever the latency seen. A piece that has not
/// moved for this long while another connection is idle is taken over whole.
const MIN_TAIL: Duration = Duration::from_millis(50);
/// How often a connection with nothing to do looks again for a stalled or slow piece.
const LINGER_POLL: Duration = Duration::from_millis(10);

/// Which bytes each connection is responsible for.
struct Plan {
    state: Mutex<PlanState>,
    /// Woken when a piece is taken over or finished, so a connection waiting on a stalled
    /// answer notices that its piece is gone, and an idle one that there is nothing left.
    changed: tokio::sync::Notify,
}

struct PlanState {
    /// Pieces nobody works on yet, in file order.
    pending: VecDeque<(u64, u64)>,
    /// The piece of each connection: the next byte it expects, and where it must stop.
    active: HashMap<usize, Span>,
    /// Bytes of the file on disk or received so far.
    received: u64,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    next: u64,
    end: u64,
    /// Where this worker started on the piece, and when: its speed so far.
    from: u64,
    since: Instant,
    /// When the piece last moved.
    moved: Instant,
}

impl Span {
    fn new(next: u64, end: u64, now: Instant) -> Self {
        Self {
            next,
            end,
            from: next,
            since: now,
            moved: now,
        }
    }

    /// Where an idle connection may cut this piece to take the rest, if that can end the
    /// download sooner: all of it when the piece has not moved for `min_tail` (a stalled
    /// answer, or a server that sends in bursts with long pauses); its second half when the
    /// rest would take at least `min_tail` at the piece's speed so far (or, before that speed
    /// is known, when at least `STEAL_MIN_BYTES` remain).
    fn split_point(&self, now: Instant, min_tail: Duration) -> Option<u64> {
        let remaining = self.end.saturating_sub(self.next);
        if remaining == 0 {
            return None;
        }
        if now.saturating_duration_since(self.moved) >= min_tail {
            return Some(self.next);
        }
        let middle = self.next + remaining / 2;
        let elapsed = now.saturating_duration_since(self.since);
        let received = self.next - self.from;
        if elapsed < RATE_WINDOW || received == 0 {
            return (remaining >= STEAL_MIN_BYTES).then_some(middle);
        }
        let rest = elapsed.mul_f64(remaining as f64 / received as f64);
        (remaining >= STEAL_FLOOR_BYTES && rest >= min_tail).then_some(middle)
    }
}

impl Plan {
    /// Cuts `gaps` into about `pieces` pieces of similar size, in file order.
    fn new(gaps: &[(u64, u64)], pieces: usize, already: u64) -> Self {
        let remaining: u64 = gaps.iter().map(|(s, e)| e - s).sum();
        let target = remaining.div_ceil(pieces.max(1) as u64).max(1);
        let mut pending = VecDeque::new();
        for &(start, end) in gaps {
            let mut cursor = start;
            while cursor < end {
                let cut = if end - cursor < target + target / 2 {
                    end
                } else {
                    cursor + target
                };
                pending.push_back((cursor, cut));
                cursor = cut;
            }
        }
        Self {
            state: Mutex::new(PlanState {
                pending,
                active: HashMap::new(),
                received: already,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PlanState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives `worker` a new piece: the next unassigned one, or the rest of the running piece
    /// that is best split (see `Span::split_point`; the largest rest first). `None` when
    /// there is nothing worth taking now.
    fn claim(&self, worker: usize, now: Instant, min_tail: Duration) -> Option<Span> {
        let mut state = self.lock();
        if let Some((next, end)) = state.pending.pop_front() {
            let span = Span::new(next, end, now);
            state.active.insert(worker, span);
            return Some(span);
        }
        let (victim, cut, end) = state
            .active
            .iter()
            .filter(|(other, _)| **other != worker)
            .filter_map(|(other, span)| {
                span.split_point(now, min_tail)
                    .map(|cut| (*other, cut, span.end))
            })
            .max_by_key(|(_, cut, end)| end - cut)?;
        if let Some(span) = state.active.get_mut(&victim) {
            span.end = cut;
        }
        let span = Span::new(cut, end, now);
        state.active.insert(worker, span);
        drop(state);
        self.changed.notify_waiters();
        Some(span)
    }

    /// Whether a piece waits for a connection.
    fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Whether a connection other than `worker` still has bytes to receive.
    fn others_running(&self, worker: usize) -> bool {
        self.lock()
            .active
            .iter()
            .any(|(other, span)| *other != worker && span.next < span.end)
    }

    fn span(&self, worker: usize) -> Option<Span> {
        self.lock().active.get(&worker).copied()
    }

    /// Records that `worker` has received everything below `position`; returns where it must
    /// stop now (a thief may have taken the rest) and the file's received total.
    fn advance(&self, worker: usize, position: u64, now: Instant) -> (u64, u64) {
        let mut state = self.lock();
        let Some(span) = state.active.get_mut(&worker) else {
            return (position, state.received);
        };
        // A chunk may cross an end that a thief just moved: its bytes past the end are the
        // thief's (the same bytes, written twice) and are not counted twice.
        let gained = position.min(span.end).saturating_sub(span.next);
        if gained > 0 {
            span.moved = now;
        }
        span.next = span.next.max(position);
        let end = span.end;
        state.received += gained;
        (end, state.received)
    }

    /// The worker completed its piece.
    fn finish(&self, worker: usize) {
        self.lock().active.remove(&worker);
        self.changed.notify_waiters();
    }

    /// The worker gives up its piece; what it did not receive goes back to the queue.
    fn release(&self, worker: usize) {
        let mut state = self.lock();
        if let Some(span) = state.active.remove(&worker)
            && span.next < span.end
        {
            state.pending.push_front((span.next, span.end));
        }
    }

    fn is_complete(&self) -> bool {
        let state = self.lock();
        state.pending.is_empty() && state.active.is_empty()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_cut_into_similar_pieces_in_file_order() {
        let plan = Plan::new(&[(0, 100)], 4, 0);
        let pieces: Vec<(u64, u64)> = plan.lock().pending.iter().copied().collect();
        assert_eq!(pieces, vec![(0, 25), (25, 50), (50, 75), (75, 100)]);
        let plan = Plan::new(&[(0, 10), (50, 100)], 2, 40);
        let pieces: Vec<(u64, u64)> = plan.lock().pending.iter().copied().collect();
        assert_eq!(pieces, vec![(0, 10), (50, 80), (80, 100)]);
        assert_eq!(plan.lock().received, 40);
    }

    #[test]
    fn a_free_connection_steals_half_of_the_largest_running_piece() {
        let size = 64 << 20;
        let plan = Plan::new(&[(0, size)], 2, 0);
        let now = Instant::now();
        let first = plan.claim(0, now, MIN_TAIL).unwrap();
        let second = plan.claim(1, now, MIN_TAIL).unwrap();
        assert_eq!((first.next, first.end), (0, size / 2));
        assert_eq!((second.next, second.end), (size / 2, size));
        plan.advance(1, size, now);
        plan.finish(1);
        plan.advance(0, 8 << 20, now);
        let stolen = plan.claim(1, now, MIN_TAIL).unwrap();
        let middle = (8 << 20) + ((size / 2) - (8 << 20)) / 2;
        assert_eq!((stolen.next, stolen.end), (middle, size / 2));
        assert_eq!(
            plan.span(0).unwrap().end,
            middle,
            "the victim stops at the middle"
        );
    }

    #[test]
    fn a_stalled_piece_is_taken_over_whole() {
        let start = Instant::now();
        let plan = Plan::new(&[(0, 4 << 20)], 1, 0);
        plan.claim(0, start, MIN_TAIL).unwrap();
        plan.advance(0, 3 << 20, start);
        let moved = plan.span(0).unwrap().moved;
        assert!(
            plan.claim(1, moved + MIN_TAIL / 2, MIN_TAIL).is_none(),
            "a short pause is no stall, and 1 MiB at this speed is not worth a request"
        );
        let taken = plan.claim(1, moved + MIN_TAIL, MIN_TAIL).unwrap();
        assert_eq!((taken.next, taken.end), (3 << 20, 4 << 20));
        assert_eq!(
            plan.span(0).unwrap().end,
            3 << 20,
            "the stalled piece ends here"
        );
        assert!(plan.others_running(0));
        assert!(!plan.others_running(1));
    }

    #[test]
    fn small_remainders_are_not_stolen_and_released_pieces_return() {
        let now = Instant::now();
        let plan = Plan::new(&[(0, STEAL_MIN_BYTES)], 1, 0);
        plan.claim(0, now, MIN_TAIL).unwrap();
        plan.advance(0, 1, now);
        assert!(
            plan.claim(1, now, MIN_TAIL).is_none(),
            "too little left to split"
        );
        plan.release(0);
        let again = plan.claim(1, now, MIN_TAIL).unwrap();
        assert_eq!((again.next, again.end), (1, STEAL_MIN_BYTES));
        assert!(!plan.is_complete());
        plan.advance(1, STEAL_MIN_BYTES, now);
        plan.finish(1);
        assert!(plan.is_complete());
    }

    #[test]
    fn a_slow_pieces_tail_is_split_and_a_fast_ones_is_not() {
        let start = Instant::now();
        let size: u64 = 16 << 20;
        let plan = Plan::new(&[(0, size)], 1, 0);
        plan.claim(0, start, MIN_TAIL).unwrap();
        // 15 MiB in 1 s: the last MiB takes about 67 ms, longer than a request is worth.
        let later = start + Duration::from_secs(1);
        plan.advance(0, size - (1 << 20), later);
        let stolen = plan.claim(1, later, MIN_TAIL).unwrap();
        assert_eq!(stolen.end, size);
        assert_eq!(stolen.next, size - (1 << 19));
        plan.finish(1);
        // The same MiB after 15 MiB in 0.3 s arrives in 20 ms: not worth a request.
        let plan = Plan::new(&[(0, size)], 1, 0);
        plan.claim(0, start, MIN_TAIL).unwrap();
        let soon = start + Duration::from_millis(300);
        plan.advance(0, size - (1 << 20), soon);
        assert!(plan.claim(1, soon, MIN_TAIL).is_none());
        // Nor is a slow piece's tail below the floor.
        let plan = Plan::new(&[(0, size)], 1, 0);
        plan.claim(0, start, MIN_TAIL).unwrap();
        let slowly = start + Duration::from_secs(60);
        plan.advance(0, size - STEAL_FLOOR_BYTES + 1, slowly);
        assert!(plan.claim(1, slowly, MIN_TAIL).is_none());
    }
}
