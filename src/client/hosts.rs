//! Per-host connection limits shared by every download of a `Downloader`: the first
//! connection of each file and every extra segment connection count against the same limit.
//! A host that answers 429 or 503 gets half as many connections, recovering one every
//! `RECOVERY_STEP` (additive increase, multiplicative decrease), instead of every queued
//! request hammering it at once. Releasing a permit wakes the scheduler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a penalized host waits for each connection it gets back.
pub(crate) const RECOVERY_STEP: Duration = Duration::from_secs(10);

/// Penalties closer together than this are one.
const PENALTY_SPACING: Duration = Duration::from_secs(1);

/// The limits of all hosts.
pub(crate) struct HostLimits {
    per_host: usize,
    hosts: Arc<Mutex<HashMap<Arc<str>, HostState>>>,
    released: Arc<Released>,
}

/// Wake-ups for whoever waits for a permit.
#[derive(Default)]
struct Released {
    /// The scheduler's: one stored wake-up, so none is lost while it is busy.
    scheduler: Notify,
    /// Everyone else's (`acquire`): all of them look again.
    waiters: Notify,
}

#[derive(Debug, Clone, Copy)]
struct HostState {
    in_use: usize,
    /// The reduced limit and when it was set, after a 429 or 503.
    penalty: Option<(usize, Instant)>,
}

impl HostState {
    fn limit(&self, base: usize, now: Instant) -> usize {
        match self.penalty {
            None => base,
            Some((reduced, since)) => {
                let steps = now.duration_since(since).as_secs() / RECOVERY_STEP.as_secs().max(1);
                reduced
                    .saturating_add(usize::try_from(steps).unwrap_or(usize::MAX))
                    .min(base)
            }
        }
    }
}

/// One connection's right to talk to a host; released on drop.
pub(crate) struct HostPermit {
    host: Arc<str>,
    hosts: Arc<Mutex<HashMap<Arc<str>, HostState>>>,
    released: Arc<Released>,
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        if let Some(state) = self
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&*self.host)
        {
            state.in_use = state.in_use.saturating_sub(1);
        }
        // `notify_one` keeps a wake-up for a scheduler that is not waiting yet: none is lost.
        self.released.scheduler.notify_one();
        self.released.waiters.notify_waiters();
    }
}

impl HostLimits {
    pub(crate) fn new(per_host: usize) -> Self {
        Self {
            per_host,
            hosts: Arc::new(Mutex::new(HashMap::new())),
            released: Arc::new(Released::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, HostState>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit for one more connection to `host`, if the host has room now.
    pub(crate) fn try_acquire(&self, host: &str) -> Option<HostPermit> {
        let mut hosts = self.lock();
        // The key is made once per host; a permit shares it (this runs for every request).
        let key = match hosts.get_key_value(host) {
            Some((key, _)) => Arc::clone(key),
            None => host.into(),
        };
        let state = hosts.entry(Arc::clone(&key)).or_insert(HostState {
            in_use: 0,
            penalty: None,
        });
        if state.in_use >= state.limit(self.per_host, Instant::now()) {
            return None;
        }
        state.in_use += 1;
        Some(HostPermit {
            host: key,
            hosts: Arc::clone(&self.hosts),
            released: Arc::clone(&self.released),
        })
    }

    /// Waits for a permit for `host` (for work outside the scheduler's queue, such as a
    /// listing fetch or a connection taking its place back after a backoff).
    ///
    /// # Errors
    /// `Cancelled` when `cancel` fires first.
    pub(crate) async fn acquire(
        &self,
        host: &str,
        cancel: &crate::client::cancel::Cancel,
    ) -> Result<HostPermit, crate::Error> {
        loop {
            // Registered before looking, so a release in between is not missed.
            let released = self.released.waiters.notified();
            if let Some(permit) = self.try_acquire(host) {
                return Ok(permit);
            }
            tokio::select! {
                () = cancel.cancelled() => return Err(crate::Error::Cancelled),
                () = released => {}
                // A penalized host gets connections back with time, not with a release.
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// The host said "too many" (429) or "unavailable" (503): halve what it gets now. The
    /// answers of one burst count once: a second halving needs a second's distance.
    pub(crate) fn penalize(&self, host: &str) {
        let now = Instant::now();
        let mut hosts = self.lock();
        let state = hosts.entry(host.into()).or_insert(HostState {
            in_use: 0,
            penalty: None,
        });
        if state
            .penalty
            .is_some_and(|(_, since)| now.duration_since(since) < PENALTY_SPACING)
        {
            return;
        }
        let current = state.limit(self.per_host, now);
        state.penalty = Some(((current / 2).max(1), now));
    }

    /// The limit `host` has now (for tests and diagnostics).
    #[cfg(test)]
    fn limit_of(&self, host: &str) -> usize {
        self.lock()
            .get(host)
            .map_or(self.per_host, |s| s.limit(self.per_host, Instant::now()))
    }

    /// Completes when some permit was released since the last call.
    pub(crate) async fn released(&self) {
        self.released.scheduler.notified().await;
    }
}

/// The key the per-host limit counts by: scheme, host and port.
pub(crate) fn host_key(url: &url::Url) -> String {
    use std::fmt::Write as _;
    let scheme = url.scheme();
    let host = url.host_str().unwrap_or("");
    // Sized once (`format!` grew it twice for every request).
    let mut key = String::with_capacity(scheme.len() + host.len() + 9);
    let _ = write!(
        key,
        "{scheme}://{host}:{}",
        url.port_or_known_default().unwrap_or(0)
    );
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn permits_are_counted_per_host_and_wake_the_waiter_when_released() {
        let limits = HostLimits::new(2);
        let a1 = limits.try_acquire("a").unwrap();
        let _a2 = limits.try_acquire("a").unwrap();
        assert!(limits.try_acquire("a").is_none(), "a is full");
        assert!(limits.try_acquire("b").is_some(), "b has its own limit");
        drop(a1);
        limits.released().await;
        assert!(limits.try_acquire("a").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_that_pushes_back_gets_fewer_connections_then_recovers() {
        let limits = HostLimits::new(8);
        limits.penalize("h");
        limits.penalize("h");
        assert_eq!(limits.limit_of("h"), 4, "one burst halves once");
        tokio::time::advance(PENALTY_SPACING).await;
        limits.penalize("h");
        assert_eq!(limits.limit_of("h"), 2);
        let held: Vec<HostPermit> = (0..2).filter_map(|_| limits.try_acquire("h")).collect();
        assert_eq!(held.len(), 2);
        assert!(limits.try_acquire("h").is_none(), "the reduced limit holds");
        tokio::time::advance(RECOVERY_STEP * 3).await;
        assert_eq!(limits.limit_of("h"), 5, "one connection back per step");
        tokio::time::advance(RECOVERY_STEP * 10).await;
        assert_eq!(limits.limit_of("h"), 8, "never above the configured limit");
        assert_eq!(limits.limit_of("other"), 8);
    }
}
