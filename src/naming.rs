//! Output names: derived from a URL or given by a user, made safe so that a name that came from
//! the network can never leave the destination directory. Also redacts credentials from URLs
//! before they reach an error message or an event.

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;
use url::Url;

use crate::Error;

/// Longest file name accepted, in bytes (the common file-system limit).
const MAX_NAME_BYTES: usize = 255;

/// The file name a URL downloads to: its last path segment, percent-decoded and sanitised;
/// `index.html` when the path is empty or ends with `/`.
///
/// # Errors
/// [`Error::UnsafeName`] when the segment decodes to nothing usable (for example `..`).
pub fn file_name_from_url(url: &Url) -> Result<String, Error> {
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or("");
    if last.is_empty() {
        return Ok("index.html".to_owned());
    }
    let decoded = percent_decode_str(last).decode_utf8_lossy();
    sanitize_file_name(&decoded).ok_or_else(|| Error::UnsafeName {
        name: decoded.into_owned(),
    })
}

/// A URL's last path segment, percent-decoded and otherwise kept exactly (for a mirror, where
/// names are not changed); `Err` with the raw segment when it is empty, not UTF-8, or holds a
/// `/`.
///
/// # Errors
/// The raw segment, when it cannot be a file name.
pub fn file_name_from_url_exact(url: &Url) -> Result<String, String> {
    let last = url
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .unwrap_or("");
    match percent_decode_str(last).decode_utf8() {
        Ok(name) if !name.is_empty() && !name.contains('/') => Ok(name.into_owned()),
        _ => Err(last.to_owned()),
    }
}

/// Makes one file-name component safe: path separators, NUL and control characters become `_`,
/// leading and trailing dots and spaces are trimmed (so `.`/`..` and hidden or Windows-invalid
/// names cannot result), and the name is cut to 255 bytes on a character boundary. Returns `None`
/// when nothing usable is left.
#[must_use]
pub fn sanitize_file_name(name: &str) -> Option<String> {
    let unsafe_char = |c: char| c == '/' || c == '\\' || c.is_control();
    // Most names need no replacing: then no copy is made but the one returned.
    let replaced: std::borrow::Cow<'_, str> = if name.contains(unsafe_char) {
        name.chars()
            .map(|c| if unsafe_char(c) { '_' } else { c })
            .collect::<String>()
            .into()
    } else {
        name.into()
    };
    let trimmed = replaced.trim_matches(|c: char| c == '.' || c.is_whitespace());
    if trimmed.is_empty() || trimmed.chars().all(|c| c == '_') {
        return None;
    }
    let mut end = trimmed.len().min(MAX_NAME_BYTES);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let cut = trimmed[..end].trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    (!cut.is_empty()).then(|| cut.to_owned())
}

/// Joins a user-given relative path (from `-o` or an input file's `out=`) to `dir`, refusing
/// anything that is absolute or climbs out with `..`.
///
/// # Errors
/// [`Error::UnsafeName`] for an absolute path, a `..` component or an empty name.
pub fn join_inside(dir: &Path, relative: &str) -> Result<PathBuf, Error> {
    let unsafe_name = || Error::UnsafeName {
        name: relative.to_owned(),
    };
    let rel = Path::new(relative);
    let mut out = dir.to_path_buf();
    let mut has_name = false;
    for component in rel.components() {
        match component {
            std::path::Component::Normal(part) => {
                let part = part.to_str().ok_or_else(unsafe_name)?;
                if part.contains('\\') || part.chars().any(char::is_control) {
                    return Err(unsafe_name());
                }
                out.push(part);
                has_name = true;
            }
            std::path::Component::CurDir => {}
            _ => return Err(unsafe_name()),
        }
    }
    if has_name {
        Ok(out)
    } else {
        Err(unsafe_name())
    }
}

/// The file name a `Content-Disposition` header suggests (RFC 6266), made safe like a URL
/// name. `filename*` (RFC 8187, `UTF-8''percent-encoded`) wins over `filename`, as the RFC
/// says; `None` when the header names no usable file.
#[must_use]
pub fn content_disposition_name(header: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for parameter in split_parameters(header).into_iter().skip(1) {
        let Some((key, value)) = parameter.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename" => plain = Some(unquote(value.trim())),
            "filename*" => extended = decode_extended(value.trim()),
            _ => {}
        }
    }
    let name = extended.or(plain)?;
    // Only the last path component counts, whichever separator the server used.
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    sanitize_file_name(last)
}

/// Splits on `;` outside quoted strings.
fn split_parameters(header: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in header.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// A token or a quoted-string with its backslash escapes removed.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `UTF-8'lang'percent-encoded` (RFC 8187); other charsets are not decoded.
fn decode_extended(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let charset = parts.next()?;
    let _language = parts.next()?;
    let encoded = parts.next()?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    percent_decode_str(encoded)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// Query parameters that carry a secret in presigned and tokenized URLs (S3, Google Cloud
/// Storage, Azure SAS, OAuth-style tokens), compared without case.
const SECRET_PARAMETERS: &[&str] = &[
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "signature",
    "sig",
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "secret",
];

/// A URL fit for messages, events, logs and state files: the password of `user:password` and
/// the values of secret-carrying query parameters (`X-Amz-Signature`, `sig`, `token`, ...)
/// are replaced with `***`.
#[must_use]
pub fn redact_url(url: &Url) -> String {
    let secret_query = url
        .query_pairs()
        .any(|(key, _)| SECRET_PARAMETERS.contains(&key.to_ascii_lowercase().as_str()));
    if url.password().is_none() && !secret_query {
        return url.as_str().to_owned();
    }
    let mut redacted = url.clone();
    if url.password().is_some() {
        // Only fails for URLs that cannot have credentials, which this one has.
        let _ = redacted.set_password(Some("***"));
    }
    if secret_query {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let hidden = SECRET_PARAMETERS.contains(&key.to_ascii_lowercase().as_str());
                (
                    key.into_owned(),
                    if hidden {
                        "***".to_owned()
                    } else {
                        value.into_owned()
                    },
                )
            })
            .collect();
        redacted.query_pairs_mut().clear().extend_pairs(pairs);
    }
    redacted.into()
}

/// A header value fit for messages: `***` for headers that carry secrets.
#[must_use]
pub fn redact_header(name: &str, value: &str) -> String {
    let secret = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    ]
    .contains(&name.to_ascii_lowercase().as_str())
        || name.to_ascii_lowercase().contains("token")
        || name.to_ascii_lowercase().contains("api-key");
    if secret {
        "***".to_owned()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(url: &str) -> Result<String, Error> {
        file_name_from_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn secrets_in_urls_and_headers_are_redacted() {
        let url = Url::parse(
            "https://u:pw@b.s3.amazonaws.com/k?X-Amz-Credential=AKIA&X-Amz-Signature=abc&x-id=GetObject",
        )
        .unwrap();
        let shown = redact_url(&url);
        assert!(
            !shown.contains("pw") && !shown.contains("abc") && !shown.contains("AKIA"),
            "{shown}"
        );
        assert!(shown.contains("x-id=GetObject"), "{shown}");
        let plain = Url::parse("http://h/f?sort=asc").unwrap();
        assert_eq!(redact_url(&plain), "http://h/f?sort=asc");
        assert_eq!(redact_header("Authorization", "Bearer x"), "***");
        assert_eq!(redact_header("X-Auth-Token", "x"), "***");
        assert_eq!(redact_header("Accept", "*/*"), "*/*");
    }

    #[test]
    fn names_come_from_the_last_decoded_path_segment() {
        let cases = [
            ("http://h/a/b/file.iso", "file.iso"),
            ("http://h/a/my%20file.txt?x=1#frag", "my file.txt"),
            ("http://h/", "index.html"),
            ("http://h", "index.html"),
            ("http://h/dir/", "index.html"),
            ("http://h/a%2Fb", "a_b"),
            ("http://h/..%2F..%2Fetc%2Fpasswd", "_.._etc_passwd"),
            ("http://h/%2e%2e", "index.html"),
            ("http://h/a/%2e%2e%2e", ""),
            ("http://h/%20.%20", ""),
            ("http://h/a%00b", "a_b"),
            ("http://h/evil%5C..%5Cx", "evil_.._x"),
            ("http://h/.hidden", "hidden"),
        ];
        for (url, expected) in cases {
            match name(url) {
                Ok(got) => assert_eq!(got, expected, "{url}"),
                Err(_) => assert!(expected.is_empty(), "{url} should give {expected}"),
            }
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let long = "é".repeat(200);
        let cut = sanitize_file_name(&long).unwrap();
        assert!(cut.len() <= MAX_NAME_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn user_paths_stay_inside_the_directory() {
        let dir = Path::new("/out");
        assert_eq!(
            join_inside(dir, "a/b.txt").unwrap(),
            Path::new("/out/a/b.txt")
        );
        assert_eq!(join_inside(dir, "./b").unwrap(), Path::new("/out/b"));
        for bad in ["../x", "/etc/passwd", "a/../../x", "", ".", "a\\b"] {
            assert!(join_inside(dir, bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn content_disposition_names_are_parsed_and_made_safe() {
        let cases = [
            ("attachment; filename=\"report.pdf\"", Some("report.pdf")),
            ("attachment; filename=plain.txt", Some("plain.txt")),
            (
                "attachment; filename=\"fallback.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt",
                Some("€ rates.txt"),
            ),
            (
                "attachment; filename*=utf-8'en'na%C3%AFve.txt",
                Some("naïve.txt"),
            ),
            ("attachment; filename=\"../../etc/passwd\"", Some("passwd")),
            ("attachment; filename=\"/etc/shadow\"", Some("shadow")),
            ("attachment; filename=\"..\\..\\win.ini\"", Some("win.ini")),
            (
                "attachment; filename=\"a;b \\\"q\\\".txt\"",
                Some("a;b \"q\".txt"),
            ),
            ("attachment; filename=\"..\"", None),
            ("attachment; filename=\"bell\u{7}.txt\"", Some("bell_.txt")),
            ("inline", None),
            ("attachment; filename*=ISO-8859-1''x.txt", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                content_disposition_name(header).as_deref(),
                expected,
                "{header}"
            );
        }
        let long = format!("attachment; filename=\"{}.bin\"", "x".repeat(400));
        assert!(content_disposition_name(&long).unwrap().len() <= MAX_NAME_BYTES);
    }

    #[test]
    fn passwords_never_reach_messages() {
        let url = Url::parse("https://user:secret@h/f").unwrap();
        let shown = redact_url(&url);
        assert!(!shown.contains("secret"));
        assert!(shown.contains("user:***@h"));
        assert_eq!(redact_url(&Url::parse("http://h/f").unwrap()), "http://h/f");
    }
}
