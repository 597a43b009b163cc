//! One attempt: the request (a resume with `If-Range`, a revalidation, the first piece), and
//! the judgement of its answer: not modified, present, another version (the identity rule), or
//! a body to stream from where it starts.

use std::ops::ControlFlow;

use crate::Error;
use crate::client::exchange::{Answer, Ask, Reply};
use crate::progress::Event;
use crate::storage::PartPaths;

use super::session::{AttemptEnd, Session};
use super::{SMALL_FILE_BYTES, Transfer};

impl Transfer<'_> {
    /// One request: send, judge the answer, stream the body to the writer. `first_piece`:
    /// the request asks for the first piece only (see `asks_first_piece`).
    pub(super) async fn attempt(
        &self,
        session: &mut Session,
        paths: &PartPaths,
        first_piece: bool,
    ) -> Result<AttemptEnd, Error> {
        let answer = self.send(session, first_piece).await?;
        let resuming = session.offset > 0;
        let (reply, body_end) = match answer {
            Answer::NotModified(validators) if session.revalidate.is_some() => {
                session.state.validators = validators;
                return Ok(AttemptEnd::NotModified);
            }
            Answer::NotModified(_) => {
                return Err(Error::Internal("a 304 to an unconditional request".into()));
            }
            Answer::Partial(reply, range) if !resuming => {
                match self
                    .begin_first_piece(session, reply, &range, paths)
                    .await?
                {
                    ControlFlow::Continue(body) => body,
                    ControlFlow::Break(end) => return Ok(end),
                }
            }
            Answer::Unsatisfiable { .. } if !resuming => {
                // A refused first piece: an empty file, or a server that is wrong about
                // ranges. A plain request settles it.
                session.ranges.first_piece_failed = true;
                return Ok(AttemptEnd::MoreToFetch);
            }
            Answer::Partial(reply, range) => {
                self.adopt_server_digest(session, &reply, false);
                if let Some(start_over) = self.accept_partial(session, &reply.validators, paths) {
                    return Ok(start_over);
                }
                (reply, range.end)
            }
            Answer::Unsatisfiable { total: said } => {
                let total = session.state.validators.total_bytes;
                // The server's own word on the length, when it gave one, must agree.
                let agrees = said.is_none_or(|said| Some(said) == total);
                if resuming && agrees && total == Some(session.offset) {
                    if session.writer.is_none() {
                        self.open_writer(session, paths, false);
                    }
                    self.report_started(session, total, "HTTP/1.1");
                    return Ok(AttemptEnd::Complete);
                }
                return Ok(AttemptEnd::StartOver(
                    "the server refused the range; the file changed".into(),
                ));
            }
            Answer::Whole(reply) => {
                if first_piece || session.ranges.first_piece_failed {
                    // A range was ignored, or failed where this plain request worked: the
                    // answer carries the whole file on its own connection.
                    session.single_only = true;
                }
                if resuming {
                    if session.ranges.probe {
                        // Plain requests work where ranged ones failed: the server refuses ranges.
                        session.ranges.refused = true;
                        session.single_only = true;
                    }
                    self.emit(&Event::Restarted {
                        id: self.report.id(),
                        reason: "the server sent the whole file (it changed, or ranges are \
                                 unsupported); starting over"
                            .into(),
                    });
                }
                match self.begin_whole(session, reply, paths).await? {
                    ControlFlow::Continue(body) => body,
                    ControlFlow::Break(end) => return Ok(end),
                }
            }
        };
        Self::remember_disposition(session, &reply);
        if let Some(bytes) = self.claim_disposition_name(session, paths).await? {
            return Ok(AttemptEnd::Present(bytes));
        }
        let total = session.state.validators.total_bytes;
        if let Some(total) = total {
            self.check_size(total, true)?;
        }
        self.report_started(session, total, &reply.version);
        if let Some(total) = total
            && reply.accepts_ranges
            && !session.single_only
            && self.wants_segments(session, total)
        {
            let start = session.offset;
            return self.download_segments(session, reply, start).await;
        }
        self.stream_body(session, reply, body_end).await?;
        match total {
            Some(total) if session.offset < total => Ok(AttemptEnd::MoreToFetch),
            _ => Ok(AttemptEnd::Complete),
        }
    }

    /// Starts on the answer to a request for the first piece of a fresh download (a `206`).
    pub(super) async fn begin_first_piece(
        &self,
        session: &mut Session,
        reply: Reply,
        range: &crate::client::http::ContentRange,
        paths: &PartPaths,
    ) -> Result<ControlFlow<AttemptEnd, (Reply, u64)>, Error> {
        if range.total.is_none() {
            // The server does not say where the file ends: a plain request tells.
            session.ranges.first_piece_failed = true;
            return Ok(ControlFlow::Break(AttemptEnd::MoreToFetch));
        }
        if range.total == Some(range.end) {
            // The answer holds the whole file.
            return self.begin_whole(session, reply, paths).await;
        }
        // The file's validators are this answer's.
        self.adopt_server_digest(session, &reply, false);
        self.adopt_duplicate_links(session, &reply);
        session.state.done = crate::storage::ranges::RangeSet::default();
        session.state.validators = reply.validators.clone();
        session.validators_from = session.sources.index();
        match session.writer.as_mut() {
            Some(writer) => writer.restart(reply.validators.clone()).await?,
            None => self.open_writer(session, paths, true),
        }
        Ok(ControlFlow::Continue((reply, range.end)))
    }

    /// Starts on an answer that holds the whole file (a `200`, or a `206` for all of it): the
    /// file's validators, its size, the server's name for it, then the small-file path or a
    /// writer from byte zero. `Continue` with the answer and where its body ends.
    pub(super) async fn begin_whole(
        &self,
        session: &mut Session,
        reply: Reply,
        paths: &PartPaths,
    ) -> Result<ControlFlow<AttemptEnd, (Reply, u64)>, Error> {
        Self::remember_disposition(session, &reply);
        let total = reply.validators.total_bytes;
        if let Some(total) = total {
            self.check_size(total, true)?;
        }
        session.offset = 0;
        session.state.done = crate::storage::ranges::RangeSet::default();
        session.state.validators = reply.validators.clone();
        session.validators_from = session.sources.index();
        self.adopt_server_digest(session, &reply, true);
        self.adopt_duplicate_links(session, &reply);
        if let Some(bytes) = self.claim_disposition_name(session, paths).await? {
            return Ok(ControlFlow::Break(AttemptEnd::Present(bytes)));
        }
        if let (None, Some(length)) = (&session.writer, total)
            && length <= SMALL_FILE_BYTES
        {
            self.report_started(session, total, &reply.version);
            return self
                .download_small(session, reply, length, paths)
                .await
                .map(ControlFlow::Break);
        }
        match session.writer.as_mut() {
            Some(writer) => writer.restart(reply.validators.clone()).await?,
            None => self.open_writer(session, paths, true),
        }
        Ok(ControlFlow::Continue((reply, total.unwrap_or(u64::MAX))))
    }

    /// The identity rule for a `206` that continues the `.part`: `Some` when it is another
    /// version of the file (or says no length), which must be fetched anew from byte zero.
    /// (The exchange checked that the range starts where asked.)
    pub(super) fn accept_partial(
        &self,
        session: &mut Session,
        answer: &crate::storage::state::Validators,
        paths: &PartPaths,
    ) -> Option<AttemptEnd> {
        let known = &session.state.validators;
        let same_source = session.validators_from == session.sources.index();
        let origin = if same_source {
            crate::storage::state::Origin::SameSource
        } else {
            crate::storage::state::Origin::OtherSource
        };
        let changed = if answer.total_bytes.is_none() {
            Some("the server does not say the file's length".to_owned())
        } else {
            known.differs(answer, origin)
        };
        if let Some(reason) = changed {
            if !same_source && session.sources.usable().len() > 1 {
                // This mirror serves another version: it is left, the bytes are kept.
                return Some(AttemptEnd::SourceDiffers(reason));
            }
            return Some(AttemptEnd::StartOver(format!(
                "{reason}; discarding the partial file and starting over"
            )));
        }
        if session.writer.is_none() {
            self.open_writer(session, paths, false);
        }
        None
    }

    /// The request of this attempt: a resume asks for the rest with `If-Range` (unless the
    /// server refuses ranges, or a plain request is being tried); a revalidation asks whether
    /// the file changed; with `first_piece`, a fresh download asks for its first piece.
    pub(super) async fn send(&self, session: &Session, first_piece: bool) -> Result<Answer, Error> {
        let mut ask = Ask::get(session.sources.current())
            .with_headers(&self.request.headers)
            .with_auth(self.request.auth.as_ref());
        if let (true, 0, Some((etag, last_modified))) = (
            session.revalidate.is_some(),
            session.offset,
            &session.revalidate,
        ) {
            ask = ask.if_changed(etag.as_deref(), last_modified.as_deref());
        }
        if session.asks_range() {
            // Another server's `ETag` means nothing here: only `Last-Modified` can carry over.
            let if_range = if session.validators_from == session.sources.index() {
                session.state.validators.if_range()
            } else {
                session.state.validators.last_modified.as_deref()
            };
            // A gap before bytes already there (a piece fetched again) is asked for alone.
            let gap_end = session.state.done.next_start_after(session.offset);
            ask = ask.with_range(session.offset, gap_end, if_range);
        } else if first_piece {
            ask = ask.with_range(0, Some(self.first_piece_bytes()), None);
        }
        self.client.exchange(&ask, self.cancel).await
    }

    /// Whether this attempt asks for the first piece only: a fresh download that opens
    /// several connections at once (`-x N`). Its answer then ends exactly where the first
    /// piece does, and its connection goes on with the next request instead of being cut
    /// off mid-answer; a `200` means no ranges, and that answer simply carries the whole file.
    /// The ramp (no `-x`) asks plainly: its first connection may well fetch the whole file.
    pub(super) fn asks_first_piece(&self, session: &Session) -> bool {
        self.connections() > 1
            && !self.adaptive_connections()
            && session.offset == 0
            && session.writer.is_none()
            && session.state.done.is_empty()
            && session.revalidate.is_none()
            && !session.single_only
            && !session.ranges.refused
            && !session.ranges.first_piece_failed
    }

    /// The length of the first piece: a file up to this long comes in one answer (the
    /// segment engine splits only files of at least twice `min_split_bytes`).
    pub(super) fn first_piece_bytes(&self) -> u64 {
        self.config().min_split_bytes.saturating_mul(2).max(1)
    }
}
