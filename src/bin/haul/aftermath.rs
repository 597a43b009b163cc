//! What `haul get` does as each download ends, besides rendering it: `--save-failed` (the
//! failed and cancelled downloads written as an input file that `-i` reruns) and the per-file
//! hooks `--on-finished` / `--on-failed`. Only the requests in flight are remembered (the
//! batch's window bounds them), so a list of a million URLs costs no more here.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use haul::{Outcome, Request};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Hooks that run at once, at most.
const HOOKS_AT_ONCE: usize = 4;

/// A request in flight: what a hook and `--save-failed` need of it.
struct InFlight {
    url: String,
    path: Option<PathBuf>,
    /// Its input-file lines (with `--save-failed`).
    entry: Option<String>,
}

/// Remembers the requests in flight, by their position in the batch.
#[derive(Clone, Default)]
pub struct Tracker {
    in_flight: Arc<Mutex<HashMap<usize, InFlight>>>,
    entries: bool,
}

impl Tracker {
    /// The same requests, each noted as the batch takes it (the batch numbers its requests
    /// in the order it takes them from the stream).
    pub fn track(
        &self,
        requests: BoxStream<'static, Result<Request, haul::Error>>,
    ) -> BoxStream<'static, Result<Request, haul::Error>> {
        let tracker = self.clone();
        requests
            .enumerate()
            .map(move |(index, item)| {
                if let Ok(request) = &item {
                    tracker.note(index, request);
                }
                item
            })
            .boxed()
    }

    /// Notes the request at `index` as it enters the batch.
    fn note(&self, index: usize, request: &Request) {
        let noted = InFlight {
            url: request.url().to_string(),
            path: request.output_path().ok(),
            entry: self.entries.then(|| haul::input::entry_lines(request)),
        };
        self.lock().insert(index, noted);
    }

    fn take(&self, index: usize) -> Option<InFlight> {
        self.lock().remove(&index)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, InFlight>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `--save-failed` file being written (beside its final name until the end: the rerun
/// may be reading the file it replaces).
struct SaveFailed {
    path: PathBuf,
    temporary: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    written: usize,
    /// The first write that failed: the file is then not put in place (it would miss entries).
    failed: Option<std::io::Error>,
}

/// The end-of-download actions of one run.
pub struct Aftermath {
    pub tracker: Tracker,
    save_failed: Option<SaveFailed>,
    on_finished: Option<String>,
    on_failed: Option<String>,
    hooks: JoinSet<()>,
    slots: Arc<Semaphore>,
}

impl Aftermath {
    /// `None` when nothing is asked for (then requests are not tracked at all).
    pub fn new(
        save_failed: Option<&Path>,
        on_finished: Option<String>,
        on_failed: Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        if save_failed.is_none() && on_finished.is_none() && on_failed.is_none() {
            return Ok(None);
        }
        let save_failed = save_failed
            .map(|path| {
                let mut temporary = path.as_os_str().to_owned();
                temporary.push(format!(".{}.tmp", std::process::id()));
                let temporary = PathBuf::from(temporary);
                // It may carry a password (`password=` of an input file): the user's eyes only.
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temporary)
                    .with_context(|| {
                        format!("--save-failed: cannot write `{}`", temporary.display())
                    })?;
                Ok::<_, anyhow::Error>(SaveFailed {
                    path: path.to_path_buf(),
                    temporary,
                    file: std::io::BufWriter::new(file),
                    written: 0,
                    failed: None,
                })
            })
            .transpose()?;
        Ok(Some(Self {
            tracker: Tracker {
                in_flight: Arc::default(),
                entries: save_failed.is_some(),
            },
            save_failed,
            on_finished,
            on_failed,
            hooks: JoinSet::new(),
            slots: Arc::new(Semaphore::new(HOOKS_AT_ONCE)),
        }))
    }

    /// One download ended.
    pub fn ended(&mut self, outcome: &Outcome) {
        let Some(noted) = self.tracker.take(outcome.index) else {
            return;
        };
        match &outcome.result {
            Ok(done) => {
                if let Some(command) = self.on_finished.clone() {
                    let env = vec![
                        ("HAUL_STATUS", "finished".to_owned()),
                        ("HAUL_PATH", done.path.display().to_string()),
                        ("HAUL_URL", noted.url.clone()),
                        ("HAUL_BYTES", done.bytes.to_string()),
                    ];
                    self.run_hook("--on-finished", command, env);
                }
            }
            Err(error) => {
                if let (Some(save), Some(entry)) = (&mut self.save_failed, &noted.entry) {
                    match save.file.write_all(entry.as_bytes()) {
                        Ok(()) => save.written += 1,
                        Err(error) => {
                            save.failed.get_or_insert(error);
                        }
                    }
                }
                if let (Some(command), false) = (
                    self.on_failed.clone(),
                    matches!(error, haul::Error::Cancelled),
                ) {
                    let env = vec![
                        ("HAUL_STATUS", "failed".to_owned()),
                        (
                            "HAUL_PATH",
                            noted
                                .path
                                .as_ref()
                                .map(|p| p.display().to_string())
                                .unwrap_or_default(),
                        ),
                        ("HAUL_URL", noted.url.clone()),
                        ("HAUL_ERROR", error.to_string()),
                    ];
                    self.run_hook("--on-failed", command, env);
                }
            }
        }
    }

    fn run_hook(&mut self, flag: &'static str, command: String, env: Vec<(&'static str, String)>) {
        let slots = Arc::clone(&self.slots);
        self.hooks.spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let name = env
                .iter()
                .find(|(key, _)| *key == "HAUL_PATH")
                .map(|(_, value)| value.clone())
                .unwrap_or_default();
            let ran = tokio::task::spawn_blocking(move || {
                let mut child = std::process::Command::new("sh");
                child.arg("-c").arg(&command).envs(env);
                // A hook's output goes to stderr: stdout is for --json events only.
                if let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() {
                    child.stdout(std::process::Stdio::from(stderr));
                }
                child.status()
            })
            .await;
            match ran {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => eprintln!("warning: {flag} for `{name}` failed: {status}"),
                Ok(Err(error)) => eprintln!("warning: {flag} for `{name}` did not run: {error}"),
                Err(error) => eprintln!("warning: {flag} for `{name}` did not run: {error}"),
            }
        });
    }

    /// Waits for the hooks and puts the `--save-failed` file in place.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        while self.hooks.join_next().await.is_some() {}
        if let Some(mut save) = self.save_failed.take() {
            let failed = save.failed.take();
            failed
                .map_or_else(|| save.file.flush(), Err)
                .and_then(|()| std::fs::rename(&save.temporary, &save.path))
                .with_context(|| {
                    format!("--save-failed: cannot write `{}`", save.path.display())
                })?;
            if save.written > 0 {
                eprintln!(
                    "{} failed download(s) written to {}: `haul get -i {}` retries them",
                    save.written,
                    save.path.display(),
                    save.path.display()
                );
            }
        }
        Ok(())
    }
}
