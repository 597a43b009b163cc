//! Digests servers announce for what they send: `Repr-Digest` and `Content-Digest` (RFC 9530,
//! `sha-256=:BASE64:`), `Digest` (RFC 3230, `SHA-256=BASE64`), `x-amz-checksum-sha256` (S3)
//! and `x-goog-hash` (`md5=BASE64`, Google Cloud Storage). A representation digest
//! (`Repr-Digest`) describes the whole file whatever part of it an answer carries; the others
//! describe the body of this answer, so they count only on a whole (`200`) answer. S3's
//! composite checksums of multipart uploads (`…-N`) are not a file's digest and are ignored.

use reqwest::header::HeaderMap;

use crate::integrity::{Algorithm, Checksum};

/// A digest the server announced, and the header it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announced {
    pub(crate) checksum: Checksum,
    pub(crate) header: &'static str,
}

/// The strongest digest of the whole file among an answer's headers. `whole` says whether the
/// answer carries the whole file (a `200`): only then do content digests count.
pub(crate) fn announced(headers: &HeaderMap, whole: bool) -> Option<Announced> {
    let mut found: Vec<Announced> = Vec::new();
    let mut add = |header: &'static str, checksum: Option<Checksum>| {
        if let Some(checksum) = checksum {
            found.push(Announced { checksum, header });
        }
    };
    for value in values(headers, "repr-digest") {
        for checksum in structured(&value) {
            add("Repr-Digest", Some(checksum));
        }
    }
    if whole {
        for value in values(headers, "content-digest") {
            for checksum in structured(&value) {
                add("Content-Digest", Some(checksum));
            }
        }
        for value in values(headers, "digest") {
            for checksum in legacy(&value) {
                add("Digest", Some(checksum));
            }
        }
        for value in values(headers, "x-amz-checksum-sha256") {
            add("x-amz-checksum-sha256", single(Algorithm::Sha256, &value));
        }
        for value in values(headers, "x-goog-hash") {
            for part in value.split(',') {
                if let Some((name, encoded)) = part.trim().split_once('=')
                    && name.trim().eq_ignore_ascii_case("md5")
                {
                    add("x-goog-hash", single(Algorithm::Md5, encoded));
                }
            }
        }
    }
    found
        .into_iter()
        .max_by_key(|a| a.checksum.algorithm().strength())
}

/// The header name as a constant (for an announced digest read back from a state file).
pub(crate) fn header_name(name: &str) -> Option<&'static str> {
    [
        "Repr-Digest",
        "Content-Digest",
        "Digest",
        "x-amz-checksum-sha256",
        "x-goog-hash",
    ]
    .into_iter()
    .find(|known| known.eq_ignore_ascii_case(name))
}

fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

/// RFC 9530 dictionary members `sha-256=:BASE64:` (unknown algorithms skipped).
fn structured(value: &str) -> Vec<Checksum> {
    value
        .split(',')
        .filter_map(|member| {
            let (name, rest) = member.trim().split_once('=')?;
            let algorithm = match name.trim() {
                "sha-256" => Algorithm::Sha256,
                "sha-512" => Algorithm::Sha512,
                _ => return None,
            };
            let encoded = rest.trim().strip_prefix(':')?.split(':').next()?;
            single(algorithm, encoded)
        })
        .collect()
}

/// RFC 3230 `SHA-256=BASE64, MD5=BASE64` (`SHA-512`, `SHA`, `MD5` understood).
fn legacy(value: &str) -> Vec<Checksum> {
    value
        .split(',')
        .filter_map(|member| {
            let (name, encoded) = member.trim().split_once('=')?;
            let algorithm = match name.trim().to_ascii_uppercase().as_str() {
                "SHA-256" => Algorithm::Sha256,
                "SHA-512" => Algorithm::Sha512,
                "SHA" => Algorithm::Sha1,
                "MD5" => Algorithm::Md5,
                _ => return None,
            };
            single(algorithm, encoded)
        })
        .collect()
}

/// One base64 digest of `algorithm`; `None` for anything else (a composite `…-N`, bad base64,
/// the wrong length).
fn single(algorithm: Algorithm, encoded: &str) -> Option<Checksum> {
    let encoded = encoded.trim();
    if encoded.contains('-')
        && encoded
            .rsplit('-')
            .next()
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    Checksum::new(algorithm, base64_decode(encoded)?).ok()
}

/// Standard base64 (padding optional).
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0u32;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 and MD5 of "hello", in base64.
    const SHA256: &str = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";
    const MD5: &str = "XUFAKrxLKna5cZ2REBfFkg==";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn every_form_gives_the_files_digest() {
        let hello = "sha-256=2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        for pairs in [
            vec![("repr-digest", format!("sha-256=:{SHA256}:"))],
            vec![(
                "content-digest",
                format!("sha-256=:{SHA256}:, unixsum=:AA==:"),
            )],
            vec![("digest", format!("SHA-256={SHA256}"))],
            vec![("x-amz-checksum-sha256", SHA256.to_owned())],
        ] {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let found = announced(&headers(&pairs), true).unwrap();
            assert_eq!(found.checksum.to_string(), hello, "{pairs:?}");
        }
        let goog = announced(
            &headers(&[("x-goog-hash", &format!("crc32c=n03x6A==, md5={MD5}"))]),
            true,
        )
        .unwrap();
        assert_eq!(
            goog.checksum.to_string(),
            "md5=5d41402abc4b2a76b9719d911017c592"
        );
    }

    #[test]
    fn partial_answers_count_only_a_representation_digest() {
        let content = headers(&[("content-digest", &format!("sha-256=:{SHA256}:"))]);
        assert!(announced(&content, false).is_none());
        let repr = headers(&[("repr-digest", &format!("sha-256=:{SHA256}:"))]);
        assert_eq!(announced(&repr, false).unwrap().header, "Repr-Digest");
    }

    #[test]
    fn composites_and_nonsense_are_ignored_and_the_strongest_wins() {
        assert!(announced(&headers(&[("x-amz-checksum-sha256", "AAAA-3")]), true).is_none());
        assert!(announced(&headers(&[("digest", "SHA-256=!!!")]), true).is_none());
        assert!(announced(&headers(&[("repr-digest", "sha-256=:AAAA:")]), true).is_none());
        let both = headers(&[("digest", &format!("MD5={MD5}, SHA-256={SHA256}"))]);
        assert_eq!(
            announced(&both, true).unwrap().checksum.algorithm(),
            Algorithm::Sha256
        );
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
    }
}
