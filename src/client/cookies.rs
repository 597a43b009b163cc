//! A cookie jar: cookies a server sets (`Set-Cookie`, redirect answers included, as in a login
//! flow) are sent back on later requests to the same site, for the whole downloader. Loaded
//! from and saved to the Netscape cookie file format that browsers' export tools, curl, wget
//! and aria2 use. Cookie values are secrets: they never appear in events or messages.

use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, SET_COOKIE};
use url::Url;

use crate::client::http::parse_http_date;
use crate::input::LineError;

/// One cookie.
#[derive(Clone, PartialEq, Eq)]
struct Cookie {
    /// Lower case, without a leading dot.
    domain: String,
    /// Sent to `domain` only, not to its subdomains.
    host_only: bool,
    path: String,
    secure: bool,
    http_only: bool,
    /// Seconds since the epoch; `None` for a session cookie.
    expires: Option<u64>,
    name: String,
    value: String,
}

/// Cookies shared by every request of a downloader.
#[derive(Default)]
pub struct CookieJar {
    cookies: Mutex<Vec<Cookie>>,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("cookies", &self.lock().len())
            .finish()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl CookieJar {
    /// An empty jar.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Cookie>> {
        self.cookies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads a Netscape cookie file: `domain`, `include subdomains` (`TRUE`/`FALSE`), `path`,
    /// `secure`, `expires` (seconds, 0 for a session cookie), `name`, `value`, TAB-separated;
    /// `#` lines are comments, except the `#HttpOnly_` prefix curl writes.
    ///
    /// # Errors
    /// Every malformed line.
    pub fn from_netscape(text: &str) -> Result<Self, Vec<LineError>> {
        let mut cookies = Vec::new();
        let mut errors = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let (line, http_only) = match raw.strip_prefix("#HttpOnly_") {
                Some(rest) => (rest, true),
                None => (raw, false),
            };
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let parsed = match fields.as_slice() {
                [domain, subdomains, path, secure, expires, name, value] => {
                    expires.trim().parse::<u64>().ok().map(|expires| Cookie {
                        domain: domain.trim_start_matches('.').to_ascii_lowercase(),
                        host_only: !subdomains.eq_ignore_ascii_case("TRUE"),
                        path: (*path).to_owned(),
                        secure: secure.eq_ignore_ascii_case("TRUE"),
                        http_only,
                        expires: (expires != 0).then_some(expires),
                        name: (*name).to_owned(),
                        value: (*value).to_owned(),
                    })
                }
                _ => None,
            };
            match parsed {
                Some(cookie) => cookies.push(cookie),
                None => errors.push(LineError {
                    line: index + 1,
                    message: "expected 7 TAB-separated fields: domain, include subdomains, \
                              path, secure, expires, name, value"
                        .into(),
                }),
            }
        }
        if errors.is_empty() {
            Ok(Self {
                cookies: Mutex::new(cookies),
            })
        } else {
            Err(errors)
        }
    }

    /// The jar in the Netscape format (expired cookies left out).
    #[must_use]
    pub fn to_netscape(&self) -> String {
        let now = now();
        let mut text = String::from("# Netscape HTTP Cookie File\n# Written by haul.\n\n");
        for cookie in self
            .lock()
            .iter()
            .filter(|c| c.expires.is_none_or(|e| e > now))
        {
            let prefix = if cookie.http_only { "#HttpOnly_" } else { "" };
            let domain = if cookie.host_only {
                cookie.domain.clone()
            } else {
                format!(".{}", cookie.domain)
            };
            let flag = |b: bool| if b { "TRUE" } else { "FALSE" };
            let _ = writeln!(
                text,
                "{prefix}{domain}\t{}\t{}\t{}\t{}\t{}\t{}",
                flag(!cookie.host_only),
                cookie.path,
                flag(cookie.secure),
                cookie.expires.unwrap_or(0),
                cookie.name,
                cookie.value
            );
        }
        text
    }

    /// How many cookies are in the jar.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the jar is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Takes the `Set-Cookie` headers of an answer from `url`.
    pub(crate) fn store(&self, url: &Url, headers: &HeaderMap) {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return;
        };
        let mut cookies = self.lock();
        for value in headers.get_all(SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let Some(cookie) = parse_set_cookie(text, &host, url.path()) else {
                continue;
            };
            cookies.retain(|c| {
                !(c.name == cookie.name && c.domain == cookie.domain && c.path == cookie.path)
            });
            if cookie.expires.is_none_or(|expires| expires > now()) {
                cookies.push(cookie);
            }
        }
    }

    /// The `Cookie` header for a request to `url`, if any cookie applies.
    pub(crate) fn header_for(&self, url: &Url) -> Option<String> {
        let host = url.host_str()?.to_ascii_lowercase();
        let path = url.path();
        let secure = url.scheme() == "https";
        let now = now();
        let cookies = self.lock();
        let matching: Vec<String> = cookies
            .iter()
            .filter(|c| {
                let domain_ok = if c.host_only {
                    host == c.domain
                } else {
                    host == c.domain || host.ends_with(&format!(".{}", c.domain))
                };
                let path_ok = path == c.path
                    || (path.starts_with(&c.path)
                        && (c.path.ends_with('/') || path[c.path.len()..].starts_with('/')));
                domain_ok && path_ok && (!c.secure || secure) && c.expires.is_none_or(|e| e > now)
            })
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!matching.is_empty()).then(|| matching.join("; "))
    }
}

/// Parses one `Set-Cookie` value received from `host` for `request_path` (RFC 6265 §5.2); a
/// `Domain` the host does not belong to is refused.
fn parse_set_cookie(text: &str, host: &str, request_path: &str) -> Option<Cookie> {
    let mut parts = text.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let default_path = match request_path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(at) => request_path[..at].to_owned(),
    };
    let mut cookie = Cookie {
        domain: host.to_owned(),
        host_only: true,
        path: default_path,
        secure: false,
        http_only: false,
        expires: None,
        name: name.to_owned(),
        value: value.trim().to_owned(),
    };
    let mut max_age = None;
    for attribute in parts {
        let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
        let val = val.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "domain" if !val.is_empty() => {
                let domain = val.trim_start_matches('.').to_ascii_lowercase();
                if host != domain && !host.ends_with(&format!(".{domain}")) {
                    return None;
                }
                cookie.domain = domain;
                cookie.host_only = false;
            }
            "path" if val.starts_with('/') => val.clone_into(&mut cookie.path),
            "secure" => cookie.secure = true,
            "httponly" => cookie.http_only = true,
            "max-age" => max_age = val.parse::<i64>().ok(),
            "expires" => {
                // Netscape's `Wed, 09-Jun-2021 10:18:14 GMT` as well as the HTTP forms.
                cookie.expires =
                    parse_http_date(val).or_else(|| parse_http_date(&val.replace('-', " ")));
            }
            _ => {}
        }
    }
    if let Some(seconds) = max_age {
        // Max-Age wins over Expires; zero or less deletes the cookie now.
        cookie.expires = Some(match u64::try_from(seconds) {
            Ok(seconds) if seconds > 0 => now().saturating_add(seconds),
            _ => 1,
        });
    }
    Some(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(SET_COOKIE, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn cookies_go_back_to_their_site_and_path_only() {
        let jar = CookieJar::new();
        jar.store(
            &url("https://login.example.org/auth/start"),
            &headers(&[
                "session=abc; Path=/; Domain=example.org; Secure; HttpOnly",
                "step=2",
                "evil=1; Domain=other.org",
            ]),
        );
        assert_eq!(
            jar.header_for(&url("https://files.example.org/x"))
                .as_deref(),
            Some("session=abc")
        );
        assert_eq!(
            jar.header_for(&url("https://login.example.org/auth/next"))
                .as_deref(),
            Some("session=abc; step=2")
        );
        assert_eq!(
            jar.header_for(&url("http://files.example.org/x")),
            None,
            "Secure"
        );
        assert_eq!(jar.header_for(&url("https://other.org/")), None);
        jar.store(
            &url("https://login.example.org/"),
            &headers(&["session=gone; Domain=example.org; Path=/; Max-Age=0"]),
        );
        assert_eq!(jar.header_for(&url("https://files.example.org/x")), None);
    }

    #[test]
    fn the_netscape_format_reads_and_writes_back() {
        let text = "# Netscape HTTP Cookie File\n\
                    .example.org\tTRUE\t/\tFALSE\t0\tsid\tv1\n\
                    #HttpOnly_host.example.org\tFALSE\t/dl\tTRUE\t4102444800\ttok\tv2\n";
        let jar = CookieJar::from_netscape(text).unwrap();
        assert_eq!(jar.len(), 2);
        assert_eq!(
            jar.header_for(&url("http://a.example.org/")).as_deref(),
            Some("sid=v1")
        );
        assert_eq!(
            jar.header_for(&url("https://host.example.org/dl/f"))
                .as_deref(),
            Some("sid=v1; tok=v2")
        );
        let again = CookieJar::from_netscape(&jar.to_netscape()).unwrap();
        assert_eq!(again.to_netscape(), jar.to_netscape());
        let errors = CookieJar::from_netscape("a\tb\n").unwrap_err();
        assert_eq!(errors[0].line, 1);
    }
}
