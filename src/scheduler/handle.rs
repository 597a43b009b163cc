//! A download submitted on its own (`Downloader::submit`): the handle that is a future of its
//! outcome, and the canceller that stops it from anywhere.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Scheduler, Sink};
use crate::progress::{Observer, Reporter, TransferId};
use crate::{Completed, Error, Request};

/// A download submitted to a `Downloader`: a future of its outcome. Dropping it cancels the
/// download (its `.part` and state are kept for a later resume, its places freed at once).
#[must_use = "dropping a handle cancels its download"]
pub struct DownloadHandle {
    id: TransferId,
    tag: Option<crate::Tag>,
    outcome: oneshot::Receiver<Result<Completed, Error>>,
    canceller: Canceller,
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
        self.canceller.cancel();
    }

    /// A cloneable way to cancel this download from elsewhere (a request handler, a UI)
    /// while the handle itself is awaited. It does not keep the download alive: dropping the
    /// handle still cancels it.
    #[must_use]
    pub fn canceller(&self) -> Canceller {
        self.canceller.clone()
    }
}

/// Cancels one download from anywhere; see [`DownloadHandle::canceller`]. Cancelling a
/// download that has already ended does nothing.
#[derive(Clone)]
pub struct Canceller {
    token: CancellationToken,
    scheduler: Arc<Scheduler>,
}

impl std::fmt::Debug for Canceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Canceller")
            .field("cancelled", &self.token.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Canceller {
    /// Stops the download, as [`DownloadHandle::cancel`].
    pub fn cancel(&self) {
        if !self.token.is_cancelled() {
            self.token.cancel();
            self.scheduler.note_cancelled();
        }
    }

    /// Whether it was cancelled (by this or any other canceller of the download).
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
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
    scheduler.enqueue(request, place, cancel.clone(), report, Sink::Handle(sender));
    DownloadHandle {
        id,
        tag,
        outcome,
        canceller: Canceller {
            token: cancel,
            scheduler: Arc::clone(scheduler),
        },
        done: false,
    }
}
