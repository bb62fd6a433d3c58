//! Configuration of a [`crate::SnapshotStore`].

use crate::error::SnapshotError;

/// How the chunks of a snapshot are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SnapshotCompression {
    /// Stored as is.
    None,
    /// LZ4 block format (`lz4_flex`): fast, modest ratio.
    Lz4,
    /// Zstandard (bulk API) at the given level.
    Zstd {
        /// The compression level, within `zstd::compression_level_range()` (0 means zstd's
        /// default, 3).
        level: i32,
    },
}

impl Default for SnapshotCompression {
    /// `Zstd { level: 3 }`.
    fn default() -> Self {
        SnapshotCompression::Zstd { level: 3 }
    }
}

/// Options of [`crate::SnapshotStore::open`]. Every field documents its default.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct SnapshotOptions {
    /// How chunks are compressed. Default: `Zstd { level: 3 }`.
    pub compression: SnapshotCompression,
    /// How many snapshots retention keeps (the newest by LSN); at least 1. Keeping more
    /// than one lets loading fall back to an older snapshot when the newest is damaged, at
    /// the price of keeping the log from the oldest one on. Default: 2.
    pub keep: usize,
    /// The most series in one chunk, at least 1; a chunk also closes once its raw content
    /// reaches 4 MiB. Each chunk is checksummed and compressed on its own, so this bounds
    /// the memory a write or a load needs beyond the store itself. Default: 4096.
    pub chunk_series: usize,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions { compression: SnapshotCompression::default(), keep: 2, chunk_series: 4096 }
    }
}

impl SnapshotOptions {
    /// Sets [`SnapshotOptions::compression`].
    #[must_use]
    pub fn compression(mut self, compression: SnapshotCompression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets [`SnapshotOptions::keep`].
    #[must_use]
    pub fn keep(mut self, keep: usize) -> Self {
        self.keep = keep;
        self
    }

    /// Sets [`SnapshotOptions::chunk_series`].
    #[must_use]
    pub fn chunk_series(mut self, chunk_series: usize) -> Self {
        self.chunk_series = chunk_series;
        self
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`SnapshotError::InvalidOptions`] naming the first bad field.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        if let SnapshotCompression::Zstd { level } = self.compression {
            let range = zstd::compression_level_range();
            if !range.contains(&level) {
                return Err(SnapshotError::InvalidOptions {
                    field: "compression",
                    reason: format!(
                        "zstd level {level} is outside {} ..= {}",
                        range.start(),
                        range.end()
                    ),
                });
            }
        }
        if self.keep == 0 {
            return Err(SnapshotError::InvalidOptions {
                field: "keep",
                reason: "0: at least one snapshot must be kept".to_string(),
            });
        }
        if self.chunk_series == 0 {
            return Err(SnapshotError::InvalidOptions {
                field: "chunk_series",
                reason: "0: a chunk holds at least one series".to_string(),
            });
        }
        Ok(())
    }
}
