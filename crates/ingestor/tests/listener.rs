//! `Config::wal_listener`: the log's events reach a listener given to the facade.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingestor::{
    Config, FinalSnapshot, Fs, Ingestor, Lsn, Op, RecoveryReport, SegmentId, SeriesKey, SimFs,
    SyncPolicy, Timestamp, Update, WalListener,
};

#[derive(Debug, Default)]
struct Counting {
    recoveries: AtomicU64,
    rotations: AtomicU64,
    syncs: AtomicU64,
    deletes: AtomicU64,
    last_durable: Mutex<Option<Lsn>>,
    rotated_to: Mutex<Vec<SegmentId>>,
}

impl WalListener for Counting {
    fn on_recovery(&self, _report: &RecoveryReport) {
        self.recoveries.fetch_add(1, Relaxed);
    }
    fn on_rotate(&self, segment: SegmentId) {
        self.rotations.fetch_add(1, Relaxed);
        self.rotated_to.lock().unwrap().push(segment);
    }
    fn on_sync(&self, durable: Lsn, _took: Duration) {
        self.syncs.fetch_add(1, Relaxed);
        *self.last_durable.lock().unwrap() = Some(durable);
    }
    fn on_delete(&self, _segment: SegmentId) {
        self.deletes.fetch_add(1, Relaxed);
    }
}

#[test]
fn the_logs_events_reach_the_listener_given_to_the_config() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(7));
    let listener = Arc::new(Counting::default());
    let config = Config::default()
        .sync_policy(SyncPolicy::Always)
        .segment_bytes_max(4096)
        .segment_fill(ingestor::SegmentFill::ZerosInline)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never)
        .wal_listener(Arc::clone(&listener) as Arc<dyn WalListener>);
    let (db, _) =
        Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), config, &mut |_| {}).unwrap();
    assert_eq!(listener.recoveries.load(Relaxed), 1, "recovery at open is reported");
    let rotations_at_open = listener.rotations.load(Relaxed);

    let mut last = Lsn::ZERO;
    for i in 0..200_i64 {
        let key = SeriesKey::new("requests", [("path", format!("/page/{i}"))]).unwrap();
        let update = Update::new(key, Timestamp(1_000 + i), Op::CounterAdd(1.0)).unwrap();
        last = db.ingest(&[update]).unwrap().lsn;
    }
    // Every batch was acknowledged durable under `Always`: the listener saw syncs up to the
    // last one, and 200 series definitions do not fit in one 4 KiB segment.
    assert!(listener.syncs.load(Relaxed) >= 1);
    assert_eq!(*listener.last_durable.lock().unwrap(), Some(last));
    let rotations = listener.rotations.load(Relaxed);
    assert!(rotations >= rotations_at_open + 2, "segments rolled: {rotations}");
    assert_eq!(
        listener.rotated_to.lock().unwrap().len() as u64,
        rotations,
        "one event per rotation"
    );
    assert_eq!(listener.deletes.load(Relaxed), 0, "nothing deleted before a snapshot");

    // A snapshot covers the full segments: compaction deletes them, and says so.
    db.snapshot().unwrap().expect("something to snapshot");
    assert!(listener.deletes.load(Relaxed) >= 1, "compaction deletes covered segments");
    db.close().unwrap();
}
