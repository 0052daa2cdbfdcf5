//! A set of u128 values kept as coalesced closed intervals, so memory follows the number of
//! runs, not the size of the space, and "first value not in the set at or after x" is one
//! ordered-map lookup.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntervalSet {
    /// start → end (inclusive); no two intervals touch or overlap.
    runs: BTreeMap<u128, u128>,
    len: u128,
}

impl IntervalSet {
    pub fn new() -> IntervalSet {
        IntervalSet::default()
    }

    /// How many values the set holds.
    pub fn len(&self) -> u128 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    fn run_containing(&self, value: u128) -> Option<(u128, u128)> {
        self.runs
            .range(..=value)
            .next_back()
            .filter(|(_, end)| **end >= value)
            .map(|(start, end)| (*start, *end))
    }

    pub fn contains(&self, value: u128) -> bool {
        self.run_containing(value).is_some()
    }

    /// Adds `[start, end]`; returns how many values were new.
    pub fn insert_range(&mut self, start: u128, end: u128) -> u128 {
        if start > end {
            return 0;
        }
        let covered = self.count_in(start, end);
        let mut new_start = start;
        let mut new_end = end;
        // A run that starts before and reaches `start - 1` or beyond joins the new one.
        if let Some((run_start, run_end)) = self.runs.range(..start).next_back().map(|(s, e)| (*s, *e)) {
            if run_end.saturating_add(1) >= start {
                new_start = run_start;
                new_end = new_end.max(run_end);
                self.runs.remove(&run_start);
            }
        }
        // So does every run that starts inside or right after it.
        loop {
            let limit = new_end.saturating_add(1);
            let next = self.runs.range(new_start..=limit).next().map(|(s, e)| (*s, *e));
            let Some((run_start, run_end)) = next else {
                break;
            };
            new_end = new_end.max(run_end);
            self.runs.remove(&run_start);
        }
        self.runs.insert(new_start, new_end);
        let added = (end - start + 1) - covered;
        self.len += added;
        added
    }

    pub fn insert(&mut self, value: u128) -> bool {
        self.insert_range(value, value) == 1
    }

    /// Removes one value; returns whether it was present.
    pub fn remove(&mut self, value: u128) -> bool {
        let Some((start, end)) = self.run_containing(value) else {
            return false;
        };
        self.runs.remove(&start);
        if start < value {
            self.runs.insert(start, value - 1);
        }
        if value < end {
            self.runs.insert(value + 1, end);
        }
        self.len -= 1;
        true
    }

    /// The first value in `[from, limit]` that is not in the set.
    pub fn first_absent_from(&self, from: u128, limit: u128) -> Option<u128> {
        if from > limit {
            return None;
        }
        let candidate = match self.run_containing(from) {
            Some((_, end)) => end.checked_add(1)?,
            None => from,
        };
        (candidate <= limit).then_some(candidate)
    }

    /// How many values of `[start, end]` the set holds.
    pub fn count_in(&self, start: u128, end: u128) -> u128 {
        let mut count = 0;
        if let Some(run_end) = self.runs.range(..start).next_back().map(|(_, e)| *e) {
            if run_end >= start {
                count += run_end.min(end) - start + 1;
            }
        }
        for (run_start, run_end) in self.runs.range(start..=end) {
            count += (*run_end).min(end) - run_start + 1;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn coalesces_and_splits() {
        let mut set = IntervalSet::new();
        assert!(set.insert(5));
        assert!(set.insert(7));
        assert!(set.insert(6));
        assert_eq!(set.runs(), 1);
        assert!(!set.insert(6));
        assert_eq!(set.len(), 3);
        assert!(set.remove(6));
        assert_eq!(set.runs(), 2);
        assert_eq!(set.first_absent_from(5, 10), Some(6));
        assert_eq!(set.first_absent_from(7, 7), None);
        assert_eq!(set.insert_range(0, 10), 9);
        assert_eq!(set.len(), 11);
        assert_eq!(set.runs(), 1);
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in prop::collection::vec((any::<bool>(), 0u128..64, 0u128..8), 1..200)) {
            let mut set = IntervalSet::new();
            let mut model = BTreeSet::new();
            for (insert, value, width) in ops {
                if insert {
                    let added = set.insert_range(value, value + width);
                    let before = model.len();
                    model.extend(value..=value + width);
                    prop_assert_eq!(added, (model.len() - before) as u128);
                } else {
                    prop_assert_eq!(set.remove(value), model.remove(&value));
                }
                prop_assert_eq!(set.len(), model.len() as u128);
                for probe in 0..80u128 {
                    prop_assert_eq!(set.contains(probe), model.contains(&probe));
                    let expected = (probe..=75).find(|v| !model.contains(v));
                    prop_assert_eq!(set.first_absent_from(probe, 75), expected);
                }
                prop_assert_eq!(set.count_in(10, 40), model.range(10..=40).count() as u128);
            }
        }
    }
}
