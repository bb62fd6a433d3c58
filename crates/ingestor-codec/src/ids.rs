//! Identifiers: log sequence numbers, segment-local series ids, timestamps.

use std::fmt;

/// A log sequence number: the position of a record in the write-ahead log.
///
/// Every record appended to the log gets the next LSN; LSNs are dense (no gaps) and start at
/// [`Lsn::FIRST`]. A snapshot at LSN `S` holds the state after every record with LSN `<= S`;
/// [`Lsn::ZERO`] means "before the first record".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Lsn(pub u64);

impl Lsn {
    /// Before the first record: the LSN of an empty log or an empty snapshot.
    pub const ZERO: Lsn = Lsn(0);
    /// The LSN of the first record ever appended.
    pub const FIRST: Lsn = Lsn(1);

    /// The LSN that follows this one.
    #[must_use]
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }

    /// The raw number.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A series id: a small number that stands for a series key inside one log segment, so that
/// a point does not carry its whole label set.
///
/// Ids are assigned by the writer of a segment through a series-definition record and are
/// only meaningful within that segment; each segment stays readable on its own. A series id
/// is the log's alone: it is not a handle into any in-memory store (the memstore has its own,
/// `ingestor_memstore::SeriesRef`), and a reader maps it through the segment's definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct SeriesId(pub u32);

impl fmt::Display for SeriesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A timestamp in milliseconds since the Unix epoch (negative values are before 1970).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// A timestamp from milliseconds since the Unix epoch.
    #[must_use]
    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub fn as_millis(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
