//! Checksums: parsing `sha-256=HEX` specifications, and the streaming hasher fed by the writer
//! as bytes reach the `.part` file.

use std::fmt;
use std::str::FromStr;

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
}

impl Algorithm {
    /// The name used in specifications and messages: `sha-256` or `sha-512`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha-256",
            Self::Sha512 => "sha-512",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha-256" | "sha256" => Some(Self::Sha256),
            "sha-512" | "sha512" => Some(Self::Sha512),
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

    /// Parses `sha-256=HEX` or `sha-512=HEX` (also `sha256`, `sha512`, and `:` instead of `=`),
    /// hex in either case.
    fn from_str(spec: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidChecksum {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, digest) = spec
            .split_once(['=', ':'])
            .ok_or_else(|| invalid("expected ALGORITHM=HEX, e.g. sha-256=<64 hex digits>"))?;
        let algorithm = Algorithm::from_name(name.trim())
            .ok_or_else(|| invalid("unknown algorithm (use sha-256 or sha-512)"))?;
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
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Self::Sha256(Box::default()),
            Algorithm::Sha512 => Self::Sha512(Box::default()),
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> Checksum {
        match self {
            Self::Sha256(h) => Checksum {
                algorithm: Algorithm::Sha256,
                bytes: h.finalize().to_vec(),
            },
            Self::Sha512(h) => Checksum {
                algorithm: Algorithm::Sha512,
                bytes: h.finalize().to_vec(),
            },
        }
    }
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
            ("md5=abc", "unknown algorithm"),
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
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut whole = Hasher::new(algorithm);
            whole.update(&data);
            let mut pieces = Hasher::new(algorithm);
            for chunk in data.chunks(777) {
                pieces.update(chunk);
            }
            assert_eq!(whole.finish(), pieces.finish());
        }
        assert_eq!(Hasher::new(Algorithm::Sha256).finish().hex(), EMPTY_SHA256);
    }
}
