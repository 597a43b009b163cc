//! The one body pump: every response body haul reads comes through `BodyPump::next`, which
//! holds the rules for all of them. No byte for the stall timeout ends the attempt; so does a
//! body slower than the low-speed limit for a whole window (a trickle would otherwise hold a
//! job slot and a host slot forever); cancellation is noticed between any two chunks; the
//! shared rate limit is taken here. Only time spent waiting for the network counts toward the
//! low-speed window, so haul's own rate limit or a slow disk never makes a connection look slow.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::Client;
use super::cancel::Cancel;
use crate::Error;
use crate::config::LowSpeed;

type Chunks = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A response body, read chunk by chunk under the rules above.
pub(crate) struct BodyPump {
    body: Chunks,
    url: String,
    client: Client,
    cancel: Cancel,
    speed: Option<SpeedWindow>,
    /// The file's own rate limit, taken besides the downloader's.
    file_rate: Option<std::sync::Arc<super::rate::RateLimiter>>,
    /// Bytes of this body read so far.
    received: u64,
}

/// The low-speed check: bytes and network time in the current window.
#[derive(Debug, Clone, Copy)]
struct SpeedWindow {
    limit: LowSpeed,
    bytes: u64,
    waited: Duration,
}

impl SpeedWindow {
    fn new(limit: LowSpeed) -> Self {
        Self {
            limit,
            bytes: 0,
            waited: Duration::ZERO,
        }
    }

    /// Network time left before the window is judged.
    fn left(&self) -> Duration {
        self.limit.window.saturating_sub(self.waited)
    }

    /// At the end of a window: too slow is an error; otherwise a new window starts.
    fn judge(&mut self, url: &str) -> Result<(), Error> {
        if self.waited < self.limit.window {
            return Ok(());
        }
        let micros = u64::try_from(self.waited.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let rate = self.bytes.saturating_mul(1_000_000) / micros;
        if rate < self.limit.bytes_per_second {
            return Err(Error::TooSlow {
                url: url.to_owned(),
                bytes_per_second: rate,
                limit: self.limit.bytes_per_second,
                window: self.limit.window,
            });
        }
        *self = Self::new(self.limit);
        Ok(())
    }
}

impl BodyPump {
    pub(crate) fn new(
        response: reqwest::Response,
        url: String,
        client: &Client,
        cancel: &Cancel,
    ) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            url,
            speed: client.config().low_speed.map(SpeedWindow::new),
            client: client.clone(),
            cancel: cancel.clone(),
            file_rate: None,
            received: 0,
        }
    }

    /// Also takes every chunk from `rate`, the file's own limit (shared by its connections).
    pub(crate) fn with_file_rate(
        mut self,
        rate: Option<std::sync::Arc<super::rate::RateLimiter>>,
    ) -> Self {
        self.file_rate = rate;
        self
    }

    /// The URL (credentials redacted), for messages.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The next chunk, `None` at the end of the body.
    ///
    /// # Errors
    /// `Stalled` after the stall timeout without a byte, `TooSlow` under the low-speed limit,
    /// `Network` for transport failures (a cut body among them), `Cancelled`.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        let stall = self.client.config().stall_timeout;
        let mut silent = Duration::ZERO;
        loop {
            let mut wait = stall.saturating_sub(silent);
            if let Some(speed) = &self.speed {
                wait = wait.min(speed.left());
            }
            let began = Instant::now();
            let next = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(Error::Cancelled),
                next = tokio::time::timeout(wait, self.body.next()) => next,
            };
            let waited = began.elapsed();
            silent += waited;
            if let Some(speed) = &mut self.speed {
                speed.waited += waited;
            }
            match next {
                Ok(Some(Ok(chunk))) => {
                    self.received += chunk.len() as u64;
                    if let Some(speed) = &mut self.speed {
                        speed.bytes += chunk.len() as u64;
                        speed.judge(&self.url)?;
                    }
                    // The file's limit first, then the downloader's: each transfer waits its
                    // own turn at both, so the global rate is shared fairly.
                    for rate in [self.file_rate.as_deref(), self.client.rate()]
                        .into_iter()
                        .flatten()
                    {
                        tokio::select! {
                            () = self.cancel.cancelled() => return Err(Error::Cancelled),
                            () = rate.take(chunk.len()) => {}
                        }
                    }
                    return Ok(Some(chunk));
                }
                Ok(Some(Err(source))) => {
                    return Err(Error::Interrupted {
                        url: self.url.clone(),
                        received: self.received,
                        source: source.without_url(),
                    });
                }
                Ok(None) => return Ok(None),
                Err(_elapsed) => {
                    if silent >= stall {
                        return Err(Error::Stalled {
                            url: self.url.clone(),
                            timeout: stall,
                        });
                    }
                    if let Some(speed) = &mut self.speed {
                        speed.judge(&self.url)?;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(bytes_per_second: u64, seconds: u64) -> SpeedWindow {
        SpeedWindow::new(LowSpeed {
            bytes_per_second,
            window: Duration::from_secs(seconds),
        })
    }

    #[test]
    fn a_window_is_judged_only_when_it_is_full() {
        let mut speed = window(1000, 5);
        speed.bytes = 10;
        speed.waited = Duration::from_secs(4);
        assert!(
            speed.judge("u").is_ok(),
            "not judged before the window ends"
        );
        assert_eq!(speed.bytes, 10);
        speed.waited = Duration::from_secs(5);
        let error = speed.judge("u").unwrap_err();
        assert!(
            matches!(
                error,
                Error::TooSlow {
                    bytes_per_second: 2,
                    limit: 1000,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_fast_enough_window_starts_a_new_one() {
        let mut speed = window(1000, 5);
        speed.bytes = 5000;
        speed.waited = Duration::from_secs(5);
        assert!(speed.judge("u").is_ok());
        assert_eq!((speed.bytes, speed.waited), (0, Duration::ZERO));
        assert_eq!(speed.left(), Duration::from_secs(5));
    }
}
