//! Download one URL into a directory, verifying a checksum when one is given.
//!
//! `cargo run --example simple -- URL [DIR] [sha-256=HEX]`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use haul::{Downloader, Request};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), dir) = (args.next(), args.next().unwrap_or_else(|| ".".into())) else {
        eprintln!("usage: simple URL [DIR] [sha-256=HEX]");
        return ExitCode::from(2);
    };
    match fetch(&url, &dir, args.next()).await {
        Ok(done) => {
            println!("saved {} ({} bytes)", done.path.display(), done.bytes);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn fetch(
    url: &str,
    dir: &str,
    checksum: Option<String>,
) -> Result<haul::Completed, haul::Error> {
    let downloader = Downloader::builder().build()?;
    let mut request = Request::new(url)?.into_dir(dir);
    if let Some(spec) = checksum {
        request = request.with_checksum(spec.parse()?);
    }
    downloader.download(request).await
}
