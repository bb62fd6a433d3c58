//! [`SlotRuns`]: a set of slot indexes kept as runs of consecutive indexes, for the slots
//! of deleted series. A time-to-live expiry deletes series in slot order, so a million
//! deleted slots are a few runs, not a million entries.

/// Slot indexes, as runs `(first, count)`. Each index is in at most one run.
#[derive(Debug, Default)]
pub(crate) struct SlotRuns {
    runs: Vec<(u32, u32)>,
    len: usize,
}

impl SlotRuns {
    /// Indexes held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `id` (not held yet): to the last run when it follows it.
    pub(crate) fn push(&mut self, id: u32) {
        match self.runs.last_mut() {
            Some((first, count)) if u64::from(*first) + u64::from(*count) == u64::from(id) => {
                *count += 1;
            }
            _ => self.runs.push((id, 1)),
        }
        self.len += 1;
    }

    /// Moves every index of `other` here, and orders the runs for [`SlotRuns::pop_lowest`]
    /// (highest first, touching runs joined).
    pub(crate) fn take_all(&mut self, other: &mut SlotRuns) {
        self.runs.append(&mut other.runs);
        self.len += std::mem::take(&mut other.len);
        self.runs.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
        let mut joined: Vec<(u32, u32)> = Vec::with_capacity(self.runs.len());
        for &(first, count) in &self.runs {
            match joined.last_mut() {
                Some((higher, n)) if u64::from(first) + u64::from(count) == u64::from(*higher) => {
                    *higher = first;
                    *n += count;
                }
                _ => joined.push((first, count)),
            }
        }
        self.runs = joined;
    }

    /// Takes the lowest index, if the runs were ordered by [`SlotRuns::take_all`] (and only
    /// popped since).
    pub(crate) fn pop_lowest(&mut self) -> Option<u32> {
        let (first, count) = self.runs.last_mut()?;
        let id = *first;
        if *count == 1 {
            self.runs.pop();
        } else {
            *first += 1;
            *count -= 1;
        }
        self.len -= 1;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_and_give_the_lowest_first() {
        let mut deleted = SlotRuns::default();
        for id in [10, 11, 12, 3, 4, 20, 13, 2, u32::MAX] {
            deleted.push(id);
        }
        assert_eq!(deleted.len(), 9);
        assert_eq!(deleted.runs, vec![(10, 3), (3, 2), (20, 1), (13, 1), (2, 1), (u32::MAX, 1)]);
        let mut free = SlotRuns::default();
        free.push(5);
        free.take_all(&mut deleted);
        assert_eq!((deleted.len(), free.len()), (0, 10));
        // 2..=5 and 10..=13 each joined into one run.
        assert_eq!(free.runs, vec![(u32::MAX, 1), (20, 1), (10, 4), (2, 4)]);
        let popped: Vec<u32> = std::iter::from_fn(|| free.pop_lowest()).collect();
        assert_eq!(popped, vec![2, 3, 4, 5, 10, 11, 12, 13, 20, u32::MAX]);
        assert_eq!(free.len(), 0);
    }
}
