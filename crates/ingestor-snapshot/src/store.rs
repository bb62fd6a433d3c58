//! The snapshot directory: open (clean-up), list, write with retention, load with fall-back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingestor_codec::Lsn;
use ingestor_fs::{EntryKind, Fs};
use ingestor_memstore::{Frozen, Memstore, MemstoreConfig};

use crate::crash_points;
use crate::error::SnapshotError;
use crate::load;
use crate::options::SnapshotOptions;
use crate::write::write_snapshot;

const PREFIX: &str = "snap-";
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".tmp";

/// The name of the snapshot file at `lsn`: `snap-<LSN, 20 digits>.snap`.
pub(crate) fn file_name(lsn: Lsn) -> String {
    format!("{PREFIX}{:020}{SUFFIX}", lsn.0)
}

/// The name of the temporary file a snapshot at `lsn` is written to.
pub(crate) fn temp_name(lsn: Lsn) -> String {
    format!("{}{TEMP_SUFFIX}", file_name(lsn))
}

/// The LSN a snapshot file name carries, if `name` is one.
pub(crate) fn parse_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// A snapshot file, as its header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SnapshotInfo {
    /// The snapshot holds the state after every record with an LSN up to this one.
    pub lsn: Lsn,
    /// The file.
    pub path: PathBuf,
    /// The file's length in bytes.
    pub bytes: u64,
    /// How many series it holds.
    pub series: u64,
    /// When it was written, in milliseconds since the Unix epoch (as the writer said).
    pub created_ms: i64,
}

/// A snapshot that [`SnapshotStore::load_newest`] could not use. It stays on disk: the
/// caller decides what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RejectedSnapshot {
    /// The file.
    pub path: PathBuf,
    /// Why, naming the byte offset of the damage (or the I/O error that stopped the read).
    pub reason: String,
}

/// What [`SnapshotStore::load_newest`] found.
#[derive(Debug)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LoadReport {
    /// The loaded state; empty (new from the configuration) when no snapshot was good.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub memstore: Memstore,
    /// The snapshot loaded, if any. Replay the log from `used.lsn + 1` (from LSN 1 without
    /// one).
    pub used: Option<SnapshotInfo>,
    /// Newer snapshots that were tried and refused, newest first.
    pub rejected: Vec<RejectedSnapshot>,
    /// Series loaded.
    pub series: u64,
    /// How long the load took, refused attempts included.
    #[cfg_attr(feature = "serde", serde(with = "ingestor_codec::duration::serde"))]
    pub duration: Duration,
}

/// The directory of snapshot files: writes them atomically, keeps the newest few, and loads
/// the newest good one.
///
/// Writes are serialised by an internal lock; listing and loading may run at any time (they
/// never see a half-written snapshot, which lives under a temporary name until complete).
#[derive(Debug)]
pub struct SnapshotStore {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: SnapshotOptions,
    writing: Mutex<()>,
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot directory `dir`.
    ///
    /// Creates `dir` and its missing ancestors durably; removes temporary files left by a
    /// write that did not complete (names ending in `.tmp`), then syncs the directory.
    /// Returns the store and the paths removed.
    ///
    /// # Errors
    /// [`SnapshotError::InvalidOptions`], or [`SnapshotError::Io`] naming the operation
    /// and path that failed.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: SnapshotOptions,
    ) -> Result<(SnapshotStore, Vec<PathBuf>), SnapshotError> {
        options.validate()?;
        ingestor_fs::create_dir_durably(&*fs, dir)
            .map_err(|e| SnapshotError::io(e.op, &e.path, e.source))?;
        let entries = fs.read_dir(dir).map_err(|e| SnapshotError::io("read_dir", dir, e))?;
        let mut removed = Vec::new();
        for entry in entries {
            // Deliberate defect: temporary files of interrupted writes are left behind.
            #[cfg(ingestor_deliberate_bugs)]
            if crate::bugs::on("keep-temp-files") {
                continue;
            }
            if entry.kind == EntryKind::File && entry.name.ends_with(TEMP_SUFFIX) {
                let path = dir.join(&entry.name);
                fs.remove_file(&path).map_err(|e| SnapshotError::io("remove", &path, e))?;
                removed.push(path);
            }
        }
        fs.sync_dir(dir).map_err(|e| SnapshotError::io("sync_dir", dir, e))?;
        let store = SnapshotStore { fs, dir: dir.to_path_buf(), options, writing: Mutex::new(()) };
        Ok((store, removed))
    }

    /// The snapshot directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the store was opened with.
    #[must_use]
    pub fn options(&self) -> &SnapshotOptions {
        &self.options
    }

    /// Every file named like a snapshot, by LSN ascending.
    fn names(&self) -> Result<Vec<(Lsn, PathBuf)>, SnapshotError> {
        let entries =
            self.fs.read_dir(&self.dir).map_err(|e| SnapshotError::io("read_dir", &self.dir, e))?;
        let mut out: Vec<(Lsn, PathBuf)> = entries
            .into_iter()
            .filter(|e| e.kind == EntryKind::File)
            .filter_map(|e| Some((parse_name(&e.name)?, self.dir.join(&e.name))))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The snapshots in the directory, by LSN ascending, read from their headers only (the
    /// rest of each file is not verified). Files whose header is damaged are left out here;
    /// [`SnapshotStore::load_newest`] reports them.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] if the directory cannot be listed or a header cannot be read.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let mut out = Vec::new();
        for (lsn, path) in self.names()? {
            match load::open(&*self.fs, &path, lsn) {
                Ok(opened) => out.push(SnapshotInfo {
                    lsn,
                    bytes: opened.len,
                    series: opened.header.series,
                    created_ms: opened.header.created_ms,
                    path,
                }),
                Err(SnapshotError::Corrupt { .. }) => {}
                // Removed since the directory was read (by another store's retention).
                Err(SnapshotError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Writes the snapshot of `state`, the memstore after every record up to `lsn`, then
    /// applies retention.
    ///
    /// The protocol: create `snap-<lsn>.snap.tmp`; write the header and the chunks
    /// (announcing [`crash_points::WRITE_MIDDLE`] after about half of them); `fsync` it;
    /// announce [`crash_points::BEFORE_RENAME`]; rename it to `snap-<lsn>.snap` (replacing a
    /// snapshot of the same LSN); announce [`crash_points::BEFORE_DIR_SYNC`]; `fsync` the
    /// directory. The snapshot is durable when this returns `Ok`. Retention then removes the
    /// oldest snapshots beyond [`SnapshotOptions::keep`] (never this one, nor a newer one),
    /// announcing [`crash_points::RETENTION_BETWEEN`] between two removals, and syncs the
    /// directory.
    ///
    /// On an error before the rename, the temporary file is removed (best effort; `open`
    /// removes any left over).
    ///
    /// # Errors
    /// [`SnapshotError::Io`] naming the step that failed (an error from retention, with op
    /// `remove` or `sync_dir`, leaves the new snapshot durable and older ones in place);
    /// [`SnapshotError::SeriesTooLarge`].
    pub fn write(
        &self,
        lsn: Lsn,
        created_ms: i64,
        state: &Frozen,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let _writing = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let info = write_snapshot(&*self.fs, &self.dir, &self.options, lsn, created_ms, state)?;
        self.retain(lsn)?;
        Ok(info)
    }

    /// Removes the oldest snapshots beyond `keep`, never one at or above `written`.
    fn retain(&self, written: Lsn) -> Result<(), SnapshotError> {
        let all = self.list()?;
        let excess = all.len().saturating_sub(self.options.keep);
        let doomed: Vec<&SnapshotInfo> =
            all.iter().take(excess).filter(|info| info.lsn < written).collect();
        for (i, info) in doomed.iter().enumerate() {
            if i > 0 {
                self.fs
                    .crash_point(crash_points::RETENTION_BETWEEN)
                    .map_err(|e| SnapshotError::io("crash_point", &info.path, e))?;
            }
            self.fs
                .remove_file(&info.path)
                .map_err(|e| SnapshotError::io("remove", &info.path, e))?;
        }
        if !doomed.is_empty() {
            self.fs.sync_dir(&self.dir).map_err(|e| SnapshotError::io("sync_dir", &self.dir, e))?;
        }
        Ok(())
    }

    /// Loads the newest snapshot that passes verification into a new memstore built from
    /// `config`, falling back to older ones.
    ///
    /// Each candidate, newest first, is read twice: the first pass verifies the header, every
    /// chunk's checksum, the counts and the whole-file checksum (holding one chunk in memory
    /// at a time); the second decodes every series into a fresh memstore: an
    /// `ingestor-snapshot-read` thread, joined before this returns, decodes the chunks while
    /// the calling thread inserts them (a few chunks in memory at a time). A snapshot that
    /// fails either pass, or whose reading fails with an I/O error, is recorded in
    /// [`LoadReport::rejected`] and left on disk. With no good snapshot, the memstore is
    /// empty and [`LoadReport::used`] is `None`.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] if the directory cannot be listed; [`SnapshotError::Memstore`]
    /// if `config` is invalid or its limits refuse a snapshot's series.
    pub fn load_newest(&self, config: &MemstoreConfig) -> Result<LoadReport, SnapshotError> {
        let start = Instant::now();
        let mut rejected = Vec::new();
        for (lsn, path) in self.names()?.into_iter().rev() {
            let memstore = Memstore::new(config.clone())?;
            let attempt = load::open(&*self.fs, &path, lsn).and_then(|opened| {
                opened.verify(&path)?;
                let series = opened.decode_into(&path, &memstore)?;
                Ok((opened, series))
            });
            match attempt {
                Ok((opened, series)) => {
                    let used = SnapshotInfo {
                        lsn,
                        path,
                        bytes: opened.len,
                        series,
                        created_ms: opened.header.created_ms,
                    };
                    return Ok(LoadReport {
                        memstore,
                        used: Some(used),
                        rejected,
                        series,
                        duration: start.elapsed(),
                    });
                }
                Err(SnapshotError::Corrupt { offset, reason, .. }) => {
                    // Deliberate defects: a damaged snapshot panics the loader, or ends the
                    // search (no fall-back to the older snapshots kept for exactly this).
                    #[cfg(ingestor_deliberate_bugs)]
                    if crate::bugs::on("panic-on-damaged-snapshot") {
                        panic!("damaged snapshot {}: {reason}", path.display());
                    }
                    let reason = format!("corrupt at byte {offset}: {reason}");
                    rejected.push(RejectedSnapshot { path, reason });
                    #[cfg(ingestor_deliberate_bugs)]
                    if crate::bugs::on("snapshot-newest-only") {
                        break;
                    }
                }
                // Removed since the directory was read (retention of a concurrent write).
                Err(SnapshotError::Io { op: "open", source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(SnapshotError::Io { op, source, .. }) => {
                    let reason =
                        format!("I/O error while reading it ({op} failed: {source}); not verified");
                    rejected.push(RejectedSnapshot { path, reason });
                }
                Err(other) => return Err(other),
            }
        }
        Ok(LoadReport {
            memstore: Memstore::new(config.clone())?,
            used: None,
            rejected,
            series: 0,
            duration: start.elapsed(),
        })
    }

    /// The LSN of the oldest snapshot kept (by [`SnapshotStore::list`]): the log must be
    /// kept from the record after it on, so that loading can fall back to it. `None` when
    /// there is no snapshot.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] if the directory cannot be listed.
    pub fn oldest_kept_lsn(&self) -> Result<Option<Lsn>, SnapshotError> {
        Ok(self.list()?.first().map(|info| info.lsn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(file_name(Lsn(42)), "snap-00000000000000000042.snap");
        assert_eq!(temp_name(Lsn(42)), "snap-00000000000000000042.snap.tmp");
        for lsn in [0, 1, 42, u64::MAX] {
            assert_eq!(parse_name(&file_name(Lsn(lsn))), Some(Lsn(lsn)));
        }
        for bad in [
            "snap-42.snap",
            "snap-00000000000000000042.snap.tmp",
            "snap-0000000000000000004x.snap",
            "snap-99999999999999999999.snap",
            "x-00000000000000000042.snap",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        assert!(file_name(Lsn(9)) < file_name(Lsn(10)));
    }

    #[test]
    fn the_store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SnapshotStore>();
    }
}
