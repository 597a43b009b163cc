//! One scheduler per `Downloader`: a single queue, one `jobs` limit and one per-host limit
//! shared by every batch, every `download()` call and every handle of that downloader (and its
//! clones). A queued request is just data; a task exists only for a running download. A driver
//! task starts downloads as places free up, in submission order among the hosts that have room,
//! and ends when the queue is empty (the next submission starts a new one). Dropping a handle
//! or a batch's outcome stream cancels what it owns: the download stops, keeps its `.part`
//! for a later resume, and gives its places back at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::client::cancel::Cancel;
use crate::client::hosts::HostPermit;
use crate::naming::redact_url;
use crate::progress::{Event, NoObserver, Observer, Reporter, TransferId};
use crate::storage::disk::Disk;
use crate::storage::place::Place;
use crate::transfer::Transfer;
use crate::{Error, Request};

mod control;
mod handle;
mod outcome;
mod queue;
mod slots;

use control::Control;
pub(crate) use handle::submit;
pub use handle::{Canceller, DownloadControl, DownloadHandle};
pub use outcome::Outcome;
use outcome::finish_keeping;
pub(crate) use outcome::{Sink, failed_event, finish};
use queue::{Queue, Waiting};
pub(crate) use slots::{Admission, SideSlot};
use slots::{JobSlot, Running};

/// Downloads that may be finishing on disk (final sync, rename) beyond `jobs`: a download
/// gives its job slot up once its body has arrived, so the network is not idle while files
/// are synced; this bounds how many wait for the disk. A small file waiting for a shared
/// flush holds an open file without a name (its body is written and freed), a task, and no
/// thread, so many may wait: with 16 jobs, 64 of them took 5,000 tiny files at the default
/// durability in 16% less time than 16 (benches/RESULTS.md, thirteenth session).
const COMMIT_BACKLOG: usize = 64;
/// How often a driver that waits only for a penalized host (whose limit grows back with
/// time, not with a release) looks again.
const PENALTY_POLL: Duration = Duration::from_millis(250);

/// The queue and limits of one downloader.
pub(crate) struct Scheduler {
    client: Client,
    /// The local state every download shares (see `storage::disk`).
    disk: Arc<Disk>,
    queue: Mutex<Queue>,
    /// Wakes the driver: a submission, a cancellation, a freed job slot.
    wake: Notify,
    /// Downloads holding a job slot (body still arriving).
    on_network: AtomicUsize,
    /// Download tasks alive (on the network or finishing on disk).
    running: AtomicUsize,
    /// The `jobs` limit now (it can change while downloads run).
    jobs: AtomicUsize,
    /// Some queued download may have been cancelled: the driver sweeps the queue.
    swept: AtomicBool,
    next_id: AtomicU64,
    /// Observers of every download of this downloader.
    observers: Vec<Arc<dyn Observer>>,
}

impl Scheduler {
    /// A new id and where the events of work with it go.
    pub(crate) fn reporter(&self, call: Option<Arc<dyn Observer>>) -> Reporter {
        Reporter::new(self.observer_for(call), self.next_id())
    }
}

enum Work {
    /// A file download, run on a task of its own once admitted.
    File(Box<Job>),
    /// Work that runs in its caller's task (streaming into a writer): it receives its places.
    Admit(oneshot::Sender<Admission>),
}

/// Everything a download needs once it may start.
pub(crate) struct Job {
    request: Request,
    place: Place,
    report: Reporter,
    sink: Sink,
    /// How its submitter pauses, resumes and re-prioritizes it (a batch's downloads have none).
    control: Option<Arc<Control>>,
}

/// Sends every event to several observers.
struct Fanout(Vec<Arc<dyn Observer>>);

impl Observer for Fanout {
    fn on_event(&self, event: &Event) {
        for observer in &self.0 {
            observer.on_event(event);
        }
    }

    /// `Progress` events when any of them wants them (the others take them as they come).
    fn wants_progress_events(&self) -> bool {
        self.0
            .iter()
            .any(|observer| observer.wants_progress_events())
    }

    fn on_counter(&self, id: crate::TransferId, counter: &crate::ProgressCounter) {
        for observer in &self.0 {
            observer.on_counter(id, counter);
        }
    }
}

impl Scheduler {
    pub(crate) fn new(client: Client, observers: Vec<Arc<dyn Observer>>) -> Self {
        let jobs = client.config().jobs;
        Self {
            disk: Arc::new(Disk::new(client.config())),
            client,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            on_network: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            jobs: AtomicUsize::new(jobs),
            swept: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            observers,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The observer of one download: the downloader's, plus the caller's.
    pub(crate) fn observer_for(&self, call: Option<Arc<dyn Observer>>) -> Arc<dyn Observer> {
        match (self.observers.as_slice(), call) {
            ([], None) => Arc::new(NoObserver),
            ([], Some(call)) => call,
            ([one], None) => Arc::clone(one),
            (all, call) => {
                let mut list = all.to_vec();
                list.extend(call);
                Arc::new(Fanout(list))
            }
        }
    }

    pub(crate) fn next_id(&self) -> TransferId {
        TransferId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Queues one download (reporting `Queued`), or ends it at once when it has no output
    /// path.
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        request: Request,
        place: Result<Place, Error>,
        cancel: CancellationToken,
        report: Reporter,
        sink: Sink,
        control: Option<Arc<Control>>,
    ) {
        report.emit(&Event::Queued {
            id: report.id(),
            url: redact_url(&request.url),
            path: place.as_ref().ok().map(Place::path),
            tag: report.tag(),
        });
        let place = match place {
            Ok(place) => place,
            Err(error) => {
                finish(&report, sink, Err(error));
                return;
            }
        };
        let host = request.host_key();
        let job = Job {
            request,
            place,
            report,
            sink,
            control,
        };
        self.push(host, cancel, Work::File(Box::new(job)));
    }

    /// The `jobs` limit now.
    pub(crate) fn jobs(&self) -> usize {
        self.jobs.load(Ordering::Acquire)
    }

    /// Changes the `jobs` limit (at least 1): more downloads start at once when it grows;
    /// when it shrinks, running downloads finish and fewer start.
    pub(crate) fn set_jobs(&self, jobs: usize) {
        self.jobs.store(jobs.max(1), Ordering::Release);
        self.wake.notify_one();
    }

    /// The downloads waiting in the queue, in the order they would start (hosts permitting).
    pub(crate) fn queued(&self) -> Vec<TransferId> {
        let queue = self.lock();
        let mut waiting: Vec<(u64, TransferId)> = queue
            .hosts
            .values()
            .flatten()
            .filter_map(|w| w.id().map(|id| (w.sequence, id)))
            .collect();
        waiting.sort_unstable();
        waiting.into_iter().map(|(_, id)| id).collect()
    }

    /// Moves a waiting download to `position` among the waiting downloads (0: next to
    /// start; past the end: last). Its new position, or `None` when it is not waiting.
    pub(crate) fn reposition(&self, id: TransferId, position: usize) -> Option<usize> {
        self.lock().reposition(id, position)
    }

    /// Waits in the queue for a job slot and a place at `host`, like a file download, for
    /// work that runs in the caller's task.
    ///
    /// # Errors
    /// `Cancelled` when `cancel` fires first.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        host: String,
        cancel: &Cancel,
    ) -> Result<Admission, Error> {
        let (sender, receiver) = oneshot::channel();
        let token = CancellationToken::new();
        let _leave_queue = CancelOnDrop {
            token: token.clone(),
            scheduler: Arc::clone(self),
        };
        self.push(host, token, Work::Admit(sender));
        tokio::select! {
            () = cancel.cancelled() => Err(Error::Cancelled),
            admitted = receiver => admitted.map_err(|_| Error::Cancelled),
        }
    }

    /// A job slot for a request made on a caller's behalf, taken in the queue's order among
    /// downloads (see [`SideSlot`]).
    ///
    /// # Errors
    /// `Cancelled` when `cancel` fires first.
    pub(crate) async fn side_slot(
        self: &Arc<Self>,
        url: &url::Url,
        cancel: &Cancel,
    ) -> Result<SideSlot, Error> {
        let admission = self
            .admit(crate::client::hosts::host_key(url), cancel)
            .await?;
        Ok(admission.job_slot_only())
    }

    fn push(self: &Arc<Self>, host: String, cancel: CancellationToken, work: Work) {
        let start_driver = self.lock().push(host, cancel, work);
        self.after_push(start_driver);
    }

    /// Starts the driver, or wakes it, after a push.
    fn after_push(self: &Arc<Self>, start_driver: bool) {
        if start_driver {
            tokio::spawn(Arc::clone(self).drive());
        } else {
            self.wake.notify_one();
        }
    }

    /// Some queued download may have been cancelled: sweep it out of the queue.
    pub(crate) fn note_cancelled(&self) {
        self.swept.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Starts downloads while places are free; ends when nothing waits.
    async fn drive(self: Arc<Self>) {
        loop {
            if self.swept.swap(false, Ordering::AcqRel) {
                self.sweep_cancelled();
            }
            let mut blocked_by_host = false;
            loop {
                let jobs = self.jobs();
                if self.on_network.load(Ordering::Acquire) >= jobs
                    || self.running.load(Ordering::Acquire) >= jobs + COMMIT_BACKLOG
                {
                    break;
                }
                match self.next_startable() {
                    Next::Start(waiting, permit, run) => self.start(*waiting, permit, run),
                    Next::Blocked => {
                        blocked_by_host = true;
                        break;
                    }
                    Next::Empty => break,
                }
            }
            // Registered before the final look, so a wake-up in between is not lost.
            let woken = self.wake.notified();
            {
                let mut queue = self.lock();
                if queue.waiting == 0 {
                    queue.driver_running = false;
                    return;
                }
            }
            tokio::select! {
                () = woken => {}
                () = self.client.hosts().released() => {}
                () = tokio::time::sleep(PENALTY_POLL), if blocked_by_host => {}
            }
        }
    }

    /// The first waiting download (in submission order) whose host has room, with its permit.
    fn next_startable(&self) -> Next {
        let mut queue = self.lock();
        if queue.waiting == 0 {
            return Next::Empty;
        }
        let hosts = self.client.hosts();
        let found = queue.heads.iter().find_map(|(sequence, host)| {
            hosts
                .try_acquire(host)
                .map(|p| (*sequence, host.clone(), p))
        });
        let Some((sequence, host, permit)) = found else {
            return Next::Blocked;
        };
        queue.heads.remove(&sequence);
        let Some(list) = queue.hosts.get_mut(&host) else {
            return Next::Blocked;
        };
        let Some(waiting) = list.pop_front() else {
            return Next::Blocked;
        };
        match list.front().map(|next| next.sequence) {
            Some(next) => {
                queue.heads.insert(next, host);
            }
            None => {
                queue.hosts.remove(&host);
            }
        }
        queue.waiting -= 1;
        // Under the queue's lock, so a pause sees the download either queued or running.
        let run = match &waiting.work {
            Work::File(job) => job.control.as_ref().map(|control| control.start_run()),
            Work::Admit(_) => None,
        };
        Next::Start(Box::new(waiting), permit, run)
    }

    /// Ends every queued download whose token was cancelled.
    fn sweep_cancelled(&self) {
        let mut cancelled = Vec::new();
        {
            let mut queue = self.lock();
            let Queue {
                hosts,
                heads,
                waiting,
                ..
            } = &mut *queue;
            hosts.retain(|host, list| {
                let before = list.front().map(|w| w.sequence);
                let mut kept = VecDeque::with_capacity(list.len());
                for entry in list.drain(..) {
                    if entry.cancel.is_cancelled() {
                        cancelled.push(entry.work);
                    } else {
                        kept.push_back(entry);
                    }
                }
                *list = kept;
                if let Some(before) = before {
                    heads.remove(&before);
                }
                if let Some(front) = list.front() {
                    heads.insert(front.sequence, host.clone());
                }
                !list.is_empty()
            });
            *waiting -= cancelled.len();
        }
        for work in cancelled {
            if let Work::File(job) = work {
                finish(&job.report, job.sink, Err(Error::Cancelled));
            }
        }
    }

    fn start(
        self: &Arc<Self>,
        waiting: Waiting,
        permit: HostPermit,
        run: Option<CancellationToken>,
    ) {
        self.on_network.fetch_add(1, Ordering::AcqRel);
        self.running.fetch_add(1, Ordering::AcqRel);
        let slot = JobSlot {
            scheduler: Arc::clone(self),
        };
        let alive = Running {
            scheduler: Arc::clone(self),
        };
        let job = match waiting.work {
            Work::Admit(sender) => {
                // Dropped, and so given back, when the caller went away meanwhile.
                let _ = sender.send(Admission {
                    permit,
                    slot,
                    running: alive,
                });
                return;
            }
            Work::File(job) => *job,
        };
        let client = self.client.clone();
        let disk = Arc::clone(&self.disk);
        let scheduler = Arc::clone(self);
        let cancel = Cancel::new(run.unwrap_or(waiting.cancel), job.request.cancel.clone());
        tokio::spawn(async move {
            let _alive = alive;
            let Job {
                request,
                place,
                report,
                sink,
                control,
            } = job;
            let file_rate = match &control {
                Some(control) => Some(Arc::clone(&control.rate)),
                None => request
                    .rate_limit
                    .map(|rate| Arc::new(crate::client::rate::RateLimiter::new(rate))),
            };
            let transfer = Transfer {
                client: &client,
                disk: &disk,
                request: &request,
                report: &report,
                cancel: &cancel,
                place,
                permit: Some(permit),
                job: Some(Box::new(slot)),
                file_rate,
                repairs: 0,
                repaired_pieces: 0,
                state_may_exist: AtomicBool::new(true),
            };
            let (result, kept_bytes) = transfer.run().await;
            let Some(control) = control else {
                finish_keeping(&report, sink, result, kept_bytes);
                return;
            };
            if let Some((report, sink, result)) =
                control.run_ended(&scheduler, (request, report, sink), result)
            {
                finish_keeping(&report, sink, result, kept_bytes);
            }
        });
    }
}

/// Cancels a token and tells the scheduler, on drop: a waiter that went away leaves the queue.
struct CancelOnDrop {
    token: CancellationToken,
    scheduler: Arc<Scheduler>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.token.is_cancelled() {
            self.token.cancel();
            self.scheduler.note_cancelled();
        }
    }
}

enum Next {
    /// With the token its run stops on, for a download that can be paused.
    Start(Box<Waiting>, HostPermit, Option<CancellationToken>),
    /// Downloads wait, but none of their hosts has room.
    Blocked,
    Empty,
}
