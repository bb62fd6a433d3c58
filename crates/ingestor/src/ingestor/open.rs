//! Open: lock the directory, load the newest good snapshot, replay the log after it.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ingestor_codec::Lsn;
use ingestor_fs::{EntryKind, Fs, StdFs};
use ingestor_snapshot::SnapshotStore;
use ingestor_wal::RecoveryMode;

use super::maintenance::maintenance;
use super::replay::replay_log;
use super::{
    Counters, Defined, Ingestor, OpenReport, ReplayProgress, SNAPSHOT_DIR, Shared, SnapshotMark,
    SpaceCheck, WAL_DIR,
};
use crate::config::Config;
use crate::error::{Error, Result};

impl Ingestor {
    /// Opens (or creates) the data directory `dir` on the real file system.
    ///
    /// # Errors
    /// See [`Ingestor::open_with`].
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<(Ingestor, OpenReport)> {
        Ingestor::open_with(Arc::new(StdFs::new()), dir.as_ref(), config, &mut |_| {})
    }

    /// Opens (or creates) a data directory on `fs`: validates the configuration, takes the
    /// directory's lock, loads the newest good snapshot, replays the log after it, and starts
    /// the background snapshot thread. Replay applies the log on the calling thread and
    /// calls `progress` there after each record it applied: keep it cheap (a progress bar
    /// that redraws every few thousand calls), it runs between records.
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
        // Deliberate defect: they count as never changed (a forwarder skips them).
        #[cfg(ingestor_deliberate_bugs)]
        let snapshot_lsn_changed =
            if crate::bugs::on("snapshot-series-unchanged") { Lsn::ZERO } else { snapshot_lsn };
        #[cfg(not(ingestor_deliberate_bugs))]
        let snapshot_lsn_changed = snapshot_lsn;
        memstore.loaded(snapshot_lsn_changed);

        // The log must continue the snapshot: compaction deletes what the oldest kept snapshot
        // covers, so a damaged snapshot can leave records that no snapshot holds any more.
        // Checked first from the segments' names (recovery never adds a segment before the
        // first), so that an open bound to fail changes nothing in the log; and again after
        // recovery (which may remove a last segment it finds torn), before the log is
        // continued.
        let missing = |log_first: Lsn| {
            (log_first > snapshot_lsn.next()).then(|| Error::MissingRecords {
                snapshot: loaded.used.as_ref().map(|s| s.lsn),
                first: snapshot_lsn.next(),
                last: Lsn(log_first.0 - 1),
                rejected: loaded
                    .rejected
                    .iter()
                    .map(|r| format!("{}: {}", r.path.display(), r.reason))
                    .collect(),
            })
        };
        // Deliberate defect: the log is continued (its recovered segment ended, a new one
        // created) before the check, as this open did before: a failed open changes the log.
        #[cfg(ingestor_deliberate_bugs)]
        let check_late = crate::bugs::on("missing-records-after-rotate");
        #[cfg(not(ingestor_deliberate_bugs))]
        let check_late = false;
        if !check_late
            && let Some(e) = first_segment_named(&*fs, &dir.join(WAL_DIR)).and_then(missing)
        {
            return Err(e);
        }
        let salvage = config.recovery_mode == RecoveryMode::SkipCorrupted;
        let (wal, wal_report, replayed) = replay_log(
            Arc::clone(&fs),
            &dir.join(WAL_DIR),
            config.wal_options(),
            &memstore,
            snapshot_lsn,
            salvage,
            progress,
        )?;
        let (replayed_records, replayed_points) = (replayed.records, replayed.points);
        let skipped_points = replayed.skipped_points;
        memstore.discard_all_unwritten();
        let log_first = || wal.segments().first().map_or(Lsn::FIRST, |s| s.0);
        if !check_late && let Some(e) = missing(log_first()) {
            return Err(e);
        }
        // The log ends before the snapshot (recovery cut a damaged tail the snapshot covers):
        // continue the log after the snapshot, so that no LSN it covers is ever reissued.
        let log_restarted_at = (wal.written_lsn() < snapshot_lsn).then(|| snapshot_lsn.next());
        if let Some(next) = log_restarted_at {
            wal.skip_to(next)?;
        }
        // This process numbers series anew: it writes segments of its own, so that a series id
        // never means two series in one segment (see `Replay::record`).
        wal.rotate()?;
        if check_late && let Some(e) = missing(log_first()) {
            return Err(e);
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
}

/// The first LSN of the log's first segment, from the segment files' names in `wal_dir`
/// (`None` when there is none, or the directory cannot be read, or a file named `*.seg` is
/// not a segment's name the log accepts: the log's own open then reports what is wrong).
fn first_segment_named(fs: &dyn Fs, wal_dir: &Path) -> Option<Lsn> {
    let entries = fs.read_dir(wal_dir).ok()?;
    let mut first: Option<Lsn> = None;
    for e in entries.iter().filter(|e| e.kind == EntryKind::File && e.name.ends_with(".seg")) {
        let id = ingestor_wal::SegmentId::from_file_name(&e.name)?;
        // The log refuses any other first LSN (`UnexpectedFile`): let it say so.
        if !id.is_accepted() {
            return None;
        }
        let lsn = id.0;
        first = Some(first.map_or(lsn, |f| f.min(lsn)));
    }
    first
}
