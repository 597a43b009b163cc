//! Typed errors of the library, their classification (`ErrorKind`) and the decisions built on it
//! (retry or not, keep the `.part` or not). Nothing here prints: the CLI turns an `Error` into one
//! line for a person.

use std::io;

mod transport;

use std::path::PathBuf;
use std::time::Duration;
use transport::{
    causes, is_certificate_error, is_malformed_answer, is_proxy_auth_refused, is_unknown_host,
    reason_phrase, transport_cause,
};

/// What went wrong with one download.
///
/// `Display` is one complete line for a person, its cause included ("connection to URL
/// failed: tcp connect error: Connection refused (os error 111)"); `source()` still gives the
/// underlying error for a program that inspects it. So print an `Error` with `Display` alone:
/// walking `source()` as well would say the cause twice.
///
/// ```
/// # fn demo(error: haul::Error) {
/// match error.kind() {
///     haul::ErrorKind::HttpStatus if error.status() == Some(404) => eprintln!("gone: {error}"),
///     haul::ErrorKind::Integrity => eprintln!("corrupt: {error}"),
///     _ if error.is_retryable() => eprintln!("try later: {error}"),
///     _ => eprintln!("error: {error}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be parsed or uses a scheme other than http/https.
    #[error("invalid URL `{url}`: {reason}")]
    #[non_exhaustive]
    InvalidUrl {
        /// The URL as given (credentials redacted).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A checksum specification could not be parsed.
    #[error("invalid checksum `{spec}`: {reason}")]
    #[non_exhaustive]
    InvalidChecksum {
        /// The specification as given.
        spec: String,
        /// Why it was refused.
        reason: String,
    },
    /// No safe file name could be derived, or the name would leave the destination directory.
    #[error("unsafe or empty output name `{name}`")]
    #[non_exhaustive]
    UnsafeName {
        /// The offending name.
        name: String,
    },
    /// A path that came from the network leads through a symlink (or a file) below the output
    /// directory; nothing was written.
    #[error("refusing `{path}`: {reason}")]
    #[non_exhaustive]
    UnsafePath {
        /// The path (as it would have been).
        path: PathBuf,
        /// What is in the way.
        reason: String,
    },
    /// Two requests of one batch would write the same file.
    #[error("`{path}` is the output of more than one download (requests {first} and {second})")]
    #[non_exhaustive]
    DuplicateOutput {
        /// The shared output path.
        path: PathBuf,
        /// Index of the first request.
        first: usize,
        /// Index of the second request.
        second: usize,
    },
    /// The connection failed: refused, reset, timed out, TLS, or the body was cut.
    #[error("connection to {url} failed: {}", transport_cause(source))]
    #[non_exhaustive]
    Network {
        /// The URL (credentials redacted).
        url: String,
        /// The underlying transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The proxy the request goes through could not be reached, or refused it (a SOCKS proxy
    /// that refused the credentials, for one): the server itself was never asked.
    #[non_exhaustive]
    #[error(
        "connection to the proxy {proxy} (for {url}) failed: {}",
        transport_cause(source)
    )]
    Proxy {
        /// The proxy (credentials redacted).
        proxy: String,
        /// The URL asked for (credentials redacted).
        url: String,
        /// The underlying transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The connection broke off in the middle of a body (reset, closed, or unreadable).
    #[error(
        "the connection to {url} broke off after {received} bytes of the answer: {}",
        transport_cause(source)
    )]
    #[non_exhaustive]
    Interrupted {
        /// The URL (credentials redacted).
        url: String,
        /// Bytes of this answer's body that did arrive.
        received: u64,
        /// The underlying transport error.
        #[source]
        source: reqwest::Error,
    },
    /// No body byte arrived for the stall timeout.
    #[error("{url} stalled: no data for {timeout:?}")]
    #[non_exhaustive]
    Stalled {
        /// The URL (credentials redacted).
        url: String,
        /// The stall timeout that expired.
        timeout: Duration,
    },
    /// The body arrived slower than the low-speed limit for a whole window (see
    /// `DownloaderBuilder::lowest_speed_limit`): the attempt was dropped so that a new
    /// connection can take over.
    #[error(
        "{url} was too slow: {bytes_per_second} B/s for {window:?}, below the limit of {limit} B/s"
    )]
    #[non_exhaustive]
    TooSlow {
        /// The URL (credentials redacted).
        url: String,
        /// The rate seen over the window, bytes per second.
        bytes_per_second: u64,
        /// The limit, bytes per second.
        limit: u64,
        /// How long the rate was measured.
        window: Duration,
    },
    /// The server answered with a status that is not a success.
    #[error("{url} answered HTTP {status}{}", reason_phrase(*status))]
    #[non_exhaustive]
    Status {
        /// The URL (credentials redacted).
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The server redirected to a URL haul does not follow (not http or https).
    #[error("{url} redirected to `{location}`, which is not followed (only http and https)")]
    #[non_exhaustive]
    BadRedirect {
        /// The URL (credentials redacted).
        url: String,
        /// Where it pointed.
        location: String,
    },
    /// Redirects went round in a loop, or on for longer than allowed.
    #[error("{url}: {detail}")]
    #[non_exhaustive]
    Redirect {
        /// The URL asked for (credentials redacted).
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The body ended before the announced length.
    #[error("{url} ended the body after {received} of {expected} bytes")]
    #[non_exhaustive]
    ShortBody {
        /// The URL (credentials redacted).
        url: String,
        /// Bytes of the file received (resumed prefix included).
        received: u64,
        /// Total length announced.
        expected: u64,
    },
    /// The server sent more bytes than it announced.
    #[error("{url} sent more than the {expected} bytes it announced")]
    #[non_exhaustive]
    LongBody {
        /// The URL (credentials redacted).
        url: String,
        /// Total length announced.
        expected: u64,
    },
    /// The file is larger than the size limit (announced, or received so far).
    #[error("{url} is larger than the limit of {limit} bytes{}", announced.map_or(String::new(), |a| format!(" ({a} bytes announced)")))]
    #[non_exhaustive]
    TooLarge {
        /// The URL (credentials redacted).
        url: String,
        /// The limit, in bytes.
        limit: u64,
        /// The length the server announced, when it did.
        announced: Option<u64>,
    },
    /// A `206` whose `Content-Range` does not match what was asked, or a malformed one.
    #[error("{url} answered a range request with a wrong range: {detail}")]
    #[non_exhaustive]
    BadRange {
        /// The URL (credentials redacted).
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// A directory listing could not be understood.
    #[error("{url} is not a listing haul understands: {detail}")]
    #[non_exhaustive]
    BadListing {
        /// The URL (credentials redacted).
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The downloaded file does not have the expected digest. The `.part` file is deleted.
    #[error(
        "checksum mismatch for `{path}`: expected {algorithm} {expected}, got {actual}{}",
        announced_by.map_or(String::new(), |header| format!(
            " (the digest the server announced in {header})"
        ))
    )]
    #[non_exhaustive]
    ChecksumMismatch {
        /// The file that was checked (its final name; it was never created).
        path: PathBuf,
        /// `sha-256` or `sha-512`.
        algorithm: &'static str,
        /// Expected digest, lower-case hex.
        expected: String,
        /// Actual digest, lower-case hex.
        actual: String,
        /// The header the expected digest came from, when the server announced it.
        announced_by: Option<&'static str>,
    },
    /// Pieces of the finished file did not match their hashes (a Metalink's `<pieces>`), and
    /// fetching them again did not mend them. The good pieces stay in the `.part`.
    #[non_exhaustive]
    #[error("{pieces} piece(s) of `{path}` do not match their {algorithm} hashes")]
    PiecesMismatch {
        /// The file (its final name; it was never created).
        path: PathBuf,
        /// How many pieces failed.
        pieces: usize,
        /// The pieces' hash algorithm.
        algorithm: &'static str,
    },
    /// A file already under the final name does not have the expected digest; it is left
    /// alone.
    #[error("`{path}` is already there, but its {algorithm} is {actual}, not {expected}")]
    #[non_exhaustive]
    ExistingMismatch {
        /// The file.
        path: PathBuf,
        /// `sha-256`, `md5`, ...
        algorithm: &'static str,
        /// Expected digest, lower-case hex.
        expected: String,
        /// The file's digest, lower-case hex.
        actual: String,
    },
    /// A local file operation failed.
    #[error("failed to {action} `{path}`: {source}")]
    #[non_exhaustive]
    Io {
        /// What was being done ("write", "rename", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The writer of a `.part` file stopped (its own error, reported when it is closed, says
    /// why); a connection that was still sending it data ends with this.
    #[error("the writer of `{path}` stopped")]
    #[non_exhaustive]
    WriterStopped {
        /// The `.part` file.
        path: PathBuf,
    },
    /// The outcome of another request of the batch with the same URL and output, which this
    /// one shares (it was downloaded once).
    #[error("{message}")]
    #[non_exhaustive]
    Shared {
        /// The other request's error class.
        kind: ErrorKind,
        /// Its error, one line.
        message: String,
        /// Its HTTP status, if any.
        status: Option<u16>,
    },
    /// haul broke one of its own rules: a bug, reported instead of a panic.
    #[error("internal error: {0}")]
    Internal(String),
    /// Another haul process is writing this file right now (its `.part` is locked).
    #[error("another haul process is downloading `{path}`")]
    #[non_exhaustive]
    Busy {
        /// The file's final path.
        path: PathBuf,
    },
    /// Another haul sync of the same mirror (or the same shard of it) is running.
    #[error(
        "another haul sync is running in `{dir}` (it holds `{lock}`); run again once it has finished"
    )]
    #[non_exhaustive]
    SyncBusy {
        /// The mirror directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The output file exists and the policy says not to touch it.
    #[error("`{path}` already exists")]
    #[non_exhaustive]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The download was cancelled; its `.part` file and state are kept for a later resume.
    #[error("cancelled")]
    Cancelled,
    /// The HTTP client could not be built (bad header value, TLS setup).
    #[error("failed to set up the HTTP client: {}", transport_cause(source))]
    #[non_exhaustive]
    Client {
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A Metalink document that cannot be used (see [`crate::metalink::parse`]).
    #[error("invalid Metalink: {0}")]
    Metalink(String),
    /// A manifest that is an HTML page, most likely a directory listing (which is crawled,
    /// not read as a manifest).
    #[non_exhaustive]
    #[error("{what} is an HTML page (a directory listing?), not a manifest of URLs")]
    NotAManifest {
        /// Where the text came from.
        what: String,
    },
    /// A text the caller gave (a manifest, an input file) has malformed lines; none of it
    /// was used.
    #[error("{what} has {} bad line(s): {}", lines.len(), crate::input::list_lines(lines))]
    #[non_exhaustive]
    BadLines {
        /// Where the text came from.
        what: String,
        /// Every malformed line.
        lines: Vec<crate::input::LineError>,
    },
}

/// What about a failure a person can act on, named by what happened rather than by any
/// program's option (the CLI turns each into its hint). See [`Error::circumstance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Circumstance {
    /// The file did not match the digest the server itself announced (a server that
    /// announces a stale or wrong digest is not rare).
    ServerDigestDisagrees,
    /// A file already under the final name did not match the expected digest; it was left
    /// alone.
    ExistingFileDiffers,
    /// A proxy refused the user name and password it was given.
    ProxyRefusedCredentials,
    /// The host name does not resolve.
    UnknownHost,
}

/// A coarse class of [`Error`], stable for scripts (`--json`) and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad URL, name, checksum, duplicate output or configuration: nothing was started.
    InvalidInput,
    /// Transport failure, stall or cut body.
    Network,
    /// A non-success HTTP status.
    HttpStatus,
    /// The server's TLS certificate was not trusted.
    Tls,
    /// The server broke the protocol (wrong range, too many bytes).
    Protocol,
    /// The file's digest did not match.
    Integrity,
    /// A local file operation failed.
    Io,
    /// The output exists and was left alone.
    AlreadyExists,
    /// Cancelled by the caller.
    Cancelled,
    /// A bug in haul (reported, never a panic).
    Internal,
    /// A path from the network would lead through a symlink.
    UnsafePath,
    /// The file is larger than the size limit.
    TooLarge,
}

impl ErrorKind {
    /// A stable lower-case name, used in JSON output.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::Network => "network",
            Self::HttpStatus => "http_status",
            Self::Tls => "tls",
            Self::Protocol => "protocol",
            Self::Integrity => "integrity",
            Self::Io => "io",
            Self::AlreadyExists => "already_exists",
            Self::Cancelled => "cancelled",
            Self::Internal => "internal",
            Self::UnsafePath => "unsafe_path",
            Self::TooLarge => "too_large",
        }
    }
}

impl Error {
    /// The class of this error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidUrl { .. }
            | Self::InvalidChecksum { .. }
            | Self::UnsafeName { .. }
            | Self::DuplicateOutput { .. }
            | Self::Client { .. }
            | Self::Config(_)
            | Self::Metalink(_)
            | Self::BadLines { .. }
            | Self::NotAManifest { .. } => ErrorKind::InvalidInput,
            Self::Network { source, .. } if source.is_redirect() => ErrorKind::Protocol,
            Self::Network { source, .. } if is_certificate_error(source) => ErrorKind::Tls,
            Self::Network { source, .. } if is_malformed_answer(source) => ErrorKind::Protocol,
            Self::Network { .. }
            | Self::Proxy { .. }
            | Self::Interrupted { .. }
            | Self::Stalled { .. }
            | Self::TooSlow { .. }
            | Self::ShortBody { .. } => ErrorKind::Network,
            Self::Status { .. } => ErrorKind::HttpStatus,
            Self::BadRange { .. }
            | Self::LongBody { .. }
            | Self::BadRedirect { .. }
            | Self::Redirect { .. }
            | Self::BadListing { .. } => ErrorKind::Protocol,
            Self::ChecksumMismatch { .. }
            | Self::ExistingMismatch { .. }
            | Self::PiecesMismatch { .. } => ErrorKind::Integrity,
            Self::Io { .. } | Self::WriterStopped { .. } => ErrorKind::Io,
            Self::Internal(_) => ErrorKind::Internal,
            Self::Shared { kind, .. } => *kind,
            Self::UnsafePath { .. } => ErrorKind::UnsafePath,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::AlreadyExists { .. } | Self::Busy { .. } | Self::SyncBusy { .. } => {
                ErrorKind::AlreadyExists
            }
            Self::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// Whether another attempt may succeed: transport failures, stalls, cut bodies, and the
    /// statuses that say "later" (408, 429, 500, 502, 503, 504). Permanent answers (401, 403,
    /// 404, 410, ...) and local failures are not retried.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network { source, .. } => {
                !source.is_builder()
                    && !source.is_redirect()
                    && !is_certificate_error(source)
                    && !is_unknown_host(source)
                    && !is_malformed_answer(source)
            }
            // A proxy that is down may come back; one that refuses the credentials will not.
            Self::Proxy { source, .. } => !is_proxy_auth_refused(source),
            Self::Stalled { .. }
            | Self::TooSlow { .. }
            | Self::ShortBody { .. }
            | Self::Interrupted { .. } => true,
            Self::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// Whether a `.part` file that holds bytes is kept for a later resume after this error.
    /// An integrity failure means the bytes are wrong, and a file over the size limit is not
    /// wanted, so they are thrown away; everything else keeps them. (What a download actually
    /// kept is in its `Event::Failed::kept_bytes`.)
    #[must_use]
    pub(crate) fn keeps_partial(&self) -> bool {
        !matches!(self, Self::ChecksumMismatch { .. } | Self::TooLarge { .. })
    }

    /// Whether the process ran out of file descriptors (`EMFILE`, `ENFILE`): nothing is wrong
    /// with the download, which waits for descriptors to come back rather than failing.
    #[must_use]
    pub fn is_out_of_descriptors(&self) -> bool {
        let exhausted = |cause: &(dyn std::error::Error + 'static)| {
            cause
                .downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error)
                .is_some_and(|code| code == libc::EMFILE || code == libc::ENFILE)
        };
        match self {
            Self::Io { source, .. } => exhausted(source),
            Self::Network { source, .. } => causes(source).any(exhausted),
            _ => false,
        }
    }

    /// Whether the connection was refused (nothing listens on the port): worth a retry or
    /// two (a server restarting), not the full count.
    pub(crate) fn is_connection_refused(&self) -> bool {
        match self {
            Self::Network { source, .. } | Self::Proxy { source, .. } => {
                causes(source).any(|cause| {
                    cause
                        .downcast_ref::<io::Error>()
                        .is_some_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
                })
            }
            _ => false,
        }
    }

    /// What about this failure a person can act on, when something can be said.
    #[must_use]
    pub fn circumstance(&self) -> Option<Circumstance> {
        match self {
            Self::ChecksumMismatch {
                announced_by: Some(_),
                ..
            } => Some(Circumstance::ServerDigestDisagrees),
            Self::ExistingMismatch { .. } => Some(Circumstance::ExistingFileDiffers),
            Self::Proxy { source, .. } if is_proxy_auth_refused(source) => {
                Some(Circumstance::ProxyRefusedCredentials)
            }
            Self::Network { source, .. } | Self::Proxy { source, .. }
                if is_unknown_host(source) =>
            {
                Some(Circumstance::UnknownHost)
            }
            _ => None,
        }
    }

    /// The HTTP status behind this error, when a server answered with one.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. }
            | Self::Shared {
                status: Some(status),
                ..
            } => Some(*status),
            _ => None,
        }
    }

    /// The delay the server asked for with `Retry-After`, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Error {
        Error::Status {
            url: "http://h/f".into(),
            status: code,
            retry_after: None,
        }
    }

    #[test]
    fn temporary_statuses_are_retried_and_permanent_ones_are_not() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(status(code).is_retryable(), "{code} should be retried");
        }
        for code in [400, 401, 403, 404, 410, 416, 501] {
            assert!(!status(code).is_retryable(), "{code} should not be retried");
        }
    }

    #[test]
    fn cut_bodies_and_stalls_are_retried() {
        let short = Error::ShortBody {
            url: "u".into(),
            received: 1,
            expected: 2,
        };
        assert!(short.is_retryable());
        let stalled = Error::Stalled {
            url: "u".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(stalled.is_retryable());
        assert_eq!(stalled.kind(), ErrorKind::Network);
    }

    #[test]
    fn only_integrity_failures_discard_the_partial_file() {
        let mismatch = Error::ChecksumMismatch {
            path: "f".into(),
            algorithm: "sha-256",
            expected: "00".into(),
            actual: "11".into(),
            announced_by: None,
        };
        assert!(!mismatch.keeps_partial());
        assert_eq!(mismatch.kind(), ErrorKind::Integrity);
        assert!(status(503).keeps_partial());
        assert!(Error::Cancelled.keeps_partial());
    }

    #[test]
    fn local_failures_are_not_retried() {
        let io = Error::io("write", "f", io::Error::other("disk full"));
        assert!(!io.is_retryable());
        assert_eq!(io.kind(), ErrorKind::Io);
        assert_eq!(
            io.to_string(),
            "failed to write `f`: disk full",
            "the cause shown"
        );
    }
}
