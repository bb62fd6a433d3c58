//! Power cuts on the simulated disk at every named crash point and at random operations,
//! under every crash policy; injected EIO, ENOSPC and short writes. After each, the log must
//! reopen holding a gap-free prefix of what was appended that contains every record
//! acknowledged durable, with nothing that was never appended.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use common::payload;
use ingestor_fs::{CrashPolicy, Fault, FaultKind, Fs, OpKind, SimFs};
use ingestor_wal::{
    AckLevel, Lsn, RecoveryMode, SegmentFill, SyncPolicy, Wal, WalError, WalOptions, crash_points,
};

const DIR: &str = "/db/wal";

/// What the test issued and what the log acknowledged.
#[derive(Default)]
struct Model {
    /// Every payload ever attempted at each LSN (a failed append's LSN is reused).
    issued: BTreeMap<u64, Vec<Vec<u8>>>,
    /// The highest LSN acknowledged durable.
    durable: u64,
    /// The highest LSN acknowledged at all.
    written: u64,
}

/// Spares written inline: the simulated disk's operations then come from one thread (a
/// run follows from its seed), and a log abandoned at a power cut leaves no thread behind.
fn options(policy: SyncPolicy) -> WalOptions {
    WalOptions::default()
        .sync_policy(policy)
        .segment_bytes_max(4096)
        .segment_fill(ingestor_wal::SegmentFill::ZerosInline)
}

/// The policies and fills the power-cut runs go through: under `Os`, both kinds of spare
/// (zero-filled, and `fallocate`d ahead as `Os` does by default), each prepared inline.
const SETUPS: [(SyncPolicy, SegmentFill); 3] = [
    (SyncPolicy::Always, SegmentFill::ZerosInline),
    (SyncPolicy::Os, SegmentFill::ZerosInline),
    (SyncPolicy::Os, SegmentFill::AllocateAheadInline),
];

/// Small deterministic generator for the workload.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs a workload until it has done `steps` operations or an operation fails with a
/// simulated power cut. Returns whether the power was cut.
fn workload(wal: &Wal, model: &mut Model, rng: &mut Rng, steps: usize, policy: SyncPolicy) -> bool {
    for _ in 0..steps {
        let next = wal.written_lsn().0 + 1;
        let result = match rng.below(20) {
            0..=11 => {
                let p = payload(rng.next(), 20 + rng.below(300) as usize);
                model.issued.entry(next).or_default().push(p.clone());
                wal.append(1, &p).map(Done::from)
            }
            12..=15 => {
                let n = 1 + rng.below(4);
                let ps: Vec<Vec<u8>> =
                    (0..n).map(|_| payload(rng.next(), 10 + rng.below(200) as usize)).collect();
                for (i, p) in ps.iter().enumerate() {
                    model.issued.entry(next + i as u64).or_default().push(p.clone());
                }
                let records: Vec<(u8, &[u8])> = ps.iter().map(|p| (2u8, p.as_slice())).collect();
                wal.append_batch(&records).map(Done::from)
            }
            16 | 17 => wal.sync().map(|lsn| Done { last: lsn, level: AckLevel::Durable }),
            18 => {
                // Compaction after a snapshot: everything durable is covered.
                let watermark = wal.durable_lsn();
                wal.delete_below(watermark)
                    .map(|_| Done { last: Lsn::ZERO, level: AckLevel::Written })
            }
            _ => wal.sync().map(|lsn| Done { last: lsn, level: AckLevel::Durable }),
        };
        match result {
            Ok(ack) => {
                if ack.last.0 > 0 {
                    model.written = model.written.max(ack.last.0);
                    if ack.level == AckLevel::Durable {
                        model.durable = model.durable.max(ack.last.0);
                    }
                }
                if policy == SyncPolicy::Always && ack.last.0 > 0 {
                    assert_eq!(ack.level, AckLevel::Durable);
                }
            }
            Err(e) if is_power_cut(&e) => return true,
            Err(e) => panic!("unexpected error without a fault: {e}"),
        }
    }
    false
}

/// What one step of the workload reached: the last LSN it covers and the level.
struct Done {
    last: Lsn,
    level: AckLevel,
}

impl From<ingestor_wal::Ack> for Done {
    fn from(ack: ingestor_wal::Ack) -> Done {
        Done { last: ack.last, level: ack.level }
    }
}

fn is_power_cut(e: &WalError) -> bool {
    match e {
        WalError::Io { source, .. } => SimFs::is_power_cut(source),
        WalError::Poisoned { cause } => is_power_cut(cause),
        _ => false,
    }
}

/// What a run of cycles saw, so that a test can show it did not pass vacuously.
#[derive(Default)]
struct Seen {
    reached: BTreeSet<String>,
    cycles: u64,
    cut_where_armed: u64,
    torn_tails: u64,
}

/// Reopens and checks every invariant; returns the recovered records and how many torn
/// tails recovery cut.
fn check_recovery(fs: &SimFs, model: &Model, context: &str) -> (Vec<(u64, Vec<u8>)>, u64) {
    let fs_dyn: Arc<dyn Fs> = Arc::new(fs.clone());
    let mut seen = Vec::new();
    let (wal, report) = Wal::open_and_replay(
        Arc::clone(&fs_dyn),
        Path::new(DIR),
        options(SyncPolicy::Os),
        Lsn::ZERO,
        |lsn, _, p| {
            seen.push((lsn.0, p.to_vec()));
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    assert!(report.corruptions.is_empty(), "{context}: {report}");
    // Gap-free, and nothing that was never issued.
    for pair in seen.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "{context}: a hole in the recovered LSNs\n{report}");
    }
    for (lsn, p) in &seen {
        let candidates =
            model.issued.get(lsn).unwrap_or_else(|| panic!("{context}: phantom LSN {lsn}"));
        assert!(candidates.contains(p), "{context}: LSN {lsn} holds a payload never issued for it");
    }
    // Everything acknowledged durable survived.
    let last = seen.last().map_or(wal.written_lsn().0, |s| s.0);
    assert!(
        last >= model.durable,
        "{context}: durable LSN {} lost (log ends at {last})\n{report}",
        model.durable
    );
    assert_eq!(wal.written_lsn().0, last.max(wal.written_lsn().0));
    drop(wal);
    // Recovery is idempotent: a second open finds the same records and a clean log.
    let mut again = Vec::new();
    let (_, report2) = Wal::open_and_replay(
        fs_dyn,
        Path::new(DIR),
        options(SyncPolicy::Os),
        Lsn::ZERO,
        |lsn, _, p| {
            again.push((lsn.0, p.to_vec()));
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{context}: second reopen failed: {e}"));
    assert_eq!(again, seen, "{context}: recovery is not idempotent");
    assert!(report2.is_clean(), "{context}: second recovery not clean:\n{report2}");
    (seen, report.truncations.len() as u64)
}

fn run_cycles(
    seed: u64,
    arm: impl Fn(&SimFs, &mut Rng),
    policies: &[CrashPolicy],
    (sync_policy, fill): (SyncPolicy, SegmentFill),
) -> Seen {
    let mut out = Seen::default();
    for (p, &crash_policy) in policies.iter().enumerate() {
        let sim = SimFs::new(seed ^ (p as u64) << 32);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let mut rng = Rng(seed.wrapping_mul(31).wrapping_add(p as u64));
        let mut model = Model::default();
        for cycle in 0..6 {
            let options = options(sync_policy).segment_fill(fill);
            let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options)
                .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: open: {e}"));
            arm(&sim, &mut rng);
            let cut = workload(&wal, &mut model, &mut rng, 60, sync_policy);
            // A process that loses power does not get to close its log.
            std::mem::forget(wal);
            // When the armed trigger was not reached, the power is cut after the workload.
            out.cycles += 1;
            out.cut_where_armed += u64::from(cut);
            sim.crash(crash_policy);
            let context = format!(
                "seed {seed} policy {crash_policy:?} cycle {cycle} sync {sync_policy:?} {fill:?}"
            );
            let (seen, torn) = check_recovery(&sim, &model, &context);
            out.torn_tails += torn;
            // Later cycles continue from what survived: forget the rest.
            let survived = seen.last().map_or(0, |s| s.0);
            model.issued.retain(|&lsn, _| lsn <= survived);
            model.durable = model.durable.min(survived);
            model.written = survived;
            for (name, n) in sim.crash_points_reached() {
                if n > 0 {
                    out.reached.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn power_cut_at_every_named_crash_point_under_every_policy() {
    let mut reached = BTreeSet::new();
    for (i, point) in crash_points::ALL.iter().enumerate() {
        let (mut cycles, mut cut) = (0, 0);
        for setup in SETUPS {
            for seed in 0..3u64 {
                let seed = seed * 100 + i as u64;
                let arm = |sim: &SimFs, rng: &mut Rng| sim.arm_crash_point(point, 1 + rng.below(3));
                let seen = run_cycles(seed, arm, &CrashPolicy::ALL, setup);
                reached.extend(seen.reached);
                cycles += seen.cycles;
                cut += seen.cut_where_armed;
            }
        }
        // Deleting two segments in one call happens now and then; the others nearly always.
        let share = match *point {
            crash_points::DELETE_BETWEEN => 10,
            crash_points::DELETE_BEFORE_DIR_SYNC => 4,
            _ => 2,
        };
        assert!(
            cut * share >= cycles,
            "{point}: the power was cut there in only {cut} of {cycles} cycles"
        );
    }
    for point in crash_points::ALL {
        assert!(
            reached.contains(point),
            "crash point {point} was never reached; reached: {reached:?}"
        );
    }
}

#[test]
fn power_cut_at_random_operations_under_every_policy() {
    let (mut cycles, mut cut, mut torn) = (0, 0, 0);
    for seed in 0..40u64 {
        for setup in SETUPS {
            let arm = |sim: &SimFs, rng: &mut Rng| sim.arm_crash_at_op(1 + rng.below(150));
            let seen = run_cycles(1000 + seed, arm, &CrashPolicy::ALL, setup);
            cycles += seen.cycles;
            cut += seen.cut_where_armed;
            torn += seen.torn_tails;
        }
    }
    assert!(cut * 2 >= cycles, "the power was cut mid-operation in only {cut} of {cycles} cycles");
    assert!(
        torn * 20 >= cycles,
        "only {torn} torn tails in {cycles} cycles: the policies are not tearing"
    );
    println!("{cycles} cycles, {cut} cut mid-operation, {torn} torn tails cut");
}

#[test]
fn a_second_power_cut_during_recovery_loses_nothing_durable() {
    for seed in 0..30u64 {
        let sim = SimFs::new(seed);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let mut rng = Rng(seed);
        let mut model = Model::default();
        let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Os)).unwrap();
        workload(&wal, &mut model, &mut rng, 80, SyncPolicy::Os);
        std::mem::forget(wal);
        sim.crash(CrashPolicy::TornSectors { sector_bytes: 512 });
        // Recovery itself is cut short at a random operation, then the power comes back.
        sim.arm_crash_at_op(1 + rng.below(30));
        let _ = Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Os))
            .map(|(w, _)| std::mem::forget(w));
        sim.crash(CrashPolicy::ALL[rng.below(CrashPolicy::ALL.len() as u64) as usize]);
        check_recovery(&sim, &model, &format!("seed {seed}: crash during recovery"));
    }
}

/// A process killed with records in the page cache only (`Os`, nothing synced since): the
/// next open recovers them and counts them durable (its `durable_lsn` says so), so it must
/// have made them durable, whether it found the last segment whole (it syncs its data) or
/// shorter than the segment size it was given (a larger one than before: it preallocates and
/// syncs the file): a power cut right after that open, keeping only what was synced, or
/// after a few more appends that nothing synced, under any image, must not take them.
#[test]
fn records_an_open_recovers_after_a_process_kill_survive_a_power_cut_right_after() {
    for seed in 0..40u64 {
        let sim = SimFs::new(seed);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let mut rng = Rng(seed);
        let mut model = Model::default();
        let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Os)).unwrap();
        assert!(!workload(&wal, &mut model, &mut rng, 40, SyncPolicy::Os), "no fault was armed");
        // Unsynced appends last, so that the page cache holds records no sync covered.
        for _ in 0..1 + rng.below(5) {
            let next = wal.written_lsn().0 + 1;
            let p = payload(rng.next(), 20 + rng.below(300) as usize);
            model.issued.entry(next).or_default().push(p.clone());
            model.written = wal.append(1, &p).unwrap().last.0;
        }
        std::mem::forget(wal);
        sim.kill();
        sim.revive();
        let (larger, more) = (seed % 2 == 1, seed % 4 >= 2);
        let reopened = if larger {
            options(SyncPolicy::Os).segment_bytes_max(8192)
        } else {
            options(SyncPolicy::Os)
        };
        let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), reopened).unwrap();
        let recovered = wal.written_lsn().0;
        assert_eq!(recovered, model.written, "seed {seed}: a kill keeps the page cache");
        assert_eq!(wal.durable_lsn().0, recovered, "seed {seed}: what was recovered is durable");
        model.durable = recovered;
        let policy = if more {
            // More appends, unsynced: they may go, what the open recovered may not.
            for _ in 0..1 + rng.below(3) {
                let next = wal.written_lsn().0 + 1;
                let p = payload(rng.next(), 20 + rng.below(300) as usize);
                model.issued.entry(next).or_default().push(p.clone());
                wal.append(1, &p).unwrap();
            }
            CrashPolicy::ALL[rng.below(CrashPolicy::ALL.len() as u64) as usize]
        } else {
            CrashPolicy::DropUnsynced
        };
        std::mem::forget(wal);
        sim.crash(policy);
        let context =
            format!("seed {seed} {policy:?}, larger segments {larger}: power cut after a kill");
        check_recovery(&sim, &model, &context);
    }
}

#[test]
fn a_failed_fsync_poisons_the_log_and_is_never_acknowledged() {
    for policy in [SyncPolicy::Always, SyncPolicy::Os] {
        let sim = SimFs::new(7);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options(policy)).unwrap();
        for n in 0..5u64 {
            wal.append(1, &payload(n, 50)).unwrap();
        }
        wal.sync().unwrap();
        let durable_before = wal.durable_lsn();
        sim.inject(Fault::new(OpKind::SyncData, FaultKind::SyncLosesData));
        let result = match policy {
            SyncPolicy::Always => wal.append(1, b"lost").map(|a| a.last),
            _ => {
                wal.append(1, b"lost").unwrap();
                wal.sync()
            }
        };
        let err = result.unwrap_err();
        assert!(matches!(err, WalError::Poisoned { .. }), "{err}");
        assert!(err.to_string().contains("Input/output error"), "the cause is carried: {err}");
        assert_eq!(
            wal.durable_lsn(),
            durable_before,
            "nothing covered by the failed sync is durable"
        );
        // Terminal: later appends and syncs fail too, even though a second fsync would
        // "succeed" on Linux.
        assert!(matches!(wal.append(1, b"more"), Err(WalError::Poisoned { .. })));
        assert!(matches!(wal.sync(), Err(WalError::Poisoned { .. })));
        std::mem::forget(wal);
        sim.crash(CrashPolicy::KeepPrefix);
        let (wal, seen) = {
            let mut seen = Vec::new();
            let (wal, _) =
                Wal::open_and_replay(fs, Path::new(DIR), options(policy), Lsn::ZERO, |l, _, _| {
                    seen.push(l.0);
                    Ok(())
                })
                .unwrap();
            (wal, seen)
        };
        assert_eq!(seen, (1..=5).collect::<Vec<_>>(), "the record whose sync failed is gone");
        assert_eq!(wal.append(1, b"after reopen").unwrap().first, Lsn(6));
    }
}

#[test]
fn enospc_and_short_writes_leave_a_consistent_log_and_writing_resumes() {
    for kind in [FaultKind::Enospc, FaultKind::ShortWrite, FaultKind::Eio] {
        let sim = SimFs::new(11);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Os)).unwrap();
        wal.append(1, &payload(1, 300)).unwrap();
        sim.inject(Fault::new(OpKind::Write, kind));
        let err = wal.append(1, &payload(2, 300)).unwrap_err();
        assert!(matches!(err, WalError::Io { op: "write", .. }), "{kind:?}: {err}");
        assert!(err.to_string().contains(".seg"), "the error names the segment: {err}");
        // Not poisoned: the partial frame was cut back, the next append reuses the LSN.
        assert_eq!(wal.append(1, &payload(3, 300)).unwrap().first, Lsn(2));
        wal.sync().unwrap();
        assert_eq!(wal.stats().failed_writes, 1);
        drop(wal);
        sim.crash(CrashPolicy::DropUnsynced);
        let mut seen = Vec::new();
        let (_, report) = Wal::open_and_replay(
            fs,
            Path::new(DIR),
            options(SyncPolicy::Os),
            Lsn::ZERO,
            |l, _, p| {
                seen.push((l.0, p.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        assert!(report.is_clean(), "{kind:?}: {report}");
        assert_eq!(seen, vec![(1, payload(1, 300)), (2, payload(3, 300))], "{kind:?}");
    }
}

/// A batch refused because its write failed part way leaves nothing of itself behind, after
/// a power cut too: the log cuts the partial frames back and syncs that cut, so that no
/// crash can keep the refused batch's whole frames (written, never synced) without the cut
/// that followed them.
#[test]
fn a_refused_batch_leaves_nothing_behind_across_a_power_cut() {
    for seed in 0..60u64 {
        let sim = SimFs::new(seed);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Os)).unwrap();
        for i in 1..=3 {
            wal.append(1, &payload(i, 100)).unwrap();
        }
        wal.sync().unwrap();
        let before = sim.read_file(&Path::new(DIR).join(only_segment(&sim))).unwrap();
        sim.inject(Fault::new(OpKind::Write, FaultKind::ShortWrite));
        let refused: Vec<Vec<u8>> = (4..=8).map(|i| payload(i, 100)).collect();
        let records: Vec<(u8, &[u8])> = refused.iter().map(|p| (1u8, p.as_slice())).collect();
        wal.append_batch(&records).expect_err("the short write refuses the batch");
        // Nothing of it readable now.
        let after = sim.read_file(&Path::new(DIR).join(only_segment(&sim))).unwrap();
        assert_eq!(after, before, "seed {seed}: the partial frames were cut back");
        std::mem::forget(wal);
        // A random prefix of the pending operations: the failed write's bytes without the cut
        // back, unless that was synced.
        let policy = CrashPolicy::KeepPrefix;
        sim.crash(policy);
        let mut seen = Vec::new();
        let (_, report) = Wal::open_and_replay(
            Arc::clone(&fs),
            Path::new(DIR),
            options(SyncPolicy::Os),
            Lsn::ZERO,
            |l, _, _| {
                seen.push(l.0);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(
            seen,
            [1, 2, 3],
            "seed {seed} {policy:?}: the refused batch came back\n{report}"
        );
    }
}

/// The name of the log's one segment.
fn only_segment(sim: &SimFs) -> String {
    let mut names: Vec<String> = sim
        .read_dir(Path::new(DIR))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.ends_with(".seg"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names.pop().unwrap()
}

/// The spare files in the log directory.
fn spare_files(fs: &dyn Fs) -> usize {
    fs.read_dir(Path::new(DIR)).unwrap().into_iter().filter(|e| e.name.starts_with("spare")).count()
}

/// Reopens the log (after a clean close): every record up to `written` comes back whole,
/// with nothing cut or reported damaged.
fn reopens_whole(fs: Arc<dyn Fs>, options: WalOptions, written: Lsn) {
    let mut seen = 0u64;
    let (_wal, report) =
        Wal::open_and_replay(fs, Path::new(DIR), options, Lsn::ZERO, |lsn, _, p| {
            assert_eq!(p, payload(lsn.0, 200));
            seen += 1;
            Ok(())
        })
        .unwrap();
    assert!(report.corruptions.is_empty() && report.truncations.is_empty(), "{report}");
    assert_eq!(Lsn(seen), written);
}

#[test]
fn no_space_for_a_spare_segment_costs_nothing_but_the_spare() {
    // The spare is written inline (deterministic); its zeros meet ENOSPC: the partial spare
    // is removed at once, no append fails, no spare is asked for before the next rotation
    // (which uses fallocate), and the spare asked for after it is written whole and used.
    let sim = SimFs::new(13);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let options = options(SyncPolicy::Os);
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options.clone()).unwrap();
    sim.inject(Fault::new(OpKind::Write, FaultKind::Enospc).on_path("spare"));
    let spares = || spare_files(&*fs);
    let mut n = 0u64;
    // Up to the failed spare: nothing of it is left.
    while wal.stats().spare_failures == 0 {
        n += 1;
        wal.append(1, &payload(n, 200)).unwrap();
        assert!(n < 100, "the spare was never asked for");
    }
    assert_eq!(spares(), 0, "a spare that could not be written whole is removed");
    assert_eq!(wal.segments().len(), 1);
    // The next rotation falls back to fallocate; the spare asked for after it is used.
    while wal.stats().spare_segments == 0 {
        n += 1;
        wal.append(1, &payload(n, 200)).unwrap();
        assert!(n < 200, "no spare was ever used: {:?}", wal.stats());
    }
    let stats = wal.stats();
    assert_eq!(stats.spare_failures, 1, "{stats:?}");
    assert!(wal.segments().len() >= 3, "{:?}", wal.segments());
    let written = wal.written_lsn();
    wal.close().unwrap();
    assert_eq!(spares(), 0, "close leaves no spare");
    reopens_whole(fs, options, written);
}

#[test]
fn no_space_for_a_spare_allocated_ahead_costs_nothing_but_the_spare() {
    // `AllocateAhead` (the default under `Os`): the preparer thread's `fallocate` of the
    // spare meets ENOSPC. The file is removed at once, no append fails, the rotation falls
    // back to a segment of its own, and the spare asked for in the next segment is used.
    let sim = SimFs::new(15);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let options = options(SyncPolicy::Os).segment_fill(ingestor_wal::SegmentFill::AllocateAhead);
    sim.inject(Fault::new(OpKind::Allocate, FaultKind::Enospc).on_path("spare"));
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options.clone()).unwrap();
    let spares = || spare_files(&*fs);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut n = 1u64;
    wal.append(1, &payload(n, 200)).unwrap();
    while wal.stats().spare_failures == 0 {
        assert!(std::time::Instant::now() < deadline, "the spare was never asked for");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(spares(), 0, "a spare that could not be allocated is removed");
    // Appends slow enough for the preparer to keep up once it can.
    while wal.stats().spare_segments < 2 {
        n += 1;
        wal.append(1, &payload(n, 200)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(std::time::Instant::now() < deadline, "no spare was used: {:?}", wal.stats());
    }
    let stats = wal.stats();
    assert_eq!(stats.spare_failures, 1, "{stats:?}");
    assert!(stats.rotations > stats.spare_segments, "the first rotation fell back: {stats:?}");
    let written = wal.written_lsn();
    wal.close().unwrap();
    assert_eq!(spares(), 0, "close leaves no spare");
    reopens_whole(fs, options, written);
}

#[test]
fn a_failed_sync_of_a_spare_being_activated_poisons_the_log() {
    let sim = SimFs::new(14);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Os)).unwrap();
    let mut n = 0u64;
    // A spare is ready once the segment is half full (written inline).
    while wal.segments().len() == 1 {
        n += 1;
        wal.append(1, &payload(n, 200)).unwrap();
    }
    assert_eq!(wal.stats().spare_segments, 1, "the first rotation used the spare");
    sim.inject(Fault::new(OpKind::SyncData, FaultKind::Eio).on_path("spare"));
    let err = loop {
        n += 1;
        match wal.append(1, &payload(n, 200)) {
            Ok(_) => assert!(n < 200, "the fault never hit an activation"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, WalError::Poisoned { .. }), "{err}");
    assert!(matches!(wal.append(1, b"x"), Err(WalError::Poisoned { .. })));
}

#[test]
fn enospc_when_creating_a_segment_fails_the_append_and_rotation_retries() {
    // Under `Always` a rotation creates the next segment synced, directory included; under
    // `Os` it leaves both syncs to the ended segment's close (a failure there poisons the
    // log: `a_failed_close_after_rotation_poisons_the_log`).
    for (seed, policy, faults) in [
        (
            12,
            SyncPolicy::Always,
            &[
                (OpKind::Create, FaultKind::Enospc),
                (OpKind::Allocate, FaultKind::Enospc),
                (OpKind::SyncDir, FaultKind::Eio),
            ][..],
        ),
        (
            22,
            SyncPolicy::Os,
            &[(OpKind::Create, FaultKind::Enospc), (OpKind::Allocate, FaultKind::Enospc)][..],
        ),
    ] {
        let sim = SimFs::new(seed);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let opts = || options(policy).segment_fill(ingestor_wal::SegmentFill::Allocate);
        let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts()).unwrap();
        let mut n = 0u64;
        while wal.segments().len() == 1 {
            n += 1;
            wal.append(1, &payload(n, 500)).unwrap();
        }
        let before = wal.segments().len();
        for &(op, kind) in faults {
            sim.inject(Fault::new(op, kind));
            let mut failed = false;
            for _ in 0..20 {
                n += 1;
                match wal.append(1, &payload(n, 500)) {
                    Ok(_) => {}
                    Err(e) => {
                        assert!(matches!(e, WalError::Io { .. }), "{policy:?} {op:?}: {e}");
                        failed = true;
                        n -= 1;
                        break;
                    }
                }
            }
            assert!(failed, "{policy:?} {op:?} fault never hit a rotation");
            // The half-made segment was removed; the next append rotates for real.
            n += 1;
            wal.append(1, &payload(n, 500)).unwrap();
        }
        assert!(wal.segments().len() > before);
        let written = wal.written_lsn();
        drop(wal);
        sim.crash(CrashPolicy::DropUnsynced);
        let mut count = 0;
        let (wal, report) =
            Wal::open_and_replay(fs, Path::new(DIR), opts(), Lsn::ZERO, |_, _, _| {
                count += 1;
                Ok(())
            })
            .unwrap();
        assert!(report.is_clean(), "{policy:?}: {report}");
        assert_eq!(wal.written_lsn(), written, "{policy:?}: synced at rotation or close");
        assert_eq!(count, written.0);
    }
}

#[test]
fn a_failed_close_after_rotation_poisons_the_log() {
    // Under `Os` a rotation syncs the ended segment, then seals the new one (its header
    // rewritten and synced, the directory synced) after the append that rotated: a failure
    // of any of those syncs poisons the log, and nothing past the ended segment's start
    // ever counts as durable.
    for (seed, op) in [(23, OpKind::SyncData), (24, OpKind::SyncAll), (25, OpKind::SyncDir)] {
        let sim = SimFs::new(seed);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let opts = || options(SyncPolicy::Os).segment_fill(ingestor_wal::SegmentFill::Allocate);
        let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts()).unwrap();
        let mut n = 0u64;
        while wal.segments().len() == 1 {
            n += 1;
            wal.append(1, &payload(n, 500)).unwrap();
        }
        let ended_first = wal.segments()[1].0;
        sim.inject(Fault::new(op, FaultKind::Eio));
        let err = loop {
            n += 1;
            match wal.append(1, &payload(n, 500)) {
                Ok(_) => assert!(n < 2_000, "{op:?}: the fault never hit a close"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, WalError::Poisoned { .. }), "{op:?}: {err}");
        assert!(matches!(wal.append(1, b"x"), Err(WalError::Poisoned { .. })), "{op:?}");
        assert!(wal.durable_lsn() < ended_first, "{op:?}: {:?}", wal.durable_lsn());
        assert!(wal.sync().is_err(), "{op:?}: a sync after the failed close");
    }
}

#[test]
fn eio_on_read_during_recovery_fails_open_with_the_file_named() {
    let sim = SimFs::new(13);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Always)).unwrap();
    wal.append(1, b"x").unwrap();
    drop(wal);
    sim.inject(Fault::new(OpKind::Read, FaultKind::Eio));
    let err = Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Always)).unwrap_err();
    assert!(
        matches!(&err, WalError::Io { op: "read", path, .. } if path.to_string_lossy().ends_with(".seg")),
        "{err}"
    );
    // Nothing was changed: the next open succeeds with the record.
    let (wal, _) = Wal::open(fs, Path::new(DIR), options(SyncPolicy::Always)).unwrap();
    assert_eq!(wal.written_lsn(), Lsn(1));
}

#[test]
fn salvage_modes_refuse_nothing_on_a_clean_log() {
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::PointInTime,
        RecoveryMode::SkipCorrupted,
        RecoveryMode::Strict,
    ] {
        let sim = SimFs::new(14);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Os)).unwrap();
        for n in 0..50 {
            wal.append(1, &payload(n, 100)).unwrap();
        }
        wal.close().unwrap();
        sim.crash(CrashPolicy::DropUnsynced);
        let (wal, report) =
            Wal::open(fs, Path::new(DIR), options(SyncPolicy::Os).recovery_mode(mode)).unwrap();
        assert!(report.is_clean(), "{mode:?}: {report}");
        assert_eq!(wal.written_lsn(), Lsn(50));
    }
}

/// Starting the log over past its end (the facade does it when a snapshot covers more than
/// the log holds): LSNs continue from there, and a power cut in the middle leaves a log that
/// is still behind, so the call can be repeated.
#[test]
fn skip_to_starts_over_past_the_end_and_survives_a_cut_midway() {
    for cut_at in [None, Some(1), Some(2), Some(3)] {
        let sim = SimFs::new(31);
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let (wal, _) =
            Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Always)).unwrap();
        for n in 0..60 {
            wal.append(1, &payload(n, 200)).unwrap();
        }
        assert!(wal.segments().len() > 2);
        if let Some(nth) = cut_at {
            sim.arm_crash_at_op(nth);
            assert!(wal.skip_to(Lsn(100)).is_err());
            std::mem::forget(wal);
            sim.crash(CrashPolicy::DropUnsynced);
            let (wal, _) =
                Wal::open(Arc::clone(&fs), Path::new(DIR), options(SyncPolicy::Always)).unwrap();
            assert!(
                wal.written_lsn() < Lsn(100),
                "still behind after a cut: {:?}",
                wal.written_lsn()
            );
            wal.skip_to(Lsn(100)).unwrap();
            assert_eq!(wal.append(1, b"x").unwrap().first, Lsn(100));
            continue;
        }
        wal.skip_to(Lsn(100)).unwrap();
        assert_eq!(wal.segments(), vec![ingestor_wal::SegmentId(Lsn(100))]);
        assert_eq!(wal.append(1, b"x").unwrap().first, Lsn(100));
        wal.skip_to(Lsn(50)).unwrap(); // behind the end: nothing happens
        assert_eq!(wal.append(1, b"y").unwrap().first, Lsn(101));
        drop(wal);
        sim.crash(CrashPolicy::DropUnsynced);
        let mut seen = Vec::new();
        let (_, report) = Wal::open_and_replay(
            Arc::clone(&fs),
            Path::new(DIR),
            options(SyncPolicy::Always),
            Lsn::ZERO,
            |l, _, _| {
                seen.push(l.0);
                Ok(())
            },
        )
        .unwrap();
        assert!(report.is_clean(), "{report}");
        assert_eq!(seen, vec![100, 101]);
    }
}
