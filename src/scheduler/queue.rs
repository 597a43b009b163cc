//! The queue's bookkeeping: per host, its waiting work in submission order, and the hosts by
//! their first waiting entry's number, so the driver finds the next startable download
//! without scanning every entry. Positions change by renumbering (`reposition`).

use std::collections::{BTreeMap, HashMap, VecDeque};

use tokio_util::sync::CancellationToken;

use super::Work;
use crate::progress::TransferId;

#[derive(Default)]
pub(super) struct Queue {
    /// Per host, its waiting downloads in submission order.
    pub(super) hosts: HashMap<String, VecDeque<Waiting>>,
    /// The hosts with waiting downloads, by the sequence number of their first one.
    pub(super) heads: BTreeMap<u64, String>,
    pub(super) next_sequence: u64,
    pub(super) waiting: usize,
    pub(super) driver_running: bool,
}

impl Queue {
    /// Adds work at the end; `true` when a driver must be started.
    pub(super) fn push(&mut self, host: String, cancel: CancellationToken, work: Work) -> bool {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.waiting += 1;
        let list = self.hosts.entry(host.clone()).or_default();
        let first = list.is_empty();
        list.push_back(Waiting {
            sequence,
            cancel,
            work,
        });
        if first {
            self.heads.insert(sequence, host);
        }
        !std::mem::replace(&mut self.driver_running, true)
    }

    /// Takes the download `id` out of the queue.
    pub(super) fn take(&mut self, id: TransferId) -> Option<Work> {
        let (host, index) = self.hosts.iter().find_map(|(host, list)| {
            let index = list.iter().position(|w| w.id() == Some(id))?;
            Some((host.clone(), index))
        })?;
        let list = self.hosts.get_mut(&host)?;
        let front = list.front().map(|w| w.sequence);
        let taken = list.remove(index)?;
        if let Some(front) = front {
            self.heads.remove(&front);
        }
        match list.front() {
            Some(next) => {
                self.heads.insert(next.sequence, host);
            }
            None => {
                self.hosts.remove(&host);
            }
        }
        self.waiting -= 1;
        Some(taken.work)
    }

    /// See [`Scheduler::reposition`]: the waiting work is numbered anew in its new order
    /// (every number stays below `next_sequence`, so later submissions still come last).
    pub(super) fn reposition(&mut self, id: TransferId, position: usize) -> Option<usize> {
        // (sequence, host, index in the host's list, is a download) in the queue's order.
        let mut order: Vec<(u64, String, usize, Option<TransferId>)> = self
            .hosts
            .iter()
            .flat_map(|(host, list)| {
                list.iter()
                    .enumerate()
                    .map(|(index, w)| (w.sequence, host.clone(), index, w.id()))
            })
            .collect();
        order.sort_unstable_by_key(|entry| entry.0);
        let from = order.iter().position(|entry| entry.3 == Some(id))?;
        let moved = order.remove(from);
        let downloads: Vec<usize> = (0..order.len()).filter(|&i| order[i].3.is_some()).collect();
        let to = position.min(downloads.len());
        let at = downloads.get(to).copied().unwrap_or(order.len());
        order.insert(at, moved);
        for (sequence, (_, host, index, _)) in order.iter().enumerate() {
            if let Some(waiting) = self.hosts.get_mut(host).and_then(|l| l.get_mut(*index)) {
                waiting.sequence = sequence as u64;
            }
        }
        self.heads.clear();
        for (host, list) in &mut self.hosts {
            list.make_contiguous().sort_unstable_by_key(|w| w.sequence);
            if let Some(front) = list.front() {
                self.heads.insert(front.sequence, host.clone());
            }
        }
        Some(to)
    }
}

/// Work waiting for its places.
pub(super) struct Waiting {
    pub(super) sequence: u64,
    pub(super) cancel: CancellationToken,
    pub(super) work: Work,
}

impl Waiting {
    /// The download's id (`None` for work that is not a file download).
    pub(super) fn id(&self) -> Option<TransferId> {
        match &self.work {
            Work::File(job) => Some(job.report.id()),
            Work::Admit(_) => None,
        }
    }
}
