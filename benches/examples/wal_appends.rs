//! W1/W2 of the bench alone, for a profiler: `cargo run --release -p ingestor-benches
//! --example wal_appends -- [os|buffered] [BATCH] [RECORDS]` appends RECORDS records of 100 B
//! in batches of BATCH into a log in a temporary directory and prints the rate
//! (`INGESTOR_BENCH_SEGMENT_FILL=allocate`: segments from fallocate, not zero-filled);
//! `INGESTOR_READS=N` then reopens the log N times and reads every record back (W5 warm;
//! cold with `INGESTOR_COLD=1`); with `INGESTOR_IDEAL=1` each read follows one of the same
//! records written as the bench's ideal loop writes them, read back the same way (W5's
//! ceiling, measured beside it).

use std::sync::Arc;
use std::time::Instant;

use ingestor_fs::StdFs;
use ingestor_wal::{SyncPolicy, Wal, WalOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let policy = match args.first().map(String::as_str) {
        Some("buffered") => SyncPolicy::BUFFERED,
        _ => SyncPolicy::Os,
    };
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let mut options = WalOptions::default().sync_policy(policy);
    if std::env::var("INGESTOR_BENCH_SEGMENT_FILL").as_deref() == Ok("allocate") {
        options = options.segment_fill(ingestor_wal::SegmentFill::Allocate);
    }
    if std::env::var("INGESTOR_NO_WRITEBACK_AHEAD").is_ok() {
        options = options.writeback_ahead(false);
    }
    let (wal, _) = Wal::open(Arc::new(StdFs::new()), tmp.path(), options).unwrap();
    let record = [7u8; 100];
    let records: Vec<(u8, &[u8])> = (0..batch).map(|_| (1u8, &record[..])).collect();
    let started = Instant::now();
    let mut done = 0u64;
    // As the bench's loop: it reads the clock after every append (INGESTOR_CLOCK=1).
    let clock = std::env::var("INGESTOR_CLOCK").is_ok();
    let budget = std::time::Duration::from_secs(600);
    while done < n && (!clock || started.elapsed() < budget) {
        if batch == 1 {
            wal.append(1, &record).unwrap();
        } else {
            wal.append_batch(&records).unwrap();
        }
        done += batch as u64;
    }
    let took = started.elapsed();
    wal.flush().unwrap();
    let flushed = started.elapsed();
    let stats = wal.stats();
    eprintln!(
        "rotations {} (longest {:?}, {} into a spare), syncs {} taking {:?} in all, the longest {:?}",
        stats.rotations,
        stats.rotation_time_max,
        stats.spare_segments,
        stats.syncs,
        stats.sync_time_total,
        stats.sync_time_max
    );
    wal.close().unwrap();
    println!(
        "{policy:?}, batches of {batch}: {:.2}M records/s ({:.2}M to the end of `flush`)",
        done as f64 / took.as_secs_f64() / 1e6,
        done as f64 / flushed.as_secs_f64() / 1e6
    );
    // W5 warm: reopen and read every record back, as many times as asked.
    let reads: u32 = std::env::var("INGESTOR_READS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    // INGESTOR_COLD=1: the page cache's copy of the log is dropped before each read.
    let cold = std::env::var("INGESTOR_COLD").is_ok();
    let ideal = std::env::var("INGESTOR_IDEAL").is_ok();
    // Beside the log's directory, not in it: the cold reads evict only the log's pages.
    let ideal_dir = tempfile::tempdir().unwrap();
    let ideal_path = ideal_dir.path().join("ideal.log");
    if ideal {
        use std::io::Write;
        let mut out =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&ideal_path).unwrap());
        for _ in 0..done {
            ingestor_benches::ideal::write_frame(&mut out, &record);
        }
        out.flush().unwrap();
    }
    for _ in 0..reads {
        if ideal {
            let started = Instant::now();
            let n = ingestor_benches::ideal::read_all(&ideal_path);
            let took = started.elapsed();
            println!("ideal {n} records: {:.2}M records/s", n as f64 / took.as_secs_f64() / 1e6);
        }
        if cold {
            for entry in std::fs::read_dir(tmp.path()).unwrap() {
                if let Ok(file) = std::fs::File::open(entry.unwrap().path()) {
                    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
                }
            }
        }
        let started = Instant::now();
        let mut count = 0u64;
        let (wal, _) = Wal::open_and_replay(
            Arc::new(StdFs::new()),
            tmp.path(),
            WalOptions::default().sync_policy(SyncPolicy::Os),
            ingestor_wal::Lsn::ZERO,
            |_, _, p| {
                count += p.len() as u64 / 100;
                Ok(())
            },
        )
        .unwrap();
        let took = started.elapsed();
        drop(wal);
        println!("read {count} records: {:.2}M records/s", count as f64 / took.as_secs_f64() / 1e6);
    }
}
