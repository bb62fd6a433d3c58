//! The metrics workloads of the facade: ingest by handle and by key, durable ingest with
//! 1, 4 and 16 writers, replay, snapshot write and load, bytes per point, memory per series.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingestor::{
    Compression, Config, FinalSnapshot, Ingestor, SeriesHandle, SyncPolicy, Timestamp, Update,
};
use ingestor_benches::standard::{handle_batch, key_batch, keys, op, rss_mib, scrape_frozen};
use ingestor_benches::steal;

use crate::table::{Figure, Report, human};

const BATCH: usize = 10_000;

fn config(sync: SyncPolicy) -> Config {
    Config::default()
        .sync_policy(sync)
        .snapshot_interval(None)
        .snapshot_bytes(1 << 40)
        .final_snapshot(FinalSnapshot::Never)
}

fn by_handle_round(db: &Ingestor, handles: &[SeriesHandle], round: u64) {
    for (b, chunk) in handles.chunks(BATCH).enumerate() {
        let batch =
            handle_batch(chunk, b * BATCH, round, Timestamp(round as i64 * 1_000 + b as i64));
        db.ingest_by_handle(&batch).unwrap();
    }
}

fn by_key_round(db: &Ingestor, keys: &[ingestor::SeriesKey], round: u64) {
    for (b, chunk) in keys.chunks(BATCH).enumerate() {
        let batch = key_batch(chunk, b * BATCH, round, Timestamp(round as i64 * 1_000 + b as i64));
        db.ingest(&batch).unwrap();
    }
}

fn points_per_s(points: usize, elapsed: Duration) -> f64 {
    points as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Child mode: open `dir` and print the resident memory growth (MiB) and the series count.
pub fn child_measure_open(dir: &Path) {
    let before = rss_mib();
    let (db, _) = Ingestor::open(dir, config(SyncPolicy::Os)).unwrap();
    println!("{} {}", rss_mib() - before, db.stats().series);
}

/// Deletes every series of the standard data set (on a log of its own), in batches of
/// 10,000 deletes by key: what a time-to-live expiry of all of them logs and applies.
fn delete_all(report: &mut Report, section: &str, keys: &[ingestor::SeriesKey]) {
    let tmp = tempfile::tempdir().unwrap();
    let (db, _) = Ingestor::open(tmp.path().join("data"), config(SyncPolicy::Os)).unwrap();
    by_key_round(&db, keys, 0);
    let t = Instant::now();
    for chunk in keys.chunks(BATCH) {
        let batch: Vec<Update> = chunk
            .iter()
            .map(|k| Update {
                key: k.clone(),
                timestamp: Timestamp(2_000),
                op: ingestor::Op::Delete,
            })
            .collect();
        db.ingest(&batch).unwrap();
    }
    let took = t.elapsed().as_secs_f64();
    assert_eq!(db.stats().series, 0, "every series deleted");
    report.add(
        Figure::new(
            section,
            &format!("delete all {} series (as TTL expiry)", keys.len()),
            took,
            "s",
        )
        .lower_is_better()
        .target(2.0),
    );
}

/// Runs every metrics workload on `n` series; durable runs last `budget` each.
pub fn run(report: &mut Report, n: usize, budget: Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let keys = keys(n);
    let (db, _) = Ingestor::open(&dir, config(SyncPolicy::Os)).unwrap();

    let t = Instant::now();
    by_key_round(&db, &keys, 0);
    let create = points_per_s(n, t.elapsed());
    let t = Instant::now();
    by_key_round(&db, &keys, 1);
    let by_key = points_per_s(n, t.elapsed());
    let handles: Vec<_> = keys.iter().map(|k| db.resolve(k).unwrap()).collect();
    let t = Instant::now();
    for round in 2..5 {
        by_handle_round(&db, &handles, round);
    }
    let by_handle = points_per_s(3 * n, t.elapsed());
    let section = format!("metrics: standard data set, {n} series, batches of 10,000, Os");
    // One point per new series: points/s is series created per second.
    report.add(
        Figure::new(&section, "ingest by key, creating series", create, "points/s").target(1e6),
    );
    report
        .add(Figure::new(&section, "ingest by key, series exist", by_key, "points/s").target(3e6));
    report.add(Figure::new(&section, "ingest by handle", by_handle, "points/s").target(10e6));
    delete_all(report, &section, &keys);

    // Bytes per point in the log, as written (points: 5 rounds of n).
    let logged = db.stats().wal.bytes_written as f64 / (5 * n) as f64;
    report.add(Figure::new(&section, "log bytes per point, uncompressed", logged, "B/point"));

    let t = Instant::now();
    let info = db.snapshot().unwrap().expect("a snapshot");
    let snapshot_write = t.elapsed().as_secs_f64();
    report.add(
        Figure::new(&section, "snapshot write", snapshot_write, "s").lower_is_better().target(2.0),
    );
    report.add(Figure::new(
        &section,
        "snapshot bytes per series (zstd)",
        info.bytes as f64 / n as f64,
        "B/series",
    ));
    by_handle_round(&db, &handles, 5);
    db.close().unwrap();

    // Load: the snapshot plus one round of log.
    let t = Instant::now();
    let (db, report_open) = Ingestor::open(&dir, config(SyncPolicy::Os)).unwrap();
    let open = t.elapsed().as_secs_f64();
    drop(db);
    report.add(
        Figure::new(
            &section,
            &format!("open: snapshot load + replay of {} points", report_open.replayed_points),
            open,
            "s",
        )
        .lower_is_better()
        .target(1.0),
    );

    // The snapshot load alone (what open does before replaying the log after it).
    let (snapshots, _) = ingestor_snapshot::SnapshotStore::open(
        Arc::new(ingestor_fs::StdFs::new()),
        &dir.join("snapshots"),
        ingestor_snapshot::SnapshotOptions::default(),
    )
    .unwrap();
    let loaded = snapshots.load_newest(&ingestor::MemstoreConfig::default()).unwrap();
    assert_eq!(loaded.series, n as u64, "the snapshot holds every series");
    let load = loaded.duration.as_secs_f64();
    drop(loaded);
    report.add(
        Figure::new(&section, &format!("snapshot load of {n} series"), load, "s")
            .lower_is_better()
            .target(0.5),
    );

    // Memory: a fresh process that only opens the directory.
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--child-measure-open")
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&child.stdout);
    let mut parts = text.split_whitespace();
    if let (Some(mib), Some(series)) = (
        parts.next().and_then(|v| v.parse::<f64>().ok()),
        parts.next().and_then(|v| v.parse::<f64>().ok()),
    ) {
        report.add(
            Figure::new(
                &section,
                "resident memory per series after open",
                mib * 1024.0 * 1024.0 / series.max(1.0),
                "B/series",
            )
            .lower_is_better()
            .target(250.0),
        );
    }

    // Replay alone: the whole log of the same five rounds, in a directory of its own that
    // never had a snapshot (the snapshot above let compaction delete the segments it covers).
    let replay_dir = tmp.path().join("replay");
    let (db, _) = Ingestor::open(&replay_dir, config(SyncPolicy::Os)).unwrap();
    by_key_round(&db, &keys, 0);
    let replay_handles: Vec<_> = keys.iter().map(|k| db.resolve(k).unwrap()).collect();
    for round in 1..5 {
        by_handle_round(&db, &replay_handles, round);
    }
    db.close().unwrap();
    // The median of three opens: one open of 0.5 s on this shared machine is at the mercy
    // of whatever else runs on the host during it (single opens of the same log in one
    // minute ranged 5.4M to 8.5M points/s).
    let mut replays: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            let (db, r) = Ingestor::open(&replay_dir, config(SyncPolicy::Os)).unwrap();
            let replay = points_per_s(r.replayed_points as usize, t.elapsed());
            // No snapshot at close (`FinalSnapshot::Never`): the next open replays it all.
            drop(db);
            replay
        })
        .collect();
    replays.sort_by(f64::total_cmp);
    report.add(
        Figure::new(&section, "replay of the whole log", replays[1], "points/s").target(10e6).note(
            format!(
                "median of 3 opens; the others {} and {}",
                human(replays[0]),
                human(replays[2])
            ),
        ),
    );

    // Bytes per point with log compression (the same five rounds).
    for (name, compression) in [("lz4", Compression::Lz4), ("zstd", Compression::Zstd { level: 3 })]
    {
        let d = tmp.path().join(name);
        let (db, _) =
            Ingestor::open(&d, config(SyncPolicy::Os).wal_compression(compression)).unwrap();
        by_key_round(&db, &keys, 0);
        let handles: Vec<_> = keys.iter().map(|k| db.resolve(k).unwrap()).collect();
        for round in 1..5 {
            by_handle_round(&db, &handles, round);
        }
        let bytes = db.stats().wal.bytes_written as f64 / (5 * n) as f64;
        report.add(Figure::new(
            &section,
            &format!("log bytes per point, {name}"),
            bytes,
            "B/point",
        ));
        db.close().unwrap();
    }

    scrape_during_ingest(report, &keys, budget);

    // Durable ingest under Always: each writer ingests batches of 10 points by handle.
    let section = "metrics: durable ingest under Always, batches of 10 points by handle";
    let d = tmp.path().join("durable");
    let (db, _) = Ingestor::open(&d, config(SyncPolicy::Always)).unwrap();
    let small: Vec<_> = keys.iter().take(10_000).map(|k| db.resolve(k).unwrap()).collect();
    let db = Arc::new(db);
    let mut one = 0.0;
    for writers in [1usize, 4, 16] {
        let deadline = Instant::now() + budget;
        let started = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..writers)
                .map(|w| {
                    let db = Arc::clone(&db);
                    let small = &small;
                    s.spawn(move || {
                        let mut n = 0u64;
                        let mut round = 0u64;
                        while Instant::now() < deadline {
                            let at = (w * 10 + (round as usize * writers * 10)) % small.len();
                            let batch: Vec<_> = small[at..(at + 10).min(small.len())]
                                .iter()
                                .enumerate()
                                .map(|(j, &h)| (h, Timestamp(round as i64), op(at + j, round)))
                                .collect();
                            db.ingest_by_handle(&batch).unwrap();
                            n += batch.len() as u64;
                            round += 1;
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let rate = total as f64 / started.elapsed().as_secs_f64();
        if writers == 1 {
            one = rate;
        }
        let mut f = Figure::new(section, &format!("{writers} writer(s)"), rate, "points/s");
        if writers > 1 {
            f = f.note(format!("{:.2}x one writer", rate / one));
        }
        report.add(f);
    }
    drop(db);
}

/// The longest of `latencies`, in milliseconds: a scrape that holds the lock shows here.
fn max_ms(latencies: &[Duration]) -> f64 {
    latencies.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// The p99 of `batches` latencies, in milliseconds.
fn p99_ms(mut latencies: Vec<Duration>) -> f64 {
    latencies.sort_unstable();
    let i = ((latencies.len() as f64 * 0.99).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[i].as_secs_f64() * 1e3
}

/// Batches longer than this are checked for the host's steal time during them.
const STALL: Duration = Duration::from_millis(20);

/// What [`writer_latencies`] measured.
struct Run {
    /// Each batch's latency.
    latencies: Vec<Duration>,
    /// The batches longer than [`STALL`]: when each started, and its latency.
    stalls: Vec<(Instant, Duration)>,
    /// How many times the thread beside ran its work.
    beside: u64,
    /// The host's steal time over the run.
    steal: steal::Samples,
}

impl Run {
    /// The longest batch, in milliseconds.
    fn max_ms(&self) -> f64 {
        max_ms(&self.latencies)
    }

    /// The longest batch less the time the host held every CPU during it
    /// ([`steal::Samples::held_all`]; only batches over [`STALL`] are checked, and one whose
    /// steal was not read counts whole), in milliseconds.
    fn max_own_ms(&self) -> f64 {
        let own = |&(t, d): &(Instant, Duration)| {
            d.saturating_sub(self.steal.held_all(t, t + d).unwrap_or_default())
        };
        let longest_stall = self.stalls.iter().map(own).max();
        // The batches not over STALL were not checked: the longest of them counts whole.
        let short = self.latencies.iter().filter(|&&d| d <= STALL).max().copied();
        longest_stall.max(short).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }

    /// The batches over [`STALL`] and the host's steal time during them.
    fn stall_note(&self) -> String {
        let stolen: Vec<Option<Duration>> = self
            .stalls
            .iter()
            .map(|&(t, d)| self.steal.during(t, t + d).map(|cpus| cpus.iter().sum()))
            .collect();
        let mut note = format!(
            "{} batches over {} ms, {} with steal time during them (the host running \
             something else on this machine's CPUs, /proc/stat), {} whose steal was not read",
            self.stalls.len(),
            STALL.as_millis(),
            stolen.iter().filter(|s| s.is_some_and(|s| !s.is_zero())).count(),
            stolen.iter().filter(|s| s.is_none()).count()
        );
        let longest = self.stalls.iter().zip(&stolen).max_by_key(|((_, d), _)| *d);
        if let Some(((t, d), s)) = longest {
            let held = self.steal.held_all(*t, *t + *d).unwrap_or_default();
            match s {
                Some(s) => note.push_str(&format!(
                    "; the longest {:.1} ms with {:.0} ms of steal summed over the CPUs \
                     during it, every CPU held at least {:.0} ms",
                    d.as_secs_f64() * 1e3,
                    s.as_secs_f64() * 1e3,
                    held.as_secs_f64() * 1e3
                )),
                None => note.push_str(&format!(
                    "; the longest {:.1} ms, its steal not read",
                    d.as_secs_f64() * 1e3
                )),
            }
        }
        note.push_str(&format!(
            "; steal over the phase {:.0} ms summed over the CPUs",
            self.steal.total().as_secs_f64() * 1e3
        ));
        note
    }
}

/// Batch latencies of one writer (batches of 1,000 points by handle) for `budget`, while
/// `scrape` runs in a loop on another thread (if given), and the host's steal time meanwhile.
fn writer_latencies(
    db: &Ingestor,
    handles: &[SeriesHandle],
    budget: Duration,
    scrape: Option<&(dyn Fn() + Sync)>,
) -> Run {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let sampler = steal::Sampler::start();
    let (latencies, stalls, beside) = std::thread::scope(|s| {
        let scrapes = s.spawn(|| {
            let mut n = 0u64;
            if let Some(scrape) = scrape {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    scrape();
                    n += 1;
                }
            }
            n
        });
        let mut latencies = Vec::new();
        let mut stalls = Vec::new();
        let deadline = Instant::now() + budget;
        let mut round = 100u64;
        while Instant::now() < deadline {
            for (b, chunk) in handles.chunks(1_000).enumerate().take(50) {
                let batch = handle_batch(chunk, b * 1_000, round, Timestamp(round as i64));
                let t = Instant::now();
                db.ingest_by_handle(&batch).unwrap();
                let took = t.elapsed();
                latencies.push(took);
                if took > STALL {
                    stalls.push((t, took));
                }
            }
            round += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (latencies, stalls, scrapes.join().unwrap())
    });
    Run { latencies, stalls, beside, steal: sampler.stop() }
}

/// What `GET /metrics` costs writers: batch p99 while the whole store is rendered in a loop,
/// from a frozen view (what `ingestor serve` does) and through `Ingestor::expose` (which
/// copies every series first: under the memstore's read lock until 2026-11-29, from a frozen
/// view since), beside the p99 with no scrape; then the same while snapshots are written in
/// a loop.
fn scrape_during_ingest(report: &mut Report, keys: &[ingestor::SeriesKey], budget: Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let (db, _) = Ingestor::open(tmp.path().join("scrape"), config(SyncPolicy::Os)).unwrap();
    by_key_round(&db, keys, 0);
    let handles: Vec<_> = keys.iter().map(|k| db.resolve(k).unwrap()).collect();
    let section = format!(
        "metrics: a /metrics scrape of {} series during ingest (batches of 1,000, Os)",
        keys.len()
    );
    let base = p99_ms(writer_latencies(&db, &handles, budget, None).latencies);
    let frozen = || {
        std::hint::black_box(scrape_frozen(&db));
    };
    let frozen_run = writer_latencies(&db, &handles, budget, Some(&frozen));
    let scrapes = frozen_run.beside;
    let during = p99_ms(frozen_run.latencies.clone());
    let locked = || {
        let mut out = String::new();
        db.expose(&mut out, None);
        std::hint::black_box(out.len());
    };
    let held_run = writer_latencies(&db, &handles, budget, Some(&locked));
    let held_max = held_run.max_ms();
    let held_scrapes = held_run.beside;
    let held_stalls = held_run.stall_note();
    let held = p99_ms(held_run.latencies);
    // The only part of a scrape that writers wait for: the freeze, under the read lock.
    let mut pauses: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(db.memstore().freeze());
            t.elapsed()
        })
        .collect();
    pauses.sort_unstable();
    report.add(
        Figure::new(
            &section,
            "freeze (the lock a scrape holds), median of 20",
            pauses[10].as_secs_f64() * 1e6,
            "us",
        )
        .lower_is_better(),
    );
    report.add(Figure::new(&section, "batch p99, no scrape", base, "ms").lower_is_better());
    report.add(
        Figure::new(
            &section,
            "batch p99 during frozen-view scrapes / no scrape",
            during / base,
            "x",
        )
        .lower_is_better()
        .target(2.0)
        .note(format!("{during:.2} ms; {scrapes} scrapes")),
    );
    report.add(
        Figure::new(
            &section,
            "batch p99 during Ingestor::expose scrapes / no scrape",
            held / base,
            "x",
        )
        .lower_is_better()
        .note(format!(
            "{held:.2} ms; {held_scrapes} scrapes; copies every series (once under the \
                 read lock, now from a frozen view), then renders"
        )),
    );
    stall_figures(report, &section, "frozen-view scrapes", &frozen_run, None);
    report.add(
        Figure::new(&section, "longest batch during Ingestor::expose scrapes", held_max, "ms")
            .lower_is_better()
            .note(format!("copies every series, then renders; {held_stalls}")),
    );

    // Snapshots written in a loop beside the same writer: what a snapshot costs writers
    // (the freeze, then copy-on-write of the chunks the writer touches first).
    let section = format!(
        "metrics: snapshots of {} series written during ingest (batches of 1,000, Os)",
        keys.len()
    );
    let snapshot = || {
        std::hint::black_box(db.snapshot().unwrap());
    };
    let rotations_before = db.stats().wal.rotations;
    let run = writer_latencies(&db, &handles, budget, Some(&snapshot));
    let wal = db.stats().wal;
    let snapshots = run.beside;
    let during = p99_ms(run.latencies.clone());
    report.add(
        Figure::new(&section, "batch p99 during snapshots / no snapshot", during / base, "x")
            .lower_is_better()
            .target(2.0)
            .note(format!("{during:.2} ms against {base:.2} ms; {snapshots} snapshots")),
    );
    let log = format!(
        "meanwhile {} log rotations, each segment synced by its close on the log's background \
         thread; the log's longest sync since open {:.0} ms, longest rotation {:.1} ms",
        wal.rotations - rotations_before,
        wal.sync_time_max.as_secs_f64() * 1e3,
        wal.rotation_time_max.as_secs_f64() * 1e3
    );
    stall_figures(report, &section, "snapshots", &run, Some(log));
    drop(db);
}

/// The longest batch during `what` (target: no pause over 20 ms), with the host's steal time
/// during the batches over [`STALL`]; then the longest batch less the time the host held
/// every CPU during it, against the same bound: what the ingestor itself kept writers
/// waiting.
fn stall_figures(report: &mut Report, section: &str, what: &str, run: &Run, also: Option<String>) {
    let note = match also {
        Some(also) => format!("{}; {also}", run.stall_note()),
        None => run.stall_note(),
    };
    report.add(
        Figure::new(section, &format!("longest batch during {what}"), run.max_ms(), "ms")
            .lower_is_better()
            .target(STALL.as_secs_f64() * 1e3)
            .note(note),
    );
    report.add(
        Figure::new(
            section,
            &format!("longest batch during {what}, less the time the host held every CPU"),
            run.max_own_ms(),
            "ms",
        )
        .lower_is_better()
        .target(STALL.as_secs_f64() * 1e3)
        .note(format!(
            "each batch over {} ms less the steal time of the CPU that had the least during \
             it (the time the host held all of this machine's CPUs at once), less one tick \
             of /proc/stat's counts: what the ingestor kept a writer waiting on its own",
            STALL.as_millis()
        )),
    );
}
