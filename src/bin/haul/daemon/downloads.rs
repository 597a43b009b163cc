//! The daemon's downloads as aria2 shows them: a GID each, a status (`active`, `waiting`,
//! `paused`, `error`, `complete`, `removed`), the waiting queue's order (paused downloads keep
//! their place in it), and the results of stopped ones, bounded. It is a thin layer over the
//! library: a download is a `Downloader::submit` with an observer that keeps its figures, and
//! pause, resume, cancel, positions and rates are the library's `DownloadControl`.

use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use haul::{DownloadControl, Downloader, Event, Observer, Request};
use serde_json::json;
use tokio::sync::broadcast;

use super::entry::{Entry, Gid, Speed, Status, Table, not_found};
use super::options::{self, Options};
use super::params::RpcError;

/// Everything the RPC methods act on.
pub(crate) struct Downloads {
    pub(crate) downloader: Downloader,
    /// The download root (absolute): every file lands beneath it.
    pub(crate) root: PathBuf,
    table: Mutex<Table>,
    /// Notifications for WebSocket clients, as JSON text.
    pub(crate) notifications: broadcast::Sender<String>,
    /// Results kept for stopped downloads (aria2's `max-download-result`).
    pub(crate) max_results: usize,
    /// Options given with `changeGlobalOption` that have no live setting in the library.
    pub(crate) global_options: Mutex<Options>,
    /// Something changed that the session file should say (see `session`).
    pub(crate) changed: tokio::sync::Notify,
    gid_keys: RandomState,
    gid_counter: AtomicU64,
}

impl Downloads {
    pub(crate) fn new(downloader: Downloader, root: PathBuf, max_results: usize) -> Arc<Self> {
        Arc::new(Self {
            downloader,
            root,
            table: Mutex::new(Table::default()),
            notifications: broadcast::channel(1024).0,
            max_results,
            global_options: Mutex::new(Options::new()),
            changed: tokio::sync::Notify::new(),
            gid_keys: RandomState::new(),
            gid_counter: AtomicU64::new(0),
        })
    }

    pub(crate) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new_gid(&self, table: &Table) -> Gid {
        loop {
            let n = self.gid_counter.fetch_add(1, Ordering::Relaxed);
            let gid = Gid(self.gid_keys.hash_one((n, std::process::id())));
            if gid.0 != 0 && !table.entries.contains_key(&gid) {
                return gid;
            }
        }
    }

    fn notify(&self, method: &str, gid: Gid) {
        let text = json!({
            "jsonrpc": "2.0",
            "method": method,
            "params": [{"gid": gid.to_string()}],
        })
        .to_string();
        let _ = self.notifications.send(text);
    }

    pub(super) fn session_changed(&self) {
        self.changed.notify_one();
    }

    /// Adds a download of `uris` (the first is the URL, the rest its mirrors), at `position`
    /// in the waiting queue (the end by default), started unless `pause=true`.
    pub(crate) fn add(
        self: &Arc<Self>,
        uris: Vec<String>,
        options: Options,
        position: Option<usize>,
    ) -> Result<Gid, RpcError> {
        let (request, dir) = options::request(&self.root, &uris, &options)?;
        self.insert(request, dir, uris, options, position)
    }

    /// Adds a download of a prepared request (see [`Self::add`]).
    pub(crate) fn insert(
        self: &Arc<Self>,
        mut request: Request,
        dir: PathBuf,
        uris: Vec<String>,
        options: Options,
        position: Option<usize>,
    ) -> Result<Gid, RpcError> {
        if let Some(rate) = self.default_download_limit()
            && !options.contains_key("max-download-limit")
        {
            request = request.with_rate_limit(rate);
        }
        let path = request
            .output_path()
            .map_err(|e| RpcError::new(e.to_string()))?;
        let paused = options::paused(&options);
        let gid = {
            let mut table = self.table();
            let gid = match options.get("gid") {
                Some(text) => {
                    let gid = Gid::parse(text)
                        .map_err(|_| RpcError::new(format!("gid {text} is not 16 hex digits")))?;
                    if table.entries.contains_key(&gid) {
                        return Err(RpcError::new(format!("GID#{gid} is not unique.")));
                    }
                    gid
                }
                None => self.new_gid(&table),
            };
            let entry = Entry {
                gid,
                request,
                options,
                uris,
                dir,
                path,
                status: if paused {
                    Status::Paused
                } else {
                    Status::Waiting
                },
                total: 0,
                completed: 0,
                speed: Speed::default(),
                control: None,
                error: None,
                removing: false,
            };
            table.entries.insert(gid, entry);
            let at = position.unwrap_or(usize::MAX).min(table.waiting.len());
            table.waiting.insert(at, gid);
            gid
        };
        if !paused {
            self.submit(gid);
        }
        if position.is_some() {
            self.place_in_library_queue(gid);
        }
        self.session_changed();
        Ok(gid)
    }

    /// The `max-download-limit` given with `changeGlobalOption`: the default for new downloads.
    fn default_download_limit(&self) -> Option<u64> {
        let globals = self
            .global_options
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        options::download_limit(&globals).ok().flatten()
    }

    /// Hands a download to the downloader, and waits for its end on a task of its own.
    fn submit(self: &Arc<Self>, gid: Gid) {
        let Some(request) = self.table().entries.get(&gid).map(|e| e.request.clone()) else {
            return;
        };
        let observer = Arc::new(EntryObserver {
            gid,
            downloads: Arc::downgrade(self),
        });
        // Without the table's lock: the observer takes it for the `Queued` event.
        let handle = self.downloader.submit_with_observer(request, observer);
        if let Some(entry) = self.table().entries.get_mut(&gid) {
            entry.status = Status::Waiting;
            entry.control = Some(handle.control());
        }
        let downloads = Arc::clone(self);
        tokio::spawn(async move {
            let result = handle.await;
            downloads.ended(gid, result);
        });
    }

    /// A download's outcome.
    fn ended(&self, gid: Gid, result: Result<haul::Completed, haul::Error>) {
        let notification = {
            let mut table = self.table();
            let Some(entry) = table.entries.get_mut(&gid) else {
                return;
            };
            entry.control = None;
            entry.speed.reset();
            let notification = match result {
                Ok(completed) => {
                    entry.status = Status::Complete;
                    entry.total = completed.bytes;
                    entry.completed = completed.bytes;
                    entry.path = completed.path;
                    "aria2.onDownloadComplete"
                }
                Err(haul::Error::Cancelled) if entry.removing => {
                    entry.status = Status::Removed;
                    "aria2.onDownloadStop"
                }
                // The daemon is shutting down: the download stays unfinished for the session.
                Err(haul::Error::Cancelled) => return,
                Err(error) => {
                    entry.status = Status::Error;
                    entry.error = Some((error_code(&error), error.to_string()));
                    "aria2.onDownloadError"
                }
            };
            self.stop(&mut table, gid);
            notification
        };
        self.notify(notification, gid);
        self.session_changed();
    }

    /// Moves a download that just stopped to the results, forgetting the oldest beyond the bound.
    fn stop(&self, table: &mut Table, gid: Gid) {
        table.waiting.retain(|g| *g != gid);
        table.stopped.push_back(gid);
        table.stopped_total += 1;
        while table.stopped.len() > self.max_results {
            if let Some(old) = table.stopped.pop_front() {
                table.entries.remove(&old);
            }
        }
    }

    /// Pauses a waiting or active download (its `.part` kept).
    pub(crate) fn pause(&self, gid: Gid) -> Result<Gid, RpcError> {
        let control = {
            let mut table = self.table();
            let entry = table.entries.get_mut(&gid).ok_or_else(|| not_found(gid))?;
            if !matches!(entry.status, Status::Waiting | Status::Active) {
                return Err(RpcError::new(format!("GID#{gid} cannot be paused now")));
            }
            match &entry.control {
                Some(control) => control.clone(),
                None => {
                    entry.status = Status::Paused;
                    drop(table);
                    self.notify("aria2.onDownloadPause", gid);
                    self.session_changed();
                    return Ok(gid);
                }
            }
        };
        // Its `Paused` event marks it paused and notifies.
        control.pause();
        self.session_changed();
        Ok(gid)
    }

    /// Resumes a paused download: back in the queue, continuing from its `.part`.
    pub(crate) fn unpause(self: &Arc<Self>, gid: Gid) -> Result<Gid, RpcError> {
        let control = {
            let mut table = self.table();
            let entry = table.entries.get_mut(&gid).ok_or_else(|| not_found(gid))?;
            if entry.status != Status::Paused {
                return Err(RpcError::new(format!("GID#{gid} cannot be unpaused now")));
            }
            entry.status = Status::Waiting;
            entry.control.clone()
        };
        match control {
            Some(control) => {
                control.resume();
            }
            None => self.submit(gid),
        }
        self.place_in_library_queue(gid);
        self.session_changed();
        Ok(gid)
    }

    /// Removes a download that has not stopped (its `.part` is kept, as aria2 keeps it).
    pub(crate) fn remove(&self, gid: Gid) -> Result<Gid, RpcError> {
        let control = {
            let mut table = self.table();
            let entry = table.entries.get_mut(&gid).ok_or_else(|| not_found(gid))?;
            if entry.status.is_stopped() {
                return Err(RpcError::new(format!(
                    "Active Download not found for GID#{gid}"
                )));
            }
            entry.removing = true;
            match entry.control.clone() {
                Some(control) => control,
                None => {
                    entry.status = Status::Removed;
                    self.stop(&mut table, gid);
                    drop(table);
                    self.notify("aria2.onDownloadStop", gid);
                    self.session_changed();
                    return Ok(gid);
                }
            }
        };
        // Its outcome (cancelled) marks it removed and notifies.
        control.cancel();
        Ok(gid)
    }

    /// Forgets a stopped download's result.
    pub(crate) fn remove_result(&self, gid: Gid) -> Result<(), RpcError> {
        let mut table = self.table();
        match table.entries.get(&gid) {
            Some(entry) if entry.status.is_stopped() => {
                table.entries.remove(&gid);
                table.stopped.retain(|g| *g != gid);
                Ok(())
            }
            _ => Err(RpcError::new(format!(
                "Could not remove download result of GID#{gid}"
            ))),
        }
    }

    /// Forgets every stopped download's result.
    pub(crate) fn purge_results(&self) {
        let mut table = self.table();
        let stopped: Vec<Gid> = table.stopped.drain(..).collect();
        for gid in stopped {
            table.entries.remove(&gid);
        }
    }

    /// Every unfinished download's request, GID and paused state, in queue order (active ones
    /// first): what the session file holds.
    pub(crate) fn unfinished(&self) -> Vec<(Gid, Request, bool)> {
        let table = self.table();
        let active = table
            .entries
            .values()
            .filter(|entry| entry.status == Status::Active)
            .map(|entry| entry.gid);
        let mut gids: Vec<Gid> = active.collect();
        gids.sort_unstable();
        gids.extend(table.waiting.iter().copied());
        gids.iter()
            .filter_map(|gid| table.entries.get(gid))
            .filter(|entry| !entry.status.is_stopped() && !entry.removing)
            .map(|entry| {
                (
                    entry.gid,
                    entry.request.clone(),
                    entry.status == Status::Paused,
                )
            })
            .collect()
    }

    /// Stops every running download (for a shutdown), keeping their `.part` files, and waits
    /// until they have let go of them (bounded).
    pub(crate) async fn stop_all(&self) {
        let controls: Vec<DownloadControl> = self
            .table()
            .entries
            .values()
            .filter_map(|entry| entry.control.clone())
            .collect();
        for control in &controls {
            control.cancel();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && self
                .table()
                .entries
                .values()
                .any(|e| e.control.as_ref().is_some_and(|c| !c.is_paused()))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Applies one of the downloader's events to its download.
    fn apply(&self, gid: Gid, event: &Event) {
        let notification = {
            let mut table = self.table();
            let Some(entry) = table.entries.get_mut(&gid) else {
                return;
            };
            match event {
                Event::Queued {
                    path: Some(path), ..
                } => {
                    entry.path.clone_from(path);
                    None
                }
                Event::Started {
                    total_bytes,
                    resumed_from,
                    ..
                } => {
                    entry.total = total_bytes.unwrap_or(0);
                    entry.completed = *resumed_from;
                    entry.speed.sample(*resumed_from);
                    if entry.status == Status::Waiting {
                        entry.status = Status::Active;
                        table.waiting.retain(|g| *g != gid);
                        Some("aria2.onDownloadStart")
                    } else {
                        None
                    }
                }
                Event::Progress { bytes_done, .. } => {
                    entry.completed = *bytes_done;
                    entry.speed.sample(*bytes_done);
                    None
                }
                Event::Restarted { .. } => {
                    entry.completed = 0;
                    None
                }
                Event::Paused { .. } => {
                    entry.status = Status::Paused;
                    entry.speed.reset();
                    if !table.waiting.contains(&gid) {
                        table.waiting.insert(0, gid);
                    }
                    Some("aria2.onDownloadPause")
                }
                Event::Resumed { .. } => {
                    entry.status = Status::Waiting;
                    None
                }
                _ => None,
            }
        };
        if let Some(method) = notification {
            self.notify(method, gid);
        }
    }
}

/// Feeds one download's events to the table.
struct EntryObserver {
    gid: Gid,
    downloads: Weak<Downloads>,
}

impl Observer for EntryObserver {
    fn on_event(&self, event: &Event) {
        if let Some(downloads) = self.downloads.upgrade() {
            downloads.apply(self.gid, event);
        }
    }
}

/// aria2's error code for a failure (its exit-status numbers, as front-ends show them).
fn error_code(error: &haul::Error) -> u8 {
    use haul::ErrorKind;
    if error.circumstance() == Some(haul::Circumstance::UnknownHost) {
        return 19;
    }
    match (error.kind(), error.status()) {
        (_, Some(404)) => 3,
        (_, Some(401 | 403 | 407)) => 24,
        (ErrorKind::HttpStatus | ErrorKind::Protocol, _) => 22,
        (ErrorKind::Network | ErrorKind::Tls, _) => 6,
        (ErrorKind::Integrity, _) => 32,
        (ErrorKind::AlreadyExists, _) => 13,
        (ErrorKind::Io, _) => 17,
        _ => 1,
    }
}
