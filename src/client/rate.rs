//! A byte-rate limit shared by every transfer of a `Downloader` (`--limit-rate`): a token bucket
//! that lets a reader go into debt and sleep it off, so concurrent transfers share the rate
//! roughly first come, first served, and nothing is read that the rate does not allow.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Shared limit on bytes per second.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    bytes_per_second: f64,
    /// Tokens that may accumulate while nobody reads: a short burst, never a long one.
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Available bytes; negative when readers are in debt.
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        Self {
            bytes_per_second: rate,
            burst: (rate / 10.0).max(16.0 * 1024.0),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                refilled: Instant::now(),
            }),
        }
    }

    /// Takes `bytes` from the bucket, sleeping for as long as that puts the bucket in debt.
    pub(crate) async fn take(&self, bytes: usize) {
        let wait = {
            let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let earned = now.duration_since(bucket.refilled).as_secs_f64() * self.bytes_per_second;
            bucket.tokens = (bucket.tokens + earned).min(self.burst);
            bucket.refilled = now;
            bucket.tokens -= bytes as f64;
            if bucket.tokens >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-bucket.tokens / self.bytes_per_second)
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn readers_together_get_the_rate_and_no_more() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1_000_000));
        let started = Instant::now();
        let mut readers = Vec::new();
        for _ in 0..4 {
            let limiter = std::sync::Arc::clone(&limiter);
            readers.push(tokio::spawn(async move {
                for _ in 0..50 {
                    limiter.take(10_000).await;
                }
            }));
        }
        for reader in readers {
            reader.await.unwrap();
        }
        // 2 MB at 1 MB/s, less the initial burst allowance (none: the bucket starts empty).
        let elapsed = started.elapsed().as_secs_f64();
        assert!((1.9..=2.1).contains(&elapsed), "{elapsed}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_builds_only_a_short_burst() {
        let limiter = RateLimiter::new(1_000_000);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let started = Instant::now();
        limiter.take(1_100_000).await;
        let elapsed = started.elapsed().as_secs_f64();
        assert!((0.99..=1.01).contains(&elapsed), "{elapsed}");
    }
}
