//! Turns the library's events into output: the library's progress bars on a terminal, plain
//! lines elsewhere, nothing but errors with `--quiet`, and JSON lines on stdout with `--json`.
//! Every number comes from the library's progress model (`haul::BatchView`), folded once here;
//! this module only decides what to show and how often.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use haul::bars::{ProgressBars, rate};
use haul::{BatchView, Completed, Event, Observer, ProgressCounter, TransferId};
use indicatif::HumanBytes;
use serde_json::{Value, json};

mod summary;
pub use summary::Summary;

/// How often a plain progress line is printed when not on a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the running downloads' byte counts are read (the bars draw at 10 Hz).
pub const TICK: Duration = Duration::from_millis(100);
/// Failures listed by name in the closing summary; the rest are counted (every one is in
/// `--json`, `--json-file` and `--log-file` as it happens).
const FAILURES_LISTED: usize = 100;
/// How often a JSON progress event is written for one file.
const JSON_PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Version of the JSON event schema (documented in the README).
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// What a person sees on stderr.
pub enum Display {
    Bars(Box<ProgressBars>),
    Lines,
    /// No progress, no per-file lines: the closing summary and the failures (`--progress
    /// none`).
    SummaryOnly,
    /// Only failures are printed (`--quiet`).
    ErrorsOnly,
}

/// Where events go besides the display.
pub struct Outputs {
    /// NDJSON on stdout (`--json`).
    pub json: bool,
    /// NDJSON to a file (`--json-file`).
    pub json_file: Option<std::fs::File>,
    /// Timestamped lines to a file (`--log-file`).
    pub log_file: Option<std::fs::File>,
    /// Credentials were given (`--user`, a netrc file): a 401 then means they were refused.
    pub credentials_given: bool,
}

pub struct Renderer {
    display: Display,
    outputs: Outputs,
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
    /// The running downloads' byte counts, and what was last read from each.
    counters: HashMap<TransferId, (ProgressCounter, u64)>,
}

impl Renderer {
    pub fn new(display: Display, outputs: Outputs) -> Self {
        Self {
            display,
            json: outputs.json || outputs.json_file.is_some() || outputs.log_file.is_some(),
            outputs,
            clock: Instant::now(),
            state: Mutex::new(RenderState {
                view: BatchView::new(),
                last_json: HashMap::new(),
                // The first plain progress line comes after an interval, not at once: a run
                // that ends quickly has its summary, and no `progress: 0/1 files` first.
                last_line: Some(Instant::now()),
                failures: Vec::new(),
                counters: HashMap::new(),
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
            Display::Lines => write_line(&mut std::io::stderr(), line),
            Display::SummaryOnly | Display::ErrorsOnly => {}
        }
    }

    /// [`Self::emit_json`] of the event `make` builds, built only when JSON is wanted: most
    /// runs have no JSON output, and building one object per event cost an allocation or
    /// more per event for nothing.
    fn json_event(&self, make: impl FnOnce() -> Value) {
        if self.json {
            self.emit_json(make());
        }
    }

    /// Writes one JSON event where JSON goes (stdout with `--json`, `--json-file`,
    /// `--log-file`).
    pub fn emit_json(&self, mut value: Value) {
        if !self.json {
            return;
        }
        if let Some(object) = value.as_object_mut() {
            object.insert("v".into(), json!(JSON_SCHEMA_VERSION));
        }
        if self.outputs.json {
            // A closed pipe (`| head`) is not an error worth reporting.
            write_line(&mut std::io::stdout(), &value.to_string());
        }
        if let Some(mut file) = self.outputs.json_file.as_ref() {
            write_line(&mut file, &value.to_string());
        }
        if let Some(mut file) = self.outputs.log_file.as_ref() {
            let kind = value["event"].as_str().unwrap_or("event");
            write_line(&mut file, &format!("{} {kind} {value}", timestamp()));
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
                "event": "progress", "id": id.get(), "bytes_done": file.bytes_done,
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

    /// The file's name, looked up only for what prints it: a failure in every display, the
    /// other events' lines in plain-line mode (not a progress event per chunk, nor a finished
    /// file under bars or `--progress none`); empty otherwise.
    fn printed_name(state: &RenderState, event: &Event, lines: bool) -> String {
        let printed = match event {
            Event::Failed { .. } => true,
            Event::Retrying { .. }
            | Event::Restarted { .. }
            | Event::Warning { .. }
            | Event::Finished { .. } => lines,
            _ => false,
        };
        if !printed {
            return String::new();
        }
        state
            .view
            .file(event.id())
            .map_or_else(String::new, |f| f.name.clone())
    }

    /// JSON and plain lines for one event the view has folded in.
    fn render(&self, state: &mut RenderState, event: &Event) {
        let lines = matches!(self.display, Display::Lines);
        let name = Self::printed_name(state, event, lines);
        match event {
            Event::Queued { id, url, path, .. } => self.json_event(|| {
                json!({
                    "event": "queued", "id": id.get(), "url": url, "path": path,
                })
            }),
            Event::Started {
                id,
                total_bytes,
                resumed_from,
                http_version,
                proxy,
            } => self.json_event(|| {
                json!({
                    "event": "started", "id": id.get(), "total_bytes": total_bytes,
                    "resumed_from": resumed_from, "http_version": http_version, "proxy": proxy,
                })
            }),
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
                self.json_event(|| {
                    json!({
                        "event": "retry", "id": id.get(), "attempt": attempt,
                        "delay_ms": delay.as_millis() as u64, "reason": reason,
                    })
                });
                if lines {
                    self.say(&format!(
                        "↻ {name}: attempt {attempt} in {:.1}s after: {reason}",
                        delay.as_secs_f64()
                    ));
                }
            }
            Event::Restarted { id, reason } => {
                self.json_event(|| {
                    json!({
                        "event": "restarted", "id": id.get(), "reason": reason,
                    })
                });
                if lines {
                    self.say(&format!("! {name}: {reason}"));
                }
            }
            Event::Warning { id, message } => {
                self.json_event(|| {
                    json!({
                        "event": "warning", "id": id.get(), "message": message,
                    })
                });
                if lines {
                    self.say(&format!("! {name}: {message}"));
                }
            }
            Event::Finished { id, completed, .. } => {
                state.last_json.remove(id);
                self.json_event(|| {
                    json!({
                        "event": "finished",
                        "id": id.get(),
                        "path": completed.path,
                        "bytes": completed.bytes,
                        "digest": completed.digest.as_ref().map(ToString::to_string),
                        "duration_ms": completed.duration.as_millis() as u64,
                        "resumed_from": completed.resumed_from,
                        "already_present": completed.already_present,
                        "source": completed.source,
                        "repaired_pieces": completed.repaired_pieces,
                    })
                });
                if lines {
                    self.finished_line(&name, completed);
                }
            }
            Event::Failed { .. } => self.on_failed(state, event, name),
            _ => {}
        }
    }
}

impl Renderer {
    fn on_failed(&self, state: &mut RenderState, event: &Event, name: String) {
        let Event::Failed {
            id,
            kind,
            message,
            status,
            circumstance,
            ..
        } = event
        else {
            return;
        };
        let (id, kind, status) = (*id, *kind, *status);
        let hint = crate::hint::hint(kind, status, *circumstance, self.outputs.credentials_given);
        state.last_json.remove(&id);
        let file = state.view.file(id);
        self.json_event(|| {
            json!({
                "event": "failed", "id": id.get(), "kind": kind.as_str(),
                "message": message, "status": status,
                "url": file.map(|f| f.url.clone()), "path": file.and_then(|f| f.path.clone()),
                "hint": hint,
            })
        });
        if kind == haul::ErrorKind::Cancelled {
            return;
        }
        let reason = match hint {
            Some(hint) => format!("{message}\n    hint: {hint}"),
            None => message.to_owned(),
        };
        if matches!(self.display, Display::Lines | Display::ErrorsOnly) {
            write_line(
                &mut std::io::stderr(),
                &format!("✗ {name}  error: {reason}"),
            );
        }
        if state.failures.len() < FAILURES_LISTED {
            state.failures.push((name, reason));
        }
    }
}

/// Now, in UTC, as `2026-12-01T18:04:05.123Z`.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let at = crate::civil::civil(now.as_secs());
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year,
        at.month,
        at.day,
        at.hour,
        at.minute,
        at.second,
        now.subsec_millis()
    )
}

impl Renderer {
    /// Whether anything shown moves with the bytes (bars, plain progress lines, JSON
    /// `progress` events): then `tick` is to be called every `TICK`.
    pub fn shows_progress(&self) -> bool {
        self.json || matches!(self.display, Display::Bars(_) | Display::Lines)
    }

    /// Folds the running downloads' byte counts into the view and shows what moved: the
    /// library reports bytes as counters, read here at the display's pace, not as an event
    /// per chunk.
    pub fn tick(&self) {
        let mut state = self.lock();
        let ids: Vec<TransferId> = state.counters.keys().copied().collect();
        for id in ids {
            self.fold(&mut state, id);
        }
    }

    /// `id`'s counter, as the `Progress` event it stands for, when it moved since last read.
    fn fold(&self, state: &mut RenderState, id: TransferId) {
        let Some((counter, last)) = state.counters.get_mut(&id) else {
            return;
        };
        let bytes_done = counter.bytes_done();
        if std::mem::replace(last, bytes_done) == bytes_done {
            return;
        }
        self.take(state, &Event::Progress { id, bytes_done });
    }

    fn take(&self, state: &mut RenderState, event: &Event) {
        state.view.apply(event);
        self.render(state, event);
        if let Display::Bars(bars) = &self.display {
            bars.draw(&state.view, event);
        }
    }
}

impl Observer for Renderer {
    fn on_event(&self, event: &Event) {
        let mut state = self.lock();
        if event.is_terminal() {
            // The last figure first, as its last `Progress` event would have come.
            self.fold(&mut state, event.id());
            state.counters.remove(&event.id());
        }
        if let Event::Started { id, .. } | Event::Restarted { id, .. } = event
            && let Some((_, last)) = state.counters.get_mut(id)
        {
            // The view starts this file's figure again: the next reading is news, whatever it is.
            *last = u64::MAX;
        }
        self.take(&mut state, event);
    }

    fn wants_progress_events(&self) -> bool {
        false
    }

    fn on_counter(&self, id: TransferId, counter: &ProgressCounter) {
        self.lock().counters.insert(id, (counter.clone(), 0));
    }
}

/// Writes `line` and a newline in one `write` (formatting straight into an unbuffered stderr
/// or file costs a system call per piece: thousands of failures made that visible). A closed
/// pipe (`| head`) is not an error worth reporting.
fn write_line(target: &mut impl Write, line: &str) {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    let _ = target.write_all(&bytes);
}
