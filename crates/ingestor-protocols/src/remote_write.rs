//! Prometheus remote write, 1.0 (`prometheus.WriteRequest`) and 2.0
//! (`io.prometheus.write.v2.Request`): snappy block format around protobuf, decoded into one
//! neutral shape, [`Request`].
//!
//! The protobuf types are written here with `prost`'s derive (no `protoc` at build time),
//! from the upstream `.proto` files' field numbers. Only what ingestor uses is decoded
//! fully; native histograms and exemplars are counted, not decoded (prost skips what a
//! message does not declare).
//!
//! ```
//! use ingestor_protocols::remote_write::{self, Series, Version};
//!
//! let series = Series {
//!     labels: vec![("__name__".into(), "up".into()), ("job".into(), "node".into())],
//!     samples: vec![(1_700_000_000_000, 1.0)],
//!     ..Series::default()
//! };
//! let body = remote_write::encode_v1(&[series], &[]);
//! let request = remote_write::decode(&body, Version::V1, 1 << 20)?;
//! assert_eq!(request.series[0].labels[1], ("job".to_string(), "node".to_string()));
//! assert_eq!(request.series[0].samples, [(1_700_000_000_000, 1.0)]);
//! # Ok::<(), remote_write::DecodeError>(())
//! ```

use std::fmt;

use prost::Message;

/// The stale marker: the NaN a sender writes when a series ends.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is the stale marker (and not another NaN).
#[must_use]
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// Which message a body holds, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `prometheus.WriteRequest` (1.0): `application/x-protobuf`, or with
    /// `;proto=prometheus.WriteRequest`.
    V1,
    /// `io.prometheus.write.v2.Request` (2.0).
    V2,
}

impl Version {
    /// Reads a `Content-Type` header (`None`: absent). `Err` names what is not supported
    /// (a receiver answers 415).
    ///
    /// # Errors
    /// A media type other than `application/x-protobuf`, or a `proto` parameter naming a
    /// message this receiver does not know.
    pub fn from_content_type(header: Option<&str>) -> Result<Version, String> {
        let Some(header) = header else { return Ok(Version::V1) };
        let mut parts = header.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(format!(
                "Content-Type {header:?}: remote write takes application/x-protobuf"
            ));
        }
        for p in parts {
            let Some((k, v)) = p.split_once('=') else { continue };
            if k.trim().eq_ignore_ascii_case("proto") {
                return match v.trim().trim_matches('"') {
                    "prometheus.WriteRequest" => Ok(Version::V1),
                    "io.prometheus.write.v2.Request" => Ok(Version::V2),
                    other => Err(format!(
                        "Content-Type proto={other:?}: this receiver takes \
                         prometheus.WriteRequest and io.prometheus.write.v2.Request"
                    )),
                };
            }
        }
        Ok(Version::V1)
    }
}

/// The kind of metric a sender says a series is, from its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// A counter: its samples are absolute totals.
    Counter,
    /// A gauge.
    Gauge,
    /// Any other type (histogram, summary, info, state set...).
    Other,
}

impl MetricType {
    /// The protobuf enum value (`Other` is written as a summary).
    pub(crate) fn to_proto(self) -> i32 {
        match self {
            MetricType::Counter => 1,
            MetricType::Gauge => 2,
            MetricType::Other => 5,
        }
    }

    /// From the protobuf enum value (the same numbers in 1.0 and 2.0); `None` for unknown.
    fn from_proto(v: i32) -> Option<MetricType> {
        match v {
            1 => Some(MetricType::Counter),
            2 => Some(MetricType::Gauge),
            3..=7 => Some(MetricType::Other),
            _ => None,
        }
    }
}

/// One series of a request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Its labels as sent, `__name__` included (2.0's references resolved).
    pub labels: Vec<(String, String)>,
    /// `(timestamp in ms, value)`, as sent.
    pub samples: Vec<(i64, f64)>,
    /// The type its metadata gives (2.0: per series; 1.0: see [`Request::metadata`]).
    pub metric_type: Option<MetricType>,
    /// Native histogram samples it carried (not decoded).
    pub histograms: usize,
    /// Exemplars it carried (not decoded).
    pub exemplars: usize,
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// Its series.
    pub series: Vec<Series>,
    /// 1.0's metadata: metric family name and type.
    pub metadata: Vec<(String, MetricType)>,
}

impl Request {
    /// Samples in the request.
    #[must_use]
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The decompressed size (from the snappy header) is over the limit: nothing was
    /// allocated for it.
    TooLarge {
        /// The size the header announces.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a snappy block, or not the protobuf message.
    Invalid(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { size, limit } => write!(
                f,
                "the request decompresses to {size} bytes, more than the limit of {limit}"
            ),
            DecodeError::Invalid(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The size a snappy block announces it decompresses to (read from its header, nothing
/// decompressed).
///
/// # Errors
/// [`DecodeError::Invalid`] for a body that does not start with a snappy header.
pub fn decompressed_len(body: &[u8]) -> Result<usize, DecodeError> {
    snap::raw::decompress_len(body)
        .map_err(|e| DecodeError::Invalid(format!("the body is not a snappy block: {e}")))
}

/// Decompresses a snappy block, refusing (before allocating) one whose announced size is over
/// `limit`.
///
/// # Errors
/// [`DecodeError::TooLarge`]; [`DecodeError::Invalid`] for a body that is not a snappy block.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let size = decompressed_len(body)?;
    if size > limit {
        return Err(DecodeError::TooLarge { size, limit });
    }
    let mut out = vec![0u8; size];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut out)
        .map_err(|e| DecodeError::Invalid(format!("the body is not a snappy block: {e}")))?;
    out.truncate(n);
    Ok(out)
}

/// Decompresses and decodes a body of `version`.
///
/// # Errors
/// As [`decompress`]; [`DecodeError::Invalid`] for a message that does not decode, or a 2.0
/// reference outside its symbols table.
pub fn decode(body: &[u8], version: Version, limit: usize) -> Result<Request, DecodeError> {
    decode_raw(&decompress(body, limit)?, version)
}

/// Decodes a decompressed message of `version`.
///
/// # Errors
/// [`DecodeError::Invalid`] for a message that does not decode, or a 2.0 reference outside
/// its symbols table.
pub fn decode_raw(raw: &[u8], version: Version) -> Result<Request, DecodeError> {
    let invalid = |e: prost::DecodeError| {
        DecodeError::Invalid(format!("the protobuf message does not decode: {e}"))
    };
    match version {
        Version::V1 => Ok(from_v1(v1::WriteRequest::decode(raw).map_err(invalid)?)),
        Version::V2 => from_v2(v2::Request::decode(raw).map_err(invalid)?),
    }
}

fn from_v1(r: v1::WriteRequest) -> Request {
    Request {
        series: r
            .timeseries
            .into_iter()
            .map(|ts| Series {
                labels: ts.labels.into_iter().map(|l| (l.name, l.value)).collect(),
                samples: ts.samples.into_iter().map(|s| (s.timestamp, s.value)).collect(),
                metric_type: None,
                histograms: ts.histograms.len(),
                exemplars: ts.exemplars.len(),
            })
            .collect(),
        metadata: r
            .metadata
            .into_iter()
            .filter_map(|m| Some((m.metric_family_name, MetricType::from_proto(m.r#type)?)))
            .collect(),
    }
}

fn from_v2(r: v2::Request) -> Result<Request, DecodeError> {
    let symbol = |i: u32| {
        r.symbols.get(i as usize).cloned().ok_or_else(|| {
            DecodeError::Invalid(format!(
                "symbol reference {i} is outside the symbols table ({} entries)",
                r.symbols.len()
            ))
        })
    };
    let mut series = Vec::with_capacity(r.timeseries.len());
    for ts in &r.timeseries {
        if !ts.labels_refs.len().is_multiple_of(2) {
            return Err(DecodeError::Invalid(format!(
                "a series has {} label references, not a multiple of two",
                ts.labels_refs.len()
            )));
        }
        let labels = ts
            .labels_refs
            .chunks_exact(2)
            .map(|p| Ok((symbol(p[0])?, symbol(p[1])?)))
            .collect::<Result<Vec<_>, DecodeError>>()?;
        series.push(Series {
            labels,
            samples: ts.samples.iter().map(|s| (s.timestamp, s.value)).collect(),
            metric_type: ts.metadata.as_ref().and_then(|m| MetricType::from_proto(m.r#type)),
            histograms: ts.histograms.len(),
            exemplars: ts.exemplars.len(),
        });
    }
    Ok(Request { series, metadata: Vec::new() })
}

/// A 1.0 request body (snappy block around a `WriteRequest`) of series (their labels and
/// samples; types go in `metadata`, by family): for senders, tests and benchmarks.
#[must_use]
pub fn encode_v1(series: &[Series], metadata: &[(String, MetricType)]) -> Vec<u8> {
    let request = v1::WriteRequest {
        timeseries: series
            .iter()
            .map(|Series { labels, samples, .. }| v1::TimeSeries {
                labels: labels
                    .iter()
                    .map(|(n, v)| v1::Label { name: n.clone(), value: v.clone() })
                    .collect(),
                samples: samples
                    .iter()
                    .map(|&(timestamp, value)| v1::Sample { value, timestamp })
                    .collect(),
                exemplars: Vec::new(),
                histograms: Vec::new(),
            })
            .collect(),
        metadata: metadata
            .iter()
            .map(|(family, kind)| v1::MetricMetadata {
                r#type: kind.to_proto(),
                metric_family_name: family.clone(),
                help: String::new(),
                unit: String::new(),
            })
            .collect(),
    };
    compress(&request.encode_to_vec())
}

/// A 2.0 request body of series (labels, samples and type), strings interned in its symbols
/// table (which starts with the empty string, as the specification requires).
#[must_use]
pub fn encode_v2(series: &[Series]) -> Vec<u8> {
    let mut symbols: Vec<String> = vec![String::new()];
    let mut index = std::collections::HashMap::<String, u32>::new();
    let mut intern = |s: &str| -> u32 {
        if s.is_empty() {
            return 0;
        }
        *index.entry(s.to_string()).or_insert_with(|| {
            symbols.push(s.to_string());
            (symbols.len() - 1) as u32
        })
    };
    let timeseries = series
        .iter()
        .map(|Series { labels, samples, metric_type: kind, .. }| v2::TimeSeries {
            labels_refs: labels.iter().flat_map(|(n, v)| [intern(n), intern(v)]).collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| v2::Sample { value, timestamp })
                .collect(),
            histograms: Vec::new(),
            exemplars: Vec::new(),
            metadata: kind.map(|k| v2::Metadata { r#type: k.to_proto(), help_ref: 0, unit_ref: 0 }),
            created_timestamp: 0,
        })
        .collect();
    compress(&v2::Request { symbols, timeseries }.encode_to_vec())
}

fn compress(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(raw).expect("snappy compresses any input")
}

/// `prometheus.WriteRequest` and what it holds (remote write 1.0, `prompb/remote.proto` and
/// `prompb/types.proto`).
#[allow(missing_docs, unreachable_pub)]
pub mod v1 {
    /// The request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    /// A series and its samples.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        /// Exemplars, counted only (their fields are not declared).
        #[prost(message, repeated, tag = "3")]
        pub exemplars: Vec<Opaque>,
        /// Native histograms, counted only.
        #[prost(message, repeated, tag = "4")]
        pub histograms: Vec<Opaque>,
    }

    /// A label.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// A sample.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// A metric family's metadata.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    /// A message whose fields are skipped.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Opaque {}
}

/// `io.prometheus.write.v2.Request` and what it holds (remote write 2.0,
/// `prompb/io/prometheus/write/v2/types.proto`).
#[allow(missing_docs, unreachable_pub)]
pub mod v2 {
    /// The request: fields 1 to 3 are reserved (they are 1.0's), so a 1.0 body read as 2.0
    /// decodes to nothing rather than to garbage.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(string, repeated, tag = "4")]
        pub symbols: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// A series: labels as pairs of references into the symbols table.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(uint32, repeated, tag = "1")]
        pub labels_refs: Vec<u32>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub histograms: Vec<super::v1::Opaque>,
        #[prost(message, repeated, tag = "4")]
        pub exemplars: Vec<super::v1::Opaque>,
        #[prost(message, optional, tag = "5")]
        pub metadata: Option<Metadata>,
        #[prost(int64, tag = "6")]
        pub created_timestamp: i64,
    }

    pub use super::v1::Sample;

    /// A series' metadata.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metadata {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(uint32, tag = "3")]
        pub help_ref: u32,
        #[prost(uint32, tag = "4")]
        pub unit_ref: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)], kind: Option<MetricType>) -> Series {
        Series {
            labels: pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            samples: samples.to_vec(),
            metric_type: kind,
            ..Series::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn both_versions_round_trip_and_carry_types() {
        let body = encode_v2(&[
            series(
                &[("__name__", "reqs_total"), ("code", "200")],
                &[(5, 3.0), (6, 4.0)],
                Some(MetricType::Counter),
            ),
            series(&[("__name__", "temp")], &[(5, -1.5)], None),
        ]);
        let r = decode(&body, Version::V2, 1 << 20).unwrap();
        assert_eq!(r.series.len(), 2);
        assert_eq!(r.series[0].labels, labels(&[("__name__", "reqs_total"), ("code", "200")]));
        assert_eq!(r.series[0].samples, [(5, 3.0), (6, 4.0)]);
        assert_eq!(r.series[0].metric_type, Some(MetricType::Counter));
        assert_eq!(r.series[1].metric_type, None);
        assert_eq!(r.samples(), 3);
        // A 1.0 body read as 2.0 holds nothing (2.0 reserves 1.0's field numbers).
        let v1 = encode_v1(&[series(&[("__name__", "up")], &[(1, 1.0)], None)], &[]);
        assert_eq!(decode(&v1, Version::V2, 1 << 20).unwrap().samples(), 0);
        assert_eq!(decode(&v1, Version::V1, 1 << 20).unwrap().samples(), 1);
    }

    #[test]
    fn sizes_and_garbage_are_refused_without_panicking() {
        let v1 = encode_v1(&[series(&[("__name__", "up")], &[(1, 1.0)], None)], &[]);
        assert!(matches!(decode(&v1, Version::V1, 4), Err(DecodeError::TooLarge { limit: 4, .. })));
        // A snappy header announcing 4 GiB is refused before anything is allocated.
        let huge = [0x80, 0x80, 0x80, 0x80, 0x10, 0x00];
        assert!(matches!(
            decompress(&huge, 64 << 20),
            Err(DecodeError::TooLarge { .. }) | Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            decode(b"not snappy at all", Version::V1, 1 << 20),
            Err(DecodeError::Invalid(_))
        ));
        let bad_ref = {
            let r = v2::Request {
                symbols: vec![String::new()],
                timeseries: vec![v2::TimeSeries { labels_refs: vec![0, 7], ..Default::default() }],
            };
            compress(&r.encode_to_vec())
        };
        let e = decode(&bad_ref, Version::V2, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("symbol reference 7"), "{e}");
        let mut rng = ingestor_testkit::Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next_u64();
        for round in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                bytes = compress(&bytes);
            }
            let _ = decode(&bytes, Version::V1, 1 << 16);
            let _ = decode(&bytes, Version::V2, 1 << 16);
        }
    }

    #[test]
    fn content_types_choose_the_message() {
        assert_eq!(Version::from_content_type(None), Ok(Version::V1));
        assert_eq!(Version::from_content_type(Some("application/x-protobuf")), Ok(Version::V1));
        assert_eq!(
            Version::from_content_type(Some(
                "application/x-protobuf;proto=prometheus.WriteRequest"
            )),
            Ok(Version::V1)
        );
        assert_eq!(
            Version::from_content_type(Some(
                "application/x-protobuf; proto=io.prometheus.write.v2.Request"
            )),
            Ok(Version::V2)
        );
        assert!(Version::from_content_type(Some("application/x-protobuf;proto=x.Y")).is_err());
        assert!(Version::from_content_type(Some("application/json")).is_err());
        assert!(is_stale_marker(f64::from_bits(STALE_NAN_BITS)));
        assert!(!is_stale_marker(f64::NAN));
    }
}
