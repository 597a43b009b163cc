//! The output's name: claimed before a byte is written (see `storage::reservations`), the
//! server's `Content-Disposition` name claimed when its answer arrives, and a file of that name
//! from before the run kept when the policy says so.

use std::time::Instant;

use crate::Error;
use crate::client::exchange::Reply;
use crate::client::retry::RetryPolicy;
use crate::progress::Event;
use crate::storage::PartPaths;
use crate::storage::writer::CloseMode;

use super::session::Session;
use super::{BUSY_POLL, Completed, Transfer};

impl Transfer<'_> {
    /// Claims the output before anything is written: a name the server may still change
    /// (`Content-Disposition`) stands in as the first free one of this run; an exact name is
    /// held, and while another download of this run holds it, this one waits.
    pub(super) async fn claim_output(&mut self, owner: u64) -> Result<(), Error> {
        let reservations = self.disk.reservations().clone();
        if self.server_names_the_file() {
            let lookup = PartPaths::beside(&self.place);
            let chosen = self
                .disk
                .quick_fs()
                .run("claiming a name", move || {
                    let dir = lookup.dir(false)?;
                    reservations.claim_provisional(
                        dir.as_deref(),
                        &lookup.place.dir_path(),
                        lookup.place.name(),
                        owner,
                    )
                })
                .await?;
            if chosen != self.place.name() {
                self.place = self.place.sibling(chosen);
            }
            return Ok(());
        }
        let path = self.place.path();
        let mut waiting = false;
        while !reservations.hold(&path, owner) {
            if !std::mem::replace(&mut waiting, true) {
                self.emit(&Event::Warning {
                    id: self.report.id(),
                    message: format!(
                        "another download of this run writes `{}`; waiting for it",
                        path.display()
                    ),
                });
            }
            RetryPolicy::wait(BUSY_POLL, self.cancel).await?;
        }
        Ok(())
    }

    /// Whether the server's `Content-Disposition` names this file (the URL's name only stands
    /// in until the answer arrives).
    pub(super) fn server_names_the_file(&self) -> bool {
        self.config().content_disposition
            && matches!(self.request.destination, crate::Destination::Directory(_))
    }

    /// Claims the final name the server suggested (once), when such names are used: the
    /// length of a file of that name from before the run that is to be kept instead.
    pub(super) async fn claim_disposition_name(
        &self,
        session: &mut Session,
        paths: &PartPaths,
    ) -> Result<Option<u64>, Error> {
        if session.claimed_name.is_some() || !self.server_names_the_file() {
            return Ok(None);
        }
        // The server's name, or without one the name that stood in for it: claimed either
        // way, so two downloads of this run never finish at one path. A server's name that is
        // the URL's own keeps the name that stood in: a batch numbers URLs that end alike in
        // input order (`NAME`, `NAME.1`, ...), and claiming the bare name here would take it
        // from the download it was planned for, which then moved on to the next number and
        // left gaps (seen under load: `NAME`, `NAME.1`, `NAME.3`).
        let url_name = crate::naming::file_name_from_url(&self.request.url).ok();
        let wanted = match &session.disposition_name {
            Some(name) if url_name.as_deref() != Some(name.as_str()) => name.clone(),
            _ => paths.place.name().to_string_lossy().into_owned(),
        };
        let owner = self.report.id().0;
        let reservations = self.disk.reservations().clone();
        let lookup = paths.clone();
        let policy = self.on_exists();
        // A file of that name from before is this download's only if it is what the server
        // serves now: its length, and its remembered `ETag` where both are known.
        let (length, etag) = (
            session.state.validators.total_bytes,
            session.state.validators.etag.clone(),
        );
        let is_this_file = move |dir: &crate::storage::place::Dir,
                                 name: &std::ffi::OsStr,
                                 entry: &crate::storage::place::Entry| {
            let same_length = length.is_some_and(|length| length == entry.len);
            let remembered = dir
                .open_read(name)
                .ok()
                .and_then(|file| super::look::read_etag(&file));
            same_length && (etag.is_none() || remembered.is_none() || remembered == etag)
        };
        let claim = self
            .disk
            .quick_fs()
            .run("claiming a name", move || {
                let dir = lookup.dir(false)?;
                reservations.claim(
                    dir.as_deref(),
                    &lookup.place.dir_path(),
                    std::ffi::OsStr::new(&wanted),
                    policy,
                    owner,
                    &is_this_file,
                )
            })
            .await?;
        match claim {
            crate::storage::reservations::Claim::Name(name) => {
                session.claimed_name = Some(name);
                Ok(None)
            }
            crate::storage::reservations::Claim::Present(len) => Ok(Some(len)),
        }
    }

    pub(super) fn remember_disposition(session: &mut Session, reply: &Reply) {
        if session.disposition_name.is_none() {
            session.disposition_name = reply
                .disposition()
                .and_then(crate::naming::content_disposition_name);
        }
    }

    /// The outcome when the server's name is a file kept as it is: this download's bytes go.
    pub(super) async fn kept(
        mut session: Session,
        bytes: u64,
        paths: &PartPaths,
        clock: Instant,
    ) -> Result<Completed, Error> {
        if let Some(writer) = session.writer.take() {
            writer.close(CloseMode::Discard).await?;
        }
        let name = session.disposition_name.clone().unwrap_or_default();
        Ok(Completed {
            path: paths.place.sibling(name).path(),
            bytes,
            digest: None,
            resumed_from: bytes,
            duration: clock.elapsed(),
            already_present: true,
            etag: None,
            last_modified: None,
            source: None,
            repaired_pieces: 0,
        })
    }
}
