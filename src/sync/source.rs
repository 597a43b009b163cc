//! Where a sync's files come from, as `haul sync SOURCE DIR` names it: a directory listing to
//! crawl, or a manifest read from a file, standard input or a URL. Parsing the name and
//! reading the source are the library's, so a program mirrors exactly as the CLI does.

use std::path::PathBuf;

use url::Url;

use crate::{Downloader, Error};

use super::listing::CrawlLimits;
use super::plan::SourceFiles;

/// Where a sync's files come from.
///
/// ```no_run
/// # async fn demo() -> Result<(), haul::Error> {
/// use haul::sync::{self, CrawlLimits, Source, SyncOptions};
///
/// let downloader = haul::Downloader::builder().build()?;
/// let source = Source::parse("https://example.org/pub/", true, CrawlLimits::default())?;
/// let files = source.read(&downloader).await?;
/// let options = SyncOptions::default();
/// let prepared = sync::prepare("mirror".as_ref(), &files, &options).await?;
/// let report = sync::run(&downloader, "mirror".as_ref(), prepared, &options, None, None).await?;
/// assert!(!report.has_failures(&options));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A directory listing (nginx/Apache HTML, nginx JSON, an S3 bucket listing), crawled
    /// down to the bounds.
    Listing {
        /// The directory's URL.
        url: Url,
        /// How far the crawl may go.
        limits: CrawlLimits,
    },
    /// A manifest in the input-file format (a URL per line, with `out=`, `dir=`, `size=`,
    /// `checksum=`).
    Manifest(Location),
}

impl Source {
    /// The source `text` names: with `recursive`, an http(s) directory URL to crawl; without,
    /// a manifest's location (see [`Location::parse`]).
    ///
    /// # Errors
    /// `InvalidUrl` when `recursive` is asked for something that is not an http(s) URL.
    pub fn parse(text: &str, recursive: bool, limits: CrawlLimits) -> Result<Self, Error> {
        if !recursive {
            return Ok(Self::Manifest(Location::parse(text)));
        }
        match Location::parse(text) {
            Location::Url(url) => Ok(Self::Listing { url, limits }),
            _ => Err(Error::InvalidUrl {
                url: text.to_owned(),
                reason: "a recursive sync needs an http(s) directory URL".into(),
            }),
        }
    }

    /// Reads the source's files. A crawl that reaches a bound returns what it found, with
    /// [`SourceFiles::bound_reached`] set (a sync of it deletes nothing and fails).
    ///
    /// # Errors
    /// A listing page or manifest that cannot be fetched or read; `BadLines` for a manifest
    /// with malformed lines (nothing of it is used).
    pub async fn read(&self, downloader: &Downloader) -> Result<SourceFiles, Error> {
        match self {
            Self::Listing { url, limits } => {
                Ok(super::read_listing(downloader, url, *limits).await?.source)
            }
            Self::Manifest(location) => {
                let text = location.read_text(downloader).await?;
                if looks_like_metalink(location, &text) {
                    return metalink_files(&text);
                }
                if looks_like_html(&text) {
                    return Err(Error::NotAManifest {
                        what: location.to_string(),
                    });
                }
                super::manifest_source(&text).map_err(|lines| Error::BadLines {
                    what: location.to_string(),
                    lines,
                })
            }
        }
    }
}

/// Whether a source is a Metalink: by its name (`.meta4`, `.metalink`) or its root element.
fn looks_like_metalink(location: &Location, text: &str) -> bool {
    let named = match location {
        Location::File(path) => crate::metalink::is_metalink_name(&path.to_string_lossy()),
        Location::Url(url) => crate::metalink::is_metalink_name(url.path()),
        Location::Stdin => false,
    };
    let head: String = text.chars().take(1024).collect();
    named || head.contains("<metalink")
}

/// A Metalink's files as a sync's source: each file's name (kept exactly, as a mirror's
/// path), its best URL with the others as mirrors, its size and strongest hash. (Piece hashes
/// are not used by a sync: its files are verified whole.)
fn metalink_files(text: &str) -> Result<SourceFiles, Error> {
    let metalink = crate::metalink::parse(text)?;
    let mut files = SourceFiles::default();
    for file in &metalink.files {
        let sources = file.ordered_sources(&[]);
        let Some((first, mirrors)) = sources.split_first() else {
            continue;
        };
        files.entries.push(
            super::SourceEntry::new(file.name.trim_start_matches("./"), (*first).clone())
                .with_size(file.size)
                .with_checksum(file.hash.clone())
                .with_mirrors(mirrors.iter().map(|u| (*u).clone()).collect()),
        );
    }
    Ok(files)
}

/// Whether a text is an HTML page rather than a list of URLs: it opens with a tag, and has a
/// document's or a link's markup.
fn looks_like_html(text: &str) -> bool {
    let head: String = text
        .trim_start()
        .chars()
        .take(4096)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with('<')
        && ["<!doctype html", "<html", "<a href", "<body", "<title"]
            .iter()
            .any(|mark| head.contains(mark))
}

/// Where a text (a manifest, a checksum file) is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A local file.
    File(PathBuf),
    /// Standard input (`-`).
    Stdin,
    /// An http(s) URL, fetched like any document (a `jobs` slot, retries, a size limit).
    Url(Url),
}

impl Location {
    /// `-` is standard input, an `http://` or `https://` URL is fetched, anything else is a
    /// local path.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        if text == "-" {
            return Self::Stdin;
        }
        match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Self::Url(url),
            _ => Self::File(PathBuf::from(text)),
        }
    }

    /// The whole text (invalid UTF-8 replaced).
    ///
    /// # Errors
    /// `Io` for a file or standard input that cannot be read; a fetch's errors for a URL.
    pub async fn read_text(&self, downloader: &Downloader) -> Result<String, Error> {
        match self {
            Self::Url(url) => Ok(downloader.fetch_document(url).await?.text().into_owned()),
            Self::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::read(&path)
                        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                        .map_err(|e| Error::io("read", path, e))
                })
                .await
                .map_err(|e| Error::Internal(format!("reading a file failed: {e}")))?
            }
            Self::Stdin => tokio::task::spawn_blocking(|| {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Error::io("read", "standard input", e))
            })
            .await
            .map_err(|e| Error::Internal(format!("reading standard input failed: {e}")))?,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Stdin => f.write_str("standard input"),
            Self::Url(url) => f.write_str(&crate::naming::redact_url(url)),
        }
    }
}
