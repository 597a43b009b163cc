//! The file-descriptor budget. Every download in flight holds a few descriptors (its sockets,
//! its `.part`, its state file while it is replaced), and a small file whose body has arrived
//! holds one more while it waits for its commit. haul raises its soft limit to the hard one at
//! start, caps `jobs` to what fits in it, and bounds the commits waiting at once, so that a
//! low `ulimit -n` slows a batch down instead of failing files ("Too many open files").

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything but downloads: standard streams, the runtime's poller and
/// wakers, log and event files, the sync lock and memory, DNS look-ups.
const RESERVED: u64 = 24;
/// Descriptors of one download besides its connections: its `.part`, its state file while it
/// is replaced, and a directory opened for a look or a rename.
const PER_JOB: u64 = 3;
/// The most commits waiting at once, whatever the budget.
const MAX_COMMITS: u64 = 256;

/// How the downloads of one downloader fit in the process's descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fit {
    /// Downloads at once (the `jobs` asked for, or fewer).
    pub(crate) jobs: usize,
    /// Finished bodies waiting for their commit at once.
    pub(crate) commits: usize,
}

impl Fit {
    /// Fits `jobs` downloads of up to `connections` connections each in `limit` descriptors.
    pub(crate) fn new(limit: u64, jobs: usize, connections: usize) -> Self {
        let per_job = connections.max(1) as u64 + PER_JOB;
        let usable = limit.saturating_sub(RESERVED).max(per_job + 1);
        let fitting = usize::try_from(usable / per_job)
            .unwrap_or(usize::MAX)
            .max(1);
        let jobs = jobs.clamp(1, fitting);
        let left = usable.saturating_sub(jobs as u64 * per_job);
        let commits = usize::try_from(left.clamp(1, MAX_COMMITS)).unwrap_or(1);
        Self { jobs, commits }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one (as far as the kernel allows) and returns
/// the soft limit in force; `None` when the limit cannot be read or is unlimited.
pub(crate) fn raise_limit() -> Option<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (current, maximum)
        && hard > soft
    {
        // `nr_open` may be below the hard limit; then the soft limit stays as it was.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_capped_to_what_the_descriptors_hold() {
        let fit = Fit::new(64, 8, 4);
        assert_eq!(fit.jobs, 5, "(64 - 24) / (4 + 3)");
        assert_eq!(fit.commits, 5, "what is left");
        let roomy = Fit::new(1 << 20, 8, 4);
        assert_eq!((roomy.jobs, roomy.commits), (8, 256));
        let tiny = Fit::new(10, 8, 16);
        assert_eq!((tiny.jobs, tiny.commits), (1, 1), "never nothing");
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = raise_limit();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(limit, now.current, "what is in force is reported");
        // The kernel refuses a soft limit above `nr_open`, whatever the hard limit says.
        let nr_open: Option<u64> = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok());
        if let (Some(soft), Some(hard)) = (now.current, now.maximum) {
            let reachable = nr_open.map_or(hard, |most| hard.min(most));
            assert_eq!(soft, reachable, "raised as far as the kernel allows");
        }
    }
}
