//! The URLs one file can come from, as one ordered list: the request's URL, then its mirrors.
//! A source that fails for good for this file (gone, refused, unknown, stalling again and again,
//! out of retries, serving another version) is left, and the file goes on from the next one,
//! keeping the bytes already verified.

use url::Url;

use crate::Error;
use crate::naming::redact_url;

/// Stalls in a row after which a source is left (when another is there).
const STALLS_BEFORE_LEAVING: u32 = 2;

/// The file's sources and which one is asked now.
#[derive(Debug, Clone)]
pub(super) struct Sources {
    urls: Vec<Url>,
    current: usize,
    left: Vec<bool>,
    /// Stalls in a row of the current source.
    stalls: u32,
}

impl Sources {
    pub(super) fn new(url: &Url, mirrors: &[Url]) -> Self {
        let mut urls = vec![url.clone()];
        urls.extend(mirrors.iter().filter(|m| *m != url).cloned());
        let left = vec![false; urls.len()];
        Self {
            urls,
            current: 0,
            left,
            stalls: 0,
        }
    }

    /// Adds sources learned on the way (a server's `Link: rel=duplicate`), after the others;
    /// one already listed is not added twice.
    pub(super) fn extend(&mut self, more: impl Iterator<Item = Url>) {
        for url in more {
            if !self.urls.contains(&url) {
                self.urls.push(url);
                self.left.push(false);
            }
        }
    }

    /// The same list, asking the source at `index` (modulo their number) first.
    pub(super) fn starting_at(mut self, index: usize) -> Self {
        self.current = index % self.urls.len();
        self
    }

    /// The source asked now.
    pub(super) fn current(&self) -> &Url {
        &self.urls[self.current]
    }

    /// Its index in the list (0: the request's own URL).
    pub(super) fn index(&self) -> usize {
        self.current
    }

    /// Whether the file has more than one source.
    pub(super) fn several(&self) -> bool {
        self.urls.len() > 1
    }

    /// The sources not left, the current one first (for the segment engine).
    pub(super) fn usable(&self) -> Vec<Url> {
        let count = self.urls.len();
        (0..count)
            .map(|shift| (self.current + shift) % count)
            .filter(|index| !self.left[*index])
            .map(|index| self.urls[index].clone())
            .collect()
    }

    /// Notes an attempt's failure: `true` when it is a reason to leave the current source
    /// for another, when there is one.
    pub(super) fn is_terminal_for_source(&mut self, error: &Error) -> bool {
        if matches!(error, Error::Stalled { .. }) {
            self.stalls += 1;
            return self.stalls >= STALLS_BEFORE_LEAVING;
        }
        self.stalls = 0;
        leaves_source(error)
    }

    /// Leaves the current source; the next one not left yet, when there is one (then it is
    /// current), with a line saying why (`why` is formatted only then: a file with one source
    /// pays nothing for it).
    pub(super) fn leave(&mut self, why: impl std::fmt::Display) -> Option<String> {
        self.left[self.current] = true;
        self.stalls = 0;
        let count = self.urls.len();
        let next = (1..count)
            .map(|shift| (self.current + shift) % count)
            .find(|index| !self.left[*index])?;
        let message = format!(
            "source {} left for this file ({why}); going on from {}",
            redact_url(&self.urls[self.current]),
            redact_url(&self.urls[next])
        );
        self.current = next;
        Some(message)
    }
}

/// Whether `error` says this source cannot serve the file, though another may: it is gone
/// there (`404`, `410`), forbidden there (`401`, `403`, `451`, other client errors but `408`
/// and `429`), the server refuses connections or its name does not resolve, or the answer
/// could not be understood. (Retries running out is decided by the caller.)
fn leaves_source(error: &Error) -> bool {
    match error {
        Error::Status { status, .. } => (400..500).contains(status) && !matches!(status, 408 | 429),
        Error::Network { source, .. } => source.is_connect() || !error.is_retryable(),
        Error::BadRange { .. } | Error::BadRedirect { .. } | Error::Redirect { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn status(code: u16) -> Error {
        Error::Status {
            url: "u".into(),
            status: code,
            retry_after: None,
        }
    }

    #[test]
    fn sources_are_left_in_order_and_never_revisited() {
        let mut sources = Sources::new(
            &url("http://a/f"),
            &[url("http://b/f"), url("http://a/f"), url("http://c/f")],
        );
        assert_eq!(
            sources.usable().len(),
            3,
            "a mirror equal to the URL is one source"
        );
        assert!(sources.is_terminal_for_source(&status(404)));
        assert!(!sources.is_terminal_for_source(&status(503)));
        assert!(!sources.is_terminal_for_source(&status(429)));
        assert!(sources.leave("404").is_some());
        assert_eq!(sources.current().as_str(), "http://b/f");
        assert_eq!(
            sources.usable().iter().map(Url::as_str).collect::<Vec<_>>(),
            ["http://b/f", "http://c/f"]
        );
        assert!(sources.leave("410").is_some());
        assert_eq!(sources.current().as_str(), "http://c/f");
        assert!(sources.leave("refused").is_none(), "none left");
    }

    #[test]
    fn a_source_is_left_after_stalling_twice_in_a_row() {
        let mut sources = Sources::new(&url("http://a/f"), &[url("http://b/f")]);
        let stalled = Error::Stalled {
            url: "u".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        assert!(!sources.is_terminal_for_source(&stalled));
        assert!(sources.is_terminal_for_source(&stalled));
    }
}
