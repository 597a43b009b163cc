//! Metalink documents (RFC 5854 `.meta4`, and the older Metalink 3 `.metalink`): for each file,
//! its mirrors with priorities and locations, its size, its hashes and optionally a hash per
//! piece, as MirrorBrain, mirrorbits and many distributions publish them. A document is parsed
//! with quick-xml and trusted for nothing: no DTD and no entity but XML's five (so no
//! billion-laughs expansion), bounded counts, hashes of the right length, piece lists that add
//! up to the size, and names that go through the same rule as a mirror's (`a/b.iso` makes a
//! directory beneath the download directory, `../x` is refused).

use std::path::Path;

use quick_xml::events::{BytesStart, Event};
use url::Url;

use crate::{Algorithm, Checksum, Error, Request};

/// The most files one document may describe.
const MAX_FILES: usize = 100_000;
/// The most URLs one file may list.
const MAX_URLS: usize = 1_000;
/// The most pieces one file may have.
const MAX_PIECES: usize = 4_000_000;

/// A parsed Metalink document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metalink {
    /// Its files, in document order.
    pub files: Vec<MetalinkFile>,
}

/// One file of a Metalink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetalinkFile {
    /// Its name: a `/`-separated path below the download directory.
    pub name: String,
    /// Its length in bytes, when given.
    pub size: Option<u64>,
    /// The strongest whole-file hash given (sha-512, sha-256, sha-1, md5 in that order).
    pub hash: Option<Checksum>,
    /// A hash per piece, when given.
    pub pieces: Option<Pieces>,
    /// Where it can be fetched.
    pub sources: Vec<Source>,
}

/// One URL of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Source {
    /// The URL (http or https).
    pub url: Url,
    /// 1 is the most preferred (Metalink 4's `priority`; Metalink 3's `preference`, higher
    /// better, is converted); unranked URLs come after ranked ones.
    pub priority: u32,
    /// An ISO 3166-1 country code, lower-case, when given.
    pub location: Option<String>,
}

/// The hashes of a file's consecutive pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pieces {
    /// The length of every piece but the last.
    pub length: u64,
    /// One hash per piece, in order.
    pub hashes: Vec<Checksum>,
}

impl Pieces {
    /// The byte range of piece `index` in a file of `size` bytes.
    #[must_use]
    pub fn range(&self, index: usize, size: u64) -> (u64, u64) {
        let start = self.length.saturating_mul(index as u64).min(size);
        (start, start.saturating_add(self.length).min(size))
    }
}

impl MetalinkFile {
    /// The file's URLs, best first: by priority, and among equals the ones in one of
    /// `locations` (country codes, as aria2's `--metalink-location`) first, then document
    /// order.
    #[must_use]
    pub fn ordered_sources(&self, locations: &[&str]) -> Vec<&Url> {
        let mut sources: Vec<(usize, &Source)> = self.sources.iter().enumerate().collect();
        sources.sort_by_key(|(order, source)| {
            let preferred = source
                .location
                .as_deref()
                .is_some_and(|l| locations.iter().any(|w| l.eq_ignore_ascii_case(w)));
            (source.priority, !preferred, *order)
        });
        sources.into_iter().map(|(_, s)| &s.url).collect()
    }

    /// The request that downloads this file below `dir`: its best URL, the others as
    /// mirrors, its size, its hash and its piece hashes.
    ///
    /// # Errors
    /// `UnsafeName` for a name that would leave `dir`; `Metalink` for a file without URLs.
    pub fn request(&self, dir: &Path, locations: &[&str]) -> Result<Request, Error> {
        let sources = self.ordered_sources(locations);
        let Some((first, mirrors)) = sources.split_first() else {
            return Err(Error::Metalink(format!(
                "`{}` has no http(s) URL",
                self.name
            )));
        };
        let mut request = Request::from_url((*first).clone())?.into_dir_at(dir, &self.name)?;
        for mirror in mirrors {
            request = request.with_mirror(mirror.as_str())?;
        }
        if let Some(size) = self.size {
            request = request.with_size(size);
        }
        if let Some(hash) = &self.hash {
            request = request.with_checksum(hash.clone());
        }
        if let Some(pieces) = &self.pieces {
            request = request.with_pieces(pieces.clone());
        }
        Ok(request)
    }
}

/// The `rel=duplicate` links of one `Link` header value (RFC 6249, RFC 8288), with their
/// `pri` (1 is the best; none ranks last): `<http://m1/f>; rel=duplicate; pri=1; geo=de`.
#[must_use]
pub fn duplicate_links(value: &str) -> Vec<(String, u32)> {
    let mut links = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let target = rest[open + 1..open + close].trim().to_owned();
        rest = &rest[open + close + 1..];
        // The parameters run to the next link (a `,` before a `<`) or the end.
        let end = rest
            .match_indices(',')
            .find(|(at, _)| rest[at + 1..].trim_start().starts_with('<'))
            .map_or(rest.len(), |(at, _)| at);
        let params = &rest[..end];
        rest = &rest[end..];
        let mut duplicate = false;
        let mut priority = u32::MAX;
        for param in params.split(';') {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "rel" => {
                    duplicate = value
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("duplicate"));
                }
                "pri" => priority = value.parse().unwrap_or(u32::MAX),
                _ => {}
            }
        }
        if duplicate && !target.is_empty() {
            links.push((target, priority));
        }
    }
    links
}

/// Reads and parses the Metalink at `location` (a path, `-` or a URL), refusing one larger
/// than the downloader's `max_document_size` (64 MiB by default) before reading it: a
/// hostile 1 GiB document costs nothing.
///
/// # Errors
/// A document that cannot be read, is too large, or is not a usable Metalink.
pub async fn load(
    location: &crate::sync::Location,
    downloader: &crate::Downloader,
) -> Result<Metalink, Error> {
    let limit = downloader.client.config().max_document_bytes;
    if let crate::sync::Location::File(path) = location {
        let length = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::io("read", path, e))?
            .len();
        if length > limit {
            return Err(Error::Metalink(format!(
                "`{}` is {length} bytes, more than the {limit} a document may have",
                path.display()
            )));
        }
    }
    let text = location.read_text(downloader).await?;
    // A URL's document is bounded while it is fetched; standard input only here.
    if text.len() as u64 > limit {
        return Err(Error::Metalink(format!(
            "{location} is more than the {limit} bytes a document may have"
        )));
    }
    parse(&text)
}

/// Whether a name or URL looks like a Metalink document (`.meta4`, `.metalink`).
#[must_use]
pub fn is_metalink_name(name: &str) -> bool {
    let path = name.split(['?', '#']).next().unwrap_or(name);
    Path::new(path).extension().is_some_and(|extension| {
        extension.eq_ignore_ascii_case("meta4") || extension.eq_ignore_ascii_case("metalink")
    })
}

/// Parses a Metalink 4 (RFC 5854) or Metalink 3 document.
///
/// # Errors
/// `Metalink` with what is wrong: not XML, a DTD or an unknown entity, a file without a safe
/// name, a hash of the wrong length, pieces that do not add up, too many files, URLs or pieces.
pub fn parse(text: &str) -> Result<Metalink, Error> {
    let bad = |detail: String| Error::Metalink(detail);
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut metalink = Metalink::default();
    let mut path: Vec<String> = Vec::new();
    let mut file: Option<Building> = None;
    let mut text_so_far = String::new();
    let mut attributes: Vec<(String, String)> = Vec::new();
    let mut root_seen = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| bad(format!("not well-formed XML: {e}")))?;
        match event {
            Event::DocType(_) => {
                return Err(bad(
                    "a DOCTYPE (entities are never expanded in a Metalink)".into()
                ));
            }
            Event::Start(element) => {
                let name = local(&element);
                if !root_seen {
                    if name != "metalink" {
                        return Err(bad(format!("the root element is <{name}>, not <metalink>")));
                    }
                    root_seen = true;
                }
                attributes = read_attributes(&element)?;
                if name == "file" {
                    if metalink.files.len() >= MAX_FILES {
                        return Err(bad(format!("more than {MAX_FILES} files")));
                    }
                    let file_name = attribute(&attributes, "name")
                        .ok_or_else(|| bad("a <file> without a name".into()))?;
                    file = Some(Building::new(file_name));
                }
                if name == "pieces"
                    && let Some(building) = &mut file
                {
                    building.start_pieces(&attributes)?;
                }
                path.push(name);
                text_so_far.clear();
            }
            // An empty element carries no text, and none Metalink uses is empty.
            Event::Empty(_) => {}
            Event::Text(content) => push_text(&mut text_so_far, &content.xml10_content())?,
            Event::CData(content) => push_text(&mut text_so_far, &content.xml10_content())?,
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => {
                        let name = reference.xml10_content().into_owned();
                        predefined(&name)
                            .ok_or_else(|| {
                                bad(format!("the entity `&{name};` (only XML's own are known)"))
                            })?
                            .to_owned()
                    }
                };
                push_text(&mut text_so_far, &resolved)?;
            }
            Event::End(_) => {
                let Some(name) = path.pop() else {
                    return Err(bad("an end tag without a start".into()));
                };
                let value = std::mem::take(&mut text_so_far);
                let parent = path.last().map(String::as_str);
                if let Some(building) = &mut file {
                    if name == "file" {
                        if let Some(done) = file.take() {
                            metalink.files.push(done.finish()?);
                        }
                    } else {
                        building.element(&name, parent, &value, &attributes)?;
                    }
                }
                attributes.clear();
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if !root_seen {
        return Err(bad("no <metalink> element".into()));
    }
    if metalink.files.is_empty() {
        return Err(bad("no <file> in it".into()));
    }
    Ok(metalink)
}

/// A file while its elements arrive.
struct Building {
    name: String,
    size: Option<u64>,
    hashes: Vec<Checksum>,
    pieces: Option<(u64, Algorithm, Vec<Checksum>)>,
    sources: Vec<Source>,
}

impl Building {
    fn new(name: String) -> Self {
        Self {
            name,
            size: None,
            hashes: Vec::new(),
            pieces: None,
            sources: Vec::new(),
        }
    }

    fn start_pieces(&mut self, attributes: &[(String, String)]) -> Result<(), Error> {
        let bad = |detail: String| Error::Metalink(format!("`{}`: {detail}", self.name));
        let length = attribute(attributes, "length")
            .and_then(|l| l.parse::<u64>().ok())
            .filter(|l| *l > 0)
            .ok_or_else(|| bad("<pieces> without a positive length".into()))?;
        let algorithm = attribute(attributes, "type")
            .as_deref()
            .and_then(Algorithm::from_name)
            .ok_or_else(|| bad("<pieces> of an unknown hash type".into()))?;
        self.pieces = Some((length, algorithm, Vec::new()));
        Ok(())
    }

    fn element(
        &mut self,
        name: &str,
        parent: Option<&str>,
        value: &str,
        attributes: &[(String, String)],
    ) -> Result<(), Error> {
        let bad = |detail: String| Error::Metalink(format!("`{}`: {detail}", self.name));
        match (name, parent) {
            ("size", _) => {
                self.size = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("size `{value}` is not a number")))?,
                );
            }
            ("hash", Some("pieces")) => {
                let Some((_, algorithm, hashes)) = &mut self.pieces else {
                    return Ok(());
                };
                if hashes.len() >= MAX_PIECES {
                    return Err(bad(format!("more than {MAX_PIECES} pieces")));
                }
                hashes.push(checksum(*algorithm, value).map_err(bad)?);
            }
            ("hash", _) => {
                // Metalink 3 nests hashes in <verification>; 4 puts them in <file>.
                let Some(kind) = attribute(attributes, "type")
                    .as_deref()
                    .and_then(Algorithm::from_name)
                else {
                    return Ok(()); // an algorithm haul does not know is skipped
                };
                self.hashes.push(checksum(kind, value).map_err(bad)?);
            }
            ("url", _) => {
                if self.sources.len() >= MAX_URLS {
                    return Err(bad(format!("more than {MAX_URLS} URLs")));
                }
                let Ok(url) = Url::parse(value.trim()) else {
                    return Ok(()); // a URL that does not parse is one fewer mirror
                };
                if !matches!(url.scheme(), "http" | "https") {
                    return Ok(()); // ftp, a torrent: not haul's
                }
                let priority = match (
                    attribute(attributes, "priority"),
                    attribute(attributes, "preference"),
                ) {
                    (Some(p), _) => p.parse::<u32>().unwrap_or(u32::MAX).max(1),
                    // Metalink 3: 100 is the best; turn it into a rank.
                    (None, Some(p)) => {
                        101u32.saturating_sub(p.parse::<u32>().unwrap_or(0).min(100))
                    }
                    (None, None) => u32::MAX,
                };
                self.sources.push(Source {
                    url,
                    priority,
                    location: attribute(attributes, "location").map(|l| l.to_ascii_lowercase()),
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<MetalinkFile, Error> {
        let bad = |detail: String| Error::Metalink(format!("`{}`: {detail}", self.name));
        let hash = self
            .hashes
            .iter()
            .max_by_key(|h| h.algorithm().strength())
            .cloned();
        let pieces = match self.pieces {
            None => None,
            Some((length, _, hashes)) => {
                if let Some(size) = self.size {
                    let expected = size.div_ceil(length).max(1);
                    if hashes.len() as u64 != expected {
                        return Err(bad(format!(
                            "{} piece hashes for {size} bytes in pieces of {length} (that is {expected})",
                            hashes.len()
                        )));
                    }
                    Some(Pieces { length, hashes })
                } else {
                    // Pieces without a size cannot be placed: ignored, the whole hash stays.
                    None
                }
            }
        };
        Ok(MetalinkFile {
            name: self.name,
            size: self.size,
            hash,
            pieces,
            sources: self.sources,
        })
    }
}

/// Text is bounded: a document is read whole, but no element's text may grow without end.
fn push_text(into: &mut String, text: &str) -> Result<(), Error> {
    if into.len() + text.len() > 64 * 1024 {
        return Err(Error::Metalink(
            "an element's text is longer than 64 KiB".into(),
        ));
    }
    into.push_str(text);
    Ok(())
}

fn local(element: &BytesStart<'_>) -> String {
    element.local_name().as_ref().to_owned()
}

fn read_attributes(element: &BytesStart<'_>) -> Result<Vec<(String, String)>, Error> {
    element
        .attributes()
        .map(|attribute| {
            let attribute =
                attribute.map_err(|e| Error::Metalink(format!("a malformed attribute: {e}")))?;
            let key = attribute.key.local_name().as_ref().to_owned();
            let value = attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| Error::Metalink(format!("attribute `{key}`: {e}")))?
                .into_owned();
            Ok((key, value))
        })
        .collect()
}

fn attribute(attributes: &[(String, String)], name: &str) -> Option<String> {
    attributes
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
}

fn predefined(name: &str) -> Option<&'static str> {
    Some(match name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        _ => return None,
    })
}

/// A hash element's value: hex of the algorithm's length (through `Checksum`'s own parsing).
fn checksum(algorithm: Algorithm, hex_text: &str) -> Result<Checksum, String> {
    format!("{}={}", algorithm.name(), hex_text.trim())
        .parse()
        .map_err(|e: Error| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5854's example (section 1.1), with a SHA-256 in place of its elided one.
    const RFC_EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
   <metalink xmlns="urn:ietf:params:xml:ns:metalink">
     <published>2009-05-15T12:23:23Z</published>
     <file name="example.ext">
       <size>14471447</size>
       <identity>Example</identity>
       <version>1.0</version>
       <language>en</language>
       <description>
       A description of the example file for download.
       </description>
       <hash type="sha-256">f0ad929cd259957e160ea442eb80986b5f01f2d4a4fa5d1f3ec08e5ed6c1d3f3</hash>
       <url location="de" priority="1">ftp://ftp.example.com/example.ext</url>
       <url location="fr" priority="1">http://example.com/example.ext</url>
       <metaurl mediatype="torrent" priority="2">http://example.com/example.ext.torrent</metaurl>
     </file>
   </metalink>"#;

    #[test]
    fn the_rfc_example_gives_its_http_url_size_and_hash() {
        let metalink = parse(RFC_EXAMPLE).unwrap();
        let file = &metalink.files[0];
        assert_eq!(file.name, "example.ext");
        assert_eq!(file.size, Some(14_471_447));
        assert_eq!(file.hash.as_ref().unwrap().algorithm(), Algorithm::Sha256);
        let urls: Vec<&str> = file
            .ordered_sources(&[])
            .iter()
            .map(|u| u.as_str())
            .collect();
        assert_eq!(
            urls,
            ["http://example.com/example.ext"],
            "ftp and torrents are not haul's"
        );
    }

    #[test]
    fn sources_are_ordered_by_priority_then_location() {
        let doc = r#"<metalink xmlns="urn:ietf:params:xml:ns:metalink"><file name="f">
            <url priority="2" location="us">http://us2/f</url>
            <url priority="1" location="us">http://us1/f</url>
            <url priority="1" location="de">http://de1/f</url>
            <url>http://unranked/f</url></file></metalink>"#;
        let file = &parse(doc).unwrap().files[0];
        let order = |location: &[&str]| -> Vec<String> {
            file.ordered_sources(location)
                .iter()
                .map(|u| u.host_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(order(&[]), ["us1", "de1", "us2", "unranked"]);
        assert_eq!(order(&["de"]), ["de1", "us1", "us2", "unranked"]);
    }

    #[test]
    fn duplicate_links_are_read_from_link_headers() {
        let value = r#"<http://m1.example/f.iso>; rel=duplicate; pri=2; geo=de, <http://m2.example/f.iso>; rel="duplicate"; pri=1, <http://x/f.meta4>; rel=describedby; type="application/metalink4+xml""#;
        assert_eq!(
            duplicate_links(value),
            [
                ("http://m1.example/f.iso".to_owned(), 2),
                ("http://m2.example/f.iso".to_owned(), 1)
            ]
        );
        assert!(duplicate_links("garbage <").is_empty());
    }

    #[test]
    fn metalink_3_is_read_too() {
        let doc = r#"<?xml version="1.0"?><metalink version="3.0" xmlns="http://www.metalinker.org/">
          <files><file name="a.iso"><size>10</size>
            <verification><hash type="md5">0123456789abcdef0123456789abcdef</hash>
              <hash type="sha256">f0ad929cd259957e160ea442eb80986b5f01f2d4a4fa5d1f3ec08e5ed6c1d3f3</hash></verification>
            <resources><url type="http" location="us" preference="10">http://low/a.iso</url>
              <url type="http" preference="100">http://best/a.iso</url></resources>
          </file></files></metalink>"#;
        let file = &parse(doc).unwrap().files[0];
        assert_eq!(
            file.hash.as_ref().unwrap().algorithm(),
            Algorithm::Sha256,
            "the strongest"
        );
        assert_eq!(file.ordered_sources(&[])[0].host_str(), Some("best"));
    }

    #[test]
    fn hostile_documents_are_refused_with_a_reason() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>
            <metalink><file name="f"><url>http://h/&lol2;</url></file></metalink>"#;
        let undeclared = r#"<metalink><file name="f"><url>http://h/&lol;</url></file></metalink>"#;
        let short_hash = r#"<metalink><file name="f"><hash type="sha-256">abcd</hash><url>http://h/f</url></file></metalink>"#;
        let pieces = r#"<metalink><file name="f"><size>1000</size><pieces length="300" type="sha-1">
            <hash>0123456789abcdef0123456789abcdef01234567</hash></pieces><url>http://h/f</url></file></metalink>"#;
        let not_metalink = "<html><body>hi</body></html>";
        for (doc, words) in [
            (laughs, "DOCTYPE"),
            (undeclared, "entity"),
            (short_hash, "sha-256"),
            (pieces, "piece hashes"),
            (not_metalink, "root element"),
            ("not xml at all <", "not well-formed"),
        ] {
            let error = parse(doc).unwrap_err().to_string();
            assert!(error.contains(words), "{words}: {error}");
        }
    }

    #[test]
    fn names_that_leave_the_directory_are_refused_and_subdirectories_kept() {
        let doc = |name: &str| {
            format!(r#"<metalink><file name="{name}"><url>http://h/f</url></file></metalink>"#)
        };
        for hostile in ["../../etc/passwd", "/etc/passwd", "a/../../b"] {
            let metalink = parse(&doc(hostile)).unwrap();
            let refused = metalink.files[0].request(Path::new("/d"), &[]);
            assert!(refused.is_err(), "{hostile}");
        }
        let metalink = parse(&doc("isos/a.iso")).unwrap();
        let request = metalink.files[0].request(Path::new("/d"), &[]).unwrap();
        assert_eq!(request.output_path().unwrap(), Path::new("/d/isos/a.iso"));
    }
}
