//! `haul get`: URLs from the command line and an input file (or standard input) become a
//! stream of requests for one batch, so memory does not grow with the list's length. An input
//! file is read twice: a first pass checks every line (and every explicit output) without
//! keeping them, so a file with a mistake runs nothing; the second streams the requests.
//! Standard input cannot be read twice: a bad line there fails that line (exit 1), and the
//! rest runs.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use futures_util::StreamExt;
use haul::input::{InputEntry, InputParser, LineError};
use haul::naming::join_inside;
use haul::sync::Shard;
use haul::{Checksum, Error, Request};

use crate::args::GetArgs;
use crate::{
    EXIT_CHECKSUM, EXIT_FAILED, UsageError, build_downloader, exit_code, renderer,
    report_interrupted,
};

/// How many bad lines are listed when an input file is refused.
const ERRORS_LISTED: usize = 50;

/// What every request of the run gets besides its own options.
struct Shared {
    dir: PathBuf,
    sums: HashMap<String, Checksum>,
    digest: Option<haul::Algorithm>,
    shard: Option<Shard>,
    rate_limit: Option<u64>,
}

impl Shared {
    /// The request as the run wants it, or `None` when it is another shard's.
    fn finish(&self, request: Request) -> Option<Request> {
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
            if let Some(checksum) = found {
                request = request.with_checksum(checksum.clone());
            }
        }
        if let Some(algorithm) = self.digest {
            request = request.with_digest(algorithm);
        }
        if let Some(rate) = self.rate_limit {
            request = request.with_rate_limit(rate);
        }
        Some(request)
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
    let from_command_line = command_line_requests(&args)?;
    if from_command_line.is_empty() && args.input_file.is_none() {
        bail!(UsageError(
            "nothing to download: give URLs or --input-file".into()
        ));
    }
    let content_disposition = args.content_disposition;
    let reading_file = args
        .input_file
        .as_ref()
        .filter(|path| path.as_path() != Path::new("-"));
    check_outputs(
        &from_command_line,
        reading_file.map(PathBuf::as_path),
        &args.dir,
        args.strict_input,
        content_disposition,
    )?;
    let downloader = build_downloader(&args)?;
    let sums = match &args.checksums {
        Some(location) => {
            let text = crate::sync::read_text(location, &downloader, "the checksum file").await?;
            let parsed = haul::parse_sums(&text)
                .map_err(|errors| crate::sync::bad_lines(location, &errors))?;
            parsed.into_iter().collect()
        }
        None => HashMap::new(),
    };
    let shared = Arc::new(Shared {
        dir: args.dir.clone(),
        sums,
        digest: args.digest,
        shard: args
            .shard
            .as_deref()
            .map(|text| Shard::parse(text).map_err(|e| UsageError(format!("--shard {e}"))))
            .transpose()?,
        rate_limit: args.common.max_download_limit.filter(|r| *r > 0),
    });
    let head = {
        let shared = Arc::clone(&shared);
        futures_util::stream::iter(
            from_command_line
                .into_iter()
                .filter_map(move |r| shared.finish(r))
                .map(Ok),
        )
    };
    let stream = match &args.input_file {
        Some(path) => head
            .chain(input_stream(
                path.clone(),
                Arc::clone(&shared),
                args.strict_input,
            ))
            .boxed(),
        None => head.boxed(),
    };
    let (renderer, cancel) = renderer(&args.common)?;
    let mut outcomes = downloader
        .batch_from_stream(stream)
        .with_observer(renderer.clone())
        .with_cancellation(cancel.clone())
        .start()
        .map_err(|e| UsageError(haul::error_chain(&e)))?;
    while outcomes.next().await.is_some() {}
    let summary = renderer.finish();
    let interrupted = cancel.is_cancelled();
    let code = exit_code(
        interrupted,
        summary.integrity_failures > 0,
        summary.failed > 0,
    );
    renderer.summarize(&summary, interrupted, code);
    if interrupted {
        report_interrupted(&summary.unfinished, summary.queued);
    }
    Ok(ExitCode::from(code))
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
    for url in &args.urls {
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

/// Two different URLs to one output, found before anything starts.
struct Outputs {
    keys: std::collections::hash_map::RandomState,
    /// Per output's fingerprint: the URL's fingerprint and where it was first given.
    seen: HashMap<u64, (u64, String)>,
    content_disposition: bool,
}

impl Outputs {
    fn fingerprint(&self, bytes: &[u8]) -> u64 {
        let mut hasher = self.keys.build_hasher();
        hasher.write(bytes);
        hasher.finish()
    }

    /// `Err` with a message when `request`'s output is another URL's.
    fn check(&mut self, request: &Request, at: String) -> Result<(), String> {
        let Ok(output) = request.output_path() else {
            return Ok(());
        };
        if self.content_disposition
            && matches!(request.destination(), haul::Destination::Directory(_))
        {
            // The server names these; the URL's name is only provisional.
            return Ok(());
        }
        let key = self.fingerprint(output.as_os_str().as_encoded_bytes());
        let url = self.fingerprint(request.url().as_str().as_bytes());
        match self.seen.get(&key) {
            Some((seen, first)) if *seen != url => Err(format!(
                "`{}` is the output of more than one download ({first} and {at}, from \
                 different URLs)",
                output.display()
            )),
            Some(_) => Ok(()),
            None => {
                self.seen.insert(key, (url, at));
                Ok(())
            }
        }
    }
}

/// The first pass: the command line's requests and every line of the input file checked
/// (warnings for unknown options printed once), and no output claimed by two different URLs;
/// nothing is kept per line but fixed-size fingerprints.
fn check_outputs(
    from_command_line: &[Request],
    file: Option<&Path>,
    dir: &Path,
    strict: bool,
    content_disposition: bool,
) -> anyhow::Result<()> {
    let mut outputs = Outputs {
        keys: std::collections::hash_map::RandomState::new(),
        seen: HashMap::new(),
        content_disposition,
    };
    for (index, request) in from_command_line.iter().enumerate() {
        outputs
            .check(request, format!("URL {}", index + 1))
            .map_err(UsageError)?;
    }
    let Some(path) = file else {
        return Ok(());
    };
    let opened = std::fs::File::open(path).map_err(|e| {
        UsageError(format!(
            "failed to read input file `{}`: {e}",
            path.display()
        ))
    })?;
    let mut parser = InputParser::new(strict);
    let mut errors: Vec<LineError> = Vec::new();
    let mut error_count = 0usize;
    let mut note = |error: LineError, errors: &mut Vec<LineError>| {
        error_count += 1;
        if errors.len() < ERRORS_LISTED {
            errors.push(error);
        }
    };
    let mut check = |entry: InputEntry,
                     errors: &mut Vec<LineError>,
                     note: &mut dyn FnMut(LineError, &mut Vec<LineError>)| {
        let line = entry.line;
        let checked = request_from_entry(dir, entry)
            .and_then(|request| outputs.check(&request, format!("line {line}")));
        if let Err(message) = checked {
            note(LineError { line, message }, errors);
        }
    };
    for (index, line) in std::io::BufReader::new(opened).lines().enumerate() {
        let line = line.map_err(|e| {
            UsageError(format!(
                "failed to read input file `{}`: {e}",
                path.display()
            ))
        })?;
        let step = parser.line(index + 1, &line);
        if let Some(warning) = step.warning {
            eprintln!("warning: {}: {warning}", path.display());
        }
        if let Some(error) = step.error {
            note(error, &mut errors);
        }
        if let Some(entry) = step.entry {
            check(entry, &mut errors, &mut note);
        }
    }
    if let Some(entry) = parser.finish() {
        check(entry, &mut errors, &mut note);
    }
    if error_count > 0 {
        let mut lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        if error_count > errors.len() {
            lines.push(format!("... and {} more", error_count - errors.len()));
        }
        bail!(UsageError(format!(
            "{} has {error_count} bad line(s); nothing was started:\n  {}",
            path.display(),
            lines.join("\n  ")
        )));
    }
    Ok(())
}

/// The requests of an input file (or `-`, standard input), read line by line on a thread of
/// their own and handed over through a bounded channel: the reading waits while the batch is
/// full. A bad line of standard input becomes a failed position of the batch.
fn input_stream(
    path: PathBuf,
    shared: Arc<Shared>,
    strict: bool,
) -> impl futures_util::Stream<Item = Result<Request, Error>> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Request, Error>>(256);
    tokio::task::spawn_blocking(move || {
        let reader: Box<dyn BufRead> = if path == Path::new("-") {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            match std::fs::File::open(&path) {
                Ok(file) => Box::new(std::io::BufReader::new(file)),
                Err(error) => {
                    let _ = sender.blocking_send(Err(Error::Io {
                        action: "read",
                        path: path.clone(),
                        source: error,
                    }));
                    return;
                }
            }
        };
        let stdin = path == Path::new("-");
        let mut parser = InputParser::new(strict);
        let send = |item: Result<Request, Error>| sender.blocking_send(item).is_ok();
        let convert = |entry: InputEntry| -> Option<Result<Request, Error>> {
            let line = entry.line;
            match request_from_entry(&shared.dir, entry) {
                Ok(request) => shared.finish(request).map(Ok),
                Err(message) => Some(Err(Error::Config(format!("line {line}: {message}")))),
            }
        };
        for (index, line) in reader.lines().enumerate() {
            let Ok(line) = line else { break };
            let step = parser.line(index + 1, &line);
            if let (true, Some(warning)) = (stdin, &step.warning) {
                eprintln!("warning: standard input: {warning}");
            }
            if let (true, Some(error)) = (stdin, step.error)
                && !send(Err(Error::Config(error.to_string())))
            {
                return;
            }
            if let Some(item) = step.entry.and_then(convert)
                && !send(item)
            {
                return;
            }
        }
        if let Some(item) = parser.finish().and_then(convert) {
            send(item);
        }
    });
    tokio_stream_from(receiver)
}

/// A `Stream` of a channel's items.
fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// A request from one input-file entry (`dir=`, `out=`, and the other options).
pub(crate) fn request_from_entry(base: &Path, entry: InputEntry) -> Result<Request, String> {
    let line = entry.line;
    let at_line = |e: haul::Error| format!("line {line}: {e}");
    let Some(url) = entry.urls.first() else {
        return Err(format!("line {line}: no URL"));
    };
    // The input file is the user's own: an absolute `dir=` is their choice (as in aria2); a
    // relative one stays inside --dir. Names from the network never get this latitude.
    let dir: PathBuf = match &entry.dir {
        Some(dir) if Path::new(dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => join_inside(base, dir).map_err(at_line)?,
        None => base.to_path_buf(),
    };
    let mut request = Request::from_url(url.clone())
        .map_err(at_line)?
        .into_dir(&dir);
    if let Some(out) = &entry.out {
        request = request.to_file(join_inside(&dir, out).map_err(at_line)?);
    }
    if let Some(checksum) = entry.checksum {
        request = request.with_checksum(checksum);
    }
    if let Some(size) = entry.size {
        request = request.with_size(size);
    }
    if let Some(rate) = entry.rate_limit {
        request = request.with_rate_limit(rate);
    }
    if let Some(connections) = entry.connections {
        request = request.with_connections(connections);
    }
    for (name, value) in &entry.headers {
        request = request.with_header(name, value).map_err(at_line)?;
    }
    for mirror in &entry.urls[1..] {
        request = request.with_mirror(mirror.as_str()).map_err(at_line)?;
    }
    match (&entry.user, &entry.password) {
        (Some(user), password) => {
            request = request.with_basic_auth(user, password.as_deref().unwrap_or(""));
        }
        (None, Some(_)) => return Err(format!("line {line}: password= without user=")),
        (None, None) => {}
    }
    Ok(request)
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
            eprintln!("error: {}", haul::error_chain(&error));
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
