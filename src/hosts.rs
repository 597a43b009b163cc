//! Per-host connection limits shared by every download of a `Downloader`: a semaphore per host,
//! so that the first connection of each file and every extra segment connection count against
//! the same limit. Releasing a permit wakes the scheduler, which may be waiting for room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The limits of all hosts.
pub(crate) struct HostLimits {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    released: Arc<Notify>,
}

/// One connection's right to talk to a host; released on drop.
pub(crate) struct HostPermit {
    _permit: OwnedSemaphorePermit,
    released: Arc<Notify>,
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        // `notify_one` keeps a wake-up for a scheduler that is not waiting yet: none is lost.
        self.released.notify_one();
    }
}

impl HostLimits {
    pub(crate) fn new(per_host: usize) -> Self {
        Self {
            per_host,
            hosts: Mutex::new(HashMap::new()),
            released: Arc::new(Notify::new()),
        }
    }

    fn semaphore(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            hosts
                .entry(host.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_host))),
        )
    }

    /// A permit for one more connection to `host`, if the host has room now.
    pub(crate) fn try_acquire(&self, host: &str) -> Option<HostPermit> {
        let permit = self.semaphore(host).try_acquire_owned().ok()?;
        Some(HostPermit {
            _permit: permit,
            released: Arc::clone(&self.released),
        })
    }

    /// Completes when some permit was released since the last call.
    pub(crate) async fn released(&self) {
        self.released.notified().await;
    }
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
}
