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
//! Finished files leave the per-file map (their counts stay), so the view of a batch of
//! millions of files holds only what is running or waiting.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::{Completed, ErrorKind, Event, TransferId};

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
    /// Bytes the file had when its current run began (its resumed bytes, or 0 after a restart).
    base: u64,
}

impl FileView {
    fn new(url: &str, path: Option<&std::path::Path>) -> Self {
        Self {
            url: url.to_owned(),
            path: path.map(std::path::Path::to_path_buf),
            name: crate::display_name(url, path),
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

/// The totals of everything observed: a batch, a sync, or all of a downloader's work.
#[derive(Debug, Clone, Default)]
pub struct BatchView {
    files: HashMap<TransferId, FileView>,
    last_ended: Option<(TransferId, FileView)>,
    /// Downloads queued.
    pub queued: usize,
    /// Downloads that completed with a transfer.
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

impl BatchView {
    /// An empty view.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Queued { id, url, path } => {
                self.queued += 1;
                self.files.insert(*id, FileView::new(url, path.as_deref()));
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
            Event::Finished { id, completed } => self.on_finished(*id, completed),
            Event::Failed { id, kind, .. } => self.on_failed(*id, *kind),
        }
    }

    fn on_finished(&mut self, id: TransferId, completed: &Completed) {
        if completed.already_present {
            self.already_present += 1;
        } else {
            self.downloaded += 1;
        }
        if let Some(mut file) = self.files.remove(&id) {
            file.state = FileState::Finished;
            if !completed.already_present {
                file.total_bytes = file.total_bytes.or(Some(completed.bytes));
                file.bytes_done = file
                    .bytes_done
                    .max(clamp(completed.bytes, file.total_bytes));
            }
            let (done, total) = file.share();
            self.ended_share.0 += done;
            self.ended_share.1 += total.unwrap_or(done).max(done);
            self.last_ended = Some((id, file));
        }
    }

    fn on_failed(&mut self, id: TransferId, kind: ErrorKind) {
        if kind == ErrorKind::Cancelled {
            // Kept: it is listed as unfinished.
            self.cancelled += 1;
            if let Some(file) = self.files.get_mut(&id) {
                file.state = FileState::Failed(kind);
            }
            return;
        }
        self.failed += 1;
        if kind == ErrorKind::Integrity {
            self.integrity_failures += 1;
        }
        if let Some(mut file) = self.files.remove(&id) {
            file.state = FileState::Failed(kind);
            let (done, _) = file.share();
            self.ended_share.0 += done;
            self.ended_share.1 += done;
            self.last_ended = Some((id, file));
        }
    }

    /// A download that has not ended (or was cancelled), or the one that ended last.
    #[must_use]
    pub fn file(&self, id: TransferId) -> Option<&FileView> {
        self.files.get(&id).or_else(|| {
            self.last_ended
                .as_ref()
                .filter(|(ended, _)| *ended == id)
                .map(|(_, file)| file)
        })
    }

    /// Downloads that have not ended, in submission order.
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

    /// Downloads that have ended, one way or another.
    #[must_use]
    pub fn ended(&self) -> usize {
        self.downloaded + self.already_present + self.failed
    }

    /// The batch bar: bytes fetched in this run and bytes to fetch, over every download that
    /// has started (a restarted download's first try counts as fetched). Never above 100%.
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
    use std::time::Duration;

    fn id(n: usize) -> TransferId {
        TransferId(n)
    }

    fn started(n: usize, total: u64, resumed: u64) -> Event {
        Event::Started {
            id: id(n),
            total_bytes: Some(total),
            resumed_from: resumed,
            http_version: "HTTP/1.1".into(),
            proxy: None,
        }
    }

    fn progress(n: usize, bytes: u64) -> Event {
        Event::Progress {
            id: id(n),
            bytes_done: bytes,
        }
    }

    fn queued(n: usize) -> Event {
        Event::Queued {
            id: id(n),
            url: format!("http://h/f{n}"),
            path: None,
        }
    }

    fn finished(n: usize, bytes: u64) -> Event {
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
            },
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
    fn cancelled_downloads_stay_listed_as_unfinished() {
        let mut view = BatchView::new();
        view.apply(&queued(0));
        view.apply(&queued(1));
        view.apply(&Event::Failed {
            id: id(1),
            kind: ErrorKind::Cancelled,
            message: "cancelled".into(),
            status: None,
        });
        view.apply(&Event::Failed {
            id: id(0),
            kind: ErrorKind::Integrity,
            message: "mismatch".into(),
            status: None,
        });
        assert_eq!(
            (view.failed, view.integrity_failures, view.cancelled),
            (1, 1, 1)
        );
        let unfinished: Vec<TransferId> = view.unfinished().iter().map(|(i, _)| *i).collect();
        assert_eq!(unfinished, vec![id(1)]);
        assert_eq!(
            view.file(id(0)).unwrap().state,
            FileState::Failed(ErrorKind::Integrity)
        );
    }
}
