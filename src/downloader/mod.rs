//! The library's entry point: `Downloader`, built once from a `DownloaderBuilder` around one
//! shared client, cheap to clone and safe to share across tasks.

use std::sync::Arc;

use tokio::io::AsyncWrite;
use url::Url;

use crate::Document;
use crate::batch::Batch;
use crate::client::Client;
use crate::client::cancel::Cancel;
use crate::progress::{NoObserver, Observer, Reporter};
use crate::scheduler::{self, DownloadHandle, Scheduler};
use crate::sync::listing::ListedFile;
use crate::transfer::to_writer::{Streamed, ToWriter};
use crate::{Completed, Error, Request};

mod builder;

pub use builder::{DownloaderBuilder, IpVersion};

/// Installs haul's TLS crypto provider (rustls with *ring*) as the process default, unless one
/// is installed already. [`Downloader::builder`] calls it, so a `reqwest::Client` built after
/// that works; call it yourself before building a `reqwest::Client` ahead of any `Downloader`.
pub fn install_tls_provider() {
    crate::client::install_tls_provider();
}

/// Runs downloads. Build one with [`Downloader::builder`] and reuse it: clones share one
/// connection pool and one queue, so the `jobs` and per-host limits hold across every batch,
/// `download()` call and handle of it and its clones.
///
/// ```no_run
/// # async fn demo() -> Result<(), haul::Error> {
/// use haul::{Downloader, Request};
///
/// let downloader = Downloader::builder().jobs(8).per_host(2).build()?;
/// // One file, awaited here.
/// let done = downloader.download(Request::new("https://example.org/a.iso")?).await?;
/// // A batch, outcomes in input order.
/// let requests = vec![
///     Request::new("https://example.org/b.iso")?.into_dir("downloads"),
///     Request::new("https://example.org/c.iso")?.into_dir("downloads"),
/// ];
/// for outcome in downloader.batch(requests).run().await? {
///     match outcome {
///         Ok(file) => println!("{} ({} bytes)", file.path.display(), file.bytes),
///         Err(error) => eprintln!("failed: {error}"),
///     }
/// }
/// # let _ = done;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Downloader {
    pub(crate) client: Client,
    scheduler: Arc<Scheduler>,
}

impl std::fmt::Debug for Downloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloader")
            .field("config", self.client.config())
            .finish_non_exhaustive()
    }
}

impl Downloader {
    /// A builder with the defaults documented on each setter. Installs haul's TLS provider
    /// (see [`install_tls_provider`]).
    #[must_use]
    pub fn builder() -> DownloaderBuilder {
        install_tls_provider();
        DownloaderBuilder::default()
    }

    /// A `reqwest::ClientBuilder` ready for [`DownloaderBuilder::client`]: haul's TLS provider
    /// installed (so building it cannot panic for want of one) and redirects left to haul
    /// (it follows them itself, checking each hop). Add your own settings and build it.
    pub fn client_builder() -> reqwest::ClientBuilder {
        install_tls_provider();
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
    }

    /// Downloads one file, queued with everything else this downloader runs. Dropping the
    /// future cancels the download (its `.part` is kept for a later resume).
    ///
    /// # Errors
    /// Whatever stopped the download; see [`Error`].
    pub async fn download(&self, request: Request) -> Result<Completed, Error> {
        self.submit(request).await
    }

    /// [`Self::download`], also reporting its events to `observer`.
    ///
    /// # Errors
    /// As [`Self::download`].
    pub async fn download_with_observer(
        &self,
        request: Request,
        observer: Arc<dyn Observer>,
    ) -> Result<Completed, Error> {
        self.submit_with_observer(request, observer).await
    }

    /// Queues one download and returns at once: the handle is a future of its outcome, can
    /// cancel it, and cancels it when dropped. For long-lived programs that take requests over
    /// time. Must be called inside a Tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo(downloader: haul::Downloader) -> Result<(), haul::Error> {
    /// use haul::Request;
    ///
    /// let request = Request::new("https://example.org/big.iso")?.with_tag("order-42");
    /// let handle = downloader.submit(request);
    /// let canceller = handle.canceller(); // hand it to whatever may cancel (a UI, a timeout)
    /// tokio::spawn(async move {
    ///     tokio::time::sleep(std::time::Duration::from_secs(600)).await;
    ///     canceller.cancel();
    /// });
    /// match handle.await {
    ///     Ok(done) => println!("saved {}", done.path.display()),
    ///     Err(haul::Error::Cancelled) => println!("cancelled; the .part is kept for a resume"),
    ///     Err(error) => eprintln!("failed: {error}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn submit(&self, request: Request) -> DownloadHandle {
        scheduler::submit(&self.scheduler, request, None)
    }

    /// [`Self::submit`], also reporting the download's events to `observer`.
    pub fn submit_with_observer(
        &self,
        request: Request,
        observer: Arc<dyn Observer>,
    ) -> DownloadHandle {
        scheduler::submit(&self.scheduler, request, Some(observer))
    }

    /// Changes the downloader's overall rate limit, bytes per second, while it runs (`None`:
    /// no limit): every running and later transfer of it and its clones reads at the new
    /// rate from its next chunk on. For a bandwidth schedule, or a service's live setting.
    pub fn set_rate_limit(&self, bytes_per_second: Option<u64>) {
        self.client.rate().set(bytes_per_second);
    }

    /// The overall rate limit now, bytes per second (`None`: no limit).
    #[must_use]
    pub fn rate_limit(&self) -> Option<u64> {
        self.client.rate().get()
    }

    /// Changes how many downloads run at once (`jobs`, at least 1) while the downloader runs,
    /// for it and its clones: more start at once when it grows; when it shrinks, running
    /// downloads finish and fewer start. (A batch keeps the window it was made with.)
    pub fn set_jobs(&self, jobs: usize) {
        self.scheduler.set_jobs(jobs);
    }

    /// How many downloads may run at once now.
    #[must_use]
    pub fn jobs(&self) -> usize {
        self.scheduler.jobs()
    }

    /// The downloads waiting in the queue, in the order they would start (hosts permitting):
    /// the positions [`DownloadControl::move_in_queue`](crate::DownloadControl::move_in_queue)
    /// counts in.
    #[must_use]
    pub fn queued(&self) -> Vec<crate::TransferId> {
        self.scheduler.queued()
    }

    /// When `jobs` was lowered to fit the process's open-file limit: the `jobs` asked for,
    /// the number used, and the limit (`ulimit -n`, after raising the soft limit to the hard
    /// one).
    #[must_use]
    pub fn jobs_capped(&self) -> Option<(usize, usize, u64)> {
        let config = self.client.config();
        config
            .jobs_capped
            .map(|(asked, limit)| (asked, config.jobs, limit))
    }

    /// A batch of downloads, queued with everything else this downloader runs.
    #[must_use]
    pub fn batch(&self, requests: Vec<Request>) -> Batch {
        let config = self.client.config();
        Batch::new(
            Arc::clone(&self.scheduler),
            requests,
            config.jobs,
            config.content_disposition,
        )
    }

    /// A batch whose requests come from a stream (an input file read line by line, standard
    /// input): they are taken as room frees up, so memory does not grow with their number. An
    /// `Err` item fails that position of the batch (a bad line).
    #[must_use]
    pub fn batch_from_stream(
        &self,
        requests: impl futures_util::Stream<Item = Result<Request, Error>> + Send + 'static,
    ) -> Batch {
        let config = self.client.config();
        Batch::from_stream(
            Arc::clone(&self.scheduler),
            Box::pin(requests),
            config.jobs,
            config.content_disposition,
        )
    }

    /// Downloads `request`'s URL into `writer`, verifying its checksum at the end (a mismatch
    /// is an error, but the bytes were written: the caller must discard them). It takes the
    /// same road as a file download: deadlines, retries with `Retry-After`, the rate limit,
    /// the host's limit, the request's cancellation token.
    ///
    /// # Errors
    /// As for a file download, plus `Error::Io` when the writer fails (a closed pipe).
    pub async fn download_to_writer<W>(
        &self,
        request: &Request,
        writer: &mut W,
    ) -> Result<Streamed, Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        self.download_to_writer_observed(request, writer, Arc::new(NoObserver))
            .await
    }

    /// [`Self::download_to_writer`], reporting events (`Queued`, `Started`, `Progress`,
    /// `Retrying`, and at the end `Streamed` or `Failed`) to `observer` and the downloader's
    /// observers. It waits for its place in the
    /// downloader's queue like a file download.
    ///
    /// # Errors
    /// As [`Self::download_to_writer`].
    pub async fn download_to_writer_observed<W>(
        &self,
        request: &Request,
        writer: &mut W,
        observer: Arc<dyn crate::Observer>,
    ) -> Result<Streamed, Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let report = self
            .scheduler
            .reporter(Some(observer))
            .with_tag(request.tag.clone());
        let cancel = Cancel::new(
            tokio_util::sync::CancellationToken::new(),
            request.cancel.clone(),
        );
        report.emit(&crate::Event::Queued {
            id: report.id(),
            url: crate::naming::redact_url(&request.url),
            path: None,
            tag: report.tag(),
        });
        let result = async {
            let admission = self.scheduler.admit(request.host_key(), &cancel).await?;
            ToWriter {
                client: &self.client,
                request,
                report: &report,
                cancel: &cancel,
                permit: Some(admission.permit),
            }
            .run(writer)
            .await
        }
        .await;
        report.emit(&match &result {
            Ok(streamed) => crate::Event::Streamed {
                id: report.id(),
                streamed: streamed.clone(),
                tag: report.tag(),
            },
            Err(error) => scheduler::failed_event(&report, error, 0),
        });
        result
    }

    /// Lists the files below the directory at `url` (which should end with `/`), following
    /// subdirectory links up to `max_depth` levels down (0: only this directory).
    ///
    /// # Errors
    /// A failure to fetch any listing page fails the whole crawl (a partial listing must never
    /// look complete, or `--delete` would remove what it missed).
    pub async fn list_directory(
        &self,
        url: &Url,
        max_depth: usize,
    ) -> Result<Vec<ListedFile>, Error> {
        let limits = crate::sync::CrawlLimits {
            max_depth,
            ..crate::sync::CrawlLimits::default()
        };
        let crawled = crate::sync::read_listing(self, url, limits).await?;
        Ok(crawled
            .source
            .entries
            .into_iter()
            .map(|entry| ListedFile {
                path: entry.path,
                url: entry.url,
                size: entry.size,
            })
            .collect())
    }

    /// Fetches a small document (a manifest, a checksum file, a listing) into memory, at most
    /// the downloader's `max_document_size`, with the retries of a download. Takes a `jobs`
    /// slot like a download while it runs.
    ///
    /// # Errors
    /// Transport errors, a non-success status, or a body over the limit.
    pub async fn fetch_document(&self, url: &Url) -> Result<Document, Error> {
        let limit = self.client.config().max_document_bytes;
        self.fetch_document_reported(url, limit, &Reporter::silent(), &Cancel::default())
            .await
    }

    /// [`Self::fetch_document`] for the library's own callers: a size limit, events and a
    /// cancellation of their choosing.
    pub(crate) async fn fetch_document_reported(
        &self,
        url: &Url,
        limit: u64,
        report: &Reporter,
        cancel: &Cancel,
    ) -> Result<Document, Error> {
        let _slot = self.scheduler.side_slot(url, cancel).await?;
        self.client.fetch_document(url, limit, report, cancel).await
    }

    /// Asks the server whether the file at `url` still has these validators (a conditional
    /// `HEAD`): `true` for `304 Not Modified`, `false` when it answers with the file. Takes a
    /// `jobs` slot like a download while it runs.
    ///
    /// # Errors
    /// Transport errors and error statuses (after retries).
    pub(crate) async fn is_unchanged(
        &self,
        url: &Url,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<bool, Error> {
        let cancel = Cancel::default();
        let _slot = self.scheduler.side_slot(url, &cancel).await?;
        self.client
            .is_unchanged(url, etag, last_modified, &Reporter::silent(), &cancel)
            .await
    }

    /// Whether `url` can be fetched, without fetching it (a `HEAD`, or a one-byte range when
    /// `HEAD` is refused), with the retries of a download: its length when the server says.
    /// Takes a `jobs` slot. (`haul get --dry-run`, wget's `--spider`.)
    ///
    /// # Errors
    /// What fetching it would fail with: a status, a transport error.
    pub async fn probe(&self, url: &Url) -> Result<Option<u64>, Error> {
        let cancel = Cancel::default();
        let _slot = self.scheduler.side_slot(url, &cancel).await?;
        self.client
            .probe(url, None, &Reporter::silent(), &cancel)
            .await
    }
}
