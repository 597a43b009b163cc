//! The pure plan of a sync: from what the source lists, what is in the mirror, what the last
//! sync remembered, the filters and the shard, decide per file whether to fetch it (and how),
//! leave it, or delete it, and which names are conflicts. No I/O here: every input is a value,
//! so the rules, deletion above all, are tested with tables.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use url::Url;

use super::filters::{Filters, Shard};
use super::local::LocalTree;
use super::memory::{Memory, mtime_ns};
use super::names::{check_mirror_path, is_working_file};
use crate::Checksum;

/// One file the source lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceEntry {
    /// Its path in the mirror, `/`-separated, exactly as the source names it.
    pub path: String,
    /// Where to fetch it.
    pub url: Url,
    /// Other URLs of the same file.
    pub mirrors: Vec<Url>,
    /// Its size, when the source says.
    pub size: Option<u64>,
    /// Its digest, when the source (or a checksum file) says.
    pub checksum: Option<Checksum>,
}

impl SourceEntry {
    /// An entry for `url` at `path`.
    #[must_use]
    pub fn new(path: impl Into<String>, url: Url) -> Self {
        Self {
            path: path.into(),
            url,
            mirrors: Vec::new(),
            size: None,
            checksum: None,
        }
    }

    /// With its size.
    #[must_use]
    pub fn with_size(mut self, size: Option<u64>) -> Self {
        self.size = size;
        self
    }

    /// With its digest.
    #[must_use]
    pub fn with_checksum(mut self, checksum: Option<Checksum>) -> Self {
        self.checksum = checksum;
        self
    }

    /// With other URLs of the same file.
    #[must_use]
    pub fn with_mirrors(mut self, mirrors: Vec<Url>) -> Self {
        self.mirrors = mirrors;
        self
    }
}

/// Names that cannot be mirrored as they are, or that collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The paths involved.
    pub paths: Vec<String>,
    /// Why.
    pub reason: String,
}

/// What a source lists.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SourceFiles {
    /// The files, in the source's order.
    pub entries: Vec<SourceEntry>,
    /// Names found while reading the source that cannot be represented.
    pub conflicts: Vec<Conflict>,
    /// Why the listing may be missing files (a crawl bound reached, a loop pruned); then
    /// nothing is deleted.
    pub incomplete: Vec<String>,
    /// A crawl bound was reached: files are surely missing, and a sync of it has failed.
    pub bound_reached: bool,
}

/// Why a present file is fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateReason {
    /// Its size differs from what the source says.
    SizeDiffers,
    /// Its digest differs from the source's checksum.
    ChecksumDiffers,
    /// Its size or modification time changed since the last sync (a local edit).
    ChangedLocally,
    /// Its digest differs from the one the last sync remembered (`verify_local`).
    DigestDiffers,
}

/// What a sync does with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Not in the mirror: fetch it.
    New,
    /// Present but wrong: fetch it again, without a conditional request.
    Update(UpdateReason),
    /// Present: ask the server whether it changed (`If-None-Match` / `If-Modified-Since`).
    Check {
        /// The remembered `ETag`.
        etag: Option<String>,
        /// The remembered `Last-Modified`, or the file's own modification time.
        last_modified: Option<String>,
    },
    /// Present and verified against the source's checksum: nothing to do.
    Unchanged,
}

/// One file and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Planned {
    /// The file.
    pub entry: SourceEntry,
    /// What to do.
    pub action: Action,
}

/// The whole plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// Files of the source in scope, with their action (conflicting ones left out).
    pub files: Vec<Planned>,
    /// Names that are not mirrored, and why.
    pub conflicts: Vec<Conflict>,
    /// Mirror files to delete (with `delete`, when allowed).
    pub delete: Vec<String>,
    /// Why nothing will be deleted although deletion was asked for.
    pub deletion_blocked: Option<DeletionBlocked>,
}

/// Why a plan deletes nothing although deletion was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeletionBlocked {
    /// The listing may be missing files (a crawl bound reached, a loop pruned).
    Incomplete(String),
    /// The source lists no files (in scope): most likely a broken source, not an empty one.
    EmptySource,
    /// More files would go than the limit allows (a truncated listing, most likely).
    TooMany {
        /// How many would go.
        would: usize,
        /// The limit.
        limit: usize,
    },
}

impl DeletionBlocked {
    /// Whether this is worth failing the sync for (an empty source or too many deletions):
    /// something is probably wrong with the source. A pruned loop is only a warning.
    #[must_use]
    pub fn is_error(&self) -> bool {
        !matches!(self, Self::Incomplete(_))
    }
}

impl std::fmt::Display for DeletionBlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Incomplete(reason) => write!(f, "the listing is incomplete ({reason})"),
            Self::EmptySource => f.write_str("the source lists no files"),
            Self::TooMany { would, limit } => write!(
                f,
                "{would} files would be deleted, more than the limit of {limit}"
            ),
        }
    }
}

/// What shapes a plan besides its inputs.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Only these files.
    pub filters: Filters,
    /// Only this shard.
    pub shard: Option<Shard>,
    /// Delete files the source no longer lists.
    pub delete: bool,
    /// Delete nothing when more than this many would go.
    pub max_delete: Option<usize>,
    /// Compare local files with the digest the last sync remembered.
    pub verify_local: bool,
}

impl PlanOptions {
    fn in_scope(&self, path: &str) -> bool {
        self.filters.accepts(path) && self.shard.is_none_or(|shard| shard.contains(path))
    }
}

/// Plans a sync. `digests` holds the local digests the caller computed: for files whose
/// source has a checksum (in its algorithm) and, with `verify_local`, for remembered digests.
#[must_use]
pub fn plan(
    source: &SourceFiles,
    local: &LocalTree,
    memory: &Memory,
    digests: &HashMap<String, Checksum>,
    options: &PlanOptions,
) -> Plan {
    let mut result = Plan::default();
    let in_scope: Vec<&SourceEntry> = source
        .entries
        .iter()
        .filter(|entry| options.in_scope(&entry.path))
        .collect();
    result.conflicts.extend(
        source
            .conflicts
            .iter()
            .filter(|c| c.paths.iter().any(|p| options.in_scope(p)))
            .cloned(),
    );
    let blocked: BTreeSet<String> = conflicts_among(&in_scope, local, &mut result.conflicts);
    for entry in &in_scope {
        if blocked.contains(&entry.path) {
            continue;
        }
        result.files.push(Planned {
            entry: (*entry).clone(),
            action: action_for(entry, local, memory, digests, options),
        });
    }
    if options.delete {
        plan_deletions(source, &in_scope, local, options, &mut result);
    }
    result
}

/// Finds the names that cannot be mirrored (unsafe, duplicated, a file that is also a
/// directory, a symlink in the way) and returns them.
fn conflicts_among(
    entries: &[&SourceEntry],
    local: &LocalTree,
    conflicts: &mut Vec<Conflict>,
) -> BTreeSet<String> {
    let mut blocked = BTreeSet::new();
    let mut by_path: BTreeMap<&str, Vec<&SourceEntry>> = BTreeMap::new();
    for entry in entries {
        by_path.entry(entry.path.as_str()).or_default().push(entry);
    }
    let directories: BTreeSet<&str> = entries
        .iter()
        .flat_map(|entry| parents(&entry.path))
        .collect();
    for (path, same) in &by_path {
        let mut conflict = |reason: String| {
            conflicts.push(Conflict {
                paths: vec![(*path).to_owned()],
                reason,
            });
            blocked.insert((*path).to_owned());
        };
        if let Err(problem) = check_mirror_path(path) {
            conflict(format!("cannot be mirrored as it is: {problem}"));
        } else if same.len() > 1 {
            let urls: Vec<String> = same
                .iter()
                .map(|e| crate::naming::redact_url(&e.url))
                .collect();
            conflict(format!(
                "listed {} times ({}); none is fetched",
                same.len(),
                urls.join(", ")
            ));
        } else if directories.contains(path) {
            conflict("is both a file and a directory in the source".into());
        } else if let Some((at, what)) = std::iter::once(*path)
            .chain(parents(path))
            .find_map(|p| local.others.get(p).map(|what| (p, *what)))
        {
            conflict(format!(
                "`{at}` in the mirror is {what}; haul never writes through it"
            ));
        } else if let Some(at) = parents(path).find(|p| local.files.contains_key(*p)) {
            conflict(format!(
                "`{at}` in the mirror is a file where a directory is needed"
            ));
        }
    }
    blocked
}

/// `a/b/c` gives `a/b`, then `a`.
fn parents(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = path;
    std::iter::from_fn(move || {
        let (parent, _) = rest.rsplit_once('/')?;
        rest = parent;
        Some(parent)
    })
}

fn action_for(
    entry: &SourceEntry,
    local: &LocalTree,
    memory: &Memory,
    digests: &HashMap<String, Checksum>,
    options: &PlanOptions,
) -> Action {
    let Some(file) = local.files.get(&entry.path) else {
        return Action::New;
    };
    if entry.size.is_some_and(|size| size != file.size) {
        return Action::Update(UpdateReason::SizeDiffers);
    }
    if let Some(expected) = &entry.checksum {
        return match digests.get(&entry.path) {
            Some(actual) if actual == expected => Action::Unchanged,
            _ => Action::Update(UpdateReason::ChecksumDiffers),
        };
    }
    let remembered = memory.files.get(&entry.path);
    if let Some(remembered) = remembered {
        let time_changed = remembered
            .mtime_ns
            .is_some_and(|then| file.modified.and_then(mtime_ns) != Some(then));
        if remembered.size != file.size || time_changed {
            return Action::Update(UpdateReason::ChangedLocally);
        }
        if options.verify_local
            && let Some(digest) = &remembered.digest
            && digests.get(&entry.path).map(ToString::to_string).as_ref() != Some(digest)
        {
            return Action::Update(UpdateReason::DigestDiffers);
        }
        if remembered.etag.is_some() || remembered.last_modified.is_some() {
            return Action::Check {
                etag: remembered.etag.clone(),
                last_modified: remembered.last_modified.clone(),
            };
        }
    }
    // Nothing remembered: haul gives synced files the server's time, so the file's own time
    // is what to ask about.
    let last_modified = file
        .modified
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| crate::client::http::format_http_date(d.as_secs()));
    Action::Check {
        etag: None,
        last_modified,
    }
}

fn plan_deletions(
    source: &SourceFiles,
    in_scope: &[&SourceEntry],
    local: &LocalTree,
    options: &PlanOptions,
    result: &mut Plan,
) {
    if let Some(reason) = source.incomplete.first() {
        result.deletion_blocked = Some(DeletionBlocked::Incomplete(reason.clone()));
        return;
    }
    if in_scope.is_empty() {
        result.deletion_blocked = Some(DeletionBlocked::EmptySource);
        return;
    }
    let listed: BTreeSet<&str> = source.entries.iter().map(|e| e.path.as_str()).collect();
    let doomed: Vec<String> = local
        .files
        .keys()
        .filter(|path| {
            !listed.contains(path.as_str())
                && options.in_scope(path)
                && !is_working_file(path.rsplit('/').next().unwrap_or(path))
        })
        .cloned()
        .collect();
    if let Some(limit) = options.max_delete
        && doomed.len() > limit
    {
        result.deletion_blocked = Some(DeletionBlocked::TooMany {
            would: doomed.len(),
            limit,
        });
        return;
    }
    result.delete = doomed;
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::sync::local::LocalFile;
    use crate::sync::memory::Remembered;

    fn entry(path: &str) -> SourceEntry {
        SourceEntry::new(path, Url::parse(&format!("http://h/{path}")).unwrap())
    }

    fn source(paths: &[&str]) -> SourceFiles {
        SourceFiles {
            entries: paths.iter().map(|p| entry(p)).collect(),
            ..SourceFiles::default()
        }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn local(files: &[(&str, u64, u64)]) -> LocalTree {
        let mut tree = LocalTree::default();
        for (path, size, seconds) in files {
            tree.files.insert(
                (*path).to_owned(),
                LocalFile {
                    size: *size,
                    modified: Some(at(*seconds)),
                },
            );
        }
        tree
    }

    fn remember(memory: &mut Memory, path: &str, size: u64, seconds: u64, etag: &str) {
        memory.files.insert(
            path.to_owned(),
            Remembered {
                size,
                mtime_ns: mtime_ns(at(seconds)),
                etag: Some(etag.to_owned()),
                last_modified: None,
                digest: None,
            },
        );
    }

    fn actions(plan: &Plan) -> Vec<(&str, &Action)> {
        plan.files
            .iter()
            .map(|p| (p.entry.path.as_str(), &p.action))
            .collect()
    }

    #[test]
    fn names_that_differ_only_by_dots_are_all_mirrored_exactly() {
        let plan = plan(
            &source(&["x.txt", ".x.txt", "y.txt", "y.txt."]),
            &LocalTree::default(),
            &Memory::default(),
            &HashMap::new(),
            &PlanOptions::default(),
        );
        let paths: Vec<&str> = actions(&plan).iter().map(|(p, _)| *p).collect();
        assert_eq!(paths, vec!["x.txt", ".x.txt", "y.txt", "y.txt."]);
        assert!(plan.conflicts.is_empty());
    }

    #[test]
    fn conflicts_are_reported_and_never_fetched() {
        let mut tree = local(&[("file-here", 1, 1)]);
        tree.others.insert("evil".into(), "a symlink");
        let listed = source(&[
            "dup.bin",
            "dup.bin",
            "f.iso.part",
            "both",
            "both/inner",
            "evil/x",
            "file-here/y",
            "fine",
        ]);
        let plan = plan(
            &listed,
            &tree,
            &Memory::default(),
            &HashMap::new(),
            &PlanOptions::default(),
        );
        let conflicted: Vec<&str> = plan
            .conflicts
            .iter()
            .flat_map(|c| c.paths.iter().map(String::as_str))
            .collect();
        assert_eq!(
            conflicted,
            vec!["both", "dup.bin", "evil/x", "f.iso.part", "file-here/y"]
        );
        let fetched: Vec<&str> = actions(&plan).iter().map(|(p, _)| *p).collect();
        assert_eq!(fetched, vec!["both/inner", "fine"]);
    }

    #[test]
    fn local_changes_are_fetched_again_without_a_conditional_request() {
        let mut memory = Memory::default();
        remember(&mut memory, "same", 10, 100, "\"s\"");
        remember(&mut memory, "touched", 10, 100, "\"t\"");
        remember(&mut memory, "resized", 10, 100, "\"r\"");
        let tree = local(&[("same", 10, 100), ("touched", 10, 200), ("resized", 9, 100)]);
        let plan = plan(
            &source(&["same", "touched", "resized", "new"]),
            &tree,
            &memory,
            &HashMap::new(),
            &PlanOptions::default(),
        );
        assert_eq!(
            actions(&plan),
            vec![
                (
                    "same",
                    &Action::Check {
                        etag: Some("\"s\"".into()),
                        last_modified: None
                    }
                ),
                ("touched", &Action::Update(UpdateReason::ChangedLocally)),
                ("resized", &Action::Update(UpdateReason::ChangedLocally)),
                ("new", &Action::New),
            ]
        );
    }

    #[test]
    fn checksums_and_sizes_decide_without_the_network() {
        let right: Checksum = format!("sha-256={}", "ab".repeat(32)).parse().unwrap();
        let wrong: Checksum = format!("sha-256={}", "cd".repeat(32)).parse().unwrap();
        let listed = SourceFiles {
            entries: vec![
                entry("ok").with_checksum(Some(right.clone())),
                entry("bad").with_checksum(Some(right.clone())),
                entry("short").with_size(Some(5)),
            ],
            ..SourceFiles::default()
        };
        let digests = HashMap::from([("ok".to_owned(), right), ("bad".to_owned(), wrong)]);
        let plan = plan(
            &listed,
            &local(&[("ok", 1, 1), ("bad", 1, 1), ("short", 4, 1)]),
            &Memory::default(),
            &digests,
            &PlanOptions::default(),
        );
        assert_eq!(
            actions(&plan),
            vec![
                ("ok", &Action::Unchanged),
                ("bad", &Action::Update(UpdateReason::ChecksumDiffers)),
                ("short", &Action::Update(UpdateReason::SizeDiffers)),
            ]
        );
    }

    #[test]
    fn verify_local_compares_with_the_remembered_digest() {
        let digest: Checksum = format!("sha-256={}", "ab".repeat(32)).parse().unwrap();
        let other: Checksum = format!("sha-256={}", "00".repeat(32)).parse().unwrap();
        let mut memory = Memory::default();
        remember(&mut memory, "f", 1, 1, "\"e\"");
        memory.files.get_mut("f").unwrap().digest = Some(digest.to_string());
        let options = PlanOptions {
            verify_local: true,
            ..PlanOptions::default()
        };
        let tree = local(&[("f", 1, 1)]);
        let zeroed = HashMap::from([("f".to_owned(), other)]);
        let plan_zeroed = plan(&source(&["f"]), &tree, &memory, &zeroed, &options);
        assert_eq!(
            actions(&plan_zeroed),
            vec![("f", &Action::Update(UpdateReason::DigestDiffers))]
        );
        let intact = HashMap::from([("f".to_owned(), digest)]);
        let plan_intact = plan(&source(&["f"]), &tree, &memory, &intact, &options);
        assert!(matches!(plan_intact.files[0].action, Action::Check { .. }));
    }

    #[test]
    fn deletions_follow_the_rules() {
        let tree = local(&[
            ("keep", 1, 1),
            ("old-a", 1, 1),
            ("old-b", 1, 1),
            ("skip.iso", 1, 1),
        ]);
        let options = |max_delete| PlanOptions {
            delete: true,
            max_delete,
            filters: Filters::new(&[], &["*.iso".into()]),
            ..PlanOptions::default()
        };
        let run = |source: &SourceFiles, max| {
            plan(
                source,
                &tree,
                &Memory::default(),
                &HashMap::new(),
                &options(max),
            )
        };
        let full = source(&["keep"]);
        let planned = run(&full, None);
        assert_eq!(
            planned.delete,
            vec!["old-a", "old-b"],
            "filtered files are left alone"
        );
        assert_eq!(planned.deletion_blocked, None);
        let limited = run(&full, Some(1));
        assert!(limited.delete.is_empty());
        assert_eq!(
            limited.deletion_blocked,
            Some(DeletionBlocked::TooMany { would: 2, limit: 1 })
        );
        let empty = run(&source(&[]), None);
        assert!(empty.delete.is_empty() && empty.deletion_blocked.is_some());
        let mut partial = source(&["keep"]);
        partial
            .incomplete
            .push("the crawl reached its file limit".into());
        let incomplete = run(&partial, None);
        assert!(incomplete.delete.is_empty());
        assert!(matches!(
            incomplete.deletion_blocked,
            Some(DeletionBlocked::Incomplete(_))
        ));
        let shard = PlanOptions {
            delete: true,
            shard: Some(Shard::new(0, 2).unwrap()),
            ..PlanOptions::default()
        };
        let sharded = plan(&full, &tree, &Memory::default(), &HashMap::new(), &shard);
        assert!(
            sharded
                .delete
                .iter()
                .all(|p| Shard::new(0, 2).unwrap().contains(p)),
            "a shard deletes only its own files"
        );
    }
}
