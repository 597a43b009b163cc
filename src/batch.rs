//! Batches: many requests run together on their downloader's one queue, from a list or from a
//! stream (an input file read line by line, standard input), with memory independent of their
//! number. A feeder takes requests as room frees up (at most `window` queued or running at
//! once), remembers a fixed-size fingerprint of every output it has seen, and forwards
//! outcomes as they complete. A request whose URL and output repeat an earlier one is
//! downloaded once and reported for each line; two different URLs for one output are a
//! conflict (a list refuses it before anything starts; a stream fails that line). With
//! `Content-Disposition` naming, requests whose URLs end alike get provisional names
//! (`NAME.1`, `NAME.2`), so they never share a `.part`.

use std::collections::HashMap;

use crate::seen::{Seen, SeenOutputs, fold};
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::naming::redact_url;
use crate::progress::{Event, Observer, Reporter, TransferId};
use crate::request::normalized;
pub use crate::scheduler::Outcome;
use crate::scheduler::{Scheduler, Sink};
use crate::storage::place::Place;
use crate::{Completed, Destination, Error, Request};

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
        let feeder = Feeder {
            observer: self.scheduler.observer_for(self.observer),
            scheduler: Arc::clone(&self.scheduler),
            cancel: cancel.clone(),
            window: self.window,
            content_disposition: self.content_disposition,
            forward: sender,
            seen: SeenOutputs::default(),
            leaders: HashMap::new(),
            in_flight: HashMap::new(),
            path_of: HashMap::new(),
            fingerprints: Fingerprints::new(),
        };
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
        let path = normalized(&place.path());
        match seen.get(&path) {
            Some((first, url)) if **url != request.url => {
                return Err(Error::DuplicateOutput {
                    path: place.path(),
                    first: *first,
                    second: index,
                });
            }
            Some(_) => {}
            None => {
                seen.insert(path, (index, &request.url));
            }
        }
    }
    Ok(())
}

/// Fixed-size fingerprints of paths and URLs, from one randomly keyed hasher: what the
/// feeder keeps per request after it is done (16 bytes a request, whatever the path's length).
struct Fingerprints(std::collections::hash_map::RandomState);

impl Fingerprints {
    fn new() -> Self {
        Self(std::collections::hash_map::RandomState::new())
    }

    fn of(&self, text: &[u8]) -> u64 {
        let mut hasher = self.0.build_hasher();
        hasher.write(text);
        hasher.finish()
    }
}

/// A request in flight that later identical requests wait for.
struct Leader {
    /// Followers: their index, id and tag.
    followers: Vec<(usize, TransferId, Option<crate::Tag>)>,
}

struct Feeder {
    scheduler: Arc<Scheduler>,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
    window: usize,
    content_disposition: bool,
    forward: mpsc::UnboundedSender<Outcome>,
    /// Per output path seen: the URL's fingerprint and the first index.
    seen: SeenOutputs,
    /// Requests in flight that have followers waiting, by index.
    leaders: HashMap<usize, Leader>,
    /// Which index is in flight for each output path.
    in_flight: HashMap<u64, usize>,
    /// The output path of each index in flight (so an ended one is found without a scan).
    path_of: HashMap<usize, u64>,
    fingerprints: Fingerprints,
}

impl Feeder {
    async fn run(
        mut self,
        mut source: BoxStream<'static, Result<Request, Error>>,
        room: Arc<Room>,
    ) {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Outcome>();
        let mut flying = 0usize;
        let mut index = 0usize;
        let mut exhausted = false;
        loop {
            if exhausted && flying == 0 {
                break;
            }
            tokio::select! {
                biased;
                Some(outcome) = receiver.recv(), if flying > 0 => {
                    flying -= 1;
                    if let Some(path) = self.path_of.remove(&outcome.index)
                        && self.in_flight.get(&path) == Some(&outcome.index)
                    {
                        self.in_flight.remove(&path);
                    }
                    self.forward_with_followers(outcome);
                }
                () = self.cancel.cancelled(), if !exhausted => exhausted = true,
                // The caller took an outcome: there may be room for the next request.
                () = room.given_back.notified(), if !exhausted => {}
                next = source.next(), if !exhausted && room.taken() < self.window => {
                    let Some(next) = next else {
                        exhausted = true;
                        continue;
                    };
                    room.take();
                    let this = index;
                    index += 1;
                    let tag = next.as_ref().ok().and_then(|r| r.tag.clone());
                    match next.and_then(|request| self.classify(request, this)) {
                        Err(error) => self.fail(this, tag, error),
                        Ok(Classified::Follow(leader, request)) => {
                            let id = self.scheduler.next_id();
                            self.queued(id, &request);
                            self.leaders
                                .entry(leader)
                                .or_insert_with(|| Leader {
                                    followers: Vec::new(),
                                })
                                .followers
                                .push((this, id, tag));
                        }
                        Ok(Classified::Run(request, place, path)) => {
                            self.in_flight.insert(path, this);
                            self.path_of.insert(this, path);
                            flying += 1;
                            self.submit(request, place, this, &sender);
                        }
                    }
                }
            }
        }
    }

    /// Decides what to do with the request at `index`.
    fn classify(&mut self, request: Request, index: usize) -> Result<Classified, Error> {
        let mut request = request;
        let mut place = request.place()?;
        let mut path = self
            .fingerprints
            .of(normalized(&place.path()).as_os_str().as_encoded_bytes());
        let url = self.fingerprints.of(request.url.as_str().as_bytes());
        let provisional =
            self.content_disposition && matches!(request.destination, Destination::Directory(_));
        match self.seen.get(path) {
            None => {}
            Some(Seen {
                url: seen_url,
                first,
            }) if seen_url == fold(url) => {
                if let Some(leader) = self.in_flight.get(&path).copied() {
                    return Ok(Classified::Follow(leader, request));
                }
                // The first finished: a repeat finds the file there and is reported as such.
                let _ = first;
                return Ok(Classified::Run(request, place, path));
            }
            Some(_) if provisional => {
                // Another URL that ends alike: a provisional name of its own (the server's
                // name replaces it at the end).
                let name = place.name().to_string_lossy().into_owned();
                for n in 1u32.. {
                    let candidate = place.sibling(format!("{name}.{n}"));
                    let candidate_path = self
                        .fingerprints
                        .of(normalized(&candidate.path()).as_os_str().as_encoded_bytes());
                    if !self.seen.contains(candidate_path) {
                        request.provisional_name = Some(format!("{name}.{n}"));
                        place = candidate;
                        path = candidate_path;
                        break;
                    }
                }
            }
            Some(Seen { first, .. }) => {
                return Err(Error::DuplicateOutput {
                    path: place.path(),
                    first,
                    second: index,
                });
            }
        }
        self.seen.insert(
            path,
            Seen {
                url: fold(url),
                first: index,
            },
        );
        Ok(Classified::Run(request, place, path))
    }

    /// Queues a request whose output `place` `classify` derived (once: it parses the URL's
    /// name).
    fn submit(
        &self,
        request: Request,
        place: Place,
        index: usize,
        sender: &mpsc::UnboundedSender<Outcome>,
    ) {
        let id = self.scheduler.next_id();
        let report = Reporter::new(Arc::clone(&self.observer), id).with_tag(request.tag.clone());
        self.scheduler.enqueue(
            request,
            Ok(place),
            self.cancel.clone(),
            report,
            Sink::Batch {
                outcomes: sender.clone(),
                index,
            },
            None,
        );
    }

    fn queued(&self, id: TransferId, request: &Request) {
        self.observer.on_event(&Event::Queued {
            id,
            url: redact_url(&request.url),
            path: request.place().ok().map(|p| p.path()),
            tag: request.tag.clone(),
        });
    }

    /// A request that fails before it could be queued (a bad line, a conflict).
    fn fail(&self, index: usize, tag: Option<crate::Tag>, error: Error) {
        let id = self.scheduler.next_id();
        let report = Reporter::new(Arc::clone(&self.observer), id).with_tag(tag);
        crate::scheduler::finish(
            &report,
            Sink::Batch {
                outcomes: self.forward.clone(),
                index,
            },
            Err(error),
        );
    }

    /// Forwards an outcome, and gives every follower of it the same one.
    fn forward_with_followers(&mut self, outcome: Outcome) {
        if let Some(leader) = self.leaders.remove(&outcome.index) {
            for (index, id, tag) in leader.followers {
                let shared = match &outcome.result {
                    Ok(done) => Ok(Completed {
                        already_present: true,
                        resumed_from: done.bytes,
                        ..done.clone()
                    }),
                    Err(error) => Err(Error::Shared {
                        kind: error.kind(),
                        message: error.to_string(),
                        status: error.status(),
                    }),
                };
                let report = Reporter::new(Arc::clone(&self.observer), id).with_tag(tag);
                crate::scheduler::finish(
                    &report,
                    Sink::Batch {
                        outcomes: self.forward.clone(),
                        index,
                    },
                    shared,
                );
            }
        }
        let _ = self.forward.send(outcome);
    }
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

enum Classified {
    /// Run it; its output and that path's fingerprint.
    Run(Request, Place, u64),
    /// The same URL and output as the request at this index, still in flight.
    Follow(usize, Request),
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
