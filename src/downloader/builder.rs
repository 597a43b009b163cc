//! Building a [`Downloader`]: every setting with its default, the client haul builds (or the
//! caller's own), and the checks made once before the first download.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::Error;
use crate::client::cookies::CookieJar;
use crate::client::credentials::{BasicAuth, Netrc};
use crate::client::proxy::{ProxyChoice, check_proxy_url};
use crate::client::{Client, Identity};
use crate::config::{Config, Durability, LowSpeed, OnExists};
use crate::progress::Observer;
use crate::scheduler::Scheduler;

use super::{Downloader, install_tls_provider};

type ClientHook = Box<dyn FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send>;

/// Builds a [`Downloader`].
pub struct DownloaderBuilder {
    config: Config,
    hooks: Vec<ClientHook>,
    observers: Vec<Arc<dyn Observer>>,
    /// `None`: haul's own (`haul/VERSION`) on haul's client, the client's own on a client
    /// given with [`Self::client`].
    user_agent: Option<String>,
    headers: HeaderMap,
    client: Option<reqwest::Client>,
    header_error: Option<String>,
    ca_certificates_pem: Vec<Vec<u8>>,
    accept_invalid_certificates: bool,
    proxy: Option<String>,
    no_proxy: Option<String>,
    auth: Option<BasicAuth>,
    netrc: Option<Netrc>,
    cookies: Option<Arc<CookieJar>>,
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    ip_version: Option<IpVersion>,
    http1_only: bool,
}

/// Which address family connections use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpVersion {
    /// IPv4 only (`-4`).
    V4,
    /// IPv6 only (`-6`).
    V6,
}

impl std::fmt::Debug for DownloaderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloaderBuilder")
            .field("config", &self.config)
            .field("own_client", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for DownloaderBuilder {
    fn default() -> Self {
        Self {
            config: Config::default(),
            hooks: Vec::new(),
            observers: Vec::new(),
            user_agent: None,
            headers: HeaderMap::new(),
            client: None,
            header_error: None,
            ca_certificates_pem: Vec::new(),
            accept_invalid_certificates: false,
            proxy: None,
            no_proxy: None,
            auth: None,
            netrc: None,
            cookies: None,
            identity_pem: None,
            ip_version: None,
            http1_only: false,
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

    /// How many connections one file opens at once when the server supports ranges and the
    /// file is at least two splits long (at least 1). Extra connections count against the
    /// per-host limit and are only opened while it has room. A request can override this.
    ///
    /// Without it a file starts on one connection and adds one at a time, up to
    /// [`DEFAULT_CONNECTIONS`](crate::DEFAULT_CONNECTIONS), while each addition raises its rate: a fast link is not split
    /// into competing writers, and a server that limits each connection still gets them.
    #[must_use]
    pub fn connections(mut self, connections: usize) -> Self {
        self.config.connections = connections.max(1);
        self.config.adaptive_connections = false;
        self
    }

    /// The smallest piece a file is split into, in bytes (default 8 MiB): a file shorter than
    /// two pieces uses one connection, and a piece is never stolen in halves smaller than this.
    #[must_use]
    pub fn min_split_size(mut self, bytes: u64) -> Self {
        self.config.min_split_bytes = bytes.max(1);
        self
    }

    /// The `User-Agent` header sent with every request. Default: `haul/VERSION`; with
    /// [`Self::client`], the client's own (set this to override it).
    #[must_use]
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// A header sent with every request (also with [`Self::client`]). Invalid names or values
    /// make [`Self::build`] fail.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => {
                self.header_error = Some(format!(
                    "invalid header `{name}: {}`",
                    crate::naming::redact_header(name, value)
                ));
            }
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
    /// (default 20 s); the response headers must also arrive within this long of the
    /// connection (plus the connect timeout). There is no limit on a transfer's total time.
    #[must_use]
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.config.stall_timeout = timeout;
        self
    }

    /// An attempt whose body arrives slower than `bytes_per_second` over `window` of network
    /// time is dropped and resumed by a new connection (curl's `-Y`/`-y`, aria2's
    /// `--lowest-speed-limit`). Time spent waiting for haul's own rate limit or for the disk
    /// does not count. A drop for slowness never resets the retry count, so a server that
    /// trickles forever ends in a failure. Default: off.
    #[must_use]
    pub fn lowest_speed_limit(mut self, bytes_per_second: u64, window: Duration) -> Self {
        self.config.low_speed = (bytes_per_second > 0 && !window.is_zero()).then_some(LowSpeed {
            bytes_per_second,
            window,
        });
        self
    }

    /// The largest directory listing, manifest or checksum file read into memory (default
    /// 64 MiB).
    #[must_use]
    pub fn max_document_size(mut self, bytes: u64) -> Self {
        self.config.max_document_bytes = bytes.max(1);
        self
    }

    /// Refuse files larger than `bytes` (curl's `--max-filesize`): a download whose announced
    /// length is larger fails before its body is read, and one that grows past it (a body
    /// without a length that never ends, say) is stopped; nothing gets a final name and the
    /// `.part` is removed. Default: no limit. A request can set its own.
    #[must_use]
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.config.max_file_bytes = Some(bytes);
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

    /// What a finished file survives (default [`Durability::Full`]: a power loss too).
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
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

    /// How many redirects one request may follow (default 10). haul follows redirects itself:
    /// only to http and https URLs, a loop is an error at once, cookies are kept along the
    /// way, and `Authorization`, `Cookie` and `Proxy-Authorization` headers and the request's
    /// credentials are never sent to another host.
    #[must_use]
    pub fn max_redirects(mut self, redirects: usize) -> Self {
        self.config.max_redirects = redirects;
        self
    }

    /// Limit the whole downloader to this many bytes per second, shared by all its transfers
    /// (default: no limit).
    #[must_use]
    pub fn limit_rate(mut self, bytes_per_second: u64) -> Self {
        self.config.limit_rate = Some(bytes_per_second.max(1));
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

    /// Verify every file against the digest its server announces (`Repr-Digest`,
    /// `Content-Digest` and `Digest` of a whole answer, `x-amz-checksum-sha256`,
    /// `x-goog-hash` md5) when the request has no checksum of its own, with the rules of a
    /// checksum: a mismatch is an error and the file never appears (default on).
    #[must_use]
    pub fn server_digests(mut self, enabled: bool) -> Self {
        self.config.server_digests = enabled;
        self
    }

    /// Fetch a file that exists only when the server has a newer one (wget's `-N`): a
    /// conditional `GET` with the file's modification time and the `ETag` haul remembered in
    /// its `user.haul.etag` extended attribute; a `304` transfers nothing and counts as
    /// already present (default off). A request can say otherwise.
    #[must_use]
    pub fn timestamping(mut self, enabled: bool) -> Self {
        self.config.timestamping = enabled;
        self
    }

    /// Use the mirrors a server names in `Link: <URL>; rel=duplicate` headers (RFC 6249,
    /// as MirrorBrain and mirrorbits send): segments and failover go to them too. Default on.
    #[must_use]
    pub fn metalink_headers(mut self, enabled: bool) -> Self {
        self.config.metalink_headers = enabled;
        self
    }

    /// Before keeping a file already under the final name (`OnExists::Skip`), ask the server
    /// for its length with a `HEAD` and download it again when they differ (default off: a
    /// rerun of a large batch then costs a request per file).
    #[must_use]
    pub fn check_existing(mut self, enabled: bool) -> Self {
        self.config.check_existing = enabled;
        self
    }

    /// Give finished files the server's `Last-Modified` time (default off).
    #[must_use]
    pub fn remote_time(mut self, enabled: bool) -> Self {
        self.config.remote_time = enabled;
        self
    }

    /// Report the events of every download of this downloader to `observer` (besides the
    /// observers given per batch or per call). Repeatable.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Send every request through this proxy (`http://`, `https://`, `socks5://` or
    /// `socks5h://`, credentials in the URL), instead of the environment's (`HTTP_PROXY`,
    /// `HTTPS_PROXY`, `ALL_PROXY`), which are used by default. Ignored with [`Self::client`].
    #[must_use]
    pub fn proxy(mut self, url: &str) -> Self {
        self.proxy = Some(url.to_owned());
        self
    }

    /// Hosts reached without a proxy: comma-separated names (a name also covers its
    /// subdomains), IP addresses, `A.B.C.D/N` networks, or `*` (instead of `NO_PROXY`).
    /// Ignored with [`Self::client`].
    #[must_use]
    pub fn no_proxy(mut self, list: &str) -> Self {
        self.no_proxy = Some(list.to_owned());
        self
    }

    /// Basic authentication for every request's own host (never for another host a redirect
    /// leads to). A request's own credentials win.
    #[must_use]
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some(BasicAuth {
            user: user.to_owned(),
            password: password.to_owned(),
        });
        self
    }

    /// Credentials per host from a `.netrc` file, used for hosts without others.
    #[must_use]
    pub fn netrc(mut self, netrc: Netrc) -> Self {
        self.netrc = Some(netrc);
        self
    }

    /// Keep cookies in `jar`: they are sent with later requests to the same site, and
    /// cookies servers set go into it (redirect answers included). Share the `Arc` to save it
    /// afterwards (`CookieJar::to_netscape`).
    #[must_use]
    pub fn cookie_jar(mut self, jar: Arc<CookieJar>) -> Self {
        self.cookies = Some(jar);
        self
    }

    /// Present this client certificate (PEM) with its private key (PEM) to servers that ask
    /// for one. Ignored with [`Self::client`].
    #[must_use]
    pub fn client_certificate_pem(mut self, certificate: Vec<u8>, key: Vec<u8>) -> Self {
        self.identity_pem = Some((certificate, key));
        self
    }

    /// Connect over IPv4 only or IPv6 only. Ignored with [`Self::client`].
    #[must_use]
    pub fn ip_version(mut self, version: IpVersion) -> Self {
        self.ip_version = Some(version);
        self
    }

    /// Speak HTTP/1.1 only, never HTTP/2 (then `connections` are TCP connections, which
    /// matters where a CDN limits the rate per connection). Ignored with [`Self::client`].
    #[must_use]
    pub fn http1_only(mut self, only: bool) -> Self {
        self.http1_only = only;
        self.config.http1_only = only;
        self
    }

    /// Adjusts the `reqwest::ClientBuilder` haul builds, after haul's own settings (identity
    /// encoding, connect timeout, redirect policy, CA certificates, TLS verification): add a
    /// proxy, a local address, TLS options, and keep all of haul's settings. Hooks run in the
    /// order given. (`reqwest` is re-exported as `haul::reqwest`.)
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), haul::Error> {
    /// use std::net::{IpAddr, Ipv4Addr};
    ///
    /// let downloader = haul::Downloader::builder()
    ///     .configure_client(|client| {
    ///         client
    ///             .local_address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)))
    ///             .tcp_keepalive(std::time::Duration::from_secs(30))
    ///     })
    ///     .build()?;
    /// # let _ = downloader;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn configure_client(
        mut self,
        hook: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + 'static,
    ) -> Self {
        self.hooks.push(Box::new(hook));
        self
    }

    /// Use this fully built client instead of building one (start from
    /// [`Downloader::client_builder`]). What still applies: everything haul does per request
    /// or per body (the headers set here, a `User-Agent` set here (else the client's own is
    /// kept), identity
    /// encoding, the stall timeout and the deadline for response headers, the low-speed limit,
    /// retries, the rate limit, per-host limits). What does not, because it lives inside a
    /// built client: [`Self::connect_timeout`], [`Self::proxy`] and the environment's proxies
    /// (the client's own apply), [`Self::ca_certificates_pem`],
    /// [`Self::client_certificate_pem`], [`Self::ip_version`], [`Self::http1_only`] and
    /// [`Self::danger_accept_invalid_certificates`]. (haul follows redirects itself; a
    /// client that follows them first leaves haul nothing to follow.) The client must not decompress bodies.
    /// To keep haul's settings and add your own, use [`Self::configure_client`] instead.
    ///
    /// haul's TLS uses rustls with *ring*. A `reqwest::Client` built before any TLS provider
    /// is installed panics inside reqwest (its message suggests `aws_lc_rs`, which haul does
    /// not compile in): build the client from [`Downloader::client_builder`], or after
    /// [`Downloader::builder`] or [`install_tls_provider`].
    ///
    /// ```no_run
    /// # fn demo(pem: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    /// use haul::{Downloader, reqwest};
    ///
    /// let client = Downloader::client_builder()
    ///     .tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?)
    ///     .build()?;
    /// let downloader = Downloader::builder().client(client).build()?;
    /// # Ok(()) }
    /// ```
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
    pub fn build(mut self) -> Result<Downloader, Error> {
        install_tls_provider();
        if let Some(message) = self.header_error.take() {
            return Err(Error::Config(message));
        }
        let own_client = self.client.is_some();
        let user_agent = match self.user_agent.take() {
            Some(text) => Some(
                HeaderValue::from_str(&text)
                    .map_err(|_| Error::Config(format!("invalid user agent `{text}`")))?,
            ),
            // A client of the caller's own keeps its own `User-Agent`.
            None if own_client => None,
            None => Some(HeaderValue::from_static(concat!(
                "haul/",
                env!("CARGO_PKG_VERSION")
            ))),
        };
        let (http, proxy) = match self.client.take() {
            Some(client) => (client, None),
            None => {
                let choice = self.proxy_choice()?;
                (self.default_client(choice.clone())?, Some(choice))
            }
        };
        let identity = Identity {
            user_agent,
            headers: std::mem::take(&mut self.headers),
            auth: self.auth.take(),
            netrc: self.netrc.take(),
            cookies: self.cookies.take(),
            proxy,
        };
        if let Some(limit) = crate::storage::descriptors::raise_limit() {
            let fit = crate::storage::descriptors::Fit::new(
                limit,
                self.config.jobs,
                self.config.connections,
            );
            if fit.jobs < self.config.jobs {
                self.config.jobs_capped = Some((self.config.jobs, limit));
                self.config.jobs = fit.jobs;
            }
            self.config.commits = fit.commits;
        }
        let client = Client::new(http, self.config, identity);
        Ok(Downloader {
            scheduler: Arc::new(Scheduler::new(client.clone(), self.observers)),
            client,
        })
    }
}

impl DownloaderBuilder {
    fn proxy_choice(&self) -> Result<ProxyChoice, Error> {
        let explicit = self
            .proxy
            .as_deref()
            .map(check_proxy_url)
            .transpose()
            .map_err(Error::Config)?;
        ProxyChoice::new(explicit, self.no_proxy.as_deref()).map_err(Error::Config)
    }

    fn default_client(&mut self, proxies: ProxyChoice) -> Result<reqwest::Client, Error> {
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
            // haul follows redirects itself (cookies, credentials and limits on every hop).
            .redirect(reqwest::redirect::Policy::none())
            // haul chooses the proxy itself, so what it reports is what is used.
            .no_proxy();
        // Without any proxy, none is asked about: reqwest's custom proxy turns each request's
        // URI back into a `Url` (a format and an IDNA parse per request).
        if !proxies.is_direct() {
            builder = builder.proxy(reqwest::Proxy::custom(move |url| {
                proxies.choose(url).cloned()
            }));
        }
        if !certificates.is_empty() {
            builder = builder.tls_certs_merge(certificates);
        }
        if self.accept_invalid_certificates {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some((certificate, key)) = &self.identity_pem {
            let mut pem = certificate.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::Config(format!("invalid client certificate or key: {e}")))?;
            builder = builder.identity(identity);
        }
        match self.ip_version {
            Some(IpVersion::V4) => {
                builder =
                    builder.local_address(std::net::IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED));
            }
            Some(IpVersion::V6) => {
                builder =
                    builder.local_address(std::net::IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED));
            }
            None => {}
        }
        if self.http1_only {
            builder = builder.http1_only();
        }
        for hook in self.hooks.drain(..) {
            builder = hook(builder);
        }
        builder.build().map_err(|source| Error::Client { source })
    }
}
