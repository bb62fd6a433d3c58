//! The public types the ingestor hands out: handles, acknowledgements, reports, counters.

use std::path::PathBuf;
use std::time::Duration;

use ingestor_codec::Lsn;
use ingestor_memstore::SeriesRef;
use ingestor_snapshot::{RejectedSnapshot, SnapshotInfo};
use ingestor_wal::{AckLevel, RecoveryReport, WalStats};

/// A resolved series: ingest by handle to skip hashing the label set per point. A handle
/// stays valid until the series is deleted (then the key must be resolved again) and does
/// not survive a restart.
///
/// It wraps the memstore's handle ([`SeriesRef`]); it is not the log's segment-local series
/// id, which the ingestor assigns when it writes the series' definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesHandle(pub(super) SeriesRef);

/// The acknowledgement of an ingested batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReplayProgress {
    /// The LSN just replayed.
    pub lsn: Lsn,
    /// Batches replayed so far.
    pub records: u64,
    /// Points replayed so far.
    pub points: u64,
}

/// What [`Ingestor::open`](super::Ingestor::open) found and did.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
    /// Points skipped under
    /// [`RecoveryMode::SkipCorrupted`](ingestor_wal::RecoveryMode::SkipCorrupted) because
    /// corruption took their series definition or an earlier point their batch depended on.
    pub skipped_points: u64,
    /// Where the log was started over, when it ended before the snapshot loaded (after
    /// recovery cut a damaged tail the snapshot covers).
    pub log_restarted_at: Option<Lsn>,
    /// How long opening took.
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))]
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
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))]
    pub last_snapshot_duration: Duration,
    /// Series deleted for being idle longer than the time-to-live.
    pub expired_series: u64,
    /// How long opening (load and replay) took.
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))]
    pub open_duration: Duration,
    /// The log's counters.
    pub wal: WalStats,
    /// The last error of the background thread, if any.
    pub background_error: Option<String>,
}
