//! Power cuts on the simulated disk at every named crash point and at every operation of a
//! write, under every crash policy; a second cut during recovery; injected faults (ENOSPC,
//! short writes, failed syncs and renames, EIO on reads) and bit flips in durable snapshots.
//!
//! After each: `open` and `load_newest` never fail, leave no temporary file, and load the new
//! snapshot or the previous one exactly, never a torn one; the newest good snapshot is never
//! older than the newest before the write.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{assert_same, fingerprint, rich_store, snap_name};
use ingestor_codec::Lsn;
use ingestor_fs::{CrashPolicy, Fault, FaultKind, Fs, OpKind, SimFs};
use ingestor_memstore::{Memstore, MemstoreConfig};
use ingestor_snapshot::{SnapshotError, SnapshotOptions, SnapshotStore, crash_points};

const DIR: &str = "/db/snapshots";

/// The state snapshotted at `lsn`: different for each LSN.
fn state(lsn: u64) -> Memstore {
    rich_store(lsn as usize * 3, MemstoreConfig::default())
}

fn options(keep: usize) -> SnapshotOptions {
    // Small chunks: a write has many steps to cut between.
    SnapshotOptions::default().keep(keep).chunk_series(8)
}

fn open(
    sim: &SimFs,
    keep: usize,
) -> Result<(SnapshotStore, Vec<std::path::PathBuf>), SnapshotError> {
    SnapshotStore::open(Arc::new(sim.clone()), Path::new(DIR), options(keep))
}

/// A disk holding durable snapshots at LSNs 10 and 20.
fn setup(seed: u64) -> SimFs {
    let sim = SimFs::new(seed);
    let (store, _) = open(&sim, 10).unwrap();
    for lsn in [10, 20] {
        store.write(Lsn(lsn), lsn as i64, &state(lsn).freeze()).unwrap();
    }
    sim
}

fn is_power_cut(e: &SnapshotError) -> bool {
    matches!(e, SnapshotError::Io { source, .. } if SimFs::is_power_cut(source))
}

fn temp_files(sim: &SimFs) -> Vec<String> {
    sim.files()
        .into_iter()
        .map(|(p, _)| p.to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".tmp"))
        .collect()
}

/// Recovers after a crash and checks every rule; returns the LSN loaded.
fn check_recovery(sim: &SimFs, keep: usize, previous: u64, new: u64, acknowledged: bool) -> u64 {
    let (store, _removed) = open(sim, keep).unwrap_or_else(|e| panic!("open after a crash: {e}"));
    assert_eq!(temp_files(sim), Vec::<String>::new(), "open leaves no temporary file");
    let report = store
        .load_newest(&MemstoreConfig::default())
        .unwrap_or_else(|e| panic!("load after a crash: {e}"));
    assert!(report.rejected.is_empty(), "a torn snapshot was visible: {:?}", report.rejected);
    let used = report.used.as_ref().expect("a snapshot is always there").lsn.0;
    assert!(used == previous || used == new, "loaded LSN {used}, not {previous} or {new}");
    if acknowledged {
        assert_eq!(used, new, "an acknowledged snapshot is durable");
    }
    assert_same(&report.memstore, &state(used));
    // Every snapshot listed is whole.
    for info in store.list().unwrap() {
        assert!(info.lsn.0 == 10 || info.lsn.0 == 20 || info.lsn.0 == new, "{info:?}");
    }
    // Recovering again gives the same.
    let again = open(sim, keep).unwrap().0.load_newest(&MemstoreConfig::default()).unwrap();
    assert_eq!(again.used.map(|u| u.lsn.0), Some(used));
    assert_eq!(fingerprint(&again.memstore), fingerprint(&report.memstore));
    used
}

#[test]
fn power_cut_at_every_crash_point_under_every_policy() {
    let mut reached: BTreeMap<&str, u64> = BTreeMap::new();
    let mut outcomes: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    let mut seed = 0;
    for point in crash_points::ALL {
        for policy in CrashPolicy::ALL {
            for keep in [1, 2] {
                seed += 1;
                let sim = setup(seed);
                let (store, _) = open(&sim, keep).unwrap();
                sim.arm_crash_point(point, 1);
                let result = store.write(Lsn(30), 30, &state(30).freeze());
                let cut = sim.is_crashed();
                match &result {
                    Err(e) => assert!(cut && is_power_cut(e), "{point} {policy:?}: {e}"),
                    Ok(_) => assert!(!cut, "{point}: the cut must surface as an error"),
                }
                if cut {
                    *reached.entry(point).or_default() += 1;
                }
                drop(store);
                sim.crash(policy);
                // Past the directory sync, the new snapshot is durable even though the write
                // returned the power cut.
                let durable = result.is_ok() || point == crash_points::RETENTION_BETWEEN;
                let used = check_recovery(&sim, keep, 20, 30, durable);
                *outcomes.entry((point, used)).or_default() += 1;
                // Writing goes on after recovery.
                let (store, _) = open(&sim, keep).unwrap();
                store.write(Lsn(40), 40, &state(40).freeze()).unwrap();
                let report = store.load_newest(&MemstoreConfig::default()).unwrap();
                assert_eq!(report.used.unwrap().lsn, Lsn(40));
                assert_eq!(store.list().unwrap().len(), keep);
            }
        }
    }
    for point in crash_points::ALL {
        assert!(reached.get(point).copied().unwrap_or(0) > 0, "crash point {point} never reached");
    }
    // Both outcomes happen: the test does not pass vacuously.
    assert!(outcomes.contains_key(&(crash_points::WRITE_MIDDLE, 20)), "{outcomes:?}");
    assert!(outcomes.contains_key(&(crash_points::RETENTION_BETWEEN, 30)), "{outcomes:?}");
}

/// Counts the operations of a whole write (with retention) on a fresh setup.
fn ops_of_write(keep: usize) -> u64 {
    let sim = setup(0);
    let (store, _) = open(&sim, keep).unwrap();
    let before = sim.stats().ops;
    store.write(Lsn(30), 30, &state(30).freeze()).unwrap();
    sim.stats().ops - before
}

#[test]
fn power_cut_at_every_operation_of_a_write_under_every_policy() {
    let mut cycles = 0;
    for keep in [1, 2] {
        let ops = ops_of_write(keep);
        assert!(ops > 20, "a write of several chunks takes more than {ops} operations");
        for nth in 1..=ops {
            for (p, policy) in CrashPolicy::ALL.into_iter().enumerate() {
                let sim = setup(nth * 100 + p as u64);
                let (store, _) = open(&sim, keep).unwrap();
                sim.arm_crash_at_op(nth);
                let result = store.write(Lsn(30), 30, &state(30).freeze());
                match &result {
                    Err(e) => assert!(is_power_cut(e), "op {nth}: {e}"),
                    Ok(_) => panic!("op {nth} of {ops} was not reached"),
                }
                drop(store);
                sim.crash(policy);
                check_recovery(&sim, keep, 20, 30, false);
                cycles += 1;
            }
        }
    }
    assert!(cycles > 200);
}

#[test]
fn a_second_power_cut_during_recovery_changes_nothing() {
    let ops = ops_of_write(1);
    for nth in (1..=ops).step_by(3) {
        for (p, policy) in CrashPolicy::ALL.into_iter().enumerate() {
            let sim = setup(7_000 + nth * 10 + p as u64);
            let (store, _) = open(&sim, 1).unwrap();
            sim.arm_crash_at_op(nth);
            let _ = store.write(Lsn(30), 30, &state(30).freeze());
            drop(store);
            sim.crash(policy);
            // Cut again a few operations into open and load.
            sim.arm_crash_at_op(1 + (nth + p as u64) % 6);
            let recovered =
                open(&sim, 1).and_then(|(s, _)| s.load_newest(&MemstoreConfig::default()));
            if let Err(e) = &recovered {
                assert!(is_power_cut(e), "{e}");
            }
            sim.crash(CrashPolicy::ALL[(p + 3) % CrashPolicy::ALL.len()]);
            check_recovery(&sim, 1, 20, 30, false);
        }
    }
}

/// A write that fails on a fault: an error (not a crash), no temporary file left, and the
/// previous snapshot still loads.
#[test]
fn failed_writes_leave_nothing_behind() {
    let faults = [
        Fault::new(OpKind::Create, FaultKind::Enospc).on_path(".tmp"),
        Fault::new(OpKind::Write, FaultKind::Enospc).on_path(".tmp").on_nth(3),
        Fault::new(OpKind::Write, FaultKind::ShortWrite).on_path(".tmp").on_nth(2),
        Fault::new(OpKind::SyncAll, FaultKind::Eio).on_path(".tmp"),
        Fault::new(OpKind::SyncAll, FaultKind::SyncLosesData).on_path(".tmp"),
        Fault::new(OpKind::Rename, FaultKind::Eio),
        Fault::new(OpKind::Rename, FaultKind::Enospc),
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let sim = setup(300 + i as u64);
        let (store, _) = open(&sim, 2).unwrap();
        sim.inject(fault.clone());
        let err = store.write(Lsn(30), 30, &state(30).freeze()).unwrap_err();
        assert!(matches!(err, SnapshotError::Io { .. }) && !is_power_cut(&err), "{fault:?}: {err}");
        assert_eq!(temp_files(&sim), Vec::<String>::new(), "{fault:?}");
        assert!(!sim.exists(&Path::new(DIR).join(snap_name(30))).unwrap(), "{fault:?}");
        let report = store.load_newest(&MemstoreConfig::default()).unwrap();
        assert_eq!(report.used.unwrap().lsn, Lsn(20), "{fault:?}");
        // And after a power cut as well.
        sim.crash(CrashPolicy::KeepPrefix);
        check_recovery(&sim, 2, 20, 30, false);
    }
}

#[test]
fn a_failed_directory_sync_is_an_error() {
    let sim = setup(400);
    let (store, _) = open(&sim, 2).unwrap();
    sim.inject(Fault::new(OpKind::SyncDir, FaultKind::Eio));
    let err = store.write(Lsn(30), 30, &state(30).freeze()).unwrap_err();
    assert!(matches!(&err, SnapshotError::Io { op: "sync_dir", .. }), "{err}");
    for policy in [CrashPolicy::DropUnsynced, CrashPolicy::RevertDirOps, CrashPolicy::KeepPrefix] {
        let sim2 = setup(401);
        let (store, _) = open(&sim2, 2).unwrap();
        sim2.inject(Fault::new(OpKind::SyncDir, FaultKind::Eio));
        let _ = store.write(Lsn(30), 30, &state(30).freeze());
        sim2.crash(policy);
        check_recovery(&sim2, 2, 20, 30, false);
    }
}

#[test]
fn an_io_error_while_loading_rejects_that_snapshot_and_falls_back() {
    let sim = setup(500);
    let (store, _) = open(&sim, 10).unwrap();
    store.write(Lsn(30), 30, &state(30).freeze()).unwrap();
    sim.inject(Fault::new(OpKind::Read, FaultKind::Eio).on_path(snap_name(30)).on_nth(4));
    let report = store.load_newest(&MemstoreConfig::default()).unwrap();
    assert_eq!(report.used.as_ref().unwrap().lsn, Lsn(20));
    assert_same(&report.memstore, &state(20));
    assert_eq!(report.rejected.len(), 1);
    let rejected = &report.rejected[0];
    assert_eq!(rejected.path, Path::new(DIR).join(snap_name(30)));
    assert!(rejected.reason.contains("I/O error"), "{}", rejected.reason);
    // Nothing was deleted; with the fault gone, the newest loads again.
    let report = store.load_newest(&MemstoreConfig::default()).unwrap();
    assert_eq!(report.used.unwrap().lsn, Lsn(30));
}

/// Every single-bit flip in a durable snapshot is caught: that snapshot is rejected with the
/// offset of the damage, and the older one is loaded instead.
#[test]
fn every_bit_flip_in_a_durable_snapshot_is_detected() {
    let sim = SimFs::new(600);
    let (store, _) = open(&sim, 10).unwrap();
    let small = rich_store(2, MemstoreConfig::default());
    store.write(Lsn(1), 1, &small.freeze()).unwrap();
    store.write(Lsn(2), 2, &small.freeze()).unwrap();
    let path = Path::new(DIR).join(snap_name(2));
    let len = sim.durable_len(&path).unwrap();
    for offset in 0..len {
        for bit in 0..8 {
            sim.flip_bit(&path, offset, bit).unwrap();
            let report = store.load_newest(&MemstoreConfig::default()).unwrap();
            assert_eq!(report.used.map(|u| u.lsn), Some(Lsn(1)), "byte {offset} bit {bit}");
            assert_eq!(report.rejected.len(), 1);
            assert!(
                report.rejected[0].reason.contains("at byte "),
                "{}",
                report.rejected[0].reason
            );
            assert_same(&report.memstore, &small);
            sim.flip_bit(&path, offset, bit).unwrap();
        }
    }
    assert_eq!(store.load_newest(&MemstoreConfig::default()).unwrap().used.unwrap().lsn, Lsn(2));
}
