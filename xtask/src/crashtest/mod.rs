//! `cargo xtask crashtest`: proves that acknowledged updates survive crashes. See
//! `docs/crashtest.md`.
//!
//! Two ways to crash: simulated power cuts on `SimFs` (`--mode sim`, deterministic for a
//! seed) and real `SIGKILL` of a child process on the real file system (`--mode proc`). An
//! oracle outside the faulty disk (`oracle.rs`) judges every recovery.

pub(crate) mod forward;
pub(crate) mod forward_proc;
pub(crate) mod mutants;
pub(crate) mod oracle;
pub(crate) mod powercut;
pub(crate) mod proc;
pub(crate) mod sched;
pub(crate) mod sim;
pub(crate) mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use oracle::{Invariant, Violation};

/// Which crash mode(s) to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Sim,
    Proc,
    /// Forwarding (outbox, cursors, senders) under simulated power cuts and real kills.
    Forward,
    All,
}

/// A sync policy to test, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    Always,
    Batch,
    Os,
    /// `Buffered` with [`BUFFERED_DEADLINE`] (the proc mode; the sim mode runs it with a
    /// deadline no life reaches, so that only a full buffer, a sync or a snapshot writes).
    Buffered,
}

/// The deadline of `Buffered` in the proc mode.
pub(crate) const BUFFERED_DEADLINE: Duration = Duration::from_millis(20);

impl Policy {
    pub(crate) fn sync_policy(self) -> ingestor::SyncPolicy {
        match self {
            Policy::Always => ingestor::SyncPolicy::Always,
            Policy::Batch => ingestor::SyncPolicy::Batch(Duration::from_millis(2)),
            Policy::Os => ingestor::SyncPolicy::Os,
            Policy::Buffered => ingestor::SyncPolicy::Buffered(BUFFERED_DEADLINE),
        }
    }

    /// Whether an acknowledgement at `level` is one the policy gives (`docs/durability.md`):
    /// `Durable` under `Always`, anything but `Accepted` under `Batch` and `Os`. For batches
    /// with points: an empty batch logs nothing, and `Always` has nothing to wait for (the
    /// crash test's workloads never send one).
    pub(crate) fn gives(self, level: ingestor::AckLevel) -> bool {
        match self {
            Policy::Always => level == ingestor::AckLevel::Durable,
            Policy::Batch | Policy::Os => level != ingestor::AckLevel::Accepted,
            Policy::Buffered => true,
        }
    }

    /// The violation of an acknowledgement the policy does not give (see [`Policy::gives`]).
    pub(crate) fn check_level(
        self,
        batch: u64,
        level: ingestor::AckLevel,
    ) -> Result<(), Violation> {
        if self.gives(level) {
            return Ok(());
        }
        Err(Violation {
            invariant: Invariant::DurableSurvives,
            detail: format!("batch {batch} was acknowledged {level:?} under {}", self.name()),
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::Batch => "batch",
            Policy::Os => "os",
            Policy::Buffered => "buffered",
        }
    }

    fn parse(s: &str) -> Option<Policy> {
        match s {
            "always" => Some(Policy::Always),
            "batch" => Some(Policy::Batch),
            "os" => Some(Policy::Os),
            "buffered" => Some(Policy::Buffered),
            _ => None,
        }
    }
}

/// Classes of injected faults besides crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum FaultClass {
    /// An fsync fails with EIO and drops its pending writes.
    FsyncEio,
    /// A log or snapshot write fails with ENOSPC, or writes part of its bytes.
    Enospc,
    /// Creating a file (a segment, a snapshot) or renaming fails.
    CreateRename,
    /// A read fails with EIO during recovery.
    ReadEio,
    /// A bit flips in synced bytes at the log's tail.
    FlipTail,
    /// A bit flips in synced bytes in the middle of the log.
    FlipMiddle,
    /// A bit flips in a snapshot.
    FlipSnapshot,
    /// A bit flips in a synced frame in the middle of the last segment, with frames after it
    /// that prove it was synced.
    FlipSynced,
    /// Several writers ingest and sync at once (deterministically scheduled).
    Concurrent,
}

impl FaultClass {
    pub(crate) const ALL: [FaultClass; 9] = [
        FaultClass::FsyncEio,
        FaultClass::Enospc,
        FaultClass::CreateRename,
        FaultClass::ReadEio,
        FaultClass::FlipTail,
        FaultClass::FlipMiddle,
        FaultClass::FlipSnapshot,
        FaultClass::FlipSynced,
        FaultClass::Concurrent,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultClass::FsyncEio => "fsync-eio",
            FaultClass::Enospc => "enospc",
            FaultClass::CreateRename => "create-rename",
            FaultClass::ReadEio => "read-eio",
            FaultClass::FlipTail => "flip-tail",
            FaultClass::FlipMiddle => "flip-middle",
            FaultClass::FlipSnapshot => "flip-snapshot",
            FaultClass::FlipSynced => "flip-synced",
            FaultClass::Concurrent => "concurrent",
        }
    }
}

/// A deliberate bug in the file system under the engine, to show the crash test catches it
/// (`--break`, used by `--mutants` and the harness's own tests). Defects inside the engine are
/// switched on by `INGESTOR_DELIBERATE_BUG` instead (see `mutants.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breakage {
    /// The engine as shipped.
    None,
    /// File syncs return success without syncing.
    SyncNoop,
    /// Directory syncs return success without syncing.
    DirSyncNoop,
    /// Replay applies every batch twice (needs INGESTOR_DELIBERATE_BUG=replay-twice).
    #[cfg_attr(
        not(all(test, ingestor_deliberate_bugs)),
        allow(dead_code, reason = "only the harness's own tests break the engine")
    )]
    ReplayTwice,
}

impl Breakage {
    fn parse(s: &str) -> Option<Breakage> {
        match s {
            "none" => Some(Breakage::None),
            "sync-noop" => Some(Breakage::SyncNoop),
            "dir-sync-noop" => Some(Breakage::DirSyncNoop),
            _ => None,
        }
    }
}

/// How long a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// About two minutes: what CI runs.
    Smoke,
    /// About ten minutes.
    Ci,
    /// About an hour.
    Long,
}

/// The options of a run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) mode: Mode,
    pub(crate) seed: u64,
    pub(crate) policy: Option<Policy>,
    pub(crate) faults: BTreeSet<FaultClass>,
    pub(crate) profile: Profile,
    /// Simulated iterations (each several crash cycles on one disk).
    pub(crate) iterations: Option<u64>,
    /// Wall-clock budget per mode.
    pub(crate) duration: Option<Duration>,
    /// Run only this iteration (reproduction).
    pub(crate) iteration: Option<u64>,
    /// Process kills to run.
    pub(crate) kills: Option<u64>,
    /// Where failing images and acknowledgement logs are saved.
    pub(crate) out_dir: PathBuf,
    /// A deliberate bug in the file system (`--break`).
    pub(crate) breakage: Breakage,
    /// Run the mutation suite instead (`--mutants`).
    pub(crate) mutants: bool,
    /// Only these mutants (`--mutant NAME`, repeatable).
    pub(crate) only_mutants: Vec<String>,
}

impl Options {
    /// The wall-clock budget of simulated mode.
    pub(crate) fn sim_budget(&self) -> Duration {
        self.duration.unwrap_or(match self.profile {
            Profile::Smoke => Duration::from_secs(75),
            Profile::Ci => Duration::from_secs(420),
            Profile::Long => Duration::from_secs(2700),
        })
    }

    /// How many process kills.
    pub(crate) fn kill_count(&self) -> u64 {
        self.kills.unwrap_or(match self.profile {
            Profile::Smoke => 200,
            Profile::Ci => 2_000,
            Profile::Long => 12_000,
        })
    }

    /// The command line that reproduces one simulated iteration.
    pub(crate) fn repro_sim(&self, iteration: u64, policy: Policy) -> String {
        let broken = match self.breakage {
            Breakage::SyncNoop => " --break sync-noop",
            Breakage::DirSyncNoop => " --break dir-sync-noop",
            Breakage::None | Breakage::ReplayTwice => "",
        };
        let bug = std::env::var("INGESTOR_DELIBERATE_BUG")
            .map(|b| format!("INGESTOR_DELIBERATE_BUG={b} "))
            .unwrap_or_default();
        format!(
            "{bug}cargo xtask crashtest --mode sim --seed {:#x} --iteration {iteration} --policy {} --faults {}{broken}",
            self.seed,
            policy.name(),
            self.faults_arg()
        )
    }

    pub(crate) fn faults_arg(&self) -> String {
        if self.faults.is_empty() {
            return "none".into();
        }
        self.faults.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
    }
}

/// One failure: what broke, and how to reproduce it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) violation: Violation,
    pub(crate) repro: String,
    pub(crate) saved: Option<PathBuf>,
}

/// What a run did and found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) cycles: BTreeMap<&'static str, u64>,
    pub(crate) faults: BTreeMap<&'static str, u64>,
    pub(crate) crash_points: BTreeMap<String, u64>,
    /// Acknowledged updates whose survival the sim and proc modes checked.
    pub(crate) updates_checked: u64,
    /// Acknowledged series whose arrival at the destination the forward mode checked.
    pub(crate) series_forwarded_checked: u64,
    pub(crate) violations: BTreeMap<Invariant, u64>,
    pub(crate) failures: Vec<Failure>,
    /// Named points this run must reach, by mode.
    pub(crate) required_points: BTreeSet<String>,
    /// Situations the new checks need (a case of a fault, an interleaving), how often each
    /// happened.
    pub(crate) events: BTreeMap<&'static str, u64>,
    /// Events this run must see at least once.
    pub(crate) required_events: BTreeSet<&'static str>,
    /// Fault classes this run must inject at least once.
    pub(crate) required_faults: BTreeSet<&'static str>,
}

impl Report {
    pub(crate) fn merge(&mut self, other: Report) {
        for (k, v) in other.cycles {
            *self.cycles.entry(k).or_default() += v;
        }
        for (k, v) in other.faults {
            *self.faults.entry(k).or_default() += v;
        }
        for (k, v) in other.crash_points {
            *self.crash_points.entry(k).or_default() += v;
        }
        self.updates_checked += other.updates_checked;
        self.series_forwarded_checked += other.series_forwarded_checked;
        for (k, v) in other.violations {
            *self.violations.entry(k).or_default() += v;
        }
        self.failures.extend(other.failures);
        self.required_points.extend(other.required_points);
        for (k, v) in other.events {
            *self.events.entry(k).or_default() += v;
        }
        self.required_events.extend(other.required_events);
        self.required_faults.extend(other.required_faults);
    }

    pub(crate) fn event(&mut self, name: &'static str) {
        *self.events.entry(name).or_default() += 1;
    }

    pub(crate) fn fail(&mut self, failure: Failure) {
        *self.violations.entry(failure.violation.invariant).or_default() += 1;
        self.failures.push(failure);
    }

    fn print(&self, started: Instant) {
        println!("crashtest finished in {:.1?}", started.elapsed());
        for (mode, n) in &self.cycles {
            println!("  {mode:<6} crash cycles: {n}");
        }
        if self.updates_checked > 0 || self.series_forwarded_checked == 0 {
            println!("  updates checked: {}", self.updates_checked);
        }
        if self.series_forwarded_checked > 0 {
            println!("  forwarded series checked: {}", self.series_forwarded_checked);
        }
        println!("  faults injected:");
        for f in FaultClass::ALL {
            let n = self.faults.get(f.name()).copied().unwrap_or(0);
            let never = if n == 0 && self.required_faults.contains(f.name()) {
                "  NEVER INJECTED"
            } else {
                ""
            };
            println!("    {:<14} {n}{never}", f.name());
        }
        println!("  cases of the checks:");
        for name in &self.required_events {
            let n = self.events.get(name).copied().unwrap_or(0);
            println!("    {name:<60} {n}{}", if n == 0 { "  NEVER SEEN" } else { "" });
        }
        println!("  crash points reached:");
        for (name, n) in &self.crash_points {
            println!("    {name:<34} {n}");
        }
        for name in self.unreached() {
            println!("    {name:<34} NEVER REACHED");
        }
        println!("  violations per invariant:");
        for inv in Invariant::ALL {
            println!("    {:<52} {}", inv.name(), self.violations.get(&inv).copied().unwrap_or(0));
        }
        for f in self.failures.iter().take(10) {
            println!("FAILED {}: {}", f.violation.invariant.name(), f.violation.detail);
            println!("  reproduce: {}", f.repro);
            if let Some(p) = &f.saved {
                println!("  disk image and acknowledgement log saved in {}", p.display());
            }
        }
    }

    fn unreached(&self) -> Vec<String> {
        let points = self.required_points.iter().filter(|p| !self.crash_points.contains_key(*p));
        let faults = self
            .required_faults
            .iter()
            .filter(|f| self.faults.get(*f).copied().unwrap_or(0) == 0)
            .map(|f| format!("fault {f}"));
        let events = self
            .required_events
            .iter()
            .filter(|e| self.events.get(*e).copied().unwrap_or(0) == 0)
            .map(|e| format!("case {e}"));
        points.cloned().chain(faults).chain(events).collect()
    }
}

const USAGE: &str = "usage: cargo xtask crashtest [options]

  --mode sim|proc|forward|all  simulated power cuts, real SIGKILL, forwarding under power
                             cuts and SIGKILL, or all three (default all)
  --profile smoke|ci|long    about 2 min, 10 min, 60 min (default smoke)
  --seed N                   master seed, decimal or 0x hex (default: from the clock)
  --iterations N             simulated iterations (each several crash cycles)
  --duration SECS            wall-clock budget per mode
  --iteration N              run only this simulated iteration (reproduction)
  --kills N                  process kills (proc mode)
  --policy always|batch|os|buffered
                             one sync policy (default: all; sim mode runs always, os and
                             buffered, and with batch runs all three as by default: batch is
                             proc mode's, under kills and emulated power cuts)
  --faults LIST|all|none     fault classes: fsync-eio,enospc,create-rename,read-eio,
                             flip-tail,flip-middle,flip-snapshot,flip-synced,concurrent
                             (default all)
  --break sync-noop|dir-sync-noop
                             run on a file system with a deliberate bug (to see it caught)
  --mutants                  the mutation suite: the smoke profile's checks against each
                             deliberate defect, each of which must be caught (prints the
                             invariant that caught it and how long it took)
  --mutant NAME              with --mutants: only this defect (repeatable)";

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

pub(crate) fn parse(args: &[String]) -> Result<Options, String> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x5eed, |d| d.as_nanos() as u64 & 0xffff_ffff);
    let mut o = Options {
        mode: Mode::All,
        seed,
        policy: None,
        faults: FaultClass::ALL.into_iter().collect(),
        profile: Profile::Smoke,
        iterations: None,
        duration: None,
        iteration: None,
        kills: None,
        out_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/crashtest"),
        breakage: Breakage::None,
        mutants: false,
        only_mutants: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => {
                o.mode = match value()?.as_str() {
                    "sim" => Mode::Sim,
                    "proc" => Mode::Proc,
                    "forward" => Mode::Forward,
                    "all" => Mode::All,
                    other => return Err(format!("--mode {other}: expected sim, proc or all")),
                }
            }
            "--profile" => {
                o.profile = match value()?.as_str() {
                    "smoke" => Profile::Smoke,
                    "ci" => Profile::Ci,
                    "long" => Profile::Long,
                    other => return Err(format!("--profile {other}: expected smoke, ci or long")),
                }
            }
            "--seed" => {
                let v = value()?;
                o.seed = parse_u64(&v).ok_or(format!("--seed {v}: not a number"))?;
            }
            "--iterations" => {
                o.iterations = Some(parse_u64(&value()?).ok_or("--iterations: not a number")?)
            }
            "--iteration" => {
                o.iteration = Some(parse_u64(&value()?).ok_or("--iteration: not a number")?)
            }
            "--kills" => o.kills = Some(parse_u64(&value()?).ok_or("--kills: not a number")?),
            "--duration" => {
                o.duration = Some(Duration::from_secs(
                    parse_u64(&value()?).ok_or("--duration: not a number")?,
                ));
            }
            "--policy" => {
                let v = value()?;
                o.policy = Some(
                    Policy::parse(&v)
                        .ok_or(format!("--policy {v}: expected always, batch, os or buffered"))?,
                );
            }
            "--faults" => {
                let v = value()?;
                o.faults = match v.as_str() {
                    "all" => FaultClass::ALL.into_iter().collect(),
                    "none" => BTreeSet::new(),
                    list => list
                        .split(',')
                        .map(|name| {
                            FaultClass::ALL
                                .into_iter()
                                .find(|f| f.name() == name)
                                .ok_or(format!("--faults: unknown class {name:?}"))
                        })
                        .collect::<Result<_, _>>()?,
                };
            }
            "--break" => {
                let v = value()?;
                o.breakage = Breakage::parse(&v)
                    .ok_or(format!("--break {v}: expected sync-noop or dir-sync-noop"))?;
            }
            "--mutants" => o.mutants = true,
            "--mutant" => o.only_mutants.push(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

/// `cargo xtask crashtest ...`
pub(crate) fn main(args: &[String]) -> ExitCode {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("crashtest: {e}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.mutants {
        return mutants::run(&options);
    }
    let started = Instant::now();
    println!(
        "crashtest: seed {:#x}, profile {:?}, mode {:?}, faults {}",
        options.seed,
        options.profile,
        options.mode,
        options.faults_arg()
    );
    let mut report = Report::default();
    if matches!(options.mode, Mode::Sim | Mode::All) {
        report.merge(sim::run(&options));
    }
    if matches!(options.mode, Mode::Proc | Mode::All) && options.iteration.is_none() {
        report.merge(proc::run(&options));
    }
    if matches!(options.mode, Mode::Forward | Mode::All) {
        report.merge(forward::run(&options));
    }
    report.print(started);
    let unreached = report.unreached();
    if !report.failures.is_empty() || (!unreached.is_empty() && options.iteration.is_none()) {
        if !unreached.is_empty() {
            println!("FAILED: crash points, fault classes or cases never reached: {unreached:?}");
        }
        return ExitCode::FAILURE;
    }
    println!("crashtest: ok, zero violations");
    ExitCode::SUCCESS
}
