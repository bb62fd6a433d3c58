//! [`SeriesRef`], the memstore's handle to a series, and [`SlotPoint`], an update addressed
//! by one.

use std::fmt;

use ingestor_codec::{Op, Timestamp};

/// A handle to a series in one [`Memstore`](crate::Memstore): the index of the series' slot.
///
/// [`Memstore::intern`](crate::Memstore::intern) and
/// [`Memstore::resolve`](crate::Memstore::resolve) hand it out; updates addressed by it
/// ([`SlotPoint`]) skip hashing the label set.
///
/// - **Valid** in the memstore that handed it out, until its series is deleted: the handle is
///   then refused ([`MemstoreError::UnknownSeries`](crate::MemstoreError::UnknownSeries)) and
///   never reused; interning the key again gives a new handle.
/// - **Not** valid in another memstore, and not across restarts: a store loaded from a
///   snapshot and a log numbers its series anew.
/// - **Never written to disk** by the memstore: snapshots store keys. It is not the log's
///   segment-local series id (`ingestor_codec::SeriesId`); whoever writes a log maps one to
///   the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesRef(pub(crate) u32);

impl SeriesRef {
    /// The slot's index. Distinct live handles of one store have distinct indexes, and a
    /// store never hands out an index twice.
    #[must_use]
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for SeriesRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// An update addressed by a [`SeriesRef`]: what [`Memstore::validate`](crate::Memstore::validate)
/// checks and [`Memstore::apply`](crate::Memstore::apply) applies.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotPoint {
    /// The series, by its handle in this memstore.
    pub series: SeriesRef,
    /// When it happened.
    pub timestamp: Timestamp,
    /// What happened.
    pub op: Op,
}
