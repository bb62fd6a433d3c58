//! The background policies: automatic snapshots on log growth with compaction, time-to-live
//! expiry logged as deletes, the replay progress callback.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Apply, Model, Workload, observed};
use ingestor::{
    Config, FinalSnapshot, Fs, Ingestor, Op, SeriesKey, SimFs, SyncPolicy, Timestamp, Update,
};

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_log_growing_past_the_threshold_triggers_a_snapshot_and_compaction() {
    let sim = SimFs::new(21);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let config = Config::default()
        .sync_policy(SyncPolicy::Os)
        .segment_bytes_max(4096)
        .snapshot_bytes(16 << 10)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never)
        .maintenance_interval(Duration::from_millis(5));
    let (db, _) =
        Ingestor::open_with(Arc::clone(&fs), Path::new("/d"), config.clone(), &mut |_| {}).unwrap();
    let mut workload = Workload::new(21, 40);
    let mut model = Model::default();
    for i in 0..400 {
        let b = workload.batch(i);
        db.ingest(&b).unwrap();
        model.apply(&b);
    }
    // A snapshot needs the log to grow past the threshold after the one before: if the
    // background thread took its first only after the last batch (a busy machine), the log
    // must go on growing for a second.
    let mut i = 400;
    wait_for("two automatic snapshots", || {
        if db.stats().snapshots_written < 2 {
            let b = workload.batch(i);
            db.ingest(&b).unwrap();
            model.apply(&b);
            i += 1;
        }
        db.stats().snapshots_written >= 2
    });
    let stats = db.stats();
    assert!(stats.wal.segments_deleted > 0, "compaction deleted covered segments: {stats:?}");
    assert_eq!(stats.background_error, None);
    let segments = fs
        .read_dir(Path::new("/d/wal"))
        .unwrap()
        .iter()
        .filter(|e| e.name.ends_with(".seg"))
        .count();
    assert!(
        (segments as u64) < stats.wal.rotations + 1,
        "the log's disk use is bounded by compaction"
    );
    drop(db);
    let (db, report) = Ingestor::open_with(fs, Path::new("/d"), config, &mut |_| {}).unwrap();
    assert!(report.snapshot.is_some());
    assert_eq!(observed(&db), model, "snapshot plus the remaining log give the exact state");
}

#[test]
fn idle_series_expire_and_the_delete_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default()
        .series_ttl(Some(Duration::from_secs(60)))
        .final_snapshot(FinalSnapshot::Never)
        .maintenance_interval(Duration::from_millis(5));
    let (db, _) = Ingestor::open(dir.path(), config.clone()).unwrap();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    let old = SeriesKey::new("old", [("a", "1")]).unwrap();
    let fresh = SeriesKey::new("fresh", [("a", "1")]).unwrap();
    db.ingest(&[
        Update::new(old.clone(), Timestamp(now - 3_600_000), Op::GaugeSet(1.0)).unwrap(),
        Update::new(fresh.clone(), Timestamp(now), Op::GaugeSet(2.0)).unwrap(),
    ])
    .unwrap();
    wait_for("the idle series to expire", || db.get(&old).is_none());
    assert!(db.get(&fresh).is_some());
    assert_eq!(db.stats().expired_series, 1);
    db.sync().unwrap();
    drop(db);
    let (db, _) = Ingestor::open(dir.path(), config.series_ttl(None)).unwrap();
    assert!(db.get(&old).is_none(), "the expiry was logged as a delete and replayed");
    assert!(db.get(&fresh).is_some());
}

#[test]
fn replay_reports_progress_and_a_background_snapshot_can_be_requested() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::default().final_snapshot(FinalSnapshot::Never).snapshot_interval(None);
    let (db, _) = Ingestor::open(dir.path(), config.clone()).unwrap();
    let mut workload = Workload::new(22, 10);
    for i in 0..50 {
        db.ingest(&workload.batch(i)).unwrap();
    }
    let info = db.snapshot_in_background().unwrap().expect("a snapshot");
    for i in 50..80 {
        db.ingest(&workload.batch(i)).unwrap();
    }
    drop(db);
    let mut calls = Vec::new();
    let (_db, report) =
        Ingestor::open_with(Arc::new(ingestor::StdFs::new()), dir.path(), config, &mut |p| {
            calls.push(*p);
        })
        .unwrap();
    assert_eq!(report.snapshot.unwrap().lsn, info.lsn);
    let last = calls.last().expect("progress was reported");
    assert_eq!(last.records, report.replayed_records);
    assert_eq!(last.points, report.replayed_points);
    assert!(calls.windows(2).all(|w| w[0].lsn < w[1].lsn), "progress moves forward");
}

/// `Buffered`: batches are acknowledged accepted; a snapshot taken while the buffer holds
/// batches covers them (it writes and syncs them first), and a restart applies each batch
/// exactly once; a process crash loses only batches that were never written.
#[test]
fn buffered_batches_are_accepted_and_a_snapshot_covers_them_exactly_once() {
    let sim = SimFs::new(23);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let config = Config::default()
        .sync_policy(SyncPolicy::Buffered(Duration::from_secs(60)))
        .segment_bytes_max(1 << 20)
        .segment_fill(ingestor::SegmentFill::ZerosInline)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never);
    let (db, _) =
        Ingestor::open_with(Arc::clone(&fs), Path::new("/d"), config.clone(), &mut |_| {}).unwrap();
    let mut workload = Workload::new(23, 10);
    let mut model = Model::default();
    for i in 0..20 {
        let b = workload.batch(i);
        let ack = db.ingest(&b).unwrap();
        assert_eq!(ack.level, ingestor::AckLevel::Accepted, "batch {i}");
        model.apply(&b);
    }
    let info = db.snapshot().unwrap().expect("new batches");
    assert_eq!(info.lsn, db.stats().wal.accepted_lsn);
    assert_eq!(db.stats().wal.written_lsn, info.lsn, "the snapshot wrote the buffer first");
    for i in 20..30 {
        let b = workload.batch(i);
        db.ingest(&b).unwrap();
        model.apply(&b);
    }
    let flushed = db.flush().unwrap();
    assert_eq!(flushed, db.stats().wal.accepted_lsn);
    let survivors = model.clone();
    for i in 30..35 {
        let b = workload.batch(i);
        assert_eq!(db.ingest(&b).unwrap().level, ingestor::AckLevel::Accepted);
    }
    // A process crash: what reached the operating system survives, the buffer does not.
    sim.crash(ingestor_fs::CrashPolicy::RevertDirOps);
    drop(db);
    let (db, _) = Ingestor::open_with(fs, Path::new("/d"), config, &mut |_| {}).unwrap();
    assert_eq!(observed(&db), survivors, "the snapshot and the written log, each batch once");
    db.close().unwrap();
}
