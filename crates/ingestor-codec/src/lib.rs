//! The metric data model of `ingestor` and every byte format it writes: series keys, updates,
//! log sequence numbers, framed records with CRC32C, batch encoding, optional LZ4/Zstd.
//!
//! Most users want the `ingestor` facade, not this crate. This crate is pure: no I/O, no
//! threads, no clocks. The write-ahead log stores the frames it produces as opaque records.
//!
//! ```
//! use ingestor_codec::{
//!     Compression, Lsn, Op, Point, Record, SeriesDef, SeriesId, SeriesKey, Timestamp,
//!     decode_record, encode_record,
//! };
//!
//! // A series is defined once per segment, then points refer to it by a small id.
//! let key = SeriesKey::new("http_requests", [("path", "/"), ("code", "200")])?;
//! let defs = Record::SeriesDefs(vec![SeriesDef { id: SeriesId(0), key }]);
//! let batch = Record::Batch(vec![
//!     Point { series: SeriesId(0), timestamp: Timestamp(1_700_000_000_000), op: Op::CounterAdd(1.0) },
//!     Point { series: SeriesId(0), timestamp: Timestamp(1_700_000_000_250), op: Op::CounterAdd(2.0) },
//! ]);
//!
//! // Each record travels in a frame that carries its log sequence number.
//! let mut log = Vec::new();
//! encode_record(&defs, Lsn(1), Compression::None, &mut log)?;
//! let batch_len = encode_record(&batch, Lsn(2), Compression::Lz4, &mut log)?;
//! // 22 bytes of frame header, 7 of batch header, then about 5 bytes a point.
//! assert!(batch_len <= 45, "a point costs a few bytes, not its label set");
//!
//! let first = decode_record(&log)?;
//! assert_eq!((first.lsn, &first.record), (Lsn(1), &defs));
//! let second = decode_record(&log[first.frame_len..])?;
//! assert_eq!((second.lsn, &second.record), (Lsn(2), &batch));
//!
//! // Every single-bit flip is caught by the checksum.
//! log[first.frame_len + 24] ^= 0x10;
//! assert!(decode_record(&log[first.frame_len..]).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - Decoding never panics, whatever the input, and never allocates more than
//!   [`MAX_PAYLOAD_LEN`] because a length or count field says so; counts are checked
//!   against the bytes that remain.
//! - Every decode error is typed ([`DecodeErrorKind`]) and says where: the byte offset in the
//!   frame or in the record payload ([`Section`]).
//! - The frame checksum (CRC32C, masked) covers the length, the record type, the flags, the
//!   LSN and the stored payload, so any change to any of those bytes is detected, and an all-zero
//!   header never validates.
//! - Keys and values read back are validated exactly as user input is: what decodes is
//!   something the ingestor could have accepted.
//! - Encoding is deterministic: the same input gives the same bytes, pinned by golden tests.
//!
//! The byte layouts are specified in `docs/format.md` ("Frames" and "Records").

mod bytes;
pub mod crc;
pub mod duration;
mod error;
mod frame;
mod ids;
mod key;
mod record;
mod segment;
mod update;

pub use error::{DecodeError, DecodeErrorKind, EncodeError, Section, ValidationError};
pub use frame::{
    CRC_MASK_DELTA, Codec, Compression, FORMAT_VERSION, FRAME_HEADER_LEN, Frame, FrameFields,
    FrameHeader, MAX_PAYLOAD_LEN, MIN_COMPRESS_LEN, decode_frame, encode_frame, encode_frame_with,
    mask_crc, reads_version, unmask_crc,
};
pub use ids::{Lsn, SeriesId, Timestamp};
pub use key::{
    Label, MAX_LABEL_NAME_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS, MAX_METRIC_NAME_LEN, SeriesKey,
    validate_canonical,
};
pub use record::{
    BatchReader, MAX_BATCH_POINTS, MAX_SERIES_DEFS, Record, RecordType, SeriesDef,
    begin_series_defs, decode_batch, decode_series_defs, encode_batch, encode_batch_iter,
    encode_series_defs, put_series_def, visit_series_defs,
};
pub use segment::{FOLLOWS_UNSYNCED, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SegmentHeader};
pub use update::{HistogramSample, MAX_HISTOGRAM_BOUNDS, MetricKind, Op, Point, Update};

/// Appends `record` to `out` as one frame with LSN `lsn`. Returns the frame's length.
///
/// # Errors
/// An [`EncodeError`] for an invalid value or a record over the limits; `out` is then
/// unchanged.
pub fn encode_record(
    record: &Record,
    lsn: Lsn,
    compression: Compression,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError> {
    let fields = FrameFields::new(lsn, record.record_type() as u8);
    encode_frame_with(fields, compression, out, |out| record.encode(out))
}

/// A record decoded from a frame by [`decode_record`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRecord {
    /// The frame's LSN.
    pub lsn: Lsn,
    /// The record.
    pub record: Record,
    /// Bytes the frame took: the next frame starts this far on.
    pub frame_len: usize,
}

/// Decodes the frame at the start of `buf` and its record.
///
/// # Errors
/// A [`DecodeError`]: its [`Section`] says whether the offset counts in the frame or in the
/// (decompressed) record payload.
pub fn decode_record(buf: &[u8]) -> Result<DecodedRecord, DecodeError> {
    let frame = decode_frame(buf)?;
    let record = Record::decode(frame.record_type, &frame.payload)?;
    Ok(DecodedRecord { lsn: frame.lsn, record, frame_len: frame.frame_len })
}

/// The crate README's example (also the tour of the repository's README, which CI keeps
/// identical to it), compiled and run as a doctest so that it stays true. The path stays
/// inside the crate, so the published package carries what it includes.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeTour;
