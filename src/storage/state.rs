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

/// Where an answer that would continue stored bytes comes from, for the identity rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The server that served the stored bytes: its `ETag` speaks for the version.
    SameSource,
    /// Another server of the file (a mirror): `ETag`s differ between servers, so only the
    /// length and `Last-Modified` are compared.
    OtherSource,
}

impl Validators {
    /// The identity rule, for every answer that continues stored bytes (a resume, a segment,
    /// a mirror): `None` when `answer` is the same version as `self`, else why not. The
    /// complete length must be the same; then a strong `ETag` stored from the same source must
    /// match the answer's when it sends one, and otherwise `Last-Modified` must match where
    /// both say. Whether the server honoured `If-Range` does not matter: a server that ignores
    /// it and sends another version's bytes is caught here.
    pub(crate) fn differs(&self, answer: &Self, origin: Origin) -> Option<String> {
        match (self.total_bytes, answer.total_bytes) {
            (Some(stored), Some(now)) if stored != now => {
                return Some(format!(
                    "the file's length changed from {stored} to {now} bytes"
                ));
            }
            (Some(stored), None) => {
                return Some(format!(
                    "the server no longer says the file's length (was {stored} bytes)"
                ));
            }
            _ => {}
        }
        let strong = |tag: &Option<String>| tag.clone().filter(|t| !t.starts_with("W/"));
        if origin == Origin::SameSource
            && let (Some(stored), Some(now)) = (strong(&self.etag), &answer.etag)
        {
            return (&stored != now)
                .then(|| format!("the file changed on the server (ETag {stored} is now {now})"));
        }
        match (&self.last_modified, &answer.last_modified) {
            (Some(stored), Some(now)) if stored != now => Some(format!(
                "the file changed on the server (Last-Modified {stored} is now {now})"
            )),
            _ => None,
        }
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
    /// It could not be read now because the process is out of file descriptors: nothing is
    /// known about it, and it must not be thrown away (the download waits and looks again).
    OutOfDescriptors,
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
            Err(error) if error.is_out_of_descriptors() => return Err(Unusable::OutOfDescriptors),
            Err(error) => return Err(Unusable::Invalid(format!("unreachable: {error}"))),
        };
        let bytes = match dir.read(paths.state_name()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Missing),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                return Err(Unusable::OutOfDescriptors);
            }
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
            dir.rename(&tmp, paths.state_name())?;
            // The new state file's name (and the `.part`'s, made before it) survives a power
            // cut only once the directory is synced. At every checkpoint, not only the first:
            // a rename the cut reverts names the state before, and the bytes since are lost to
            // the resume (the power-loss test counts resumes that survive).
            syncer.sync_names(dir.fd())?;
            Ok(())
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
    fn the_identity_rule_catches_another_version_whatever_if_range_did() {
        let stored = Validators {
            total_bytes: Some(100),
            etag: Some("\"v1\"".into()),
            last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
        };
        let same = |v: &Validators, origin| stored.differs(v, origin).is_none();
        assert!(same(&stored, Origin::SameSource));
        let new_tag = Validators {
            etag: Some("\"v2\"".into()),
            ..stored.clone()
        };
        assert!(!same(&new_tag, Origin::SameSource), "a new strong ETag");
        assert!(
            same(&new_tag, Origin::OtherSource),
            "another server's ETag says nothing"
        );
        let new_time = Validators {
            last_modified: Some("Mon, 07 Nov 1994 08:49:37 GMT".into()),
            ..stored.clone()
        };
        assert!(
            same(&new_time, Origin::SameSource),
            "a matching strong ETag decides"
        );
        assert!(!same(&new_time, Origin::OtherSource));
        let longer = Validators {
            total_bytes: Some(101),
            ..stored.clone()
        };
        assert!(!same(&longer, Origin::SameSource));
        assert!(!same(&longer, Origin::OtherSource));
        let unknown_length = Validators {
            total_bytes: None,
            ..stored.clone()
        };
        assert!(!same(&unknown_length, Origin::SameSource));
        let no_tag = Validators {
            etag: None,
            ..new_time.clone()
        };
        assert!(
            !same(&no_tag, Origin::SameSource),
            "without an ETag, Last-Modified decides"
        );
        let weak = Validators {
            etag: Some("W/\"v1\"".into()),
            ..stored.clone()
        };
        assert!(
            weak.differs(&new_time, Origin::SameSource).is_some(),
            "a weak ETag is no identity"
        );
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
