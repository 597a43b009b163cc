//! The mirror's side of a sync: what is in the directory (walked through open directories,
//! never following a symlink), the digests of local files, and deletions, which remove only
//! regular files and only beneath the mirror directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use super::names::is_working_file;
use crate::Error;
use crate::integrity::{Algorithm, Checksum, Hasher};
use crate::storage::dir::{Dir, Kind};
use crate::storage::place::Place;

/// A regular file in the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalFile {
    /// Its length.
    pub size: u64,
    /// Its modification time.
    pub modified: Option<SystemTime>,
}

/// What is in the mirror directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalTree {
    /// Regular files by relative path (haul's working files left out).
    pub files: BTreeMap<String, LocalFile>,
    /// Paths that are symlinks or other non-files (never followed, never touched).
    pub others: BTreeMap<String, &'static str>,
}

impl LocalTree {
    /// Walks the mirror at `dir` (which may not exist yet: then it is empty). Blocking.
    ///
    /// # Errors
    /// When a directory cannot be read.
    pub fn scan(dir: &Path) -> Result<Self, Error> {
        let mut tree = Self::default();
        let Some(root) = Place::in_dir(dir, "-").open_dir(false)? else {
            return Ok(tree);
        };
        let mut pending: Vec<(Dir, String)> = vec![(root, String::new())];
        while let Some((folder, prefix)) = pending.pop() {
            let names = folder
                .names()
                .map_err(|e| Error::io("list", folder.path(), e))?;
            for name in names {
                // A name that is not UTF-8 cannot be in any source: it is left alone.
                let Some(text) = name.to_str() else { continue };
                let relative = if prefix.is_empty() {
                    text.to_owned()
                } else {
                    format!("{prefix}/{text}")
                };
                let Ok(Some(entry)) = folder.entry(&name) else {
                    continue;
                };
                match entry.kind {
                    Kind::Directory => {
                        if let Ok(Some(sub)) = folder.subdir(&name) {
                            pending.push((sub, relative));
                        }
                    }
                    Kind::File if is_working_file(text) => {}
                    Kind::File => {
                        tree.files.insert(
                            relative,
                            LocalFile {
                                size: entry.len,
                                modified: entry.modified,
                            },
                        );
                    }
                    Kind::Symlink => {
                        tree.others.insert(relative, "a symlink");
                    }
                    Kind::Other => {
                        tree.others.insert(relative, "not a regular file");
                    }
                }
            }
        }
        Ok(tree)
    }
}

/// The digest of the mirror's file at `path`, read without following symlinks. Blocking.
///
/// # Errors
/// When it cannot be opened or read.
pub fn hash_file(dir: &Path, path: &str, algorithm: Algorithm) -> Result<Checksum, Error> {
    use std::io::Read;
    let place = Place::below(dir, path)?;
    let shown = place.path();
    let folder = place
        .open_dir(false)?
        .ok_or_else(|| Error::io("open", &shown, std::io::ErrorKind::NotFound.into()))?;
    let mut file = folder
        .open_read(place.name())
        .map_err(|e| Error::io("open", &shown, e))?;
    let mut hasher = Hasher::new(algorithm);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| Error::io("read", &shown, e))?;
        if read == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..read]);
    }
}

/// Removes the mirror's regular file at `path`: never a symlink, a directory, or anything
/// reached through a symlink. Blocking.
///
/// # Errors
/// When something else than a regular file is there, or the removal fails.
pub fn delete_file(dir: &Path, path: &str) -> Result<(), Error> {
    let place = Place::below(dir, path)?;
    let shown = place.path();
    let Some(folder) = place.open_dir(false)? else {
        return Ok(());
    };
    match folder
        .entry(place.name())
        .map_err(|e| Error::io("inspect", &shown, e))?
    {
        None => Ok(()),
        Some(entry) if entry.kind == Kind::File => folder
            .remove(place.name())
            .map_err(|e| Error::io("delete", &shown, e)),
        Some(_) => Err(Error::UnsafePath {
            path: shown,
            reason: "not a regular file; haul deletes nothing else".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_lists_files_never_follows_symlinks_and_skips_working_files() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(".well-known/sub")).unwrap();
        std::fs::write(root.path().join(".well-known/sub/f"), b"abc").unwrap();
        std::fs::write(root.path().join("x.txt"), b"x").unwrap();
        std::fs::write(root.path().join("y.bin.part"), b"p").unwrap();
        std::fs::write(root.path().join(".haul-sync.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let tree = LocalTree::scan(root.path()).unwrap();
        let files: Vec<&str> = tree.files.keys().map(String::as_str).collect();
        assert_eq!(files, vec![".well-known/sub/f", "x.txt"]);
        assert_eq!(tree.files["x.txt"].size, 1);
        assert_eq!(tree.others.get("evil"), Some(&"a symlink"));
        assert!(
            delete_file(root.path(), "evil").is_err(),
            "a symlink is never deleted"
        );
        assert!(matches!(
            delete_file(root.path(), "evil/secret"),
            Err(Error::UnsafePath { .. })
        ));
        assert!(outside.path().join("secret").exists());
        delete_file(root.path(), ".well-known/sub/f").unwrap();
        assert!(!root.path().join(".well-known/sub/f").exists());
        assert!(
            LocalTree::scan(&root.path().join("missing"))
                .unwrap()
                .files
                .is_empty()
        );
    }
}
