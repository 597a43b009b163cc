//! Short file-system work (looking at an output before its download, committing a small file
//! without a sync) run where it costs least. On a local disk such work takes tens of
//! microseconds, less than the two thread wake-ups of a trip to tokio's blocking pool: with
//! thousands of small files those trips were most of haul's time per file. On a slow or
//! hung file system (NFS) the same call may take seconds and must not hold a runtime thread.
//! So the work goes to the blocking pool until the file system has shown itself fast
//! (`TRUST_AFTER` calls in a row under `FAST`), then runs inline. An inline call over `SLOW`
//! sends the work back to the pool, and trust must be earned again by twice as many quick
//! calls as the last time: a machine so loaded that an inline call was merely preempted for
//! 10 ms (at `-j 256` on two cores it happens) soon runs inline again, while a file system
//! that is slow now and then is soon never trusted (a hung one never is: its pooled calls are
//! slow).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::Error;

/// A call this quick on the blocking pool counts towards trust.
const FAST: Duration = Duration::from_millis(1);
/// Pooled calls in a row under `FAST` before calls run inline.
const TRUST_AFTER: u32 = 32;
/// An inline call this slow sends the work back to the pool (see the module's comment).
const SLOW: Duration = Duration::from_millis(10);
/// At most this many doublings of `TRUST_AFTER` (then about two million quick calls).
const MOST_STRIKES: u32 = 16;

/// Where short file-system work runs; one per downloader.
#[derive(Debug, Default)]
pub(crate) struct QuickFs {
    /// Pooled calls in a row that were quick.
    quick_in_a_row: AtomicU32,
    /// Inline calls that were slow: each doubles the quick calls trust needs.
    strikes: AtomicU32,
}

impl QuickFs {
    /// Runs `work` inline when the file system has proven fast, else on the blocking pool.
    ///
    /// # Errors
    /// `work`'s own error, or `Internal` when the pooled task panicked (`what` names it).
    pub(crate) async fn run<T, F>(&self, what: &str, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        if self.trusted() {
            let started = Instant::now();
            let result = work();
            if started.elapsed() > SLOW {
                self.quick_in_a_row.store(0, Ordering::Relaxed);
                self.strikes.fetch_add(1, Ordering::Relaxed);
            }
            return result;
        }
        let (result, took) = on_pool(what, move || {
            let started = Instant::now();
            let result = work();
            Ok((result, started.elapsed()))
        })
        .await?;
        self.observe(took);
        result
    }

    /// Whether calls run inline now: the file system proved fast, by more calls after each
    /// slow inline one.
    fn trusted(&self) -> bool {
        let strikes = self.strikes.load(Ordering::Relaxed).min(MOST_STRIKES);
        self.quick_in_a_row.load(Ordering::Relaxed) >= TRUST_AFTER << strikes
    }

    /// Counts one pooled call's duration towards (or against) trust.
    fn observe(&self, took: Duration) {
        if took < FAST {
            self.quick_in_a_row.fetch_add(1, Ordering::Relaxed);
        } else {
            self.quick_in_a_row.store(0, Ordering::Relaxed);
        }
    }
}

/// Runs `work` on tokio's blocking pool (work that may wait, such as a sync).
///
/// # Errors
/// `work`'s own error, or `Internal` when the task panicked (`what` names it).
pub(crate) async fn on_pool<T, F>(what: &str, work: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("{what} failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_inline_only_after_the_file_system_proved_quick_and_slow_calls_cost_trust() {
        let quick = QuickFs::default();
        for _ in 0..TRUST_AFTER - 1 {
            quick.observe(Duration::from_micros(50));
        }
        quick.observe(Duration::from_millis(5));
        assert!(
            !quick.trusted(),
            "one slow pooled call starts the count again"
        );
        for _ in 0..TRUST_AFTER {
            quick.observe(Duration::from_micros(50));
        }
        assert!(quick.trusted());
        let thread = std::thread::current().id();
        let ran_on = quick
            .run("a look", move || Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_eq!(ran_on, thread, "inline, on the calling thread");
        quick
            .run("a look", || {
                std::thread::sleep(SLOW * 2);
                Ok(())
            })
            .await
            .unwrap();
        assert!(!quick.trusted(), "a slow inline call ends inline calls");
        let ran_on = quick
            .run("a look", move || Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(ran_on, thread, "on the blocking pool again");
        // Trust comes back, after twice as many quick calls as the first time (that pooled
        // call was the first).
        for _ in 2..TRUST_AFTER * 2 {
            quick.observe(Duration::from_micros(50));
        }
        assert!(!quick.trusted(), "not after as many as the first time");
        quick.observe(Duration::from_micros(50));
        assert!(quick.trusted());
        for strike in 2..=40 {
            quick.strikes.store(strike, Ordering::Relaxed);
            quick.quick_in_a_row.store(u32::MAX, Ordering::Relaxed);
            assert!(quick.trusted(), "the doubling stops: no overflow");
        }
    }
}
