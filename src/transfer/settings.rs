//! What one download's settings come to: the request's own, else the downloader's.

use url::Url;

use crate::Error;
use crate::client::exchange::Reply;
use crate::config::{Config, OnExists};
use crate::naming::redact_url;
use crate::progress::Event;

use super::Transfer;
use super::session::Session;

impl Transfer<'_> {
    pub(super) fn config(&self) -> &Config {
        self.client.config()
    }

    pub(super) fn on_exists(&self) -> OnExists {
        self.request.on_exists.unwrap_or(self.config().on_exists)
    }

    /// The size limit of this file, if any.
    pub(super) fn max_bytes(&self) -> Option<u64> {
        self.request.max_bytes.or(self.config().max_file_bytes)
    }

    /// `TooLarge` when `bytes` is over the size limit.
    pub(super) fn check_size(&self, bytes: u64, announced: bool) -> Result<(), Error> {
        match self.max_bytes() {
            Some(limit) if bytes > limit => Err(Error::TooLarge {
                url: self.url(),
                limit,
                announced: announced.then_some(bytes),
            }),
            _ => Ok(()),
        }
    }

    pub(super) fn remote_time(&self) -> bool {
        self.request
            .remote_time
            .unwrap_or(self.config().remote_time)
    }

    /// The algorithm the writer hashes with: the expected digest's, else the one asked for.
    pub(super) fn hash_algorithm(&self, session: &Session) -> Option<crate::Algorithm> {
        session
            .expected
            .as_ref()
            .map(|(checksum, _)| checksum.algorithm())
            .or(self.request.digest)
    }

    /// Takes the digest the server announces for the whole file as the one to verify, when
    /// the request has none and nothing was written yet.
    pub(super) fn adopt_server_digest(&self, session: &mut Session, reply: &Reply, whole: bool) {
        if !self.config().server_digests || session.expected.is_some() || session.writer.is_some() {
            return;
        }
        if let Some(announced) = crate::client::digest::announced(reply.headers(), whole) {
            session.state.server_digest =
                Some((announced.checksum.to_string(), announced.header.to_owned()));
            session.expected = Some((announced.checksum, Some(announced.header)));
        }
    }

    /// RFC 6249: the first answer's `Link: <URL>; rel=duplicate` headers (as MirrorBrain and
    /// mirrorbits send them) add the file's mirrors, best `pri` first, after the request's
    /// own sources.
    pub(super) fn adopt_duplicate_links(&self, session: &mut Session, reply: &Reply) {
        if !self.config().metalink_headers {
            return;
        }
        let base = session.sources.current().clone();
        let mut found: Vec<(u32, Url)> = reply
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(crate::metalink::duplicate_links)
            .filter_map(|(link, priority)| {
                let url = base.join(&link).ok()?;
                matches!(url.scheme(), "http" | "https").then_some((priority, url))
            })
            .take(100)
            .collect();
        found.sort_by_key(|(priority, _)| *priority);
        session
            .sources
            .extend(found.into_iter().map(|(_, url)| url));
    }

    pub(super) fn url(&self) -> String {
        redact_url(&self.request.url)
    }

    pub(super) fn emit(&self, event: &Event) {
        self.report.emit(event);
    }
}
