//! Group commit: the syncs of many small files share one flush of their file system.
//!
//! While one flush runs, every file that finishes writing waits, and the next flush
//! (`syncfs`, which writes back every dirty file of the file system and flushes the device
//! once) covers all of them: a flush that *starts* after a file's data was written covers that
//! file. A file that finishes while nothing else is waiting uses its own `fdatasync`, so a lone
//! file never waits for other writers of the file system.
//!
//! The shared flushes run on a thread of their own (the flusher), set to work by the waiter
//! that finds none running; it lingers `FLUSHER_LINGER` after the last waiter, then ends. A
//! task waits as a future, holding no thread, woken once by its own flush (a small file's
//! commit used to hold a blocking thread through two flushes, and every flush woke them all);
//! code already on a blocking thread waits on a condition variable. Before a shared flush
//! starts, the flusher waits as long as the previous one took (at most `GATHER_CAP`), so that
//! files finishing meanwhile join it: on a fast disk flushes otherwise follow each other as
//! fast as they end, two or three files each, and every one is a journal commit
//! (benches/RESULTS.md, twelfth and thirteenth sessions).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Runs a sync on tokio's blocking pool; a task that panicked is an error.
pub(super) async fn run_blocking(
    sync: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<()> {
    tokio::task::spawn_blocking(sync)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("a sync failed: {e}"))))
}

/// The longest a shared flush waits for more files to join it: a slow disk's flush (tens of
/// milliseconds) gathers many files by itself, and a file's commit never waits much longer.
const GATHER_CAP: Duration = Duration::from_millis(2);

/// How a group makes durable what it was given: every file of the file system, or one
/// descriptor's. Functions, so that tests can watch them.
type Flush = fn(BorrowedFd<'_>) -> io::Result<()>;

fn flush_file_system(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::fs::syncfs(fd).map_err(io::Error::from)
}

fn flush_one(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::fs::fdatasync(fd).map_err(io::Error::from)
}

/// One file system's group commit: a flush that *starts* after a file's data was written
/// covers that file.
#[derive(Debug)]
pub(super) struct GroupSync {
    state: Mutex<Round>,
    /// Wakes the waiting threads when a flush ends or the flusher stops. (Waiting tasks are
    /// woken by their flush's own `Notify`, in `Round`: each once, not at every flush.)
    changed: Condvar,
    /// Wakes an idle flusher when files wait again.
    flusher_wanted: Condvar,
    /// At most this long a shared flush waits for more files (`GATHER_CAP`; tests widen it).
    gather_cap: Duration,
    flush_all: Flush,
    flush_alone: Flush,
}

impl Default for GroupSync {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            changed: Condvar::new(),
            flusher_wanted: Condvar::new(),
            gather_cap: GATHER_CAP,
            flush_all: flush_file_system,
            flush_alone: flush_one,
        }
    }
}

#[derive(Debug, Default)]
struct Round {
    /// Numbers of the shared flushes started and finished so far.
    started: u64,
    finished: u64,
    /// Whether a flush is running (the flusher's, or a lone file's own).
    running: bool,
    /// Whether a flusher thread is idle, waiting for files (`FLUSHER_LINGER`).
    idle_flusher: bool,
    /// Callers waiting for their data to be durable.
    waiting: usize,
    /// The highest flush number a waiter needs: the flusher runs until it has finished it.
    wanted: u64,
    /// The latest shared flush that failed, and how.
    failed: Option<(u64, io::ErrorKind, String)>,
    /// How long the latest shared flush took.
    last_flush: Duration,
    /// Wakes the tasks waiting for the flush numbered next (`started + 1`) when it ends, and
    /// when a flush (a lone file's) ends without numbering one: one of them may start it.
    next_flush: Arc<tokio::sync::Notify>,
    /// Wakes the tasks waiting for the flush numbered last, when it ends.
    flushing: Arc<tokio::sync::Notify>,
}

/// What a waiter does next.
enum Step {
    /// A flush that started after it joined has ended, with this result.
    Done(io::Result<()>),
    /// A flush runs: wait for it to end.
    Wait,
    /// Nothing runs and nobody else waits: its own sync, now (it is marked running).
    Alone,
    /// Nothing runs and others wait: start the flusher (it is marked running).
    Lead,
}

impl Round {
    fn step(&mut self, needed: u64) -> Step {
        if self.finished >= needed {
            return Step::Done(match &self.failed {
                Some((number, kind, message)) if *number >= needed => {
                    Err(io::Error::new(*kind, message.clone()))
                }
                _ => Ok(()),
            });
        }
        if self.running {
            return Step::Wait;
        }
        self.running = true;
        if self.waiting == 1 {
            Step::Alone
        } else {
            Step::Lead
        }
    }
}

/// One waiter of a group, counted while it lives (a task may be dropped while it waits).
struct Ticket<'a> {
    group: &'a GroupSync,
    /// The first flush numbered after this waiter joined: it covers the waiter's data.
    needed: u64,
    /// What wakes a waiting task when that flush ends (or the group goes idle before it).
    woken: Arc<tokio::sync::Notify>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.group.lock().waiting -= 1;
    }
}

/// Marks the group's flush ended when dropped (also when a flush's thread panics).
struct EndsRunning(Arc<GroupSync>);

impl Drop for EndsRunning {
    fn drop(&mut self) {
        let mut round = self.0.lock();
        round.running = false;
        if round.finished < round.started {
            // A numbered flush that never ended (its thread panicked): not durable.
            round.finished = round.started;
            let number = round.started;
            round.failed = Some((number, io::ErrorKind::Other, "a flush stopped".into()));
        }
        drop(round);
        self.0.wake();
    }
}

impl GroupSync {
    fn lock(&self) -> MutexGuard<'_, Round> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every waiter, thread or task, to look at the round again.
    fn wake(&self) {
        let (next, flushing) = {
            let round = self.lock();
            (Arc::clone(&round.next_flush), Arc::clone(&round.flushing))
        };
        self.changed.notify_all();
        next.notify_waiters();
        flushing.notify_waiters();
    }

    /// Joins the group after the caller's data was written: every flush numbered from now on
    /// starts after that.
    fn join(&self) -> Ticket<'_> {
        let mut round = self.lock();
        let needed = round.started + 1;
        round.waiting += 1;
        round.wanted = round.wanted.max(needed);
        Ticket {
            group: self,
            needed,
            woken: Arc::clone(&round.next_flush),
        }
    }

    /// Makes `fd`'s data durable, by itself or with others on its file system, as a task.
    pub(super) async fn sync(self: &Arc<Self>, fd: BorrowedFd<'_>) -> io::Result<()> {
        let ticket = self.join();
        loop {
            // Registered before the look, so that no wake-up after it is missed.
            let woken = ticket.woken.notified();
            let mut woken = std::pin::pin!(woken);
            woken.as_mut().enable();
            let step = self.lock().step(ticket.needed);
            match step {
                Step::Done(result) => return result,
                Step::Wait => woken.await,
                Step::Alone => {
                    let own = self.own_fd(fd)?;
                    let ends = EndsRunning(Arc::clone(self));
                    let flush = self.flush_alone;
                    return run_blocking(move || {
                        let _ends = ends;
                        flush(own.as_fd())
                    })
                    .await;
                }
                Step::Lead => self.start_flusher(fd)?,
            }
        }
    }

    /// `sync` for a blocking thread.
    pub(super) fn sync_blocking(self: &Arc<Self>, fd: BorrowedFd<'_>) -> io::Result<()> {
        let ticket = self.join();
        let mut round = self.lock();
        loop {
            match round.step(ticket.needed) {
                Step::Done(result) => return result,
                Step::Wait => {
                    round = self
                        .changed
                        .wait(round)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Step::Alone => {
                    drop(round);
                    let _ends = EndsRunning(Arc::clone(self));
                    return (self.flush_alone)(fd);
                }
                Step::Lead => {
                    drop(round);
                    self.start_flusher(fd)?;
                    round = self.lock();
                }
            }
        }
    }

    /// A descriptor of the caller's own for a thread to sync; on failure the group is not
    /// left marked running (another waiter then tries).
    fn own_fd(self: &Arc<Self>, fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        fd.try_clone_to_owned().inspect_err(|_| {
            drop(EndsRunning(Arc::clone(self)));
        })
    }

    /// Sets the flusher to work: the idle one, else a new thread, given a descriptor on this
    /// file system.
    fn start_flusher(self: &Arc<Self>, fd: BorrowedFd<'_>) -> io::Result<()> {
        {
            let mut round = self.lock();
            if round.idle_flusher {
                round.idle_flusher = false;
                drop(round);
                self.flusher_wanted.notify_one();
                return Ok(());
            }
        }
        let own = self.own_fd(fd)?;
        let group = Arc::clone(self);
        std::thread::Builder::new()
            .name("haul-flush".into())
            .spawn(move || {
                let _gone = FlusherGone(Arc::clone(&group));
                group.flush_while_wanted(own.as_fd());
            })
            .map(drop)
            .inspect_err(|_| drop(EndsRunning(Arc::clone(self))))
    }

    /// The flusher: shared flushes while files wait for one; then idle for `FLUSHER_LINGER`,
    /// and the thread ends unless files wait again.
    fn flush_while_wanted(&self, fd: BorrowedFd<'_>) {
        loop {
            let mut round = self.lock();
            if round.wanted <= round.finished {
                // Every waiter's flush is done (a waiter joining now finds nothing running).
                round.running = false;
                round.idle_flusher = true;
                let (mut round, _) = self
                    .flusher_wanted
                    .wait_timeout_while(round, FLUSHER_LINGER, |round| round.idle_flusher)
                    .unwrap_or_else(PoisonError::into_inner);
                if round.idle_flusher {
                    round.idle_flusher = false;
                    return;
                }
                // Set to work again (and marked running) by a waiter.
                continue;
            }
            // Files finishing while the flusher waits are numbered into this flush, which
            // starts after their data was written.
            let gather = round.last_flush.min(self.gather_cap);
            if !gather.is_zero() {
                drop(round);
                std::thread::sleep(gather);
                round = self.lock();
            }
            round.started += 1;
            let number = round.started;
            round.flushing = std::mem::take(&mut round.next_flush);
            drop(round);
            let flush_started = Instant::now();
            let result = (self.flush_all)(fd);
            let mut round = self.lock();
            round.last_flush = flush_started.elapsed();
            round.finished = number;
            if let Err(error) = result {
                round.failed = Some((number, error.kind(), error.to_string()));
            }
            let woken = Arc::clone(&round.flushing);
            drop(round);
            self.changed.notify_all();
            woken.notify_waiters();
        }
    }
}

/// How long an idle flusher waits for more files before its thread ends: in a batch the next
/// files come within it, and need no new thread (on tmpfs, without it, one per flush).
const FLUSHER_LINGER: Duration = Duration::from_millis(50);

/// Ends the group's flush if the flusher's thread panics (it does not: a safeguard).
struct FlusherGone(Arc<GroupSync>);

impl Drop for FlusherGone {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().idle_flusher = false;
            drop(EndsRunning(Arc::clone(&self.0)));
        }
    }
}

#[cfg(test)]
impl GroupSync {
    /// Once the flusher has stopped: the shared flushes started and finished, and the callers
    /// still counted as waiting.
    pub(super) fn settled_counts(&self) -> (u64, u64, usize) {
        for _ in 0..5_000 {
            let round = self.lock();
            if !round.running {
                return (round.started, round.finished, round.waiting);
            }
            drop(round);
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the flusher never stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;

    /// A new file in `dir` holding `text`, not yet synced.
    fn written(dir: &std::path::Path, name: &str, text: &str) -> File {
        let mut file = File::create(dir.join(name)).unwrap();
        writeln!(file, "{text}").unwrap();
        file
    }

    /// The group's counts once the flusher stopped, as the round (`settled_counts`).
    fn settled(group: &GroupSync) -> Round {
        let (started, finished, waiting) = group.settled_counts();
        Round {
            started,
            finished,
            waiting,
            ..Round::default()
        }
    }

    /// A directory for the tests' files: the group syncs what it is given, on any file system.
    fn test_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn files_finishing_during_a_flush_share_the_next_one() {
        let dir = test_dir();
        let group = Arc::new(GroupSync::default());
        // A flush is running: whoever finishes now must wait for the next one.
        group.lock().running = true;
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let group = Arc::clone(&group);
                let file = written(dir.path(), &format!("f{i}"), "data");
                std::thread::spawn(move || group.sync_blocking(file.as_fd()).unwrap())
            })
            .collect();
        while group.lock().waiting < 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The running flush ends: one of the four starts the flusher, one flush for all.
        group.lock().running = false;
        group.wake();
        for thread in threads {
            thread.join().unwrap();
        }
        let round = settled(&group);
        assert_eq!(round.started, 1, "four files, one shared flush");
        assert_eq!(round.finished, 1);
        assert_eq!(round.waiting, 0);
    }

    #[test]
    fn a_file_finishing_while_a_shared_flush_gathers_joins_that_flush() {
        let dir = test_dir();
        // Widened so that a loaded machine cannot miss the window: the last flush "took" 2 s.
        let group = Arc::new(GroupSync {
            gather_cap: Duration::from_secs(2),
            ..GroupSync::default()
        });
        let commit = |name: &str| {
            let group = Arc::clone(&group);
            let file = written(dir.path(), name, "data");
            std::thread::spawn(move || group.sync_blocking(file.as_fd()).unwrap())
        };
        {
            let mut round = group.lock();
            round.last_flush = Duration::from_secs(2);
            round.running = true;
        }
        let first = [commit("a"), commit("b")];
        while group.lock().waiting < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The running flush ends; one of the two starts the flusher, which gathers.
        group.lock().running = false;
        group.wake();
        while !group.lock().running {
            std::thread::sleep(Duration::from_millis(1));
        }
        let late = commit("c");
        for thread in first.into_iter().chain([late]) {
            thread.join().unwrap();
        }
        let round = settled(&group);
        assert_eq!(round.started, 1, "three files, one shared flush");
        assert_eq!(round.waiting, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiting_tasks_hold_no_thread_and_share_flushes_with_waiting_threads() {
        // One runtime thread: a task that blocked it while waiting would stop them all.
        let dir = test_dir();
        let group = Arc::new(GroupSync::default());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let group = Arc::clone(&group);
                let file = written(dir.path(), &format!("t{i}"), "task");
                tokio::spawn(async move { group.sync(file.as_fd()).await })
            })
            .collect();
        let thread = {
            let group = Arc::clone(&group);
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                for round in 0..20 {
                    let file = written(&dir, "thread", &format!("{round}"));
                    group.sync_blocking(file.as_fd()).unwrap();
                }
            })
        };
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        thread.join().unwrap();
        let round = settled(&group);
        assert!(round.started >= 1, "the tasks shared flushes");
        assert_eq!(round.waiting, 0);
    }

    #[tokio::test]
    async fn a_task_that_stops_waiting_is_no_longer_counted() {
        let dir = test_dir();
        let group = Arc::new(GroupSync::default());
        group.lock().running = true;
        let file = written(dir.path(), "f", "data");
        let waited =
            tokio::time::timeout(Duration::from_millis(20), group.sync(file.as_fd())).await;
        assert!(waited.is_err(), "a flush runs: the task waits");
        assert_eq!(group.lock().waiting, 0);
    }

    /// The flushes the ordering test's group ran: when each started and ended (on one
    /// clock of events), and whose file a lone one covered (`None`: every file).
    mod watched {
        use super::*;
        use std::sync::atomic::{AtomicU64, Ordering};

        pub(super) static CLOCK: AtomicU64 = AtomicU64::new(0);
        pub(super) static FLUSHES: Mutex<Vec<(u64, u64, Option<u64>)>> = Mutex::new(Vec::new());

        pub(super) fn tick() -> u64 {
            CLOCK.fetch_add(1, Ordering::SeqCst)
        }

        fn record(fd: BorrowedFd<'_>, covers: Option<u64>) -> io::Result<()> {
            let started = tick();
            std::thread::sleep(Duration::from_micros(200 * (started % 4)));
            rustix::fs::fdatasync(fd)?;
            let ended = tick();
            FLUSHES.lock().unwrap().push((started, ended, covers));
            Ok(())
        }

        pub(super) fn all(fd: BorrowedFd<'_>) -> io::Result<()> {
            record(fd, None)
        }

        pub(super) fn alone(fd: BorrowedFd<'_>) -> io::Result<()> {
            record(fd, Some(rustix::fs::fstat(fd)?.st_ino))
        }
    }

    #[test]
    fn every_file_returns_only_after_a_flush_that_started_after_its_data_was_written() {
        let dir = test_dir();
        let group = Arc::new(GroupSync {
            flush_all: watched::all,
            flush_alone: watched::alone,
            ..GroupSync::default()
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        // (written, returned, inode) of every commit; threads and tasks mixed, in bursts.
        let commits = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..24_u64 {
            let group = Arc::clone(&group);
            let commits = Arc::clone(&commits);
            let dir = dir.path().to_path_buf();
            let as_task = i % 2 == 0;
            let handle = runtime.handle().clone();
            threads.push(std::thread::spawn(move || {
                for round in 0..10_u64 {
                    let file = written(&dir, &format!("f{i}"), &format!("{round}"));
                    let inode = rustix::fs::fstat(&file).unwrap().st_ino;
                    let written_at = watched::tick();
                    if as_task {
                        handle.block_on(group.sync(file.as_fd())).unwrap();
                    } else {
                        group.sync_blocking(file.as_fd()).unwrap();
                    }
                    let returned_at = watched::tick();
                    commits
                        .lock()
                        .unwrap()
                        .push((written_at, returned_at, inode));
                    std::thread::sleep(Duration::from_micros(300 * ((i + round) % 3)));
                }
            }));
        }
        for thread in threads {
            thread.join().unwrap();
        }
        let flushes = watched::FLUSHES.lock().unwrap();
        let commits = commits.lock().unwrap();
        assert_eq!(commits.len(), 240);
        for (written_at, returned_at, inode) in commits.iter() {
            assert!(
                flushes.iter().any(|(started, ended, covers)| {
                    started > written_at
                        && ended < returned_at
                        && covers.is_none_or(|covered| covered == *inode)
                }),
                "a commit written at {written_at} returned at {returned_at} without a flush of \
                 its data in between"
            );
        }
        assert!(
            flushes.iter().any(|flush| flush.2.is_none()),
            "the bursts shared flushes"
        );
    }
}
