//! A long-lived program around one shared `Downloader`: requests arrive over time (here, URLs
//! on standard input, one per line), each is submitted as it comes, and all of them share the
//! downloader's one queue, its `jobs` limit and its per-host limit. Outcomes are printed as they
//! complete; a progress line (from the library's own progress model) once a second. Dropping a
//! handle would cancel its download; Ctrl-C cancels everything, keeping resumable `.part` files.
//!
//! `cargo run --example service -- DIR < urls.txt`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use haul::{BatchView, Downloader, Event, Observer, Request};
use tokio::io::AsyncBufReadExt;

/// Keeps the downloader-wide totals up to date.
#[derive(Default)]
struct Totals(Mutex<BatchView>);

impl Observer for Totals {
    fn on_event(&self, event: &Event) {
        if let Ok(mut view) = self.0.lock() {
            view.apply(event);
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: service DIR < urls.txt");
        return ExitCode::from(2);
    };
    let totals = Arc::new(Totals::default());
    let downloader = match Downloader::builder()
        .jobs(4)
        .per_host(2)
        .observer(totals.clone())
        .build()
    {
        Ok(downloader) => downloader,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut running = FuturesUnordered::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut input_open = true;
    let mut failed = false;
    loop {
        tokio::select! {
            line = lines.next_line(), if input_open => match line {
                Ok(Some(url)) if !url.trim().is_empty() => {
                    match Request::new(url.trim()) {
                        // Submitted at once; it waits in the downloader's queue for its turn.
                        Ok(request) => running.push(downloader.submit(request.into_dir(&dir))),
                        Err(error) => eprintln!("skipped: {error}"),
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => input_open = false,
            },
            Some(outcome) = running.next(), if !running.is_empty() => match outcome {
                Ok(done) => println!("saved {} ({} bytes)", done.path.display(), done.bytes),
                Err(error) => {
                    failed = true;
                    eprintln!("failed: {error}");
                }
            },
            _ = ticker.tick() => {
                if let Ok(view) = totals.0.lock() {
                    let (done, total) = view.batch_progress();
                    eprintln!("{}/{} files, {done} of {total} bytes", view.ended(), view.queued);
                }
            }
            _ = tokio::signal::ctrl_c() => {
                // Dropping the handles cancels their downloads; `.part` files stay.
                running.clear();
                eprintln!("interrupted");
                return ExitCode::from(130);
            }
        }
        if !input_open && running.is_empty() {
            break;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
