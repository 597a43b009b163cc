//! Crawling HTTP directory listings (nginx and Apache `autoindex` HTML, nginx's JSON
//! autoindex) for `haul sync --recursive`. The crawl never leaves the starting host and path:
//! links to other hosts, to parents (`../`), to other schemes, and query links (Apache's sort
//! links) are ignored, and every path segment is made safe like a file name.

use std::collections::{BTreeMap, HashSet, VecDeque};

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use url::Url;

use crate::Error;
use crate::client::Client;
use crate::client::cancel::Cancel;
use crate::naming::sanitize_file_name;
use crate::progress::Reporter;

/// A file found by a crawl.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListedFile {
    /// Its path below the starting URL, `/`-separated, each segment made safe.
    pub path: String,
    /// Its URL.
    pub url: Url,
    /// Its size, when the listing says (nginx's JSON autoindex does).
    pub size: Option<u64>,
}

/// Crawls the listing at `url` and below (see `Downloader::list_directory`): every page goes
/// through the client's document fetch (deadlines, retries, the host's limit, a size bound).
pub(crate) async fn crawl(
    client: &Client,
    url: &Url,
    max_depth: usize,
    report: &Reporter,
    cancel: &Cancel,
) -> Result<Vec<ListedFile>, Error> {
    let mut root = url.clone();
    if !root.path().ends_with('/') {
        root.set_path(&format!("{}/", root.path()));
    }
    let limit = client.config().max_document_bytes;
    let mut files = BTreeMap::new();
    let mut visited = HashSet::new();
    let mut queue = VecDeque::from([(root.clone(), 0usize)]);
    while let Some((directory, depth)) = queue.pop_front() {
        if !visited.insert(directory.as_str().to_owned()) {
            continue;
        }
        let document = client
            .fetch_document(&directory, limit, report, cancel)
            .await?;
        let body = String::from_utf8_lossy(&document.bytes);
        let is_json = document.content_type.is_some_and(|t| t.contains("json"));
        let links = if is_json {
            json_links(&body)
        } else {
            html_links(&body)
        };
        for (href, size) in links {
            let Some(target) = child_of(&root, &directory, &href) else {
                continue;
            };
            let Some(path) = relative_path(&root, &target) else {
                continue;
            };
            if target.path().ends_with('/') {
                if depth < max_depth {
                    queue.push_back((target, depth + 1));
                }
            } else {
                files.entry(path.clone()).or_insert(ListedFile {
                    path,
                    url: target,
                    size,
                });
            }
        }
    }
    Ok(files.into_values().collect())
}

/// The `href` values of an HTML page, in order.
fn html_links(html: &str) -> Vec<(String, Option<u64>)> {
    let mut links = Vec::new();
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("href") {
        let mut at = from + found + 4;
        from = at;
        let rest = &html[at..];
        let trimmed = rest.trim_start();
        if !trimmed.starts_with('=') {
            continue;
        }
        at += rest.len() - trimmed.len() + 1;
        let value = html[at..].trim_start();
        let href = match value.chars().next() {
            Some(quote @ ('"' | '\'')) => value[1..].split(quote).next().unwrap_or(""),
            Some(_) => value
                .split(|c: char| c.is_whitespace() || c == '>')
                .next()
                .unwrap_or(""),
            None => "",
        };
        links.push((decode_entities(href), None));
    }
    links
}

/// The few HTML entities that appear in listing links.
fn decode_entities(text: &str) -> String {
    text.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// Entries of nginx's `autoindex_format json`: `[{"name": .., "type": "file"|"directory", "size": ..}]`.
fn json_links(json: &str) -> Vec<(String, Option<u64>)> {
    let Ok(serde_json::Value::Array(entries)) = serde_json::from_str::<serde_json::Value>(json)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let name = entry.get("name")?.as_str()?;
            let directory = entry.get("type").and_then(|t| t.as_str()) == Some("directory");
            let mut href = utf8_percent_encode(name, NON_ALPHANUMERIC).to_string();
            if directory {
                href.push('/');
            }
            Some((href, entry.get("size").and_then(serde_json::Value::as_u64)))
        })
        .collect()
}

/// The link resolved against its page, if it stays below the crawl's root on the same origin
/// and is not the page itself or one of its parents.
fn child_of(root: &Url, page: &Url, href: &str) -> Option<Url> {
    let href = href.trim();
    if href.is_empty() || href.starts_with(['#', '?']) {
        return None;
    }
    let mut target = page.join(href).ok()?;
    target.set_fragment(None);
    if target.query().is_some()
        || target.scheme() != root.scheme()
        || target.host_str() != root.host_str()
        || target.port_or_known_default() != root.port_or_known_default()
        || !target.path().starts_with(root.path())
        || target.path().len() <= page.path().len() && page.path().starts_with(target.path())
    {
        return None;
    }
    Some(target)
}

/// The target's path below the root, decoded and made safe segment by segment.
fn relative_path(root: &Url, target: &Url) -> Option<String> {
    let below = target.path().strip_prefix(root.path())?;
    let segments: Option<Vec<String>> = below
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| sanitize_file_name(&percent_decode_str(segment).decode_utf8_lossy()))
        .collect();
    let segments = segments?;
    (!segments.is_empty()).then(|| segments.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn links_are_found_in_nginx_and_apache_pages() {
        let nginx = r#"<html><body><h1>Index of /pub/</h1><hr><pre><a href="../">../</a>
<a href="sub/">sub/</a>                 22-Nov-2026 00:00       -
<a href="a%20b.bin">a b.bin</a>          22-Nov-2026 00:00    1000
</pre><hr></body></html>"#;
        let names: Vec<String> = html_links(nginx).into_iter().map(|(h, _)| h).collect();
        assert_eq!(names, vec!["../", "sub/", "a%20b.bin"]);
        let apache = r#"<tr><td><a href="?C=N;O=D">Name</a></td></tr>
<tr><td><A HREF='x.txt'>x.txt</A></td></tr><tr><td><a href=y.txt>y</a></td></tr>
<a href="q?a=1&amp;b=2">q</a>"#;
        let names: Vec<String> = html_links(apache).into_iter().map(|(h, _)| h).collect();
        assert_eq!(names, vec!["?C=N;O=D", "x.txt", "y.txt", "q?a=1&b=2"]);
    }

    #[test]
    fn the_crawl_never_leaves_its_root() {
        let root = url("http://h/pub/");
        let page = url("http://h/pub/sub/");
        let keep = |href: &str| child_of(&root, &page, href).map(|u| u.to_string());
        assert_eq!(keep("c.bin").as_deref(), Some("http://h/pub/sub/c.bin"));
        assert_eq!(keep("deeper/").as_deref(), Some("http://h/pub/sub/deeper/"));
        for hostile in [
            "../",
            "../../etc/passwd",
            "/outside/x",
            "http://other/pub/sub/x",
            "https://h/pub/sub/x",
            "http://h:8080/pub/sub/x",
            "?C=M;O=A",
            "x?download=1",
            "#top",
            "./",
            "",
        ] {
            assert_eq!(keep(hostile), None, "{hostile}");
        }
        assert_eq!(
            keep("../sibling.bin").as_deref(),
            Some("http://h/pub/sibling.bin"),
            "still below the root"
        );
    }

    #[test]
    fn relative_paths_are_decoded_and_made_safe() {
        let root = url("http://h/pub/");
        let rel = |u: &str| relative_path(&root, &url(u));
        assert_eq!(
            rel("http://h/pub/a/b%20c.bin").as_deref(),
            Some("a/b c.bin")
        );
        assert_eq!(rel("http://h/pub/a%2F..%2Fx").as_deref(), Some("a_.._x"));
        assert_eq!(rel("http://h/pub/%2E%2E%2E"), None);
        assert_eq!(rel("http://h/pub/"), None);
    }

    #[test]
    fn nginx_json_listings_give_names_types_and_sizes() {
        let json = r#"[{"name":"sub","type":"directory","mtime":"x"},
            {"name":"a b.bin","type":"file","mtime":"x","size":1000}]"#;
        assert_eq!(
            json_links(json),
            vec![
                ("sub/".to_owned(), None),
                ("a%20b%2Ebin".to_owned(), Some(1000))
            ]
        );
        assert!(json_links("not json").is_empty());
    }
}
