//! The standard workload of the facade issue, measured end to end in one run: one million
//! series (100 metric names x 1,000 hosts x 10 label combinations, 3 to 5 labels each),
//! batches of 10,000 updates: 50% gauge sets, 40% counter adds, 10% histogram observations,
//! policy `Os`.
//!
//! Prints: ingest by handle and by key (points/s, one thread), replay (points/s), snapshot
//! write and load (seconds), ingest latency per batch (p50/p99/max) without and while a
//! snapshot is written, and resident memory (from /proc/self/status).
//!
//! Run: `cargo run --release -p ingestor-benches --example standard_workload`
//! (`INGESTOR_SERIES=100000` for a smaller run).

use std::time::{Duration, Instant};

use ingestor::{Config, FinalSnapshot, Ingestor, SyncPolicy, Timestamp};
use ingestor_benches::standard::{handle_batch, key_batch, keys, rss_mib};

fn series_count() -> usize {
    std::env::var("INGESTOR_SERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Child mode: open a data directory and report resident memory, nothing else in memory.
    if let Ok(dir) = std::env::var("INGESTOR_MEASURE_OPEN") {
        let before = rss_mib();
        let (db, report) =
            Ingestor::open(&dir, Config::default().final_snapshot(FinalSnapshot::Never))?;
        println!(
            "resident memory after open: {:.0} MiB ({:.0} MiB before open) for {} series ({} from the snapshot)",
            rss_mib(),
            before,
            db.stats().series,
            report.snapshot_series
        );
        return Ok(());
    }
    let n = series_count();
    let dir = tempfile::tempdir()?;
    // INGESTOR_DATA_DIR keeps the data directory there (it must not exist yet), to profile an
    // open afterwards with INGESTOR_MEASURE_OPEN.
    let kept = std::env::var("INGESTOR_DATA_DIR").ok().map(std::path::PathBuf::from);
    let dir_path = kept.clone().unwrap_or_else(|| dir.path().to_path_buf());
    let config = Config::default()
        .sync_policy(SyncPolicy::Os)
        .snapshot_interval(None)
        .snapshot_bytes(1 << 40)
        .final_snapshot(FinalSnapshot::Never);
    let rss_start = rss_mib();
    let keys = keys(n);
    let (db, _) = Ingestor::open(dir_path.as_path(), config.clone())?;

    // Ingest by key: the first pass also creates every series.
    let started = Instant::now();
    let mut points = 0usize;
    for (b, chunk) in keys.chunks(10_000).enumerate() {
        let batch = key_batch(chunk, b * 10_000, 0, Timestamp(1_000 + b as i64));
        db.ingest(&batch)?;
        points += batch.len();
    }
    let by_key_create = points as f64 / started.elapsed().as_secs_f64();
    // INGESTOR_ONLY_CREATE=1 stops here, to profile creating series alone.
    if std::env::var_os("INGESTOR_ONLY_CREATE").is_some() {
        println!("ingest by key (creating series): {by_key_create:>12.0} points/s");
        return Ok(());
    }
    // Ingest by key again: series exist, keys are hashed and looked up per point.
    // INGESTOR_BY_KEY_ROUNDS=K runs K such rounds (the last one measured), to profile them.
    let by_key_rounds: u64 =
        std::env::var("INGESTOR_BY_KEY_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    for _ in 1..by_key_rounds {
        for (b, chunk) in keys.chunks(10_000).enumerate() {
            let batch = key_batch(chunk, b * 10_000, 1, Timestamp(1_500));
            db.ingest(&batch)?;
        }
    }
    let started = Instant::now();
    for (b, chunk) in keys.chunks(10_000).enumerate() {
        let batch = key_batch(chunk, b * 10_000, 1, Timestamp(2_000 + b as i64));
        db.ingest(&batch)?;
    }
    let by_key = n as f64 / started.elapsed().as_secs_f64();

    // Ingest by handle.
    let handles: Vec<_> = keys.iter().map(|k| db.resolve(k)).collect::<Result<_, _>>()?;
    let mut latencies = Vec::new();
    let started = Instant::now();
    for round in 2..5u64 {
        for (b, chunk) in handles.chunks(10_000).enumerate() {
            let batch = handle_batch(chunk, b * 10_000, round, Timestamp(3_000 + b as i64));
            let t = Instant::now();
            db.ingest_by_handle(&batch)?;
            latencies.push(t.elapsed());
        }
    }
    let by_handle = (3 * n) as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    let rss_loaded = rss_mib();

    // Ingest by handle while a snapshot is written on another thread.
    let db = std::sync::Arc::new(db);
    let snapshotter = {
        let db = std::sync::Arc::clone(&db);
        std::thread::spawn(move || {
            let t = Instant::now();
            let info = db.snapshot().expect("snapshot");
            (t.elapsed(), info)
        })
    };
    let mut during = Vec::new();
    let mut round = 5u64;
    while !snapshotter.is_finished() {
        for (b, chunk) in handles.chunks(10_000).enumerate() {
            let batch = handle_batch(chunk, b * 10_000, round, Timestamp(4_000 + b as i64));
            let t = Instant::now();
            db.ingest_by_handle(&batch)?;
            during.push(t.elapsed());
            if snapshotter.is_finished() {
                break;
            }
        }
        round += 1;
    }
    let (snapshot_time, info) = snapshotter.join().expect("snapshot thread");
    during.sort();
    let snapshot_bytes = info.map_or(0, |i| i.bytes);
    let db = std::sync::Arc::try_unwrap(db).expect("sole owner");
    drop(db);

    // Load: the snapshot, then the log written after it.
    let started = Instant::now();
    let (db, report) = Ingestor::open(dir_path.as_path(), config.clone())?;
    let open_time = started.elapsed();
    let replayed = report.replayed_points;
    drop(db);

    // Memory: a fresh process that only opens the directory (snapshot load + short replay).
    let child = std::process::Command::new(std::env::current_exe()?)
        .env("INGESTOR_MEASURE_OPEN", dir_path.as_path())
        .output()?;
    let memory_line = String::from_utf8_lossy(&child.stdout).trim().to_string();

    if kept.is_some() {
        println!("{memory_line}\nkept the data directory at {}", dir_path.display());
        return Ok(());
    }

    // Replay alone: move the snapshots aside and replay the whole log.
    std::fs::rename(
        dir_path.as_path().join("snapshots"),
        dir_path.as_path().join("snapshots.aside"),
    )?;
    let started = Instant::now();
    let (db, report) = Ingestor::open(dir_path.as_path(), config)?;
    let replay_time = started.elapsed();
    let replay = report.replayed_points as f64 / replay_time.as_secs_f64();
    drop(db);

    println!("standard workload: {n} series, batches of 10,000, policy Os");
    println!("ingest by key (creating series): {:>12.0} points/s", by_key_create);
    println!("ingest by key:                   {:>12.0} points/s", by_key);
    println!("ingest by handle:                {:>12.0} points/s", by_handle);
    println!(
        "replay (whole log, {} points):   {:>12.0} points/s ({:.2?})",
        report.replayed_points, replay, replay_time
    );
    println!("snapshot write ({} MiB):          {:>12.2?}", snapshot_bytes >> 20, snapshot_time);
    println!("open = snapshot load + replay of {replayed} points: {:.2?}", open_time);
    println!(
        "batch latency without snapshot: p50 {:.2?} p99 {:.2?} max {:.2?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    if !during.is_empty() {
        println!(
            "batch latency during snapshot:  p50 {:.2?} p99 {:.2?} max {:.2?} ({} batches)",
            percentile(&during, 0.5),
            percentile(&during, 0.99),
            during.last().copied().unwrap_or_default(),
            during.len()
        );
    }
    println!(
        "this process: {:.0} MiB before, {:.0} MiB after ingesting (including its own keys)",
        rss_start, rss_loaded
    );
    println!("{memory_line}");
    Ok(())
}
