//! One file's life as a pipeline of typed phases: `look` at what is on disk (done, revalidate,
//! resume, fresh), `ask` the server and judge its answer, `stream` the body to the writer (or
//! over segments), `commit` it (verify, sync, rename, time). `drive` wraps the attempts in the
//! one retry loop (restarts, failover to the next source); `run` here wraps the whole in the
//! waits for another process or for descriptors, and holds the output's name claim. A final name
//! appears only for a complete, verified file; any failure leaves a resumable `.part` or nothing.

mod ask;
mod commit;
mod drive;
mod look;
mod names;
mod segments;
mod session;
mod settings;
mod small;
mod sources;
mod stream;
pub(crate) mod to_writer;

use look::Look;
use session::{Fetched, Session};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::client::cancel::Cancel;
use crate::client::hosts::HostPermit;
use crate::client::retry::RetryPolicy;
use crate::integrity::Checksum;
use crate::progress::{Event, Reporter};
use crate::storage::PartPaths;
use crate::storage::disk::Disk;
use crate::storage::place::Place;
use crate::storage::reservations::Claims;
use crate::storage::state::ResumeState;
use crate::storage::writer::CloseMode;
use crate::{Error, Request};

/// A download's place among the `jobs` running at once, handed in by whoever schedules it and
/// given back by dropping it (once the body has arrived, or when the download ends).
pub(crate) type JobLease = Box<dyn Send + Sync>;

/// A file up to this size is received in memory and written once, without a resume state:
/// creating, syncing and deleting a state file would cost more than fetching it again.
pub(super) const SMALL_FILE_BYTES: u64 = 1 << 20;
/// How often a download whose file another haul process is writing looks again.
pub(super) const BUSY_POLL: Duration = Duration::from_millis(500);
/// How long a download waits when the process is out of file descriptors before it tries again.
pub(super) const DESCRIPTOR_WAIT: Duration = Duration::from_millis(200);
/// How many times in a row one download may be sent back to byte zero before haul gives up.
pub(super) const MAX_START_OVERS: u32 = 3;

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completed {
    /// The final path of the file.
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: u64,
    /// Its digest, when a checksum was asked for (then it equals the expected one).
    pub digest: Option<Checksum>,
    /// Bytes that were already on disk from an earlier attempt or run.
    pub resumed_from: u64,
    /// Wall time of this download.
    pub duration: Duration,
    /// The file was already complete (or unchanged on the server) and nothing was transferred.
    pub already_present: bool,
    /// The server's `ETag` for this version of the file, when it sent one.
    pub etag: Option<String>,
    /// The server's `Last-Modified` for this version, when it sent one.
    pub last_modified: Option<String>,
    /// The mirror that took the file over when the request's own URL was left for it before
    /// its pieces were split (credentials redacted); `None` when the request's URL served it,
    /// alone or sharing the pieces with its mirrors (their `warning` events say which mirror
    /// was dropped and why).
    pub source: Option<String>,
    /// Pieces that failed their hash (a Metalink's `<pieces>`) and were fetched again.
    pub repaired_pieces: usize,
}

/// Everything one download needs: the means to reach the server, the request, where its
/// events go, what stops it, and the places it holds.
pub(crate) struct Transfer<'a> {
    pub(crate) client: &'a Client,
    /// The local state every download of the downloader shares.
    pub(crate) disk: &'a Disk,
    pub(crate) request: &'a Request,
    pub(crate) report: &'a Reporter,
    pub(crate) cancel: &'a Cancel,
    /// Where the finished file goes.
    pub(crate) place: Place,
    /// The host permit of the first connection, held for the whole transfer except while it
    /// backs off from a host that pushed back.
    pub(crate) permit: Option<HostPermit>,
    /// The job's place, given up once the body has arrived.
    pub(crate) job: Option<JobLease>,
    /// The file's own rate limit (`Request::with_rate_limit`), shared by its connections.
    pub(crate) file_rate: Option<std::sync::Arc<crate::client::rate::RateLimiter>>,
    /// Passes that fetched bad pieces again (a Metalink's piece hashes); each starts from the
    /// next source, so a mirror that served a bad piece does not serve it again first.
    pub(crate) repairs: u32,
    /// Pieces fetched again so far.
    pub(crate) repaired_pieces: usize,
    /// Whether this download's `.part` may have a resume state: false only once a look found
    /// none and no writer was opened since, so a failure before the body (a 404) reads nothing.
    pub(crate) state_may_exist: AtomicBool,
}

/// Passes that fetch a file's bad pieces again before it fails.
const PIECE_REPAIRS: u32 = 3;

impl Transfer<'_> {
    /// Runs the download to its end: its outcome, and the verified bytes its `.part` keeps
    /// for a later resume when it failed (0 when nothing is kept).
    pub(crate) async fn run(mut self) -> (Result<Completed, Error>, u64) {
        let result = self.run_to_end().await;
        let kept = match &result {
            Ok(_) => 0,
            Err(_) if self.state_may_exist.load(Ordering::Relaxed) => self.kept_bytes().await,
            Err(_) => 0,
        };
        (result, kept)
    }

    /// The verified bytes the `.part` of this download's output keeps, by its state file.
    async fn kept_bytes(&self) -> u64 {
        let paths = PartPaths::beside(&self.place);
        self.disk
            .quick_fs()
            .run("reading a resume state", move || {
                Ok(ResumeState::load(&paths).map_or(0, |state| state.done.covered()))
            })
            .await
            .unwrap_or(0)
    }

    async fn run_to_end(&mut self) -> Result<Completed, Error> {
        let clock = Instant::now();
        let owner = self.report.id().0;
        // Whatever this download claims is given back when it ends, however it ends.
        let _claims = Claims::new(self.disk.reservations().clone(), owner);
        self.claim_output(owner).await?;
        let mut waiting = false;
        loop {
            match self.run_once(clock).await {
                Err(Error::Busy { path }) => {
                    // Another haul process writes this file: wait for it, then look again (it
                    // may be complete by then, or its `.part` ours to resume).
                    if !std::mem::replace(&mut waiting, true) {
                        self.emit(&Event::Warning {
                            id: self.report.id(),
                            message: format!(
                                "another haul process is downloading `{}`; waiting for it",
                                path.display()
                            ),
                        });
                    }
                    RetryPolicy::wait(BUSY_POLL, self.cancel).await?;
                    self.ensure_permit(&self.request.url).await?;
                }
                Err(error) if error.is_out_of_descriptors() => {
                    // Nothing is wrong with the file: wait for descriptors to come back.
                    if !std::mem::replace(&mut waiting, true) {
                        self.emit(&Event::Warning {
                            id: self.report.id(),
                            message: "out of file descriptors (`ulimit -n`); waiting".into(),
                        });
                    }
                    RetryPolicy::wait(DESCRIPTOR_WAIT, self.cancel).await?;
                }
                Err(Error::PiecesMismatch {
                    pieces, algorithm, ..
                }) if self.repairs < PIECE_REPAIRS => {
                    self.repairs += 1;
                    self.repaired_pieces += pieces;
                    self.emit(&Event::Warning {
                        id: self.report.id(),
                        message: format!(
                            "{pieces} piece(s) failed their {algorithm} hash: fetching only \
                             them again{}",
                            if self.request.mirrors.is_empty() {
                                ""
                            } else {
                                ", from the next source"
                            }
                        ),
                    });
                    self.ensure_permit(&self.request.url).await?;
                }
                other => return other,
            }
        }
    }

    /// One pass of the pipeline: look, fetch (ask and stream, retried), commit.
    async fn run_once(&mut self, clock: Instant) -> Result<Completed, Error> {
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let (mut session, paths) = match self.look(clock).await? {
            Look::Done(completed) => return Ok(completed),
            Look::Fetch(session, paths) => (*session, paths),
        };
        let fetched = match self.fetch(&mut session, &paths).await {
            Ok(fetched) => fetched,
            Err(error) => return Self::abandon(session, error).await,
        };
        let small = match fetched {
            Fetched::NotModified => return self.unchanged(&session, &paths, clock).await,
            Fetched::Present(bytes) => return Self::kept(session, bytes, &paths, clock).await,
            Fetched::Body => None,
            Fetched::Small(body) => Some(body),
        };
        // The network's part is done: the next download may start while this one is synced
        // and renamed.
        self.permit = None;
        self.job = None;
        // A bounded number of commits at once: each holds an open file.
        let _slot = self.disk.commit_slot().await;
        self.commit(session, small, &paths, clock).await
    }

    /// A failed fetch: the `.part` kept for a resume, or discarded when its bytes are wrong.
    async fn abandon(mut session: Session, error: Error) -> Result<Completed, Error> {
        if let Some(writer) = session.writer.take() {
            let mode = if error.keeps_partial() {
                CloseMode::Suspend
            } else {
                CloseMode::Discard
            };
            let closed = writer.close(mode).await;
            // A segment that saw the writer stop reports that; the writer knows why.
            if let (Err(cause), Error::WriterStopped { .. }) = (closed, &error) {
                return Err(cause);
            }
        }
        Err(error)
    }
}
