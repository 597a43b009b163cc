//! Streaming one download into any `AsyncWrite` (standard output, a pipe, a socket) instead of
//! a file: no `.part`, no state, no resume across runs. Within a run, a dropped connection is
//! resumed with `Range` and a strong `If-Range`; without one, or when the server answers with
//! the whole file again, a failure after the first byte is final, because bytes already written
//! cannot be taken back.

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, IF_RANGE, RANGE};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::client::http;
use crate::integrity::{Checksum, Hasher};
use crate::naming::redact_url;
use crate::{Downloader, Error, Request};

/// What a download into a writer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Streamed {
    /// Bytes written.
    pub bytes: u64,
    /// The digest of what was written, when the request has a checksum (then it matched).
    pub digest: Option<Checksum>,
}

impl Downloader {
    /// Downloads `request`'s URL into `writer`, verifying its checksum at the end (a mismatch
    /// is an error, but the bytes were written: the caller must discard them).
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
        let config = &self.shared.config;
        let mut hasher = request
            .checksum
            .as_ref()
            .map(|c| Hasher::new(c.algorithm()));
        let mut written = 0u64;
        let mut validator: Option<String> = None;
        let mut failures = 0u32;
        loop {
            let before = written;
            let result = self
                .stream_once(request, writer, &mut written, &mut validator, &mut hasher)
                .await;
            let error = match result {
                Ok(()) => break,
                Err(error) => error,
            };
            // Without a strong validator nothing after the first byte can be trusted.
            let resumable = written == 0 || validator.is_some();
            if written > before {
                failures = 0;
            }
            failures += 1;
            if !error.is_retryable() || !resumable || failures > config.retries {
                return Err(error);
            }
            let delay = crate::client::retry::retry_delay(
                failures,
                config.retry_delay,
                config.max_retry_wait,
                error.retry_after(),
            );
            tokio::time::sleep(delay).await;
        }
        writer
            .flush()
            .await
            .map_err(|e| Error::io("write", "<output>", e))?;
        let digest = hasher.map(Hasher::finish);
        if let (Some(expected), Some(actual)) = (&request.checksum, &digest)
            && expected != actual
        {
            return Err(Error::ChecksumMismatch {
                path: "<output>".into(),
                algorithm: expected.algorithm().name(),
                expected: expected.hex(),
                actual: actual.hex(),
            });
        }
        Ok(Streamed {
            bytes: written,
            digest,
        })
    }

    async fn stream_once<W>(
        &self,
        request: &Request,
        writer: &mut W,
        written: &mut u64,
        validator: &mut Option<String>,
        hasher: &mut Option<Hasher>,
    ) -> Result<(), Error>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let url = redact_url(&request.url);
        let mut builder = self
            .shared
            .client
            .get(request.url.clone())
            .header(ACCEPT_ENCODING, "identity")
            .headers(request.headers.clone());
        if *written > 0 {
            builder = builder.header(RANGE, format!("bytes={written}-"));
            if let Some(value) = validator.as_deref() {
                builder = builder.header(IF_RANGE, value);
            }
        }
        let response = builder.send().await.map_err(|source| Error::Network {
            url: url.clone(),
            source: source.without_url(),
        })?;
        let status = response.status();
        match status {
            StatusCode::OK if *written == 0 => {
                *validator = http::validators(response.headers(), None)
                    .if_range()
                    .map(str::to_owned);
            }
            StatusCode::PARTIAL_CONTENT if *written > 0 => {
                let start = http::content_range(response.headers()).map(|r| r.start);
                if start != Some(*written) {
                    return Err(Error::BadRange {
                        url,
                        detail: format!("asked for bytes from {written}, got {start:?}"),
                    });
                }
            }
            StatusCode::OK => {
                return Err(Error::BadRange {
                    url,
                    detail: "the server sent the whole file again; the bytes already written \
                             cannot be taken back"
                        .into(),
                });
            }
            status => {
                return Err(Error::Status {
                    url,
                    status: status.as_u16(),
                    retry_after: http::retry_after(response.headers()),
                });
            }
        }
        let expected_end = response.content_length().map(|length| *written + length);
        let stall = self.shared.config.stall_timeout;
        let mut body = response.bytes_stream();
        loop {
            let next = tokio::time::timeout(stall, body.next())
                .await
                .map_err(|_| Error::Stalled {
                    url: url.clone(),
                    timeout: stall,
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|source| Error::Network {
                url: url.clone(),
                source: source.without_url(),
            })?;
            if let Some(rate) = &self.shared.rate {
                rate.take(chunk.len()).await;
            }
            // One stream into a pipe: hashing inline is cheaper than a hop to another thread.
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            writer
                .write_all(&chunk)
                .await
                .map_err(|e| Error::io("write", "<output>", e))?;
            *written += chunk.len() as u64;
        }
        match expected_end {
            Some(end) if *written < end => Err(Error::ShortBody {
                url,
                received: *written,
                expected: end,
            }),
            _ => Ok(()),
        }
    }
}
