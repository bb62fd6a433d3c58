//! Remote-write requests read in place: the same messages as
//! [`crate::remote_write::decode`], but every label borrowed from the decompressed bytes,
//! so that a receiver that knows a series already allocates nothing for it.
//!
//! A hand-written protobuf reader (varints, fixed64, length-delimited fields; unknown fields
//! skipped as protobuf requires) over the fields the messages declare. A differential test
//! holds it to the prost-derived decoder on every input.
//!
//! ```
//! use ingestor_protocols::remote_write::{self, Series, Version};
//! use ingestor_protocols::remote_write_view;
//!
//! let series = Series {
//!     labels: vec![("__name__".into(), "up".into())],
//!     samples: vec![(5, 1.0)],
//!     ..Series::default()
//! };
//! let body = remote_write::encode_v1(&[series], &[]);
//! let raw = remote_write::decompress(&body, 1 << 20)?;
//! let view = remote_write_view::read(&raw, Version::V1)?;
//! assert_eq!(view.series[0].labels, [("__name__", "up")]);
//! assert_eq!(view.series[0].samples, [(5, 1.0)]);
//! # Ok::<(), remote_write::DecodeError>(())
//! ```

use crate::remote_write::{DecodeError, MetricType, Version};

/// One series, its labels borrowed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesView<'a> {
    /// Labels as sent (`__name__` included).
    pub labels: Vec<(&'a str, &'a str)>,
    /// `(timestamp in ms, value)`.
    pub samples: Vec<(i64, f64)>,
    /// The type its own metadata gives (2.0).
    pub metric_type: Option<MetricType>,
    /// Native histogram samples (not decoded).
    pub histograms: usize,
    /// Exemplars (not decoded).
    pub exemplars: usize,
}

/// A request, its strings borrowed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestView<'a> {
    /// Its series.
    pub series: Vec<SeriesView<'a>>,
    /// 1.0's metadata: family name and type.
    pub metadata: Vec<(&'a str, MetricType)>,
}

fn invalid(what: &str) -> DecodeError {
    DecodeError::Invalid(format!("the protobuf message does not decode: {what}"))
}

/// A protobuf field: its number and its value.
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32,
    Group,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or_else(|| invalid("a truncated varint"))?;
            self.buf = rest;
            if i == 9 && b > 1 {
                return Err(invalid("a varint longer than 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(invalid("a varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(invalid("a field longer than its message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, DecodeError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| invalid("a field number out of range"))?;
        if number == 0 {
            return Err(invalid("field number 0"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| invalid("a length out of range"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            3 => {
                self.skip_group(number)?;
                Value::Group
            }
            4 => return Err(invalid("an end-group tag without its start")),
            _ => return Err(invalid("an unknown wire type")),
        };
        Ok(Some((number, value)))
    }

    /// Skips a (deprecated) group's fields through its end tag, as protobuf decoders do.
    fn skip_group(&mut self, number: u32) -> Result<(), DecodeError> {
        loop {
            if self.buf.is_empty() {
                return Err(invalid("a group without its end tag"));
            }
            let key = self.varint()?;
            if key & 7 == 4 {
                return if key >> 3 == u64::from(number) {
                    Ok(())
                } else {
                    Err(invalid("an end-group tag of another group"))
                };
            }
            // Put the key back: `field` reads it again with the value.
            let mut r = Reader { buf: self.buf };
            match key & 7 {
                0 => {
                    r.varint()?;
                }
                1 => {
                    r.take(8)?;
                }
                2 => {
                    let len = usize::try_from(r.varint()?)
                        .map_err(|_| invalid("a length out of range"))?;
                    r.take(len)?;
                }
                3 => {
                    let inner = u32::try_from(key >> 3)
                        .map_err(|_| invalid("a field number out of range"))?;
                    r.skip_group(inner)?;
                }
                5 => {
                    r.take(4)?;
                }
                _ => return Err(invalid("an unknown wire type")),
            }
            if key >> 3 == 0 {
                return Err(invalid("field number 0"));
            }
            self.buf = r.buf;
        }
    }
}

fn each_field<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u32, Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader { buf };
    while let Some((n, v)) = r.field()? {
        f(n, v)?;
    }
    Ok(())
}

fn string(v: Value<'_>) -> Result<&str, DecodeError> {
    match v {
        Value::Bytes(b) => {
            std::str::from_utf8(b).map_err(|_| invalid("a string that is not UTF-8"))
        }
        _ => Err(invalid("a string field of the wrong wire type")),
    }
}

fn bytes(v: Value<'_>) -> Result<&[u8], DecodeError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(invalid("a message field of the wrong wire type")),
    }
}

/// A message whose fields are not used: it must still be well formed.
fn opaque(v: Value<'_>) -> Result<(), DecodeError> {
    each_field(bytes(v)?, |_, _| Ok(()))
}

fn int(v: Value<'_>) -> Result<u64, DecodeError> {
    match v {
        Value::Varint(n) => Ok(n),
        _ => Err(invalid("an integer field of the wrong wire type")),
    }
}

fn sample(buf: &[u8]) -> Result<(i64, f64), DecodeError> {
    let (mut t, mut v) = (0i64, 0f64);
    each_field(buf, |n, value| {
        match (n, value) {
            (1, Value::Fixed64(bits)) => v = f64::from_bits(bits),
            (1, _) => return Err(invalid("a sample value of the wrong wire type")),
            (2, value) => t = int(value)? as i64,
            _ => {}
        }
        Ok(())
    })?;
    Ok((t, v))
}

/// From the int32 enum field's varint (truncated as protobuf decoders do).
fn metric_type(v: u64) -> Option<MetricType> {
    match v as i32 {
        1 => Some(MetricType::Counter),
        2 => Some(MetricType::Gauge),
        3..=7 => Some(MetricType::Other),
        _ => None,
    }
}

/// One series as [`visit`] hands it over: labels as bytes (1.0's are not yet checked to be
/// UTF-8: call [`checked`] before using them as text; bytes equal to labels checked before
/// are valid too), samples, and what was counted. Borrowed from scratch space the visit
/// reuses, so a visit allocates nothing per series.
#[derive(Debug)]
pub struct RawSeries<'a, 's> {
    /// Label names and values, in the order sent (empty for 1.0 under [`Labels::Raw`]).
    pub labels: &'s [(&'a [u8], &'a [u8])],
    /// 1.0: the label fields as encoded, when they lie together in the message (as every
    /// encoder writes them): equal bytes are the same labels.
    pub labels_raw: Option<&'a [u8]>,
    /// `(timestamp in ms, value)`.
    pub samples: &'s [(i64, f64)],
    /// The type its own metadata gives (2.0).
    pub metric_type: Option<MetricType>,
    /// Native histogram samples (not decoded).
    pub histograms: usize,
    /// Exemplars (not decoded).
    pub exemplars: usize,
}

/// The labels of a series as text.
///
/// # Errors
/// [`DecodeError::Invalid`] when a name or value is not UTF-8 (the whole request is then
/// invalid, as protobuf decoders have it).
pub fn checked<'a>(
    labels: &[(&'a [u8], &'a [u8])],
) -> Result<Vec<(&'a str, &'a str)>, DecodeError> {
    labels
        .iter()
        .map(|&(n, v)| {
            let utf8 =
                |b| std::str::from_utf8(b).map_err(|_| invalid("a string that is not UTF-8"));
            Ok((utf8(n)?, utf8(v)?))
        })
        .collect()
}

/// What [`visit`] does with 1.0 labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// Reads every name and value.
    Parsed,
    /// Hands over only [`RawSeries::labels_raw`], not reading inside the label fields (a
    /// receiver that knows the series by those bytes needs nothing more; it must read them
    /// with [`Labels::Parsed`] before trusting bytes it has not seen before).
    Raw,
}

/// Walks a decompressed request of `version`, calling `each` with every series (stopping at
/// its first error); returns 1.0's metadata (family name, type).
///
/// # Errors
/// [`DecodeError::Invalid`] for bytes that are not the message, or a 2.0 reference outside
/// its symbols table; or `each`'s error.
pub fn visit<'a>(
    raw: &'a [u8],
    version: Version,
    labels: Labels,
    mut each: impl FnMut(&RawSeries<'a, '_>) -> Result<(), DecodeError>,
) -> Result<Vec<(&'a str, MetricType)>, DecodeError> {
    match version {
        Version::V1 => visit_v1(raw, labels, &mut each),
        Version::V2 => visit_v2(raw, &mut each).map(|()| Vec::new()),
    }
}

/// Reads a decompressed request of `version` whole, every string checked.
///
/// # Errors
/// As [`visit`]; a label that is not UTF-8.
pub fn read(raw: &[u8], version: Version) -> Result<RequestView<'_>, DecodeError> {
    let mut series = Vec::new();
    let metadata = visit(raw, version, Labels::Parsed, |s| {
        series.push(SeriesView {
            labels: checked(s.labels)?,
            samples: s.samples.to_vec(),
            metric_type: s.metric_type,
            histograms: s.histograms,
            exemplars: s.exemplars,
        });
        Ok(())
    })?;
    Ok(RequestView { series, metadata })
}

fn raw_bytes(v: Value<'_>) -> Result<&[u8], DecodeError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(invalid("a string field of the wrong wire type")),
    }
}

type Each<'e, 'a> = dyn FnMut(&RawSeries<'a, '_>) -> Result<(), DecodeError> + 'e;

fn visit_v1<'a>(
    raw: &'a [u8],
    mode: Labels,
    each: &mut Each<'_, 'a>,
) -> Result<Vec<(&'a str, MetricType)>, DecodeError> {
    let mut metadata = Vec::new();
    let mut labels: Vec<(&'a [u8], &'a [u8])> = Vec::new();
    let mut samples: Vec<(i64, f64)> = Vec::new();
    each_field(raw, |n, value| {
        match n {
            1 => {
                labels.clear();
                samples.clear();
                let (mut histograms, mut exemplars) = (0, 0);
                let ts = bytes(value)?;
                let mut r = Reader { buf: ts };
                // The span of the label fields, while they lie together.
                let (mut span, mut together) = (None::<(usize, usize)>, true);
                loop {
                    let start = ts.len() - r.buf.len();
                    let Some((n, value)) = r.field()? else { break };
                    let end = ts.len() - r.buf.len();
                    match n {
                        1 => {
                            let label = bytes(value)?;
                            span = match span {
                                None => Some((start, end)),
                                Some((s, e)) => {
                                    together &= e == start;
                                    Some((s, end))
                                }
                            };
                            if mode == Labels::Parsed {
                                let (mut name, mut val): (&[u8], &[u8]) = (b"", b"");
                                each_field(label, |n, v| {
                                    match n {
                                        1 => name = raw_bytes(v)?,
                                        2 => val = raw_bytes(v)?,
                                        _ => {}
                                    }
                                    Ok(())
                                })?;
                                labels.push((name, val));
                            }
                        }
                        2 => samples.push(sample(bytes(value)?)?),
                        3 => {
                            opaque(value)?;
                            exemplars += 1;
                        }
                        4 => {
                            opaque(value)?;
                            histograms += 1;
                        }
                        _ => {}
                    }
                }
                let labels_raw = match span {
                    Some((s, e)) if together => Some(&ts[s..e]),
                    _ => None,
                };
                each(&RawSeries {
                    labels: &labels,
                    labels_raw,
                    samples: &samples,
                    metric_type: None,
                    histograms,
                    exemplars,
                })?;
            }
            3 => {
                let (mut kind, mut family) = (0u64, "");
                each_field(bytes(value)?, |n, v| {
                    match n {
                        1 => kind = int(v)?,
                        2 => family = string(v)?,
                        4 | 5 => {
                            string(v)?;
                        }
                        _ => {}
                    }
                    Ok(())
                })?;
                if let Some(t) = metric_type(kind) {
                    metadata.push((family, t));
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(metadata)
}

fn visit_v2<'a>(raw: &'a [u8], each: &mut Each<'_, 'a>) -> Result<(), DecodeError> {
    // Symbols first: the message may put them anywhere.
    let mut symbols: Vec<&'a str> = Vec::new();
    each_field(raw, |n, value| {
        if n == 4 {
            symbols.push(string(value)?);
        }
        Ok(())
    })?;
    let symbol = |i: u64| {
        usize::try_from(i).ok().and_then(|i| symbols.get(i).copied()).ok_or_else(|| {
            DecodeError::Invalid(format!(
                "symbol reference {i} is outside the symbols table ({} entries)",
                symbols.len()
            ))
        })
    };
    let mut refs: Vec<u64> = Vec::new();
    let mut labels: Vec<(&'a [u8], &'a [u8])> = Vec::new();
    let mut samples: Vec<(i64, f64)> = Vec::new();
    each_field(raw, |n, value| {
        if n != 5 {
            return Ok(());
        }
        refs.clear();
        labels.clear();
        samples.clear();
        let (mut histograms, mut exemplars, mut kind) = (0, 0, None);
        each_field(bytes(value)?, |n, value| {
            match (n, value) {
                // uint32, truncated from the varint as protobuf decoders do.
                (1, Value::Bytes(packed)) => {
                    let mut r = Reader { buf: packed };
                    while !r.buf.is_empty() {
                        refs.push(u64::from(r.varint()? as u32));
                    }
                }
                (1, value) => refs.push(u64::from(int(value)? as u32)),
                (2, value) => samples.push(sample(bytes(value)?)?),
                (3, value) => {
                    opaque(value)?;
                    histograms += 1;
                }
                (4, value) => {
                    opaque(value)?;
                    exemplars += 1;
                }
                (5, value) => {
                    // A repeated message field merges: each type given overwrites.
                    each_field(bytes(value)?, |n, v| {
                        match n {
                            1 => kind = metric_type(int(v)?),
                            3 | 4 => {
                                int(v)?;
                            }
                            _ => {}
                        }
                        Ok(())
                    })?;
                }
                (6, value) => {
                    int(value)?;
                }
                _ => {}
            }
            Ok(())
        })?;
        if !refs.len().is_multiple_of(2) {
            return Err(DecodeError::Invalid(format!(
                "a series has {} label references, not a multiple of two",
                refs.len()
            )));
        }
        for p in refs.chunks_exact(2) {
            labels.push((symbol(p[0])?.as_bytes(), symbol(p[1])?.as_bytes()));
        }
        each(&RawSeries {
            labels: &labels,
            labels_raw: None,
            samples: &samples,
            metric_type: kind,
            histograms,
            exemplars,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::{self, Series, decompress};

    fn owned(v: &RequestView<'_>) -> remote_write::Request {
        remote_write::Request {
            series: v
                .series
                .iter()
                .map(|s| Series {
                    labels: s.labels.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
                    samples: s.samples.clone(),
                    metric_type: s.metric_type,
                    histograms: s.histograms,
                    exemplars: s.exemplars,
                })
                .collect(),
            metadata: v.metadata.iter().map(|(f, t)| (f.to_string(), *t)).collect(),
        }
    }

    #[test]
    fn raw_labels_identify_a_series_across_requests() {
        let one = |v: f64, job: &str| Series {
            labels: vec![("__name__".into(), "up".into()), ("job".into(), job.into())],
            samples: vec![(1, v)],
            ..Series::default()
        };
        let spans = |body: &[u8], mode| {
            let raw = decompress(body, 1 << 20).unwrap();
            let mut out: Vec<(Vec<u8>, usize)> = Vec::new();
            visit(&raw, Version::V1, mode, |s| {
                out.push((s.labels_raw.unwrap().to_vec(), s.labels.len()));
                Ok(())
            })
            .unwrap();
            out
        };
        let a = spans(&remote_write::encode_v1(&[one(1.0, "a"), one(2.0, "b")], &[]), Labels::Raw);
        let b =
            spans(&remote_write::encode_v1(&[one(9.0, "b"), one(5.0, "a")], &[]), Labels::Parsed);
        assert_eq!(a[0].1, 0, "raw mode reads no label");
        assert_eq!(b[0].1, 2);
        assert_eq!(a[0].0, b[1].0, "same labels, same bytes, whatever the samples");
        assert_eq!(a[1].0, b[0].0);
        assert_ne!(a[0].0, a[1].0);
        assert_eq!(a[0].0[0], 0x0a, "a label field's tag");
    }

    #[test]
    fn the_view_agrees_with_the_prost_decoder_on_every_input() {
        let mut rng = ingestor_testkit::Rng::new(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next_u64();
        let words = ["__name__", "up", "job", "", "a b", "é", "le", "0.5"];
        for round in 0..5_000 {
            let series: Vec<Series> = (0..next() % 4)
                .map(|_| Series {
                    labels: (0..next() % 4)
                        .map(|_| {
                            let w = |x: u64| words[(x % words.len() as u64) as usize].to_string();
                            (w(next()), w(next()))
                        })
                        .collect(),
                    samples: (0..next() % 3)
                        .map(|_| (next() as i64, f64::from_bits(next())))
                        .collect(),
                    metric_type: [None, Some(MetricType::Counter), Some(MetricType::Gauge)]
                        [(next() % 3) as usize],
                    ..Series::default()
                })
                .collect();
            let meta = if round % 3 == 0 {
                vec![("fam".to_string(), MetricType::Counter)]
            } else {
                vec![]
            };
            for (version, body) in [
                (Version::V1, remote_write::encode_v1(&series, &meta)),
                (Version::V2, remote_write::encode_v2(&series)),
            ] {
                let mut raw = decompress(&body, 1 << 20).unwrap();
                // Damage some: the two readers must agree on those too (both refuse, or both
                // read the same).
                if round % 2 == 1 && !raw.is_empty() {
                    let at = (next() as usize) % raw.len();
                    raw[at] ^= 1 << (next() % 8);
                    if round % 4 == 1 {
                        raw.truncate(at);
                    }
                }
                let want = remote_write::decode_raw(&raw, version);
                let got = read(&raw, version).map(|v| owned(&v));
                match (&want, &got) {
                    (Ok(w), Ok(g)) => {
                        // NaN payloads compare by bits.
                        let bits = |r: &remote_write::Request| -> Vec<Vec<(i64, u64)>> {
                            r.series
                                .iter()
                                .map(|s| s.samples.iter().map(|&(t, v)| (t, v.to_bits())).collect())
                                .collect()
                        };
                        assert_eq!(bits(w), bits(g), "round {round} {version:?}");
                        let strip = |r: &remote_write::Request| {
                            let mut r = r.clone();
                            for s in &mut r.series {
                                s.samples.clear();
                            }
                            r
                        };
                        assert_eq!(strip(w), strip(g), "round {round} {version:?}");
                    }
                    (Err(_), Err(_)) => {}
                    _ => panic!("round {round} {version:?}: prost {want:?}, view {got:?}"),
                }
            }
        }
    }
}
