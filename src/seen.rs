//! The outputs a batch has seen, in 16 bytes each: a list of a million URLs must not need a
//! hash table of a million entries (with its empty buckets and the doubling on growth, two to
//! three times that).
//!
//! Each entry is the output path's 64-bit fingerprint and, packed into a second 64-bit word,
//! the 32-bit fingerprint of the URL that writes it and the index of the first request that
//! named it. New entries go to a small hash table; when it is full they are sorted into one
//! sorted vector (in place, so growing it never holds two copies), which is searched by
//! bisection. A false match needs two different URLs with the same output path whose 32-bit
//! fingerprints collide as well.

use std::collections::HashMap;

/// New entries kept in the hash table before they are sorted into the vector.
const RECENT: usize = 1 << 16;

#[derive(Debug, Default)]
pub(crate) struct SeenOutputs {
    sorted: Vec<(u64, u64)>,
    recent: HashMap<u64, u64>,
}

/// What was recorded for an output: its URL's fingerprint and the first index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) url: u32,
    pub(crate) first: usize,
}

impl Seen {
    fn pack(self) -> u64 {
        let first = u32::try_from(self.first).unwrap_or(u32::MAX);
        (u64::from(self.url) << 32) | u64::from(first)
    }

    fn unpack(word: u64) -> Self {
        Self {
            url: u32::try_from(word >> 32).unwrap_or(u32::MAX),
            first: usize::try_from(word & u64::from(u32::MAX)).unwrap_or(usize::MAX),
        }
    }
}

/// A URL's 64-bit fingerprint, folded to the 32 bits kept.
pub(crate) fn fold(url: u64) -> u32 {
    u32::try_from((url >> 32) ^ (url & u64::from(u32::MAX))).unwrap_or(u32::MAX)
}

impl SeenOutputs {
    pub(crate) fn get(&self, output: u64) -> Option<Seen> {
        if let Some(word) = self.recent.get(&output) {
            return Some(Seen::unpack(*word));
        }
        self.sorted
            .binary_search_by_key(&output, |(key, _)| *key)
            .ok()
            .map(|at| Seen::unpack(self.sorted[at].1))
    }

    pub(crate) fn contains(&self, output: u64) -> bool {
        self.get(output).is_some()
    }

    /// Records `output` (which must not be recorded yet).
    pub(crate) fn insert(&mut self, output: u64, seen: Seen) {
        self.recent.insert(output, seen.pack());
        if self.recent.len() >= RECENT {
            self.sorted.extend(self.recent.drain());
            self.sorted.sort_unstable_by_key(|(key, _)| *key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_before_and_after_they_are_sorted_in() {
        let mut seen = SeenOutputs::default();
        let count = 3 * RECENT + 17;
        for i in 0..count {
            let output = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(!seen.contains(output));
            seen.insert(
                output,
                Seen {
                    url: i as u32,
                    first: i,
                },
            );
        }
        assert!(seen.sorted.len() >= 3 * RECENT);
        for i in 0..count {
            let output = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(
                seen.get(output),
                Some(Seen {
                    url: i as u32,
                    first: i
                })
            );
        }
        assert_eq!(seen.get(1), None);
    }

    #[test]
    fn a_huge_index_saturates_instead_of_wrapping() {
        let seen = Seen {
            url: 7,
            first: usize::MAX,
        };
        assert_eq!(Seen::unpack(seen.pack()).first, u32::MAX as usize);
        assert_eq!(Seen::unpack(seen.pack()).url, 7);
    }
}
