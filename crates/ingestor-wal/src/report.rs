//! What recovery found and did, for people and for programs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use ingestor_codec::Lsn;

use crate::options::RecoveryMode;
use crate::segment::SegmentId;

/// Bytes cut from the end of the log: a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Truncation {
    /// The segment.
    pub segment: SegmentId,
    /// Where the cut starts (bytes before it are kept).
    pub offset: u64,
    /// How many non-zero bytes were cut.
    pub bytes: u64,
    /// The first LSN that was not recovered from this point on.
    pub from_lsn: Lsn,
    /// Why the bytes at `offset` were not a valid frame.
    pub cause: String,
    /// Where a copy of the cut bytes was put, if there were any.
    pub quarantined: Option<PathBuf>,
    /// Whether the whole segment file was removed (a segment whose header never became
    /// valid: it holds no acknowledged record).
    pub removed_file: bool,
}

/// What a salvage mode did about corruption in the middle of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum CorruptionAction {
    /// The damaged bytes were skipped; valid frames after them were kept.
    Skipped,
    /// Everything from the damage on was dropped.
    DroppedFromHere,
}

/// Corruption in the middle of the log, found and salvaged by
/// [`RecoveryMode::PointInTime`] or [`RecoveryMode::SkipCorrupted`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Corruption {
    /// The segment.
    pub segment: SegmentId,
    /// The offset of the damage.
    pub offset: u64,
    /// The LSNs lost, first and last, when known.
    pub lost: Option<(Lsn, Lsn)>,
    /// What is wrong there.
    pub cause: String,
    /// What was done about it.
    pub action: CorruptionAction,
    /// Where a copy of the damaged bytes was put.
    pub quarantined: Vec<PathBuf>,
}

/// What [`crate::Wal::open`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RecoveryReport {
    /// The recovery mode applied.
    pub mode: RecoveryMode,
    /// Segment files read.
    pub segments_scanned: u64,
    /// Valid records found.
    pub records: u64,
    /// Bytes of valid frames found.
    pub bytes: u64,
    /// The first LSN in the log, if it holds any record.
    pub first_lsn: Option<Lsn>,
    /// The last LSN in the log ([`Lsn::ZERO`] if it holds none).
    pub last_lsn: Lsn,
    /// Records handed to the replay callback.
    pub replayed: u64,
    /// Torn tails cut.
    pub truncations: Vec<Truncation>,
    /// Corruption salvaged in the middle of the log.
    pub corruptions: Vec<Corruption>,
    /// Segment files removed (by [`RecoveryMode::PointInTime`], or torn new segments).
    pub removed_segments: Vec<SegmentId>,
    /// The segment created because the log held none.
    pub created_segment: Option<SegmentId>,
    /// How long recovery took.
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))]
    pub duration: Duration,
}

impl RecoveryReport {
    pub(crate) fn new(mode: RecoveryMode) -> Self {
        RecoveryReport {
            mode,
            segments_scanned: 0,
            records: 0,
            bytes: 0,
            first_lsn: None,
            last_lsn: Lsn::ZERO,
            replayed: 0,
            truncations: Vec::new(),
            corruptions: Vec::new(),
            removed_segments: Vec::new(),
            created_segment: None,
            duration: Duration::ZERO,
        }
    }

    /// Whether recovery found the log intact: nothing truncated, nothing corrupt.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.truncations.is_empty() && self.corruptions.is_empty()
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into())
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "recovery ({:?}): {} segments scanned in {:.1?}",
            self.mode, self.segments_scanned, self.duration
        )?;
        match self.first_lsn {
            Some(first) => writeln!(
                f,
                "  {} records, {} bytes, LSNs {first}..={}; {} replayed",
                self.records, self.bytes, self.last_lsn, self.replayed
            )?,
            None => writeln!(f, "  empty log")?,
        }
        if let Some(id) = self.created_segment {
            writeln!(f, "  created segment {id}")?;
        }
        for t in &self.truncations {
            let what = if t.removed_file { "removed" } else { "truncated" };
            write!(
                f,
                "  torn tail {what}: {} at byte {}, {} bytes, from LSN {} ({})",
                t.segment, t.offset, t.bytes, t.from_lsn, t.cause
            )?;
            match &t.quarantined {
                Some(q) => writeln!(f, "; copy in quarantine/{}", file_name(q))?,
                None => writeln!(f)?,
            }
        }
        for c in &self.corruptions {
            let action = match c.action {
                CorruptionAction::Skipped => "skipped",
                CorruptionAction::DroppedFromHere => "dropped from here on",
            };
            write!(f, "  corruption {action}: {} at byte {} ({})", c.segment, c.offset, c.cause)?;
            match c.lost {
                Some((a, b)) => write!(f, "; LSNs {a}..={b} lost")?,
                None => write!(f, "; lost LSNs unknown")?,
            }
            let names: Vec<String> = c.quarantined.iter().map(|q| file_name(q)).collect();
            if names.is_empty() {
                writeln!(f)?;
            } else {
                writeln!(f, "; copies in quarantine/: {}", names.join(", "))?;
            }
        }
        for id in &self.removed_segments {
            writeln!(f, "  removed segment {id}")?;
        }
        if self.is_clean() {
            writeln!(f, "  clean")?;
        }
        Ok(())
    }
}
