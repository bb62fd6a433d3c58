//! Configuration of a log: sync policy, recovery mode, segment size.

use std::sync::Arc;
use std::time::Duration;

use ingestor_codec::Compression;

use crate::error::WalError;
use crate::stats::WalListener;

/// When appended records are synced (made durable), and what an append waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SyncPolicy {
    /// Every append returns after an fdatasync that covers it, acknowledged *durable*.
    /// Appenders waiting at the same time share one sync (group commit).
    Always,
    /// Appends return *written*; a background thread starts a sync one window after a write,
    /// so a write is durable within the window plus up to two sync durations.
    /// [`crate::Wal::wait_durable`] waits for a given LSN.
    Batch(#[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))] Duration),
    /// Appends return *written*; syncs happen only at segment rotation, on
    /// [`crate::Wal::sync`] and on close.
    Os,
    /// Opt-in, never a default. Appends return *accepted*: their frames gather in a buffer
    /// in the process, written with one system call when it holds
    /// [`WalOptions::buffer_bytes`] or when the deadline given here has passed since the
    /// first of them was accepted, whichever comes first, both by a background thread (to
    /// which the append that fills the buffer hands it, going on into an empty one). Syncs happen as under [`SyncPolicy::Os`]. [`crate::Wal::wait_written`],
    /// [`crate::Wal::wait_durable`], [`crate::Wal::sync`] and close write the buffer first.
    ///
    /// What it costs: a process crash (`kill -9`) loses the records accepted in the last
    /// deadline, and a power cut everything not synced; a failed write of the buffer poisons
    /// the log (the buffered records are lost, and every later call says so). What is lost
    /// is always a suffix: the log never holds a record without every one before it.
    Buffered(
        #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))] Duration,
    ),
}

impl SyncPolicy {
    /// [`SyncPolicy::Buffered`] with its usual deadline, 200 ms.
    pub const BUFFERED: SyncPolicy = SyncPolicy::Buffered(Duration::from_millis(200));
}

impl Default for SyncPolicy {
    /// `Batch(5 ms)`.
    fn default() -> Self {
        SyncPolicy::Batch(Duration::from_millis(5))
    }
}

/// What recovery does with damage it finds (see `docs/format.md`, "Recovery").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum RecoveryMode {
    /// A torn tail (an incomplete or invalid frame at the end of the last segment with
    /// nothing valid after it) is truncated and reported; corruption in the middle of the log
    /// makes open fail, naming the file and offset. Default.
    #[default]
    TolerateTornTail,
    /// A torn tail is truncated; at corruption in the middle, everything from the bad frame
    /// on is dropped (copied to `quarantine/` first) and reported: the log is cut back to the
    /// last point in time before the damage.
    PointInTime,
    /// A torn tail is truncated; bad frames in the middle are skipped (copied to
    /// `quarantine/`), every valid frame after them is kept, and the lost LSN ranges are
    /// reported. The damaged bytes stay in the segment: every later open sees and reports
    /// them again, and a default-mode open refuses the log.
    SkipCorrupted,
    /// Any torn tail or corruption makes open fail.
    Strict,
}

/// How a new segment gets its space.
///
/// `fallocate(2)` reserves blocks quickly, but on ext4 and XFS as *unwritten* extents: every
/// `fdatasync` into fresh space then also commits an extent conversion (a journal write).
/// A segment whose bytes were written (zeros) and synced before use takes data-only syncs,
/// which is what PostgreSQL does with its WAL segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SegmentFill {
    /// [`SegmentFill::Zeros`] under the policies that sync often ([`SyncPolicy::Always`],
    /// [`SyncPolicy::Batch`]), [`SegmentFill::AllocateAhead`] under those that sync at
    /// rotation and on demand ([`SyncPolicy::Os`], [`SyncPolicy::Buffered`]): there a
    /// zero-filled spare only writes every segment twice, and small writes into a zero-filled
    /// file whose pages left the cache read them back first. Default.
    #[default]
    Auto,
    /// Zero-filled segments: once the active segment has taken 1 MiB of records (or half its
    /// size, if smaller), a background thread writes a spare segment file full of zeros and
    /// syncs it; the next rotation uses it (a log whose active segment was not zero-filled
    /// moves onto the spare at once). Until a spare is ready, rotation falls back to
    /// `fallocate`.
    Zeros,
    /// As [`SegmentFill::Zeros`], but the spare is written by the appending thread when it
    /// is wanted, under the write lock: deterministic, for simulated disks (the crash test);
    /// it stalls that append for as long as writing a segment of zeros takes.
    ZerosInline,
    /// Space reserved with `fallocate` only, at rotation, by the appending thread.
    Allocate,
    /// Space reserved with `fallocate` ahead of need: at the first append into a segment, a
    /// background thread creates a spare file, reserves a segment's length in it with
    /// `fallocate` and syncs it; the next rotation renames it to the new segment, as it does
    /// a zero-filled spare, instead of creating and allocating a file on the appending
    /// thread (an `fallocate` can wait on the file system: 171 ms on ext4 while compaction
    /// deleted segments, docs/benchmarks.md). Syncs into it still convert unwritten extents,
    /// as under [`SegmentFill::Allocate`]. Until a spare is ready, rotation falls back to
    /// `fallocate`.
    AllocateAhead,
    /// As [`SegmentFill::AllocateAhead`], but the spare is prepared by the appending thread
    /// when it is wanted (at the first append into a segment), under the write lock:
    /// deterministic, for simulated disks (the crash test).
    AllocateAheadInline,
}

impl SegmentFill {
    /// What this fill is under `policy`: [`SegmentFill::Auto`] made concrete, any other
    /// unchanged.
    #[must_use]
    pub fn resolve(self, policy: SyncPolicy) -> SegmentFill {
        match (self, policy) {
            (SegmentFill::Auto, SyncPolicy::Always | SyncPolicy::Batch(_)) => SegmentFill::Zeros,
            (SegmentFill::Auto, _) => SegmentFill::AllocateAhead,
            (fill, _) => fill,
        }
    }

    /// Whether this fill prepares spares full of zeros (on a background thread or inline).
    pub(crate) fn zero_fills(self) -> bool {
        matches!(self, SegmentFill::Zeros | SegmentFill::ZerosInline)
    }

    /// Whether a background thread prepares this fill's spares.
    pub(crate) fn prepared_ahead(self) -> bool {
        matches!(self, SegmentFill::Zeros | SegmentFill::AllocateAhead)
    }

    /// Whether the appending thread prepares this fill's spares itself.
    pub(crate) fn prepared_inline(self) -> bool {
        matches!(self, SegmentFill::ZerosInline | SegmentFill::AllocateAheadInline)
    }

    /// Whether this fill's spares are reserved with `fallocate`.
    pub(crate) fn allocates_ahead(self) -> bool {
        matches!(self, SegmentFill::AllocateAhead | SegmentFill::AllocateAheadInline)
    }
}

/// Options of [`crate::Wal::open`]. Every field documents its default.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct WalOptions {
    /// When records are synced. Default: `Batch(5 ms)`.
    pub sync_policy: SyncPolicy,
    /// What recovery does with damage. Default: `TolerateTornTail`.
    pub recovery_mode: RecoveryMode,
    /// The size at which a segment is closed and the next one started; segments are
    /// preallocated to this size. Between 4 KiB and 1 TiB. Default: 128 MiB.
    pub segment_bytes_max: u64,
    /// Compression tried on each record's payload; kept only when it makes the frame
    /// smaller. Default: none.
    pub compression: Compression,
    /// How new segments get their space. Default: [`SegmentFill::Auto`].
    pub segment_fill: SegmentFill,
    /// Under [`SyncPolicy::Buffered`], how many bytes of frames the buffer holds before it is
    /// handed to the background thread to write (while that thread still writes the buffer
    /// before it, the next one may grow to four times this before an append waits); ignored
    /// otherwise. Between 1 KiB and 64 MiB. Default: 1 MiB.
    pub buffer_bytes: usize,
    /// Under [`SyncPolicy::Buffered`], whether a full buffer is handed to the background
    /// thread to write (on). Off, it waits for the next write the log's callers cause (the
    /// next full buffer, a flush, a sync, a rotation) or the deadline, and the thread that
    /// causes it writes it; and the close of a segment a rotation ended (its sync, see
    /// `docs/durability.md`) is left to the appending thread, after the write of the batch
    /// that rotated: the background thread writes and syncs nothing before the deadline, as
    /// a deterministic simulation needs. Default: on.
    pub buffer_handoff: bool,
    /// Under [`SyncPolicy::Os`] and [`SyncPolicy::Buffered`], whether the log asks the
    /// operating system to start writing back each 8 MiB of the active segment as it fills
    /// (`POSIX_FADV_DONTNEED` over whole pages, which also drops those already clean from the
    /// page cache), so that the sync of a segment a rotation ended finds little left to
    /// write. A background thread gives the hints (under `Os`, a thread of its own,
    /// `ingestor-wal-writeback`, started when segments are larger than 8 MiB, which also
    /// runs the close of every segment a rotation ends; without it the appending thread
    /// closes them, see `docs/durability.md`). Turn it off for a log read back soon after
    /// it is synced (the forwarder's outbox). Default: on.
    pub writeback_ahead: bool,
    /// Told about recovery, rotations, syncs, deletions and poisoning (see [`WalListener`]);
    /// [`crate::Wal::open_with_listener`] overrides it. Default: none.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub listener: Option<Arc<dyn WalListener>>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            sync_policy: SyncPolicy::default(),
            recovery_mode: RecoveryMode::default(),
            segment_bytes_max: 128 << 20,
            compression: Compression::None,
            segment_fill: SegmentFill::default(),
            buffer_bytes: 1 << 20,
            buffer_handoff: true,
            writeback_ahead: true,
            listener: None,
        }
    }
}

impl WalOptions {
    /// Sets [`WalOptions::sync_policy`].
    #[must_use]
    pub fn sync_policy(mut self, policy: SyncPolicy) -> Self {
        self.sync_policy = policy;
        self
    }

    /// Sets [`WalOptions::recovery_mode`].
    #[must_use]
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }

    /// Sets [`WalOptions::segment_bytes_max`].
    #[must_use]
    pub fn segment_bytes_max(mut self, bytes: u64) -> Self {
        self.segment_bytes_max = bytes;
        self
    }

    /// Sets [`WalOptions::compression`].
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets [`WalOptions::segment_fill`].
    #[must_use]
    pub fn segment_fill(mut self, fill: SegmentFill) -> Self {
        self.segment_fill = fill;
        self
    }

    /// Sets [`WalOptions::buffer_bytes`].
    #[must_use]
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Sets [`WalOptions::buffer_handoff`].
    #[must_use]
    pub fn buffer_handoff(mut self, on: bool) -> Self {
        self.buffer_handoff = on;
        self
    }

    /// Sets [`WalOptions::writeback_ahead`].
    #[must_use]
    pub fn writeback_ahead(mut self, on: bool) -> Self {
        self.writeback_ahead = on;
        self
    }

    /// Sets [`WalOptions::listener`].
    #[must_use]
    pub fn listener(mut self, listener: Arc<dyn WalListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`WalError::InvalidOptions`] naming the first bad field.
    pub fn validate(&self) -> Result<(), WalError> {
        const MIN: u64 = 4 << 10;
        const MAX: u64 = 1 << 40;
        if !(MIN..=MAX).contains(&self.segment_bytes_max) {
            return Err(WalError::InvalidOptions {
                field: "segment_bytes_max",
                reason: format!(
                    "{} is outside 4 KiB ..= 1 TiB ({MIN} ..= {MAX} bytes)",
                    self.segment_bytes_max
                ),
            });
        }
        if let SyncPolicy::Batch(window) = self.sync_policy
            && (window.is_zero() || window > Duration::from_secs(60))
        {
            return Err(WalError::InvalidOptions {
                field: "sync_policy",
                reason: format!("Batch window {window:?} is outside (0, 60 s]"),
            });
        }
        if let SyncPolicy::Buffered(deadline) = self.sync_policy
            && (deadline.is_zero() || deadline > Duration::from_secs(60))
        {
            return Err(WalError::InvalidOptions {
                field: "sync_policy",
                reason: format!("Buffered deadline {deadline:?} is outside (0, 60 s]"),
            });
        }
        if !(1 << 10..=64 << 20).contains(&self.buffer_bytes) {
            return Err(WalError::InvalidOptions {
                field: "buffer_bytes",
                reason: format!(
                    "{} is outside 1 KiB ..= 64 MiB ({} ..= {} bytes)",
                    self.buffer_bytes,
                    1 << 10,
                    64 << 20
                ),
            });
        }
        if let Compression::Zstd { level } = self.compression
            && !(1..=22).contains(&level)
        {
            return Err(WalError::InvalidOptions {
                field: "compression",
                reason: format!("zstd level {level} is outside 1..=22"),
            });
        }
        Ok(())
    }
}
