//! The one road to a server: every request haul sends, whatever it is for, is built, sent and
//! judged by `exchange`, its body read by `pump`, and its failures decided by `retry`. The
//! client also owns what every connection shares: the `reqwest::Client` (one connection pool),
//! the per-host limits and the rate limit.

pub(crate) mod cancel;
pub(crate) mod cookies;
pub(crate) mod credentials;
pub(crate) mod digest;
pub(crate) mod document;
pub(crate) mod exchange;
pub(crate) mod hosts;
pub(crate) mod http;
pub(crate) mod origins;
pub(crate) mod proxy;
pub(crate) mod pump;
pub(crate) mod rate;
pub(crate) mod retry;

use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue};

use crate::config::Config;
use hosts::HostLimits;
use rate::RateLimiter;

/// What haul sends with every request, whatever client carries it: set per request, so it
/// holds with a client the embedder built.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// `None` keeps the client's own (a client the caller built).
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) headers: HeaderMap,
    /// Sent to every request's own host (`--user`).
    pub(crate) auth: Option<credentials::BasicAuth>,
    /// Per host.
    pub(crate) netrc: Option<credentials::Netrc>,
    pub(crate) cookies: Option<Arc<cookies::CookieJar>>,
    /// The proxy rules, when haul built the client (so it knows what is used).
    pub(crate) proxy: Option<proxy::ProxyChoice>,
}

/// Installs the TLS crypto provider (rustls with *ring*) as the process default, unless one is
/// installed already (see `haul::install_tls_provider`).
pub(crate) fn install_tls_provider() {
    // Err means a provider is installed already, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The shared means of talking to servers. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// First contact with each HTTPS origin (see `origins`).
    origins: origins::Origins,
    config: Config,
    identity: Identity,
    hosts: HostLimits,
    /// The downloader's rate limit, changeable while it runs.
    rate: RateLimiter,
}

impl Client {
    pub(crate) fn new(http: reqwest::Client, config: Config, identity: Identity) -> Self {
        Self {
            inner: Arc::new(Inner {
                hosts: HostLimits::new(config.per_host),
                origins: origins::Origins::default(),
                rate: config
                    .limit_rate
                    .map_or_else(RateLimiter::unlimited, RateLimiter::new),
                http,
                config,
                identity,
            }),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn hosts(&self) -> &HostLimits {
        &self.inner.hosts
    }

    pub(crate) fn rate(&self) -> &RateLimiter {
        &self.inner.rate
    }

    /// The first-contact gate, unless the client speaks HTTP/1.1 only (then there is nothing
    /// to discover and every request may open its own connection at once).
    fn origins(&self) -> Option<&origins::Origins> {
        (!self.inner.config.http1_only).then_some(&self.inner.origins)
    }

    fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// The proxy a request to `url` goes through, credentials redacted (when haul built the
    /// client and knows).
    pub(crate) fn proxy_for(&self, url: &url::Url) -> Option<String> {
        let proxy = self.identity().proxy.as_ref()?.choose(url)?;
        let shown = crate::naming::redact_url(proxy);
        Some(match shown.strip_suffix('/') {
            Some(bare) if proxy.path() == "/" => bare.to_owned(),
            _ => shown,
        })
    }

    /// A client with `config` and no network settings, for unit tests of the layers above.
    #[cfg(test)]
    pub(crate) fn for_tests(config: Config) -> Self {
        install_tls_provider();
        Self::new(
            reqwest::Client::new(),
            config,
            Identity {
                user_agent: Some(HeaderValue::from_static("haul-test")),
                headers: HeaderMap::new(),
                auth: None,
                netrc: None,
                cookies: None,
                proxy: None,
            },
        )
    }
}
