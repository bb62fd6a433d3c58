//! Series created and deleted round after round: their memstore slots are reused, and the
//! log (whose series ids are the slots) still names one series per id throughout a segment,
//! so that replay and salvage map every point to its own series.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use ingestor::{
    Config, FinalSnapshot, Fs, Ingestor, Op, SeriesKey, SeriesState, SimFs, SyncPolicy, Timestamp,
    Update,
};
use ingestor_codec::{RecordType, visit_series_defs};
use ingestor_wal::{Lsn, SegmentId, Wal, WalOptions};

/// Many rounds to a segment: a slot freed too early would be taken in the segment that
/// deleted its series.
const ROUNDS: usize = 30;
const PER_ROUND: usize = 250;

fn config() -> Config {
    Config::default()
        .sync_policy(SyncPolicy::Os)
        .segment_bytes_max(64 * 1024)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never)
}

fn key(round: usize, i: usize) -> SeriesKey {
    SeriesKey::new("pod_up", [("pod", format!("p{round}-{i}")), ("round", round.to_string())])
        .unwrap()
}

fn value(db: &Ingestor, k: &SeriesKey) -> Option<f64> {
    match db.get(k)?.state {
        SeriesState::Gauge(g) => Some(g.value),
        other => panic!("{k}: {other:?}"),
    }
}

#[test]
fn the_slots_of_deleted_series_are_reused_in_later_segments_only() {
    let sim = SimFs::new(11);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let open = || Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), config(), &mut |_| {});
    let (db, _) = open().unwrap();
    // Each round writes its series (a handle kept for each) and deletes the last round's.
    let mut stale = Vec::new();
    for round in 0..ROUNDS {
        let ts = Timestamp(round as i64 + 1);
        let new: Vec<Update> = (0..PER_ROUND)
            .map(|i| {
                Update::new(key(round, i), ts, Op::GaugeSet((round * 1000 + i) as f64)).unwrap()
            })
            .collect();
        db.ingest(&new).unwrap();
        if round > 0 {
            let gone: Vec<Update> = (0..PER_ROUND)
                .map(|i| Update::new(key(round - 1, i), ts, Op::Delete).unwrap())
                .collect();
            db.ingest(&gone).unwrap();
        }
        stale.push(db.resolve(&key(round, 0)).unwrap());
    }
    // Handles of deleted series stay refused, though their slots now hold other series.
    for h in &stale[..ROUNDS - 1] {
        let err = db.ingest_by_handle(&[(*h, Timestamp(99), Op::GaugeSet(-1.0))]).unwrap_err();
        assert!(err.to_string().contains("resolve its key again"), "{err}");
    }
    let last = ROUNDS - 1;
    assert_eq!(value(&db, &key(last, 7)), Some((last * 1000 + 7) as f64));
    assert_eq!(db.stats().series, PER_ROUND);
    drop(db);

    // Replay maps every segment's ids through its own definitions.
    let (db, report) = open().unwrap();
    assert_eq!(db.stats().series, PER_ROUND, "{report}");
    for i in 0..PER_ROUND {
        assert_eq!(value(&db, &key(last, i)), Some((last * 1000 + i) as f64));
        assert_eq!(value(&db, &key(last - 1, i)), None);
    }
    drop(db);

    // The log: an id defined twice in one segment names the same series both times; the
    // slots were reused (ids far below one per series ever created), in later segments.
    let mut defs: BTreeMap<(SegmentId, u32), String> = BTreeMap::new();
    let mut keys_of_id: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let (wal, _) = Wal::open_and_replay_frames(
        Arc::clone(&fs),
        Path::new("/data/wal"),
        WalOptions::default(),
        Lsn::ZERO,
        |frame, payload| {
            if frame.record_type == RecordType::SeriesDefs as u8 {
                visit_series_defs(payload, |id, name, labels| {
                    let k = SeriesKey::from_canonical(name, labels).unwrap().to_string();
                    let before = defs.insert((frame.segment, id.0), k.clone());
                    assert!(
                        before.as_ref().is_none_or(|b| *b == k),
                        "segment {:?}: id {} is {before:?} and {k}",
                        frame.segment,
                        id.0
                    );
                    keys_of_id.entry(id.0).or_default().insert(k);
                })
                .unwrap();
            }
            Ok(())
        },
    )
    .unwrap();
    drop(wal);
    let segments: BTreeSet<SegmentId> = defs.keys().map(|(s, _)| *s).collect();
    assert!(segments.len() > 3, "{} segments", segments.len());
    let max_id = *keys_of_id.keys().last().unwrap() as usize;
    assert!(max_id < ROUNDS * PER_ROUND / 2, "ids up to {max_id} for {ROUNDS} x {PER_ROUND}");
    assert!(keys_of_id.values().any(|k| k.len() > 2), "some slot held three series");
}
