//! Turns the library's events into output: the library's progress bars on a terminal, plain
//! lines elsewhere, nothing but errors with `--quiet`, and JSON lines on stdout with `--json`.
//! Every number comes from the library's progress model (`haul::BatchView`), folded once here;
//! this module only decides what to show and how often.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use haul::bars::{ProgressBars, rate};
use haul::{BatchView, Completed, Event, Observer, TransferId};
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
    Bars(Box<ProgressBars>),
    Lines,
    /// Only failures are printed.
    ErrorsOnly,
}

pub struct Renderer {
    display: Display,
    json: bool,
    clock: Instant,
    state: Mutex<RenderState>,
}

struct RenderState {
    view: BatchView,
    /// When each running file last had a JSON progress event.
    last_json: HashMap<TransferId, Instant>,
    last_line: Option<Instant>,
    /// Failures in order: name and reason.
    failures: Vec<(String, String)>,
}

/// What the batch did, for the summary and the exit code.
pub struct Summary {
    pub downloaded: usize,
    pub already_present: usize,
    pub failed: usize,
    pub integrity_failures: usize,
    pub received_bytes: u64,
    /// Names of the downloads that did not end, in submission order.
    pub unfinished: Vec<String>,
    pub failures: Vec<(String, String)>,
}

impl Renderer {
    pub fn new(display: Display, json: bool) -> Self {
        Self {
            display,
            json,
            clock: Instant::now(),
            state: Mutex::new(RenderState {
                view: BatchView::new(),
                last_json: HashMap::new(),
                last_line: None,
                failures: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RenderState> {
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

    /// Clears the bars and returns what the batch did.
    pub fn finish(&self) -> Summary {
        if let Display::Bars(bars) = &self.display {
            bars.finish();
        }
        let state = self.lock();
        let view = &state.view;
        Summary {
            downloaded: view.downloaded,
            already_present: view.already_present,
            failed: view.failed,
            integrity_failures: view.integrity_failures,
            received_bytes: view.received_bytes,
            unfinished: view
                .unfinished()
                .into_iter()
                .map(|(_, file)| file.name.clone())
                .collect(),
            failures: state.failures.clone(),
        }
    }

    /// Writes the closing summary: a line on stderr (unless quiet) and a JSON `summary` event.
    pub fn summarize(&self, summary: &Summary, interrupted: bool, exit_code: u8) {
        let elapsed = self.clock.elapsed();
        self.emit_json(json!({
            "event": "summary",
            "ok": summary.downloaded,
            "skipped": summary.already_present,
            "failed": summary.failed,
            "unfinished": summary.unfinished.len(),
            "bytes": summary.received_bytes,
            "duration_ms": elapsed.as_millis() as u64,
            "interrupted": interrupted,
            "exit_code": exit_code,
        }));
        if matches!(self.display, Display::ErrorsOnly) {
            return;
        }
        eprintln!(
            "{} ok, {} skipped (already complete), {} failed; {} in {:.1}s ({}/s)",
            summary.downloaded,
            summary.already_present,
            summary.failed,
            HumanBytes(summary.received_bytes),
            elapsed.as_secs_f64(),
            HumanBytes(rate(summary.received_bytes, elapsed))
        );
        if !summary.failures.is_empty() {
            eprintln!("failed:");
            for (name, reason) in &summary.failures {
                eprintln!("  {name}: {reason}");
            }
        }
    }

    fn plain_progress_line(state: &mut RenderState) {
        let now = Instant::now();
        if state.last_line.is_some_and(|at| now - at < LINE_INTERVAL) {
            return;
        }
        state.last_line = Some(now);
        let view = &state.view;
        let (done, total) = view.batch_progress();
        eprintln!(
            "progress: {}/{} files, {} of {} received",
            view.ended(),
            view.queued,
            HumanBytes(done),
            HumanBytes(total)
        );
    }

    fn json_progress(&self, state: &mut RenderState, id: TransferId) {
        if !self.json {
            return;
        }
        let Some(file) = state.view.file(id) else {
            return;
        };
        let now = Instant::now();
        let complete = file.total_bytes == Some(file.bytes_done);
        let due = state
            .last_json
            .get(&id)
            .is_none_or(|at| now - *at >= JSON_PROGRESS_INTERVAL);
        if due || complete {
            let value = json!({
                "event": "progress", "id": id.index(), "bytes_done": file.bytes_done,
                "total_bytes": file.total_bytes,
            });
            state.last_json.insert(id, now);
            self.emit_json(value);
        }
    }

    fn finished_line(&self, name: &str, completed: &Completed) {
        if completed.already_present {
            self.say(&format!("= {name}  already complete"));
        } else {
            let fresh = completed.bytes.saturating_sub(completed.resumed_from);
            let digest = completed
                .digest
                .as_ref()
                .map_or_else(String::new, |d| format!("  {d}"));
            self.say(&format!(
                "✓ {name}  {}  {}/s{digest}",
                HumanBytes(completed.bytes),
                HumanBytes(rate(fresh, completed.duration))
            ));
        }
    }

    /// JSON and plain lines for one event the view has folded in.
    fn render(&self, state: &mut RenderState, event: &Event) {
        let name = state
            .view
            .file(event.id())
            .map_or_else(String::new, |f| f.name.clone());
        let lines = matches!(self.display, Display::Lines);
        match event {
            Event::Queued { id, url, path } => self.emit_json(json!({
                "event": "queued", "id": id.index(), "url": url, "path": path,
            })),
            Event::Started {
                id,
                total_bytes,
                resumed_from,
                http_version,
                proxy,
            } => self.emit_json(json!({
                "event": "started", "id": id.index(), "total_bytes": total_bytes,
                "resumed_from": resumed_from, "http_version": http_version, "proxy": proxy,
            })),
            Event::Progress { id, .. } => {
                self.json_progress(state, *id);
                if lines {
                    Self::plain_progress_line(state);
                }
            }
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
                if lines {
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
                if lines {
                    self.say(&format!("! {name}: {reason}"));
                }
            }
            Event::Warning { id, message } => {
                self.emit_json(json!({
                    "event": "warning", "id": id.index(), "message": message,
                }));
                if lines {
                    self.say(&format!("! {name}: {message}"));
                }
            }
            Event::Finished { id, completed } => {
                state.last_json.remove(id);
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
                if lines {
                    self.finished_line(&name, completed);
                }
            }
            Event::Failed { id, kind, message } => {
                state.last_json.remove(id);
                self.emit_json(json!({
                    "event": "failed", "id": id.index(), "kind": kind.as_str(),
                    "message": message,
                }));
                if *kind != haul::ErrorKind::Cancelled {
                    if !matches!(self.display, Display::Bars(_)) {
                        eprintln!("✗ {name}  error: {message}");
                    }
                    state.failures.push((name, message.clone()));
                }
            }
            _ => {}
        }
    }
}

impl Observer for Renderer {
    fn on_event(&self, event: &Event) {
        let mut state = self.lock();
        state.view.apply(event);
        self.render(&mut state, event);
        if let Display::Bars(bars) = &self.display {
            bars.draw(&state.view, event);
        }
    }
}
