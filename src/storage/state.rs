//! The resume state file beside a `.part` file: what is needed to trust its bytes on the next
//! run. Versioned JSON, replaced atomically (write a temporary file, sync it, rename), and only
//! ever written after the data it describes is durable.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::PartPaths;
use super::durability::Syncer;
use super::ranges::RangeSet;
use crate::Error;

/// Bumped whenever the meaning of a field changes; other versions are treated as absent.
const STATE_VERSION: u32 = 1;

/// What the server said about the entity, used to check that resumed bytes belong to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Validators {
    /// Total length of the entity, when known.
    pub(crate) total_bytes: Option<u64>,
    /// The `ETag`, as sent (weak ones included; they are never used in `If-Range`).
    pub(crate) etag: Option<String>,
    /// The `Last-Modified` header, as sent.
    pub(crate) last_modified: Option<String>,
}

impl Validators {
    /// The `If-Range` value: a strong `ETag` first, `Last-Modified` otherwise. RFC 9110 §13.1.5
    /// forbids weak entity tags there.
    pub(crate) fn if_range(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|tag| !tag.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResumeState {
    pub(crate) version: u32,
    /// The URL the bytes came from (credentials redacted).
    pub(crate) url: String,
    pub(crate) validators: Validators,
    /// Byte ranges of the `.part` file that hold durable data.
    pub(crate) done: RangeSet,
    /// The expected checksum (`sha-256=HEX`), when one was given.
    pub(crate) checksum: Option<String>,
    /// The digest the server announced for the whole file, and in which header, when it did
    /// (so a resume in another run verifies against it too).
    #[serde(default)]
    pub(crate) server_digest: Option<(String, String)>,
}

/// Why a state file was not used.
#[derive(Debug)]
pub(crate) enum Unusable {
    /// There is none.
    Missing,
    /// There is one, but it is unreadable, corrupt or of another version.
    Invalid(String),
}

impl ResumeState {
    pub(crate) fn new(url: String, validators: Validators, checksum: Option<String>) -> Self {
        Self {
            version: STATE_VERSION,
            url,
            validators,
            done: RangeSet::default(),
            checksum,
            server_digest: None,
        }
    }

    /// Reads the state file of `paths`. Anything but a well-formed state of this version is
    /// `Unusable`, never a panic.
    pub(crate) fn load(paths: &PartPaths) -> Result<Self, Unusable> {
        let dir = match paths.dir(false) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Err(Unusable::Missing),
            Err(error) => return Err(Unusable::Invalid(format!("unreachable: {error}"))),
        };
        let bytes = match dir.read(paths.state_name()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
            Err(e) => return Err(Unusable::Invalid(format!("unreadable: {e}"))),
        };
        Self::parse(&bytes)
    }

    fn parse(bytes: &[u8]) -> Result<Self, Unusable> {
        let state: Self = serde_json::from_slice(bytes)
            .map_err(|e| Unusable::Invalid(format!("corrupt: {e}")))?;
        if state.version != STATE_VERSION {
            return Err(Unusable::Invalid(format!(
                "version {} is not {STATE_VERSION}",
                state.version
            )));
        }
        if !state.done.is_well_formed() {
            return Err(Unusable::Invalid("corrupt: malformed ranges".into()));
        }
        Ok(state)
    }

    /// Replaces the state file of `paths` atomically and durably (write a temporary file in
    /// the same directory, sync it, rename it).
    /// With relaxed durability the sync is left out; the rename still makes the replacement
    /// atomic.
    pub(crate) fn save(&self, paths: &PartPaths, syncer: &Syncer) -> Result<(), Error> {
        let mut tmp = paths.state_name().to_owned();
        tmp.push(".tmp");
        let json = serde_json::to_vec(self).map_err(|e| {
            Error::io(
                "encode resume state",
                &paths.state,
                std::io::Error::other(e),
            )
        })?;
        let dir = paths.made_dir()?;
        let write = || -> std::io::Result<()> {
            let mut file = dir.create_file(&tmp, true)?;
            file.write_all(&json)?;
            syncer.sync_data(&file)?;
            dir.rename(&tmp, paths.state_name())
        };
        write().map_err(|e| Error::io("write resume state", &paths.state, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ResumeState {
        let mut state = ResumeState::new(
            "http://h/f".into(),
            Validators {
                total_bytes: Some(100),
                etag: Some("\"abc\"".into()),
                last_modified: None,
            },
            None,
        );
        state.done.insert(0, 42);
        state
    }

    fn paths_in(dir: &std::path::Path) -> PartPaths {
        PartPaths::beside(&crate::storage::place::Place::in_dir(dir, "f"))
    }

    #[test]
    fn a_saved_state_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths_in(dir.path());
        sample().save(&paths, &Syncer::default()).unwrap();
        assert_eq!(ResumeState::load(&paths).unwrap(), sample());
        assert!(dir.path().join("f.part.haul").is_file());
    }

    #[test]
    fn garbage_truncated_and_foreign_versions_are_unusable_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths_in(dir.path());
        let path = dir.path().join("f.part.haul");
        assert!(matches!(ResumeState::load(&paths), Err(Unusable::Missing)));
        let good = serde_json::to_vec(&sample()).unwrap();
        let mut future = sample();
        future.version = 99;
        let cases: Vec<Vec<u8>> = vec![
            b"\x00\xffgarbage".to_vec(),
            good[..good.len() / 2].to_vec(),
            serde_json::to_vec(&future).unwrap(),
            br#"{"version":1,"url":"u","validators":{},"done":[[5,1]],"checksum":null}"#.to_vec(),
            Vec::new(),
        ];
        for bytes in cases {
            std::fs::write(&path, &bytes).unwrap();
            assert!(
                matches!(ResumeState::load(&paths), Err(Unusable::Invalid(_))),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn weak_etags_are_never_used_for_if_range() {
        let mut validators = Validators {
            total_bytes: None,
            etag: Some("W/\"weak\"".into()),
            last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
        };
        assert_eq!(validators.if_range(), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        validators.last_modified = None;
        assert_eq!(validators.if_range(), None);
        validators.etag = Some("\"strong\"".into());
        assert_eq!(validators.if_range(), Some("\"strong\""));
    }
}
