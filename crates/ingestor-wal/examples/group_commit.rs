//! How well group commit batches: 2,000 durable appends of 100 bytes (or as many as the
//! first argument says) under `SyncPolicy::Always` by 1, 4 and 16 threads, printing records
//! per second, syncs, records per sync and the mean sync time.
//!
//! Run: `cargo run --release -p ingestor-wal --example group_commit [RECORDS]`.

use std::sync::Arc;
use std::time::Instant;

use ingestor_fs::{Fs, StdFs};
use ingestor_wal::{SyncPolicy, Wal, WalOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let records: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| format!("RECORDS {n:?}: {e}"))?,
        None => 2000,
    };
    for writers in [1usize, 4, 16] {
        let dir = tempfile::tempdir()?;
        let fs: Arc<dyn Fs> = Arc::new(StdFs::new());
        let options = WalOptions::default().sync_policy(SyncPolicy::Always);
        let wal = Arc::new(Wal::open(fs, dir.path(), options)?.0);
        let per_writer = records / writers;
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..writers {
                let wal = Arc::clone(&wal);
                s.spawn(move || {
                    for _ in 0..per_writer {
                        wal.append(1, &[7u8; 100]).expect("append");
                    }
                });
            }
        });
        let elapsed = started.elapsed();
        let stats = wal.stats();
        println!(
            "{writers:>2} writers: {:>7.0} records/s, {:>4} syncs, {:>5.1} records/sync, mean sync {:?}",
            (per_writer * writers) as f64 / elapsed.as_secs_f64(),
            stats.syncs,
            stats.records as f64 / stats.syncs as f64,
            stats.sync_time_total / u32::try_from(stats.syncs.max(1))?,
        );
    }
    Ok(())
}
