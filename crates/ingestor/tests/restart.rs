//! Restart cycles, snapshots, fall-back to an older snapshot, the directory lock: the state
//! after every reopen equals the model's, counters exact, nothing applied twice.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Apply, Model, Workload, observed};
use ingestor::{
    AckLevel, Config, Error, FinalSnapshot, Fs, Ingestor, Op, SeriesKey, SimFs, SyncPolicy,
    Timestamp, Update,
};

fn config() -> Config {
    Config::default()
        .sync_policy(SyncPolicy::Always)
        .segment_bytes_max(4096)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never)
}

fn open(fs: &Arc<dyn Fs>, config: Config) -> (Ingestor, ingestor::OpenReport) {
    Ingestor::open_with(Arc::clone(fs), Path::new("/data"), config, &mut |_| {}).unwrap()
}

#[test]
fn restart_cycles_keep_exact_state_with_and_without_snapshots() {
    let sim = SimFs::new(1);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let mut model = Model::default();
    let mut workload = Workload::new(1, 30);
    let mut ts = 1_000;
    for cycle in 0..8 {
        let (db, report) = open(&fs, config());
        assert_eq!(observed(&db), model, "cycle {cycle}: state after reopen\n{report}");
        for _ in 0..25 {
            ts += 10;
            let batch = workload.batch(ts);
            let ack = db.ingest(&batch).unwrap();
            assert_eq!(ack.level, AckLevel::Durable);
            model.apply(&batch);
        }
        if cycle % 3 == 1 {
            db.snapshot().unwrap().expect("something new to snapshot");
        }
        assert_eq!(observed(&db), model, "cycle {cycle}: live state");
        // Dropping without close is a crash for the data (the final snapshot is off).
        drop(db);
    }
    let (db, report) = open(&fs, config());
    assert!(report.snapshot.is_some(), "{report}");
    assert_eq!(observed(&db), model);
}

#[test]
fn a_snapshot_then_replay_applies_nothing_twice() {
    let sim = SimFs::new(2);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let key = SeriesKey::new("hits", [("a", "b")]).unwrap();
    let add = |n: f64| vec![Update::new(key.clone(), Timestamp(1), Op::CounterAdd(n)).unwrap()];
    let (db, _) = open(&fs, config());
    db.ingest(&add(1.0)).unwrap();
    db.ingest(&add(2.0)).unwrap();
    let snap = db.snapshot().unwrap().unwrap();
    db.ingest(&add(4.0)).unwrap();
    drop(db);
    let (db, report) = open(&fs, config());
    assert_eq!(report.snapshot.as_ref().map(|s| s.lsn), Some(snap.lsn));
    assert_eq!(
        report.replayed_records, 1,
        "only the batch after the snapshot is replayed: {report}"
    );
    let v = db.get(&key).unwrap();
    assert!(matches!(&v.state, ingestor::SeriesState::Counter(c) if c.total == 7.0), "{v:?}");
}

/// The log's series ids are segment-local and need not equal the memstore handles of the
/// process that replays them: here every process life numbers the same series differently,
/// and replay maps each segment's ids through that segment's own definitions.
#[test]
fn replay_maps_each_segments_series_ids_through_its_own_definitions() {
    let sim = SimFs::new(3);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let key = |name: &str| SeriesKey::new(name, [("k", "v")]).unwrap();
    let (a, b, c) = (key("a"), key("b"), key("c"));
    let total = |db: &Ingestor, k: &SeriesKey| match db.get(k).map(|v| v.state) {
        Some(ingestor::SeriesState::Counter(c)) => c.total,
        other => panic!("{k}: {other:?}"),
    };
    let add = |db: &Ingestor, k: &SeriesKey, n: f64| {
        let h = db.resolve(k).unwrap();
        db.ingest_by_handle(&[(h, Timestamp(1), Op::CounterAdd(n))]).unwrap();
    };

    // First life: a series resolved but never written takes the first handle, so a and b
    // are logged under ids that the next life's handles will not match.
    let (db, _) = open(&fs, config());
    db.resolve(&key("never_written")).unwrap();
    add(&db, &a, 1.0);
    add(&db, &b, 10.0);
    drop(db);

    // Second life: replay numbers a and b anew; the new segment defines b and c (and then a)
    // under this life's numbering.
    let (db, _) = open(&fs, config());
    assert_eq!((total(&db, &a), total(&db, &b)), (1.0, 10.0));
    add(&db, &b, 100.0);
    add(&db, &c, 1_000.0);
    add(&db, &a, 2.0);
    drop(db);

    // Third life: both segments replay, each through its own definitions.
    let (db, report) = open(&fs, config());
    assert_eq!(report.replayed_points, 5, "{report}");
    assert_eq!((total(&db, &a), total(&db, &b), total(&db, &c)), (3.0, 110.0, 1_000.0));
    assert!(db.get(&key("never_written")).is_none());
}

#[test]
fn the_second_opener_is_refused_with_the_directory_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, _) = Ingestor::open(dir.path(), config()).unwrap();
    let err = Ingestor::open(dir.path(), config()).unwrap_err();
    assert!(matches!(&err, Error::Locked { dir: d, .. } if d == dir.path()), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn a_corrupt_newest_snapshot_falls_back_to_the_older_one_and_replays_longer() {
    let sim = SimFs::new(3);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let mut model = Model::default();
    let mut workload = Workload::new(3, 20);
    let (db, _) = open(&fs, config());
    for round in 0..3 {
        for i in 0..20 {
            let batch = workload.batch(round * 1000 + i);
            db.ingest(&batch).unwrap();
            model.apply(&batch);
        }
        db.snapshot().unwrap();
    }
    let newest = db.stats().last_snapshot_lsn.unwrap();
    drop(db);
    let snap_path = Path::new("/data/snapshots").join(format!("snap-{:020}.snap", newest.0));
    let len = fs.read_file(&snap_path).unwrap().len() as u64;
    sim.flip_bit(&snap_path, len / 2, 3).unwrap();
    let (db, report) = open(&fs, config());
    assert_eq!(report.rejected_snapshots.len(), 1, "{report}");
    assert!(report.snapshot.as_ref().unwrap().lsn < newest);
    assert!(report.replayed_records > 0);
    assert_eq!(observed(&db), model, "nothing lost by the fall-back");
}

#[test]
fn a_refused_batch_leaves_nothing_behind() {
    let sim = SimFs::new(4);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let (db, _) = open(&fs, config());
    let gauge = SeriesKey::new("g", [("x", "1")]).unwrap();
    db.ingest(&[Update::new(gauge.clone(), Timestamp(1), Op::GaugeSet(1.0)).unwrap()]).unwrap();
    let written = db.stats().wal.written_lsn;
    let fresh = SeriesKey::new("fresh", [("x", "1")]).unwrap();
    // A new series, then a counter op on a gauge: the whole batch is refused.
    let err = db
        .ingest(&[
            Update::new(fresh.clone(), Timestamp(2), Op::CounterAdd(1.0)).unwrap(),
            Update::new(gauge.clone(), Timestamp(2), Op::CounterAdd(1.0)).unwrap(),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("is a gauge"), "{err}");
    assert_eq!(db.stats().wal.written_lsn, written, "nothing logged");
    assert!(db.get(&fresh).is_none());
    assert_eq!(db.memstore().slots(), 1, "the new series' slot was discarded");
    // Invalid values are refused before anything else.
    let bad = Update { key: gauge.clone(), timestamp: Timestamp(3), op: Op::GaugeSet(f64::NAN) };
    assert!(matches!(db.ingest(&[bad]), Err(Error::InvalidUpdate { index: 0, .. })));
    assert_eq!(db.stats().rejected_batches, 2);
}

#[test]
fn handles_are_a_fast_path_and_go_stale_after_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = Ingestor::open(dir.path(), config()).unwrap();
    let key = SeriesKey::new("temp", [("room", "a")]).unwrap();
    let h = db.resolve(&key).unwrap();
    db.ingest_by_handle(&[
        (h, Timestamp(1), Op::GaugeSet(20.0)),
        (h, Timestamp(2), Op::GaugeAdd(1.5)),
    ])
    .unwrap();
    assert!(
        matches!(db.get(&key).unwrap().state, ingestor::SeriesState::Gauge(g) if g.value == 21.5)
    );
    db.ingest_by_handle(&[(h, Timestamp(3), Op::Delete)]).unwrap();
    assert!(db.get(&key).is_none());
    let err = db.ingest_by_handle(&[(h, Timestamp(4), Op::GaugeSet(1.0))]).unwrap_err();
    assert!(err.to_string().contains("resolve its key again"), "{err}");
    drop(db);
    let (db, _) = Ingestor::open(dir.path(), config()).unwrap();
    assert!(db.get(&key).is_none(), "the delete was logged and replayed");
}

#[test]
fn a_final_snapshot_on_close_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let config = config().final_snapshot(FinalSnapshot::OnClose);
    let (db, _) = Ingestor::open(dir.path(), config.clone()).unwrap();
    let mut workload = Workload::new(5, 10);
    let mut model = Model::default();
    for i in 0..30 {
        let b = workload.batch(i);
        db.ingest(&b).unwrap();
        model.apply(&b);
    }
    db.close().unwrap();
    let (db, report) = Ingestor::open(dir.path(), config).unwrap();
    assert_eq!(report.replayed_records, 0, "{report}");
    assert_eq!(observed(&db), model);
}

#[test]
fn a_bad_configuration_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut memstore = ingestor::MemstoreConfig::default();
    memstore.histogram_bounds = vec![1.0, 0.5];
    for (config, field) in [
        (config().snapshot_bytes(10), "snapshot_bytes"),
        (config().snapshot_interval(Some(std::time::Duration::ZERO)), "snapshot_interval"),
        (config().segment_bytes_max(1), "segment_bytes_max"),
        (config().memstore(memstore), "histogram_bounds"),
        (config().snapshot(ingestor::SnapshotOptions::default().keep(0)), "keep"),
    ] {
        let err = Ingestor::open(dir.path(), config).unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}

/// The only snapshot damaged after compaction deleted the log it covered: open must refuse,
/// naming the missing LSNs, never open with less data.
#[test]
fn a_damaged_only_snapshot_after_compaction_is_refused_not_silently_lost() {
    let sim = SimFs::new(6);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let config = config().snapshot(ingestor::SnapshotOptions::default().keep(1));
    let (db, _) = open(&fs, config.clone());
    let mut workload = Workload::new(6, 20);
    for i in 0..200 {
        db.ingest(&workload.batch(i)).unwrap();
    }
    let info = db.snapshot().unwrap().unwrap();
    assert!(db.stats().wal.segments_deleted > 0, "compaction ran");
    drop(db);
    let len = fs.read_file(&info.path).unwrap().len() as u64;
    sim.flip_bit(&info.path, len / 2, 1).unwrap();
    let err =
        Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), config, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::MissingRecords { first: ingestor::Lsn(1), .. }), "{err}");
    assert!(err.to_string().contains("rejected"), "{err}");
}

/// Every file under `/data` and its bytes, temporary files (which any open removes) aside.
fn files(sim: &SimFs) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    sim.files()
        .into_iter()
        .filter(|(p, _)| !p.to_string_lossy().ends_with(".tmp"))
        .map(|(p, _)| {
            let bytes = sim.read_file(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// The only snapshot unreadable for a while (an I/O error), after compaction deleted the log
/// it covers: the open refuses, naming the missing records, and changes nothing (it neither
/// ends the recovered segment nor starts a new one); once the snapshot reads again, the next
/// open has every acknowledged batch.
#[test]
fn an_open_refused_for_missing_records_changes_nothing_and_a_later_open_has_everything() {
    use ingestor::{Fault, FaultKind, OpKind};
    let sim = SimFs::new(8);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let config = config().snapshot(ingestor::SnapshotOptions::default().keep(1));
    let (db, _) = open(&fs, config.clone());
    let mut workload = Workload::new(8, 20);
    let mut model = Model::default();
    for i in 0..200 {
        let batch = workload.batch(i);
        db.ingest(&batch).unwrap();
        model.apply(&batch);
    }
    db.snapshot().unwrap().unwrap();
    assert!(db.stats().wal.segments_deleted > 0, "compaction ran");
    for i in 200..210 {
        let batch = workload.batch(i);
        db.ingest(&batch).unwrap();
        model.apply(&batch);
    }
    drop(db);
    let before = files(&sim);
    sim.inject(Fault::new(OpKind::Read, FaultKind::Eio).on_path("snap-"));
    let err = Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), config.clone(), &mut |_| {})
        .unwrap_err();
    assert!(matches!(err, Error::MissingRecords { first: ingestor::Lsn(1), .. }), "{err}");
    assert!(files(&sim) == before, "a refused open changed the data directory");
    sim.clear_faults();
    let (db, report) = open(&fs, config);
    assert!(report.rejected_snapshots.is_empty(), "{report}");
    assert_eq!(observed(&db), model);
}

/// A log directory holding a file named like a segment that the log refuses: the open's
/// early check for missing records stands aside, and the log's own error names the file
/// (not `MissingRecords`, which a later valid segment alone would have given).
#[test]
fn a_misnamed_segment_is_named_by_the_logs_error_not_taken_for_missing_records() {
    let sim = SimFs::new(9);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    fs.create_dir_all(Path::new("/data/wal")).unwrap();
    for name in ["00000000000000000050.seg", "not-a-segment.seg"] {
        let file = fs.create(&Path::new("/data/wal").join(name)).unwrap();
        file.write_at(&[0u8; 64], 0).unwrap();
        file.sync_all().unwrap();
    }
    let err = Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), config(), &mut |_| {})
        .unwrap_err();
    assert!(!matches!(err, Error::MissingRecords { .. }), "{err}");
    assert!(err.to_string().contains("not-a-segment.seg"), "{err}");
}

/// Histogram sets and adds (their own bounds, in the log as format-version-2 records)
/// survive replay of the log and a snapshot, bucket for bucket.
#[test]
fn histogram_samples_survive_replay_and_snapshots() {
    use ingestor::{HistogramSample, SeriesState};
    let sim = SimFs::new(3);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let key = SeriesKey::new("latency_seconds", [("route", "/")]).unwrap();
    let other = SeriesKey::new("size_bytes", [("unit", "b")]).unwrap();
    let sample = |bounds: &[f64], buckets: &[u64], sum: f64| {
        Arc::new(HistogramSample::new(bounds, buckets, sum).unwrap())
    };
    let histogram = |db: &Ingestor, key: &SeriesKey| match db.memstore().get(key).unwrap().state {
        SeriesState::Histogram(h) => (h.bounds.to_vec(), h.buckets.to_vec(), h.count, h.sum),
        state => panic!("{key} is {state:?}"),
    };
    let (db, _) = open(&fs, config());
    let batch = [
        Update::new(
            key.clone(),
            Timestamp(1),
            Op::HistogramSet(sample(&[0.1, 1.0], &[1, 2, 3], 9.5)),
        )
        .unwrap(),
        Update::new(
            key.clone(),
            Timestamp(2),
            Op::HistogramAdd(sample(&[0.1, 1.0], &[0, 1, 1], 2.0)),
        )
        .unwrap(),
        Update::new(other.clone(), Timestamp(2), Op::HistogramAdd(sample(&[], &[4], 8.0))).unwrap(),
        Update::new(other.clone(), Timestamp(3), Op::HistogramObserve(3.0)).unwrap(),
    ];
    db.ingest(&batch).unwrap();
    let want = (vec![0.1, 1.0], vec![1, 3, 4], 8, 11.5);
    let want_other = (vec![], vec![5], 5, 11.0);
    assert_eq!(histogram(&db, &key), want);
    assert_eq!(histogram(&db, &other), want_other, "an observation over the sample's bounds");
    drop(db);
    let (db, report) = open(&fs, config());
    assert_eq!(report.replayed_points, 4, "{report}");
    assert_eq!(histogram(&db, &key), want, "after replay");
    assert_eq!(histogram(&db, &other), want_other, "after replay");
    // Other bounds: the add replaces the histogram.
    db.ingest(&[Update::new(
        key.clone(),
        Timestamp(4),
        Op::HistogramAdd(sample(&[5.0], &[1, 0], 1.0)),
    )
    .unwrap()])
        .unwrap();
    db.snapshot().unwrap().expect("something to snapshot");
    drop(db);
    let (db, report) = open(&fs, config());
    assert!(report.snapshot.is_some(), "{report}");
    assert_eq!(histogram(&db, &key), (vec![5.0], vec![1, 0], 1, 1.0), "after a snapshot");
    assert_eq!(histogram(&db, &other), want_other, "after a snapshot");
}

/// The last segment file of the log in `wal_dir`.
fn last_segment(fs: &dyn Fs, wal_dir: &Path) -> std::path::PathBuf {
    let mut names: Vec<String> = fs
        .read_dir(wal_dir)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|name| name.ends_with(".seg"))
        .collect();
    names.sort();
    wal_dir.join(names.pop().expect("a segment"))
}

/// A record that fails replay, followed by a torn tail: the open fails at that record, and
/// the log's recovery repairs nothing first (no cut, no copy in quarantine), though the
/// reading thread had handed the record over and reached the tail before the applying
/// thread failed it. A later open that succeeds makes the repair.
#[test]
fn an_open_that_fails_replay_repairs_nothing_in_the_log() {
    use ingestor_codec::{
        Point, RecordType, SeriesDef, SeriesId, encode_batch, encode_series_defs,
    };
    use ingestor_fs::OpenMode;
    use ingestor_wal::{Lsn, Wal, WalOptions};
    let sim = SimFs::new(13);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let wal_dir = Path::new("/data/wal");
    let options = WalOptions::default().segment_bytes_max(64 << 10);
    {
        let (wal, _) = Wal::open(Arc::clone(&fs), wal_dir, options).unwrap();
        let mut buf = Vec::new();
        let key = SeriesKey::new("hits", [("k", "v")]).unwrap();
        encode_series_defs(&[SeriesDef { id: SeriesId(0), key }], &mut buf).unwrap();
        wal.append(RecordType::SeriesDefs as u8, &buf).unwrap();
        // LSN 2 applies, LSN 3 names a series its segment never defined: the last record.
        for (t, series) in [(2, 0), (3, 7)] {
            buf.clear();
            let op = Op::CounterAdd(1.0);
            encode_batch(
                &[Point { series: SeriesId(series), timestamp: Timestamp(t), op }],
                &mut buf,
            )
            .unwrap();
            wal.append(RecordType::Batch as u8, &buf).unwrap();
        }
        wal.close().unwrap();
    }
    // Half a frame after the last one, which the writer never synced: a torn tail.
    let segment = last_segment(&*fs, wal_dir);
    let contents = || fs.read_file(&segment).unwrap();
    let before = contents();
    let end = before.iter().rposition(|&b| b != 0).unwrap() + 1;
    let file = fs.open(&segment, OpenMode::ReadWrite).unwrap();
    file.write_at(&[0x5a; 40], end as u64).unwrap();
    file.sync_all().unwrap();
    drop(file);
    let torn = contents();
    let open = |mode| {
        let config = config().recovery_mode(mode);
        Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), config, &mut |_| {})
    };
    let err = open(ingestor::RecoveryMode::TolerateTornTail).map(drop).unwrap_err();
    match &err {
        Error::Wal(ingestor_wal::WalError::Replay { lsn, .. }) => assert_eq!(*lsn, Lsn(3), "{err}"),
        other => panic!("{other}"),
    }
    assert!(contents() == torn, "the torn tail was cut by an open that failed");
    assert!(!fs.exists(&wal_dir.join("quarantine")).unwrap(), "copied to quarantine");
    // Under salvage the open succeeds (the bad point skipped) and cuts the tail.
    let (_db, report) = open(ingestor::RecoveryMode::SkipCorrupted).unwrap();
    assert_eq!(report.wal.truncations.len(), 1, "{report}");
    assert!(contents()[end..].iter().all(|&b| b == 0), "cut");
}

/// Under salvage, recovery goes on reading after a repair (damage in the middle copied to
/// quarantine); a record after it that fails replay even under salvage (an unknown record
/// type), followed by a torn tail: that later repair is not made either.
#[test]
fn under_salvage_a_repair_after_a_failing_record_is_not_made() {
    use ingestor_codec::{
        Point, RecordType, SEGMENT_HEADER_LEN, SeriesDef, SeriesId, decode_frame, encode_batch,
        encode_series_defs,
    };
    use ingestor_fs::OpenMode;
    use ingestor_wal::{Lsn, Wal, WalOptions};
    let sim = SimFs::new(14);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let wal_dir = Path::new("/data/wal");
    {
        // Synced one by one: each frame proves the one before it durable, so damage to
        // LSN 3 is corruption in the middle, not a torn tail.
        let options = WalOptions::default()
            .segment_bytes_max(64 << 10)
            .sync_policy(ingestor_wal::SyncPolicy::Always);
        let (wal, _) = Wal::open(Arc::clone(&fs), wal_dir, options).unwrap();
        let mut buf = Vec::new();
        let key = SeriesKey::new("hits", [("k", "v")]).unwrap();
        encode_series_defs(&[SeriesDef { id: SeriesId(0), key }], &mut buf).unwrap();
        wal.append(RecordType::SeriesDefs as u8, &buf).unwrap();
        for t in 2..=4 {
            buf.clear();
            let op = Op::CounterAdd(1.0);
            encode_batch(&[Point { series: SeriesId(0), timestamp: Timestamp(t), op }], &mut buf)
                .unwrap();
            wal.append(RecordType::Batch as u8, &buf).unwrap();
        }
        // LSN 5: a record type this version does not know.
        wal.append(0xee, b"from the future").unwrap();
        wal.close().unwrap();
    }
    let segment = last_segment(&*fs, wal_dir);
    let contents = || fs.read_file(&segment).unwrap();
    let bytes = contents();
    let mut frames = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while let Ok(frame) = decode_frame(&bytes[at..]) {
        frames.push(at);
        at += frame.frame_len;
    }
    assert_eq!(frames.len(), 5);
    let file = fs.open(&segment, OpenMode::ReadWrite).unwrap();
    // LSN 3's last byte flipped (damage in the middle), half a frame after LSN 5 (torn).
    let last_of_3 = frames[3] as u64 - 1;
    file.write_at(&[bytes[frames[3] - 1] ^ 0x20], last_of_3).unwrap();
    file.write_at(&[0x5a; 40], at as u64).unwrap();
    file.sync_all().unwrap();
    drop(file);
    let config = config().recovery_mode(ingestor::RecoveryMode::SkipCorrupted);
    let err = Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), config, &mut |_| {})
        .map(drop)
        .unwrap_err();
    match &err {
        Error::Wal(ingestor_wal::WalError::Replay { lsn, source }) => {
            assert_eq!(*lsn, Lsn(5), "{err}");
            assert!(source.to_string().contains("unknown record type"), "{err}");
        }
        other => panic!("{other}"),
    }
    assert!(contents()[at..at + 40].iter().all(|&b| b == 0x5a), "the torn tail was cut");
}

/// Replay reads records ahead of applying them (on two threads): a record that fails is
/// still the one reported, with its own LSN, though the log goes on after it; under
/// salvage its point is skipped and everything after it applied.
#[test]
fn a_record_that_fails_replay_is_reported_by_its_own_lsn() {
    use ingestor_codec::{
        Point, RecordType, SeriesDef, SeriesId, encode_batch, encode_series_defs,
    };
    use ingestor_wal::{Lsn, Wal, WalOptions};
    let sim = SimFs::new(12);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    {
        let (wal, _) =
            Wal::open(Arc::clone(&fs), Path::new("/data/wal"), WalOptions::default()).unwrap();
        let mut buf = Vec::new();
        let key = SeriesKey::new("hits", [("k", "v")]).unwrap();
        encode_series_defs(&[SeriesDef { id: SeriesId(0), key }], &mut buf).unwrap();
        wal.append(RecordType::SeriesDefs as u8, &buf).unwrap();
        let add = |series: u32, t: i64| Point {
            series: SeriesId(series),
            timestamp: Timestamp(t),
            op: Op::CounterAdd(1.0),
        };
        // LSN 2 applies, LSN 3 names a series its segment never defined, 4..=200 apply.
        for (lsn, series) in (2..=200u64).map(|lsn| (lsn, if lsn == 3 { 7 } else { 0 })) {
            buf.clear();
            encode_batch(&[add(series, lsn as i64)], &mut buf).unwrap();
            assert_eq!(wal.append(RecordType::Batch as u8, &buf).unwrap().last, Lsn(lsn));
        }
        wal.close().unwrap();
    }
    let open = |mode| {
        let config = config().recovery_mode(mode);
        Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), config, &mut |_| {})
    };
    let err = open(ingestor::RecoveryMode::TolerateTornTail).map(drop).unwrap_err();
    match &err {
        Error::Wal(ingestor_wal::WalError::Replay { lsn, source }) => {
            assert_eq!(*lsn, Lsn(3), "{err}");
            assert!(source.to_string().contains("series id 7 used before its definition"), "{err}");
        }
        other => panic!("{other}"),
    }
    let (db, report) = open(ingestor::RecoveryMode::SkipCorrupted).unwrap();
    assert_eq!((report.skipped_points, report.replayed_points), (1, 198), "{report}");
    let total = match db.get(&SeriesKey::new("hits", [("k", "v")]).unwrap()).unwrap().state {
        ingestor::SeriesState::Counter(c) => c.total,
        other => panic!("{other:?}"),
    };
    assert_eq!(total, 198.0);
}
