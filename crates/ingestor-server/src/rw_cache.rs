//! Remote-write series the server has seen, by their labels as sent: each with its engine
//! handle and its kind, so that a request of known series is read without building a key or
//! checking a label, and ingested by handle. One cache per core, as for line protocol.

use std::collections::HashMap;
use std::sync::{MutexGuard, PoisonError};

use ingestor::SeriesHandle;
use ingestor_protocols::remote_write_view::RawSeries;

use crate::state::AppState;

/// A series the engine has, as a remote-write sender names it.
#[derive(Debug, Clone)]
pub(crate) struct Known {
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

/// A series' cache key: 1.0's label fields as encoded (they start with the byte 0x0a, the tag
/// of field 1), or, for 2.0 (whose labels are references valid in one request only), the
/// label text (which starts with a label name, never 0x0a): the two kinds of key cannot meet.
/// `None` for 1.0 labels not lying together in the message (not cached). Bytes equal to a
/// cached key were read and checked when it was cached.
pub(crate) fn key_of<'k>(s: &RawSeries<'k, '_>, scratch: &'k mut Vec<u8>) -> Option<&'k [u8]> {
    if s.labels_raw.is_some() {
        return s.labels_raw;
    }
    if s.labels.is_empty() {
        return None;
    }
    labels_text(s.labels, scratch);
    Some(scratch)
}

/// The cache text of a label list.
fn labels_text(labels: &[(&[u8], &[u8])], out: &mut Vec<u8>) {
    out.clear();
    for (n, v) in labels {
        out.extend_from_slice(n);
        out.push(0xff);
        out.extend_from_slice(v);
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
