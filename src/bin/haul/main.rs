//! `haul`: the command-line face of the library. Parses arguments and input files into
//! requests, runs them, renders events, and maps outcomes to exit codes.

mod aftermath;
mod args;
mod check;
// Shared with the library by source, not by its public API.
#[path = "../../civil.rs"]
mod civil;
mod config;
mod daemon;
mod get;
mod hint;
mod input_file;
mod render;
mod schedule;
mod setup;
mod sync;
#[path = "../../units.rs"]
mod units;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use clap::Parser;
use haul::CancellationToken;

use args::{Cli, Command, CommonArgs, ProgressMode};
use haul::bars::ProgressBars;
use render::{Display, Renderer};
use setup::COOKIES;
pub(crate) use setup::{
    build_downloader, downloader_builder, follow_rate_schedule, warn_if_jobs_capped,
};

/// How many runtime threads carry the network: one per download that can run at once, up to
/// the cores (`TOKIO_WORKER_THREADS` decides when set). A single download gains nothing from a
/// second worker and loses much: its connection's task and its body's reader are then woken
/// on different threads for every HTTP/2 frame or read, where one thread runs each in turn
/// over many frames. On 2 cores a 1 GiB HTTPS download took 1.47 s with one worker against
/// 1.80 s with two (curl 1.58 s), 1.22 s against 1.56 s over HTTP/1.1; a batch of independent
/// small files gains from every core (benches/RESULTS.md, twelfth session).
fn runtime_workers(command: &Command) -> usize {
    let asked = workers_asked(std::env::var("TOKIO_WORKER_THREADS").ok().as_deref());
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    asked.unwrap_or_else(|| workers_for(command, cores))
}

/// The count `TOKIO_WORKER_THREADS` asks for: a positive number, else none (tokio itself
/// would panic on a value it cannot read).
fn workers_asked(value: Option<&str>) -> Option<usize> {
    value
        .and_then(|value| value.trim().parse::<usize>().ok())
        .filter(|&workers| workers > 0)
}

/// Downloads that can run at once, up to `cores`.
fn workers_for(command: &Command, cores: usize) -> usize {
    let at_once = match command {
        Command::Get(args) => {
            let jobs = args.common.jobs as usize;
            // Only the command line's URLs, none a Metalink (which may name many files): no
            // more downloads than those.
            let only_these_urls = args.input_file.is_none()
                && args.metalink.is_empty()
                && !args
                    .urls
                    .iter()
                    .any(|url| haul::metalink::is_metalink_name(url));
            if only_these_urls {
                args.urls.len().clamp(1, jobs)
            } else {
                jobs
            }
        }
        _ => cores,
    };
    at_once.clamp(1, cores.max(1))
}

/// Exit codes, documented in the README.
pub(crate) const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
pub(crate) const EXIT_CHECKSUM: u8 = 3;
pub(crate) const EXIT_INTERRUPTED: u8 = 130;
const EXIT_TERMINATED: u8 = 143;
const EXIT_HANGUP: u8 = 129;

/// An error in what the user asked for: reported before anything starts, exit code 2.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// glibc gives each thread that allocates its own malloc arena, and each arena keeps its own
/// freed memory. haul allocates little once a download runs (its write buffers are pooled), so
/// one arena costs no measurable speed and keeps about 2 MiB less resident
/// (`MALLOC_ARENA_MAX=1` took a default 4-connection 1 GiB download from 15.8 to 13.9 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn use_one_malloc_arena() {
    // SAFETY: `mallopt` only sets an allocator parameter; it is called before any thread exists,
    // and a failure (return value 0) leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn use_one_malloc_arena() {}

fn main() -> ExitCode {
    use_one_malloc_arena();
    let original: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let merged = match config::with_config(original.clone()) {
        Ok(merged) => merged,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cli = match Cli::try_parse_from(&merged.args) {
        Ok(cli) => cli,
        Err(error) => {
            if let Some(blame) = error
                .use_stderr()
                .then(|| merged.blame(&original))
                .flatten()
            {
                eprintln!("error: in the configuration file {blame}");
                return ExitCode::from(EXIT_USAGE);
            }
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_workers(&cli.command))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // The command runs as a task on the runtime's workers, not on this thread: `block_on`'s
    // own future is woken across threads (a futex call each way) every time a download ends.
    let outcome = runtime.block_on(async {
        tokio::spawn(run(cli))
            .await
            .unwrap_or_else(|error| Err(anyhow::anyhow!("the command stopped: {error}")))
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            // What the user asked for was wrong: 2; the world failed us (a listing, a disk): 1.
            if error.downcast_ref::<UsageError>().is_some()
                || error
                    .downcast_ref::<haul::Error>()
                    .is_some_and(|e| e.kind() == haul::ErrorKind::InvalidInput)
            {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Get(args) => {
            let code = get::get(args).await;
            COOKIES.save()?;
            code
        }
        Command::Sync(args) => {
            let code = sync::sync(args).await;
            COOKIES.save()?;
            code
        }
        Command::Check(args) => check::check(args).await,
        Command::Daemon(args) => daemon::daemon(args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "haul", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The exit code of a run: an interruption's (130, 143 or 129 by signal), else 3 for a
/// checksum mismatch, 1 for any other failure, 0.
pub(crate) fn exit_code(interrupted: bool, integrity: bool, failed: bool) -> u8 {
    if interrupted {
        interrupted_code()
    } else if integrity {
        EXIT_CHECKSUM
    } else if failed {
        EXIT_FAILED
    } else {
        0
    }
}

/// Fails at once, with one clear line, when files cannot be written below `dir` (read-only,
/// not a directory, no permission): before any request goes out, not once per file.
pub(crate) fn check_writable(dir: &Path) -> anyhow::Result<()> {
    // The nearest directory that exists is the one new files or directories go into.
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    let problem = if existing.is_dir() {
        rustix::fs::access(existing, rustix::fs::Access::WRITE_OK)
            .err()
            .map(|e| std::io::Error::from(e).to_string())
    } else {
        Some("not a directory".to_owned())
    };
    match problem {
        None => Ok(()),
        Some(reason) => bail!(UsageError(format!(
            "cannot write into `{}`: `{}`: {reason} (choose another --dir, or check its \
             permissions and mount)",
            dir.display(),
            existing.display()
        ))),
    }
}

/// Says what an interruption left unfinished, and how to resume.
pub(crate) fn report_interrupted(summary: &render::Summary, total: usize) {
    let count = summary.unfinished;
    eprintln!("interrupted: {count} of {total} downloads unfinished; their .part files are kept.");
    for name in summary.unfinished_names.iter().take(10) {
        eprintln!("  {name}");
    }
    if count > 10 {
        eprintln!("  ... and {} more", count - 10);
    }
    eprintln!("Run the same command again to resume.");
}

/// A renderer for `common`'s output options, and a token that Ctrl-C, SIGTERM and SIGHUP
/// cancel.
pub(crate) fn renderer(common: &CommonArgs) -> anyhow::Result<(Arc<Renderer>, CancellationToken)> {
    let open = |path: &Path| {
        // A log beside the run's other files (`logs/shard-3.log`) needs no directory made
        // beforehand.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                UsageError(format!(
                    "failed to create the directory of `{}`: {e}",
                    path.display()
                ))
            })?;
        }
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| UsageError(format!("failed to open `{}`: {e}", path.display())))
    };
    let outputs = render::Outputs {
        json: common.json,
        json_file: common.json_file.as_deref().map(open).transpose()?,
        log_file: common.log_file.as_deref().map(open).transpose()?,
        credentials_given: common.user.is_some() || common.netrc || common.netrc_file.is_some(),
    };
    let renderer = Arc::new(Renderer::new(display(common), outputs));
    if renderer.shows_progress() {
        // Reads the byte counts at the display's pace; ends with the renderer.
        let ticking = Arc::downgrade(&renderer);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(render::TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                match ticking.upgrade() {
                    Some(renderer) => renderer.tick(),
                    None => return,
                }
            }
        });
    }
    let cancel = CancellationToken::new();
    watch_interrupts(cancel.clone());
    if let Some(limit) = common.max_time {
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            INTERRUPTED_BY.store(EXIT_TERMINATED, std::sync::atomic::Ordering::SeqCst);
            stop.cancel();
            eprintln!("\n--max-time {limit:?} reached: stopping and saving state");
        });
    }
    Ok((renderer, cancel))
}

/// The signal that interrupted the run, as its exit code (0 while none has).
static INTERRUPTED_BY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

pub(crate) fn interrupted_code() -> u8 {
    match INTERRUPTED_BY.load(std::sync::atomic::Ordering::SeqCst) {
        0 => EXIT_INTERRUPTED,
        code => code,
    }
}

/// The first Ctrl-C, SIGTERM (what Kubernetes, Slurm, systemd and `timeout` send) or SIGHUP
/// cancels the batch: transfers save their state and stop, and the run ends with its summary
/// and exit code 130, 143 or 129. A second signal exits at once. State stays consistent either
/// way: it is only written after its data.
fn watch_interrupts(cancel: CancellationToken) {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn next(signals: &mut [(Signal, &'static str, u8); 3]) -> (&'static str, u8) {
        let [(interrupt, a, ac), (terminate, b, bc), (hangup, c, cc)] = signals;
        tokio::select! {
            _ = interrupt.recv() => (*a, *ac),
            _ = terminate.recv() => (*b, *bc),
            _ = hangup.recv() => (*c, *cc),
        }
    }
    tokio::spawn(async move {
        let (Ok(interrupt), Ok(terminate), Ok(hangup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        let mut signals = [
            (interrupt, "interrupt", EXIT_INTERRUPTED),
            (terminate, "SIGTERM", EXIT_TERMINATED),
            (hangup, "SIGHUP", EXIT_HANGUP),
        ];
        let (name, code) = next(&mut signals).await;
        INTERRUPTED_BY.store(code, std::sync::atomic::Ordering::SeqCst);
        cancel.cancel();
        eprintln!("\n{name}: stopping and saving state (a second signal quits at once)");
        let (_, code) = next(&mut signals).await;
        std::process::exit(i32::from(code));
    });
}

pub(crate) fn display(common: &CommonArgs) -> Display {
    let bars = || Display::Bars(Box::new(ProgressBars::new()));
    if common.quiet {
        return Display::ErrorsOnly;
    }
    match common.progress {
        ProgressMode::None => Display::SummaryOnly,
        ProgressMode::Bars => bars(),
        ProgressMode::Auto if std::io::stderr().is_terminal() => bars(),
        ProgressMode::Lines | ProgressMode::Auto => Display::Lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(args: &[&str], cores: usize) -> usize {
        let cli = Cli::try_parse_from(args).expect("valid arguments");
        workers_for(&cli.command, cores)
    }

    #[test]
    fn one_download_runs_on_one_runtime_thread_and_a_batch_on_every_core() {
        assert_eq!(workers(&["haul", "get", "http://h/a.iso"], 8), 1);
        assert_eq!(workers(&["haul", "get", "-x", "8", "http://h/a.iso"], 8), 1);
        assert_eq!(workers(&["haul", "get", "http://h/a", "http://h/b"], 8), 2);
        assert_eq!(
            workers(&["haul", "get", "-j", "1", "http://h/a", "http://h/b"], 8),
            1
        );
        assert_eq!(workers(&["haul", "get", "-i", "urls.txt"], 2), 2);
        assert_eq!(
            workers(&["haul", "get", "-j", "16", "-i", "urls.txt"], 4),
            4
        );
        assert_eq!(workers(&["haul", "get", "-j", "1", "-i", "urls.txt"], 4), 1);
        assert_eq!(workers(&["haul", "daemon"], 2), 2);
        assert_eq!(workers(&["haul", "get", "http://h/a"], 0), 1);
        // A Metalink may name many files.
        assert_eq!(workers(&["haul", "get", "http://h/set.meta4"], 2), 2);
        assert_eq!(workers(&["haul", "get", "--metalink", "set.meta4"], 2), 2);
    }

    #[test]
    fn tokio_worker_threads_decides_only_with_a_positive_count() {
        assert_eq!(workers_asked(Some("3")), Some(3));
        assert_eq!(workers_asked(Some(" 1\n")), Some(1));
        assert_eq!(workers_asked(Some("0")), None);
        assert_eq!(workers_asked(Some("many")), None);
        assert_eq!(workers_asked(None), None);
    }
}
