//! Statistics read from atomics, and the event-listener trait.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ingestor_codec::Lsn;

use crate::error::WalError;
use crate::report::RecoveryReport;
use crate::segment::SegmentId;

/// Counters of a log since it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct WalStats {
    /// Append calls that wrote.
    pub appends: u64,
    /// Records appended.
    pub records: u64,
    /// Bytes written by appends (frames).
    pub bytes_written: u64,
    /// Syncs of segment data (group commits, rotations, explicit syncs).
    pub syncs: u64,
    /// Time spent in those syncs.
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))]
    pub sync_time_total: Duration,
    /// The longest of them.
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))]
    pub sync_time_max: Duration,
    /// Segments started after the first.
    pub rotations: u64,
    /// The longest rotation that succeeded: the time the thread that rotated spent ending
    /// the segment and starting the next. It includes writing a `Buffered` log's buffer,
    /// waiting for the close of the rotation before if that is still running, and the
    /// ended segment's sync where the rotation makes it (under `Os` and `Buffered` an
    /// append's rotation leaves that sync for later).
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))]
    pub rotation_time_max: Duration,
    /// Torn tails cut at open.
    pub truncations: u64,
    /// Corruption found at open.
    pub corruptions: u64,
    /// Writes that failed and were undone.
    pub failed_writes: u64,
    /// Segments deleted below a watermark.
    pub segments_deleted: u64,
    /// Segments that began as a spare prepared ahead: zero-filled, or under
    /// `SegmentFill::AllocateAhead` fallocate'd (see `SegmentFill`).
    pub spare_segments: u64,
    /// Spares that could not be written (no space, an I/O error) or were not tried for want
    /// of room: rotation used `fallocate` then.
    pub spare_failures: u64,
    /// The last LSN written.
    pub written_lsn: Lsn,
    /// The last LSN accepted (see [`crate::Wal::accepted_lsn`]).
    pub accepted_lsn: Lsn,
    /// The last LSN known durable.
    pub durable_lsn: Lsn,
    /// Segment files in the log.
    pub segments: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) appends: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) sync_nanos_total: AtomicU64,
    pub(crate) sync_nanos_max: AtomicU64,
    pub(crate) rotations: AtomicU64,
    pub(crate) rotation_nanos_max: AtomicU64,
    pub(crate) truncations: AtomicU64,
    pub(crate) corruptions: AtomicU64,
    pub(crate) failed_writes: AtomicU64,
    pub(crate) segments_deleted: AtomicU64,
    pub(crate) spare_segments: AtomicU64,
    pub(crate) spare_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Adds to a counter that only the holder of the log's write lock changes: a plain load
    /// and store, without the cost of an atomic read-modify-write on every append (readers
    /// of the statistics still see whole values).
    pub(crate) fn add_locked(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub(crate) fn sync_took(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.syncs.fetch_add(1, Relaxed);
        self.sync_nanos_total.fetch_add(nanos, Relaxed);
        self.sync_nanos_max.fetch_max(nanos, Relaxed);
    }

    pub(crate) fn rotation_took(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.rotation_nanos_max.fetch_max(nanos, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WalStats {
        WalStats {
            appends: self.appends.load(Relaxed),
            records: self.records.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            syncs: self.syncs.load(Relaxed),
            sync_time_total: Duration::from_nanos(self.sync_nanos_total.load(Relaxed)),
            sync_time_max: Duration::from_nanos(self.sync_nanos_max.load(Relaxed)),
            rotations: self.rotations.load(Relaxed),
            rotation_time_max: Duration::from_nanos(self.rotation_nanos_max.load(Relaxed)),
            truncations: self.truncations.load(Relaxed),
            corruptions: self.corruptions.load(Relaxed),
            failed_writes: self.failed_writes.load(Relaxed),
            segments_deleted: self.segments_deleted.load(Relaxed),
            spare_segments: self.spare_segments.load(Relaxed),
            spare_failures: self.spare_failures.load(Relaxed),
            written_lsn: Lsn::ZERO,
            accepted_lsn: Lsn::ZERO,
            durable_lsn: Lsn::ZERO,
            segments: 0,
        }
    }
}

/// Hooks called when the log does something worth telling. Every method does nothing by
/// default; implement the ones you need. Methods are called on the thread that did the work,
/// sometimes with the log's write lock held: keep them short and never call back into the log.
pub trait WalListener: Send + Sync + fmt::Debug {
    /// Recovery finished (also called for a clean open).
    fn on_recovery(&self, _report: &RecoveryReport) {}
    /// A new segment became the active one.
    fn on_rotate(&self, _segment: SegmentId) {}
    /// A sync made everything up to `durable` durable.
    fn on_sync(&self, _durable: Lsn, _took: Duration) {}
    /// A segment was deleted below a watermark.
    fn on_delete(&self, _segment: SegmentId) {}
    /// The log was poisoned and refuses writes until reopened.
    fn on_poisoned(&self, _cause: &WalError) {}
}

/// A listener that does nothing.
#[derive(Debug, Default)]
pub(crate) struct NoListener;

impl WalListener for NoListener {}
