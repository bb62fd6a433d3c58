//! The ingestor: open (lock, load, replay), ingest, read, snapshot, close.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use ingestor_codec::{
    BatchReader, Lsn, MAX_BATCH_POINTS, MetricKind, Op, Point, RecordType, SeriesDef, SeriesId,
    SeriesKey, Timestamp, Update, encode_batch, encode_series_defs, visit_series_defs,
};
use ingestor_fs::{Fs, FsLock, StdFs};
use ingestor_memstore::{IdHashBuilder, Memstore, Selector, SeriesView};
use ingestor_snapshot::{RejectedSnapshot, SnapshotInfo, SnapshotStore, compaction_watermark};
use ingestor_wal::{AckLevel, RecoveryMode, RecoveryReport, SegmentId, SyncPolicy, Wal, WalStats};

use crate::config::{Config, FinalSnapshot};
use crate::error::{Error, Result};

/// The directory of the log inside a data directory.
pub const WAL_DIR: &str = "wal";
/// The directory of snapshots inside a data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// A resolved series: ingest by handle to skip hashing the label set per point. A handle
/// stays valid until the series is deleted (then the key must be resolved again) and does
/// not survive a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesHandle(SeriesId);

/// The acknowledgement of an ingested batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The LSN of the batch's log record.
    pub lsn: Lsn,
    /// What the batch reached: `Written` survives a process crash, `Durable` a power cut.
    pub level: AckLevel,
    /// Points in the batch.
    pub points: usize,
}

/// Progress of the replay at open, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    /// The LSN just replayed.
    pub lsn: Lsn,
    /// Batches replayed so far.
    pub records: u64,
    /// Points replayed so far.
    pub points: u64,
}

/// What [`Ingestor::open`] found and did.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// The snapshot loaded, if any.
    pub snapshot: Option<SnapshotInfo>,
    /// Snapshots that failed verification (newer than the one loaded), with the reason.
    pub rejected_snapshots: Vec<RejectedSnapshot>,
    /// Series loaded from the snapshot.
    pub snapshot_series: u64,
    /// Leftover temporary snapshot files removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// The log's recovery report (segments, records, truncations, corruption).
    pub wal: RecoveryReport,
    /// Batches replayed from the log after the snapshot.
    pub replayed_records: u64,
    /// Points replayed.
    pub replayed_points: u64,
    /// Points skipped under [`RecoveryMode::SkipCorrupted`] because corruption took their
    /// series definition or an earlier point their batch depended on.
    pub skipped_points: u64,
    /// Where the log was started over, when it ended before the snapshot loaded (after
    /// recovery cut a damaged tail the snapshot covers).
    pub log_restarted_at: Option<Lsn>,
    /// How long opening took.
    pub duration: Duration,
}

impl std::fmt::Display for OpenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.snapshot {
            Some(s) => {
                writeln!(f, "snapshot at LSN {} loaded: {} series", s.lsn, self.snapshot_series)?
            }
            None => writeln!(f, "no snapshot loaded")?,
        }
        for r in &self.rejected_snapshots {
            writeln!(f, "snapshot rejected: {}: {}", r.path.display(), r.reason)?;
        }
        writeln!(
            f,
            "replayed {} batches, {} points from the log",
            self.replayed_records, self.replayed_points
        )?;
        if self.skipped_points > 0 {
            writeln!(
                f,
                "skipped {} points whose series definition or earlier points were lost to \
                 corruption",
                self.skipped_points
            )?;
        }
        write!(f, "{}", self.wal)?;
        if let Some(lsn) = self.log_restarted_at {
            writeln!(f, "the log ended before the snapshot; started it over at LSN {lsn}")?;
        }
        writeln!(f, "opened in {:.1?}", self.duration)
    }
}

/// Counters and levels, read from atomics.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Series with state.
    pub series: usize,
    /// Batches acknowledged.
    pub batches: u64,
    /// Points acknowledged.
    pub points: u64,
    /// Batches refused (invalid, kind conflict, limit, I/O error).
    pub rejected_batches: u64,
    /// Snapshots written since open.
    pub snapshots_written: u64,
    /// The LSN of the newest snapshot, if any.
    pub last_snapshot_lsn: Option<Lsn>,
    /// How long the last snapshot took to write.
    pub last_snapshot_duration: Duration,
    /// Series deleted for being idle longer than the time-to-live.
    pub expired_series: u64,
    /// How long opening (load and replay) took.
    pub open_duration: Duration,
    /// The log's counters.
    pub wal: WalStats,
    /// The last error of the background thread, if any.
    pub background_error: Option<String>,
}

/// Which series are defined (series-definition records written) in which log segment.
#[derive(Default)]
struct Defined {
    segment: Option<SegmentId>,
    ids: HashSet<u32, IdHashBuilder>,
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

enum Msg {
    Snapshot(Sender<Result<Option<SnapshotInfo>>>),
    Shutdown,
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
    /// Opens (or creates) the data directory `dir` on the real file system.
    ///
    /// # Errors
    /// See [`Ingestor::open_with`].
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<(Ingestor, OpenReport)> {
        Ingestor::open_with(Arc::new(StdFs::new()), dir.as_ref(), config, &mut |_| {})
    }

    /// Opens (or creates) a data directory on `fs`: validates the configuration, takes the
    /// directory's lock, loads the newest good snapshot, replays the log after it (calling
    /// `progress` as it goes), and starts the background snapshot thread.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`]; [`Error::Locked`] when another ingestor has the directory
    /// open; log corruption the recovery mode refuses; I/O errors.
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: &Path,
        config: Config,
        progress: &mut dyn FnMut(&ReplayProgress),
    ) -> Result<(Ingestor, OpenReport)> {
        let started = Instant::now();
        config.validate()?;
        ingestor_fs::create_dir_durably(&*fs, dir).map_err(|e| Error::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        })?;
        let dir_lock = fs
            .lock_dir(dir)
            .map_err(|e| Error::Locked { dir: dir.to_path_buf(), reason: e.to_string() })?;
        let (snapshots, removed_temp_files) =
            SnapshotStore::open(Arc::clone(&fs), &dir.join(SNAPSHOT_DIR), config.snapshot.clone())?;
        let loaded = snapshots.load_newest(&config.memstore)?;
        let memstore = loaded.memstore;
        let snapshot_lsn = loaded.used.as_ref().map_or(Lsn::ZERO, |s| s.lsn);
        // Series read from the snapshot count as changed at its LSN (forwarding selects
        // series by the LSN of their last change).
        memstore.loaded(snapshot_lsn);

        let mut replay = Replay {
            memstore: &memstore,
            snapshot_lsn,
            ids: HashMap::default(),
            records: 0,
            points: 0,
            salvage: config.recovery_mode == RecoveryMode::SkipCorrupted,
            skipped_points: 0,
            segment: None,
        };
        let (wal, wal_report) = Wal::open_and_replay_frames(
            Arc::clone(&fs),
            &dir.join(WAL_DIR),
            config.wal_options(),
            // Series definitions before the snapshot are needed too: a segment's batches
            // after the snapshot may use series it defined before.
            Lsn::ZERO,
            |info, payload| {
                let lsn = info.lsn;
                replay
                    .record(info.segment, lsn, info.record_type, payload)
                    .map_err(|e| Box::new(e) as ingestor_wal::ReplayError)?;
                progress(&ReplayProgress { lsn, records: replay.records, points: replay.points });
                Ok(())
            },
        )?;
        let (replayed_records, replayed_points) = (replay.records, replay.points);
        let skipped_points = replay.skipped_points;
        memstore.discard_all_unwritten();
        // The log ends before the snapshot (recovery cut a damaged tail the snapshot covers):
        // continue the log after the snapshot, so that no LSN it covers is ever reissued.
        let log_restarted_at = (wal.written_lsn() < snapshot_lsn).then(|| snapshot_lsn.next());
        if let Some(next) = log_restarted_at {
            wal.skip_to(next)?;
        }
        // This process numbers series anew: it writes segments of its own, so that a series id
        // never means two series in one segment (see `Replay::record`).
        wal.rotate()?;
        // The log must continue the snapshot: compaction deletes what the oldest kept snapshot
        // covers, so a damaged snapshot can leave records that no snapshot holds any more.
        let log_first = wal.segments().first().map_or(Lsn::FIRST, |s| s.0);
        if log_first > snapshot_lsn.next() {
            return Err(Error::MissingRecords {
                snapshot: loaded.used.as_ref().map(|s| s.lsn),
                first: snapshot_lsn.next(),
                last: Lsn(log_first.0 - 1),
                rejected: loaded
                    .rejected
                    .iter()
                    .map(|r| format!("{}: {}", r.path.display(), r.reason))
                    .collect(),
            });
        }

        let open_duration = started.elapsed();
        let shared = Arc::new(Shared {
            config,
            wal,
            memstore,
            snapshots,
            writer: Mutex::new(Defined::default()),
            snapshot: Mutex::new(SnapshotMark {
                lsn: loaded.used.as_ref().map(|s| s.lsn),
                wal_bytes: 0,
                at: Instant::now(),
            }),
            counters: Counters::default(),
            open_duration,
            background_error: Mutex::new(None),
            closed: AtomicBool::new(false),
            fs: Arc::clone(&fs),
            dir: dir.to_path_buf(),
            space: Mutex::new(SpaceCheck::default()),
            _lock: dir_lock,
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("ingestor-maintenance".into())
            .spawn(move || maintenance(&worker_shared, &rx))
            .map_err(|e| Error::Io {
                op: "spawn maintenance thread",
                path: dir.to_path_buf(),
                source: e,
            })?;
        let report = OpenReport {
            snapshot_series: loaded.series,
            snapshot: loaded.used,
            rejected_snapshots: loaded.rejected,
            removed_temp_files,
            wal: wal_report,
            replayed_records,
            replayed_points,
            skipped_points,
            log_restarted_at,
            duration: open_duration,
        };
        Ok((Ingestor { shared, worker: Some((tx, handle)) }, report))
    }

    /// Ingests a batch of updates addressed by key: validates everything, logs one record,
    /// applies it, and acknowledges with its LSN and the level reached. All or nothing: a
    /// refused batch leaves nothing of itself in the log or the memstore.
    ///
    /// # Errors
    /// [`Error::InvalidUpdate`], [`Error::Memstore`] (kind conflict, series limit),
    /// [`Error::Wal`] (I/O; a poisoned log); nothing of the batch was applied.
    pub fn ingest(&self, updates: &[Update]) -> Result<Ack> {
        let shared = &self.shared;
        let result = (|| {
            check_batch(updates.iter().map(|u| &u.op))?;
            shared.check_space()?;
            let keys: Vec<&SeriesKey> = updates.iter().map(|u| &u.key).collect();
            let mut defined = lock(&shared.writer);
            let (ids, created) = shared.memstore.intern_all(&keys)?;
            let points: Vec<Point> = updates
                .iter()
                .zip(&ids)
                .map(|(u, &series)| Point { series, timestamp: u.timestamp, op: u.op.clone() })
                .collect();
            let result = shared.commit(&mut defined, &points);
            if result.is_err() {
                shared.memstore.discard_unwritten(&created);
            }
            drop(defined);
            shared.acknowledge(result?, points.len())
        })();
        shared.count(&result);
        result
    }

    /// Resolves a key to a handle (creating the series, without state, if needed), for
    /// [`Ingestor::ingest_by_handle`].
    ///
    /// # Errors
    /// [`Error::Memstore`] when the series limit is reached.
    pub fn resolve(&self, key: &SeriesKey) -> Result<SeriesHandle> {
        let _writer = lock(&self.shared.writer);
        Ok(SeriesHandle(self.shared.memstore.intern(key)?))
    }

    /// Ingests a batch addressed by handles: the fast path for hot series.
    ///
    /// # Errors
    /// As [`Ingestor::ingest`]; a handle whose series was deleted is refused.
    pub fn ingest_by_handle(&self, points: &[(SeriesHandle, Timestamp, Op)]) -> Result<Ack> {
        let shared = &self.shared;
        let result = (|| {
            check_batch(points.iter().map(|p| &p.2))?;
            shared.check_space()?;
            let points: Vec<Point> = points
                .iter()
                .map(|(h, timestamp, op)| Point {
                    series: h.0,
                    timestamp: *timestamp,
                    op: op.clone(),
                })
                .collect();
            let mut defined = lock(&shared.writer);
            let result = shared.commit(&mut defined, &points);
            drop(defined);
            shared.acknowledge(result?, points.len())
        })();
        shared.count(&result);
        result
    }

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

    /// Writes a snapshot now (and deletes the log segments it covers); `None` if nothing was
    /// logged since the last one. Ingestion goes on meanwhile, after a short pause.
    ///
    /// # Errors
    /// I/O errors of the log or the snapshot.
    pub fn snapshot(&self) -> Result<Option<SnapshotInfo>> {
        self.shared.take_snapshot()
    }

    /// Writes a snapshot of everything logged so far (unless the newest one already covers
    /// it), ends the active log segment and deletes every segment that snapshot covers: the
    /// log then holds nothing older than the snapshot, damaged bytes included. For a
    /// deliberate repair; it gives up the fall-back to older snapshots until the log grows
    /// again. Returns the snapshot the state is in and the segments deleted.
    ///
    /// # Errors
    /// I/O errors of the log or the snapshot.
    pub(crate) fn compact_all(&self) -> Result<(Option<Lsn>, Vec<ingestor_wal::SegmentId>)> {
        let s = &self.shared;
        let before = s.wal.segments();
        s.take_snapshot()?;
        let Some(lsn) = lock(&s.snapshot).lsn else {
            return Ok((None, Vec::new()));
        };
        s.wal.rotate()?;
        s.wal.delete_below(lsn.next())?;
        let after = s.wal.segments();
        Ok((Some(lsn), before.into_iter().filter(|id| !after.contains(id)).collect()))
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

    /// Asks the background thread for a snapshot and waits for it (used by tests and tools
    /// that want the background path).
    ///
    /// # Errors
    /// As [`Ingestor::snapshot`]; [`Error::Closed`] if the thread is gone.
    pub fn snapshot_in_background(&self) -> Result<Option<SnapshotInfo>> {
        let (tx, _) = self.worker.as_ref().ok_or(Error::Closed)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        tx.send(Msg::Snapshot(reply)).map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)?
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

fn check_batch<'a>(ops: impl ExactSizeIterator<Item = &'a Op>) -> Result<()> {
    if ops.len() > MAX_BATCH_POINTS {
        return Err(Error::BatchTooLarge { points: ops.len(), max: MAX_BATCH_POINTS });
    }
    for (index, op) in ops.enumerate() {
        op.validate().map_err(|source| Error::InvalidUpdate { index, source })?;
    }
    Ok(())
}

impl Shared {
    /// Validates, logs and applies a batch; the caller holds the writer lock.
    fn commit(&self, defined: &mut Defined, points: &[Point]) -> Result<ingestor_wal::Ack> {
        self.memstore.validate(points)?;
        if points.is_empty() {
            let lsn = self.wal.written_lsn();
            return Ok(ingestor_wal::Ack { first: lsn, last: lsn, level: AckLevel::Written });
        }
        let mut landed: Option<(SegmentId, Vec<u32>)> = None;
        let ack = self.wal.append_with(|batch| {
            let segment = batch.segment();
            let fresh = defined.segment != Some(segment);
            let mut new_ids: Vec<u32> = Vec::new();
            let mut seen: HashSet<u32, IdHashBuilder> = HashSet::default();
            for p in points {
                if (fresh || !defined.ids.contains(&p.series.0)) && seen.insert(p.series.0) {
                    new_ids.push(p.series.0);
                }
            }
            if !new_ids.is_empty() {
                let defs: Vec<SeriesDef> = new_ids
                    .iter()
                    .map(|&id| {
                        // Validation just proved every handle live, under the writer lock
                        // that every delete also takes.
                        let key =
                            self.memstore.key(SeriesId(id)).expect("validated: the series is live");
                        SeriesDef { id: SeriesId(id), key }
                    })
                    .collect();
                batch.push_with(RecordType::SeriesDefs as u8, |buf| {
                    encode_series_defs(&defs, buf).expect("no more definitions than points");
                })?;
            }
            batch.push_with(RecordType::Batch as u8, |buf| {
                encode_batch(points, buf).expect("validated before logging");
            })?;
            landed = Some((segment, new_ids));
            Ok(())
        });
        // Deliberate defect: a batch whose append failed is applied all the same.
        #[cfg(feature = "deliberate-bugs")]
        if ack.is_err() && crate::bugs::on("apply-failed-batch") {
            self.memstore.apply(self.wal.written_lsn(), points);
        }
        let ack = ack?;
        let (segment, new_ids) = landed.expect("set by a successful append");
        if defined.segment != Some(segment) {
            defined.segment = Some(segment);
            defined.ids.clear();
        }
        defined.ids.extend(new_ids);
        self.memstore.apply(ack.last, points);
        Ok(ack)
    }

    /// Waits for durability where the policy asks for it; outside the writer lock so that
    /// concurrent ingesters share syncs.
    fn acknowledge(&self, ack: ingestor_wal::Ack, points: usize) -> Result<Ack> {
        let level = match self.config.sync_policy {
            SyncPolicy::Always if points > 0 => {
                self.wal.wait_durable(ack.last)?;
                AckLevel::Durable
            }
            _ => ack.level,
        };
        Ok(Ack { lsn: ack.last, level, points })
    }

    fn count(&self, result: &Result<Ack>) {
        match result {
            Ok(ack) => {
                self.counters.batches.fetch_add(1, Relaxed);
                self.counters.points.fetch_add(ack.points as u64, Relaxed);
            }
            Err(_) => {
                self.counters.rejected.fetch_add(1, Relaxed);
            }
        }
    }

    /// Freezes the state at the last LSN (a short pause of the writer), syncs the log through
    /// that LSN (a snapshot must never be durable ahead of the log), writes the snapshot,
    /// then deletes the log segments the oldest kept snapshot covers.
    fn take_snapshot(&self) -> Result<Option<SnapshotInfo>> {
        let mut mark = lock(&self.snapshot);
        let started = Instant::now();
        let (lsn, frozen, wal_bytes) = {
            let _writer = lock(&self.writer);
            (self.wal.written_lsn(), self.memstore.freeze(), self.wal.stats().bytes_written)
        };
        if mark.lsn == Some(lsn) || (mark.lsn.is_none() && lsn == Lsn::ZERO) {
            return Ok(None);
        }
        self.wal.wait_durable(lsn)?;
        let info = self.snapshots.write(lsn, (self.config.clock_ms)(), &frozen)?;
        let oldest_kept = self.snapshots.oldest_kept_lsn()?;
        // Deliberate defect: compaction deletes what the newest snapshot covers, not the
        // oldest kept, so no older snapshot can be fallen back to.
        #[cfg(feature = "deliberate-bugs")]
        let oldest_kept = if crate::bugs::on("compact-newest") { Some(lsn) } else { oldest_kept };
        if let Some(watermark) = compaction_watermark(oldest_kept) {
            self.wal.delete_below(watermark)?;
        }
        *mark = SnapshotMark { lsn: Some(lsn), wal_bytes, at: Instant::now() };
        self.counters.snapshots.fetch_add(1, Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.counters.last_snapshot_nanos.store(nanos, Relaxed);
        Ok(Some(info))
    }

    /// Whether the log grew past the threshold, or the interval passed with new records.
    fn snapshot_due(&self) -> bool {
        let mark = lock(&self.snapshot);
        let wal = self.wal.stats();
        let grown = wal.bytes_written.saturating_sub(mark.wal_bytes) >= self.config.snapshot_bytes;
        let new_records = mark.lsn.map_or(wal.written_lsn > Lsn::ZERO, |l| wal.written_lsn > l);
        let interval =
            self.config.snapshot_interval.is_some_and(|every| mark.at.elapsed() >= every);
        new_records && (grown || interval)
    }

    /// Deletes series idle longer than the time-to-live, logging each delete.
    fn expire(&self) -> Result<()> {
        let Some(ttl) = self.config.series_ttl else { return Ok(()) };
        let cutoff = Timestamp(
            (self.config.clock_ms)()
                .saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        );
        let idle = self.memstore.idle_series(cutoff);
        for chunk in idle.chunks(10_000) {
            let points: Vec<Point> = chunk
                .iter()
                .map(|(id, _)| Point { series: *id, timestamp: cutoff, op: Op::Delete })
                .collect();
            let mut defined = lock(&self.writer);
            // A series updated since the scan is not idle any more: skip it.
            let still_idle: Vec<Point> = points
                .into_iter()
                .filter(|p| {
                    self.memstore.get_by_id(p.series).is_some_and(|v| v.last_update < cutoff)
                })
                .collect();
            let ack = self.commit(&mut defined, &still_idle)?;
            drop(defined);
            self.acknowledge(ack, still_idle.len())?;
            self.counters.expired.fetch_add(still_idle.len() as u64, Relaxed);
        }
        Ok(())
    }
}

/// The background thread: snapshots on request, on log growth and on the interval; expiry.
fn maintenance(shared: &Shared, rx: &Receiver<Msg>) {
    let note = |r: Result<()>| {
        if let Err(e) = r {
            *lock(&shared.background_error) = Some(e.to_string());
        }
    };
    loop {
        match rx.recv_timeout(shared.config.maintenance_interval) {
            Ok(Msg::Snapshot(reply)) => {
                let _ = reply.send(shared.take_snapshot());
            }
            Ok(Msg::Shutdown) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if shared.snapshot_due() {
                    note(shared.take_snapshot().map(|_| ()));
                }
                note(shared.expire());
            }
        }
    }
}

/// Replay of the log into the memstore at open.
struct Replay<'a> {
    memstore: &'a Memstore,
    snapshot_lsn: Lsn,
    /// Log series ids to memstore handles; series-definition records overwrite entries, so
    /// that each segment's (and each process life's) numbering is honoured.
    ids: HashMap<u32, SeriesId, IdHashBuilder>,
    records: u64,
    points: u64,
    /// Under [`RecoveryMode::SkipCorrupted`]: points whose series definition was lost, and
    /// batches that no longer validate against the state (an earlier point of their series
    /// was lost), are skipped and counted instead of failing the open.
    salvage: bool,
    skipped_points: u64,
    /// The segment of the records being replayed.
    segment: Option<SegmentId>,
}

/// Deliberate defect `replay-snapshot-lsn`: replay starts at the snapshot's own LSN (off by
/// one), applying that batch twice.
#[cfg(feature = "deliberate-bugs")]
fn replays_snapshot_lsn(lsn: Lsn, snapshot: Lsn) -> bool {
    lsn == snapshot && snapshot > Lsn::ZERO && crate::bugs::on("replay-snapshot-lsn")
}

#[cfg(not(feature = "deliberate-bugs"))]
fn replays_snapshot_lsn(_: Lsn, _: Lsn) -> bool {
    false
}

impl Replay<'_> {
    fn record(
        &mut self,
        segment: SegmentId,
        lsn: Lsn,
        record_type: u8,
        payload: &[u8],
    ) -> Result<()> {
        let fail = |reason: String| Error::Replay { lsn, reason };
        // Series ids are segment-local: a batch never uses an id its segment did not define.
        // Each process life writes segments of its own (open starts a new one) and never
        // reuses an id, so an id means one series throughout a segment: when salvage skips a
        // definition, the points that used it find no mapping and are skipped, never applied
        // to another series.
        if self.segment != Some(segment) {
            self.segment = Some(segment);
            self.ids.clear();
        }
        match RecordType::from_byte(record_type) {
            Some(RecordType::SeriesDefs) => {
                // Most definitions name series the memstore already has (from the snapshot,
                // or an earlier segment): look them up without building keys.
                let (memstore, ids) = (self.memstore, &mut self.ids);
                let mut refused = None;
                visit_series_defs(payload, |log_id, name, labels| {
                    if refused.is_some() {
                        return;
                    }
                    let id = match memstore.resolve_parts(name, labels) {
                        Some(id) => Ok(id),
                        None => SeriesKey::from_canonical(name, labels)
                            .map_err(|e| fail(e.to_string()))
                            .and_then(|key| Ok(memstore.intern(&key)?)),
                    };
                    match id {
                        Ok(id) => {
                            ids.insert(log_id.0, id);
                        }
                        Err(e) => refused = Some(e),
                    }
                })
                .map_err(|e| fail(e.to_string()))?;
                if let Some(e) = refused {
                    return Err(e);
                }
            }
            Some(RecordType::Batch)
                if lsn > self.snapshot_lsn || replays_snapshot_lsn(lsn, self.snapshot_lsn) =>
            {
                let reader = BatchReader::new(payload).map_err(|e| fail(e.to_string()))?;
                let mut points = Vec::with_capacity(reader.len());
                for p in reader {
                    let mut p = p.map_err(|e| fail(e.to_string()))?;
                    match self.ids.get(&p.series.0) {
                        Some(&id) => p.series = id,
                        None if self.salvage => {
                            self.skipped_points += 1;
                            continue;
                        }
                        None => {
                            return Err(fail(format!(
                                "series id {} used before its definition",
                                p.series.0
                            )));
                        }
                    }
                    #[cfg(feature = "deliberate-bugs")]
                    if let (true, Op::HistogramAdd(s)) =
                        (crate::bugs::on("replay-add-as-set"), &p.op)
                    {
                        p.op = Op::HistogramSet(Arc::clone(s));
                    }
                    points.push(p);
                }
                match self.memstore.validate(&points) {
                    Ok(()) => {}
                    Err(_) if self.salvage => {
                        self.skipped_points += points.len() as u64;
                        return Ok(());
                    }
                    Err(e) => return Err(fail(e.to_string())),
                }
                self.memstore.apply(lsn, &points);
                #[cfg(feature = "deliberate-bugs")]
                if std::env::var("INGESTOR_DELIBERATE_BUG").is_ok_and(|b| b == "replay-twice") {
                    let again: Vec<Point> = points
                        .iter()
                        .filter(|p| {
                            p.op != Op::Delete && self.memstore.get_by_id(p.series).is_some()
                        })
                        .cloned()
                        .collect();
                    self.memstore.apply(lsn, &again);
                }
                self.records += 1;
                self.points += points.len() as u64;
            }
            // Covered by the snapshot.
            Some(RecordType::Batch) => {}
            None => return Err(fail(format!("unknown record type {record_type}"))),
        }
        Ok(())
    }
}

/// A read-only view of an [`Ingestor`]'s in-memory state ([`Ingestor::memstore`]): reads
/// only, so that nothing can change the state around the log.
#[derive(Clone, Copy)]
pub struct MemstoreView<'a>(&'a Memstore);

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
