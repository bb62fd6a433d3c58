//! Snapshot files of the `ingestor` memstore: the whole in-memory state at one LSN, written
//! atomically, verified when loaded, with retention, fall-back to an older snapshot and the
//! compaction plan that says which log segments may go.
//!
//! Most users want the `ingestor` facade, which takes snapshots on a policy and replays the
//! log after the one it loads.
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use ingestor_codec::{Lsn, Op, SeriesKey, Timestamp};
//! use ingestor_fs::{CrashPolicy, SimFs};
//! use ingestor_memstore::{Memstore, MemstoreConfig, SlotPoint};
//! use ingestor_snapshot::{SnapshotOptions, SnapshotStore, compaction_watermark};
//!
//! let disk = SimFs::new(7);
//! let (store, _removed) =
//!     SnapshotStore::open(Arc::new(disk.clone()), Path::new("/db/snapshots"), SnapshotOptions::default())?;
//!
//! // The memstore after the record at LSN 1.
//! let memstore = Memstore::new(MemstoreConfig::default())?;
//! let id = memstore.intern(&SeriesKey::new("requests", [("code", "200")])?)?;
//! memstore.apply(Lsn(1), &[SlotPoint { series: id, timestamp: Timestamp(1_000), op: Op::CounterAdd(3.0) }]);
//!
//! // Freezing is instant; the snapshot is written while ingestion could go on.
//! let info = store.write(Lsn(1), 1_700_000_000_000, &memstore.freeze())?;
//! assert_eq!((info.lsn, info.series), (Lsn(1), 1));
//!
//! // A power cut: the snapshot was synced and its name made durable.
//! disk.crash(CrashPolicy::DropUnsynced);
//! let (store, _) = SnapshotStore::open(Arc::new(disk), Path::new("/db/snapshots"), SnapshotOptions::default())?;
//! let report = store.load_newest(&MemstoreConfig::default())?;
//! assert_eq!(report.used.map(|u| u.lsn), Some(Lsn(1)));
//! assert_eq!(report.memstore.all(), memstore.all());
//!
//! // Log segments wholly at or below LSN 1 may now be deleted.
//! assert_eq!(compaction_watermark(store.oldest_kept_lsn()?), Some(Lsn(2)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - **A snapshot appears whole or not at all.** It is written under a temporary name,
//!   `fsync`ed, renamed into place and the directory `fsync`ed; after a power cut at any
//!   point, [`SnapshotStore::open`] removes a left-over temporary file and
//!   [`SnapshotStore::load_newest`] finds either the new snapshot or the previous one.
//! - **Nothing damaged is loaded.** Every chunk carries a CRC32C over its lengths and bytes,
//!   and the trailer a CRC32C over the whole file; the header and trailer counts must agree;
//!   every key is validated as user input is. A snapshot that fails is reported with the byte
//!   offset of the damage and the next older one is tried. Rejected files are never deleted.
//! - **Loading is exact.** The loaded memstore holds every series of the frozen one with the
//!   same state, bit for bit (`f64` values included).
//! - **Reading never panics and allocates within bounds**: at most one chunk of at most
//!   [`MAX_CHUNK_LEN`] bytes (raw and stored) at a time, and no count makes it allocate more
//!   than the bytes present.
//! - **Retention never removes the snapshot just written nor a newer one**, and keeps the
//!   [`SnapshotOptions::keep`] newest; after a crash in the middle of it, the newest good
//!   snapshot is at least the one written before.
//! - **The log is compacted only below the oldest snapshot kept** ([`compaction_watermark`]),
//!   so loading can always fall back to any snapshot kept and replay from it.
//!
//! The byte layout is specified in `docs/format.md` ("Snapshot files").
#![forbid(unsafe_code)]

#[cfg(ingestor_deliberate_bugs)]
mod bugs;
mod error;
mod format;
mod inspect;
mod load;
mod options;
mod store;
mod write;

pub use error::SnapshotError;
pub use format::{
    CHUNK_HEADER_LEN, MAX_CHUNK_LEN, SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, SNAPSHOT_TRAILER_LEN,
    TRAILER_MAGIC,
};
pub use ingestor_codec::Lsn;
pub use inspect::{ChunkInfo, SnapshotContents, list_files, read_file, verify_file};
pub use options::{SnapshotCompression, SnapshotOptions};
pub use store::{LoadReport, RejectedSnapshot, SnapshotInfo, SnapshotStore};

/// The named steps of the write protocol at which a simulated power cut can be made
/// ([`ingestor_fs::SimFs::arm_crash_point`]). Test machinery for the crash tests, hidden from
/// the documentation and not part of the API (`docs/versioning.md`).
#[doc(hidden)]
pub mod crash_points {
    /// After about half of a snapshot's chunks were written (after the header when there is
    /// no chunk), before the rest.
    pub const WRITE_MIDDLE: &str = "snapshot.write.middle";
    /// After the temporary file was synced, before it is renamed into place.
    pub const BEFORE_RENAME: &str = "snapshot.before_rename";
    /// After the rename, before the directory is synced.
    pub const BEFORE_DIR_SYNC: &str = "snapshot.before_dir_sync";
    /// During retention, after one old snapshot was removed and before the next one is.
    pub const RETENTION_BETWEEN: &str = "snapshot.retention.between";
    /// Every named point, for harnesses that check each was reached.
    pub const ALL: [&str; 4] = [WRITE_MIDDLE, BEFORE_RENAME, BEFORE_DIR_SYNC, RETENTION_BETWEEN];
}

/// The compaction plan: log segments wholly at or below the oldest kept snapshot's LSN may be
/// deleted; returns the watermark to pass to `ingestor_wal::Wal::delete_below` (i.e. S + 1),
/// `None` when no snapshot is kept.
///
/// Compacting below the *oldest* kept snapshot, not the newest, is what lets
/// [`SnapshotStore::load_newest`] fall back to an older snapshot and still replay the log
/// from it.
///
/// ```
/// use ingestor_snapshot::{Lsn, compaction_watermark};
/// assert_eq!(compaction_watermark(Some(Lsn(41))), Some(Lsn(42)));
/// assert_eq!(compaction_watermark(None), None);
/// ```
#[must_use]
pub fn compaction_watermark(oldest_kept: Option<Lsn>) -> Option<Lsn> {
    oldest_kept.map(|lsn| Lsn(lsn.0.saturating_add(1)))
}
