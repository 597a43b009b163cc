//! Events a download reports while it runs, and the observer trait that receives them. The
//! library only counts and reports; throttling and drawing are the observer's business.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{Completed, ErrorKind, Streamed};

/// Identifies one download of a [`Downloader`](crate::Downloader): unique among everything
/// that downloader (and its clones) ran, in submission order. It is **not** a position in a
/// batch (that is [`Outcome::index`](crate::Outcome::index)); to find your own record for a
/// download, give the request a [tag](crate::Request::with_tag) or keep a map from this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub(crate) u64);

impl TransferId {
    /// The id as a number (for logs and maps): increasing in submission order, never reused
    /// by the same downloader.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for TransferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A caller's own key for a request (a database id, a job name), given with
/// [`Request::with_tag`](crate::Request::with_tag) and carried into the download's
/// `Queued` and terminal events and into its [`Outcome`](crate::Outcome). Cheap to clone.
pub type Tag = std::sync::Arc<str>;

/// Something that happened to one transfer. Every download gets exactly one terminal event
/// (`Finished`, `Streamed` or `Failed`; see [`Event::is_terminal`]), after its `Queued`,
/// `Started` and `Progress` events: downloads into files and into writers alike.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The request is accepted and waits for a free slot.
    Queued {
        /// Which request.
        id: TransferId,
        /// Its URL, credentials redacted.
        url: String,
        /// The file it will produce, when that could be determined (`None` for a writer).
        path: Option<PathBuf>,
        /// The caller's tag, when the request has one.
        tag: Option<Tag>,
    },
    /// The server answered and the body starts flowing.
    Started {
        /// Which request.
        id: TransferId,
        /// The whole file's length, when the server said.
        total_bytes: Option<u64>,
        /// Bytes already on disk from an earlier attempt or run.
        resumed_from: u64,
        /// The protocol the server answered with: `HTTP/1.1`, `HTTP/2.0`, ...
        http_version: String,
        /// The proxy the request went through (credentials redacted), when one did.
        proxy: Option<String>,
    },
    /// More of the body arrived.
    Progress {
        /// Which request.
        id: TransferId,
        /// Bytes of the file received so far, resumed prefix included.
        bytes_done: u64,
    },
    /// An attempt failed and another follows after `delay` (every retry is reported, whatever
    /// its cause: a refused connection, a stall, a `503`).
    Retrying {
        /// Which request.
        id: TransferId,
        /// The attempt that comes next (2 for the first retry).
        attempt: u32,
        /// How long until it starts.
        delay: Duration,
        /// Why the last attempt failed.
        reason: String,
    },
    /// The bytes on disk cannot be continued (the file changed on the server, ranges are
    /// unsupported, or the saved state was unusable) and the download starts from zero.
    Restarted {
        /// Which request.
        id: TransferId,
        /// Why.
        reason: String,
    },
    /// Something the user should know that does not stop the download (a mirror refused or
    /// dropped, for example).
    Warning {
        /// Which request.
        id: TransferId,
        /// What happened.
        message: String,
    },
    /// The file is complete and verified under its final name.
    Finished {
        /// Which request.
        id: TransferId,
        /// What was produced.
        completed: Completed,
        /// The caller's tag, when the request has one.
        tag: Option<Tag>,
    },
    /// A download into a writer ([`Downloader::download_to_writer`](crate::Downloader::download_to_writer))
    /// ended: every byte was written (and matched the checksum, when there was one).
    Streamed {
        /// Which request.
        id: TransferId,
        /// What was written.
        streamed: Streamed,
        /// The caller's tag, when the request has one.
        tag: Option<Tag>,
    },
    /// The download was paused ([`DownloadControl::pause`](crate::DownloadControl::pause)):
    /// its transfer stopped, its `.part` is kept, and it waits for a resume or a cancellation.
    Paused {
        /// Which request.
        id: TransferId,
        /// The caller's tag, when the request has one.
        tag: Option<Tag>,
    },
    /// A paused download was resumed and waits in the queue again; its next `Started` says
    /// how much of the `.part` it continues from.
    Resumed {
        /// Which request.
        id: TransferId,
        /// The caller's tag, when the request has one.
        tag: Option<Tag>,
    },
    /// The download failed. Its `.part` file is kept when it can be resumed.
    Failed {
        /// Which request.
        id: TransferId,
        /// The error's class.
        kind: ErrorKind,
        /// The error, one line, with its cause (its `Display`).
        message: String,
        /// The HTTP status that ended it, when one did.
        status: Option<u16>,
        /// What about the failure a person can act on, when something can be said.
        circumstance: Option<crate::Circumstance>,
        /// Verified bytes kept in the `.part` file for a later resume (0: nothing kept; the
        /// next attempt starts from the beginning).
        kept_bytes: u64,
        /// The caller's tag, when the request has one.
        tag: Option<Tag>,
    },
}

impl Event {
    /// The transfer the event is about.
    #[must_use]
    pub fn id(&self) -> TransferId {
        match self {
            Self::Queued { id, .. }
            | Self::Started { id, .. }
            | Self::Progress { id, .. }
            | Self::Retrying { id, .. }
            | Self::Restarted { id, .. }
            | Self::Warning { id, .. }
            | Self::Paused { id, .. }
            | Self::Resumed { id, .. }
            | Self::Finished { id, .. }
            | Self::Streamed { id, .. }
            | Self::Failed { id, .. } => *id,
        }
    }

    /// Whether this is the download's last event (`Finished`, `Streamed` or `Failed`).
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Finished { .. } | Self::Streamed { .. } | Self::Failed { .. }
        )
    }

    /// The caller's tag, on the events that carry it (`Queued`, `Paused`, `Resumed` and the
    /// terminal ones).
    #[must_use]
    pub fn tag(&self) -> Option<&Tag> {
        match self {
            Self::Queued { tag, .. }
            | Self::Paused { tag, .. }
            | Self::Resumed { tag, .. }
            | Self::Finished { tag, .. }
            | Self::Streamed { tag, .. }
            | Self::Failed { tag, .. } => tag.as_ref(),
            _ => None,
        }
    }
}

/// A short name for a download in messages: its file name, or its URL when it has none yet.
/// Control characters (a newline in a server's name, say) are escaped (`\n`), so a name is
/// always one line and cannot move a terminal's cursor.
pub(crate) fn display_name(url: &str, path: Option<&std::path::Path>) -> String {
    let name = path
        .and_then(|p| p.file_name())
        .map_or_else(|| url.to_owned(), |n| n.to_string_lossy().into_owned());
    if !name.chars().any(char::is_control) {
        return name;
    }
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Receives events. Called on the download's own task, often (once per received chunk), so an
/// implementation must be quick and must not block.
pub trait Observer: Send + Sync {
    /// One event happened.
    fn on_event(&self, event: &Event);

    /// Whether this observer wants a [`Event::Progress`] for every piece of a body that
    /// arrives (the default). One that draws at its own pace (a progress bar's tick) returns
    /// `false`: it then gets no `Progress` events, and each download's [`ProgressCounter`]
    /// through [`Observer::on_counter`] instead, to read when it draws. Every other event
    /// comes as before. Asked once per download.
    fn wants_progress_events(&self) -> bool {
        true
    }

    /// A download's live byte count, given once, just before its first `Started` event, to an
    /// observer that does not want `Progress` events. It reads what the `Progress` events
    /// would have said; by the download's terminal event it holds the last figure.
    fn on_counter(&self, id: TransferId, counter: &ProgressCounter) {
        let _ = (id, counter);
    }
}

/// One download's bytes so far, resumed prefix included: what its latest `Progress` event
/// would say (see [`Observer::wants_progress_events`]). Cheap to clone and to read.
#[derive(Debug, Clone)]
pub struct ProgressCounter(std::sync::Arc<CounterCell>);

#[derive(Debug, Default)]
struct CounterCell {
    bytes_done: AtomicU64,
    /// The observer was given the counter (at the first `Started`).
    announced: AtomicBool,
}

impl ProgressCounter {
    /// The bytes done now.
    #[must_use]
    pub fn bytes_done(&self) -> u64 {
        self.0.bytes_done.load(Ordering::Acquire)
    }

    fn set(&self, bytes_done: u64) {
        self.0.bytes_done.store(bytes_done, Ordering::Release);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn on_event(&self, _event: &Event) {}
}

/// Where one transfer's events go: its id, its caller's tag and its observer.
#[derive(Clone)]
pub(crate) struct Reporter {
    observer: std::sync::Arc<dyn Observer>,
    id: TransferId,
    tag: Option<Tag>,
    /// Where `Progress` figures go instead of events, for an observer that reads them at its
    /// own pace; made when the first figure comes (a 404 never needs one).
    counter: Option<std::sync::OnceLock<ProgressCounter>>,
}

impl Reporter {
    pub(crate) fn new(observer: std::sync::Arc<dyn Observer>, id: TransferId) -> Self {
        let counter = (!observer.wants_progress_events()).then(std::sync::OnceLock::new);
        Self {
            observer,
            id,
            tag: None,
            counter,
        }
    }

    pub(crate) fn with_tag(mut self, tag: Option<Tag>) -> Self {
        self.tag = tag;
        self
    }

    pub(crate) fn tag(&self) -> Option<Tag> {
        self.tag.clone()
    }

    /// A reporter nobody listens to.
    pub(crate) fn silent() -> Self {
        Self::new(std::sync::Arc::new(NoObserver), TransferId(0))
    }

    pub(crate) fn id(&self) -> TransferId {
        self.id
    }

    pub(crate) fn emit(&self, event: &Event) {
        if let Some(cell) = &self.counter {
            let counter = || cell.get_or_init(|| ProgressCounter(std::sync::Arc::default()));
            match event {
                Event::Progress { bytes_done, .. } => return counter().set(*bytes_done),
                // The figure starts again where the download does.
                Event::Started { resumed_from, .. } => {
                    let counter = counter();
                    counter.set(*resumed_from);
                    if !counter.0.announced.swap(true, Ordering::AcqRel) {
                        self.observer.on_counter(self.id, counter);
                    }
                }
                Event::Restarted { .. } => counter().set(0),
                _ => {}
            }
        }
        self.observer.on_event(event);
    }
}

/// Forwards every event into a `tokio` channel, for embedders that prefer to `recv()`.
/// Events sent after the receiver is dropped are discarded.
#[derive(Debug, Clone)]
pub struct ChannelObserver {
    sender: mpsc::UnboundedSender<Event>,
}

impl ChannelObserver {
    /// An observer and the receiver its events arrive on.
    #[must_use]
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self { sender }, receiver)
    }
}

impl Observer for ChannelObserver {
    fn on_event(&self, event: &Event) {
        let _ = self.sender.send(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::display_name;
    use std::path::Path;

    #[test]
    fn a_name_with_control_characters_is_shown_on_one_line() {
        assert_eq!(
            display_name("u", Some(Path::new("/d/two\nlines\u{1b}[2J.txt"))),
            "two\\nlines\\u{1b}[2J.txt"
        );
        assert_eq!(display_name("http://h/f", None), "http://h/f");
        assert_eq!(
            display_name("u", Some(Path::new("/d/plain.iso"))),
            "plain.iso"
        );
    }
}
