//! The header of a log segment file.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "INGSTWAL"
//!      8     2  format version (u16 LE), FORMAT_VERSION
//!     10     1  flags: bit 0 FOLLOWS_UNSYNCED (see SegmentHeader::follows_unsynced,
//!                   from version 3), the other bits reserved, zero
//!     11     1  reserved, zero
//!     12     8  first LSN of the segment (u64 LE); the file is named after it
//!     20     4  masked CRC32C of bytes 0..20
//! ```
//!
//! `docs/format.md` ("Segment files") is the specification.

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::{FORMAT_VERSION, mask_crc, reads_version, unmask_crc};
use crate::ids::Lsn;

/// The magic number at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"INGSTWAL";
/// Bytes in a segment header; the first frame starts here.
pub const SEGMENT_HEADER_LEN: usize = 24;

const _: () = assert!(SEGMENT_HEADER_LEN == 24);

/// The flag of [`SegmentHeader::follows_unsynced`] in byte 10 of a header.
pub const FOLLOWS_UNSYNCED: u8 = 1;

/// A segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The LSN of the segment's first frame.
    pub first_lsn: Lsn,
    /// Set when the segment was opened before the segment ahead of it was synced (a
    /// rotation that syncs the ended segment in the background), and cleared (the header
    /// rewritten, then synced) once that sync is done and before any record of this
    /// segment counts as durable. While it is set on disk, the segment ahead may end in a
    /// torn tail, and this segment holds nothing acknowledged as durable.
    pub follows_unsynced: bool,
}

impl SegmentHeader {
    /// The header's bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        if self.follows_unsynced {
            out[10] = FOLLOWS_UNSYNCED;
        }
        out[12..20].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        let crc = mask_crc(crc32c::crc32c(&out[..20]));
        out[20..24].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses and verifies a header.
    ///
    /// # Errors
    /// A [`DecodeError`] (offsets count from the start of the file): an all-zero header,
    /// a wrong magic number, a checksum mismatch, an unknown version, or a flag or reserved
    /// bit this version does not know.
    pub fn decode(bytes: &[u8; SEGMENT_HEADER_LEN]) -> Result<SegmentHeader, DecodeError> {
        let err = |offset: usize, kind| DecodeError::frame(offset, kind);
        if bytes.iter().all(|&b| b == 0) {
            return Err(err(0, DecodeErrorKind::Zeroed));
        }
        let stored = unmask_crc(u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]));
        let computed = crc32c::crc32c(&bytes[..20]);
        if stored != computed {
            return Err(err(20, DecodeErrorKind::ChecksumMismatch { stored, computed }));
        }
        if bytes[..8] != SEGMENT_MAGIC {
            return Err(err(0, DecodeErrorKind::BadMagic));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if !reads_version(version) {
            return Err(err(8, DecodeErrorKind::UnsupportedVersion(version)));
        }
        // Version 3 gave bit 0 of byte 10 a meaning; every other flag bit is reserved.
        let known = if version >= 3 { FOLLOWS_UNSYNCED } else { 0 };
        if bytes[10] & !known != 0 || bytes[11] != 0 {
            return Err(err(10, DecodeErrorKind::UnknownFlags((bytes[10] & !known) | bytes[11])));
        }
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&bytes[12..20]);
        Ok(SegmentHeader {
            first_lsn: Lsn(u64::from_le_bytes(lsn)),
            follows_unsynced: bytes[10] & FOLLOWS_UNSYNCED != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bit_flip_is_detected() {
        for follows_unsynced in [false, true] {
            let header = SegmentHeader { first_lsn: Lsn(123_456), follows_unsynced };
            let bytes = header.encode();
            assert_eq!(bytes[10], u8::from(follows_unsynced));
            assert_eq!(SegmentHeader::decode(&bytes).unwrap(), header);
            for bit in 0..SEGMENT_HEADER_LEN * 8 {
                let mut flipped = bytes;
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert!(SegmentHeader::decode(&flipped).is_err(), "bit {bit}");
            }
        }
        assert_eq!(
            SegmentHeader::decode(&[0; SEGMENT_HEADER_LEN]).unwrap_err().kind,
            DecodeErrorKind::Zeroed
        );
    }

    fn with_version(version: u16) -> [u8; SEGMENT_HEADER_LEN] {
        let mut bytes = SegmentHeader { first_lsn: Lsn(7), follows_unsynced: false }.encode();
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        let crc = mask_crc(crc32c::crc32c(&bytes[..20]));
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn newer_and_zero_versions_are_refused() {
        for version in [0, FORMAT_VERSION + 1, u16::MAX] {
            assert_eq!(
                SegmentHeader::decode(&with_version(version)).unwrap_err().kind,
                DecodeErrorKind::UnsupportedVersion(version)
            );
        }
    }

    #[test]
    fn flags_other_than_follows_unsynced_are_refused() {
        for (byte, value, unknown) in [(10, 2u8, 2), (10, 0x81, 0x80), (11, 1, 1), (11, 0x80, 0x80)]
        {
            let mut bytes = SegmentHeader { first_lsn: Lsn(7), follows_unsynced: false }.encode();
            bytes[byte] = value;
            let crc = mask_crc(crc32c::crc32c(&bytes[..20]));
            bytes[20..24].copy_from_slice(&crc.to_le_bytes());
            let err = SegmentHeader::decode(&bytes).unwrap_err();
            assert_eq!((err.offset, err.kind), (10, DecodeErrorKind::UnknownFlags(unknown)));
        }
    }

    #[test]
    fn a_version_2_header_has_no_flags() {
        let mut bytes = with_version(2);
        assert!(!SegmentHeader::decode(&bytes).unwrap().follows_unsynced);
        bytes[10] = FOLLOWS_UNSYNCED;
        let crc = mask_crc(crc32c::crc32c(&bytes[..20]));
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        let err = SegmentHeader::decode(&bytes).unwrap_err();
        assert_eq!((err.offset, err.kind), (10, DecodeErrorKind::UnknownFlags(FOLLOWS_UNSYNCED)));
    }

    #[test]
    fn every_earlier_version_is_read() {
        for version in 1..=FORMAT_VERSION {
            let header = SegmentHeader::decode(&with_version(version)).unwrap();
            assert_eq!(header.first_lsn, Lsn(7), "version {version}");
        }
    }
}
