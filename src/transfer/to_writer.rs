//! Streaming one download into any `AsyncWrite` (standard output, a pipe, a socket) instead of
//! a file: no `.part`, no state, no resume across runs. It takes the same road as a file: the
//! one exchange, body pump and retry policy, with events, cancellation and the host's limit.
//! Within a run, a dropped connection is resumed with `Range` and a strong `If-Range`; without
//! one, or when the server answers with the whole file again, a failure after the first byte is
//! final, because bytes already written cannot be taken back.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::client::cancel::Cancel;
use crate::client::exchange::{Answer, Ask};
use crate::client::hosts::HostPermit;
use crate::client::retry::{RetryPolicy, pushes_back};
use crate::integrity::{Checksum, Hasher};
use crate::naming::redact_url;
use crate::progress::{Event, Reporter};
use crate::{Error, Request};

/// What a download into a writer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Streamed {
    /// Bytes written.
    pub bytes: u64,
    /// The digest of what was written, when the request has a checksum (then it matched).
    pub digest: Option<Checksum>,
}

/// One download into `writer`.
pub(crate) struct ToWriter<'a> {
    pub(crate) client: &'a Client,
    pub(crate) request: &'a Request,
    pub(crate) report: &'a Reporter,
    pub(crate) cancel: &'a Cancel,
    /// The host's place, held while a request is out.
    pub(crate) permit: Option<HostPermit>,
}

/// What the stream has reached, across attempts.
struct Progress {
    written: u64,
    /// The strong validator of the first answer: the only way to trust a resumed answer.
    validator: Option<String>,
    hasher: Option<Hasher>,
    started: bool,
}

impl ToWriter<'_> {
    pub(crate) async fn run<W>(mut self, writer: &mut W) -> Result<Streamed, Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let mut progress = Progress {
            written: 0,
            validator: None,
            hasher: self
                .request
                .checksum
                .as_ref()
                .map(|c| Hasher::new(c.algorithm())),
            started: false,
        };
        let mut policy = RetryPolicy::new(self.client, &self.request.url, self.report);
        loop {
            if self.permit.is_none() {
                let host = self.request.host_key();
                self.permit = Some(self.client.hosts().acquire(&host, self.cancel).await?);
            }
            let before = progress.written;
            let error = match self.attempt(writer, &mut progress).await {
                Ok(()) => break,
                Err(error) => error,
            };
            // Without a strong validator nothing after the first byte can be trusted.
            if progress.written > 0 && progress.validator.is_none() {
                return Err(error);
            }
            if pushes_back(&error) {
                self.permit = None;
            }
            let Some(delay) = policy.next_delay(&error, progress.written > before) else {
                return Err(error);
            };
            RetryPolicy::wait(delay, self.cancel).await?;
        }
        writer
            .flush()
            .await
            .map_err(|e| Error::io("write", "the output stream", e))?;
        let digest = progress.hasher.map(Hasher::finish);
        if let (Some(expected), Some(actual)) = (&self.request.checksum, &digest)
            && expected != actual
        {
            return Err(Error::ChecksumMismatch {
                path: "the output stream".into(),
                algorithm: expected.algorithm().name(),
                expected: expected.hex(),
                actual: actual.hex(),
                announced_by: None,
            });
        }
        Ok(Streamed {
            bytes: progress.written,
            digest,
        })
    }

    async fn attempt<W>(&self, writer: &mut W, progress: &mut Progress) -> Result<(), Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let url = redact_url(&self.request.url);
        let mut ask = Ask::get(&self.request.url)
            .with_headers(&self.request.headers)
            .with_auth(self.request.auth.as_ref());
        if progress.written > 0 {
            ask = ask.with_range(progress.written, None, progress.validator.as_deref());
        }
        let reply = match self.client.exchange(&ask, self.cancel).await? {
            Answer::Whole(reply) if progress.written == 0 => {
                progress.validator = reply.validators.if_range().map(str::to_owned);
                reply
            }
            Answer::Partial(reply, _) if progress.written > 0 => reply,
            Answer::Whole(_) | Answer::Unsatisfiable { .. } => {
                return Err(Error::BadRange {
                    url,
                    detail: "the server sent the whole file again; the bytes already written \
                             cannot be taken back"
                        .into(),
                });
            }
            Answer::Partial(..) | Answer::NotModified(_) => {
                return Err(Error::Internal("an answer to a question not asked".into()));
            }
        };
        if !progress.started {
            progress.started = true;
            self.report.emit(&Event::Started {
                id: self.report.id(),
                total_bytes: reply.validators.total_bytes,
                resumed_from: 0,
                http_version: reply.version.clone(),
                proxy: self.client.proxy_for(&self.request.url),
            });
        }
        let expected_end = reply.body_end;
        let limit = self
            .request
            .max_bytes
            .or(self.client.config().max_file_bytes);
        let too_large = |announced: Option<u64>| Error::TooLarge {
            url: url.clone(),
            limit: limit.unwrap_or(0),
            announced,
        };
        if let (Some(limit), Some(total)) = (limit, reply.validators.total_bytes)
            && total > limit
        {
            return Err(too_large(Some(total)));
        }
        let file_rate = self
            .request
            .rate_limit
            .map(|rate| std::sync::Arc::new(crate::client::rate::RateLimiter::new(rate)));
        let mut body = reply
            .into_body(self.client, self.cancel)
            .with_file_rate(file_rate);
        while let Some(chunk) = body.next().await? {
            if limit.is_some_and(|limit| progress.written + chunk.len() as u64 > limit) {
                return Err(too_large(None));
            }
            // One stream into a pipe: hashing inline is cheaper than a hop to another thread.
            if let Some(hasher) = progress.hasher.as_mut() {
                hasher.update(&chunk);
            }
            writer
                .write_all(&chunk)
                .await
                .map_err(|e| Error::io("write", "the output stream", e))?;
            progress.written += chunk.len() as u64;
            self.report.emit(&Event::Progress {
                id: self.report.id(),
                bytes_done: progress.written,
            });
        }
        match expected_end {
            Some(end) if progress.written < end => Err(Error::ShortBody {
                url,
                received: progress.written,
                expected: end,
            }),
            _ => Ok(()),
        }
    }
}
