//! Segmented downloads: one file over several ranged connections, spread across its mirrors,
//! written in place through one writer. The plan (`plan.rs`) says which bytes each connection
//! is responsible for; the mirrors (`mirrors.rs`) which servers may serve them; each connection
//! (`connection.rs`) asks for pieces and streams them until none is left, so one slow
//! connection never holds the finish line.

mod connection;
mod mirrors;
mod plan;
mod ramp;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use super::Transfer;
use super::session::{AttemptEnd, Session};
use crate::Error;
use crate::client::cancel::Cancel;
use crate::client::exchange::Reply;
use crate::client::hosts::HostPermit;
use crate::storage::writer::PartWriter;
use crate::storage::writer::WriteHandle;
use mirrors::Mirrors;
use plan::{MIN_TAIL, Plan};
use ramp::{Ramp, Step};

/// Why a connection stopped.
enum Stop {
    Failed(Error),
    /// The server no longer serves the same bytes (or ignores ranges): start from zero.
    StartOver(String),
    /// The server refuses ranged requests with errors, and no plain answer can finish the file:
    /// start from zero on one connection without ranges.
    RangesRefused(String),
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
    mirrors: Mirrors,
    total: u64,
    writer: WriteHandle,
    /// What stops the first connection: the transfer's cancellation, or `abort`.
    cancel: Cancel,
    /// Cancelled when one connection fails for good, to stop the others.
    abort: CancellationToken,
    /// What stops the other connections: `cancel`, or `stand_down`.
    extra_cancel: Cancel,
    /// Cancelled when the server turns out to refuse ranges while the first connection
    /// streams a whole answer: the others step aside and that answer finishes the file.
    stand_down: CancellationToken,
    /// The first connection is reading a whole (`200`) answer right now.
    plain_streaming: AtomicBool,
    /// Ranged requests answered with a server error while a plain answer streams.
    ranged_errors: AtomicU32,
    /// The longest a range request has waited for its answer, in microseconds.
    slowest_answer_micros: AtomicU64,
    /// The highest figure reported in a `Progress` event: connections report the file's
    /// total out of order, and only a figure above it is reported.
    reported: AtomicU64,
    /// Connections numbered from this on stop (a trial that did not raise the rate).
    retired_from: AtomicUsize,
}

/// The smallest piece the adaptive ramp splits a file into.
const RAMP_PIECE: u64 = 2 * 1024 * 1024;

impl Transfer<'_> {
    /// Whether this file ramps up to `connections()` rather than opening them at once.
    pub(super) fn adaptive_connections(&self) -> bool {
        self.request.connections.is_none()
            && self.config().adaptive_connections
            && self.request.mirrors.is_empty()
    }

    /// How many connections this file may use.
    pub(super) fn connections(&self) -> usize {
        self.request
            .connections
            .unwrap_or(self.config().connections)
            .max(1)
    }

    /// Whether the file should go through the segment engine rather than one plain stream.
    pub(super) fn wants_segments(&self, session: &Session, total: u64) -> bool {
        let gaps = session_gaps(session, total);
        let remaining: u64 = gaps.iter().map(|(s, e)| e - s).sum();
        let split = self.config().min_split_bytes;
        let splits = self.connections() > 1 && remaining >= 2 * split;
        // A gap that ends before the file does (a piece fetched again) is the engine's too:
        // one plain stream would run on over bytes already there.
        let inner_gap = gaps.last().is_some_and(|(_, end)| *end < total);
        splits || gaps.len() > 1 || inner_gap || !self.request.mirrors.is_empty()
    }

    /// Downloads what is missing of the file over several connections. `first` is the answer
    /// to this attempt's first request, for bytes from `first_start` on.
    pub(super) async fn download_segments(
        &self,
        session: &mut Session,
        first: Reply,
        first_start: u64,
    ) -> Result<AttemptEnd, Error> {
        let total = session.state.validators.total_bytes.unwrap_or(0);
        let gaps = session_gaps(session, total);
        let remaining: u64 = gaps.iter().map(|(s, e)| e - s).sum();
        // A ramp keeps a connection only when it raises the rate, so it may cut pieces
        // smaller than --min-split-size: a 20 MB file from a server that limits each
        // connection gets its 4 connections (it stayed on 2 with 8 MiB pieces).
        let adaptive = self.adaptive_connections();
        let split = if adaptive {
            RAMP_PIECE.min(self.config().min_split_bytes)
        } else {
            self.config().min_split_bytes
        };
        let wanted = usize::try_from(remaining / split)
            .unwrap_or(usize::MAX)
            .clamp(1, self.connections());
        let Some(writer) = session.writer.as_ref().map(PartWriter::handle) else {
            return Err(Error::Internal("no writer for the segments".into()));
        };
        let mut ramp = adaptive
            .then(|| Ramp::new(1, wanted))
            .filter(|ramp| !ramp.settled());
        let opened = if ramp.is_some() { 1 } else { wanted };
        let (cancel, abort) = self.cancel.child();
        let (extra_cancel, stand_down) = cancel.child();
        let engine = Engine {
            transfer: self,
            plan: Plan::new(&gaps, opened, total - remaining),
            mirrors: Mirrors::new(&session.sources.usable(), &session.state.validators),
            total,
            writer,
            cancel,
            abort,
            extra_cancel,
            stand_down,
            plain_streaming: AtomicBool::new(false),
            ranged_errors: AtomicU32::new(0),
            slowest_answer_micros: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            retired_from: AtomicUsize::new(usize::MAX),
        };
        let received_before = engine.plan.received();
        // The first connection's answer starts at the first gap: it takes the first piece.
        engine.plan.claim(0, Instant::now(), MIN_TAIL);
        let mut workers = FuturesUnordered::new();
        workers.push(engine.work(0, 0, Some((first, first_start)), None));
        let mut next_worker = 1;
        while next_worker < opened {
            let Some((mirror, permit)) = engine.permit_for(next_worker) else {
                break;
            };
            workers.push(engine.work(next_worker, mirror, None, Some(permit)));
            next_worker += 1;
        }
        let mut outcome = Ok(());
        loop {
            let ramping = ramp.as_ref().is_some_and(|ramp| !ramp.settled());
            let result = tokio::select! {
                result = workers.next() => result,
                () = tokio::time::sleep(ramp::WINDOW / 5), if ramping && outcome.is_ok() => {
                    if let Some((worker, mirror, permit)) = ramp
                        .as_mut()
                        .and_then(|ramp| engine.ramp_step(ramp, &mut next_worker))
                    {
                        workers.push(engine.work(worker, mirror, None, Some(permit)));
                    }
                    continue;
                }
            };
            let Some(result) = result else { break };
            if let Err(stop) = result {
                engine.abort.cancel();
                if outcome.is_ok() {
                    outcome = Err(stop);
                }
            }
        }
        drop(workers);
        session.received += engine.plan.received().saturating_sub(received_before);
        match outcome {
            Err(Stop::StartOver(reason)) => {
                session.single_only = true;
                Ok(AttemptEnd::StartOver(reason))
            }
            Err(Stop::RangesRefused(reason)) => {
                session.single_only = true;
                session.ranges.refused = true;
                Ok(AttemptEnd::StartOver(reason))
            }
            Err(Stop::Failed(error)) => Err(error),
            Ok(()) if engine.plan.is_complete() => {
                session.offset = total;
                Ok(AttemptEnd::Complete)
            }
            Ok(()) => Err(Error::Internal("segments ended with bytes missing".into())),
        }
    }
}

impl Engine<'_, '_> {
    /// One look of the ramp at the file's rate. Returns a trial connection to open (its
    /// number, mirror and host permit); retires the last one when it did not pay.
    fn ramp_step(
        &self,
        ramp: &mut Ramp,
        next_worker: &mut usize,
    ) -> Option<(usize, usize, HostPermit)> {
        let trial = *next_worker - 1;
        let trial_flowing = trial == 0 || self.plan.flowing(trial);
        let received = self.plan.received();
        let remaining = self.total.saturating_sub(received);
        match ramp.observe(Instant::now(), received, remaining, trial_flowing) {
            Step::Wait => None,
            Step::Retire => {
                self.retired_from.store(trial, Ordering::Release);
                self.plan.retire(trial);
                None
            }
            Step::Add => {
                let Some((mirror, permit)) = self.permit_for(*next_worker) else {
                    ramp.not_added();
                    return None;
                };
                let worker = *next_worker;
                *next_worker += 1;
                Some((worker, mirror, permit))
            }
        }
    }

    /// Whether connection `worker` was retired by the ramp.
    fn retired(&self, worker: usize) -> bool {
        worker >= self.retired_from.load(Ordering::Acquire)
    }
}

/// What is missing of the file: not in the saved ranges and not streamed in this run.
fn session_gaps(session: &Session, total: u64) -> Vec<(u64, u64)> {
    let mut done = session.state.done.clone();
    done.insert(0, session.offset);
    done.gaps(total)
}
