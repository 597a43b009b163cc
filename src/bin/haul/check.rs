//! `haul check [SOURCE] DIR`: arguments and rendering around the library's `sync::check`.

use std::path::PathBuf;
use std::process::ExitCode;

use haul::sync::{self, CrawlLimits, Reference, Shard, Source, Verdict};

use crate::args::CheckArgs;
use crate::render::Display;
use crate::{EXIT_CHECKSUM, EXIT_FAILED, UsageError};

pub async fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (source, dir) = match args.paths.as_slice() {
        [dir] => (None, PathBuf::from(dir)),
        [source, dir] => (Some(source.clone()), PathBuf::from(dir)),
        _ => return Err(UsageError("give [SOURCE] DIR".into()).into()),
    };
    if !dir.is_dir() {
        return Err(UsageError(format!("`{}` is not a directory", dir.display())).into());
    }
    let shard = args
        .shard
        .as_deref()
        .map(|text| Shard::parse(text).map_err(|e| UsageError(format!("--shard {e}"))))
        .transpose()?;
    let reference = reference(&args, source).await?;
    let filters = sync::Filters::new(&args.include, &args.exclude);
    let report = sync::check(&dir, reference, &filters, shard).await?;
    // The checksum file may live in the directory it describes: it is not an extra file.
    let sums_name = args
        .checksums
        .as_deref()
        .and_then(|c| std::path::Path::new(c).canonicalize().ok())
        .and_then(|c| {
            c.strip_prefix(dir.canonicalize().ok()?)
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        });
    let files: Vec<&(String, Verdict)> = report
        .files
        .iter()
        .filter(|(path, verdict)| !(*verdict == Verdict::Extra && Some(path) == sums_name.as_ref()))
        .collect();
    let quiet = matches!(crate::display(&args.common), Display::ErrorsOnly);
    for (path, verdict) in &files {
        let detail = match verdict {
            Verdict::Corrupt(why) => Some(why.as_str()),
            _ => None,
        };
        if args.common.json {
            println!(
                "{}",
                serde_json::json!({
                    "v": 1, "event": "check", "path": path, "verdict": verdict.as_str(),
                    "detail": detail,
                })
            );
            continue;
        }
        let shown = matches!(
            verdict,
            Verdict::Corrupt(_) | Verdict::Missing | Verdict::Extra
        ) || args.verbose;
        if shown {
            match detail {
                Some(detail) => println!("{:<10} {path}: {detail}", verdict.as_str()),
                None => println!("{:<10} {path}", verdict.as_str()),
            }
        }
    }
    let count = |kind: &str| files.iter().filter(|(_, v)| v.as_str() == kind).count();
    let (corrupt, missing, extra) = (count("corrupt"), count("missing"), count("extra"));
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({
                "v": 1, "event": "check_summary", "ok": count("ok"),
                "unverified": count("unverified"), "corrupt": corrupt, "missing": missing,
                "extra": extra,
            })
        );
    } else if !quiet {
        eprintln!(
            "check: {} ok, {} unverified (size only), {corrupt} corrupt, {missing} missing, {extra} extra",
            count("ok"),
            count("unverified"),
        );
    }
    let code = if corrupt > 0 {
        EXIT_CHECKSUM
    } else if missing + extra > 0 {
        EXIT_FAILED
    } else {
        0
    };
    Ok(ExitCode::from(code))
}

/// What the directory is checked against: the source (with the checksum file's digests), the
/// checksum file alone, or the last sync's memory.
async fn reference(args: &CheckArgs, source: Option<String>) -> anyhow::Result<Reference> {
    let downloader = crate::downloader_builder(&args.common)?
        .build()
        .map_err(|e| UsageError(e.to_string()))?;
    let sums = match &args.checksums {
        Some(location) => {
            let text = crate::sync::read_text(location, &downloader, "the checksum file").await?;
            Some(
                haul::parse_sums(&text)
                    .map_err(|errors| crate::sync::bad_lines(location, &errors))?,
            )
        }
        None => None,
    };
    Ok(match (source, sums) {
        (Some(text), sums) => {
            let limits = CrawlLimits::default();
            let source = Source::parse(&text, args.recursive, limits)
                .map_err(|e| UsageError(format!("--recursive: {e}")))?;
            let mut files = source
                .read(&downloader)
                .await
                .map_err(|e| anyhow::anyhow!("reading {text} failed: {e}"))?;
            if let Some(sums) = &sums {
                sync::apply_sums(&mut files, sums);
            }
            Reference::Source(files)
        }
        (None, Some(sums)) => Reference::Sums(sums),
        (None, None) => Reference::Memory,
    })
}
