//! The segment log's workloads beside a hand-written ideal loop, in one run:
//!
//! - W1: one million single appends of 100-byte records, `Os`;
//! - W2: the same in batches of 1,000;
//! - W3: `Always`, one writer;
//! - W4: `Always`, 4 and 16 writers;
//! - W5: reopen and read all one million records, cold (pages evicted) and warm cache;
//! - ideal: u32 length + crc32c + payload through one `BufWriter` to one file, and the
//!   matching read loop.
//!
//! Run: `cargo bench -p ingestor-wal` (set `INGESTOR_BENCH_RECORDS` to change the million).
#![allow(missing_docs)]

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ingestor_fs::{Fs, StdFs};
use ingestor_wal::{Lsn, SyncPolicy, Wal, WalOptions};

const RECORD: usize = 100;

fn records() -> u64 {
    std::env::var("INGESTOR_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn fs() -> Arc<dyn Fs> {
    Arc::new(StdFs::new())
}

fn open(dir: &Path, policy: SyncPolicy) -> Wal {
    Wal::open(fs(), dir, WalOptions::default().sync_policy(policy)).unwrap().0
}

fn payload() -> Vec<u8> {
    (0..RECORD as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

/// The ceiling: what a minimal framed log costs on this machine.
fn ideal_write(path: &Path, n: u64, payload: &[u8]) {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    for _ in 0..n {
        out.write_all(&(payload.len() as u32).to_le_bytes()).unwrap();
        out.write_all(&crc32c::crc32c(payload).to_le_bytes()).unwrap();
        out.write_all(payload).unwrap();
    }
    out.flush().unwrap();
}

fn ideal_read(path: &Path) -> u64 {
    let mut input = BufReader::with_capacity(1 << 20, File::open(path).unwrap());
    let mut head = [0u8; 8];
    let mut buf = Vec::new();
    let mut n = 0;
    while input.read_exact(&mut head).is_ok() {
        let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        buf.resize(len, 0);
        input.read_exact(&mut buf).unwrap();
        assert_eq!(crc32c::crc32c(&buf), u32::from_le_bytes(head[4..].try_into().unwrap()));
        n += 1;
    }
    n
}

fn evict(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let file = File::open(&path).unwrap();
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
}

fn log_writes(c: &mut Criterion) {
    let n = records();
    let payload = payload();
    let mut group = c.benchmark_group("wal_write");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(n));
    group.bench_function("ideal_bufwriter", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| ideal_write(&dir.path().join("log"), n, &payload),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("w1_single_appends_os", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let wal = open(dir.path(), SyncPolicy::Os);
                (dir, wal)
            },
            |(dir, wal)| {
                for _ in 0..n {
                    wal.append(1, &payload).unwrap();
                }
                (dir, wal)
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("w2_batches_of_1000_os", |b| {
        let batch: Vec<(u8, &[u8])> = (0..1000).map(|_| (1u8, payload.as_slice())).collect();
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let wal = open(dir.path(), SyncPolicy::Os);
                (dir, wal)
            },
            |(dir, wal)| {
                for _ in 0..n / 1000 {
                    wal.append_batch(&batch).unwrap();
                }
                (dir, wal)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn durable_writes(c: &mut Criterion) {
    let payload = payload();
    let mut group = c.benchmark_group("wal_durable");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for writers in [1usize, 4, 16] {
        let per_writer = 2000 / writers as u64;
        group.throughput(Throughput::Elements(per_writer * writers as u64));
        let name = if writers == 1 {
            "w3_always_1_writer".to_string()
        } else {
            format!("w4_always_{writers}_writers")
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().unwrap();
                    let wal = Arc::new(open(dir.path(), SyncPolicy::Always));
                    let started = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..writers {
                            let wal = Arc::clone(&wal);
                            let payload = &payload;
                            s.spawn(move || {
                                for _ in 0..per_writer {
                                    wal.append(1, payload).unwrap();
                                }
                            });
                        }
                    });
                    total += started.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

fn reads(c: &mut Criterion) {
    let n = records();
    let payload = payload();
    let dir = tempfile::tempdir().unwrap();
    let ideal = dir.path().join("ideal");
    std::fs::create_dir(&ideal).unwrap();
    ideal_write(&ideal.join("log"), n, &payload);
    let wal_dir = dir.path().join("wal");
    {
        let wal = open(&wal_dir, SyncPolicy::Os);
        let batch: Vec<(u8, &[u8])> = (0..1000).map(|_| (1u8, payload.as_slice())).collect();
        for _ in 0..n / 1000 {
            wal.append_batch(&batch).unwrap();
        }
        wal.close().unwrap();
    }
    let replay = |dir: &Path| {
        let mut count = 0u64;
        let (wal, _) = Wal::open_and_replay(
            fs(),
            dir,
            WalOptions::default().sync_policy(SyncPolicy::Os),
            Lsn::ZERO,
            |_, _, p| {
                count += p.len() as u64 / RECORD as u64;
                Ok(())
            },
        )
        .unwrap();
        drop(wal);
        assert_eq!(count, n);
    };
    let mut group = c.benchmark_group("wal_read");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(n));
    group.bench_function("ideal_read_warm", |b| {
        b.iter(|| assert_eq!(ideal_read(&ideal.join("log")), n))
    });
    group.bench_function("w5_reopen_read_all_warm", |b| b.iter(|| replay(&wal_dir)));
    group.bench_function("ideal_read_cold", |b| {
        b.iter_batched(
            || evict(&ideal),
            |()| assert_eq!(ideal_read(&ideal.join("log")), n),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("w5_reopen_read_all_cold", |b| {
        b.iter_batched(|| evict(&wal_dir), |()| replay(&wal_dir), BatchSize::PerIteration)
    });
    group.finish();
}

criterion_group!(benches, log_writes, durable_writes, reads);
criterion_main!(benches);
