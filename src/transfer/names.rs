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
        let url_name = crate::naming::file_name_from_url(&self.request.url).ok();
        let wanted = name_to_claim(
            session.disposition_name.as_deref(),
            url_name.as_deref(),
            &paths.place.name().to_string_lossy(),
        );
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
        let is_this_file = move |dir: &crate::storage::dir::Dir,
                                 name: &std::ffi::OsStr,
                                 entry: &crate::storage::dir::Entry| {
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

/// The name a download claims when its answer arrives: the server's, or without one the name
/// that stood in for it (claimed either way, so two downloads of this run never finish at one
/// path). A server's name that is the URL's own keeps the name that stood in: a batch numbers
/// URLs that end alike in input order (`NAME`, `NAME.1`, ...), and claiming the bare name here
/// would take it from the download it was planned for, which then moved on to the next number
/// and left gaps (seen under load: `NAME`, `NAME.1`, `NAME.3`).
fn name_to_claim(server_name: Option<&str>, url_name: Option<&str>, stood_in: &str) -> String {
    match server_name {
        Some(name) if url_name != Some(name) => name.to_owned(),
        _ => stood_in.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::path::Path;

    use proptest::prelude::*;

    use super::name_to_claim;
    use crate::config::OnExists;
    use crate::storage::reservations::{Claim, Reservations};

    /// One download of a batch: its URL's name and the name its server gives, if any.
    fn download() -> impl Strategy<Value = (&'static str, Option<&'static str>)> {
        (
            prop::sample::select(vec!["r.csv", "a.bin"]),
            prop::option::of(prop::sample::select(vec!["r.csv", "b.bin"])),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// However the downloads' claims interleave (each claims its stand-in name when it
        /// starts, its final name when its answer arrives): no two finish at one name, and
        /// when every server names the file as its URL does, each file has the name the batch
        /// planned in input order (no gaps, no reordering).
        #[test]
        fn claims_in_any_order_give_distinct_names_and_keep_the_planned_ones(
            downloads in prop::collection::vec(download(), 2..6),
            order in prop::collection::vec(any::<prop::sample::Index>(), 12),
        ) {
            // The batch's plan: URLs whose names are alike get NAME, NAME.1, ... in input order.
            let mut seen: Vec<&str> = Vec::new();
            let planned: Vec<String> = downloads
                .iter()
                .map(|(url_name, _)| {
                    let before = seen.iter().filter(|n| *n == url_name).count();
                    seen.push(url_name);
                    if before == 0 { (*url_name).to_owned() } else { format!("{url_name}.{before}") }
                })
                .collect();
            let reservations = Reservations::default();
            let root = Path::new("/out");
            let mut stood_in: Vec<Option<String>> = vec![None; downloads.len()];
            let mut finals: Vec<Option<String>> = vec![None; downloads.len()];
            // Each step moves one download (chosen by `order`) one claim further.
            let mut steps = order.iter().cycle();
            while finals.iter().any(Option::is_none) {
                let open: Vec<usize> = (0..downloads.len()).filter(|&i| finals[i].is_none()).collect();
                let i = open[steps.next().unwrap().index(open.len())];
                let owner = i as u64;
                match &stood_in[i] {
                    None => {
                        let name = reservations
                            .claim_provisional(None, root, OsStr::new(&planned[i]), owner)
                            .unwrap();
                        stood_in[i] = Some(name.to_string_lossy().into_owned());
                    }
                    Some(name) => {
                        let (url_name, server_name) = downloads[i];
                        let wanted = name_to_claim(server_name, Some(url_name), name);
                        let claim = reservations
                            .claim(None, root, OsStr::new(&wanted), OnExists::Skip, owner, &|_, _, _| false)
                            .unwrap();
                        let Claim::Name(name) = claim else { panic!("nothing is on disk") };
                        finals[i] = Some(name.to_string_lossy().into_owned());
                    }
                }
            }
            let finals: Vec<String> = finals.into_iter().map(Option::unwrap).collect();
            let mut distinct = finals.clone();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), finals.len(), "two downloads at one name: {:?}", finals);
            if downloads.iter().all(|(url_name, server)| server.is_none_or(|s| s == *url_name)) {
                prop_assert_eq!(finals, planned);
            }
        }
    }
}
