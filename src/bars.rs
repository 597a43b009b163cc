//! A ready-made terminal display (feature `indicatif`): one total bar (bytes, rate, ETA, files
//! done, failures) and one bar per active file, capped to the terminal's height with the rest
//! summed in one line; finished files scroll above the bars as one line each. It draws what a
//! [`BatchView`] says (the one progress model), so its numbers are the summary's numbers. The
//! `haul` CLI draws with it. It draws on stderr at most 10 times a second.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::view::{BatchView, FileView};
use crate::{Event, Observer, TransferId};

/// Rows kept free for the total bar, the summary line and the prompt.
const RESERVED_ROWS: usize = 4;
/// The total bar before any length is known: no bar at all, rather than a full one.
const TOTAL_WAITING: &str = "{spinner:.green} {elapsed:>4} {bytes} {bytes_per_sec} {msg}";
const TOTAL_RUNNING: &str = "{spinner:.green} {elapsed:>4} {wide_bar:.cyan/blue} \
                             {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}";

/// Progress bars for a batch, drawn on stderr.
pub struct ProgressBars {
    multi: MultiProgress,
    total: ProgressBar,
    overflow: ProgressBar,
    /// The view of the events this display observes itself (as an `Observer`).
    own_view: Mutex<BatchView>,
    state: Mutex<BarsState>,
}

impl std::fmt::Debug for ProgressBars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressBars").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct BarsState {
    bars: HashMap<TransferId, ProgressBar>,
    overflow_shown: bool,
    total_known: bool,
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
        total.set_style(style(TOTAL_WAITING));
        total.enable_steady_tick(Duration::from_millis(200));
        // Added to the display only while some active files have no row of their own.
        let overflow = ProgressBar::hidden();
        overflow.set_style(style("  {msg}"));
        Self {
            multi,
            total,
            overflow,
            own_view: Mutex::new(BatchView::new()),
            state: Mutex::new(BarsState::default()),
        }
    }

    /// Prints a line above the bars.
    pub fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    /// Removes the bars from the screen (at the end of a batch).
    pub fn finish(&self) {
        self.total.finish_and_clear();
        self.overflow.finish_and_clear();
        let _ = self.multi.clear();
    }

    /// Draws `event`, which `view` has already folded in. For a caller that keeps the view
    /// itself (the CLI does, for its summary); as an `Observer` this display keeps its own.
    pub fn draw(&self, view: &BatchView, event: &Event) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let name = || {
            view.file(event.id())
                .map_or("", |f| f.name.as_str())
                .to_owned()
        };
        match event {
            Event::Queued { .. } => {}
            Event::Started { .. } => self.fill_rows(&mut state, view),
            Event::Progress { id, .. } | Event::Restarted { id, .. } => {
                if let (Some(bar), Some(file)) = (state.bars.get(id), view.file(*id)) {
                    bar.set_position(file.bytes_done);
                }
                if let Event::Restarted { reason, .. } = event {
                    self.println(&format!("! {}: {reason}", name()));
                }
            }
            Event::Retrying {
                attempt,
                delay,
                reason,
                ..
            } => {
                self.println(&format!(
                    "↻ {}: attempt {attempt} in {:.1}s after: {reason}",
                    name(),
                    delay.as_secs_f64()
                ));
            }
            Event::Warning { message, .. } => self.println(&format!("! {}: {message}", name())),
            Event::Paused { .. } => self.println(&format!("‖ {}: paused", name())),
            Event::Resumed { .. } => self.println(&format!("▸ {}: resumed", name())),
            Event::Streamed { id, streamed, .. } => {
                self.end(&mut state, view, *id);
                self.println(&format!("✓ {}  {}", name(), HumanBytes(streamed.bytes)));
            }
            Event::Finished { id, completed, .. } => {
                self.end(&mut state, view, *id);
                if completed.already_present {
                    self.println(&format!("= {}  already complete", name()));
                } else {
                    let fresh = completed.bytes.saturating_sub(completed.resumed_from);
                    self.println(&format!(
                        "✓ {}  {}  {}/s",
                        name(),
                        HumanBytes(completed.bytes),
                        HumanBytes(rate(fresh, completed.duration))
                    ));
                }
            }
            Event::Failed {
                id, kind, message, ..
            } => {
                self.end(&mut state, view, *id);
                if *kind != crate::ErrorKind::Cancelled {
                    self.println(&format!("✗ {}  {message}", name()));
                }
            }
        }
        self.update_total(&mut state, view);
    }

    fn update_total(&self, state: &mut BarsState, view: &BatchView) {
        let (done, length) = view.batch_progress();
        if length > 0 && !state.total_known {
            state.total_known = true;
            self.total.set_style(style(TOTAL_RUNNING));
        }
        self.total.set_length(length);
        self.total.set_position(done);
        let failures = if view.failed > 0 {
            format!(", {} failed", view.failed)
        } else {
            String::new()
        };
        self.total
            .set_message(format!("files {}/{}{failures}", view.ended(), view.queued));
    }

    fn max_bars() -> usize {
        let (rows, _) = console::Term::stderr().size();
        usize::from(rows).saturating_sub(RESERVED_ROWS).max(1)
    }

    fn file_bar(&self, file: &FileView, overflow_shown: bool) -> ProgressBar {
        let bar = if let Some(total) = file.total_bytes {
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

    /// Gives bars to running files without one while the terminal has room.
    fn fill_rows(&self, state: &mut BarsState, view: &BatchView) {
        let room = Self::max_bars();
        let active = view.active();
        for (id, file) in &active {
            if state.bars.len() >= room {
                break;
            }
            if !state.bars.contains_key(id) {
                let bar = self.file_bar(file, state.overflow_shown);
                state.bars.insert(*id, bar);
            }
        }
        let hidden: Vec<&FileView> = active
            .iter()
            .filter(|(id, _)| !state.bars.contains_key(id))
            .map(|(_, f)| *f)
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

    fn end(&self, state: &mut BarsState, view: &BatchView, id: TransferId) {
        if let Some(bar) = state.bars.remove(&id) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.fill_rows(state, view);
    }
}

impl Observer for ProgressBars {
    fn on_event(&self, event: &Event) {
        let mut view = self.own_view();
        view.apply(event);
        self.draw(&view, event);
    }
}

impl ProgressBars {
    fn own_view(&self) -> MutexGuard<'_, BatchView> {
        self.own_view.lock().unwrap_or_else(PoisonError::into_inner)
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
