//! `haul sync SOURCE DIR`: arguments and rendering around the library's `haul::sync` (which
//! reads the source, plans, fetches, deletes and remembers).

use std::process::ExitCode;

use haul::sync::{self, CrawlLimits, DryRun, Location, OnConflict, Shard, Source, SyncOptions};
use haul::{Downloader, parse_sums};

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
    if !args.dry_run {
        crate::check_writable(&args.dir)?;
    }
    let downloader = crate::downloader_builder(&args.common)?
        .build()
        .map(crate::warn_if_jobs_capped)
        .inspect(|downloader| crate::follow_rate_schedule(downloader, &args.common))
        .map_err(|e| UsageError(e.to_string()))?;
    let limits = CrawlLimits {
        max_depth: args.max_depth,
        max_listings: args.max_listings,
        max_files: args.max_files,
    };
    let source = Source::parse(&args.source, args.recursive, limits)
        .map_err(|e| UsageError(format!("--recursive: {e}")))?;
    let mut files = source
        .read(&downloader)
        .await
        .map_err(|e| source_failed(&source, &e))?;
    if files.bound_reached {
        eprintln!(
            "error: the listing is incomplete: {} (--max-listings, --max-files and \
             --max-depth raise the crawl's bounds)",
            files.incomplete.join("; ")
        );
    }
    if let Some(location) = &args.checksums {
        let text = read_text(location, &downloader, "the checksum file").await?;
        let sums = parse_sums(&text).map_err(|errors| bad_lines(location, &errors))?;
        sync::apply_sums(&mut files, &sums);
        let unlisted = files
            .entries
            .iter()
            .filter(|e| e.checksum.is_none())
            .count();
        if unlisted > 0 {
            eprintln!(
                "warning: {unlisted} file(s) of the source are not listed in {location}; they \
                 are fetched unverified"
            );
        }
    }
    let quiet = matches!(crate::display(&args.common), Display::ErrorsOnly);
    for reason in &files.incomplete {
        eprintln!("warning: {reason}");
    }
    let prepared = sync::prepare(&args.dir, &files, &options).await?;
    if args.dry_run {
        let dry_run = sync::dry_run(&downloader, &prepared).await;
        print_dry_run(&dry_run, args.common.json);
        let code = if dry_run.has_failures(&options) {
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
    let failed = report.has_failures(&options);
    let code = exit_code(report.interrupted, summary.integrity_failures > 0, failed);
    // The sync's own summary line follows (one line, not two).
    renderer.summary_json(&summary, report.interrupted, code);
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

/// A source that could not be read, as one line: a manifest that is the user's own mistake
/// is a usage error (exit 2).
fn source_failed(source: &Source, error: &haul::Error) -> anyhow::Error {
    match (source, error) {
        (_, haul::Error::BadLines { what, lines, .. }) => bad_lines(what, lines),
        (_, haul::Error::NotAManifest { .. }) => UsageError(format!(
            "{error}: to mirror a directory listing, add --recursive"
        ))
        .into(),
        (Source::Listing { url, .. }, _) => anyhow::anyhow!("listing {url} failed: {error}"),
        (Source::Manifest(Location::Url(_)), _) => {
            anyhow::anyhow!("fetching the manifest failed: {error}")
        }
        _ => UsageError(format!("failed to read the manifest: {error}")).into(),
    }
}

/// A text from a path, `-` (standard input) or an http(s) URL (fetched like any document).
pub(crate) async fn read_text(
    location: &str,
    downloader: &Downloader,
    what: &str,
) -> anyhow::Result<String> {
    let place = Location::parse(location);
    place.read_text(downloader).await.map_err(|e| match place {
        Location::Url(_) => anyhow::anyhow!("fetching {what} failed: {e}"),
        _ => UsageError(format!("failed to read {what}: {e}")).into(),
    })
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

fn print_dry_run(dry_run: &DryRun, json: bool) {
    for line in &dry_run.lines {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "v": 1, "event": "plan", "action": line.action.as_str(), "path": line.path,
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
    if let Some(reason) = &dry_run.deletion_blocked {
        eprintln!("warning: refusing to delete anything: {reason}");
    }
}
