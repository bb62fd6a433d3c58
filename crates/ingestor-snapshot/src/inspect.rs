//! Looking at snapshot files without changing anything: for `ingestor verify` and
//! `ingestor inspect snapshot`.

use std::path::{Path, PathBuf};

use ingestor_fs::{EntryKind, Fs};
use ingestor_memstore::{Memstore, MemstoreConfig};

use crate::error::SnapshotError;
use crate::load;
use crate::store::{SnapshotInfo, parse_name};

/// One chunk of a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ChunkInfo {
    /// Its position, from 0.
    pub index: u64,
    /// The byte offset of its header in the file.
    pub offset: u64,
    /// Its length as stored (compressed or not), without its header.
    pub stored_len: u32,
    /// Its length once decompressed.
    pub raw_len: u32,
}

/// A snapshot file read whole and verified.
#[derive(Debug)]
#[non_exhaustive]
pub struct SnapshotContents {
    /// The file, as its header describes it.
    pub info: SnapshotInfo,
    /// Its compression: `none`, `lz4` or `zstd`.
    pub compression: &'static str,
    /// Its chunks, in order.
    pub chunks: Vec<ChunkInfo>,
    /// The state it holds.
    pub memstore: Memstore,
}

/// The snapshot files in `dir` (named `snap-<LSN>.snap`), by LSN ascending. Temporary files
/// of an unfinished write are not listed (and, unlike [`crate::SnapshotStore::open`], not
/// removed). A missing directory holds none.
///
/// # Errors
/// [`SnapshotError::Io`] if the directory cannot be read.
pub fn list_files(fs: &dyn Fs, dir: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    if !fs.exists(dir).map_err(|e| SnapshotError::io("stat", dir, e))? {
        return Ok(Vec::new());
    }
    let entries = fs.read_dir(dir).map_err(|e| SnapshotError::io("read_dir", dir, e))?;
    let mut out: Vec<_> = entries
        .into_iter()
        .filter(|e| e.kind == EntryKind::File)
        .filter_map(|e| Some((parse_name(&e.name)?, dir.join(&e.name))))
        .collect();
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

fn name_lsn(path: &Path) -> Result<ingestor_codec::Lsn, SnapshotError> {
    path.file_name().and_then(|n| n.to_str()).and_then(parse_name).ok_or_else(|| {
        SnapshotError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: "not a snapshot file name (expected snap-<20-digit LSN>.snap)".into(),
        }
    })
}

/// Verifies one snapshot file completely (header, every chunk's checksum, the counts, the
/// whole-file checksum) without decoding it; reads only.
///
/// # Errors
/// [`SnapshotError::Corrupt`] naming the byte offset of the first damage;
/// [`SnapshotError::Io`].
pub fn verify_file(fs: &dyn Fs, path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    let opened = load::open(fs, path, name_lsn(path)?)?;
    opened.verify(path)?;
    Ok(SnapshotInfo {
        lsn: opened.header.lsn,
        path: path.to_path_buf(),
        bytes: opened.len,
        series: opened.header.series,
        created_ms: opened.header.created_ms,
    })
}

/// Verifies one snapshot file and decodes it into a new memstore, listing its chunks; reads
/// only.
///
/// # Errors
/// As [`verify_file`], and [`SnapshotError::Memstore`] if `config` refuses its series.
pub fn read_file(
    fs: &dyn Fs,
    path: &Path,
    config: &MemstoreConfig,
) -> Result<SnapshotContents, SnapshotError> {
    let info = verify_file(fs, path)?;
    let opened = load::open(fs, path, info.lsn)?;
    let mut chunks = Vec::new();
    opened.walk(path, |index, offset, header, _| {
        chunks.push(ChunkInfo {
            index,
            offset,
            stored_len: header.stored_len,
            raw_len: header.raw_len,
        });
        Ok(())
    })?;
    let memstore = Memstore::new(config.clone())?;
    opened.decode_into(path, &memstore)?;
    Ok(SnapshotContents { info, compression: opened.header.codec.name(), chunks, memstore })
}
