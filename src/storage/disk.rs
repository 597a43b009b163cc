//! What every download of one `Downloader` shares on the local side, beside the road to the
//! servers (`client::Client`): how data is made durable (one group commit for all), the run's
//! output name claims, where short file-system work runs, and the places for finished bodies
//! waiting for their commit. The scheduler hands both to every transfer.

use std::sync::Arc;

use super::durability::Syncer;
use super::open_dirs::OpenDirs;
use super::quick::QuickFs;
use super::reservations::Reservations;
use crate::config::Config;

/// The local state every download of one downloader shares.
pub(crate) struct Disk {
    syncer: Syncer,
    reservations: Arc<Reservations>,
    quick_fs: QuickFs,
    open_dirs: Arc<OpenDirs>,
    /// Places for finished bodies waiting for their commit (each holds an open file; see
    /// `storage::descriptors`).
    commits: tokio::sync::Semaphore,
}

impl Disk {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            syncer: Syncer::new(config.durability),
            reservations: Arc::default(),
            quick_fs: QuickFs::default(),
            open_dirs: Arc::default(),
            commits: tokio::sync::Semaphore::new(config.commits.max(1)),
        }
    }

    /// How downloads make their data durable (see `storage::durability`).
    pub(crate) fn syncer(&self) -> &Syncer {
        &self.syncer
    }

    /// The output names claimed in this run (see `storage::reservations`).
    pub(crate) fn reservations(&self) -> &Arc<Reservations> {
        &self.reservations
    }

    /// Where short file-system work runs (see `storage::quick`).
    pub(crate) fn quick_fs(&self) -> &QuickFs {
        &self.quick_fs
    }

    /// The output directories running downloads share (see `storage::open_dirs`).
    pub(crate) fn open_dirs(&self) -> &Arc<OpenDirs> {
        &self.open_dirs
    }

    /// A place among the commits waiting at once.
    pub(crate) async fn commit_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.commits.acquire().await.ok()
    }
}
