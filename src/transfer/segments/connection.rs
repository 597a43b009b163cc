//! One connection of a segmented download: it asks for pieces and streams them into the
//! writer until none is left, retries under the one retry policy, lingers to take over a slow
//! or stalled piece, and steps aside when the host pushes back or refuses ranges.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::plan::{MIN_TAIL, Span};
use super::{Engine, Stop};
use crate::Error;
use crate::client::cancel::Cancel;
use crate::client::exchange::Reply;
use crate::client::hosts::HostPermit;
use crate::client::retry::{RetryPolicy, pushes_back};
use crate::progress::Event;
use crate::storage::buffers::Coalescer;

/// After cutting an answer short (its second half was taken over), a connection waits this
/// long before its next request, so that the server has seen the old one close: the per-host
/// limit holds as the server counts, not only as haul does.
const CLOSE_GRACE: Duration = Duration::from_millis(25);
/// How often a connection with nothing to do looks again for a stalled or slow piece.
const LINGER_POLL: Duration = Duration::from_millis(10);
/// Ranged requests answered with a server error, while a plain answer streams fine, before
/// the server is taken to refuse ranges.
const RANGED_ERRORS_TO_REFUSE: u32 = 2;

/// How an answer was consumed.
enum Streamed {
    /// Everything the server sent was used.
    ToTheEnd,
    /// The answer ended where it said, before the end of the piece (the first request of a
    /// download asks for the first piece only): the rest of the piece is asked for next.
    PieceGoesOn,
    /// The piece ended before the answer did, and the connection was dropped.
    CutShort,
}

impl Engine<'_, '_> {
    /// What stops connection `worker`.
    fn cancel_of(&self, worker: usize) -> &Cancel {
        if worker == 0 {
            &self.cancel
        } else {
            &self.extra_cancel
        }
    }

    /// One connection: works on pieces until none is left.
    pub(super) async fn work(
        &self,
        worker: usize,
        mut mirror: usize,
        mut first: Option<(Reply, u64)>,
        mut permit: Option<HostPermit>,
    ) -> Result<(), Stop> {
        let cancel = self.cancel_of(worker).clone();
        let transfer = self.transfer;
        let mut policy = RetryPolicy::new(transfer.client, &transfer.request.url, transfer.report);
        // When this connection last cut an answer short (see `CLOSE_GRACE`).
        let mut cut_short: Option<Instant> = None;
        loop {
            let Some(span) = self.next_span(worker, &mut mirror, &mut permit).await else {
                return Ok(());
            };
            let result = match first.take() {
                Some((reply, start)) => self.stream(worker, reply, start, &cancel).await,
                None => {
                    if let Some(cut) = cut_short.take() {
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            () = tokio::time::sleep(CLOSE_GRACE.saturating_sub(cut.elapsed())) => {}
                        }
                    }
                    match self
                        .request_range(mirror, span.next, span.end, &cancel)
                        .await
                    {
                        Ok(reply) => self.stream(worker, reply, span.next, &cancel).await,
                        Err(stop) => Err(stop),
                    }
                }
            };
            let error = match result {
                Ok(Streamed::ToTheEnd | Streamed::PieceGoesOn) => continue,
                Ok(Streamed::CutShort) => {
                    cut_short = Some(Instant::now());
                    continue;
                }
                Err(Stop::Failed(error)) => error,
                Err(stop) => {
                    self.plan.release(worker);
                    return Err(stop);
                }
            };
            if worker != 0 && self.stand_down.is_cancelled() {
                // The first connection's plain answer finishes the file.
                self.plan.release(worker);
                return Ok(());
            }
            if self.abort.is_cancelled() || matches!(error, Error::Cancelled) {
                self.plan.release(worker);
                return Err(Stop::Failed(error));
            }
            if let Some(reason) = self.refuses_ranges(worker, &error) {
                self.plan.release(worker);
                if self.plain_streaming.load(Ordering::Acquire) {
                    self.stand_down.cancel();
                    transfer.emit(&Event::Warning {
                        id: transfer.report.id(),
                        message: format!("{reason}; the plain answer finishes the file"),
                    });
                    return Ok(());
                }
                return Err(Stop::RangesRefused(reason));
            }
            if pushes_back(&error) && worker != 0 {
                // The host pushes back: an extra connection steps aside and its piece goes to
                // the others.
                transfer.client.hosts().penalize(&self.mirrors.host(mirror));
                self.plan.release(worker);
                return Ok(());
            }
            let progressed = self
                .plan
                .span(worker)
                .is_some_and(|now| now.next > span.next);
            if let Some(delay) = policy.next_delay(&error, progressed) {
                if RetryPolicy::wait(delay, &cancel).await.is_err() {
                    self.plan.release(worker);
                    if worker != 0 && self.stand_down.is_cancelled() {
                        return Ok(());
                    }
                    return Err(Stop::Failed(Error::Cancelled));
                }
                continue;
            }
            // This URL is done for this file; another mirror may take over the piece.
            match self.drop_mirror(mirror, &error) {
                Some(next) => {
                    mirror = next;
                    policy =
                        RetryPolicy::new(transfer.client, &transfer.request.url, transfer.report);
                }
                None => {
                    self.plan.release(worker);
                    return Err(Stop::Failed(error));
                }
            }
        }
    }

    /// Whether this failure of a ranged request shows that the server refuses ranges: a `412`,
    /// or repeated server errors while a plain answer from it streams fine. Returns why.
    fn refuses_ranges(&self, worker: usize, error: &Error) -> Option<String> {
        if worker == 0 && self.plain_streaming.load(Ordering::Acquire) {
            return None;
        }
        match error {
            Error::Status { status: 412, .. } => {
                Some("the server refuses range requests (412 Precondition Failed)".into())
            }
            error
                if super::super::session::is_server_error_without_patience(error)
                    && self.plain_streaming.load(Ordering::Acquire) =>
            {
                let seen = self.ranged_errors.fetch_add(1, Ordering::AcqRel) + 1;
                (seen >= RANGED_ERRORS_TO_REFUSE).then(|| {
                    format!(
                        "the server answers range requests with errors ({error}) while plain ones work"
                    )
                })
            }
            _ => None,
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
            if worker != 0 && (self.stand_down.is_cancelled() || self.retired(worker)) {
                self.plan.release(worker);
                return None;
            }
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
                        () = self.cancel_of(worker).cancelled() => return None,
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

    /// Where a whole answer reads on to, once its piece is done and ranges are refused: the
    /// next piece handed back at or after `position` (with `buffer` flushed and made ready
    /// for it), or `None` when nothing is left. Waits while other connections still hold
    /// pieces they may hand back.
    async fn read_on(
        &self,
        worker: usize,
        position: u64,
        buffer: &mut Coalescer,
        cancel: &Cancel,
    ) -> Result<Option<Span>, Error> {
        loop {
            if let Some(next) = self.plan.extend(worker, position, Instant::now()) {
                buffer.flush(&self.writer).await?;
                *buffer = Coalescer::new(next.next, next.end - next.next, self.writer.pool());
                return Ok(Some(next));
            }
            if !self.plan.others_running(worker) {
                return Ok(None);
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(Error::Cancelled),
                () = self.plan.changed.notified() => {}
                () = tokio::time::sleep(LINGER_POLL) => {}
            }
        }
    }

    /// Streams one answer into the writer, from `start`, until the worker's piece ends (it
    /// may shrink while this runs, when another connection takes its second half). A whole
    /// answer of a server that refuses ranges reads on into the pieces after its own.
    async fn stream(
        &self,
        worker: usize,
        reply: Reply,
        start: u64,
        cancel: &Cancel,
    ) -> Result<Streamed, Stop> {
        let answer_end = reply.body_end.map_or(self.total, |end| end.min(self.total));
        let plain = worker == 0 && start == 0 && reply.body_end == Some(self.total);
        let transfer = self.transfer;
        let Some(span) = self.plan.span(worker) else {
            return Ok(Streamed::ToTheEnd);
        };
        if plain {
            self.plain_streaming.store(true, Ordering::Release);
        }
        let mut body = reply
            .into_body(transfer.client, cancel)
            .with_file_rate(transfer.file_rate.clone());
        let mut position = start;
        let mut end = span.end;
        // Bytes before this are not this connection's to keep (the first answer may start at
        // an earlier gap's end; an extended answer reads over other pieces).
        let mut keep_from = span.next.max(start);
        let mut buffer = Coalescer::new(keep_from, end - keep_from, self.writer.pool());
        // Bytes of the last chunk past the piece's end, for the next piece when this answer
        // reads on.
        let mut carried: Option<bytes::Bytes> = None;
        let outcome = loop {
            if position >= end {
                if !self.stand_down.is_cancelled() || position >= answer_end {
                    break Ok(());
                }
                // Ranges are refused: this answer finishes the file. Wait for the others to
                // hand their pieces back, then read on into the next one.
                match self.read_on(worker, position, &mut buffer, cancel).await {
                    Ok(Some(next)) => {
                        keep_from = next.next;
                        end = next.end;
                        continue;
                    }
                    Ok(None) => break Ok(()),
                    Err(Error::Cancelled) => break Err(Error::Cancelled),
                    Err(error) => break Err(error),
                }
            }
            let next = match carried.take() {
                Some(chunk) => Ok(Some(chunk)),
                None => tokio::select! {
                    next = body.next() => next,
                    () = self.plan.changed.notified() => {
                        // An idle connection may have taken this piece's rest over.
                        end = self.plan.advance(worker, position, Instant::now()).0;
                        continue;
                    }
                },
            };
            let mut chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) if position < end.min(answer_end) => {
                    break Err(Error::ShortBody {
                        url: body.url().to_owned(),
                        received: position,
                        expected: end.min(answer_end),
                    });
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            if position < keep_from {
                let skip = usize::try_from(keep_from - position)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                let _ = chunk.split_to(skip);
                position += skip as u64;
            }
            let room = usize::try_from(end.saturating_sub(position)).unwrap_or(usize::MAX);
            if chunk.len() > room {
                carried = Some(chunk.split_off(room));
            }
            position += chunk.len() as u64;
            let (now_end, received) = self.plan.advance(worker, position, Instant::now());
            end = now_end;
            if let Err(error) = buffer.push(chunk, &self.writer).await {
                break Err(error);
            }
            if self.reported.fetch_max(received, Ordering::AcqRel) < received {
                transfer.emit(&Event::Progress {
                    id: transfer.report.id(),
                    bytes_done: received,
                });
            }
        };
        if plain {
            self.plain_streaming.store(false, Ordering::Release);
        }
        let flushed = buffer.flush(&self.writer).await;
        outcome.map_err(Stop::Failed)?;
        flushed?;
        if position < end {
            return Ok(Streamed::PieceGoesOn);
        }
        self.plan.finish(worker);
        Ok(if position < answer_end {
            Streamed::CutShort
        } else {
            Streamed::ToTheEnd
        })
    }
}
