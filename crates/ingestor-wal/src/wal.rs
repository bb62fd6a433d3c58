//! The log: open, append, sync, read, delete, close.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

use ingestor_codec::{Lsn, SEGMENT_HEADER_LEN};
use ingestor_fs::{Fs, FsFile, OpenMode};

use crate::error::{Result, WalError};
use crate::inspect::FrameInfo;
use crate::options::{SyncPolicy, WalOptions};
use crate::reader::WalReader;
use crate::recovery::{BeforeRepair, OnRecord, recover};
use crate::report::RecoveryReport;
use crate::segment::{SegmentId, create_segment};
use crate::stats::{Counters, NoListener, WalListener, WalStats};
use crate::sync::{SyncMessage, spawn_batch_syncer};
use crate::writer::{RecordBatch, Shared, SyncState, WRITEBACK_CHUNK, Writer, lock};

/// Named steps of the log's protocols, announced through [`Fs::crash_point`] so that a
/// simulated disk can cut the power exactly there. Test machinery for the crash tests, hidden
/// from the documentation and not part of the API (`docs/versioning.md`).
#[doc(hidden)]
pub mod crash_points {
    /// After an append's frames were encoded, before they are written.
    pub const APPEND_BEFORE_WRITE: &str = "wal.append.before_write";
    /// After an append's write, before its sync (or before it returns, without one).
    pub const APPEND_AFTER_WRITE: &str = "wal.append.after_write";
    /// Before a sync of segment data.
    pub const SYNC_BEFORE: &str = "wal.sync.before";
    /// After a sync succeeded, before anyone is told that it did (before the durable point
    /// moves).
    pub const SYNC_AFTER: &str = "wal.sync.after";
    /// A caller of a sync is about to wait for another caller's sync to finish (group
    /// commit), holding no lock; it checks again after the announcement. Not in [`ALL`]: only
    /// concurrent callers reach it. The crash test's scheduler runs other writers here (as at
    /// [`SYNC_BEFORE`] and [`SYNC_AFTER`], where no lock is held either).
    pub const SYNC_WAIT: &str = "wal.sync.wait";
    /// Before the ended segment is synced: at rotation, or under `Os` and `Buffered` at the
    /// segment's close, which follows the rotation (on a background thread, or on the
    /// appending thread after the batch that rotated).
    pub const ROTATE_BEFORE_SYNC: &str = "wal.rotate.before_sync";
    /// After a new segment was created, written and synced, before its directory is synced.
    pub const SEGMENT_BEFORE_DIR_SYNC: &str = "wal.segment.before_dir_sync";
    /// After one covered segment was removed, before the next one is.
    pub const DELETE_BETWEEN: &str = "wal.delete.between";
    /// After covered segments were removed, before the directory is synced.
    pub const DELETE_BEFORE_DIR_SYNC: &str = "wal.delete.before_dir_sync";
    /// Every named point, for harnesses that check each was reached.
    pub const ALL: [&str; 8] = [
        APPEND_BEFORE_WRITE,
        APPEND_AFTER_WRITE,
        SYNC_BEFORE,
        SYNC_AFTER,
        ROTATE_BEFORE_SYNC,
        SEGMENT_BEFORE_DIR_SYNC,
        DELETE_BETWEEN,
        DELETE_BEFORE_DIR_SYNC,
    ];
}

/// What a replay callback may fail with; [`WalError::Replay`] carries it.
pub type ReplayError = Box<dyn std::error::Error + Send + Sync>;

/// The level an acknowledged append reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum AckLevel {
    /// Taken into the log's buffer in this process ([`SyncPolicy::Buffered`]): lost if the
    /// process dies before the buffer is written.
    Accepted,
    /// Handed to the operating system: survives a process crash, not a power cut.
    Written,
    /// Synced to the disk: survives a power cut.
    Durable,
}

/// The acknowledgement of an append: the LSNs its records got and the level they reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Ack {
    /// The first record's LSN.
    pub first: Lsn,
    /// The last record's LSN (`first` for a single record).
    pub last: Lsn,
    /// What the append reached before returning.
    pub level: AckLevel,
}

/// A write-ahead log: opaque records in, dense LSNs out. See the crate documentation.
///
/// `Wal` is `Send + Sync`: share it behind an `Arc` and append from many threads.
pub struct Wal {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
    preparer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("written", &self.written_lsn())
            .field("durable", &self.durable_lsn())
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`: locks it, recovers it under the options'
    /// recovery mode, and returns it with the recovery report.
    ///
    /// # Errors
    /// [`WalError::InvalidOptions`]; [`WalError::Io`] (including a directory another opener
    /// holds); whatever the recovery mode refuses ([`WalError::Corrupt`], [`WalError::Gap`],
    /// [`WalError::TornTail`]).
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, options: WalOptions) -> Result<(Wal, RecoveryReport)> {
        Wal::open_and_replay(fs, dir, options, Lsn::ZERO, |_, _, _| Ok(()))
    }

    /// Like [`Wal::open`], handing every valid record with an LSN at or above `replay_from`
    /// to `on_record` (LSN, record type, payload) during the recovery scan, in LSN order: one
    /// pass over the log both checks and replays it.
    ///
    /// # Errors
    /// As [`Wal::open`], and [`WalError::Replay`] if `on_record` fails.
    pub fn open_and_replay(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: WalOptions,
        replay_from: Lsn,
        on_record: impl FnMut(Lsn, u8, &[u8]) -> std::result::Result<(), ReplayError>,
    ) -> Result<(Wal, RecoveryReport)> {
        let listener = options_listener(&options);
        Wal::open_with_listener(fs, dir, options, replay_from, on_record, listener)
    }

    /// Like [`Wal::open_and_replay`], telling `on_record` where each record lies (its
    /// segment, offset and sizes) as well.
    ///
    /// # Errors
    /// As [`Wal::open_and_replay`].
    pub fn open_and_replay_frames(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: WalOptions,
        replay_from: Lsn,
        mut on_record: impl FnMut(&FrameInfo, &[u8]) -> std::result::Result<(), ReplayError>,
    ) -> Result<(Wal, RecoveryReport)> {
        let listener = options_listener(&options);
        Wal::open_inner(fs, dir, options, replay_from, &mut on_record, None, listener)
    }

    /// Like [`Wal::open_and_replay_frames`], for a caller that applies the records it is
    /// handed later, on another thread: before recovery's first repair (a torn tail cut,
    /// damage copied to `quarantine/`, segments removed), and before a later one once more
    /// records were handed over since (skip mode reads on after a repair), `before_repair` is
    /// called, and may refuse it, when a record handed over earlier turned out not to apply.
    /// The open then fails with no repair made from there on, as it would have had
    /// `on_record` failed at that record. A log that needs no repair never calls it (the
    /// zeroing of never-read bytes past the end of the last segment, which the first append
    /// after an open does, is not a repair).
    ///
    /// # Errors
    /// As [`Wal::open_and_replay`]; [`WalError::Replay`] (with the LSN of the last record
    /// handed over) if `before_repair` fails.
    pub fn open_and_replay_frames_until_repair(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: WalOptions,
        replay_from: Lsn,
        mut on_record: impl FnMut(&FrameInfo, &[u8]) -> std::result::Result<(), ReplayError>,
        mut before_repair: impl FnMut() -> std::result::Result<(), ReplayError>,
    ) -> Result<(Wal, RecoveryReport)> {
        let listener = options_listener(&options);
        let gate: crate::recovery::BeforeRepair<'_> = &mut before_repair;
        Wal::open_inner(fs, dir, options, replay_from, &mut on_record, Some(gate), listener)
    }

    /// Like [`Wal::open_and_replay`], with a listener told about rotations, syncs, deletions,
    /// recovery and poisoning (in place of [`WalOptions::listener`]).
    ///
    /// # Errors
    /// As [`Wal::open_and_replay`].
    pub fn open_with_listener(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: WalOptions,
        replay_from: Lsn,
        mut on_record: impl FnMut(Lsn, u8, &[u8]) -> std::result::Result<(), ReplayError>,
        listener: Arc<dyn WalListener>,
    ) -> Result<(Wal, RecoveryReport)> {
        let mut each =
            |info: &FrameInfo, payload: &[u8]| on_record(info.lsn, info.record_type, payload);
        Wal::open_inner(fs, dir, options, replay_from, &mut each, None, listener)
    }

    fn open_inner(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: WalOptions,
        replay_from: Lsn,
        on_record: OnRecord<'_>,
        before_repair: Option<BeforeRepair<'_>>,
        listener: Arc<dyn WalListener>,
    ) -> Result<(Wal, RecoveryReport)> {
        options.validate()?;
        let mut options = options;
        options.segment_fill = options.segment_fill.resolve(options.sync_policy);
        ingestor_fs::create_dir_durably(&*fs, dir)
            .map_err(|e| WalError::io(e.op, &e.path, e.source))?;
        let dir_lock = fs.lock_dir(dir).map_err(|e| WalError::io("lock", dir, e))?;
        // Spare segments a crash left behind (never part of the log).
        let entries = fs.read_dir(dir).map_err(|e| WalError::io("list", dir, e))?;
        for e in entries
            .iter()
            .filter(|e| e.kind == ingestor_fs::EntryKind::File && crate::segment::is_spare(&e.name))
        {
            let spare = dir.join(&e.name);
            match fs.remove_file(&spare) {
                // Gone already: its writer removed it (a log abandoned in this process).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other.map_err(|e| WalError::io("remove", &spare, e))?,
            }
        }
        let recovered = recover(&*fs, dir, &options, replay_from, false, on_record, before_repair)?;
        let mut report = recovered.report;
        let mut segments = recovered.segments;
        // Everything recovered counts as durable from here on: a close a process kill cut
        // short is finished first.
        make_recovered_durable(&*fs, dir, &segments, recovered.last_unsealed)?;
        let next_lsn = recovered.next_lsn;
        let last_lsn = Lsn(next_lsn.0 - 1);

        let shared_stub = |file: Arc<dyn FsFile>, segment: SegmentId, offset: u64| Writer {
            segment,
            file,
            offset,
            next_lsn,
            buf: Vec::new(),
            pending: Vec::new(),
            pending_at: 0,
            hand_off_at: 0,
            hinted: 0,
            zeroed: false,
            spare_asked: false,
            tail_cut_pending: false,
            close_after_write: false,
            #[cfg(ingestor_deliberate_bugs)]
            deferred: None,
        };
        let writer = match (segments.last().copied(), recovered.tail_offset) {
            (Some(id), Some(offset)) => {
                let path = dir.join(id.file_name());
                let file: Arc<dyn FsFile> = Arc::from(
                    fs.open(&path, OpenMode::ReadWrite)
                        .map_err(|e| WalError::io("open", &path, e))?,
                );
                let len = file.len().map_err(|e| WalError::io("stat", &path, e))?;
                // Its records were synced above (`make_recovered_durable`); a segment shorter
                // than the segment size (a log reopened with a larger one) is preallocated
                // to it, and that length synced.
                if len < options.segment_bytes_max {
                    file.allocate(options.segment_bytes_max)
                        .map_err(|e| WalError::io("allocate", &path, e))?;
                    file.sync_all().map_err(|e| WalError::io("sync", &path, e))?;
                }
                let mut writer = shared_stub(file, id, offset);
                writer.tail_cut_pending = recovered.tail_cut_pending;
                writer
            }
            _ => {
                // No segment left (a new log, or only a torn new segment): start one.
                let id = SegmentId(next_lsn);
                report.created_segment = Some(id);
                segments.push(id);
                let file = create_segment(&*fs, dir, options.segment_bytes_max, id, false)
                    .map_err(|f| f.error)?;
                shared_stub(file, id, SEGMENT_HEADER_LEN as u64)
            }
        };

        let shared = Arc::new(Shared {
            fs,
            dir: dir.to_path_buf(),
            options: options.clone(),
            writer: Mutex::new(writer),
            sync: Mutex::new(SyncState {
                durable: last_lsn,
                syncing: false,
                last_group: 0,
                last_sync: std::time::Duration::ZERO,
                waiters: Vec::new(),
            }),
            accepted: AtomicU64::new(last_lsn.0),
            written: AtomicU64::new(last_lsn.0),
            durable: AtomicU64::new(last_lsn.0),
            poisoned: OnceLock::new(),
            segments: Mutex::new(segments),
            deleting: Mutex::new(()),
            counters: Counters::default(),
            listener,
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            data_sync: Mutex::new(()),
            undo_generation: AtomicU64::new(0),
            wake: OnceLock::new(),
            closing: Mutex::new(None),
            spare: Mutex::new(crate::writer::Spare {
                name: crate::segment::spare_name(options.segment_fill.prepared_ahead()),
                ..crate::writer::Spare::default()
            }),
            spare_wanted: Condvar::new(),
            handoff: Mutex::new(crate::handoff::Handoff::default()),
            handed: Condvar::new(),
            _lock: dir_lock,
        });
        Counters::add(&shared.counters.truncations, report.truncations.len() as u64);
        Counters::add(&shared.counters.corruptions, report.corruptions.len() as u64);
        shared.listener.on_recovery(&report);
        // The spare's thread first: the syncer, once started, only ends through `shutdown`.
        let preparer = if options.segment_fill.prepared_ahead() {
            let s = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("ingestor-wal-spare".into())
                    .spawn(move || s.prepare_spares())
                    .map_err(|e| WalError::io("spawn spare thread", "ingestor-wal-spare", e))?,
            )
        } else {
            None
        };
        // A thread that fails to start drops the log made so far, which stops the spare's
        // thread and lets the directory lock go.
        let mut wal = Wal { shared, syncer: None, preparer };
        let shared = &wal.shared;
        wal.syncer = match options.sync_policy {
            // Deliberate defect: `Batch` starts no background syncer (a caller of
            // `wait_durable` then syncs itself; nothing else does).
            #[cfg(ingestor_deliberate_bugs)]
            SyncPolicy::Batch(_) if crate::bugs::on("batch-no-syncer") => None,
            SyncPolicy::Batch(window) => Some(spawn_batch_syncer(Arc::clone(shared), window)?),
            SyncPolicy::Buffered(deadline) => {
                Some(crate::sync::spawn_flusher(Arc::clone(shared), deadline)?)
            }
            // No hint is ever given in segments smaller than its chunk (a record larger than
            // the segment gets one of its own, hinted by the appender): no thread for them.
            SyncPolicy::Os
                if options.writeback_ahead && options.segment_bytes_max > WRITEBACK_CHUNK =>
            {
                Some(crate::sync::spawn_writeback(Arc::clone(shared))?)
            }
            SyncPolicy::Always | SyncPolicy::Os => None,
        };
        Ok((wal, report))
    }

    /// Appends one record; returns its LSN and the level it reached. Returns only after the
    /// record reached the operating system (under [`SyncPolicy::Always`], the disk; under
    /// [`SyncPolicy::Buffered`], the log's buffer).
    ///
    /// # Errors
    /// [`WalError::Io`] if the write fails (nothing of the record stays in the log);
    /// [`WalError::Poisoned`] after an earlier unrecoverable failure; record-size errors.
    pub fn append(&self, record_type: u8, payload: &[u8]) -> Result<Ack> {
        self.shared.append_with(|batch| batch.push(record_type, payload).map(|_| ()))
    }

    /// Appends several records with one write system call, into one segment; they get
    /// consecutive LSNs.
    ///
    /// # Errors
    /// As [`Wal::append`]; on error none of the records is in the log.
    pub fn append_batch(&self, records: &[(u8, &[u8])]) -> Result<Ack> {
        self.shared.append_with(|batch| {
            for (record_type, payload) in records {
                batch.push(*record_type, payload)?;
            }
            Ok(())
        })
    }

    /// Appends the records `build` pushes, with one write, into one segment. `build` may be
    /// called twice: when the records do not fit in the active segment, the log rotates and
    /// calls it again for the new segment ([`RecordBatch::segment`] tells which).
    ///
    /// # Errors
    /// As [`Wal::append`], and whatever `build` returns.
    pub fn append_with(
        &self,
        build: impl FnMut(&mut RecordBatch<'_>) -> Result<()>,
    ) -> Result<Ack> {
        self.shared.append_with(build)
    }

    /// Makes every record accepted so far durable (writing the buffer of
    /// [`SyncPolicy::Buffered`] first); returns the durable LSN.
    ///
    /// # Errors
    /// [`WalError::Poisoned`] if this or an earlier sync or write failed.
    pub fn sync(&self) -> Result<Lsn> {
        let target = self.accepted_lsn();
        crate::sync::sync_to(&self.shared, target, true)
    }

    /// Writes the buffer of [`SyncPolicy::Buffered`] now (a no-op under other policies);
    /// returns the last LSN written.
    ///
    /// # Errors
    /// [`WalError::Poisoned`] if this or an earlier write or sync failed.
    pub fn flush(&self) -> Result<Lsn> {
        // Deliberate defect: `flush` writes nothing (the buffer waits for its deadline).
        #[cfg(ingestor_deliberate_bugs)]
        if crate::bugs::on("flush-noop") {
            return Ok(self.written_lsn());
        }
        let mut w = lock(&self.shared.writer);
        self.shared.check_poisoned()?;
        self.shared.flush_pending(&mut w)?;
        Ok(self.written_lsn())
    }

    /// Waits until `lsn` reached the operating system: under [`SyncPolicy::Buffered`] by
    /// writing the buffer if it holds `lsn`; under other policies every accepted record is
    /// already written.
    ///
    /// # Errors
    /// [`WalError::Poisoned`] if a write failed; [`WalError::LsnOutOfRange`] for an LSN not
    /// yet accepted.
    pub fn wait_written(&self, lsn: Lsn) -> Result<()> {
        self.check_accepted(lsn)?;
        if lsn <= self.written_lsn() {
            return Ok(());
        }
        self.flush().map(|_| ())
    }

    fn check_accepted(&self, lsn: Lsn) -> Result<()> {
        let accepted = self.accepted_lsn();
        if lsn > accepted {
            return Err(WalError::LsnOutOfRange {
                requested: lsn,
                first: Lsn::FIRST,
                last: accepted,
            });
        }
        Ok(())
    }

    /// Waits until `lsn` is durable: under [`SyncPolicy::Batch`] for the background sync,
    /// otherwise by syncing (after writing the buffer of [`SyncPolicy::Buffered`]).
    ///
    /// # Errors
    /// [`WalError::Poisoned`] if a sync or write failed; [`WalError::LsnOutOfRange`] for an
    /// LSN not yet accepted.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        self.check_accepted(lsn)?;
        let lead = !matches!(self.shared.options.sync_policy, SyncPolicy::Batch(_))
            || self.syncer.is_none();
        crate::sync::sync_to(&self.shared, lsn, lead).map(|_| ())
    }

    /// The last LSN accepted ([`Lsn::ZERO`] for an empty log): the last LSN appended. It is
    /// [`Wal::written_lsn`] except under [`SyncPolicy::Buffered`] while the buffer holds
    /// records.
    #[must_use]
    pub fn accepted_lsn(&self) -> Lsn {
        Lsn(self.shared.accepted.load(Ordering::Acquire))
    }

    /// The last LSN written to the operating system ([`Lsn::ZERO`] for an empty log).
    #[must_use]
    pub fn written_lsn(&self) -> Lsn {
        Lsn(self.shared.written.load(Ordering::Acquire))
    }

    /// The last LSN known durable.
    #[must_use]
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.shared.durable.load(Ordering::Acquire))
    }

    /// The segments of the log, oldest first; the last is the active one.
    #[must_use]
    pub fn segments(&self) -> Vec<SegmentId> {
        lock(&self.shared.segments).clone()
    }

    /// The log's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// A reader of every record from `from` on, up to the last LSN written when each record
    /// is asked for; appends may continue meanwhile.
    ///
    /// # Errors
    /// [`WalError::LsnOutOfRange`] if `from` was deleted or is beyond the next LSN.
    pub fn reader(&self, from: Lsn) -> Result<WalReader> {
        WalReader::new(Arc::clone(&self.shared), from)
    }

    /// Deletes the segments all of whose records have LSNs below `watermark`; never the
    /// active segment. The directory is synced after deleting. Returns the deleted segments.
    ///
    /// # Errors
    /// [`WalError::Io`] if a removal or the directory sync fails (the segments list stays
    /// as it was on disk: a failed removal leaves its segment in place).
    pub fn delete_below(&self, watermark: Lsn) -> Result<Vec<SegmentId>> {
        let shared = &self.shared;
        // One deletion at a time (several threads may compact: the forwarder's keepers);
        // the list of segments is locked only to read it and to take each removed one out,
        // never across a removal: unlinking a large segment takes tens of milliseconds, and
        // a rotation on the appending thread needs the list.
        let _one_at_a_time = lock(&shared.deleting);
        let mut doomed = Vec::new();
        for pair in lock(&shared.segments).windows(2) {
            // Segment pair[0] holds LSNs pair[0].0 ..= pair[1].0 - 1.
            if pair[1].0 <= watermark {
                doomed.push(pair[0]);
            } else {
                break;
            }
        }
        let mut deleted = Vec::new();
        for (i, &id) in doomed.iter().enumerate() {
            if i > 0 {
                shared.crash_point(crash_points::DELETE_BETWEEN)?;
            }
            let path = shared.path(id);
            shared.fs.remove_file(&path).map_err(|e| WalError::io("remove", &path, e))?;
            lock(&shared.segments).retain(|s| *s != id);
            deleted.push(id);
            Counters::add(&shared.counters.segments_deleted, 1);
            shared.listener.on_delete(id);
        }
        if !deleted.is_empty() {
            shared.crash_point(crash_points::DELETE_BEFORE_DIR_SYNC)?;
            shared
                .fs
                .sync_dir(&shared.dir)
                .map_err(|e| WalError::io("sync_dir", &shared.dir, e))?;
        }
        Ok(deleted)
    }

    /// Ends the active segment (cut to its data and synced) and starts a new one at the next
    /// LSN, so that every record written so far lies in segments that [`Wal::delete_below`]
    /// can remove. Does nothing when the active segment holds no record yet. Returns the
    /// active segment.
    ///
    /// # Errors
    /// [`WalError::Poisoned`]; [`WalError::Io`] if the sync or the segment creation fails.
    pub fn rotate(&self) -> Result<SegmentId> {
        let shared = &self.shared;
        let mut w = lock(&shared.writer);
        shared.check_poisoned()?;
        if w.offset > SEGMENT_HEADER_LEN as u64 {
            // The ended segment is never appended to again: give back its preallocated tail
            // (recovery reads a closed segment up to its end). A power cut before the sync
            // leaves it either length, both valid.
            let path = shared.path(w.segment);
            // Nothing written below the cut while it is made.
            drop(shared.finish_handoff()?);
            w.file.set_len(w.offset).map_err(|e| WalError::io("truncate", &path, e))?;
            shared.rotate(&mut w, false)?;
        }
        Ok(w.segment)
    }

    /// Starts the log over at `next`: every segment is deleted (all their records are below
    /// `next`), then a new segment starting at `next` is created. For an owner that holds a
    /// durable copy of everything before `next` (a snapshot) when the log ends before it —
    /// after recovery cut a damaged tail the copy already covers — so that no LSN the copy
    /// covers is ever reissued. Segments are deleted oldest first and the new one is created
    /// last, so a crash in between leaves a log that is still behind `next`, and the call can
    /// simply be repeated. Does nothing when the log already reached `next - 1`.
    ///
    /// # Errors
    /// [`WalError::Io`] if a removal, the directory sync or the segment creation fails.
    pub fn skip_to(&self, next: Lsn) -> Result<()> {
        let shared = &self.shared;
        // Before the writer lock, as `delete_below` takes it (never under the writer lock).
        let _no_deletion_meanwhile = lock(&shared.deleting);
        let mut w = lock(&shared.writer);
        if next <= w.next_lsn {
            return Ok(());
        }
        shared.check_poisoned()?;
        shared.flush_pending(&mut w)?;
        // A close left for later ends before its segments go.
        shared.finish_close()?;
        let mut segments = lock(&shared.segments);
        for (i, id) in segments.clone().into_iter().enumerate() {
            if i > 0 {
                shared.crash_point(crash_points::DELETE_BETWEEN)?;
            }
            let path = shared.path(id);
            shared.fs.remove_file(&path).map_err(|e| WalError::io("remove", &path, e))?;
            segments.retain(|s| *s != id);
        }
        shared.fs.sync_dir(&shared.dir).map_err(|e| WalError::io("sync_dir", &shared.dir, e))?;
        let id = SegmentId(next);
        w.file = shared.create_segment(id, false)?;
        w.zeroed = false;
        w.tail_cut_pending = false;
        w.segment = id;
        w.offset = SEGMENT_HEADER_LEN as u64;
        w.hinted = 0;
        w.next_lsn = next;
        segments.push(id);
        let last = Lsn(next.0 - 1);
        shared.accepted.store(last.0, Ordering::Release);
        shared.written.store(last.0, Ordering::Release);
        shared.mark_durable(last);
        Ok(())
    }

    /// Whether a failed sync or write poisoned the log: every later append and sync fails
    /// with [`WalError::Poisoned`] until the log is reopened.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.get().is_some()
    }

    /// Counters since open, and the current LSNs and segment count.
    #[must_use]
    pub fn stats(&self) -> WalStats {
        let mut stats = self.shared.counters.snapshot();
        stats.accepted_lsn = self.accepted_lsn();
        stats.written_lsn = self.written_lsn();
        stats.durable_lsn = self.durable_lsn();
        stats.segments = lock(&self.shared.segments).len() as u64;
        stats
    }

    /// Stops the background thread, writes the buffer, syncs everything written, and
    /// closes the log.
    ///
    /// # Errors
    /// The error of the final sync (the log is closed all the same).
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(handle) = self.syncer.take() {
            if let Some(tx) = self.shared.wake.get() {
                let _ = tx.send(SyncMessage::Shutdown);
            }
            let _ = handle.join();
        }
        self.shared.drop_spare();
        if let Some(handle) = self.preparer.take() {
            let _ = handle.join();
        }
        // A spare the preparer finished after the stop flag was set is removed here.
        self.shared.drop_spare();
        if self.shared.poisoned.get().is_some() {
            return self.shared.check_poisoned();
        }
        // A close the background thread had not reached yet.
        self.shared.finish_close()?;
        let target = self.accepted_lsn();
        crate::sync::sync_to(&self.shared, target, true).map(|_| ())
    }
}

/// Makes durable, at open, what a rotation's close that a process kill cut short may have
/// left in the page cache only (everything an open recovers counts as durable from then on).
/// At most one close is ever pending, so the data to sync lies in the last two segments
/// kept: the one a rotation ended, and the one it opened after it (flagged
/// `follows_unsynced`, or removed by recovery as a torn creation when the kill came before
/// its header was written, which leaves the ended one last). Both are synced, then the last
/// one sealed when recovery found it still flagged ([`crate::segment::seal_segment`]), else
/// the directory synced (a segment created or sealed without its directory sync). Reads
/// nothing: an open that fails on a read fails in recovery, before any repair.
fn make_recovered_durable(
    fs: &dyn Fs,
    dir: &Path,
    segments: &[SegmentId],
    last_unsealed: bool,
) -> Result<()> {
    let mut last_file = None;
    for &id in segments.iter().rev().take(2).rev() {
        let path = dir.join(id.file_name());
        let file =
            fs.open(&path, OpenMode::ReadWrite).map_err(|e| WalError::io("open", &path, e))?;
        file.sync_data().map_err(|e| WalError::io("sync", &path, e))?;
        last_file = Some((id, file));
    }
    match last_file {
        Some((id, file)) if last_unsealed => crate::segment::seal_segment(fs, dir, &*file, id),
        Some(_) => fs.sync_dir(dir).map_err(|e| WalError::io("sync_dir", dir, e)),
        None => Ok(()),
    }
}

/// The listener the options name, or one that does nothing.
fn options_listener(options: &WalOptions) -> Arc<dyn WalListener> {
    options.listener.clone().unwrap_or_else(|| Arc::new(NoListener))
}

impl Drop for Wal {
    /// A best-effort close: stops the sync thread and syncs, ignoring errors.
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
