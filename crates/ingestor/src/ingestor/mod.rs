//! The ingestor: open (lock, load, replay), ingest, read, snapshot, close.
//!
//! `types.rs` holds the public types it hands out, `open.rs` open and the replay of the log,
//! `ingest.rs` the write path, `maintenance.rs` the background thread, snapshots and expiry,
//! `view.rs` the read-only [`MemstoreView`]; this file the shared state, reads, statistics
//! and close.

mod ingest;
mod maintenance;
mod open;
mod replay;
mod types;
mod view;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ingestor_codec::{Lsn, MetricKind, SeriesKey};
use ingestor_fs::{Fs, FsLock};
use ingestor_memstore::{Memstore, Selector, SeriesView};
use ingestor_snapshot::SnapshotStore;
use ingestor_wal::{SegmentId, Wal};

use maintenance::Msg;

use crate::config::{Config, FinalSnapshot};
use crate::error::{Error, Result};
use crate::slot_set::SlotSet;

/// The directory of the log inside a data directory.
pub const WAL_DIR: &str = "wal";
/// The directory of snapshots inside a data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

pub use types::{Ack, OpenReport, ReplayProgress, SeriesHandle, Stats};
pub use view::MemstoreView;

/// Which series are defined (series-definition records written) in which log segment.
#[derive(Default)]
struct Defined {
    segment: Option<SegmentId>,
    /// The log's segment-local ids that `segment` defines.
    ids: SlotSet,
    /// The ids a batch being logged defines, empty between batches.
    batch: SlotSet,
}

struct SnapshotMark {
    /// The newest snapshot's LSN.
    lsn: Option<Lsn>,
    /// The log's bytes written (since open) when it was taken.
    wal_bytes: u64,
    /// When it was taken (or when the ingestor opened).
    at: Instant,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    points: AtomicU64,
    rejected: AtomicU64,
    snapshots: AtomicU64,
    last_snapshot_nanos: AtomicU64,
    expired: AtomicU64,
}

struct Shared {
    config: Config,
    wal: Wal,
    memstore: Memstore,
    snapshots: SnapshotStore,
    /// The writer lock: validation, the log append and the apply happen under it, so that
    /// the memstore applies batches in LSN order.
    writer: Mutex<Defined>,
    /// One snapshot at a time.
    snapshot: Mutex<SnapshotMark>,
    counters: Counters,
    open_duration: Duration,
    background_error: Mutex<Option<String>>,
    closed: AtomicBool,
    /// The data directory and its file system, for the free-space floor.
    fs: Arc<dyn Fs>,
    dir: std::path::PathBuf,
    space: Mutex<SpaceCheck>,
    _lock: Box<dyn FsLock>,
}

/// The last free-space check: when, and the `(available, total)` it found.
#[derive(Debug, Default)]
struct SpaceCheck {
    at: Option<Instant>,
    found: Option<(u64, u64)>,
}

/// How long a free-space check stands.
const SPACE_CHECK_EVERY: Duration = Duration::from_millis(250);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A crash-recoverable metrics ingestor over a data directory. See the crate documentation.
///
/// `Ingestor` is `Send + Sync`: share it behind an `Arc` and ingest from many threads.
pub struct Ingestor {
    shared: Arc<Shared>,
    worker: Option<(Sender<Msg>, JoinHandle<()>)>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("dir", &self.shared.wal.dir().parent())
            .finish_non_exhaustive()
    }
}

impl Ingestor {
    /// One series by key.
    #[must_use]
    pub fn get(&self, key: &SeriesKey) -> Option<SeriesView> {
        self.shared.memstore.get(key)
    }

    /// The kind of a series (fixed by its first update), if it has state: what a receiver
    /// needs to keep a series' kind when a sender does not say it.
    #[must_use]
    pub fn kind(&self, key: &SeriesKey) -> Option<MetricKind> {
        self.shared.memstore.kind(key)
    }

    /// The series a Prometheus selector matches (for example `http_requests{code=~"5.."}`),
    /// sorted by key.
    ///
    /// # Errors
    /// [`Error::Selector`] naming where the selector does not parse.
    pub fn select(&self, selector: &str) -> Result<Vec<SeriesView>> {
        Ok(self.shared.memstore.select(&Selector::parse(selector)?))
    }

    /// Writes every series (or those a selector matches) in the Prometheus text format 0.0.4.
    pub fn expose(&self, out: &mut String, selector: Option<&Selector>) {
        self.shared.memstore.expose(out, selector);
    }

    /// A read-only view of the in-memory state, for reads the facade does not wrap. It has
    /// no way to change the state: every change goes through [`Ingestor::ingest`] and the log.
    #[must_use]
    pub fn memstore(&self) -> MemstoreView<'_> {
        MemstoreView(&self.shared.memstore)
    }

    /// The data directory's file system: `(available, total, floor)` bytes, the floor from
    /// [`Config::free_space_floor`] (checked at most every 250 ms); `None` where the file
    /// system does not say.
    #[must_use]
    pub fn free_space(&self) -> Option<(u64, u64, u64)> {
        self.shared.space()
    }

    /// Whether the log is poisoned (a sync or write failed in a way that cannot be undone):
    /// every later ingest fails until the directory is reopened. Services turn this into
    /// "not ready".
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.shared.wal.is_poisoned()
    }

    /// Makes everything acknowledged so far durable; returns the durable LSN.
    ///
    /// # Errors
    /// [`Error::Wal`] if the sync fails (the log is then poisoned).
    pub fn sync(&self) -> Result<Lsn> {
        Ok(self.shared.wal.sync()?)
    }

    /// Writes the log's buffer under [`SyncPolicy::Buffered`](crate::SyncPolicy::Buffered)
    /// now, so that every batch acknowledged so far survives a process crash (a no-op under
    /// other policies); returns the last LSN written.
    ///
    /// # Errors
    /// [`Error::Wal`] if the write fails (the log is then poisoned).
    pub fn flush(&self) -> Result<Lsn> {
        Ok(self.shared.wal.flush()?)
    }

    /// Counters and levels.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        let mark = lock(&s.snapshot);
        Stats {
            series: s.memstore.len(),
            batches: s.counters.batches.load(Relaxed),
            points: s.counters.points.load(Relaxed),
            rejected_batches: s.counters.rejected.load(Relaxed),
            snapshots_written: s.counters.snapshots.load(Relaxed),
            last_snapshot_lsn: mark.lsn,
            last_snapshot_duration: Duration::from_nanos(
                s.counters.last_snapshot_nanos.load(Relaxed),
            ),
            expired_series: s.counters.expired.load(Relaxed),
            open_duration: s.open_duration,
            wal: s.wal.stats(),
            background_error: lock(&s.background_error).clone(),
        }
    }

    /// Stops the background thread, writes the final snapshot (unless configured off), syncs
    /// the log and releases the directory.
    ///
    /// # Errors
    /// The first error among them; the ingestor is closed all the same.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.shared.closed.swap(true, Relaxed) {
            return Ok(());
        }
        if let Some((tx, handle)) = self.worker.take() {
            let _ = tx.send(Msg::Shutdown);
            let _ = handle.join();
        }
        let snapshot = match self.shared.config.final_snapshot {
            FinalSnapshot::OnClose => self.shared.take_snapshot().map(|_| ()),
            FinalSnapshot::Never => Ok(()),
        };
        let sync = self.shared.wal.sync().map(|_| ()).map_err(Error::from);
        snapshot.and(sync)
    }
}

impl Drop for Ingestor {
    /// A best-effort close: errors are ignored.
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl Shared {
    /// The data directory's free space against the floor, checked at most every
    /// [`SPACE_CHECK_EVERY`]: `(available, total, floor)`, or `None` where the file system
    /// does not say.
    fn space(&self) -> Option<(u64, u64, u64)> {
        let mut check = lock(&self.space);
        if check.at.is_none_or(|at| at.elapsed() >= SPACE_CHECK_EVERY) {
            check.at = Some(Instant::now());
            check.found = self.fs.space(&self.dir).unwrap_or(None);
        }
        let (available, total) = check.found?;
        Some((available, total, self.config.free_space_floor.bytes(total)))
    }

    /// Refuses a write while the free space is below the floor.
    fn check_space(&self) -> Result<()> {
        match self.space() {
            Some((available, _, floor)) if available < floor => {
                Err(Error::DiskFull { dir: self.dir.clone(), available, floor })
            }
            _ => Ok(()),
        }
    }
}
