//! The writer that owns a `.part` file while its download runs. It lives on one blocking thread
//! and takes large coalesced buffers from a bounded channel, so no async worker ever waits on
//! the disk or on hashing, and memory is bounded by the channel's capacity. It writes with
//! positional writes (never `O_APPEND`, whose `pwrite` ignores the offset on Linux), hashes what
//! it writes in file order, and checkpoints the resume state only after the data is synced.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::PartPaths;
use super::durability::Syncer;
use super::files::{create_part, remove_part, remove_state};
use super::pool::BufferPool;
use super::state::{ResumeState, Validators};
use crate::Error;
use crate::integrity::{Algorithm, Checksum, Hasher};

/// Buffers queued between the network and the disk; with 256 KiB buffers this bounds a
/// download's data in flight to about 1 MiB plus one buffer per connection.
const QUEUE_DEPTH: usize = 4;
/// Read size when hashing data already on disk.
const READ_BACK_BYTES: usize = 1 << 20;
/// Written bytes gathered before their writeback is started.
const WRITEBACK_BYTES: u64 = 8 << 20;
/// Runs of consecutive writes tracked at once (about one per segment connection).
const MAX_WRITEBACK_RUNS: usize = 16;
/// Most bytes hashed back from disk after one write.
const CATCH_UP_BYTES: u64 = 8 << 20;

/// How the writer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseMode {
    /// The file is complete: hash what was not hashed yet, sync, and report.
    Complete,
    /// Keep the `.part` and a durable state for a later resume.
    Suspend,
    /// The bytes are worthless (wrong digest): delete the `.part` and its state.
    Discard,
}

/// What the writer reports when it closes.
#[derive(Debug, Default)]
pub(crate) struct Closed {
    /// The digest of the whole file, when an algorithm was asked for and the mode was Complete.
    pub(crate) digest: Option<Checksum>,
    /// The completed `.part`, still open and so still locked: held until it has its final
    /// name, so another process never takes the lock in between and finishes it a second time.
    pub(crate) locked: Option<std::sync::Arc<File>>,
}

enum Command {
    Write { offset: u64, data: Bytes },
    Restart(Validators),
    Close(CloseMode),
}

/// A clonable handle for writing from several segment connections at once.
#[derive(Clone)]
pub(crate) struct WriteHandle {
    commands: mpsc::Sender<Command>,
    pool: BufferPool,
    part: std::sync::Arc<Path>,
}

impl WriteHandle {
    /// Queues `data` to be written at `offset`, waiting while the queue is full.
    ///
    /// # Errors
    /// When the writer has stopped; its own error is reported by `PartWriter::close`.
    pub(crate) async fn write(&self, offset: u64, data: Bytes) -> Result<(), Error> {
        self.commands
            .send(Command::Write { offset, data })
            .await
            .map_err(|_| Error::WriterStopped {
                path: self.part.to_path_buf(),
            })
    }
}

impl WriteHandle {
    /// The file's recycled buffers, for a `Coalescer`.
    pub(crate) fn pool(&self) -> BufferPool {
        self.pool.clone()
    }
}

/// Handle to the writer thread of one `.part` file.
pub(crate) struct PartWriter {
    commands: mpsc::Sender<Command>,
    pool: BufferPool,
    part: std::sync::Arc<Path>,
    thread: Option<JoinHandle<Result<Closed, Error>>>,
}

impl PartWriter {
    /// Starts the writer. With `fresh`, the `.part` file is truncated and `state.done` is
    /// ignored; otherwise the bytes in `state.done` are kept (and hashed again when
    /// `algorithm` is set, so the digest covers the whole file).
    pub(crate) fn spawn(
        paths: PartPaths,
        state: ResumeState,
        fresh: bool,
        algorithm: Option<Algorithm>,
        checkpoint_interval: Duration,
        syncer: Syncer,
    ) -> Self {
        let (commands, mut receiver) = mpsc::channel(QUEUE_DEPTH);
        let pool = BufferPool::default();
        let recycler = pool.clone();
        let part: std::sync::Arc<Path> = paths.part.clone().into();
        let thread = tokio::task::spawn_blocking(move || {
            let mut core =
                WriterCore::open(paths, state, fresh, algorithm, checkpoint_interval, syncer)?;
            core.pool = recycler;
            let result = core.serve(&mut receiver);
            if result.is_err() {
                // Keep what is durable resumable; the original error is what matters.
                let _ = core.close(CloseMode::Suspend);
            }
            result
        });
        Self {
            commands,
            pool,
            part,
            thread: Some(thread),
        }
    }

    /// A handle for concurrent writers (segments).
    pub(crate) fn handle(&self) -> WriteHandle {
        WriteHandle {
            commands: self.commands.clone(),
            pool: self.pool.clone(),
            part: std::sync::Arc::clone(&self.part),
        }
    }

    /// Truncates the file and starts over for a new version of the entity.
    pub(crate) async fn restart(&mut self, validators: Validators) -> Result<(), Error> {
        self.send(Command::Restart(validators)).await
    }

    /// Ends the writer and waits until it has done what `mode` says.
    pub(crate) async fn close(mut self, mode: CloseMode) -> Result<Closed, Error> {
        // A failed send means the thread already stopped; its result says why.
        let _ = self.commands.send(Command::Close(mode)).await;
        self.join().await
    }

    async fn send(&mut self, command: Command) -> Result<(), Error> {
        if self.commands.send(command).await.is_ok() {
            return Ok(());
        }
        match self.join().await {
            Err(error) => Err(error),
            Ok(_) => Err(Error::Internal(format!(
                "the writer of `{}` stopped early",
                self.part.display()
            ))),
        }
    }

    async fn join(&mut self) -> Result<Closed, Error> {
        let Some(thread) = self.thread.take() else {
            return Err(Error::Internal(format!(
                "the writer of `{}` already stopped",
                self.part.display()
            )));
        };
        thread.await.unwrap_or_else(|e| {
            Err(Error::Internal(format!(
                "the writer of `{}` failed: {e}",
                self.part.display()
            )))
        })
    }
}

struct WriterCore {
    /// Shared with the checkpoint thread, never duplicated: closing any descriptor of a file
    /// would drop this process's lock on it (POSIX record locks).
    file: std::sync::Arc<File>,
    paths: PartPaths,
    state: ResumeState,
    algorithm: Option<Algorithm>,
    hasher: Option<Hasher>,
    /// Everything below this offset has been fed to the hasher, in order.
    hashed_upto: u64,
    /// One past the highest byte written.
    length: u64,
    checkpoint_interval: Duration,
    /// Whether and how data is synced.
    syncer: Syncer,
    last_checkpoint: Instant,
    /// Whether data was written since the last checkpoint.
    dirty: bool,
    /// Runs of consecutive writes whose writeback has not been started yet.
    unkicked: Vec<(u64, u64)>,
    /// Where written buffers go back for reuse.
    pool: BufferPool,
    /// A checkpoint running on its own thread, so syncing never stalls the writes.
    background: Option<std::thread::JoinHandle<Result<(), Error>>>,
}

impl WriterCore {
    fn open(
        paths: PartPaths,
        mut state: ResumeState,
        fresh: bool,
        algorithm: Option<Algorithm>,
        checkpoint_interval: Duration,
        syncer: Syncer,
    ) -> Result<Self, Error> {
        let file = std::sync::Arc::new(create_part(&paths, fresh)?);
        let on_disk = file
            .metadata()
            .map_err(|e| Error::io("inspect", &paths.part, e))?
            .len();
        if fresh {
            state.done = super::ranges::RangeSet::default();
            if let Err(error) = reserve(&file, &paths, state.validators.total_bytes) {
                // Nothing of ours is in it yet: leave nothing behind.
                drop(file);
                let _ = remove_part(&paths);
                return Err(error);
            }
        } else {
            state.done.clip(on_disk);
        }
        let mut core = Self {
            file,
            paths,
            state,
            algorithm,
            hasher: algorithm.map(Hasher::new),
            hashed_upto: 0,
            length: 0,
            checkpoint_interval,
            syncer,
            last_checkpoint: Instant::now(),
            dirty: false,
            unkicked: Vec::new(),
            pool: BufferPool::default(),
            background: None,
        };
        // Everything up to the last byte present: a resume with holes (pieces fetched again,
        // a segmented run cut short) has data after its first gap, and the file's digest at
        // the end must cover it.
        core.length = core.state.done.end();
        // The state exists before any data does, so a `.part` without a state file was never
        // ours and is not trusted.
        core.state.save(&core.paths, &core.syncer)?;
        let prefix = core.state.done.contiguous_prefix();
        core.hash_from_disk(prefix)?;
        Ok(core)
    }

    fn serve(&mut self, receiver: &mut mpsc::Receiver<Command>) -> Result<Closed, Error> {
        while let Some(command) = receiver.blocking_recv() {
            match command {
                Command::Write { offset, data } => {
                    self.write(offset, &data)?;
                    self.pool.recycle(data);
                }
                Command::Restart(validators) => self.restart(validators)?,
                Command::Close(mode) => return self.close(mode),
            }
        }
        // The download's task went away without closing us (it was dropped): keep the bytes.
        self.close(CloseMode::Suspend)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io("write", &self.paths.part, e))?;
        let end = offset + data.len() as u64;
        self.kick_writeback(offset, end);
        if let Some(hasher) = self.hasher.as_mut()
            && offset == self.hashed_upto
        {
            hasher.update(data);
            self.hashed_upto = end;
        }
        self.state.done.insert(offset, end);
        self.length = self.length.max(end);
        // Segments arrive out of order: hash what became contiguous by reading it back, a
        // slice at a time so the writes are never held up for long.
        if self.hasher.is_some() {
            let prefix = self.state.done.contiguous_prefix();
            if prefix > self.hashed_upto {
                self.hash_from_disk(prefix.min(self.hashed_upto + CATCH_UP_BYTES))?;
            }
        }
        self.dirty = true;
        if self.last_checkpoint.elapsed() >= self.checkpoint_interval {
            self.checkpoint_in_background()?;
        }
        Ok(())
    }

    /// Starts writeback of what was written once a run of consecutive writes adds up to
    /// `WRITEBACK_BYTES`. Segments write several runs at once; each is tracked on its own, so
    /// the kernel gets large sequential ranges rather than one call per buffer.
    fn kick_writeback(&mut self, offset: u64, end: u64) {
        let run = match self.unkicked.iter_mut().find(|(_, until)| *until == offset) {
            Some(run) => {
                run.1 = end;
                *run
            }
            None => {
                if self.unkicked.len() >= MAX_WRITEBACK_RUNS {
                    let (start, until) = self.unkicked.remove(0);
                    super::writeback::start_writeback(&self.file, start, until - start);
                }
                self.unkicked.push((offset, end));
                (offset, end)
            }
        };
        if run.1 - run.0 >= WRITEBACK_BYTES {
            super::writeback::start_writeback(&self.file, run.0, run.1 - run.0);
            self.unkicked.retain(|r| *r != run);
        }
    }

    /// Starts a checkpoint on its own thread unless one is still running. The ranges are
    /// snapshotted before the sync starts, so the state it saves only names bytes whose writes
    /// completed before the sync: a crash at any instant finds the state no further than the
    /// data.
    fn checkpoint_in_background(&mut self) -> Result<(), Error> {
        if self.background.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        self.wait_for_background()?;
        let file = std::sync::Arc::clone(&self.file);
        let snapshot = self.state.clone();
        let paths = self.paths.clone();
        let syncer = self.syncer.clone();
        self.background = Some(std::thread::spawn(move || {
            syncer
                .sync_data(&file)
                .map_err(|e| Error::io("sync", &paths.part, e))?;
            snapshot.save(&paths, &syncer)
        }));
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn wait_for_background(&mut self) -> Result<(), Error> {
        match self.background.take().map(std::thread::JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(error))) => Err(error),
            Some(Err(_)) => Err(Error::io(
                "sync",
                &self.paths.part,
                io::Error::other("the checkpoint thread failed"),
            )),
        }
    }

    /// Makes the data durable, then the state that describes it, before returning.
    fn checkpoint(&mut self) -> Result<(), Error> {
        self.wait_for_background()?;
        if self.dirty {
            self.syncer
                .sync_data(&self.file)
                .map_err(|e| Error::io("sync", &self.paths.part, e))?;
            self.state.save(&self.paths, &self.syncer)?;
            self.dirty = false;
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn restart(&mut self, validators: Validators) -> Result<(), Error> {
        // A checkpoint still running would save the old ranges over the new state.
        self.wait_for_background()?;
        self.file
            .set_len(0)
            .map_err(|e| Error::io("truncate", &self.paths.part, e))?;
        reserve(&self.file, &self.paths, validators.total_bytes)?;
        self.state.validators = validators;
        self.state.done = super::ranges::RangeSet::default();
        self.hasher = self.algorithm.map(Hasher::new);
        self.hashed_upto = 0;
        self.length = 0;
        self.unkicked.clear();
        self.dirty = false;
        self.state.save(&self.paths, &self.syncer)
    }

    fn close(&mut self, mode: CloseMode) -> Result<Closed, Error> {
        let background = self.wait_for_background();
        match mode {
            CloseMode::Complete => {
                self.pool.clear();
                background?;
                self.hash_from_disk(self.length)?;
                self.syncer
                    .sync_data(&self.file)
                    .map_err(|e| Error::io("sync", &self.paths.part, e))?;
                Ok(Closed {
                    digest: self.hasher.take().map(Hasher::finish),
                    locked: Some(self.file.clone()),
                })
            }
            CloseMode::Suspend if self.state.done.is_empty() => {
                // Nothing was written: there is nothing to resume.
                drop(background);
                remove_part(&self.paths)?;
                remove_state(&self.paths)?;
                Ok(Closed::default())
            }
            CloseMode::Suspend => {
                // A failed background checkpoint is retried here, synchronously.
                drop(background);
                self.dirty = true;
                self.checkpoint()?;
                Ok(Closed::default())
            }
            CloseMode::Discard => {
                drop(background);
                remove_part(&self.paths)?;
                remove_state(&self.paths)?;
                Ok(Closed::default())
            }
        }
    }

    /// Feeds the hasher the bytes from `hashed_upto` to `end` by reading them back, for data
    /// that was on disk before this run or written out of order.
    fn hash_from_disk(&mut self, end: u64) -> Result<(), Error> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(());
        };
        let mut buffer = vec![0u8; READ_BACK_BYTES];
        while self.hashed_upto < end {
            let want = usize::try_from(end - self.hashed_upto)
                .unwrap_or(usize::MAX)
                .min(buffer.len());
            let read = self
                .file
                .read_at(&mut buffer[..want], self.hashed_upto)
                .map_err(|e| Error::io("read", &self.paths.part, e))?;
            if read == 0 {
                return Err(Error::io(
                    "read",
                    &self.paths.part,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file is shorter than recorded",
                    ),
                ));
            }
            hasher.update(&buffer[..read]);
            self.hashed_upto += read as u64;
        }
        Ok(())
    }
}

/// Reserves the disk space of a file of known length, so that a full disk shows before the
/// download. Small files are not worth the system call.
fn reserve(file: &File, paths: &PartPaths, total: Option<u64>) -> Result<(), Error> {
    match total {
        Some(total) if total >= 1 << 20 => super::writeback::preallocate(file, total)
            .map_err(|e| Error::io("reserve disk space for", &paths.part, e)),
        _ => Ok(()),
    }
}
