//! Small documents fetched whole into memory (directory listings, manifests, checksum files) and
//! conditional `HEAD` checks: the same exchange, pump and retry policy as a download, a bound on
//! the body's size, and a host permit for each attempt, so a crawl counts against the per-host
//! limit like any download.

use url::Url;

use super::Client;
use super::cancel::Cancel;
use super::exchange::{Answer, Ask};
use super::retry::RetryPolicy;
use crate::Error;
use crate::client::hosts::host_key;
use crate::naming::redact_url;
use crate::progress::Reporter;

/// A small document fetched whole into memory ([`Downloader::fetch_document`](crate::Downloader::fetch_document)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Document {
    /// Its body.
    pub bytes: Vec<u8>,
    /// Its `Content-Type`, when the server said.
    pub content_type: Option<String>,
}

impl Document {
    /// The body as text (invalid UTF-8 replaced).
    #[must_use]
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}

impl Client {
    /// Fetches `url` whole, at most `limit` bytes, retrying like a download.
    ///
    /// # Errors
    /// The last attempt's error when retries run out or the failure is permanent; `LongBody`
    /// when the document exceeds `limit`.
    pub(crate) async fn fetch_document(
        &self,
        url: &Url,
        limit: u64,
        report: &Reporter,
        cancel: &Cancel,
    ) -> Result<Document, Error> {
        let mut policy = RetryPolicy::new(self, url, report);
        loop {
            let error = match self.fetch_document_once(url, limit, cancel).await {
                Ok(document) => return Ok(document),
                Err(error) => error,
            };
            let Some(delay) = policy.next_delay(&error, false) else {
                return Err(error);
            };
            RetryPolicy::wait(delay, cancel).await?;
        }
    }

    async fn fetch_document_once(
        &self,
        url: &Url,
        limit: u64,
        cancel: &Cancel,
    ) -> Result<Document, Error> {
        let _permit = self.hosts().acquire(&host_key(url), cancel).await?;
        let reply = match self.exchange(&Ask::get(url), cancel).await? {
            Answer::Whole(reply) => reply,
            Answer::Partial(..) | Answer::NotModified(_) | Answer::Unsatisfiable { .. } => {
                return Err(Error::Internal("a document answer to a plain GET".into()));
            }
        };
        let too_long = || Error::LongBody {
            url: redact_url(url),
            expected: limit,
        };
        if reply.body_end.is_some_and(|length| length > limit) {
            return Err(too_long());
        }
        let content_type = reply.content_type();
        let announced = reply.body_end;
        let mut body = reply.into_body(self, cancel);
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await? {
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_long());
            }
            bytes.extend_from_slice(&chunk);
        }
        if let Some(expected) = announced
            && (bytes.len() as u64) < expected
        {
            return Err(Error::ShortBody {
                url: redact_url(url),
                received: bytes.len() as u64,
                expected,
            });
        }
        Ok(Document {
            bytes,
            content_type,
        })
    }

    /// Asks whether `url` would be served, without fetching it: a `HEAD` (or, for a server that
    /// refuses `HEAD`, a one-byte ranged `GET`), with the retries of a download.
    ///
    /// # Errors
    /// What a download of it would fail with first (a `404`, a refused connection, ...).
    /// Returns the file's length, when the server says.
    pub(crate) async fn probe(
        &self,
        url: &Url,
        headers: Option<&reqwest::header::HeaderMap>,
        report: &Reporter,
        cancel: &Cancel,
    ) -> Result<Option<u64>, Error> {
        let length = |answer: Answer| match answer {
            Answer::Whole(reply) | Answer::Partial(reply, _) => reply.validators.total_bytes,
            Answer::NotModified(_) | Answer::Unsatisfiable { .. } => None,
        };
        let mut policy = RetryPolicy::new(self, url, report);
        loop {
            let attempt = async {
                let _permit = self.hosts().acquire(&host_key(url), cancel).await?;
                let mut head = Ask::head(url);
                if let Some(headers) = headers {
                    head = head.with_headers(headers);
                }
                match self.exchange(&head, cancel).await {
                    Err(Error::Status {
                        status: 405 | 501, ..
                    }) => {
                        let ask = Ask::get(url).with_range(0, Some(1), None);
                        self.exchange(&ask, cancel).await.map(length)
                    }
                    other => other.map(length),
                }
            };
            let error = match attempt.await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let Some(delay) = policy.next_delay(&error, false) else {
                return Err(error);
            };
            RetryPolicy::wait(delay, cancel).await?;
        }
    }

    /// Asks whether the file at `url` still has these validators, with a conditional `HEAD`:
    /// `true` for `304`, `false` when the server answers with the file.
    ///
    /// # Errors
    /// As `fetch_document`, for the `HEAD`'s answer.
    pub(crate) async fn is_unchanged(
        &self,
        url: &Url,
        etag: Option<&str>,
        last_modified: Option<&str>,
        report: &Reporter,
        cancel: &Cancel,
    ) -> Result<bool, Error> {
        let mut policy = RetryPolicy::new(self, url, report);
        loop {
            let attempt = async {
                let _permit = self.hosts().acquire(&host_key(url), cancel).await?;
                let ask = Ask::head(url).if_changed(etag, last_modified);
                self.exchange(&ask, cancel).await
            };
            let error = match attempt.await {
                Ok(Answer::NotModified(_)) => return Ok(true),
                Ok(_) => return Ok(false),
                Err(error) => error,
            };
            let Some(delay) = policy.next_delay(&error, false) else {
                return Err(error);
            };
            RetryPolicy::wait(delay, cancel).await?;
        }
    }
}
