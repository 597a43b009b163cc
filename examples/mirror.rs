//! A mirror job in Rust with the library's `haul::sync`: crawl a directory listing, plan
//! against what the mirror already has, print the plan's conflicts and deletions, run it, and
//! report. The same calls `haul sync --recursive --delete URL DIR` makes: `Source::parse`,
//! `Source::read`, `sync::prepare`, `sync::run`.
//!
//! `cargo run --example mirror -- URL DIR [--delete]`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use haul::Downloader;
use haul::sync::{self, CrawlLimits, Source, SyncOptions};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(dir)) = (args.first(), args.get(1)) else {
        eprintln!("usage: mirror URL DIR [--delete]");
        return ExitCode::from(2);
    };
    let options = SyncOptions {
        delete: args.iter().any(|a| a == "--delete"),
        max_delete: Some(1000),
        ..SyncOptions::default()
    };
    match mirror(url, &PathBuf::from(dir), &options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn mirror(
    url: &str,
    dir: &std::path::Path,
    options: &SyncOptions,
) -> Result<bool, haul::Error> {
    let downloader = Downloader::builder().jobs(8).build()?;
    let source = Source::parse(url, true, CrawlLimits::default())?;
    let files = source.read(&downloader).await?;
    for reason in &files.incomplete {
        eprintln!("warning: {reason}");
    }
    let prepared = sync::prepare(dir, &files, options).await?;
    for conflict in &prepared.plan.conflicts {
        eprintln!(
            "conflict: {}: {}",
            conflict.paths.join(", "),
            conflict.reason
        );
    }
    if let Some(blocked) = &prepared.plan.deletion_blocked {
        eprintln!("not deleting: {blocked}");
    }
    let report = sync::run(&downloader, dir, prepared, options, None, None).await?;
    for (path, error) in &report.failures {
        eprintln!("failed: {path}: {error}");
    }
    println!(
        "{} new, {} updated, {} unchanged, {} deleted, {} failed",
        report.new,
        report.updated,
        report.unchanged,
        report.deleted,
        report.failures.len()
    );
    // A listing that reached a crawl bound counts as a failure too.
    Ok(!report.has_failures(options))
}
