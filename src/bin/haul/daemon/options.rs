//! aria2's per-download options, as front-ends send them, turned into a haul `Request`. Every
//! path stays beneath the daemon's download root: a relative `dir` is taken below it, an
//! absolute one must already be inside it, `..` is refused, and the directories below the root
//! are opened without following symlinks (the same beneath-rule as `haul sync`).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use haul::Request;
use serde_json::Value;

use super::params::RpcError;

/// Options as aria2 takes them: every value a string (front-ends send strings; numbers and
/// booleans are accepted and kept as their text). `header` may be given several times: its
/// values are kept one per line.
pub(crate) type Options = BTreeMap<String, String>;

/// Reads an options object.
pub(crate) fn parse(value: &Value) -> Result<Options, RpcError> {
    let Value::Object(object) = value else {
        return Err(RpcError::invalid("options must be an object"));
    };
    let mut options = Options::new();
    for (key, value) in object {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    _ => Err(RpcError::invalid(format!("option {key}: expected strings"))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join("\n"),
            _ => return Err(RpcError::invalid(format!("option {key}: unexpected value"))),
        };
        options.insert(key.clone(), text);
    }
    Ok(options)
}

/// What `options` ask for one download of `uris` (the first is the URL, the rest mirrors),
/// saved beneath `root`: the request, and its directory.
pub(crate) fn request(
    root: &Path,
    uris: &[String],
    options: &Options,
) -> Result<(Request, PathBuf), RpcError> {
    let Some(first) = uris.first() else {
        return Err(RpcError::new("No URI to download."));
    };
    let mut request = Request::new(first).map_err(|e| RpcError::new(e.to_string()))?;
    let relative = match options.get("dir") {
        Some(dir) => beneath(root, dir)?,
        None => String::new(),
    };
    let dir = if relative.is_empty() {
        root.to_path_buf()
    } else {
        root.join(&relative)
    };
    let out = match options.get("out").filter(|out| !out.is_empty()) {
        Some(out) => Some(out.clone()),
        // A directory below the root: the name the URL gives, beneath it.
        None if !relative.is_empty() => Some(url_name(&request)?),
        None => None,
    };
    request = match out {
        Some(out) => {
            let path = if relative.is_empty() {
                out
            } else {
                format!("{relative}/{out}")
            };
            request
                .into_dir_at(root, &path)
                .map_err(|e| RpcError::new(e.to_string()))?
        }
        None => request.into_dir(root),
    };
    for mirror in &uris[1..] {
        request = request
            .with_mirror(mirror)
            .map_err(|e| RpcError::new(e.to_string()))?;
    }
    apply(request, options).map(|request| (request, dir))
}

/// The options that do not place the file.
pub(crate) fn apply(mut request: Request, options: &Options) -> Result<Request, RpcError> {
    let bad = |key: &str, value: &str| RpcError::new(format!("option {key}: bad value `{value}`"));
    let connections = ["split", "max-connection-per-server"]
        .iter()
        .filter_map(|key| options.get(*key).map(|value| (*key, value)))
        .map(|(key, value)| {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| bad(key, value))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(fewest) = connections.into_iter().min() {
        request = request.with_connections(fewest);
    }
    if let Some(rate) = download_limit(options)? {
        request = request.with_rate_limit(rate);
    }
    if let Some(checksum) = options.get("checksum") {
        request = request.with_checksum(checksum.parse().map_err(|_| bad("checksum", checksum))?);
    }
    for header in options.get("header").into_iter().flat_map(|h| h.lines()) {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| bad("header", header))?;
        request = request
            .with_header(name.trim(), value.trim())
            .map_err(|_| bad("header", header))?;
    }
    for (key, name) in [("user-agent", "User-Agent"), ("referer", "Referer")] {
        if let Some(value) = options.get(key) {
            request = request
                .with_header(name, value)
                .map_err(|_| bad(key, value))?;
        }
    }
    match (options.get("http-user"), options.get("http-passwd")) {
        (Some(user), password) => {
            request = request.with_basic_auth(user, password.map_or("", String::as_str));
        }
        (None, Some(_)) => return Err(RpcError::new("http-passwd without http-user")),
        (None, None) => {}
    }
    Ok(request)
}

/// `max-download-limit` (aria2's units: `500K`, `1M`; `0` is none).
pub(crate) fn download_limit(options: &Options) -> Result<Option<u64>, RpcError> {
    match options.get("max-download-limit") {
        None => Ok(None),
        Some(value) => rate(value)
            .map_err(|_| RpcError::new(format!("option max-download-limit: bad value `{value}`"))),
    }
}

/// A rate in aria2's units; `0` is no limit.
pub(crate) fn rate(value: &str) -> Result<Option<u64>, String> {
    if value.trim() == "0" {
        return Ok(None);
    }
    crate::units::parse_rate(value).map(Some)
}

/// `pause=true`.
pub(crate) fn paused(options: &Options) -> bool {
    options.get("pause").is_some_and(|p| p == "true")
}

/// `dir` as a `/`-separated path below `root` ("" for the root itself): an absolute path must
/// lie inside the root; `..` is refused anywhere.
pub(crate) fn beneath(root: &Path, dir: &str) -> Result<String, RpcError> {
    let outside = || {
        RpcError::new(format!(
            "dir `{dir}` is outside the download root {}",
            root.display()
        ))
    };
    let path = Path::new(dir.trim_end_matches('/'));
    let relative = if path.is_absolute() {
        path.strip_prefix(root).map_err(|_| outside())?
    } else {
        path
    };
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(outside)?.to_owned()),
            Component::CurDir => {}
            _ => return Err(outside()),
        }
    }
    Ok(parts.join("/"))
}

/// The name the URL gives the file (its last path segment).
fn url_name(request: &Request) -> Result<String, RpcError> {
    let path = request
        .output_path()
        .map_err(|e| RpcError::new(e.to_string()))?;
    path.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_owned)
        .ok_or_else(|| RpcError::new("the URL gives no file name: add the out option"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_stays_beneath_the_root() {
        let root = Path::new("/srv/downloads");
        assert_eq!(beneath(root, "isos/debian").unwrap(), "isos/debian");
        assert_eq!(beneath(root, "/srv/downloads/isos/").unwrap(), "isos");
        assert_eq!(beneath(root, "/srv/downloads").unwrap(), "");
        for escape in [
            "..",
            "a/../../b",
            "/etc",
            "/srv/downloads/../x",
            "/srv/downloadsX",
        ] {
            assert!(beneath(root, escape).is_err(), "{escape} was accepted");
        }
    }

    #[test]
    fn options_place_and_shape_the_request() {
        let root = Path::new("/srv/d");
        let mut options = Options::new();
        options.insert("dir".into(), "sub".into());
        options.insert("split".into(), "3".into());
        options.insert("header".into(), "X-A: 1\nX-B: 2".into());
        let uris = vec![
            "http://h/a/file.iso".to_owned(),
            "http://m/file.iso".to_owned(),
        ];
        let (request, dir) = request(root, &uris, &options).unwrap();
        assert_eq!(dir, Path::new("/srv/d/sub"));
        assert_eq!(
            request.output_path().unwrap(),
            Path::new("/srv/d/sub/file.iso")
        );
        assert_eq!(request.mirrors().len(), 1);
        options.insert("out".into(), "../x".into());
        assert!(super::request(root, &uris, &options).is_err());
        options.insert("out".into(), "y.iso".into());
        options.insert("dir".into(), "/tmp".into());
        assert!(super::request(root, &uris, &options).is_err());
    }
}
