//! Looking at a log without changing it: the recovery scan as a dry run, with every record
//! and where it lies. For `ingestor verify`, `ingestor inspect wal` and `repair --dry-run`.

use std::path::Path;

use ingestor_codec::{Codec, Lsn};
use ingestor_fs::Fs;

use crate::error::{Result, WalError};
use crate::options::WalOptions;
use crate::recovery::recover;
use crate::report::RecoveryReport;
use crate::segment::SegmentId;

/// Where a record lies in the log and how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FrameInfo {
    /// The segment that holds it.
    pub segment: SegmentId,
    /// The byte offset of its frame in the segment file.
    pub offset: u64,
    /// Its LSN.
    pub lsn: Lsn,
    /// Its record type byte.
    pub record_type: u8,
    /// How its payload is stored.
    pub codec: Codec,
    /// The payload's length as stored (compressed or not).
    pub stored_len: u32,
    /// The payload's length once decompressed.
    pub payload_len: usize,
    /// The frame's durable lag: its LSN minus the durable LSN when it was written.
    pub durable_lag: u32,
}

/// Runs the recovery scan of `options.recovery_mode` over the log in `dir` as a dry run:
/// every segment is read and every frame checked, exactly as [`crate::Wal::open`] would, but
/// nothing is cut, removed, copied to quarantine or created. The report says what an open
/// would find and do; [`FrameInfo`] and the decompressed payload of every valid record with
/// an LSN at or above `from` go to `on_record`, in LSN order.
///
/// Takes the directory's lock for the duration, so that a log that an open [`crate::Wal`]
/// holds is refused rather than read mid-write. (`StdFs` creates the lock file if the
/// directory has none: the only thing this may write.)
///
/// # Errors
/// [`WalError::Io`] if `dir` does not exist, is locked by another opener, or cannot be
/// read; whatever the recovery mode refuses ([`WalError::Corrupt`], [`WalError::Gap`],
/// [`WalError::TornTail`]); [`WalError::Replay`] if `on_record` fails.
pub fn check_dir(
    fs: &dyn Fs,
    dir: &Path,
    options: &WalOptions,
    from: Lsn,
    mut on_record: impl FnMut(&FrameInfo, &[u8]) -> std::result::Result<(), crate::ReplayError>,
) -> Result<RecoveryReport> {
    options.validate()?;
    if !fs.exists(dir).map_err(|e| WalError::io("stat", dir, e))? {
        return Err(WalError::io(
            "open",
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no log directory"),
        ));
    }
    let _lock = fs.lock_dir(dir).map_err(|e| WalError::io("lock", dir, e))?;
    // Deliberate defect: the check repairs what it finds, as an open would.
    #[cfg(ingestor_deliberate_bugs)]
    let dry_run = !crate::bugs::on("verify-repairs");
    #[cfg(not(ingestor_deliberate_bugs))]
    let dry_run = true;
    let recovered = recover(fs, dir, options, from, dry_run, &mut on_record, None)?;
    Ok(recovered.report)
}
