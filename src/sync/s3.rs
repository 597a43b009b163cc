//! S3-style XML bucket listings (`ListBucketResult`, from `ListObjects` v1 and `ListObjectsV2`),
//! the form in which public dataset buckets are browsed: a source URL such as
//! `https://host/bucket?list-type=2&prefix=data/` lists every key below the prefix, page by
//! page (`IsTruncated` with `NextContinuationToken`, or `NextMarker` in v1); with a
//! `delimiter`, `CommonPrefixes` are read as subdirectories. A key's mirror path is the key
//! without the prefix's directory part; its URL is the bucket's URL plus the key.

use std::hash::{Hash, Hasher};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use url::Url;

use super::page::Page;
use crate::Error;

/// What stays unescaped in a key's path segment (RFC 3986 unreserved characters).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'+')
    .add(b'&')
    .add(b'=')
    .add(b';')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// Whether the URL asks a bucket for a listing (its query names one of `list-type`, `prefix`,
/// `delimiter`): then it is used as it is, without a trailing `/`.
pub(super) fn looks_like_bucket_query(url: &Url) -> bool {
    url.query_pairs()
        .any(|(key, _)| matches!(key.as_ref(), "list-type" | "prefix" | "delimiter"))
}

/// Whether an answer is an S3 bucket listing.
pub(super) fn is_bucket_listing(content_type: &str, body: &str) -> bool {
    let start = body.trim_start();
    (content_type.contains("xml") || start.starts_with("<?xml") || start.starts_with('<'))
        && body.contains("<ListBucketResult")
}

/// One page of a bucket listing.
///
/// # Errors
/// `Error::BadListing` when the page is not a well-formed listing.
pub(super) fn page(root: &Url, page_url: &Url, body: &str) -> Result<Page, Error> {
    let prefix = query(root, "prefix").unwrap_or_default();
    // The part of the prefix that names directories: keys are mirrored below it.
    let strip = prefix.rfind('/').map_or(0, |at| at + 1);
    let mut base = root.clone();
    base.set_query(None);
    base.set_fragment(None);
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let mut files = Vec::new();
    let mut keys = Vec::new();
    let mut last_key = None;
    for contents in elements(body, "Contents") {
        let Some(key) = text(contents, "Key") else {
            return Err(bad(page_url, "a <Contents> without a <Key>"));
        };
        last_key = Some(key.clone());
        keys.push(key.clone());
        if key.ends_with('/') || !key.starts_with(&prefix[..strip]) {
            // A folder marker, or a key outside the prefix's directory.
            continue;
        }
        let size = text(contents, "Size").and_then(|s| s.trim().parse().ok());
        let relative = &key[strip..];
        if key
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            // No URL can name such a key (URLs resolve dot segments): a conflict.
            files.push((Err(key.clone()), base.clone(), size));
            continue;
        }
        let mut url = base.clone();
        let encoded: Vec<String> = key
            .split('/')
            .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
            .collect();
        url.set_path(&format!("{}{}", base.path(), encoded.join("/")));
        let path = if relative.split('/').any(str::is_empty) {
            Err(key.clone())
        } else {
            Ok(relative.to_owned())
        };
        files.push((path, url, size));
    }
    let mut more = Vec::new();
    if text(body, "IsTruncated").is_some_and(|t| t.trim() == "true") {
        let mut next = page_url.clone();
        let v2 = query(root, "list-type").as_deref() == Some("2");
        let token = if v2 {
            text(body, "NextContinuationToken").map(|t| ("continuation-token", t))
        } else {
            text(body, "NextMarker")
                .or_else(|| last_key.clone())
                .map(|t| ("marker", t))
        };
        let Some((name, value)) = token else {
            return Err(bad(
                page_url,
                "a truncated listing without a way to continue",
            ));
        };
        set_query(&mut next, name, &value);
        more.push(next);
    }
    for common in elements(body, "CommonPrefixes") {
        if let Some(sub) = text(common, "Prefix") {
            let mut next = root.clone();
            set_query(&mut next, "prefix", &sub);
            // A subdirectory's keys keep their path relative to the starting prefix.
            more.push(next);
        }
    }
    keys.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    keys.hash(&mut hasher);
    page_url.as_str().hash(&mut hasher);
    Ok(Page {
        files,
        more,
        fingerprint: hasher.finish(),
    })
}

fn bad(url: &Url, detail: &str) -> Error {
    Error::BadListing {
        url: crate::naming::redact_url(url),
        detail: detail.to_owned(),
    }
}

fn query(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Replaces (or adds) one query parameter, keeping the others and dropping stale page tokens.
fn set_query(url: &mut Url, name: &str, value: &str) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != name && key != "continuation-token" && key != "marker")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut pairs = url.query_pairs_mut();
    pairs.clear();
    for (key, val) in &kept {
        pairs.append_pair(key, val);
    }
    pairs.append_pair(name, value);
}

/// The inner texts of every `<tag>…</tag>` in `xml`, in order.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// The decoded text of the first `<tag>` in `xml`.
fn text(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|inner| decode_xml(inner))
}

/// XML's predefined entities and numeric references.
fn decode_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let Some(end) = tail.find(';').filter(|end| *end <= 10) else {
            out.push('&');
            rest = &tail[1..];
            continue;
        };
        let entity = &tail[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `ListObjectsV2` answer in the form S3 sends (from AWS's API reference).
    const PAGE_ONE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>data</Name><Prefix>sets/</Prefix><KeyCount>3</KeyCount><MaxKeys>3</MaxKeys><IsTruncated>true</IsTruncated><Contents><Key>sets/</Key><LastModified>2026-11-01T00:00:00.000Z</LastModified><ETag>&quot;d41d8cd98f00b204e9800998ecf8427e&quot;</ETag><Size>0</Size><StorageClass>STANDARD</StorageClass></Contents><Contents><Key>sets/a b&amp;c.csv</Key><LastModified>2026-11-01T00:00:00.000Z</LastModified><ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag><Size>1024</Size><StorageClass>STANDARD</StorageClass></Contents><Contents><Key>sets/.hidden/x.bin</Key><Size>7</Size></Contents><NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken><StartAfter></StartAfter></ListBucketResult>"#;

    #[test]
    fn keys_become_paths_below_the_prefix_and_pages_continue() {
        let root = Url::parse("http://h:9000/data?list-type=2&prefix=sets/").unwrap();
        let page = page(&root, &root, PAGE_ONE).unwrap();
        let files: Vec<(String, String, Option<u64>)> = page
            .files
            .iter()
            .map(|(p, u, s)| (p.clone().unwrap(), u.to_string(), *s))
            .collect();
        assert_eq!(
            files,
            vec![
                (
                    "a b&c.csv".into(),
                    "http://h:9000/data/sets/a%20b%26c.csv".into(),
                    Some(1024)
                ),
                (
                    ".hidden/x.bin".into(),
                    "http://h:9000/data/sets/.hidden/x.bin".into(),
                    Some(7)
                ),
            ]
        );
        assert_eq!(page.more.len(), 1);
        let next = &page.more[0];
        assert_eq!(
            query(next, "continuation-token").as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
        assert_eq!(query(next, "prefix").as_deref(), Some("sets/"));
        assert_eq!(next.path(), "/data");
    }

    #[test]
    fn a_v1_listing_continues_from_its_marker_and_reads_common_prefixes() {
        let root = Url::parse("http://h/b/?prefix=&delimiter=/").unwrap();
        let body = "<ListBucketResult><IsTruncated>true</IsTruncated>\
            <Contents><Key>top.txt</Key><Size>3</Size></Contents>\
            <CommonPrefixes><Prefix>sub/</Prefix></CommonPrefixes></ListBucketResult>";
        let page = page(&root, &root, body).unwrap();
        assert_eq!(page.files.len(), 1);
        let queries: Vec<String> = page
            .more
            .iter()
            .map(|u| u.query().unwrap().to_owned())
            .collect();
        assert_eq!(
            queries,
            vec![
                "prefix=&delimiter=%2F&marker=top.txt",
                "delimiter=%2F&prefix=sub%2F"
            ]
        );
        assert!(is_bucket_listing("application/xml", body));
        assert!(!is_bucket_listing("text/html", "<html>ListBucket</html>"));
    }

    #[test]
    fn entities_decode_and_nonsense_is_kept_as_text() {
        assert_eq!(
            decode_xml("a&amp;b&lt;&#65;&#x42;&bogus;&"),
            "a&b<AB&bogus;&"
        );
    }
}
