//! What one download carries across its attempts, and what the server has shown about ranges.

use crate::Error;
use crate::integrity::Checksum;
use crate::storage::state::ResumeState;

use crate::storage::writer::PartWriter;

use super::Completed;
use super::sources::Sources;
use std::path::PathBuf;
use std::time::Instant;

/// What the server has shown about ranges during this download. Some origins answer any
/// request carrying `Range` with `412` or a server error, while plain requests work: haul then
/// treats them as servers without ranges (one connection, from byte 0). A `429`, or a `503`
/// with `Retry-After`, asks for patience and never counts here.
#[derive(Debug, Default)]
pub(super) struct RangeTrust {
    /// Ranged requests answered with a server error, in a row.
    pub(super) ranged_errors: u32,
    /// The next attempt goes without `Range`, to learn whether plain requests work.
    pub(super) probe: bool,
    /// Ranges are refused: whole answers only.
    pub(super) refused: bool,
    /// The first request asked for the first piece only and the server answered with an
    /// error or a refused range: later requests of this download start plain.
    pub(super) first_piece_failed: bool,
}

/// Server errors to a ranged request in a row before a plain request is tried.
const RANGED_ERRORS_BEFORE_PROBE: u32 = 2;

impl RangeTrust {
    /// Whether this failure of a ranged request says something about ranges; `true` when the
    /// server refused them outright (`412`).
    pub(super) fn after_ranged_failure(&mut self, error: &Error) -> bool {
        match error {
            Error::Status { status: 412, .. } => {
                self.refused = true;
                true
            }
            error if is_server_error_without_patience(error) => {
                self.ranged_errors += 1;
                self.probe = self.ranged_errors >= RANGED_ERRORS_BEFORE_PROBE;
                false
            }
            _ => {
                self.ranged_errors = 0;
                false
            }
        }
    }

    /// A plain request (the probe) failed as well: the server is unwell, ranges are not the
    /// problem, and the bytes on disk are worth resuming.
    pub(super) fn after_plain_failure(&mut self) {
        self.probe = false;
        self.ranged_errors = 0;
    }
}

/// Whether a request for the first piece failed in a way a plain request may not: the
/// server refused the range (`412`, a wrong `Content-Range`) or failed on it with a server
/// error. Nothing says yet that it serves ranges at all.
pub(super) fn refuses_first_piece(error: &Error) -> bool {
    matches!(
        error,
        Error::Status { status: 412, .. } | Error::BadRange { .. }
    ) || is_server_error_without_patience(error)
}

/// `500`, `502`, `504`, or a `503` without `Retry-After`.
pub(super) fn is_server_error_without_patience(error: &Error) -> bool {
    matches!(
        error,
        Error::Status {
            status: 500 | 502 | 504,
            ..
        } | Error::Status {
            status: 503,
            retry_after: None,
            ..
        }
    )
}

/// What one download has reached so far, carried across attempts.
pub(super) struct Session {
    /// The state a writer starts from: validators and the ranges already on disk.
    pub(super) state: ResumeState,
    /// Bytes of the file handed to the writer, from offset 0 without a gap.
    pub(super) offset: u64,
    pub(super) writer: Option<PartWriter>,
    /// Bytes reused from before, once `Started` was reported (`None` before).
    pub(super) resumed_from: Option<u64>,
    /// Set when the server turned out not to serve ranges: no more segments.
    pub(super) single_only: bool,
    /// What the server has shown about ranges.
    pub(super) ranges: RangeTrust,
    /// Body bytes received in this run (to tell an attempt that made progress).
    pub(super) received: u64,
    /// The digest the file must have: the request's checksum, else the one the server
    /// announced (with its header).
    pub(super) expected: Option<(Checksum, Option<&'static str>)>,
    /// The name the server's `Content-Disposition` suggested, made safe.
    pub(super) disposition_name: Option<String>,
    /// The final name claimed for it in this run (see `storage::reservations`).
    pub(super) claimed_name: Option<std::ffi::OsString>,
    /// A state file from an earlier run was found (to be removed when done).
    pub(super) stale_state: bool,
    /// The output exists and the request asks the server whether it changed, with these
    /// validators (`If-None-Match`, `If-Modified-Since`).
    pub(super) revalidate: Option<(Option<String>, Option<String>)>,
    /// The file's URL and mirrors, and which one is asked now.
    pub(super) sources: Sources,
    /// The source `state.validators` came from (its `ETag` speaks only for that server).
    pub(super) validators_from: usize,
}

/// What the network phase hands the commit: which value you hold says what happened, so no
/// flag has to.
pub(super) enum Fetched {
    /// The body is in the `.part`, complete: verify and rename it.
    Body,
    /// A small file's body, in memory: write, verify and rename it in one go.
    Small(super::small::SmallBody),
    /// The server named the file, and a file of that name from before the run is kept.
    Present(u64),
    /// The server said the existing file is current (`304`).
    NotModified,
}

/// How an attempt ended when it did not fail.
pub(super) enum AttemptEnd {
    /// The body is in the `.part`.
    Complete,
    /// A small file's whole body, received in memory, to be written once by the commit.
    Small(super::small::SmallBody),
    /// The server named the file, and a file of that name (this long) is kept as it is.
    Present(u64),
    /// The server said the existing file is current (`304`).
    NotModified,
    /// The bytes on disk cannot be continued; fetch again from zero.
    StartOver(String),
    /// The answer ended where it said, before the end of the file (an answer to a request
    /// for the first piece only): the next request asks for the rest, at once.
    MoreToFetch,
    /// The source asked serves another version than the bytes kept come from (a mirror): it
    /// is left for this file.
    SourceDiffers(String),
}

impl Session {
    /// Whether this attempt asks for the rest of a file with `Range`.
    pub(super) fn asks_range(&self) -> bool {
        self.offset > 0 && !self.ranges.refused && !self.ranges.probe
    }

    /// What a download that just committed `path` reports.
    pub(super) fn completed(
        self,
        path: PathBuf,
        digest: Option<Checksum>,
        clock: Instant,
    ) -> Completed {
        Completed {
            path,
            bytes: self.offset,
            digest,
            resumed_from: self.resumed_from.unwrap_or(0),
            duration: clock.elapsed(),
            already_present: false,
            etag: self.state.validators.etag,
            last_modified: self.state.validators.last_modified,
            source: (self.sources.index() > 0)
                .then(|| crate::naming::redact_url(self.sources.current())),
            repaired_pieces: 0,
        }
    }
}
