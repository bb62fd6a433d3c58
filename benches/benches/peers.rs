//! Criterion micro-benchmarks of the log workloads W1 and W2 for the ingestor's segment log,
//! its peers and the ideal loop, on small record counts (the whole-workload figures with
//! ratios come from `cargo xtask bench`). okaywal is left out: it syncs every commit, so its
//! W1 would take minutes here.
//!
//! Run: `cargo bench -p ingestor-benches --bench peers`.
#![allow(missing_docs, unreachable_pub, dead_code)]

#[path = "report/logs.rs"]
mod logs;

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use logs::System;

const N: u64 = 20_000;

fn appends(c: &mut Criterion) {
    for (name, batch) in [("w1_single", 1usize), ("w2_batches_of_1000", logs::BATCH)] {
        let mut group = c.benchmark_group(name);
        group.sample_size(10).measurement_time(Duration::from_secs(3));
        group.throughput(Throughput::Elements(N));
        for system in [System::Ingestor, System::Ideal, System::Commitlog, System::RaftEngine] {
            group.bench_function(system.name(), |b| {
                b.iter_batched(
                    || tempfile::tempdir().unwrap(),
                    |dir| logs::append(system, dir.path(), N, batch, Duration::MAX),
                    BatchSize::PerIteration,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, appends);
criterion_main!(benches);
