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

/// Slices of one low-speed window: the window slides by one slice at a time.
const SLICES: usize = 8;

/// The low-speed check over a sliding window of network time: the bytes received in each of the
/// last `SLICES` slices. A fast burst then ages out one window later, so a trickle after it is
/// judged one window after it starts, not on the burst's average.
#[derive(Debug, Clone, Copy)]
struct SpeedWindow {
    limit: LowSpeed,
    slice: Duration,
    /// Bytes of the last `SLICES` finished slices, a ring (no allocation per body).
    history: [u64; SLICES],
    /// Slices finished so far (the window is judged once `SLICES` are).
    finished: usize,
    /// Bytes and network time of the slice under way.
    bytes: u64,
    waited: Duration,
}

impl SpeedWindow {
    fn new(limit: LowSpeed) -> Self {
        Self {
            limit,
            slice: (limit.window / SLICES as u32).max(Duration::from_millis(1)),
            history: [0; SLICES],
            finished: 0,
            bytes: 0,
            waited: Duration::ZERO,
        }
    }

    /// Network time left in the slice under way (when the window is next judged).
    fn left(&self) -> Duration {
        self.slice.saturating_sub(self.waited)
    }

    /// `waited` more network time passed, at whose end `bytes` arrived; then, when a whole
    /// window lies behind, too slow a window is an error.
    fn record(&mut self, waited: Duration, bytes: u64, url: &str) -> Result<(), Error> {
        self.waited += waited;
        while self.waited >= self.slice {
            self.waited -= self.slice;
            self.history[self.finished % SLICES] = std::mem::take(&mut self.bytes);
            self.finished += 1;
        }
        self.bytes += bytes;
        if self.finished < SLICES {
            return Ok(());
        }
        let window = self.slice * SLICES as u32;
        let micros = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
        let received: u64 = self.history.iter().sum();
        let rate = received.saturating_mul(1_000_000) / micros;
        if rate < self.limit.bytes_per_second {
            return Err(Error::TooSlow {
                url: url.to_owned(),
                bytes_per_second: rate,
                limit: self.limit.bytes_per_second,
                window: self.limit.window,
            });
        }
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
            match next {
                Ok(Some(Ok(chunk))) => {
                    self.received += chunk.len() as u64;
                    if let Some(speed) = &mut self.speed {
                        speed.record(waited, chunk.len() as u64, &self.url)?;
                    }
                    // The file's limit first, then the downloader's: each transfer waits its
                    // own turn at both, so the global rate is shared fairly.
                    for rate in [self.file_rate.as_deref(), Some(self.client.rate())]
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
                        speed.record(waited, 0, &self.url)?;
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

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_window_is_judged_only_once_a_whole_one_lies_behind() {
        let mut speed = window(1000, 8);
        for _ in 0..7 {
            assert!(speed.record(SECOND, 10, "u").is_ok(), "not judged yet");
        }
        let error = speed.record(SECOND, 10, "u").unwrap_err();
        assert!(
            matches!(
                error,
                Error::TooSlow {
                    bytes_per_second: 8,
                    limit: 1000,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_burst_ages_out_one_window_after_the_trickle_starts() {
        let mut speed = window(1000, 8);
        // A burst far above the limit in the first second, then a byte a second.
        assert!(
            speed
                .record(Duration::from_millis(10), 1 << 20, "u")
                .is_ok()
        );
        let mut failed_at = None;
        for second in 1..=20u32 {
            if speed.record(SECOND, 1, "u").is_err() {
                failed_at = Some(second);
                break;
            }
        }
        assert_eq!(
            failed_at,
            Some(9),
            "judged on the trickle alone once the burst's slice left the window"
        );
    }

    #[test]
    fn a_steady_fast_body_is_never_judged_too_slow() {
        let mut speed = window(1000, 8);
        for _ in 0..100 {
            assert!(speed.record(Duration::from_millis(100), 200, "u").is_ok());
        }
    }

    #[test]
    fn silence_longer_than_a_window_is_judged_at_once() {
        let mut speed = window(1000, 8);
        assert!(speed.record(Duration::from_secs(30), 0, "u").is_err());
    }
}
