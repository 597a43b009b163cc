//! Which files of a source a sync looks after: `--include`/`--exclude` globs and the shard.

/// `--include`/`--exclude` globs: `*` and `?` stay within a path segment, `**` crosses them. A
/// pattern without `/` applies to the file name, one with `/` to the whole relative path;
/// `exclude` wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Filters {
    /// Filters from include and exclude patterns (no include pattern: everything).
    #[must_use]
    pub fn new(include: &[String], exclude: &[String]) -> Self {
        Self {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
        }
    }

    /// Whether `path` (relative, `/`-separated) is kept.
    #[must_use]
    pub fn accepts(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        let matches = |pattern: &String| {
            let subject = if pattern.contains('/') { path } else { name };
            glob_match(pattern.as_bytes(), subject.as_bytes())
        };
        (self.include.is_empty() || self.include.iter().any(matches))
            && !self.exclude.iter().any(matches)
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) if rest.first() == Some(&b'*') => {
            let rest = rest[1..].strip_prefix(b"/").unwrap_or(&rest[1..]);
            (0..=text.len()).any(|skip| glob_match(rest, &text[skip..]))
        }
        Some((b'*', rest)) => (0..=text.len())
            .take_while(|skip| !text[..*skip].contains(&b'/'))
            .any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => text
            .split_first()
            .is_some_and(|(c, tail)| *c != b'/' && glob_match(rest, tail)),
        Some((c, rest)) => text
            .split_first()
            .is_some_and(|(t, tail)| t == c && glob_match(rest, tail)),
    }
}

/// Shard K of N: the paths whose FNV-1a 64-bit hash (of the relative path as it is in the
/// mirror, UTF-8, `/`-separated) modulo N is K. Stable across machines, versions and runs, so
/// N machines split a job exactly once with no coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u64,
    count: u64,
}

impl Shard {
    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// A message when `count` is 0 or `index` is not below it.
    pub fn new(index: u64, count: u64) -> Result<Self, String> {
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= K < N"));
        }
        Ok(Self { index, count })
    }

    /// Parses `K/N`.
    ///
    /// # Errors
    /// A message saying what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed = text.split_once('/').and_then(|(k, n)| {
            Some((k.trim().parse::<u64>().ok()?, n.trim().parse::<u64>().ok()?))
        });
        match parsed {
            Some((k, n)) => Self::new(k, n),
            None => Err(format!("`{text}` must be K/N with 0 <= K < N (e.g. 0/4)")),
        }
    }

    /// Whether `path` belongs to this shard.
    #[must_use]
    pub fn contains(&self, path: &str) -> bool {
        path_hash(path) % self.count == self.index
    }

    /// `K`.
    #[must_use]
    pub fn index(&self) -> u64 {
        self.index
    }

    /// `N`.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// FNV-1a (64-bit) of the path's UTF-8 bytes.
#[must_use]
pub fn path_hash(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names_and_paths() {
        let cases = [
            ("*.iso", "debian.iso", true),
            ("*.iso", "a/b/debian.iso", true),
            ("*.iso", "debian.iso.sig", false),
            ("pool/*.deb", "pool/a.deb", true),
            ("pool/*.deb", "pool/x/a.deb", false),
            ("pool/**/*.deb", "pool/x/y/a.deb", true),
            ("pool/**", "pool/x/y/a.deb", true),
            ("?.txt", "a.txt", true),
            ("?.txt", "ab.txt", false),
            (".*", ".htaccess", true),
        ];
        for (pattern, path, expected) in cases {
            let filters = Filters::new(&[pattern.to_owned()], &[]);
            assert_eq!(filters.accepts(path), expected, "{pattern} ~ {path}");
        }
        let both = Filters::new(&["*.deb".into()], &["*-dbg*".into()]);
        assert!(both.accepts("a.deb"));
        assert!(!both.accepts("a-dbg.deb"));
    }

    #[test]
    fn shards_split_every_path_exactly_once() {
        let paths: Vec<String> = (0..1000)
            .map(|i| format!("dir{}/file{i}.bin", i % 7))
            .collect();
        for n in [1, 2, 3, 8] {
            let mut seen = vec![0; paths.len()];
            for k in 0..n {
                let shard = Shard::new(k, n).unwrap();
                for (i, path) in paths.iter().enumerate() {
                    if shard.contains(path) {
                        seen[i] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&count| count == 1), "n = {n}");
        }
        assert_eq!(
            path_hash("a"),
            0xaf63_dc4c_8601_ec8c,
            "FNV-1a, as documented"
        );
        assert!(Shard::parse("4/4").is_err() && Shard::parse("1/0").is_err());
        assert_eq!(Shard::parse("2/4").unwrap(), Shard::new(2, 4).unwrap());
    }
}
