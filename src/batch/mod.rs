//! Batches: many requests run together on their downloader's one queue, from a list or from a
//! stream (an input file read line by line, standard input), with memory independent of their
//! number. A feeder takes requests as room frees up (at most `window` queued or running at
//! once), remembers a fixed-size fingerprint of every output it has seen, and forwards
//! outcomes as they complete. A request whose URL and output repeat an earlier one is
//! downloaded once and reported for each line; two different URLs for one output are a
//! conflict (a list refuses it before anything starts; a stream fails that line). With
//! `Content-Disposition` naming, requests whose URLs end alike get provisional names
//! (`NAME.1`, `NAME.2`), so they never share a `.part`.

mod feeder;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::progress::Observer;
use crate::request::normalized;
pub use crate::scheduler::Outcome;
use crate::scheduler::Scheduler;
use crate::{Completed, Destination, Error, Request};
use feeder::Feeder;

enum Source {
    List(Vec<Request>),
    Stream(BoxStream<'static, Result<Request, Error>>),
}

/// A set of requests to run together on their downloader's queue. Configure it, then
/// [`Batch::start`] or [`Batch::run`].
pub struct Batch {
    scheduler: Arc<Scheduler>,
    source: Source,
    observer: Option<Arc<dyn Observer>>,
    cancel: CancellationToken,
    window: usize,
    content_disposition: bool,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

impl Batch {
    pub(crate) fn new(
        scheduler: Arc<Scheduler>,
        requests: Vec<Request>,
        jobs: usize,
        content_disposition: bool,
    ) -> Self {
        Self::with_source(scheduler, Source::List(requests), jobs, content_disposition)
    }

    pub(crate) fn from_stream(
        scheduler: Arc<Scheduler>,
        requests: BoxStream<'static, Result<Request, Error>>,
        jobs: usize,
        content_disposition: bool,
    ) -> Self {
        Self::with_source(
            scheduler,
            Source::Stream(requests),
            jobs,
            content_disposition,
        )
    }

    fn with_source(
        scheduler: Arc<Scheduler>,
        source: Source,
        jobs: usize,
        content_disposition: bool,
    ) -> Self {
        Self {
            scheduler,
            source,
            observer: None,
            cancel: CancellationToken::new(),
            window: (jobs * 8).max(256),
            content_disposition,
        }
    }

    /// Report this batch's events to `observer` (besides the downloader's observers).
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Stop the batch when `token` is cancelled: running downloads keep a resumable `.part`
    /// and end with [`Error::Cancelled`], queued ones end with it without starting, and no
    /// more requests are taken from a stream.
    #[must_use]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// How many of the batch's requests are queued or running at once (default: 8 × `jobs`,
    /// at least 256). The rest wait in the list or the stream, costing nothing.
    #[must_use]
    pub fn with_window(mut self, requests: usize) -> Self {
        self.window = requests.max(1);
        self
    }

    /// Checks the batch and starts it. Must be called inside a Tokio runtime. Dropping the
    /// returned stream cancels whatever of the batch has not ended.
    ///
    /// # Errors
    /// [`Error::DuplicateOutput`] when two requests of a list would write the same file from
    /// different URLs; then nothing starts.
    pub fn start(self) -> Result<Outcomes, Error> {
        let (total, source) = match self.source {
            Source::List(requests) => {
                check_list(&requests, self.content_disposition)?;
                let total = requests.len();
                (
                    Some(total),
                    futures_util::stream::iter(requests.into_iter().map(Ok)).boxed(),
                )
            }
            Source::Stream(stream) => (None, stream),
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        // The batch's own scope: dropping its outcomes cancels it, never the caller's token.
        let cancel = self.cancel.child_token();
        let feeder = Feeder::new(
            self.scheduler.observer_for(self.observer),
            Arc::clone(&self.scheduler),
            cancel.clone(),
            self.window,
            self.content_disposition,
            sender,
        );
        let room = Arc::new(Room::default());
        tokio::spawn(feeder.run(source, Arc::clone(&room)));
        Ok(Outcomes {
            receiver,
            room,
            total,
            cancel,
            scheduler: self.scheduler,
            finished: false,
        })
    }

    /// Runs the batch to the end and returns every outcome in input order.
    ///
    /// # Errors
    /// As [`Batch::start`].
    pub async fn run(self) -> Result<Vec<Result<Completed, Error>>, Error> {
        let outcomes = self.start()?;
        Ok(outcomes.in_input_order().await)
    }
}

/// Refuses a list in which two different URLs would write one file (the same URL twice is
/// fine: it is downloaded once).
fn check_list(requests: &[Request], content_disposition: bool) -> Result<(), Error> {
    let mut seen: HashMap<std::path::PathBuf, (usize, &url::Url)> = HashMap::new();
    for (index, request) in requests.iter().enumerate() {
        let Ok(place) = request.place() else { continue };
        if content_disposition && matches!(request.destination, Destination::Directory(_)) {
            continue;
        }
        let path = place.path();
        let path = normalized(&path);
        match seen.get(path.as_ref()) {
            Some((first, url)) if **url != request.url => {
                return Err(Error::DuplicateOutput {
                    path: place.path(),
                    first: *first,
                    second: index,
                });
            }
            Some(_) => {}
            None => {
                seen.insert(path.into_owned(), (index, &request.url));
            }
        }
    }
    Ok(())
}

/// How many requests the feeder has taken from the source whose outcome the caller has not
/// received yet: in flight, waiting for their leader, or sent and not read. Bounding this (not
/// only what runs) keeps memory flat however long the list, even when the caller reads its
/// outcomes more slowly than downloads end (a busy machine, a slow terminal).
#[derive(Debug, Default)]
struct Room {
    taken: std::sync::atomic::AtomicUsize,
    given_back: tokio::sync::Notify,
}

impl Room {
    fn taken(&self) -> usize {
        self.taken.load(std::sync::atomic::Ordering::Acquire)
    }

    fn take(&self) {
        self.taken.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn give_back(&self) {
        let _ = self.taken.fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |n| Some(n.saturating_sub(1)),
        );
        self.given_back.notify_one();
    }
}

/// The outcomes of a started batch, as a `Stream` in completion order. Dropping it before the
/// end cancels the rest of the batch. Read it as the batch runs: at most the batch's window of
/// requests is taken from the source before its outcome is read, so a caller that stops
/// reading pauses the batch rather than letting memory grow.
pub struct Outcomes {
    receiver: mpsc::UnboundedReceiver<Outcome>,
    room: Arc<Room>,
    total: Option<usize>,
    cancel: CancellationToken,
    scheduler: Arc<Scheduler>,
    finished: bool,
}

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcomes")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Outcomes {
    /// How many requests the batch has, when it came from a list.
    #[must_use]
    pub fn total(&self) -> Option<usize> {
        self.total
    }

    /// Waits for every outcome and returns them in input order.
    pub async fn in_input_order(mut self) -> Vec<Result<Completed, Error>> {
        let mut slots: Vec<Option<Result<Completed, Error>>> =
            (0..self.total.unwrap_or(0)).map(|_| None).collect();
        while let Some(outcome) = self.receiver.recv().await {
            self.room.give_back();
            if slots.len() <= outcome.index {
                slots.resize_with(outcome.index + 1, || None);
            }
            slots[outcome.index] = Some(outcome.result);
        }
        self.finished = true;
        slots
            .into_iter()
            .map(|slot| {
                slot.unwrap_or_else(|| {
                    Err(Error::Internal(
                        "a download task ended without an outcome".into(),
                    ))
                })
            })
            .collect()
    }
}

impl Stream for Outcomes {
    type Item = Outcome;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outcome>> {
        let polled = self.receiver.poll_recv(cx);
        match &polled {
            Poll::Ready(None) => self.finished = true,
            Poll::Ready(Some(_)) => self.room.give_back(),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Outcomes {
    fn drop(&mut self) {
        if !self.finished {
            self.cancel.cancel();
            self.scheduler.note_cancelled();
        }
    }
}
