//! The input-file format (an aria2-compatible subset), parsed into entries without touching
//! the network: one URL line per file (TAB-separated mirrors), then indented `key=value`
//! option lines for that file (`out=`, `dir=`, `checksum=`, `header=`, `size=`); `#` starts a
//! comment line; blank lines are ignored. Every malformed line is reported with its number.

use std::fmt;

use url::Url;

use crate::Checksum;

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
}

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

/// Parses an input file. Returns every entry, or every malformed line when there is any: a
/// file with a mistake runs nothing, so a typo never silently drops a download.
///
/// # Errors
/// The list of malformed lines, in order.
pub fn parse_input(text: &str) -> Result<Vec<InputEntry>, Vec<LineError>> {
    let mut entries: Vec<InputEntry> = Vec::new();
    let mut errors = Vec::new();
    // Whether option lines may follow (false after a bad URL line, to avoid cascades).
    let mut current_ok = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut error = |message: String| errors.push(LineError { line, message });
        if raw.starts_with([' ', '\t']) {
            match (current_ok, entries.last_mut()) {
                (true, Some(entry)) => {
                    if let Err(message) = apply_option(entry, trimmed) {
                        error(message);
                    }
                }
                (false, Some(_)) => {}
                (_, None) => error("an option line comes before any URL".into()),
            }
            continue;
        }
        let mut urls = Vec::new();
        current_ok = true;
        for text in raw.split('\t').map(str::trim).filter(|t| !t.is_empty()) {
            match parse_url(text) {
                Ok(url) => urls.push(url),
                Err(message) => {
                    error(message);
                    current_ok = false;
                }
            }
        }
        entries.push(InputEntry {
            line,
            urls,
            out: None,
            dir: None,
            checksum: None,
            size: None,
            headers: Vec::new(),
            user: None,
            password: None,
        });
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported scheme `{}` in `{text}` (use http or https)",
            url.scheme()
        ));
    }
    Ok(url)
}

fn apply_option(entry: &mut InputEntry, option: &str) -> Result<(), String> {
    let (key, value) = option
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got `{option}`"))?;
    let value = value.trim();
    let once = |present: bool| {
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
        other => return Err(format!("unknown option `{other}`")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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
    fn an_empty_file_has_no_entries() {
        assert_eq!(parse_input("# nothing\n\n").unwrap(), vec![]);
    }
}
