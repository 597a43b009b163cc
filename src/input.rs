//! The input-file format (an aria2-compatible subset), parsed into entries without touching
//! the network: one URL line per file (TAB-separated mirrors), then indented `key=value`
//! option lines for that file (`out=`, `dir=`, `checksum=`, `header=`, `size=`); `#` starts a
//! comment line; blank lines are ignored. Every malformed line is reported with its number.

use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

use crate::naming::join_inside;
use crate::{Checksum, Request};

/// One file of an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InputEntry {
    /// The line the entry's URL is on (1-based).
    pub line: usize,
    /// The URL, then its mirrors.
    pub urls: Vec<Url>,
    /// `out=`: the output name, relative to the directory.
    pub out: Option<String>,
    /// `dir=`: a directory, relative to the batch's directory.
    pub dir: Option<String>,
    /// `checksum=`: the expected digest.
    pub checksum: Option<Checksum>,
    /// `size=`: the expected length in bytes.
    pub size: Option<u64>,
    /// `header=`: extra request headers, as `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// `user=` (aria2: `http-user=`): a user name for Basic authentication.
    pub user: Option<String>,
    /// `password=` (aria2: `http-passwd=`): its password.
    pub password: Option<String>,
    /// `max-download-limit=`: this file's own rate limit, bytes per second.
    pub rate_limit: Option<u64>,
    /// `split=` or `max-connection-per-server=`: connections for this file.
    pub connections: Option<usize>,
    /// `gid=`: the download's id in an aria2 (or `haul daemon`) session, 16 hex digits.
    /// Ignored by `haul get`.
    pub gid: Option<String>,
    /// `pause=true`: the download was paused when the session was saved. Ignored by
    /// `haul get`.
    pub paused: bool,
}

impl InputEntry {
    /// The request this entry asks for, saved below `dir` (the batch's directory): `dir=`
    /// and `out=` joined to it (a relative one may not climb out; an absolute `dir=` is the
    /// user's own choice, as in aria2), and every other option applied. Names that come from
    /// the network never get the latitude of an absolute `dir=`.
    ///
    /// # Errors
    /// The entry's line, with what is wrong (an unsafe `out=`, a header that is not valid,
    /// `password=` without `user=`).
    pub fn to_request(&self, dir: &Path) -> Result<Request, LineError> {
        let at_line = |message: String| LineError {
            line: self.line,
            message,
        };
        let failed = |error: crate::Error| at_line(error.to_string());
        let Some(url) = self.urls.first() else {
            return Err(at_line("no URL".into()));
        };
        let dir: PathBuf = match &self.dir {
            Some(own) if Path::new(own).is_absolute() => PathBuf::from(own),
            Some(own) => join_inside(dir, own).map_err(failed)?,
            None => dir.to_path_buf(),
        };
        let mut request = Request::from_url(url.clone())
            .map_err(failed)?
            .into_dir(&dir);
        if let Some(out) = &self.out {
            request = request.to_file(join_inside(&dir, out).map_err(failed)?);
        }
        if let Some(checksum) = &self.checksum {
            request = request.with_checksum(checksum.clone());
        }
        if let Some(size) = self.size {
            request = request.with_size(size);
        }
        if let Some(rate) = self.rate_limit {
            request = request.with_rate_limit(rate);
        }
        if let Some(connections) = self.connections {
            request = request.with_connections(connections);
        }
        for (name, value) in &self.headers {
            request = request.with_header(name, value).map_err(failed)?;
        }
        for mirror in &self.urls[1..] {
            request = request.with_mirror(mirror.as_str()).map_err(failed)?;
        }
        match (&self.user, &self.password) {
            (Some(user), password) => {
                request = request.with_basic_auth(user, password.as_deref().unwrap_or(""));
            }
            (None, Some(_)) => return Err(at_line("password= without user=".into())),
            (None, None) => {}
        }
        Ok(request)
    }
}

/// The lines of an input file that ask for `request` again (what `haul get --save-failed`
/// writes): its URL and mirrors (TAB-separated), then `dir=`, `out=` (absolute directories:
/// the file is the user's own), `checksum=`, `size=`, `header=`, `user=`/`password=`,
/// `max-download-limit=` and `split=` as the request has them. A name the server would have
/// chosen (`Content-Disposition`) is not written: the rerun asks again.
///
/// ```
/// use haul::Request;
///
/// let request = Request::new("https://example.org/a.iso")?
///     .to_file("/data/isos/a.iso")
///     .with_size(1024);
/// let text = haul::input::entry_lines(&request);
/// assert_eq!(text, "https://example.org/a.iso\n  dir=/data/isos\n  out=a.iso\n  size=1024\n");
/// let again = haul::input::parse_input(&text).expect("it reads back");
/// assert_eq!(again[0].to_request("/elsewhere".as_ref()).unwrap().output_path()?, request.output_path()?);
/// # Ok::<(), haul::Error>(())
/// ```
#[must_use]
pub fn entry_lines(request: &Request) -> String {
    use std::fmt::Write as _;
    let mut text = request.url.to_string();
    for mirror in &request.mirrors {
        text.push('\t');
        text.push_str(mirror.as_str());
    }
    text.push('\n');
    let mut option = |key: &str, value: &str| {
        let _ = writeln!(text, "  {key}={value}");
    };
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match &request.destination {
        crate::Destination::Directory(dir) => {
            option("dir", &absolute(dir).to_string_lossy());
        }
        crate::Destination::File(path) => {
            let path = absolute(path);
            if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
                option("dir", &parent.to_string_lossy());
                option("out", &name.to_string_lossy());
            }
        }
        crate::Destination::Below { dir, path } => {
            option("dir", &absolute(dir).to_string_lossy());
            option("out", path);
        }
    }
    if let Some(checksum) = &request.checksum {
        option("checksum", &checksum.to_string());
    }
    if let Some(size) = request.size {
        option("size", &size.to_string());
    }
    for (name, value) in &request.headers {
        if let Ok(value) = value.to_str() {
            option("header", &format!("{name}: {value}"));
        }
    }
    if let Some(auth) = &request.auth {
        option("user", &auth.user);
        option("password", &auth.password);
    }
    if let Some(rate) = request.rate_limit {
        option("max-download-limit", &rate.to_string());
    }
    if let Some(connections) = request.connections {
        option("split", &connections.to_string());
    }
    text
}

/// An input file read leniently: its entries, and a warning for every option haul does not
/// know (ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParsedInput {
    /// The files.
    pub entries: Vec<InputEntry>,
    /// Options that were ignored, with their lines.
    pub warnings: Vec<LineError>,
}

/// The option keys an input file understands, with aria2's names for the same: what the README
/// lists.
pub const KNOWN_KEYS: &[&str] = &[
    "out",
    "dir",
    "checksum",
    "header",
    "size",
    "user",
    "http-user",
    "password",
    "http-passwd",
    "max-download-limit",
    "split",
    "max-connection-per-server",
    "user-agent",
    "referer",
    "gid",
    "pause",
];

/// A malformed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The line number (1-based).
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The lines of a text that were refused, for messages.
pub(crate) fn list_lines(lines: &[LineError]) -> String {
    let shown: Vec<String> = lines.iter().take(50).map(ToString::to_string).collect();
    let mut text = shown.join("; ");
    if lines.len() > shown.len() {
        let more = lines.len() - shown.len();
        text = format!("{text}; ... and {more} more");
    }
    text
}

/// Parses an input file. Returns every entry, or every malformed line when there is any: a
/// file with a mistake runs nothing, so a typo never silently drops a download.
///
/// # Errors
/// The list of malformed lines, in order.
pub fn parse_input(text: &str) -> Result<Vec<InputEntry>, Vec<LineError>> {
    parse(text, true).map(|parsed| parsed.entries)
}

/// Parses an input file, ignoring options haul does not know (each reported once as a
/// warning), as files written for aria2 carry many. Malformed lines are still errors.
///
/// # Errors
/// The list of malformed lines, in order.
pub fn parse_input_lenient(text: &str) -> Result<ParsedInput, Vec<LineError>> {
    parse(text, false)
}

fn parse(text: &str, strict: bool) -> Result<ParsedInput, Vec<LineError>> {
    let mut parser = InputParser::new(strict);
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let step = parser.line(index + 1, raw);
        entries.extend(step.entry);
        errors.extend(step.error);
        warnings.extend(step.warning);
    }
    entries.extend(parser.finish());
    if errors.is_empty() {
        Ok(ParsedInput { entries, warnings })
    } else {
        Err(errors)
    }
}

/// What one line gave.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Step {
    /// An entry completed by this line (the one before a new URL line).
    pub entry: Option<InputEntry>,
    /// The line is malformed.
    pub error: Option<LineError>,
    /// The line names an option haul does not know, ignored (lenient parsing only).
    pub warning: Option<LineError>,
}

/// An input file parsed one line at a time, for files too long to hold (the memory is one
/// entry, whatever the file's length). Feed every line to [`InputParser::line`], then call
/// [`InputParser::finish`] for the last entry. An entry whose own lines had an error is
/// never given out.
#[derive(Debug)]
pub struct InputParser {
    strict: bool,
    current: Option<InputEntry>,
    /// Whether option lines of the current entry are checked (false after a bad URL line,
    /// to avoid a cascade of errors).
    current_ok: bool,
    /// Whether the current entry had an error (then it is never given out).
    current_bad: bool,
}

impl InputParser {
    /// A parser; `strict` makes unknown options errors instead of warnings.
    #[must_use]
    pub fn new(strict: bool) -> Self {
        Self {
            strict,
            current: None,
            current_ok: false,
            current_bad: false,
        }
    }

    /// Takes line `line` (1-based) of the file.
    pub fn line(&mut self, line: usize, raw: &str) -> Step {
        let mut step = Step::default();
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return step;
        }
        let error = |message: String| Some(LineError { line, message });
        if raw.starts_with([' ', '\t']) {
            match (&mut self.current, self.current_ok) {
                (Some(entry), true) => match apply_option(entry, trimmed) {
                    Ok(()) => {}
                    Err(Problem::Unknown(key)) if !self.strict => {
                        step.warning = Some(LineError {
                            line,
                            message: format!("unknown option `{key}` ignored"),
                        });
                    }
                    Err(Problem::Unknown(key)) => {
                        step.error = error(format!("unknown option `{key}`"));
                        self.current_bad = true;
                    }
                    Err(Problem::Bad(message)) => {
                        step.error = error(message);
                        self.current_bad = true;
                    }
                },
                (Some(_), false) => {}
                (None, _) => step.error = error("an option line comes before any URL".into()),
            }
            return step;
        }
        step.entry = self.finish();
        let mut urls = Vec::new();
        self.current_ok = true;
        for text in raw.split('\t').map(str::trim).filter(|t| !t.is_empty()) {
            match parse_url(text) {
                Ok(url) => urls.push(url),
                Err(message) => {
                    if step.error.is_none() {
                        step.error = error(message);
                    }
                    self.current_ok = false;
                    self.current_bad = true;
                }
            }
        }
        self.current = Some(InputEntry {
            line,
            urls,
            out: None,
            dir: None,
            checksum: None,
            size: None,
            headers: Vec::new(),
            user: None,
            password: None,
            rate_limit: None,
            connections: None,
            gid: None,
            paused: false,
        });
        step
    }

    /// The last entry, if it is complete and good.
    pub fn finish(&mut self) -> Option<InputEntry> {
        let entry = self.current.take()?;
        let bad = std::mem::replace(&mut self.current_bad, false);
        self.current_ok = false;
        (!bad && !entry.urls.is_empty()).then_some(entry)
    }
}

/// Why an option line was not taken.
enum Problem {
    /// A key haul does not know.
    Unknown(String),
    /// A known key with a bad value, or given twice.
    Bad(String),
}

impl From<String> for Problem {
    fn from(message: String) -> Self {
        Self::Bad(message)
    }
}

/// A URL as people write them: one without a scheme (`example.org/file`) is taken as
/// `http://example.org/file`, as curl and wget do.
///
/// # Errors
/// What is wrong with it.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = if let Some((scheme, _)) = text.split_once("://") {
        let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid {
            return Err(format!(
                "`{text}` is not a URL: `{scheme}` is not a scheme (write http://… or https://…)"
            ));
        }
        Url::parse(text)
    } else if looks_like_a_host(text) {
        Url::parse(&format!("http://{text}"))
    } else {
        return Err(format!(
            "`{text}` is not a URL: it has no scheme (write http://… or https://…)"
        ));
    }
    .map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported scheme `{}` in `{text}` (use http or https)",
            url.scheme()
        ));
    }
    Ok(url)
}

/// Whether a text without a scheme starts with something that names a host: a dotted name, a
/// `host:port`, `localhost`, or an IP address.
fn looks_like_a_host(text: &str) -> bool {
    let host = text.split(['/', '?', '#']).next().unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    !name.is_empty()
        && !name.contains(char::is_whitespace)
        && (name.contains('.') || name == "localhost" || host != name)
}

fn apply_option(entry: &mut InputEntry, option: &str) -> Result<(), Problem> {
    let (key, value) = option
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got `{option}`"))?;
    let value = value.trim();
    let once = |present: bool| -> Result<(), String> {
        if present {
            Err(format!("`{}` given twice", key.trim()))
        } else {
            Ok(())
        }
    };
    match key.trim() {
        "out" => {
            once(entry.out.is_some())?;
            entry.out = Some(value.to_owned());
        }
        "dir" => {
            once(entry.dir.is_some())?;
            entry.dir = Some(value.to_owned());
        }
        "checksum" => {
            once(entry.checksum.is_some())?;
            entry.checksum = Some(value.parse().map_err(|e: crate::Error| e.to_string())?);
        }
        "size" => {
            once(entry.size.is_some())?;
            entry.size = Some(
                value
                    .parse()
                    .map_err(|_| format!("size `{value}` is not a number of bytes"))?,
            );
        }
        "header" => {
            let (name, header_value) = value
                .split_once(':')
                .ok_or_else(|| format!("header `{value}` is not `Name: value`"))?;
            entry
                .headers
                .push((name.trim().to_owned(), header_value.trim().to_owned()));
        }
        "user" | "http-user" => {
            once(entry.user.is_some())?;
            entry.user = Some(value.to_owned());
        }
        "password" | "http-passwd" => {
            once(entry.password.is_some())?;
            entry.password = Some(value.to_owned());
        }
        "max-download-limit" => {
            once(entry.rate_limit.is_some())?;
            entry.rate_limit = Some(crate::units::parse_rate(value)?);
        }
        "split" | "max-connection-per-server" => {
            let connections: usize = value
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("`{value}` is not a number of connections"))?;
            entry.connections = Some(
                entry
                    .connections
                    .map_or(connections, |c| c.min(connections)),
            );
        }
        "user-agent" => entry
            .headers
            .push(("User-Agent".to_owned(), value.to_owned())),
        "referer" => entry.headers.push(("Referer".to_owned(), value.to_owned())),
        "gid" => {
            once(entry.gid.is_some())?;
            if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("gid `{value}` is not 16 hex digits").into());
            }
            entry.gid = Some(value.to_ascii_lowercase());
        }
        "pause" => {
            entry.paused = match value {
                "true" => true,
                "false" => false,
                _ => return Err(format!("pause `{value}` is not true or false").into()),
            };
        }
        other => return Err(Problem::Unknown(other.to_owned())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn a_session_files_gid_and_pause_are_read_and_checked() {
        let entries = parse_input("http://a/one\n  gid=00000000000000AB\n  pause=true\n").unwrap();
        assert_eq!(entries[0].gid.as_deref(), Some("00000000000000ab"));
        assert!(entries[0].paused);
        let errors = parse_input("http://a/one\n  gid=xyz\n").unwrap_err();
        assert!(errors[0].message.contains("16 hex digits"), "{errors:?}");
    }

    #[test]
    fn urls_options_mirrors_and_comments() {
        let text = format!(
            "# a comment\n\nhttp://a/one\n  out=first.bin\n\tchecksum=sha-256={SHA}\n\
             http://a/two\thttp://b/two\n   header=X-Token: abc\n   dir=sub\n  size=42\n"
        );
        let entries = parse_input(&text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].line, 3);
        assert_eq!(entries[0].out.as_deref(), Some("first.bin"));
        assert_eq!(entries[0].checksum.as_ref().unwrap().hex(), SHA);
        assert_eq!(entries[1].urls.len(), 2);
        assert_eq!(entries[1].urls[1].as_str(), "http://b/two");
        assert_eq!(
            entries[1].headers,
            vec![("X-Token".to_owned(), "abc".to_owned())]
        );
        assert_eq!(entries[1].dir.as_deref(), Some("sub"));
        assert_eq!(entries[1].size, Some(42));
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = "  out=x\nhttp://ok/a\nftp://h/f\nnot a url\nhttp://ok/b\n  colour=red\n  \
                    checksum=md5=00\n  out\nhttp://ok/c\n  size=big\n";
        let errors = parse_input(text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 3, 4, 6, 7, 8, 10], "{errors:?}");
        assert!(
            errors[1]
                .to_string()
                .starts_with("line 3: unsupported scheme")
        );
        assert!(errors[3].message.contains("unknown option `colour`"));
    }

    #[test]
    fn aria2_keys_are_understood_and_unknown_ones_are_warnings_when_lenient() {
        let text = "http://a/f\n  split=4\n  max-download-limit=500K\n  referer=http://a/\n\
                    \x20 user-agent=Agent/1\n  http-user=u\n  http-passwd=p\n  seed-ratio=1.0\n";
        assert!(parse_input(text).is_err(), "strict by default");
        let parsed = parse_input_lenient(text).unwrap();
        let entry = &parsed.entries[0];
        assert_eq!(entry.connections, Some(4));
        assert_eq!(entry.rate_limit, Some(500 << 10));
        assert_eq!(entry.user.as_deref(), Some("u"));
        assert_eq!(entry.headers.len(), 2);
        assert_eq!(parsed.warnings.len(), 1);
        assert_eq!(parsed.warnings[0].line, 8);
        assert!(
            parse_input_lenient("http://a/f\n  split=many\n").is_err(),
            "bad values stay errors"
        );
    }

    #[test]
    fn urls_without_a_scheme_are_taken_as_http_when_they_name_a_host() {
        assert_eq!(
            parse_url("example.org/file").unwrap().as_str(),
            "http://example.org/file"
        );
        assert_eq!(
            parse_url("localhost:8080/f").unwrap().as_str(),
            "http://localhost:8080/f"
        );
        assert!(parse_url("not-a-url").unwrap_err().contains("no scheme"));
    }

    #[test]
    fn an_empty_file_has_no_entries() {
        assert_eq!(parse_input("# nothing\n\n").unwrap(), vec![]);
    }
}
