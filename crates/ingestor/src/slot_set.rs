//! A set of the log's segment-local series ids, which are memstore slot indices (dense from
//! 0): one bit an id, instead of a hash set's probe and its five bytes an entry. The write
//! path asks it once for every point of every batch (is the series defined in this
//! segment?) and adds every new series. It holds a bit for every slot index up to the
//! largest added and never shrinks: 1.25 MiB for 10M slots (the default series limit),
//! emptied (not freed) at each new segment.

/// See the module documentation.
#[derive(Debug, Default, Clone)]
pub(crate) struct SlotSet {
    words: Vec<u64>,
}

impl SlotSet {
    /// Whether `id` is in the set.
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.words.get(id as usize / 64).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Adds `id`; returns whether it was not in the set yet.
    pub(crate) fn insert(&mut self, id: u32) -> bool {
        let word = id as usize / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1 << (id % 64);
        let new = self.words[word] & bit == 0;
        self.words[word] |= bit;
        new
    }

    /// Removes `id` (the set keeps its memory).
    pub(crate) fn remove(&mut self, id: u32) {
        if let Some(w) = self.words.get_mut(id as usize / 64) {
            *w &= !(1 << (id % 64));
        }
    }

    /// Empties the set, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.words.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::SlotSet;

    #[derive(Debug, Clone)]
    enum Step {
        Insert(u32),
        Remove(u32),
        Clear,
    }

    fn step() -> impl Strategy<Value = Step> {
        // Ids around word boundaries and far apart.
        let id = prop_oneof![0u32..200, (0u32..4).prop_map(|w| w * 64 + 63), Just(100_000)];
        prop_oneof![
            5 => id.clone().prop_map(Step::Insert),
            2 => id.prop_map(Step::Remove),
            1 => Just(Step::Clear),
        ]
    }

    proptest! {
        /// Against a `BTreeSet` through any inserts, removes and clears.
        #[test]
        fn matches_a_set(steps in prop::collection::vec(step(), 1..200)) {
            let mut set = SlotSet::default();
            let mut model = BTreeSet::new();
            for s in steps {
                match s {
                    Step::Insert(id) => prop_assert_eq!(set.insert(id), model.insert(id)),
                    Step::Remove(id) => {
                        set.remove(id);
                        model.remove(&id);
                    }
                    Step::Clear => {
                        set.clear();
                        model.clear();
                    }
                }
                for id in (0..260).chain([99_999, 100_000, 100_001, u32::MAX]) {
                    prop_assert_eq!(set.contains(id), model.contains(&id), "id {}", id);
                }
            }
        }
    }
}
