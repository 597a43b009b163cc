//! One retry policy for every request path: it owns the count of failures in a row, the backoff
//! (exponential with jitter, capped, or the server's `Retry-After`), the per-host penalty after a
//! `429` or `503`, and the `Retrying` event.

use std::time::{Duration, Instant};

use url::Url;

use super::Client;
use super::cancel::Cancel;
use crate::Error;
use crate::client::hosts::host_key;
use crate::progress::{Event, Reporter};

/// Retries of a refused connection: nothing listens on the port, which a restarting server
/// fixes within a second or two and nothing else fixes at all (curl fails at once; wget
/// retries it only when asked). Each is still reported as `Retrying`.
const REFUSED_RETRIES: u32 = 2;

/// The retry state of one download (or one connection of it, or one document fetch).
pub(crate) struct RetryPolicy {
    client: Client,
    host: String,
    report: Reporter,
    /// Failed attempts since the last one that made progress.
    failures: u32,
}

impl RetryPolicy {
    pub(crate) fn new(client: &Client, url: &Url, report: &Reporter) -> Self {
        Self {
            client: client.clone(),
            host: host_key(url),
            report: report.clone(),
            failures: 0,
        }
    }

    /// Decides about a failed attempt. `progressed` says whether it moved the download
    /// forward: then the count starts again, so a long download over a flaky link keeps going
    /// (except after a low-speed drop: a trickle always "progresses", and must still end).
    /// Returns the delay before the next attempt, already reported as `Retrying`, or `None` to
    /// give up. A host that pushed back (`429`, `503`) is penalized either way.
    pub(crate) fn next_delay(&mut self, error: &Error, progressed: bool) -> Option<Duration> {
        if pushes_back(error) {
            self.client.hosts().penalize(&self.host);
        }
        if !error.is_retryable() {
            return None;
        }
        if progressed && !matches!(error, Error::TooSlow { .. }) {
            self.failures = 0;
        }
        self.failures += 1;
        let config = self.client.config();
        let allowed = if error.is_connection_refused() {
            config.retries.min(REFUSED_RETRIES)
        } else {
            config.retries
        };
        if self.failures > allowed {
            return None;
        }
        let delay = retry_delay(
            self.failures,
            config.retry_delay,
            config.max_retry_wait,
            error.retry_after(),
        );
        self.report.emit(&Event::Retrying {
            id: self.report.id(),
            attempt: self.failures + 1,
            delay,
            reason: error.to_string(),
        });
        Some(delay)
    }

    /// Sleeps `delay`, or returns `Cancelled` at once when `cancel` fires.
    pub(crate) async fn wait(delay: Duration, cancel: &Cancel) -> Result<(), Error> {
        tokio::select! {
            () = cancel.cancelled() => Err(Error::Cancelled),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// Whether the server asked for fewer requests (`429 Too Many Requests`, `503 Service
/// Unavailable`): the host then gets fewer connections for a while.
pub(crate) fn pushes_back(error: &Error) -> bool {
    matches!(
        error,
        Error::Status {
            status: 429 | 503,
            ..
        }
    )
}

/// Exponential backoff with "equal jitter": half the delay is fixed, half random, so retries of
/// many downloads do not arrive together. A server's `Retry-After` wins, both capped by `max`.
pub(crate) fn retry_delay(
    failures: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    if let Some(asked) = retry_after {
        return asked.min(max);
    }
    let exponential = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = exponential.min(max);
    let half = capped / 2;
    half + half.mul_f64(random_unit())
}

/// A number in `[0, 1)` from the standard library's randomly seeded hasher; good enough for
/// jitter and free of a dependency.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_respects_the_cap() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(10);
        for failures in 1..=8 {
            let full = base.saturating_mul(1 << (failures - 1)).min(max);
            let delay = retry_delay(failures, base, max, None);
            assert!(delay >= full / 2 && delay <= full, "{failures}: {delay:?}");
        }
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(10);
        let asked = Some(Duration::from_secs(3));
        assert_eq!(retry_delay(1, base, max, asked), Duration::from_secs(3));
        let too_long = Some(Duration::from_secs(3600));
        assert_eq!(retry_delay(1, base, max, too_long), max);
    }

    fn policy(retries: u32) -> RetryPolicy {
        let config = crate::config::Config {
            retries,
            retry_delay: Duration::from_millis(1),
            ..crate::config::Config::default()
        };
        let client = Client::for_tests(config);
        let url = Url::parse("http://h/f").unwrap();
        RetryPolicy::new(&client, &url, &Reporter::silent())
    }

    fn status(code: u16) -> Error {
        Error::Status {
            url: "u".into(),
            status: code,
            retry_after: None,
        }
    }

    #[test]
    fn the_budget_counts_failures_in_a_row_and_progress_restarts_it() {
        let mut policy = policy(2);
        assert!(policy.next_delay(&status(503), false).is_some());
        assert!(policy.next_delay(&status(503), false).is_some());
        assert!(policy.next_delay(&status(503), false).is_none(), "spent");
        assert!(policy.next_delay(&status(503), true).is_some(), "progress");
        assert!(policy.next_delay(&status(404), true).is_none(), "permanent");
    }

    #[test]
    fn a_trickle_never_restarts_the_budget() {
        let mut policy = policy(1);
        let slow = Error::TooSlow {
            url: "u".into(),
            bytes_per_second: 1,
            limit: 10,
            window: Duration::from_secs(5),
        };
        assert!(policy.next_delay(&slow, true).is_some());
        assert!(policy.next_delay(&slow, true).is_none());
    }
}
