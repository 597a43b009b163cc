//! Start a download, cancel it after a delay, and show that it stopped with a resumable
//! `.part` file; run it again (with a longer delay) and it resumes where it stopped.
//!
//! `cargo run --example cancel -- URL DIR MILLISECONDS`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use haul::{CancellationToken, Downloader, Error, Request};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, dir, delay] = args.as_slice() else {
        eprintln!("usage: cancel URL DIR MILLISECONDS");
        return ExitCode::from(2);
    };
    let Ok(delay) = delay.parse::<u64>() else {
        eprintln!("MILLISECONDS must be a number");
        return ExitCode::from(2);
    };
    let token = CancellationToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        canceller.cancel();
    });
    match fetch(url, dir, token).await {
        Ok(done) => {
            println!(
                "complete: {} ({} bytes, {} resumed)",
                done.path.display(),
                done.bytes,
                done.resumed_from
            );
            ExitCode::SUCCESS
        }
        Err(Error::Cancelled) => {
            println!("cancelled: the .part file is kept; run again to resume");
            ExitCode::from(130)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn fetch(url: &str, dir: &str, token: CancellationToken) -> Result<haul::Completed, Error> {
    let downloader = Downloader::builder().build()?;
    let request = Request::new(url)?.into_dir(dir).with_cancellation(token);
    downloader.download(request).await
}
