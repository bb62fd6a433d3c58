//! Encode and decode throughput of one batch of 1,000 updates over 1,000 series, the figure
//! the foundation issue asks for (target: >= 30 M updates/s each way on a 2-core machine).
//!
//! Also the checksum of a frame of a 100-byte record (118 bytes covered), this crate's
//! against the `crc32c` crate's, the two side by side in one run.
//!
//! Run: `cargo bench -p ingestor-codec`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingestor_codec::{
    BatchReader, Compression, Lsn, Op, Point, Record, SeriesId, Timestamp, decode_frame,
    decode_record, encode_record,
};
use ingestor_testkit::Rng;

/// The standard mix: 50% gauge sets, 40% counter adds, 10% histogram observations, one point
/// per series, timestamps a few ms apart, values as a scrape would give them.
fn batch() -> Vec<Point> {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    (0..1000u32)
        .map(|i| {
            let r = rng.next_u64();
            let op = match r % 10 {
                0..=4 => Op::GaugeSet((r >> 20) as f64 / 1000.0),
                5..=8 => Op::CounterAdd(((r >> 40) % 100) as f64),
                _ => Op::HistogramObserve((r >> 30) as f64 / 1e6),
            };
            Point {
                series: SeriesId(i),
                timestamp: Timestamp(1_700_000_000_000 + i64::from(i) * 3),
                op,
            }
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let record = Record::Batch(batch());
    for (name, compression) in [("plain", Compression::None), ("lz4", Compression::Lz4)] {
        let mut encoded = Vec::new();
        encode_record(&record, Lsn(1), compression, &mut encoded).unwrap();
        let mut group = c.benchmark_group(format!("batch_1000_{name}"));
        group.throughput(Throughput::Elements(1000));
        let mut out = Vec::with_capacity(encoded.len() * 2);
        group.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                encode_record(black_box(&record), Lsn(1), compression, &mut out).unwrap()
            })
        });
        group.bench_function("decode", |b| b.iter(|| decode_record(black_box(&encoded)).unwrap()));
        group.bench_function("decode_streaming", |b| {
            b.iter(|| {
                let frame = decode_frame(black_box(&encoded)).unwrap();
                let mut sum = 0.0;
                for p in BatchReader::new(&frame.payload).unwrap() {
                    sum += p.unwrap().op.value().unwrap_or(0.0);
                }
                sum
            })
        });
        group.finish();
        let mut bytes = c.benchmark_group(format!("batch_1000_{name}_bytes"));
        bytes.throughput(Throughput::Bytes(encoded.len() as u64));
        bytes.bench_function("decode", |b| b.iter(|| decode_record(black_box(&encoded)).unwrap()));
        bytes.finish();
        println!(
            "batch_1000_{name}: {} bytes, {:.2} bytes/update",
            encoded.len(),
            encoded.len() as f64 / 1000.0
        );
    }
}

/// The checksum of 1,000 frames of 100-byte records, one after the other as a log's reader
/// meets them: 118 bytes each (the header's last 18 and the payload), 122 bytes apart (so
/// starting at each even offset modulo 8).
fn checksum(c: &mut Criterion) {
    let frame = 22 + 100;
    let bytes: Vec<u8> =
        (0..frame as u32 * 1000).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut group = c.benchmark_group("crc32c_1000_frames_of_118_bytes");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("ingestor_codec", |b| {
        b.iter(|| {
            let mut x = 0u32;
            for f in black_box(&bytes).chunks_exact(frame) {
                x ^= ingestor_codec::crc::crc32c(&f[4..]);
            }
            x
        })
    });
    group.bench_function("crc32c_crate", |b| {
        b.iter(|| {
            let mut x = 0u32;
            for f in black_box(&bytes).chunks_exact(frame) {
                x ^= crc32c::crc32c(&f[4..]);
            }
            x
        })
    });
    group.finish();
}

criterion_group!(benches, codec, checksum);
criterion_main!(benches);
