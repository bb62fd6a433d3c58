//! The bytes of a snapshot file: header, chunks, trailer, and the series records inside a
//! chunk.
//!
//! ```text
//! offset        size  field
//!      0          44  header (SNAPSHOT_HEADER_LEN)
//!     44           …  chunks, each: 12-byte chunk header, then its stored bytes
//!   len - 28      28  trailer (SNAPSHOT_TRAILER_LEN)
//! ```
//!
//! `docs/format.md` ("Snapshot files") is the specification; `tests/golden.rs` pins it.

use std::collections::HashMap;
use std::sync::Arc;

use ingestor_codec::{
    FORMAT_VERSION, Lsn, MAX_LABEL_NAME_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS, MAX_METRIC_NAME_LEN,
    Timestamp, mask_crc, unmask_crc,
};
use ingestor_memstore::{CounterState, GaugeState, HistogramState, SeriesRecord, SeriesState};
use integer_encoding::VarInt;

/// The magic number at the start of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"INGSTSNP";
/// The magic number at the start of a snapshot's trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"INGSTEND";
/// Bytes in a snapshot header; the first chunk starts here.
pub const SNAPSHOT_HEADER_LEN: usize = 44;
/// Bytes in a chunk header (raw length, stored length, checksum).
pub const CHUNK_HEADER_LEN: usize = 12;
/// Bytes in a snapshot trailer; it ends the file.
pub const SNAPSHOT_TRAILER_LEN: usize = 28;
/// The largest raw (decompressed) or stored length of one chunk: 64 MiB. A reader refuses a
/// larger one before allocating; a writer fails rather than write one.
pub const MAX_CHUNK_LEN: usize = 64 << 20;

/// A writer closes a chunk once its raw content reaches this many bytes, even before it holds
/// `chunk_series` series, so that huge keys cannot push a chunk past [`MAX_CHUNK_LEN`].
/// (Writer policy, not part of the format: a reader accepts any chunk within the limit.)
pub(crate) const CHUNK_TARGET_LEN: usize = 4 << 20;

const _: () = assert!(SNAPSHOT_HEADER_LEN == 44);
const _: () = assert!(CHUNK_HEADER_LEN == 12);
const _: () = assert!(SNAPSHOT_TRAILER_LEN == 28);
const _: () = assert!(MAX_CHUNK_LEN <= u32::MAX as usize);
const _: () = assert!(CHUNK_TARGET_LEN < MAX_CHUNK_LEN / 2);

/// Kind tags of series records.
const TAG_COUNTER: u8 = 1;
const TAG_GAUGE: u8 = 2;
const TAG_HISTOGRAM: u8 = 3;

/// How every chunk of a file is stored (the header's compression byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    None = 0,
    Lz4 = 1,
    Zstd = 2,
}

impl Codec {
    fn from_byte(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::None),
            1 => Some(Codec::Lz4),
            2 => Some(Codec::Zstd),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// Something wrong with bytes: where (counted from a start the caller knows) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bad {
    pub(crate) at: u64,
    pub(crate) reason: String,
}

impl Bad {
    pub(crate) fn new(at: u64, reason: impl Into<String>) -> Bad {
        Bad { at, reason: reason.into() }
    }
}

fn le_u32(b: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*b)
}

/// The fixed-size header at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) codec: Codec,
    pub(crate) lsn: Lsn,
    pub(crate) series: u64,
    pub(crate) created_ms: i64,
}

/// Splits a fixed array into fixed sub-arrays without indexing that could panic.
fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; SNAPSHOT_HEADER_LEN] {
        let mut out = [0u8; SNAPSHOT_HEADER_LEN];
        out[..8].copy_from_slice(&SNAPSHOT_MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10] = self.codec as u8;
        // 11..16 reserved, zero.
        out[16..24].copy_from_slice(&self.lsn.0.to_le_bytes());
        out[24..32].copy_from_slice(&self.series.to_le_bytes());
        out[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = mask_crc(crc32c::crc32c(&out[..40]));
        out[40..44].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and verifies a header; offsets count from the start of the file.
    pub(crate) fn decode(bytes: &[u8; SNAPSHOT_HEADER_LEN]) -> Result<Header, Bad> {
        if field::<8>(bytes, 0) != SNAPSHOT_MAGIC {
            return Err(Bad::new(0, "bad magic number: not a snapshot file"));
        }
        let stored = unmask_crc(le_u32(&field(bytes, 40)));
        let computed = crc32c::crc32c(bytes.get(..40).unwrap_or_default());
        if stored != computed {
            return Err(Bad::new(
                40,
                format!(
                    "header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
                ),
            ));
        }
        let version = u16::from_le_bytes(field(bytes, 8));
        if !ingestor_codec::reads_version(version) {
            return Err(Bad::new(8, format!("unsupported format version {version}")));
        }
        let [codec_byte] = field::<1>(bytes, 10);
        let codec = Codec::from_byte(codec_byte)
            .ok_or_else(|| Bad::new(10, format!("unknown compression {codec_byte}")))?;
        if field::<5>(bytes, 11) != [0; 5] {
            return Err(Bad::new(11, "reserved header bytes are not zero"));
        }
        Ok(Header {
            codec,
            lsn: Lsn(u64::from_le_bytes(field(bytes, 16))),
            series: u64::from_le_bytes(field(bytes, 24)),
            created_ms: i64::from_le_bytes(field(bytes, 32)),
        })
    }
}

/// A chunk header: lengths and the checksum of the lengths and the stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkHeader {
    pub(crate) raw_len: u32,
    pub(crate) stored_len: u32,
    pub(crate) masked_crc: u32,
}

impl ChunkHeader {
    /// The header of a chunk whose stored bytes are `stored`.
    pub(crate) fn for_stored(raw_len: u32, stored: &[u8]) -> ChunkHeader {
        let stored_len = stored.len() as u32;
        let mut lens = [0u8; 8];
        lens[..4].copy_from_slice(&raw_len.to_le_bytes());
        lens[4..].copy_from_slice(&stored_len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&lens), stored);
        ChunkHeader { raw_len, stored_len, masked_crc: mask_crc(crc) }
    }

    pub(crate) fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut out = [0u8; CHUNK_HEADER_LEN];
        out[..4].copy_from_slice(&self.raw_len.to_le_bytes());
        out[4..8].copy_from_slice(&self.stored_len.to_le_bytes());
        out[8..12].copy_from_slice(&self.masked_crc.to_le_bytes());
        out
    }

    /// Parses a chunk header and checks its lengths against the limits and `codec`; offsets
    /// count from the start of the chunk.
    pub(crate) fn parse(bytes: &[u8; CHUNK_HEADER_LEN], codec: Codec) -> Result<ChunkHeader, Bad> {
        let h = ChunkHeader {
            raw_len: le_u32(&field(bytes, 0)),
            stored_len: le_u32(&field(bytes, 4)),
            masked_crc: le_u32(&field(bytes, 8)),
        };
        for (at, what, len) in [(0, "raw", h.raw_len), (4, "stored", h.stored_len)] {
            if len as usize > MAX_CHUNK_LEN {
                return Err(Bad::new(
                    at,
                    format!("chunk {what} length {len} is above the limit of {MAX_CHUNK_LEN}"),
                ));
            }
        }
        if codec == Codec::None && h.raw_len != h.stored_len {
            return Err(Bad::new(
                0,
                format!(
                    "uncompressed chunk with raw length {} and stored length {}",
                    h.raw_len, h.stored_len
                ),
            ));
        }
        Ok(h)
    }

    /// Verifies the checksum against the stored bytes; offsets count from the chunk.
    pub(crate) fn verify(&self, stored: &[u8]) -> Result<(), Bad> {
        let expected = ChunkHeader::for_stored(self.raw_len, stored);
        if expected.stored_len != self.stored_len || expected.masked_crc != self.masked_crc {
            return Err(Bad::new(
                8,
                format!(
                    "chunk checksum mismatch: stored {:#010x}, computed {:#010x}",
                    unmask_crc(self.masked_crc),
                    unmask_crc(expected.masked_crc)
                ),
            ));
        }
        Ok(())
    }
}

/// The trailer's fields before its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub(crate) chunks: u64,
    pub(crate) series: u64,
    /// The masked CRC32C of every byte of the file before it.
    pub(crate) masked_crc: u32,
}

impl Trailer {
    /// The trailer's first 24 bytes, which the whole-file checksum covers.
    pub(crate) fn body(chunks: u64, series: u64) -> [u8; SNAPSHOT_TRAILER_LEN - 4] {
        let mut out = [0u8; SNAPSHOT_TRAILER_LEN - 4];
        out[..8].copy_from_slice(&TRAILER_MAGIC);
        out[8..16].copy_from_slice(&chunks.to_le_bytes());
        out[16..24].copy_from_slice(&series.to_le_bytes());
        out
    }

    /// Parses a trailer; offsets count from the start of the trailer.
    pub(crate) fn parse(bytes: &[u8; SNAPSHOT_TRAILER_LEN]) -> Result<Trailer, Bad> {
        if field::<8>(bytes, 0) != TRAILER_MAGIC {
            return Err(Bad::new(
                0,
                "no trailer where the file ends: the file is truncated or was not completely \
                 written",
            ));
        }
        Ok(Trailer {
            chunks: u64::from_le_bytes(field(bytes, 8)),
            series: u64::from_le_bytes(field(bytes, 16)),
            masked_crc: le_u32(&field(bytes, 24)),
        })
    }
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 10];
    let n = v.encode_var(&mut buf);
    out.extend_from_slice(&buf[..n]);
}

pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 10];
    let n = v.encode_var(&mut buf);
    out.extend_from_slice(&buf[..n]);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Builds the raw content of one chunk: a `u32` series count, then series records. Histogram
/// bounds are defined once per chunk and referred to afterwards.
#[derive(Debug, Default)]
pub(crate) struct ChunkEncoder {
    raw: Vec<u8>,
    series: u32,
    bounds: Vec<Arc<[f64]>>,
}

impl ChunkEncoder {
    pub(crate) fn series(&self) -> u32 {
        self.series
    }

    pub(crate) fn raw_len(&self) -> usize {
        self.raw.len()
    }

    pub(crate) fn push(&mut self, record: &SeriesRecord) {
        if self.raw.is_empty() {
            self.raw.extend_from_slice(&[0; 4]);
        }
        let out = &mut self.raw;
        put_str(out, record.key.name());
        put_uvarint(out, record.key.labels().len() as u64);
        for label in record.key.labels() {
            put_str(out, label.name());
            put_str(out, label.value());
        }
        match &record.state {
            SeriesState::Counter(c) => {
                out.push(TAG_COUNTER);
                put_f64(out, c.total);
                put_uvarint(out, c.resets);
                match c.last_reset {
                    None => out.push(0),
                    Some(ts) => {
                        out.push(1);
                        put_ivarint(out, ts.0);
                    }
                }
            }
            SeriesState::Gauge(g) => {
                out.push(TAG_GAUGE);
                // Deliberate defect: a gauge's value is stored narrowed to 32 bits.
                #[cfg(ingestor_deliberate_bugs)]
                let value = if crate::bugs::on("snapshot-gauge-f32") {
                    f64::from(g.value as f32)
                } else {
                    g.value
                };
                #[cfg(not(ingestor_deliberate_bugs))]
                let value = g.value;
                put_f64(out, value);
                put_ivarint(out, g.timestamp.0);
                put_uvarint(out, g.lsn.0);
            }
            SeriesState::Histogram(h) => {
                out.push(TAG_HISTOGRAM);
                let same = |b: &Arc<[f64]>| {
                    Arc::ptr_eq(b, &h.bounds)
                        || (b.len() == h.bounds.len()
                            && b.iter()
                                .zip(h.bounds.iter())
                                .all(|(x, y)| x.to_bits() == y.to_bits()))
                };
                match self.bounds.iter().position(same) {
                    Some(i) => put_uvarint(out, i as u64 + 1),
                    None => {
                        put_uvarint(out, 0);
                        put_uvarint(out, h.bounds.len() as u64);
                        for &b in h.bounds.iter() {
                            put_f64(out, b);
                        }
                        self.bounds.push(Arc::clone(&h.bounds));
                    }
                }
                debug_assert_eq!(h.buckets.len(), h.bounds.len() + 1, "memstore invariant");
                for &n in h.buckets.iter() {
                    put_uvarint(out, n);
                }
                put_uvarint(out, h.count);
                put_f64(out, h.sum);
                put_f64(out, h.min);
                put_f64(out, h.max);
            }
        }
        // Deliberate defect: the series' last update time is not kept (written as 0).
        #[cfg(ingestor_deliberate_bugs)]
        let last_update =
            if crate::bugs::on("snapshot-drop-last-update") { 0 } else { record.last_update.0 };
        #[cfg(not(ingestor_deliberate_bugs))]
        let last_update = record.last_update.0;
        put_ivarint(out, last_update);
        self.series += 1;
    }

    /// The finished raw content; the encoder is empty again afterwards.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        if let Some(count) = self.raw.get_mut(..4) {
            count.copy_from_slice(&self.series.to_le_bytes());
        }
        self.series = 0;
        self.bounds.clear();
        std::mem::take(&mut self.raw)
    }
}

/// A bounds-checked cursor over a chunk's raw content; errors carry the offset in it.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn bad(&self, at: usize, reason: impl Into<String>) -> Bad {
        Bad::new(at as u64, reason)
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], Bad> {
        let out = self.pos.checked_add(n).and_then(|end| self.buf.get(self.pos..end));
        match out {
            Some(out) => {
                self.pos += n;
                Ok(out)
            }
            None => Err(self.bad(
                self.pos,
                format!("truncated {what}: {n} bytes needed, {} left", self.remaining()),
            )),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8, Bad> {
        Ok(self.bytes(1, what)?.first().copied().unwrap_or_default())
    }

    fn f64(&mut self, what: &str) -> Result<f64, Bad> {
        Ok(f64::from_le_bytes(field(self.bytes(8, what)?, 0)))
    }

    fn uvarint(&mut self, what: &str) -> Result<u64, Bad> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match u64::decode_var(rest) {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(self.bad(self.pos, format!("malformed or truncated varint ({what})"))),
        }
    }

    fn ivarint(&mut self, what: &str) -> Result<i64, Bad> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match i64::decode_var(rest) {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(self.bad(self.pos, format!("malformed or truncated varint ({what})"))),
        }
    }

    /// A count that must not exceed `limit`, nor the bytes left divided by `min_item_len`.
    #[inline]
    fn count(&mut self, limit: u64, min_item_len: usize, what: &str) -> Result<usize, Bad> {
        let at = self.pos;
        let n = self.uvarint(what)?;
        // (A product, not a quotient: a division on every string cost more than the rest.)
        let needed = n.saturating_mul(min_item_len.max(1) as u64);
        if n > limit || needed > self.remaining() as u64 {
            return Err(self.bad(
                at,
                format!("{what} is {n}: more than the limit of {limit} or than the bytes present"),
            ));
        }
        Ok(n as usize)
    }

    // Always inlined: a string returned through memory costs a stall on each (a snapshot of
    // a million series holds ten million).
    #[inline(always)]
    fn str(&mut self, max_len: usize, what: &str) -> Result<&'a str, Bad> {
        let len = self.count(max_len as u64, 1, what)?;
        let at = self.pos;
        let bytes = self.bytes(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text),
            Err(_) => Err(self.bad(at, format!("{what} is not valid UTF-8"))),
        }
    }
}

/// One series of a chunk, its key in parts borrowed from the chunk: labels in canonical
/// order (checked), the strings not yet validated as a key (the sink does that).
pub(crate) struct SeriesParts<'a, 'b> {
    pub(crate) name: &'a str,
    pub(crate) labels: &'b [(&'a str, &'a str)],
    pub(crate) state: SeriesState,
    pub(crate) last_update: Timestamp,
}

/// Decodes a chunk's series, handing each to `sink` with the offset where it starts (where
/// an invalid key is to be reported); builds no key.
pub(crate) fn decode_chunk_parts<'a>(
    raw: &'a [u8],
    shared: &mut HashMap<Vec<u64>, Arc<[f64]>>,
    mut sink: impl FnMut(usize, SeriesParts<'a, '_>) -> Result<(), Bad>,
) -> Result<u64, Bad> {
    let mut c = Cursor { buf: raw, pos: 0 };
    let count = u32::from_le_bytes(field(c.bytes(4, "series count")?, 0));
    let mut table: Vec<Arc<[f64]>> = Vec::new();
    let mut labels = Vec::with_capacity(MAX_LABELS.min(16));
    for _ in 0..count {
        let at = c.pos;
        let series = decode_series(&mut c, &mut labels, &mut table, shared)?;
        sink(at, series)?;
    }
    if c.remaining() != 0 {
        return Err(
            c.bad(c.pos, format!("{} unexpected bytes after the last series", c.remaining()))
        );
    }
    Ok(u64::from(count))
}

fn decode_series<'a, 'b>(
    c: &mut Cursor<'a>,
    labels: &'b mut Vec<(&'a str, &'a str)>,
    table: &mut Vec<Arc<[f64]>>,
    shared: &mut HashMap<Vec<u64>, Arc<[f64]>>,
) -> Result<SeriesParts<'a, 'b>, Bad> {
    let name = c.str(MAX_METRIC_NAME_LEN, "metric name")?;
    // A label takes at least two bytes (two empty strings), so the count is bounded by the
    // bytes present before anything is allocated.
    let n = c.count(MAX_LABELS as u64, 2, "label count")?;
    labels.clear();
    for _ in 0..n {
        let at = c.pos;
        let label = c.str(MAX_LABEL_NAME_LEN, "label name")?;
        let value = c.str(MAX_LABEL_VALUE_LEN, "label value")?;
        if labels.last().is_some_and(|(prev, _)| *prev >= label) {
            return Err(c.bad(
                at,
                format!("label {label:?} is out of canonical order (names must strictly increase)"),
            ));
        }
        labels.push((label, value));
    }
    let tag_at = c.pos;
    let state = match c.u8("kind tag")? {
        TAG_COUNTER => {
            let total = c.f64("counter total")?;
            let resets = c.uvarint("counter resets")?;
            let flag_at = c.pos;
            let last_reset = match c.u8("last reset flag")? {
                0 => None,
                1 => Some(Timestamp(c.ivarint("last reset")?)),
                other => {
                    return Err(c.bad(flag_at, format!("last reset flag is {other}, not 0 or 1")));
                }
            };
            SeriesState::Counter(CounterState { total, resets, last_reset })
        }
        TAG_GAUGE => {
            let value = c.f64("gauge value")?;
            let timestamp = Timestamp(c.ivarint("gauge timestamp")?);
            let lsn = Lsn(c.uvarint("gauge LSN")?);
            SeriesState::Gauge(GaugeState { value, timestamp, lsn })
        }
        TAG_HISTOGRAM => SeriesState::Histogram(Box::new(decode_histogram(c, table, shared)?)),
        other => return Err(c.bad(tag_at, format!("unknown kind tag {other}"))),
    };
    let last_update = Timestamp(c.ivarint("last update")?);
    Ok(SeriesParts { name, labels, state, last_update })
}

fn decode_histogram(
    c: &mut Cursor<'_>,
    table: &mut Vec<Arc<[f64]>>,
    shared: &mut HashMap<Vec<u64>, Arc<[f64]>>,
) -> Result<HistogramState, Bad> {
    let ref_at = c.pos;
    let reference = c.uvarint("bounds reference")?;
    let bounds = if reference == 0 {
        let n = c.count(u64::MAX, 8, "bound count")?;
        let at = c.pos;
        let mut bits = Vec::with_capacity(n);
        for _ in 0..n {
            bits.push(c.f64("bound")?.to_bits());
        }
        let ok = bits.iter().all(|&b| f64::from_bits(b).is_finite())
            && bits.windows(2).all(|w| f64::from_bits(w[0]) < f64::from_bits(w[1]));
        if !ok {
            return Err(c.bad(at, "histogram bounds are not finite and strictly increasing"));
        }
        let bounds = match shared.get(&bits) {
            Some(b) => Arc::clone(b),
            None => {
                let b: Arc<[f64]> = bits.iter().map(|&x| f64::from_bits(x)).collect();
                shared.insert(bits, Arc::clone(&b));
                b
            }
        };
        table.push(Arc::clone(&bounds));
        bounds
    } else {
        let index = usize::try_from(reference - 1).unwrap_or(usize::MAX);
        match table.get(index) {
            Some(b) => Arc::clone(b),
            None => {
                return Err(c.bad(
                    ref_at,
                    format!(
                        "bounds reference {reference}, but only {} bounds are defined",
                        table.len()
                    ),
                ));
            }
        }
    };
    let buckets_at = c.pos;
    // Each bucket is a varint of at least one byte.
    let n = bounds.len() + 1;
    if n > c.remaining() {
        return Err(c.bad(buckets_at, format!("truncated buckets: {n} expected")));
    }
    let mut buckets = Vec::with_capacity(n);
    let mut total: u64 = 0;
    for _ in 0..n {
        let b = c.uvarint("bucket")?;
        total = total.checked_add(b).ok_or_else(|| c.bad(buckets_at, "bucket counts overflow"))?;
        buckets.push(b);
    }
    let count_at = c.pos;
    let count = c.uvarint("histogram count")?;
    if count != total {
        return Err(c.bad(
            count_at,
            format!("histogram count {count} is not the sum {total} of its buckets"),
        ));
    }
    let sum = c.f64("histogram sum")?;
    let min = c.f64("histogram min")?;
    let max = c.f64("histogram max")?;
    Ok(HistogramState { bounds, buckets: buckets.into_boxed_slice(), count, sum, min, max })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingestor_codec::SeriesKey;

    /// Decodes the raw content of one chunk, handing each series to `sink` with its offset in
    /// the content. Histogram bounds equal to ones seen before (in `shared`) reuse their `Arc`.
    /// Returns how many series the chunk held.
    fn decode_chunk(
        raw: &[u8],
        shared: &mut HashMap<Vec<u64>, Arc<[f64]>>,
        mut sink: impl FnMut(usize, SeriesRecord) -> Result<(), Bad>,
    ) -> Result<u64, Bad> {
        decode_chunk_parts(raw, shared, |at, series| {
            let key = SeriesKey::from_canonical(series.name, series.labels)
                .map_err(|e| Bad::new(at as u64, format!("invalid series key: {e}")))?;
            sink(at, SeriesRecord { key, state: series.state, last_update: series.last_update })
        })
    }

    fn sample() -> Vec<SeriesRecord> {
        let bounds: Arc<[f64]> = Arc::from([0.5, 1.0, 2.0].as_slice());
        let key = |n: &str, v: &str| SeriesKey::new(n, [("host", v), ("job", "ü")]).unwrap();
        vec![
            SeriesRecord {
                key: key("c", "a"),
                state: SeriesState::Counter(CounterState {
                    total: 12.5,
                    resets: 2,
                    last_reset: Some(Timestamp(-7)),
                }),
                last_update: Timestamp(i64::MAX),
            },
            SeriesRecord {
                key: SeriesKey::new("g", Vec::<(&str, &str)>::new()).unwrap(),
                state: SeriesState::Gauge(GaugeState {
                    value: -0.0,
                    timestamp: Timestamp(i64::MIN),
                    lsn: Lsn(u64::MAX),
                }),
                last_update: Timestamp(i64::MIN),
            },
            SeriesRecord {
                key: key("h", "b"),
                state: SeriesState::Histogram(Box::new(HistogramState {
                    bounds: Arc::clone(&bounds),
                    buckets: vec![1, 0, 2, 3].into_boxed_slice(),
                    count: 6,
                    sum: f64::NAN,
                    min: 0.1,
                    max: f64::INFINITY,
                })),
                last_update: Timestamp(5),
            },
            SeriesRecord {
                key: key("h", "c"),
                state: SeriesState::Histogram(Box::new(HistogramState::new(bounds))),
                last_update: Timestamp(6),
            },
        ]
    }

    fn encode(records: &[SeriesRecord]) -> Vec<u8> {
        let mut enc = ChunkEncoder::default();
        for r in records {
            enc.push(r);
        }
        enc.take()
    }

    fn decode(raw: &[u8]) -> Result<Vec<SeriesRecord>, Bad> {
        let mut out = Vec::new();
        decode_chunk(raw, &mut HashMap::new(), |_, r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    fn bits(records: &[SeriesRecord]) -> String {
        // Debug output of f64 loses nothing but NaN payloads and the sign of zero is kept;
        // compare the re-encoded bytes instead, which are bit-exact.
        format!("{:?}", encode(records))
    }

    #[test]
    fn chunk_round_trips_bit_exactly() {
        let records = sample();
        let raw = encode(&records);
        let back = decode(&raw).unwrap();
        assert_eq!(bits(&back), bits(&records));
        assert_eq!(back.len(), 4);
        let (SeriesState::Histogram(a), SeriesState::Histogram(b)) =
            (&back[2].state, &back[3].state)
        else {
            panic!("histograms expected")
        };
        assert!(Arc::ptr_eq(&a.bounds, &b.bounds), "bounds are shared after loading");
    }

    #[test]
    fn header_round_trips_and_every_bit_flip_is_detected() {
        let h = Header { codec: Codec::Zstd, lsn: Lsn(77), series: 3, created_ms: -1 };
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes).unwrap(), h);
        for bit in 0..SNAPSHOT_HEADER_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&flipped).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn chunk_checksum_covers_lengths_and_bytes() {
        let stored = b"some stored bytes".to_vec();
        let h = ChunkHeader::for_stored(17, &stored);
        h.verify(&stored).unwrap();
        let bytes = h.encode();
        for bit in 0..64 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            let ok = ChunkHeader::parse(&flipped, Codec::Lz4).and_then(|p| p.verify(&stored));
            assert!(ok.is_err(), "bit {bit}");
        }
        let mut bad = stored.clone();
        bad[3] ^= 4;
        assert_eq!(h.verify(&bad).unwrap_err().at, 8);
    }

    #[test]
    fn no_input_makes_the_chunk_decoder_panic() {
        let raw = encode(&sample());
        let mut rng = ingestor_testkit::Rng::new(0x5eed);
        for round in 0..20_000 {
            let mut bytes = raw.clone();
            match round % 4 {
                0 => {
                    let i = rng.next_u64() as usize % bytes.len();
                    bytes[i] ^= 1 << (rng.next_u64() % 8);
                }
                1 => bytes.truncate(rng.next_u64() as usize % bytes.len()),
                2 => {
                    let i = rng.next_u64() as usize % bytes.len();
                    bytes[i] = rng.next_u64() as u8;
                    let j = rng.next_u64() as usize % bytes.len();
                    bytes[j] = 0xff;
                }
                _ => bytes = (0..rng.next_u64() % 64).map(|_| rng.next_u64() as u8).collect(),
            }
            let _ = decode(&bytes);
            let mut header = [0u8; SNAPSHOT_HEADER_LEN];
            for b in &mut header {
                *b = rng.next_u64() as u8;
            }
            let _ = Header::decode(&header);
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocation() {
        let mut raw = vec![1, 0, 0, 0];
        put_str(&mut raw, "h");
        put_uvarint(&mut raw, 0);
        raw.push(TAG_HISTOGRAM);
        put_uvarint(&mut raw, 0);
        put_uvarint(&mut raw, u64::MAX / 2);
        let err = decode(&raw).unwrap_err();
        assert!(err.reason.contains("bound count"), "{err:?}");
    }
}
