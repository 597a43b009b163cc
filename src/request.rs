//! What to download: a URL, where to put it, and what it must hash to.

use std::path::{Path, PathBuf};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::client::credentials::BasicAuth;
use crate::client::hosts::host_key;
use crate::config::OnExists;
use crate::naming::{file_name_from_url, redact_url};
use crate::storage::place::Place;
use crate::{Algorithm, Checksum, Error};

/// Where a download's file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// Into this directory, under a name derived from the URL (made safe).
    Directory(PathBuf),
    /// Exactly this path, as chosen by the caller (symlinks on it are followed: they are the
    /// caller's).
    File(PathBuf),
    /// A `/`-separated path below a directory, that came from elsewhere (a mirror's listing
    /// or manifest): the directory is the caller's, but nothing below it is ever reached
    /// through a symlink.
    Below {
        /// The directory.
        dir: PathBuf,
        /// The path below it.
        path: String,
    },
}

/// One file to download.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) url: Url,
    pub(crate) destination: Destination,
    pub(crate) checksum: Option<Checksum>,
    pub(crate) headers: HeaderMap,
    pub(crate) cancel: Option<CancellationToken>,
    pub(crate) mirrors: Vec<Url>,
    pub(crate) connections: Option<usize>,
    pub(crate) revalidate: Option<(Option<String>, Option<String>)>,
    pub(crate) on_exists: Option<OnExists>,
    pub(crate) remote_time: Option<bool>,
    pub(crate) digest: Option<Algorithm>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) auth: Option<BasicAuth>,
    pub(crate) size: Option<u64>,
    pub(crate) check_existing: Option<bool>,
    pub(crate) timestamping: Option<bool>,
    pub(crate) rate_limit: Option<u64>,
    /// For a directory destination, a name used instead of the URL's (given by a batch when
    /// URLs of different files end alike and the server's names are to be used).
    pub(crate) provisional_name: Option<String>,
    pub(crate) tag: Option<crate::Tag>,
    /// A hash per piece (from a Metalink): pieces that fail are fetched again.
    pub(crate) pieces: Option<std::sync::Arc<crate::metalink::Pieces>>,
}

impl Request {
    /// A request for `url`, saved into the current directory under the URL's file name.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when `url` does not parse or is not http/https.
    pub fn new(url: &str) -> Result<Self, Error> {
        let parsed = Url::parse(url).map_err(|e| Error::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_url(parsed)
    }

    /// A request for an already parsed URL.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when the scheme is not http or https, or there is no host.
    pub fn from_url(url: Url) -> Result<Self, Error> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::InvalidUrl {
                url: redact_url(&url),
                reason: format!("unsupported scheme `{}` (use http or https)", url.scheme()),
            });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::InvalidUrl {
                url: redact_url(&url),
                reason: "no host".to_owned(),
            });
        }
        Ok(Self {
            url,
            destination: Destination::Directory(PathBuf::from(".")),
            checksum: None,
            headers: HeaderMap::new(),
            cancel: None,
            tag: None,
            pieces: None,
            mirrors: Vec::new(),
            connections: None,
            revalidate: None,
            on_exists: None,
            remote_time: None,
            digest: None,
            max_bytes: None,
            auth: None,
            size: None,
            check_existing: None,
            timestamping: None,
            rate_limit: None,
            provisional_name: None,
        })
    }

    /// Save into `dir` under the name derived from the URL.
    #[must_use]
    pub fn into_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.destination = Destination::Directory(dir.into());
        self
    }

    /// Save to exactly `path` (its directory must exist or be creatable).
    #[must_use]
    pub fn to_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.destination = Destination::File(path.into());
        self
    }

    /// Save to `path` (`/`-separated, from a listing or manifest) below `dir`: each directory
    /// on the way is opened without following a symlink, and made when missing.
    ///
    /// # Errors
    /// [`Error::UnsafeName`] when `path` has an empty, `.` or `..` segment, or a NUL.
    pub fn into_dir_at(mut self, dir: impl Into<PathBuf>, path: &str) -> Result<Self, Error> {
        let dir = dir.into();
        Place::below(&dir, path)?;
        self.destination = Destination::Below {
            dir,
            path: path.to_owned(),
        };
        Ok(self)
    }

    /// Require the file to have this digest; a mismatch fails the download and the file never
    /// appears under its final name.
    #[must_use]
    pub fn with_checksum(mut self, checksum: Checksum) -> Self {
        self.checksum = Some(checksum);
        self
    }

    /// Send this header with every request of this download (after the downloader's own).
    ///
    /// # Errors
    /// [`Error::Config`] when the name or value is not a valid HTTP header.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, Error> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::Config(format!("invalid header name `{name}`")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| Error::Config(format!("invalid value for header `{name}`")))?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// Verifies the file piece by piece with `pieces` (a Metalink's `<pieces>`): once the
    /// body is complete, every piece is hashed, and pieces that fail are fetched again (from
    /// the next source when there is one) while the good ones are kept. Needs the file's size
    /// ([`Self::with_size`]) to place the pieces.
    #[must_use]
    pub fn with_pieces(mut self, pieces: crate::metalink::Pieces) -> Self {
        self.pieces = Some(std::sync::Arc::new(pieces));
        self
    }

    /// Attaches the caller's own key (a database id, a job name): it comes back in the
    /// download's `Queued` and terminal events, its [`Outcome`](crate::Outcome) and its
    /// [`DownloadHandle`](crate::DownloadHandle), so a service needs no map from ids.
    #[must_use]
    pub fn with_tag(mut self, tag: impl Into<crate::Tag>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// The caller's tag, when one was given.
    #[must_use]
    pub fn tag(&self) -> Option<&crate::Tag> {
        self.tag.as_ref()
    }

    /// Stop this download alone when `token` is cancelled (the batch's own token stops all).
    /// A cancelled download keeps a resumable `.part` and ends with [`Error::Cancelled`].
    #[must_use]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Another URL serving the same file. Segments are spread over the URL and its mirrors; a
    /// mirror that fails is dropped for this file and its ranges go to the others; a mirror
    /// whose length (or `Last-Modified`) differs from the first answer's is refused.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] when the mirror is not an http/https URL.
    pub fn with_mirror(mut self, mirror: &str) -> Result<Self, Error> {
        let mirror = Self::new(mirror)?.url;
        self.mirrors.push(mirror);
        Ok(self)
    }

    /// Use up to `connections` connections for this file (overrides the downloader's).
    #[must_use]
    pub fn with_connections(mut self, connections: usize) -> Self {
        self.connections = Some(connections.max(1));
        self
    }

    /// When the output file exists, ask the server whether it changed (`If-None-Match` with
    /// `etag`, `If-Modified-Since` with `last_modified`): a `304` leaves the file as it is and
    /// counts as already present; anything else downloads the new version, which replaces the
    /// old file atomically once complete and verified. Without both, a plain download.
    #[must_use]
    pub fn revalidate_with(mut self, etag: Option<String>, last_modified: Option<String>) -> Self {
        self.revalidate =
            (etag.is_some() || last_modified.is_some()).then_some((etag, last_modified));
        self
    }

    /// What to do when the file already exists, for this request (overrides the
    /// downloader's).
    #[must_use]
    pub fn with_on_exists(mut self, policy: OnExists) -> Self {
        self.on_exists = Some(policy);
        self
    }

    /// Whether the file gets the server's `Last-Modified` time, for this request (overrides
    /// the downloader's).
    #[must_use]
    pub fn with_remote_time(mut self, enabled: bool) -> Self {
        self.remote_time = Some(enabled);
        self
    }

    /// Compute the file's digest with `algorithm` while it is written, and report it in
    /// `Completed::digest` even when nothing is to be verified (a checksum given with
    /// [`Self::with_checksum`] takes precedence).
    #[must_use]
    pub fn with_digest(mut self, algorithm: Algorithm) -> Self {
        self.digest = Some(algorithm);
        self
    }

    /// Refuse the file when it is larger than `bytes` (overrides the downloader's
    /// `max_file_size`).
    #[must_use]
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Basic authentication for this request's host (never sent to another host a redirect
    /// leads to).
    #[must_use]
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some(BasicAuth {
            user: user.to_owned(),
            password: password.to_owned(),
        });
        self
    }

    /// The file's expected length: a file already under the final name with another length
    /// is downloaded again (with a warning) instead of being kept.
    #[must_use]
    pub fn with_size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    /// Before keeping a file already under the final name, ask the server for its length
    /// (a `HEAD`) and download it again when they differ (overrides the downloader's
    /// `check_existing`).
    #[must_use]
    pub fn with_check_existing(mut self, check: bool) -> Self {
        self.check_existing = Some(check);
        self
    }

    /// Fetch the file only if the server has a newer one than the file already there
    /// (overrides the downloader's `timestamping`).
    #[must_use]
    pub fn with_timestamping(mut self, enabled: bool) -> Self {
        self.timestamping = Some(enabled);
        self
    }

    /// Limit this file to `bytes_per_second` (all its connections together), besides the
    /// downloader's own limit (aria2's `max-download-limit`). 0 means no limit.
    #[must_use]
    pub fn with_rate_limit(mut self, bytes_per_second: u64) -> Self {
        self.rate_limit = (bytes_per_second > 0).then_some(bytes_per_second);
        self
    }

    /// The mirrors, in the order given.
    #[must_use]
    pub fn mirrors(&self) -> &[Url] {
        &self.mirrors
    }

    /// The URL.
    #[must_use]
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Where the file goes.
    #[must_use]
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// The expected digest, if any.
    #[must_use]
    pub fn checksum(&self) -> Option<&Checksum> {
        self.checksum.as_ref()
    }

    /// The final path of the file this request produces.
    ///
    /// # Errors
    /// [`Error::UnsafeName`] when no safe name can be derived from the URL.
    pub fn output_path(&self) -> Result<PathBuf, Error> {
        Ok(self.place()?.path())
    }

    /// Where the file goes, resolved as the destination says.
    pub(crate) fn place(&self) -> Result<Place, Error> {
        match &self.destination {
            Destination::File(path) => Place::user_path(path),
            Destination::Directory(dir) => match &self.provisional_name {
                Some(name) => Ok(Place::in_dir(dir, name)),
                None => Ok(Place::in_dir(dir, file_name_from_url(&self.url)?)),
            },
            Destination::Below { dir, path } => Place::below(dir, path),
        }
    }

    /// The key the per-host limit counts by: scheme, host and port.
    pub(crate) fn host_key(&self) -> String {
        host_key(&self.url)
    }
}

/// Whether two paths name the same output, comparing them lexically after dropping `.` parts.
pub(crate) fn normalized(path: &Path) -> std::borrow::Cow<'_, Path> {
    use std::path::Component;
    // What collecting the components would drop (`.` parts, repeated and trailing
    // separators) only ever shortens the path: at the same length it is the same path, and
    // is not copied (this runs for every request of a batch).
    let mut length = 0;
    let mut needs_separator = false;
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::RootDir => {
                length += 1;
                needs_separator = false;
            }
            other => {
                length += other.as_os_str().len() + usize::from(needs_separator);
                needs_separator = true;
            }
        }
    }
    if length == path.as_os_str().len() {
        return path.into();
    }
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect::<PathBuf>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_differ_only_in_dot_parts_and_separators_normalize_alike() {
        let collected = |p: &str| -> PathBuf {
            Path::new(p)
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect()
        };
        for path in [
            "a",
            "a/b",
            "/a/b",
            "/",
            "./a",
            "a/./b",
            "a//b",
            "a/b/",
            "a/b/.",
            "//a",
            "../a",
            "a/../b",
            ".",
            "./",
            "",
            "/./a",
            "dir/file.bin",
            "./dir//file.bin",
        ] {
            let normal = normalized(Path::new(path));
            assert_eq!(normal.as_os_str(), collected(path).as_os_str(), "{path:?}");
            let copied = matches!(normal, std::borrow::Cow::Owned(_));
            assert_eq!(
                copied,
                normal.as_os_str() != path,
                "{path:?}: copied only when changed"
            );
        }
        assert_eq!(
            normalized(Path::new("out/./f")),
            normalized(Path::new("out/f"))
        );
    }

    #[test]
    fn only_http_and_https_are_accepted() {
        assert!(Request::new("https://example.org/f").is_ok());
        for bad in ["ftp://h/f", "file:///etc/passwd", "not a url", "http://"] {
            let err = Request::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn the_output_path_joins_the_directory_and_the_url_name() {
        let request = Request::new("http://h/a/b.tar.gz").unwrap().into_dir("out");
        assert_eq!(request.output_path().unwrap(), Path::new("out/b.tar.gz"));
        let exact = request.to_file("x/y.bin");
        assert_eq!(exact.output_path().unwrap(), Path::new("x/y.bin"));
    }

    #[test]
    fn hosts_are_told_apart_by_scheme_host_and_port() {
        let key = |u: &str| host_key(&Url::parse(u).unwrap());
        assert_eq!(key("http://h/a"), key("http://h:80/b"));
        assert_ne!(key("http://h/a"), key("https://h/a"));
        assert_ne!(key("http://h:8080/a"), key("http://h/a"));
    }
}
