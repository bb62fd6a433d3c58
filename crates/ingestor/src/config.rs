//! The configuration of an [`crate::Ingestor`], with every default documented.

use std::sync::Arc;
use std::time::Duration;

use ingestor_codec::Compression;
use ingestor_memstore::MemstoreConfig;
use ingestor_snapshot::SnapshotOptions;
use ingestor_wal::{RecoveryMode, SegmentFill, SyncPolicy, WalListener};

use crate::error::Error;

/// Whether [`crate::Ingestor::close`] writes a final snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FinalSnapshot {
    /// Write one on a clean close, so the next open replays almost nothing. Default.
    #[default]
    OnClose,
    /// Never write one on close.
    Never,
}

/// How much of the data directory's file system must stay free. Below the floor, writes
/// are refused with [`Error::DiskFull`] (the server answers 503) before the disk fills up,
/// and accepted again by themselves once space is back. Checked at most every 250 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FreeSpaceFloor {
    /// 1 GiB or 5% of the file system, whichever is less. Default.
    #[default]
    Auto,
    /// This many bytes.
    Bytes(u64),
    /// No floor: writes go on until the disk is full (then the log is poisoned).
    Off,
}

impl FreeSpaceFloor {
    /// The floor in bytes on a file system of `total` bytes (0 for [`FreeSpaceFloor::Off`]).
    #[must_use]
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            FreeSpaceFloor::Auto => (1u64 << 30).min(total / 20),
            FreeSpaceFloor::Bytes(b) => b,
            FreeSpaceFloor::Off => 0,
        }
    }
}

/// Configuration of an [`crate::Ingestor`]. Every field ends its doc with its default;
/// [`crate::Ingestor::open`] validates the whole configuration and names a bad field.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Config {
    /// When the log is synced, and so what an acknowledgement means. `Always`: every
    /// acknowledged batch is durable (concurrent ingesters share syncs). `Batch(window)`:
    /// acknowledged once written to the OS, durable within the window plus up to two sync
    /// durations. `Os`: durable at
    /// rotation, snapshot, `sync` and close. `Buffered(deadline)`, opt-in: acknowledged
    /// *accepted* while in the log's buffer in this process, written when the buffer fills
    /// ([`Config::wal_buffer_bytes`]) or the deadline passes; a `kill -9` loses up to one
    /// deadline of accepted batches. Default: `Batch(5 ms)`.
    pub sync_policy: SyncPolicy,
    /// What opening does with a damaged log. Default: `TolerateTornTail`.
    pub recovery_mode: RecoveryMode,
    /// Size of a log segment. Default: 128 MiB.
    pub segment_bytes_max: u64,
    /// Compression tried on each logged batch. Default: none.
    pub wal_compression: Compression,
    /// How new log segments get their space: zero-filled spares written ahead by a
    /// background thread (so that syncs into them are data-only), or `fallocate` (ahead of
    /// need by a background thread, or at rotation). Default: [`SegmentFill::Auto`]
    /// (zero-filled under `Always` and `Batch`, `fallocate` ahead under `Os` and
    /// `Buffered`).
    pub segment_fill: SegmentFill,
    /// Under [`SyncPolicy::Buffered`], the bytes of logged batches gathered before they are
    /// written. Between 1 KiB and 64 MiB. Default: 1 MiB.
    pub wal_buffer_bytes: usize,
    /// Under [`SyncPolicy::Buffered`], whether a full buffer is written by the log's
    /// background thread (on) or by the next thread that causes a write, a flush or a sync
    /// (off: for deterministic simulations; a segment a rotation ended is then also synced
    /// by the appending thread, not the background one). Default: on.
    pub wal_buffer_handoff: bool,
    /// A snapshot is taken automatically once the log has grown by this many bytes since the
    /// last one. Default: 128 MiB.
    pub snapshot_bytes: u64,
    /// A snapshot is also taken when this much time has passed since the last one and
    /// anything was ingested. `None` turns the timer off. Default: 1 hour.
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde::option"))]
    pub snapshot_interval: Option<Duration>,
    /// Whether close writes a final snapshot. Default: `OnClose`.
    pub final_snapshot: FinalSnapshot,
    /// Snapshot files: compression, how many to keep. Default: Zstd level 3, keep 2.
    pub snapshot: SnapshotOptions,
    /// The in-memory store: series limit, histogram bounds. Default: 10 M series,
    /// Prometheus' default buckets.
    pub memstore: MemstoreConfig,
    /// Series not updated for this long (by their timestamps, against the wall clock) are
    /// deleted, the delete logged like any update. `None`: never. Default: `None`.
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde::option"))]
    pub series_ttl: Option<Duration>,
    /// How often the background thread checks the snapshot triggers and expiry. Default: 1 s.
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))]
    pub maintenance_interval: Duration,
    /// The wall clock, in milliseconds since the Unix epoch: stamps snapshots and drives
    /// time-to-live expiry. Replace it to make runs reproducible (the crash test does).
    /// Default: the system clock.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub clock_ms: fn() -> i64,
    /// The free space to keep on the data directory's file system. Default:
    /// [`FreeSpaceFloor::Auto`] (1 GiB or 5%, whichever is less).
    pub free_space_floor: FreeSpaceFloor,
    /// Told about the log's events: recovery at open, segment rotations, syncs, segment
    /// deletions (compaction) and poisoning. Its methods run on the thread that did the work,
    /// sometimes under the log's write lock: keep them short, and never call back into the
    /// ingestor from them. Default: none.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub wal_listener: Option<Arc<dyn WalListener>>,
}

/// The system clock in milliseconds since the Unix epoch (the default [`Config::clock_ms`]).
#[must_use]
pub fn system_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sync_policy: SyncPolicy::default(),
            recovery_mode: RecoveryMode::default(),
            segment_bytes_max: 128 << 20,
            wal_compression: Compression::None,
            segment_fill: SegmentFill::default(),
            wal_buffer_bytes: 1 << 20,
            wal_buffer_handoff: true,
            snapshot_bytes: 128 << 20,
            snapshot_interval: Some(Duration::from_secs(3600)),
            final_snapshot: FinalSnapshot::default(),
            snapshot: SnapshotOptions::default(),
            memstore: MemstoreConfig::default(),
            series_ttl: None,
            maintenance_interval: Duration::from_secs(1),
            clock_ms: system_clock_ms,
            free_space_floor: FreeSpaceFloor::Auto,
            wal_listener: None,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta] $name:ident: $ty:ty),* $(,)?) => {
        $(
            #[$doc]
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = value;
                self
            }
        )*
    };
}

impl Config {
    setter! {
        /// Sets [`Config::sync_policy`].
        sync_policy: SyncPolicy,
        /// Sets [`Config::recovery_mode`].
        recovery_mode: RecoveryMode,
        /// Sets [`Config::segment_bytes_max`].
        segment_bytes_max: u64,
        /// Sets [`Config::wal_compression`].
        wal_compression: Compression,
        /// Sets [`Config::segment_fill`].
        segment_fill: SegmentFill,
        /// Sets [`Config::wal_buffer_bytes`].
        wal_buffer_bytes: usize,
        /// Sets [`Config::wal_buffer_handoff`].
        wal_buffer_handoff: bool,
        /// Sets [`Config::snapshot_bytes`].
        snapshot_bytes: u64,
        /// Sets [`Config::snapshot_interval`].
        snapshot_interval: Option<Duration>,
        /// Sets [`Config::final_snapshot`].
        final_snapshot: FinalSnapshot,
        /// Sets [`Config::snapshot`].
        snapshot: SnapshotOptions,
        /// Sets [`Config::memstore`].
        memstore: MemstoreConfig,
        /// Sets [`Config::series_ttl`].
        series_ttl: Option<Duration>,
        /// Sets [`Config::maintenance_interval`].
        maintenance_interval: Duration,
        /// Sets [`Config::clock_ms`].
        clock_ms: fn() -> i64,
        /// Sets [`Config::free_space_floor`].
        free_space_floor: FreeSpaceFloor,
    }

    /// Sets [`Config::wal_listener`]: `listener` is told about the log's events.
    #[must_use]
    pub fn wal_listener(mut self, listener: Arc<dyn WalListener>) -> Self {
        self.wal_listener = Some(listener);
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.snapshot_bytes < 4096 {
            return bad("snapshot_bytes", format!("{} is below 4 KiB", self.snapshot_bytes));
        }
        if self.snapshot_interval.is_some_and(|d| d.is_zero()) {
            return bad("snapshot_interval", "zero; use None to turn the timer off".into());
        }
        if self.series_ttl.is_some_and(|d| d.is_zero()) {
            return bad("series_ttl", "zero; use None to keep idle series".into());
        }
        if self.maintenance_interval.is_zero()
            || self.maintenance_interval > Duration::from_secs(3600)
        {
            return bad(
                "maintenance_interval",
                format!("{:?} is outside (0, 1 h]", self.maintenance_interval),
            );
        }
        self.wal_options().validate()?;
        self.snapshot.validate()?;
        self.memstore.validate()?;
        Ok(())
    }

    /// The log's options. The log syncs on its own under `Batch`; under `Always` the ingestor
    /// waits for durability after applying, outside its writer lock, so that concurrent
    /// ingesters share syncs: the log itself then runs with `Os`.
    pub(crate) fn wal_options(&self) -> ingestor_wal::WalOptions {
        let policy = match self.sync_policy {
            SyncPolicy::Always => SyncPolicy::Os,
            other => other,
        };
        let options = ingestor_wal::WalOptions::default()
            .sync_policy(policy)
            .recovery_mode(self.recovery_mode)
            .segment_bytes_max(self.segment_bytes_max)
            .compression(self.wal_compression)
            // Resolved against this policy, not the log's (`Always` runs the log under `Os`).
            .segment_fill(self.segment_fill.resolve(self.sync_policy))
            .buffer_bytes(self.wal_buffer_bytes)
            .buffer_handoff(self.wal_buffer_handoff);
        match &self.wal_listener {
            Some(listener) => options.listener(Arc::clone(listener)),
            None => options,
        }
    }
}
