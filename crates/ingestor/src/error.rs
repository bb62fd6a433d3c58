//! The facade's error: each layer's error, wrapped transparently, and the facade's own.

use std::path::PathBuf;

use ingestor_codec::{Lsn, ValidationError};

/// Everything the ingestor can refuse or fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The write-ahead log failed (including a poisoned log, corruption found at open).
    #[error(transparent)]
    Wal(#[from] ingestor_wal::WalError),
    /// Reading or writing a snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] ingestor_snapshot::SnapshotError),
    /// The in-memory store refused the batch (kind conflict, series limit, stale handle).
    #[error(transparent)]
    Memstore(#[from] ingestor_memstore::MemstoreError),
    /// An update of the batch is invalid; nothing of the batch was applied.
    #[error("update {index} of the batch is invalid: {source}")]
    InvalidUpdate {
        /// Its index in the batch.
        index: usize,
        /// What is wrong.
        source: ValidationError,
    },
    /// The batch holds more points than one log record may ([`crate::MAX_BATCH_POINTS`]);
    /// nothing of it was applied. Split it.
    #[error("the batch holds {points} points, more than the {max} a batch may hold")]
    BatchTooLarge {
        /// Points in the batch.
        points: usize,
        /// The most a batch may hold.
        max: usize,
    },
    /// The data directory's file system has less free space than the floor
    /// ([`crate::Config::free_space_floor`]): nothing of the batch was applied; writes are
    /// accepted again once space is freed.
    #[error(
        "{dir}: {available} bytes free, below the floor of {floor} bytes: writes are refused \
         until space is freed"
    )]
    DiskFull {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Bytes available.
        available: u64,
        /// The floor.
        floor: u64,
    },
    /// Another process (or handle) has the data directory open.
    #[error("{dir} is in use: another ingestor holds its lock ({reason})")]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The operating system's words.
        reason: String,
    },
    /// A file-system operation on the data directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A configuration field is out of range.
    #[error("invalid option {field}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A logged record could not be replayed.
    #[error("replay of LSN {lsn} failed: {reason}")]
    Replay {
        /// The record's LSN.
        lsn: Lsn,
        /// What is wrong.
        reason: String,
    },
    /// Records between the loaded snapshot and the start of the log are in no file any more:
    /// the snapshot that covered them (and let compaction delete their segments) was
    /// rejected. Opening with less data would be silent loss, so open refuses.
    #[error(
        "LSNs {first}..={last} are missing: the log starts after them and the snapshot loaded \
         ({snapshot:?}) does not cover them; rejected snapshots: {rejected:?}"
    )]
    MissingRecords {
        /// The LSN of the snapshot loaded, if any.
        snapshot: Option<Lsn>,
        /// The first missing LSN.
        first: Lsn,
        /// The last missing LSN.
        last: Lsn,
        /// The snapshots rejected, with their reasons.
        rejected: Vec<String>,
    },
    /// A selector did not parse.
    #[error(transparent)]
    Selector(#[from] ingestor_memstore::SelectorError),
    /// The ingestor was closed, or its background thread stopped.
    #[error("the ingestor is closed")]
    Closed,
}

/// `Result` with the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
