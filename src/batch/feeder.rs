//! The batch's feeder: takes requests from the source as room frees up, decides for each
//! whether it runs, waits for an identical request in flight (a follower), or fails as a
//! conflict, gives URLs that end alike provisional names, and forwards every outcome (a
//! leader's to its followers too).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Room;
use crate::naming::redact_url;
use crate::progress::{Event, Observer, Reporter, TransferId};
use crate::request::normalized;
use crate::scheduler::{Outcome, Scheduler, Sink};
use crate::seen::{Seen, SeenOutputs, fold};
use crate::storage::place::Place;
use crate::{Completed, Destination, Error, Request};

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

pub(super) struct Feeder {
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
    pub(super) fn new(
        observer: Arc<dyn Observer>,
        scheduler: Arc<Scheduler>,
        cancel: CancellationToken,
        window: usize,
        content_disposition: bool,
        forward: mpsc::UnboundedSender<Outcome>,
    ) -> Self {
        Self {
            observer,
            scheduler,
            cancel,
            window,
            content_disposition,
            forward,
            seen: SeenOutputs::default(),
            leaders: HashMap::new(),
            in_flight: HashMap::new(),
            path_of: HashMap::new(),
            fingerprints: Fingerprints::new(),
        }
    }

    pub(super) async fn run(
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
        self.finish(index, self.scheduler.next_id(), tag, Err(error));
    }

    /// Reports the end of the request at `index` that never ran on its own (a failure before
    /// it was queued, a follower) and forwards it.
    fn finish(
        &self,
        index: usize,
        id: TransferId,
        tag: Option<crate::Tag>,
        result: Result<Completed, Error>,
    ) {
        let report = Reporter::new(Arc::clone(&self.observer), id).with_tag(tag);
        crate::scheduler::finish(
            &report,
            Sink::Batch {
                outcomes: self.forward.clone(),
                index,
            },
            result,
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
                self.finish(index, id, tag, shared);
            }
        }
        let _ = self.forward.send(outcome);
    }
}

enum Classified {
    /// Run it; its output and that path's fingerprint.
    Run(Request, Place, u64),
    /// The same URL and output as the request at this index, still in flight.
    Follow(usize, Request),
}
