//! Auditing a mirror without downloading (`haul check`): every file the reference names is
//! looked for and re-hashed, and what is on disk but not in the reference is reported. The
//! reference is a source's files (with their sizes and checksums: a manifest, a listing, a
//! checksum file) or, without one, what the last sync remembered (`.haul-sync.json`: sizes
//! and, where it learned them, digests). People audit mirrors for bit rot this way.

use std::collections::BTreeMap;
use std::path::Path;

use super::local::{LocalTree, hash_file};
use super::memory::Memory;
use super::plan::SourceFiles;
use super::{Filters, Shard};
use crate::{Checksum, Error};

/// What a check found for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Its size and (when one is known) its digest match.
    Ok,
    /// There, with the right size, but nothing to compare its bytes with.
    Unverified,
    /// Not in the directory.
    Missing,
    /// Its size or digest is not the reference's.
    Corrupt(String),
    /// In the directory, not in the reference.
    Extra,
}

impl Verdict {
    /// A stable lower-case name (`ok`, `unverified`, `missing`, `corrupt`, `extra`).
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unverified => "unverified",
            Self::Missing => "missing",
            Self::Corrupt(_) => "corrupt",
            Self::Extra => "extra",
        }
    }
}

/// What a check found, file by file, in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// Every file looked at, with its verdict.
    pub files: Vec<(String, Verdict)>,
}

impl CheckReport {
    /// How many files got `verdict`'s kind.
    #[must_use]
    pub fn count(&self, kind: &str) -> usize {
        self.files
            .iter()
            .filter(|(_, v)| v.as_str() == kind)
            .count()
    }

    /// Whether some file's bytes are not what they should be.
    #[must_use]
    pub fn has_corruption(&self) -> bool {
        self.files
            .iter()
            .any(|(_, v)| matches!(v, Verdict::Corrupt(_)))
    }

    /// Whether the directory differs from the reference at all (a file corrupt, missing or
    /// extra).
    #[must_use]
    pub fn has_differences(&self) -> bool {
        self.files
            .iter()
            .any(|(_, v)| matches!(v, Verdict::Corrupt(_) | Verdict::Missing | Verdict::Extra))
    }
}

/// What one file should be.
#[derive(Default)]
struct Expected {
    size: Option<u64>,
    digest: Option<Checksum>,
}

/// What a directory is checked against.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reference {
    /// A source's files: their sizes and checksums (a manifest, a listing, with
    /// [`apply_sums`](super::apply_sums) if there is a checksum file).
    Source(SourceFiles),
    /// A checksum file's names and digests alone.
    Sums(Vec<(String, Checksum)>),
    /// What the last sync remembered in the directory (`.haul-sync.json`).
    Memory,
}

/// Checks the directory `dir` against `reference`, downloading nothing. Only files `filters`
/// and `shard` accept are looked at; extra files are reported only against a reference that
/// is complete (not a listing that reached a bound).
///
/// # Errors
/// When the directory cannot be read.
pub async fn check(
    dir: &Path,
    reference: Reference,
    filters: &Filters,
    shard: Option<Shard>,
) -> Result<CheckReport, Error> {
    let dir = dir.to_path_buf();
    let filters = filters.clone();
    tokio::task::spawn_blocking(move || {
        let in_scope =
            |path: &str| filters.accepts(path) && shard.is_none_or(|shard| shard.contains(path));
        let local = LocalTree::scan(&dir)?;
        let memory = Memory::load(&dir, shard);
        let (expected, complete) = match &reference {
            Reference::Source(files) => (from_source(files, &memory), files.incomplete.is_empty()),
            Reference::Sums(sums) => (
                sums.iter()
                    .map(|(path, digest)| {
                        let path = path.trim_start_matches("./").to_owned();
                        (
                            path,
                            Expected {
                                size: None,
                                digest: Some(digest.clone()),
                            },
                        )
                    })
                    .collect(),
                true,
            ),
            Reference::Memory => (from_memory(&memory), true),
        };
        let mut report = CheckReport::default();
        for (path, wanted) in expected.iter().filter(|(path, _)| in_scope(path)) {
            let verdict = match local.files.get(path) {
                None => Verdict::Missing,
                Some(file) => match wanted.size {
                    Some(size) if size != file.size => {
                        Verdict::Corrupt(format!("{} bytes, not {size}", file.size))
                    }
                    _ => match &wanted.digest {
                        None => Verdict::Unverified,
                        Some(digest) => match hash_file(&dir, path, digest.algorithm()) {
                            Ok(actual) if &actual == digest => Verdict::Ok,
                            Ok(actual) => Verdict::Corrupt(format!(
                                "{} is {}, not {}",
                                digest.algorithm().name(),
                                actual.hex(),
                                digest.hex()
                            )),
                            Err(error) => Verdict::Corrupt(format!("unreadable: {error}")),
                        },
                    },
                },
            };
            report.files.push((path.clone(), verdict));
        }
        if complete {
            for path in local.files.keys() {
                if in_scope(path) && !expected.contains_key(path) {
                    report.files.push((path.clone(), Verdict::Extra));
                }
            }
        }
        report.files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(report)
    })
    .await
    .map_err(|e| Error::Internal(format!("checking the directory failed: {e}")))?
}

/// The source's sizes and checksums; where the source gives no checksum, the digest the last
/// sync remembered for a file of the same size.
fn from_source(files: &SourceFiles, memory: &Memory) -> BTreeMap<String, Expected> {
    files
        .entries
        .iter()
        .map(|entry| {
            let remembered = memory.files.get(&entry.path);
            let size = entry.size.or_else(|| remembered.map(|r| r.size));
            let digest = entry.checksum.clone().or_else(|| {
                remembered
                    .filter(|r| size.is_none_or(|s| s == r.size))
                    .and_then(|r| r.digest.as_deref())
                    .and_then(|d| d.parse().ok())
            });
            (entry.path.clone(), Expected { size, digest })
        })
        .collect()
}

/// What the last sync remembered: every file's size, and its digest when it learned one.
fn from_memory(memory: &Memory) -> BTreeMap<String, Expected> {
    memory
        .files
        .iter()
        .map(|(path, remembered)| {
            let digest = remembered.digest.as_deref().and_then(|d| d.parse().ok());
            (
                path.clone(),
                Expected {
                    size: Some(remembered.size),
                    digest,
                },
            )
        })
        .collect()
}
