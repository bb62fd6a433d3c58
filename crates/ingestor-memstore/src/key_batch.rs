//! Series keys checked and hashed ahead of their interning, by any thread: replay's reading
//! thread fills a [`KeyBatch`] with a definitions record's keys while the applying thread
//! interns the record before it ([`crate::Memstore::intern_batch`]), which then neither
//! hashes nor checks a key under the store's lock.

use std::ops::Range;

use ingestor_codec::validate_canonical;

use crate::MemstoreError;
use crate::store::{KeyHashBuilder, key_hash};

/// Series keys (a metric name and labels in canonical order), each checked as
/// [`ingestor_codec::SeriesKey::new`] would and hashed as its store hashes keys, ready for
/// [`crate::Memstore::intern_batch`]. Made by [`crate::Memstore::key_batch`]; reusable after
/// [`KeyBatch::clear`] (its buffers are kept).
///
/// ```
/// use ingestor_memstore::{Memstore, MemstoreConfig};
///
/// let store = Memstore::new(MemstoreConfig::default())?;
/// let mut keys = store.key_batch();
/// keys.push("http_requests_total", &[("code", "200"), ("method", "get")])?;
/// keys.push("up", &[])?;
/// assert!(keys.push("up", &[("b", "1"), ("a", "1")]).is_err(), "labels out of order");
/// let mut handles = Vec::new();
/// store.intern_batch(&keys, |_| None, &mut handles).map_err(|(_, e)| e)?;
/// assert_eq!(handles.len(), 2);
/// assert_eq!(store.resolve_parts("up", &[]), Some(handles[1]));
/// # Ok::<(), ingestor_memstore::MemstoreError>(())
/// ```
#[derive(Clone)]
pub struct KeyBatch {
    /// The store whose hasher hashed the keys ([`crate::Memstore`]'s id).
    pub(crate) store: u64,
    hasher: KeyHashBuilder,
    /// Every key's strings, one after the other.
    strings: String,
    /// Each key: its name, and its labels as a range of `labels`.
    keys: Vec<(Range<usize>, Range<usize>)>,
    /// Label names and values, as ranges of `strings`.
    labels: Vec<(Range<usize>, Range<usize>)>,
    /// Each key's hash.
    pub(crate) hashes: Vec<u64>,
}

impl std::fmt::Debug for KeyBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBatch").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

impl KeyBatch {
    pub(crate) fn new(store: u64, hasher: KeyHashBuilder) -> KeyBatch {
        KeyBatch {
            store,
            hasher,
            strings: String::new(),
            keys: Vec::new(),
            labels: Vec::new(),
            hashes: Vec::new(),
        }
    }

    /// Adds the key `name` + `labels` (labels in canonical order: sorted by name, no name
    /// twice), after checking it.
    ///
    /// # Errors
    /// [`MemstoreError::InvalidKey`] for parts that are not a valid canonical key; the batch
    /// is then unchanged.
    pub fn push(&mut self, name: &str, labels: &[(&str, &str)]) -> Result<(), MemstoreError> {
        validate_canonical(name, labels)
            .map_err(|e| MemstoreError::InvalidKey { reason: e.to_string() })?;
        self.hashes.push(key_hash(&self.hasher, name, labels.iter().copied()));
        let strings = &mut self.strings;
        let mut add = |s: &str| {
            let at = strings.len();
            strings.push_str(s);
            at..strings.len()
        };
        let name = add(name);
        let from = self.labels.len();
        self.labels.extend(labels.iter().map(|&(n, v)| (add(n), add(v))));
        self.keys.push((name, from..self.labels.len()));
        Ok(())
    }

    /// Keys in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the batch holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.strings.clear();
        self.keys.clear();
        self.labels.clear();
        self.hashes.clear();
    }

    /// The metric name of key `i`.
    ///
    /// # Panics
    /// If `i` is not below [`KeyBatch::len`].
    #[must_use]
    pub fn name(&self, i: usize) -> &str {
        &self.strings[self.keys[i].0.clone()]
    }

    /// The labels of key `i`, in canonical order.
    ///
    /// # Panics
    /// If `i` is not below [`KeyBatch::len`].
    pub fn labels(&self, i: usize) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone + '_ {
        self.labels[self.keys[i].1.clone()]
            .iter()
            .map(|(n, v)| (&self.strings[n.clone()], &self.strings[v.clone()]))
    }

    /// Key `i` hashed again with `hasher` (for a batch made by another store).
    pub(crate) fn rehash(&self, i: usize, hasher: &KeyHashBuilder) -> u64 {
        key_hash(hasher, self.name(i), self.labels(i))
    }
}
