//! `haul sync SOURCE DIR`: arguments and rendering around the library's `haul::sync` (which
//! reads the source, plans, fetches, deletes and remembers).

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use haul::sync::{self, CrawlLimits, DryRunLine, OnConflict, Shard, Source, SyncOptions};
use haul::{Downloader, parse_sums};
use url::Url;

use crate::args::{OnConflictArg, SyncArgs};
use crate::render::Display;
use crate::{EXIT_FAILED, UsageError, exit_code};

pub async fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let shard = args
        .shard
        .as_deref()
        .map(|text| Shard::parse(text).map_err(|e| UsageError(format!("--shard {e}"))))
        .transpose()?;
    let options = SyncOptions {
        filters: sync::Filters::new(&args.include, &args.exclude),
        shard,
        delete: args.delete,
        max_delete: args.max_delete,
        delete_on_errors: args.delete_on_errors,
        on_conflict: match args.on_conflict {
            OnConflictArg::Fail => OnConflict::Fail,
            OnConflictArg::Skip => OnConflict::Skip,
        },
        verify_local: args.verify_local,
        file_rate_limit: args.common.max_download_limit.filter(|r| *r > 0),
        dry_run: args.dry_run,
    };
    let downloader = crate::downloader_builder(&args.common)?
        .build()
        .map(crate::warn_if_jobs_capped)
        .map_err(|e| UsageError(e.to_string()))?;
    let (mut source, bound_reached) = read_source(&args, &downloader).await?;
    if let Some(location) = &args.checksums {
        let text = read_text(location, &downloader, "the checksum file").await?;
        let sums = parse_sums(&text).map_err(|errors| bad_lines(location, &errors))?;
        sync::apply_sums(&mut source, &sums);
    }
    let quiet = matches!(crate::display(&args.common), Display::ErrorsOnly);
    for reason in &source.incomplete {
        eprintln!("warning: {reason}");
    }
    let prepared = sync::prepare(&args.dir, &source, &options).await?;
    if args.dry_run {
        let lines = sync::dry_run(&downloader, &prepared).await;
        let blocked = prepared.plan.deletion_blocked.as_ref();
        print_dry_run(&lines, blocked, args.common.json);
        let failed = lines.iter().any(|l| l.action == "fail")
            || blocked.is_some_and(sync::DeletionBlocked::is_error)
            || (options.on_conflict == OnConflict::Fail
                && lines.iter().any(|l| l.action == "conflict"));
        let code = if failed || bound_reached {
            EXIT_FAILED
        } else {
            0
        };
        return Ok(ExitCode::from(code));
    }
    let (renderer, cancel) = crate::renderer(&args.common)?;
    let report = sync::run(
        &downloader,
        &args.dir,
        prepared,
        &options,
        Some(renderer.clone()),
        Some(cancel.clone()),
    )
    .await?;
    let summary = renderer.finish();
    let failed = report.has_failures(&options) || bound_reached;
    let code = exit_code(report.interrupted, summary.integrity_failures > 0, failed);
    renderer.summarize(&summary, report.interrupted, code);
    render_report(&report, &options, &renderer, quiet);
    if report.interrupted {
        crate::report_interrupted(&summary, summary.unfinished);
    }
    Ok(ExitCode::from(code))
}

/// Conflicts, refused deletions, and the sync's own summary (a line, and a `sync_summary`
/// JSON event).
fn render_report(
    report: &sync::SyncReport,
    options: &SyncOptions,
    renderer: &crate::render::Renderer,
    quiet: bool,
) {
    for conflict in &report.conflicts {
        eprintln!(
            "{}: conflict: {}: {}",
            if options.on_conflict == OnConflict::Skip {
                "warning"
            } else {
                "error"
            },
            conflict.paths.join(", "),
            conflict.reason
        );
    }
    for (path, error) in &report.deletion_failures {
        eprintln!("error: could not delete `{path}`: {error}");
    }
    if let Some(held) = &report.deletion_held {
        let level = if held.is_error() { "error" } else { "warning" };
        let hint = match held {
            sync::DeletionHeld::DownloadsFailed { .. } => " (--delete-on-errors deletes anyway)",
            sync::DeletionHeld::Blocked(sync::DeletionBlocked::TooMany { .. }) => {
                " (--max-delete raises the limit)"
            }
            _ => "",
        };
        eprintln!("{level}: {held}{hint}");
    }
    renderer.emit_json(serde_json::json!({
        "event": "sync_summary", "new": report.new, "updated": report.updated,
        "unchanged": report.unchanged, "deleted": report.deleted,
        "failed": report.failures.len(), "conflicts": report.conflicts.len(),
        "deletion_skipped": report.deletion_held.as_ref().map(ToString::to_string),
    }));
    if !quiet {
        eprintln!(
            "sync: {} new, {} updated, {} unchanged, {} deleted, {} failed, {} conflicts",
            report.new,
            report.updated,
            report.unchanged,
            report.deleted,
            report.failures.len(),
            report.conflicts.len()
        );
    }
}

/// The source's files: a crawled listing (with whether a bound was reached) or a manifest.
async fn read_source(args: &SyncArgs, downloader: &Downloader) -> anyhow::Result<(Source, bool)> {
    let url = Url::parse(&args.source)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    if args.recursive {
        let Some(url) = url else {
            bail!(UsageError(format!(
                "--recursive needs an http(s) directory URL, not `{}`",
                args.source
            )));
        };
        let limits = CrawlLimits {
            max_depth: args.max_depth,
            max_listings: args.max_listings,
            max_files: args.max_files,
        };
        let crawled = sync::read_listing(downloader, &url, limits)
            .await
            .map_err(|e| anyhow::anyhow!("listing {url} failed: {e}"))?;
        if crawled.bound_reached {
            eprintln!(
                "error: the listing is incomplete: {} (--max-listings, --max-files and \
                 --max-depth raise the crawl's bounds)",
                crawled.source.incomplete.join("; ")
            );
        }
        return Ok((crawled.source, crawled.bound_reached));
    }
    let text = read_text(&args.source, downloader, "the manifest").await?;
    let source = sync::manifest_source(&text).map_err(|errors| bad_lines(&args.source, &errors))?;
    Ok((source, false))
}

/// A text from a path, `-` (standard input) or an http(s) URL (fetched like any document).
pub(crate) async fn read_text(
    location: &str,
    downloader: &Downloader,
    what: &str,
) -> anyhow::Result<String> {
    if let Some(url) = Url::parse(location)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
    {
        let document = downloader
            .fetch_document(&url)
            .await
            .map_err(|e| anyhow::anyhow!("fetching {what} failed: {e}"))?;
        return Ok(document.text().into_owned());
    }
    if location == "-" {
        return Ok(std::io::read_to_string(std::io::stdin())?);
    }
    Ok(std::fs::read_to_string(Path::new(location))
        .map_err(|e| UsageError(format!("failed to read {what} `{location}`: {e}")))?)
}

pub(crate) fn bad_lines(location: &str, errors: &[haul::input::LineError]) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    UsageError(format!(
        "{location} has {} bad line(s); nothing was done:\n  {}",
        errors.len(),
        lines.join("\n  ")
    ))
    .into()
}

fn print_dry_run(
    lines: &[DryRunLine],
    deletion_blocked: Option<&sync::DeletionBlocked>,
    json: bool,
) {
    for line in lines {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "v": 1, "event": "plan", "action": line.action, "path": line.path,
                    "detail": line.detail, "kind": line.kind.map(haul::ErrorKind::as_str),
                })
            );
        } else {
            match &line.detail {
                Some(detail) => println!("{:<9} {}: {detail}", line.action, line.path),
                None => println!("{:<9} {}", line.action, line.path),
            }
        }
    }
    if let Some(reason) = deletion_blocked {
        eprintln!("warning: refusing to delete anything: {reason}");
    }
}
