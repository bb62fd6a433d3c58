//! Power cuts on the simulated disk at every step of snapshot write, rename, retention and
//! compaction (and of the log), under every crash image: the recovered state equals the
//! model after a prefix of the attempted batches that contains every acknowledged one.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Apply, Model, Workload, observed};
use ingestor::{AckLevel, Config, FinalSnapshot, Fs, Ingestor, SimFs, SnapshotOptions, SyncPolicy};
use ingestor_fs::CrashPolicy;

/// Retention keeps 3, then 1, then 2 snapshots across cycles: lowering it makes one pass
/// delete several snapshots (and compaction several segments), so the crash points between
/// two deletions are reached.
fn config(cycle: usize, policy: SyncPolicy) -> Config {
    Config::default()
        .sync_policy(policy)
        .segment_bytes_max(4096)
        // Spares written inline: one thread's operations (a run follows from its seed).
        .segment_fill(ingestor::SegmentFill::ZerosInline)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never)
        .snapshot(SnapshotOptions::default().keep([3, 1, 2][cycle % 3]))
}

/// Runs batches (a snapshot every 20) until the power is cut; returns the model after each
/// attempted batch and how many batches are known durable: every acknowledged one under
/// `Always`; under `Os`, those acknowledged before the last completed snapshot (which syncs
/// the log through its LSN).
fn run_until_cut(
    db: &Ingestor,
    workload: &mut Workload,
    base: &Model,
    ts: &mut i64,
) -> (Vec<Model>, usize) {
    let mut models = vec![base.clone()];
    let mut durable = 0;
    for i in 0..120 {
        *ts += 10;
        let batch = workload.batch(*ts);
        let mut next = models.last().unwrap().clone();
        next.apply(&batch);
        models.push(next);
        match db.ingest(&batch) {
            Ok(ack) if ack.level == AckLevel::Durable => durable = models.len() - 1,
            Ok(_) => {}
            Err(_) => return (models, durable),
        }
        if i % 20 == 19 {
            let acknowledged = models.len() - 1;
            match db.snapshot() {
                Ok(_) => durable = acknowledged,
                Err(_) => return (models, durable),
            }
        }
    }
    (models, durable)
}

fn check(sim: &SimFs, models: &[Model], acked: usize, cfg: Config, context: &str) -> Model {
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let (db, report) =
        Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), cfg.clone(), &mut |_| {})
            .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    let state = observed(&db);
    let k = models
        .iter()
        .rposition(|m| *m == state)
        .unwrap_or_else(|| panic!("{context}: the state is no prefix of the batches\n{report}"));
    assert!(
        k >= acked,
        "{context}: {acked} batches acknowledged durable, state is after {k}\n{report}"
    );
    drop(db);
    // Recovering again gives the same state.
    let (db, _) = Ingestor::open_with(fs, Path::new("/data"), cfg, &mut |_| {}).unwrap();
    assert_eq!(observed(&db), state, "{context}: recovery is not idempotent");
    state
}

fn cycles(
    points: &[&'static str],
    seeds: u64,
    policy: SyncPolicy,
) -> std::collections::BTreeSet<String> {
    let mut reached = std::collections::BTreeSet::new();
    for (p, point) in points.iter().enumerate() {
        for seed in 0..seeds {
            let crash = CrashPolicy::ALL[(seed as usize + p) % CrashPolicy::ALL.len()];
            let sim = SimFs::new(seed * 1000 + p as u64);
            let fs: Arc<dyn Fs> = Arc::new(sim.clone());
            let mut workload = Workload::new(seed + 7, 24);
            let mut base = Model::default();
            let mut ts = 0;
            for cycle in 0..4 {
                let (db, _) = Ingestor::open_with(
                    Arc::clone(&fs),
                    Path::new("/data"),
                    config(cycle, policy),
                    &mut |_| {},
                )
                .unwrap_or_else(|e| panic!("{point} seed {seed} cycle {cycle}: open: {e}"));
                sim.arm_crash_point(point, 1 + seed % 3);
                let (models, acked) = run_until_cut(&db, &mut workload, &base, &mut ts);
                drop(db);
                sim.crash(crash);
                let context = format!(
                    "crash point {point}, seed {seed}, cycle {cycle}, {crash:?}, {policy:?}"
                );
                base = check(&sim, &models, acked, config(cycle, policy), &context);
            }
            reached.extend(
                sim.crash_points_reached().into_iter().filter(|(_, n)| *n > 0).map(|(k, _)| k),
            );
        }
    }
    reached
}

#[test]
fn power_cut_at_every_step_of_snapshot_and_compaction() {
    let mut points: Vec<&'static str> = ingestor_snapshot::crash_points::ALL.to_vec();
    points.extend([
        ingestor_wal::crash_points::DELETE_BETWEEN,
        ingestor_wal::crash_points::DELETE_BEFORE_DIR_SYNC,
    ]);
    let mut reached = cycles(&points, 6, SyncPolicy::Always);
    reached.extend(cycles(&points, 6, SyncPolicy::Os));
    for point in points {
        assert!(reached.contains(point), "{point} never reached: {reached:?}");
    }
}

#[test]
fn power_cut_at_every_step_of_the_log() {
    let points = [
        ingestor_wal::crash_points::APPEND_BEFORE_WRITE,
        ingestor_wal::crash_points::APPEND_AFTER_WRITE,
        ingestor_wal::crash_points::SYNC_BEFORE,
        ingestor_wal::crash_points::SYNC_AFTER,
        ingestor_wal::crash_points::ROTATE_BEFORE_SYNC,
        ingestor_wal::crash_points::SEGMENT_BEFORE_DIR_SYNC,
    ];
    let mut reached = cycles(&points, 4, SyncPolicy::Always);
    reached.extend(cycles(&points, 3, SyncPolicy::Os));
    for point in points {
        assert!(reached.contains(point), "{point} never reached: {reached:?}");
    }
}
