//! The closing summary: what the batch did, for the last line on stderr, the JSON `summary`
//! event and the exit code.

use haul::bars::rate;
use indicatif::HumanBytes;
use serde_json::json;

use super::{Display, Renderer};

/// What the batch did, for the summary and the exit code.
pub struct Summary {
    pub queued: usize,
    pub downloaded: usize,
    pub already_present: usize,
    pub failed: usize,
    pub integrity_failures: usize,
    pub received_bytes: u64,
    /// Names of the downloads that did not end or were cancelled, in submission order (the
    /// view keeps the last few thousand ended ones; `unfinished` counts them all).
    pub unfinished_names: Vec<String>,
    /// How many downloads did not end or were cancelled.
    pub unfinished: usize,
    pub failures: Vec<(String, String)>,
}

impl Renderer {
    /// Clears the bars and returns what the batch did.
    pub fn finish(&self) -> Summary {
        if let Display::Bars(bars) = &self.display {
            bars.finish();
        }
        let state = self.lock();
        let view = &state.view;
        Summary {
            queued: view.queued,
            downloaded: view.downloaded,
            already_present: view.already_present,
            failed: view.failed,
            integrity_failures: view.integrity_failures,
            received_bytes: view.received_bytes,
            unfinished_names: {
                let mut left: Vec<(haul::TransferId, &str)> = view
                    .unfinished()
                    .into_iter()
                    .chain(
                        view.recently_ended()
                            .filter(|(_, f)| f.state == haul::FileState::Cancelled),
                    )
                    .map(|(id, file)| (id, file.name.as_str()))
                    .collect();
                left.sort_unstable_by_key(|(id, _)| *id);
                left.into_iter().map(|(_, name)| name.to_owned()).collect()
            },
            unfinished: view.unfinished().len() + view.cancelled,
            failures: state.failures.clone(),
        }
    }

    /// Writes the closing summary: a line on stderr (unless quiet) and a JSON `summary` event.
    pub fn summarize(&self, summary: &Summary, interrupted: bool, exit_code: u8) {
        self.summary_json(summary, interrupted, exit_code);
        self.summary_line(summary);
    }

    /// The JSON `summary` event alone (`haul sync` says its own summary line).
    pub fn summary_json(&self, summary: &Summary, interrupted: bool, exit_code: u8) {
        let elapsed = self.clock.elapsed();
        self.json_event(|| {
            json!({
                "event": "summary",
                "ok": summary.downloaded,
                "skipped": summary.already_present,
                "failed": summary.failed,
                "unfinished": summary.unfinished,
                "bytes": summary.received_bytes,
                "duration_ms": elapsed.as_millis() as u64,
                "interrupted": interrupted,
                "exit_code": exit_code,
            })
        });
    }

    fn summary_line(&self, summary: &Summary) {
        let elapsed = self.clock.elapsed();
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
        // Each failure was said as it happened, unless per-file lines are off.
        if !summary.failures.is_empty() && matches!(self.display, Display::SummaryOnly) {
            eprintln!("failed:");
            for (name, reason) in &summary.failures {
                eprintln!("  {name}: {reason}");
            }
            if summary.failed > summary.failures.len() {
                eprintln!(
                    "  ... and {} more (every failure is in --json, --json-file and --log-file)",
                    summary.failed - summary.failures.len()
                );
            }
        }
    }
}
