//! Where a download's end goes: its `Finished` or `Failed` event, then its outcome to whoever
//! waits for it (a handle, or a batch's stream).

use tokio::sync::{mpsc, oneshot};

use crate::progress::{Event, Reporter, TransferId};
use crate::{Completed, Error};

/// The end of one request of a batch.
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// The download's id (unique within its downloader; the id of its events).
    pub id: TransferId,
    /// Its position in the batch, from 0.
    pub index: usize,
    /// The caller's tag, when the request has one.
    pub tag: Option<crate::Tag>,
    /// What became of it.
    pub result: Result<Completed, Error>,
}

/// Where a download's outcome goes.
pub(crate) enum Sink {
    Handle(oneshot::Sender<Result<Completed, Error>>),
    Batch {
        outcomes: mpsc::UnboundedSender<Outcome>,
        index: usize,
    },
}

impl Sink {
    pub(super) fn send(self, report: &Reporter, result: Result<Completed, Error>) {
        match self {
            Self::Handle(sender) => {
                let _ = sender.send(result);
            }
            Self::Batch { outcomes, index } => {
                let _ = outcomes.send(Outcome {
                    id: report.id(),
                    index,
                    tag: report.tag(),
                    result,
                });
            }
        }
    }
}

/// Reports a download's end and hands its outcome over.
pub(crate) fn finish(report: &Reporter, sink: Sink, result: Result<Completed, Error>) {
    finish_keeping(report, sink, result, 0);
}

/// [`finish`] for a download that may have kept `kept_bytes` in its `.part` for a resume.
pub(super) fn finish_keeping(
    report: &Reporter,
    sink: Sink,
    result: Result<Completed, Error>,
    kept_bytes: u64,
) {
    let event = match &result {
        Ok(completed) => Event::Finished {
            id: report.id(),
            completed: completed.clone(),
            tag: report.tag(),
        },
        Err(error) => failed_event(report, error, kept_bytes),
    };
    report.emit(&event);
    sink.send(report, result);
}

/// The `Failed` event of `error`.
pub(crate) fn failed_event(report: &Reporter, error: &Error, kept_bytes: u64) -> Event {
    Event::Failed {
        id: report.id(),
        kind: error.kind(),
        message: error.to_string(),
        status: error.status(),
        circumstance: error.circumstance(),
        kept_bytes,
        tag: report.tag(),
    }
}
