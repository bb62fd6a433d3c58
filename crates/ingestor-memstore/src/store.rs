//! The store: interning, chunked copy-on-write series slots, the label index, apply.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ingestor_codec::{Lsn, MetricKind, Op, SeriesKey, Timestamp};

use crate::error::MemstoreError;
use crate::key_batch::KeyBatch;
use crate::key_index::KeyIndex;
use crate::selector::{MatchOp, Selector};
use crate::series_ref::{SeriesRef, SlotPoint};
use crate::slot_runs::SlotRuns;
use crate::state::{DEFAULT_BUCKETS, SeriesState};

/// Series per copy-on-write chunk. A snapshot shares every chunk; the writer copies only the
/// chunks it changes while the snapshot is being written.
const CHUNK: usize = 1024;
const CHUNK_SHIFT: u32 = 10;
/// Keys whose index places the batch lookups ([`Memstore::intern_all`],
/// [`Memstore::intern_batch`]) read ahead at once: few enough that those places are still in
/// the processor's cache when their lookups come.
const TOUCHED: usize = 256;
const _: () = assert!(1 << CHUNK_SHIFT == CHUNK);

/// The symbol of the reserved label name under which metric names are indexed.
const NAME_LABEL: &str = "__name__";

/// The largest [`MemstoreConfig::max_series`]: 3 x 2^30, what the key index holds at most
/// (2^32 places, at most three quarters full).
pub const MAX_SERIES_LIMIT: usize = 3 << 30;

/// Configuration of a [`Memstore`]. Every field documents its default.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct MemstoreConfig {
    /// The most series the store holds; a batch that would create more is refused whole.
    /// At most [`MAX_SERIES_LIMIT`]. Default: 10,000,000.
    pub max_series: usize,
    /// Upper bounds of histogram buckets for new histogram series, strictly increasing and
    /// finite (a `+Inf` bucket is implicit). Default: Prometheus' `DefBuckets`
    /// ([`DEFAULT_BUCKETS`]).
    pub histogram_bounds: Vec<f64>,
}

impl Default for MemstoreConfig {
    fn default() -> Self {
        MemstoreConfig { max_series: 10_000_000, histogram_bounds: DEFAULT_BUCKETS.to_vec() }
    }
}

impl MemstoreConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`MemstoreError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), MemstoreError> {
        if self.max_series == 0 || self.max_series > MAX_SERIES_LIMIT {
            return Err(MemstoreError::InvalidConfig {
                field: "max_series",
                reason: format!("{} is outside 1 ..= {MAX_SERIES_LIMIT}", self.max_series),
            });
        }
        let bounds = &self.histogram_bounds;
        if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(MemstoreError::InvalidConfig {
                field: "histogram_bounds",
                reason: format!("{bounds:?} must be finite and strictly increasing"),
            });
        }
        Ok(())
    }
}

/// One series in a slot. Its key is in its chunk ([`Chunk::keys`]).
#[derive(Debug, Clone)]
struct Series {
    /// `None` until the first update (a series resolved to a handle but never written).
    state: Option<SeriesState>,
    last_update: Timestamp,
    /// The LSN of the last batch that changed it ([`Memstore::loaded`] for a series read
    /// from a snapshot): what [`Frozen::changed_since`] selects by.
    changed: Lsn,
    /// The slot's generation: how many series had the slot before this one.
    generation: u32,
    /// Where its key's symbols start in its chunk's [`Chunk::keys`].
    key_at: u32,
}

/// [`CHUNK`] slots of series, and the keys of the series in them.
///
/// The keys of a chunk's series are runs of one vector instead of an allocation each
/// (an `Arc<[u32]>` before): a slot takes 56 bytes instead of 72, a key its symbols and
/// their count instead of an allocation with a 16-byte header and the allocator's own
/// (about 40 bytes less a series in all: 204 -> 163 B/series resident after the bench's
/// open), no allocation per new series, and a chunk copied for a [`Frozen`] view copies the
/// vector instead of counting one more reference to each key.
#[derive(Debug, Clone, Default)]
struct Chunk {
    slots: Vec<Option<Series>>,
    /// Each series' key, from its [`Series::key_at`]: its length, then its symbols (metric
    /// name, then label name and value pairs in canonical order).
    keys: Vec<u32>,
    /// Entries of `keys` left by series removed since the last compaction; when they are
    /// more than half, the keys are written again without them.
    dead: usize,
}

/// A series in its slot, with its key.
#[derive(Clone, Copy)]
struct Stored<'a> {
    series: &'a Series,
    /// Its symbols: metric name, then label name and value pairs in canonical order.
    key: &'a [u32],
}

impl std::ops::Deref for Stored<'_> {
    type Target = Series;

    fn deref(&self) -> &Series {
        self.series
    }
}

impl Chunk {
    /// The key of `s`, a series of this chunk.
    fn key_of(&self, s: &Series) -> &[u32] {
        let at = s.key_at as usize;
        let len = self.keys[at] as usize;
        &self.keys[at + 1..at + 1 + len]
    }

    /// The series in slot `place`, if any.
    fn get(&self, place: usize) -> Option<Stored<'_>> {
        let series = self.slots.get(place)?.as_ref()?;
        Some(Stored { series, key: self.key_of(series) })
    }

    /// Every slot, with its series if it holds one.
    fn iter(&self) -> impl Iterator<Item = Option<Stored<'_>>> + '_ {
        self.slots
            .iter()
            .map(|s| s.as_ref().map(|series| Stored { series, key: self.key_of(series) }))
    }

    /// Adds a key; returns where it starts (for [`Series::key_at`]).
    fn push_key(&mut self, syms: &[u32]) -> u32 {
        let at = u32::try_from(self.keys.len()).expect("a chunk's keys fit 4 G symbols");
        self.keys.push(syms.len() as u32);
        self.keys.extend_from_slice(syms);
        at
    }

    /// Takes the series out of slot `place`, copying its key's symbols to `key`. Its key's
    /// entries become dead; the keys are compacted once the dead are more than half.
    fn take(&mut self, place: usize, key: &mut Vec<u32>) -> Option<Series> {
        let series = self.slots.get_mut(place)?.take()?;
        key.clear();
        key.extend_from_slice(self.key_of(&series));
        self.dead += 1 + key.len();
        if self.dead * 2 > self.keys.len() {
            self.compact_keys();
        }
        Some(series)
    }

    /// Writes the keys of the series still in the chunk again, without the dead entries.
    fn compact_keys(&mut self) {
        let mut keys = Vec::with_capacity(self.keys.len() - self.dead);
        for s in self.slots.iter_mut().flatten() {
            let at = s.key_at as usize;
            let len = self.keys[at] as usize;
            s.key_at = keys.len() as u32;
            keys.extend_from_slice(&self.keys[at..at + 1 + len]);
        }
        self.keys = keys;
        self.dead = 0;
    }
}

/// A hasher for the store's own integer ids and for keys that are already keyed hashes
/// (neither attacker-chosen): one multiply. Keys that come from users are hashed with
/// [`KeyHashBuilder`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Whether `a` and `b` are the same string: for the short strings of series keys, compared
/// inline (lengths, then at most two overlapping words) instead of by a call to `memcmp`,
/// which replay and snapshot load made ten times per series (9.4% of a snapshot load's
/// samples in `perf record`).
#[inline]
fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_ne_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// Builds [`IdHasher`]s, for maps keyed by series handles.
pub(crate) type IdHashBuilder = std::hash::BuildHasherDefault<IdHasher>;

/// Hashes what users choose (series keys, label strings): aHash, several times faster than
/// SipHash on short strings, keyed from the standard library's per-process random keys so
/// that nobody outside the process can aim collisions at one bucket.
pub(crate) type KeyHashBuilder = ahash::RandomState;

/// A [`KeyHashBuilder`] with fresh random keys.
pub(crate) fn key_hash_builder() -> KeyHashBuilder {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new();
    let key = |i: u64| random.hash_one(i);
    ahash::RandomState::with_seeds(key(0), key(1), key(2), key(3))
}

/// Strings stored once, shared by every series that uses them, and counted: a symbol that no
/// series key uses any more is dropped and its id given to the next new string, so that
/// series created and deleted over a long life (a time-to-live expiry of pod names) do not
/// keep their strings. They are kept in chunks of [`CHUNK`] shared with [`Frozen`] views: a
/// freeze shares every full chunk and copies only the last, partial one (O(symbols / 1,024));
/// the store copies a shared chunk before it changes a symbol in it.
#[derive(Debug, Clone)]
struct Symbols {
    chunks: Vec<Arc<Vec<Arc<str>>>>,
    ids: HashMap<Arc<str>, u32, KeyHashBuilder>,
    /// Uses of each symbol (by id): occurrences in series keys, plus one for symbols that
    /// stay for the store's life ([`NAME_LABEL`]). Zero for a free id.
    refs: Vec<u32>,
    /// Ids whose symbols were dropped, given out again before new ones.
    free: Vec<u32>,
    /// What a dropped symbol's place holds until its id is given out again.
    empty: Arc<str>,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            chunks: Vec::new(),
            ids: HashMap::with_hasher(key_hash_builder()),
            refs: Vec::new(),
            free: Vec::new(),
            empty: Arc::from(""),
        }
    }
}

impl Symbols {
    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    /// The id of `s`, stored if new; counts one more use of it.
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            // A count that reaches u32::MAX stays there: that string is kept for the store's
            // life (no wrap that would drop it while series use it).
            let refs = &mut self.refs[id as usize];
            *refs = refs.saturating_add(1);
            return id;
        }
        let s: Arc<str> = Arc::from(s);
        let id = match self.free.pop() {
            Some(id) => {
                let chunk = &mut self.chunks[(id >> CHUNK_SHIFT) as usize];
                Arc::make_mut(chunk)[id as usize & (CHUNK - 1)] = Arc::clone(&s);
                self.refs[id as usize] = 1;
                id
            }
            None => {
                let id = u32::try_from(self.refs.len()).expect("fewer symbols than 4 G");
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Arc::new(Vec::with_capacity(CHUNK)));
                }
                let last = self.chunks.last_mut().expect("just made sure");
                Arc::make_mut(last).push(Arc::clone(&s));
                self.refs.push(1);
                id
            }
        };
        self.ids.insert(s, id);
        id
    }

    /// Whether `id` is a symbol in use whose string is `text`.
    fn is_live(&self, id: u32, text: &str) -> bool {
        self.refs.get(id as usize).is_some_and(|&r| r > 0) && same_text(self.resolve(id), text)
    }

    /// Counts one more use of `id`, a symbol in use ([`Symbols::is_live`]); returns it.
    fn add_use(&mut self, id: u32) -> u32 {
        let refs = &mut self.refs[id as usize];
        debug_assert!(*refs > 0, "symbol {id} is not in use");
        *refs = refs.saturating_add(1);
        id
    }

    /// Counts one use of `id` less; the last use drops the string and frees the id.
    fn release(&mut self, id: u32) {
        let refs = &mut self.refs[id as usize];
        debug_assert!(*refs > 0, "symbol {id} released more often than interned");
        if *refs == u32::MAX {
            return; // Uses beyond counting: kept for the store's life.
        }
        *refs -= 1;
        if *refs > 0 {
            return;
        }
        let chunk = &mut self.chunks[(id >> CHUNK_SHIFT) as usize];
        let place = &mut Arc::make_mut(chunk)[id as usize & (CHUNK - 1)];
        let s = std::mem::replace(place, Arc::clone(&self.empty));
        self.ids.remove(&s);
        self.free.push(id);
    }

    /// Symbols stored (with a use).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn resolve(&self, id: u32) -> &str {
        &self.chunks[(id >> CHUNK_SHIFT) as usize][id as usize & (CHUNK - 1)]
    }

    /// A view of every symbol so far, in `room`'s memory: full chunks shared, the partial
    /// one copied. Allocates only if `room` is too small. Returns `partial` when there is
    /// no partial chunk to copy, for the caller to free after the lock.
    fn freeze_in(
        &self,
        mut chunks: Vec<Arc<Vec<Arc<str>>>>,
        mut partial: Arc<Vec<Arc<str>>>,
    ) -> (FrozenSymbols, Option<Arc<Vec<Arc<str>>>>) {
        chunks.clear();
        chunks.extend(self.chunks.iter().cloned());
        if let Some(last) = chunks.last_mut().filter(|c| c.len() < CHUNK) {
            // The store goes on pushing to its partial chunk; the view keeps its own copy,
            // so that the store's push does not copy it on the next intern.
            let copy = Arc::get_mut(&mut partial).expect("the room's own");
            copy.clear();
            copy.extend(last.iter().cloned());
            *last = partial;
            return (FrozenSymbols(chunks), None);
        }
        (FrozenSymbols(chunks), Some(partial))
    }
}

/// The symbols of a [`Frozen`] view.
#[derive(Debug, Clone)]
struct FrozenSymbols(Vec<Arc<Vec<Arc<str>>>>);

impl FrozenSymbols {
    fn resolve(&self, id: u32) -> &str {
        &self.0[(id >> CHUNK_SHIFT) as usize][id as usize & (CHUNK - 1)]
    }
}

/// The series with one label value, in no particular order (a reused slot joins at the
/// end). Removed series stay in `ids` (readers check the slot) until they are half of it;
/// then the list is compacted once: removing every series of a metric costs linear time, not
/// quadratic. A removed series' slot is not reused while any list holds it.
#[derive(Default)]
struct Postings {
    ids: Vec<u32>,
    /// Handles in `ids` whose series were removed.
    dead: usize,
}

impl Postings {
    /// Drops the slots that hold no series any more. A slot is reused only after every
    /// list that held it was compacted ([`Memstore::free_deleted_slots`]), so a slot that
    /// holds a series is this list's series.
    fn compact(&mut self, chunks: &[Arc<Chunk>]) {
        self.ids.retain(|&x| {
            chunks
                .get((x >> CHUNK_SHIFT) as usize)
                .and_then(|c| c.slots.get(x as usize & (CHUNK - 1)))
                .is_some_and(Option::is_some)
        });
        self.dead = 0;
    }
}

struct Inner {
    symbols: Symbols,
    chunks: Vec<Arc<Chunk>>,
    /// Series in each chunk's slots. A full chunk whose series are all gone is replaced by
    /// `empty_chunk` until a new series takes one of its slots again.
    chunk_series: Vec<u32>,
    empty_chunk: Arc<Chunk>,
    /// Series by the hash of their key ([`key_hash`]), 8 bytes a series.
    index: KeyIndex,
    /// A new series' symbols, gathered before its key is allocated.
    scratch: Vec<u32>,
    /// The symbols of the last new series' key (they may have been dropped since: checked
    /// before use).
    prev_key: Vec<u32>,
    hasher: KeyHashBuilder,
    /// (label name symbol, value symbol) to sorted series handles; metric names under
    /// `__name__`.
    postings: HashMap<(u32, u32), Postings, IdHashBuilder>,
    name_symbol: u32,
    /// The generation a series taking a freed slot of each chunk gets: one more than the
    /// last generation of any series removed from the chunk (so more than that of any
    /// earlier series of the slot).
    chunk_generation: Vec<u32>,
    /// The slots of deleted series, until [`Memstore::free_deleted_slots`] frees them.
    /// Until then a posting list may still hold the slot.
    deleted: SlotRuns,
    /// Posting lists that kept handles of deleted series (not compacted since).
    stale_lists: HashSet<(u32, u32), IdHashBuilder>,
    /// Freed slots: new series take the lowest, so that they fill chunks that exist.
    free: SlotRuns,
    /// Slots ever made: the next slot when none is free.
    next_id: u32,
    /// Handles at or above this are never given out: `u32::MAX` (a test lowers it).
    handle_limit: u32,
    /// Series in slots (with or without state).
    slots: usize,
    /// Series with state.
    live: usize,
    bounds: Arc<[f64]>,
    /// The LSN of the last batch applied (or of the snapshot loaded).
    applied: Lsn,
}

/// A series as read: its key, state and last update.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesView {
    /// The handle of the series in the store it was read from.
    pub id: SeriesRef,
    /// Its key.
    pub key: SeriesKey,
    /// Its state.
    pub state: SeriesState,
    /// The largest timestamp of its updates.
    pub last_update: Timestamp,
}

/// The in-memory state of every series: one writer applies batches while readers read.
///
/// Series are addressed by handles ([`SeriesRef`]): resolve a key once ([`Memstore::intern`])
/// and address updates by handle ([`SlotPoint`]), so the label set is not hashed per point.
/// After a delete the old handle is refused for good, and the key gets a new one. The slots
/// of deleted series are taken by new series once the owner frees them
/// ([`Memstore::free_deleted_slots`]), each at its next generation.
pub struct Memstore {
    inner: RwLock<Inner>,
    config: MemstoreConfig,
    /// This store among the process's stores (a [`KeyBatch`] says whose hasher it used).
    id: u64,
    /// The hasher of the store's keys (the index's), also here outside the lock: for
    /// [`KeyBatch`]es, hashed by other threads.
    hasher: KeyHashBuilder,
}

/// The next [`Memstore`]'s id.
static NEXT_STORE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl std::fmt::Debug for Memstore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memstore").field("series", &self.len()).finish_non_exhaustive()
    }
}

pub(crate) fn key_hash(
    hasher: &KeyHashBuilder,
    name: &str,
    labels: impl Iterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
) -> u64 {
    use std::hash::BuildHasher;
    let mut h = hasher.build_hasher();
    name.hash(&mut h);
    for (n, v) in labels {
        n.as_ref().hash(&mut h);
        v.as_ref().hash(&mut h);
    }
    #[cfg(test)]
    if collisions::FOLD.with(std::cell::Cell::get) {
        return h.finish() & 0x7;
    }
    h.finish()
}

#[cfg(test)]
mod handles {
    use super::*;

    #[test]
    fn running_out_of_slots_is_an_error_not_a_wrap_until_deleted_ones_are_freed() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        store.write().handle_limit = 10;
        let key = |i: u32| SeriesKey::new("m", [("i", i.to_string())]).unwrap();
        let refs: Vec<SeriesRef> = (0..8).map(|i| store.intern(&key(i)).unwrap()).collect();
        // All or nothing: three more do not fit in the two slots left.
        let three = [key(8), key(9), key(10)];
        let err = store.intern_all(&three.iter().collect::<Vec<_>>()).unwrap_err();
        assert_eq!(err, MemstoreError::HandlesExhausted { held: 8, deleted: 0 });
        assert_eq!(store.slots(), 8);
        store.intern(&key(8)).unwrap();
        store.intern_parts("m", &[("i", "9")]).unwrap();
        // Removing series gives no slot back until the owner frees them...
        store.discard_unwritten(&refs);
        assert_eq!(store.deleted_slots(), 8);
        assert!(matches!(store.intern(&key(0)), Err(MemstoreError::HandlesExhausted { .. })));
        let err = store.intern_parts("m", &[("i", "0")]).unwrap_err();
        assert_eq!(err, MemstoreError::HandlesExhausted { held: 10, deleted: 8 });
        assert!(err.to_string().contains("not freed"), "{err}");
        // ...but existing series are still found.
        assert!(store.intern(&key(8)).is_ok());
        assert_eq!(store.free_deleted_slots(), 8);
        assert_eq!((store.deleted_slots(), store.free_deleted_slots()), (0, 0));
        // Freed slots go to new series, lowest first, at their next generation; the old
        // handles stay refused.
        let again: Vec<SeriesRef> = (20..28).map(|i| store.intern(&key(i)).unwrap()).collect();
        let slots: Vec<(u32, u32)> = again.iter().map(|r| (r.get(), r.generation())).collect();
        assert_eq!(slots, (0..8).map(|i| (i, 1)).collect::<Vec<_>>());
        for (old, new) in refs.iter().zip(&again) {
            assert_eq!(store.key(*old), Err(MemstoreError::UnknownSeries { id: *old }));
            assert_ne!(old, new);
            assert_eq!(store.resolve(&store.key(*new).unwrap()), Some(*new));
        }
        assert_eq!(again[3].to_string(), "#3.1");
        assert!(matches!(store.intern(&key(99)), Err(MemstoreError::HandlesExhausted { .. })));
    }

    #[test]
    fn a_slot_at_its_last_generation_is_retired_not_reused() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let key = |i: u32| SeriesKey::new("m", [("i", i.to_string())]).unwrap();
        let a = store.intern(&key(0)).unwrap();
        let b = store.intern(&key(1)).unwrap();
        store.write().slot_mut(a.get()).unwrap().generation = u32::MAX;
        let a = store.resolve(&key(0)).unwrap();
        assert_eq!(a.generation(), u32::MAX);
        store.discard_unwritten(&[a, b]);
        assert_eq!(store.free_deleted_slots(), 1, "only b's slot");
        let c = store.intern(&key(2)).unwrap();
        assert_eq!((c.get(), c.generation()), (b.get(), 1));
        let d = store.intern(&key(3)).unwrap();
        assert_eq!((d.get(), d.generation()), (2, 0), "a new slot, never a's again");
    }

    /// A chunk's keys stay each series' own through removals (the chunk's key vector
    /// compacted whenever half of it belongs to removed series), slots taken again, and
    /// frozen views taken in between (which keep the keys they saw).
    #[test]
    fn keys_stay_their_series_own_through_removals_compactions_and_reuse() {
        use std::collections::{BTreeMap, BTreeSet};
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        // Keys of 0 to 5 labels: keys of different lengths share a chunk's vector.
        let key = |i: usize| {
            let labels = (0..i % 6).map(|l| (format!("l{l}"), format!("v{i}.{l}")));
            SeriesKey::new(&format!("m{}", i % 7), labels).unwrap()
        };
        let mut live: BTreeMap<SeriesRef, SeriesKey> = BTreeMap::new();
        let mut next = 0;
        let mut views: Vec<(Frozen, BTreeSet<SeriesKey>)> = Vec::new();
        for round in 0..8usize {
            for _ in 0..(2 * CHUNK + 100 - live.len()) {
                live.insert(store.intern(&key(next)).unwrap(), key(next));
                next += 1;
            }
            let points: Vec<SlotPoint> = live
                .keys()
                .map(|&series| SlotPoint { series, timestamp: Timestamp(1), op: Op::GaugeSet(1.0) })
                .collect();
            store.apply(Lsn(round as u64 + 1), &points);
            views.push((store.freeze(), live.values().cloned().collect()));
            // Removes about two thirds, in a pattern that changes each round.
            let gone: Vec<SeriesRef> = live
                .keys()
                .copied()
                .filter(|r| !(r.get() as usize * 7 + round).is_multiple_of(3))
                .collect();
            let deletes: Vec<SlotPoint> = gone
                .iter()
                .map(|&series| SlotPoint { series, timestamp: Timestamp(2), op: Op::Delete })
                .collect();
            store.apply(Lsn(round as u64 + 100), &deletes);
            for r in &gone {
                live.remove(r);
                assert_eq!(store.key(*r), Err(MemstoreError::UnknownSeries { id: *r }));
            }
            store.free_deleted_slots();
            for (r, k) in &live {
                assert_eq!(&store.key(*r).unwrap(), k, "round {round}: series {r}");
                assert_eq!(store.resolve(k), Some(*r));
            }
            for (view, keys) in &views {
                let seen: BTreeSet<SeriesKey> = view.iter().map(|rec| rec.key).collect();
                assert_eq!(&seen, keys, "a frozen view keeps the keys it saw");
            }
        }
        let inner = store.read();
        let (stored, dead): (usize, usize) = inner
            .chunks
            .iter()
            .map(|c| (c.keys.len(), c.dead))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        assert!(dead * 2 <= stored, "dead entries never outgrow the live ones: {dead} of {stored}");
    }

    /// Freed slots of a chunk that is then given back whole (all its series gone) are taken
    /// again, in any order, the chunk made whole again.
    #[test]
    fn freed_slots_of_a_chunk_given_back_whole_are_taken_again() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let key = |i: usize| SeriesKey::new("m", [("i", i.to_string())]).unwrap();
        let n = CHUNK + 10;
        let refs: Vec<SeriesRef> = (0..n).map(|i| store.intern(&key(i)).unwrap()).collect();
        store.discard_unwritten(&[refs[0], refs[5], refs[700]]);
        assert_eq!(store.free_deleted_slots(), 3);
        // The rest of the first chunk goes: it is given back whole.
        let rest: Vec<SeriesRef> = refs[1..CHUNK].to_vec();
        store.discard_unwritten(&rest);
        assert!(store.read().chunks[0].slots.is_empty(), "the first chunk was given back");
        let again: Vec<SeriesRef> =
            (0..3).map(|i| store.intern(&key(10_000 + i)).unwrap()).collect();
        let slots: Vec<(u32, u32)> = again.iter().map(|r| (r.get(), r.generation())).collect();
        assert_eq!(slots, vec![(0, 1), (5, 1), (700, 1)]);
        for (i, r) in again.iter().enumerate() {
            assert_eq!(store.key(*r).unwrap(), key(10_000 + i));
        }
        assert_eq!(store.slots(), 10 + 3);
        // The slots freed with the chunk come next, after the whole chunk is made again.
        assert_eq!(store.free_deleted_slots(), CHUNK - 3);
        let more = store.intern(&key(20_000)).unwrap();
        assert_eq!((more.get(), more.generation()), (1, 1));
        assert_eq!(store.read().chunks[0].slots.len(), CHUNK);
        for r in &refs[CHUNK..] {
            assert!(store.key(*r).is_ok(), "the second chunk's series stay");
        }
    }

    /// A deleted series' slot given to a new series with other labels: the label index, the
    /// key index and every call by handle tell the two apart.
    #[test]
    fn a_reused_slot_is_only_its_new_series() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let up = |job: &str, pod: u32| {
            SeriesKey::new("up", [("job", job.to_string()), ("pod", pod.to_string())]).unwrap()
        };
        // 10 series of job a; deleting one leaves it in the lists of `up` and `job=a`.
        let keys: Vec<SeriesKey> = (0..10).map(|i| up("a", i)).collect();
        let (ids, _) = store.intern_all(&keys.iter().collect::<Vec<_>>()).unwrap();
        let set = |lsn: u64, series: SeriesRef, op: Op| {
            let p = [SlotPoint { series, timestamp: Timestamp(lsn as i64), op }];
            store.validate(&p)?;
            store.apply(Lsn(lsn), &p);
            Ok::<(), MemstoreError>(())
        };
        for (i, &id) in ids.iter().enumerate() {
            set(1 + i as u64, id, Op::GaugeSet(1.0)).unwrap();
        }
        let old = ids[4];
        set(20, old, Op::Delete).unwrap();
        assert_eq!(store.free_deleted_slots(), 1);
        // Unwritten at first: a discard by the old handle must not touch it.
        let new = store.intern(&up("b", 99)).unwrap();
        assert_eq!((new.get(), new.generation()), (old.get(), 1));
        store.discard_unwritten(&[old]);
        assert_eq!(store.resolve(&up("b", 99)), Some(new));
        set(21, new, Op::GaugeSet(7.0)).unwrap();
        // The old handle is refused everywhere.
        assert_eq!(set(22, old, Op::GaugeSet(1.0)), Err(MemstoreError::UnknownSeries { id: old }));
        assert_eq!(store.get_by_ref(old), None);
        assert_eq!(store.last_update(old), None);
        assert_eq!(store.with_key_parts(&[old], |_, _, _| {}), 0);
        assert_eq!(store.get_by_ref(new).unwrap().key, up("b", 99));
        // The label index: job a has its nine, job b the new one, `up` all ten.
        let select = |s: &str| -> Vec<SeriesKey> {
            store.select(&Selector::parse(s).unwrap()).into_iter().map(|v| v.key).collect()
        };
        let mut job_a: Vec<SeriesKey> = keys.clone();
        job_a.remove(4);
        job_a.sort();
        assert_eq!(select(r#"up{job="a"}"#), job_a);
        assert_eq!(select(r#"up{job="b"}"#), vec![up("b", 99)]);
        assert_eq!(select(r#"up{pod="4"}"#), Vec::<SeriesKey>::new());
        assert_eq!(select(r#"up{job="a",pod="4"}"#), Vec::<SeriesKey>::new());
        assert_eq!(select("up").len(), 10);
        let view = store.get(&up("b", 99)).unwrap();
        assert_eq!(view.id, new);
        assert_eq!(store.idle_handles(Timestamp(100)).len(), 10);
        assert!(store.idle_handles(Timestamp(100)).contains(&new));
        assert!(store.freeze().iter().any(|r| r.key == up("b", 99)));
    }
}

/// Series created and deleted over a long life: their strings and slots are given back.
#[cfg(test)]
mod churn {
    use super::*;

    fn set(store: &Memstore, lsn: u64, ids: &[SeriesRef]) {
        let points: Vec<SlotPoint> = ids
            .iter()
            .map(|&series| SlotPoint { series, timestamp: Timestamp(1), op: Op::GaugeSet(1.0) })
            .collect();
        store.apply(Lsn(lsn), &points);
    }

    fn delete(store: &Memstore, lsn: u64, ids: &[SeriesRef]) {
        let points: Vec<SlotPoint> = ids
            .iter()
            .map(|&series| SlotPoint { series, timestamp: Timestamp(2), op: Op::Delete })
            .collect();
        store.apply(Lsn(lsn), &points);
    }

    fn round_keys(round: u32, n: u32) -> Vec<SeriesKey> {
        (0..n)
            .map(|i| {
                let pod = format!("pod-{round}-{i}");
                SeriesKey::new("up", [("job", "api"), ("pod", pod.as_str())]).unwrap()
            })
            .collect()
    }

    #[test]
    fn rounds_of_new_series_deleted_keep_symbols_and_chunks_bounded() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let n = 3 * CHUNK as u32;
        let mut after_first = None;
        for round in 0..5u32 {
            let keys = round_keys(round, n);
            let (ids, _) = store.intern_all(&keys.iter().collect::<Vec<_>>()).unwrap();
            set(&store, u64::from(round) * 2 + 1, &ids);
            let inner = store.read();
            // __name__, up, job, api, pod and one value per series.
            assert_eq!(inner.symbols.len(), 5 + n as usize, "round {round}");
            let symbol_ids = inner.symbols.refs.len();
            drop(inner);
            after_first.get_or_insert(symbol_ids);
            assert_eq!(Some(symbol_ids), after_first, "ids of dropped symbols are reused");
            delete(&store, u64::from(round) * 2 + 2, &ids);
            let inner = store.read();
            // Only the symbol that lives as long as the store is left.
            assert_eq!(inner.symbols.len(), 1, "round {round}: {:?}", inner.symbols.ids.keys());
            assert!(inner.postings.is_empty());
            assert_eq!(inner.index.len(), 0);
            // Every full chunk of the round's series is given back.
            assert!(
                inner.chunks.iter().all(|c| c.slots.is_empty() || c.slots.len() < CHUNK),
                "round {round}: a full chunk without series is still held"
            );
            assert!(inner.chunk_series.iter().all(|&n| n == 0));
        }
        assert_eq!(store.slots(), 0);
        assert!(store.all().is_empty());
    }

    #[test]
    fn a_frozen_view_keeps_its_strings_while_the_store_reuses_their_ids() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let old = round_keys(0, 50);
        let (old_ids, _) = store.intern_all(&old.iter().collect::<Vec<_>>()).unwrap();
        set(&store, 1, &old_ids);
        let frozen = store.freeze();
        delete(&store, 2, &old_ids);
        // New strings take the freed ids.
        let new = round_keys(1, 50);
        let (new_ids, _) = store.intern_all(&new.iter().collect::<Vec<_>>()).unwrap();
        set(&store, 3, &new_ids);
        let seen: Vec<SeriesKey> = frozen.iter().map(|r| r.key).collect();
        assert_eq!(seen, old, "the view still reads the strings it was frozen with");
        let now: Vec<SeriesKey> = store.all().into_iter().map(|v| v.key).collect();
        let mut expected = new.clone();
        expected.sort();
        assert_eq!(now, expected);
        for (k, id) in new.iter().zip(&new_ids) {
            assert_eq!(store.resolve(k), Some(*id));
            assert_eq!(&store.key(*id).unwrap(), k);
        }
        for k in &old {
            assert_eq!(store.resolve(k), None, "{k} was deleted");
        }
        // Selecting by a reused string finds the new series only.
        let sel = Selector::parse(r#"up{pod="pod-1-7"}"#).unwrap();
        let found = store.select(&sel);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, new[7]);
        assert!(store.select(&Selector::parse(r#"up{pod="pod-0-7"}"#).unwrap()).is_empty());
    }

    #[test]
    fn idle_handles_are_the_series_not_updated_since() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let keys = round_keys(0, 3000);
        let (ids, _) = store.intern_all(&keys.iter().collect::<Vec<_>>()).unwrap();
        // Updated at 1 (set) except every tenth, updated again at 10; one never written.
        set(&store, 1, &ids[..2999]);
        let recent: Vec<SlotPoint> = ids
            .iter()
            .step_by(10)
            .map(|&series| SlotPoint { series, timestamp: Timestamp(10), op: Op::GaugeSet(2.0) })
            .collect();
        store.apply(Lsn(2), &recent);
        let idle = store.idle_handles(Timestamp(5));
        let expected: Vec<SeriesRef> =
            ids[..2999].iter().enumerate().filter(|(i, _)| i % 10 != 0).map(|(_, &r)| r).collect();
        assert_eq!(idle, expected);
        let by_key: Vec<SeriesRef> =
            store.idle_series(Timestamp(5)).into_iter().map(|(r, _)| r).collect();
        assert_eq!(by_key, expected);
        assert!(store.idle_handles(Timestamp(1)).is_empty(), "before is exclusive");
        assert_eq!(store.idle_handles(Timestamp(11)).len(), 2999);
    }

    #[test]
    fn a_batch_across_chunks_applies_each_point_to_its_own_series() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let keys: Vec<SeriesKey> =
            (0..3000).map(|i| SeriesKey::new("g", [("i", i.to_string())]).unwrap()).collect();
        let refs: Vec<SeriesRef> = keys.iter().map(|k| store.intern(k).unwrap()).collect();
        let gauge = |v: f64| Op::GaugeSet(v);
        // Runs of points in one chunk of slots, chunks taking turns, a chunk's run broken
        // and resumed; a series deleted and written again in the batch, one only deleted.
        let mut points = Vec::new();
        for i in [5usize, 6, 2900, 1500, 7, 1024, 1023, 2048, 5, 2999] {
            points.push(SlotPoint {
                series: refs[i],
                timestamp: Timestamp(1),
                op: gauge(i as f64),
            });
        }
        points.push(SlotPoint { series: refs[6], timestamp: Timestamp(2), op: Op::Delete });
        points.push(SlotPoint { series: refs[6], timestamp: Timestamp(3), op: gauge(60.0) });
        points.push(SlotPoint { series: refs[1500], timestamp: Timestamp(2), op: Op::Delete });
        store.validate(&points).unwrap();
        store.apply(Lsn(1), &points);
        let value = |i: usize| match store.get_by_ref(refs[i]).map(|v| v.state) {
            Some(SeriesState::Gauge(g)) => Some(g.value),
            _ => None,
        };
        for i in [5usize, 2900, 7, 1024, 1023, 2048, 2999] {
            assert_eq!(value(i), Some(i as f64), "series {i}");
        }
        assert_eq!(value(6), Some(60.0));
        assert_eq!(store.get_by_ref(refs[1500]), None, "deleted in the batch");
        assert_eq!(value(0), None, "never written");
        assert_eq!(store.len(), 8);
    }

    #[test]
    fn intern_parts_all_is_intern_parts_in_order_and_stops_at_a_refusal() {
        let config = MemstoreConfig { max_series: 5, ..MemstoreConfig::default() };
        let store = Memstore::new(config).unwrap();
        let old = store.intern_parts("m", &[("i", "0")]).unwrap();
        let keys: Vec<(&str, &[(&str, &str)])> =
            vec![("m", &[("i", "1")]), ("m", &[("i", "0")]), ("m", &[("i", "1")]), ("n", &[])];
        let mut out = Vec::new();
        store.intern_parts_all(&keys, &mut out).unwrap();
        // Found, created once though given twice, and in the order given.
        let one = store.intern_parts("m", &[("i", "1")]).unwrap();
        let n = store.intern_parts("n", &[]).unwrap();
        assert_eq!(out, vec![one, old, one, n]);
        assert_eq!(store.slots(), 3);
        // An invalid key refuses at its place; those before it keep their series.
        let keys: Vec<(&str, &[(&str, &str)])> =
            vec![("m", &[("i", "2")]), ("m", &[("b", "1"), ("a", "1")]), ("m", &[("i", "3")])];
        let mut out = Vec::new();
        let (at, err) = store.intern_parts_all(&keys, &mut out).unwrap_err();
        assert_eq!(at, 1);
        assert!(matches!(err, MemstoreError::InvalidKey { .. }), "{err:?}");
        assert_eq!(out.len(), 1);
        assert_eq!(store.slots(), 4, "m{{i=2}} stays, m{{i=3}} was never reached");
        // The series limit refuses too, naming the key.
        let keys: Vec<(&str, &[(&str, &str)])> = vec![("m", &[("i", "4")]), ("m", &[("i", "5")])];
        let mut out = Vec::new();
        let (at, err) = store.intern_parts_all(&keys, &mut out).unwrap_err();
        assert_eq!((at, out.len()), (1, 1));
        assert!(err.to_string().contains("i=\"5\""), "{err}");
    }

    #[test]
    fn intern_batch_takes_a_right_guess_looks_up_a_wrong_one_and_creates_the_rest() {
        let config = MemstoreConfig { max_series: 6, ..MemstoreConfig::default() };
        let store = Memstore::new(config).unwrap();
        let a = store.intern_parts("m", &[("host", "a"), ("x", "1")]).unwrap();
        let b = store.intern_parts("m", &[("host", "a")]).unwrap();
        let mut batch = store.key_batch();
        for (name, labels) in [
            ("m", &[("host", "a"), ("x", "1")][..]),
            ("m", &[("host", "a")][..]),
            ("n", &[][..]),
            ("m", &[("host", "a"), ("x", "2")][..]),
            ("n", &[][..]),
        ] {
            batch.push(name, labels).unwrap();
        }
        assert_eq!(batch.len(), 5);
        assert_eq!(
            (batch.name(3), batch.labels(3).collect::<Vec<_>>()),
            ("m", vec![("host", "a"), ("x", "2")])
        );
        // Right (a), wrong (b's key at a's handle), none, out of range, wrong (a's).
        let guesses = [Some(a.get()), Some(a.get()), None, Some(99), Some(a.get())];
        let mut out = vec![b];
        store.intern_batch(&batch, |i| guesses[i], &mut out).unwrap();
        let n = store.resolve_parts("n", &[]).unwrap();
        let x2 = store.resolve_parts("m", &[("host", "a"), ("x", "2")]).unwrap();
        assert_eq!(out, vec![b, a, b, n, x2, n], "pushed after what was there, in order");
        assert_eq!(store.slots(), 4, "n created once though given twice");
        // An invalid key never enters a batch, and leaves it as it was.
        let err = batch.push("m", &[("b", "1"), ("a", "1")]).unwrap_err();
        assert!(matches!(err, MemstoreError::InvalidKey { .. }), "{err:?}");
        assert_eq!(batch.len(), 5);
        // A refusal stops at its place; the keys before it keep their series.
        batch.clear();
        assert!(batch.is_empty());
        for i in 0..4 {
            batch.push("m", &[("i", &i.to_string())]).unwrap();
        }
        let mut out = Vec::new();
        let (at, err) = store.intern_batch(&batch, |_| None, &mut out).unwrap_err();
        assert_eq!((at, out.len(), store.slots()), (2, 2, 6));
        assert!(err.to_string().contains("i=\"2\""), "{err}");
    }

    #[test]
    fn intern_batch_across_its_read_ahead_keeps_order_repeats_and_the_refused_place() {
        // More keys than one read-ahead holds: stored keys, new ones, a key repeated in a
        // later read-ahead, and the series limit reached in the third.
        let limit = 2 * TOUCHED + TOUCHED / 2;
        let config = MemstoreConfig { max_series: limit, ..MemstoreConfig::default() };
        let store = Memstore::new(config).unwrap();
        let key = |i: usize| format!("{i}");
        let stored: Vec<SeriesRef> = (0..TOUCHED / 4)
            .map(|i| store.intern_parts("m", &[("i", &key(4 * i))]).unwrap())
            .collect();
        let mut batch = store.key_batch();
        // Key j is "i"=j, except that place TOUCHED + 7 repeats the key of place 3.
        let repeated = TOUCHED + 7;
        let key_at = |j: usize| if j == repeated { key(3) } else { key(j) };
        for j in 0..3 * TOUCHED {
            batch.push("m", &[("i", &key_at(j))]).unwrap();
        }
        let mut out = Vec::new();
        let (at, err) = store.intern_batch(&batch, |_| None, &mut out).unwrap_err();
        assert!(matches!(err, MemstoreError::SeriesLimit { .. }), "{err:?}");
        // Stored: every fourth of the first TOUCHED keys; the repeat creates nothing.
        let created_before_refusal = limit - stored.len();
        let refused = (0..3 * TOUCHED)
            .filter(|&j| j != repeated && !(j % 4 == 0 && j < TOUCHED))
            .nth(created_before_refusal)
            .unwrap();
        assert_eq!((at, out.len(), store.slots()), (refused, refused, limit));
        for (j, &series) in out.iter().enumerate() {
            let found = store.resolve_parts("m", &[("i", &key_at(j))]);
            assert_eq!(found, Some(series), "place {j}");
        }
        assert_eq!(out[repeated], out[3]);
        for (i, &s) in stored.iter().enumerate() {
            assert_eq!(out[4 * i], s, "stored key {i} found, not created again");
        }
    }

    #[test]
    fn intern_all_across_its_read_ahead_finds_creates_and_repeats_in_order() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let key = |i: usize| SeriesKey::new("m", [("i", i.to_string())]).unwrap();
        // Every fourth key of the first read-ahead exists; place TOUCHED + 7 repeats the key
        // of place 3 (new), place 2 * TOUCHED + 1 that of place 4 (stored).
        let stored: Vec<SeriesRef> =
            (0..TOUCHED / 4).map(|i| store.intern(&key(4 * i)).unwrap()).collect();
        let at = |j: usize| match j {
            j if j == TOUCHED + 7 => 3,
            j if j == 2 * TOUCHED + 1 => 4,
            j => j,
        };
        let keys: Vec<SeriesKey> = (0..3 * TOUCHED).map(|j| key(at(j))).collect();
        let refs: Vec<&SeriesKey> = keys.iter().collect();
        let (out, created) = store.intern_all(&refs).unwrap();
        assert_eq!(out.len(), keys.len());
        for (j, k) in keys.iter().enumerate() {
            assert_eq!(store.resolve(k), Some(out[j]), "place {j}");
        }
        assert_eq!(out[TOUCHED + 7], out[3]);
        assert_eq!(out[2 * TOUCHED + 1], out[4]);
        for (i, &s) in stored.iter().enumerate() {
            assert_eq!(out[4 * i], s, "stored key {i} found, not created again");
        }
        let new = 3 * TOUCHED - 2 - stored.len();
        assert_eq!((created.len(), store.slots()), (new, new + stored.len()));
        let mut once = created.clone();
        once.sort_unstable_by_key(|r| r.get());
        once.dedup();
        assert_eq!(once.len(), created.len(), "each created once");
    }

    #[test]
    fn a_key_batch_of_another_store_is_hashed_again_by_the_store_that_interns_it() {
        let one = Memstore::new(MemstoreConfig::default()).unwrap();
        let two = Memstore::new(MemstoreConfig::default()).unwrap();
        let old = two.intern_parts("m", &[("host", "a")]).unwrap();
        let mut batch = one.key_batch();
        batch.push("m", &[("host", "a")]).unwrap();
        let mut out = Vec::new();
        two.intern_batch(&batch, |_| None, &mut out).unwrap();
        assert_eq!(out, vec![old], "found, not created again under another hash");
        assert_eq!(two.slots(), 1);
    }

    #[test]
    fn resolve_at_confirms_only_the_exact_key_of_a_live_series() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let a = store.intern_parts("m", &[("host", "a"), ("x", "1")]).unwrap();
        let b = store.intern_parts("m", &[("host", "a")]).unwrap();
        assert_eq!(store.resolve_at(a.get(), "m", &[("host", "a"), ("x", "1")]), Some(a));
        assert_eq!(store.resolve_at(b.get(), "m", &[("host", "a")]), Some(b));
        // Another series' handle, a prefix of the key, a longer key, another value or name.
        assert_eq!(store.resolve_at(b.get(), "m", &[("host", "a"), ("x", "1")]), None);
        assert_eq!(store.resolve_at(a.get(), "m", &[("host", "a")]), None);
        assert_eq!(store.resolve_at(a.get(), "m", &[("host", "a"), ("x", "2")]), None);
        assert_eq!(store.resolve_at(a.get(), "n", &[("host", "a"), ("x", "1")]), None);
        // No series there (never given out, or removed).
        assert_eq!(store.resolve_at(99, "m", &[("host", "a")]), None);
        store.discard_unwritten(&[a]);
        assert_eq!(store.resolve_at(a.get(), "m", &[("host", "a"), ("x", "1")]), None);
    }

    #[test]
    fn a_string_used_beyond_counting_is_kept_for_good() {
        let mut symbols = Symbols::default();
        let id = symbols.intern("true");
        symbols.refs[id as usize] = u32::MAX - 1;
        assert_eq!(symbols.intern("true"), id);
        assert_eq!(symbols.intern("true"), id, "the count stays at its top, no wrap");
        assert_eq!(symbols.refs[id as usize], u32::MAX);
        for _ in 0..3 {
            symbols.release(id);
        }
        assert_eq!(symbols.get("true"), Some(id), "never dropped once past counting");
        // An ordinary one goes with its last use.
        let other = symbols.intern("false");
        symbols.release(other);
        assert_eq!(symbols.get("false"), None);
    }

    #[test]
    fn max_series_is_bounded_by_what_the_key_index_holds() {
        let config = MemstoreConfig { max_series: MAX_SERIES_LIMIT + 1, ..Default::default() };
        assert!(matches!(
            config.validate(),
            Err(MemstoreError::InvalidConfig { field: "max_series", .. })
        ));
        let config = MemstoreConfig { max_series: MAX_SERIES_LIMIT, ..Default::default() };
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn a_loaded_batch_stops_at_its_first_refusal_keeping_those_before() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let gauge = || {
            SeriesState::Gauge(crate::GaugeState {
                value: 1.0,
                timestamp: Timestamp(1),
                lsn: Lsn(1),
            })
        };
        let series =
            |name, labels| LoadSeries { name, labels, state: gauge(), last_update: Timestamp(5) };
        let a: &[(&str, &str)] = &[("pod", "a")];
        let b: &[(&str, &str)] = &[("pod", "b")];
        let n = store.loader().insert_batch(vec![series("up", a), series("up", b)]).unwrap();
        assert_eq!(n, 2);
        let c: &[(&str, &str)] = &[("pod", "c")];
        let err = store
            .loader()
            .insert_batch(vec![series("up", c), series("up", a), series("up", &[("pod", "d")])])
            .unwrap_err();
        assert_eq!(err, (1, MemstoreError::DuplicateSeries { key: "up{pod=\"a\"}".into() }));
        let err = store.loader().insert_batch(vec![series("1up", c)]).unwrap_err();
        assert!(matches!(err, (0, MemstoreError::InvalidKey { .. })), "{err:?}");
        let names: Vec<String> = store.all().iter().map(|v| v.key.to_string()).collect();
        assert_eq!(names, ["up{pod=\"a\"}", "up{pod=\"b\"}", "up{pod=\"c\"}"]);
        let found = store.get(&SeriesKey::new("up", [("pod", "c")]).unwrap()).unwrap();
        assert_eq!((found.state, found.last_update), (gauge(), Timestamp(5)));
    }

    #[test]
    fn a_reserved_load_across_its_read_ahead_inserts_in_order_and_names_a_late_refusal() {
        let config = MemstoreConfig { max_series: 2_000, ..MemstoreConfig::default() };
        let store = Memstore::new(config).unwrap();
        let gauge = |v: f64| {
            SeriesState::Gauge(crate::GaugeState { value: v, timestamp: Timestamp(1), lsn: Lsn(1) })
        };
        // A damaged count asks for more than the limit: the index is sized by the limit.
        store.loader().reserve(usize::MAX);
        assert_eq!(store.read().index.places(), 4_096, "2,000 series at most 3/4 full");
        let pods: Vec<String> = (0..3 * TOUCHED).map(|i| format!("p{i}")).collect();
        let labels: Vec<[(&str, &str); 1]> = pods.iter().map(|p| [("pod", p.as_str())]).collect();
        let batch = |range: std::ops::Range<usize>| -> Vec<LoadSeries<'_>> {
            range
                .map(|i| LoadSeries {
                    name: "up",
                    labels: &labels[i],
                    state: gauge(i as f64),
                    last_update: Timestamp(i as i64),
                })
                .collect()
        };
        assert_eq!(store.loader().insert_batch(batch(0..2 * TOUCHED)), Ok(2 * TOUCHED));
        // The refused series sits in the batch's second read-ahead chunk.
        let mut again = batch(2 * TOUCHED..3 * TOUCHED);
        again.extend(batch(7..8));
        again.extend(batch(0..1));
        let err = store.loader().insert_batch(again).unwrap_err();
        assert_eq!(err, (TOUCHED, MemstoreError::DuplicateSeries { key: "up{pod=\"p7\"}".into() }));
        assert_eq!(store.len(), 3 * TOUCHED, "those before the refusal stay");
        for i in [0, TOUCHED - 1, TOUCHED, 2 * TOUCHED, 3 * TOUCHED - 1] {
            let key = SeriesKey::new("up", [("pod", pods[i].as_str())]).unwrap();
            let found = store.get(&key).unwrap();
            assert_eq!((found.state, found.last_update), (gauge(i as f64), Timestamp(i as i64)));
        }
        assert_eq!(store.read().index.places(), 4_096, "no growth while loading");
    }

    #[test]
    fn key_parts_are_the_keys_of_the_live_series_asked_for() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let keys = round_keys(0, 3);
        let (ids, _) = store.intern_all(&keys.iter().collect::<Vec<_>>()).unwrap();
        store.discard_unwritten(&ids[1..2]);
        let mut seen = Vec::new();
        let called = store.with_key_parts(&[ids[2], ids[1], ids[0]], |id, name, labels| {
            seen.push((id, SeriesKey::from_canonical(name, labels).unwrap()));
        });
        assert_eq!(called, 2);
        assert_eq!(seen, vec![(ids[2], keys[2].clone()), (ids[0], keys[0].clone())]);
    }

    #[test]
    fn a_string_shared_by_live_series_outlives_the_deleted_ones() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let a = SeriesKey::new("m", [("host", "a"), ("x", "1")]).unwrap();
        let b = SeriesKey::new("m", [("host", "a"), ("x", "2")]).unwrap();
        let (ids, _) = store.intern_all(&[&a, &b]).unwrap();
        set(&store, 1, &ids);
        delete(&store, 2, &ids[..1]);
        // "m", "host", "a", "x" stay for b; "1" goes.
        assert_eq!(store.read().symbols.get("1"), None);
        assert!(store.read().symbols.get("a").is_some());
        let again = store.intern(&a).unwrap();
        assert_ne!(again.get(), ids[0].get(), "no slot is reused before it is freed");
        assert_eq!(store.key(again).unwrap(), a);
        assert_eq!(store.key(ids[1]).unwrap(), b);
        assert_eq!(store.select(&Selector::parse(r#"m{host="a"}"#).unwrap()).len(), 1);
    }
}

#[cfg(test)]
mod text {
    use proptest::prelude::*;

    use super::same_text;

    proptest! {
        /// Equal to `==` for every length up to and past the inline cases, with strings that
        /// differ in one byte anywhere (a two-letter alphabet makes equal ones common).
        #[test]
        fn same_text_is_string_equality(
            a in "[ab]{0,20}",
            flip in any::<prop::sample::Index>(),
            multibyte in any::<bool>(),
        ) {
            let a = if multibyte { a.replace('a', "é") } else { a };
            prop_assert!(same_text(&a, &a.clone()));
            let mut bytes = a.clone().into_bytes();
            if !bytes.is_empty() {
                let at = flip.index(bytes.len());
                // Swaps 'a' and 'b' (or a byte of 'é' for another two-byte letter's).
                bytes[at] ^= 3;
                if let Ok(b) = String::from_utf8(bytes) {
                    prop_assert_eq!(same_text(&a, &b), a == b);
                    prop_assert!(!same_text(&a, &b));
                }
            }
            let longer = format!("{a}a");
            prop_assert!(!same_text(&a, &longer));
        }
    }
}

/// Keys whose hashes collide: a test switches on, for its own thread, a fold of every key
/// hash to 3 bits, so that most series share their hash with others.
#[cfg(test)]
mod collisions {
    use super::*;

    thread_local! {
        pub(super) static FOLD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn key(i: u32) -> SeriesKey {
        SeriesKey::new("m", [("i", i.to_string())]).unwrap()
    }

    #[test]
    fn a_batch_that_repeats_keys_creates_each_once_even_when_hashes_collide() {
        FOLD.with(|f| f.set(true));
        let config = MemstoreConfig { max_series: 12, ..MemstoreConfig::default() };
        let store = Memstore::new(config).unwrap();
        let existing = store.intern(&key(0)).unwrap();
        // 0 exists; 1..=10 are new, each repeated, in an order that mixes them.
        let order = [3, 1, 0, 3, 2, 1, 4, 5, 6, 7, 8, 9, 10, 2, 10, 3];
        let keys: Vec<SeriesKey> = order.iter().map(|&i| key(i)).collect();
        let (ids, created) = store.intern_all(&keys.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(created.len(), 10, "ten new series, each created once");
        assert_eq!(store.slots(), 11);
        for (k, id) in keys.iter().zip(&ids) {
            assert_eq!(store.resolve(k), Some(*id), "{k}");
            assert_eq!(&store.key(*id).unwrap(), k);
        }
        assert_eq!(ids[2], existing);
        // Created in the order of their first place in the batch.
        let firsts: Vec<SeriesRef> = vec![ids[0], ids[1], ids[4], ids[6], ids[7]];
        assert_eq!(&created[..5], &firsts[..]);
        // Two more new keys, one repeated: 13 series would pass the limit of 12.
        let over = [key(11), key(12), key(11)];
        let err = store.intern_all(&over.iter().collect::<Vec<_>>()).unwrap_err();
        assert_eq!(err, MemstoreError::SeriesLimit { limit: 12, key: key(11).to_string() });
        // One new key, repeated, fits.
        let fits = [key(11), key(11)];
        let (ids, created) = store.intern_all(&fits.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!((ids[0], created.len()), (ids[1], 1));
        assert_eq!(store.slots(), 12);
        FOLD.with(|f| f.set(false));
    }

    #[test]
    fn keys_whose_hashes_collide_are_told_apart_through_removals() {
        FOLD.with(|f| f.set(true));
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let refs: Vec<SeriesRef> = (0..100).map(|i| store.intern(&key(i)).unwrap()).collect();
        let distinct: std::collections::BTreeSet<u32> = refs.iter().map(|r| r.get()).collect();
        assert_eq!(distinct.len(), 100);
        for i in 0..100 {
            assert_eq!(store.resolve(&key(i)), Some(refs[i as usize]), "series {i}");
            let parts = [("i", i.to_string())];
            let parts: Vec<(&str, &str)> = parts.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(store.intern_parts("m", &parts).unwrap(), refs[i as usize]);
        }
        // Remove every third (the first of a hash as well as later ones).
        let gone: Vec<SeriesRef> = (0..100).step_by(3).map(|i| refs[i]).collect();
        store.discard_unwritten(&gone);
        for i in 0..100u32 {
            let found = store.resolve(&key(i));
            if i % 3 == 0 {
                assert_eq!(found, None, "series {i} was removed");
            } else {
                assert_eq!(found, Some(refs[i as usize]), "series {i} survives its neighbours");
            }
        }
        // Created again: new handles, found again.
        for i in (0..100u32).step_by(3) {
            let again = store.intern(&key(i)).unwrap();
            assert!(!distinct.contains(&again.get()), "no slot is reused before it is freed");
            assert_eq!(store.resolve(&key(i)), Some(again));
        }
        assert_eq!(store.slots(), 100);
        FOLD.with(|f| f.set(false));
    }
}

impl Inner {
    /// The handles of every series in a slot, in order; chunks whose series are all gone
    /// cost nothing.
    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            let base = (c as u32) << CHUNK_SHIFT;
            let slots = chunk.slots.iter().enumerate();
            slots.filter(|(_, s)| s.is_some()).map(move |(i, _)| base + i as u32)
        })
    }

    fn slot(&self, id: u32) -> Option<Stored<'_>> {
        self.chunks.get((id >> CHUNK_SHIFT) as usize)?.get(id as usize & (CHUNK - 1))
    }

    /// The series a handle names, if it is still the slot's series (not deleted, and the
    /// slot not given to a new series since).
    fn live(&self, r: SeriesRef) -> Option<Stored<'_>> {
        self.slot(r.index).filter(|s| s.generation == r.generation)
    }

    /// The handle of the series in slot `id` (which holds one).
    fn handle(&self, id: u32) -> SeriesRef {
        let s = self.slot(id).expect("the slot holds a series");
        SeriesRef::new(id, s.generation)
    }

    /// See [`Memstore::resolve_at`].
    fn resolve_at(&self, n: u32, name: &str, labels: &[(&str, &str)]) -> Option<SeriesRef> {
        let s = self.slot(n)?;
        self.parts_match(s.key, name, labels.iter().copied(), labels.len())
            .then_some(SeriesRef::new(n, s.generation))
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Series> {
        let chunk = self.chunks.get_mut((id >> CHUNK_SHIFT) as usize)?;
        Arc::make_mut(chunk).slots.get_mut(id as usize & (CHUNK - 1))?.as_mut()
    }

    fn key_of(&self, syms: &[u32]) -> SeriesKey {
        let name = self.symbols.resolve(syms[0]);
        let labels = syms[1..]
            .chunks_exact(2)
            .map(|p| (self.symbols.resolve(p[0]), self.symbols.resolve(p[1])));
        SeriesKey::new(name, labels).expect("stored keys were validated")
    }

    /// Whether the symbols of a stored key spell `name` and `labels` (`len` of them).
    fn parts_match<'k>(
        &self,
        syms: &[u32],
        name: &str,
        labels: impl Iterator<Item = (&'k str, &'k str)>,
        len: usize,
    ) -> bool {
        syms.len() == 1 + 2 * len
            && same_text(self.symbols.resolve(syms[0]), name)
            && syms[1..].chunks_exact(2).zip(labels).all(|(p, (n, v))| {
                same_text(self.symbols.resolve(p[0]), n) && same_text(self.symbols.resolve(p[1]), v)
            })
    }

    /// The id of the series `name` + `labels` (canonical order, `len` of them), if stored.
    fn lookup_parts<'k, I>(&self, name: &str, labels: I, len: usize) -> Option<u32>
    where
        I: Iterator<Item = (&'k str, &'k str)> + Clone,
    {
        let h = key_hash(&self.hasher, name, labels.clone());
        self.lookup_hashed(h, name, labels, len)
    }

    /// As [`Inner::lookup_parts`], given the key's hash.
    fn lookup_hashed<'k, I>(&self, h: u64, name: &str, labels: I, len: usize) -> Option<u32>
    where
        I: Iterator<Item = (&'k str, &'k str)> + Clone,
    {
        let found = |id: &u32| {
            self.slot(*id).is_some_and(|s| self.parts_match(s.key, name, labels.clone(), len))
        };
        self.index.candidates(h).find(found)
    }

    /// Reads, for every hash of a batch, its place in the index, then the slot and key of
    /// its first candidate: loads that do not depend on each other, so the processor
    /// fetches many from memory at once, and the lookups that follow find them in its cache.
    /// A million series spread their index and slots over tens of MiB, and a lookup that
    /// waits for each load in turn spends most of its time waiting.
    fn touch_all(&self, hashes: &[u64]) {
        let mut sink = 0u64;
        for &h in hashes {
            sink ^= self.index.touch(h);
        }
        for &h in hashes {
            if let Some(s) = self.index.candidates(h).next().and_then(|id| self.slot(id)) {
                sink ^= u64::from(s.key.first().copied().unwrap_or_default());
            }
        }
        std::hint::black_box(sink);
    }

    /// Reads the index's home places of `hashes` (see [`Inner::touch_all`]): for keys about
    /// to be inserted.
    fn touch_places(&self, hashes: impl Iterator<Item = u64>) {
        let mut sink = 0u64;
        for h in hashes {
            sink ^= self.index.touch(h);
        }
        std::hint::black_box(sink);
    }

    fn lookup(&self, key: &SeriesKey) -> Option<u32> {
        self.lookup_key_hashed(self.hash_key(key), key)
    }

    fn hash_key(&self, key: &SeriesKey) -> u64 {
        key_hash(&self.hasher, key.name(), key.labels().iter().map(|l| (l.name(), l.value())))
    }

    fn lookup_key_hashed(&self, h: u64, key: &SeriesKey) -> Option<u32> {
        let labels = key.labels().iter().map(|l| (l.name(), l.value()));
        self.lookup_hashed(h, key.name(), labels, key.labels().len())
    }

    /// Refuses `n` new series when fewer slots than that are left.
    fn check_handles(&self, n: usize) -> Result<(), MemstoreError> {
        let left = u64::from(self.handle_limit - self.next_id) + self.free.len() as u64;
        if n as u64 > left {
            return Err(MemstoreError::HandlesExhausted {
                held: u64::from(self.next_id) - self.free.len() as u64,
                deleted: self.deleted.len() as u64,
            });
        }
        Ok(())
    }

    /// Stores a new series `name` + `labels` (a valid canonical key, `len` labels, not
    /// stored yet) whose key hashes to `h`, in the lowest freed slot or a new one; returns
    /// its handle.
    fn insert_hashed<'k>(
        &mut self,
        h: u64,
        name: &str,
        labels: impl Iterator<Item = (&'k str, &'k str)>,
        len: usize,
    ) -> SeriesRef {
        let (id, generation, reused) = match self.free.pop_lowest() {
            Some(id) => (id, self.chunk_generation[(id >> CHUNK_SHIFT) as usize], true),
            None => {
                self.next_id += 1;
                (self.next_id - 1, 0, false)
            }
        };
        // The symbols gather in a buffer kept for the next series, then join the chunk's
        // keys: no allocation per series. Series created one after another mostly share their label names and many values
        // at the same places of their keys: a string equal to the one at its place in the
        // previous new series' key takes that symbol without hashing.
        let prev = std::mem::take(&mut self.prev_key);
        let mut syms = std::mem::take(&mut self.scratch);
        syms.clear();
        syms.reserve(1 + 2 * len);
        let strings = std::iter::once(name).chain(labels.flat_map(|(n, v)| [n, v]));
        for (place, text) in strings.enumerate() {
            let same = prev.get(place).copied().filter(|&p| self.symbols.is_live(p, text));
            syms.push(match same {
                Some(p) => self.symbols.add_use(p),
                None => self.symbols.intern(text),
            });
        }
        let postings_keys = std::iter::once((self.name_symbol, syms[0]))
            .chain(syms[1..].chunks_exact(2).map(|p| (p[0], p[1])));
        for pk in postings_keys {
            // A freed slot is in no list (freeing compacted the lists that held it).
            self.postings.entry(pk).or_default().ids.push(id);
        }
        self.index.insert(h, id);
        let chunk_index = (id >> CHUNK_SHIFT) as usize;
        if chunk_index == self.chunks.len() {
            // Room for the keys of a chunk of series like this one.
            let keys = Vec::with_capacity(CHUNK * (1 + syms.len()));
            self.chunks.push(Arc::new(Chunk { slots: Vec::with_capacity(CHUNK), keys, dead: 0 }));
            self.chunk_series.push(0);
            self.chunk_generation.push(0);
        }
        self.chunk_series[chunk_index] += 1;
        let chunk = Arc::make_mut(&mut self.chunks[chunk_index]);
        let series = Series {
            state: None,
            last_update: Timestamp(i64::MIN),
            changed: Lsn::ZERO,
            generation,
            key_at: chunk.push_key(&syms),
        };
        self.prev_key = syms;
        self.scratch = prev;
        let place = id as usize & (CHUNK - 1);
        let slots = &mut chunk.slots;
        if reused {
            // A chunk given back whole (the shared empty one, made writable above) is made
            // whole again: the slots of a chunk the store gives back had all been given out.
            // (The last chunk, still growing, is never given back.)
            if place >= slots.len() {
                slots.resize(CHUNK, None);
            }
            debug_assert!(slots[place].is_none(), "slot {id} is free");
            slots[place] = Some(series);
        } else {
            debug_assert_eq!(place, slots.len(), "a new slot is the next of its chunk");
            slots.push(Some(series));
            if slots.len() == CHUNK {
                // Full: the room its first key suggested may have been too much.
                chunk.keys.shrink_to_fit();
            }
        }
        self.slots += 1;
        SeriesRef::new(id, generation)
    }

    /// Takes `id` out of the series whose keys hash to `h`.
    fn forget_hash(&mut self, h: u64, id: u32) {
        let removed = self.index.remove(h, id);
        debug_assert!(removed, "series {id} was not indexed under its hash");
    }

    /// Removes the series `ids` (those without a slot are passed over). Each posting list
    /// they are in is filtered once, whatever the number removed from it: removing every
    /// series of a metric (a time-to-live expiry of a million) is linear, not quadratic.
    fn remove_many(&mut self, ids: &[u32]) {
        let mut emptied: Vec<(u32, u32)> = Vec::new();
        let mut syms = Vec::new();
        for &id in ids {
            if self.slot(id).is_none() {
                continue;
            }
            // Taken out of its slot (not cloned): the slot is empty from here on.
            let chunk_index = (id >> CHUNK_SHIFT) as usize;
            let chunk = &mut self.chunks[chunk_index];
            let Some(series) = Arc::make_mut(chunk).take(id as usize & (CHUNK - 1), &mut syms)
            else {
                continue;
            };
            self.chunk_series[chunk_index] -= 1;
            if self.chunk_series[chunk_index] == 0 && chunk.slots.len() == CHUNK {
                *chunk = Arc::clone(&self.empty_chunk);
            }
            let h = {
                let name = self.symbols.resolve(syms[0]);
                let labels = syms[1..]
                    .chunks_exact(2)
                    .map(|p| (self.symbols.resolve(p[0]), self.symbols.resolve(p[1])));
                key_hash(&self.hasher, name, labels)
            };
            self.forget_hash(h, id);
            // A slot at the last generation is retired rather than reused: no handle is
            // ever given out twice.
            if let Some(next) = series.generation.checked_add(1) {
                let floor = &mut self.chunk_generation[chunk_index];
                *floor = (*floor).max(next);
                self.deleted.push(id);
            }
            let keys = std::iter::once((self.name_symbol, syms[0]))
                .chain(syms[1..].chunks_exact(2).map(|p| (p[0], p[1])));
            for pk in keys {
                let Some(list) = self.postings.get_mut(&pk) else { continue };
                list.dead += 1;
                if list.dead * 2 > list.ids.len() {
                    list.compact(&self.chunks);
                    if list.ids.is_empty() {
                        emptied.push(pk);
                    }
                } else {
                    self.stale_lists.insert(pk);
                }
            }
            for &sym in syms.iter() {
                self.symbols.release(sym);
            }
            self.slots -= 1;
            self.live -= usize::from(series.state.is_some());
        }
        for pk in emptied {
            self.postings.remove(&pk);
        }
    }

    fn view(&self, id: u32) -> Option<SeriesView> {
        let s = self.slot(id)?;
        let state = s.state.clone()?;
        Some(SeriesView {
            id: SeriesRef::new(id, s.generation),
            key: self.key_of(s.key),
            state,
            last_update: s.last_update,
        })
    }

    fn label_value(&self, syms: &[u32], label: &str) -> Option<&str> {
        label_value(|i| self.symbols.resolve(i), syms, label)
    }
}

/// The value of `label` in the key `syms` (the metric name for `__name__`).
fn label_value<'a>(resolve: impl Fn(u32) -> &'a str, syms: &[u32], label: &str) -> Option<&'a str> {
    if label == NAME_LABEL {
        return Some(resolve(syms[0]));
    }
    syms[1..].chunks_exact(2).find(|p| resolve(p[0]) == label).map(|p| resolve(p[1]))
}

impl Memstore {
    /// An empty store.
    ///
    /// # Errors
    /// [`MemstoreError::InvalidConfig`] for a bad configuration.
    pub fn new(config: MemstoreConfig) -> Result<Memstore, MemstoreError> {
        config.validate()?;
        let mut symbols = Symbols::default();
        let name_symbol = symbols.intern(NAME_LABEL);
        let hasher = key_hash_builder();
        let inner = Inner {
            symbols,
            chunks: Vec::new(),
            chunk_series: Vec::new(),
            chunk_generation: Vec::new(),
            empty_chunk: Arc::new(Chunk::default()),
            index: KeyIndex::default(),
            scratch: Vec::new(),
            prev_key: Vec::new(),
            hasher: hasher.clone(),
            postings: HashMap::default(),
            name_symbol,
            deleted: SlotRuns::default(),
            stale_lists: HashSet::default(),
            free: SlotRuns::default(),
            next_id: 0,
            handle_limit: u32::MAX,
            slots: 0,
            live: 0,
            bounds: Arc::from(config.histogram_bounds.as_slice()),
            applied: Lsn::ZERO,
        };
        let id = NEXT_STORE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Memstore { inner: RwLock::new(inner), config, id, hasher })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &MemstoreConfig {
        &self.config
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The handle of a series, if the store has it.
    #[must_use]
    pub fn resolve(&self, key: &SeriesKey) -> Option<SeriesRef> {
        let inner = self.read();
        inner.lookup(key).map(|id| inner.handle(id))
    }

    /// The handle of the series `name` + `labels` (labels in canonical order, as
    /// `ingestor_codec::visit_series_defs` hands them), if the store has it; allocates
    /// nothing. Replay resolves series definitions with it.
    #[must_use]
    pub fn resolve_parts(&self, name: &str, labels: &[(&str, &str)]) -> Option<SeriesRef> {
        let inner = self.read();
        inner.lookup_parts(name, labels.iter().copied(), labels.len()).map(|id| inner.handle(id))
    }

    /// The handle numbered `n` (see [`SeriesRef::get`]), if its series is exactly `name` +
    /// `labels` (canonical order): a check of a guess, without hashing the key. Replay
    /// guesses that a log's series ids follow this store's handles, as they do when the
    /// snapshot before the log was written by the process that wrote the log.
    #[must_use]
    pub fn resolve_at(&self, n: u32, name: &str, labels: &[(&str, &str)]) -> Option<SeriesRef> {
        self.read().resolve_at(n, name, labels)
    }

    /// An empty [`KeyBatch`] for this store: keys checked and hashed by whichever thread
    /// fills it, for [`Memstore::intern_batch`].
    #[must_use]
    pub fn key_batch(&self) -> KeyBatch {
        KeyBatch::new(self.id, self.hasher.clone())
    }

    /// The handles of `batch`'s keys, in order, pushed onto `out`, creating the series that
    /// do not exist yet (without state until their first update), as
    /// [`Memstore::intern_parts_all`] does but without hashing or checking a key under the
    /// lock (the batch did both). `guess(i)` may name the handle number (see
    /// [`SeriesRef::get`]) that key `i` probably has: checked against the stored key first,
    /// and the key's hash looked up only when it is wrong. A replay guesses that a log's
    /// series ids follow this store's handles at a fixed distance, as they do after a
    /// snapshot written by the process that wrote the log. A key given twice gets one series.
    /// Stops at the first refusal, with its place in the batch (the keys before it keep their
    /// series).
    ///
    /// # Errors
    /// [`MemstoreError::SeriesLimit`] and [`MemstoreError::HandlesExhausted`], with the
    /// place of the key refused.
    pub fn intern_batch(
        &self,
        batch: &KeyBatch,
        guess: impl Fn(usize) -> Option<u32>,
        out: &mut Vec<SeriesRef>,
    ) -> Result<(), (usize, MemstoreError)> {
        let mut inner = self.write();
        // Guesses first: the keys they confirm need neither their hash nor the index.
        let found: Vec<Option<SeriesRef>> = (0..batch.len())
            .map(|i| {
                let n = guess(i)?;
                let s = inner.slot(n)?;
                inner
                    .parts_match(s.key, batch.name(i), batch.labels(i), batch.labels(i).len())
                    .then_some(SeriesRef::new(n, s.generation))
            })
            .collect();
        // A batch another store made hashed its keys with that store's hasher.
        let rehashed: Vec<u64>;
        let hashes = if batch.store == self.id {
            &batch.hashes
        } else {
            rehashed = (0..batch.len()).map(|i| batch.rehash(i, &self.hasher)).collect();
            &rehashed
        };
        out.reserve(batch.len());
        let mut missed: Vec<u64> = Vec::with_capacity(TOUCHED);
        for (from, found) in found.chunks(TOUCHED).enumerate().map(|(c, f)| (c * TOUCHED, f)) {
            missed.clear();
            missed.extend(
                found.iter().zip(&hashes[from..]).filter(|(f, _)| f.is_none()).map(|(_, &h)| h),
            );
            inner.touch_all(&missed);
            for (i, (found, &h)) in found.iter().zip(&hashes[from..]).enumerate() {
                let i = from + i;
                let series = match found {
                    Some(series) => *series,
                    None => self
                        .intern_hashed(&mut inner, h, batch.name(i), batch.labels(i), false)
                        .map_err(|e| (i, e))?,
                };
                out.push(series);
            }
        }
        Ok(())
    }

    /// The handles of `keys`, creating the series that do not exist yet (without state until
    /// their first update). All or nothing: if the new ones would exceed the series limit,
    /// nothing is created. Returns the handles, in the order of `keys`, and the handles of the
    /// series this call created (see [`Memstore::discard_unwritten`]).
    ///
    /// # Errors
    /// [`MemstoreError::SeriesLimit`].
    pub fn intern_all(
        &self,
        keys: &[&SeriesKey],
    ) -> Result<(Vec<SeriesRef>, Vec<SeriesRef>), MemstoreError> {
        let mut inner = self.write();
        // Each key hashed once; the hash serves the lookup, the search for keys repeated in
        // `keys` and the insertion.
        let hashes: Vec<u64> = keys.iter().map(|k| inner.hash_key(k)).collect();
        let mut found: Vec<Option<u32>> = Vec::with_capacity(keys.len());
        for (keys, hashes) in keys.chunks(TOUCHED).zip(hashes.chunks(TOUCHED)) {
            inner.touch_all(hashes);
            found.extend(keys.iter().zip(hashes).map(|(k, &h)| inner.lookup_key_hashed(h, k)));
        }
        // The new keys, by hash: a key repeated in the batch is created once, at its first
        // place, and its later places take that series (keys are compared only where
        // hashes are equal).
        let mut new: Vec<(u64, usize)> = found
            .iter()
            .enumerate()
            .filter(|(_, f)| f.is_none())
            .map(|(i, _)| (hashes[i], i))
            .collect();
        new.sort_unstable();
        let mut first_place: HashMap<usize, usize, IdHashBuilder> = HashMap::default();
        for run in new.chunk_by(|a, b| a.0 == b.0).filter(|run| run.len() > 1) {
            for (k, &(_, i)) in run.iter().enumerate() {
                if let Some(&(_, first)) = run[..k].iter().find(|&&(_, j)| keys[j] == keys[i]) {
                    first_place.insert(i, first);
                }
            }
        }
        let new_series = new.len() - first_place.len();
        if inner.slots + new_series > self.config.max_series {
            let first_new = new.iter().map(|&(_, i)| i).min().unwrap_or_default();
            return Err(MemstoreError::SeriesLimit {
                limit: self.config.max_series,
                key: keys.get(first_new).map(ToString::to_string).unwrap_or_default(),
            });
        }
        inner.check_handles(new_series)?;
        let mut out: Vec<SeriesRef> = Vec::with_capacity(keys.len());
        let mut created = Vec::with_capacity(new_series);
        for (i, ((key, &looked), &h)) in keys.iter().zip(&found).zip(&hashes).enumerate() {
            // The index places where the next keys' series will go, read ahead.
            if i % TOUCHED == 0 && new_series > 0 {
                let ahead = i..(i + TOUCHED).min(keys.len());
                inner.touch_places(ahead.filter(|&j| found[j].is_none()).map(|j| hashes[j]));
            }
            let id = match (looked, first_place.get(&i)) {
                (Some(id), _) => inner.handle(id),
                (None, Some(&first)) => out[first],
                (None, None) => {
                    let labels = key.labels().iter().map(|l| (l.name(), l.value()));
                    let id = inner.insert_hashed(h, key.name(), labels, key.labels().len());
                    created.push(id);
                    id
                }
            };
            out.push(id);
        }
        Ok((out, created))
    }

    /// The handle of the series `name` + `labels` (canonical: labels sorted by name, as a
    /// log or a snapshot holds them), creating it without state if it does not exist. The
    /// key is hashed once and no [`SeriesKey`] is built: for replay, which defines every
    /// series of the log this way.
    ///
    /// # Errors
    /// [`MemstoreError::InvalidKey`] for parts that are not a valid canonical key (checked
    /// when the series is new); [`MemstoreError::SeriesLimit`].
    pub fn intern_parts(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<SeriesRef, MemstoreError> {
        let mut inner = self.write();
        let h = key_hash(&inner.hasher, name, labels.iter().copied());
        self.intern_hashed(&mut inner, h, name, labels.iter().copied(), true)
    }

    /// [`Memstore::intern_parts`] for each key of `keys` in order (a key given twice gets one
    /// series), under one lock, reading ahead the places of their hashes in the index, a few
    /// hundred keys at a time (loads the processor overlaps, instead of one cache miss after
    /// the other). Pushes each key's handle onto `out`;
    /// stops at the first refusal, with its place in `keys` (the keys before it keep their
    /// series).
    ///
    /// # Errors
    /// As [`Memstore::intern_parts`], with the place of the key refused.
    pub fn intern_parts_all(
        &self,
        keys: &[(&str, &[(&str, &str)])],
        out: &mut Vec<SeriesRef>,
    ) -> Result<(), (usize, MemstoreError)> {
        let mut inner = self.write();
        let hashes: Vec<u64> = keys
            .iter()
            .map(|(name, labels)| key_hash(&inner.hasher, name, labels.iter().copied()))
            .collect();
        for (i, (&(name, labels), &h)) in keys.iter().zip(&hashes).enumerate() {
            if i % TOUCHED == 0 {
                inner.touch_all(&hashes[i..(i + TOUCHED).min(hashes.len())]);
            }
            let parts = labels.iter().copied();
            out.push(self.intern_hashed(&mut inner, h, name, parts, true).map_err(|e| (i, e))?);
        }
        Ok(())
    }

    /// The handle of the series `name` + `labels` (canonical order) whose key hashes to `h`,
    /// created if new; the key is checked first when `check` says so (a [`KeyBatch`]'s keys
    /// were checked as they were added).
    fn intern_hashed<'k>(
        &self,
        inner: &mut Inner,
        h: u64,
        name: &str,
        labels: impl ExactSizeIterator<Item = (&'k str, &'k str)> + Clone,
        check: bool,
    ) -> Result<SeriesRef, MemstoreError> {
        let len = labels.len();
        if let Some(id) = inner.lookup_hashed(h, name, labels.clone(), len) {
            return Ok(inner.handle(id));
        }
        let invalid = |e: ingestor_codec::ValidationError| MemstoreError::InvalidKey {
            reason: e.to_string(),
        };
        if check || inner.slots >= self.config.max_series {
            let parts: Vec<(&str, &str)> = labels.clone().collect();
            ingestor_codec::validate_canonical(name, &parts).map_err(invalid)?;
            if inner.slots >= self.config.max_series {
                return Err(MemstoreError::SeriesLimit {
                    limit: self.config.max_series,
                    key: SeriesKey::from_canonical(name, &parts).map_err(invalid)?.to_string(),
                });
            }
        }
        inner.check_handles(1)?;
        Ok(inner.insert_hashed(h, name, labels, len))
    }

    /// Removes the series among `ids` that were never written (a refused batch's new series),
    /// so that a refused batch leaves nothing behind.
    pub fn discard_unwritten(&self, ids: &[SeriesRef]) {
        let mut inner = self.write();
        let unwritten: Vec<u32> = ids
            .iter()
            .filter(|&&id| inner.live(id).is_some_and(|s| s.state.is_none()))
            .map(|id| id.index)
            .collect();
        inner.remove_many(&unwritten);
    }

    /// Removes every series that was never written (after a replay, the series that log
    /// records defined but that were deleted before the snapshot).
    pub fn discard_all_unwritten(&self) {
        let mut inner = self.write();
        let unwritten: Vec<u32> =
            inner.ids().filter(|&id| inner.slot(id).is_some_and(|s| s.state.is_none())).collect();
        inner.remove_many(&unwritten);
    }

    /// Frees the slots of the series deleted since the last call, for new series to take
    /// (each with the slot's next generation, so that the deleted series' handles stay
    /// refused). Returns how many it freed.
    ///
    /// Until its owner calls this, a store gives no slot out twice, which lets whoever
    /// logs the store's batches name series by slot index ([`SeriesRef::get`]) in a log
    /// where an index must mean one series for a while: the `ingestor` facade calls it when
    /// the log begins a new segment. A store whose owner never calls it runs out of slots
    /// after 2^32 - 1 series ([`MemstoreError::HandlesExhausted`]).
    ///
    /// The cost is a pass over each label index list that still holds a deleted series
    /// (lists are otherwise compacted only when half of them is deleted series), under the
    /// store's write lock: call it when many slots wait ([`Memstore::deleted_slots`]).
    pub fn free_deleted_slots(&self) -> usize {
        let mut guard = self.write();
        let inner = &mut *guard;
        for pk in std::mem::take(&mut inner.stale_lists) {
            let Some(list) = inner.postings.get_mut(&pk) else { continue };
            if list.dead > 0 {
                list.compact(&inner.chunks);
                if list.ids.is_empty() {
                    inner.postings.remove(&pk);
                }
            }
        }
        let freed = inner.deleted.len();
        inner.free.take_all(&mut inner.deleted);
        freed
    }

    /// Slots of deleted series waiting for [`Memstore::free_deleted_slots`].
    #[must_use]
    pub fn deleted_slots(&self) -> usize {
        self.read().deleted.len()
    }

    /// The handle of one series, creating it if needed.
    ///
    /// # Errors
    /// [`MemstoreError::SeriesLimit`].
    pub fn intern(&self, key: &SeriesKey) -> Result<SeriesRef, MemstoreError> {
        Ok(self.intern_all(&[key])?.0[0])
    }

    /// Calls `each` with the handle, metric name and labels (canonical order) of every
    /// series of `ids` that has a slot, in order, under one read lock and without building
    /// keys: for the series definitions of the log. Returns how many it called `each` for.
    pub fn with_key_parts(
        &self,
        ids: &[SeriesRef],
        mut each: impl FnMut(SeriesRef, &str, &[(&str, &str)]),
    ) -> usize {
        let inner = self.read();
        let mut labels: Vec<(&str, &str)> = Vec::new();
        let mut called = 0;
        for &id in ids {
            let Some(s) = inner.live(id) else { continue };
            labels.clear();
            labels.extend(
                s.key[1..]
                    .chunks_exact(2)
                    .map(|p| (inner.symbols.resolve(p[0]), inner.symbols.resolve(p[1]))),
            );
            each(id, inner.symbols.resolve(s.key[0]), &labels);
            called += 1;
        }
        called
    }

    /// The key of a handle.
    ///
    /// # Errors
    /// [`MemstoreError::UnknownSeries`] for a handle whose series was deleted.
    pub fn key(&self, id: SeriesRef) -> Result<SeriesKey, MemstoreError> {
        let inner = self.read();
        let s = inner.live(id).ok_or(MemstoreError::UnknownSeries { id })?;
        Ok(inner.key_of(s.key))
    }

    /// Checks that a batch can be applied: every handle is live and every operation matches
    /// its series' kind, taking into account the batch's own earlier points (the first
    /// update of a new series fixes its kind; a delete frees it).
    ///
    /// # Errors
    /// [`MemstoreError::UnknownSeries`] or [`MemstoreError::KindConflict`], naming the point.
    pub fn validate(&self, points: &[SlotPoint]) -> Result<(), MemstoreError> {
        let inner = self.read();
        // Kinds as the batch's own earlier creations and deletes left them; most batches only
        // update existing series and never touch this map.
        let mut batch_kinds: HashMap<u32, Option<MetricKind>, IdHashBuilder> = HashMap::default();
        for (index, SlotPoint { series: id, op, .. }) in points.iter().enumerate() {
            let id = *id;
            let s = inner.live(id).ok_or(MemstoreError::UnknownSeries { id })?;
            let current = match batch_kinds.get(&id.index) {
                Some(k) => *k,
                None => s.state.as_ref().map(SeriesState::kind),
            };
            match (current, op.kind()) {
                (Some(existing), Some(k)) if existing == k => {}
                (_, None) => {
                    batch_kinds.insert(id.index, None);
                }
                (None, Some(k)) => {
                    batch_kinds.insert(id.index, Some(k));
                }
                (Some(existing), Some(attempted)) => {
                    return Err(MemstoreError::KindConflict {
                        index,
                        key: inner.key_of(s.key).to_string(),
                        existing,
                        attempted,
                        op: op.name(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies a batch written at `lsn`, in order. The caller validated it
    /// ([`Memstore::validate`]) with no other writer in between.
    ///
    /// # Panics
    /// If a point breaks what validation checks (a broken invariant of the caller).
    pub fn apply(&self, lsn: Lsn, points: &[SlotPoint]) {
        let mut guard = self.write();
        let inner = &mut *guard;
        let bounds = Arc::clone(&inner.bounds);
        let mut deleted = Vec::new();
        let mut rest = points;
        while let Some(first) = rest.first() {
            // The points that follow in the same chunk of slots (most of a batch written in
            // handle order): the chunk made writable once for them all, not once a point
            // (each time an atomic operation on its count).
            let c = (first.series.index >> CHUNK_SHIFT) as usize;
            let run = rest
                .iter()
                .position(|p| (p.series.index >> CHUNK_SHIFT) as usize != c)
                .unwrap_or(rest.len());
            let (here, after) = rest.split_at(run);
            rest = after;
            let chunk =
                Arc::make_mut(inner.chunks.get_mut(c).expect("validated: the series is live"));
            for p in here {
                let s = chunk.slots[p.series.index as usize & (CHUNK - 1)]
                    .as_mut()
                    .expect("validated: the series is live");
                debug_assert_eq!(s.generation, p.series.generation, "validated: the handle's own");
                if p.op == Op::Delete {
                    // The state goes now; the slot goes after the batch, unless a later point
                    // of the same batch writes the series again (it keeps its handle then).
                    let had_state = s.state.take().is_some();
                    s.last_update = Timestamp(i64::MIN);
                    inner.live -= usize::from(had_state);
                    deleted.push(p.series.index);
                    continue;
                }
                s.last_update = s.last_update.max(p.timestamp);
                s.changed = lsn;
                let created = match &mut s.state {
                    Some(state) => {
                        state.apply(&p.op, p.timestamp, lsn);
                        false
                    }
                    None => {
                        s.state = SeriesState::first(&p.op, p.timestamp, lsn, &bounds);
                        true
                    }
                };
                inner.live += usize::from(created);
            }
        }
        deleted.retain(|&id| inner.slot(id).is_some_and(|s| s.state.is_none()));
        inner.remove_many(&deleted);
        inner.applied = inner.applied.max(lsn);
    }

    /// Records that the store now holds a snapshot taken at `lsn`: the last applied LSN
    /// becomes `lsn` and every series without a change of its own (those read from the
    /// snapshot) counts as changed at `lsn`. Called once, after loading.
    pub fn loaded(&self, lsn: Lsn) {
        let mut inner = self.write();
        inner.applied = inner.applied.max(lsn);
        for chunk in &mut inner.chunks {
            if chunk.slots.iter().flatten().any(|s| s.changed == Lsn::ZERO) {
                for s in Arc::make_mut(chunk).slots.iter_mut().flatten() {
                    if s.changed == Lsn::ZERO {
                        s.changed = lsn;
                    }
                }
            }
        }
    }

    /// The LSN of the last batch applied (or of the snapshot loaded); [`Lsn::ZERO`] for
    /// none.
    #[must_use]
    pub fn applied_lsn(&self) -> Lsn {
        self.read().applied
    }

    /// Series with state (interned series never written are not counted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().live
    }

    /// Whether no series has state.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Series slots in use, counting series resolved but never written (what
    /// [`MemstoreConfig::max_series`] limits).
    #[must_use]
    pub fn slots(&self) -> usize {
        self.read().slots
    }

    /// One series by key.
    #[must_use]
    pub fn get(&self, key: &SeriesKey) -> Option<SeriesView> {
        let inner = self.read();
        let id = inner.lookup(key)?;
        inner.view(id)
    }

    /// The kind of a series with state (fixed by its first update), without copying it.
    #[must_use]
    pub fn kind(&self, key: &SeriesKey) -> Option<MetricKind> {
        let inner = self.read();
        let id = inner.lookup(key)?;
        inner.slot(id)?.state.as_ref().map(SeriesState::kind)
    }

    /// The largest timestamp of a series' updates, if it has state: what an expiry checks
    /// again, without copying the series.
    #[must_use]
    pub fn last_update(&self, id: SeriesRef) -> Option<Timestamp> {
        let inner = self.read();
        let s = inner.live(id)?;
        s.state.as_ref().map(|_| s.last_update)
    }

    /// One series by handle.
    #[must_use]
    pub fn get_by_ref(&self, id: SeriesRef) -> Option<SeriesView> {
        let inner = self.read();
        inner.live(id)?;
        inner.view(id.index)
    }

    /// The series a selector matches, sorted by key. A selector with a metric name or an
    /// equality matcher starts from the label index instead of scanning every series; one
    /// without scans a frozen view ([`Memstore::freeze`]), so that writers do not wait for
    /// the scan.
    #[must_use]
    pub fn select(&self, selector: &Selector) -> Vec<SeriesView> {
        let inner = self.read();
        let mut lists: Vec<&[u32]> = Vec::new();
        for m in selector.matchers() {
            if m.op() == MatchOp::Equal && !m.value().is_empty() {
                let (Some(l), Some(v)) =
                    (inner.symbols.get(m.label()), inner.symbols.get(m.value()))
                else {
                    return Vec::new();
                };
                match inner.postings.get(&(l, v)) {
                    Some(list) => lists.push(&list.ids),
                    None => return Vec::new(),
                }
            }
        }
        if lists.is_empty() {
            drop(inner);
            let frozen = self.freeze();
            let sym = |i: u32| frozen.symbols.resolve(i);
            let mut out = frozen.views(|s| {
                selector.matchers().iter().all(|m| m.matches(label_value(sym, s.key, m.label())))
            });
            out.sort_by(|a, b| a.key.cmp(&b.key));
            return out;
        }
        // The shortest list's series, each checked against every matcher (the lists are not
        // sorted, so they are not intersected).
        let first = lists.iter().min_by_key(|l| l.len()).expect("not empty");
        let mut out: Vec<SeriesView> = first
            .iter()
            .copied()
            .filter(|&id| {
                inner.slot(id).is_some_and(|s| {
                    s.state.is_some()
                        && selector
                            .matchers()
                            .iter()
                            .all(|m| m.matches(inner.label_value(s.key, m.label())))
                })
            })
            .filter_map(|id| inner.view(id))
            .collect();
        drop(inner);
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Every series with state, sorted by key; read from a frozen view
    /// ([`Memstore::freeze`]), so that writers do not wait for the copy.
    #[must_use]
    pub fn all(&self) -> Vec<SeriesView> {
        let mut out = self.freeze().views(|_| true);
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Writes every series (or those `selector` matches) in the Prometheus text format 0.0.4.
    pub fn expose(&self, out: &mut String, selector: Option<&Selector>) {
        let series = match selector {
            Some(s) => self.select(s),
            None => self.all(),
        };
        crate::expose::expose(out, series.iter().map(|v| (&v.key, &v.state)));
    }

    /// Series whose last update is older than `before`, for time-to-live expiry (the caller
    /// logs a delete for each, so that replay agrees).
    #[must_use]
    pub fn idle_series(&self, before: Timestamp) -> Vec<(SeriesRef, SeriesKey)> {
        let inner = self.read();
        inner
            .ids()
            .filter_map(|id| {
                let s = inner.slot(id)?;
                (s.state.is_some() && s.last_update < before)
                    .then(|| (SeriesRef::new(id, s.generation), inner.key_of(s.key)))
            })
            .collect()
    }

    /// The handles of the series whose last update is older than `before`, for
    /// time-to-live expiry: as [`Memstore::idle_series`] without building their keys, and
    /// with the list allocated before the store's lock is taken.
    #[must_use]
    pub fn idle_handles(&self, before: Timestamp) -> Vec<SeriesRef> {
        let mut out = Vec::with_capacity(self.len() + CHUNK);
        let inner = self.read();
        out.extend(inner.ids().filter_map(|id| {
            let s = inner.slot(id)?;
            (s.state.is_some() && s.last_update < before)
                .then_some(SeriesRef::new(id, s.generation))
        }));
        out
    }

    /// Captures the whole state in an instant: every chunk is shared, and the writer copies
    /// a chunk only when it changes it afterwards. The pause is a pointer copy per 1,024
    /// series and per 1,024 symbols, plus a copy of the last partial chunk of symbols.
    /// Same as [`Memstore::freeze_in`] with a [`Memstore::freeze_room`] made just before.
    #[must_use]
    pub fn freeze(&self) -> Frozen {
        self.freeze_in(self.freeze_room())
    }

    /// Memory for a [`Frozen`] view of the store as large as it is now (with room to
    /// grow), allocated without holding the store's lock. Take it before a lock of your own
    /// under which you freeze ([`Memstore::freeze_in`]): an allocation made while a lock is
    /// held makes everyone who waits for the lock wait for the allocator too, and glibc's
    /// allocator may spend a long time in one call (merging every small block the thread's
    /// arena holds freed: 0.8 s was measured after a thread freed a million of them).
    #[must_use]
    pub fn freeze_room(&self) -> FreezeRoom {
        let (chunks, symbols) = {
            let inner = self.read();
            (inner.chunks.len(), inner.symbols.chunks.len())
        };
        FreezeRoom {
            chunks: Vec::with_capacity(chunks + ROOM_TO_GROW),
            symbols: Vec::with_capacity(symbols + ROOM_TO_GROW),
            partial: Arc::new(Vec::with_capacity(CHUNK)),
        }
    }

    /// As [`Memstore::freeze`], in memory allocated ahead: under the store's read lock it
    /// allocates nothing unless the store outgrew `room` since it was made.
    #[must_use]
    pub fn freeze_in(&self, room: FreezeRoom) -> Frozen {
        let FreezeRoom { mut chunks, symbols, partial } = room;
        let inner = self.read();
        chunks.clear();
        chunks.extend(inner.chunks.iter().cloned());
        let (symbols, unused) = inner.symbols.freeze_in(symbols, partial);
        let frozen = Frozen { chunks, symbols, live: inner.live, applied: inner.applied };
        drop(inner);
        drop(unused);
        frozen
    }

    /// Inserts a series read from a snapshot. Keys must be new to the store.
    ///
    /// # Errors
    /// [`MemstoreError::SeriesLimit`]; [`MemstoreError::DuplicateSeries`] for a key the store
    /// already has.
    pub fn insert_loaded(&self, record: SeriesRecord) -> Result<SeriesRef, MemstoreError> {
        let key = &record.key;
        let labels: Vec<(&str, &str)> =
            key.labels().iter().map(|l| (l.name(), l.value())).collect();
        self.loader().insert_parts(key.name(), &labels, record.state, record.last_update)
    }

    /// A [`Loader`]: inserts many series read from a snapshot under one hold of the
    /// store's write lock (readers and writers wait until it is dropped).
    #[must_use]
    pub fn loader(&self) -> Loader<'_> {
        Loader { inner: self.write(), max_series: self.config.max_series, store: self.id }
    }
}

/// Why [`insert_loaded`] refused a series, before the key is named.
enum LoadRefusal {
    Duplicate,
    Limit(usize),
    Handles(MemstoreError),
}

impl LoadRefusal {
    fn named(self, key: impl FnOnce() -> String) -> MemstoreError {
        match self {
            LoadRefusal::Duplicate => MemstoreError::DuplicateSeries { key: key() },
            LoadRefusal::Limit(limit) => MemstoreError::SeriesLimit { limit, key: key() },
            LoadRefusal::Handles(e) => e,
        }
    }
}

/// Inserts a new series with its state (a valid canonical key, `len` labels, hashing to
/// `h`).
#[allow(clippy::too_many_arguments)]
fn insert_loaded<'k, I>(
    inner: &mut Inner,
    max_series: usize,
    h: u64,
    name: &str,
    labels: I,
    len: usize,
    state: SeriesState,
    last_update: Timestamp,
) -> Result<SeriesRef, LoadRefusal>
where
    I: Iterator<Item = (&'k str, &'k str)> + Clone,
{
    if inner.lookup_hashed(h, name, labels.clone(), len).is_some() {
        return Err(LoadRefusal::Duplicate);
    }
    if inner.slots + 1 > max_series {
        return Err(LoadRefusal::Limit(max_series));
    }
    inner.check_handles(1).map_err(LoadRefusal::Handles)?;
    let id = inner.insert_hashed(h, name, labels, len);
    let s = inner.slot_mut(id.index).expect("just inserted");
    s.state = Some(state);
    s.last_update = last_update;
    inner.live += 1;
    Ok(id)
}

/// Inserts series read from a snapshot while holding the store's write lock
/// ([`Memstore::loader`]): one lock for a whole chunk of a snapshot, and no [`SeriesKey`]
/// built per series.
pub struct Loader<'a> {
    inner: RwLockWriteGuard<'a, Inner>,
    max_series: usize,
    /// The store's id (whose hasher a [`KeyBatch`] used).
    store: u64,
}

impl std::fmt::Debug for Loader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").finish_non_exhaustive()
    }
}

/// One series for [`Loader::insert_batch`]: its key as parts (canonical order), its state.
#[derive(Debug)]
pub struct LoadSeries<'a> {
    /// The metric name.
    pub name: &'a str,
    /// The labels, sorted by name, each name once.
    pub labels: &'a [(&'a str, &'a str)],
    /// Its state.
    pub state: SeriesState,
    /// The largest timestamp of its updates.
    pub last_update: Timestamp,
}

impl Loader<'_> {
    /// Makes room for `series` more series in the store's key index at once (a snapshot's
    /// header counts its series): the index then does not grow, rehashing every key, at each
    /// doubling of the load. At most the room the series limit leaves is made; a caller
    /// with a count it cannot trust bounds it further (the snapshot loader, by its file's
    /// size). Only room is made: a count larger than the series that come costs the index's
    /// places (8 bytes each, zeroed lazily), nothing else.
    pub fn reserve(&mut self, series: usize) {
        let room = self.max_series.saturating_sub(self.inner.slots);
        self.inner.index.reserve(series.min(room));
    }

    /// Inserts `batch` in order, as [`Loader::insert_parts`] each, reading ahead the places
    /// of their keys in the store's index 256 series at a time (loads the processor
    /// overlaps, instead of one cache miss after the other; few enough that they are still
    /// cached when their inserts come). Stops at the first refusal: returns the series
    /// inserted, or the refused one's place in `batch` and why (those before it stay
    /// inserted).
    ///
    /// # Errors
    /// As [`Loader::insert_parts`], with the place of the series refused.
    pub fn insert_batch(
        &mut self,
        batch: Vec<LoadSeries<'_>>,
    ) -> Result<usize, (usize, MemstoreError)> {
        let hashes: Vec<u64> = batch
            .iter()
            .map(|s| key_hash(&self.inner.hasher, s.name, s.labels.iter().copied()))
            .collect();
        let n = batch.len();
        let mut series = batch.into_iter();
        for (from, hashes) in hashes.chunks(TOUCHED).enumerate().map(|(c, h)| (c * TOUCHED, h)) {
            self.inner.touch_all(hashes);
            // The hashes first: a zip that ends on them takes no series from `series`.
            for (i, (&h, s)) in hashes.iter().zip(series.by_ref()).enumerate() {
                self.insert_hashed(h, s).map_err(|e| (from + i, e))?;
            }
        }
        debug_assert!(series.next().is_none(), "every series inserted");
        Ok(n)
    }

    /// As [`Loader::insert_batch`], for keys checked and hashed ahead, by any thread
    /// ([`Memstore::key_batch`]): key `i` of `keys` gets the `i`-th state and last update of
    /// `states` (one each; where either runs out first, the rest of the other is not
    /// inserted). A load can then decode and hash its next chunk on another thread while
    /// this one inserts. Returns the series inserted.
    ///
    /// # Errors
    /// As [`Loader::insert_batch`] (a key is not checked again).
    pub fn insert_keys(
        &mut self,
        keys: &KeyBatch,
        states: impl IntoIterator<Item = (SeriesState, Timestamp)>,
    ) -> Result<usize, (usize, MemstoreError)> {
        // A batch another store made hashed its keys with that store's hasher.
        let rehashed: Vec<u64>;
        let hashes = if keys.store == self.store {
            &keys.hashes
        } else {
            rehashed = (0..keys.len()).map(|i| keys.rehash(i, &self.inner.hasher)).collect();
            &rehashed
        };
        let mut states = states.into_iter();
        let mut inserted = 0;
        for (from, hashes) in hashes.chunks(TOUCHED).enumerate().map(|(c, h)| (c * TOUCHED, h)) {
            self.inner.touch_all(hashes);
            // The hashes first: a zip that ends on them takes no state from `states`.
            for (i, (&h, (state, last_update))) in hashes.iter().zip(states.by_ref()).enumerate() {
                let i = from + i;
                let (name, labels) = (keys.name(i), keys.labels(i));
                let len = labels.len();
                insert_loaded(
                    &mut self.inner,
                    self.max_series,
                    h,
                    name,
                    labels,
                    len,
                    state,
                    last_update,
                )
                .map_err(|e| {
                    let labels: Vec<(&str, &str)> = keys.labels(i).collect();
                    (i, e.named(|| key_text(name, &labels)))
                })?;
                inserted += 1;
            }
        }
        Ok(inserted)
    }

    /// [`Loader::insert_parts`], given the key's hash.
    fn insert_hashed(&mut self, h: u64, s: LoadSeries<'_>) -> Result<SeriesRef, MemstoreError> {
        ingestor_codec::validate_canonical(s.name, s.labels)
            .map_err(|e| MemstoreError::InvalidKey { reason: e.to_string() })?;
        let labels = s.labels.iter().copied();
        let len = s.labels.len();
        insert_loaded(
            &mut self.inner,
            self.max_series,
            h,
            s.name,
            labels,
            len,
            s.state,
            s.last_update,
        )
        .map_err(|e| e.named(|| key_text(s.name, s.labels)))
    }

    /// Inserts the series `name` + `labels` (canonical: sorted by name, each name once)
    /// with its state. Keys must be new to the store.
    ///
    /// # Errors
    /// [`MemstoreError::InvalidKey`] for parts that are not a valid canonical key;
    /// [`MemstoreError::SeriesLimit`]; [`MemstoreError::DuplicateSeries`] for a key the store
    /// already has; [`MemstoreError::HandlesExhausted`].
    pub fn insert_parts(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        state: SeriesState,
        last_update: Timestamp,
    ) -> Result<SeriesRef, MemstoreError> {
        let h = key_hash(&self.inner.hasher, name, labels.iter().copied());
        self.insert_hashed(h, LoadSeries { name, labels, state, last_update })
    }
}

/// The text of a valid canonical key given as parts (empty for an invalid one).
fn key_text(name: &str, labels: &[(&str, &str)]) -> String {
    SeriesKey::from_canonical(name, labels).map(|k| k.to_string()).unwrap_or_default()
}

/// Chunks the store may add between [`Memstore::freeze_room`] and [`Memstore::freeze_in`]
/// before the freeze has to allocate (1,024 series or symbols each).
const ROOM_TO_GROW: usize = 64;

/// Memory for a [`Frozen`] view, allocated ahead of the freeze ([`Memstore::freeze_room`]).
#[derive(Debug)]
pub struct FreezeRoom {
    chunks: Vec<Arc<Chunk>>,
    symbols: Vec<Arc<Vec<Arc<str>>>>,
    partial: Arc<Vec<Arc<str>>>,
}

/// One series as a snapshot stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRecord {
    /// Its key.
    pub key: SeriesKey,
    /// Its state.
    pub state: SeriesState,
    /// The largest timestamp of its updates.
    pub last_update: Timestamp,
}

/// The state of a store at one instant ([`Memstore::freeze`]), readable from another thread
/// while the store goes on changing.
#[derive(Clone)]
pub struct Frozen {
    chunks: Vec<Arc<Chunk>>,
    symbols: FrozenSymbols,
    live: usize,
    applied: Lsn,
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen").field("chunks", &self.chunks.len()).finish_non_exhaustive()
    }
}

impl Frozen {
    /// Series with state.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there is no series with state.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes every series with state whose metric name `keep` accepts, in the exposition
    /// format, sorted by family (see [`crate::exposed_family`]) then key, handing the text to
    /// `emit` in pieces of about `piece_bytes`. Stops early when `emit` returns `false` (the
    /// reader went away). Runs on the frozen view: the store is not locked meanwhile.
    pub fn expose(
        &self,
        keep: impl Fn(&str) -> bool,
        piece_bytes: usize,
        mut emit: impl FnMut(String) -> bool,
    ) {
        let sym = |i: u32| self.symbols.resolve(i);
        let mut order: Vec<(Cow<'_, str>, MetricKind, Stored<'_>)> = self
            .chunks
            .iter()
            .flat_map(|c| c.iter())
            .filter_map(|s| {
                let s = s?;
                let kind = s.state.as_ref()?.kind();
                let name = sym(s.key[0]);
                keep(name).then(|| (crate::exposed_family(name, kind), kind, s))
            })
            .collect();
        order.sort_unstable_by(|a, b| {
            (&a.0, a.1).cmp(&(&b.0, b.1)).then_with(|| {
                let (x, y) = (&a.2.key, &b.2.key);
                x.iter().map(|&i| sym(i)).cmp(y.iter().map(|&i| sym(i)))
            })
        });
        let mut exposer = crate::Exposer::default();
        let mut out = String::with_capacity(piece_bytes + 4096);
        for (_, _, s) in order {
            let labels = s.key[1..].chunks_exact(2).map(|p| (sym(p[0]), sym(p[1])));
            let key = SeriesKey::new(sym(s.key[0]), labels).expect("stored keys were validated");
            let state = s.state.as_ref().expect("filtered on state");
            exposer.write(&mut out, &key, state);
            if out.len() >= piece_bytes
                && !emit(std::mem::replace(&mut out, String::with_capacity(piece_bytes + 4096)))
            {
                return;
            }
        }
        if !out.is_empty() {
            emit(out);
        }
    }

    /// Views (with their handles) of the series with state that `keep` accepts.
    fn views(&self, keep: impl Fn(&Stored<'_>) -> bool) -> Vec<SeriesView> {
        let sym = |i: u32| self.symbols.resolve(i);
        let mut out = Vec::new();
        for (c, chunk) in self.chunks.iter().enumerate() {
            let base = (c as u32) << CHUNK_SHIFT;
            for (i, s) in chunk.iter().enumerate() {
                let Some(s) = s.filter(|s| s.state.is_some() && keep(s)) else {
                    continue;
                };
                let labels = s.key[1..].chunks_exact(2).map(|p| (sym(p[0]), sym(p[1])));
                out.push(SeriesView {
                    id: SeriesRef::new(base + i as u32, s.generation),
                    key: SeriesKey::new(sym(s.key[0]), labels).expect("stored keys were validated"),
                    state: s.state.clone().expect("filtered on state"),
                    last_update: s.last_update,
                });
            }
        }
        out
    }

    /// The LSN of the last batch the view holds (every batch up to it, none after it).
    #[must_use]
    pub fn lsn(&self) -> Lsn {
        self.applied
    }

    /// Every series with state that a batch after `after` changed (or that a snapshot
    /// newer than `after` brought), in handle order.
    pub fn changed_since(&self, after: Lsn) -> impl Iterator<Item = SeriesRecord> + '_ {
        self.records(move |s| s.changed > after)
    }

    /// Every series with state, in handle order.
    pub fn iter(&self) -> impl Iterator<Item = SeriesRecord> + '_ {
        self.records(|_| true)
    }

    fn records<'a>(
        &'a self,
        keep: impl Fn(&Stored<'_>) -> bool + 'a,
    ) -> impl Iterator<Item = SeriesRecord> + 'a {
        self.chunks.iter().flat_map(|c| c.iter()).filter_map(move |s| {
            let s = s.filter(|s| keep(s))?;
            let state = s.state.clone()?;
            let sym = |i: u32| self.symbols.resolve(i);
            let labels = s.key[1..].chunks_exact(2).map(|p| (sym(p[0]), sym(p[1])));
            let key = SeriesKey::new(sym(s.key[0]), labels).expect("stored keys were validated");
            Some(SeriesRecord { key, state, last_update: s.last_update })
        })
    }
}
