//! haul: a streaming, resumable, verifying download manager.
//!
//! A [`Downloader`] runs batches of [`Request`]s under a global and a per-host concurrency
//! limit. Each download streams its body to `NAME.part` beside the final path (memory stays flat
//! whatever the size), verifies a SHA-256/SHA-512 checksum while it writes, and appears under its
//! final name only when complete and verified. An interrupted download keeps its `.part` file
//! and a small state file (`NAME.part.haul`), and the next run resumes it with `Range` and
//! `If-Range`, never splicing bytes of two versions of a file.
//!
//! The library never prints: it reports [`Event`]s to an [`Observer`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), haul::Error> {
//! use haul::{Downloader, Request};
//!
//! let downloader = Downloader::builder().jobs(4).build()?;
//! let request = Request::new("https://example.org/file.iso")?
//!     .into_dir("downloads")
//!     .with_checksum("sha-256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse()?);
//! let done = downloader.download(request).await?;
//! println!("{} bytes in {}", done.bytes, done.path.display());
//! # Ok(()) }
//! ```
#![deny(clippy::print_stdout, clippy::print_stderr)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "indicatif")]
#[cfg_attr(docsrs, doc(cfg(feature = "indicatif")))]
pub mod bars;
mod batch;
#[doc(hidden)]
pub mod bench_support;
mod civil;
mod client;
mod config;
mod downloader;
mod error;
pub mod input;
mod integrity;
pub mod metalink;
mod naming;
mod outputs;
#[cfg(test)]
mod parser_properties;
mod progress;
mod request;
mod scheduler;
mod seen;
mod storage;
pub mod sync;
mod transfer;
// The CLI includes this file too, for `parse_duration`.
#[allow(dead_code)]
mod units;
mod view;

pub use batch::{Batch, Outcome, Outcomes};
pub use client::cookies::CookieJar;
pub use client::credentials::{BasicAuth, Netrc};
pub use client::document::Document;
pub use config::{
    DEFAULT_CONNECTIONS, DEFAULT_MAX_DOCUMENT_BYTES, DEFAULT_MIN_SPLIT_BYTES, Durability, LowSpeed,
    OnExists,
};
pub use downloader::{Downloader, DownloaderBuilder, IpVersion, install_tls_provider};
pub use error::{Circumstance, Error, ErrorKind};
pub use integrity::{Algorithm, Checksum, parse_sums};
pub use outputs::OutputConflicts;
pub use progress::{
    ChannelObserver, Event, NoObserver, Observer, ProgressCounter, Tag, TransferId,
};
pub use request::{Destination, Request};
pub use reqwest;
pub use scheduler::{Canceller, DownloadControl, DownloadHandle};
pub use sync::listing::ListedFile;
pub use tokio_util::sync::CancellationToken;
pub use transfer::Completed;
pub use transfer::to_writer::Streamed;
pub use url;
pub use view::{BatchView, FileState, FileView};
