//! Remote-write series the server has seen, by their labels as sent: each with its key, its
//! engine handle and its kind, so that a request of known series is read without building a
//! key and ingested by handle. One cache per core, as for line protocol.

use std::collections::HashMap;
use std::sync::{MutexGuard, PoisonError};

use ingestor::{SeriesHandle, SeriesKey};

use crate::state::AppState;

/// A series the engine has, as a remote-write sender names it.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) key: SeriesKey,
    pub(crate) handle: SeriesHandle,
    /// A counter (samples are totals) rather than a gauge.
    pub(crate) counter: bool,
}

/// Labels as sent (names and values, in order, each followed by 0xFF, a byte UTF-8 never
/// holds) to the series.
#[derive(Debug)]
pub(crate) struct RwCache {
    by_labels: HashMap<Box<[u8]>, Known>,
    capacity: usize,
    generation: u64,
}

impl RwCache {
    pub(crate) fn new(capacity: usize) -> Self {
        RwCache { by_labels: HashMap::new(), capacity, generation: 0 }
    }

    /// Empties a full cache; call as a request starts.
    pub(crate) fn bound(&mut self) {
        if self.by_labels.len() >= self.capacity {
            self.clear();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.by_labels.clear();
        self.generation += 1;
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn get(&self, labels: &[u8]) -> Option<&Known> {
        self.by_labels.get(labels)
    }

    pub(crate) fn insert(&mut self, labels: Box<[u8]>, known: Known) {
        self.by_labels.insert(labels, known);
    }
}

/// The cache text of a label list.
pub(crate) fn labels_text(labels: &[(&str, &str)], out: &mut Vec<u8>) {
    out.clear();
    for (n, v) in labels {
        out.extend_from_slice(n.as_bytes());
        out.push(0xff);
        out.extend_from_slice(v.as_bytes());
        out.push(0xff);
    }
}

/// A free cache (or the one `hint` picks when all are busy), and its index.
pub(crate) fn any(state: &AppState, hint: usize) -> (usize, MutexGuard<'_, RwCache>) {
    for (i, c) in state.rw_caches.iter().enumerate() {
        if let Ok(guard) = c.try_lock() {
            return (i, guard);
        }
    }
    let i = hint % state.rw_caches.len();
    (i, nth(state, i))
}

/// Cache `i`.
pub(crate) fn nth(state: &AppState, i: usize) -> MutexGuard<'_, RwCache> {
    state.rw_caches[i].lock().unwrap_or_else(PoisonError::into_inner)
}
