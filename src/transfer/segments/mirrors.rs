//! The URLs one file can come from, and the checks that an answer from any of them is the same
//! file: the same total length, and the same `Last-Modified` where both say. A mirror that
//! fails for good, or serves another file, is dropped for this file and its pieces go to the
//! others.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use url::Url;

use super::{Engine, Stop};
use crate::Error;
use crate::client::exchange::{Answer, Ask, Reply};
use crate::client::hosts::HostPermit;
use crate::client::hosts::host_key;
use crate::naming::redact_url;
use crate::progress::Event;
use crate::storage::state::{Origin, Validators};

/// One URL the file can come from.
struct Mirror {
    url: Url,
    host: String,
    /// What this server said about the file; `None` until it first answered.
    validators: Option<Validators>,
    alive: bool,
}

/// The file's URL (index 0) and its mirrors.
pub(super) struct Mirrors {
    list: Mutex<Vec<Mirror>>,
}

impl Mirrors {
    /// `sources`: the file's usable sources, the one that gave `first_answer` first.
    pub(super) fn new(sources: &[Url], first_answer: &Validators) -> Self {
        let list = sources
            .iter()
            .enumerate()
            .map(|(index, url)| Mirror {
                host: host_key(url),
                url: url.clone(),
                validators: (index == 0).then(|| first_answer.clone()),
                alive: true,
            })
            .collect();
        Self {
            list: Mutex::new(list),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Mirror>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn host(&self, index: usize) -> String {
        self.lock()[index].host.clone()
    }
}

impl Engine<'_, '_> {
    /// A mirror for an extra connection, with a permit for its host (the per-host limit counts
    /// every connection). Prefers mirror `worker % mirrors`, then any other with room.
    pub(super) fn permit_for(&self, worker: usize) -> Option<(usize, HostPermit)> {
        let mirrors = self.mirrors.lock();
        let count = mirrors.len();
        (0..count)
            .map(|shift| (worker + shift) % count)
            .filter(|index| mirrors[*index].alive)
            .find_map(|index| {
                self.transfer
                    .client
                    .hosts()
                    .try_acquire(&mirrors[index].host)
                    .map(|permit| (index, permit))
            })
    }

    /// Drops mirror `index` for this file; returns another live one.
    pub(super) fn drop_mirror(&self, index: usize, error: &Error) -> Option<usize> {
        let mut mirrors = self.mirrors.lock();
        let count = mirrors.len();
        if count == 1 {
            return None;
        }
        let was_alive = std::mem::replace(&mut mirrors[index].alive, false);
        let next = (1..count)
            .map(|shift| (index + shift) % count)
            .find(|other| mirrors[*other].alive);
        if was_alive && next.is_some() {
            self.transfer.emit(&Event::Warning {
                id: self.transfer.report.id(),
                message: format!(
                    "mirror {} dropped for this file: {}",
                    redact_url(&mirrors[index].url),
                    error
                ),
            });
        }
        next
    }

    /// Asks mirror `index` for `[start, end)` and checks that the answer is that range of the
    /// same file.
    pub(super) async fn request_range(
        &self,
        index: usize,
        start: u64,
        end: u64,
        cancel: &crate::client::cancel::Cancel,
    ) -> Result<Reply, Stop> {
        let (url, validators) = {
            let mirrors = self.mirrors.lock();
            (
                mirrors[index].url.clone(),
                mirrors[index].validators.clone(),
            )
        };
        let shown = redact_url(&url);
        let ask = Ask::get(&url)
            .with_headers(&self.transfer.request.headers)
            .with_auth(self.transfer.request.auth.as_ref())
            .with_range(
                start,
                Some(end),
                validators.as_ref().and_then(Validators::if_range),
            );
        let asked = Instant::now();
        let answer = self.transfer.client.exchange(&ask, cancel).await?;
        let waited = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.slowest_answer_micros
            .fetch_max(waited, std::sync::atomic::Ordering::Relaxed);
        let refuse = |detail: String| {
            Stop::Failed(Error::BadRange {
                url: shown.clone(),
                detail,
            })
        };
        let reply = match answer {
            Answer::Partial(reply, _) => reply,
            Answer::Whole(_) | Answer::Unsatisfiable { .. } if index == 0 => {
                return Err(Stop::StartOver(
                    "the server answered a range request with the whole file (it changed, or \
                     ranges are unsupported); starting over on one connection"
                        .into(),
                ));
            }
            Answer::Whole(_) | Answer::Unsatisfiable { .. } | Answer::NotModified(_) => {
                return Err(refuse(
                    "this mirror does not serve ranges of the file; refused".into(),
                ));
            }
        };
        // The identity rule: the file's own source must still serve the version the `.part`
        // holds; a mirror must serve that version too (by length and `Last-Modified`, its
        // `ETag` being its own), and once it answered, the same version as before.
        let file = self.mirrors.lock()[0]
            .validators
            .clone()
            .unwrap_or_default();
        let expected = crate::storage::state::Validators {
            total_bytes: Some(self.total),
            ..file
        };
        let changed = match (&validators, index) {
            (Some(own), 0) => Validators {
                total_bytes: Some(self.total),
                ..own.clone()
            }
            .differs(&reply.validators, Origin::SameSource),
            (Some(own), _) => Validators {
                total_bytes: Some(self.total),
                ..own.clone()
            }
            .differs(&reply.validators, Origin::SameSource)
            .or_else(|| expected.differs(&reply.validators, Origin::OtherSource)),
            (None, _) => expected.differs(&reply.validators, Origin::OtherSource),
        };
        if let Some(reason) = changed {
            if index == 0 {
                return Err(Stop::StartOver(reason));
            }
            return Err(refuse(format!(
                "it differs from the file ({reason}); mirror refused"
            )));
        }
        if validators.is_none() {
            self.mirrors.lock()[index].validators = Some(reply.validators.clone());
        }
        Ok(reply)
    }
}
