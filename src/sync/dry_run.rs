//! Checking a plan without changing anything (`haul sync --dry-run`): every file to fetch is
//! asked for, every file to revalidate asked whether it changed, and the answers say what a
//! real sync would do and whether it would fail.

use futures_util::StreamExt;

use super::plan::{Action, DeletionBlocked};
use super::{OnConflict, Prepared, SyncOptions};
use crate::{Downloader, ErrorKind};

/// What a dry run says a sync would do with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DryRunAction {
    /// Fetch a file the mirror does not have.
    New,
    /// Fetch a file again.
    Update,
    /// Leave it.
    Unchanged,
    /// Delete it.
    Delete,
    /// Leave it out: its name conflicts with another.
    Conflict,
    /// Its fetch would fail (the server refused the probe).
    Fail,
}

impl DryRunAction {
    /// A stable lower-case name (`new`, `update`, `unchanged`, `delete`, `conflict`,
    /// `fail`), used in JSON output.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Update => "update",
            Self::Unchanged => "unchanged",
            Self::Delete => "delete",
            Self::Conflict => "conflict",
            Self::Fail => "fail",
        }
    }
}

impl std::fmt::Display for DryRunAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One line of a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DryRunLine {
    /// What the sync would do.
    pub action: DryRunAction,
    /// The file.
    pub path: String,
    /// Why, for `fail`, `conflict` and a blocked deletion.
    pub detail: Option<String>,
    /// The error's kind, for `fail`.
    pub kind: Option<ErrorKind>,
}

/// What a dry run found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DryRun {
    /// One line per file: in plan order, then deletions and conflicts.
    pub lines: Vec<DryRunLine>,
    /// Why nothing would be deleted although deletion was asked for.
    pub deletion_blocked: Option<DeletionBlocked>,
    /// The source reached a crawl bound.
    pub listing_incomplete: bool,
}

impl DryRun {
    /// Whether the real sync would fail: a file whose probe failed, a refused deletion, a
    /// conflict (unless conflicts are skipped), or an incomplete listing.
    #[must_use]
    pub fn has_failures(&self, options: &SyncOptions) -> bool {
        self.lines.iter().any(|line| match line.action {
            DryRunAction::Fail => true,
            DryRunAction::Conflict => options.on_conflict == OnConflict::Fail,
            _ => false,
        }) || self
            .deletion_blocked
            .as_ref()
            .is_some_and(DeletionBlocked::is_error)
            || self.listing_incomplete
    }
}

/// Checks a plan without changing anything: every file to fetch is asked for with a `HEAD`
/// (or a one-byte range), so one that would fail shows as `fail`; every file to revalidate with
/// a conditional `HEAD`. Each probe takes a `jobs` slot.
pub async fn dry_run(downloader: &Downloader, prepared: &Prepared) -> DryRun {
    let jobs = downloader.client.config().jobs.max(1);
    // Each probe owns what it needs: a future borrowing the plan through a closure's argument
    // is not `Send` for every lifetime, so a caller could not spawn a dry run.
    let work: Vec<(url::Url, String, Action)> = prepared
        .plan
        .files
        .iter()
        .map(|planned| {
            (
                planned.entry.url.clone(),
                planned.entry.path.clone(),
                planned.action.clone(),
            )
        })
        .collect();
    let mut lines: Vec<DryRunLine> = futures_util::stream::iter(work)
        .map(|(url, path, action)| probe(downloader.clone(), url, path, action))
        .buffered(jobs)
        .collect()
        .await;
    for path in &prepared.plan.delete {
        lines.push(DryRunLine {
            action: DryRunAction::Delete,
            path: path.clone(),
            detail: None,
            kind: None,
        });
    }
    for conflict in &prepared.plan.conflicts {
        for path in &conflict.paths {
            lines.push(DryRunLine {
                action: DryRunAction::Conflict,
                path: path.clone(),
                detail: Some(conflict.reason.clone()),
                kind: None,
            });
        }
    }
    DryRun {
        lines,
        deletion_blocked: prepared.plan.deletion_blocked.clone(),
        listing_incomplete: prepared.bound_reached,
    }
}

/// What one file of a dry run would do, asked of the server.
async fn probe(downloader: Downloader, url: url::Url, path: String, action: Action) -> DryRunLine {
    let outcome = match &action {
        Action::Unchanged => Ok(DryRunAction::Unchanged),
        Action::New => downloader.probe(&url).await.map(|_| DryRunAction::New),
        Action::Update(_) => downloader.probe(&url).await.map(|_| DryRunAction::Update),
        Action::Check {
            etag,
            last_modified,
        } => downloader
            .is_unchanged(&url, etag.as_deref(), last_modified.as_deref())
            .await
            .map(|same| {
                if same {
                    DryRunAction::Unchanged
                } else {
                    DryRunAction::Update
                }
            }),
    };
    match outcome {
        Ok(action) => DryRunLine {
            action,
            path,
            detail: None,
            kind: None,
        },
        Err(error) => DryRunLine {
            action: DryRunAction::Fail,
            path,
            detail: Some(error.to_string()),
            kind: Some(error.kind()),
        },
    }
}
