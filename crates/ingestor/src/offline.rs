//! Tools over a data directory that no ingestor has open: verify it, look inside its log and
//! snapshots, repair it deliberately. Each takes the directory's lock, so a directory that a
//! running ingestor holds is refused with [`Error::Locked`].
//!
//! ```
//! use ingestor::{Config, Ingestor, Op, SeriesKey, StdFs, Timestamp, Update, offline};
//!
//! let dir = tempfile::tempdir()?;
//! let (db, _) = Ingestor::open(dir.path(), Config::default())?;
//! let key = SeriesKey::new("up", [("job", "api")])?;
//! db.ingest(&[Update::new(key, Timestamp(1), Op::GaugeSet(1.0))?])?;
//! db.close()?;
//!
//! let report = offline::verify(&StdFs::new(), dir.path())?;
//! assert!(report.is_clean(), "{report}");
//! let mut records = 0;
//! offline::inspect_wal(&StdFs::new(), dir.path(), ingestor::Lsn::ZERO, |_, _| records += 1)?;
//! assert_eq!(records, 2, "a series definition and a batch");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use ingestor_codec::{Codec, Point, Record, RecordType, SeriesDef, SeriesId};
use ingestor_fs::Fs;
pub use ingestor_snapshot::{ChunkInfo, SnapshotContents};
pub use ingestor_wal::{Corruption, FrameInfo, RecoveryReport, SegmentId, Truncation};

use crate::config::{Config, FinalSnapshot};
use crate::error::{Error, Result};
use crate::ingestor::{Ingestor, SNAPSHOT_DIR, WAL_DIR};
use crate::{Lsn, RecoveryMode, SnapshotInfo};

/// Holds the data directory's lock; refuses a missing directory.
fn lock_existing(fs: &dyn Fs, dir: &Path) -> Result<Box<dyn ingestor_fs::FsLock>> {
    let exists =
        fs.exists(dir).map_err(|e| Error::Io { op: "stat", path: dir.into(), source: e })?;
    if !exists {
        return Err(Error::Io {
            op: "open",
            path: dir.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no data directory here"),
        });
    }
    fs.lock_dir(dir).map_err(|e| Error::Locked { dir: dir.to_path_buf(), reason: e.to_string() })
}

/// The log's recovery scan as a dry run, in `mode`.
fn scan(
    fs: &dyn Fs,
    dir: &Path,
    mode: RecoveryMode,
    from: Lsn,
    each: &mut dyn FnMut(&FrameInfo, &[u8]),
) -> Result<Option<RecoveryReport>> {
    let wal = dir.join(WAL_DIR);
    if !fs.exists(&wal).map_err(|e| Error::Io { op: "stat", path: wal.clone(), source: e })? {
        return Ok(None);
    }
    let options = Config::default().recovery_mode(mode).wal_options();
    let report = ingestor_wal::check_dir(fs, &wal, &options, from, |info, payload| {
        each(info, payload);
        Ok(())
    })?;
    Ok(Some(report))
}

/// One snapshot file as [`verify`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SnapshotCheck {
    /// The file.
    pub path: PathBuf,
    /// What its header describes, or why it cannot be used (naming the byte offset).
    pub result: std::result::Result<SnapshotInfo, String>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VerifyReport {
    /// The log's recovery scan (as [`RecoveryMode::SkipCorrupted`] would run it, so that
    /// every piece of damage is found, not only the first); `None` when there is no log.
    pub wal: Option<RecoveryReport>,
    /// Every snapshot file, oldest first.
    pub snapshots: Vec<SnapshotCheck>,
    /// Records that neither a good snapshot nor the log holds, first and last LSN.
    pub missing: Option<(Lsn, Lsn)>,
}

impl VerifyReport {
    /// One line per piece of damage, naming the file, the byte offset and the LSNs.
    #[must_use]
    pub fn damage(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(wal) = &self.wal {
            for c in &wal.corruptions {
                let lsns = match c.lost {
                    Some((a, b)) => format!("LSNs {a}..={b}"),
                    None => "LSNs unknown".to_string(),
                };
                out.push(format!(
                    "{WAL_DIR}/{} byte {}: {lsns}: {}",
                    c.segment.file_name(),
                    c.offset,
                    c.cause
                ));
            }
        }
        for s in &self.snapshots {
            if let Err(reason) = &s.result {
                out.push(format!("{}: {reason}", s.path.display()));
            }
        }
        if let Some((a, b)) = self.missing {
            out.push(format!(
                "LSNs {a}..={b} are in no good snapshot and no log segment (compacted away \
                 after the snapshot that held them)"
            ));
        }
        out
    }

    /// Whether nothing is damaged. A torn tail (bytes after the last record that were never
    /// proven durable; the next open cuts them) is not damage.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.damage().is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.wal {
            None => writeln!(f, "log: none")?,
            Some(w) => {
                match w.first_lsn {
                    Some(first) => writeln!(
                        f,
                        "log: {} segments, {} records, {} bytes, LSNs {first}..={}",
                        w.segments_scanned, w.records, w.bytes, w.last_lsn
                    )?,
                    None => writeln!(f, "log: {} segments, no records", w.segments_scanned)?,
                }
                for t in &w.truncations {
                    writeln!(
                        f,
                        "log: torn tail in {WAL_DIR}/{} at byte {}, {} bytes from LSN {} ({}); \
                         never proven durable, the next open cuts it",
                        t.segment.file_name(),
                        t.offset,
                        t.bytes,
                        t.from_lsn,
                        t.cause
                    )?;
                }
            }
        }
        for s in &self.snapshots {
            match &s.result {
                Ok(info) => writeln!(
                    f,
                    "snapshot: {} ok: LSN {}, {} series, {} bytes",
                    s.path.display(),
                    info.lsn,
                    info.series,
                    info.bytes
                )?,
                Err(_) => writeln!(f, "snapshot: {} DAMAGED", s.path.display())?,
            }
        }
        let damage = self.damage();
        if damage.is_empty() {
            writeln!(f, "clean")
        } else {
            for d in &damage {
                writeln!(f, "damage: {d}")?;
            }
            writeln!(f, "{} damaged", damage.len())
        }
    }
}

/// Reads every log segment and every snapshot file of the data directory `dir`, checking
/// every checksum, and changes nothing.
///
/// # Errors
/// [`Error::Locked`] when an ingestor holds the directory; [`Error::Io`] when it does not
/// exist or cannot be read. Damage is not an error: it is in the report.
pub fn verify(fs: &dyn Fs, dir: &Path) -> Result<VerifyReport> {
    let _lock = lock_existing(fs, dir)?;
    let wal = scan(fs, dir, RecoveryMode::SkipCorrupted, Lsn(u64::MAX), &mut |_, _| {})?;
    let mut snapshots = Vec::new();
    for path in ingestor_snapshot::list_files(fs, &dir.join(SNAPSHOT_DIR))? {
        let result = match ingestor_snapshot::verify_file(fs, &path) {
            Ok(info) => Ok(info),
            Err(e @ ingestor_snapshot::SnapshotError::Corrupt { .. }) => Err(e.to_string()),
            Err(e) => Err(format!("cannot be read: {e}")),
        };
        snapshots.push(SnapshotCheck { path, result });
    }
    let newest_good = snapshots.iter().filter_map(|s| s.result.as_ref().ok()).map(|i| i.lsn).max();
    let from = newest_good.unwrap_or(Lsn::ZERO).next();
    let missing = match wal.as_ref().and_then(|w| w.first_lsn) {
        Some(first) if first > from => Some((from, Lsn(first.0 - 1))),
        _ => None,
    };
    Ok(VerifyReport { wal, snapshots, missing })
}

/// Hands every valid log record with an LSN at or above `from` to `each`, with where it lies
/// and its decompressed payload (decode it with [`Record::decode`]), in LSN order; changes
/// nothing. Damage is skipped and listed in the returned report (`None`: no log).
///
/// # Errors
/// [`Error::Locked`]; [`Error::Io`].
pub fn inspect_wal(
    fs: &dyn Fs,
    dir: &Path,
    from: Lsn,
    mut each: impl FnMut(&FrameInfo, &[u8]),
) -> Result<Option<RecoveryReport>> {
    let _lock = lock_existing(fs, dir)?;
    scan(fs, dir, RecoveryMode::SkipCorrupted, from, &mut each)
}

/// The snapshot files of the data directory `dir`, oldest first.
///
/// # Errors
/// [`Error::Io`]; [`Error::Snapshot`] if the directory cannot be listed.
pub fn snapshot_files(fs: &dyn Fs, dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(ingestor_snapshot::list_files(fs, &dir.join(SNAPSHOT_DIR))?)
}

/// Reads one snapshot file completely: verified, with its chunks and the state it holds.
/// When `file` is inside a data directory, hold that directory's lock yourself (or use
/// [`snapshot_files`] after [`verify`]); this reads only.
///
/// # Errors
/// [`Error::Snapshot`] naming the byte offset of damage.
pub fn inspect_snapshot(fs: &dyn Fs, file: &Path) -> Result<SnapshotContents> {
    Ok(ingestor_snapshot::read_file(fs, file, &crate::MemstoreConfig::default())?)
}

/// What [`repair`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RepairReport {
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// The log's recovery under the repair mode: what was (or would be) cut, skipped, copied
    /// to quarantine and lost.
    pub wal: Option<RecoveryReport>,
    /// The newest good snapshot before the repair: batches at or below its LSN cost nothing
    /// when damaged, the snapshot holds their effect. (A damaged series definition below it
    /// can still cost later points: see [`RepairReport::skipped_points`].)
    pub base_snapshot: Option<Lsn>,
    /// Points of intact batches skipped because corruption took their series definition or
    /// an earlier point they depended on; `None` in a dry run, which replays nothing.
    pub skipped_points: Option<u64>,
    /// The snapshot that now holds the whole state (not in a dry run).
    pub snapshot: Option<Lsn>,
    /// Log segments deleted because that snapshot covers them (not in a dry run).
    pub removed_segments: Vec<SegmentId>,
}

impl RepairReport {
    /// The LSN ranges of damaged records taken out of the log, first and last of each, where
    /// known; see [`RepairReport::unknown_ranges`] for the others. Torn tails are not in it:
    /// their records were never proven durable (see [`RepairReport::torn_tails`]).
    #[must_use]
    pub fn removed_from_log(&self) -> Vec<(Lsn, Lsn)> {
        let Some(w) = &self.wal else { return Vec::new() };
        w.corruptions.iter().filter_map(|c| c.lost).collect()
    }

    /// Where damage was skipped without a known LSN range: segment and byte offset.
    #[must_use]
    pub fn unknown_ranges(&self) -> Vec<(SegmentId, u64)> {
        let Some(w) = &self.wal else { return Vec::new() };
        w.corruptions.iter().filter(|c| c.lost.is_none()).map(|c| (c.segment, c.offset)).collect()
    }

    /// Torn tails cut: the first LSN not recovered at each.
    #[must_use]
    pub fn torn_tails(&self) -> Vec<Lsn> {
        self.wal.iter().flat_map(|w| w.truncations.iter().map(|t| t.from_lsn)).collect()
    }

    /// The LSN ranges of damaged records whose effect is lost: those taken out of the log
    /// that the base snapshot does not cover.
    #[must_use]
    pub fn lost(&self) -> Vec<(Lsn, Lsn)> {
        let covered = self.base_snapshot.unwrap_or(Lsn::ZERO);
        self.removed_from_log()
            .into_iter()
            .filter(|&(_, last)| last > covered)
            .map(|(first, last)| (first.max(covered.next()), last))
            .collect()
    }

    /// Whether nothing acknowledged is lost, as far as this report can tell.
    #[must_use]
    pub fn nothing_lost(&self) -> bool {
        self.lost().is_empty() && self.unknown_ranges().is_empty() && self.skipped_points == Some(0)
    }
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(f, "dry run: nothing was changed; a repair would do this:")?;
        }
        match &self.wal {
            Some(w) => write!(f, "{w}")?,
            None => writeln!(f, "no log")?,
        }
        if let Some(lsn) = self.snapshot {
            writeln!(f, "snapshot at LSN {lsn} holds the recovered state")?;
        }
        if !self.removed_segments.is_empty() {
            let names: Vec<String> = self.removed_segments.iter().map(|s| s.file_name()).collect();
            writeln!(f, "deleted log segments it covers: {}", names.join(", "))?;
        }
        let lost = self.lost();
        if let Some(base) = self.base_snapshot
            && lost.len() < self.removed_from_log().len()
        {
            writeln!(f, "the snapshot at LSN {base} holds the effect of damaged batches up to it")?;
        }
        for lsn in self.torn_tails() {
            writeln!(f, "torn tail from LSN {lsn} cut: those records were never proven durable")?;
        }
        for (segment, offset) in self.unknown_ranges() {
            writeln!(f, "LSNs lost: unknown range at {} byte {offset}", segment.file_name())?;
        }
        if !lost.is_empty() {
            let ranges: Vec<String> = lost.iter().map(|(a, b)| format!("{a}..={b}")).collect();
            writeln!(f, "LSNs lost: {}", ranges.join(", "))?;
        }
        match self.skipped_points {
            Some(0) => {}
            None if self.wal.as_ref().is_none_or(|w| w.corruptions.is_empty()) => {}
            Some(n) => writeln!(
                f,
                "points skipped because their series definition or an earlier point they \
                 depended on was lost: {n}"
            )?,
            None => writeln!(
                f,
                "later points of series whose definition is in the damaged records will be \
                 skipped too; the repair counts them"
            )?,
        }
        if self.nothing_lost() {
            writeln!(f, "no acknowledged record lost")?;
        }
        Ok(())
    }
}

/// A deliberate repair of the data directory `dir` under `config.recovery_mode` (normally
/// [`RecoveryMode::PointInTime`] or [`RecoveryMode::SkipCorrupted`]): opens it in that mode,
/// which copies damaged bytes to `wal/quarantine/` before cutting or skipping them, then
/// writes a snapshot of the recovered state and deletes every log segment it covers, so that
/// the damaged bytes are gone and a default open succeeds afterwards. With `dry_run`, only
/// reports what it would do.
///
/// # Errors
/// [`Error::Locked`]; [`Error::Io`]; whatever the mode itself refuses.
pub fn repair(fs: Arc<dyn Fs>, dir: &Path, config: Config, dry_run: bool) -> Result<RepairReport> {
    if dry_run {
        let _lock = lock_existing(&*fs, dir)?;
        let wal = scan(&*fs, dir, config.recovery_mode, Lsn(u64::MAX), &mut |_, _| {})?;
        let base_snapshot = snapshot_files(&*fs, dir)?
            .iter()
            .rev()
            .find_map(|path| ingestor_snapshot::verify_file(&*fs, path).ok())
            .map(|info| info.lsn);
        return Ok(RepairReport {
            dry_run,
            wal,
            base_snapshot,
            skipped_points: None,
            snapshot: None,
            removed_segments: Vec::new(),
        });
    }
    lock_existing(&*fs, dir)?;
    // No expiry while repairing: the state must be what the log says.
    let config = config.final_snapshot(FinalSnapshot::Never).series_ttl(None);
    let (db, report) = Ingestor::open_with(fs, dir, config, &mut |_| {})?;
    // Deliberate defect: the repair snapshots nothing and leaves the damaged log as it is.
    #[cfg(ingestor_deliberate_bugs)]
    let (snapshot, removed_segments) =
        if crate::bugs::on("repair-no-compact") { (None, Vec::new()) } else { db.compact_all()? };
    #[cfg(not(ingestor_deliberate_bugs))]
    let (snapshot, removed_segments) = db.compact_all()?;
    db.close()?;
    Ok(RepairReport {
        dry_run,
        wal: Some(report.wal),
        base_snapshot: report.snapshot.map(|s| s.lsn),
        skipped_points: Some(report.skipped_points),
        snapshot,
        removed_segments,
    })
}
