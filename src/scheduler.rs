//! Runs a batch: a queue in input order, at most `jobs` downloads on the network at once (and
//! up to `COMMIT_BACKLOG` more finishing on disk) and at most `per_host` to one host, outcomes handed back as they complete (or collected in input order).
//! Only running downloads hold a task; a queued request is just its `Request`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::cancel::Cancel;
use crate::downloader::Downloader;
use crate::naming::redact_url;
use crate::progress::{Event, NoObserver, Observer, Reporter, TransferId, error_chain};
use crate::request::normalized;
use crate::transfer::Transfer;
use crate::{Completed, Error, Request};

/// Downloads that may be finishing on disk (final sync, rename) beyond `jobs`: a download
/// gives its job slot up once its body has arrived, so the network is not idle while files
/// are synced; this bounds how many wait for the disk (each holds at most a small body).
const COMMIT_BACKLOG: usize = 16;

/// A download's place among the `jobs` running at once; given back on drop (when the body has
/// arrived, or when the download ends).
pub(crate) struct JobSlot {
    slots: Arc<JobSlots>,
}

#[derive(Default)]
struct JobSlots {
    in_use: AtomicUsize,
    freed: Notify,
}

impl Drop for JobSlot {
    fn drop(&mut self) {
        self.slots.in_use.fetch_sub(1, Ordering::AcqRel);
        // `notify_one` keeps a wake-up for a driver that is not waiting yet: none is lost.
        self.slots.freed.notify_one();
    }
}

/// The end of one request of a batch.
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// Which request (its index in the batch).
    pub id: TransferId,
    /// What became of it.
    pub result: Result<Completed, Error>,
}

/// A set of requests to run together. Configure it, then [`Batch::start`] or [`Batch::run`].
pub struct Batch {
    downloader: Downloader,
    requests: Vec<Request>,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl Batch {
    pub(crate) fn new(downloader: Downloader, requests: Vec<Request>) -> Self {
        Self {
            downloader,
            requests,
            observer: Arc::new(NoObserver),
            cancel: CancellationToken::new(),
        }
    }

    /// Report events to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Stop the batch when `token` is cancelled: running downloads keep a resumable `.part`
    /// and end with [`Error::Cancelled`], queued ones end with it without starting.
    #[must_use]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Checks the batch and starts it. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::DuplicateOutput`] when two requests would write the same file; then nothing
    /// starts.
    pub fn start(self) -> Result<Outcomes, Error> {
        let mut seen: HashMap<PathBuf, usize> = HashMap::new();
        let mut planned = Vec::with_capacity(self.requests.len());
        for (index, request) in self.requests.into_iter().enumerate() {
            let path = request.output_path();
            if let Ok(path) = &path
                && let Some(first) = seen.insert(normalized(path), index)
            {
                return Err(Error::DuplicateOutput {
                    path: path.clone(),
                    first,
                    second: index,
                });
            }
            planned.push((request, path));
        }
        for (index, (request, path)) in planned.iter().enumerate() {
            self.observer.on_event(&Event::Queued {
                id: TransferId(index),
                url: redact_url(&request.url),
                path: path.as_ref().ok().cloned(),
            });
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let driver = Driver {
            downloader: self.downloader,
            observer: self.observer,
            cancel: self.cancel,
            outcomes: sender,
        };
        tokio::spawn(driver.run(planned));
        Ok(Outcomes { receiver })
    }

    /// Runs the batch to the end and returns every outcome in input order.
    ///
    /// # Errors
    /// As [`Batch::start`].
    pub async fn run(self) -> Result<Vec<Result<Completed, Error>>, Error> {
        let total = self.requests.len();
        let outcomes = self.start()?;
        Ok(outcomes.in_input_order(total).await)
    }
}

/// The outcomes of a started batch, as a `Stream` in completion order.
#[derive(Debug)]
pub struct Outcomes {
    receiver: mpsc::UnboundedReceiver<Outcome>,
}

impl Outcomes {
    /// Waits for every outcome and returns them in input order.
    pub async fn in_input_order(mut self, total: usize) -> Vec<Result<Completed, Error>> {
        let mut slots: Vec<Option<Result<Completed, Error>>> = (0..total).map(|_| None).collect();
        while let Some(outcome) = self.receiver.recv().await {
            if let Some(slot) = slots.get_mut(outcome.id.0) {
                *slot = Some(outcome.result);
            }
        }
        slots
            .into_iter()
            .map(|slot| slot.unwrap_or(Err(Error::Cancelled)))
            .collect()
    }
}

impl Stream for Outcomes {
    type Item = Outcome;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outcome>> {
        self.receiver.poll_recv(cx)
    }
}

struct Driver {
    downloader: Downloader,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

type Planned = (Request, Result<PathBuf, Error>);

impl Driver {
    async fn run(self, planned: Vec<Planned>) {
        let config = self.downloader.client.config();
        let mut slots: Vec<Option<Request>> = Vec::with_capacity(planned.len());
        // Per host, the queued indices in input order.
        let mut queues: HashMap<String, VecDeque<usize>> = HashMap::new();
        let mut paths: Vec<Option<PathBuf>> = Vec::with_capacity(planned.len());
        for (index, (request, path)) in planned.into_iter().enumerate() {
            match path {
                Ok(path) => {
                    queues
                        .entry(request.host_key())
                        .or_default()
                        .push_back(index);
                    slots.push(Some(request));
                    paths.push(Some(path));
                }
                Err(error) => {
                    slots.push(None);
                    paths.push(None);
                    self.finish(TransferId(index), Err(error));
                }
            }
        }
        let hosts = self.downloader.client.hosts();
        let mut running: JoinSet<(TransferId, Result<Completed, Error>)> = JoinSet::new();
        let job_slots = Arc::new(JobSlots::default());
        loop {
            while job_slots.in_use.load(Ordering::Acquire) < config.jobs
                && running.len() < config.jobs + COMMIT_BACKLOG
                && !self.cancel.is_cancelled()
            {
                // Among hosts with queued requests, in the order of their next request, the
                // first that has room for one more connection.
                let mut candidates: Vec<(usize, &String)> = queues
                    .iter()
                    .filter_map(|(host, queue)| queue.front().map(|index| (*index, host)))
                    .collect();
                candidates.sort_unstable();
                let Some((host, permit)) = candidates
                    .into_iter()
                    .find_map(|(_, host)| hosts.try_acquire(host).map(|p| (host.clone(), p)))
                else {
                    break;
                };
                let Some(index) = queues.get_mut(&host).and_then(VecDeque::pop_front) else {
                    break;
                };
                if queues.get(&host).is_some_and(VecDeque::is_empty) {
                    queues.remove(&host);
                }
                let (Some(request), Some(final_path)) = (
                    slots.get_mut(index).and_then(Option::take),
                    paths.get_mut(index).and_then(Option::take),
                ) else {
                    continue;
                };
                job_slots.in_use.fetch_add(1, Ordering::AcqRel);
                let job = JobSlot {
                    slots: Arc::clone(&job_slots),
                };
                let downloader = self.downloader.clone();
                let observer = Arc::clone(&self.observer);
                let cancel = self.cancel.child_token();
                running.spawn(async move {
                    let id = TransferId(index);
                    let report = Reporter::new(Arc::clone(&observer), id);
                    let cancel = Cancel::new(cancel, request.cancel.clone());
                    let transfer = Transfer {
                        client: &downloader.client,
                        request: &request,
                        report: &report,
                        cancel: &cancel,
                        final_path,
                        permit: Some(permit),
                        job: Some(Box::new(job)),
                    };
                    let result = transfer.run().await;
                    report_end(observer.as_ref(), id, &result);
                    (id, result)
                });
            }
            let waiting = !queues.is_empty() && !self.cancel.is_cancelled();
            if running.is_empty() && !waiting {
                break;
            }
            tokio::select! {
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    // A transfer task cannot panic by design; if one did, its outcome is lost
                    // and `in_input_order` reports it as cancelled rather than hanging.
                    if let Ok((id, result)) = joined {
                        let _ = self.outcomes.send(Outcome { id, result });
                    }
                }
                () = hosts.released(), if waiting => {}
                () = job_slots.freed.notified(), if waiting => {}
                () = self.cancel.cancelled(), if waiting => {}
            }
        }
        // Cancelled before they started.
        for (index, slot) in slots.iter().enumerate() {
            if slot.is_some() {
                self.finish(TransferId(index), Err(Error::Cancelled));
            }
        }
    }

    fn finish(&self, id: TransferId, result: Result<Completed, Error>) {
        report_end(self.observer.as_ref(), id, &result);
        let _ = self.outcomes.send(Outcome { id, result });
    }
}

fn report_end(observer: &dyn Observer, id: TransferId, result: &Result<Completed, Error>) {
    let event = match result {
        Ok(completed) => Event::Finished {
            id,
            completed: completed.clone(),
        },
        Err(error) => Event::Failed {
            id,
            kind: error.kind(),
            message: error_chain(error),
        },
    };
    observer.on_event(&event);
}
