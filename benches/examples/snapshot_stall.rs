//! Batches of 1,000 updates by handle while snapshots are written in a loop beside them (what
//! the bench's "longest batch during snapshots" measures), printing every batch slower than
//! 20 ms with the instant it started (`CLOCK_MONOTONIC`, to find it in a `perf record -k
//! CLOCK_MONOTONIC` profile), then the longest.
//!
//! Run: `cargo run --release -p ingestor-benches --example snapshot_stall [SECONDS]
//! [scrapes-first]` (`INGESTOR_SERIES=100000` for a smaller store). With `scrapes-first`,
//! the same writer first runs beside `/metrics` renderings of the whole store for SECONDS
//! (from a frozen view, then under the read lock), as the bench does before its snapshots.
//! `INGESTOR_BENCH_SEGMENT_FILL=allocate` gives the log `SegmentFill::Allocate` (each new
//! segment's space reserved by the appending thread at rotation) instead of the default.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ingestor::{Config, FinalSnapshot, Ingestor, SyncPolicy, Timestamp};
use ingestor_benches::standard::{handle_batch, key_batch, keys, scrape_frozen};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize =
        std::env::var("INGESTOR_SERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let tmp = tempfile::tempdir()?;
    let mut config = Config::default();
    // For an A/B of the rotations' space: the segments' `fallocate` on the appending thread.
    if std::env::var("INGESTOR_BENCH_SEGMENT_FILL").as_deref() == Ok("allocate") {
        config = config.segment_fill(ingestor::SegmentFill::Allocate);
    }
    let config = config
        .sync_policy(SyncPolicy::Os)
        .snapshot_interval(None)
        .snapshot_bytes(1 << 40)
        .final_snapshot(FinalSnapshot::Never);
    let (db, _) = Ingestor::open(tmp.path().join("data"), config)?;
    let keys = keys(n);
    for (b, chunk) in keys.chunks(10_000).enumerate() {
        let batch = key_batch(chunk, b * 10_000, 0, Timestamp(1));
        db.ingest(&batch)?;
    }
    let handles: Vec<_> = keys.iter().map(|k| db.resolve(k)).collect::<Result<_, _>>()?;
    drop(keys);
    if std::env::args().nth(2).as_deref() == Some("scrapes-first") {
        let frozen = || {
            std::hint::black_box(scrape_frozen(&db));
        };
        let locked = || {
            let mut out = String::new();
            db.expose(&mut out, None);
            std::hint::black_box(out.len());
        };
        let (longest, batches, scrapes) = beside(&db, &handles, seconds, &frozen);
        println!(
            "frozen-view scrapes: longest batch {longest:.2} ms of {batches}, {scrapes} scrapes"
        );
        let (longest, batches, scrapes) = beside(&db, &handles, seconds, &locked);
        println!(
            "read-locked scrapes: longest batch {longest:.2} ms of {batches}, {scrapes} scrapes"
        );
    }
    let snapshot = || {
        db.snapshot().expect("a snapshot");
    };
    let (longest, batches, snapshots) = beside(&db, &handles, seconds, &snapshot);
    println!("snapshots: longest batch {longest:.2} ms of {batches}, {snapshots} snapshots");
    let wal = db.stats().wal;
    println!(
        "log: {} rotations (longest {:.1} ms), {} into a spare, {} syncs, longest {:.1} ms",
        wal.rotations,
        wal.rotation_time_max.as_secs_f64() * 1e3,
        wal.spare_segments,
        wal.syncs,
        wal.sync_time_max.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Batches of 1,000 by handle over the first 50,000 series for `seconds`, while another
/// thread runs `beside` in a loop: the longest batch (ms), batches, runs of `beside`.
fn beside(
    db: &Ingestor,
    handles: &[ingestor::SeriesHandle],
    seconds: u64,
    beside: &(dyn Fn() + Sync),
) -> (f64, u64, u64) {
    let stop = AtomicBool::new(false);
    let (longest, batches, snapshots) = std::thread::scope(|s| {
        let runs = s.spawn(|| {
            let mut done = 0u64;
            while !stop.load(Relaxed) {
                beside();
                done += 1;
            }
            done
        });
        let sampler = ingestor_benches::steal::Sampler::start();
        let mut stalls = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut longest = Duration::ZERO;
        let mut batches = 0u64;
        let mut round = 100u64;
        while Instant::now() < deadline {
            for (b, chunk) in handles.chunks(1_000).enumerate().take(50) {
                let batch = handle_batch(chunk, b * 1_000, round, Timestamp(round as i64));
                let t = Instant::now();
                db.ingest_by_handle(&batch).expect("a batch");
                let took = t.elapsed();
                batches += 1;
                longest = longest.max(took);
                if took > Duration::from_millis(20) {
                    stalls.push((t, took));
                }
            }
            round += 1;
        }
        stop.store(true, Relaxed);
        let steal = sampler.stop();
        for (t, took) in stalls {
            let steal = match steal.during(t, t + took) {
                Some(cpus) => format!(
                    "steal by CPU during it {:?} ms, every CPU held at least {:.0} ms",
                    cpus.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
                    steal.held_all(t, t + took).unwrap_or_default().as_secs_f64() * 1e3
                ),
                None => "its steal not read".to_string(),
            };
            println!("batch of {:.1} ms started at {t:?}, {steal}", took.as_secs_f64() * 1e3);
        }
        println!("steal time over the run: {:.0} ms", steal.total().as_secs_f64() * 1e3);
        (longest, batches, runs.join().expect("the thread beside"))
    });
    (longest.as_secs_f64() * 1e3, batches, snapshots)
}
