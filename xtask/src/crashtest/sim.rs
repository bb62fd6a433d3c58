//! Simulated power cuts: the whole `Ingestor` on `SimFs`, deterministic for a seed.
//!
//! An iteration is one simulated disk taken through several crash cycles. Each cycle opens
//! the ingestor (sometimes cutting the power again during recovery, sometimes with a read
//! error), judges the recovered state with the oracle, arms a crash (at a named crash point
//! or a random I/O operation), maybe injects a fault, runs a workload — one writer's
//! ingests, snapshots, syncs and closes, or several concurrent writers' ingests and syncs
//! under the deterministic scheduler of `sched.rs` — cuts the power under a random image
//! policy, and maybe damages synced bytes before the next open (checking at once what the
//! damage must do to the next open).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use std::sync::{Arc, Mutex};

use ingestor::{
    AckLevel, Config, Error, FinalSnapshot, Fs, Ingestor, RecoveryMode, SegmentFill, SimFs,
    SnapshotOptions, Update,
};
use ingestor_fs::{CrashPolicy, Fault, FaultKind, OpKind};
use ingestor_testkit::fs::{Hook, HookFs};
use ingestor_wal::WalError;

use super::oracle::{EngineModel, History, Invariant, Model, Violation};
use super::sched::{At, OpTrace, Sched, SchedFs, SchedHook};
use super::workload::{self, Rng};
use super::{Breakage, Failure, FaultClass, Options, Policy, Report};

/// Cases the new checks must each meet at least once in a run (see `docs/crashtest.md`).
pub(crate) mod cases {
    /// flip-synced: the default open refused, naming the damaged LSN.
    pub(crate) const SYNCED_REFUSED: &str = "flip-synced: default open refused, naming the LSN";
    /// flip-synced: point-in-time recovery named exactly the LSNs it dropped.
    pub(crate) const SYNCED_POINT_IN_TIME: &str = "flip-synced: point-in-time named the LSNs lost";
    /// flip-synced: skip-corrupted recovery named exactly the LSN it skipped.
    pub(crate) const SYNCED_SKIP: &str = "flip-synced: skip-corrupted named the LSN lost";
    /// flip-snapshot with an intact older snapshot (or the whole log) to rebuild from.
    pub(crate) const SNAPSHOT_REBUILT: &str = "flip-snapshot: an older snapshot + log rebuilt it";
    /// flip-snapshot with nothing intact to rebuild from.
    pub(crate) const SNAPSHOT_NO_FALLBACK: &str = "flip-snapshot: nothing to rebuild from, refused";
    /// concurrent: a writer waited at `wal.sync.wait` for another writer's sync.
    pub(crate) const WAITED: &str = "concurrent: a writer waited for another's sync";
    /// concurrent: a Durable ack given by a sync another writer led.
    pub(crate) const SHARED: &str = "concurrent: a durable ack from another writer's sync";
    /// concurrent: a power cut while writers were running.
    pub(crate) const CUT: &str = "concurrent: a power cut among several writers";
    /// flip-tail: recovery reported the loss, which started at the frame damaged.
    pub(crate) const TAIL_LOSS_BOUNDED: &str =
        "flip-tail: the loss reported starts at the damaged frame";
    /// `ingestor repair` after a salvage open: a default open then gave the same state.
    pub(crate) const REPAIRED: &str = "repair: a default open after it gave the salvaged state";
    /// `ingestor repair` cut short by a power cut, then run again.
    pub(crate) const REPAIR_CUT: &str = "repair: cut short by a power cut, run again";
    /// `ingestor verify` ran before an open, and changed nothing.
    pub(crate) const VERIFIED: &str = "verify ran before an open and changed nothing";
    /// A batch validation refused (a series' kind changed within it) left nothing behind.
    pub(crate) const REFUSED: &str = "a batch refused by validation left nothing behind";
}

const DATA: &str = "/data";
const CYCLES: usize = 6;
const STEPS: u64 = 24;

/// The pseudo crash point of a power cut during recovery itself.
pub(crate) const RECOVERY_POINT: &str = "recovery.any_operation";

/// Every named crash point of the engine.
pub(crate) fn named_points() -> Vec<&'static str> {
    let mut points: Vec<&'static str> = ingestor_wal::crash_points::ALL.to_vec();
    points.extend(ingestor_snapshot::crash_points::ALL);
    points
}

fn mix(seed: u64, i: u64) -> u64 {
    Rng::new(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next()
}

fn is_power_cut(e: &Error) -> bool {
    fn wal(e: &WalError) -> bool {
        match e {
            WalError::Io { source, .. } => SimFs::is_power_cut(source),
            WalError::Poisoned { cause } => wal(cause),
            _ => false,
        }
    }
    match e {
        Error::Wal(w) => wal(w),
        Error::Snapshot(ingestor_snapshot::SnapshotError::Io { source, .. }) => {
            SimFs::is_power_cut(source)
        }
        Error::Io { source, .. } => SimFs::is_power_cut(source),
        other => other.to_string().contains("simulated power cut"),
    }
}

/// `fill`: how the log's spare segments are prepared, always on the appending thread (a run
/// follows from its seed).
fn config(policy: Policy, keep: usize, fill: SegmentFill) -> Config {
    let sync_policy = match policy {
        // A deadline no life reaches: a full buffer (1 KiB, a quarter of a segment) is handed
        // off but left for the ingesting thread to write at its next full buffer, rotation,
        // sync or snapshot, so that a run follows from its seed.
        Policy::Buffered => ingestor::SyncPolicy::Buffered(std::time::Duration::from_secs(60)),
        other => other.sync_policy(),
    };
    Config::default()
        .sync_policy(sync_policy)
        .wal_buffer_bytes(1024)
        .wal_buffer_handoff(false)
        .segment_bytes_max(4096)
        // Spare segments prepared by the appending thread: deterministic, and their writes
        // are among the operations a power cut can land on.
        .segment_fill(fill)
        .snapshot_bytes(1 << 40)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never)
        .maintenance_interval(std::time::Duration::from_secs(3600))
        .snapshot(SnapshotOptions::default().keep(keep))
        .clock_ms(|| 1_700_000_000_000)
}

fn open(fs: &Arc<dyn Fs>, config: &Config) -> Result<(Ingestor, ingestor::OpenReport), Error> {
    Ingestor::open_with(Arc::clone(fs), Path::new(DATA), config.clone(), &mut |_| {})
}

/// Runs the simulated mode within the options' budget.
pub(crate) fn run(options: &Options) -> Report {
    let mut required: std::collections::BTreeSet<String> =
        named_points().into_iter().map(String::from).collect();
    required.insert(RECOVERY_POINT.to_string());
    let has = |f| options.faults.contains(&f);
    if has(FaultClass::Concurrent) {
        required.insert(ingestor_wal::crash_points::SYNC_WAIT.to_string());
    }
    let mut report = Report { required_points: required, ..Report::default() };
    if let Some(i) = options.iteration {
        iteration(options, i, &mut report, true);
        return report;
    }
    report.required_faults = options.faults.iter().map(|f| f.name()).collect();
    report.required_events.extend([cases::REFUSED, cases::VERIFIED]);
    if has(FaultClass::FlipSynced) {
        report.required_events.extend([
            cases::SYNCED_REFUSED,
            cases::SYNCED_POINT_IN_TIME,
            cases::SYNCED_SKIP,
            cases::REPAIRED,
            cases::REPAIR_CUT,
        ]);
    }
    if has(FaultClass::FlipTail) {
        report.required_events.insert(cases::TAIL_LOSS_BOUNDED);
    }
    if has(FaultClass::FlipSnapshot) {
        report.required_events.extend([cases::SNAPSHOT_REBUILT, cases::SNAPSHOT_NO_FALLBACK]);
    }
    if has(FaultClass::Concurrent) {
        report.required_events.extend([cases::WAITED, cases::SHARED, cases::CUT]);
    }
    // Determinism: the same iteration twice gives the same trace; iterations from 0 on until
    // one ran concurrent writers (when they are on), so that the scheduler is covered too.
    for i in 0..8 {
        let (mut a, mut b) = (Report::default(), Report::default());
        let (h1, h2) = (iteration(options, i, &mut a, false), iteration(options, i, &mut b, false));
        if h1 != h2 {
            report.fail(Failure {
                violation: Violation {
                    invariant: Invariant::RecoveryIdempotent,
                    detail: format!(
                        "the simulation is not deterministic: iteration {i} gave trace {h1:#x}, \
                         then {h2:#x}"
                    ),
                },
                repro: options.repro_sim(i, Policy::Always),
                saved: None,
            });
            return report;
        }
        let concurrent = a.faults.get(FaultClass::Concurrent.name()).copied().unwrap_or(0);
        println!(
            "sim: deterministic (iteration {i} twice: trace {h1:#018x}, {concurrent} cycles of \
             concurrent writers)"
        );
        if concurrent > 0 || !has(FaultClass::Concurrent) {
            break;
        }
    }
    let deadline = Instant::now() + options.sim_budget();
    let next = AtomicU64::new(1);
    let stop = AtomicBool::new(false);
    let limit = options.iterations.unwrap_or(u64::MAX);
    let reports: Vec<Report> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut r = Report::default();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i > limit {
                            break;
                        }
                        iteration(options, i, &mut r, false);
                        if !r.failures.is_empty() {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    r
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a crashtest worker panicked")).collect()
    });
    for r in reports {
        report.merge(r);
    }
    report
}

/// What a workload step left.
enum Ended {
    /// The power was cut.
    PowerCut,
    /// A sync failed: the process must reopen.
    Poisoned,
    /// Closed cleanly.
    Closed,
    /// All steps done.
    Done,
}

/// A batch acknowledged in the current life: where it is in the history, its LSN, and the
/// highest LSN the harness knew durable when it was issued.
#[derive(Debug, Clone, Copy)]
struct LifeAck {
    pos: usize,
    lsn: u64,
    durable_before: u64,
}

struct Iteration<'a> {
    options: &'a Options,
    index: u64,
    seed: u64,
    policy: Policy,
    sim: SimFs,
    fs: Arc<dyn Fs>,
    /// The scheduling layer under the engine (see `sched.rs`).
    sched_fs: Arc<SchedFs>,
    rng: Rng,
    history: History,
    next_batch: u64,
    verbose: bool,
    /// Acknowledgements of the current life (since the last open).
    life: Vec<LifeAck>,
    /// The highest LSN the harness knows durable in the current life.
    known_durable: u64,
    /// The current life ran concurrent writers.
    concurrent_life: bool,
    /// LSNs of the snapshots this iteration damaged (they stay damaged).
    damaged_snapshots: std::collections::BTreeSet<u64>,
}

/// Runs iteration `index`; returns the disk's trace hash.
fn iteration(options: &Options, index: u64, report: &mut Report, verbose: bool) -> u64 {
    let seed = mix(options.seed, index);
    let mut rng = Rng::new(seed);
    // Draw the policy even when one is given, so that a reproduction with `--policy` follows
    // the same random stream as the run it reproduces.
    let drawn = match rng.below(3) {
        0 => Policy::Always,
        1 => Policy::Os,
        _ => Policy::Buffered,
    };
    let policy = match options.policy {
        Some(Policy::Batch) | None => drawn,
        Some(p) => p,
    };
    let sim = SimFs::new(seed);
    let below: Arc<dyn Fs> = match options.breakage {
        Breakage::None | Breakage::ReplayTwice => Arc::new(sim.clone()),
        b => Arc::new(HookFs::new(Arc::new(sim.clone()), BrokenDisk(b))),
    };
    let sched_fs = Arc::new(SchedFs::new(below, SchedHook::default()));
    let fs: Arc<dyn Fs> = Arc::clone(&sched_fs) as Arc<dyn Fs>;
    let mut it = Iteration {
        options,
        index,
        seed,
        policy,
        sim,
        fs,
        sched_fs,
        rng,
        history: History::default(),
        next_batch: 0,
        verbose,
        life: Vec::new(),
        known_durable: 0,
        concurrent_life: false,
        damaged_snapshots: std::collections::BTreeSet::new(),
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| it.run(report)));
    let violation = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(v)) => Some(v),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Some(Violation {
                invariant: Invariant::NoPanic,
                detail: format!("the engine panicked: {message}"),
            })
        }
    };
    if let Some(violation) = violation {
        let saved = it.save(&violation);
        report.fail(Failure { violation, repro: options.repro_sim(index, policy), saved });
    }
    it.sim.trace_hash()
}

impl Iteration<'_> {
    fn say(&self, what: impl FnOnce() -> String) {
        if self.verbose {
            println!("  [{}] {}", self.index, what());
        }
    }

    fn fault(&mut self, class: FaultClass, percent: u64, report: &mut Report) -> bool {
        if self.options.faults.contains(&class) && self.rng.chance(percent) {
            *report.faults.entry(class.name()).or_default() += 1;
            return true;
        }
        false
    }

    fn run(&mut self, report: &mut Report) -> Result<(), Violation> {
        let points = named_points();
        let mut lenient_tail = false;
        // The LSN of the frame a tail flip damaged, when the harness's own parse found it.
        let mut tail_flip_lsn: Option<u64> = None;
        // The first LSN the life since the last open could write (its frames, and only its,
        // are at or above it); unknown before the first open.
        let mut life_first_lsn = u64::MAX;
        let mut quarantined_at_flip = 0;
        for cycle in 0..CYCLES {
            let keep = 1 + self.rng.below(3) as usize;
            // Any open since a tail bit flip may be the one that reported cutting it.
            let mut truncation_reported = false;
            // Zero-filled spares or spares `fallocate`d ahead (what `Os` and `Buffered` get by
            // default), drawn per open: a log may also be reopened with the other.
            let fill = if self.rng.chance(50) {
                SegmentFill::ZerosInline
            } else {
                SegmentFill::AllocateAheadInline
            };
            let cfg = config(self.policy, keep, fill);
            // A second power cut during recovery.
            if self.rng.chance(10) {
                self.sim.arm_crash_at_op(1 + self.rng.below(40));
                match open(&self.fs, &cfg) {
                    Err(e) if is_power_cut(&e) => {
                        self.say(|| "power cut during recovery".into());
                        *report.crash_points.entry(RECOVERY_POINT.to_string()).or_default() += 1;
                        self.crash();
                    }
                    Err(e) => return Err(self.refused(&e)),
                    Ok((db, r)) => {
                        // Recovery ended before the armed operation: cut the power now.
                        truncation_reported |= !r.wal.truncations.is_empty();
                        drop(db);
                        self.crash();
                    }
                }
            }
            if self.fault(FaultClass::ReadEio, 8, report) {
                let before = self.disk_files();
                self.sim
                    .inject(Fault::new(OpKind::Read, FaultKind::Eio).on_nth(1 + self.rng.below(6)));
                // An open that hits the error must fail cleanly, and change nothing.
                match open(&self.fs, &cfg) {
                    Ok((db, r)) => {
                        truncation_reported |= !r.wal.truncations.is_empty();
                        drop(db);
                        self.crash();
                    }
                    Err(e) => {
                        self.sim.clear_faults();
                        let what = format!("an open failing on a read error ({e})");
                        self.check_unchanged(&before, &what)?;
                    }
                }
                self.sim.clear_faults();
            }
            // `ingestor verify`, now and then, before the open: it changes nothing.
            if self.rng.chance(10) {
                self.verify_changes_nothing("before an open")?;
                report.event(cases::VERIFIED);
            }
            // The log's segments as this open finds them: what it cuts must be in quarantine.
            let segments_before = self.segment_bytes();
            let (db, open_report) = match open(&self.fs, &cfg) {
                Ok(x) => x,
                Err(e) => return Err(self.refused(&e)),
            };
            self.check_quarantine(&open_report, &segments_before)
                .map_err(|v| Violation { detail: format!("cycle {cycle}: {}", v.detail), ..v })?;
            let observed = Model::observe(&db);
            // The loss is reported by this open, by an earlier one of this cycle, or - when a
            // recovery that cut it was itself interrupted - by the durable copy it left in
            // the quarantine directory.
            let lost_reported = lenient_tail
                && (truncation_reported
                    || !open_report.wal.truncations.is_empty()
                    || self.quarantined() > quarantined_at_flip);
            lenient_tail = false;
            let next_life_first_lsn = open_report
                .wal
                .last_lsn
                .0
                .max(open_report.snapshot.as_ref().map_or(0, |s| s.lsn.0))
                + 1;
            match self.history.judge(&observed) {
                Ok(k) => {
                    report.updates_checked +=
                        self.history.batches[..k].iter().map(|b| b.len() as u64).sum::<u64>();
                    self.history.advance(k);
                }
                // A bit flip in the last frame may take synced batches with it (of this life
                // or an earlier one): allowed only when recovery reported cutting them.
                // When the damaged frame is the last life's, the loss starts there: every batch
                // of earlier lives, and every one the last life had acknowledged below that
                // frame's LSN, must be present.
                Err(_) if lost_reported && tail_flip_lsn.is_some_and(|l| l >= life_first_lsn) => {
                    let flipped = tail_flip_lsn.unwrap_or_default();
                    let below = self.life.iter().filter(|a| a.lsn < flipped).map(|a| a.pos + 1);
                    let saved = self.history.must_survive;
                    self.history.must_survive = below.max().unwrap_or(0);
                    let judged = self.history.judge(&observed);
                    self.history.must_survive = saved;
                    match judged {
                        Ok(k) => {
                            report.event(cases::TAIL_LOSS_BOUNDED);
                            self.history.advance(k);
                        }
                        Err(v) => {
                            return Err(Violation {
                                invariant: Invariant::CorruptionReported,
                                detail: format!(
                                    "cycle {cycle}: a bit flip damaged the frame of LSN \
                                     {flipped}, and recovery lost more than it and what \
                                     followed: {}\n{open_report}",
                                    v.detail
                                ),
                            });
                        }
                    }
                }
                Err(_) if lost_reported => {
                    let k = self.history.judge_after_reported_loss(&observed)?;
                    self.history.advance_over_all(k);
                }
                Err(mut v) => {
                    if self.concurrent_life && v.invariant == Invariant::DurableSurvives {
                        v.invariant = Invariant::WritersDurable;
                        v.detail = format!("after concurrent writers: {}", v.detail);
                    }
                    v.detail = format!("cycle {cycle}: {}\n{open_report}", v.detail);
                    return Err(v);
                }
            }
            self.life.clear();
            self.known_durable = 0;
            life_first_lsn = next_life_first_lsn;
            tail_flip_lsn = None;
            *report.cycles.entry("sim").or_default() += 1;
            self.check_litter()?;
            let db = if self.rng.chance(25) {
                drop(db);
                let (again, _) = open(&self.fs, &cfg).map_err(|e| self.refused(&e))?;
                if Model::observe(&again) != observed {
                    return Err(Violation {
                        invariant: Invariant::RecoveryIdempotent,
                        detail: format!("cycle {cycle}: a second recovery gave another state"),
                    });
                }
                again
            } else {
                db
            };

            // Several writers at once in some cycles (always the second one, so that the
            // determinism check at the start of a run covers them).
            let concurrent = self.options.faults.contains(&FaultClass::Concurrent)
                && (cycle == 1 || self.rng.chance(20));
            self.concurrent_life = concurrent;
            if concurrent {
                *report.faults.entry(FaultClass::Concurrent.name()).or_default() += 1;
            }
            let mut cycle_points = points.clone();
            if concurrent {
                // The group-commit points, where a power cut hits several writers at once.
                cycle_points.extend([
                    ingestor_wal::crash_points::SYNC_WAIT,
                    ingestor_wal::crash_points::SYNC_BEFORE,
                    ingestor_wal::crash_points::SYNC_AFTER,
                ]);
            }
            // Arm this cycle's crash.
            let armed = match self.rng.below(100) {
                0..=49 => {
                    let p = cycle_points[self.rng.below(cycle_points.len() as u64) as usize];
                    self.sim.arm_crash_point(p, 1 + self.rng.below(3));
                    Some(p)
                }
                50..=89 => {
                    self.sim.arm_crash_at_op(1 + self.rng.below(150));
                    None
                }
                _ => None,
            };
            if concurrent {
                // No other fault: the power cut is the point.
            } else if self.fault(FaultClass::FsyncEio, 12, report) {
                self.sim.inject(
                    Fault::new(OpKind::SyncData, FaultKind::SyncLosesData)
                        .on_nth(1 + self.rng.below(6)),
                );
            } else if self.fault(FaultClass::Enospc, 12, report) {
                let kind =
                    if self.rng.chance(50) { FaultKind::Enospc } else { FaultKind::ShortWrite };
                let fault = Fault::new(OpKind::Write, kind).on_nth(1 + self.rng.below(10));
                self.sim.inject(if self.rng.chance(30) {
                    fault.on_path("snapshots")
                } else {
                    fault
                });
            } else if self.fault(FaultClass::CreateRename, 10, report) {
                let op = if self.rng.chance(50) { OpKind::Create } else { OpKind::Rename };
                self.sim.inject(Fault::new(op, FaultKind::Enospc).on_nth(1 + self.rng.below(3)));
            }
            let ended = if concurrent {
                self.concurrent_workload(db, report)?
            } else {
                self.workload(db, report)?
            };
            self.sim.clear_faults();
            if matches!(ended, Ended::PowerCut)
                && let Some(p) = armed
            {
                *report.crash_points.entry(p.to_string()).or_default() += 1;
            }
            if self.verbose {
                for (path, len) in self.sim.files() {
                    println!(
                        "    {} len {len} durable {:?}",
                        path.display(),
                        self.sim.durable_len(&path).ok()
                    );
                }
            }
            self.say(|| {
                format!(
                    "cycle {cycle}: {} ended",
                    match ended {
                        Ended::PowerCut => "power cut",
                        Ended::Poisoned => "poisoned",
                        Ended::Closed => "clean close",
                        Ended::Done => "workload",
                    }
                )
            });
            self.crash();

            // Damage to synced bytes before the next open.
            if self.fault(FaultClass::FlipTail, 6, report) {
                quarantined_at_flip = self.quarantined();
                tail_flip_lsn = self.flip_tail();
                lenient_tail = tail_flip_lsn.is_some();
            } else if self.fault(FaultClass::FlipMiddle, 4, report) {
                if self.flip_middle() {
                    return self.expect_refusal(
                        &cfg,
                        "a bit flip in the middle of the log",
                        report,
                    );
                }
            } else if self.fault(FaultClass::FlipSynced, 5, report) {
                if let Some(flip) = self.flip_synced() {
                    return self.expect_synced_damage(&cfg, &flip, report);
                }
            } else if self.fault(FaultClass::FlipSnapshot, 5, report)
                && let Some(rebuildable) = self.flip_snapshot()
            {
                // With an intact older snapshot and the log from it on (or the whole log),
                // open must succeed with the full state (judged next cycle: every durable
                // batch must be there). Only with nothing intact to rebuild from may it
                // refuse, naming the missing records, and change nothing.
                let before = self.disk_files();
                match open(&self.fs, &cfg) {
                    Ok((db, r)) => {
                        if r.rejected_snapshots.is_empty() {
                            return Err(Violation {
                                invariant: Invariant::CorruptionReported,
                                detail: "a damaged snapshot was loaded without being rejected"
                                    .into(),
                            });
                        }
                        drop(db);
                        if rebuildable {
                            report.event(cases::SNAPSHOT_REBUILT);
                        }
                    }
                    Err(Error::MissingRecords { .. }) if !rebuildable => {
                        self.check_unchanged(&before, "an open refusing for missing records")?;
                        report.event(cases::SNAPSHOT_NO_FALLBACK);
                        return Ok(());
                    }
                    Err(e) if rebuildable => {
                        return Err(Violation {
                            invariant: Invariant::KeepN,
                            detail: format!(
                                "only the newest snapshot was damaged, an older one and the log \
                                 from it on are intact ({}), yet open failed: {e}",
                                self.files_summary()
                            ),
                        });
                    }
                    Err(e) => return Err(self.refused(&e)),
                }
            }
        }
        Ok(())
    }

    fn crash(&self) {
        let policy = CrashPolicy::ALL
            [(self.seed as usize ^ self.sim.stats().crashes as usize) % CrashPolicy::ALL.len()];
        self.sim.crash(policy);
    }

    fn refused(&self, e: &Error) -> Violation {
        Violation {
            invariant: Invariant::CorruptionReported,
            detail: format!("open refused a log with no damage to synced bytes: {e}"),
        }
    }

    /// How many injected fsync failures have fired on this disk.
    fn fsync_failures(&self) -> u64 {
        self.sim.stats().faults_fired.get(FaultKind::SyncLosesData.name()).copied().unwrap_or(0)
    }

    fn workload(&mut self, db: Ingestor, report: &mut Report) -> Result<Ended, Violation> {
        let fsync_failures = self.fsync_failures();
        for _ in 0..STEPS {
            let r = self.rng.below(100);
            // An ingest acknowledged below `Durable`: see the check after the step.
            let mut acked_not_durable = false;
            let result = if r < 75 {
                let mut batch = workload::batch(self.seed, self.next_batch);
                let refused = workload::is_refused(self.seed, self.next_batch);
                if refused {
                    batch = workload::refused(batch);
                }
                self.next_batch += 1;
                self.history.batches.push(batch.clone());
                let result = db.ingest(&batch);
                self.say(|| {
                    format!(
                        "ingest batch {} ({} updates): {:?}",
                        self.next_batch - 1,
                        batch.len(),
                        result.as_ref().map(|a| (a.lsn, a.level)).map_err(ToString::to_string)
                    )
                });
                match result {
                    Ok(_) if refused => {
                        return Err(Violation {
                            invariant: Invariant::PrefixExactlyOnce,
                            detail: format!(
                                "batch {} sets a counter's series as a gauge and was accepted",
                                self.next_batch - 1
                            ),
                        });
                    }
                    Ok(ack) => {
                        self.policy.check_level(self.next_batch - 1, ack.level)?;
                        self.life.push(LifeAck {
                            pos: self.history.batches.len() - 1,
                            lsn: ack.lsn.0,
                            durable_before: self.known_durable,
                        });
                        if ack.level == AckLevel::Durable {
                            self.history.must_survive = self.history.batches.len();
                            self.known_durable = self.known_durable.max(ack.lsn.0);
                        }
                        acked_not_durable = ack.level != AckLevel::Durable;
                        Ok(())
                    }
                    Err(e) => {
                        if !is_power_cut(&e) {
                            self.settle_failed_batch(&db, &e)?;
                        }
                        if refused && matches!(e, Error::Memstore(_)) {
                            report.event(cases::REFUSED);
                        }
                        Err(e)
                    }
                }
            } else if r < 85 {
                let result = db.snapshot();
                self.say(|| {
                    format!(
                        "snapshot: {:?}",
                        result
                            .as_ref()
                            .map(|i| i.as_ref().map(|i| i.lsn))
                            .map_err(ToString::to_string)
                    )
                });
                if let Ok(Some(_)) = &result {
                    self.check_compaction()?;
                }
                result.map(|info| {
                    self.history.must_survive = self.history.batches.len();
                    if let Some(info) = info {
                        self.known_durable = self.known_durable.max(info.lsn.0);
                    }
                })
            } else if r < 93 {
                let result = db.sync();
                self.say(|| format!("sync: {:?}", result.as_ref().map_err(ToString::to_string)));
                result.map(|lsn| {
                    self.history.must_survive = self.history.batches.len();
                    self.known_durable = self.known_durable.max(lsn.0);
                })
            } else {
                self.say(|| "close".into());
                return match db.close() {
                    Ok(()) => {
                        self.history.must_survive = self.history.batches.len();
                        Ok(Ended::Closed)
                    }
                    Err(e) if is_power_cut(&e) => Ok(Ended::PowerCut),
                    Err(_) => Ok(Ended::Poisoned),
                };
            };
            let fsync_failed = self.fsync_failures() > fsync_failures;
            match result {
                // Under `Os` and `Buffered` a rotation syncs the segment it ended after the
                // write of the batch that rotated: a failure there leaves that batch written
                // (as acknowledged, not durable) and the log poisoned, which the next
                // operation must report.
                Ok(()) if fsync_failed && acked_not_durable => {
                    let probe = workload::batch(self.seed, u64::MAX - self.next_batch);
                    return match db.ingest(&probe) {
                        Err(Error::Wal(WalError::Poisoned { .. })) => Ok(Ended::Poisoned),
                        Err(e) if is_power_cut(&e) => Ok(Ended::PowerCut),
                        other => Err(Violation {
                            invariant: Invariant::FsyncFailureTerminal,
                            detail: format!(
                                "an fsync failed with EIO during an ingest acknowledged below \
                                 durable, and the next ingest did not report the log \
                                 poisoned: {:?}",
                                other.map(|a| a.level)
                            ),
                        }),
                    };
                }
                Ok(()) if fsync_failed => {
                    return Err(Violation {
                        invariant: Invariant::FsyncFailureTerminal,
                        detail: "an operation succeeded after an fsync failed with EIO".into(),
                    });
                }
                Ok(()) => {}
                Err(e) if is_power_cut(&e) => return Ok(Ended::PowerCut),
                Err(e) if fsync_failed && !matches!(e, Error::Wal(WalError::Poisoned { .. })) => {
                    return Err(Violation {
                        invariant: Invariant::FsyncFailureTerminal,
                        detail: format!(
                            "after an fsync failed with EIO, an operation failed without the \
                             log being poisoned: {e}"
                        ),
                    });
                }
                Err(Error::Wal(WalError::Poisoned { .. })) => {
                    // Terminal: nothing more is written until the log is reopened.
                    let probe = workload::batch(self.seed, u64::MAX - self.next_batch);
                    if db.ingest(&probe).is_ok() {
                        return Err(Violation {
                            invariant: Invariant::FsyncFailureTerminal,
                            detail: "an ingest succeeded after a failed sync poisoned the log"
                                .into(),
                        });
                    }
                    return Ok(Ended::Poisoned);
                }
                // ENOSPC, a failed create or rename: refused, the next operation may succeed.
                Err(_) => {}
            }
        }
        Ok(Ended::Done)
    }

    /// After an ingest failed without a power cut, the batch is either wholly applied (it was
    /// logged; only its durability failed, which poisons the log) or not at all (any other
    /// error: it was refused before or by its write): keep it in the history or drop it.
    fn settle_failed_batch(&mut self, db: &Ingestor, error: &Error) -> Result<(), Violation> {
        let observed = Model::observe(db);
        // Only a batch that was logged (its sync failed, poisoning the log) may be there; a
        // batch validation refused is not even one the model can apply.
        if matches!(error, Error::Wal(WalError::Poisoned { .. })) {
            let mut with = self.history.base.clone();
            for b in &self.history.batches {
                with.apply(b);
            }
            if observed == with {
                return Ok(());
            }
        }
        let failed = self.history.batches.pop();
        let mut without = self.history.base.clone();
        for b in &self.history.batches {
            without.apply(b);
        }
        if observed == without {
            return Ok(());
        }
        Err(Violation {
            invariant: Invariant::PrefixExactlyOnce,
            detail: format!(
                "a batch of {} updates refused with \"{error}\" was applied (wholly or in part)",
                failed.map_or(0, |b| b.len())
            ),
        })
    }

    fn check_litter(&self) -> Result<(), Violation> {
        let dir = Path::new(DATA).join(ingestor::SNAPSHOT_DIR);
        let entries = self.fs.read_dir(&dir).unwrap_or_default();
        if let Some(tmp) = entries.iter().find(|e| e.name.ends_with(".tmp")) {
            return Err(Violation {
                invariant: Invariant::NoLitter,
                detail: format!("temporary file {} left after open", tmp.name),
            });
        }
        Ok(())
    }

    /// Files in the log's quarantine directory.
    fn quarantined(&self) -> usize {
        let dir = Path::new(DATA).join(ingestor::WAL_DIR).join(ingestor_wal::QUARANTINE_DIR);
        self.sim.files().iter().filter(|(p, _)| p.starts_with(&dir)).count()
    }

    /// Every log segment's bytes, by path.
    fn segment_bytes(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        self.segments()
            .into_iter()
            .filter_map(|(path, _)| self.fs.read_file(&path).ok().map(|bytes| (path, bytes)))
            .collect()
    }

    /// Every file on the disk, with its bytes.
    fn disk_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        self.sim
            .files()
            .into_iter()
            .filter_map(|(path, _)| self.fs.read_file(&path).ok().map(|bytes| (path, bytes)))
            .collect()
    }

    /// Runs `ingestor verify` on the data directory: every file must be as before (`what`
    /// says when, for the message). Returns its report (`None` when it failed, as it may
    /// on a log it cannot read).
    fn verify_changes_nothing(
        &self,
        what: &str,
    ) -> Result<Option<ingestor::offline::VerifyReport>, Violation> {
        let before = self.disk_files();
        let report = ingestor::offline::verify(&*self.fs, Path::new(DATA)).ok();
        self.check_unchanged(&before, &format!("`verify` {what}"))?;
        Ok(report)
    }

    /// After an open that failed, or `verify` (`what`, the subject of the message): every
    /// file as it was before (`before`). A refused open repairs nothing, so that a deliberate
    /// repair still finds everything. Temporary
    /// files (`*.tmp`: a spare segment, a snapshot being written), which hold no data and
    /// which any open removes, are not compared.
    fn check_unchanged(
        &self,
        before: &BTreeMap<PathBuf, Vec<u8>>,
        what: &str,
    ) -> Result<(), Violation> {
        let after = self.disk_files();
        let changed: Vec<String> = before
            .keys()
            .chain(after.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
            .filter(|p| before.get(*p) != after.get(*p))
            .map(|p| p.display().to_string())
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        Err(Violation {
            invariant: Invariant::CorruptionReported,
            detail: format!("{what} changed {changed:?}"),
        })
    }

    /// After a salvage open of a log with synced damage: each damage it reports has copies
    /// in quarantine, each holding bytes its segment held at the offset its name gives, and
    /// one of them holding the byte flipped.
    fn check_salvage_copies(
        &self,
        report: &ingestor::OpenReport,
        flip: &SyncedFlip,
        before: &BTreeMap<PathBuf, Vec<u8>>,
    ) -> Result<(), String> {
        let wal = Path::new(DATA).join(ingestor::WAL_DIR);
        let mut flipped_kept = false;
        for c in &report.wal.corruptions {
            if c.quarantined.is_empty() {
                return Err(format!(
                    "damage at byte {} of {} was not copied to quarantine",
                    c.offset,
                    c.segment.file_name()
                ));
            }
            for copy in &c.quarantined {
                let (segment, from) = quarantine_origin(copy).ok_or_else(|| {
                    format!("{} is not named as a quarantine copy", copy.display())
                })?;
                let segment = wal.join(segment);
                let kept = self.fs.read_file(copy).unwrap_or_default();
                let held = before.get(&segment).map(Vec::as_slice).unwrap_or_default();
                let to = from as usize + kept.len();
                if kept.is_empty() || held.get(from as usize..to) != Some(&kept[..]) {
                    return Err(format!(
                        "{} ({} bytes) does not hold the bytes {} held from offset {from}",
                        copy.display(),
                        kept.len(),
                        segment.display()
                    ));
                }
                flipped_kept |= segment == flip.path && (from..to as u64).contains(&flip.offset);
            }
        }
        if flipped_kept {
            Ok(())
        } else {
            Err(format!(
                "no quarantine copy holds the damaged byte {} of {}",
                flip.offset,
                flip.path.display()
            ))
        }
    }

    /// Every torn tail an open reports as copied to quarantine is there, byte for byte: the
    /// bytes the segment held at `offset` before the open (`before`), `bytes` of them.
    fn check_quarantine(
        &self,
        report: &ingestor::OpenReport,
        before: &BTreeMap<PathBuf, Vec<u8>>,
    ) -> Result<(), Violation> {
        let wal = Path::new(DATA).join(ingestor::WAL_DIR);
        for t in &report.wal.truncations {
            let segment = wal.join(t.segment.file_name());
            let Some(copy) = &t.quarantined else {
                if t.bytes == 0 {
                    continue;
                }
                return Err(Violation {
                    invariant: Invariant::CorruptionReported,
                    detail: format!(
                        "the open cut {} bytes of {} from offset {} and copied none of them to \
                         quarantine",
                        t.bytes,
                        segment.display(),
                        t.offset
                    ),
                });
            };
            let Some(held) = before.get(&segment) else { continue };
            let (from, to) = (t.offset as usize, (t.offset + t.bytes) as usize);
            let cut = held.get(from..to.min(held.len())).unwrap_or_default();
            let kept = self.fs.read_file(copy).unwrap_or_default();
            if kept != cut {
                return Err(Violation {
                    invariant: Invariant::CorruptionReported,
                    detail: format!(
                        "the open reported {} bytes of {} from offset {} copied to {}, which holds {} \
                         bytes{}",
                        t.bytes,
                        segment.display(),
                        t.offset,
                        copy.display(),
                        kept.len(),
                        if kept.len() == cut.len() { ", not the ones cut" } else { "" }
                    ),
                });
            }
        }
        Ok(())
    }

    fn segments(&self) -> Vec<(PathBuf, u64)> {
        let dir = Path::new(DATA).join(ingestor::WAL_DIR);
        self.sim
            .files()
            .into_iter()
            .filter(|(p, _)| p.starts_with(&dir) && p.extension().is_some_and(|e| e == "seg"))
            .collect()
    }

    /// Whether a segment's header is valid, names its file's LSN and is sealed (without the
    /// flag `follows_unsynced`).
    fn is_sealed(&self, path: &Path) -> bool {
        let bytes = self.fs.read_file(path).unwrap_or_default();
        let first = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
        bytes
            .first_chunk::<{ ingestor_codec::SEGMENT_HEADER_LEN }>()
            .and_then(|h| ingestor_codec::SegmentHeader::decode(h).ok())
            .is_some_and(|h| Some(h.first_lsn.0) == first && !h.follows_unsynced)
    }

    /// The end of the data in a file (after its last non-zero byte).
    fn data_end(&self, path: &Path) -> u64 {
        let bytes = self.fs.read_file(path).unwrap_or_default();
        bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i as u64 + 1)
    }

    /// Flips a bit in the last 16 bytes of the last segment's data. Returns `None` when it
    /// did not, else the LSN of the valid frame it damaged (when the byte is in none of the
    /// frames the harness's own parse finds, torn bytes after them: the LSN after the last
    /// of them, or with none the segment's first).
    fn flip_tail(&mut self) -> Option<u64> {
        let (path, _) = self.segments().pop()?;
        let end = self.data_end(&path);
        if end <= ingestor_codec::SEGMENT_HEADER_LEN as u64 + 16 {
            return None;
        }
        let at = end - 1 - self.rng.below(16);
        let frames = parse_frames(&self.fs.read_file(&path).ok()?);
        let hit = frames.iter().find(|f| (f.offset..f.offset + f.len).contains(&at));
        let first = path.file_stem()?.to_str()?.parse::<u64>().unwrap_or(0);
        self.sim.flip_bit(&path, at, self.rng.below(8) as u8).ok()?;
        // Past every valid frame: they all stay, the loss starts after the last; with none,
        // at the segment's first LSN (its name).
        Some(hit.or(frames.last()).map_or(first, |f| f.lsn + u64::from(hit.is_none())))
    }

    /// Flips a bit inside the frames of a segment that is not the last. Returns whether it did.
    /// Not in the segment before the last while the last one's header is not sealed (it
    /// says, with the flag `follows_unsynced`, or by not being valid at all, that it was
    /// opened before the segment ahead was synced) and no acknowledgement of this life said
    /// the segment ahead was durable to its end: that segment's tail may never have been
    /// synced, and damage there may be a torn tail (`docs/format.md`, "Segment files"). (An
    /// acknowledgement that it was durable means the close sealed the last one first: a
    /// close that did not sync its seal is caught here.)
    fn flip_middle(&mut self) -> bool {
        let mut segments = self.segments();
        if let Some((last, _)) = segments.pop()
            && !self.is_sealed(&last)
        {
            let first = last
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(u64::MAX);
            if self.known_durable.saturating_add(1) < first {
                segments.pop();
            }
        }
        let candidates: Vec<(PathBuf, u64)> = segments
            .into_iter()
            .map(|(p, _)| {
                let end = self.data_end(&p);
                (p, end)
            })
            .filter(|(_, end)| *end > ingestor_codec::SEGMENT_HEADER_LEN as u64 + 8)
            .collect();
        if candidates.is_empty() {
            return false;
        }
        let (path, end) = &candidates[self.rng.below(candidates.len() as u64) as usize];
        let header = ingestor_codec::SEGMENT_HEADER_LEN as u64;
        let at = header + self.rng.below(end - header);
        self.sim.flip_bit(path, at, self.rng.below(8) as u8).is_ok()
    }

    /// Flips a bit in the newest snapshot. Returns `None` if it did not, else whether the
    /// files left intact can rebuild the full state: an older snapshot at LSN `O` with the
    /// log starting at or before `O + 1`, or the log starting at LSN 1. (The log is
    /// contiguous from its first segment on: recovery and compaction keep it so.)
    fn flip_snapshot(&mut self) -> Option<bool> {
        let snaps = self.snapshot_files();
        let (newest, path, len) = snaps.last().cloned()?;
        let older: Vec<u64> = snaps[..snaps.len() - 1]
            .iter()
            .map(|(lsn, _, _)| *lsn)
            .filter(|lsn| !self.damaged_snapshots.contains(lsn))
            .collect();
        let first = self.first_segment_lsn();
        let rebuildable = first.is_some_and(|f| f <= 1 || older.iter().any(|&o| f <= o + 1));
        self.sim.flip_bit(&path, self.rng.below(len), self.rng.below(8) as u8).ok()?;
        self.damaged_snapshots.insert(newest);
        Some(rebuildable)
    }

    /// After a snapshot and its compaction: the log still holds every record after the
    /// oldest snapshot kept (so that loading can fall back to it), unless the log restarted
    /// right after a snapshot (recovery cut a damaged tail that snapshot covers: the older
    /// ones are then given up until retention removes them). Snapshots this iteration
    /// damaged are left out.
    fn check_compaction(&self) -> Result<(), Violation> {
        let snaps = self.snapshot_files();
        let Some(first) = self.first_segment_lsn() else { return Ok(()) };
        let restarted = snaps.iter().any(|(lsn, _, _)| lsn + 1 == first);
        let oldest =
            snaps.iter().map(|(lsn, _, _)| *lsn).find(|lsn| !self.damaged_snapshots.contains(lsn));
        match oldest {
            Some(oldest) if first > oldest + 1 && !restarted => Err(Violation {
                invariant: Invariant::KeepN,
                detail: format!(
                    "after a snapshot, compaction deleted records the oldest kept snapshot \
                     (LSN {oldest}) needs: {}",
                    self.files_summary()
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The snapshot files (LSN, path, length), by LSN ascending.
    fn snapshot_files(&self) -> Vec<(u64, PathBuf, u64)> {
        let dir = Path::new(DATA).join(ingestor::SNAPSHOT_DIR);
        let mut out: Vec<(u64, PathBuf, u64)> = self
            .sim
            .files()
            .into_iter()
            .filter(|(p, _)| p.parent() == Some(dir.as_path()))
            .filter_map(|(p, len)| {
                let name = p.file_name()?.to_str()?;
                let digits = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
                Some((digits.parse().ok()?, p, len))
            })
            .collect();
        out.sort();
        out
    }

    /// The first LSN of the oldest log segment, from its name.
    fn first_segment_lsn(&self) -> Option<u64> {
        self.segments()
            .iter()
            .filter_map(|(p, _)| p.file_stem()?.to_str()?.parse::<u64>().ok())
            .min()
    }

    /// The snapshot and segment files, for messages.
    fn files_summary(&self) -> String {
        let snaps: Vec<u64> = self.snapshot_files().iter().map(|(l, _, _)| *l).collect();
        let segs: Vec<String> = self
            .segments()
            .iter()
            .filter_map(|(p, _)| Some(p.file_name()?.to_string_lossy().into_owned()))
            .collect();
        format!("snapshots at LSNs {snaps:?}, segments {segs:?}")
    }

    /// Flips a bit inside a synced frame of the last segment that later frames prove was
    /// synced: a frame acknowledged at LSN `d` (after the newest snapshot) with a later frame
    /// in the segment written after the harness knew `d` durable (a `Durable` ack, a
    /// completed sync or snapshot). Its damage is corruption, never a torn tail.
    fn flip_synced(&mut self) -> Option<SyncedFlip> {
        let (path, _) = self.segments().pop()?;
        let bytes = self.fs.read_file(&path).ok()?;
        let frames = parse_frames(&bytes);
        let newest_snapshot = self.snapshot_files().last().map_or(0, |(l, _, _)| *l);
        let at = |lsn: u64| frames.iter().find(|f| f.lsn == lsn).copied();
        let candidates: Vec<(LifeAck, ParsedFrame)> = self
            .life
            .iter()
            .filter(|a| a.lsn > newest_snapshot)
            .filter(|a| self.life.iter().any(|g| g.durable_before >= a.lsn && at(g.lsn).is_some()))
            .filter_map(|a| Some((*a, at(a.lsn)?)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let (ack, frame) = candidates[self.rng.below(candidates.len() as u64) as usize];
        let offset = frame.offset + self.rng.below(frame.len);
        self.sim.flip_bit(&path, offset, self.rng.below(8) as u8).ok()?;
        // Every valid frame after the damage, as a scan that resynchronises would find them.
        let last = last_valid_lsn(&bytes, frame.offset + frame.len, ack.lsn);
        self.say(|| format!("flip-synced: LSN {} at byte {offset} of {}", ack.lsn, path.display()));
        Some(SyncedFlip { lsn: ack.lsn, pos: ack.pos, last, path, offset })
    }

    /// After [`Iteration::flip_synced`]: the default open must refuse naming the LSN; a
    /// point-in-time or skip-corrupted open must report exactly the LSNs lost and hold
    /// exactly the batches that remain.
    fn expect_synced_damage(
        &mut self,
        cfg: &Config,
        flip: &SyncedFlip,
        report: &mut Report,
    ) -> Result<(), Violation> {
        let violation = |detail: String| Violation {
            invariant: Invariant::CorruptionReported,
            detail: format!(
                "a synced frame (LSN {}) in the last segment was damaged, with frames after it \
                 proving it synced: {detail}",
                flip.lsn
            ),
        };
        let verified = self.verify_changes_nothing("after a flip in a synced frame")?;
        if verified.as_ref().is_some_and(ingestor::offline::VerifyReport::is_clean) {
            return Err(violation("`verify` found no damage".into()));
        }
        let before = self.disk_files();
        match open(&self.fs, cfg) {
            Err(Error::Wal(WalError::Corrupt { lsn, .. })) if lsn.0 == flip.lsn => {
                self.check_unchanged(&before, "a refused open of a log with synced damage")?;
                report.event(cases::SYNCED_REFUSED);
            }
            Err(e) => return Err(violation(format!("open failed without naming it: {e}"))),
            Ok((_, r)) => return Err(violation(format!("the default open succeeded:\n{r}"))),
        }
        let point_in_time = self.rng.chance(50);
        let (mode, expected, case) = if point_in_time {
            (RecoveryMode::PointInTime, (flip.lsn, flip.last), cases::SYNCED_POINT_IN_TIME)
        } else {
            (RecoveryMode::SkipCorrupted, (flip.lsn, flip.lsn), cases::SYNCED_SKIP)
        };
        let (db, r) = open(&self.fs, &cfg.clone().recovery_mode(mode))
            .map_err(|e| violation(format!("the {mode:?} open failed: {e}")))?;
        self.check_salvage_copies(&r, flip, &before)
            .map_err(|d| violation(format!("{mode:?}: {d}")))?;
        let lost: Vec<Option<(u64, u64)>> =
            r.wal.corruptions.iter().map(|c| c.lost.map(|(a, b)| (a.0, b.0))).collect();
        if lost != [Some(expected)] {
            return Err(violation(format!(
                "the {mode:?} open reported lost LSNs {lost:?}, expected [{}..={}]:\n{r}",
                expected.0, expected.1
            )));
        }
        // The state: the batches before the damage (point-in-time), or every batch but the
        // damaged one, up to one not yet acknowledged at most (skip-corrupted).
        let observed = Model::observe(&db);
        drop(db);
        let mut model = self.history.base.clone();
        let mut matched = false;
        for (i, b) in self.history.batches.iter().enumerate() {
            if i == flip.pos {
                if point_in_time {
                    matched = model == observed;
                    break;
                }
                continue;
            }
            model.apply(b);
            if i > flip.pos && i + 1 >= self.history.must_survive && model == observed {
                matched = true;
            }
        }
        if !matched {
            return Err(Violation {
                invariant: Invariant::PrefixExactlyOnce,
                detail: format!(
                    "after the {mode:?} open of a log damaged at LSN {} (batch {} of {}), the \
                     state is not the batches that remain",
                    flip.lsn,
                    flip.pos,
                    self.history.batches.len()
                ),
            });
        }
        report.event(case);
        *report.cycles.entry("sim").or_default() += 1;
        if self.rng.chance(50) {
            self.repair_under_power_cut(cfg, mode, &observed, report)?;
        }
        Ok(())
    }

    /// `ingestor repair` in the salvage `mode`, after a salvage open that gave `expected`:
    /// half the time cut short by a power cut (and run again); then an open with `cfg` (the
    /// default mode) must succeed, with the same state.
    fn repair_under_power_cut(
        &mut self,
        cfg: &Config,
        mode: RecoveryMode,
        expected: &Model,
        report: &mut Report,
    ) -> Result<(), Violation> {
        let violation = |detail: String| Violation {
            invariant: Invariant::CorruptionReported,
            detail: format!("`repair` after salvaging synced damage: {detail}"),
        };
        let repair = |fs: &Arc<dyn Fs>| {
            let salvage = cfg.clone().recovery_mode(mode);
            ingestor::offline::repair(Arc::clone(fs), Path::new(DATA), salvage, false)
        };
        if self.rng.chance(50) {
            self.sim.arm_crash_at_op(1 + self.rng.below(80));
            let first = repair(&self.fs);
            let cut = self.sim.is_crashed();
            // A power cut during the repair, or right after it (the trigger disarmed).
            self.crash();
            match first {
                Err(e) if !cut => return Err(violation(format!("it failed: {e}"))),
                _ if cut => report.event(cases::REPAIR_CUT),
                _ => {}
            }
        }
        repair(&self.fs).map_err(|e| violation(format!("it failed (run again): {e}")))?;
        let (db, r) = open(&self.fs, cfg)
            .map_err(|e| violation(format!("a default open after it failed: {e}")))?;
        if Model::observe(&db) != *expected {
            return Err(Violation {
                invariant: Invariant::PrefixExactlyOnce,
                detail: format!(
                    "`repair` after salvaging synced damage: a default open after it gives \
                     another state than the salvage open did\n{r}"
                ),
            });
        }
        report.event(cases::REPAIRED);
        Ok(())
    }

    /// A cycle of several writers (2 to 4 threads) ingesting and syncing at once, scheduled
    /// deterministically (see `sched.rs`). Every acknowledgement is recorded in issue order,
    /// which is LSN order: a writer's batch is written before it can park again.
    fn concurrent_workload(
        &mut self,
        db: Ingestor,
        report: &mut Report,
    ) -> Result<Ended, Violation> {
        let writers = 2 + self.rng.below(3) as usize;
        let sched = Sched::new(writers);
        self.sched_fs.set(Some(Arc::clone(&sched)));
        let phase = Mutex::new(Phase {
            batches: Vec::new(),
            next_batch: self.next_batch,
            known_durable: self.known_durable,
            ops: Vec::new(),
            panicked: None,
        });
        let seed = self.seed;
        let salt = self.rng.next();
        let controlled = {
            let (db, sched, phase) = (&db, &sched, &phase);
            let rng = &mut self.rng;
            std::thread::scope(|s| {
                for w in 0..writers {
                    s.spawn(move || writer(w, seed, salt, db, sched, phase));
                }
                let controlled = sched.control(rng);
                if let Err(stall) = &controlled {
                    // Writers blocked outside every scheduling point cannot be joined.
                    println!("FAILED {}: {stall}", Invariant::WritersDurable.name());
                    std::process::exit(1);
                }
                controlled
            })
        };
        self.sched_fs.set(None);
        let turns = controlled.unwrap_or_default();
        let phase = phase.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.say(|| format!("concurrent: {writers} writers, {turns} turns, {:?}", phase.ops));
        if let Some(message) = phase.panicked {
            return Err(Violation {
                invariant: Invariant::NoPanic,
                detail: format!("the engine panicked in a concurrent writer: {message}"),
            });
        }
        let base = self.history.batches.len();
        self.history.batches.extend(phase.batches);
        self.next_batch = phase.next_batch;
        self.known_durable = phase.known_durable;
        let mut cut = false;
        for op in &phase.ops {
            match op {
                WriterOp::Ingest { pos, durable_before, result, trace } => match result {
                    Ok((lsn, level)) => {
                        self.policy.check_level((base + pos) as u64, *level)?;
                        self.life.push(LifeAck {
                            pos: base + pos,
                            lsn: *lsn,
                            durable_before: *durable_before,
                        });
                        if trace.waited {
                            report.event(cases::WAITED);
                        }
                        if *level == AckLevel::Durable {
                            self.history.must_survive =
                                self.history.must_survive.max(base + pos + 1);
                            if trace.waited && !trace.led {
                                report.event(cases::SHARED);
                            }
                        }
                    }
                    Err((power_cut, _)) if *power_cut => cut = true,
                    Err((_, e)) => {
                        return Err(Violation {
                            invariant: Invariant::WritersDurable,
                            detail: format!("an ingest failed with no fault injected: {e}"),
                        });
                    }
                },
                WriterOp::Sync { result, .. } => match result {
                    // A completed sync covers every batch written before it began: every
                    // acknowledged batch up to the LSN it returned, and (a prefix) all
                    // before them. A batch issued but never written is not covered.
                    Ok(lsn) => {
                        for other in &phase.ops {
                            if let WriterOp::Ingest { pos, result: Ok((l, _)), .. } = other
                                && l <= lsn
                            {
                                self.history.must_survive =
                                    self.history.must_survive.max(base + pos + 1);
                            }
                        }
                    }
                    Err((power_cut, _)) if *power_cut => cut = true,
                    Err((_, e)) => {
                        return Err(Violation {
                            invariant: Invariant::WritersDurable,
                            detail: format!("a sync failed with no fault injected: {e}"),
                        });
                    }
                },
            }
        }
        if cut {
            report.event(cases::CUT);
        }
        drop(db);
        Ok(if self.sim.is_crashed() { Ended::PowerCut } else { Ended::Done })
    }

    /// Damage in the middle of the log must make open fail, naming the segment.
    fn expect_refusal(
        &mut self,
        cfg: &Config,
        what: &str,
        report: &mut Report,
    ) -> Result<(), Violation> {
        let verified = self.verify_changes_nothing(&format!("after {what}"))?;
        if verified.as_ref().is_some_and(ingestor::offline::VerifyReport::is_clean) {
            return Err(Violation {
                invariant: Invariant::CorruptionReported,
                detail: format!("after {what}, `verify` found no damage"),
            });
        }
        let before = self.disk_files();
        match open(&self.fs, cfg) {
            Err(e) if e.to_string().contains(".seg") => {
                self.check_unchanged(&before, &format!("the open refusing after {what}"))?;
                *report.cycles.entry("sim").or_default() += 1;
                Ok(())
            }
            Err(e) => Err(Violation {
                invariant: Invariant::CorruptionReported,
                detail: format!("after {what}, open failed without naming the segment: {e}"),
            }),
            Ok((_, r)) => Err(Violation {
                invariant: Invariant::CorruptionReported,
                detail: format!("after {what}, open succeeded:\n{r}"),
            }),
        }
    }

    /// Saves the disk image and the history of a failing iteration.
    fn save(&self, violation: &Violation) -> Option<PathBuf> {
        let dir = self.options.out_dir.join(format!("sim-{:#x}-{}", self.options.seed, self.index));
        let _ = std::fs::remove_dir_all(&dir);
        self.sim.dump_to(&dir.join("disk")).ok()?;
        let mut log = format!(
            "{}: {}\nmust survive: {} batches\n",
            violation.invariant.name(),
            violation.detail,
            self.history.must_survive
        );
        for (i, b) in self.history.batches.iter().enumerate() {
            log.push_str(&format!("batch {i}: {b:?}\n"));
        }
        std::fs::write(dir.join("acks.log"), log).ok()?;
        Some(dir)
    }
}

/// The segment file and offset a quarantine copy's name gives
/// (`<segment>.<offset>.bad` or `<segment>.<offset>.<n>.bad`).
fn quarantine_origin(copy: &Path) -> Option<(String, u64)> {
    let name = copy.file_name()?.to_str()?.strip_suffix(".bad")?;
    let at = name.find(".seg.")? + ".seg".len();
    let from = name[at + 1..].split('.').next()?.parse().ok()?;
    Some((name[..at].to_string(), from))
}

/// What [`Iteration::flip_synced`] damaged.
#[derive(Debug, Clone)]
struct SyncedFlip {
    /// The damaged frame's LSN.
    lsn: u64,
    /// Its batch's position in the life's history.
    pos: usize,
    /// The highest LSN of a valid frame in the segment after it (or `lsn`).
    last: u64,
    /// The segment and the byte flipped.
    path: PathBuf,
    offset: u64,
}

/// A frame found by [`parse_frames`].
#[derive(Debug, Clone, Copy)]
struct ParsedFrame {
    offset: u64,
    len: u64,
    lsn: u64,
}

/// The valid frames of a segment from its start, up to the first that does not decode.
fn parse_frames(bytes: &[u8]) -> Vec<ParsedFrame> {
    let mut out = Vec::new();
    let mut offset = ingestor_codec::SEGMENT_HEADER_LEN;
    while let Some(rest) = bytes.get(offset..) {
        let Ok(frame) = ingestor_codec::decode_frame(rest) else { break };
        out.push(ParsedFrame {
            offset: offset as u64,
            len: frame.frame_len as u64,
            lsn: frame.lsn.0,
        });
        offset += frame.frame_len;
    }
    out
}

/// The highest LSN above `floor` of a valid frame anywhere in `bytes` from `from` on, each
/// next one searched byte by byte after the last found (or `floor`).
fn last_valid_lsn(bytes: &[u8], from: u64, floor: u64) -> u64 {
    let mut best = floor;
    let mut at = from as usize;
    while at < bytes.len() {
        match ingestor_codec::decode_frame(&bytes[at..]) {
            Ok(frame) if frame.lsn.0 > best => {
                best = frame.lsn.0;
                at += frame.frame_len;
            }
            _ => at += 1,
        }
    }
    best
}

/// The shared record of a concurrent phase.
#[derive(Debug)]
struct Phase {
    /// Batches in issue order (which is LSN order).
    batches: Vec<Vec<Update>>,
    next_batch: u64,
    /// The highest LSN known durable (a `Durable` ack, a completed sync).
    known_durable: u64,
    ops: Vec<WriterOp>,
    /// A writer's panic (the engine's: the harness's own code does not panic).
    panicked: Option<String>,
}

/// One operation of a writer and what came of it (`Err((power cut?, message))`).
#[derive(Debug)]
enum WriterOp {
    Ingest {
        pos: usize,
        durable_before: u64,
        result: Result<(u64, AckLevel), (bool, String)>,
        trace: OpTrace,
    },
    Sync {
        result: Result<u64, (bool, String)>,
    },
}

/// One writer of a concurrent phase: 2 to 7 operations, four in five an ingest of the next
/// batch, else a sync; it stops at its first error.
fn writer(w: usize, seed: u64, salt: u64, db: &Ingestor, sched: &Sched, phase: &Mutex<Phase>) {
    Sched::enter(w);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        writer_ops(w, seed, salt, db, sched, phase);
    }));
    if let Err(panic) = run {
        let message = panic
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        phase.lock().unwrap_or_else(std::sync::PoisonError::into_inner).panicked = Some(message);
    }
    sched.finish();
}

/// The operations of [`writer`].
fn writer_ops(w: usize, seed: u64, salt: u64, db: &Ingestor, sched: &Sched, phase: &Mutex<Phase>) {
    let mut rng = Rng::new(salt ^ (w as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f));
    let lock = || phase.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..2 + rng.below(6) {
        sched.park(At::Start);
        if rng.chance(80) {
            let (batch, pos, durable_before) = {
                let mut p = lock();
                let batch = workload::batch(seed, p.next_batch);
                p.next_batch += 1;
                p.batches.push(batch.clone());
                (batch, p.batches.len() - 1, p.known_durable)
            };
            let result = db.ingest(&batch);
            let trace = sched.trace();
            let mut p = lock();
            let failed = result.is_err();
            let result = match result {
                Ok(ack) => {
                    if ack.level == AckLevel::Durable {
                        p.known_durable = p.known_durable.max(ack.lsn.0);
                    }
                    Ok((ack.lsn.0, ack.level))
                }
                Err(e) => Err((is_power_cut(&e), e.to_string())),
            };
            p.ops.push(WriterOp::Ingest { pos, durable_before, result, trace });
            if failed {
                break;
            }
        } else {
            let result = db.sync();
            let mut p = lock();
            let failed = result.is_err();
            let result = match result {
                Ok(lsn) => {
                    p.known_durable = p.known_durable.max(lsn.0);
                    Ok(lsn.0)
                }
                Err(e) => Err((is_power_cut(&e), e.to_string())),
            };
            p.ops.push(WriterOp::Sync { result });
            if failed {
                break;
            }
        }
    }
}

/// A deliberate durability bug of the disk, for showing that the crash test catches one (the
/// hook of a [`HookFs`] over the simulated disk): [`Breakage::SyncNoop`] turns file syncs
/// into no-ops, [`Breakage::DirSyncNoop`] directory syncs.
#[derive(Debug)]
struct BrokenDisk(Breakage);

impl Hook for BrokenDisk {
    fn file_sync(&self, _path: &Path) -> Option<std::io::Result<()>> {
        (self.0 == Breakage::SyncNoop).then_some(Ok(()))
    }

    fn dir_sync(&self, _path: &Path) -> Option<std::io::Result<()>> {
        (self.0 == Breakage::DirSyncNoop).then_some(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(breakage: Breakage) -> Options {
        let mut o = crate::crashtest::parse(&[]).expect("defaults");
        o.seed = 0x5eed;
        o.breakage = breakage;
        o.out_dir = std::env::temp_dir().join("ingestor-crashtest-selftest");
        o
    }

    /// Runs iterations until one fails (or `n` pass); returns the failures.
    fn failures(breakage: Breakage, n: u64) -> Vec<Failure> {
        let o = options(breakage);
        let mut report = Report::default();
        for i in 1..=n {
            iteration(&o, i, &mut report, false);
            if !report.failures.is_empty() {
                break;
            }
        }
        report.failures
    }

    #[test]
    fn an_unbroken_engine_passes() {
        let f = failures(Breakage::None, 40);
        assert!(f.is_empty(), "{:?}", f.first().map(|f| &f.violation));
    }

    #[test]
    fn syncs_turned_into_no_ops_are_caught() {
        let f = failures(Breakage::SyncNoop, 200);
        assert!(!f.is_empty(), "a crash test run must fail when syncs do nothing");
    }

    #[test]
    fn a_skipped_directory_sync_is_caught() {
        let f = failures(Breakage::DirSyncNoop, 300);
        assert!(!f.is_empty(), "a crash test run must fail when directory syncs do nothing");
    }

    // Needs the engine defects: only in a build with --cfg ingestor_deliberate_bugs
    // (`cargo xtask-test`, which CI runs).
    #[cfg(ingestor_deliberate_bugs)]
    #[test]
    fn a_record_replayed_twice_is_caught() {
        // The bug is switched on by an environment variable, which a test must not set in its
        // own process (other tests run there, and set_var is unsafe in edition 2024): run the
        // breaking iterations as a child test process that has it set.
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "crashtest::sim::tests::replay_twice_child",
                "--ignored",
                "--nocapture",
            ])
            .env("INGESTOR_DELIBERATE_BUG", "replay-twice")
            .output()
            .expect("run the child test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("CAUGHT"),
            "the crash test did not catch a record replayed twice:\n{stdout}"
        );
    }

    // Needs the engine defects: only in a build with --cfg ingestor_deliberate_bugs
    // (`cargo xtask-test`, which CI runs).
    #[cfg(ingestor_deliberate_bugs)]
    /// Run by `a_record_replayed_twice_is_caught` in a child process with the bug switched on.
    #[test]
    #[ignore = "run as a child by a_record_replayed_twice_is_caught, with INGESTOR_DELIBERATE_BUG set"]
    fn replay_twice_child() {
        let f = failures(Breakage::ReplayTwice, 100);
        if !f.is_empty() {
            println!("CAUGHT: {}", f[0].violation.detail.lines().next().unwrap_or_default());
        }
    }

    // Needs the engine defects: only in a build with --cfg ingestor_deliberate_bugs
    // (`cargo xtask-test`, which CI runs).
    #[cfg(ingestor_deliberate_bugs)]
    /// Runs the iterations with the engine defect `bug` switched on, in a child test process
    /// (see `a_record_replayed_twice_is_caught`); returns the invariant that caught it.
    fn caught_by(bug: &str) -> Option<String> {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "crashtest::sim::tests::deliberate_bug_child",
                "--ignored",
                "--nocapture",
            ])
            .env("INGESTOR_DELIBERATE_BUG", bug)
            .output()
            .expect("run the child test");
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout.lines().find_map(|l| l.strip_prefix("CAUGHT BY: ").map(str::to_string))
    }

    // Needs the engine defects: only in a build with --cfg ingestor_deliberate_bugs
    // (`cargo xtask-test`, which CI runs).
    #[cfg(ingestor_deliberate_bugs)]
    /// Run by `caught_by` in a child process with a defect switched on.
    #[test]
    #[ignore = "run as a child by caught_by, with INGESTOR_DELIBERATE_BUG set"]
    fn deliberate_bug_child() {
        let f = failures(Breakage::None, 400);
        if let Some(f) = f.first() {
            println!("CAUGHT BY: {}", f.violation.invariant.name());
        }
    }

    // Needs the engine defects: only in a build with --cfg ingestor_deliberate_bugs
    // (`cargo xtask-test`, which CI runs).
    #[cfg(ingestor_deliberate_bugs)]
    #[test]
    fn a_synced_frame_cut_as_a_torn_tail_is_caught() {
        assert_eq!(
            caught_by("tail-as-torn").as_deref(),
            Some(Invariant::CorruptionReported.name()),
            "damage to a frame that later frames prove synced must be refused, not cut"
        );
    }

    // Needs the engine defects: only in a build with --cfg ingestor_deliberate_bugs
    // (`cargo xtask-test`, which CI runs).
    #[cfg(ingestor_deliberate_bugs)]
    #[test]
    fn group_commit_claiming_more_than_it_synced_is_caught() {
        assert_eq!(
            caught_by("group-commit-overclaim").as_deref(),
            Some(Invariant::WritersDurable.name()),
            "a leader that claims writes made during its sync must be caught"
        );
    }

    // Needs the engine defects: only in a build with --cfg ingestor_deliberate_bugs
    // (`cargo xtask-test`, which CI runs).
    #[cfg(ingestor_deliberate_bugs)]
    #[test]
    fn no_fall_back_to_an_older_kept_snapshot_is_caught() {
        assert_eq!(
            caught_by("snapshot-newest-only").as_deref(),
            Some(Invariant::KeepN.name()),
            "with an intact older snapshot, a damaged newest one must cost nothing"
        );
    }

    #[test]
    fn concurrent_writers_are_deterministic() {
        let o = options(Breakage::None);
        for i in 0..6 {
            let (mut a, mut b) = (Report::default(), Report::default());
            let h1 = iteration(&o, i, &mut a, false);
            let h2 = iteration(&o, i, &mut b, false);
            assert_eq!(h1, h2, "iteration {i} (its second cycle has concurrent writers)");
            assert_eq!(a.faults.get("concurrent"), b.faults.get("concurrent"));
            assert!(a.faults.get("concurrent").is_some_and(|n| *n >= 1));
            assert!(a.failures.is_empty() && b.failures.is_empty());
        }
    }
}
