//! The library's entry point: `Downloader`, built once from a `DownloaderBuilder` around one
//! shared `reqwest::Client`, cheap to clone and safe to share across tasks.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::client::hosts::HostLimits;
use crate::client::rate::RateLimiter;
use crate::config::{Config, DEFAULT_CONNECTIONS, DEFAULT_MIN_SPLIT_BYTES, OnExists};
use crate::scheduler::Batch;
use crate::{Completed, Error, Request};

pub(crate) struct Shared {
    pub(crate) client: reqwest::Client,
    pub(crate) config: Config,
    pub(crate) hosts: HostLimits,
    pub(crate) rate: Option<RateLimiter>,
}

/// Runs downloads. Build one with [`Downloader::builder`] and reuse it: clones share one
/// connection pool.
#[derive(Clone)]
pub struct Downloader {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Downloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloader")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Downloader {
    /// A builder with the defaults documented on each setter.
    #[must_use]
    pub fn builder() -> DownloaderBuilder {
        DownloaderBuilder::default()
    }

    /// Downloads one file (a batch of one).
    ///
    /// # Errors
    /// Whatever stopped the download; see [`Error`].
    pub async fn download(&self, request: Request) -> Result<Completed, Error> {
        let mut outcomes = self.batch(vec![request]).run().await?;
        outcomes
            .pop()
            .unwrap_or_else(|| Err(Error::Config("the batch produced no outcome".into())))
    }

    /// A batch of downloads run under the global and per-host limits.
    #[must_use]
    pub fn batch(&self, requests: Vec<Request>) -> Batch {
        Batch::new(self.clone(), requests)
    }
}

/// Builds a [`Downloader`].
#[derive(Debug)]
pub struct DownloaderBuilder {
    config: Config,
    user_agent: String,
    headers: HeaderMap,
    client: Option<reqwest::Client>,
    header_error: Option<String>,
    ca_certificates_pem: Vec<Vec<u8>>,
    accept_invalid_certificates: bool,
    max_redirects: usize,
    limit_rate: Option<u64>,
}

impl Default for DownloaderBuilder {
    fn default() -> Self {
        Self {
            config: Config {
                jobs: 8,
                per_host: 8,
                connect_timeout: Duration::from_secs(15),
                stall_timeout: Duration::from_secs(20),
                retries: 5,
                retry_delay: Duration::from_secs(1),
                max_retry_wait: Duration::from_secs(60),
                checkpoint_interval: Duration::from_secs(1),
                on_exists: OnExists::Skip,
                connections: DEFAULT_CONNECTIONS,
                min_split_bytes: DEFAULT_MIN_SPLIT_BYTES,
                content_disposition: false,
                remote_time: false,
            },
            user_agent: concat!("haul/", env!("CARGO_PKG_VERSION")).to_owned(),
            headers: HeaderMap::new(),
            client: None,
            header_error: None,
            ca_certificates_pem: Vec::new(),
            accept_invalid_certificates: false,
            max_redirects: 10,
            limit_rate: None,
        }
    }
}

impl DownloaderBuilder {
    /// How many files download at once (default 8, at least 1). A file whose body has
    /// arrived gives its place up while it is synced and renamed, so the network does not
    /// wait for the disk (a few more files may then be finishing on disk).
    #[must_use]
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.config.jobs = jobs.max(1);
        self
    }

    /// How many connections one host gets at once, across all files (default 8, at least 1).
    #[must_use]
    pub fn per_host(mut self, connections: usize) -> Self {
        self.config.per_host = connections.max(1);
        self
    }

    /// How many connections one file may use when the server supports ranges and the file is
    /// at least two splits long (default 4, at least 1). Extra connections count against the
    /// per-host limit and are only opened while it has room. A request can override this.
    #[must_use]
    pub fn connections(mut self, connections: usize) -> Self {
        self.config.connections = connections.max(1);
        self
    }

    /// The smallest piece a file is split into, in bytes (default 8 MiB): a file shorter than
    /// two pieces uses one connection, and a piece is never stolen in halves smaller than this.
    #[must_use]
    pub fn min_split_size(mut self, bytes: u64) -> Self {
        self.config.min_split_bytes = bytes.max(1);
        self
    }

    /// The `User-Agent` header (default `haul/VERSION`). Ignored with [`Self::client`].
    #[must_use]
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// A header sent with every request. Invalid names or values make [`Self::build`] fail.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => self.header_error = Some(format!("invalid header `{name}: {value}`")),
        }
        self
    }

    /// Longest wait for a TCP (and TLS) connection (default 15 s). Ignored with [`Self::client`].
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// An attempt that receives no byte for this long is aborted and resumed by a new one
    /// (default 20 s). There is no limit on a transfer's total time.
    #[must_use]
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.config.stall_timeout = timeout;
        self
    }

    /// How many times a failed attempt is retried (default 5). The count starts again whenever
    /// an attempt made progress, so a long download over a flaky link keeps going.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.config.retries = retries;
        self
    }

    /// The first retry's delay, doubled for each further retry, with jitter (default 1 s).
    #[must_use]
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.config.retry_delay = delay;
        self
    }

    /// The longest wait before a retry, `Retry-After` included (default 60 s).
    #[must_use]
    pub fn max_retry_wait(mut self, wait: Duration) -> Self {
        self.config.max_retry_wait = wait;
        self
    }

    /// How often the resume state of a running download is made durable (default 1 s). Each
    /// checkpoint syncs the `.part` data first, so a crash loses at most this much work.
    #[must_use]
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.config.checkpoint_interval = interval;
        self
    }

    /// What to do with a final file that already exists (default [`OnExists::Skip`]).
    #[must_use]
    pub fn on_exists(mut self, policy: OnExists) -> Self {
        self.config.on_exists = policy;
        self
    }

    /// Also trust the certificate authorities in this PEM data (one or more certificates), on
    /// top of the system's. A malformed bundle makes [`Self::build`] fail. Ignored with
    /// [`Self::client`].
    #[must_use]
    pub fn ca_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificates_pem.push(pem.into());
        self
    }

    /// Accept any TLS certificate: no verification at all. Only for testing; anyone on the
    /// path can then read and change the download. Ignored with [`Self::client`].
    #[must_use]
    pub fn danger_accept_invalid_certificates(mut self, accept: bool) -> Self {
        self.accept_invalid_certificates = accept;
        self
    }

    /// How many redirects one request may follow (default 10). Redirects go only to http and
    /// https URLs, a loop is an error at once, and reqwest drops `Authorization` and `Cookie`
    /// headers when a redirect leaves the host. Ignored with [`Self::client`].
    #[must_use]
    pub fn max_redirects(mut self, redirects: usize) -> Self {
        self.max_redirects = redirects;
        self
    }

    /// Limit the whole downloader to this many bytes per second, shared by all its transfers
    /// (default: no limit).
    #[must_use]
    pub fn limit_rate(mut self, bytes_per_second: u64) -> Self {
        self.limit_rate = Some(bytes_per_second.max(1));
        self
    }

    /// Name files after the server's `Content-Disposition` header when it has one (default
    /// off: a server-chosen name is a surprise). The name is made safe like a URL name and stays
    /// in the destination directory; a taken name gets `.1`, `.2`, ... appended. Applies to
    /// requests saved into a directory, not to exact paths.
    #[must_use]
    pub fn content_disposition(mut self, enabled: bool) -> Self {
        self.config.content_disposition = enabled;
        self
    }

    /// Give finished files the server's `Last-Modified` time (default off).
    #[must_use]
    pub fn remote_time(mut self, enabled: bool) -> Self {
        self.config.remote_time = enabled;
        self
    }

    /// Use this client (proxies, custom TLS, middleware) instead of building one. It should
    /// not decompress bodies: haul always asks for the identity encoding.
    #[must_use]
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Builds the downloader.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid header, [`Error::Client`] when the HTTP client cannot be
    /// built.
    pub fn build(self) -> Result<Downloader, Error> {
        if let Some(message) = self.header_error {
            return Err(Error::Config(message));
        }
        let client = match self.client {
            Some(client) => client,
            None => self.default_client()?,
        };
        Ok(Downloader {
            shared: Arc::new(Shared {
                client,
                hosts: HostLimits::new(self.config.per_host),
                rate: self.limit_rate.map(RateLimiter::new),
                config: self.config,
            }),
        })
    }
}

impl DownloaderBuilder {
    fn default_client(&self) -> Result<reqwest::Client, Error> {
        // Err means a provider is installed already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut certificates = Vec::new();
        for pem in &self.ca_certificates_pem {
            let bundle = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Config(format!("invalid CA certificate: {e}")))?;
            if bundle.is_empty() {
                return Err(Error::Config(
                    "invalid CA certificate: no certificate in the PEM data".into(),
                ));
            }
            certificates.extend(bundle);
        }
        let mut builder = reqwest::Client::builder()
            // The exact entity, never a decoded one, whatever features other crates enable.
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .connect_timeout(self.config.connect_timeout)
            .user_agent(self.user_agent.as_str())
            .default_headers(self.headers.clone())
            .redirect(redirect_policy(self.max_redirects));
        if !certificates.is_empty() {
            builder = builder.tls_certs_merge(certificates);
        }
        if self.accept_invalid_certificates {
            builder = builder.danger_accept_invalid_certs(true);
        }
        builder.build().map_err(|source| Error::Client { source })
    }
}

/// Follows at most `max` redirects, only to http and https, and stops at once on a loop.
fn redirect_policy(max: usize) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if !matches!(attempt.url().scheme(), "http" | "https") {
            let message = format!("redirect to a `{}` URL refused", attempt.url().scheme());
            return attempt.error(message);
        }
        if attempt.previous().contains(attempt.url()) {
            let message = format!(
                "redirect loop at {}",
                crate::naming::redact_url(attempt.url())
            );
            return attempt.error(message);
        }
        if attempt.previous().len() > max {
            let message = format!("more than {max} redirects");
            return attempt.error(message);
        }
        attempt.follow()
    })
}
