//! Turns the library's events into output: the library's progress bars on a terminal, plain
//! lines elsewhere, nothing but errors with `--quiet`, and JSON lines on stdout with `--json`.
//! It also tallies the batch for the closing summary. The library counts; this throttles.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use haul::bars::{ProgressBars, rate};
use haul::{Completed, ErrorKind, Event, Observer, TransferId};
use indicatif::HumanBytes;
use serde_json::{Value, json};

/// How often a plain progress line is printed when not on a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
/// How often a JSON progress event is written for one file.
const JSON_PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Version of the JSON event schema (documented in the README).
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// What a person sees on stderr.
pub enum Display {
    Bars(ProgressBars),
    Lines,
    /// Only failures are printed.
    ErrorsOnly,
}

pub struct Renderer {
    display: Display,
    json: bool,
    clock: Instant,
    state: Mutex<Tally>,
}

/// What the batch did, for the summary and the exit code.
#[derive(Default)]
pub struct Tally {
    files: HashMap<TransferId, FileTally>,
    pub queued: usize,
    pub downloaded: usize,
    pub already_present: usize,
    pub failed: usize,
    pub integrity_failures: usize,
    pub bytes_transferred: u64,
    bytes_expected: u64,
    /// Failures in order: name and reason.
    pub failures: Vec<(String, String)>,
    last_line: Option<Instant>,
}

struct FileTally {
    name: String,
    bytes_done: u64,
    total: Option<u64>,
    last_json: Option<Instant>,
}

impl Renderer {
    pub fn new(display: Display, json: bool) -> Self {
        Self {
            display,
            json,
            clock: Instant::now(),
            state: Mutex::new(Tally::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A line for a person, unless only errors are wanted.
    fn say(&self, line: &str) {
        match &self.display {
            Display::Bars(bars) => bars.println(line),
            Display::Lines => eprintln!("{line}"),
            Display::ErrorsOnly => {}
        }
    }

    /// An error line, always shown.
    fn shout(&self, line: &str) {
        match &self.display {
            Display::Bars(bars) => bars.println(line),
            Display::Lines | Display::ErrorsOnly => eprintln!("{line}"),
        }
    }

    fn emit_json(&self, mut value: Value) {
        if !self.json {
            return;
        }
        if let Some(object) = value.as_object_mut() {
            object.insert("v".into(), json!(JSON_SCHEMA_VERSION));
        }
        // A closed pipe (`| head`) is not an error worth reporting.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{value}");
    }

    /// Clears the bars and returns the tally.
    pub fn finish(&self) -> std::sync::MutexGuard<'_, Tally> {
        if let Display::Bars(bars) = &self.display {
            bars.finish();
        }
        self.lock()
    }

    /// Writes the closing summary: a line on stderr (unless quiet) and a JSON `summary` event.
    pub fn summarize(&self, tally: &Tally, interrupted: bool, exit_code: u8) {
        let elapsed = self.clock.elapsed();
        self.emit_json(json!({
            "event": "summary",
            "ok": tally.downloaded,
            "skipped": tally.already_present,
            "failed": tally.failed,
            "unfinished": tally.files.len(),
            "bytes": tally.bytes_transferred,
            "duration_ms": elapsed.as_millis() as u64,
            "interrupted": interrupted,
            "exit_code": exit_code,
        }));
        if matches!(self.display, Display::ErrorsOnly) {
            return;
        }
        eprintln!(
            "{} ok, {} skipped (already complete), {} failed; {} in {:.1}s ({}/s)",
            tally.downloaded,
            tally.already_present,
            tally.failed,
            HumanBytes(tally.bytes_transferred),
            elapsed.as_secs_f64(),
            HumanBytes(rate(tally.bytes_transferred, elapsed))
        );
        if !tally.failures.is_empty() {
            eprintln!("failed:");
            for (name, reason) in &tally.failures {
                eprintln!("  {name}: {reason}");
            }
        }
    }

    fn plain_progress_line(tally: &mut Tally) {
        let now = Instant::now();
        if tally.last_line.is_some_and(|at| now - at < LINE_INTERVAL) {
            return;
        }
        tally.last_line = Some(now);
        let ended = tally.downloaded + tally.already_present + tally.failed;
        eprintln!(
            "progress: {ended}/{} files, {} of {} received",
            tally.queued,
            HumanBytes(tally.bytes_transferred),
            HumanBytes(tally.bytes_expected)
        );
    }

    fn on_progress(&self, tally: &mut Tally, id: TransferId, bytes_done: u64) {
        let Some(file) = tally.files.get_mut(&id) else {
            return;
        };
        let delta = bytes_done.saturating_sub(file.bytes_done);
        file.bytes_done = bytes_done;
        let now = Instant::now();
        let due = file
            .last_json
            .is_none_or(|at| now - at >= JSON_PROGRESS_INTERVAL)
            || file.total == Some(bytes_done);
        if self.json && due {
            file.last_json = Some(now);
            self.emit_json(json!({
                "event": "progress", "id": id.index(), "bytes_done": bytes_done,
                "total_bytes": file.total,
            }));
        }
        tally.bytes_transferred += delta;
        if matches!(self.display, Display::Lines) {
            Self::plain_progress_line(tally);
        }
    }

    fn on_finished(&self, tally: &mut Tally, id: TransferId, completed: &Completed) {
        let name = tally.files.remove(&id).map_or_else(String::new, |f| f.name);
        if completed.already_present {
            tally.already_present += 1;
        } else {
            tally.downloaded += 1;
        }
        self.emit_json(json!({
            "event": "finished",
            "id": id.index(),
            "path": completed.path,
            "bytes": completed.bytes,
            "digest": completed.digest.as_ref().map(ToString::to_string),
            "duration_ms": completed.duration.as_millis() as u64,
            "resumed_from": completed.resumed_from,
            "already_present": completed.already_present,
        }));
        if !matches!(self.display, Display::Lines) {
            return;
        }
        if completed.already_present {
            self.say(&format!("= {name}  already complete"));
        } else {
            let fresh = completed.bytes.saturating_sub(completed.resumed_from);
            self.say(&format!(
                "✓ {name}  {}  {}/s",
                HumanBytes(completed.bytes),
                HumanBytes(rate(fresh, completed.duration))
            ));
        }
    }

    fn on_failed(&self, tally: &mut Tally, id: TransferId, kind: ErrorKind, message: &str) {
        self.emit_json(json!({
            "event": "failed", "id": id.index(), "kind": kind.as_str(), "message": message,
        }));
        if kind == ErrorKind::Cancelled {
            // Kept in `files`: it is listed as unfinished.
            return;
        }
        let name = tally.files.remove(&id).map_or_else(String::new, |f| f.name);
        tally.failed += 1;
        if kind == ErrorKind::Integrity {
            tally.integrity_failures += 1;
        }
        if !matches!(self.display, Display::Bars(_)) {
            self.shout(&format!("✗ {name}  error: {message}"));
        }
        tally.failures.push((name, message.to_owned()));
    }
}

impl Tally {
    /// Names of the downloads that have not ended, in input order.
    pub fn unfinished(&self) -> Vec<String> {
        let mut names: Vec<(TransferId, &str)> = self
            .files
            .iter()
            .map(|(id, f)| (*id, f.name.as_str()))
            .collect();
        names.sort_unstable();
        names.into_iter().map(|(_, n)| n.to_owned()).collect()
    }
}

impl Observer for Renderer {
    fn on_event(&self, event: &Event) {
        if let Display::Bars(bars) = &self.display {
            bars.on_event(event);
        }
        let mut tally = self.lock();
        match event {
            Event::Queued { id, url, path } => {
                let name = haul::display_name(url, path.as_deref());
                tally.queued += 1;
                tally.files.insert(
                    *id,
                    FileTally {
                        name,
                        bytes_done: 0,
                        total: None,
                        last_json: None,
                    },
                );
                self.emit_json(json!({
                    "event": "queued", "id": id.index(), "url": url, "path": path,
                }));
            }
            Event::Started {
                id,
                total_bytes,
                resumed_from,
                http_version,
            } => {
                tally.bytes_expected += total_bytes.map_or(0, |t| t.saturating_sub(*resumed_from));
                if let Some(file) = tally.files.get_mut(id) {
                    file.bytes_done = *resumed_from;
                    file.total = *total_bytes;
                }
                self.emit_json(json!({
                    "event": "started", "id": id.index(), "total_bytes": total_bytes,
                    "resumed_from": resumed_from, "http_version": http_version,
                }));
            }
            Event::Progress { id, bytes_done } => self.on_progress(&mut tally, *id, *bytes_done),
            Event::Retrying {
                id,
                attempt,
                delay,
                reason,
            } => {
                self.emit_json(json!({
                    "event": "retry", "id": id.index(), "attempt": attempt,
                    "delay_ms": delay.as_millis() as u64, "reason": reason,
                }));
                if matches!(self.display, Display::Lines) {
                    let name = tally.files.get(id).map_or("", |f| f.name.as_str());
                    self.say(&format!(
                        "↻ {name}: attempt {attempt} in {:.1}s after: {reason}",
                        delay.as_secs_f64()
                    ));
                }
            }
            Event::Restarted { id, reason } => {
                self.emit_json(json!({
                    "event": "restarted", "id": id.index(), "reason": reason,
                }));
                if matches!(self.display, Display::Lines) {
                    let name = tally.files.get(id).map_or("", |f| f.name.as_str());
                    self.say(&format!("! {name}: {reason}"));
                }
            }
            Event::Warning { id, message } => {
                self.emit_json(json!({
                    "event": "warning", "id": id.index(), "message": message,
                }));
                if matches!(self.display, Display::Lines) {
                    let name = tally.files.get(id).map_or("", |f| f.name.as_str());
                    self.say(&format!("! {name}: {message}"));
                }
            }
            Event::Finished { id, completed } => self.on_finished(&mut tally, *id, completed),
            Event::Failed { id, kind, message } => {
                self.on_failed(&mut tally, *id, *kind, message);
            }
            _ => {}
        }
    }
}
