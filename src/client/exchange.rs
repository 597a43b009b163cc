//! One exchange with a server: build the request (identity encoding, haul's identity headers,
//! the request's own headers, `Range`/`If-Range`, conditional headers), send it under the
//! connect and header deadlines, and judge the answer once. Every request haul makes goes
//! through here: whole files, segments, small files, writers, HEAD checks, listings, manifests
//! and checksum files. The judgement is the facts (whole, partial, not modified, unsatisfiable,
//! or an error carrying the status and `Retry-After`); what to do about them is the caller's.

use reqwest::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_RANGE, CONTENT_TYPE, HeaderMap,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LOCATION, RANGE, USER_AGENT,
};
use reqwest::{Method, StatusCode};
use url::Url;

use super::Client;
use super::cancel::Cancel;
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
    /// Sends `ask` and judges the answer. Waits at most the connect timeout plus the stall
    /// timeout for the response headers, and returns `Cancelled` as soon as `cancel` fires.
    ///
    /// # Errors
    /// Transport failures, deadlines, statuses that are not answers to what was asked
    /// (`Error::Status` with the server's `Retry-After`), a wrong or missing `Content-Range`
    /// (`Error::BadRange`), redirects that are not followed.
    pub(crate) async fn exchange(&self, ask: &Ask<'_>, cancel: &Cancel) -> Result<Answer, Error> {
        let shown = redact_url(ask.url);
        let request = self.build(ask);
        let deadline = self.config().connect_timeout + self.config().stall_timeout;
        let response = tokio::select! {
            () = cancel.cancelled() => return Err(Error::Cancelled),
            sent = tokio::time::timeout(deadline, request.send()) => match sent {
                Err(_) => return Err(Error::Stalled { url: shown, timeout: deadline }),
                Ok(Err(source)) => return Err(Error::Network { url: shown, source: source.without_url() }),
                Ok(Ok(response)) => response,
            },
        };
        judge(ask, response, shown)
    }

    fn build(&self, ask: &Ask<'_>) -> reqwest::RequestBuilder {
        let mut builder = self
            .http()
            .request(ask.method.clone(), ask.url.clone())
            // The exact entity, never a transformed one (RFC 9110 §12.5.3).
            .header(ACCEPT_ENCODING, "identity")
            .header(USER_AGENT, self.identity().user_agent.clone())
            .headers(self.identity().headers.clone());
        if let Some(headers) = ask.headers {
            builder = builder.headers(headers.clone());
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
        status if status.is_redirection() && headers.contains_key(LOCATION) => {
            // reqwest hands back the redirects it would not follow (to other schemes).
            let location = headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            Err(Error::BadRedirect {
                url: shown,
                location,
            })
        }
        status => Err(Error::Status {
            url: shown,
            status: status.as_u16(),
            retry_after: http::retry_after(headers),
        }),
    }
}
