//! Two different URLs to one output, found in a list of requests before anything starts (a
//! batch finds them too, but only as it reaches them: a list checked first runs nothing when
//! it has a mistake). Each request recorded costs 24 bytes and no hash table, so a list of a
//! million URLs is checked in 24 MB.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;

use crate::{Destination, Request};

/// Collects the outputs of a list of requests and reports the ones claimed by different URLs.
///
/// ```
/// use haul::{OutputConflicts, Request};
///
/// let mut outputs = OutputConflicts::new(false);
/// let list = ["https://a.example/x.iso", "https://b.example/x.iso", "https://a.example/y"];
/// for (position, url) in list.iter().enumerate() {
///     outputs.record(&Request::new(url)?.into_dir("d"), position as u64);
/// }
/// assert_eq!(outputs.conflicts(), vec![(0, 1)]);
/// # Ok::<(), haul::Error>(())
/// ```
#[derive(Debug)]
pub struct OutputConflicts {
    keys: RandomState,
    /// Output fingerprint, position, URL fingerprint.
    given: Vec<(u64, u64, u32)>,
    content_disposition: bool,
}

impl OutputConflicts {
    /// An empty check. With `content_disposition`, a request saved into a directory under
    /// the URL's name is left out: the server names its output, and a batch gives clashing
    /// server names distinct files.
    #[must_use]
    pub fn new(content_disposition: bool) -> Self {
        Self {
            keys: RandomState::new(),
            given: Vec::new(),
            content_disposition,
        }
    }

    /// The output of `request`, if it is one this check is about.
    #[must_use]
    pub fn output_of(&self, request: &Request) -> Option<PathBuf> {
        let output = request.output_path().ok()?;
        let provisional =
            self.content_disposition && matches!(request.destination(), Destination::Directory(_));
        (!provisional).then_some(output)
    }

    /// Records `request` at `position` (any number that identifies it to you: an index, a
    /// line number).
    pub fn record(&mut self, request: &Request, position: u64) {
        let Some(output) = self.output_of(request) else {
            return;
        };
        let key = self.fingerprint(output.as_os_str().as_encoded_bytes());
        let url = self.fingerprint(request.url().as_str().as_bytes());
        let url = u32::try_from((url >> 32) ^ (url & u64::from(u32::MAX))).unwrap_or(u32::MAX);
        self.given.push((key, position, url));
    }

    /// Pairs of positions — the first to give an output, and a later one with a different
    /// URL — ordered by the later position. The same URL twice is no conflict (a batch
    /// downloads it once).
    #[must_use]
    pub fn conflicts(&mut self) -> Vec<(u64, u64)> {
        self.given.sort_unstable();
        let mut found = Vec::new();
        let mut first: Option<(u64, u64, u32)> = None;
        for &(key, position, url) in &self.given {
            match first {
                Some((seen, at, seen_url)) if seen == key => {
                    if seen_url != url {
                        found.push((at, position));
                    }
                }
                _ => first = Some((key, position, url)),
            }
        }
        found.sort_unstable_by_key(|(_, later)| *later);
        found
    }

    fn fingerprint(&self, bytes: &[u8]) -> u64 {
        let mut hasher = self.keys.build_hasher();
        hasher.write(bytes);
        hasher.finish()
    }
}
