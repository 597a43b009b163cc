//! The progress model: a pure fold of [`Event`]s into per-file and batch totals. Every
//! renderer reads it (the CLI's bars, plain lines and JSON summary; `bars::ProgressBars` for
//! embedders), so none of them re-derives a number. The rules that keep the totals right under
//! several connections, retries, restarts and resumes live here:
//!
//! - A `Progress` event carries a cumulative figure; one that arrives late (lower than what was
//!   seen) changes nothing, and none moves a file past its length.
//! - `Restarted` sends a file back to byte 0: its bar goes back, and what it had received in
//!   this run stays counted, because the server did send it.
//! - `received_bytes` counts the body bytes received in this run, each once: for a fresh
//!   download without faults it is the file's size, whatever the number of connections.
//!
//! A download that ends (finished, failed or cancelled) leaves the map of running ones for a
//! bounded history of the last ended ones (its counts stay): the view of a batch of millions of
//! files, or of a service that runs for months, holds only what is running or waiting plus
//! [`BatchView::DEFAULT_HISTORY`] ended downloads ([`BatchView::with_history`] changes it,
//! [`BatchView::forget`] drops one at once).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use crate::{ErrorKind, Event, TransferId};

/// Where one download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileState {
    /// Waiting for its places.
    Queued,
    /// The body is arriving.
    Running,
    /// Waiting before another attempt.
    Retrying,
    /// Complete and verified under its final name (or already there).
    Finished,
    /// Ended with an error.
    Failed(ErrorKind),
    /// Cancelled before it ended (its `.part` is kept for a later resume).
    Cancelled,
    /// Paused: out of the queue until it is resumed (its `.part` is kept).
    Paused,
}

impl FileState {
    /// Whether the download has ended (finished, failed or cancelled).
    #[must_use]
    pub fn has_ended(self) -> bool {
        matches!(self, Self::Finished | Self::Failed(_) | Self::Cancelled)
    }
}

/// What is known of one download.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileView {
    /// Its URL, credentials redacted.
    pub url: String,
    /// The file it produces, when known.
    pub path: Option<PathBuf>,
    /// A short name for messages (the file name, or the URL).
    pub name: String,
    /// The whole file's length, when the server said.
    pub total_bytes: Option<u64>,
    /// Bytes of the file on disk or received so far (never above `total_bytes`).
    pub bytes_done: u64,
    /// Bytes that were already on disk when it started.
    pub resumed_from: u64,
    /// Body bytes received in this run (bytes later thrown away by a restart included).
    pub received_bytes: u64,
    /// Where it is.
    pub state: FileState,
    /// The protocol of the first answer (`HTTP/1.1`, `HTTP/2.0`).
    pub http_version: Option<String>,
    /// The caller's tag, when the request has one.
    pub tag: Option<crate::Tag>,
    /// Why it failed or was cancelled (one line, with its cause).
    pub error: Option<String>,
    /// After a failure or a cancellation: verified bytes kept in its `.part` for a resume.
    pub kept_bytes: u64,
    /// Bytes the file had when its current run began (its resumed bytes, or 0 after a restart).
    base: u64,
}

impl FileView {
    fn new(url: &str, path: Option<&std::path::Path>, tag: Option<crate::Tag>) -> Self {
        Self {
            tag,
            error: None,
            kept_bytes: 0,
            url: url.to_owned(),
            path: path.map(std::path::Path::to_path_buf),
            name: crate::progress::display_name(url, path),
            total_bytes: None,
            bytes_done: 0,
            resumed_from: 0,
            received_bytes: 0,
            state: FileState::Queued,
            http_version: None,
            base: 0,
        }
    }

    /// This run's share of the batch bar: bytes fetched since the current start, and bytes
    /// to fetch in all (when the length is known).
    fn share(&self) -> (u64, Option<u64>) {
        let done = self.bytes_done.saturating_sub(self.base);
        (done, self.total_bytes.map(|t| t.saturating_sub(self.base)))
    }
}

/// The totals of everything observed: a batch, a sync, or all of a downloader's work over a
/// service's life. Every download that was queued ends counted in exactly one of
/// `downloaded`, `already_present`, `failed` or `cancelled`, so `ended() == queued` once
/// nothing runs, and `batch_progress()` then reads 100%.
///
/// ```
/// use haul::{BatchView, Event};
///
/// let mut view = BatchView::with_history(100);
/// # let events: Vec<Event> = Vec::new();
/// for event in &events {
///     view.apply(event);
/// }
/// let (done, total) = view.batch_progress();
/// println!("{}/{} downloads, {done} of {total} bytes", view.ended(), view.queued);
/// for (id, file) in view.recently_ended() {
///     println!("{id}: {} {:?}", file.name, file.state);
/// }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BatchView {
    files: HashMap<TransferId, FileView>,
    /// The last ended downloads, oldest first, at most `history_limit`.
    history: VecDeque<(TransferId, FileView)>,
    history_limit: usize,
    /// Downloads queued.
    pub queued: usize,
    /// Downloads that completed with a transfer (into a file or a writer).
    pub downloaded: usize,
    /// Downloads that were already complete (nothing transferred).
    pub already_present: usize,
    /// Downloads that failed (cancelled ones not included).
    pub failed: usize,
    /// Failures that were checksum mismatches.
    pub integrity_failures: usize,
    /// Downloads cancelled before they ended.
    pub cancelled: usize,
    /// Body bytes received in this run, each once.
    pub received_bytes: u64,
    /// Of ended files: bytes fetched, and bytes that were to fetch (for the batch bar).
    ended_share: (u64, u64),
}

impl Default for BatchView {
    fn default() -> Self {
        Self::with_history(Self::DEFAULT_HISTORY)
    }
}

impl BatchView {
    /// How many ended downloads a view keeps by default.
    pub const DEFAULT_HISTORY: usize = 1_000;

    /// An empty view that keeps the last [`Self::DEFAULT_HISTORY`] ended downloads.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty view that keeps the last `ended` ended downloads (0: none; their counts stay).
    #[must_use]
    pub fn with_history(ended: usize) -> Self {
        Self {
            files: HashMap::new(),
            history: VecDeque::new(),
            history_limit: ended,
            queued: 0,
            downloaded: 0,
            already_present: 0,
            failed: 0,
            integrity_failures: 0,
            cancelled: 0,
            received_bytes: 0,
            ended_share: (0, 0),
        }
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Queued { id, url, path, tag } => {
                self.queued += 1;
                self.files
                    .insert(*id, FileView::new(url, path.as_deref(), tag.clone()));
            }
            Event::Started {
                id,
                total_bytes,
                resumed_from,
                http_version,
                ..
            } => {
                if let Some(file) = self.files.get_mut(id) {
                    file.state = FileState::Running;
                    file.total_bytes = *total_bytes;
                    file.resumed_from = *resumed_from;
                    file.base = *resumed_from;
                    file.bytes_done = clamp(*resumed_from, *total_bytes);
                    file.http_version = Some(http_version.clone());
                }
            }
            Event::Progress { id, bytes_done } => {
                if let Some(file) = self.files.get_mut(id) {
                    let now = clamp(*bytes_done, file.total_bytes);
                    if now > file.bytes_done {
                        let gained = now - file.bytes_done;
                        file.received_bytes += gained;
                        self.received_bytes += gained;
                        file.bytes_done = now;
                    }
                    file.state = FileState::Running;
                }
            }
            Event::Retrying { id, .. } => {
                if let Some(file) = self.files.get_mut(id) {
                    file.state = FileState::Retrying;
                }
            }
            Event::Restarted { id, .. } => {
                if let Some(file) = self.files.get_mut(id) {
                    // What was fetched before counts for the batch bar as work done.
                    let (done, _) = file.share();
                    self.ended_share.0 += done;
                    self.ended_share.1 += done;
                    file.bytes_done = 0;
                    file.base = 0;
                }
            }
            Event::Warning { .. } => {}
            Event::Paused { id, .. } => {
                if let Some(file) = self.files.get_mut(id) {
                    file.state = FileState::Paused;
                }
            }
            Event::Resumed { id, .. } => {
                if let Some(file) = self.files.get_mut(id) {
                    file.state = FileState::Queued;
                }
            }
            Event::Finished { id, completed, .. } => {
                if completed.already_present {
                    self.already_present += 1;
                } else {
                    self.downloaded += 1;
                }
                let fetched = (!completed.already_present).then_some(completed.bytes);
                self.end(*id, FileState::Finished, fetched, None);
            }
            Event::Streamed { id, streamed, .. } => {
                self.downloaded += 1;
                self.end(*id, FileState::Finished, Some(streamed.bytes), None);
            }
            Event::Failed {
                id,
                kind,
                message,
                kept_bytes,
                ..
            } => {
                if let Some(file) = self.files.get_mut(id) {
                    file.kept_bytes = *kept_bytes;
                }
                let state = if *kind == ErrorKind::Cancelled {
                    self.cancelled += 1;
                    FileState::Cancelled
                } else {
                    self.failed += 1;
                    if *kind == ErrorKind::Integrity {
                        self.integrity_failures += 1;
                    }
                    FileState::Failed(*kind)
                };
                self.end(*id, state, None, Some(message.clone()));
            }
        }
    }

    /// Moves an ended download to the history. `fetched`: the length of a completed body.
    fn end(
        &mut self,
        id: TransferId,
        state: FileState,
        fetched: Option<u64>,
        error: Option<String>,
    ) {
        let Some(mut file) = self.files.remove(&id) else {
            return;
        };
        file.state = state;
        file.error = error;
        if let Some(bytes) = fetched {
            file.total_bytes = file.total_bytes.or(Some(bytes));
            file.bytes_done = file.bytes_done.max(clamp(bytes, file.total_bytes));
        }
        let (done, total) = file.share();
        self.ended_share.0 += done;
        // A download that did not finish had nothing more to fetch in this run.
        let to_fetch = if fetched.is_some() {
            total.unwrap_or(done).max(done)
        } else {
            done
        };
        self.ended_share.1 += to_fetch;
        if self.history_limit == 0 {
            return;
        }
        if self.history.len() == self.history_limit {
            self.history.pop_front();
        }
        self.history.push_back((id, file));
    }

    /// A download that has not ended, or one of the recently ended ones.
    #[must_use]
    pub fn file(&self, id: TransferId) -> Option<&FileView> {
        self.files.get(&id).or_else(|| {
            self.history
                .iter()
                .rev()
                .find(|(ended, _)| *ended == id)
                .map(|(_, file)| file)
        })
    }

    /// Downloads that have not ended (queued, running or retrying), in submission order.
    #[must_use]
    pub fn unfinished(&self) -> Vec<(TransferId, &FileView)> {
        let mut files: Vec<(TransferId, &FileView)> =
            self.files.iter().map(|(id, file)| (*id, file)).collect();
        files.sort_unstable_by_key(|(id, _)| *id);
        files
    }

    /// Downloads whose body is arriving (or waiting to retry), in submission order.
    #[must_use]
    pub fn active(&self) -> Vec<(TransferId, &FileView)> {
        let mut files = self.unfinished();
        files.retain(|(_, f)| matches!(f.state, FileState::Running | FileState::Retrying));
        files
    }

    /// The ended downloads still kept, in the order they ended (oldest first).
    #[must_use]
    pub fn recently_ended(&self) -> impl DoubleEndedIterator<Item = (TransferId, &FileView)> {
        self.history.iter().map(|(id, file)| (*id, file))
    }

    /// Drops an ended download from the history at once (its counts stay). Returns what was
    /// kept of it; `None` for an unknown id or one that has not ended (it stays).
    pub fn forget(&mut self, id: TransferId) -> Option<FileView> {
        let at = self.history.iter().position(|(ended, _)| *ended == id)?;
        self.history.remove(at).map(|(_, file)| file)
    }

    /// Drops every ended download from the history (their counts stay).
    pub fn forget_ended(&mut self) {
        self.history.clear();
    }

    /// Downloads that have ended, one way or another (cancelled ones included).
    #[must_use]
    pub fn ended(&self) -> usize {
        self.downloaded + self.already_present + self.failed + self.cancelled
    }

    /// The batch bar: bytes fetched in this run and bytes to fetch, over every download that
    /// has started (a restarted download's first try counts as fetched; a download that
    /// failed or was cancelled had nothing more to fetch). Never above 100%, and exactly
    /// 100% once every download has ended.
    #[must_use]
    pub fn batch_progress(&self) -> (u64, u64) {
        let (mut done, mut total) = self.ended_share;
        for file in self.files.values() {
            let (file_done, file_total) = file.share();
            done += file_done;
            total += file_total.unwrap_or(file_done).max(file_done);
        }
        (done, total)
    }
}

fn clamp(bytes: u64, total: Option<u64>) -> u64 {
    total.map_or(bytes, |total| bytes.min(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Completed;
    use std::time::Duration;

    fn id(n: u64) -> TransferId {
        TransferId(n)
    }

    fn started(n: u64, total: u64, resumed: u64) -> Event {
        Event::Started {
            id: id(n),
            total_bytes: Some(total),
            resumed_from: resumed,
            http_version: "HTTP/1.1".into(),
            proxy: None,
        }
    }

    fn progress(n: u64, bytes: u64) -> Event {
        Event::Progress {
            id: id(n),
            bytes_done: bytes,
        }
    }

    fn queued(n: u64) -> Event {
        Event::Queued {
            id: id(n),
            url: format!("http://h/f{n}"),
            path: None,
            tag: None,
        }
    }

    fn finished(n: u64, bytes: u64) -> Event {
        Event::Finished {
            id: id(n),
            completed: Completed {
                path: format!("f{n}").into(),
                bytes,
                digest: None,
                resumed_from: 0,
                duration: Duration::from_secs(1),
                already_present: false,
                etag: None,
                last_modified: None,
                source: None,
                repaired_pieces: 0,
            },
            tag: None,
        }
    }

    fn failed(n: u64, kind: ErrorKind) -> Event {
        Event::Failed {
            id: id(n),
            kind,
            message: kind.as_str().into(),
            status: None,
            circumstance: None,
            kept_bytes: 0,
            tag: None,
        }
    }

    #[test]
    fn out_of_order_figures_from_several_connections_count_each_byte_once() {
        let mut view = BatchView::new();
        view.apply(&queued(0));
        view.apply(&started(0, 100, 0));
        for bytes in [10, 40, 25, 70, 60, 100, 90] {
            view.apply(&progress(0, bytes));
        }
        assert_eq!(view.file(id(0)).unwrap().bytes_done, 100);
        view.apply(&finished(0, 100));
        assert_eq!(view.received_bytes, 100);
        assert_eq!(view.batch_progress(), (100, 100));
        assert_eq!(view.downloaded, 1);
        assert!(view.unfinished().is_empty());
    }

    #[test]
    fn a_restart_sends_the_bar_back_but_never_past_the_size() {
        let mut view = BatchView::new();
        view.apply(&queued(0));
        view.apply(&started(0, 100, 30));
        view.apply(&progress(0, 80));
        view.apply(&Event::Restarted {
            id: id(0),
            reason: "changed".into(),
        });
        assert_eq!(view.file(id(0)).unwrap().bytes_done, 0, "back to byte 0");
        view.apply(&progress(0, 150));
        let file = view.file(id(0)).unwrap();
        assert_eq!(file.bytes_done, 100, "never above the size");
        assert_eq!(
            view.received_bytes,
            50 + 100,
            "what the server sent, each byte once"
        );
        let (done, total) = view.batch_progress();
        assert!(done <= total, "{done} of {total}");
    }

    #[test]
    fn a_resume_counts_only_the_bytes_fetched_in_this_run() {
        let mut view = BatchView::new();
        view.apply(&queued(0));
        view.apply(&started(0, 100, 60));
        view.apply(&progress(0, 100));
        view.apply(&finished(0, 100));
        assert_eq!(view.received_bytes, 40);
        assert_eq!(view.batch_progress(), (40, 40));
    }

    #[test]
    fn cancelled_downloads_end_and_the_totals_reach_every_download() {
        let mut view = BatchView::new();
        for n in 0..3 {
            view.apply(&queued(n));
        }
        view.apply(&started(0, 100, 0));
        view.apply(&progress(0, 40));
        view.apply(&failed(0, ErrorKind::Cancelled));
        view.apply(&failed(1, ErrorKind::Integrity));
        view.apply(&started(2, 50, 0));
        view.apply(&progress(2, 50));
        view.apply(&finished(2, 50));
        assert_eq!(
            (view.failed, view.integrity_failures, view.cancelled),
            (1, 1, 1)
        );
        assert_eq!(view.ended(), view.queued, "every download ended");
        assert!(view.unfinished().is_empty());
        let (done, total) = view.batch_progress();
        assert_eq!((done, total), (90, 90), "100% once everything ended");
        assert_eq!(view.file(id(0)).unwrap().state, FileState::Cancelled);
        assert_eq!(
            view.file(id(1)).unwrap().state,
            FileState::Failed(ErrorKind::Integrity)
        );
        assert_eq!(
            view.file(id(1)).unwrap().error.as_deref(),
            Some("integrity")
        );
    }

    #[test]
    fn the_history_keeps_the_last_ended_downloads_and_forgets_on_request() {
        let mut view = BatchView::with_history(2);
        for n in 0..4 {
            view.apply(&queued(n));
            view.apply(&finished(n, 10));
        }
        let kept: Vec<TransferId> = view.recently_ended().map(|(i, _)| i).collect();
        assert_eq!(kept, vec![id(2), id(3)], "the oldest went first");
        assert!(view.file(id(0)).is_none());
        assert_eq!(view.downloaded, 4, "counts stay");
        assert!(view.forget(id(3)).is_some());
        assert!(view.file(id(3)).is_none());
        view.apply(&queued(9));
        assert!(
            view.forget(id(9)).is_none(),
            "a running download is not forgotten"
        );
        assert!(view.file(id(9)).is_some());
        view.forget_ended();
        assert_eq!(view.recently_ended().count(), 0);
    }

    #[test]
    fn a_writer_download_ends_with_its_streamed_event() {
        let mut view = BatchView::new();
        view.apply(&queued(0));
        view.apply(&started(0, 30, 0));
        view.apply(&progress(0, 30));
        view.apply(&Event::Streamed {
            id: id(0),
            streamed: crate::Streamed {
                bytes: 30,
                digest: None,
            },
            tag: None,
        });
        assert_eq!((view.downloaded, view.ended()), (1, 1));
        assert_eq!(view.batch_progress(), (30, 30));
    }
}
