//! `haul get`: URLs from the command line and an input file (or standard input) become a
//! stream of requests for one batch, so memory does not grow with the list's length (the input
//! file's two passes are `input_file`'s), plus the run's checksum file, Metalinks, dry run and
//! writing to standard output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use futures_util::StreamExt;
use haul::sync::Shard;
use haul::{Checksum, Error, Request};

use crate::args::GetArgs;
use crate::input_file::{check_outputs, input_stream};
use crate::{
    EXIT_CHECKSUM, EXIT_FAILED, UsageError, build_downloader, exit_code, renderer,
    report_interrupted,
};

/// What every request of the run gets besides its own options.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    /// For the Metalinks an input file names, and where their mirrors should be.
    downloader: haul::Downloader,
    countries: Vec<String>,
    sums: HashMap<String, Checksum>,
    /// Where the sums came from, and whether an unlisted file fails (`--checksums-strict`).
    sums_from: Option<(String, bool)>,
    /// Downloads the sums file does not list (names, a few), and how many.
    unlisted: std::sync::Mutex<(Vec<String>, usize)>,
    digest: Option<haul::Algorithm>,
    shard: Option<Shard>,
    rate_limit: Option<u64>,
}

impl Shared {
    fn new(
        args: &GetArgs,
        sums: HashMap<String, Checksum>,
        downloader: &haul::Downloader,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            dir: args.dir.clone(),
            downloader: downloader.clone(),
            countries: countries(args),
            sums,
            digest: args.digest,
            shard: args
                .shard
                .as_deref()
                .map(|text| Shard::parse(text).map_err(|e| UsageError(format!("--shard {e}"))))
                .transpose()?,
            rate_limit: args.common.max_download_limit.filter(|r| *r > 0),
            sums_from: args
                .checksums
                .clone()
                .map(|from| (from, args.checksums_strict)),
            unlisted: std::sync::Mutex::new((Vec::new(), 0)),
        })
    }

    /// The request as the run wants it, or `None` when it is another shard's; an error for a
    /// file the checksum file does not list under `--checksums-strict`.
    pub(crate) fn finish(&self, request: Request) -> Option<Result<Request, Error>> {
        let path = request.output_path().ok();
        let relative = path.as_deref().and_then(|p| relative_name(p, &self.dir));
        if let (Some(shard), Some(relative)) = (self.shard, &relative)
            && !shard.contains(relative)
        {
            return None;
        }
        let mut request = request;
        if request.checksum().is_none() {
            let name = path
                .as_deref()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str());
            let found = [relative.as_deref(), name]
                .into_iter()
                .flatten()
                .find_map(|key| self.sums.get(key));
            match (found, &self.sums_from) {
                (Some(checksum), _) => request = request.with_checksum(checksum.clone()),
                (None, Some((from, strict))) => {
                    let shown = relative
                        .clone()
                        .unwrap_or_else(|| request.url().to_string());
                    if *strict {
                        return Some(Err(Error::Config(format!(
                            "`{shown}` is not listed in {from} (--checksums-strict)"
                        ))));
                    }
                    let mut unlisted = self
                        .unlisted
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    unlisted.1 += 1;
                    if unlisted.0.len() < 5 {
                        unlisted.0.push(shown);
                    }
                }
                (None, None) => {}
            }
        }
        if let Some(algorithm) = self.digest {
            request = request.with_digest(algorithm);
        }
        if let Some(rate) = self.rate_limit {
            request = request.with_rate_limit(rate);
        }
        Some(Ok(request))
    }

    /// The requests of the Metalink an input line names (below that line's directory), read
    /// from this blocking thread; a Metalink that cannot be read fails its line.
    pub(crate) fn metalink_line(
        &self,
        runtime: &tokio::runtime::Handle,
        line_request: &Request,
        line: usize,
    ) -> Vec<Result<Request, Error>> {
        let dir = match line_request.destination() {
            haul::Destination::Directory(dir) => dir.clone(),
            _ => self.dir.clone(),
        };
        let location = haul::sync::Location::Url(line_request.url().clone());
        match runtime.block_on(haul::metalink::load(&location, &self.downloader)) {
            Ok(metalink) => metalink_file_requests(&metalink, &dir, &self.countries)
                .into_iter()
                .filter_map(|request| match request {
                    Ok(request) => self.finish(request),
                    Err(error) => Some(Err(Error::Config(format!("line {line}: {error}")))),
                })
                .collect(),
            Err(error) => vec![Err(Error::Config(format!("line {line}: {error}")))],
        }
    }

    /// Says which downloads went unverified because the checksum file does not list them.
    fn warn_unlisted(&self) {
        let Some((from, _)) = &self.sums_from else {
            return;
        };
        let unlisted = self
            .unlisted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (names, count) = &*unlisted;
        if *count == 0 {
            return;
        }
        let more = if *count > names.len() {
            format!(" and {} more", count - names.len())
        } else {
            String::new()
        };
        eprintln!(
            "warning: {count} download(s) not listed in {from} were not verified: {}{more} \
             (--checksums-strict fails them)",
            names.join(", ")
        );
    }
}

/// A path below `dir`, `/`-separated (what shards and sums files name).
fn relative_name(path: &Path, dir: &Path) -> Option<String> {
    let below = path.strip_prefix(dir).unwrap_or(path);
    let parts: Option<Vec<&str>> = below
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .map(|c| c.as_os_str().to_str())
        .collect();
    Some(parts?.join("/"))
}

pub async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    if args.output.as_deref() == Some(Path::new("-")) {
        return get_to_stdout(&args).await;
    }
    let mut from_command_line = command_line_requests(&args)?;
    let metalinks: Vec<&String> = args
        .urls
        .iter()
        .filter(|u| haul::metalink::is_metalink_name(u))
        .chain(&args.metalink)
        .collect();
    if from_command_line.is_empty() && args.input_file.is_none() && metalinks.is_empty() {
        bail!(UsageError(
            "nothing to download: give URLs or --input-file".into()
        ));
    }
    let content_disposition = args.content_disposition;
    let reading_file = args
        .input_file
        .as_ref()
        .filter(|path| path.as_path() != Path::new("-"));
    if !args.dry_run {
        crate::check_writable(&args.dir)?;
    }
    let downloader = build_downloader(&args)?;
    for location in metalinks {
        from_command_line.extend(metalink_requests(location, &downloader, &args).await?);
    }
    check_outputs(
        &from_command_line,
        reading_file.map(PathBuf::as_path),
        &args.dir,
        args.strict_input,
        content_disposition,
    )?;
    let shared = Arc::new(Shared::new(
        &args,
        read_sums(&args, &downloader).await?,
        &downloader,
    )?);
    let stream = request_stream(&args, from_command_line, &shared);
    if args.dry_run {
        return dry_run(
            &downloader,
            stream,
            args.common.jobs as usize,
            args.common.json,
        )
        .await;
    }
    let mut aftermath = crate::aftermath::Aftermath::new(
        args.save_failed.as_deref(),
        args.on_finished.clone(),
        args.on_failed.clone(),
    )
    .map_err(|e| UsageError(format!("{e:#}")))?;
    let stream = match &aftermath {
        Some(aftermath) => aftermath.tracker.track(stream),
        None => stream,
    };
    let (renderer, cancel) = renderer(&args.common)?;
    let mut outcomes = downloader
        .batch_from_stream(stream)
        .with_observer(renderer.clone())
        .with_cancellation(cancel.clone())
        .start()
        .map_err(|e| UsageError(e.to_string()))?;
    while let Some(outcome) = outcomes.next().await {
        if let Some(aftermath) = &mut aftermath {
            aftermath.ended(&outcome);
        }
    }
    if let Some(aftermath) = aftermath {
        aftermath.finish().await?;
    }
    let summary = renderer.finish();
    let interrupted = cancel.is_cancelled();
    let code = exit_code(
        interrupted,
        summary.integrity_failures > 0,
        summary.failed > 0,
    );
    renderer.summarize(&summary, interrupted, code);
    shared.warn_unlisted();
    if interrupted {
        report_interrupted(&summary, summary.queued);
    }
    Ok(ExitCode::from(code))
}

/// `--dry-run` (`--spider`): every request's URL asked for (a `HEAD`, or a one-byte range),
/// nothing downloaded; a line per URL in input order, exit 1 when one cannot be fetched.
async fn dry_run(
    downloader: &haul::Downloader,
    requests: futures_util::stream::BoxStream<'static, Result<Request, Error>>,
    jobs: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let probes = requests.map(|item| async move {
        match item {
            Ok(request) => {
                let answer = downloader.probe(request.url()).await;
                (Some(request), answer)
            }
            Err(error) => (None, Err(error)),
        }
    });
    let mut lines = probes.buffered(jobs.max(1));
    let mut failed = 0usize;
    while let Some((request, answer)) = lines.next().await {
        let url = request.as_ref().map(|r| r.url().to_string());
        let path = request.as_ref().and_then(|r| r.output_path().ok());
        failed += usize::from(answer.is_err());
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "v": 1, "event": "probe", "url": url, "path": path,
                    "ok": answer.is_ok(),
                    "bytes": answer.as_ref().ok().copied().flatten(),
                    "message": answer.as_ref().err().map(ToString::to_string),
                })
            );
            continue;
        }
        let url = url.unwrap_or_else(|| "-".into());
        match answer {
            Ok(bytes) => println!(
                "ok    {url}  {}{}",
                bytes.map_or_else(|| "size unknown".to_owned(), |b| format!("{b} bytes")),
                path.map(|p| format!("  -> {}", p.display()))
                    .unwrap_or_default()
            ),
            Err(error) => println!("fail  {url}: {error}"),
        }
    }
    Ok(ExitCode::from(if failed > 0 { EXIT_FAILED } else { 0 }))
}

/// Every request of the run, in order: the command line's, then the input file's (read as
/// the batch takes them).
fn request_stream(
    args: &GetArgs,
    from_command_line: Vec<Request>,
    shared: &Arc<Shared>,
) -> futures_util::stream::BoxStream<'static, Result<Request, Error>> {
    let head = {
        let shared = Arc::clone(shared);
        futures_util::stream::iter(
            from_command_line
                .into_iter()
                .filter_map(move |r| shared.finish(r)),
        )
    };
    match &args.input_file {
        Some(path) => head
            .chain(input_stream(
                path.clone(),
                Arc::clone(shared),
                args.strict_input,
            ))
            .boxed(),
        None => head.boxed(),
    }
}

/// The checksum file's digests by name (`--checksums`), or none.
async fn read_sums(
    args: &GetArgs,
    downloader: &haul::Downloader,
) -> anyhow::Result<HashMap<String, Checksum>> {
    let Some(location) = &args.checksums else {
        return Ok(HashMap::new());
    };
    let text = crate::sync::read_text(location, downloader, "the checksum file").await?;
    let parsed =
        haul::parse_sums(&text).map_err(|errors| crate::sync::bad_lines(location, &errors))?;
    Ok(parsed.into_iter().collect())
}

/// `--metalink-location`'s country codes.
fn countries(args: &GetArgs) -> Vec<String> {
    args.metalink_location
        .as_deref()
        .map(|list| list.split(',').map(|c| c.trim().to_owned()).collect())
        .unwrap_or_default()
}

/// The requests of a Metalink's files, below `--dir`.
async fn metalink_requests(
    location: &str,
    downloader: &haul::Downloader,
    args: &GetArgs,
) -> anyhow::Result<Vec<Request>> {
    let parsed = haul::metalink::load(&haul::sync::Location::parse(location), downloader)
        .await
        .map_err(|e| match e.kind() {
            haul::ErrorKind::InvalidInput | haul::ErrorKind::Io => {
                anyhow::Error::from(UsageError(format!("{location}: {e}")))
            }
            _ => anyhow::anyhow!("fetching the Metalink {location} failed: {e}"),
        })?;
    metalink_file_requests(&parsed, &args.dir, &countries(args))
        .into_iter()
        .map(|request| request.map_err(|e| UsageError(format!("{location}: {e}")).into()))
        .collect()
}

/// The requests of a Metalink's files below `dir`, each file's mistake naming the file.
fn metalink_file_requests(
    metalink: &haul::metalink::Metalink,
    dir: &Path,
    countries: &[String],
) -> Vec<Result<Request, String>> {
    let countries: Vec<&str> = countries.iter().map(String::as_str).collect();
    metalink
        .files
        .iter()
        .map(|file| {
            file.request(dir, &countries)
                .map_err(|e| format!("`{}`: {e}", file.name))
        })
        .collect()
}

/// The requests of the URLs on the command line.
fn command_line_requests(args: &GetArgs) -> anyhow::Result<Vec<Request>> {
    let single_only = |flag: &str| -> anyhow::Result<()> {
        if args.urls.len() != 1 || args.input_file.is_some() {
            bail!(UsageError(format!(
                "{flag} needs exactly one URL on the command line"
            )));
        }
        Ok(())
    };
    if args.output.is_some() {
        single_only("--output")?;
    }
    if !args.mirrors.is_empty() {
        single_only("--mirror")?;
    }
    let checksum = match &args.checksum {
        Some(spec) => {
            single_only("--checksum")?;
            Some(
                spec.parse::<Checksum>()
                    .map_err(|e| UsageError(e.to_string()))?,
            )
        }
        None => None,
    };
    let mut requests = Vec::new();
    for url in args
        .urls
        .iter()
        .filter(|u| !haul::metalink::is_metalink_name(u))
    {
        let url = haul::input::parse_url(url).map_err(UsageError)?;
        let mut request = Request::from_url(url)
            .map_err(|e| UsageError(e.to_string()))?
            .into_dir(&args.dir);
        if let Some(output) = &args.output {
            request = request.to_file(args.dir.join(output));
        }
        if let Some(checksum) = &checksum {
            request = request.with_checksum(checksum.clone());
        }
        for mirror in &args.mirrors {
            request = request
                .with_mirror(mirror)
                .map_err(|e| UsageError(e.to_string()))?;
        }
        requests.push(request);
    }
    Ok(requests)
}

/// `-o -`: the single download goes to standard output, verified at the end; no `.part`, so
/// no resume across runs (said in `--help` and the README).
async fn get_to_stdout(args: &GetArgs) -> anyhow::Result<ExitCode> {
    let [url] = args.urls.as_slice() else {
        bail!(UsageError(
            "-o - needs exactly one URL on the command line".into()
        ));
    };
    if args.input_file.is_some() || !args.mirrors.is_empty() {
        bail!(UsageError(
            "-o - takes one URL, without --input-file or --mirror".into()
        ));
    }
    let url = haul::input::parse_url(url).map_err(UsageError)?;
    let mut request = Request::from_url(url).map_err(|e| UsageError(e.to_string()))?;
    if let Some(spec) = &args.checksum {
        request = request.with_checksum(
            spec.parse()
                .map_err(|e: haul::Error| UsageError(e.to_string()))?,
        );
    }
    let downloader = build_downloader(args)?;
    let mut stdout = tokio::io::stdout();
    match downloader.download_to_writer(&request, &mut stdout).await {
        Ok(_) => Ok(ExitCode::SUCCESS),
        // A reader that went away (`| head`) is not a failure.
        Err(haul::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(ExitCode::from(
                if error.kind() == haul::ErrorKind::Integrity {
                    EXIT_CHECKSUM
                } else {
                    EXIT_FAILED
                },
            ))
        }
    }
}
