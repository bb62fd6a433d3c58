//! Replay of the log into the memstore at open, on two threads: an `ingestor-replay` thread
//! opens the log, reads each record (checksums, decompression) and decodes it (definitions'
//! keys checked and hashed, batches' points decoded); the thread that called open maps series
//! ids and applies, one record after the other, in LSN order, and reports progress. Replay is
//! what a user waits for after a crash, and each half is about half of its work.
//!
//! The applying half runs on the calling thread because it allocates the memstore (a key,
//! a slot and posting entries per series). With glibc's allocator a new thread allocates
//! from a heap of its own, grown by `mprotect` 128 KiB at a time, each call interrupting the
//! process's other processors to flush their address translations (`perf record`: 2.5% of
//! an open's samples, a quarter of the applying thread's time in the kernel). A program that
//! opens from its main thread (the bench, the offline commands) allocates from the heap that
//! grows by `brk`; `ingestor serve` opens on a thread of its own, a thread heap as before.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use ingestor_codec::{BatchReader, Lsn, Op, Point, RecordType, SeriesId, visit_series_defs};
use ingestor_fs::Fs;
use ingestor_memstore::{KeyBatch, Memstore, SeriesRef, SlotPoint};
use ingestor_wal::{RecoveryReport, SegmentId, Wal, WalError, WalOptions};

use super::ReplayProgress;
use crate::error::{Error, Result};
use crate::id_hash::IdHashBuilder;

/// Records decoded ahead of the applying thread, at most.
const AHEAD: usize = 4;

/// What replay did, for the open report.
pub(super) struct Replayed {
    pub(super) records: u64,
    pub(super) points: u64,
    pub(super) skipped_points: u64,
}

/// Opens the log in `dir` and replays it into `memstore` (which holds the snapshot taken at
/// `snapshot_lsn`): definitions from the start of the log, batches after the snapshot.
/// Under `salvage`, points whose series definition was lost, and batches that no longer
/// validate against the state, are skipped and counted instead of failing the open.
///
/// # Errors
/// The log's errors; [`WalError::Replay`] (as [`Error::Wal`]) around the first record that
/// does not decode or apply, with that record's LSN.
pub(super) fn replay_log(
    fs: Arc<dyn Fs>,
    dir: &Path,
    options: WalOptions,
    memstore: &Memstore,
    snapshot_lsn: Lsn,
    salvage: bool,
    progress: &mut dyn FnMut(&ReplayProgress),
) -> Result<(Wal, RecoveryReport, Replayed)> {
    let (tx, rx) = crossbeam_channel::bounded::<ToApplier>(AHEAD);
    // The applying thread's answers to `ToApplier::Settle`. It owns the sender: if it
    // panics, the reading thread's wait for an answer ends.
    let (verdict_tx, verdict) = crossbeam_channel::bounded::<bool>(1);
    // Buffers back from the applying thread, for the next records: no allocation (nor
    // page faults on fresh memory) per record.
    let (back_tx, back_rx) = crossbeam_channel::unbounded::<Buffers>();
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // The applying half's ends of the channels, dropped with this closure if it
        // panics: the reading thread then stops instead of waiting on them.
        let (rx, verdict_tx, back_tx) = (rx, verdict_tx, back_tx);
        let failed = &failed;
        let reader = std::thread::Builder::new()
            .name("ingestor-replay".into())
            .spawn_scoped(scope, move || {
                let stopped = || Box::new(Stopped) as ingestor_wal::ReplayError;
                Wal::open_and_replay_frames_until_repair(
                    fs,
                    dir,
                    options,
                    // Series definitions before the snapshot are needed too: a segment's
                    // batches after the snapshot may use series it defined before.
                    Lsn::ZERO,
                    |info, payload| {
                        if failed.load(Relaxed) {
                            return Err(stopped());
                        }
                        let bufs = back_rx.try_recv().unwrap_or_else(|_| Buffers::new(memstore));
                        let record = decode(
                            info.segment,
                            info.lsn,
                            info.record_type,
                            payload,
                            snapshot_lsn,
                            bufs,
                        );
                        if tx.send(ToApplier::Record(record)).is_err() {
                            return Err(stopped());
                        }
                        Ok(())
                    },
                    // The log's recovery repairs nothing (no torn tail cut, no damage moved to
                    // quarantine, no segment removed) for an open that fails: before a repair
                    // it asks, and the answer waits for the applying thread to take every
                    // record handed over.
                    || {
                        let settled = tx.send(ToApplier::Settle).is_ok()
                            && verdict.recv().is_ok_and(|failed| !failed);
                        if settled { Ok(()) } else { Err(stopped()) }
                    },
                )
                // `tx` is dropped here: the applying loop below ends.
            })
            .map_err(|e| Error::Io {
                op: "spawn replay thread",
                path: dir.to_path_buf(),
                source: e,
            })?;
        let mut replay = Replay {
            memstore,
            ids: IdMap::default(),
            guess: 0,
            salvage,
            skipped_points: 0,
            segment: None,
            scratch: Vec::new(),
            handles: Vec::new(),
            records: 0,
            points: 0,
        };
        let mut first_error: Option<(Lsn, Error)> = None;
        // After a failure, the rest is received and dropped: the reader never waits on a
        // full channel for a thread that stopped taking.
        for message in &rx {
            let mut record = match message {
                ToApplier::Record(record) => record,
                // Every record sent before was taken: whether one failed.
                ToApplier::Settle => {
                    let _ = verdict_tx.send(first_error.is_some());
                    continue;
                }
            };
            if first_error.is_none() {
                let lsn = record.lsn;
                match replay.apply(&record) {
                    Ok(()) => {
                        let (records, points) = (replay.records, replay.points);
                        progress(&ReplayProgress { lsn, records, points });
                    }
                    Err(e) => {
                        failed.store(true, Relaxed);
                        first_error = Some((lsn, e));
                    }
                }
            }
            record.bufs.clear();
            let _ = back_tx.send(record.bufs);
        }
        let opened = reader.join().unwrap_or_else(|panic| {
            std::panic::resume_unwind(panic);
        });
        // The first record that failed, with its own LSN, before whatever the log reports
        // after it (the reader went on a few records, or stopped because of it).
        if let Some((lsn, e)) = first_error {
            return Err(Error::Wal(WalError::Replay { lsn, source: Box::new(e) }));
        }
        let (wal, recovery) = opened?;
        let replayed = Replayed {
            records: replay.records,
            points: replay.points,
            skipped_points: replay.skipped_points,
        };
        Ok((wal, recovery, replayed))
    })
}

/// The reader stopped because the applying thread failed (its error is the one reported).
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("replay stopped: an earlier record failed")
    }
}

impl std::error::Error for Stopped {}

/// What the reading thread sends the applying thread.
#[allow(
    clippy::large_enum_variant,
    reason = "all but one message of an open are records: boxing them would cost an allocation each"
)]
enum ToApplier {
    Record(Decoded),
    /// Asks whether a record sent before failed: answered (`true` if one did) once all
    /// were taken.
    Settle,
}

/// A record of the log, decoded by the reading thread into `bufs`.
struct Decoded {
    segment: SegmentId,
    lsn: Lsn,
    what: Record,
    bufs: Buffers,
}

/// What a record decodes into, handed back and forth between the threads.
struct Buffers {
    /// A definitions record's keys, checked and hashed for the memstore.
    keys: KeyBatch,
    /// Each key's series id in the log.
    ids: Vec<SeriesId>,
    points: Vec<Point>,
}

impl Buffers {
    fn new(memstore: &Memstore) -> Buffers {
        Buffers { keys: memstore.key_batch(), ids: Vec::new(), points: Vec::new() }
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.ids.clear();
        self.points.clear();
    }
}

enum Record {
    /// Series definitions (in the buffers); the error of a damaged record comes after the
    /// definitions before the damage (as salvage expects).
    Defs { error: Option<String> },
    /// A batch after the snapshot, its points decoded (in the buffers).
    Batch(std::result::Result<(), String>),
    /// A batch the snapshot covers.
    Covered,
    /// A record type this version does not know.
    Unknown(u8),
}

fn decode(
    segment: SegmentId,
    lsn: Lsn,
    record_type: u8,
    payload: &[u8],
    snapshot_lsn: Lsn,
    mut bufs: Buffers,
) -> Decoded {
    let what = match RecordType::from_byte(record_type) {
        Some(RecordType::SeriesDefs) => {
            let Buffers { keys, ids, .. } = &mut bufs;
            // The first key the memstore refuses ends the record, as a decoding error would.
            let mut refused = None;
            let visited = visit_series_defs(payload, |id, name, labels| {
                if refused.is_none() {
                    match keys.push(name, labels) {
                        Ok(()) => ids.push(id),
                        Err(ingestor_memstore::MemstoreError::InvalidKey { reason }) => {
                            refused = Some(reason);
                        }
                        Err(e) => refused = Some(e.to_string()),
                    }
                }
            });
            Record::Defs { error: refused.or_else(|| visited.err().map(|e| e.to_string())) }
        }
        Some(RecordType::Batch)
            if lsn > snapshot_lsn || replays_snapshot_lsn(lsn, snapshot_lsn) =>
        {
            Record::Batch(decode_batch(payload, &mut bufs.points).map_err(|e| e.to_string()))
        }
        Some(RecordType::Batch) => Record::Covered,
        None => Record::Unknown(record_type),
    };
    Decoded { segment, lsn, what, bufs }
}

fn decode_batch(
    payload: &[u8],
    points: &mut Vec<Point>,
) -> std::result::Result<(), ingestor_codec::DecodeError> {
    let reader = BatchReader::new(payload)?;
    // The count the record claims, but no more than its bytes can hold (each point takes
    // at least 3: its series, its timestamp's delta, its operation): a damaged or crafted
    // count must not make a buffer that is kept for the next records huge.
    points.reserve(reader.len().min(payload.len() / 3));
    for p in reader {
        points.push(p?);
    }
    Ok(())
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

/// The applying half of replay: maps each segment's series ids to this memstore's handles
/// and applies, record after record.
struct Replay<'a> {
    memstore: &'a Memstore,
    /// The current segment's series ids (as its series-definition records define them) to
    /// this memstore's handles; cleared at each segment, since ids are segment-local.
    ids: IdMap,
    /// Batches and points applied so far.
    records: u64,
    points: u64,
    /// Under [`ingestor_wal::RecoveryMode::SkipCorrupted`]: points whose series definition
    /// was lost, and batches that no longer validate against the state (an earlier point of
    /// their series was lost), are skipped and counted instead of failing the open.
    salvage: bool,
    skipped_points: u64,
    /// The segment of the records being replayed.
    segment: Option<SegmentId>,
    /// A batch's points, kept for the next batch.
    scratch: Vec<SlotPoint>,
    /// A definitions record's handles, kept for the next record.
    handles: Vec<SeriesRef>,
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
    fn apply(&mut self, record: &Decoded) -> Result<()> {
        let Decoded { segment, lsn, what, bufs } = record;
        let (segment, lsn) = (*segment, *lsn);
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
        match what {
            Record::Defs { error } => {
                self.define(&bufs.keys, &bufs.ids).map_err(|e| match e {
                    ingestor_memstore::MemstoreError::InvalidKey { reason } => fail(reason),
                    e => Error::from(e),
                })?;
                if let Some(reason) = error {
                    return Err(fail(reason.clone()));
                }
            }
            Record::Batch(Err(reason)) => return Err(fail(reason.clone())),
            Record::Batch(Ok(())) => self.batch(lsn, &bufs.points, fail)?,
            Record::Covered => {}
            Record::Unknown(record_type) => {
                return Err(fail(format!("unknown record type {record_type}")));
            }
        }
        Ok(())
    }

    /// Maps a record's definitions (their keys checked and hashed by the reading thread).
    /// Most name series the memstore already has (from the snapshot, or an earlier segment):
    /// first looked for where the guess says, without the key's hash. The others are looked
    /// up by hash, or created.
    fn define(
        &mut self,
        keys: &KeyBatch,
        ids: &[SeriesId],
    ) -> std::result::Result<(), ingestor_memstore::MemstoreError> {
        let offset = self.guess;
        let guess = |i: usize| u32::try_from(i64::from(ids[i].0) + offset).ok();
        let mut series = std::mem::take(&mut self.handles);
        series.clear();
        let interned = self.memstore.intern_batch(keys, guess, &mut series);
        for (id, &handle) in ids.iter().zip(&series) {
            self.ids.insert(*id, handle);
        }
        // The last definition mapped (before a refusal, if one stopped them).
        if let Some((k, last)) = series.len().checked_sub(1).zip(series.last()) {
            self.guess = i64::from(last.get()) - i64::from(ids[k].0);
        }
        self.handles = series;
        interned.map_err(|(_, e)| e)
    }

    /// Applies a batch after the snapshot, its ids mapped through the segment's definitions.
    fn batch(&mut self, lsn: Lsn, decoded: &[Point], fail: impl Fn(String) -> Error) -> Result<()> {
        let mut points = std::mem::take(&mut self.scratch);
        points.clear();
        points.reserve(decoded.len());
        for p in decoded {
            // The log's id, through this segment's definitions, to the handle of the series
            // in this memstore.
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
            let mut p = SlotPoint { series, timestamp: p.timestamp, op: rebuilt(p.op.clone()) };
            #[cfg(ingestor_deliberate_bugs)]
            if let (true, Op::HistogramAdd(s)) = (crate::bugs::on("replay-add-as-set"), &p.op) {
                p.op = Op::HistogramSet(Arc::clone(s));
            }
            points.push(p);
        }
        match self.memstore.validate(&points) {
            Ok(()) => {}
            Err(_) if self.salvage => {
                self.skipped_points += points.len() as u64;
                self.scratch = points;
                return Ok(());
            }
            Err(e) => return Err(fail(e.to_string())),
        }
        self.memstore.apply(lsn, &points);
        #[cfg(ingestor_deliberate_bugs)]
        if std::env::var("INGESTOR_DELIBERATE_BUG").is_ok_and(|b| b == "replay-twice") {
            let again: Vec<SlotPoint> = points
                .iter()
                .filter(|p| p.op != Op::Delete && self.memstore.get_by_ref(p.series).is_some())
                .cloned()
                .collect();
            self.memstore.apply(lsn, &again);
        }
        self.records += 1;
        self.points += points.len() as u64;
        self.scratch = points;
        Ok(())
    }
}
