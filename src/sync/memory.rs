//! What the last sync learned about each file, kept in the mirror directory
//! (`.haul-sync.json`, or `.haul-sync.K-of-N.json` for a shard): the size and modification
//! time haul left the file with (to notice a file changed locally), the server's validators
//! (for a conditional request next time) and the file's digest (for `verify_local`). Written
//! atomically; an unreadable memory is an empty one (every file is then checked again).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::filters::Shard;
use crate::Error;
use crate::storage::place::Place;

/// The version written; version 1 (no times, no digests) is still read.
const MEMORY_VERSION: u32 = 2;

/// What is remembered of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// Its size after the last sync.
    pub size: u64,
    /// Its modification time after the last sync, in nanoseconds since the Unix epoch.
    #[serde(default)]
    pub mtime_ns: Option<u128>,
    /// The server's `ETag`.
    pub etag: Option<String>,
    /// The server's `Last-Modified`.
    pub last_modified: Option<String>,
    /// Its digest (`sha-256=HEX`).
    #[serde(default)]
    pub digest: Option<String>,
}

/// The memory of one mirror (or one shard of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    version: u32,
    /// Per relative path.
    pub files: BTreeMap<String, Remembered>,
}

impl Memory {
    /// The memory file's name in the mirror.
    #[must_use]
    pub fn file_name(shard: Option<Shard>) -> String {
        match shard {
            Some(shard) => format!(".haul-sync.{}-of-{}.json", shard.index(), shard.count()),
            None => ".haul-sync.json".to_owned(),
        }
    }

    /// Locks the mirror at `dir` (or one shard of it) for this process, with a POSIX record
    /// lock on `.haul-sync[.K-of-N].lock`, which NFS honours and which is released when the
    /// process ends however it ends. A missing directory is made when `create` (a second sync
    /// started a moment later must find the lock already there); otherwise `None`. Blocking.
    ///
    /// # Errors
    /// `Error::SyncBusy` when another process holds the lock.
    pub fn lock(
        dir: &Path,
        shard: Option<Shard>,
        create: bool,
    ) -> Result<Option<std::fs::File>, Error> {
        let name = match shard {
            Some(shard) => format!(".haul-sync.{}-of-{}.lock", shard.index(), shard.count()),
            None => ".haul-sync.lock".to_owned(),
        };
        let place = Place::in_dir(dir, name);
        let path = place.path();
        let Some(opened) = place.open_dir(create)? else {
            return Ok(None);
        };
        let file = opened
            .create_file(place.name(), false)
            .map_err(|e| Error::io("open", &path, e))?;
        match rustix::fs::fcntl_lock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(file)),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::ACCESS) => Err(Error::SyncBusy {
                dir: dir.to_path_buf(),
                lock: path,
            }),
            Err(error) => Err(Error::io("lock", &path, error.into())),
        }
    }

    /// Reads the memory of the mirror at `dir` (empty when there is none or it is unreadable).
    /// Blocking.
    #[must_use]
    pub fn load(dir: &Path, shard: Option<Shard>) -> Self {
        let place = Place::in_dir(dir, Self::file_name(shard));
        let Ok(Some(opened)) = place.open_dir(false) else {
            return Self::default();
        };
        opened
            .read(place.name())
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Self>(&bytes).ok())
            .filter(|memory| matches!(memory.version, 1 | MEMORY_VERSION))
            .unwrap_or_default()
    }

    /// Replaces the memory file atomically; synced (data, then its directory) when `durable`.
    /// Without syncs the downloaded files are not durable either, and a memory that outlived
    /// them would claim files a power cut took. Blocking.
    pub(crate) fn write(
        &self,
        dir: &Path,
        shard: Option<Shard>,
        durable: bool,
    ) -> Result<(), Error> {
        let place = Place::in_dir(dir, Self::file_name(shard));
        let path = place.path();
        let mut copy = self.clone();
        copy.version = MEMORY_VERSION;
        let json = serde_json::to_vec_pretty(&copy)
            .map_err(|e| Error::io("encode", &path, std::io::Error::other(e)))?;
        let opened = place
            .open_dir(true)?
            .ok_or_else(|| Error::Internal("the mirror directory vanished".into()))?;
        let mut tmp = place.name().to_owned();
        tmp.push(".tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = opened.create_file(&tmp, true)?;
            file.write_all(&json)?;
            if durable {
                file.sync_data()?;
            }
            opened.rename(&tmp, place.name())?;
            if durable {
                // The new memory survives a power cut only once the directory is synced.
                rustix::fs::fsync(opened.fd())?;
            }
            Ok(())
        };
        write().map_err(|e| Error::io("write", &path, e))
    }
}

/// A modification time as remembered.
#[must_use]
pub fn mtime_ns(time: SystemTime) -> Option<u128> {
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_memory_loads_back_and_version_1_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut memory = Memory::default();
        memory.files.insert(
            ".x/y.bin".into(),
            Remembered {
                size: 3,
                mtime_ns: Some(1_700_000_000_123_456_789),
                etag: Some("\"e\"".into()),
                last_modified: None,
                digest: Some("sha-256=00".into()),
            },
        );
        memory.write(dir.path(), None, true).unwrap();
        let loaded = Memory::load(dir.path(), None);
        assert_eq!(loaded.files, memory.files);
        std::fs::write(
            dir.path().join(".haul-sync.0-of-2.json"),
            r#"{"version":1,"files":{"a":{"size":1,"etag":null,"last_modified":"x"}}}"#,
        )
        .unwrap();
        let old = Memory::load(dir.path(), Some(Shard::new(0, 2).unwrap()));
        assert_eq!(old.files["a"].size, 1);
        assert_eq!(old.files["a"].mtime_ns, None);
        std::fs::write(dir.path().join(".haul-sync.json"), b"garbage").unwrap();
        assert!(Memory::load(dir.path(), None).files.is_empty());
    }
}
