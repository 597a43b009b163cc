//! Command-line arguments (clap derive) and the small value parsers they need.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod common;

pub use common::{CommonArgs, DurabilityArg, OnConflictArg, OnExistsArg, ProgressMode};

#[derive(Debug, Parser)]
#[command(
    name = "haul",
    version,
    about = "A streaming, resumable, verifying download manager",
    // An option given twice keeps its last value: the command line overrides the config file.
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Read options from FILE instead of $HAUL_CONFIG or $XDG_CONFIG_HOME/haul/config (one
    /// option per line as on the command line, `#` comments).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Ignore the configuration file.
    #[arg(long, global = true)]
    pub no_config: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download URLs (from the command line and/or an input file) into a directory.
    #[command(after_help = GET_EXAMPLES)]
    Get(GetArgs),
    /// Mirror a manifest or an HTTP directory listing into DIR, incrementally.
    #[command(after_help = SYNC_EXAMPLES)]
    Sync(SyncArgs),
    /// Check a directory against its source, a checksum file, or what the last sync
    /// remembered: re-hash every file, report the missing, extra and corrupt; download
    /// nothing.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(CheckArgs),
    /// Run as a service: a download queue driven over aria2's JSON-RPC (HTTP and WebSocket on
    /// /jsonrpc), so AriaNg, aria2p and other aria2 front-ends work with it.
    #[command(after_help = DAEMON_EXAMPLES)]
    Daemon(DaemonArgs),
    /// Print a shell completion script: `haul completions bash > /etc/bash_completion.d/haul`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const SYNC_EXAMPLES: &str = "\
Examples:
  haul sync manifest.txt mirror/
  haul sync --recursive --delete https://example.org/pub/ mirror/
  haul sync --recursive --include '*.iso' --checksums SHA256SUMS https://example.org/pub/ isos/
  haul sync --recursive --shard 2/8 https://example.org/pub/ mirror/   # machine 2 of 8
  haul sync --dry-run --delete manifest.txt mirror/

A file is fetched again only when it is new or changed (size, checksum, or the server's answer
to a conditional request with the validators remembered in DIR/.haul-sync.json). Changed files
replace the old copy atomically once verified. --shard K/N keeps the paths whose FNV-1a 64-bit
hash modulo N is K (0 <= K < N).";

const DAEMON_EXAMPLES: &str = "\
Examples:
  haul daemon -d ~/Downloads                          # 127.0.0.1:6800, like aria2c --enable-rpc
  haul daemon -d /srv/dl --rpc-secret S3CRET --save-session /srv/dl/.session
  haul daemon -d /srv/dl --rpc-secret S3CRET --rpc-listen-all --rpc-allow-origin-all

Every download lands beneath -d: a call's dir option is taken below it and may not leave it.
Without --rpc-secret the daemon listens on loopback only. With --save-session, the unfinished
downloads are written on every change and read back at the next start (resumed from their
.part files). SIGTERM saves and exits with 143.";

const CHECK_EXAMPLES: &str = "\
Examples:
  haul check --checksums SHA256SUMS isos/          # every listed file re-hashed
  haul check mirror/                               # against what the last sync remembered
  haul check -r https://example.org/pub/ mirror/   # against the listing's names and sizes
  haul check manifest.txt mirror/                  # against a manifest (size=, checksum=)

Without a checksum, a file is checked by its size, and by the digest the last sync remembered
when it learned one (sync --verify-local remembers every file's). Exit codes: 0 nothing
differs; 1 a file is missing or extra; 3 a file is corrupt; 2 usage error.";

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The download root: every download lands beneath it (aria2's --dir).
    #[arg(short = 'd', long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,

    /// The port of the RPC endpoint.
    #[arg(long, value_name = "PORT", default_value_t = 6800)]
    pub rpc_listen_port: u16,

    /// Listen on every interface, not only loopback (needs --rpc-secret).
    #[arg(long)]
    pub rpc_listen_all: bool,

    /// The secret every call must carry (`token:SECRET` as its first parameter). Put it in the
    /// configuration file (`rpc-secret = …`) to keep it out of the process list.
    #[arg(long, value_name = "TOKEN")]
    pub rpc_secret: Option<String>,

    /// Let any web page's scripts call the RPC (CORS `*`): what AriaNg served from elsewhere
    /// needs. Prefer --rpc-allow-origin.
    #[arg(long)]
    pub rpc_allow_origin_all: bool,

    /// Let scripts from this origin (`https://ariang.example`, as browsers send it) call the
    /// RPC; repeatable.
    #[arg(long, value_name = "ORIGIN")]
    pub rpc_allow_origin: Vec<String>,

    /// The largest request body or WebSocket message (K, M: 1024-based).
    #[arg(long, value_name = "SIZE", default_value = "2M", value_parser = parse_size)]
    pub rpc_max_request_size: u64,

    /// Keep the unfinished downloads in FILE (aria2's input-file format), written on every
    /// change and at exit, and read back at start when --input-file is not given.
    #[arg(long, value_name = "FILE")]
    pub save_session: Option<PathBuf>,

    /// Downloads to queue at start (an input file or a saved session).
    #[arg(short = 'i', long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,

    /// How many stopped downloads' results are kept for tellStopped.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_download_result: usize,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// [SOURCE] DIR: the source (a manifest or, with -r, a listing URL, as for sync), then
    /// the directory; or only the directory.
    #[arg(value_name = "[SOURCE] DIR", num_args = 1..=2, required = true)]
    pub paths: Vec<String>,

    /// SOURCE is a directory listing to crawl.
    #[arg(short = 'r', long)]
    pub recursive: bool,

    /// Check against a checksum file (a path or an http(s) URL), alone or with SOURCE.
    #[arg(long, value_name = "FILE|URL")]
    pub checksums: Option<String>,

    /// Only files matching GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Not files matching GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Only shard K of N, as for sync.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,

    /// Also list the files that are fine.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// A manifest (input-file format, with optional size= and checksum=; a path, `-`, or an
    /// http(s) URL), or with --recursive a directory listing URL.
    #[arg(value_name = "SOURCE")]
    pub source: String,

    /// The local mirror directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// SOURCE is a directory listing (nginx/Apache autoindex, nginx JSON, an S3 bucket
    /// listing): crawl it, staying on its host and below its path.
    #[arg(short = 'r', long, overrides_with = "no_recursive")]
    pub recursive: bool,

    /// SOURCE is a manifest (undo --recursive from the configuration file).
    #[arg(long, overrides_with = "recursive")]
    pub no_recursive: bool,

    /// How many levels of subdirectories to crawl below SOURCE.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_depth: usize,

    /// Read at most N listing pages; reaching it is an error, and nothing is deleted.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_listings: usize,

    /// List at most N files; reaching it is an error, and nothing is deleted.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub max_files: usize,

    /// Only files matching GLOB (repeatable; `*`, `?`, `**`; without `/` it matches the name).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Skip files matching GLOB (repeatable; wins over --include).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Delete regular files in DIR that the source no longer has (never symlinks, never
    /// outside DIR; nothing when the listing failed, was empty or is incomplete, or when a
    /// download failed).
    #[arg(long, overrides_with = "no_delete")]
    pub delete: bool,

    /// Delete nothing (undo --delete from the configuration file).
    #[arg(long, overrides_with = "delete")]
    pub no_delete: bool,

    /// With --delete: delete nothing when more than N files would go (a truncated listing).
    #[arg(long, value_name = "N")]
    pub max_delete: Option<usize>,

    /// With --delete: delete even when some downloads failed (never when the listing failed,
    /// was empty or is incomplete).
    #[arg(long, overrides_with = "no_delete_on_errors")]
    pub delete_on_errors: bool,

    /// Delete nothing when a download failed (undo --delete-on-errors).
    #[arg(long, overrides_with = "delete_on_errors")]
    pub no_delete_on_errors: bool,

    /// Names that cannot be mirrored as they are, or collide: fail the sync (exit 1), or skip
    /// them with a warning.
    #[arg(long, value_enum, default_value_t = OnConflictArg::Fail)]
    pub on_conflict: OnConflictArg,

    /// Re-hash local files and fetch again any whose digest differs from the one the last sync
    /// remembered (digests are remembered from then on).
    #[arg(long, overrides_with = "no_verify_local")]
    pub verify_local: bool,

    /// Trust local files' size and time (undo --verify-local).
    #[arg(long, overrides_with = "verify_local")]
    pub no_verify_local: bool,

    /// Print the plan (new, update, unchanged, delete, conflict, fail) and change nothing;
    /// every file to fetch is checked with a HEAD, so one that would fail shows as failing.
    #[arg(long, overrides_with = "no_dry_run")]
    pub dry_run: bool,

    /// Change the mirror (undo --dry-run).
    #[arg(long, overrides_with = "dry_run")]
    pub no_dry_run: bool,

    /// Verify against a checksum file (SHA256SUMS, SHA512SUMS, MD5SUMS, SHA1SUMS, or BSD
    /// `SHA256 (name) = HEX` lines; a path or an http(s) URL).
    #[arg(long, value_name = "FILE|URL")]
    pub checksums: Option<String>,

    /// Process only shard K of N (0 <= K < N) of the files, by a stable hash of their path.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

const GET_EXAMPLES: &str = "\
Examples:
  haul get https://example.org/file.iso
  haul get -d downloads -j 16 -i urls.txt
  haul get -o debian.iso --checksum sha-256=<64 hex digits> https://example.org/debian.iso
  haul get -i - < urls.txt
  haul get --spider -i urls.txt                      # check every URL, download nothing
  haul get -i urls.txt --save-failed retry.txt       # then: haul get -i retry.txt

Exit codes: 0 all downloads succeeded (or were already complete); 1 at least one failed;
2 usage or input error (nothing started); 3 a checksum mismatch was among the failures;
130 interrupted by Ctrl-C (SIGINT), 143 by SIGTERM (or --max-runtime), 129 by SIGHUP: rerun
the same command to resume.";

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// URLs to download.
    #[arg(value_name = "URL")]
    pub urls: Vec<String>,

    /// Read URLs from FILE (one per line, `#` comments, indented `out=`/`dir=`/`checksum=`/
    /// `header=` options); `-` reads standard input.
    #[arg(short = 'i', long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,

    /// Directory to save into (wget's -P works too).
    #[arg(
        short = 'd',
        long,
        value_name = "DIR",
        default_value = ".",
        short_alias = 'P'
    )]
    pub dir: PathBuf,

    /// Save the (single) download as NAME, relative to --dir unless absolute; `-` writes it to
    /// standard output (no .part file, so no resume across runs). curl's and wget's -O work too.
    #[arg(short = 'o', long, value_name = "NAME", short_alias = 'O')]
    pub output: Option<PathBuf>,

    /// Check that every URL can be fetched (a HEAD, or a one-byte range) and print its size,
    /// downloading nothing; exit 1 when one cannot (wget's --spider).
    #[arg(long, visible_alias = "spider")]
    pub dry_run: bool,

    /// Download every file of a Metalink (a `.meta4` or `.metalink` path or URL; repeatable):
    /// its mirrors, size and hashes, piece hashes included. A URL argument ending in .meta4
    /// or .metalink is read the same way.
    #[arg(long, value_name = "FILE|URL")]
    pub metalink: Vec<String>,

    /// Ignore the mirrors servers name in `Link: rel=duplicate` headers (RFC 6249).
    #[arg(long)]
    pub no_metalink_headers: bool,

    /// Among a Metalink's mirrors of equal priority, prefer those in these countries (ISO
    /// codes, comma-separated), as aria2's --metalink-location.
    #[arg(long, value_name = "CC[,CC...]")]
    pub metalink_location: Option<String>,

    /// Write the downloads that failed or were cancelled to FILE as an input file that `-i`
    /// reruns (their URLs, mirrors and options); an empty file when none did. (Downloads an
    /// interrupted run never reached are not in it: rerun the same command for those.)
    #[arg(long, value_name = "FILE")]
    pub save_failed: Option<PathBuf>,

    /// Run CMD (with `sh -c`) after each download that completes, with HAUL_STATUS=finished,
    /// HAUL_PATH, HAUL_URL and HAUL_BYTES in its environment; at most 4 at once; its failure
    /// is reported, never fatal (aria2's --on-download-complete).
    #[arg(long, value_name = "CMD")]
    pub on_finished: Option<String>,

    /// Run CMD after each download that fails, with HAUL_STATUS=failed, HAUL_PATH, HAUL_URL
    /// and HAUL_ERROR in its environment (as --on-finished).
    #[arg(long, value_name = "CMD")]
    pub on_failed: Option<String>,

    /// Accepted for wget's and curl's habit: resuming is what haul always does.
    #[arg(short = 'c', long = "continue", hide = true)]
    pub resume: bool,

    /// Another URL of the (single) download's file (repeatable): segments are spread over
    /// all of them, and a failing mirror is dropped.
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,

    /// Expected digest of the (single) download: sha-256=HEX, sha-512=HEX, sha-1=HEX or md5=HEX.
    #[arg(long, value_name = "ALGO=HEX")]
    pub checksum: Option<String>,

    /// Name files after the server's Content-Disposition header when it sends one (made safe,
    /// kept inside --dir; a taken name gets .1, .2, ...).
    #[arg(long, overrides_with = "no_content_disposition")]
    pub content_disposition: bool,

    /// Name files after the URL even when the configuration file says otherwise.
    #[arg(long, overrides_with = "content_disposition")]
    pub no_content_disposition: bool,

    /// Verify against a checksum file (SHA256SUMS, SHA512SUMS, MD5SUMS, SHA1SUMS, or BSD
    /// `SHA256 (name) = HEX` lines; a path or an http(s) URL), matched by output name.
    #[arg(long, value_name = "FILE|URL")]
    pub checksums: Option<String>,

    /// With --checksums, fail every download the checksum file does not list (by default
    /// each is downloaded unverified, with a warning).
    #[arg(long, requires = "checksums")]
    pub checksums_strict: bool,

    /// Compute and report every file's digest (sha-256, sha-512, sha-1, md5) in `finished`
    /// events and the lines, even when nothing is to be verified.
    #[arg(long, value_name = "ALGO", value_parser = parse_algorithm)]
    pub digest: Option<haul::Algorithm>,

    /// Before keeping a file that is already there, ask the server for its length (a HEAD)
    /// and download it again when it differs.
    #[arg(long, overrides_with = "no_check_existing")]
    pub check_existing: bool,

    /// Keep files that are already there without asking (undo --check-existing).
    #[arg(long, overrides_with = "check_existing")]
    pub no_check_existing: bool,

    /// Give files the server's Last-Modified time (the default, as in wget: the time says when
    /// the server's copy changed, and -N relies on it).
    #[arg(long, overrides_with = "no_remote_time")]
    pub remote_time: bool,

    /// Leave files with the time they were downloaded.
    #[arg(long, overrides_with = "remote_time")]
    pub no_remote_time: bool,

    /// Fetch a file that is already there only if the server has a newer one: a conditional
    /// GET with its time and remembered ETag; a 304 transfers nothing (counted as skipped).
    #[arg(short = 'N', long, overrides_with = "no_timestamping")]
    pub timestamping: bool,

    /// Undo -N (from the configuration file).
    #[arg(long, overrides_with = "timestamping")]
    pub no_timestamping: bool,

    /// What to do when the final file already exists: skip it (the default; a rerun transfers
    /// nothing), overwrite it once the new copy is verified, save as NAME.1, NAME.2, ...
    /// (rename), or fail.
    #[arg(long, value_enum, default_value_t = OnExistsArg::Skip)]
    pub on_exists: OnExistsArg,

    /// Refuse a whole input file with an option haul does not know (by default, each is
    /// ignored with a warning, as files written for aria2 carry many).
    #[arg(long)]
    pub strict_input: bool,

    /// Process only shard K of N (0 <= K < N) of the input, by a stable hash of each file's
    /// path below --dir (from the URL or out=), the same as `sync --shard`.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

pub use crate::units::{parse_duration, parse_rate, parse_size};

/// Parses a digest algorithm name: sha-256, sha-512, sha-1, md5.
pub fn parse_algorithm(text: &str) -> Result<haul::Algorithm, String> {
    haul::Algorithm::from_name(text)
        .ok_or_else(|| format!("`{text}` is not one of sha-256, sha-512, sha-1, md5"))
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn sizes_durations_and_rates_never_panic(text in "[0-9a-zA-Z. \\-+]{0,24}") {
            let _ = parse_size(&text);
            let _ = parse_duration(&text);
            if let Ok(rate) = parse_rate(&text) {
                prop_assert!(rate == 0 || parse_size(&text) == Ok(rate));
            }
        }
    }
}
