//! Remote-write series the server has seen, by their labels as sent: each with its engine
//! handle and its kind, so that a request of known series is read without building a key or
//! checking a label, and ingested by handle. One cache per core, as for line protocol.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{MutexGuard, OnceLock, PoisonError};

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

/// A series' key bytes (see [`key_of`]) as two SipHash-1-3 values under keys drawn at random
/// when the process starts: 128 bits. Comparing fingerprints rather than the bytes saves
/// loading a cold copy of every key on every look-up (the largest cost in a profile of the
/// remote-write path: 18-24% of the server's time). Two different label sets share a
/// fingerprint with probability 2^-128 per pair, and no sender can aim for it without the
/// keys, which never leave the process.
pub(crate) type Fingerprint = u128;

/// The fingerprint of key bytes.
pub(crate) fn fingerprint(key: &[u8]) -> Fingerprint {
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    let (a, b) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    (u128::from(a.hash_one(key)) << 64) | u128::from(b.hash_one(key))
}

/// A fingerprint is already uniformly random: the map uses its low bits as they are.
#[derive(Debug, Default)]
pub(crate) struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Label fingerprints to series.
#[derive(Debug)]
pub(crate) struct RwCache {
    by_labels: HashMap<Fingerprint, Known, BuildHasherDefault<Passthrough>>,
    capacity: usize,
    generation: u64,
}

impl RwCache {
    pub(crate) fn new(capacity: usize) -> Self {
        RwCache { by_labels: HashMap::default(), capacity, generation: 0 }
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

    pub(crate) fn get(&self, labels: Fingerprint) -> Option<&Known> {
        self.by_labels.get(&labels)
    }

    pub(crate) fn insert(&mut self, labels: Fingerprint, known: Known) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_keys_apart_and_repeat_for_the_same_key() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000u32 {
            let key = format!("__name__\u{ff}up\u{ff}job\u{ff}{i}\u{ff}");
            assert!(seen.insert(fingerprint(key.as_bytes())), "a collision at {i}");
        }
        assert_eq!(fingerprint(b"abc"), fingerprint(b"abc"));
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
        assert_ne!(fingerprint(b""), fingerprint(b"\0"));
        let mut cache = RwCache::new(2);
        let known = Known { handle: dummy_handle(), counter: true };
        cache.insert(fingerprint(b"a"), known.clone());
        assert!(cache.get(fingerprint(b"a")).is_some());
        assert!(cache.get(fingerprint(b"b")).is_none());
        cache.insert(fingerprint(b"b"), known);
        cache.bound();
        assert!(cache.get(fingerprint(b"a")).is_none(), "a full cache is emptied");
        assert_eq!(cache.generation(), 1);
    }

    fn dummy_handle() -> SeriesHandle {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = ingestor::Ingestor::open(dir.path(), ingestor::Config::default()).unwrap();
        db.resolve(&ingestor::SeriesKey::new("x", std::iter::empty::<(&str, &str)>()).unwrap())
            .unwrap()
    }
}
