//! Settings every download of a `Downloader` shares: the values the engine reads, kept apart
//! from the builder that sets them so that the engine never imports the public entry point.

use std::time::Duration;

/// What to do when the final file already exists before a download starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnExists {
    /// Leave it and report the download as already complete (after checking its digest when one
    /// was given: a mismatch is an error and the file is left alone). The default: a rerun of a
    /// finished batch transfers nothing, and no file is ever clobbered without being asked.
    #[default]
    Skip,
    /// Download again and replace it atomically once the new file is complete and verified.
    Overwrite,
    /// Download to the first free name `NAME.1`, `NAME.2`, ... beside it (wget's way).
    Rename,
    /// Fail that download.
    Error,
}

/// Connections per file when the server supports ranges (see `connections`).
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Smallest piece a file is split into (see `min_split_size`).
pub const DEFAULT_MIN_SPLIT_BYTES: u64 = 8 << 20;

/// Settings shared by every download of a `Downloader`.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) jobs: usize,
    pub(crate) per_host: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) max_retry_wait: Duration,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) on_exists: OnExists,
    pub(crate) connections: usize,
    pub(crate) min_split_bytes: u64,
    pub(crate) content_disposition: bool,
    pub(crate) remote_time: bool,
}
