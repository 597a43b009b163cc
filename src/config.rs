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

/// What a finished file survives. Either way a file gets its final name only once it is
/// complete and verified, and an interrupted download resumes from its `.part`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// A file's data is on the disk before it gets its final name, and a resume state never
    /// names data that is not: a power loss or an operating-system crash leaves every final
    /// file complete. Small files finishing together share one flush (group commit).
    #[default]
    Full,
    /// Nothing is synced (what curl and wget do): a crash or `kill -9` of the program still
    /// leaves every final file complete (the kernel keeps the written data), but a power loss
    /// or an operating-system crash may leave a final file short or empty, and a `.part`'s
    /// state ahead of its data.
    Relaxed,
}

/// The most connections per file when the server supports ranges and nobody set a number:
/// a file starts on one and gets more only while they raise its rate (see `connections`).
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Smallest piece a file is split into (see `min_split_size`).
pub const DEFAULT_MIN_SPLIT_BYTES: u64 = 8 << 20;

/// The largest listing, manifest or checksum file read into memory by default.
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 64 << 20;

/// A low-speed limit: an attempt whose body arrives slower than `bytes_per_second` over a
/// whole `window` of network time is dropped and resumed by a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowSpeed {
    /// The slowest acceptable rate.
    pub bytes_per_second: u64,
    /// How long the rate is measured before it is judged.
    pub window: std::time::Duration,
}

/// Settings shared by every download of a `Downloader`.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) jobs: usize,
    pub(crate) per_host: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) low_speed: Option<LowSpeed>,
    pub(crate) retries: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) max_retry_wait: Duration,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) durability: Durability,
    pub(crate) on_exists: OnExists,
    pub(crate) connections: usize,
    /// `connections` is a ceiling to ramp up to, not a number to open at once.
    pub(crate) adaptive_connections: bool,
    pub(crate) min_split_bytes: u64,
    pub(crate) content_disposition: bool,
    pub(crate) remote_time: bool,
    pub(crate) limit_rate: Option<u64>,
    pub(crate) max_document_bytes: u64,
    pub(crate) max_file_bytes: Option<u64>,
    pub(crate) max_redirects: usize,
    pub(crate) server_digests: bool,
    pub(crate) timestamping: bool,
    pub(crate) check_existing: bool,
    /// Mirrors from a server's `Link: rel=duplicate` headers (RFC 6249) are used.
    pub(crate) metalink_headers: bool,
    /// The client speaks HTTP/1.1 only.
    pub(crate) http1_only: bool,
    /// Finished bodies waiting for their commit at once (see `storage::descriptors`).
    pub(crate) commits: usize,
    /// `jobs` was lowered to fit the process's descriptors: the `jobs` asked for and the limit.
    pub(crate) jobs_capped: Option<(usize, u64)>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            jobs: 8,
            per_host: 8,
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(20),
            low_speed: None,
            retries: 5,
            retry_delay: Duration::from_secs(1),
            max_retry_wait: Duration::from_secs(60),
            checkpoint_interval: Duration::from_secs(1),
            durability: Durability::default(),
            on_exists: OnExists::Skip,
            connections: DEFAULT_CONNECTIONS,
            adaptive_connections: true,
            min_split_bytes: DEFAULT_MIN_SPLIT_BYTES,
            content_disposition: false,
            remote_time: false,
            limit_rate: None,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            max_file_bytes: None,
            max_redirects: 10,
            server_digests: true,
            timestamping: false,
            check_existing: false,
            metalink_headers: true,
            http1_only: false,
            commits: 256,
            jobs_capped: None,
        }
    }
}
