//! The one retry driver: attempts until the file is complete, a permanent error occurs, or
//! every source is out of retries. Restarts from byte zero, the probe of a server that fails
//! ranged requests, failover to the next source and waits for descriptors are decided here.

use crate::Error;
use crate::client::retry::RetryPolicy;
use crate::progress::Event;
use crate::storage::PartPaths;
use crate::storage::state::Validators;

use super::session::{AttemptEnd, Fetched, Session, refuses_first_piece};
use super::{DESCRIPTOR_WAIT, MAX_START_OVERS, Transfer};

impl Transfer<'_> {
    /// Attempts until the file is complete, a permanent error occurs, or retries run out.
    pub(super) async fn fetch(
        &mut self,
        session: &mut Session,
        paths: &PartPaths,
    ) -> Result<Fetched, Error> {
        let mut policy = RetryPolicy::new(self.client, &self.request.url, self.report);
        let mut start_overs = 0u32;
        loop {
            let before = session.received;
            let asked_range = session.asks_range();
            let asked_first_piece = self.asks_first_piece(session);
            let probing = session.ranges.probe && session.offset > 0;
            let error = match self.attempt(session, paths, asked_first_piece).await {
                Ok(AttemptEnd::Complete) => return Ok(Fetched::Body),
                Ok(AttemptEnd::Small(body)) => return Ok(Fetched::Small(body)),
                Ok(AttemptEnd::MoreToFetch) => continue,
                Ok(AttemptEnd::NotModified) => return Ok(Fetched::NotModified),
                Ok(AttemptEnd::Present(bytes)) => return Ok(Fetched::Present(bytes)),
                Ok(AttemptEnd::SourceDiffers(reason)) => Error::BadRange {
                    url: crate::naming::redact_url(session.sources.current()),
                    detail: reason,
                },
                Ok(AttemptEnd::StartOver(reason)) => {
                    start_overs += 1;
                    if start_overs > MAX_START_OVERS {
                        return Err(Error::BadRange {
                            url: self.url(),
                            detail: format!("gave up after {MAX_START_OVERS} restarts: {reason}"),
                        });
                    }
                    self.emit(&Event::Restarted {
                        id: self.report.id(),
                        reason,
                    });
                    session.offset = 0;
                    session.state.validators = Validators::default();
                    continue;
                }
                Err(error) => error,
            };
            if asked_first_piece && refuses_first_piece(&error) {
                // Nothing says yet that this server serves ranges: ask plainly, at once.
                session.ranges.first_piece_failed = true;
                continue;
            }
            if asked_range && session.ranges.after_ranged_failure(&error) {
                start_overs += 1;
                if start_overs > MAX_START_OVERS {
                    return Err(error);
                }
                self.emit(&Event::Warning {
                    id: self.report.id(),
                    message: format!(
                        "the server refuses range requests ({error}); continuing on one \
                         connection without ranges"
                    ),
                });
                session.single_only = true;
                continue;
            }
            if probing {
                session.ranges.after_plain_failure();
            }
            if error.is_out_of_descriptors() {
                // Not the file's fault: wait for descriptors to come back, without counting
                // a retry.
                RetryPolicy::wait(DESCRIPTOR_WAIT, self.cancel).await?;
                continue;
            }
            let pushed_back = crate::client::retry::pushes_back(&error);
            let terminal_here =
                session.sources.several() && session.sources.is_terminal_for_source(&error);
            let delay = if terminal_here {
                None
            } else {
                policy.next_delay(&error, session.received > before)
            };
            let Some(delay) = delay else {
                // This source is done with; the next one, if any, goes on from the bytes
                // already verified.
                let Some(message) = session.sources.leave(&error) else {
                    return Err(error);
                };
                self.emit(&Event::Warning {
                    id: self.report.id(),
                    message,
                });
                policy = RetryPolicy::new(self.client, session.sources.current(), self.report);
                // The permit counts against the host left: one of the next source's instead.
                self.permit = None;
                self.ensure_permit(session.sources.current()).await?;
                continue;
            };
            if pushed_back {
                // Give the host's place back while waiting: the host gets fewer connections.
                self.permit = None;
            }
            RetryPolicy::wait(delay, self.cancel).await?;
            self.ensure_permit(session.sources.current()).await?;
        }
    }

    /// Takes a place in `url`'s host limit again, unless one is held.
    pub(super) async fn ensure_permit(&mut self, url: &url::Url) -> Result<(), Error> {
        if self.permit.is_none() {
            let host = crate::client::hosts::host_key(url);
            self.permit = Some(self.client.hosts().acquire(&host, self.cancel).await?);
        }
        Ok(())
    }
}
