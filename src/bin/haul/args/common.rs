//! The options every downloading subcommand shares, and their value types.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::{parse_duration, parse_rate, parse_size};

/// Options every subcommand that downloads shares (`get`, `sync`, `check`, `daemon`):
/// concurrency, networking, output.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// How many files download at once.
    #[arg(short = 'j', long, alias = "max-concurrent-downloads", value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: u32,

    /// How many connections one host gets at once, across all files.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub per_host: u32,

    /// Connections per file, opened at once, when the server supports ranges and the file is at
    /// least two splits long. Extra connections count against --per-host. Without -x a file
    /// starts on one connection and adds one at a time (up to 4) while each raises its rate.
    #[arg(short = 'x', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: Option<u32>,

    /// Smallest piece a file is split into with -x (K, M, G are 1024-based: 8M = 8 MiB).
    /// Without -x the ramp may cut pieces down to 2 MiB: it keeps a connection only when it
    /// raises the rate.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_size)]
    pub min_split_size: u64,

    /// Print nothing but errors.
    #[arg(short = 'q', long, overrides_with = "no_quiet")]
    pub quiet: bool,

    /// Undo --quiet (from the configuration file).
    #[arg(long, overrides_with = "quiet")]
    pub no_quiet: bool,

    /// Write newline-delimited JSON events to stdout (schema in the README).
    #[arg(long, overrides_with = "no_json")]
    pub json: bool,

    /// Undo --json (from the configuration file).
    #[arg(long, overrides_with = "json")]
    pub no_json: bool,

    /// How progress is shown: bars on a terminal, plain lines otherwise (auto), or none (the
    /// closing summary and the failures are still printed; -q hides them too).
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Retries of a failed attempt (connection errors, cut bodies, 408/429/5xx); every retry
    /// resumes from the bytes already written.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// Longest wait before a retry, the server's Retry-After included (e.g. 60s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub max_retry_wait: Duration,

    /// Longest wait for a connection.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Abort an attempt that receives no data for this long, and resume with a new one.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// Drop an attempt whose body arrives slower than RATE bytes per second over a whole
    /// --speed-time, and resume on a new connection (0 turns it off). A drop for slowness does
    /// not reset the retry count, so a server that trickles forever ends in a failure.
    #[arg(long, value_name = "RATE", default_value = "1K", value_parser = parse_rate)]
    pub lowest_speed_limit: u64,

    /// How long the speed is measured for --lowest-speed-limit (network time only: waiting for
    /// --limit-rate or the disk does not count).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub speed_time: Duration,

    /// How often the resume state of a running download is made durable (data synced first):
    /// a crash loses at most this much work.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,

    /// What a finished file survives. full: a power loss too (data synced before a file gets
    /// its final name; small files share flushes). relaxed: no syncs, like curl and wget; a
    /// crash of haul still leaves every final file complete, a power loss may not.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = DurabilityArg::Full)]
    pub durability: DurabilityArg,

    /// Also trust the certificate authorities in this PEM file (on top of the system's).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Do not verify TLS certificates at all (prints a warning; anyone on the path can then
    /// read and change the downloads).
    #[arg(short = 'k', long, overrides_with = "no_insecure")]
    pub insecure: bool,

    /// Verify TLS certificates (undo --insecure from the configuration file).
    #[arg(long, overrides_with = "insecure")]
    pub no_insecure: bool,

    /// Present this client certificate (PEM) to servers that ask for one (with --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// Send every request through this proxy: http://, https://, socks5:// or socks5h://
    /// (credentials in the URL). Default: HTTP_PROXY, HTTPS_PROXY, ALL_PROXY.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,

    /// Hosts reached without a proxy: comma-separated names (covering subdomains), IP
    /// addresses, A.B.C.D/N networks, or `*`. Default: NO_PROXY.
    #[arg(long, value_name = "LIST")]
    pub no_proxy: Option<String>,

    /// Basic authentication for the requests' own hosts: USER[:PASSWORD] (asked for, without
    /// echo, when missing and on a terminal). Never sent to another host after a redirect.
    #[arg(short = 'u', long, value_name = "USER[:PASSWORD]")]
    pub user: Option<String>,

    /// Read credentials per host from ~/.netrc (the default, as in wget and aria2).
    #[arg(long, overrides_with = "no_netrc")]
    pub netrc: bool,

    /// Do not read ~/.netrc.
    #[arg(long, overrides_with = "netrc")]
    pub no_netrc: bool,

    /// Read credentials per host from this netrc file instead of ~/.netrc.
    #[arg(long, value_name = "FILE")]
    pub netrc_file: Option<PathBuf>,

    /// Send the cookies of this Netscape cookie file (as browsers' export tools, curl, wget
    /// and aria2 write them).
    #[arg(long, value_name = "FILE")]
    pub load_cookies: Option<PathBuf>,

    /// Write the cookies (loaded and received) to this Netscape cookie file at the end.
    #[arg(long, value_name = "FILE")]
    pub save_cookies: Option<PathBuf>,

    /// Keep no cookies at all. By default the cookies servers set are kept for the run (in
    /// memory, as wget does), so a login redirect's session cookie reaches the file.
    #[arg(long)]
    pub no_cookies: bool,

    /// Connect over IPv4 only.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Connect over IPv6 only.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Speak HTTP/1.1 only, never HTTP/2: then -x counts TCP connections (a CDN's
    /// per-connection rate limit applies to each).
    #[arg(long = "http1.1", overrides_with = "no_http1_1")]
    pub http1_1: bool,

    /// Allow HTTP/2 (undo --http1.1 from the configuration file).
    #[arg(long = "no-http1.1", overrides_with = "http1_1")]
    pub no_http1_1: bool,

    /// How many redirects one request may follow (only to http/https; a loop is an error).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_redirects: usize,

    /// Limit the whole batch to RATE bytes per second, shared by all transfers (e.g. 500K,
    /// 10M; 1024-based; 0 or off: no limit); or a timetable in local time, switched while the
    /// run goes on: "08:00,512K 19:00,off" (rclone's --bwlimit).
    #[arg(long, alias = "max-overall-download-limit", value_name = "RATE|SCHEDULE", value_parser = crate::schedule::parse_schedule)]
    pub limit_rate: Option<crate::schedule::RateSchedule>,

    /// Limit each file to RATE bytes per second (all its connections together), within
    /// --limit-rate (aria2's --max-download-limit; 0: no limit).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub max_download_limit: Option<u64>,

    /// Write a timestamped line per event to FILE (appended), for unattended runs.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Write the newline-delimited JSON events to FILE (while the terminal shows bars).
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<PathBuf>,

    /// Stop the whole run after DURATION, like SIGTERM: state saved, summary written, exit 143.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_time: Option<Duration>,

    /// Refuse files larger than SIZE (announced, or as they arrive: a body that never ends is
    /// stopped); nothing gets a final name.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_filesize: Option<u64>,

    /// Do not verify files against the digests servers announce (Repr-Digest, Content-Digest,
    /// Digest, x-amz-checksum-sha256, x-goog-hash).
    #[arg(long, overrides_with = "server_digest")]
    pub no_server_digest: bool,

    /// Verify files against the digests servers announce (the default).
    #[arg(long, overrides_with = "no_server_digest")]
    pub server_digest: bool,

    /// The largest directory listing, manifest or checksum file read.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub max_document_size: u64,

    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,

    /// The User-Agent header.
    #[arg(long, value_name = "TEXT")]
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    Auto,
    Bars,
    Lines,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnConflictArg {
    Fail,
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    Full,
    Relaxed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnExistsArg {
    Skip,
    Overwrite,
    Rename,
    Error,
}
