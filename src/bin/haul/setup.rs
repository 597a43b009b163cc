//! The downloader as the command line configures it: limits, durability, names, the ways to
//! reach servers (proxies, credentials, certificates, cookies, headers) and the rate schedule.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use haul::{Downloader, DownloaderBuilder, Durability, OnExists};

use crate::args::{CommonArgs, DurabilityArg, GetArgs, OnExistsArg};
use crate::schedule;
use crate::{UsageError, display, render};

pub(crate) fn build_downloader(args: &GetArgs) -> anyhow::Result<Downloader> {
    downloader_builder(&args.common)?
        .on_exists(match args.on_exists {
            OnExistsArg::Skip => OnExists::Skip,
            OnExistsArg::Overwrite => OnExists::Overwrite,
            OnExistsArg::Rename => OnExists::Rename,
            OnExistsArg::Error => OnExists::Error,
        })
        .content_disposition(args.content_disposition)
        .remote_time(!args.no_remote_time)
        .timestamping(args.timestamping)
        .check_existing(args.check_existing)
        .metalink_headers(!args.no_metalink_headers)
        .build()
        .map(warn_if_jobs_capped)
        .inspect(|downloader| follow_rate_schedule(downloader, &args.common))
        .map_err(|e| UsageError(e.to_string()).into())
}

/// Follows a `--limit-rate` timetable for the rest of the run (nothing for a plain limit).
pub(crate) fn follow_rate_schedule(downloader: &Downloader, common: &CommonArgs) {
    if let Some(schedule @ schedule::RateSchedule::Timetable(_)) = common.limit_rate.clone() {
        let quiet = matches!(display(common), render::Display::ErrorsOnly);
        tokio::spawn(schedule.follow(downloader.clone(), quiet));
    }
}

/// Says once that `-j` was lowered to fit the open-file limit.
pub(crate) fn warn_if_jobs_capped(downloader: Downloader) -> Downloader {
    if let Some((asked, used, limit)) = downloader.jobs_capped() {
        eprintln!(
            "warning: -j {asked} lowered to {used} to fit the open-file limit ({limit}; raise it \
             with `ulimit -n`)"
        );
    }
    downloader
}

/// A downloader builder with the options `get` and `sync` share.
pub(crate) fn downloader_builder(common: &CommonArgs) -> anyhow::Result<DownloaderBuilder> {
    let mut builder = Downloader::builder()
        .jobs(common.jobs as usize)
        .per_host(common.per_host as usize)
        .min_split_size(common.min_split_size)
        .retries(common.retries)
        .max_retry_wait(common.max_retry_wait)
        .connect_timeout(common.connect_timeout)
        .stall_timeout(common.stall_timeout)
        .lowest_speed_limit(common.lowest_speed_limit, common.speed_time)
        .max_document_size(common.max_document_size)
        .server_digests(!common.no_server_digest)
        .checkpoint_interval(common.checkpoint_interval)
        .durability(match common.durability {
            DurabilityArg::Full => Durability::Full,
            DurabilityArg::Relaxed => Durability::Relaxed,
        })
        .max_redirects(common.max_redirects);
    if let Some(connections) = common.connections {
        builder = builder.connections(connections as usize);
    }
    if let Some(path) = &common.ca_cert {
        let pem = std::fs::read(path)
            .with_context(|| format!("failed to read CA certificate `{}`", path.display()))
            .map_err(|e| UsageError(format!("{e:#}")))?;
        builder = builder.ca_certificates_pem(pem);
    }
    builder = reach(builder, common)?;
    if common.insecure {
        eprintln!(
            "warning: --insecure: TLS certificates are not verified; anyone on the path can \
             read and change these downloads"
        );
        builder = builder.danger_accept_invalid_certificates(true);
    }
    if let Some(limit) = common.max_filesize {
        builder = builder.max_file_size(limit);
    }
    if let Some(schedule::RateSchedule::Fixed(Some(rate))) = common.limit_rate {
        builder = builder.limit_rate(rate);
    }
    if let Some(agent) = &common.user_agent {
        builder = builder.user_agent(agent.clone());
    }
    for header in &common.headers {
        let (name, value) = split_header(header)?;
        builder = builder.header(name, value);
    }
    Ok(builder)
}

/// Proxies, credentials, cookies, client certificates, address family and protocol.
fn reach(mut builder: DownloaderBuilder, common: &CommonArgs) -> anyhow::Result<DownloaderBuilder> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path)
            .map_err(|e| UsageError(format!("failed to read {what} `{}`: {e}", path.display())))
    };
    if let Some(proxy) = &common.proxy {
        builder = builder.proxy(proxy);
    }
    if let Some(list) = &common.no_proxy {
        builder = builder.no_proxy(list);
    }
    if let Some(user) = &common.user {
        let (name, password) = match user.split_once(':') {
            Some((name, password)) => (name.to_owned(), password.to_owned()),
            None => (user.clone(), prompt_password(user)?),
        };
        builder = builder.basic_auth(&name, &password);
    }
    let netrc = match &common.netrc_file {
        Some(path) => Some((path.clone(), true)),
        None if !common.no_netrc => {
            std::env::var_os("HOME").map(|home| (Path::new(&home).join(".netrc"), false))
        }
        None => None,
    };
    if let Some((path, named)) = netrc {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let parsed = haul::Netrc::parse(&text)
                    .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
                builder = builder.netrc(parsed);
            }
            // The default ~/.netrc is optional: missing or unreadable (a $HOME that is not
            // ours), it is no error; one named with --netrc-file is.
            Err(_) if !named => {}
            Err(error) => bail!(UsageError(format!(
                "failed to read netrc file `{}`: {error}",
                path.display()
            ))),
        }
    }
    if !common.no_cookies {
        // Kept for the run by default; loaded from and saved to files when asked.
        let jar = match &common.load_cookies {
            Some(path) => {
                let text = String::from_utf8_lossy(&read(path, "cookie file")?).into_owned();
                haul::CookieJar::from_netscape(&text).map_err(|errors| {
                    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    UsageError(format!("{}: {}", path.display(), lines.join("; ")))
                })?
            }
            None => haul::CookieJar::new(),
        };
        let jar = Arc::new(jar);
        COOKIES.with_jar(Arc::clone(&jar), common.save_cookies.clone());
        builder = builder.cookie_jar(jar);
    }
    if let (Some(cert), Some(key)) = (&common.cert, &common.key) {
        builder = builder.client_certificate_pem(read(cert, "certificate")?, read(key, "key")?);
    }
    if common.ipv4 {
        builder = builder.ip_version(haul::IpVersion::V4);
    } else if common.ipv6 {
        builder = builder.ip_version(haul::IpVersion::V6);
    }
    Ok(builder.http1_only(common.http1_1))
}

/// Where the cookies go at the end of the run (`--save-cookies`).
pub(crate) struct CookieSaving(std::sync::Mutex<Option<(Arc<haul::CookieJar>, PathBuf)>>);

pub(crate) static COOKIES: CookieSaving = CookieSaving(std::sync::Mutex::new(None));

impl CookieSaving {
    fn with_jar(&self, jar: Arc<haul::CookieJar>, path: Option<PathBuf>) {
        if let (Some(path), Ok(mut slot)) = (path, self.0.lock()) {
            *slot = Some((jar, path));
        }
    }

    /// Writes the jar, if `--save-cookies` asked for it.
    pub(crate) fn save(&self) -> anyhow::Result<()> {
        let Some((jar, path)) = self.0.lock().ok().and_then(|mut slot| slot.take()) else {
            return Ok(());
        };
        std::fs::write(&path, jar.to_netscape())
            .with_context(|| format!("failed to write cookies to `{}`", path.display()))
    }
}

/// Asks for `user`'s password on the terminal, without echo; refuses when there is no
/// terminal to ask on (a script must give USER:PASSWORD, or use a netrc file).
fn prompt_password(user: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, Write};
    let tty = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            UsageError(format!(
                "--user {user}: no password, and no terminal to ask for it (give USER:PASSWORD \
                 or use --netrc-file)"
            ))
        })?;
    let saved = rustix::termios::tcgetattr(&tty).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &quiet)
        .map_err(std::io::Error::from)?;
    let mut writer = &tty;
    let _ = write!(writer, "Password for {user}: ");
    let _ = writer.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &saved);
    let _ = writeln!(writer);
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

fn split_header(header: &str) -> Result<(&str, &str), UsageError> {
    header
        .split_once(':')
        .map(|(name, value)| (name.trim(), value.trim()))
        .ok_or_else(|| UsageError(format!("header `{header}` is not `Name: value`")))
}
