//! The writer: the active segment, appends and batch appends with one write, rotation, undo
//! of failed writes, and the state the log's handles share.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crossbeam_channel::{Sender, TrySendError};
use ingestor_codec::{FrameFields, Lsn, MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN, encode_frame_with};
use ingestor_fs::{Fs, FsFile, FsLock};

use crate::error::{Result, WalError};
use crate::handoff::Handoff;
use crate::options::{SegmentFill, SyncPolicy, WalOptions};
use crate::segment::{SegmentId, activate_spare, create_segment, prepare_spare, seal_segment};
use crate::stats::{Counters, WalListener};
use crate::sync::SyncMessage;
use crate::wal::{Ack, AckLevel, crash_points};

/// How much of the active segment is written before write-back of it is asked for.
pub(crate) const WRITEBACK_CHUNK: u64 = 8 << 20;
/// What write-back hints are aligned to: a multiple of every page size Linux uses (4, 16 and
/// 64 KiB), so that a hint never reaches the page the next frame goes into.
const PAGE: u64 = 64 << 10;

/// Records being added by [`Wal::append_with`](crate::Wal::append_with): they are written
/// together, with one write system call, into one segment.
pub struct RecordBatch<'a> {
    segment: SegmentId,
    next: Lsn,
    durable: Lsn,
    compression: ingestor_codec::Compression,
    buf: &'a mut Vec<u8>,
}

impl RecordBatch<'_> {
    /// The segment the records will land in. A writer that interns data per segment (as the
    /// ingestor interns series) defines what it needs when this changes.
    #[must_use]
    pub fn segment(&self) -> SegmentId {
        self.segment
    }

    /// The LSN the next pushed record will get.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    /// Adds a record; returns its LSN.
    ///
    /// # Errors
    /// [`WalError::ReservedRecordType`] for type 0, [`WalError::RecordTooLarge`] above
    /// [`MAX_PAYLOAD_LEN`].
    pub fn push(&mut self, record_type: u8, payload: &[u8]) -> Result<Lsn> {
        self.push_with(record_type, |out| out.extend_from_slice(payload))
    }

    /// Adds a record whose payload `write` appends to the buffer it is given (no copy).
    ///
    /// # Errors
    /// As [`RecordBatch::push`].
    pub fn push_with(&mut self, record_type: u8, write: impl FnOnce(&mut Vec<u8>)) -> Result<Lsn> {
        if record_type == 0 {
            return Err(WalError::ReservedRecordType);
        }
        let lsn = self.next;
        let lag = u32::try_from(lsn.0 - self.durable.0.min(lsn.0 - 1)).unwrap_or(u32::MAX);
        let fields = FrameFields { lsn, record_type, durable_lag: lag };
        encode_frame_with(fields, self.compression, self.buf, |out| {
            write(out);
            Ok(())
        })
        .map_err(|_| WalError::RecordTooLarge { len: usize::MAX, limit: MAX_PAYLOAD_LEN })?;
        self.next = lsn.next();
        Ok(lsn)
    }
}

/// How a batch leaves the active segment ([`Shared::needed_move`]).
#[derive(Debug, Clone, Copy)]
enum Move {
    /// The batch does not fit: the segment ends.
    Rotate,
    /// A zero-filled spare is ready for a segment whose space came from fallocate.
    Early,
}

/// The active segment and where the next frame goes; guarded by the write lock.
pub(crate) struct Writer {
    pub(crate) segment: SegmentId,
    pub(crate) file: Arc<dyn FsFile>,
    pub(crate) offset: u64,
    pub(crate) next_lsn: Lsn,
    pub(crate) buf: Vec<u8>,
    /// Under [`SyncPolicy::Buffered`]: frames accepted and not yet written, which belong at
    /// `pending_at` in the active segment (`offset` is past them).
    pub(crate) pending: Vec<u8>,
    pub(crate) pending_at: u64,
    /// Under [`SyncPolicy::Buffered`]: the buffer is handed off once it holds this much (or
    /// [`WalOptions::buffer_bytes`], if more); raised while the flusher is busy.
    pub(crate) hand_off_at: usize,
    /// Under [`SyncPolicy::Os`] and [`SyncPolicy::Buffered`]: how far into the active
    /// segment write-back was asked for (see [`Shared::hint_writeback`]).
    pub(crate) hinted: u64,
    /// Whether a spare was asked for since the active segment began ([`Shared::want_spare`]
    /// asks once per segment).
    pub(crate) spare_asked: bool,
    /// Whether the active segment was a zero-filled spare (else its space came from
    /// `fallocate`, or a recovered segment's own).
    pub(crate) zeroed: bool,
    /// Whether the active segment is the recovered last one, whose bytes past `offset` are
    /// still to be zeroed durably before anything is appended (see
    /// [`Shared::cut_recovered_tail`]).
    pub(crate) tail_cut_pending: bool,
    /// A rotation left the ended segment's close ([`Shared::finish_close`]) to the
    /// appending thread, after the write of the batch that rotated (no background thread
    /// could take it).
    pub(crate) close_after_write: bool,
    /// Deliberate defect `buffered-append`: the last append's frames and offset, not yet
    /// written (acknowledged all the same).
    #[cfg(ingestor_deliberate_bugs)]
    pub(crate) deferred: Option<(Vec<u8>, u64)>,
}

impl Writer {
    /// Writes the frames the deliberate defect `buffered-append` held back (a no-op
    /// otherwise).
    pub(crate) fn flush_deferred(&mut self) -> std::io::Result<()> {
        #[cfg(ingestor_deliberate_bugs)]
        if let Some((bytes, offset)) = self.deferred.take() {
            self.file.write_at(&bytes, offset)?;
        }
        Ok(())
    }
}

/// What sync callers share: the durable point and whether a sync is running.
pub(crate) struct SyncState {
    pub(crate) durable: Lsn,
    pub(crate) syncing: bool,
    /// Writers released by the last sync, counting its leader.
    pub(crate) last_group: usize,
    /// How long the last sync took.
    pub(crate) last_sync: std::time::Duration,
    /// Callers waiting in `sync_to`, each woken on its own (see [`crate::sync::Waiter`]).
    pub(crate) waiters: Vec<crate::sync::Waiter>,
}

pub(crate) struct Shared {
    pub(crate) fs: Arc<dyn Fs>,
    pub(crate) dir: PathBuf,
    pub(crate) options: WalOptions,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) sync: Mutex<SyncState>,
    /// The last LSN accepted: written, or waiting in the buffer of [`SyncPolicy::Buffered`].
    pub(crate) accepted: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) durable: AtomicU64,
    pub(crate) poisoned: OnceLock<Arc<WalError>>,
    pub(crate) segments: Mutex<Vec<SegmentId>>,
    /// Held by [`crate::Wal::delete_below`] throughout, so that deletions do not overlap.
    pub(crate) deleting: Mutex<()>,
    pub(crate) counters: Counters,
    pub(crate) listener: Arc<dyn WalListener>,
    pub(crate) closed: AtomicBool,
    /// Appenders between taking the write lock and finishing their write: a sync leader
    /// waits a moment for them, so that one sync covers them all.
    pub(crate) in_flight: AtomicUsize,
    /// Callers waiting for a sync to finish.
    pub(crate) waiting: AtomicUsize,
    /// Bumped whenever a failed write is undone: readers drop what they buffered.
    pub(crate) undo_generation: AtomicU64,
    /// Held around every data sync: see [`Shared::sync_segment`].
    pub(crate) data_sync: Mutex<()>,
    /// Wakes the background syncer of [`SyncPolicy::Batch`], or the flusher of
    /// [`SyncPolicy::Buffered`]; takes the write-back hints to the thread of
    /// [`SyncPolicy::Os`].
    pub(crate) wake: OnceLock<Sender<SyncMessage>>,
    /// A segment a rotation ended without syncing it, and the one opened after it: see
    /// [`Shared::finish_close`]. Held throughout a close, so that a caller that needs the
    /// close done waits for one under way.
    pub(crate) closing: Mutex<Option<Closing>>,
    /// The spare segment prepared ahead (see [`SegmentFill`]).
    pub(crate) spare: Mutex<Spare>,
    /// Wakes the spare's preparer thread.
    pub(crate) spare_wanted: Condvar,
    /// Under [`SyncPolicy::Buffered`]: the full buffer handed to the flusher to write.
    pub(crate) handoff: Mutex<Handoff>,
    /// Tells waiters that a handed-off buffer was written.
    pub(crate) handed: Condvar,
    pub(crate) _lock: Box<dyn FsLock>,
}

/// A rotation's work left for later under [`SyncPolicy::Os`] and [`SyncPolicy::Buffered`]:
/// the ended segment's sync, then the sealing of the segment opened after it (its header
/// flag `follows_unsynced` cleared, synced, the directory synced).
pub(crate) struct Closing {
    pub(crate) file: Arc<dyn FsFile>,
    pub(crate) segment: SegmentId,
    /// The ended segment's last LSN.
    pub(crate) last: Lsn,
    pub(crate) next_file: Arc<dyn FsFile>,
    pub(crate) next: SegmentId,
}

/// The spare segment: prepared (zeros or fallocate'd space, synced) and waiting, or wanted.
#[derive(Default)]
pub(crate) struct Spare {
    /// This log's spare file name (see `segment::spare_name`).
    pub(crate) name: String,
    pub(crate) ready: Option<Arc<dyn FsFile>>,
    pub(crate) wanted: bool,
    /// A spare failed (no space, an I/O error): none is asked for again before the next
    /// rotation, so that a full disk is not filled again and again.
    pub(crate) failed: bool,
    /// Set when the log closes; also stops a spare being written (between 1 MiB chunks).
    pub(crate) stop: Arc<AtomicBool>,
}

/// Locks a mutex, ignoring poisoning: every critical section leaves its data consistent
/// before anything in it can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn path(&self, id: SegmentId) -> PathBuf {
        self.dir.join(id.file_name())
    }

    pub(crate) fn check_poisoned(&self) -> Result<()> {
        match self.poisoned.get() {
            Some(cause) => Err(WalError::Poisoned { cause: Arc::clone(cause) }),
            None => Ok(()),
        }
    }

    /// Makes the log refuse every later write; returns the error to give the caller.
    pub(crate) fn poison(&self, cause: WalError) -> WalError {
        let cause = Arc::clone(self.poisoned.get_or_init(|| Arc::new(cause)));
        // Under the sync lock, so that a waiter between its poison check and its wait
        // cannot miss the wake-up.
        self.wake_all_waiters();
        self.listener.on_poisoned(&cause);
        WalError::Poisoned { cause }
    }

    pub(crate) fn crash_point(&self, name: &'static str) -> Result<()> {
        self.fs.crash_point(name).map_err(|e| WalError::io("crash point", name, e))
    }

    /// Syncs a segment's data. Every data sync of the log goes through here, one at a time:
    /// after a failed sync has poisoned the log no other sync runs, because Linux may report
    /// a second fsync of the same pages as a success without having written them.
    pub(crate) fn sync_segment(
        &self,
        file: &dyn FsFile,
        segment: SegmentId,
    ) -> Result<std::time::Duration> {
        let _one_at_a_time = lock(&self.data_sync);
        self.check_poisoned()?;
        let started = std::time::Instant::now();
        match file.sync_data() {
            Ok(()) => {
                let took = started.elapsed();
                self.counters.sync_took(took);
                Ok(took)
            }
            // Deliberate defect: a failed sync does not poison the log, so that a later sync
            // "succeeds" over pages the kernel already dropped.
            #[cfg(ingestor_deliberate_bugs)]
            Err(e) if crate::bugs::on("fsync-retry") => {
                Err(WalError::io("sync", self.path(segment), e))
            }
            Err(e) => Err(self.poison(WalError::io("sync", self.path(segment), e))),
        }
    }

    /// Records that everything up to `lsn` is durable and wakes waiters; refused once the
    /// log is poisoned.
    pub(crate) fn mark_durable(&self, lsn: Lsn) {
        let mut st = lock(&self.sync);
        if lsn > st.durable && self.poisoned.get().is_none() {
            st.durable = lsn;
            self.durable.store(lsn.0, Ordering::Release);
        }
        let woken = crate::sync::release_waiters(&mut st, true);
        drop(st);
        crate::sync::unpark(woken);
    }

    /// Wakes every caller waiting in `sync_to`: each checks again what it waits for.
    pub(crate) fn wake_all_waiters(&self) {
        let mut st = lock(&self.sync);
        let woken = crate::sync::release_waiters(&mut st, true);
        drop(st);
        crate::sync::unpark(woken);
    }

    /// Creates a segment (see [`create_segment`]), poisoning the log if a failed creation
    /// cannot be undone.
    pub(crate) fn create_segment(
        &self,
        id: SegmentId,
        follows_unsynced: bool,
    ) -> Result<Arc<dyn FsFile>> {
        create_segment(&*self.fs, &self.dir, self.options.segment_bytes_max, id, follows_unsynced)
            .map_err(|f| if f.undone { f.error } else { self.poison(f.error) })
    }

    /// Whether rotations made by appends leave the ended segment's sync for later
    /// ([`Shared::finish_close`]): under the policies that sync only at rotation and on
    /// demand, [`SyncPolicy::Os`] and [`SyncPolicy::Buffered`], so that an append that
    /// rotates does not wait for a whole segment's sync.
    fn closes_later(&self) -> bool {
        matches!(self.options.sync_policy, SyncPolicy::Os | SyncPolicy::Buffered(_))
    }

    /// Ends the active segment and starts the next one at `w.next_lsn`. With `later` (a
    /// rotation an append needs, under [`Shared::closes_later`] policies), the ended segment
    /// is synced after the rotation returns, by the background thread or at the end of the
    /// append ([`Shared::finish_close`]), and the new segment's header says so until then;
    /// otherwise it is synced here.
    pub(crate) fn rotate(&self, w: &mut Writer, later: bool) -> Result<()> {
        let started = std::time::Instant::now();
        let segment = w.segment;
        w.flush_deferred().map_err(|e| WalError::io("write", self.path(segment), e))?;
        self.flush_pending(w)?;
        // One close at a time, in order: the one before is finished first.
        self.finish_close()?;
        // Held until the close is recorded, so that no sync leader marks the ended segment
        // durable between the check below and then (see `sync_to`).
        let mut closing = lock(&self.closing);
        let last = Lsn(w.next_lsn.0 - 1);
        // Not when the ended segment is durable already (a sync covered it to its end): the
        // new segment's frames would then say, by their durable lag, that the LSN before it
        // was durable, which recovery reads as proof that its header was sealed. So a
        // segment opened unsealed never holds a frame that says so before its seal.
        let later = later && self.closes_later() && self.durable.load(Ordering::Acquire) < last.0;
        if !later {
            self.crash_point(crash_points::ROTATE_BEFORE_SYNC)?;
            // Deliberate defect: the ended segment is not synced, yet counted durable.
            #[cfg(ingestor_deliberate_bugs)]
            let skip = crate::bugs::on("rotate-no-sync");
            #[cfg(not(ingestor_deliberate_bugs))]
            let skip = false;
            if !skip {
                self.sync_segment(&*w.file, w.segment)?;
            }
            self.mark_durable(last);
        }
        let id = SegmentId(w.next_lsn);
        let (name, spare) = {
            let mut s = lock(&self.spare);
            // A new segment: a spare may be asked for again.
            s.failed = false;
            (s.name.clone(), s.ready.take())
        };
        // A spare may be asked for again: for the new segment, or (if this rotation fails
        // with the spare used up) for the active one still.
        w.spare_asked = false;
        let (file, from_spare) = match spare {
            Some(spare) => (
                activate_spare(&*self.fs, &self.dir, &name, spare, id, later)
                    .map_err(|f| if f.undone { f.error } else { self.poison(f.error) })?,
                true,
            ),
            None => (self.create_segment(id, later)?, false),
        };
        let ended = std::mem::replace(&mut w.file, file);
        w.segment = id;
        // A spare of `AllocateAhead` has its space from fallocate, as a created segment.
        w.zeroed = from_spare && self.options.segment_fill.zero_fills();
        // The recovered segment's tail (if not cut yet) is behind: it ended above.
        w.tail_cut_pending = false;
        Counters::add(&self.counters.spare_segments, u64::from(from_spare));
        w.offset = SEGMENT_HEADER_LEN as u64;
        w.hinted = 0;
        lock(&self.segments).push(id);
        Counters::add(&self.counters.rotations, 1);
        self.counters.rotation_took(started.elapsed());
        if later {
            *closing = Some(Closing {
                file: ended,
                segment,
                last,
                next_file: Arc::clone(&w.file),
                next: id,
            });
        }
        drop(closing);
        if later {
            // The background thread closes it; without one (or with its channel full, or
            // under `Buffered` without hand-offs, which keeps the thread idle before its
            // deadline), the appending thread does, once the batch that rotated is written.
            let background = self.options.buffer_handoff
                || !matches!(self.options.sync_policy, SyncPolicy::Buffered(_));
            let sent = background
                && self.wake.get().is_some_and(|tx| tx.try_send(SyncMessage::Close).is_ok());
            w.close_after_write = !sent;
        }
        // Last: a listener that panics leaves the close recorded.
        self.listener.on_rotate(id);
        Ok(())
    }

    /// Finishes the close a rotation left for later, if one is pending (waits for one under
    /// way on another thread): syncs the ended segment, counts its records durable, then
    /// seals the segment opened after it ([`seal_segment`]). Every sync of the active
    /// segment comes after this, so that nothing in it counts as durable before the segment
    /// ahead of it is synced and its header no longer says otherwise. A failure poisons the
    /// log.
    pub(crate) fn finish_close(&self) -> Result<()> {
        let mut closing = lock(&self.closing);
        let Some(c) = closing.as_ref() else { return Ok(()) };
        self.check_poisoned()?;
        let closed = self
            .crash_point(crash_points::ROTATE_BEFORE_SYNC)
            .and_then(|()| {
                // Deliberate defect: the ended segment is not synced, yet counted durable.
                #[cfg(ingestor_deliberate_bugs)]
                if crate::bugs::on("rotate-no-sync") {
                    return Ok(());
                }
                self.sync_segment(&*c.file, c.segment).map(drop)
            })
            .and_then(|()| seal_segment(&*self.fs, &self.dir, &*c.next_file, c.next));
        match closed {
            Ok(()) => {
                self.mark_durable(c.last);
                *closing = None;
                Ok(())
            }
            Err(e @ WalError::Poisoned { .. }) => Err(e),
            Err(e) => Err(self.poison(e)),
        }
    }

    /// Cuts away whatever part of a failed write reached the file, durably, so that no later
    /// frame follows half a frame. Poisons the log if that fails too.
    fn undo_failed_write(&self, w: &mut Writer, cause: WalError) -> WalError {
        // Cut back and allocated again: its tail is no longer written zeros.
        w.zeroed = false;
        self.cut_back(&*w.file, w.offset, cause)
    }

    /// Cuts `file` back to `len` (allocated again to a segment's length), durably, after a
    /// failed write; poisons the log if that fails too. Returns `cause`, or the poisoning.
    pub(crate) fn cut_back(&self, file: &dyn FsFile, len: u64, cause: WalError) -> WalError {
        Counters::add(&self.counters.failed_writes, 1);
        self.undo_generation.fetch_add(1, Ordering::AcqRel);
        let allocated = self.options.segment_bytes_max.max(len);
        let undone = file
            .set_len(len)
            .and_then(|()| file.allocate(allocated))
            .and_then(|()| file.sync_all());
        match undone {
            Ok(()) => cause,
            Err(_) => self.poison(cause),
        }
    }

    pub(crate) fn append_with(
        &self,
        mut build: impl FnMut(&mut RecordBatch<'_>) -> Result<()>,
    ) -> Result<Ack> {
        if self.closed.load(Ordering::Acquire) {
            return Err(WalError::Closed);
        }
        self.check_poisoned()?;
        // Counted for a leader of a sync that waits for appenders in the middle of a write;
        // an append under `Buffered` writes nothing (its buffer is written under the lock).
        let counted = !matches!(self.options.sync_policy, SyncPolicy::Buffered(_));
        if counted {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        let result = self.check_poisoned().and_then(|()| self.write_batch(w, &mut build));
        drop(guard);
        if counted {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        let (first, last) = result?;
        if last < first {
            let level = if self.written.load(Ordering::Acquire) >= last.0 {
                AckLevel::Written
            } else {
                AckLevel::Accepted
            };
            return Ok(Ack { first, last, level });
        }
        let level = match self.options.sync_policy {
            SyncPolicy::Buffered(_) => {
                if self.durable.load(Ordering::Acquire) >= last.0 && self.poisoned.get().is_none() {
                    AckLevel::Durable
                } else if self.written.load(Ordering::Acquire) >= last.0 {
                    AckLevel::Written
                } else {
                    AckLevel::Accepted
                }
            }
            SyncPolicy::Always => {
                crate::sync::sync_to(self, last, true)?;
                AckLevel::Durable
            }
            SyncPolicy::Batch(_) | SyncPolicy::Os => {
                // Under `Os` the background thread only gives write-back hints.
                if matches!(self.options.sync_policy, SyncPolicy::Batch(_))
                    && let Some(tx) = self.wake.get()
                {
                    // A full channel means a wake-up is already pending.
                    let _ = tx.try_send(SyncMessage::Wake);
                }
                if self.durable.load(Ordering::Acquire) >= last.0 && self.poisoned.get().is_none() {
                    AckLevel::Durable
                } else {
                    AckLevel::Written
                }
            }
        };
        Ok(Ack { first, last, level })
    }

    fn write_batch(
        &self,
        w: &mut Writer,
        build: &mut impl FnMut(&mut RecordBatch<'_>) -> Result<()>,
    ) -> Result<(Lsn, Lsn)> {
        if w.tail_cut_pending {
            self.cut_recovered_tail(w)?;
        }
        let result = if matches!(self.options.sync_policy, SyncPolicy::Buffered(_)) {
            self.accept(w, build)
        } else {
            let mut buf = std::mem::take(&mut w.buf);
            let result = self.write_frames(w, &mut buf, build);
            buf.clear();
            w.buf = buf;
            result
        };
        // A close no background thread took: after the batch that rotated went into the new
        // segment (written under `Os`; in the buffer under `Buffered`, whose rotation wrote
        // the ended segment's frames first). A power cut before it leaves a torn ended
        // segment and a new one still flagged. Its
        // failure poisons the log, which the next call sees, as it would had the background
        // thread failed: this batch was written (acknowledged at the level it reached), so
        // it may be there after a reopen, and an error here would say it was refused.
        if std::mem::take(&mut w.close_after_write) {
            drop(self.finish_close());
        }
        result
    }

    /// [`Shared::write_batch`] under the policies that write every batch: builds it in
    /// `buf`, then writes it.
    fn write_frames(
        &self,
        w: &mut Writer,
        buf: &mut Vec<u8>,
        build: &mut impl FnMut(&mut RecordBatch<'_>) -> Result<()>,
    ) -> Result<(Lsn, Lsn)> {
        let mut batch = self.batch(w, buf);
        build(&mut batch)?;
        let mut next = batch.next;
        if next == w.next_lsn {
            return Ok((w.next_lsn, Lsn(w.next_lsn.0 - 1)));
        }
        if let Some(needed) = self.needed_move(w, buf.len())
            && self.make_move(w, needed)?
        {
            buf.clear();
            let mut batch = self.batch(w, buf);
            build(&mut batch)?;
            next = batch.next;
        }
        let segment = w.segment;
        let path = || self.path(segment);
        self.crash_point(crash_points::APPEND_BEFORE_WRITE)?;
        // Deliberate defect: the frames stay in a user-space buffer until the next append or
        // sync, yet the append is acknowledged.
        #[cfg(ingestor_deliberate_bugs)]
        let written = if crate::bugs::on("buffered-append") {
            w.flush_deferred().map(|()| w.deferred = Some((buf.clone(), w.offset)))
        } else {
            w.file.write_at(buf, w.offset)
        };
        #[cfg(not(ingestor_deliberate_bugs))]
        let written = w.file.write_at(buf, w.offset);
        if let Err(e) = written {
            // Deliberate defect: a failed write is not cut back; the next frames go after
            // whatever part of it reached the file.
            #[cfg(ingestor_deliberate_bugs)]
            if crate::bugs::on("write-past-failed") {
                w.offset += buf.len() as u64;
                return Err(WalError::io("write", path(), e));
            }
            return Err(self.undo_failed_write(w, WalError::io("write", path(), e)));
        }
        let first = w.next_lsn;
        let last = Lsn(next.0 - 1);
        w.offset += buf.len() as u64;
        w.next_lsn = next;
        self.accepted.store(last.0, Ordering::Release);
        self.written.store(last.0, Ordering::Release);
        Counters::add_locked(&self.counters.appends, 1);
        Counters::add_locked(&self.counters.records, next.0 - first.0);
        Counters::add_locked(&self.counters.bytes_written, buf.len() as u64);
        self.crash_point(crash_points::APPEND_AFTER_WRITE)?;
        self.hint_writeback(w);
        self.want_spare(w);
        Ok((first, last))
    }

    /// Zeroes durably what lies past the end of the recovered last segment, before anything
    /// is appended there (a segment ended with nothing appended loses its tail to the
    /// rotation's own cut and sync): recovery read only [`TAIL_WINDOW`] bytes past the end,
    /// and a stale frame further on (a power cut kept a later part of an unsynced write and
    /// lost an earlier one) must never follow new frames. The file is cut at the end and
    /// preallocated again to the segment length, then synced. Done once per open, on the
    /// first append (an open that only reads costs no truncation and no sync); a failure
    /// fails that append, writes nothing, and leaves the cut to the next one.
    ///
    /// [`TAIL_WINDOW`]: crate::recovery::TAIL_WINDOW
    #[cold]
    pub(crate) fn cut_recovered_tail(&self, w: &mut Writer) -> Result<()> {
        let path = self.path(w.segment);
        w.file.set_len(w.offset).map_err(|e| WalError::io("truncate", &path, e))?;
        // The segment length the open preallocated, or the end of the data if further on.
        let keep = self.options.segment_bytes_max.max(w.offset);
        w.file.allocate(keep).map_err(|e| WalError::io("allocate", &path, e))?;
        w.file.sync_all().map_err(|e| WalError::io("sync", &path, e))?;
        w.tail_cut_pending = false;
        Ok(())
    }

    /// Whether a batch of `len` bytes must go into a new segment: when it does not fit in the
    /// active one, or when the active segment's space came from fallocate and a zero-filled
    /// spare is ready (asked for once it held 1 MiB, or half a segment).
    fn needed_move(&self, w: &Writer, len: usize) -> Option<Move> {
        let header = SEGMENT_HEADER_LEN as u64;
        if w.offset <= header {
            return None;
        }
        if w.offset + len as u64 > self.options.segment_bytes_max {
            return Some(Move::Rotate);
        }
        // (Only zero-filled spares are worth an early move: no lock taken for the others.)
        let early = !w.zeroed
            && self.options.segment_fill.zero_fills()
            && w.offset >= self.spare_trigger(w)
            && lock(&self.spare).ready.is_some();
        early.then_some(Move::Early)
    }

    /// Makes the move [`Shared::needed_move`] asked for; returns whether the log is now in
    /// a new segment (a switch to the spare is optional, and may not happen). The caller
    /// then builds its batch again.
    fn make_move(&self, w: &mut Writer, needed: Move) -> Result<bool> {
        match needed {
            Move::Rotate => self.rotate(w, true).map(|()| true),
            Move::Early => self.switch_early(w),
        }
    }

    /// [`SyncPolicy::Buffered`]: builds a batch's frames straight into the buffer (after
    /// the frames accepted before it, which belong just before `offset`), and writes the
    /// buffer once it holds [`WalOptions::buffer_bytes`]; the first frames of an empty
    /// buffer start the flusher's deadline. A batch that fails to build leaves nothing in
    /// the buffer.
    fn accept(
        &self,
        w: &mut Writer,
        build: &mut impl FnMut(&mut RecordBatch<'_>) -> Result<()>,
    ) -> Result<(Lsn, Lsn)> {
        let mut start = w.pending.len();
        let mut next = self.build_pending(w, build)?;
        if next == w.next_lsn {
            return Ok((w.next_lsn, Lsn(w.next_lsn.0 - 1)));
        }
        if let Some(needed) = self.needed_move(w, w.pending.len() - start) {
            // Leaving the segment writes the frames accepted before this batch: take the
            // batch out first, and build it again after the move (where it stays if the
            // optional switch to the spare did not happen).
            w.pending.truncate(start);
            self.make_move(w, needed)?;
            start = w.pending.len();
            next = self.build_pending(w, build)?;
        }
        let was_empty = start == 0;
        if was_empty {
            w.pending_at = w.offset;
        }
        let first = w.next_lsn;
        let last = Lsn(next.0 - 1);
        w.offset += (w.pending.len() - start) as u64;
        w.next_lsn = next;
        if w.pending.len() >= self.options.buffer_bytes.max(w.hand_off_at) {
            // Written by the flusher. A failure of the buffer before it (which poisoned the
            // log) refuses this batch: not acknowledged, nor counted accepted.
            self.buffer_full(w)?;
        } else if was_empty && let Some(tx) = self.wake.get() {
            // A full channel holds a wake-up or a write-back hint, either of which starts
            // the flusher's deadline.
            let _ = tx.try_send(SyncMessage::Wake);
        }
        self.accepted.store(last.0, Ordering::Release);
        Counters::add_locked(&self.counters.appends, 1);
        Counters::add_locked(&self.counters.records, next.0 - first.0);
        self.want_spare(w);
        Ok((first, last))
    }

    /// Builds a batch onto the end of the buffer of [`SyncPolicy::Buffered`]; returns the
    /// LSN after its last record. On failure the buffer is as before, and so it is when
    /// `build` panics (the panic goes on after the buffer is cut back: the frames accepted
    /// before stay whole, and the next append finds no half-built frame after them).
    fn build_pending(
        &self,
        w: &mut Writer,
        build: &mut impl FnMut(&mut RecordBatch<'_>) -> Result<()>,
    ) -> Result<Lsn> {
        let start = w.pending.len();
        let mut batch = RecordBatch {
            segment: w.segment,
            next: w.next_lsn,
            durable: Lsn(self.durable.load(Ordering::Acquire)),
            compression: self.options.compression,
            buf: &mut w.pending,
        };
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            build(&mut batch).map(|()| batch.next)
        }));
        match built {
            Ok(Ok(next)) => Ok(next),
            Ok(Err(e)) => {
                w.pending.truncate(start);
                Err(e)
            }
            Err(panic) => {
                w.pending.truncate(start);
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Writes the buffer of [`SyncPolicy::Buffered`] (a no-op when it is empty), with one
    /// system call. A failed write poisons the log: the frames were acknowledged, so their
    /// LSNs cannot be given again. Whatever part reached the file is cut back first
    /// ([`Shared::undo_failed_write`]), so that the log ends on a whole frame; if that fails
    /// too, recovery treats the part as a torn tail.
    pub(crate) fn flush_pending(&self, w: &mut Writer) -> Result<()> {
        // The buffer handed off before this one first, so that `written` covers both.
        drop(self.finish_handoff()?);
        if w.pending.is_empty() {
            return Ok(());
        }
        self.check_poisoned()?;
        let path = self.path(w.segment);
        if let Err(e) = self.crash_point(crash_points::APPEND_BEFORE_WRITE) {
            w.pending.clear();
            return Err(self.poison(e));
        }
        if let Err(e) = w.file.write_at(&w.pending, w.pending_at) {
            w.pending.clear();
            w.offset = w.pending_at;
            let cause = self.undo_failed_write(w, WalError::io("write", path, e));
            // Deliberate defect: the log goes on after losing acknowledged frames.
            #[cfg(ingestor_deliberate_bugs)]
            if crate::bugs::on("buffered-write-no-poison") {
                return Err(cause);
            }
            // Poisoned already if the cut back failed too.
            return Err(match cause {
                WalError::Poisoned { .. } => cause,
                cause => self.poison(cause),
            });
        }
        // Atomically: the flusher adds the buffers handed to it without the write lock.
        Counters::add(&self.counters.bytes_written, w.pending.len() as u64);
        w.pending.clear();
        w.hand_off_at = 0;
        self.hint_writeback(w);
        self.written.store(w.next_lsn.0 - 1, Ordering::Release);
        self.crash_point(crash_points::APPEND_AFTER_WRITE).map_err(|e| self.poison(e))
    }

    /// Under the policies that sync only at rotation and on demand ([`SyncPolicy::Os`],
    /// [`SyncPolicy::Buffered`]), asks the operating system to start writing back each
    /// [`WRITEBACK_CHUNK`] of whole pages the active segment has taken (pages below the one
    /// the next frame goes into, never written again), so that the sync of the segment when
    /// a rotation ends it (its close, see [`Shared::finish_close`]) finds little left to
    /// write.
    /// Durability is unchanged: nothing counts as durable before a sync. A background thread
    /// gives the hint (the flusher under `Buffered`, a thread of its own under `Os`):
    /// submitting the writes costs the thread that asks, a tenth of the appending thread's
    /// time in batches of 1,000 small records under `Os` (`perf record` of `wal_appends`).
    pub(crate) fn hint_writeback(&self, w: &mut Writer) {
        if !self.options.writeback_ahead
            || !matches!(self.options.sync_policy, SyncPolicy::Os | SyncPolicy::Buffered(_))
        {
            return;
        }
        let written = w.offset - w.pending.len() as u64;
        let whole_pages = written & !(PAGE - 1);
        if whole_pages >= w.hinted + WRITEBACK_CHUNK {
            let (from, len) = (w.hinted, whole_pages - w.hinted);
            let hint = SyncMessage::Writeback(Arc::clone(&w.file), from, len);
            match self.wake.get().map(|tx| tx.try_send(hint)) {
                Some(Ok(())) => {}
                // With the thread's channel full, a later write retries.
                Some(Err(TrySendError::Full(_))) => return,
                // No thread (or it ended): the hint is given here. A hint: a failure changes
                // nothing that matters.
                None | Some(Err(TrySendError::Disconnected(_))) => {
                    let _ = w.file.start_writeback(from, len);
                }
            }
            w.hinted = whole_pages;
        }
    }

    /// An empty batch of records for the active segment, writing into `buf`.
    fn batch<'b>(&self, w: &Writer, buf: &'b mut Vec<u8>) -> RecordBatch<'b> {
        RecordBatch {
            segment: w.segment,
            next: w.next_lsn,
            durable: Lsn(self.durable.load(Ordering::Acquire)),
            compression: self.options.compression,
            buf,
        }
    }

    /// Moves onto the ready spare before the active segment is full, giving back the
    /// active segment's unused space first (it is never appended to again; a power cut
    /// before the sync leaves it either length, both valid). Returns whether it moved: the
    /// switch is optional, so a spare that could not be activated (and was removed again)
    /// leaves the append in the active segment, which then grows past its cut length.
    fn switch_early(&self, w: &mut Writer) -> Result<bool> {
        // Nothing written below the cut while it is made.
        drop(self.finish_handoff()?);
        let path = self.path(w.segment);
        w.file.set_len(w.offset).map_err(|e| WalError::io("truncate", &path, e))?;
        match self.rotate(w, true) {
            Ok(()) => Ok(true),
            Err(e) if self.poisoned.get().is_some() => Err(e),
            Err(_) => Ok(false),
        }
    }

    /// Asks for a spare segment once the active one has taken enough records to suggest the
    /// log grows (see [`Shared::spare_trigger`]); once per segment, so that appends past the
    /// trigger take no lock for it.
    #[inline]
    fn want_spare(&self, w: &mut Writer) {
        if w.spare_asked
            || self.options.segment_fill == SegmentFill::Allocate
            || w.offset < self.spare_trigger(w)
        {
            return;
        }
        w.spare_asked = true;
        self.ask_for_spare();
    }

    /// [`Shared::want_spare`] past its quick checks: asks for a spare unless one is ready,
    /// wanted or failed already.
    #[cold]
    fn ask_for_spare(&self) {
        let fill = self.options.segment_fill;
        let mut spare = lock(&self.spare);
        if spare.ready.is_some()
            || spare.wanted
            || spare.failed
            || spare.stop.load(Ordering::Acquire)
        {
            return;
        }
        if !self.room_for_spare() {
            spare.failed = true;
            Counters::add(&self.counters.spare_failures, 1);
            return;
        }
        if fill.prepared_inline() {
            // Deterministic: here, under the write lock. A failure (no space) leaves no spare
            // and none is asked for before the next rotation, which falls back to fallocate.
            let len = self.options.segment_bytes_max;
            let stop = Arc::clone(&spare.stop);
            let zeros = fill.zero_fills();
            spare.ready = prepare_spare(&*self.fs, &self.dir, &spare.name, len, zeros, &stop).ok();
            spare.failed = spare.ready.is_none();
            Counters::add(&self.counters.spare_failures, u64::from(spare.failed));
        } else {
            spare.wanted = true;
            self.spare_wanted.notify_all();
        }
    }

    /// Whether the log's file system has room for a spare and as much again (a file system
    /// that cannot tell gets its spare).
    fn room_for_spare(&self) -> bool {
        match self.fs.space(&self.dir) {
            Ok(Some((available, _total))) => available / 2 >= self.options.segment_bytes_max,
            _ => true,
        }
    }

    /// How far into the active segment a spare is asked for. Under
    /// [`SegmentFill::AllocateAhead`] at once, on the segment's first append: reserving
    /// space costs no writes, and the whole segment's time is left for it (asked for at half
    /// a segment, it was not ready at one rotation in ten while snapshots were written
    /// beside, and that rotation's own `fallocate` then took up to 740 ms). For zero-filled
    /// spares, half the segment, except 1 MiB (or half, if smaller) into a segment whose
    /// space came from fallocate (which moves onto the spare as soon as it is ready).
    fn spare_trigger(&self, w: &Writer) -> u64 {
        let half = self.options.segment_bytes_max / 2;
        match self.options.segment_fill {
            fill if fill.allocates_ahead() => 0,
            _ if w.zeroed => half,
            _ => half.min(1 << 20),
        }
    }

    /// The preparer thread of [`SegmentFill::Zeros`] and [`SegmentFill::AllocateAhead`]:
    /// prepares a spare whenever one is wanted, until the log closes.
    pub(crate) fn prepare_spares(&self) {
        loop {
            let (name, stop) = {
                let mut spare = lock(&self.spare);
                while !spare.wanted && !spare.stop.load(Ordering::Acquire) {
                    spare = self
                        .spare_wanted
                        .wait(spare)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if spare.stop.load(Ordering::Acquire) {
                    return;
                }
                (spare.name.clone(), Arc::clone(&spare.stop))
            };
            let len = self.options.segment_bytes_max;
            let zeros = self.options.segment_fill.zero_fills();
            let made = prepare_spare(&*self.fs, &self.dir, &name, len, zeros, &stop);
            let mut spare = lock(&self.spare);
            spare.wanted = false;
            if spare.stop.load(Ordering::Acquire) {
                if made.is_ok() {
                    let _ = self.fs.remove_file(&self.dir.join(&name));
                }
                return;
            }
            // A failure (no space, an I/O error) leaves no spare, and none is asked for
            // before the next rotation (which falls back to fallocate).
            spare.failed = made.is_err();
            Counters::add(&self.counters.spare_failures, u64::from(spare.failed));
            spare.ready = made.ok();
        }
    }

    /// Stops the preparer and removes a spare that was not used (best effort: a spare left
    /// behind is removed at the next open).
    pub(crate) fn drop_spare(&self) {
        let mut spare = lock(&self.spare);
        spare.stop.store(true, Ordering::Release);
        self.spare_wanted.notify_all();
        if spare.ready.take().is_some() {
            let _ = self.fs.remove_file(&self.dir.join(&spare.name));
        }
    }
}
