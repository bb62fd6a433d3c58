//! Open: lock the directory, load the newest good snapshot, replay the log after it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ingestor_codec::Op;
use ingestor_codec::{BatchReader, Lsn, RecordType, SeriesId, visit_series_defs};
use ingestor_fs::{Fs, StdFs};
use ingestor_memstore::{Memstore, SeriesRef, SlotPoint};
use ingestor_snapshot::SnapshotStore;
use ingestor_wal::{RecoveryMode, SegmentId, Wal};

use super::maintenance::maintenance;
use super::{
    Counters, Defined, Ingestor, OpenReport, ReplayProgress, SNAPSHOT_DIR, Shared, SnapshotMark,
    SpaceCheck, WAL_DIR,
};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::id_hash::IdHashBuilder;

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
            ids: IdMap::default(),
            guess: 0,
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
}

/// A segment's series ids to this memstore's handles. The ids a process logs are its slot
/// indices, dense from 0 (a deleted series' slot is taken again by a new series in a later
/// segment): below [`IdMap::DENSE`] they index a vector (no hashing per point); larger ids
/// (a process that held more than 4M slots at once, or a damaged log) fall back to a
/// map, so that no id can make replay allocate more than the vector's bound. (Replay
/// itself frees no slot: this store's handles grow with every series the replayed log
/// defines, until the first batch logged after open frees the deleted ones.)
#[derive(Default)]
struct IdMap {
    dense: Vec<Option<SeriesRef>>,
    sparse: HashMap<SeriesId, SeriesRef, IdHashBuilder>,
}

impl IdMap {
    /// Ids below this are kept in the vector (at most 32 MiB of it).
    const DENSE: u32 = 1 << 22;

    fn clear(&mut self) {
        self.dense.clear();
        self.sparse.clear();
    }

    fn insert(&mut self, id: SeriesId, series: SeriesRef) {
        if id.0 < Self::DENSE {
            let i = id.0 as usize;
            if i >= self.dense.len() {
                self.dense.resize(i + 1, None);
            }
            self.dense[i] = Some(series);
        } else {
            self.sparse.insert(id, series);
        }
    }

    fn get(&self, id: SeriesId) -> Option<SeriesRef> {
        if id.0 < Self::DENSE {
            self.dense.get(id.0 as usize).copied().flatten()
        } else {
            self.sparse.get(&id).copied()
        }
    }
}

/// `op`, rebuilt from its variant and value. The decoder hands each point's operation over
/// in memory, stored as a tag and a value; moved on as is, it was read back as one 16-byte
/// load, which the processor cannot forward from the two narrower stores just before: a
/// stall on every point (`perf annotate` of `Replay::record`). Rebuilt, it travels in
/// registers: replay of the bench's log 7.45-7.64M -> 7.70-7.94M points/s.
#[inline(always)]
#[allow(clippy::needless_match, reason = "the match is the point: it moves the value apart")]
fn rebuilt(op: Op) -> Op {
    match op {
        Op::CounterAdd(v) => Op::CounterAdd(v),
        Op::CounterSet(v) => Op::CounterSet(v),
        Op::GaugeSet(v) => Op::GaugeSet(v),
        Op::GaugeAdd(v) => Op::GaugeAdd(v),
        Op::HistogramObserve(v) => Op::HistogramObserve(v),
        other => other,
    }
}

/// Replay of the log into the memstore at open.
struct Replay<'a> {
    memstore: &'a Memstore,
    snapshot_lsn: Lsn,
    /// The current segment's series ids (as its series-definition records define them) to
    /// this memstore's handles; cleared at each segment, since ids are segment-local.
    ids: IdMap,
    records: u64,
    points: u64,
    /// Under [`RecoveryMode::SkipCorrupted`]: points whose series definition was lost, and
    /// batches that no longer validate against the state (an earlier point of their series
    /// was lost), are skipped and counted instead of failing the open.
    salvage: bool,
    skipped_points: u64,
    /// The segment of the records being replayed.
    segment: Option<SegmentId>,
    /// The last series definition's handle less its log id: the next definition's series is
    /// first looked for at its log id plus this (checked against the key; the key's hash
    /// is looked up only when the guess is wrong). Log ids are the handles of the process
    /// that wrote them, and a snapshot loads series in handle order, so they mostly follow
    /// this store's handles at a fixed distance.
    guess: i64,
}

/// Deliberate defect `replay-snapshot-lsn`: replay starts at the snapshot's own LSN (off by
/// one), applying that batch twice.
#[cfg(ingestor_deliberate_bugs)]
fn replays_snapshot_lsn(lsn: Lsn, snapshot: Lsn) -> bool {
    lsn == snapshot && snapshot > Lsn::ZERO && crate::bugs::on("replay-snapshot-lsn")
}

#[cfg(not(ingestor_deliberate_bugs))]
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
        // Each process life writes segments of its own (open starts a new one) and gives an
        // id to another series only in a later segment, so an id means one series throughout
        // a segment: when salvage skips a definition, the points that used it find no
        // mapping and are skipped, never applied to another series.
        if self.segment != Some(segment) {
            self.segment = Some(segment);
            self.ids.clear();
        }
        match RecordType::from_byte(record_type) {
            Some(RecordType::SeriesDefs) => {
                // Most definitions name series the memstore already has (from the snapshot,
                // or an earlier segment): look them up without building keys, first where
                // the guess says. The others are interned together after the visit.
                let (memstore, ids, guess) = (self.memstore, &mut self.ids, &mut self.guess);
                let mut unknown: Vec<(SeriesId, &str, std::ops::Range<usize>)> = Vec::new();
                let mut labels_of_unknown: Vec<(&str, &str)> = Vec::new();
                // A damaged record still defines the series before the damage (as salvage
                // expects); its error comes first.
                let visited = visit_series_defs(payload, |log_id, name, labels| {
                    let guessed = u32::try_from(i64::from(log_id.0) + *guess)
                        .ok()
                        .and_then(|at| memstore.resolve_at(at, name, labels));
                    if let Some(series) = guessed {
                        ids.insert(log_id, series);
                    } else {
                        let from = labels_of_unknown.len();
                        labels_of_unknown.extend_from_slice(labels);
                        unknown.push((log_id, name, from..labels_of_unknown.len()));
                    }
                });
                let mut interned = Ok(());
                if !unknown.is_empty() {
                    // One hash of each key, no key built: found, or created.
                    let keys: Vec<(&str, &[(&str, &str)])> = unknown
                        .iter()
                        .map(|(_, name, labels)| (*name, &labels_of_unknown[labels.clone()]))
                        .collect();
                    let mut series = Vec::with_capacity(keys.len());
                    interned = memstore.intern_parts_all(&keys, &mut series);
                    for ((log_id, ..), &handle) in unknown.iter().zip(&series) {
                        ids.insert(*log_id, handle);
                    }
                    // The last definition interned (before a refusal, if one stopped them).
                    if let Some((i, last)) = series.len().checked_sub(1).zip(series.last()) {
                        *guess = i64::from(last.get()) - i64::from(unknown[i].0.0);
                    }
                }
                visited.map_err(|e| fail(e.to_string()))?;
                interned.map_err(|(_, e)| match e {
                    ingestor_memstore::MemstoreError::InvalidKey { reason } => fail(reason),
                    e => Error::from(e),
                })?;
            }
            Some(RecordType::Batch)
                if lsn > self.snapshot_lsn || replays_snapshot_lsn(lsn, self.snapshot_lsn) =>
            {
                let reader = BatchReader::new(payload).map_err(|e| fail(e.to_string()))?;
                let mut points = Vec::with_capacity(reader.len());
                for p in reader {
                    let p = p.map_err(|e| fail(e.to_string()))?;
                    // The log's id, through this segment's definitions, to the handle of the
                    // series in this memstore.
                    let series = match self.ids.get(p.series) {
                        Some(series) => series,
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
                    };
                    #[cfg_attr(not(ingestor_deliberate_bugs), allow(unused_mut))]
                    let mut p = SlotPoint { series, timestamp: p.timestamp, op: rebuilt(p.op) };
                    #[cfg(ingestor_deliberate_bugs)]
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
                #[cfg(ingestor_deliberate_bugs)]
                if std::env::var("INGESTOR_DELIBERATE_BUG").is_ok_and(|b| b == "replay-twice") {
                    let again: Vec<SlotPoint> = points
                        .iter()
                        .filter(|p| {
                            p.op != Op::Delete && self.memstore.get_by_ref(p.series).is_some()
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
