//! A download submitted on its own (`Downloader::submit`): the handle that is a future of its
//! outcome, and the canceller that stops it from anywhere.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Control, Scheduler, Sink};
use crate::progress::{Observer, Reporter, TransferId};
use crate::{Completed, Error, Request};

/// A download submitted to a `Downloader`: a future of its outcome. Dropping it cancels the
/// download (its `.part` and state are kept for a later resume, its places freed at once).
#[must_use = "dropping a handle cancels its download"]
pub struct DownloadHandle {
    id: TransferId,
    tag: Option<crate::Tag>,
    outcome: oneshot::Receiver<Result<Completed, Error>>,
    control: DownloadControl,
    done: bool,
}

impl std::fmt::Debug for DownloadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadHandle")
            .field("id", &self.id)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl DownloadHandle {
    /// The download's id, unique within its downloader (the id of its events).
    #[must_use]
    pub fn id(&self) -> TransferId {
        self.id
    }

    /// The request's tag, when it has one.
    #[must_use]
    pub fn tag(&self) -> Option<&crate::Tag> {
        self.tag.as_ref()
    }

    /// Stops the download: a running one keeps a resumable `.part`, a queued one never
    /// starts; either ends with [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// A cloneable way to cancel this download from elsewhere (a request handler, a UI)
    /// while the handle itself is awaited. It does not keep the download alive: dropping the
    /// handle still cancels it.
    #[must_use]
    pub fn canceller(&self) -> Canceller {
        Canceller {
            control: self.control(),
        }
    }

    /// A cloneable way to pause, resume, cancel, re-prioritize or slow down this download from
    /// elsewhere while the handle is awaited (a paused download's handle stays pending). Like
    /// the canceller, it does not keep the download alive.
    #[must_use]
    pub fn control(&self) -> DownloadControl {
        self.control.clone()
    }
}

/// Cancels one download from anywhere; see [`DownloadHandle::canceller`]. Cancelling a
/// download that has already ended does nothing.
#[derive(Clone)]
pub struct Canceller {
    control: DownloadControl,
}

impl std::fmt::Debug for Canceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canceller")
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Canceller {
    /// Stops the download, as [`DownloadHandle::cancel`].
    pub fn cancel(&self) {
        self.control.cancel();
    }

    /// Whether it was cancelled (by this or any other canceller of the download).
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.control.is_cancelled()
    }
}

/// What a long-lived program (a service, a UI, a daemon) does to one submitted download while
/// it lives; see [`DownloadHandle::control`]. Cheap to clone. Every method on a download that
/// has ended does nothing.
///
/// ```no_run
/// # async fn demo(downloader: haul::Downloader) -> Result<(), haul::Error> {
/// let handle = downloader.submit(haul::Request::new("https://example.org/big.iso")?);
/// let control = handle.control();
/// control.pause(); // stops the transfer; the .part stays, the places are free
/// // ... later
/// control.set_rate_limit(Some(512 * 1024));
/// control.resume(); // back in the queue, continues from the .part
/// let done = handle.await?;
/// # let _ = done; Ok(()) }
/// ```
#[derive(Clone)]
pub struct DownloadControl {
    control: Arc<Control>,
    scheduler: Arc<Scheduler>,
}

impl std::fmt::Debug for DownloadControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadControl")
            .field("id", &self.control.id)
            .field("paused", &self.is_paused())
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl DownloadControl {
    /// The download's id.
    #[must_use]
    pub fn id(&self) -> TransferId {
        self.control.id
    }

    /// Stops the download for good, as [`DownloadHandle::cancel`] (a paused one too).
    pub fn cancel(&self) {
        if !self.control.token.is_cancelled() {
            self.control.token.cancel();
            self.scheduler.note_cancelled();
        }
        self.control.cancelled();
    }

    /// Whether it was cancelled.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.control.token.is_cancelled()
    }

    /// Pauses the download. A running one stops its transfer, keeps its `.part` and gives its
    /// `jobs` slot and host place back; a queued one leaves the queue. Either reports
    /// [`Event::Paused`](crate::Event::Paused) and waits for [`Self::resume`] or
    /// [`Self::cancel`]; its handle stays pending. `false` when there was nothing to pause
    /// (paused already, or ended).
    #[allow(clippy::must_use_candidate)] // an action first; its answer may be ignored
    pub fn pause(&self) -> bool {
        self.control.pause(&self.scheduler)
    }

    /// Resumes a paused download: it reports [`Event::Resumed`](crate::Event::Resumed) and
    /// joins the end of the queue; when it starts, it continues from its `.part` (validated
    /// like any resume). `false` when it was not paused.
    #[allow(clippy::must_use_candidate)] // an action first; its answer may be ignored
    pub fn resume(&self) -> bool {
        self.control.resume(&self.scheduler)
    }

    /// Whether the download is paused.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.control.is_paused()
    }

    /// Changes this download's own rate limit, bytes per second (`None`: none), from its next
    /// chunk on; the downloader's overall limit still applies.
    pub fn set_rate_limit(&self, bytes_per_second: Option<u64>) {
        self.control.rate.set(bytes_per_second);
    }

    /// This download's own rate limit now.
    #[must_use]
    pub fn rate_limit(&self) -> Option<u64> {
        self.control.rate.get()
    }

    /// Moves the download, while it waits in the queue, to `position` among the waiting
    /// downloads (0: the next to start; past the end: the last). Its new position, or `None`
    /// when it is not waiting (running, paused or ended).
    #[allow(clippy::must_use_candidate)] // an action first; its answer may be ignored
    pub fn move_in_queue(&self, position: usize) -> Option<usize> {
        self.scheduler.reposition(self.control.id, position)
    }
}

impl Future for DownloadHandle {
    type Output = Result<Completed, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.outcome).poll(cx) {
            Poll::Ready(outcome) => {
                self.done = true;
                Poll::Ready(outcome.unwrap_or_else(|_| {
                    Err(Error::Internal(
                        "a download task ended without an outcome".into(),
                    ))
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for DownloadHandle {
    fn drop(&mut self) {
        if !self.done {
            self.cancel();
        }
    }
}

/// Submits one download to `scheduler`, observed by its observers and `observer`.
pub(crate) fn submit(
    scheduler: &Arc<Scheduler>,
    request: Request,
    observer: Option<Arc<dyn Observer>>,
) -> DownloadHandle {
    let id = scheduler.next_id();
    let (sender, outcome) = oneshot::channel();
    let cancel = CancellationToken::new();
    let place = request.place();
    let tag = request.tag.clone();
    let report = Reporter::new(scheduler.observer_for(observer), id).with_tag(tag.clone());
    let control = Arc::new(Control::new(id, cancel, request.rate_limit));
    scheduler.enqueue(
        request,
        place,
        control.token.clone(),
        report,
        Sink::Handle(sender),
        Some(Arc::clone(&control)),
    );
    DownloadHandle {
        id,
        tag,
        outcome,
        control: DownloadControl {
            control,
            scheduler: Arc::clone(scheduler),
        },
        done: false,
    }
}
