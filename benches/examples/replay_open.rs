//! The bench's "replay of the whole log" alone, for a profiler: `cargo run --release -p
//! ingestor-benches --example replay_open -- DIR [OPENS]` writes the bench's log into DIR
//! if it does not exist yet (one round by key creating 1M series, four rounds by handle, in
//! batches of 10,000, `Os`, no snapshot), then opens it OPENS times (default 3) and prints
//! each replay's rate (`INGESTOR_SERIES=100000` for a smaller log). `DIR OPENS load`
//! snapshots the directory once, then times the snapshot load alone.

use std::time::Instant;

use ingestor::{Config, FinalSnapshot, Ingestor, SyncPolicy, Timestamp};
use ingestor_benches::standard::{handle_batch, key_batch, keys};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(args.first().ok_or("usage: replay_open DIR [OPENS]")?);
    let opens: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let config = Config::default()
        .sync_policy(SyncPolicy::Os)
        .snapshot_interval(None)
        .snapshot_bytes(1 << 40)
        .final_snapshot(FinalSnapshot::Never);
    if !dir.exists() {
        let n =
            std::env::var("INGESTOR_SERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        let keys = keys(n);
        let (db, _) = Ingestor::open(&dir, config.clone())?;
        for (b, chunk) in keys.chunks(10_000).enumerate() {
            db.ingest(&key_batch(chunk, b * 10_000, 0, Timestamp(b as i64)))?;
        }
        let handles: Vec<_> = keys.iter().map(|k| db.resolve(k)).collect::<Result<_, _>>()?;
        for round in 1..5u64 {
            for (b, chunk) in handles.chunks(10_000).enumerate() {
                let at = Timestamp(round as i64 * 1_000 + b as i64);
                db.ingest_by_handle(&handle_batch(chunk, b * 10_000, round, at))?;
            }
        }
        db.close()?;
    }
    // `load` as the third argument: snapshot the directory once (it then no longer measures
    // replay), and time the snapshot load alone (the bench's "snapshot load") OPENS times.
    if args.get(2).map(String::as_str) == Some("load") {
        let snapshots_dir = dir.join("snapshots");
        let store = |dir: &std::path::Path| {
            ingestor_snapshot::SnapshotStore::open(
                std::sync::Arc::new(ingestor_fs::StdFs::new()),
                dir,
                ingestor_snapshot::SnapshotOptions::default(),
            )
        };
        if store(&snapshots_dir)?.0.list()?.is_empty() {
            let (db, _) = Ingestor::open(&dir, config.clone())?;
            db.snapshot()?;
            db.close()?;
        }
        for _ in 0..opens {
            let loaded =
                store(&snapshots_dir)?.0.load_newest(&ingestor::MemstoreConfig::default())?;
            println!(
                "snapshot load of {} series: {:.3} s",
                loaded.series,
                loaded.duration.as_secs_f64()
            );
        }
        return Ok(());
    }
    for _ in 0..opens {
        let started = Instant::now();
        let (db, report) = Ingestor::open(&dir, config.clone())?;
        let took = started.elapsed();
        println!(
            "replayed {} points in {:.3} s: {:.2}M points/s",
            report.replayed_points,
            took.as_secs_f64(),
            report.replayed_points as f64 / took.as_secs_f64() / 1e6
        );
        drop(db);
    }
    Ok(())
}
