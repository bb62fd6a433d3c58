//! Series handles by the hash of their key: an open-addressing table with linear probing,
//! 8 bytes per entry, written for the store's one job (find the candidates for a hash,
//! insert, remove) and for looking up a whole batch at once.
//!
//! An entry packs the top 32 bits of the key's hash (its tag) with the handle plus one
//! (0 marks an empty place). A hash's home place is the top bits of its hash, as many as the
//! table's size needs (at most 32, so the tag holds them and the table grows without the
//! keys). Several series may share a hash, or a tag: every candidate is checked against the
//! stored key by the caller. Removal shifts later entries back (no tombstones), so a probe
//! always ends at the first empty place.

/// The fewest places a table has once it has any.
const MIN_PLACES: usize = 16;

/// The most places a table has: a tag's 32 bits address them.
const MAX_PLACES: usize = 1 << 32;

/// See the module documentation.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyIndex {
    places: Vec<u64>,
    len: usize,
}

fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

fn entry(hash: u64, id: u32) -> u64 {
    debug_assert!(id < u32::MAX, "handle {id} has no entry (u32::MAX is never given out)");
    (u64::from(tag(hash)) << 32) | (u64::from(id) + 1)
}

fn entry_tag(e: u64) -> u32 {
    (e >> 32) as u32
}

fn entry_id(e: u64) -> u32 {
    // `e & 0xffff_ffff` is the handle plus one, at least 1 in a non-empty place.
    ((e & 0xffff_ffff) - 1) as u32
}

impl KeyIndex {
    /// Entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.places.len() - 1
    }

    /// The home place of a tag in a table of `places` (a power of two, at most 2^32).
    fn home(tag: u32, places: usize) -> usize {
        let bits = places.trailing_zeros();
        if bits == 0 { 0 } else { (tag >> (32 - bits)) as usize }
    }

    /// The handles stored under `hash`'s tag, in probe order (a superset of those stored
    /// under `hash`: the caller checks each against its key).
    pub(crate) fn candidates(&self, hash: u64) -> Candidates<'_> {
        let place =
            if self.places.is_empty() { 0 } else { Self::home(tag(hash), self.places.len()) };
        Candidates { index: self, place, tag: tag(hash), done: self.places.is_empty() }
    }

    /// Reads the home place of `hash` and returns it: for a batch, reading every key's home
    /// place first lets the processor fetch them from memory at the same time, before the
    /// lookups that depend on them.
    pub(crate) fn touch(&self, hash: u64) -> u64 {
        if self.places.is_empty() {
            return 0;
        }
        self.places[Self::home(tag(hash), self.places.len())]
    }

    /// Adds `id` under `hash` (the caller knows it is not there yet).
    pub(crate) fn insert(&mut self, hash: u64, id: u32) {
        // At most three quarters full: linear probes stay short.
        if (self.len + 1) * 4 > self.places.len() * 3 {
            self.grow();
        }
        self.put(entry(hash, id));
        self.len += 1;
    }

    fn put(&mut self, e: u64) {
        let mask = self.mask();
        let mut place = Self::home(entry_tag(e), self.places.len());
        while self.places[place] != 0 {
            place = (place + 1) & mask;
        }
        self.places[place] = e;
    }

    fn grow(&mut self) {
        self.grow_to((self.places.len() * 2).max(MIN_PLACES));
    }

    /// Grows the table at once to hold `additional` more entries without growing again
    /// (at most three quarters full): one rehash instead of one per doubling. Never beyond
    /// 2^32 places (what the tags address); the caller bounds `additional` by the memory it
    /// means to spend.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let wanted = self.len.saturating_add(additional).saturating_mul(4).div_ceil(3);
        let places =
            wanted.checked_next_power_of_two().unwrap_or(MAX_PLACES).clamp(MIN_PLACES, MAX_PLACES);
        if places > self.places.len() {
            self.grow_to(places);
        }
    }

    fn grow_to(&mut self, places: usize) {
        assert!(places <= MAX_PLACES, "a key index of more than 2^32 places");
        let old = std::mem::replace(&mut self.places, vec![0; places]);
        for e in old.into_iter().filter(|&e| e != 0) {
            self.put(e);
        }
    }

    /// Removes `id`'s entry under `hash`; returns whether there was one.
    pub(crate) fn remove(&mut self, hash: u64, id: u32) -> bool {
        if self.places.is_empty() {
            return false;
        }
        let wanted = entry(hash, id);
        let mask = self.mask();
        let mut hole = Self::home(tag(hash), self.places.len());
        loop {
            match self.places[hole] {
                0 => return false,
                e if e == wanted => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        // Shift back each later entry of the run that may move into the hole (its home is
        // not cyclically after the hole), so that no probe meets an empty place too early.
        let mut next = (hole + 1) & mask;
        loop {
            let e = self.places[next];
            if e == 0 {
                break;
            }
            let home = Self::home(entry_tag(e), self.places.len());
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.places[hole] = e;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.places[hole] = 0;
        self.len -= 1;
        true
    }

    /// Places in the table.
    #[cfg(test)]
    pub(crate) fn places(&self) -> usize {
        self.places.len()
    }
}

/// See [`KeyIndex::candidates`].
pub(crate) struct Candidates<'a> {
    index: &'a KeyIndex,
    place: usize,
    tag: u32,
    done: bool,
}

impl Iterator for Candidates<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.done {
            return None;
        }
        let mask = self.index.mask();
        loop {
            let e = self.index.places[self.place];
            if e == 0 {
                self.done = true;
                return None;
            }
            self.place = (self.place + 1) & mask;
            if entry_tag(e) == self.tag {
                return Some(entry_id(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::*;

    fn found(index: &KeyIndex, hash: u64) -> BTreeSet<u32> {
        index.candidates(hash).collect()
    }

    #[test]
    fn an_empty_index_has_no_candidates_and_removes_nothing() {
        let mut index = KeyIndex::default();
        assert_eq!(index.candidates(42).count(), 0);
        assert_eq!(index.touch(42), 0);
        assert!(!index.remove(42, 1));
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn equal_hashes_and_equal_tags_are_all_candidates() {
        let mut index = KeyIndex::default();
        let same_tag = |low: u64| (0xdead_beef_u64 << 32) | low;
        index.insert(same_tag(1), 10);
        index.insert(same_tag(1), 11);
        index.insert(same_tag(2), 12);
        index.insert(7, 13);
        assert_eq!(found(&index, same_tag(1)), BTreeSet::from([10, 11, 12]));
        assert_eq!(found(&index, 7), BTreeSet::from([13]));
        assert!(index.remove(same_tag(1), 10));
        assert!(!index.remove(same_tag(1), 10), "removed once");
        assert_eq!(found(&index, same_tag(9)), BTreeSet::from([11, 12]));
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn it_grows_to_stay_at_most_three_quarters_full() {
        let mut index = KeyIndex::default();
        for i in 0..10_000u32 {
            index.insert(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
            assert!(index.len() * 4 <= index.places() * 3);
        }
        assert_eq!(index.places(), 16_384);
        for i in 0..10_000u32 {
            let h = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(found(&index, h).contains(&i), "{i}");
        }
    }

    #[test]
    fn a_reserved_index_takes_that_many_entries_without_growing_and_never_shrinks() {
        let mut index = KeyIndex::default();
        index.insert(1 << 40, 0);
        index.reserve(10_000);
        // 10,001 entries at most three quarters full: 13,335 places, rounded up.
        assert_eq!(index.places(), 16_384);
        assert!(found(&index, 1 << 40).contains(&0), "kept across the rehash");
        for i in 1..=10_000u32 {
            index.insert(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
        }
        assert_eq!(index.places(), 16_384, "no growth for what was reserved");
        index.insert(42, 10_001);
        assert_eq!(index.places(), 16_384, "room left below three quarters");
        index.reserve(5);
        assert_eq!(index.places(), 16_384, "enough room: unchanged");
        index.reserve(3_000);
        assert_eq!(index.places(), 32_768);
        // Exactly three quarters of a power of two: that power, not the next one.
        let mut exact = KeyIndex::default();
        exact.reserve(3 << 10);
        assert_eq!(exact.places(), 4 << 10);
        for i in 0..3u32 << 10 {
            exact.insert(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15), i);
        }
        assert_eq!(exact.places(), 4 << 10, "filled to three quarters without growing");
        for i in 1..=10_000u32 {
            let h = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(found(&index, h).contains(&i), "{i}");
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Insert(u64),
        Remove(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        // Few distinct tags and home places: long runs, wrap-around, shared hashes.
        let hash = (0u64..64, 0u64..4).prop_map(|(t, low)| (t.rotate_right(6)) | low);
        prop_oneof![3 => hash.prop_map(Step::Insert), 2 => any::<usize>().prop_map(Step::Remove)]
    }

    proptest! {
        /// Against a plain map: after any inserts and removes, the candidates of a hash hold
        /// every handle stored under it, and no removed one.
        #[test]
        fn matches_a_map_through_inserts_and_removes(steps in prop::collection::vec(step(), 1..400)) {
            let mut index = KeyIndex::default();
            let mut model: HashMap<u32, u64> = HashMap::new();
            let mut next = 0u32;
            for s in steps {
                match s {
                    Step::Insert(h) => {
                        index.insert(h, next);
                        model.insert(next, h);
                        next += 1;
                    }
                    Step::Remove(pick) if !model.is_empty() => {
                        let mut ids: Vec<u32> = model.keys().copied().collect();
                        ids.sort_unstable();
                        let id = ids[pick % ids.len()];
                        let h = model.remove(&id).expect("picked from the model");
                        prop_assert!(index.remove(h, id));
                        prop_assert!(!index.remove(h, id));
                    }
                    Step::Remove(_) => {}
                }
                prop_assert_eq!(index.len(), model.len());
                for (&id, &h) in &model {
                    let candidates = found(&index, h);
                    prop_assert!(candidates.contains(&id), "{} missing under {:#x}", id, h);
                    for c in candidates {
                        // A candidate shares the tag, and is stored.
                        prop_assert!(model.get(&c).is_some_and(|&other| other >> 32 == h >> 32));
                    }
                }
            }
        }
    }
}
