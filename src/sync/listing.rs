//! Crawling HTTP directory listings for `haul sync --recursive`: nginx and Apache `autoindex`
//! HTML, nginx's JSON autoindex, and S3-style XML bucket listings (`ListObjects`, v1 and v2,
//! with continuation). The crawl never leaves the starting host and path: links to other
//! hosts, to parents (`../`), to other schemes, and query links (Apache's sort links) are
//! ignored. Names are kept exactly as the listing gives them (decoded); whether they can be
//! mirrored is the plan's business.
//!
//! Every crawl is bounded: each page is fetched through the client (deadlines, retries, a size
//! bound), at most `max_listings` pages and `max_files` files are read, and a page whose
//! entries repeat an ancestor's (a server following a symlink loop, `a -> .`) is reported and
//! not descended into. Reaching a bound or pruning a loop makes the listing incomplete: then
//! nothing is deleted.

use super::page::Page;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use url::Url;

use super::plan::{Conflict, SourceEntry, SourceFiles};
use super::s3;
use crate::Error;

use crate::client::cancel::Cancel;
use crate::progress::Reporter;

/// A file found by a crawl.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListedFile {
    /// Its path below the starting URL, `/`-separated, each segment as the listing names it.
    pub path: String,
    /// Its URL.
    pub url: Url,
    /// Its size, when the listing says (nginx's JSON autoindex and S3 listings do).
    pub size: Option<u64>,
}

/// How far a crawl may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrawlLimits {
    /// Levels of subdirectories below the start (0: only the start).
    pub max_depth: usize,
    /// Listing pages read at most.
    pub max_listings: usize,
    /// Files listed at most.
    pub max_files: usize,
}

impl Default for CrawlLimits {
    fn default() -> Self {
        Self {
            max_depth: 20,
            max_listings: 10_000,
            max_files: 1_000_000,
        }
    }
}

/// A crawl's result: what it found, and whether it is complete.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Crawled {
    /// The files and conflicts found.
    pub source: SourceFiles,
    /// A bound was reached (an error: the listing is incomplete).
    pub bound_reached: bool,
}

/// Crawls the listing at `url` and below; every page goes through the client's document fetch
/// (deadlines, retries, the host's limit, a size bound).
///
/// # Errors
/// A failure to fetch any listing page fails the whole crawl (a partial listing must never
/// look complete, or a deletion would remove what it missed).
pub(crate) async fn crawl(
    downloader: &crate::Downloader,
    url: &Url,
    limits: CrawlLimits,
    report: &Reporter,
    cancel: &Cancel,
) -> Result<Crawled, Error> {
    let mut root = url.clone();
    if !root.path().ends_with('/') && !s3::looks_like_bucket_query(&root) {
        root.set_path(&format!("{}/", root.path()));
    }
    let limit = downloader.client.config().max_document_bytes;
    let mut crawled = Crawled::default();
    let mut files: BTreeMap<String, SourceEntry> = BTreeMap::new();
    let mut visited = HashSet::new();
    // Each page with its depth and the fingerprints of the pages above it.
    let mut queue: VecDeque<(Url, usize, Vec<u64>)> =
        VecDeque::from([(root.clone(), 0, Vec::new())]);
    let mut listings = 0usize;
    while let Some((page_url, depth, ancestors)) = queue.pop_front() {
        if !visited.insert(page_url.as_str().to_owned()) {
            continue;
        }
        if listings >= limits.max_listings {
            crawled.bound_reached = true;
            crawled.source.bound_reached = true;
            crawled
                .source
                .incomplete
                .push(format!("more than {} listing pages", limits.max_listings));
            break;
        }
        listings += 1;
        let document = downloader
            .fetch_document_reported(&page_url, limit, report, cancel)
            .await?;
        let body = String::from_utf8_lossy(&document.bytes);
        let content_type = document.content_type.unwrap_or_default();
        let page = if s3::is_bucket_listing(&content_type, &body) {
            s3::page(&root, &page_url, &body)?
        } else if content_type.contains("json") {
            links_page(&root, &page_url, json_links(&body))
        } else {
            links_page(&root, &page_url, html_links(&body))
        };
        if ancestors.contains(&page.fingerprint) {
            let shown = crate::naming::redact_url(&page_url);
            crawled.source.incomplete.push(format!(
                "{shown} repeats the listing of a directory above it (a symlink loop on the \
                 server); not descended into"
            ));
            continue;
        }
        for (path, url, size) in page.files {
            if files.len() >= limits.max_files {
                crawled.bound_reached = true;
                crawled.source.bound_reached = true;
                crawled.source.bound_reached = true;
                crawled
                    .source
                    .incomplete
                    .push(format!("more than {} files", limits.max_files));
                queue.clear();
                break;
            }
            match path {
                Ok(path) => {
                    files
                        .entry(path.clone())
                        .or_insert_with(|| SourceEntry::new(path, url).with_size(size));
                }
                Err(raw) => crawled.source.conflicts.push(Conflict {
                    paths: vec![raw],
                    reason: "its name cannot be represented as a file name (not UTF-8, or \
                             holding a `/`)"
                        .into(),
                }),
            }
        }
        let mut chain = ancestors;
        chain.push(page.fingerprint);
        for next in page.more {
            // Continuation pages of one S3 listing are the same level.
            let is_continuation = next.path() == page_url.path();
            if is_continuation {
                queue.push_back((next, depth, chain[..chain.len() - 1].to_vec()));
            } else if depth < limits.max_depth {
                queue.push_back((next, depth + 1, chain.clone()));
            }
        }
    }
    crawled.source.entries = files.into_values().collect();
    Ok(crawled)
}

/// One page parsed as the crawl would, for the property tests.
#[cfg(test)]
pub(crate) fn parse_page_for_tests(
    root: &Url,
    content_type: &str,
    body: &str,
) -> Result<Vec<super::page::Found>, Error> {
    let page = if s3::is_bucket_listing(content_type, body) {
        s3::page(root, root, body)?
    } else if content_type.contains("json") {
        links_page(root, root, json_links(body))
    } else {
        links_page(root, root, html_links(body))
    };
    Ok(page.files)
}

/// A page of links (HTML or JSON autoindex).
fn links_page(root: &Url, page: &Url, links: Vec<(String, Option<u64>)>) -> Page {
    let mut files = Vec::new();
    let mut more = Vec::new();
    let mut names: Vec<(String, bool)> = Vec::new();
    for (href, size) in links {
        let Some(target) = child_of(root, page, &href) else {
            continue;
        };
        let is_directory = target.path().ends_with('/');
        if let Some(name) = target.path().trim_end_matches('/').rsplit('/').next() {
            names.push((name.to_owned(), is_directory));
        }
        if is_directory {
            more.push(target);
        } else if let Some(path) = relative_path(root, &target) {
            files.push((path, target, size));
        }
    }
    names.sort();
    names.dedup();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    names.hash(&mut hasher);
    Page {
        files,
        more,
        fingerprint: hasher.finish(),
    }
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

/// The target's path below the root, each segment decoded and kept exactly; `Err` with the raw
/// path when a segment is not UTF-8 or decodes to something holding a `/`. `None` for the root.
fn relative_path(root: &Url, target: &Url) -> Option<Result<String, String>> {
    let below = target.path().strip_prefix(root.path())?;
    let mut segments = Vec::new();
    for segment in below.split('/').filter(|s| !s.is_empty()) {
        match percent_decode_str(segment).decode_utf8() {
            Ok(name) if !name.contains('/') => segments.push(name.into_owned()),
            _ => return Some(Err(below.to_owned())),
        }
    }
    (!segments.is_empty()).then(|| Ok(segments.join("/")))
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
    fn relative_paths_are_decoded_and_kept_exactly() {
        let root = url("http://h/pub/");
        let rel = |u: &str| relative_path(&root, &url(u));
        assert_eq!(
            rel("http://h/pub/a/b%20c.bin"),
            Some(Ok("a/b c.bin".into()))
        );
        assert_eq!(rel("http://h/pub/.x.txt"), Some(Ok(".x.txt".into())));
        assert_eq!(rel("http://h/pub/y.txt."), Some(Ok("y.txt.".into())));
        assert!(matches!(rel("http://h/pub/a%2F..%2Fx"), Some(Err(_))));
        assert!(matches!(rel("http://h/pub/%FF"), Some(Err(_))));
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
