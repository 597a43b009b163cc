//! One exchange with a server: build the request (identity encoding, haul's identity headers,
//! the request's own headers, `Range`/`If-Range`, conditional headers), send it under the
//! connect and header deadlines, and judge the answer once. Every request haul makes goes
//! through here: whole files, segments, small files, writers, HEAD checks, listings, manifests
//! and checksum files. The judgement is the facts (whole, partial, not modified, unsatisfiable,
//! or an error carrying the status and `Retry-After`); what to do about them is the caller's.

use reqwest::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, AUTHORIZATION, CONTENT_DISPOSITION, CONTENT_RANGE,
    CONTENT_TYPE, COOKIE, HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LOCATION,
    PROXY_AUTHORIZATION, RANGE, USER_AGENT,
};
use reqwest::{Method, StatusCode};
use url::Url;

use super::Client;
use super::cancel::Cancel;
use super::credentials::BasicAuth;
use super::http::{self, ContentRange};
use super::pump::BodyPump;
use crate::Error;
use crate::naming::redact_url;
use crate::storage::state::Validators;

/// What to ask a server for.
#[derive(Debug, Clone)]
pub(crate) struct Ask<'a> {
    url: &'a Url,
    method: Method,
    headers: Option<&'a HeaderMap>,
    /// First byte, and one past the last (`None`: to the end).
    range: Option<(u64, Option<u64>)>,
    if_range: Option<&'a str>,
    if_none_match: Option<&'a str>,
    if_modified_since: Option<&'a str>,
    auth: Option<&'a BasicAuth>,
}

impl<'a> Ask<'a> {
    pub(crate) fn get(url: &'a Url) -> Self {
        Self {
            url,
            method: Method::GET,
            headers: None,
            range: None,
            if_range: None,
            if_none_match: None,
            if_modified_since: None,
            auth: None,
        }
    }

    pub(crate) fn head(url: &'a Url) -> Self {
        Self {
            method: Method::HEAD,
            ..Self::get(url)
        }
    }

    /// The request's own headers, sent after haul's.
    pub(crate) fn with_headers(mut self, headers: &'a HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    /// Bytes `start..end` (`end` exclusive, `None` for the rest), only if the entity is still
    /// the one `if_range` names (RFC 9110 §13.1.5).
    pub(crate) fn with_range(
        mut self,
        start: u64,
        end: Option<u64>,
        if_range: Option<&'a str>,
    ) -> Self {
        self.range = Some((start, end));
        self.if_range = if_range;
        self
    }

    /// Ask whether the entity changed since these validators (`304` if not).
    pub(crate) fn if_changed(
        mut self,
        etag: Option<&'a str>,
        last_modified: Option<&'a str>,
    ) -> Self {
        self.if_none_match = etag;
        self.if_modified_since = last_modified;
        self
    }

    /// Basic authentication for the request's own host.
    pub(crate) fn with_auth(mut self, auth: Option<&'a BasicAuth>) -> Self {
        self.auth = auth;
        self
    }

    pub(crate) fn is_ranged(&self) -> bool {
        self.range.is_some()
    }

    fn is_conditional(&self) -> bool {
        self.if_none_match.is_some() || self.if_modified_since.is_some()
    }
}

/// A judged answer that carries a body.
pub(crate) struct Reply {
    response: reqwest::Response,
    /// The URL (credentials redacted) for messages.
    pub(crate) url: String,
    /// The entity's validators; `total_bytes` is the whole entity's length (from
    /// `Content-Length` of a whole answer or the total of a `Content-Range`), when known.
    pub(crate) validators: Validators,
    /// One past the last byte of the entity this body carries, when known.
    pub(crate) body_end: Option<u64>,
    /// `HTTP/1.1`, `HTTP/2.0`, ...
    pub(crate) version: String,
    /// Whether the server says it serves ranges (`Accept-Ranges: bytes`, or a `206`).
    pub(crate) accepts_ranges: bool,
}

impl Reply {
    pub(crate) fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// The `Content-Disposition` header, when there is a readable one.
    pub(crate) fn disposition(&self) -> Option<&str> {
        self.headers().get(CONTENT_DISPOSITION)?.to_str().ok()
    }

    pub(crate) fn content_type(&self) -> Option<String> {
        Some(self.headers().get(CONTENT_TYPE)?.to_str().ok()?.to_owned())
    }

    /// The body, through the one pump (stall, low speed, rate, cancellation).
    pub(crate) fn into_body(self, client: &Client, cancel: &Cancel) -> BodyPump {
        BodyPump::new(self.response, self.url, client, cancel)
    }
}

/// The facts of an answer.
pub(crate) enum Answer {
    /// A success other than `206`: the whole entity from byte 0.
    Whole(Reply),
    /// A `206` whose `Content-Range` starts where asked.
    Partial(Reply, ContentRange),
    /// `304` to a conditional request: the entity did not change.
    NotModified(Validators),
    /// `416` to a ranged request; the entity's length when the server said (`bytes */N`).
    Unsatisfiable { total: Option<u64> },
}

impl Client {
    /// Sends `ask` and judges the answer, following redirects itself (at most
    /// `max_redirects`, only to http and https, a loop refused at once) so that every hop gets
    /// the same rules: cookies stored and sent, credentials only for their own host, sensitive
    /// headers never carried to another host. Waits at most the connect timeout plus the stall
    /// timeout for each hop's response headers, and returns `Cancelled` as soon as `cancel`
    /// fires.
    ///
    /// # Errors
    /// Transport failures, deadlines, statuses that are not answers to what was asked
    /// (`Error::Status` with the server's `Retry-After`), a wrong or missing `Content-Range`
    /// (`Error::BadRange`), bad redirects.
    pub(crate) async fn exchange(&self, ask: &Ask<'_>, cancel: &Cancel) -> Result<Answer, Error> {
        let shown = redact_url(ask.url);
        let mut url = ask.url.clone();
        let mut visited: Vec<Url> = Vec::new();
        loop {
            let same_host = same_origin(&url, ask.url);
            let response = self.send_once(ask, &url, same_host, cancel, &shown).await?;
            if let Some(jar) = &self.identity().cookies {
                jar.store(&url, response.headers());
            }
            let status = response.status();
            let location = response.headers().get(LOCATION).map(location_text);
            let (true, Some(location)) = (is_redirect(status), location) else {
                return judge(ask, response, shown);
            };
            let bad = |location: &str| Error::BadRedirect {
                url: shown.clone(),
                location: location.chars().take(200).collect(),
            };
            let next = url.join(&location).map_err(|_| bad(&location))?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(Error::Redirect {
                    url: shown,
                    detail: format!(
                        "redirect to a `{}` URL refused (only http and https are followed)",
                        next.scheme()
                    ),
                });
            }
            visited.push(url);
            if visited.contains(&next) {
                return Err(Error::Redirect {
                    url: shown,
                    detail: format!("redirect loop at {}", redact_url(&next)),
                });
            }
            if visited.len() > self.config().max_redirects {
                return Err(Error::Redirect {
                    url: shown,
                    detail: format!("more than {} redirects", self.config().max_redirects),
                });
            }
            url = next;
        }
    }

    /// A request that could not be sent: a failure to connect through a proxy names the proxy
    /// (the server itself was never reached).
    fn transport_error(&self, url: &Url, shown: &str, source: reqwest::Error) -> Error {
        let source = source.without_url();
        match self.proxy_for(url) {
            Some(proxy) if source.is_connect() => Error::Proxy {
                proxy,
                url: shown.to_owned(),
                source,
            },
            _ => Error::Network {
                url: shown.to_owned(),
                source,
            },
        }
    }

    /// One hop: the request to `url`, sent under the header deadline.
    async fn send_once(
        &self,
        ask: &Ask<'_>,
        url: &Url,
        same_host: bool,
        cancel: &Cancel,
        shown: &str,
    ) -> Result<reqwest::Response, Error> {
        let first_contact = match self.origins() {
            Some(origins) => {
                origins
                    .first_contact(url, self.config().connect_timeout, cancel)
                    .await?
            }
            None => None,
        };
        let request = self.build(ask, url, same_host);
        let deadline = self.config().connect_timeout + self.config().stall_timeout;
        let sent = tokio::select! {
            () = cancel.cancelled() => Err(Error::Cancelled),
            sent = tokio::time::timeout(deadline, request.send()) => match sent {
                Err(_) => Err(Error::Stalled { url: shown.to_owned(), timeout: deadline }),
                Ok(Err(source)) => Err(self.transport_error(url, shown, source)),
                Ok(Ok(response)) => Ok(response),
            },
        };
        if let (Ok(_), Some(first)) = (&sent, first_contact) {
            first.answered();
        }
        sent
    }

    fn build(&self, ask: &Ask<'_>, url: &Url, same_host: bool) -> reqwest::RequestBuilder {
        let identity = self.identity();
        let mut builder = self
            .http()
            .request(ask.method.clone(), url.clone())
            // The exact entity, never a transformed one (RFC 9110 §12.5.3).
            .header(ACCEPT_ENCODING, "identity")
            .headers(carried(&identity.headers, same_host));
        if let Some(user_agent) = &identity.user_agent {
            builder = builder.header(USER_AGENT, user_agent.clone());
        }
        if let Some(headers) = ask.headers {
            builder = builder.headers(carried(headers, same_host));
        }
        // Credentials: the request's own, then the downloader's, only for the request's own
        // host; a `.netrc` entry for the host of this hop. (A URL's own `user:password` is
        // used by reqwest for that URL only.)
        let own = same_host
            .then(|| ask.auth.or(identity.auth.as_ref()))
            .flatten();
        let netrc = || {
            identity
                .netrc
                .as_ref()
                .and_then(|netrc| netrc.lookup(url.host_str()?))
        };
        if url.username().is_empty()
            && let Some(auth) = own.or_else(netrc)
        {
            builder = builder.basic_auth(&auth.user, Some(&auth.password));
        }
        if let Some(cookie) = identity
            .cookies
            .as_ref()
            .and_then(|jar| jar.header_for(url))
        {
            builder = builder.header(COOKIE, cookie);
        }
        if let Some((start, end)) = ask.range {
            let value = match end {
                Some(end) => format!("bytes={start}-{}", end.saturating_sub(1)),
                None => format!("bytes={start}-"),
            };
            builder = builder.header(RANGE, value);
            if let Some(validator) = ask.if_range {
                builder = builder.header(IF_RANGE, validator);
            }
        }
        if let Some(etag) = ask.if_none_match {
            builder = builder.header(IF_NONE_MATCH, etag);
        }
        if let Some(last_modified) = ask.if_modified_since {
            builder = builder.header(IF_MODIFIED_SINCE, last_modified);
        }
        builder
    }
}

/// The headers sent on a hop: all of them to the request's own host; without the ones that
/// carry secrets (`Authorization`, `Cookie`, `Proxy-Authorization`) to another host.
fn carried(headers: &HeaderMap, same_host: bool) -> HeaderMap {
    if same_host {
        return headers.clone();
    }
    let mut kept = headers.clone();
    for secret in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION] {
        kept.remove(secret);
    }
    kept
}

/// Whether two URLs have the same scheme, host and port.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A `Location` as text a URL parser takes: raw non-ASCII bytes (servers send UTF-8 names as
/// they are), spaces and control characters percent-encoded, as curl, wget and aria2 do; what
/// is already percent-encoded stays as it is.
fn location_text(value: &reqwest::header::HeaderValue) -> String {
    const RAW: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ');
    percent_encoding::percent_encode(value.as_bytes(), RAW).to_string()
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn judge(ask: &Ask<'_>, response: reqwest::Response, shown: String) -> Result<Answer, Error> {
    let status = response.status();
    let headers = response.headers();
    let reply = |response: reqwest::Response, total: Option<u64>, body_end: Option<u64>| {
        let headers = response.headers();
        let accepts_ranges = response.status() == StatusCode::PARTIAL_CONTENT
            || headers
                .get(ACCEPT_RANGES)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|unit| unit.trim() == "bytes"));
        Reply {
            validators: http::validators(headers, total),
            version: format!("{:?}", response.version()),
            accepts_ranges,
            body_end,
            url: shown.clone(),
            response,
        }
    };
    match status {
        StatusCode::PARTIAL_CONTENT => {
            let bad = |detail: String| Error::BadRange {
                url: shown.clone(),
                detail,
            };
            let Some((asked, _)) = ask.range else {
                return Err(bad(
                    "a partial answer to a request for the whole file".into()
                ));
            };
            let Some(range) = http::content_range(headers) else {
                return Err(bad("missing or malformed Content-Range".into()));
            };
            if range.start != asked {
                return Err(bad(format!(
                    "asked for bytes from {asked}, got {}-{}",
                    range.start,
                    range.end.saturating_sub(1)
                )));
            }
            Ok(Answer::Partial(
                reply(response, range.total, Some(range.end)),
                range,
            ))
        }
        StatusCode::NOT_MODIFIED if ask.is_conditional() => {
            Ok(Answer::NotModified(http::validators(headers, None)))
        }
        StatusCode::RANGE_NOT_SATISFIABLE if ask.is_ranged() => {
            let total = headers
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(http::unsatisfied_total);
            Ok(Answer::Unsatisfiable { total })
        }
        status if status.is_success() => {
            let length = if ask.method == Method::HEAD {
                http::content_length(headers)
            } else {
                response.content_length()
            };
            Ok(Answer::Whole(reply(response, length, length)))
        }
        status => Err(Error::Status {
            url: shown,
            status: status.as_u16(),
            retry_after: http::retry_after(headers),
        }),
    }
}
