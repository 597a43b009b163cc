//! What a long-lived program can do to one submitted download while it lives: pause it (the
//! transfer stops and keeps its `.part`; the download gives its places back and waits, parked,
//! outside the queue), resume it (back to the end of the queue, continuing from the `.part`
//! exactly as a later run of haul would), cancel it, change its rate, move it in the queue.
//!
//! Locks are taken in one order: the scheduler's queue, then a control's state. A download is
//! in exactly one of the states below; whoever moves it out of `Queued` holds both locks (the
//! driver popping it, a pause taking it out), so a pause never misses a download that is
//! between the queue and its task.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;

use super::{Job, Scheduler, Sink, Work};
use crate::Request;
use crate::client::rate::RateLimiter;
use crate::progress::Reporter;
use crate::progress::{Event, TransferId};
use crate::{Completed, Error};

/// The shared state of one submitted download.
pub(crate) struct Control {
    pub(crate) id: TransferId,
    /// The download's own token: cancelling it ends the download.
    pub(crate) token: CancellationToken,
    /// The download's own rate limit, changeable while it runs (unlimited unless set).
    pub(crate) rate: Arc<RateLimiter>,
    state: Mutex<State>,
}

enum State {
    /// In the scheduler's queue.
    Queued,
    /// Its task runs; `run` stops this run only (a pause), the download's token stops it all.
    Running { run: CancellationToken },
    /// Paused while running: the run was told to stop and has not ended yet. `resume`: a
    /// resume came meanwhile, so the download goes back to the queue once the run has ended.
    Pausing { resume: bool },
    /// Out of the queue, waiting for a resume or a cancellation.
    Paused(Box<Job>),
    /// Its outcome was given.
    Ended,
}

impl Control {
    pub(crate) fn new(id: TransferId, token: CancellationToken, rate: Option<u64>) -> Self {
        let limiter = match rate {
            Some(rate) => RateLimiter::new(rate),
            None => RateLimiter::unlimited(),
        };
        Self {
            id,
            token,
            rate: Arc::new(limiter),
            state: Mutex::new(State::Queued),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The driver took the download out of the queue (the queue's lock is held): the token
    /// its run stops on.
    pub(crate) fn start_run(&self) -> CancellationToken {
        let run = self.token.child_token();
        *self.state() = State::Running { run: run.clone() };
        run
    }

    /// The run ended with `result`: the download's outcome to report, or `None` when the run
    /// was paused and the download is parked.
    pub(crate) fn run_ended(
        self: &Arc<Self>,
        scheduler: &Arc<Scheduler>,
        (request, report, sink): (Request, Reporter, Sink),
        result: Result<Completed, Error>,
    ) -> Option<(Reporter, Sink, Result<Completed, Error>)> {
        let paused_run = matches!(result, Err(Error::Cancelled)) && !self.token.is_cancelled();
        // Where a parked download goes is worked out again only for a run that may have been
        // paused: keeping a copy from every run cost allocations for a rare case. (It is the
        // place the request had when submitted: the same computation.)
        let place = if paused_run {
            request.place().ok()
        } else {
            None
        };
        let resume = {
            let mut state = self.state();
            match (&*state, place) {
                (State::Pausing { resume }, Some(place)) => {
                    let resume = *resume;
                    *state = State::Paused(Box::new(Job {
                        request,
                        place,
                        report: report.clone(),
                        sink,
                        control: Some(Arc::clone(self)),
                    }));
                    resume
                }
                _ => {
                    *state = State::Ended;
                    return Some((report, sink, result));
                }
            }
        };
        // Outside the lock: an observer may call back into the control.
        report.emit(&Event::Paused {
            id: self.id,
            tag: report.tag(),
        });
        if resume {
            self.resume(scheduler);
        }
        None
    }

    /// Pauses the download: a queued one leaves the queue, a running one stops keeping its
    /// `.part`. `false` when it was neither (paused already, or ended).
    pub(crate) fn pause(&self, scheduler: &Scheduler) -> bool {
        let mut queue = scheduler.lock();
        let mut state = self.state();
        match &mut *state {
            State::Queued => {
                let Some(Work::File(job)) = queue.take(self.id) else {
                    return false;
                };
                let report = job.report.clone();
                *state = State::Paused(job);
                drop(state);
                drop(queue);
                report.emit(&Event::Paused {
                    id: self.id,
                    tag: report.tag(),
                });
                true
            }
            State::Running { run } => {
                run.cancel();
                *state = State::Pausing { resume: false };
                true
            }
            State::Pausing { resume } => {
                let was_resuming = *resume;
                *resume = false;
                was_resuming
            }
            State::Paused(_) | State::Ended => false,
        }
    }

    /// Resumes a paused download: it joins the end of the queue and continues from its
    /// `.part`. `false` when it was not paused.
    pub(crate) fn resume(self: &Arc<Self>, scheduler: &Arc<Scheduler>) -> bool {
        // `Resumed` is reported before the download is queued (so it always comes before the
        // next `Started`) and outside the locks (an observer may call back in).
        let report = match &mut *self.state() {
            State::Paused(job) => job.report.clone(),
            State::Pausing { resume } => {
                *resume = true;
                return true;
            }
            _ => return false,
        };
        report.emit(&Event::Resumed {
            id: self.id,
            tag: report.tag(),
        });
        let mut queue = scheduler.lock();
        let mut state = self.state();
        let State::Paused(_) = &*state else {
            // Cancelled or resumed by someone else meanwhile.
            return false;
        };
        let State::Paused(job) = std::mem::replace(&mut *state, State::Queued) else {
            return false;
        };
        let host = job.request.host_key();
        let start_driver = queue.push(host, self.token.clone(), Work::File(job));
        drop(state);
        drop(queue);
        scheduler.after_push(start_driver);
        true
    }

    /// Whether the download is paused (or pausing: its run is stopping).
    pub(crate) fn is_paused(&self) -> bool {
        matches!(
            &*self.state(),
            State::Paused(_) | State::Pausing { resume: false }
        )
    }

    /// After the download's token was cancelled: a parked download ends now (a queued or
    /// running one ends through the queue's sweep or its run).
    pub(crate) fn cancelled(&self) {
        let parked = {
            let mut state = self.state();
            match std::mem::replace(&mut *state, State::Ended) {
                State::Paused(job) => Some(job),
                other => {
                    *state = other;
                    None
                }
            }
        };
        if let Some(job) = parked {
            let Job { report, sink, .. } = *job;
            super::finish(&report, sink, Err(Error::Cancelled));
        }
    }
}
