//! A ready-made terminal display (feature `indicatif`): one total bar (bytes, rate, ETA, files
//! done, failures) and one bar per active file, capped to the terminal's height with the rest
//! summed in one line; finished files scroll above the bars as one line each. The `haul` CLI
//! uses this same observer. It draws on stderr at most 10 times a second.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{Completed, ErrorKind, Event, Observer, TransferId};

/// Rows kept free for the total bar, the summary line and the prompt.
const RESERVED_ROWS: usize = 4;

/// Progress bars for a batch, drawn on stderr.
pub struct ProgressBars {
    multi: MultiProgress,
    total: ProgressBar,
    overflow: ProgressBar,
    state: Mutex<BarsState>,
}

impl std::fmt::Debug for ProgressBars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressBars").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct BarsState {
    files: HashMap<TransferId, FileBar>,
    queued: usize,
    ended: usize,
    failed: usize,
    visible: usize,
    overflow_shown: bool,
}

struct FileBar {
    name: String,
    total: Option<u64>,
    bytes_done: u64,
    started: bool,
    bar: Option<ProgressBar>,
}

impl Default for ProgressBars {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressBars {
    /// Bars on stderr (hidden when stderr is not a terminal, as indicatif does).
    #[must_use]
    pub fn new() -> Self {
        Self::with_draw_target(ProgressDrawTarget::stderr_with_hz(10))
    }

    /// Bars drawn to `target`.
    #[must_use]
    pub fn with_draw_target(target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(0));
        total.set_style(style(
            "{spinner:.green} {elapsed:>4} {wide_bar:.cyan/blue} {bytes}/{total_bytes} \
             {bytes_per_sec} ETA {eta} {msg}",
        ));
        total.enable_steady_tick(Duration::from_millis(200));
        // Added to the display only while some active files have no row of their own.
        let overflow = ProgressBar::hidden();
        overflow.set_style(style("  {msg}"));
        Self {
            multi,
            total,
            overflow,
            state: Mutex::new(BarsState::default()),
        }
    }

    /// Prints a line above the bars.
    ///
    pub fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    /// Removes the bars from the screen (at the end of a batch).
    pub fn finish(&self) {
        self.total.finish_and_clear();
        self.overflow.finish_and_clear();
        let _ = self.multi.clear();
    }

    fn lock(&self) -> MutexGuard<'_, BarsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn max_bars() -> usize {
        let (rows, _) = console::Term::stderr().size();
        usize::from(rows).saturating_sub(RESERVED_ROWS).max(1)
    }

    fn file_bar(&self, file: &FileBar, overflow_shown: bool) -> ProgressBar {
        let bar = if let Some(total) = file.total {
            // Hidden until the MultiProgress owns it: a bar with its own stderr target draws
            // itself once, and that frame would stay on screen as a ghost.
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
            bar.set_style(style(
                "  {msg:30!} {bar:30.cyan/blue} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} \
                 ETA {eta}",
            ));
            bar
        } else {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            bar.set_style(style(
                "  {msg:30!} {spinner} {bytes:>10} {bytes_per_sec:>12}",
            ));
            bar
        };
        bar.set_message(file.name.clone());
        bar.set_position(file.bytes_done);
        bar.reset_eta();
        let bar = self
            .multi
            .insert_from_back(usize::from(overflow_shown), bar);
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }

    /// Gives bars to started files without one while the terminal has room.
    fn fill_rows(&self, state: &mut BarsState) {
        let room = Self::max_bars();
        let mut waiting: Vec<TransferId> = state
            .files
            .iter()
            .filter(|(_, f)| f.started && f.bar.is_none())
            .map(|(id, _)| *id)
            .collect();
        waiting.sort();
        for id in waiting {
            if state.visible >= room {
                break;
            }
            if let Some(file) = state.files.get(&id) {
                let bar = self.file_bar(file, state.overflow_shown);
                if let Some(file) = state.files.get_mut(&id) {
                    file.bar = Some(bar);
                }
                state.visible += 1;
            }
        }
        let hidden: Vec<&FileBar> = state
            .files
            .values()
            .filter(|f| f.started && f.bar.is_none())
            .collect();
        if hidden.is_empty() {
            if state.overflow_shown {
                self.multi.remove(&self.overflow);
                state.overflow_shown = false;
            }
        } else {
            let bytes: u64 = hidden.iter().map(|f| f.bytes_done).sum();
            self.overflow.set_message(format!(
                "… and {} more downloading ({} so far)",
                hidden.len(),
                HumanBytes(bytes)
            ));
            if !state.overflow_shown {
                self.multi.add(self.overflow.clone());
                state.overflow_shown = true;
            }
            self.overflow.tick();
        }
    }

    fn update_message(&self, state: &BarsState) {
        let failures = if state.failed > 0 {
            format!(", {} failed", state.failed)
        } else {
            String::new()
        };
        self.total
            .set_message(format!("files {}/{}{failures}", state.ended, state.queued));
    }

    fn end(&self, state: &mut BarsState, id: TransferId) -> String {
        let file = state.files.remove(&id);
        if let Some(bar) = file.as_ref().and_then(|f| f.bar.as_ref()) {
            bar.finish_and_clear();
            self.multi.remove(bar);
            state.visible = state.visible.saturating_sub(1);
        }
        state.ended += 1;
        self.fill_rows(state);
        self.update_message(state);
        file.map(|f| f.name).unwrap_or_default()
    }

    fn on_finished(&self, state: &mut BarsState, id: TransferId, completed: &Completed) {
        let name = self.end(state, id);
        if completed.already_present {
            self.println(&format!("= {name}  already complete"));
        } else {
            let fresh = completed.bytes.saturating_sub(completed.resumed_from);
            self.println(&format!(
                "✓ {name}  {}  {}/s",
                HumanBytes(completed.bytes),
                HumanBytes(rate(fresh, completed.duration))
            ));
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Bytes per second over `elapsed`.
#[must_use]
pub fn rate(bytes: u64, elapsed: Duration) -> u64 {
    #[expect(clippy::cast_sign_loss, reason = "both operands are positive")]
    let per_second = (bytes as f64 / elapsed.as_secs_f64().max(1e-3)) as u64;
    per_second
}

impl Observer for ProgressBars {
    fn on_event(&self, event: &Event) {
        let mut state = self.lock();
        match event {
            Event::Queued { id, url, path } => {
                let name = crate::display_name(url, path.as_deref());
                state.queued += 1;
                state.files.insert(
                    *id,
                    FileBar {
                        name,
                        total: None,
                        bytes_done: 0,
                        started: false,
                        bar: None,
                    },
                );
                self.update_message(&state);
            }
            Event::Started {
                id,
                total_bytes,
                resumed_from,
                ..
            } => {
                self.total
                    .inc_length(total_bytes.map_or(0, |t| t.saturating_sub(*resumed_from)));
                if let Some(file) = state.files.get_mut(id) {
                    file.started = true;
                    file.total = *total_bytes;
                    file.bytes_done = *resumed_from;
                }
                self.fill_rows(&mut state);
            }
            Event::Progress { id, bytes_done } => {
                if let Some(file) = state.files.get_mut(id) {
                    let delta = bytes_done.saturating_sub(file.bytes_done);
                    file.bytes_done = *bytes_done;
                    if let Some(bar) = &file.bar {
                        bar.set_position(*bytes_done);
                    }
                    self.total.inc(delta);
                }
            }
            Event::Retrying {
                id,
                attempt,
                delay,
                reason,
            } => {
                let name = state.files.get(id).map_or("", |f| f.name.as_str());
                self.println(&format!(
                    "↻ {name}: attempt {attempt} in {:.1}s after: {reason}",
                    delay.as_secs_f64()
                ));
            }
            Event::Restarted {
                id,
                reason: message,
            }
            | Event::Warning { id, message } => {
                let name = state.files.get(id).map_or("", |f| f.name.as_str());
                self.println(&format!("! {name}: {message}"));
            }
            Event::Finished { id, completed } => self.on_finished(&mut state, *id, completed),
            Event::Failed { id, kind, message } => {
                if *kind != ErrorKind::Cancelled {
                    state.failed += 1;
                }
                let name = self.end(&mut state, *id);
                if *kind != ErrorKind::Cancelled {
                    self.println(&format!("✗ {name}  {message}"));
                }
            }
        }
    }
}
