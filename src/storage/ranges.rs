//! A set of byte ranges, kept sorted and merged: which parts of a `.part` file hold data.

use serde::{Deserialize, Serialize};

/// Sorted, non-overlapping, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// Records `[start, end)` as present, merging with neighbours.
    pub(crate) fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Fast path for the common sequential case: extend the last range.
        if let Some(last) = self.0.last_mut()
            && last.0 <= start
            && start <= last.1
        {
            last.1 = last.1.max(end);
            return;
        }
        let (mut new_start, mut new_end) = (start, end);
        let mut merged = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(s, e) in &self.0 {
            if e < new_start {
                merged.push((s, e));
            } else if new_end < s {
                if !placed {
                    merged.push((new_start, new_end));
                    placed = true;
                }
                merged.push((s, e));
            } else {
                new_start = new_start.min(s);
                new_end = new_end.max(e);
            }
        }
        if !placed {
            merged.push((new_start, new_end));
        }
        self.0 = merged;
    }

    /// Whether no byte is present.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many bytes are present, in all ranges.
    pub(crate) fn covered(&self) -> u64 {
        self.0.iter().map(|(start, end)| end - start).sum()
    }

    /// One past the last present byte (0 when nothing is present).
    pub(crate) fn end(&self) -> u64 {
        self.0.last().map_or(0, |(_, end)| *end)
    }

    /// Where the first present range after `offset` begins (the end of the gap at `offset`).
    pub(crate) fn next_start_after(&self, offset: u64) -> Option<u64> {
        self.0
            .iter()
            .map(|(start, _)| *start)
            .find(|start| *start > offset)
    }

    /// Length of the data present from offset 0 without a gap.
    pub(crate) fn contiguous_prefix(&self) -> u64 {
        match self.0.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// Keeps only what lies below `limit` (for a file shorter than the state claims).
    pub(crate) fn clip(&mut self, limit: u64) {
        self.0.retain(|&(start, _)| start < limit);
        if let Some(last) = self.0.last_mut() {
            last.1 = last.1.min(limit);
        }
    }

    /// The ranges of `[0, total)` that are not in the set, in order.
    pub(crate) fn gaps(&self, total: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut cursor = 0;
        for &(start, end) in &self.0 {
            if start >= total {
                break;
            }
            if start > cursor {
                gaps.push((cursor, start));
            }
            cursor = cursor.max(end);
        }
        if cursor < total {
            gaps.push((cursor, total));
        }
        gaps
    }

    /// Whether the ranges are sorted, merged and non-empty (for a state file read from disk).
    pub(crate) fn is_well_formed(&self) -> bool {
        self.0.iter().all(|&(s, e)| s < e) && self.0.windows(2).all(|w| w[0].1 < w[1].0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_merge_in_any_order() {
        let mut set = RangeSet::default();
        set.insert(10, 20);
        set.insert(30, 40);
        set.insert(0, 5);
        assert_eq!(set.0, vec![(0, 5), (10, 20), (30, 40)]);
        set.insert(5, 10);
        assert_eq!(set.0, vec![(0, 20), (30, 40)]);
        set.insert(15, 35);
        assert_eq!(set.0, vec![(0, 40)]);
        assert_eq!(set.contiguous_prefix(), 40);
        set.insert(40, 41);
        assert_eq!(set.0, vec![(0, 41)]);
    }

    #[test]
    fn a_gap_at_zero_means_no_prefix() {
        let mut set = RangeSet::default();
        set.insert(1, 10);
        assert_eq!(set.contiguous_prefix(), 0);
        set.insert(3, 3);
        assert_eq!(set.0, vec![(1, 10)]);
    }

    #[test]
    fn clipping_drops_what_the_file_does_not_hold() {
        let mut set = RangeSet(vec![(0, 10), (20, 30)]);
        set.clip(25);
        assert_eq!(set.0, vec![(0, 10), (20, 25)]);
        set.clip(15);
        assert_eq!(set.0, vec![(0, 10)]);
    }

    #[test]
    fn gaps_are_what_is_missing_below_the_total() {
        let set = RangeSet(vec![(0, 10), (20, 30), (40, 60)]);
        assert_eq!(set.gaps(50), vec![(10, 20), (30, 40)]);
        assert_eq!(set.gaps(70), vec![(10, 20), (30, 40), (60, 70)]);
        assert_eq!(RangeSet::default().gaps(5), vec![(0, 5)]);
        assert_eq!(RangeSet(vec![(0, 5)]).gaps(5), vec![]);
        assert_eq!(RangeSet(vec![(3, 5)]).gaps(5), vec![(0, 3)]);
    }

    #[test]
    fn malformed_sets_are_recognised() {
        assert!(RangeSet(vec![(0, 1), (2, 3)]).is_well_formed());
        assert!(!RangeSet(vec![(2, 3), (0, 1)]).is_well_formed());
        assert!(!RangeSet(vec![(0, 2), (2, 3)]).is_well_formed());
        assert!(!RangeSet(vec![(5, 5)]).is_well_formed());
    }
}
