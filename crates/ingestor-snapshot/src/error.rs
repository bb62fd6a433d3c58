//! The snapshot crate's errors: each names the operation, the file and, for damage, the
//! byte offset.

use std::io;
use std::path::PathBuf;

use ingestor_memstore::MemstoreError;

/// Everything that can go wrong writing, listing or loading snapshots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A file-system operation failed (or a simulated power cut was announced at a crash
    /// point, with `op` `crash_point`).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, for example `write`, `sync_all` or `rename`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A snapshot file's bytes are damaged or do not follow the format.
    #[error("snapshot {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The snapshot file.
        path: PathBuf,
        /// The byte offset in the file where the damage was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An option is out of range.
    #[error("invalid snapshot option {field}: {reason}")]
    InvalidOptions {
        /// The field of [`crate::SnapshotOptions`].
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// One series encodes to more than a chunk may hold ([`crate::MAX_CHUNK_LEN`]); only a
    /// histogram with millions of bounds can.
    #[error("series {key} needs a chunk of {bytes} bytes, more than the limit of {limit}")]
    SeriesTooLarge {
        /// The series.
        key: String,
        /// The bytes its chunk would take.
        bytes: u64,
        /// [`crate::MAX_CHUNK_LEN`].
        limit: u64,
    },
    /// The memstore refused the configuration or the loaded series (for example, a snapshot
    /// holds more series than [`ingestor_memstore::MemstoreConfig::max_series`] allows).
    #[error("memstore: {0}")]
    Memstore(#[from] MemstoreError),
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SnapshotError::Io { op, path: path.into(), source }
    }
}
