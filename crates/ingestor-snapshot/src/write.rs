//! Writing one snapshot file: a temporary file, written and synced, renamed into place, then
//! the directory synced.

use std::io;
use std::path::Path;

use ingestor_codec::Lsn;
use ingestor_fs::{Fs, FsFile};
use ingestor_memstore::Frozen;

use crate::crash_points;
use crate::error::SnapshotError;
use crate::format::{
    CHUNK_HEADER_LEN, CHUNK_TARGET_LEN, ChunkEncoder, ChunkHeader, Codec, Header, MAX_CHUNK_LEN,
    SNAPSHOT_HEADER_LEN, Trailer,
};
use crate::options::{SnapshotCompression, SnapshotOptions};
use crate::store::{SnapshotInfo, file_name, temp_name};

/// Writes the snapshot of `state` at `lsn` into `dir` by the protocol of
/// [`crate::SnapshotStore::write`] (without retention).
pub(crate) fn write_snapshot(
    fs: &dyn Fs,
    dir: &Path,
    options: &SnapshotOptions,
    lsn: Lsn,
    created_ms: i64,
    state: &Frozen,
) -> Result<SnapshotInfo, SnapshotError> {
    let tmp = dir.join(temp_name(lsn));
    let path = dir.join(file_name(lsn));
    let file = match fs.create(&tmp) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left over from a failed write of the same LSN in this process.
            fs.remove_file(&tmp).map_err(|e| SnapshotError::io("remove", &tmp, e))?;
            fs.create(&tmp).map_err(|e| SnapshotError::io("create", &tmp, e))?
        }
        Err(e) => return Err(SnapshotError::io("create", &tmp, e)),
    };
    let mut writer = Writer { fs, file: &*file, tmp: &tmp, offset: 0, rest_crc: 0, rest_len: 0 };
    // Deliberate defect: the snapshot is renamed into place without being synced first.
    #[cfg(ingestor_deliberate_bugs)]
    let skip_sync = crate::bugs::on("snapshot-no-fsync");
    #[cfg(not(ingestor_deliberate_bugs))]
    let skip_sync = false;
    let result = writer.write_all(options, lsn, created_ms, state).and_then(|written| {
        if skip_sync {
            return Ok(written);
        }
        match file.sync_all() {
            Ok(()) => Ok(written),
            Err(e) => Err(SnapshotError::io("sync_all", &tmp, e)),
        }
    });
    let bytes = writer.offset;
    drop(file);
    let result = result.and_then(|series| {
        fs.crash_point(crash_points::BEFORE_RENAME)
            .map_err(|e| SnapshotError::io("crash_point", &tmp, e))?;
        fs.rename(&tmp, &path).map_err(|e| SnapshotError::io("rename", &tmp, e))?;
        Ok(series)
    });
    let series = match result {
        Ok(series) => series,
        Err(e) => {
            // Best effort: open() removes whatever is left after a crash.
            let _ = fs.remove_file(&tmp);
            return Err(e);
        }
    };
    fs.crash_point(crash_points::BEFORE_DIR_SYNC)
        .map_err(|e| SnapshotError::io("crash_point", &path, e))?;
    fs.sync_dir(dir).map_err(|e| SnapshotError::io("sync_dir", dir, e))?;
    Ok(SnapshotInfo { lsn, path, bytes, series, created_ms })
}

/// Appends to the temporary file, keeping the checksum of every byte after the header (the
/// header is written first but may be rewritten with the final series count, so the
/// whole-file checksum is combined at the end).
struct Writer<'a> {
    fs: &'a dyn Fs,
    file: &'a dyn FsFile,
    tmp: &'a Path,
    offset: u64,
    rest_crc: u32,
    rest_len: usize,
}

impl Writer<'_> {
    /// Writes `bytes` at `offset`.
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<(), SnapshotError> {
        self.file.write_at(bytes, offset).map_err(|e| SnapshotError::io("write", self.tmp, e))
    }

    /// Appends bytes after the header.
    fn put(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.write_at(bytes, self.offset)?;
        self.offset += bytes.len() as u64;
        self.rest_crc = crc32c::crc32c_append(self.rest_crc, bytes);
        self.rest_len += bytes.len();
        Ok(())
    }

    fn crash_point(&self, name: &'static str) -> Result<(), SnapshotError> {
        self.fs.crash_point(name).map_err(|e| SnapshotError::io("crash_point", self.tmp, e))
    }

    /// Writes header, chunks and trailer; returns the series written.
    fn write_all(
        &mut self,
        options: &SnapshotOptions,
        lsn: Lsn,
        created_ms: i64,
        state: &Frozen,
    ) -> Result<u64, SnapshotError> {
        let codec = match options.compression {
            SnapshotCompression::None => Codec::None,
            SnapshotCompression::Lz4 => Codec::Lz4,
            SnapshotCompression::Zstd { .. } => Codec::Zstd,
        };
        let expected = state.len() as u64;
        let mut header = Header { codec, lsn, series: expected, created_ms };
        self.write_at(&header.encode(), 0)?;
        self.offset = SNAPSHOT_HEADER_LEN as u64;
        let per_chunk = options.chunk_series.min(u32::MAX as usize);
        let mut encoder = ChunkEncoder::default();
        let (mut chunks, mut series) = (0u64, 0u64);
        let mut announced = false;
        if expected == 0 {
            self.crash_point(crash_points::WRITE_MIDDLE)?;
            announced = true;
        }
        let mut out = Vec::new();
        let mut records = state.iter().peekable();
        while let Some(record) = records.next() {
            encoder.push(&record);
            let full =
                encoder.series() as usize >= per_chunk || encoder.raw_len() >= CHUNK_TARGET_LEN;
            if !full && records.peek().is_some() {
                continue;
            }
            series += u64::from(encoder.series());
            // A chunk over the limit closed at the series that pushed it past the 4 MiB
            // target: that series is the one too large.
            self.chunk(&mut encoder, options.compression, &mut out, &record.key)?;
            chunks += 1;
            if !announced && series * 2 >= expected {
                self.crash_point(crash_points::WRITE_MIDDLE)?;
                announced = true;
            }
        }
        if !announced {
            self.crash_point(crash_points::WRITE_MIDDLE)?;
        }
        let body = Trailer::body(chunks, series);
        if series != expected {
            // The frozen view counted otherwise than it iterated: the header must hold what
            // the chunks hold.
            header.series = series;
            self.write_at(&header.encode(), 0)?;
        }
        let header_bytes = header.encode();
        let rest = crc32c::crc32c_append(self.rest_crc, &body);
        let whole =
            crc32c::crc32c_combine(crc32c::crc32c(&header_bytes), rest, self.rest_len + body.len());
        let mut trailer = body.to_vec();
        trailer.extend_from_slice(&ingestor_codec::mask_crc(whole).to_le_bytes());
        self.put(&trailer)?;
        Ok(series)
    }

    /// Compresses and writes the encoder's chunk.
    fn chunk(
        &mut self,
        encoder: &mut ChunkEncoder,
        compression: SnapshotCompression,
        out: &mut Vec<u8>,
        key: &ingestor_codec::SeriesKey,
    ) -> Result<(), SnapshotError> {
        let raw = encoder.take();
        let too_large = |bytes: usize| SnapshotError::SeriesTooLarge {
            key: key.to_string(),
            bytes: bytes as u64,
            limit: MAX_CHUNK_LEN as u64,
        };
        if raw.len() > MAX_CHUNK_LEN {
            return Err(too_large(raw.len()));
        }
        let compressed;
        let stored: &[u8] = match compression {
            SnapshotCompression::None => &raw,
            SnapshotCompression::Lz4 => {
                compressed = lz4_flex::block::compress(&raw);
                &compressed
            }
            SnapshotCompression::Zstd { level } => {
                compressed = zstd::bulk::compress(&raw, level)
                    .map_err(|e| SnapshotError::io("compress", self.tmp, e))?;
                &compressed
            }
        };
        if stored.len() > MAX_CHUNK_LEN {
            return Err(too_large(stored.len()));
        }
        let header = ChunkHeader::for_stored(raw.len() as u32, stored);
        out.clear();
        out.reserve(CHUNK_HEADER_LEN + stored.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(stored);
        self.put(out)
    }
}
