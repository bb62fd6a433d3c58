//! The log's errors: each names the operation, the file and, for damage, the byte offset
//! and LSN.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use ingestor_codec::{DecodeError, Lsn};

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the log was doing, for example `write` or `sync_data`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Damage in the middle of the log (valid frames follow it), refused by the recovery
    /// mode.
    #[error(
        "{path} is corrupt at byte {offset} (expected LSN {lsn}): {cause}; valid records \
         follow, so this is not a torn tail. Open with RecoveryMode::PointInTime or \
         SkipCorrupted to salvage the log deliberately"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// The byte offset of the bad frame.
        offset: u64,
        /// The LSN the bad frame should have had.
        lsn: Lsn,
        /// What is wrong with it.
        cause: DecodeError,
    },
    /// Records are missing between two segments (or a segment's first LSN is not the one
    /// its predecessor leads to).
    #[error(
        "LSNs {first}..={last} are missing: {path} starts at LSN {found}, but the log before \
         it ends at LSN {before}"
    )]
    Gap {
        /// The segment that starts too late.
        path: PathBuf,
        /// Its first LSN.
        found: Lsn,
        /// The last LSN before it.
        before: Lsn,
        /// The first missing LSN.
        first: Lsn,
        /// The last missing LSN.
        last: Lsn,
    },
    /// A torn tail, refused by [`crate::RecoveryMode::Strict`].
    #[error("{path} has a torn tail at byte {offset} (LSN {lsn} onward): {cause}")]
    TornTail {
        /// The last segment.
        path: PathBuf,
        /// The offset of the incomplete or invalid frame.
        offset: u64,
        /// The LSN it would have had.
        lsn: Lsn,
        /// What is wrong with it.
        cause: DecodeError,
    },
    /// An earlier failure (a failed sync, or a failed write that could not be undone) made
    /// the log refuse every later append and sync. Reopen it to recover.
    #[error("the log refuses writes after an earlier failure; reopen it to recover: {cause}")]
    Poisoned {
        /// The failure that poisoned the log.
        #[source]
        cause: Arc<WalError>,
    },
    /// A record is larger than a frame may carry.
    #[error("a record of {len} bytes is larger than the limit of {limit} bytes")]
    RecordTooLarge {
        /// The record's payload length.
        len: usize,
        /// [`ingestor_codec::MAX_PAYLOAD_LEN`].
        limit: usize,
    },
    /// A record type of 0, which no reader accepts.
    #[error("record type 0 is reserved")]
    ReservedRecordType,
    /// An option is out of range.
    #[error("invalid WAL option {field}: {reason}")]
    InvalidOptions {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The directory holds a file the log does not understand where a segment should be.
    #[error("{path}: {reason}")]
    UnexpectedFile {
        /// The file.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// A reader was asked for an LSN the log no longer (or does not yet) hold.
    #[error("LSN {requested} is not in the log, which holds LSNs {first}..={last}")]
    LsnOutOfRange {
        /// The LSN asked for.
        requested: Lsn,
        /// The oldest LSN held.
        first: Lsn,
        /// The newest LSN written.
        last: Lsn,
    },
    /// The replay callback given to [`crate::Wal::open_and_replay`] failed.
    #[error("replay of LSN {lsn} failed: {source}")]
    Replay {
        /// The record's LSN.
        lsn: Lsn,
        /// The callback's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The log has been closed.
    #[error("the log is closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io { op, path: path.into(), source }
    }
}

/// `Result` with [`WalError`].
pub type Result<T, E = WalError> = std::result::Result<T, E>;
