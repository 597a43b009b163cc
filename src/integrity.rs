//! Checksums: parsing `sha-256=HEX` specifications and checksum files (`SHA256SUMS` and the
//! like), and the streaming hasher fed by the writer as bytes reach the `.part` file. MD5 and
//! SHA-1 are accepted for compatibility with the files mirrors and aria2 input files still
//! carry: they catch accidents (a truncated or corrupted transfer), not attackers.

use std::fmt;
use std::str::FromStr;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};

use crate::Error;

/// A supported digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256 (32-byte digest).
    Sha256,
    /// SHA-512 (64-byte digest).
    Sha512,
    /// SHA-1 (20-byte digest); against accidents only.
    Sha1,
    /// MD5 (16-byte digest); against accidents only.
    Md5,
}

impl Algorithm {
    /// The name used in specifications and messages: `sha-256` or `sha-512`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha-256",
            Self::Sha512 => "sha-512",
            Self::Sha1 => "sha-1",
            Self::Md5 => "md5",
        }
    }

    /// The digest's length in bytes.
    #[must_use]
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
            Self::Sha1 => 20,
            Self::Md5 => 16,
        }
    }

    /// The algorithm of a name as written in specifications, sums files and HTTP headers
    /// (`sha-256`, `SHA256`, `sha-1`, `MD5`, ...).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha-256" | "sha256" => Some(Self::Sha256),
            "sha-512" | "sha512" => Some(Self::Sha512),
            "sha-1" | "sha1" => Some(Self::Sha1),
            "md5" | "md-5" => Some(Self::Md5),
            _ => None,
        }
    }

    /// A rank for choosing among digests of one file: SHA-512 over SHA-256 over SHA-1 over MD5.
    pub(crate) fn strength(self) -> u8 {
        match self {
            Self::Sha512 => 4,
            Self::Sha256 => 3,
            Self::Sha1 => 2,
            Self::Md5 => 1,
        }
    }

    /// Whether the algorithm resists a deliberate forgery (SHA-256, SHA-512).
    #[must_use]
    pub fn is_strong(self) -> bool {
        matches!(self, Self::Sha256 | Self::Sha512)
    }

    /// The algorithm whose hex digests are `len` characters long.
    fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            32 => Some(Self::Md5),
            40 => Some(Self::Sha1),
            64 => Some(Self::Sha256),
            128 => Some(Self::Sha512),
            _ => None,
        }
    }
}

/// A digest of a file, with its algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checksum {
    algorithm: Algorithm,
    bytes: Vec<u8>,
}

impl Checksum {
    /// A checksum from raw digest bytes.
    ///
    /// # Errors
    /// [`Error::InvalidChecksum`] when the length does not fit the algorithm.
    pub fn new(algorithm: Algorithm, bytes: Vec<u8>) -> Result<Self, Error> {
        if bytes.len() != algorithm.digest_len() {
            return Err(Error::InvalidChecksum {
                spec: hex::encode(&bytes),
                reason: format!(
                    "{} needs {} hex digits, got {}",
                    algorithm.name(),
                    algorithm.digest_len() * 2,
                    bytes.len() * 2
                ),
            });
        }
        Ok(Self { algorithm, bytes })
    }

    /// The algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The digest as lower-case hex.
    #[must_use]
    pub fn hex(&self) -> String {
        hex::encode(&self.bytes)
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.algorithm.name(), self.hex())
    }
}

impl FromStr for Checksum {
    type Err = Error;

    /// Parses `sha-256=HEX`, `sha-512=HEX`, `sha-1=HEX` or `md5=HEX` (also `sha256`,
    /// `sha512`, `sha1`, and `:` instead of `=`), hex in either case.
    fn from_str(spec: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidChecksum {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, digest) = spec
            .split_once(['=', ':'])
            .ok_or_else(|| invalid("expected ALGORITHM=HEX, e.g. sha-256=<64 hex digits>"))?;
        let algorithm = Algorithm::from_name(name.trim())
            .ok_or_else(|| invalid("unknown algorithm (use sha-256, sha-512, sha-1 or md5)"))?;
        let bytes = hex::decode(digest.trim()).map_err(|_| invalid("the digest is not hex"))?;
        Self::new(algorithm, bytes).map_err(|_| {
            invalid(&format!(
                "{} needs {} hex digits",
                algorithm.name(),
                algorithm.digest_len() * 2
            ))
        })
    }
}

/// A streaming hasher for one algorithm. Updating it costs about 1 ms per MiB (SHA-256), so it
/// runs on the writer's blocking thread, never on an async worker.
#[derive(Clone)]
pub(crate) enum Hasher {
    Sha256(Box<Sha256>),
    Sha512(Box<Sha512>),
    Sha1(Box<Sha1>),
    Md5(Box<Md5>),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(Box::default()),
            Algorithm::Sha512 => Self::Sha512(Box::default()),
            Algorithm::Sha1 => Self::Sha1(Box::default()),
            Algorithm::Md5 => Self::Md5(Box::default()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Md5(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> Checksum {
        let (algorithm, bytes) = match self {
            Self::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Self::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
            Self::Sha1(h) => (Algorithm::Sha1, h.finalize().to_vec()),
            Self::Md5(h) => (Algorithm::Md5, h.finalize().to_vec()),
        };
        Checksum { algorithm, bytes }
    }
}

/// Parses a checksum file: GNU coreutils lines (`HEX  name`, `HEX *name`) and BSD lines
/// (`SHA256 (name) = HEX`), the algorithm told by the tag or the digest's length (MD5, SHA-1,
/// SHA-256, SHA-512). Blank lines and `#` comments are skipped; a leading `./` is dropped from
/// names. Returns `(name, checksum)` pairs in order, or every malformed line.
///
/// # Errors
/// The malformed lines, numbered.
pub fn parse_sums(text: &str) -> Result<Vec<(String, Checksum)>, Vec<crate::input::LineError>> {
    let mut sums = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match parse_sum_line(line) {
            Ok((name, checksum)) => sums.push((name, checksum)),
            Err(message) => errors.push(crate::input::LineError {
                line: index + 1,
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(sums)
    } else {
        Err(errors)
    }
}

fn parse_sum_line(line: &str) -> Result<(String, Checksum), String> {
    // BSD: `SHA256 (name) = HEX`.
    if let Some((tag, rest)) = line.split_once(" (")
        && let Some(algorithm) = Algorithm::from_name(tag.trim())
        && let Some((name, digest)) = rest.rsplit_once(") = ")
    {
        let bytes = hex::decode(digest.trim()).map_err(|_| format!("`{digest}` is not hex"))?;
        let checksum = Checksum::new(algorithm, bytes).map_err(|e| e.to_string())?;
        return Ok((clean_name(name)?, checksum));
    }
    // GNU: `HEX  name` or `HEX *name` (binary mode).
    let (digest, name) = line
        .split_once(char::is_whitespace)
        .ok_or_else(|| "expected `DIGEST  NAME` or `ALGORITHM (NAME) = DIGEST`".to_owned())?;
    let algorithm = Algorithm::from_hex_len(digest.len())
        .ok_or_else(|| format!("`{digest}` is not an MD5, SHA-1, SHA-256 or SHA-512 digest"))?;
    let bytes = hex::decode(digest).map_err(|_| format!("`{digest}` is not hex"))?;
    let checksum = Checksum::new(algorithm, bytes).map_err(|e| e.to_string())?;
    let name = name.strip_prefix([' ', '*']).unwrap_or(name);
    Ok((clean_name(name)?, checksum))
}

fn clean_name(name: &str) -> Result<String, String> {
    let name = name.strip_prefix("./").unwrap_or(name);
    if name.is_empty() {
        return Err("no file name".into());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn specifications_parse_in_their_common_spellings() {
        for spec in [
            format!("sha-256={EMPTY_SHA256}"),
            format!("SHA256={}", EMPTY_SHA256.to_uppercase()),
            format!("sha256:{EMPTY_SHA256}"),
        ] {
            let checksum: Checksum = spec.parse().unwrap();
            assert_eq!(checksum.algorithm(), Algorithm::Sha256);
            assert_eq!(checksum.hex(), EMPTY_SHA256);
        }
    }

    #[test]
    fn bad_specifications_say_why() {
        let cases = [
            ("crc32=abc", "unknown algorithm"),
            ("md5=abc", "not hex"),
            ("sha-256=zz", "not hex"),
            ("sha-256=abcd", "64 hex digits"),
            ("sha-512=abcd", "128 hex digits"),
            ("abcdef", "ALGORITHM=HEX"),
        ];
        for (spec, reason) in cases {
            let err = spec.parse::<Checksum>().unwrap_err().to_string();
            assert!(err.contains(reason), "{spec}: {err}");
        }
    }

    #[test]
    fn hashing_in_pieces_equals_hashing_at_once() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for algorithm in [
            Algorithm::Sha256,
            Algorithm::Sha512,
            Algorithm::Sha1,
            Algorithm::Md5,
        ] {
            let mut whole = Hasher::new(algorithm);
            whole.update(&data);
            let mut pieces = Hasher::new(algorithm);
            for chunk in data.chunks(777) {
                pieces.update(chunk);
            }
            assert_eq!(whole.finish(), pieces.finish());
        }
        assert_eq!(Hasher::new(Algorithm::Sha256).finish().hex(), EMPTY_SHA256);
        assert_eq!(
            Hasher::new(Algorithm::Md5).finish().hex(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            Hasher::new(Algorithm::Sha1).finish().hex(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }

    #[test]
    fn sums_files_in_gnu_and_bsd_forms() {
        let text = format!(
            "# SHA256SUMS\n{EMPTY_SHA256}  a.iso\n{EMPTY_SHA256} *./b/c.bin\n\n\
             SHA256 (d e.txt) = {EMPTY_SHA256}\n\
             MD5 (m.bin) = d41d8cd98f00b204e9800998ecf8427e\n\
             da39a3ee5e6b4b0d3255bfef95601890afd80709  s1.bin\n"
        );
        let sums = parse_sums(&text).unwrap();
        let names: Vec<(&str, &str)> = sums
            .iter()
            .map(|(n, c)| (n.as_str(), c.algorithm().name()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a.iso", "sha-256"),
                ("b/c.bin", "sha-256"),
                ("d e.txt", "sha-256"),
                ("m.bin", "md5"),
                ("s1.bin", "sha-1"),
            ]
        );
        let errors = parse_sums("abc  x\nnot-a-line\n").unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }
}
