//! Download several URLs at once with the ready-made progress bars (feature `indicatif`), then
//! print each outcome in input order.
//!
//! `cargo run --example batch_with_progress -- DIR URL...`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::sync::Arc;

use haul::bars::ProgressBars;
use haul::{Downloader, Request};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, urls)) = args.split_first().filter(|(_, urls)| !urls.is_empty()) else {
        eprintln!("usage: batch_with_progress DIR URL...");
        return ExitCode::from(2);
    };
    let requests: Result<Vec<Request>, haul::Error> = urls
        .iter()
        .map(|url| Request::new(url).map(|r| r.into_dir(dir)))
        .collect();
    let outcomes = match run(requests).await {
        Ok(outcomes) => outcomes,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    for (url, outcome) in urls.iter().zip(outcomes) {
        match outcome {
            Ok(done) => println!(
                "ok     {url} -> {} ({} bytes)",
                done.path.display(),
                done.bytes
            ),
            Err(error) => {
                failed = true;
                println!("failed {url}: {error}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn run(
    requests: Result<Vec<Request>, haul::Error>,
) -> Result<Vec<Result<haul::Completed, haul::Error>>, haul::Error> {
    let downloader = Downloader::builder().jobs(4).per_host(4).build()?;
    let bars = Arc::new(ProgressBars::new());
    let outcomes = downloader
        .batch(requests?)
        .with_observer(bars.clone())
        .run()
        .await;
    bars.finish();
    outcomes
}
