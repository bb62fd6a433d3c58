//! [`MemstoreView`]: the read-only view of the in-memory state.

use ingestor_codec::{Lsn, SeriesKey};
use ingestor_memstore::{Memstore, Selector, SeriesView};

/// A read-only view of an [`Ingestor`](super::Ingestor)'s in-memory state
/// ([`Ingestor::memstore`](super::Ingestor::memstore)): reads only, so that nothing can change
/// the state around the log.
#[derive(Clone, Copy)]
pub struct MemstoreView<'a>(pub(super) &'a Memstore);

impl std::fmt::Debug for MemstoreView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemstoreView").field("series", &self.0.len()).finish()
    }
}

impl MemstoreView<'_> {
    /// Series with state.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no series has state.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Series held, with or without state (resolved handles included).
    #[must_use]
    pub fn slots(&self) -> usize {
        self.0.slots()
    }

    /// One series by key.
    #[must_use]
    pub fn get(&self, key: &SeriesKey) -> Option<SeriesView> {
        self.0.get(key)
    }

    /// The series a selector matches.
    #[must_use]
    pub fn select(&self, selector: &Selector) -> Vec<SeriesView> {
        self.0.select(selector)
    }

    /// Every series with state.
    #[must_use]
    pub fn all(&self) -> Vec<SeriesView> {
        self.0.all()
    }

    /// The whole state at one instant, readable while ingestion goes on.
    #[must_use]
    pub fn freeze(&self) -> ingestor_memstore::Frozen {
        self.0.freeze()
    }

    /// The LSN of the last batch applied (or of the snapshot loaded).
    #[must_use]
    pub fn applied_lsn(&self) -> Lsn {
        self.0.applied_lsn()
    }

    /// Writes the series `selector` matches (all without one) in the exposition format.
    pub fn expose(&self, out: &mut String, selector: Option<&Selector>) {
        self.0.expose(out, selector);
    }
}
