//! The configuration file: options in the command line's own spelling, one per line
//! (`--jobs 16`, `jobs = 16`, `--insecure`, `# comments`), read from `--config FILE`, else
//! `$HAUL_CONFIG`, else `$XDG_CONFIG_HOME/haul/config` (`~/.config/haul/config`), and ignored
//! with `--no-config`. Its options go before the command line's, so the command line wins
//! (every boolean has a `--no-…` form to undo one). A line that names no option of `get`,
//! `sync` or `daemon`, or whose value is not valid, is an error with its line number; an
//! option of only some subcommands is left out of the others.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::UsageError;
use crate::args::Cli;

/// The subcommands the file's options apply to (an option of only some is left out of the
/// others).
const SUBCOMMANDS: &[&str] = &["get", "sync", "daemon"];

/// The file's options, per line: its number and its arguments.
type Lines = Vec<(usize, Vec<String>)>;

/// The command line with the configuration file's options in it, and where they came from.
pub struct Merged {
    /// The arguments to parse.
    pub args: Vec<OsString>,
    /// The file, and its options per line (line number, arguments).
    source: Option<(PathBuf, Lines)>,
    /// Where the file's options were inserted.
    position: usize,
}

impl Merged {
    /// The first line of the file whose options alone make the command line fail, with
    /// clap's reason: a value that does not parse, say. `None` when the file is not to blame.
    pub fn blame(&self, original: &[OsString]) -> Option<String> {
        let (path, lines) = self.source.as_ref()?;
        for (number, tokens) in lines {
            let mut trial = original[..=self.position].to_vec();
            trial.extend(tokens.iter().map(OsString::from));
            trial.extend(original[self.position + 1..].iter().cloned());
            if let Err(error) = <Cli as clap::Parser>::try_parse_from(trial) {
                let text = error.to_string();
                let reason = first_line(&text);
                return Some(format!("{}: line {number}: {reason}", path.display()));
            }
        }
        None
    }
}

/// The arguments with the configuration file's options inserted after the subcommand.
///
/// # Errors
/// An unreadable file (when one was named) or a line naming no option.
pub fn with_config(args: Vec<OsString>) -> Result<Merged, UsageError> {
    let plain = |args| Merged {
        args,
        source: None,
        position: 0,
    };
    let Some(position) = args
        .iter()
        .skip(1)
        .position(|a| SUBCOMMANDS.contains(&&*a.to_string_lossy()))
        .map(|p| p + 1)
    else {
        return Ok(plain(args));
    };
    if args.iter().any(|a| a == "--no-config") {
        return Ok(plain(args));
    }
    let named = named_file(&args);
    let Some(path) = named.clone().or_else(default_file) else {
        return Ok(plain(args));
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        // The default file is optional: missing, or unreadable ($HOME not ours under sudo -u,
        // some CI runners), it is no error. A file named with --config or $HAUL_CONFIG is.
        Err(_) if named.is_none() => return Ok(plain(args)),
        Err(error) => {
            return Err(UsageError(format!(
                "failed to read the configuration file `{}`: {error}",
                path.display()
            )));
        }
    };
    let subcommand = args[position].to_string_lossy().into_owned();
    let lines = parse(&text, &subcommand)
        .map_err(|message| UsageError(format!("{}: {message}", path.display())))?;
    let mut merged = args[..=position].to_vec();
    merged.extend(lines.iter().flat_map(|(_, t)| t.iter()).map(OsString::from));
    merged.extend(args[position + 1..].iter().cloned());
    Ok(Merged {
        args: merged,
        source: Some((path, lines)),
        position,
    })
}

/// `--config FILE` or `--config=FILE` on the command line, else `$HAUL_CONFIG`.
fn named_file(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(value));
        }
    }
    std::env::var_os("HAUL_CONFIG").map(PathBuf::from)
}

fn default_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(base.join("haul").join("config"))
}

/// The file's options as arguments for `subcommand`, per line. Values are checked when the
/// whole command line is parsed (see `Merged::blame`).
fn parse(text: &str, subcommand: &str) -> Result<Lines, String> {
    let mut cli = Cli::command();
    cli.build();
    let find = |name: &str| cli.find_subcommand(name).cloned();
    let Some(this) = find(subcommand) else {
        return Ok(Vec::new());
    };
    let others: Vec<clap::Command> = SUBCOMMANDS
        .iter()
        .filter(|name| **name != subcommand)
        .filter_map(|name| find(name))
        .collect();
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |message: String| format!("line {}: {message}", index + 1);
        let body = line.trim_start_matches("--");
        let (name, value) = match body.split_once(['=', ' ', '\t']) {
            Some((name, value)) => (
                name.trim(),
                Some(value.trim().trim_start_matches('=').trim()),
            ),
            None => (body, None),
        };
        let value = value.filter(|v| !v.is_empty());
        let Some(arg) = this.get_arguments().find(|a| a.get_long() == Some(name)) else {
            if others
                .iter()
                .any(|other| other.get_arguments().any(|a| a.get_long() == Some(name)))
            {
                continue;
            }
            return Err(at(format!("unknown option `{name}`")));
        };
        if ["config", "no-config"].contains(&name) {
            return Err(at(format!(
                "`{name}` cannot be set in the configuration file"
            )));
        }
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let tokens = match (takes_value, value) {
            (true, Some(value)) => vec![format!("--{name}"), value.to_owned()],
            (true, None) => return Err(at(format!("`{name}` needs a value"))),
            (false, None) => vec![format!("--{name}")],
            (false, Some(_)) => return Err(at(format!("`{name}` takes no value"))),
        };
        out.push((index + 1, tokens));
    }
    Ok(out)
}

fn first_line(text: &str) -> &str {
    text.lines()
        .next()
        .unwrap_or(text)
        .trim_start_matches("error: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_arguments_and_bad_lines_are_numbered() {
        let text = "# mine\n--jobs 16\nper-host = 4\ninsecure\n  user-agent   my agent\n\
                    recursive\n";
        let flat =
            |lines: Lines| -> Vec<String> { lines.into_iter().flat_map(|(_, t)| t).collect() };
        assert_eq!(
            flat(parse(text, "get").unwrap()),
            vec![
                "--jobs",
                "16",
                "--per-host",
                "4",
                "--insecure",
                "--user-agent",
                "my agent"
            ]
        );
        let sync = parse(text, "sync").unwrap();
        assert_eq!(sync.last().unwrap(), &(6, vec!["--recursive".to_owned()]));
        assert!(
            parse("\n\nfrobnicate\n", "get")
                .unwrap_err()
                .starts_with("line 3: unknown")
        );
        assert!(
            parse("jobs\n", "get")
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            parse("insecure yes\n", "get")
                .unwrap_err()
                .contains("takes no value")
        );
    }

    #[test]
    fn the_daemon_reads_its_own_options_and_the_others_skip_them() {
        let text = "rpc-secret = s3cret\njobs = 3\nrecursive\n";
        let flat =
            |lines: Lines| -> Vec<String> { lines.into_iter().flat_map(|(_, t)| t).collect() };
        assert_eq!(
            flat(parse(text, "daemon").unwrap()),
            vec!["--rpc-secret", "s3cret", "--jobs", "3"]
        );
        assert_eq!(flat(parse(text, "get").unwrap()), vec!["--jobs", "3"]);
        assert_eq!(
            flat(parse(text, "sync").unwrap()),
            vec!["--jobs", "3", "--recursive"]
        );
    }
}
