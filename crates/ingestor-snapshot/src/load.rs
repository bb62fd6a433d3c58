//! Reading one snapshot file: its header (cheap, for listing), then two passes: verify every
//! checksum and count, then decode into a memstore.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, mpsc};

use ingestor_codec::{Lsn, Timestamp, unmask_crc};
use ingestor_fs::{Fs, FsFile, OpenMode};
use ingestor_memstore::{KeyBatch, Memstore, MemstoreError, SeriesState};

use crate::error::SnapshotError;
use crate::format::{
    Bad, CHUNK_HEADER_LEN, ChunkHeader, Codec, Header, SNAPSHOT_HEADER_LEN, SNAPSHOT_TRAILER_LEN,
    Trailer, decode_chunk_parts,
};

/// An open snapshot file whose header was verified.
pub(crate) struct Opened {
    file: Box<dyn FsFile>,
    pub(crate) len: u64,
    pub(crate) header: Header,
    header_bytes: [u8; SNAPSHOT_HEADER_LEN],
}

/// The most series a byte of a snapshot file is taken to hold when the key index is sized
/// ahead of a load (see [`Opened::decode_into`]).
const SERIES_PER_BYTE_MAX: u64 = 8;

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt { path: path.to_path_buf(), offset, reason: reason.into() }
}

/// Opens a snapshot file and verifies its header, which must carry the LSN of its name.
pub(crate) fn open(fs: &dyn Fs, path: &Path, name_lsn: Lsn) -> Result<Opened, SnapshotError> {
    let file = fs.open(path, OpenMode::Read).map_err(|e| SnapshotError::io("open", path, e))?;
    let len = file.len().map_err(|e| SnapshotError::io("stat", path, e))?;
    if len < SNAPSHOT_HEADER_LEN as u64 {
        return Err(corrupt(
            path,
            len,
            format!("the file is {len} bytes, shorter than the {SNAPSHOT_HEADER_LEN}-byte header"),
        ));
    }
    let mut header_bytes = [0u8; SNAPSHOT_HEADER_LEN];
    file.read_exact_at(&mut header_bytes, 0).map_err(|e| SnapshotError::io("read", path, e))?;
    let header = Header::decode(&header_bytes).map_err(|b| corrupt(path, b.at, b.reason))?;
    if header.lsn != name_lsn {
        return Err(corrupt(
            path,
            16,
            format!("the header names LSN {}, the file name LSN {name_lsn}", header.lsn),
        ));
    }
    Ok(Opened { file, len, header, header_bytes })
}

impl Opened {
    /// Walks the chunks between the header and the trailer, verifying each one's checksum,
    /// and hands each to `each` with its index and offset. Returns the number of chunks and
    /// the CRC32C of every byte before the trailer. Holds one chunk in memory at a time.
    pub(crate) fn walk(
        &self,
        path: &Path,
        mut each: impl FnMut(u64, u64, &ChunkHeader, &[u8]) -> Result<(), SnapshotError>,
    ) -> Result<(u64, u32), SnapshotError> {
        let end = self.len.saturating_sub(SNAPSHOT_TRAILER_LEN as u64);
        let mut crc = crc32c::crc32c(&self.header_bytes);
        let mut offset = SNAPSHOT_HEADER_LEN as u64;
        let mut index = 0u64;
        let mut stored = Vec::new();
        while offset < end {
            if end - offset < CHUNK_HEADER_LEN as u64 {
                return Err(corrupt(
                    path,
                    offset,
                    format!(
                        "chunk {index}: {} bytes before the trailer, too few for a chunk header",
                        end - offset
                    ),
                ));
            }
            let mut header_bytes = [0u8; CHUNK_HEADER_LEN];
            self.file
                .read_exact_at(&mut header_bytes, offset)
                .map_err(|e| SnapshotError::io("read", path, e))?;
            let at = |b: Bad| corrupt(path, offset + b.at, format!("chunk {index}: {}", b.reason));
            let header = ChunkHeader::parse(&header_bytes, self.header.codec).map_err(at)?;
            let data = offset + CHUNK_HEADER_LEN as u64;
            let stored_len = u64::from(header.stored_len);
            if stored_len > end - data {
                return Err(corrupt(
                    path,
                    offset + 4,
                    format!(
                        "chunk {index}: {stored_len} stored bytes run past the trailer at byte \
                         {end}"
                    ),
                ));
            }
            // Bounded by MAX_CHUNK_LEN and by the bytes present, checked above.
            stored.resize(header.stored_len as usize, 0);
            self.file
                .read_exact_at(&mut stored, data)
                .map_err(|e| SnapshotError::io("read", path, e))?;
            header.verify(&stored).map_err(at)?;
            crc = crc32c::crc32c_append(crc32c::crc32c_append(crc, &header_bytes), &stored);
            each(index, offset, &header, &stored)?;
            offset = data + stored_len;
            index += 1;
        }
        Ok((index, crc))
    }

    /// Pass 1: the trailer, every chunk's checksum, the counts and the whole-file checksum.
    pub(crate) fn verify(&self, path: &Path) -> Result<(), SnapshotError> {
        let min = (SNAPSHOT_HEADER_LEN + SNAPSHOT_TRAILER_LEN) as u64;
        if self.len < min {
            return Err(corrupt(
                path,
                self.len,
                format!(
                    "the file ends after {} bytes, before its trailer (at least {min} bytes): it \
                     is truncated or was not completely written",
                    self.len
                ),
            ));
        }
        let at = self.len - SNAPSHOT_TRAILER_LEN as u64;
        let mut bytes = [0u8; SNAPSHOT_TRAILER_LEN];
        self.file.read_exact_at(&mut bytes, at).map_err(|e| SnapshotError::io("read", path, e))?;
        let trailer = Trailer::parse(&bytes).map_err(|b| corrupt(path, at + b.at, b.reason))?;
        let (chunks, crc) = self.walk(path, |_, _, _, _| Ok(()))?;
        let crc =
            crc32c::crc32c_append(crc, bytes.get(..SNAPSHOT_TRAILER_LEN - 4).unwrap_or_default());
        let stored = unmask_crc(trailer.masked_crc);
        if stored != crc {
            return Err(corrupt(
                path,
                at + 24,
                format!(
                    "whole-file checksum mismatch: stored {stored:#010x}, computed {crc:#010x}"
                ),
            ));
        }
        if trailer.chunks != chunks {
            return Err(corrupt(
                path,
                at + 8,
                format!("the trailer counts {} chunks, the file holds {chunks}", trailer.chunks),
            ));
        }
        if trailer.series != self.header.series {
            return Err(corrupt(
                path,
                at + 16,
                format!(
                    "the trailer counts {} series, the header {}",
                    trailer.series, self.header.series
                ),
            ));
        }
        Ok(())
    }

    /// Pass 2: decompresses and decodes every chunk into `store`. Returns the series loaded.
    ///
    /// Two threads share the work, each about half of a load's time: an
    /// `ingestor-snapshot-read` thread reads, decompresses and decodes the chunks, checking
    /// and hashing their keys ([`KeyBatch`]); the calling thread inserts each chunk while the
    /// next one is decoded (the store's slots, keys and index are allocated by the calling
    /// thread; a histogram's state by the reading one). Where no thread can be started, the
    /// calling thread does both, one chunk after the other.
    pub(crate) fn decode_into(&self, path: &Path, store: &Memstore) -> Result<u64, SnapshotError> {
        // Room in the key index for the series the header counts (pass 1 checked it against
        // the trailer's count, but both are the file's word until the chunks are decoded),
        // at most 8 a byte of the file: the bench's snapshots hold 0.3 a byte, and a short
        // crafted file cannot claim a large index. A count beyond it only loses the reserve.
        let bounded = self.header.series.min(self.len.saturating_mul(SERIES_PER_BYTE_MAX));
        store.loader().reserve(usize::try_from(bounded).unwrap_or(usize::MAX));
        // Two decoded chunks may wait; their buffers come back for the chunks after them.
        let (full_tx, full_rx) = mpsc::sync_channel::<Result<Decoded, SnapshotError>>(2);
        let (spare_tx, spare_rx) = mpsc::sync_channel::<Decoded>(4);
        let total = std::thread::scope(|scope| {
            let spawned = std::thread::Builder::new()
                .name("ingestor-snapshot-read".into())
                .spawn_scoped(scope, move || self.read_chunks(path, store, &full_tx, &spare_rx));
            let Ok(reader) = spawned else {
                return self.decode_inline(path, store);
            };
            let mut total = 0u64;
            let mut outcome = Ok(());
            for decoded in &full_rx {
                let inserted = decoded.and_then(|mut d| {
                    let n = self.insert(path, store, &mut d)?;
                    // Back to the reader for a later chunk (dropped if it has enough).
                    let _ = spare_tx.try_send(d);
                    Ok(n)
                });
                match inserted {
                    Ok(n) => total += n,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            // A reader still going stops at its next chunk (its sends fail).
            drop(full_rx);
            if let Err(panic) = reader.join() {
                std::panic::resume_unwind(panic);
            }
            outcome.map(|()| total)
        })?;
        if total != self.header.series {
            return Err(corrupt(
                path,
                24,
                format!("the chunks hold {total} series, the header counts {}", self.header.series),
            ));
        }
        Ok(total)
    }

    /// The reading side of [`Opened::decode_into`]: every chunk decoded, in order, to
    /// `full`, then the error that stopped the walk, if one did.
    fn read_chunks(
        &self,
        path: &Path,
        store: &Memstore,
        full: &mpsc::SyncSender<Result<Decoded, SnapshotError>>,
        spares: &mpsc::Receiver<Decoded>,
    ) {
        let mut decoder = ChunkDecoder::default();
        let mut stopped = false;
        let walked = self.walk(path, |index, offset, header, stored| {
            let d = decoder.decode(self, path, store, (index, offset), header, stored, || {
                spares.try_recv().ok()
            })?;
            // A chunk with an invalid key is the last: its error ends the load. The walk
            // stops too when the inserting side stopped (an error of its own).
            let last = d.bad.is_some();
            stopped = full.send(Ok(d)).is_err() || last;
            if stopped {
                Err(SnapshotError::io("load", path, std::io::Error::other("stopped")))
            } else {
                Ok(())
            }
        });
        // Not after a stop of its own; nobody hears it if the inserting side stopped first
        // (its error comes first).
        if let Err(e) = walked
            && !stopped
        {
            let _ = full.send(Err(e));
        }
    }

    /// [`Opened::decode_into`] on the calling thread alone.
    fn decode_inline(&self, path: &Path, store: &Memstore) -> Result<u64, SnapshotError> {
        let mut decoder = ChunkDecoder::default();
        let mut spare = None;
        let mut total = 0u64;
        self.walk(path, |index, offset, header, stored| {
            let mut d =
                decoder
                    .decode(self, path, store, (index, offset), header, stored, || spare.take())?;
            total += self.insert(path, store, &mut d)?;
            spare = Some(d);
            Ok(())
        })?;
        Ok(total)
    }

    /// Inserts a decoded chunk (up to its invalid key, which is then the error). Returns the
    /// series inserted.
    fn insert(&self, path: &Path, store: &Memstore, d: &mut Decoded) -> Result<u64, SnapshotError> {
        let codec = self.header.codec;
        match store.loader().insert_keys(&d.keys, d.states.drain(..)) {
            Ok(n) => match d.bad.take() {
                Some(b) => Err(chunk_error(codec, path, d.index, d.offset, &b)),
                None => Ok(n as u64),
            },
            Err((i, e)) => {
                let mut refused = None;
                let b = refusal(d.places[i], e, &mut refused);
                Err(match refused {
                    // A refusal that is the configuration's, not the file's, is an error as such.
                    Some(e) => SnapshotError::Memstore(e),
                    None => chunk_error(codec, path, d.index, d.offset, &b),
                })
            }
        }
    }
}

/// A chunk decoded for [`Opened::decode_into`]: its keys checked and hashed, each series'
/// state and last update, and where each series starts in the chunk's content (for an error
/// that names it). A chunk with an invalid key holds the series before it and, in `bad`,
/// the key's error: reported after those are inserted, so that an earlier series' refusal
/// (a duplicate, the series limit) comes first, as errors come in the file's order.
struct Decoded {
    index: u64,
    offset: u64,
    keys: KeyBatch,
    states: Vec<(SeriesState, Timestamp)>,
    places: Vec<usize>,
    bad: Option<Bad>,
}

/// What decoding keeps from one chunk to the next: the decompression buffer and the
/// histogram bounds already seen.
#[derive(Default)]
struct ChunkDecoder {
    raw: Vec<u8>,
    shared: HashMap<Vec<u64>, Arc<[f64]>>,
}

impl ChunkDecoder {
    /// Decompresses and decodes the chunk `stored` (at `(index, offset)`), in the buffers of
    /// the decoded chunk `spare` gives, if any.
    #[allow(clippy::too_many_arguments)]
    fn decode(
        &mut self,
        opened: &Opened,
        path: &Path,
        store: &Memstore,
        (index, offset): (u64, u64),
        header: &ChunkHeader,
        stored: &[u8],
        spare: impl FnOnce() -> Option<Decoded>,
    ) -> Result<Decoded, SnapshotError> {
        let codec = opened.header.codec;
        let content = decompress(codec, header, stored, &mut self.raw)
            .map_err(|reason| corrupt(path, offset, format!("chunk {index}: {reason}")))?;
        let mut d = spare().unwrap_or_else(|| Decoded {
            index,
            offset,
            keys: store.key_batch(),
            states: Vec::new(),
            places: Vec::new(),
            bad: None,
        });
        d.index = index;
        d.offset = offset;
        d.keys.clear();
        d.states.clear();
        d.places.clear();
        d.bad = None;
        let mut bad_key = None;
        let decoded = decode_chunk_parts(content, &mut self.shared, |at, s| {
            if let Err(e) = d.keys.push(s.name, s.labels) {
                let reason = match e {
                    MemstoreError::InvalidKey { reason } => format!("invalid series key: {reason}"),
                    other => other.to_string(),
                };
                let b = Bad::new(at as u64, reason);
                bad_key = Some(b.clone());
                return Err(b);
            }
            d.places.push(at);
            d.states.push((s.state, s.last_update));
            Ok(())
        });
        match (decoded, bad_key) {
            (Ok(_), _) => Ok(d),
            (Err(_), Some(b)) => {
                d.bad = Some(b);
                Ok(d)
            }
            (Err(b), None) => Err(chunk_error(codec, path, index, offset, &b)),
        }
    }
}

/// A chunk's content: `stored` itself, or decompressed into `raw`.
fn decompress<'a>(
    codec: Codec,
    header: &ChunkHeader,
    stored: &'a [u8],
    raw: &'a mut Vec<u8>,
) -> Result<&'a [u8], String> {
    if codec == Codec::None {
        return Ok(stored);
    }
    // The checksum verified raw_len, which is at most MAX_CHUNK_LEN.
    raw.resize(header.raw_len as usize, 0);
    let n =
        match codec {
            Codec::Lz4 => lz4_flex::block::decompress_into(stored, raw.as_mut_slice())
                .map_err(|e| e.to_string()),
            _ => zstd::bulk::decompress_to_buffer(stored, raw.as_mut_slice())
                .map_err(|e| e.to_string()),
        };
    match n {
        Ok(n) if n == raw.len() => Ok(raw.as_slice()),
        Ok(n) => Err(format!("{} decompressed to {n} bytes, {} declared", codec.name(), raw.len())),
        Err(e) => Err(format!("{} does not decompress: {e}", codec.name())),
    }
}

/// The error for `b`, found in chunk `index` (at `offset` in the file): at its byte in the
/// file for an uncompressed chunk, else at the chunk, naming the byte of its content.
fn chunk_error(codec: Codec, path: &Path, index: u64, offset: u64, b: &Bad) -> SnapshotError {
    match codec {
        Codec::None => corrupt(
            path,
            offset + CHUNK_HEADER_LEN as u64 + b.at,
            format!("chunk {index}: {}", b.reason),
        ),
        _ => corrupt(
            path,
            offset,
            format!("chunk {index}, byte {} of its decompressed content: {}", b.at, b.reason),
        ),
    }
}

/// Why the memstore refused the series that starts at `at` in its chunk's content. A key the
/// file should not hold (invalid, or twice) is the file's fault: [`Bad`] naming it. A
/// refusal of the configuration's (the series limit, handles) goes to `refused`, and the
/// [`Bad`] returned only stops the chunk.
fn refusal(at: usize, e: MemstoreError, refused: &mut Option<MemstoreError>) -> Bad {
    match e {
        MemstoreError::InvalidKey { reason } => {
            Bad::new(at as u64, format!("invalid series key: {reason}"))
        }
        MemstoreError::DuplicateSeries { key } => {
            Bad::new(at as u64, format!("series {key} appears twice"))
        }
        other => {
            *refused = Some(other);
            Bad::new(0, "refused by the memstore")
        }
    }
}

#[cfg(test)]
mod tests {
    use ingestor_codec::Op;
    use ingestor_fs::SimFs;
    use ingestor_memstore::{GaugeState, LoadSeries, Memstore, MemstoreConfig, SlotPoint};

    use super::*;
    use crate::{SnapshotOptions, SnapshotStore};

    /// A store of `n` series of every kind (gauges, counters, histograms).
    fn store_of(n: usize) -> Memstore {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let points: Vec<SlotPoint> = (0..n)
            .map(|i| {
                let key = ingestor_codec::SeriesKey::new(
                    &format!("m{}", i % 5),
                    [("host", format!("h{i}")), ("zone", format!("z{}", i % 3))],
                )
                .unwrap();
                let op = match i % 3 {
                    0 => Op::GaugeSet(i as f64),
                    1 => Op::CounterAdd(1.0 + i as f64),
                    _ => Op::HistogramObserve(i as f64),
                };
                SlotPoint { series: store.intern(&key).unwrap(), timestamp: Timestamp(5), op }
            })
            .collect();
        store.apply(Lsn(1), &points);
        store
    }

    /// The calling thread alone (where no reading thread can be started) loads what the
    /// two threads load.
    #[test]
    fn decoding_inline_loads_what_the_reading_thread_loads() {
        let fs = Arc::new(SimFs::new(3));
        let dir = Path::new("/db/snapshots");
        let (snapshots, _) =
            SnapshotStore::open(fs.clone(), dir, SnapshotOptions::default()).unwrap();
        // Several chunks' worth.
        let original = store_of(20_000);
        let info = snapshots.write(Lsn(1), 0, &original.freeze()).unwrap();
        let opened = open(&*fs, &info.path, Lsn(1)).unwrap();
        opened.verify(&info.path).unwrap();
        let (threaded, inline) = (store_of(0), store_of(0));
        assert_eq!(opened.decode_into(&info.path, &threaded).unwrap(), 20_000);
        assert_eq!(opened.decode_inline(&info.path, &inline).unwrap(), 20_000);
        let all = |s: &Memstore| {
            let mut v: Vec<String> = s
                .freeze()
                .iter()
                .map(|r| format!("{} {:?} {:?}", r.key, r.state, r.last_update))
                .collect();
            v.sort();
            v
        };
        assert_eq!(all(&inline), all(&original));
        assert_eq!(all(&threaded), all(&original));
    }

    fn gauge() -> SeriesState {
        SeriesState::Gauge(GaugeState { value: 1.0, timestamp: Timestamp(1), lsn: Lsn(1) })
    }

    fn insert(
        store: &Memstore,
        name: &str,
        labels: &[(&str, &str)],
        refused: &mut Option<MemstoreError>,
    ) -> Result<(), Bad> {
        let series = LoadSeries { name, labels, state: gauge(), last_update: Timestamp(1) };
        match store.loader().insert_batch(vec![series]) {
            Ok(n) => {
                assert_eq!(n, 1);
                Ok(())
            }
            Err((i, e)) => {
                assert_eq!(i, 0);
                Err(refusal(17, e, refused))
            }
        }
    }

    #[test]
    fn a_bad_key_or_a_repeated_series_is_the_files_fault_at_its_offset() {
        let store = Memstore::new(MemstoreConfig::default()).unwrap();
        let mut refused = None;
        insert(&store, "up", &[("job", "a")], &mut refused).unwrap();
        let twice = insert(&store, "up", &[("job", "a")], &mut refused).unwrap_err();
        assert_eq!(twice, Bad::new(17, "series up{job=\"a\"} appears twice"));
        let bad = insert(&store, "1up", &[("job", "a")], &mut refused).unwrap_err();
        assert_eq!(bad.at, 17);
        assert!(bad.reason.starts_with("invalid series key: "), "{}", bad.reason);
        let unsorted = insert(&store, "up", &[("z", "1"), ("a", "2")], &mut refused).unwrap_err();
        assert!(unsorted.reason.starts_with("invalid series key: "), "{}", unsorted.reason);
        assert!(refused.is_none());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_series_over_the_limit_is_the_configurations_refusal() {
        let mut config = MemstoreConfig::default();
        config.max_series = 1;
        let store = Memstore::new(config).unwrap();
        let mut refused = None;
        insert(&store, "up", &[("job", "a")], &mut refused).unwrap();
        insert(&store, "up", &[("job", "b")], &mut refused).unwrap_err();
        assert!(
            matches!(refused, Some(MemstoreError::SeriesLimit { limit: 1, ref key }) if key == "up{job=\"b\"}"),
            "{refused:?}"
        );
    }
}
