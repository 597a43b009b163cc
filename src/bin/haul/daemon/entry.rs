//! What the daemon knows of one download, in aria2's terms: its GID, its status, its figures
//! (length, bytes done, a speed over the last seconds), and the table that holds them all in
//! queue order.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use haul::{DownloadControl, Request};

use super::options::Options;
use super::params::RpcError;

/// A download's id: shown as 16 hex digits, kept in the session file so it survives restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Gid(pub(crate) u64);

impl Gid {
    pub(crate) fn parse(text: &str) -> Result<Self, RpcError> {
        if text.len() == 16
            && let Ok(value) = u64::from_str_radix(text, 16)
        {
            return Ok(Self(value));
        }
        Err(RpcError::new(format!("GID {text} is not found")))
    }
}

impl std::fmt::Display for Gid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Active,
    Waiting,
    Paused,
    Error,
    Complete,
    Removed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Waiting => "waiting",
            Self::Paused => "paused",
            Self::Error => "error",
            Self::Complete => "complete",
            Self::Removed => "removed",
        }
    }

    pub(crate) fn is_stopped(self) -> bool {
        matches!(self, Self::Error | Self::Complete | Self::Removed)
    }
}

/// One download.
pub(crate) struct Entry {
    pub(crate) gid: Gid,
    /// What was asked (submitted again on a resume after a restart, written to the session).
    pub(crate) request: Request,
    /// The aria2 options it was added with (and changed to), for `getOption`.
    pub(crate) options: Options,
    pub(crate) uris: Vec<String>,
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) status: Status,
    /// 0 while unknown, as aria2 shows it.
    pub(crate) total: u64,
    pub(crate) completed: u64,
    pub(crate) speed: Speed,
    /// Present once submitted to the downloader, until it stops.
    pub(crate) control: Option<DownloadControl>,
    /// aria2's error code and message, for a download that failed.
    pub(crate) error: Option<(u8, String)>,
    /// A remove was asked: its cancellation ends it as `removed`.
    pub(crate) removing: bool,
}

/// The rate of one download over the last few seconds.
#[derive(Default)]
pub(crate) struct Speed {
    samples: VecDeque<(Instant, u64)>,
}

const SPEED_WINDOW: Duration = Duration::from_secs(3);
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

impl Speed {
    pub(crate) fn sample(&mut self, bytes: u64) {
        let now = Instant::now();
        // The newest sample moves forward until it is far enough from the one before to keep.
        let count = self.samples.len();
        let recent = count > 1
            && self
                .samples
                .get(count - 2)
                .is_some_and(|before| now.duration_since(before.0) < SAMPLE_EVERY);
        match self.samples.back_mut() {
            Some(last) if recent => *last = (now, bytes),
            _ => self.samples.push_back((now, bytes)),
        }
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|first| now.duration_since(first.0) > SPEED_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    pub(crate) fn reset(&mut self) {
        self.samples.clear();
    }

    /// Bytes per second (0 when nothing arrived lately).
    pub(crate) fn bytes_per_second(&self) -> u64 {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return 0;
        };
        let span = last.0.duration_since(first.0).as_secs_f64();
        if span <= 0.0 || last.0.elapsed() > Duration::from_secs(2) {
            return 0;
        }
        let rate = last.1.saturating_sub(first.1) as f64 / span;
        // A finite, non-negative rate; `as` saturates it into range.
        #[allow(clippy::cast_sign_loss)]
        let rate = rate.max(0.0) as u64;
        rate
    }
}

/// The table of downloads.
#[derive(Default)]
pub(crate) struct Table {
    pub(crate) entries: HashMap<Gid, Entry>,
    /// Waiting and paused downloads, in queue order.
    pub(crate) waiting: Vec<Gid>,
    /// Stopped downloads, oldest first (bounded by `max_results`).
    pub(crate) stopped: VecDeque<Gid>,
    /// Every download that stopped in this session, forgotten or not (`numStoppedTotal`).
    pub(crate) stopped_total: u64,
}

/// The error for a GID no download has.
pub(crate) fn not_found(gid: Gid) -> RpcError {
    RpcError::new(format!("GID {gid} is not found"))
}
