//! Simulated power cuts: the whole `Ingestor` on `SimFs`, single-threaded and deterministic
//! for a seed.
//!
//! An iteration is one simulated disk taken through several crash cycles. Each cycle opens
//! the ingestor (sometimes cutting the power again during recovery, sometimes with a read
//! error), judges the recovered state with the oracle, arms a crash (at a named crash point
//! or a random I/O operation), maybe injects a fault, runs a workload of ingests, snapshots,
//! syncs and closes, cuts the power under a random image policy, and maybe flips a bit in
//! synced bytes before the next open.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use ingestor::{AckLevel, Config, Error, FinalSnapshot, Fs, Ingestor, SimFs, SnapshotOptions};
use ingestor_fs::{CrashPolicy, Fault, FaultKind, OpKind};
use ingestor_wal::WalError;

use super::oracle::{History, Invariant, Model, Violation};
use super::workload::{self, Rng};
use super::{Breakage, Failure, FaultClass, Options, Policy, Report};

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

fn config(policy: Policy, keep: usize) -> Config {
    Config::default()
        .sync_policy(policy.sync_policy())
        .segment_bytes_max(4096)
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
    let mut report = Report { required_points: required, ..Report::default() };
    if let Some(i) = options.iteration {
        iteration(options, i, &mut report, true);
        return report;
    }
    // Determinism: the same iteration twice gives the same trace.
    let (mut a, mut b) = (Report::default(), Report::default());
    let (h1, h2) = (iteration(options, 0, &mut a, false), iteration(options, 0, &mut b, false));
    if h1 != h2 {
        report.fail(Failure {
            violation: Violation {
                invariant: Invariant::RecoveryIdempotent,
                detail: format!("the simulation is not deterministic: trace {h1:#x} then {h2:#x}"),
            },
            repro: options.repro_sim(0, Policy::Always),
            saved: None,
        });
        return report;
    }
    println!("sim: deterministic (iteration 0 twice: trace {h1:#018x})");
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

struct Iteration<'a> {
    options: &'a Options,
    index: u64,
    seed: u64,
    policy: Policy,
    sim: SimFs,
    fs: Arc<dyn Fs>,
    rng: Rng,
    history: History,
    next_batch: u64,
    verbose: bool,
}

/// Runs iteration `index`; returns the disk's trace hash.
fn iteration(options: &Options, index: u64, report: &mut Report, verbose: bool) -> u64 {
    let seed = mix(options.seed, index);
    let mut rng = Rng::new(seed);
    // Draw the policy even when one is given, so that a reproduction with `--policy` follows
    // the same random stream as the run it reproduces.
    let drawn = if rng.chance(50) { Policy::Always } else { Policy::Os };
    let policy = match options.policy {
        Some(Policy::Batch) | None => drawn,
        Some(p) => p,
    };
    let sim = SimFs::new(seed);
    let fs: Arc<dyn Fs> = match options.breakage {
        Breakage::None | Breakage::ReplayTwice => Arc::new(sim.clone()),
        b => Arc::new(BrokenFs { inner: sim.clone(), breakage: b }),
    };
    let mut it = Iteration {
        options,
        index,
        seed,
        policy,
        sim,
        fs,
        rng,
        history: History::default(),
        next_batch: 0,
        verbose,
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
        let mut quarantined_at_flip = 0;
        for cycle in 0..CYCLES {
            let keep = 1 + self.rng.below(3) as usize;
            // Any open since a tail bit flip may be the one that reported cutting it.
            let mut truncation_reported = false;
            let cfg = config(self.policy, keep);
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
                self.sim
                    .inject(Fault::new(OpKind::Read, FaultKind::Eio).on_nth(1 + self.rng.below(6)));
                // An open that hits the error must fail cleanly (and change nothing).
                if let Ok((db, r)) = open(&self.fs, &cfg) {
                    truncation_reported |= !r.wal.truncations.is_empty();
                    drop(db);
                    self.crash();
                }
                self.sim.clear_faults();
            }
            let (db, open_report) = match open(&self.fs, &cfg) {
                Ok(x) => x,
                Err(e) => return Err(self.refused(&e)),
            };
            let observed = Model::observe(&db);
            // The loss is reported by this open, by an earlier one of this cycle, or - when a
            // recovery that cut it was itself interrupted - by the durable copy it left in
            // the quarantine directory.
            let lost_reported = lenient_tail
                && (truncation_reported
                    || !open_report.wal.truncations.is_empty()
                    || self.quarantined() > quarantined_at_flip);
            lenient_tail = false;
            match self.history.judge(&observed) {
                Ok(k) => {
                    report.updates_checked +=
                        self.history.batches[..k].iter().map(|b| b.len() as u64).sum::<u64>();
                    self.history.advance(k);
                }
                // A bit flip in the last frame may take synced batches with it (of this life
                // or an earlier one): allowed only when recovery reported cutting them.
                Err(_) if lost_reported => {
                    let k = self.history.judge_after_reported_loss(&observed)?;
                    self.history.advance_over_all(k);
                }
                Err(mut v) => {
                    v.detail = format!("cycle {cycle}: {}\n{open_report}", v.detail);
                    return Err(v);
                }
            }
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

            // Arm this cycle's crash.
            let armed = match self.rng.below(100) {
                0..=49 => {
                    let p = points[self.rng.below(points.len() as u64) as usize];
                    self.sim.arm_crash_point(p, 1 + self.rng.below(3));
                    Some(p)
                }
                50..=89 => {
                    self.sim.arm_crash_at_op(1 + self.rng.below(150));
                    None
                }
                _ => None,
            };
            if self.fault(FaultClass::FsyncEio, 12, report) {
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
            let ended = self.workload(db)?;
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
                lenient_tail = self.flip_tail();
            } else if self.fault(FaultClass::FlipMiddle, 4, report) {
                if self.flip_middle() {
                    return self.expect_refusal(
                        &cfg,
                        "a bit flip in the middle of the log",
                        report,
                    );
                }
            } else if self.fault(FaultClass::FlipSnapshot, 5, report) && self.flip_snapshot() {
                // Open must fall back to an older snapshot (judged next cycle) or refuse,
                // naming the missing records: never a state with less data.
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
                    }
                    Err(Error::MissingRecords { .. }) => return Ok(()),
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

    fn workload(&mut self, db: Ingestor) -> Result<Ended, Violation> {
        for _ in 0..STEPS {
            let r = self.rng.below(100);
            let result = if r < 75 {
                let batch = workload::batch(self.seed, self.next_batch);
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
                    Ok(ack) => {
                        if ack.level == AckLevel::Durable {
                            self.history.must_survive = self.history.batches.len();
                        }
                        Ok(())
                    }
                    Err(e) => {
                        if !is_power_cut(&e) {
                            self.settle_failed_batch(&db)?;
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
                result.map(|_| self.history.must_survive = self.history.batches.len())
            } else if r < 93 {
                let result = db.sync();
                self.say(|| format!("sync: {:?}", result.as_ref().map_err(ToString::to_string)));
                result.map(|_| self.history.must_survive = self.history.batches.len())
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
            match result {
                Ok(()) => {}
                Err(e) if is_power_cut(&e) => return Ok(Ended::PowerCut),
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
    /// logged; only its durability failed) or not at all: keep it in the history or drop it.
    fn settle_failed_batch(&mut self, db: &Ingestor) -> Result<(), Violation> {
        let observed = Model::observe(db);
        let mut with = self.history.base.clone();
        for b in &self.history.batches {
            with.apply(b);
        }
        if observed == with {
            return Ok(());
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
                "a failed batch of {} updates was applied in part",
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

    fn segments(&self) -> Vec<(PathBuf, u64)> {
        let dir = Path::new(DATA).join(ingestor::WAL_DIR);
        self.sim
            .files()
            .into_iter()
            .filter(|(p, _)| p.starts_with(&dir) && p.extension().is_some_and(|e| e == "seg"))
            .collect()
    }

    /// The end of the data in a file (after its last non-zero byte).
    fn data_end(&self, path: &Path) -> u64 {
        let bytes = self.fs.read_file(path).unwrap_or_default();
        bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i as u64 + 1)
    }

    /// Flips a bit in the last 16 bytes of the last segment's data. Returns whether it did.
    fn flip_tail(&mut self) -> bool {
        let Some((path, _)) = self.segments().pop() else { return false };
        let end = self.data_end(&path);
        if end <= ingestor_codec::SEGMENT_HEADER_LEN as u64 + 16 {
            return false;
        }
        let at = end - 1 - self.rng.below(16);
        self.sim.flip_bit(&path, at, self.rng.below(8) as u8).is_ok()
    }

    /// Flips a bit inside the frames of a segment that is not the last. Returns whether it did.
    fn flip_middle(&mut self) -> bool {
        let mut segments = self.segments();
        segments.pop();
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

    /// Flips a bit in the newest snapshot. Returns whether it did.
    fn flip_snapshot(&mut self) -> bool {
        let dir = Path::new(DATA).join(ingestor::SNAPSHOT_DIR);
        let Some((path, len)) = self
            .sim
            .files()
            .into_iter()
            .filter(|(p, _)| p.starts_with(&dir) && p.extension().is_some_and(|e| e == "snap"))
            .max()
        else {
            return false;
        };
        self.sim.flip_bit(&path, self.rng.below(len), self.rng.below(8) as u8).is_ok()
    }

    /// Damage in the middle of the log must make open fail, naming the segment.
    fn expect_refusal(
        &mut self,
        cfg: &Config,
        what: &str,
        report: &mut Report,
    ) -> Result<(), Violation> {
        match open(&self.fs, cfg) {
            Err(e) if e.to_string().contains(".seg") => {
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

/// A file system with a deliberate durability bug, for showing that the crash test catches
/// one: [`Breakage::SyncNoop`] turns file syncs into no-ops, [`Breakage::DirSyncNoop`]
/// directory syncs.
#[derive(Debug)]
struct BrokenFs {
    inner: SimFs,
    breakage: Breakage,
}

#[derive(Debug)]
struct BrokenFile {
    inner: Box<dyn ingestor_fs::FsFile>,
    breakage: Breakage,
}

impl ingestor_fs::FsFile for BrokenFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, len: u64) -> std::io::Result<()> {
        self.inner.allocate(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        if self.breakage == Breakage::SyncNoop { Ok(()) } else { self.inner.sync_data() }
    }
    fn sync_all(&self) -> std::io::Result<()> {
        if self.breakage == Breakage::SyncNoop { Ok(()) } else { self.inner.sync_all() }
    }
}

impl Fs for BrokenFs {
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn ingestor_fs::FsFile>> {
        Ok(Box::new(BrokenFile { inner: self.inner.create(path)?, breakage: self.breakage }))
    }
    fn open(
        &self,
        path: &Path,
        mode: ingestor_fs::OpenMode,
    ) -> std::io::Result<Box<dyn ingestor_fs::FsFile>> {
        Ok(Box::new(BrokenFile { inner: self.inner.open(path, mode)?, breakage: self.breakage }))
    }
    fn read_dir(&self, path: &Path) -> std::io::Result<Vec<ingestor_fs::DirEntry>> {
        self.inner.read_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        if self.breakage == Breakage::DirSyncNoop { Ok(()) } else { self.inner.sync_dir(path) }
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn lock_dir(&self, path: &Path) -> std::io::Result<Box<dyn ingestor_fs::FsLock>> {
        self.inner.lock_dir(path)
    }
    fn crash_point(&self, name: &'static str) -> std::io::Result<()> {
        self.inner.crash_point(name)
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

    /// Run by `a_record_replayed_twice_is_caught` in a child process with the bug switched on.
    #[test]
    #[ignore = "run as a child by a_record_replayed_twice_is_caught, with INGESTOR_DELIBERATE_BUG set"]
    fn replay_twice_child() {
        let f = failures(Breakage::ReplayTwice, 100);
        if !f.is_empty() {
            println!("CAUGHT: {}", f[0].violation.detail.lines().next().unwrap_or_default());
        }
    }
}
