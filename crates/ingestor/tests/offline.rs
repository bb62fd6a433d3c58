//! The offline tools: verify finds every piece of damage and changes nothing; inspect lists
//! the log's records; repair salvages a damaged directory so that a default open works again,
//! losing exactly the LSNs it names.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Apply, Model, Workload, observed};
use ingestor::offline::{self, Record, RecordType};
use ingestor::{
    Config, Error, FinalSnapshot, Fs, Ingestor, Lsn, Op, RecoveryMode, SeriesKey, SimFs,
    SyncPolicy, Timestamp, Update,
};
use ingestor_fs::EntryKind;

fn config() -> Config {
    Config::default()
        .sync_policy(SyncPolicy::Always)
        .segment_bytes_max(4096)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never)
}

const DIR: &str = "/data";

fn open(fs: &Arc<dyn Fs>, config: Config) -> Result<Ingestor, Error> {
    Ingestor::open_with(Arc::clone(fs), Path::new(DIR), config, &mut |_| {}).map(|(db, _)| db)
}

/// Every file under `dir` with its bytes.
fn all_files(fs: &dyn Fs, dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs.read_dir(dir).unwrap() {
        let path = dir.join(&e.name);
        match e.kind {
            EntryKind::File => out.push((path.clone(), fs.read_file(&path).unwrap())),
            EntryKind::Dir => out.extend(all_files(fs, &path)),
        }
    }
    out.sort();
    out
}

fn flip(fs: &dyn Fs, path: &Path, offset: u64) {
    let file = fs.open(path, ingestor_fs::OpenMode::ReadWrite).unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).unwrap();
    file.write_at(&[b[0] ^ 0x40], offset).unwrap();
    file.sync_data().unwrap();
}

/// Ingests 120 batches and returns them, in order.
fn fill(fs: &Arc<dyn Fs>) -> Vec<Vec<Update>> {
    let db = open(fs, config()).unwrap();
    // Counter adds and gauge sets: the loss of any batch shows in the final state.
    let batches: Vec<Vec<Update>> = (0..120i64)
        .map(|i| {
            let c = SeriesKey::new("requests", [("host", format!("h{}", i % 12))]).unwrap();
            let g = SeriesKey::new("temperature", [("host", format!("h{}", i % 7))]).unwrap();
            let ts = Timestamp(1_000 + i * 10);
            vec![
                Update::new(c, ts, Op::CounterAdd(i as f64 + 1.0)).unwrap(),
                Update::new(g, ts, Op::GaugeSet(i as f64)).unwrap(),
            ]
        })
        .collect();
    for b in &batches {
        db.ingest(b).unwrap();
    }
    db.close().unwrap();
    batches
}

/// The LSNs of the batch records, in order, with where each lies.
fn batch_frames(fs: &dyn Fs) -> Vec<offline::FrameInfo> {
    let mut out = Vec::new();
    offline::inspect_wal(fs, Path::new(DIR), Lsn::ZERO, |info, payload| {
        let record = Record::decode(info.record_type, payload).unwrap();
        if record.record_type() == RecordType::Batch {
            out.push(*info);
        }
    })
    .unwrap();
    out
}

/// Repairs the test directory in `mode`.
fn repair(fs: &Arc<dyn Fs>, mode: RecoveryMode, dry_run: bool) -> offline::RepairReport {
    offline::repair(Arc::clone(fs), Path::new(DIR), config().recovery_mode(mode), dry_run).unwrap()
}

fn model_without(batches: &[Vec<Update>], lost: impl Fn(usize) -> bool) -> Model {
    let mut model = Model::default();
    for (i, b) in batches.iter().enumerate() {
        if !lost(i) {
            model.apply(b);
        }
    }
    model
}

#[test]
fn verify_finds_damage_changes_nothing_and_skip_repair_loses_only_the_named_lsns() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(3));
    let batches = fill(&fs);
    let report = offline::verify(&*fs, Path::new(DIR)).unwrap();
    assert!(report.is_clean(), "{report}");
    let frames = batch_frames(&*fs);
    assert_eq!(frames.len(), batches.len(), "one batch record per ingest");
    let segments: Vec<_> = frames.iter().map(|f| f.segment).collect();
    let second = *segments.iter().find(|s| **s != segments[0]).expect("several segments");
    // A batch in the second segment whose loss shows in the final state.
    let full = model_without(&batches, |_| false);
    let (index, target) = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.segment == second)
        .find(|(i, _)| model_without(&batches, |j| j == *i) != full)
        .expect("a batch that matters");
    let seg_path = Path::new(DIR).join("wal").join(target.segment.file_name());
    flip(&*fs, &seg_path, target.offset + 25);
    let before = all_files(&*fs, Path::new(DIR));

    let report = offline::verify(&*fs, Path::new(DIR)).unwrap();
    let damage = report.damage();
    assert_eq!(damage.len(), 1, "{report}");
    let expected = format!(
        "wal/{} byte {}: LSNs {}..={}",
        target.segment.file_name(),
        target.offset,
        target.lsn,
        target.lsn
    );
    assert!(damage[0].starts_with(&expected), "{} vs {expected}", damage[0]);
    assert!(matches!(open(&fs, config()), Err(Error::Wal(_))), "a default open refuses");
    let dry = repair(&fs, RecoveryMode::SkipCorrupted, true);
    assert_eq!(dry.lost(), vec![(target.lsn, target.lsn)], "{dry}");
    assert_eq!(all_files(&*fs, Path::new(DIR)), before, "verify and a dry run change nothing");

    let done = repair(&fs, RecoveryMode::SkipCorrupted, false);
    assert_eq!(done.lost(), vec![(target.lsn, target.lsn)], "{done}");
    assert!(done.snapshot.is_some() && !done.removed_segments.is_empty(), "{done}");
    assert!(
        all_files(&*fs, Path::new(DIR)).iter().any(|(p, _)| p.starts_with("/data/wal/quarantine")),
        "the damaged bytes were copied to quarantine first"
    );
    let report = offline::verify(&*fs, Path::new(DIR)).unwrap();
    assert!(report.is_clean(), "{report}");
    let db = open(&fs, config()).expect("a default open works after the repair");
    assert_eq!(observed(&db), model_without(&batches, |i| i == index));
    db.close().unwrap();
}

#[test]
fn point_in_time_repair_keeps_everything_before_the_damage() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(4));
    let batches = fill(&fs);
    let frames = batch_frames(&*fs);
    let index = frames.len() / 2;
    let target = frames[index];
    let seg_path = Path::new(DIR).join("wal").join(target.segment.file_name());
    flip(&*fs, &seg_path, target.offset + 25);
    let done = repair(&fs, RecoveryMode::PointInTime, false);
    let lost = done.lost();
    assert_eq!(lost.len(), 1, "{done}");
    assert_eq!(lost[0].0, target.lsn, "{done}");
    assert!(lost[0].1 >= frames.last().unwrap().lsn, "{done}");
    let db = open(&fs, config()).unwrap();
    assert_eq!(observed(&db), model_without(&batches, |i| i >= index));
    db.close().unwrap();
}

#[test]
fn verify_names_a_damaged_snapshot_and_refuses_a_held_or_missing_directory() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(5));
    assert!(matches!(offline::verify(&*fs, Path::new(DIR)), Err(Error::Io { .. })));
    let db = open(&fs, config().final_snapshot(FinalSnapshot::OnClose)).unwrap();
    let mut workload = Workload::new(1, 5);
    db.ingest(&workload.batch(1)).unwrap();
    let first = db.snapshot().unwrap().unwrap();
    db.ingest(&workload.batch(2)).unwrap();
    assert!(matches!(offline::verify(&*fs, Path::new(DIR)), Err(Error::Locked { .. })));
    assert!(matches!(
        offline::inspect_wal(&*fs, Path::new(DIR), Lsn::ZERO, |_, _| {}),
        Err(Error::Locked { .. })
    ));
    db.close().unwrap();
    let files = offline::snapshot_files(&*fs, Path::new(DIR)).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0], first.path);
    let contents = offline::inspect_snapshot(&*fs, &files[1]).unwrap();
    assert_eq!(contents.info.series, contents.memstore.len() as u64);
    flip(&*fs, &files[1], 40);
    let report = offline::verify(&*fs, Path::new(DIR)).unwrap();
    let damage = report.damage();
    assert_eq!(damage.len(), 1, "{report}");
    assert!(damage[0].contains(&files[1].display().to_string()), "{}", damage[0]);
    assert!(damage[0].contains("byte"), "{}", damage[0]);
}

#[test]
fn skip_repair_of_a_lost_series_definition_skips_only_that_series_points_in_its_segment() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(6));
    let batches = fill(&fs);
    let mut records = Vec::new();
    offline::inspect_wal(&*fs, Path::new(DIR), Lsn::ZERO, |info, payload| {
        records.push((*info, Record::decode(info.record_type, payload).unwrap()));
    })
    .unwrap();
    let first_segment = records[0].0.segment;
    let (defs_at, lost_keys) = records
        .iter()
        .find_map(|(info, r)| match r {
            Record::SeriesDefs(defs) if info.segment != first_segment => {
                Some((*info, defs.iter().map(|d| d.key.clone()).collect::<Vec<_>>()))
            }
            _ => None,
        })
        .unwrap();
    // Batch i is the i-th batch record; those in the damaged segment lose the points of the
    // series whose definition was lost.
    let in_segment: Vec<bool> = records
        .iter()
        .filter(|(_, r)| matches!(r, Record::Batch(_)))
        .map(|(info, _)| info.segment == defs_at.segment)
        .collect();
    let seg_path = Path::new(DIR).join("wal").join(defs_at.segment.file_name());
    flip(&*fs, &seg_path, defs_at.offset + 25);

    let done = repair(&fs, RecoveryMode::SkipCorrupted, false);
    assert_eq!(done.lost(), vec![(defs_at.lsn, defs_at.lsn)], "{done}");
    let db = open(&fs, config()).unwrap();
    let mut model = Model::default();
    let mut skipped = 0;
    for (i, b) in batches.iter().enumerate() {
        let kept: Vec<Update> =
            b.iter().filter(|u| !(in_segment[i] && lost_keys.contains(&u.key))).cloned().collect();
        skipped += b.len() - kept.len();
        model.apply(&kept);
    }
    assert!(skipped > 0);
    assert_eq!(done.skipped_points, Some(skipped as u64), "{done}");
    assert!(!done.nothing_lost());
    assert!(done.to_string().contains("skipped because their series definition"));
    assert_eq!(observed(&db), model);
    db.close().unwrap();
}

#[test]
fn damage_a_snapshot_covers_costs_nothing() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(8));
    let mut batches = fill(&fs);
    // A new process life writes a segment of its own; a snapshot taken while that segment is
    // active covers its records, and compaction keeps it (it is the active segment).
    let db = open(&fs, config()).unwrap();
    for i in 0..6 {
        let key = SeriesKey::new("late", [("i", i.to_string())]).unwrap();
        let batch = vec![Update::new(key, Timestamp(5_000 + i), Op::CounterAdd(1.0)).unwrap()];
        db.ingest(&batch).unwrap();
        batches.push(batch);
    }
    db.snapshot().unwrap().expect("a snapshot");
    drop(db);
    let frames = batch_frames(&*fs);
    let target = frames[frames.len() - 3];
    assert_eq!(target.segment, frames.last().unwrap().segment);
    let seg_path = Path::new(DIR).join("wal").join(target.segment.file_name());
    flip(&*fs, &seg_path, target.offset + 25);
    let report = offline::verify(&*fs, Path::new(DIR)).unwrap();
    assert!(!report.is_clean(), "damage under a snapshot is still damage: {report}");
    let done = repair(&fs, RecoveryMode::SkipCorrupted, false);
    assert_eq!(done.removed_from_log(), vec![(target.lsn, target.lsn)], "{done}");
    assert!(done.lost().is_empty(), "{done}");
    assert!(done.nothing_lost(), "{done}");
    let db = open(&fs, config()).unwrap();
    assert_eq!(observed(&db), model_without(&batches, |_| false));
    db.close().unwrap();
}

#[test]
fn a_lost_definition_never_sends_points_to_another_lives_series() {
    // Life 1 defines series in its segment; life 2 numbers series anew. Were both lives in
    // one segment, losing life 2's definition would leave life 1's mapping of the same id.
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(9));
    let key = |name: &str| SeriesKey::new(name, [("k", "v")]).unwrap();
    let add = |name: &str, v: f64| Update::new(key(name), Timestamp(1), Op::CounterAdd(v)).unwrap();
    let db = open(&fs, config()).unwrap();
    db.ingest(&[add("a", 1.0), add("b", 2.0)]).unwrap();
    drop(db);
    let life1: Vec<offline::FrameInfo> = batch_frames(&*fs);
    let db = open(&fs, config()).unwrap();
    // A fresh process: "c" may get the id "a" had in life 1.
    db.ingest(&[add("c", 10.0)]).unwrap();
    db.ingest(&[add("c", 20.0)]).unwrap();
    drop(db);
    let mut records = Vec::new();
    offline::inspect_wal(&*fs, Path::new(DIR), Lsn::ZERO, |info, payload| {
        records.push((*info, Record::decode(info.record_type, payload).unwrap()));
    })
    .unwrap();
    let life2_defs = records
        .iter()
        .find(|(info, r)| {
            matches!(r, Record::SeriesDefs(_)) && info.lsn > life1.last().unwrap().lsn
        })
        .map(|(info, _)| *info)
        .unwrap();
    assert_ne!(life2_defs.segment, life1[0].segment, "each life writes its own segment");
    let seg_path = Path::new(DIR).join("wal").join(life2_defs.segment.file_name());
    flip(&*fs, &seg_path, life2_defs.offset + 25);
    let done = repair(&fs, RecoveryMode::SkipCorrupted, false);
    assert_eq!(done.skipped_points, Some(2), "both points of c: {done}");
    let db = open(&fs, config()).unwrap();
    let mut model = Model::default();
    model.apply(&[add("a", 1.0), add("b", 2.0)]);
    assert_eq!(observed(&db), model, "a and b untouched, c absent");
    db.close().unwrap();
}
