//! Writes a remote-write 1.0 `WriteRequest` straight into protobuf bytes, series by series,
//! without building the message first: what a forwarder sending millions of samples a
//! second needs. [`crate::remote_write::encode_v1`] (prost) is the reference it is tested
//! against.
//!
//! ```
//! use ingestor_protocols::remote_write::{self, MetricType, Version};
//! use ingestor_protocols::remote_write_writer::WriteRequestWriter;
//!
//! let mut w = WriteRequestWriter::new();
//! w.series(&[("__name__", "up"), ("job", "api")], &[(1_000, 1.0)]);
//! w.metadata("up", MetricType::Gauge);
//! assert_eq!((w.series_count(), w.sample_count()), (1, 1));
//! let body = w.finish(); // snappy-compressed, ready to POST
//! let request = remote_write::decode(&body, Version::V1, 1 << 20)?;
//! assert_eq!(request.series[0].samples, [(1_000, 1.0)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::remote_write::MetricType;

/// A `WriteRequest` being written. Series keep the order they were given in; the caller
/// gives each series' labels sorted by name (as the specification asks), `__name__` among
/// them.
#[derive(Debug, Default, Clone)]
pub struct WriteRequestWriter {
    buf: Vec<u8>,
    series: usize,
    samples: usize,
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited string field: tag, length, bytes.
fn put_str(out: &mut Vec<u8>, tag: u8, s: &str) {
    out.push(tag);
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn str_len(s: &str) -> usize {
    1 + varint_len(s.len() as u64) + s.len()
}

impl WriteRequestWriter {
    /// An empty request.
    #[must_use]
    pub fn new() -> Self {
        WriteRequestWriter::default()
    }

    /// Appends a series: its labels (sorted by name) and samples (`(timestamp ms, value)`).
    pub fn series(&mut self, labels: &[(&str, &str)], samples: &[(i64, f64)]) {
        let label_len = |(n, v): &(&str, &str)| str_len(n) + str_len(v);
        let sample_len = |&(ts, _): &(i64, f64)| 9 + 1 + varint_len(ts as u64);
        let body: usize = labels
            .iter()
            .map(|l| {
                let n = label_len(l);
                1 + varint_len(n as u64) + n
            })
            .chain(samples.iter().map(|s| {
                let n = sample_len(s);
                1 + varint_len(n as u64) + n
            }))
            .sum();
        let out = &mut self.buf;
        out.reserve(body + 6);
        out.push(0x0a); // WriteRequest.timeseries = 1
        put_varint(out, body as u64);
        for l in labels {
            out.push(0x0a); // TimeSeries.labels = 1
            put_varint(out, label_len(l) as u64);
            put_str(out, 0x0a, l.0); // Label.name = 1
            put_str(out, 0x12, l.1); // Label.value = 2
        }
        for s in samples {
            out.push(0x12); // TimeSeries.samples = 2
            put_varint(out, sample_len(s) as u64);
            out.push(0x09); // Sample.value = 1, fixed64
            out.extend_from_slice(&s.1.to_le_bytes());
            out.push(0x10); // Sample.timestamp = 2, varint (two's complement)
            put_varint(out, s.0 as u64);
        }
        self.series += 1;
        self.samples += samples.len();
    }

    /// Appends a family's metadata (its type; no help, no unit).
    pub fn metadata(&mut self, family: &str, kind: MetricType) {
        let kind = kind.to_proto() as u64;
        let body = 1 + varint_len(kind) + str_len(family);
        let out = &mut self.buf;
        out.push(0x1a); // WriteRequest.metadata = 3
        put_varint(out, body as u64);
        out.push(0x08); // MetricMetadata.type = 1
        put_varint(out, kind);
        put_str(out, 0x12, family); // MetricMetadata.metric_family_name = 2
    }

    /// Series written so far.
    #[must_use]
    pub fn series_count(&self) -> usize {
        self.series
    }

    /// Samples written so far.
    #[must_use]
    pub fn sample_count(&self) -> usize {
        self.samples
    }

    /// Whether nothing was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The request body as it is POSTed: the message in snappy's block format. The writer
    /// is empty again afterwards, its buffer kept.
    pub fn finish(&mut self) -> Vec<u8> {
        let body =
            snap::raw::Encoder::new().compress_vec(&self.buf).expect("snappy compresses any input");
        self.buf.clear();
        self.series = 0;
        self.samples = 0;
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::{self, Series, Version};
    use proptest::prelude::*;

    fn series(labels: &[(String, String)], samples: &[(i64, f64)]) -> Series {
        Series {
            labels: labels.to_vec(),
            samples: samples.to_vec(),
            metric_type: None,
            histograms: 0,
            exemplars: 0,
        }
    }

    proptest! {
        /// Whatever it writes decodes to what prost's reference encoder's bytes decode to.
        #[test]
        fn decodes_as_the_reference_does(
            input in prop::collection::vec(
                (
                    prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,12}", "\\PC{0,20}", 1..6),
                    prop::collection::vec((any::<i64>(), any::<f64>()), 0..4),
                ),
                0..8,
            ),
            families in prop::collection::vec(("[a-z_]{1,10}", 0u8..3), 0..3),
        ) {
            let mut w = WriteRequestWriter::new();
            let mut reference = Vec::new();
            for (labels, samples) in &input {
                let owned: Vec<(String, String)> =
                    labels.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
                let borrowed: Vec<(&str, &str)> =
                    owned.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                w.series(&borrowed, samples);
                reference.push(series(&owned, samples));
            }
            let kinds = [MetricType::Counter, MetricType::Gauge, MetricType::Other];
            let meta: Vec<(String, MetricType)> =
                families.iter().map(|(f, k)| (f.clone(), kinds[*k as usize])).collect();
            for (f, k) in &meta {
                w.metadata(f, *k);
            }
            prop_assert_eq!(w.series_count(), input.len());
            let mine = remote_write::decode(&w.finish(), Version::V1, 1 << 24).unwrap();
            let theirs = remote_write::decode(
                &remote_write::encode_v1(&reference, &meta), Version::V1, 1 << 24).unwrap();
            // NaN != NaN: compare the bits; prost omits a value equal to 0.0 (proto3's
            // default), -0.0 included, so its bytes decode -0.0 as 0.0 (the writer keeps
            // the sign).
            type Flat = Vec<(Vec<(String, String)>, Vec<(i64, u64)>)>;
            let bits = |r: &remote_write::Request| -> Flat {
                r.series.iter().map(|s| (s.labels.clone(),
                    s.samples.iter().map(|&(t, v)| (t, if v == 0.0 { 0 } else { v.to_bits() }))
                        .collect())).collect()
            };
            prop_assert_eq!(bits(&mine), bits(&theirs));
            prop_assert_eq!(mine.metadata, theirs.metadata);
            prop_assert!(w.is_empty());
        }
    }
}
