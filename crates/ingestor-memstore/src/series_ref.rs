//! [`SeriesRef`], the memstore's handle to a series, and [`SlotPoint`], an update addressed
//! by one.

use std::fmt;

use ingestor_codec::{Op, Timestamp};

/// A handle to a series in one [`Memstore`](crate::Memstore): the index of the series' slot
/// and the slot's generation.
///
/// [`Memstore::intern`](crate::Memstore::intern) and
/// [`Memstore::resolve`](crate::Memstore::resolve) hand it out; updates addressed by it
/// ([`SlotPoint`]) skip hashing the label set.
///
/// - **Valid** in the memstore that handed it out, until its series is deleted: the handle is
///   then refused ([`MemstoreError::UnknownSeries`](crate::MemstoreError::UnknownSeries)),
///   for good; interning the key again gives a new handle.
/// - **Slots are reused**, handles are not: once the store's owner frees the slots of deleted
///   series ([`Memstore::free_deleted_slots`](crate::Memstore::free_deleted_slots)), a new
///   series may take the slot, with the next generation. The old handle names the old
///   generation and stays refused. A slot whose generation reached `u32::MAX` is retired
///   instead of reused, so no handle is ever given out twice.
/// - **Not** valid in another memstore, and not across restarts: a store loaded from a
///   snapshot and a log numbers its series anew.
/// - **Never written to disk** by the memstore: snapshots store keys. It is not the log's
///   segment-local series id (`ingestor_codec::SeriesId`); whoever writes a log maps one to
///   the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesRef {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl SeriesRef {
    pub(crate) fn new(index: u32, generation: u32) -> SeriesRef {
        SeriesRef { index, generation }
    }

    /// The slot's index. Distinct live handles of one store have distinct indexes; an index
    /// is given to a new series only after its slot was freed (see
    /// [`Memstore::free_deleted_slots`](crate::Memstore::free_deleted_slots)).
    #[must_use]
    pub fn get(self) -> u32 {
        self.index
    }

    /// The slot's generation when the handle was given out: 0 for a slot's first series,
    /// one more each time the slot is reused.
    #[must_use]
    pub fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Display for SeriesRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.generation == 0 {
            write!(f, "#{}", self.index)
        } else {
            write!(f, "#{}.{}", self.index, self.generation)
        }
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
