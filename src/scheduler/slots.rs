//! The places a download holds while it runs: its job slot (one of `jobs` on the network), its
//! count among the running tasks, and its host permit; each is given back when dropped, and
//! the driver is woken to start the next.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Scheduler;
use crate::client::hosts::HostPermit;

/// The places of admitted work, given back when dropped.
pub(crate) struct Admission {
    pub(crate) permit: HostPermit,
    /// Held for its `Drop`.
    pub(super) slot: JobSlot,
    /// Held for its `Drop`.
    pub(super) running: Running,
}

impl Admission {
    /// Keeps the job slot and gives the host's place back: for requests that take the host's
    /// place themselves, once per attempt (documents, probes), so retries do not hold it.
    pub(crate) fn job_slot_only(self) -> SideSlot {
        SideSlot {
            _slot: self.slot,
            _running: self.running,
        }
    }
}

/// A job slot held by a request the library makes on a caller's behalf (a listing page, a
/// checksum file, a conditional `HEAD`): such requests count against `jobs` like downloads.
pub(crate) struct SideSlot {
    _slot: JobSlot,
    _running: Running,
}

/// A download's place among the `jobs` on the network at once; given back on drop (when the
/// body has arrived, or when the download ends).
pub(super) struct JobSlot {
    pub(super) scheduler: Arc<Scheduler>,
}

impl Drop for JobSlot {
    fn drop(&mut self) {
        self.scheduler.on_network.fetch_sub(1, Ordering::AcqRel);
        // `notify_one` keeps a wake-up for a driver that is not waiting yet: none is lost.
        self.scheduler.wake.notify_one();
    }
}

/// Counts a download task while it lives.
pub(super) struct Running {
    pub(super) scheduler: Arc<Scheduler>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.scheduler.running.fetch_sub(1, Ordering::AcqRel);
        self.scheduler.wake.notify_one();
    }
}
