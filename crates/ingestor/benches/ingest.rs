//! The facade's hot path: one batch of 10,000 updates over 10,000 existing series, ingested
//! by handle and by key under `SyncPolicy::Os` (no sync on the path), snapshots off. What it
//! measures is validation, encoding, the log's write and the memstore's apply.
//!
//! Run: `cargo bench -p ingestor --bench ingest`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingestor::{
    Config, FinalSnapshot, Ingestor, Op, SeriesHandle, SeriesKey, SyncPolicy, Timestamp, Update,
};

const SERIES: usize = 10_000;

/// The standard mix: 50% gauge sets, 40% counter adds, 10% histogram observations.
fn op(i: usize, round: u64) -> Op {
    let r = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round;
    match i % 10 {
        0..=4 => Op::GaugeSet((r >> 20) as f64 / 1000.0),
        5..=8 => Op::CounterAdd(((r >> 40) % 100) as f64),
        _ => Op::HistogramObserve((r >> 30) as f64 / 1e6),
    }
}

fn keys() -> Vec<SeriesKey> {
    (0..SERIES)
        .map(|i| {
            let name = ["gauge_a", "counter_b", "histogram_c"][match i % 10 {
                0..=4 => 0,
                5..=8 => 1,
                _ => 2,
            }];
            let host = format!("host-{}", i / 10);
            let shard = format!("{}", i % 10);
            SeriesKey::new(name, [("host", host.as_str()), ("shard", shard.as_str())]).unwrap()
        })
        .collect()
}

fn hot_path(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config::default()
        .sync_policy(SyncPolicy::Os)
        .snapshot_interval(None)
        .snapshot_bytes(1 << 40)
        .final_snapshot(FinalSnapshot::Never);
    let (db, _) = Ingestor::open(tmp.path().join("data"), config).unwrap();
    let keys = keys();
    let handles: Vec<SeriesHandle> = keys.iter().map(|k| db.resolve(k).unwrap()).collect();

    let mut group = c.benchmark_group("ingest");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(SERIES as u64));
    let mut round = 0u64;
    group.bench_function("by_handle_10k", |b| {
        b.iter(|| {
            round += 1;
            let batch: Vec<(SeriesHandle, Timestamp, Op)> = handles
                .iter()
                .enumerate()
                .map(|(i, &h)| (h, Timestamp(round as i64), op(i, round)))
                .collect();
            black_box(db.ingest_by_handle(&batch).unwrap())
        });
    });
    group.bench_function("by_key_10k", |b| {
        b.iter(|| {
            round += 1;
            let batch: Vec<Update> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| Update {
                    key: k.clone(),
                    timestamp: Timestamp(round as i64),
                    op: op(i, round),
                })
                .collect();
            black_box(db.ingest(&batch).unwrap())
        });
    });
    group.finish();
    db.close().unwrap();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
