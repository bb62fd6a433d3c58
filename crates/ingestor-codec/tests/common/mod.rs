//! Sample records shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use ingestor_codec::{
    HistogramSample, Op, Point, Record, SeriesDef, SeriesId, SeriesKey, Timestamp,
};

/// A hex dump with offsets, 16 bytes a line: the form golden files keep bytes in.
pub fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String =
            chunk.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect();
        out.push_str(&format!("{:06x}  {:<47}  {ascii}\n", i * 16, hex.join(" ")));
    }
    out
}

/// Twelve series over three hosts: enough repetition to compress.
pub fn sample_defs() -> Record {
    let mut defs = Vec::new();
    for (i, host) in ["web-1", "web-2", "db-1"].iter().enumerate() {
        for (j, code) in ["200", "404", "500", "503"].iter().enumerate() {
            let key = SeriesKey::new(
                "http_requests",
                [("host", *host), ("code", *code), ("job", "frontend")],
            )
            .unwrap();
            defs.push(SeriesDef { id: SeriesId((i * 4 + j) as u32), key });
        }
    }
    Record::SeriesDefs(defs)
}

/// Forty points of every operation, integral and fractional values, in-order and out-of-order
/// timestamps.
pub fn sample_batch() -> Record {
    let mut points = Vec::new();
    let base = 1_700_000_000_000i64;
    for i in 0..40i64 {
        let op = match i % 6 {
            0 => Op::CounterAdd(1.0),
            1 => Op::CounterSet(1000.0 + i as f64),
            2 => Op::GaugeSet(0.25 * i as f64),
            3 => Op::GaugeAdd(-2.0),
            4 => Op::HistogramObserve(0.003 * i as f64),
            _ => Op::Delete,
        };
        let ts = if i == 20 { base - 5 } else { base + i * 250 };
        points.push(Point { series: SeriesId((i % 12) as u32), timestamp: Timestamp(ts), op });
    }
    Record::Batch(points)
}

/// Version 2: twelve histogram sets and adds over three bound sets (one empty: only the
/// `+Inf` bucket), with scalar points between them.
pub fn sample_histogram_batch() -> Record {
    let bounds: [&[f64]; 3] = [&[0.005, 0.01, 0.1, 1.0, 10.0], &[], &[-1.0, 0.0, 2.5]];
    let base = 1_700_000_000_000i64;
    let mut points = Vec::new();
    for i in 0..16i64 {
        let b = bounds[(i % 3) as usize];
        let buckets: Vec<u64> = (0..=b.len() as u64).map(|j| (j * 7 + i as u64) % 5).collect();
        let sample = HistogramSample::new(b, buckets, 0.75 * i as f64 - 3.0).unwrap();
        let op = match i % 4 {
            0 | 1 => Op::HistogramSet(sample.into()),
            2 => Op::HistogramAdd(sample.into()),
            _ => Op::GaugeSet(i as f64),
        };
        points.push(Point { series: SeriesId((i % 5) as u32), timestamp: Timestamp(base + i), op });
    }
    Record::Batch(points)
}
