//! Under [`SyncPolicy::Buffered`](crate::SyncPolicy::Buffered): a full buffer is handed to
//! the flusher thread to write, so that the appending thread goes on filling the next one
//! instead of waiting for the kernel to copy a megabyte (a quarter of a small append's
//! time, `perf record` of `wal_appends buffered 1`). One buffer is in flight at most:
//! whoever needs the file to hold everything accepted (the next hand-off, a flush, a sync, a
//! rotation) first waits for it, or writes it itself if the flusher has not taken it yet.

use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use ingestor_codec::Lsn;
use ingestor_fs::FsFile;

use crate::error::{Result, WalError};
use crate::segment::SegmentId;
use crate::stats::Counters;
use crate::sync::SyncMessage;
use crate::wal::crash_points;
use crate::writer::{Shared, Writer, lock};

/// The buffer in flight, and a cleared one to take the place of the next one handed off.
#[derive(Default)]
pub(crate) struct Handoff {
    queued: Option<Handed>,
    /// A thread is writing a buffer taken from `queued`.
    writing: bool,
    empty: Vec<u8>,
}

/// Held while a thread writes a handed-off buffer: when it ends, however it ends, the
/// waiters hear that the write is over. If it ends in a panic (a file system's or a
/// listener's), the log is poisoned first: the buffer may be half written, and nothing may
/// be written after it.
struct Writing<'a>(&'a Shared);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        if std::thread::panicking() {
            // Without the listener (whose panic may be the one under way).
            let cause = std::io::Error::other("the write of a full buffer panicked");
            let _ = shared.poisoned.set(Arc::new(WalError::io("write", "the log's buffer", cause)));
            shared.wake_all_waiters();
        }
        lock(&shared.handoff).writing = false;
        shared.handed.notify_all();
    }
}

/// A full buffer: its frames, where they go, and the last LSN among them.
struct Handed {
    file: Arc<dyn FsFile>,
    segment: SegmentId,
    bytes: Vec<u8>,
    at: u64,
    last: Lsn,
}

/// How far the buffer may grow, in buffers, while the flusher is still writing the one
/// before it.
const GROW: usize = 4;

impl Shared {
    /// The buffer holds [`crate::WalOptions::buffer_bytes`] (or more): hands it to the
    /// flusher, unless the flusher is still writing the buffer before it. Then the appends
    /// go on into this one (trying again every quarter buffer), and only once it holds
    /// [`GROW`] buffers does the append wait: a flusher thread slow to be scheduled (a busy
    /// machine) does not hold up every append.
    ///
    /// # Errors
    /// As [`Shared::hand_off`].
    pub(crate) fn buffer_full(&self, w: &mut Writer) -> Result<()> {
        let buffer = self.options.buffer_bytes;
        if lock(&self.handoff).writing && w.pending.len() < GROW * buffer {
            w.hand_off_at = w.pending.len() + (buffer / 4).max(1);
            return Ok(());
        }
        self.hand_off(w)
    }

    /// Hands the buffer (full) to the flusher, once the one before it is written, and
    /// leaves an empty buffer in its place.
    ///
    /// # Errors
    /// The failure of the buffer before it (which poisoned the log).
    pub(crate) fn hand_off(&self, w: &mut Writer) -> Result<()> {
        let mut h = self.finish_handoff()?;
        self.check_poisoned()?;
        w.hand_off_at = 0;
        let empty = std::mem::take(&mut h.empty);
        let bytes = std::mem::replace(&mut w.pending, empty);
        h.queued = Some(Handed {
            file: Arc::clone(&w.file),
            segment: w.segment,
            bytes,
            at: w.pending_at,
            last: Lsn(w.next_lsn.0 - 1),
        });
        drop(h);
        let sent = match self.wake.get() {
            // Left for the next write the callers cause, or the deadline: a wake-up starts it
            // (this append may have filled an empty buffer, and sent none).
            Some(tx) if !self.options.buffer_handoff => {
                let _ = tx.try_send(SyncMessage::Wake);
                Ok(())
            }
            // A full channel holds messages the flusher is about to handle: it writes a
            // handed-off buffer after each message it takes.
            Some(tx) => {
                let _ = tx.try_send(SyncMessage::Write);
                Ok(())
            }
            None => self.finish_handoff().map(drop),
        };
        // After the write in the flusher's queue (a hint about pages not written yet would
        // be wasted, not wrong).
        self.hint_writeback(w);
        sent
    }

    /// Returns once no handed-off buffer is waiting or being written: writes a waiting one
    /// itself, or waits for the thread writing it. The guard it returns keeps it so.
    ///
    /// # Errors
    /// The failure of the write it made itself (which poisoned the log). A failure of
    /// another thread's write shows as the log's poisoning.
    pub(crate) fn finish_handoff(&self) -> Result<MutexGuard<'_, Handoff>> {
        let mut h = lock(&self.handoff);
        // Deliberate defect: a flush, sync or rotation goes on without the handed-off buffer
        // (written later by the flusher if it took it, else dropped by the next hand-off).
        #[cfg(ingestor_deliberate_bugs)]
        if crate::bugs::on("handoff-no-wait") {
            return Ok(h);
        }
        loop {
            if let Some(handed) = h.queued.take() {
                h.writing = true;
                drop(h);
                let writing = Writing(self);
                let written = self.write_handed(&handed);
                let mut bytes = handed.bytes;
                bytes.clear();
                h = lock(&self.handoff);
                h.empty = bytes;
                drop(h);
                drop(writing);
                written?;
                h = lock(&self.handoff);
                continue;
            }
            if !h.writing {
                return Ok(h);
            }
            h = self.handed.wait(h).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Writes a handed-off buffer; a failure poisons the log (its frames were acknowledged
    /// as accepted), after cutting away whatever part of it reached the file.
    fn write_handed(&self, handed: &Handed) -> Result<()> {
        self.check_poisoned()?;
        if let Err(e) = self.crash_point(crash_points::APPEND_BEFORE_WRITE) {
            return Err(self.poison(e));
        }
        if let Err(e) = handed.file.write_at(&handed.bytes, handed.at) {
            let cause = WalError::io("write", self.path(handed.segment), e);
            let cause = self.cut_back(&*handed.file, handed.at, cause);
            return Err(match cause {
                WalError::Poisoned { .. } => cause,
                cause => self.poison(cause),
            });
        }
        Counters::add(&self.counters.bytes_written, handed.bytes.len() as u64);
        self.written.fetch_max(handed.last.0, Ordering::AcqRel);
        self.crash_point(crash_points::APPEND_AFTER_WRITE).map_err(|e| self.poison(e))
    }
}
