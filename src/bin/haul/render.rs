//! Turns the library's events into what a person sees on stderr: indicatif bars on a terminal,
//! plain lines elsewhere, nothing but errors with `--quiet`. The library counts; this throttles.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use haul::{ErrorKind, Event, Observer, TransferId};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is printed when not on a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bars,
    Lines,
    /// Only failures are printed.
    ErrorsOnly,
}

pub struct Renderer {
    style: Style,
    multi: MultiProgress,
    total_bar: Option<ProgressBar>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    files: HashMap<TransferId, FileState>,
    queued: usize,
    downloaded: usize,
    already_present: usize,
    failed: usize,
    bytes_transferred: u64,
    bytes_expected: u64,
    last_line: Option<Instant>,
}

struct FileState {
    name: String,
    bytes_done: u64,
    bar: Option<ProgressBar>,
}

/// What the batch did, for the closing summary.
pub struct Summary {
    pub downloaded: usize,
    pub already_present: usize,
    pub failed: usize,
    pub bytes_transferred: u64,
}

impl Renderer {
    pub fn new(style: Style) -> Self {
        let multi = MultiProgress::with_draw_target(if style == Style::Bars {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        });
        let total_bar = (style == Style::Bars).then(|| {
            let bar = multi.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner:.green} total {wide_bar:.cyan/blue} {bytes}/{total_bytes} \
                     {bytes_per_sec} ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            style,
            multi,
            total_bar,
            state: Mutex::new(State::default()),
        }
    }

    /// Prints a line above the bars (or plainly), unless only errors are wanted.
    fn say(&self, line: &str) {
        if self.style != Style::ErrorsOnly {
            self.print(line);
        }
    }

    fn print(&self, line: &str) {
        if self.style == Style::Bars {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    pub fn finish(&self) -> Summary {
        if let Some(bar) = &self.total_bar {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
        let state = self.lock();
        Summary {
            downloaded: state.downloaded,
            already_present: state.already_present,
            failed: state.failed,
            bytes_transferred: state.bytes_transferred,
        }
    }

    /// Names of the files that have not ended, for the interruption message.
    pub fn unfinished(&self) -> Vec<String> {
        let state = self.lock();
        let mut names: Vec<(TransferId, String)> = state
            .files
            .iter()
            .map(|(id, file)| (*id, file.name.clone()))
            .collect();
        names.sort();
        names.into_iter().map(|(_, name)| name).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update_total_message(&self, state: &State) {
        if let Some(bar) = &self.total_bar {
            let ended = state.downloaded + state.already_present + state.failed;
            let failures = if state.failed > 0 {
                format!(", {} failed", state.failed)
            } else {
                String::new()
            };
            bar.set_message(format!("files {ended}/{}{failures}", state.queued));
        }
    }

    fn file_bar(&self, name: &str, total: Option<u64>, resumed_from: u64) -> ProgressBar {
        let bar = if let Some(total) = total {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "  {msg:30!} {bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} \
                     ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        } else {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("  {msg:30!} {spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        };
        bar.set_message(name.to_owned());
        bar.set_position(resumed_from);
        bar.reset_eta();
        let bar = match &self.total_bar {
            Some(total_bar) => self.multi.insert_after(total_bar, bar),
            None => self.multi.add(bar),
        };
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }

    fn plain_progress_line(state: &mut State) {
        let now = Instant::now();
        if state.last_line.is_some_and(|at| now - at < LINE_INTERVAL) {
            return;
        }
        state.last_line = Some(now);
        let ended = state.downloaded + state.already_present + state.failed;
        eprintln!(
            "progress: {ended}/{} files, {} of {} received",
            state.queued,
            HumanBytes(state.bytes_transferred),
            HumanBytes(state.bytes_expected)
        );
    }
}

impl Observer for Renderer {
    fn on_event(&self, event: &Event) {
        let mut state = self.lock();
        match event {
            Event::Queued { id, url, path } => {
                let name = path
                    .as_ref()
                    .and_then(|p| p.file_name())
                    .map_or_else(|| url.clone(), |n| n.to_string_lossy().into_owned());
                state.queued += 1;
                state.files.insert(
                    *id,
                    FileState {
                        name,
                        bytes_done: 0,
                        bar: None,
                    },
                );
                self.update_total_message(&state);
            }
            Event::Started {
                id,
                total_bytes,
                resumed_from,
            } => self.on_started(&mut state, *id, *total_bytes, *resumed_from),
            Event::Progress { id, bytes_done } => self.on_progress(&mut state, *id, *bytes_done),
            Event::Retrying {
                id,
                attempt,
                delay,
                reason,
            } => {
                let name = state.files.get(id).map_or("", |f| f.name.as_str());
                self.say(&format!(
                    "↻ {name}: attempt {attempt} in {:.1}s after: {reason}",
                    delay.as_secs_f64()
                ));
            }
            Event::Restarted { id, reason } => {
                let name = state.files.get(id).map_or("", |f| f.name.as_str());
                self.say(&format!("warning: {name}: {reason}"));
            }
            Event::Finished { id, completed } => self.on_finished(&mut state, *id, completed),
            Event::Failed { id, kind, message } => {
                self.on_failed(&mut state, *id, *kind, message);
            }
            _ => {}
        }
    }
}

impl Renderer {
    fn on_started(&self, state: &mut State, id: TransferId, total: Option<u64>, resumed_from: u64) {
        let remaining = total.map_or(0, |t| t.saturating_sub(resumed_from));
        state.bytes_expected += remaining;
        if let Some(bar) = &self.total_bar {
            bar.inc_length(remaining);
        }
        let bar = (self.style == Style::Bars).then(|| {
            let name = state.files.get(&id).map_or("", |f| f.name.as_str());
            self.file_bar(name, total, resumed_from)
        });
        if let Some(file) = state.files.get_mut(&id) {
            file.bytes_done = resumed_from;
            file.bar = bar;
        }
    }

    fn on_progress(&self, state: &mut State, id: TransferId, bytes_done: u64) {
        let Some(file) = state.files.get_mut(&id) else {
            return;
        };
        let delta = bytes_done.saturating_sub(file.bytes_done);
        file.bytes_done = bytes_done;
        if let Some(bar) = &file.bar {
            bar.set_position(bytes_done);
        }
        state.bytes_transferred += delta;
        if let Some(bar) = &self.total_bar {
            bar.inc(delta);
        }
        if self.style == Style::Lines {
            Self::plain_progress_line(state);
        }
    }

    fn on_finished(&self, state: &mut State, id: TransferId, completed: &haul::Completed) {
        let file = state.files.remove(&id);
        if let Some(bar) = file.as_ref().and_then(|f| f.bar.as_ref()) {
            bar.finish_and_clear();
        }
        let name = file.map_or_else(String::new, |f| f.name);
        if completed.already_present {
            state.already_present += 1;
            self.say(&format!("= {name}  already complete"));
        } else {
            state.downloaded += 1;
            let fresh_bytes = completed.bytes - completed.resumed_from;
            self.say(&format!(
                "✓ {name}  {}  {}/s",
                HumanBytes(completed.bytes),
                HumanBytes(per_second(fresh_bytes, completed.duration))
            ));
        }
        self.update_total_message(state);
    }

    fn on_failed(&self, state: &mut State, id: TransferId, kind: ErrorKind, message: &str) {
        if kind == ErrorKind::Cancelled {
            // Kept in `files`: it is listed as unfinished.
            if let Some(bar) = state.files.get_mut(&id).and_then(|f| f.bar.take()) {
                bar.finish_and_clear();
            }
            return;
        }
        let file = state.files.remove(&id);
        if let Some(bar) = file.as_ref().and_then(|f| f.bar.as_ref()) {
            bar.finish_and_clear();
        }
        let name = file.map_or_else(String::new, |f| f.name);
        state.failed += 1;
        self.print(&format!("✗ {name}  error: {message}"));
        self.update_total_message(state);
    }
}

/// Bytes per second over `elapsed`, for display.
pub fn per_second(bytes: u64, elapsed: Duration) -> u64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a display rate"
    )]
    let rate = (bytes as f64 / elapsed.as_secs_f64().max(1e-3)) as u64;
    rate
}
