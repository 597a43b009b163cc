//! A long-lived program around one shared `Downloader`, as a service or a UI keeps one:
//! requests arrive over time, each with the caller's own key (a tag); any of them can be
//! cancelled by that key while it runs; every retry is shown as it happens; a progress line
//! (from the library's own progress model) comes once a second and reaches 100% when
//! everything has ended, cancelled downloads included; the last ended downloads stay
//! listed (a bounded history), so the service keeps no map of outcomes of its own.
//!
//! Commands on standard input, one per line:
//!
//! ```text
//! URL              download it, tagged with its line number
//! TAG URL          download it, tagged TAG
//! cancel TAG       cancel that download (its .part is kept for a later resume)
//! ```
//!
//! `cargo run --example service -- DIR < commands.txt`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use haul::{BatchView, Canceller, Downloader, Event, FileState, Observer, Request};
use tokio::io::AsyncBufReadExt;

/// The downloader-wide view, and a line for every retry.
struct Status(Mutex<BatchView>);

impl Observer for Status {
    fn on_event(&self, event: &Event) {
        if let Ok(mut view) = self.0.lock() {
            view.apply(event);
            if let Event::Retrying {
                id,
                attempt,
                delay,
                reason,
                ..
            } = event
            {
                let tag = view.file(*id).and_then(|f| f.tag.clone());
                eprintln!(
                    "retrying {}: attempt {attempt} in {:.1}s after: {reason}",
                    tag.as_deref().unwrap_or("?"),
                    delay.as_secs_f64()
                );
            }
        }
    }
}

impl Status {
    fn progress_line(&self) -> String {
        let Ok(view) = self.0.lock() else {
            return String::new();
        };
        let (done, total) = view.batch_progress();
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        format!(
            "{}/{} downloads ended ({} cancelled), {done} of {total} bytes ({percent}%)",
            view.ended(),
            view.queued,
            view.cancelled
        )
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: service DIR < commands.txt");
        return ExitCode::from(2);
    };
    let status = Arc::new(Status(Mutex::new(BatchView::with_history(100))));
    let downloader = match Downloader::builder()
        .jobs(4)
        .per_host(2)
        .retry_delay(Duration::from_millis(200))
        .observer(status.clone())
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
    let mut cancellers: HashMap<String, Canceller> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut input_open = true;
    let mut line_number = 0;
    let mut failed = false;
    loop {
        tokio::select! {
            line = lines.next_line(), if input_open => match line {
                Ok(Some(line)) => {
                    line_number += 1;
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        [] => {}
                        ["cancel", tag] => match cancellers.get(*tag) {
                            Some(canceller) => canceller.cancel(),
                            None => eprintln!("no running download is tagged {tag}"),
                        },
                        [url] | [_, url] => {
                            let tag = if words.len() == 2 {
                                words[0].to_owned()
                            } else {
                                format!("#{line_number}")
                            };
                            match Request::new(url) {
                                Ok(request) => {
                                    let request = request.into_dir(&dir).with_tag(tag.as_str());
                                    // Submitted at once; it waits in the queue for its turn.
                                    let handle = downloader.submit(request);
                                    cancellers.insert(tag.clone(), handle.canceller());
                                    running.push(async move { (tag, handle.await) });
                                }
                                Err(error) => eprintln!("skipped line {line_number}: {error}"),
                            }
                        }
                        _ => eprintln!("line {line_number}: expected URL, TAG URL or cancel TAG"),
                    }
                }
                Ok(None) | Err(_) => input_open = false,
            },
            Some((tag, outcome)) = running.next(), if !running.is_empty() => {
                cancellers.remove(&tag);
                match outcome {
                    Ok(done) => println!("saved {tag} {} ({} bytes)", done.path.display(), done.bytes),
                    Err(haul::Error::Cancelled) => println!("cancelled {tag}"),
                    Err(error) => {
                        failed = true;
                        eprintln!("failed {tag}: {error}");
                    }
                }
            }
            _ = ticker.tick() => eprintln!("{}", status.progress_line()),
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
    eprintln!("{}", status.progress_line());
    if let Ok(view) = status.0.lock() {
        for (id, file) in view.recently_ended() {
            let state = match file.state {
                FileState::Finished => "finished".to_owned(),
                FileState::Cancelled => format!("cancelled, {} bytes kept", file.kept_bytes),
                other => format!("{other:?}"),
            };
            eprintln!(
                "  {id} {}: {} ({state})",
                file.tag.as_deref().unwrap_or("-"),
                file.name
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
