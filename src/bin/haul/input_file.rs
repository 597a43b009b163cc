//! `haul get`'s input file, read twice: a first pass checks every line (and every explicit
//! output) without keeping them, so a file with a mistake runs nothing; the second streams the
//! requests into the batch as it takes them. Standard input cannot be read twice: a bad line
//! there fails that line (exit 1), and the rest runs.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use haul::input::{InputEntry, InputParser, LineError};
use haul::{Error, Request};

use crate::UsageError;
use crate::get::Shared;

/// How many bad lines are listed when an input file is refused.
const ERRORS_LISTED: usize = 50;

/// The outputs of the command line's URLs and the input file's lines. Positions below
/// `command_line` are the command line's URLs (0-based); the others are input-file line
/// numbers plus `command_line`.
struct Outputs {
    check: haul::OutputConflicts,
    command_line: u64,
}

impl Outputs {
    fn label(&self, position: u64) -> String {
        if position < self.command_line {
            format!("URL {}", position + 1)
        } else {
            format!("line {}", position - self.command_line)
        }
    }
}

/// The first pass: the command line's requests and every line of the input file checked
/// (warnings for unknown options printed once), and no output claimed by two different URLs;
/// nothing is kept per line but 16 bytes of fingerprints.
pub(crate) fn check_outputs(
    from_command_line: &[Request],
    file: Option<&Path>,
    dir: &Path,
    strict: bool,
    content_disposition: bool,
) -> anyhow::Result<()> {
    let mut outputs = Outputs {
        check: haul::OutputConflicts::new(content_disposition),
        command_line: from_command_line.len() as u64,
    };
    for (index, request) in from_command_line.iter().enumerate() {
        outputs.check.record(request, index as u64);
    }
    let mut errors: Vec<LineError> = Vec::new();
    let mut error_count = 0usize;
    if let Some(path) = file {
        let mut note = |error: LineError, errors: &mut Vec<LineError>| {
            error_count += 1;
            if errors.len() < ERRORS_LISTED {
                errors.push(error);
            }
        };
        read_entries(path, strict, true, |step| match step {
            Err(error) => note(error, &mut errors),
            Ok(entry) => {
                let line = entry.line;
                match entry.to_request(dir) {
                    Ok(request) => outputs
                        .check
                        .record(&request, outputs.command_line + line as u64),
                    Err(error) => note(error, &mut errors),
                }
            }
        })?;
    }
    let conflicts = outputs.check.conflicts();
    if conflicts.is_empty() && error_count == 0 {
        return Ok(());
    }
    // The paths of the few conflicting outputs: from the command line, or read again.
    let mut paths: HashMap<u64, PathBuf> = HashMap::new();
    for (index, request) in from_command_line.iter().enumerate() {
        if let Some(output) = outputs.check.output_of(request) {
            paths.insert(index as u64, output);
        }
    }
    let wanted: std::collections::HashSet<u64> =
        conflicts.iter().map(|(_, later)| *later).collect();
    if let Some(path) = file.filter(|_| !conflicts.is_empty()) {
        read_entries(path, strict, false, |step| {
            if let Ok(entry) = step {
                let position = outputs.command_line + entry.line as u64;
                if wanted.contains(&position)
                    && let Ok(request) = entry.to_request(dir)
                    && let Some(output) = outputs.check.output_of(&request)
                {
                    paths.insert(position, output);
                }
            }
        })?;
    }
    let conflict_message = |first: u64, later: u64| {
        let shown = paths
            .get(&later)
            .map_or_else(|| "an output".to_owned(), |p| format!("`{}`", p.display()));
        format!(
            "{shown} is the output of more than one download ({} and {}, from different URLs)",
            outputs.label(first),
            outputs.label(later)
        )
    };
    let on_command_line = conflicts
        .iter()
        .find(|(_, later)| *later < outputs.command_line);
    if let Some((first, later)) = on_command_line {
        bail!(UsageError(conflict_message(*first, *later)));
    }
    for (first, later) in &conflicts {
        error_count += 1;
        if errors.len() < ERRORS_LISTED {
            errors.push(LineError {
                line: (*later - outputs.command_line) as usize,
                message: conflict_message(*first, *later),
            });
        }
    }
    errors.sort_by_key(|error| error.line);
    let path = file.unwrap_or(Path::new("-"));
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

/// Reads the input file at `path` entry by entry (its warnings printed when `warn`).
fn read_entries(
    path: &Path,
    strict: bool,
    warn: bool,
    mut each: impl FnMut(Result<InputEntry, LineError>),
) -> anyhow::Result<()> {
    let failed = |e: std::io::Error| {
        UsageError(format!(
            "failed to read input file `{}`: {e}",
            path.display()
        ))
    };
    let opened = std::fs::File::open(path).map_err(failed)?;
    let mut parser = InputParser::new(strict);
    for (index, line) in std::io::BufReader::new(opened).lines().enumerate() {
        let line = line.map_err(failed)?;
        let step = parser.line(index + 1, &line);
        if let Some(warning) = step.warning.filter(|_| warn) {
            eprintln!("warning: {}: {warning}", path.display());
        }
        if let Some(error) = step.error {
            each(Err(error));
        }
        if let Some(entry) = step.entry {
            each(Ok(entry));
        }
    }
    if let Some(entry) = parser.finish() {
        each(Ok(entry));
    }
    Ok(())
}

/// The requests of an input file (or `-`, standard input), read line by line on a thread of
/// their own and handed over through a bounded channel: the reading waits while the batch is
/// full. A bad line of standard input becomes a failed position of the batch.
pub(crate) fn input_stream(
    path: PathBuf,
    shared: Arc<Shared>,
    strict: bool,
) -> impl futures_util::Stream<Item = Result<Request, Error>> {
    // Requests go over in chunks: one wake-up of the batch per chunk instead of one per line
    // (on a fast local server that was two futex calls per file). At most 4 chunks wait.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Vec<Result<Request, Error>>>(4);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let source: Box<dyn std::io::Read + Send> = if path == Path::new("-") {
            Box::new(std::io::stdin())
        } else {
            match std::fs::File::open(&path) {
                Ok(file) => Box::new(file),
                Err(error) => {
                    let _ = sender.blocking_send(vec![Err(Error::Config(format!(
                        "failed to read `{}`: {error}",
                        path.display()
                    )))]);
                    return;
                }
            }
        };
        let mut reader = std::io::BufReader::new(source);
        let stdin = path == Path::new("-");
        let mut parser = InputParser::new(strict);
        let mut chunk: Vec<Result<Request, Error>> = Vec::with_capacity(CHUNK);
        // A chunk goes when it is full, and whenever the reader has nothing more buffered (the
        // next read may wait: a URL piped in slowly must not wait for 63 more).
        let mut send = |item: Result<Request, Error>, more_buffered: bool| {
            chunk.push(item);
            if chunk.len() >= CHUNK || !more_buffered {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                return sender.blocking_send(full).is_ok();
            }
            true
        };
        let convert = |entry: InputEntry| -> Vec<Result<Request, Error>> {
            match entry.to_request(&shared.dir) {
                // A line naming a Metalink stands for the files it lists (fetched here, on
                // this reading thread, so the list is still read as the batch takes it).
                Ok(request) if haul::metalink::is_metalink_name(request.url().path()) => {
                    shared.metalink_line(&runtime, &request, entry.line)
                }
                Ok(request) => shared.finish(request).into_iter().collect(),
                Err(error) => vec![Err(Error::Config(error.to_string()))],
            }
        };
        let mut line = String::new();
        let mut number = 0;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => number += 1,
            }
            let text = line.strip_suffix('\n').unwrap_or(&line);
            let text = text.strip_suffix('\r').unwrap_or(text);
            let step = parser.line(number, text);
            let more = !reader.buffer().is_empty();
            if let (true, Some(warning)) = (stdin, &step.warning) {
                eprintln!("warning: standard input: {warning}");
            }
            if let (true, Some(error)) = (stdin, step.error)
                && !send(Err(Error::Config(error.to_string())), more)
            {
                return;
            }
            for item in step.entry.map(convert).unwrap_or_default() {
                if !send(item, more) {
                    return;
                }
            }
        }
        for item in parser.finish().map(convert).unwrap_or_default() {
            if !send(item, false) {
                return;
            }
        }
        if !chunk.is_empty() {
            let _ = sender.blocking_send(chunk);
        }
    });
    tokio_stream_from(receiver)
}

/// Requests per chunk sent from the input file's reader to the batch.
const CHUNK: usize = 64;

/// A `Stream` of a channel's items.
fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<Vec<T>>,
) -> impl futures_util::Stream<Item = T> {
    let mut pending = Vec::new().into_iter();
    futures_util::stream::poll_fn(move |cx| {
        loop {
            if let Some(item) = pending.next() {
                return std::task::Poll::Ready(Some(item));
            }
            match receiver.poll_recv(cx) {
                std::task::Poll::Ready(Some(chunk)) => pending = chunk.into_iter(),
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
    })
}
