//! The codec's errors: validation of user input, encoding, and decoding of bytes.

use std::fmt;

/// Input that breaks a rule of the data model; names the field and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The metric name breaks a naming rule.
    #[error("metric name {name:?} is invalid: {reason}")]
    MetricName {
        /// The name (at most 64 characters of it).
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A label name breaks a naming rule.
    #[error("label name {name:?} is invalid: {reason}")]
    LabelName {
        /// The name (at most 64 characters of it).
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A label value breaks a rule.
    #[error("value of label {label:?} is invalid: {reason}")]
    LabelValue {
        /// The label's name.
        label: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The same label name appears twice.
    #[error("label {name:?} appears more than once")]
    DuplicateLabel {
        /// The repeated name.
        name: String,
    },
    /// More labels than allowed.
    #[error("more than {max} labels")]
    TooManyLabels {
        /// The limit, [`crate::MAX_LABELS`].
        max: usize,
    },
    /// An operation's value breaks a rule.
    #[error("{op} value {value} is invalid: {reason}")]
    Value {
        /// The operation, for example `counter_add`.
        op: &'static str,
        /// The value given.
        value: f64,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A histogram sample breaks a rule.
    #[error("{op} is invalid: {reason}")]
    Histogram {
        /// The operation, for example `histogram_set`.
        op: &'static str,
        /// The rule it breaks, with the values that break it.
        reason: String,
    },
}

/// Why a record could not be encoded. Nothing is left in the output buffer when it fails.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An item of the record is invalid.
    #[error("item {index} of the record is invalid: {source}")]
    Invalid {
        /// The item's index in the input.
        index: usize,
        /// What is wrong with it.
        source: ValidationError,
    },
    /// The record is larger than a decoder accepts.
    #[error("the record has {found} {what}, more than the limit of {limit}")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// How many there were.
        found: u64,
    },
}

/// Which bytes a [`DecodeError`]'s offset counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The frame (or, for a file header, the file): offset 0 is the first byte of the header.
    Frame,
    /// The record payload, after decompression: offset 0 is its first byte.
    Payload,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Frame => "frame",
            Section::Payload => "record payload",
        })
    }
}

/// Bytes that do not decode: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at byte {offset} of the {section}: {kind}")]
pub struct DecodeError {
    /// What the offset counts from.
    pub section: Section,
    /// The offset of the first byte that could not be decoded.
    pub offset: u64,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) fn frame(offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { section: Section::Frame, offset: offset as u64, kind }
    }

    pub(crate) fn payload(offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { section: Section::Payload, offset: offset as u64, kind }
    }
}

/// What is wrong with bytes that do not decode.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ends before the item does.
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the item needs from the offset on.
        needed: u64,
        /// Bytes there are from the offset on.
        available: u64,
    },
    /// The frame header is all zeros: the end of written data in a preallocated file.
    #[error("all-zero frame header (unwritten, preallocated space)")]
    Zeroed,
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum in the header (unmasked).
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// A file does not start with the magic number of its kind.
    #[error("bad magic number: not a file of this kind")]
    BadMagic,
    /// A file's format version is one this build does not read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// The record type byte names no known record type.
    #[error("unknown record type {0}")]
    UnknownRecordType(u8),
    /// The flags byte has bits set that this version does not know.
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    /// A varint is longer than 10 bytes, overflows, or is cut off.
    #[error("malformed varint")]
    BadVarint,
    /// A count or length is larger than the format allows.
    #[error("{what} is {found}, more than the limit of {limit}")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// The value found.
        found: u64,
    },
    /// A string is not valid UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: &'static str,
    },
    /// A series key breaks the data model's rules.
    #[error("invalid series key: {0}")]
    InvalidKey(ValidationError),
    /// A frame or segment carries another LSN than the one its position calls for.
    #[error("LSN {found} where LSN {expected} was expected")]
    LsnMismatch {
        /// The LSN the position calls for.
        expected: u64,
        /// The LSN found.
        found: u64,
    },
    /// An operation tag names no known operation, or has unknown bits set.
    #[error("unknown operation tag {0:#04x}")]
    UnknownOp(u8),
    /// An operation's value breaks the data model's rules.
    #[error("invalid value: {0}")]
    InvalidValue(ValidationError),
    /// A compressed payload does not decompress to its declared length.
    #[error("{codec} payload does not decompress: {reason}")]
    Decompress {
        /// `lz4` or `zstd`.
        codec: &'static str,
        /// What the decompressor said, or the length mismatch.
        reason: String,
    },
    /// Bytes follow the end of a record's content.
    #[error("{0} unexpected bytes after the end of the record")]
    TrailingBytes(u64),
}
