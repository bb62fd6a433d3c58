//! The hot path: `counter!(...).increment(1)` on a registered handle, alone and with four
//! threads incrementing the same counter, while the flusher runs every 100 ms; gauges and
//! histograms for comparison, and the macro resolving its handle on every call.
//!
//! Run: `cargo bench -p ingestor-recorder --bench recorder` (add `-- --quick` for a short
//! run).
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ingestor::{Config, Ingestor};
use ingestor_recorder::IngestorRecorder;
use metrics::{counter, gauge, histogram};

const THREADS: usize = 4;

fn hot_path(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Ingestor::open(dir.path(), Config::default()).unwrap();
    let rec = IngestorRecorder::new(Arc::new(db)).unwrap();
    rec.install().unwrap();

    let mut group = c.benchmark_group("recorder");
    group.measurement_time(Duration::from_secs(3));
    let held = counter!("bench_requests", "route" => "/");
    group.bench_function("counter_increment_registered_1_thread", |b| {
        b.iter(|| held.increment(black_box(1)));
    });
    group.bench_function("counter_increment_registered_4_threads", |b| {
        // Each of the four threads increments `iters` times; the figure is the wall time
        // over `iters`: the time of one increment while three other threads increment too.
        b.iter_custom(|iters| {
            let barrier = Arc::new(Barrier::new(THREADS + 1));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (c, barrier) = (held.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        for _ in 0..iters {
                            c.increment(black_box(1));
                        }
                    })
                })
                .collect();
            barrier.wait();
            let started = Instant::now();
            for t in threads {
                t.join().unwrap();
            }
            started.elapsed()
        });
    });
    group.bench_function("counter_macro_each_call", |b| {
        b.iter(|| counter!("bench_requests", "route" => "/").increment(black_box(1)));
    });
    let g = gauge!("bench_in_flight");
    group.bench_function("gauge_increment_registered", |b| {
        b.iter(|| g.increment(black_box(1.0)));
    });
    let h = histogram!("bench_latency_seconds");
    group.bench_function("histogram_record_registered", |b| {
        b.iter(|| h.record(black_box(0.003)));
    });
    group.finish();
    rec.shutdown().unwrap();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
