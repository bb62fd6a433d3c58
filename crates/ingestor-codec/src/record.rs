//! Record payloads: series definitions and batches of points.
//!
//! The byte layout is specified in `docs/format.md` ("Records"); the golden tests in
//! `tests/golden.rs` pin it.

use crate::bytes::{Reader, put_ivarint, put_str, put_uvarint};
use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::ids::{SeriesId, Timestamp};
use crate::key::{
    MAX_LABEL_NAME_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS, MAX_METRIC_NAME_LEN, SeriesKey,
    validate_canonical,
};
use crate::update::{HistogramSample, MAX_HISTOGRAM_BOUNDS, Op, Point};

/// The most points one batch record may hold.
pub const MAX_BATCH_POINTS: usize = 1 << 20;
/// The most definitions one series-definition record may hold.
pub const MAX_SERIES_DEFS: usize = 1 << 20;

/// The smallest encoded point: a one-byte id, a one-byte delta, a tag and no value.
const MIN_POINT_LEN: usize = 3;

/// Operation codes in the low three bits of a point's tag byte.
const OP_COUNTER_ADD: u8 = 1;
const OP_COUNTER_SET: u8 = 2;
const OP_GAUGE_SET: u8 = 3;
const OP_GAUGE_ADD: u8 = 4;
const OP_HISTOGRAM_OBSERVE: u8 = 5;
const OP_DELETE: u8 = 6;
/// A histogram sample (set or add, by the mode byte that follows the tag).
const OP_HISTOGRAM_SAMPLE: u8 = 7;
const OP_MASK: u8 = 0x07;
/// Modes of [`OP_HISTOGRAM_SAMPLE`].
const SAMPLE_SET: u8 = 0;
const SAMPLE_ADD: u8 = 1;
/// Tag bit: the value is stored as a zigzag varint integer instead of 8 bytes of f64.
const TAG_INT_VALUE: u8 = 0x08;
/// Integers at or above this magnitude are stored as f64 (the varint would not be shorter).
const INT_VALUE_LIMIT: i64 = 1 << 48;

/// The type of a metric record, stored as the type byte of its frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordType {
    /// Series definitions: segment-local [`SeriesId`] to [`SeriesKey`].
    SeriesDefs = 1,
    /// A batch of points that refer to series by id.
    Batch = 2,
}

impl RecordType {
    /// The record type stored as `byte`, if it is one.
    #[must_use]
    pub fn from_byte(byte: u8) -> Option<RecordType> {
        match byte {
            1 => Some(RecordType::SeriesDefs),
            2 => Some(RecordType::Batch),
            _ => None,
        }
    }
}

/// One series definition: from now on in this segment, `id` stands for `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesDef {
    /// The segment-local id.
    pub id: SeriesId,
    /// The series it stands for.
    pub key: SeriesKey,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Series definitions.
    SeriesDefs(Vec<SeriesDef>),
    /// A batch of points.
    Batch(Vec<Point>),
}

impl Record {
    /// The record's type.
    #[must_use]
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::SeriesDefs(_) => RecordType::SeriesDefs,
            Record::Batch(_) => RecordType::Batch,
        }
    }

    /// Encodes the record's payload, appending it to `out`.
    ///
    /// # Errors
    /// As [`encode_series_defs`] and [`encode_batch`]; `out` is then unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Record::SeriesDefs(defs) => encode_series_defs(defs, out),
            Record::Batch(points) => encode_batch(points, out),
        }
    }

    /// Decodes a payload whose frame has type byte `record_type`.
    ///
    /// # Errors
    /// [`DecodeErrorKind::UnknownRecordType`] for a type byte that is not a [`RecordType`];
    /// otherwise a [`DecodeError`] whose offset counts from the start of `payload`.
    pub fn decode(record_type: u8, payload: &[u8]) -> Result<Record, DecodeError> {
        match RecordType::from_byte(record_type) {
            Some(RecordType::SeriesDefs) => decode_series_defs(payload).map(Record::SeriesDefs),
            Some(RecordType::Batch) => decode_batch(payload).map(Record::Batch),
            None => Err(DecodeError::payload(0, DecodeErrorKind::UnknownRecordType(record_type))),
        }
    }
}

fn limit(what: &'static str, limit: usize, found: usize) -> EncodeError {
    EncodeError::LimitExceeded { what, limit: limit as u64, found: found as u64 }
}

/// Encodes series definitions, appending the payload to `out`.
///
/// # Errors
/// [`EncodeError::LimitExceeded`] above [`MAX_SERIES_DEFS`] definitions; `out` is unchanged.
pub fn encode_series_defs(defs: &[SeriesDef], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    begin_series_defs(defs.len(), out)?;
    for def in defs {
        let labels = def.key.labels().iter().map(|l| (l.name(), l.value()));
        put_series_def(def.id, def.key.name(), labels, out);
    }
    Ok(())
}

/// Begins a series-definition payload of `count` definitions, to be followed by exactly
/// `count` calls of [`put_series_def`]: the same bytes as [`encode_series_defs`], for keys
/// held as parts (no [`SeriesKey`] built).
///
/// # Errors
/// [`EncodeError::LimitExceeded`] above [`MAX_SERIES_DEFS`] definitions; `out` is unchanged.
pub fn begin_series_defs(count: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if count > MAX_SERIES_DEFS {
        return Err(limit("series definitions", MAX_SERIES_DEFS, count));
    }
    put_uvarint(out, count as u64);
    Ok(())
}

/// Appends one series definition to a payload begun with [`begin_series_defs`]: its id, and
/// a valid key as its metric name and its labels in canonical order (sorted by name).
pub fn put_series_def<'a>(
    id: SeriesId,
    name: &str,
    labels: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    out: &mut Vec<u8>,
) {
    put_uvarint(out, u64::from(id.0));
    put_str(out, name);
    put_uvarint(out, labels.len() as u64);
    for (n, v) in labels {
        put_str(out, n);
        put_str(out, v);
    }
}

/// Decodes a series-definition payload. Every key is validated as [`SeriesKey::new`] would.
///
/// # Errors
/// A [`DecodeError`] whose offset counts from the start of `payload`.
pub fn decode_series_defs(payload: &[u8]) -> Result<Vec<SeriesDef>, DecodeError> {
    let mut defs = Vec::new();
    visit_series_defs(payload, |id, name, labels| {
        defs.push(SeriesDef { id, key: SeriesKey::from_checked(name, labels) });
    })?;
    Ok(defs)
}

/// Reads a series-definition payload without building keys: hands each definition's id,
/// metric name and labels (in canonical order), borrowed from `payload` and validated as
/// [`SeriesKey::new`] would, to `each`. Replay uses it to look series up without allocating.
/// `each` sees the definitions before a damaged one; on error, drop what it built.
///
/// # Errors
/// A [`DecodeError`] whose offset counts from the start of `payload`.
pub fn visit_series_defs<'a>(
    payload: &'a [u8],
    mut each: impl FnMut(SeriesId, &'a str, &[(&'a str, &'a str)]),
) -> Result<(), DecodeError> {
    let mut r = Reader::new(payload);
    let count = r.uvarint_max(MAX_SERIES_DEFS as u64, "series definition count")? as usize;
    let mut labels: Vec<(&'a str, &'a str)> = Vec::new();
    for _ in 0..count {
        let at = r.pos();
        let id = r.uvarint_max(u64::from(u32::MAX), "series id")?;
        let name = r.str(MAX_METRIC_NAME_LEN, "metric name")?;
        let label_count = r.uvarint_max(MAX_LABELS as u64, "label count")? as usize;
        labels.clear();
        for _ in 0..label_count {
            let label_name = r.str(MAX_LABEL_NAME_LEN, "label name")?;
            let value = r.str(MAX_LABEL_VALUE_LEN, "label value")?;
            labels.push((label_name, value));
        }
        validate_canonical(name, &labels).map_err(|e| r.err(at, DecodeErrorKind::InvalidKey(e)))?;
        each(SeriesId(id as u32), name, &labels);
    }
    r.finish()
}

/// Encodes a batch of points, appending the payload to `out`.
///
/// Timestamps are delta-encoded from one point to the next; integral values below 2^48 take
/// a varint instead of eight bytes, so a typical point costs 4 to 6 bytes.
///
/// # Errors
/// [`EncodeError::Invalid`] for a value [`Op::validate`] refuses, and
/// [`EncodeError::LimitExceeded`] above [`MAX_BATCH_POINTS`] points; `out` is then unchanged.
pub fn encode_batch(points: &[Point], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_batch_iter(points.iter().map(|p| (p.series, p.timestamp, &p.op)), out)
}

/// Encodes a batch of points handed over as `(series id, timestamp, operation)`, appending
/// the payload to `out`: the same bytes as [`encode_batch`] of the same points, for a caller
/// that holds its points in another shape (the `ingestor` facade maps its memstore's handles
/// to the segment's series ids here, without building a `Vec<Point>`).
///
/// ```
/// use ingestor_codec::{Op, Point, SeriesId, Timestamp, encode_batch, encode_batch_iter};
/// let op = Op::CounterAdd(2.0);
/// let mut a = Vec::new();
/// encode_batch_iter([(SeriesId(7), Timestamp(1_000), &op)], &mut a)?;
/// let mut b = Vec::new();
/// encode_batch(&[Point { series: SeriesId(7), timestamp: Timestamp(1_000), op }], &mut b)?;
/// assert_eq!(a, b);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`encode_batch`]; `out` is then unchanged.
pub fn encode_batch_iter<'a, I>(points: I, out: &mut Vec<u8>) -> Result<(), EncodeError>
where
    I: IntoIterator<Item = (SeriesId, Timestamp, &'a Op)>,
    I::IntoIter: ExactSizeIterator,
{
    let mut points = points.into_iter().peekable();
    let len = points.len();
    if len > MAX_BATCH_POINTS {
        return Err(limit("points", MAX_BATCH_POINTS, len));
    }
    let start = out.len();
    out.reserve(len * 6 + 12);
    put_uvarint(out, len as u64);
    let mut prev_ts = points.peek().map_or(0, |p| p.1.0);
    put_ivarint(out, prev_ts);
    for (index, (series, timestamp, op)) in points.enumerate() {
        if let Err(source) = op.validate() {
            out.truncate(start);
            return Err(EncodeError::Invalid { index, source });
        }
        put_uvarint(out, u64::from(series.0));
        put_ivarint(out, timestamp.0.wrapping_sub(prev_ts));
        prev_ts = timestamp.0;
        let (code, value) = match *op {
            Op::CounterAdd(v) => (OP_COUNTER_ADD, v),
            Op::CounterSet(v) => (OP_COUNTER_SET, v),
            Op::GaugeSet(v) => (OP_GAUGE_SET, v),
            Op::GaugeAdd(v) => (OP_GAUGE_ADD, v),
            Op::HistogramObserve(v) => (OP_HISTOGRAM_OBSERVE, v),
            Op::HistogramSet(ref s) => {
                put_sample(out, SAMPLE_SET, s);
                continue;
            }
            Op::HistogramAdd(ref s) => {
                put_sample(out, SAMPLE_ADD, s);
                continue;
            }
            Op::Delete => {
                out.push(OP_DELETE);
                continue;
            }
        };
        let int = value as i64;
        if (int as f64).to_bits() == value.to_bits() && int.abs() < INT_VALUE_LIMIT {
            out.push(code | TAG_INT_VALUE);
            put_ivarint(out, int);
        } else {
            out.push(code);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    Ok(())
}

/// Writes a histogram sample's tag, mode, bounds, buckets and sum (validated by the caller).
fn put_sample(out: &mut Vec<u8>, mode: u8, sample: &HistogramSample) {
    out.push(OP_HISTOGRAM_SAMPLE);
    out.push(mode);
    put_uvarint(out, sample.bounds.len() as u64);
    for bound in sample.bounds.iter() {
        out.extend_from_slice(&bound.to_le_bytes());
    }
    for &n in sample.buckets.iter() {
        put_uvarint(out, n);
    }
    out.extend_from_slice(&sample.sum.to_le_bytes());
}

/// Reads a histogram sample after its tag; `at` is the tag's offset, for errors.
fn read_sample(r: &mut Reader<'_>, at: usize) -> Result<Op, DecodeError> {
    let mode = r.u8()?;
    if mode != SAMPLE_SET && mode != SAMPLE_ADD {
        let kind = DecodeErrorKind::LimitExceeded {
            what: "histogram sample mode",
            limit: u64::from(SAMPLE_ADD),
            found: u64::from(mode),
        };
        return Err(r.err(at + 1, kind));
    }
    let n = r.uvarint_max(MAX_HISTOGRAM_BOUNDS as u64, "histogram bound count")? as usize;
    // Never trust a count for an allocation: the bounds must be there, 8 bytes each.
    let raw = r.bytes(n * 8)?;
    let bounds: Vec<f64> = raw
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8")))
        .collect();
    let mut buckets = Vec::with_capacity((n + 1).min(r.remaining()));
    for _ in 0..=n {
        buckets.push(r.uvarint()?);
    }
    let sum = r.f64_le()?;
    let sample = HistogramSample { bounds: bounds.into(), buckets: buckets.into(), sum };
    let op = if mode == SAMPLE_SET {
        Op::HistogramSet(sample.into())
    } else {
        Op::HistogramAdd(sample.into())
    };
    op.validate().map_err(|e| r.err(at, DecodeErrorKind::InvalidValue(e)))?;
    Ok(op)
}

/// Reads the points of a batch payload one at a time, without collecting them.
///
/// ```
/// use ingestor_codec::{BatchReader, Op, Point, SeriesId, Timestamp, encode_batch};
/// let points = [Point { series: SeriesId(3), timestamp: Timestamp(1_000), op: Op::GaugeSet(0.5) }];
/// let mut payload = Vec::new();
/// encode_batch(&points, &mut payload)?;
/// let reader = BatchReader::new(&payload)?;
/// assert_eq!(reader.len(), 1);
/// let decoded: Vec<Point> = reader.collect::<Result<_, _>>()?;
/// assert_eq!(decoded, points);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BatchReader<'a> {
    r: Reader<'a>,
    left: usize,
    prev_ts: i64,
    failed: bool,
}

impl<'a> BatchReader<'a> {
    /// Starts reading a batch payload.
    ///
    /// # Errors
    /// A [`DecodeError`] if the batch header (count and base timestamp) does not decode.
    pub fn new(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let left = r.uvarint_max(MAX_BATCH_POINTS as u64, "point count")? as usize;
        let prev_ts = r.ivarint()?;
        Ok(BatchReader { r, left, prev_ts, failed: false })
    }

    /// How many points are left to read.
    #[must_use]
    pub fn len(&self) -> usize {
        self.left
    }

    /// Whether every point has been read.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    #[inline]
    fn point(&mut self) -> Result<Point, DecodeError> {
        let r = &mut self.r;
        let id = r.uvarint_max(u64::from(u32::MAX), "series id")?;
        // Deltas wrap on both sides, so every pair of i64 timestamps round-trips.
        let timestamp = self.prev_ts.wrapping_add(r.ivarint()?);
        self.prev_ts = timestamp;
        let at = r.pos();
        let tag = r.u8()?;
        if tag & !(OP_MASK | TAG_INT_VALUE) != 0 {
            return Err(r.err(at, DecodeErrorKind::UnknownOp(tag)));
        }
        let code = tag & OP_MASK;
        if code == OP_HISTOGRAM_SAMPLE {
            if tag != OP_HISTOGRAM_SAMPLE {
                return Err(r.err(at, DecodeErrorKind::UnknownOp(tag)));
            }
            let op = read_sample(r, at)?;
            return Ok(Point { series: SeriesId(id as u32), timestamp: Timestamp(timestamp), op });
        }
        if code == OP_DELETE {
            if tag != OP_DELETE {
                return Err(r.err(at, DecodeErrorKind::UnknownOp(tag)));
            }
            return Ok(Point {
                series: SeriesId(id as u32),
                timestamp: Timestamp(timestamp),
                op: Op::Delete,
            });
        }
        let value = if tag & TAG_INT_VALUE != 0 { r.ivarint()? as f64 } else { r.f64_le()? };
        let op = match code {
            OP_COUNTER_ADD => Op::CounterAdd(value),
            OP_COUNTER_SET => Op::CounterSet(value),
            OP_GAUGE_SET => Op::GaugeSet(value),
            OP_GAUGE_ADD => Op::GaugeAdd(value),
            OP_HISTOGRAM_OBSERVE => Op::HistogramObserve(value),
            _ => return Err(r.err(at, DecodeErrorKind::UnknownOp(tag))),
        };
        op.validate().map_err(|e| r.err(at, DecodeErrorKind::InvalidValue(e)))?;
        Ok(Point { series: SeriesId(id as u32), timestamp: Timestamp(timestamp), op })
    }
}

impl Iterator for BatchReader<'_> {
    type Item = Result<Point, DecodeError>;

    // Inlined into the caller's loop: a point returned through memory costs a stall on
    // every point (replay decodes millions).
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.left == 0 {
            // Bytes after the last point are corruption, reported once.
            if let Err(e) = self.r.finish() {
                self.failed = true;
                return Some(Err(e));
            }
            return None;
        }
        self.left -= 1;
        let item = self.point();
        self.failed = item.is_err();
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left + 1))
    }
}

/// Decodes a whole batch payload.
///
/// # Errors
/// A [`DecodeError`] whose offset counts from the start of `payload`.
pub fn decode_batch(payload: &[u8]) -> Result<Vec<Point>, DecodeError> {
    let reader = BatchReader::new(payload)?;
    // Never trust a count for an allocation: no more points than the bytes could hold.
    let mut points = Vec::with_capacity(reader.len().min(payload.len() / MIN_POINT_LEN));
    for point in reader {
        points.push(point?);
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(series: u32, ts: i64, op: Op) -> Point {
        Point { series: SeriesId(series), timestamp: Timestamp(ts), op }
    }

    #[test]
    fn integral_values_take_a_varint_and_others_eight_bytes() {
        let mut small = Vec::new();
        encode_batch(&[p(1, 10, Op::CounterAdd(1.0))], &mut small).unwrap();
        // count, base ts (2 bytes), id, delta, tag, value.
        assert_eq!(small.len(), 1 + 1 + 1 + 1 + 1 + 1);
        let mut float = Vec::new();
        encode_batch(&[p(1, 10, Op::CounterAdd(1.5))], &mut float).unwrap();
        assert_eq!(float.len(), small.len() - 1 + 8);
    }

    #[test]
    fn values_keep_their_exact_bits() {
        let values = [0.0, -0.0, 1.0, -1.0, 1e300, 2f64.powi(48), 2f64.powi(48) - 1.0, 0.1, -7.0];
        let points: Vec<Point> = values.iter().map(|&v| p(2, 5, Op::GaugeSet(v))).collect();
        let mut out = Vec::new();
        encode_batch(&points, &mut out).unwrap();
        let back = decode_batch(&out).unwrap();
        for (a, b) in points.iter().zip(&back) {
            assert_eq!(a.op.value().unwrap().to_bits(), b.op.value().unwrap().to_bits());
        }
    }

    #[test]
    fn invalid_points_leave_nothing_behind() {
        let mut out = vec![0xAA];
        let err =
            encode_batch(&[p(1, 0, Op::GaugeSet(1.0)), p(1, 0, Op::CounterAdd(-1.0))], &mut out)
                .unwrap_err();
        assert!(matches!(err, EncodeError::Invalid { index: 1, .. }), "{err}");
        assert_eq!(out, [0xAA]);
    }

    #[test]
    fn decoder_reports_trailing_bytes_and_bad_tags() {
        let mut out = Vec::new();
        encode_batch(&[p(1, 0, Op::Delete)], &mut out).unwrap();
        let mut trailing = out.clone();
        trailing.push(0);
        assert_eq!(decode_batch(&trailing).unwrap_err().kind, DecodeErrorKind::TrailingBytes(1));
        let mut bad_tag = out.clone();
        *bad_tag.last_mut().unwrap() = 0x40;
        let err = decode_batch(&bad_tag).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::UnknownOp(0x40));
        assert_eq!(err.offset, out.len() as u64 - 1);
    }

    #[test]
    fn decoder_refuses_invalid_values_from_disk() {
        let mut out = Vec::new();
        encode_batch(&[p(1, 0, Op::GaugeSet(0.5))], &mut out).unwrap();
        let n = out.len();
        out[n - 8..].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(matches!(decode_batch(&out).unwrap_err().kind, DecodeErrorKind::InvalidValue(_)));
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        // A count of a million points with no bytes behind it: an error, not a 24 MB Vec.
        let mut out = Vec::new();
        put_uvarint(&mut out, MAX_BATCH_POINTS as u64);
        put_ivarint(&mut out, 0);
        assert!(matches!(decode_batch(&out).unwrap_err().kind, DecodeErrorKind::Truncated { .. }));
        let mut over = Vec::new();
        put_uvarint(&mut over, MAX_BATCH_POINTS as u64 + 1);
        assert!(matches!(
            decode_batch(&over).unwrap_err().kind,
            DecodeErrorKind::LimitExceeded { .. }
        ));
    }

    #[test]
    fn series_defs_round_trip_and_validate() {
        let defs = vec![
            SeriesDef {
                id: SeriesId(0),
                key: SeriesKey::new("up", Vec::<(&str, &str)>::new()).unwrap(),
            },
            SeriesDef {
                id: SeriesId(70_000),
                key: SeriesKey::new("http_requests", [("code", "200"), ("path", "/x")]).unwrap(),
            },
        ];
        let mut out = Vec::new();
        encode_series_defs(&defs, &mut out).unwrap();
        assert_eq!(decode_series_defs(&out).unwrap(), defs);
        // Corrupt the metric name's first byte into a digit: a key error at the def's offset.
        let name_at = 1 + 1 + 1; // count, id 0, name length
        out[name_at] = b'9';
        let err = decode_series_defs(&out).unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::InvalidKey(_)), "{err}");
        assert_eq!(err.offset, 1);
    }
}
