//! Frames: a record payload with its length, type, flags and a masked CRC32C.
//!
//! ```text
//! offset  size  field
//!      0     4  masked CRC32C (u32 LE) of bytes 4 .. 22 + len
//!      4     4  len: payload bytes as stored (u32 LE), at most MAX_PAYLOAD_LEN
//!      8     1  record type (1..=255, opaque to the frame layer; 0 is invalid)
//!      9     1  flags: bits 0-1 compression (0 none, 1 LZ4, 2 Zstd); bits 2-7 zero
//!     10     8  LSN of the record (u64 LE)
//!     18     4  durable lag (u32 LE): LSN minus the log's durable LSN when the frame was
//!               written (saturating); 0 = not known
//!     22   len  payload; when compressed: uvarint decompressed length, then the compressed bytes
//! ```
//!
//! `docs/format.md` ("Frames") is the specification; `tests/golden.rs` pins it.

use std::borrow::Cow;

use crate::bytes::{Reader, put_uvarint};
use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::ids::Lsn;

/// The version of the frame and record formats described in `docs/format.md`. Segment and
/// snapshot headers carry it; a reader reads every version from 1 to this one and refuses a
/// newer one. Any change to the bytes a writer produces for the same input bumps it.
///
/// Version 2 added the histogram sample operation (code 7) to batch records; version 3, the
/// segment header's flag `follows_unsynced` (see [`crate::SegmentHeader`]).
pub const FORMAT_VERSION: u16 = 3;

/// Whether this build reads files of format `version`: every version from 1 to
/// [`FORMAT_VERSION`].
#[must_use]
pub fn reads_version(version: u16) -> bool {
    (1..=FORMAT_VERSION).contains(&version)
}
/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 22;
/// The largest payload a frame may carry, stored or decompressed: 32 MiB.
pub const MAX_PAYLOAD_LEN: usize = 32 << 20;
/// Payloads shorter than this are never compressed: the gain cannot pay for the work.
pub const MIN_COMPRESS_LEN: usize = 128;
/// Added to the rotated CRC, so that an all-zero header never carries a valid checksum (the
/// mask of LevelDB and RocksDB).
pub const CRC_MASK_DELTA: u32 = 0xa282_ead8;

const _: () = assert!(FRAME_HEADER_LEN == 22);
const _: () = assert!(MAX_PAYLOAD_LEN <= u32::MAX as usize);

/// Masks a CRC32C for storage: rotate right by 15 bits and add [`CRC_MASK_DELTA`].
#[must_use]
#[inline]
pub fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(CRC_MASK_DELTA)
}

/// Reverses [`mask_crc`].
#[must_use]
#[inline]
pub fn unmask_crc(masked: u32) -> u32 {
    masked.wrapping_sub(CRC_MASK_DELTA).rotate_left(15)
}

/// The compression codec of a stored payload, from a frame's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Codec {
    /// Stored as is.
    None = 0,
    /// LZ4 block format (`lz4_flex`).
    Lz4 = 1,
    /// Zstandard (`zstd`).
    Zstd = 2,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// The compression an encoder tries. A payload is stored compressed only when that makes
/// the frame smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Compression {
    /// Never compress. Default.
    #[default]
    None,
    /// LZ4: fast, modest ratio.
    Lz4,
    /// Zstandard at the given level (1 to 22; 3 is zstd's default).
    Zstd {
        /// The compression level.
        level: i32,
    },
}

/// A parsed frame header, before its checksum is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The checksum as stored (masked).
    pub masked_crc: u32,
    /// Payload bytes as stored.
    pub payload_len: u32,
    /// The record type (opaque to the frame layer; never 0).
    pub record_type: u8,
    /// How the payload is stored.
    pub codec: Codec,
    /// The record's log sequence number.
    pub lsn: Lsn,
    /// How far the log's durable point was behind this frame when it was written (see
    /// [`FrameFields::durable_lag`]); 0 if not known.
    pub durable_lag: u32,
}

/// Whether every byte of a header is zero: out of line and cold, so that a valid header (its
/// first 8 bytes non-zero) does not pay for the test, which the compiler otherwise computes
/// beside the cheap one and joins without a branch.
#[cold]
#[inline(never)]
fn all_zero(bytes: &[u8; FRAME_HEADER_LEN]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

impl FrameHeader {
    /// Parses a header: refuses an all-zero header ([`DecodeErrorKind::Zeroed`]), record
    /// type 0, an unknown flag, and a length above [`MAX_PAYLOAD_LEN`]. The checksum can only be
    /// verified with the payload, by [`FrameHeader::verify`].
    ///
    /// # Errors
    /// A [`DecodeError`] with an offset counted from the start of the frame.
    #[inline]
    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, DecodeError> {
        // A frame's first 8 bytes (checksum, length) are rarely all zero: look at the rest
        // only then.
        let start = u64::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ]);
        if start == 0 && all_zero(bytes) {
            return Err(DecodeError::frame(0, DecodeErrorKind::Zeroed));
        }
        let masked_crc = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let payload_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if payload_len as usize > MAX_PAYLOAD_LEN {
            return Err(DecodeError::frame(
                4,
                DecodeErrorKind::LimitExceeded {
                    what: "frame payload length",
                    limit: MAX_PAYLOAD_LEN as u64,
                    found: u64::from(payload_len),
                },
            ));
        }
        let record_type = bytes[8];
        if record_type == 0 {
            return Err(DecodeError::frame(8, DecodeErrorKind::UnknownRecordType(0)));
        }
        let flags = bytes[9];
        let codec = match flags {
            0 => Codec::None,
            1 => Codec::Lz4,
            2 => Codec::Zstd,
            _ => return Err(DecodeError::frame(9, DecodeErrorKind::UnknownFlags(flags))),
        };
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&bytes[10..18]);
        Ok(FrameHeader {
            masked_crc,
            payload_len,
            record_type,
            codec,
            lsn: Lsn(u64::from_le_bytes(lsn)),
            durable_lag: u32::from_le_bytes([bytes[18], bytes[19], bytes[20], bytes[21]]),
        })
    }

    /// The whole frame's length: header plus stored payload.
    #[must_use]
    #[inline]
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload_len as usize
    }

    /// Verifies the checksum over the header's length, type, flags and LSN (`header[4..]`)
    /// and the stored payload.
    ///
    /// # Errors
    /// [`DecodeErrorKind::ChecksumMismatch`], at offset 0 of the frame.
    pub fn verify(
        &self,
        header: &[u8; FRAME_HEADER_LEN],
        stored_payload: &[u8],
    ) -> Result<(), DecodeError> {
        let computed = crate::crc::crc32c_append(crate::crc::crc32c(&header[4..]), stored_payload);
        let stored = unmask_crc(self.masked_crc);
        if computed != stored {
            return Err(DecodeError::frame(
                0,
                DecodeErrorKind::ChecksumMismatch { stored, computed },
            ));
        }
        Ok(())
    }

    /// Verifies the checksum of a whole frame held in one slice (header then stored
    /// payload): one CRC pass instead of two, for readers that have the frame contiguous.
    ///
    /// # Errors
    /// [`DecodeErrorKind::ChecksumMismatch`], at offset 0 of the frame; truncation if `frame`
    /// is shorter than [`FrameHeader::frame_len`].
    #[inline]
    pub fn verify_frame(&self, frame: &[u8]) -> Result<(), DecodeError> {
        let Some(covered) = frame.get(4..self.frame_len()) else {
            return Err(DecodeError::frame(
                0,
                DecodeErrorKind::Truncated {
                    needed: self.frame_len() as u64,
                    available: frame.len() as u64,
                },
            ));
        };
        let computed = crate::crc::crc32c(covered);
        let stored = unmask_crc(self.masked_crc);
        if computed != stored {
            return Err(DecodeError::frame(
                0,
                DecodeErrorKind::ChecksumMismatch { stored, computed },
            ));
        }
        Ok(())
    }

    /// Turns a verified stored payload into the record payload, decompressing if needed.
    /// Never allocates more than [`MAX_PAYLOAD_LEN`].
    ///
    /// # Errors
    /// A [`DecodeError`] with an offset counted from the start of the frame.
    #[inline]
    pub fn decode_payload<'a>(
        &self,
        stored_payload: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, DecodeError> {
        if self.codec == Codec::None {
            return Ok(Cow::Borrowed(stored_payload));
        }
        let mut r = Reader::new(stored_payload);
        let to_frame =
            |e: DecodeError| DecodeError::frame(FRAME_HEADER_LEN + e.offset as usize, e.kind);
        let declared = r
            .uvarint_max(MAX_PAYLOAD_LEN as u64, "decompressed payload length")
            .map_err(to_frame)? as usize;
        let compressed = &stored_payload[r.pos()..];
        let at = FRAME_HEADER_LEN + r.pos();
        let codec = self.codec.name();
        let fail =
            |reason: String| DecodeError::frame(at, DecodeErrorKind::Decompress { codec, reason });
        let out = match self.codec {
            Codec::Lz4 => lz4_flex::block::decompress(compressed, declared)
                .map_err(|e| fail(e.to_string()))?,
            Codec::Zstd => {
                zstd::bulk::decompress(compressed, declared).map_err(|e| fail(e.to_string()))?
            }
            Codec::None => unreachable!("handled above"),
        };
        if out.len() != declared {
            return Err(fail(format!("{} bytes decompressed, {declared} declared", out.len())));
        }
        Ok(Cow::Owned(out))
    }
}

/// A decoded frame: its LSN, record type and (decompressed) payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record's log sequence number.
    pub lsn: Lsn,
    /// See [`FrameFields::durable_lag`].
    pub durable_lag: u32,
    /// The record type (never 0).
    pub record_type: u8,
    /// How the payload was stored.
    pub codec: Codec,
    /// The record payload, decompressed.
    pub payload: Cow<'a, [u8]>,
    /// Bytes the frame took in the input: header plus stored payload.
    pub frame_len: usize,
}

/// Decodes the frame at the start of `buf` (bytes after it are ignored): parses the header,
/// verifies the checksum, decompresses.
///
/// # Errors
/// A [`DecodeError`] with an offset counted from the start of `buf`: truncated, zeroed,
/// unknown type or flags, length over the limit, checksum mismatch, or bad compression.
pub fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let Some(header_bytes) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(DecodeError::frame(
            0,
            DecodeErrorKind::Truncated {
                needed: FRAME_HEADER_LEN as u64,
                available: buf.len() as u64,
            },
        ));
    };
    let header = FrameHeader::parse(header_bytes)?;
    let Some(stored) = buf.get(FRAME_HEADER_LEN..header.frame_len()) else {
        return Err(DecodeError::frame(
            FRAME_HEADER_LEN,
            DecodeErrorKind::Truncated {
                needed: u64::from(header.payload_len),
                available: (buf.len() - FRAME_HEADER_LEN) as u64,
            },
        ));
    };
    header.verify_frame(&buf[..header.frame_len()])?;
    let payload = header.decode_payload(stored)?;
    Ok(Frame {
        lsn: header.lsn,
        durable_lag: header.durable_lag,
        record_type: header.record_type,
        codec: header.codec,
        payload,
        frame_len: header.frame_len(),
    })
}

/// The header fields a writer chooses for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameFields {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The record type, 1 to 255 (0 is reserved: no reader accepts it).
    pub record_type: u8,
    /// `lsn` minus the log's durable LSN at the moment the frame is written, saturated to
    /// `u32::MAX`; 0 when the writer does not know. A reader that finds a damaged frame with
    /// LSN `e` followed by a valid frame with LSN `l` and lag `g > 0` knows that `e` had been
    /// synced before the later frame was written exactly when `l - g >= e`: the damage is
    /// then to durable data, not a torn write.
    pub durable_lag: u32,
}

impl FrameFields {
    /// Fields for a frame with no durable-lag information.
    #[must_use]
    pub fn new(lsn: Lsn, record_type: u8) -> FrameFields {
        FrameFields { lsn, record_type, durable_lag: 0 }
    }
}

/// Appends one frame to `out`, writing the payload with `write_payload` directly into `out`
/// (no copy when the payload is stored uncompressed). Returns the frame's length.
///
/// # Panics
/// If `record_type` is 0, which no reader accepts (a caller's bug, not an input error).
///
/// # Errors
/// The error of `write_payload`, or [`EncodeError::LimitExceeded`] for a payload above
/// [`MAX_PAYLOAD_LEN`]; `out` is then unchanged.
pub fn encode_frame_with(
    fields: FrameFields,
    compression: Compression,
    out: &mut Vec<u8>,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    assert_ne!(fields.record_type, 0, "record type 0 is reserved: no reader accepts it");
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    if let Err(e) = write_payload(out) {
        out.truncate(start);
        return Err(e);
    }
    let payload_start = start + FRAME_HEADER_LEN;
    let raw_len = out.len() - payload_start;
    if raw_len > MAX_PAYLOAD_LEN {
        out.truncate(start);
        return Err(EncodeError::LimitExceeded {
            what: "payload bytes",
            limit: MAX_PAYLOAD_LEN as u64,
            found: raw_len as u64,
        });
    }
    let codec = if raw_len >= MIN_COMPRESS_LEN {
        compress_in_place(compression, out, payload_start)
    } else {
        Codec::None
    };
    let payload_len = (out.len() - payload_start) as u32;
    out[start + 4..start + 8].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 8] = fields.record_type;
    out[start + 9] = codec as u8;
    out[start + 10..start + 18].copy_from_slice(&fields.lsn.0.to_le_bytes());
    out[start + 18..start + 22].copy_from_slice(&fields.durable_lag.to_le_bytes());
    let crc = crate::crc::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&mask_crc(crc).to_le_bytes());
    Ok(out.len() - start)
}

/// Replaces `out[payload_start..]` by its compressed form if that is smaller.
fn compress_in_place(compression: Compression, out: &mut Vec<u8>, payload_start: usize) -> Codec {
    let raw = &out[payload_start..];
    let (codec, compressed) = match compression {
        Compression::None => return Codec::None,
        Compression::Lz4 => (Codec::Lz4, lz4_flex::block::compress(raw)),
        Compression::Zstd { level } => match zstd::bulk::compress(raw, level) {
            Ok(c) => (Codec::Zstd, c),
            // Compression is an optimisation: on failure the payload is stored as is.
            Err(_) => return Codec::None,
        },
    };
    let mut prefix = Vec::with_capacity(10);
    put_uvarint(&mut prefix, raw.len() as u64);
    if prefix.len() + compressed.len() >= raw.len() {
        return Codec::None;
    }
    out.truncate(payload_start);
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&compressed);
    codec
}

/// Appends one frame holding `payload` to `out`. Returns the frame's length.
///
/// # Errors
/// [`EncodeError::LimitExceeded`] for a payload above [`MAX_PAYLOAD_LEN`].
///
/// # Panics
/// If `record_type` is 0.
pub fn encode_frame(
    lsn: Lsn,
    record_type: u8,
    payload: &[u8],
    compression: Compression,
    out: &mut Vec<u8>,
) -> Result<usize, EncodeError> {
    encode_frame_with(FrameFields::new(lsn, record_type), compression, out, |out| {
        out.extend_from_slice(payload);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_round_trips_and_zero_header_never_validates() {
        for crc in [0, 1, 0xdead_beef, u32::MAX] {
            assert_eq!(unmask_crc(mask_crc(crc)), crc);
        }
        // The CRC of an empty frame with every header field zero is not zero once masked.
        assert_ne!(mask_crc(crc32c::crc32c(&[0; FRAME_HEADER_LEN - 4])), 0);
        assert_eq!(decode_frame(&[0; 32]).unwrap_err().kind, DecodeErrorKind::Zeroed);
    }

    #[test]
    fn compression_is_used_only_when_it_shrinks() {
        let compressible = vec![7u8; 4096];
        let mut rng = ingestor_testkit::Rng::new(0x9e37_79b9_7f4a_7c15);
        let incompressible: Vec<u8> = (0..4096).map(|_| (rng.next_u64() >> 56) as u8).collect();
        for compression in [Compression::Lz4, Compression::Zstd { level: 3 }] {
            let mut out = Vec::new();
            encode_frame(Lsn(7), 1, &compressible, compression, &mut out).unwrap();
            let frame = decode_frame(&out).unwrap();
            assert_ne!(frame.codec, Codec::None);
            assert!(out.len() < 200, "{} bytes", out.len());
            assert_eq!(frame.payload.as_ref(), compressible.as_slice());

            let mut out = Vec::new();
            encode_frame(Lsn(7), 1, &incompressible, compression, &mut out).unwrap();
            assert_eq!(decode_frame(&out).unwrap().codec, Codec::None);
            assert_eq!(out.len(), FRAME_HEADER_LEN + incompressible.len());
        }
        let mut out = Vec::new();
        encode_frame(Lsn(7), 1, &[7u8; MIN_COMPRESS_LEN - 1], Compression::Lz4, &mut out).unwrap();
        assert_eq!(decode_frame(&out).unwrap().codec, Codec::None);
    }

    #[test]
    fn truncation_is_reported_with_offsets() {
        let mut out = Vec::new();
        encode_frame(Lsn(7), 1, b"hello", Compression::None, &mut out).unwrap();
        let err = decode_frame(&out[..4]).unwrap_err();
        assert_eq!(err.offset, 0);
        assert!(matches!(err.kind, DecodeErrorKind::Truncated { needed: 22, available: 4 }));
        let err = decode_frame(&out[..24]).unwrap_err();
        assert_eq!(err.offset, 22);
        assert!(matches!(err.kind, DecodeErrorKind::Truncated { needed: 5, available: 2 }));
    }

    #[test]
    fn header_fields_are_checked() {
        let mut out = Vec::new();
        encode_frame(Lsn(7), 1, b"x", Compression::None, &mut out).unwrap();
        assert_eq!(decode_frame(&out).unwrap().lsn, Lsn(7));
        let mut bad = out.clone();
        bad[8] = 0;
        assert_eq!(decode_frame(&bad).unwrap_err().kind, DecodeErrorKind::UnknownRecordType(0));
        let mut bad = out.clone();
        bad[9] = 0x04;
        assert_eq!(decode_frame(&bad).unwrap_err().kind, DecodeErrorKind::UnknownFlags(0x04));
        let mut bad = out.clone();
        bad[4..8].copy_from_slice(&(MAX_PAYLOAD_LEN as u32 + 1).to_le_bytes());
        assert!(matches!(
            decode_frame(&bad).unwrap_err().kind,
            DecodeErrorKind::LimitExceeded { .. }
        ));
    }

    #[test]
    fn oversized_payloads_are_refused_and_leave_nothing() {
        let mut out = vec![1, 2, 3];
        let err =
            encode_frame_with(FrameFields::new(Lsn(7), 1), Compression::None, &mut out, |out| {
                out.resize(out.len() + MAX_PAYLOAD_LEN + 1, 0);
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, EncodeError::LimitExceeded { .. }));
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn lying_decompressed_length_is_an_error_not_an_allocation() {
        let payload = vec![1u8; 1000];
        let mut out = Vec::new();
        encode_frame(Lsn(7), 1, &payload, Compression::Lz4, &mut out).unwrap();
        // Rewrite the declared length (a 2-byte varint for 1000) to 999 and fix the checksum.
        assert_eq!(&out[22..24], &[0xe8, 0x07]);
        out[22] = 0xe7;
        let crc = crc32c::crc32c(&out[4..]);
        out[..4].copy_from_slice(&mask_crc(crc).to_le_bytes());
        let err = decode_frame(&out).unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::Decompress { codec: "lz4", .. }), "{err}");
    }
}
