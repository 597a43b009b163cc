//! Changes to a download that has not ended: its place in the queue (kept in step with the
//! library's queue) and its options.

use super::downloads::Downloads;
use super::entry::{Gid, Status, not_found};
use super::options::{self, Options};
use super::params::RpcError;

impl Downloads {
    /// Moves a waiting or paused download in the queue; its new position.
    pub(crate) fn change_position(
        &self,
        gid: Gid,
        position: i64,
        how: &str,
    ) -> Result<usize, RpcError> {
        let to = {
            let mut table = self.table();
            let from = table
                .waiting
                .iter()
                .position(|g| *g == gid)
                .ok_or_else(|| {
                    RpcError::new(format!("GID#{gid} not found in the waiting queue."))
                })?;
            let last = i64::try_from(table.waiting.len()).unwrap_or(i64::MAX) - 1;
            let from_signed = i64::try_from(from).unwrap_or(i64::MAX);
            let wanted = match how {
                "POS_SET" => position,
                "POS_CUR" => from_signed.saturating_add(position),
                "POS_END" => last.saturating_add(position),
                other => {
                    return Err(RpcError::new(format!(
                        "how `{other}` is not POS_SET, POS_CUR or POS_END"
                    )));
                }
            };
            let to = usize::try_from(wanted.clamp(0, last.max(0))).unwrap_or(0);
            table.waiting.remove(from);
            table.waiting.insert(to, gid);
            to
        };
        self.place_in_library_queue(gid);
        self.session_changed();
        Ok(to)
    }

    /// Gives `gid` the place in the library's queue that it has in the daemon's: after the
    /// downloads before it that the library still holds. The others are already in the
    /// daemon's order (both append), so one move keeps the two in step.
    pub(super) fn place_in_library_queue(&self, gid: Gid) {
        let queued: std::collections::HashSet<haul::TransferId> =
            self.downloader.queued().into_iter().collect();
        let (control, position) = {
            let table = self.table();
            let Some(control) = table.entries.get(&gid).and_then(|e| e.control.clone()) else {
                return;
            };
            let position = table
                .waiting
                .iter()
                .take_while(|g| **g != gid)
                .filter_map(|g| table.entries.get(g)?.control.as_ref())
                .filter(|c| queued.contains(&c.id()))
                .count();
            (control, position)
        };
        control.move_in_queue(position);
    }

    /// Changes a download's own rate limit (`max-download-limit`), live.
    pub(crate) fn change_option(&self, gid: Gid, changes: Options) -> Result<(), RpcError> {
        let rate = options::download_limit(&changes)?;
        let mut table = self.table();
        let entry = table.entries.get_mut(&gid).ok_or_else(|| not_found(gid))?;
        if entry.status.is_stopped() {
            return Err(RpcError::new(format!("GID#{gid} has stopped")));
        }
        for key in changes.keys() {
            if key != "max-download-limit" && entry.status != Status::Paused {
                return Err(RpcError::new(format!(
                    "option {key} can only be changed while the download is paused"
                )));
            }
        }
        if changes.contains_key("max-download-limit")
            && let Some(control) = &entry.control
        {
            control.set_rate_limit(rate);
        }
        let mut options = entry.options.clone();
        options.extend(changes);
        if entry.control.is_none() {
            // Not started yet (added paused): the request is made anew from the options.
            let (request, dir) = options::request(&self.root, &entry.uris, &options)?;
            entry.path = request
                .output_path()
                .map_err(|e| RpcError::new(e.to_string()))?;
            entry.request = request;
            entry.dir = dir;
        } else if let Some(rate) = rate {
            entry.request = entry.request.clone().with_rate_limit(rate);
        }
        entry.options = options;
        drop(table);
        self.session_changed();
        Ok(())
    }
}
