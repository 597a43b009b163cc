//! Backoff between attempts: exponential with jitter, or what the server asked for.

use std::time::{Duration, Instant};

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
}
