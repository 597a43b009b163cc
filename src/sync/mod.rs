//! Mirroring a source into a directory, incrementally and safely (`haul sync`, as a library).
//!
//! A sync has three steps, each usable on its own:
//!
//! 1. **Read the source** ([`Source::parse`] and [`Source::read`], as `haul sync SOURCE DIR`
//!    does) into [`SourceFiles`]: a manifest (the input-file format, from a file, `-` or a URL;
//!    [`manifest_source`] for a text in hand) or a directory listing (crawled:
//!    nginx/Apache HTML, nginx JSON, S3 XML), optionally with a checksum file
//!    ([`crate::parse_sums`], [`apply_sums`]).
//! 2. **Plan** ([`prepare`], which reads the mirror and plans): per file, fetch it (new,
//!    changed, or changed locally), ask the server whether it changed, or leave it; which
//!    files to delete; which names are conflicts.
//! 3. **Run** the plan on a [`Downloader`] ([`run`]), or check it without changing anything
//!    ([`dry_run`]).
//!
//! The rules: names are kept exactly as the source has them; a changed file
//! replaces the old copy only once complete and verified; nothing below the mirror directory is
//! reached through a symlink; a file is deleted only when the source was read in full, lists
//! something, no more than `max_delete` files would go, and no download failed (unless
//! `delete_on_errors`).
//!
//! See [`Source`] for the whole of a sync in a few lines.

mod check;
mod dry_run;
pub(crate) mod filters;
pub(crate) mod listing;
pub(crate) mod local;
pub(crate) mod memory;
pub(crate) mod names;
mod page;
pub(crate) mod plan;
mod s3;
mod source;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::client::cancel::Cancel;
use crate::input::{LineError, parse_input};
use crate::naming::file_name_from_url_exact;
use crate::progress::{Observer, Reporter};
use crate::{Algorithm, Checksum, Downloader, Error, ErrorKind, OnExists, Request};
pub use check::{CheckReport, Reference, Verdict, check};
pub use dry_run::{DryRun, DryRunAction, DryRunLine, dry_run};
pub use filters::{Filters, Shard};
pub use listing::CrawlLimits;
use listing::Crawled;
use local::LocalTree;
use memory::{Memory, Remembered};
use plan::PlanOptions;
pub use plan::{
    Action, Conflict, DeletionBlocked, Plan, Planned, SourceEntry, SourceFiles, UpdateReason,
};
pub use source::{Location, Source};

/// What to do about conflicting names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnConflict {
    /// Report each and fail the sync (exit 1 in the CLI); nothing is deleted.
    #[default]
    Fail,
    /// Report each and go on as if they were not listed.
    Skip,
}

/// How a sync behaves, besides its source and directory.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only these files.
    pub filters: Filters,
    /// Only this shard.
    pub shard: Option<Shard>,
    /// Delete mirror files the source no longer lists.
    pub delete: bool,
    /// Delete nothing when more than this many files would go.
    pub max_delete: Option<usize>,
    /// Delete even when some downloads failed (never when the listing failed, was empty, or is
    /// incomplete).
    pub delete_on_errors: bool,
    /// What conflicting names do to the sync.
    pub on_conflict: OnConflict,
    /// Re-hash local files and fetch again those whose digest differs from the one the last
    /// sync remembered (and remember digests of everything fetched).
    pub verify_local: bool,
    /// Each file's own rate limit, bytes per second.
    pub file_rate_limit: Option<u64>,
    /// Plan only: a mirror directory that does not exist yet is neither made nor locked.
    /// Otherwise `prepare` makes it, so that the lock on it is taken before anything else.
    pub dry_run: bool,
}

impl SyncOptions {
    fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            filters: self.filters.clone(),
            shard: self.shard,
            delete: self.delete,
            max_delete: self.max_delete,
            verify_local: self.verify_local,
        }
    }
}

/// Reads a manifest (the input-file format: a URL per line, with optional `out=`, `dir=`,
/// `size=`, `checksum=`) into a source. Paths are `dir=` plus `out=` (or the URL's last
/// segment, decoded), kept exactly.
///
/// # Errors
/// Every malformed line.
pub fn manifest_source(text: &str) -> Result<SourceFiles, Vec<LineError>> {
    let mut source = SourceFiles::default();
    for entry in parse_input(text)? {
        let Some(url) = entry.urls.first().cloned() else {
            continue;
        };
        let name = match &entry.out {
            Some(out) => Ok(out.clone()),
            None => file_name_from_url_exact(&url),
        };
        let path = name.map(|name| match &entry.dir {
            Some(dir) => format!("{}/{name}", dir.trim_matches('/')),
            None => name,
        });
        match path {
            Ok(path) => source.entries.push(
                SourceEntry::new(path.trim_start_matches("./"), url)
                    .with_size(entry.size)
                    .with_checksum(entry.checksum)
                    .with_mirrors(entry.urls[1..].to_vec()),
            ),
            Err(raw) => source.conflicts.push(Conflict {
                paths: vec![raw],
                reason: format!(
                    "line {}: the URL names no file that can be mirrored",
                    entry.line
                ),
            }),
        }
    }
    Ok(source)
}

/// Gives every entry without a checksum the one a checksum file lists for its path.
pub fn apply_sums(source: &mut SourceFiles, sums: &[(String, Checksum)]) {
    let by_name: HashMap<&str, &Checksum> = sums.iter().map(|(n, c)| (n.as_str(), c)).collect();
    for entry in &mut source.entries {
        if entry.checksum.is_none() {
            entry.checksum = by_name.get(entry.path.as_str()).map(|c| (*c).clone());
        }
    }
}

/// Crawls a directory listing (nginx/Apache HTML, nginx JSON, S3 XML).
///
/// # Errors
/// A listing page that cannot be fetched or understood.
pub(crate) async fn read_listing(
    downloader: &Downloader,
    url: &Url,
    limits: CrawlLimits,
) -> Result<Crawled, Error> {
    listing::crawl(
        downloader,
        url,
        limits,
        &Reporter::silent(),
        &Cancel::default(),
    )
    .await
}

/// A plan, with what it was made from.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What the sync will do.
    pub plan: Plan,
    /// The source's reasons for being incomplete (nothing is deleted then).
    pub incomplete: Vec<String>,
    /// A crawl bound was reached (see [`SourceFiles::bound_reached`]).
    pub bound_reached: bool,
    memory: Memory,
    local: LocalTree,
    digests: HashMap<String, Checksum>,
    /// This process's lock on the mirror, held until the sync is done with it.
    _lock: Option<std::sync::Arc<std::fs::File>>,
}

/// Reads the mirror at `dir` (its files, the last sync's memory, the digests the plan needs)
/// and plans the sync of `source` into it.
///
/// # Errors
/// When the mirror directory cannot be read.
pub async fn prepare(
    dir: &Path,
    source: &SourceFiles,
    options: &SyncOptions,
) -> Result<Prepared, Error> {
    let dir = dir.to_path_buf();
    let source = source.clone();
    let options = options.clone();
    tokio::task::spawn_blocking(move || {
        let lock = Memory::lock(&dir, options.shard, !options.dry_run)?.map(std::sync::Arc::new);
        let local = LocalTree::scan(&dir)?;
        let memory = Memory::load(&dir, options.shard);
        let plan_options = options.plan_options();
        let mut digests = HashMap::new();
        for entry in &source.entries {
            if !local.files.contains_key(&entry.path) {
                continue;
            }
            let algorithm = match (&entry.checksum, options.verify_local) {
                (Some(checksum), _) => Some(checksum.algorithm()),
                (None, true) => memory
                    .files
                    .get(&entry.path)
                    .and_then(|r| r.digest.as_deref())
                    .and_then(|d| d.parse::<Checksum>().ok())
                    .map(|c| c.algorithm())
                    .or(Some(Algorithm::Sha256)),
                (None, false) => None,
            };
            let Some(algorithm) = algorithm else { continue };
            if let Ok(digest) = local::hash_file(&dir, &entry.path, algorithm) {
                digests.insert(entry.path.clone(), digest);
            }
        }
        let plan = plan::plan(&source, &local, &memory, &digests, &plan_options);
        Ok(Prepared {
            plan,
            incomplete: source.incomplete.clone(),
            bound_reached: source.bound_reached,
            memory,
            local,
            digests,
            _lock: lock,
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("reading the mirror failed: {e}")))?
}

/// Why a sync deleted nothing although deletion was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeletionHeld {
    /// The plan refused (see [`DeletionBlocked`]).
    Blocked(DeletionBlocked),
    /// The sync was interrupted: `files` were to go.
    Interrupted {
        /// Files the plan would have deleted.
        files: usize,
    },
    /// Some downloads failed, and deleting anyway was not asked for
    /// ([`SyncOptions::delete_on_errors`]).
    DownloadsFailed {
        /// Files the plan would have deleted.
        files: usize,
    },
}

impl DeletionHeld {
    /// Whether this is worth failing the sync for (see [`DeletionBlocked::is_error`]); a sync
    /// whose downloads failed has failed already.
    #[must_use]
    pub fn is_error(&self) -> bool {
        matches!(self, Self::Blocked(blocked) if blocked.is_error())
    }
}

impl std::fmt::Display for DeletionHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Blocked(blocked) => write!(f, "refusing to delete anything: {blocked}"),
            Self::Interrupted { files } => {
                write!(f, "not deleting {files} file(s): the sync was interrupted")
            }
            Self::DownloadsFailed { files } => {
                write!(f, "not deleting {files} file(s): some files failed")
            }
        }
    }
}

/// What a sync did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SyncReport {
    /// Files fetched that were not in the mirror.
    pub new: usize,
    /// Files fetched again.
    pub updated: usize,
    /// Files left as they were (verified, or unchanged on the server).
    pub unchanged: usize,
    /// Files deleted.
    pub deleted: usize,
    /// Files that failed, with why.
    pub failures: Vec<(String, Error)>,
    /// Conflicting names (not mirrored).
    pub conflicts: Vec<Conflict>,
    /// Why nothing was deleted although deletion was asked for.
    pub deletion_held: Option<DeletionHeld>,
    /// Deletions that failed.
    pub deletion_failures: Vec<(String, Error)>,
    /// The sync was cancelled before it ended.
    pub interrupted: bool,
    /// The source's listing reached a crawl bound: the mirror may be missing files.
    pub listing_incomplete: bool,
}

impl SyncReport {
    /// Failures that were checksum mismatches.
    #[must_use]
    pub fn integrity_failures(&self) -> usize {
        self.failures
            .iter()
            .filter(|(_, e)| e.kind() == ErrorKind::Integrity)
            .count()
    }

    /// Whether anything failed: a download, a deletion, a refused deletion, a conflict
    /// (unless conflicts were to be skipped), or a listing that is incomplete (a bound
    /// reached: the mirror may be missing files).
    #[must_use]
    pub fn has_failures(&self, options: &SyncOptions) -> bool {
        self.downloads_failed(options)
            || !self.deletion_failures.is_empty()
            || self
                .deletion_held
                .as_ref()
                .is_some_and(DeletionHeld::is_error)
            || self.listing_incomplete
    }

    fn downloads_failed(&self, options: &SyncOptions) -> bool {
        !self.failures.is_empty()
            || (options.on_conflict == OnConflict::Fail && !self.conflicts.is_empty())
    }
}

/// Runs a plan: fetches what it says (each file into `NAME.part`, replacing the old copy only
/// once complete and verified), deletes what it says when the rules allow, and remembers what
/// it learned for the next sync. Events go to `observer`; `cancel` stops it (unfinished files
/// keep their `.part`, nothing is deleted).
///
/// # Errors
/// When the memory cannot be saved; per-file failures are in the report.
pub async fn run(
    downloader: &Downloader,
    dir: &Path,
    prepared: Prepared,
    options: &SyncOptions,
    observer: Option<Arc<dyn Observer>>,
    cancel: Option<CancellationToken>,
) -> Result<SyncReport, Error> {
    let Prepared {
        plan,
        mut memory,
        local,
        digests,
        bound_reached,
        ..
    } = prepared;
    let mut report = SyncReport {
        conflicts: plan.conflicts.clone(),
        listing_incomplete: bound_reached,
        ..SyncReport::default()
    };
    let cancel = cancel.unwrap_or_default();
    let mut requests = Vec::new();
    let mut fetched: Vec<(String, bool)> = Vec::new();
    for planned in &plan.files {
        let entry = &planned.entry;
        if planned.action == Action::Unchanged {
            report.unchanged += 1;
            if let Some(file) = local.files.get(&entry.path) {
                let remembered = memory.files.entry(entry.path.clone()).or_default();
                remembered.size = file.size;
                remembered.mtime_ns = file.modified.and_then(memory::mtime_ns);
                remembered.digest = entry.checksum.as_ref().map(ToString::to_string);
            }
            continue;
        }
        requests.push(request_for(planned, dir, options)?);
        fetched.push((entry.path.clone(), planned.action == Action::New));
    }
    let mut outcomes = downloader.batch(requests).with_cancellation(cancel.clone());
    if let Some(observer) = observer {
        outcomes = outcomes.with_observer(observer);
    }
    let mut outcomes = outcomes.start()?;
    let mut done = Vec::new();
    while let Some(outcome) = outcomes.next().await {
        let Some((path, is_new)) = fetched.get(outcome.index) else {
            continue;
        };
        match outcome.result {
            Ok(completed) => {
                match (completed.already_present, is_new) {
                    (true, _) => report.unchanged += 1,
                    (false, true) => report.new += 1,
                    (false, false) => report.updated += 1,
                }
                done.push((path.clone(), completed));
            }
            Err(Error::Cancelled) => report.interrupted = true,
            Err(error) => report.failures.push((path.clone(), error)),
        }
    }
    report.interrupted |= cancel.is_cancelled();
    let dir_owned = dir.to_path_buf();
    let verify = options.verify_local;
    let memory_after = tokio::task::spawn_blocking(move || {
        let tree = LocalTree::scan(&dir_owned).unwrap_or_default();
        for (path, completed) in done {
            let file = tree.files.get(&path);
            let previous = memory.files.remove(&path).unwrap_or_default();
            let digest = completed
                .digest
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| {
                    // A `304`: the file is what it was; keep (or learn) its digest.
                    (completed.already_present && verify)
                        .then(|| digests.get(&path).map(ToString::to_string))
                        .flatten()
                        .or(previous.digest)
                });
            memory.files.insert(
                path,
                Remembered {
                    size: file.map_or(completed.bytes, |f| f.size),
                    mtime_ns: file.and_then(|f| f.modified).and_then(memory::mtime_ns),
                    etag: completed.etag,
                    last_modified: completed.last_modified,
                    digest,
                },
            );
        }
        memory
    })
    .await
    .map_err(|e| Error::Internal(format!("remembering the sync failed: {e}")))?;
    memory = memory_after;
    delete_planned(dir, &plan, options, &mut report, &mut memory).await?;
    let dir_owned = dir.to_path_buf();
    let shard = options.shard;
    let durable = downloader.client.config().durability == crate::Durability::Full;
    tokio::task::spawn_blocking(move || memory.write(&dir_owned, shard, durable))
        .await
        .map_err(|e| Error::Internal(format!("saving the sync memory failed: {e}")))??;
    Ok(report)
}

fn request_for(planned: &Planned, dir: &Path, options: &SyncOptions) -> Result<Request, Error> {
    let entry = &planned.entry;
    let mut request = Request::from_url(entry.url.clone())?
        .into_dir_at(dir, &entry.path)?
        .with_on_exists(OnExists::Overwrite)
        .with_remote_time(true);
    if let Some(checksum) = &entry.checksum {
        request = request.with_checksum(checksum.clone());
    } else if options.verify_local {
        request = request.with_digest(Algorithm::Sha256);
    }
    for mirror in &entry.mirrors {
        request = request.with_mirror(mirror.as_str())?;
    }
    if let Some(rate) = options.file_rate_limit {
        request = request.with_rate_limit(rate);
    }
    if let Action::Check {
        etag,
        last_modified,
    } = &planned.action
    {
        request = request.revalidate_with(etag.clone(), last_modified.clone());
    }
    Ok(request)
}

/// Deletes what the plan says, when the run allows it.
async fn delete_planned(
    dir: &Path,
    plan: &Plan,
    options: &SyncOptions,
    report: &mut SyncReport,
    memory: &mut Memory,
) -> Result<(), Error> {
    if !options.delete {
        return Ok(());
    }
    if let Some(blocked) = &plan.deletion_blocked {
        report.deletion_held = Some(DeletionHeld::Blocked(blocked.clone()));
        return Ok(());
    }
    if plan.delete.is_empty() {
        return Ok(());
    }
    let files = plan.delete.len();
    if report.interrupted {
        report.deletion_held = Some(DeletionHeld::Interrupted { files });
        return Ok(());
    }
    if report.downloads_failed(options) && !options.delete_on_errors {
        report.deletion_held = Some(DeletionHeld::DownloadsFailed { files });
        return Ok(());
    }
    let dir = dir.to_path_buf();
    let doomed = plan.delete.clone();
    let results = tokio::task::spawn_blocking(move || {
        doomed
            .into_iter()
            .map(|path| {
                let result = local::delete_file(&dir, &path);
                (path, result)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| Error::Internal(format!("deleting failed: {e}")))?;
    for (path, result) in results {
        match result {
            Ok(()) => {
                report.deleted += 1;
                memory.files.remove(&path);
            }
            Err(error) => report.deletion_failures.push((path, error)),
        }
    }
    Ok(())
}
