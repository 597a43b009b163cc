//! A byte-rate limit shared by every transfer of a `Downloader` (`--limit-rate`): a token bucket
//! that lets a reader go into debt and sleep it off, so concurrent transfers share the rate
//! roughly first come, first served, and nothing is read that the rate does not allow. The
//! rate can change while transfers run (a bandwidth schedule, a service's live limit); 0 is
//! no limit, and then taking costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Shared limit on bytes per second.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Bytes per second; 0 for no limit.
    bytes_per_second: AtomicU64,
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
        Self {
            bytes_per_second: AtomicU64::new(bytes_per_second.max(1)),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                refilled: Instant::now(),
            }),
        }
    }

    /// A limiter that lets everything through until a rate is set.
    pub(crate) fn unlimited() -> Self {
        let limiter = Self::new(1);
        limiter.set(None);
        limiter
    }

    /// The rate from now on (`None`: no limit). A reader sleeping off a debt under the old
    /// rate finishes that sleep; the next takes use the new one.
    pub(crate) fn set(&self, bytes_per_second: Option<u64>) {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        // What was earned under the old rate stays earned; debt under it is forgiven.
        bucket.tokens = bucket.tokens.max(0.0);
        bucket.refilled = Instant::now();
        self.bytes_per_second
            .store(bytes_per_second.map_or(0, |r| r.max(1)), Ordering::Release);
    }

    /// The rate now (`None`: no limit).
    pub(crate) fn get(&self) -> Option<u64> {
        Some(self.bytes_per_second.load(Ordering::Acquire)).filter(|r| *r > 0)
    }

    /// Takes `bytes` from the bucket, sleeping for as long as that puts the bucket in debt.
    pub(crate) async fn take(&self, bytes: usize) {
        let wait = {
            let Some(rate) = self.get() else {
                return;
            };
            let rate = rate as f64;
            // Tokens that may accumulate while nobody reads: a short burst, never a long one.
            let burst = (rate / 10.0).max(16.0 * 1024.0);
            let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let earned = now.duration_since(bucket.refilled).as_secs_f64() * rate;
            bucket.tokens = (bucket.tokens + earned).min(burst);
            bucket.refilled = now;
            bucket.tokens -= bytes as f64;
            if bucket.tokens >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-bucket.tokens / rate)
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_new_rate_applies_to_the_next_takes() {
        let limiter = RateLimiter::unlimited();
        let started = Instant::now();
        limiter.take(10_000_000).await;
        assert!(
            started.elapsed() < Duration::from_millis(1),
            "no limit: no wait"
        );
        limiter.set(Some(100_000));
        let started = Instant::now();
        for _ in 0..10 {
            limiter.take(10_000).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        assert!(
            (0.9..=1.1).contains(&elapsed),
            "100 kB at 100 kB/s: {elapsed}"
        );
        limiter.set(None);
        let started = Instant::now();
        limiter.take(10_000_000).await;
        assert!(started.elapsed() < Duration::from_millis(1));
        assert_eq!(limiter.get(), None);
    }

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
