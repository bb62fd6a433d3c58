//! The memstore's errors.

use ingestor_codec::MetricKind;

use crate::SeriesRef;

/// What the memstore refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemstoreError {
    /// A batch would create more series than the configured limit.
    #[error(
        "the series limit of {limit} is reached: {key} (and any other new series of the batch) refused"
    )]
    SeriesLimit {
        /// [`crate::MemstoreConfig::max_series`].
        limit: usize,
        /// The first new series refused.
        key: String,
    },
    /// An update of another kind than the series'.
    #[error("point {index}: {key} is a {existing}, so {op} (a {attempted} operation) is refused")]
    KindConflict {
        /// The point's index in the batch.
        index: usize,
        /// The series.
        key: String,
        /// Its kind.
        existing: MetricKind,
        /// The kind of the operation.
        attempted: MetricKind,
        /// The operation.
        op: &'static str,
    },
    /// A handle whose series was deleted (or that never existed).
    #[error("series handle {id} is unknown: the series was deleted; resolve its key again")]
    UnknownSeries {
        /// The handle.
        id: SeriesRef,
    },
    /// A snapshot holds the same series twice.
    #[error("series {key} is already in the store")]
    DuplicateSeries {
        /// The series.
        key: String,
    },
    /// Every slot of this store holds a series or waits to be freed: there are 2^32 - 1
    /// of them, and the slots of deleted series are reused only once the store's owner
    /// frees them ([`Memstore::free_deleted_slots`](crate::Memstore::free_deleted_slots)).
    #[error(
        "no series slot left: {held} slots are held, {deleted} of them by deleted series whose \
         slots were not freed yet"
    )]
    HandlesExhausted {
        /// Slots holding a series or waiting to be freed.
        held: u64,
        /// Slots of deleted series waiting to be freed.
        deleted: u64,
    },
    /// Parts given as a canonical series key are not one.
    #[error("invalid series key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration field is out of range.
    #[error("invalid memstore option {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}
