//! Real process kill: a child process ingests on a real directory and reports each
//! acknowledgement on its stdout; it dies by a real `SIGKILL`, sent by the parent at a random
//! moment or raised by the child itself at a named crash point. The parent then reopens the
//! directory (twice) and judges the recovered state with the oracle.
//!
//! Runs of a few kills share one fresh temporary directory; within a run the batch index keeps
//! increasing from life to life (the next life continues after the recovered prefix).
//!
//! The child (`xtask crashtest-child`) speaks one line per event on stdout:
//! `ack <index> <lsn> <accepted|written|durable>`, `snap <lsn>`, `synced`, `settled <ms>`
//! (under `Buffered`, it stopped ingesting and saw its last batch written by the flusher
//! after that long) or `unsettled` (it did not within [`SETTLE_TIMEOUT`]), `point <name>`
//! (just before it kills itself at the named point), `idle` (waiting to be killed),
//! `flushed` (a `flush` returned), `closed` (a clean close between hold phases), `paused`
//! (under `Batch`, it stopped ingesting for [`PAUSE`]). A line is written whole and flushed
//! before the next batch is issued, so every `ack` the parent reads is a batch the engine
//! acknowledged. A child whose parent is gone (broken pipe) kills itself.
//!
//! What must survive a kill: every batch acknowledged `written` or `durable`, and every batch
//! before it; under `Buffered`, a batch acknowledged `accepted` only once a later line shows
//! it written: a `snap`, `synced`, `flushed`, `closed` or `settled` after it. An `unsettled`
//! is a violation: the flusher left an accepted batch unwritten for 250 deadlines.
//!
//! The child also keeps a journal of its writes and syncs (`powercut.rs`); after the kill,
//! the parent checks a copy of the directory with the log's unsynced writes zeroed (an
//! emulated power cut): every batch acknowledged `durable` must be there, everything before
//! a `synced`, `snap` or `closed`, and under `Batch` everything before a `paused`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ingestor::{AckLevel, Config, FinalSnapshot, Fs, Ingestor, SnapshotOptions, StdFs};
use ingestor_testkit::fs::{Hook, HookFs};

use super::oracle::{EngineModel, History, Invariant, Model, Violation};
use super::powercut::{Journal, Unsynced};
use super::workload::{self, Rng};
use super::{Failure, Options, Policy, Report};

/// Cases the proc mode's checks must each meet at least once in a run.
pub(crate) mod cases {
    /// The emulated power cut took acknowledged batches that the kill alone kept.
    pub(crate) const CUT_LOST: &str = "power cut: batches a kill kept, lost with unsynced bytes";
    /// A `Batch` pause held batches that no sync, snapshot or durable ack covered.
    pub(crate) const PAUSE_HELD: &str = "power cut: a Batch pause held batches to its bound";
}

/// Kills per data directory (one run).
const KILLS_PER_RUN: u64 = 5;
/// How long a child may take to reach its named crash point before the parent kills it.
const POINT_TIMEOUT: Duration = Duration::from_secs(3);
/// Log segment size: small, so that rotation and compaction happen often.
const SEGMENT_BYTES: u64 = 64 << 10;
/// A snapshot after every batch whose index is 16 modulo 17.
const SNAPSHOT_EVERY: u64 = 17;
/// A `sync()` after every batch whose index is 28 modulo 29.
const SYNC_EVERY: u64 = 29;
/// A `flush()` after every batch whose index is 10 modulo 11.
const FLUSH_EVERY: u64 = 11;
/// How long a child told to pause stops ingesting (lives of `Batch`): far longer than the
/// policy's bound of a window and two syncs, so that the batch before the pause must be
/// durable by the end of it.
const PAUSE: Duration = Duration::from_millis(200);
/// How long after its spawn a child told to pause may take to say `paused` (up to 59
/// batches, with their snapshots, syncs and flushes, and the pause): far more than it needs
/// on a busy machine; a child that waits for a sync that never comes takes forever.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(8);
/// The most batches one child life issues (then it waits to be killed).
const MAX_BATCHES: u64 = 1_000_000;
/// In hold mode, snapshots kept while compaction is held back.
const HOLD_KEEP: usize = 64;
/// In hold mode, batches issued with `HOLD_KEEP` before the reopen with the run's `keep`.
const HOLD_BATCHES: u64 = 1100;
/// In hold mode, batches issued with the run's `keep` before holding back again.
const RELEASE_BATCHES: u64 = 40;
/// The exit code of a child that failed on its own (never a crash).
const CHILD_FAILED: u8 = 3;
/// How long a child told to settle waits, without ingesting, for the flusher to write its
/// last batch: 250 deadlines of `Buffered` (20 ms). The bound is loose on purpose (a
/// starved thread on a busy machine must not fail the test); a flusher that never writes
/// fails it every time.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most deadlines the median settled pause may take.
const SETTLE_MEDIAN_MAX: u64 = 8;

/// Every named crash point the proc mode must reach: all of the log's and the snapshot
/// writer's. `wal.delete.between` and `snapshot.retention.between` need compaction of two
/// segments and retention of two snapshots in one step; lives aimed at them run in hold mode
/// (see [`child_main`]), which makes both happen.
fn named_points() -> Vec<&'static str> {
    let mut points: Vec<&'static str> = ingestor_wal::crash_points::ALL.to_vec();
    points.extend(ingestor_snapshot::crash_points::ALL);
    points
}

/// Points whose lives run in hold mode.
fn needs_hold(name: &str) -> bool {
    name == ingestor_wal::crash_points::DELETE_BETWEEN
        || name == ingestor_snapshot::crash_points::RETENTION_BETWEEN
}

/// The engine configuration of both the child and the parent's checks.
fn config(policy: Policy, keep: usize) -> Config {
    Config::default()
        .sync_policy(policy.sync_policy())
        // Under `Buffered`, a buffer that fills every few dozen batches, as well as the
        // deadline.
        .wal_buffer_bytes(16 << 10)
        .segment_bytes_max(SEGMENT_BYTES)
        .snapshot_interval(None)
        .snapshot_bytes(1 << 30)
        .final_snapshot(FinalSnapshot::Never)
        .snapshot(SnapshotOptions::default().keep(keep))
}

// ---------------------------------------------------------------------------------------
// The parent.

/// One child life: what the parent asked for.
#[derive(Debug, Clone)]
struct Life {
    policy: Policy,
    keep: usize,
    wseed: u64,
    start: u64,
    /// `Some((name, nth))`: the child kills itself at the nth announcement of `name`.
    kill_at: Option<(&'static str, u64)>,
    /// Parent kill after this many acks...
    target_acks: usize,
    /// `Some(n)`: after `n` batches the child waits for them to be written and says
    /// `settled`; the parent kills it after that line and two more acks (lives of
    /// `Buffered`).
    settle_after: Option<u64>,
    /// `Some(n)`: after `n` batches the child stops ingesting for [`PAUSE`] and says
    /// `paused`; the parent kills it after that line and two more acks (lives of `Batch`).
    pause_after: Option<u64>,
    /// `Some(n)`: after `n` batches the child flushes and says `flushed`, and the parent
    /// kills it as soon as it reads that (lives of `Buffered` that do not settle), before the
    /// deadline would have written the buffer anyway.
    flush_after: Option<u64>,
    /// ...or this long after the spawn, whichever first.
    delay: Duration,
    hold: bool,
}

impl Life {
    fn args(&self, dir: &Path) -> Vec<String> {
        let mut args = vec![
            "crashtest-child".to_string(),
            "--dir".into(),
            dir.display().to_string(),
            "--seed".into(),
            format!("{:#x}", self.wseed),
            "--policy".into(),
            self.policy.name().into(),
            "--start".into(),
            self.start.to_string(),
            "--keep".into(),
            self.keep.to_string(),
        ];
        if let Some((name, nth)) = self.kill_at {
            args.push("--kill-at".into());
            args.push(format!("{name}:{nth}"));
        }
        if self.hold {
            args.push("--hold".into());
        }
        if let Some(n) = self.settle_after {
            args.push("--settle-after".into());
            args.push(n.to_string());
        }
        if let Some(n) = self.pause_after {
            args.push("--pause-after".into());
            args.push(n.to_string());
        }
        if let Some(n) = self.flush_after {
            args.push("--flush-after".into());
            args.push(n.to_string());
        }
        args.push("--journal".into());
        args.push(journal_path(dir).display().to_string());
        args
    }
}

/// The child's journal of writes and syncs (see `powercut.rs`), beside the data directory.
fn journal_path(data: &Path) -> PathBuf {
    data.with_file_name("journal")
}

/// The copy of the data directory that the emulated power cut leaves.
fn image_path(data: &Path) -> PathBuf {
    data.with_file_name("power-cut")
}

/// What came back from one child life.
#[derive(Debug)]
struct Outcome {
    lines: Vec<String>,
    status: ExitStatus,
    /// The child announced `point <name>` for its named point.
    reached: bool,
}

fn violation(invariant: Invariant, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// Runs the process-kill mode: returns the report (cycles under key "proc", crash points
/// reached, violations via `report.fail`).
pub(crate) fn run(options: &Options) -> Report {
    let mut report = Report::default();
    report.required_points.extend(named_points().into_iter().map(String::from));
    if options.policy.is_none_or(|p| p != Policy::Always) {
        report.required_events.insert(cases::CUT_LOST);
    }
    if options.policy.is_none_or(|p| p == Policy::Batch) {
        report.required_events.insert(cases::PAUSE_HELD);
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            harness_failure(&mut report, options, 0, format!("cannot find the xtask binary: {e}"));
            return report;
        }
    };
    let points = named_points();
    let policies = [Policy::Always, Policy::Batch, Policy::Os, Policy::Buffered];
    let mut rng = Rng::new(options.seed ^ 0x7072_6f63_6b69_6c6c);
    let total = options.kill_count();
    let mut kills_done = 0u64;
    let mut next_point = 0usize;
    let mut run_no = 0usize;
    // How long each settled pause of a `Buffered` life took, in milliseconds.
    let mut settles: Vec<u64> = Vec::new();
    while kills_done < total {
        let policy = options.policy.unwrap_or(policies[run_no % policies.len()]);
        let keep = 1 + rng.below(3) as usize;
        let wseed = rng.next();
        run_no += 1;
        let root = match tempfile::Builder::new()
            .prefix("ingestor-crashtest-proc-")
            .tempdir_in(std::env::temp_dir())
        {
            Ok(d) => d,
            Err(e) => {
                harness_failure(&mut report, options, kills_done, format!("temp dir: {e}"));
                return report;
            }
        };
        let data = root.path().join("data");
        let mut history = History::default();
        let mut next_index = 0u64;
        for _ in 0..KILLS_PER_RUN.min(total - kills_done) {
            // Every choice is drawn up front, the same number each kill, so that the seed
            // alone fixes the sequence of lives.
            let self_kill = kills_done % 2 == 1;
            let target_acks = 1 + rng.below(59) as usize;
            let delay = Duration::from_millis(5 + rng.below(46));
            let nth = 1 + rng.below(3);
            let kill_at = self_kill.then(|| {
                let name = points[next_point % points.len()];
                next_point += 1;
                (name, nth)
            });
            let hold = kill_at.is_some_and(|(name, _)| needs_hold(name));
            // Half the parent's kills of a `Buffered` life (every other one, so that each run
            // of a `Buffered` directory has both) wait for a settled pause, the other half
            // come right after a flush. (The draw is kept, so that the other draws stay.)
            let _ = rng.chance(50);
            let settle = kills_done.is_multiple_of(4);
            let settle_after = (policy == Policy::Buffered && kill_at.is_none() && settle)
                .then_some(target_acks as u64);
            // Every parent's kill of a `Batch` life comes after a pause (the power cut's
            // check of the policy's time bound).
            let pause_after =
                (policy == Policy::Batch && kill_at.is_none()).then_some(target_acks as u64);
            let life = Life {
                policy,
                keep,
                wseed,
                start: next_index,
                kill_at,
                target_acks,
                settle_after,
                pause_after,
                flush_after: (policy == Policy::Buffered && kill_at.is_none() && !settle)
                    .then_some(target_acks as u64),
                delay,
                hold,
            };
            let stderr_path = root.path().join("child.stderr");
            let outcome = match live(&exe, &data, &stderr_path, &life) {
                Ok(o) => o,
                Err(e) => {
                    harness_failure(&mut report, options, kills_done, e);
                    return report;
                }
            };
            *report.cycles.entry("proc").or_default() += 1;
            let mut checked =
                check(&data, &stderr_path, &life, &outcome, &mut history, &mut report);
            if checked.is_ok() {
                settles.extend(outcome.lines.iter().filter_map(|l| {
                    l.strip_prefix("settled ").and_then(|ms| ms.parse::<u64>().ok())
                }));
                if let Err(v) = settle_median(&settles) {
                    checked = Err(v);
                }
            }
            match checked {
                Ok((k, updates)) => {
                    if let (Some((name, _)), true) = (life.kill_at, outcome.reached) {
                        *report.crash_points.entry(name.to_string()).or_default() += 1;
                    }
                    report.updates_checked += updates;
                    history.advance(k);
                    next_index = life.start + k as u64;
                }
                Err(violation) => {
                    let saved = save(options, kills_done, &data, &stderr_path, &life, &outcome);
                    report.fail(Failure { violation, repro: repro(options, kills_done), saved });
                    return report;
                }
            }
            kills_done += 1;
        }
    }
    report
}

/// The `Buffered` deadline, checked on the settled pauses of this invocation so far (from
/// the fifth on): each waits for at most one deadline plus the flusher's wake-up, so their
/// median may not pass [`SETTLE_MEDIAN_MAX`] deadlines (one pause can: a busy machine may
/// starve the flusher's thread for a while, which the 5 s bound of each pause allows).
fn settle_median(settles: &[u64]) -> Result<(), Violation> {
    if settles.len() < 5 {
        return Ok(());
    }
    let mut sorted = settles.to_vec();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let bound = super::BUFFERED_DEADLINE.as_millis() as u64 * SETTLE_MEDIAN_MAX;
    if median > bound {
        return Err(violation(
            Invariant::DurableSurvives,
            format!(
                "under Buffered ({} ms deadline), the median settled pause took {median} ms, \
                 more than {SETTLE_MEDIAN_MAX} deadlines (the pauses: {settles:?} ms)",
                super::BUFFERED_DEADLINE.as_millis()
            ),
        ));
    }
    Ok(())
}

fn repro(options: &Options, kills_done: u64) -> String {
    let policy = options.policy.map(|p| format!(" --policy {}", p.name())).unwrap_or_default();
    let bug = std::env::var("INGESTOR_DELIBERATE_BUG")
        .map(|b| format!("INGESTOR_DELIBERATE_BUG={b} "))
        .unwrap_or_default();
    format!(
        "{bug}cargo xtask crashtest --mode proc --seed {:#x} --kills {}{policy}",
        options.seed,
        kills_done + 1
    )
}

/// A failure of the harness itself (no child, no temporary directory): reported under the
/// invariant it kept from being checked.
fn harness_failure(report: &mut Report, options: &Options, kills_done: u64, detail: String) {
    report.fail(Failure {
        violation: Violation {
            invariant: Invariant::DurableSurvives,
            detail: format!("the proc harness could not run: {detail}"),
        },
        repro: repro(options, kills_done),
        saved: None,
    });
}

/// Spawns one child life and kills it (or lets it kill itself); returns what it said.
fn live(exe: &Path, data: &Path, stderr_path: &Path, life: &Life) -> Result<Outcome, String> {
    // The journal of the life before must not be read as this one's (a child killed before
    // it creates its journal leaves none).
    match std::fs::remove_file(journal_path(data)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("remove the old journal: {e}"));
        }
        _ => {}
    }
    let stderr =
        File::create(stderr_path).map_err(|e| format!("create {}: {e}", stderr_path.display()))?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(life.args(data))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", exe.display()))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("the child has no stdout".into());
    };
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                // A line cut by the kill has no newline: it was never said.
                Ok(_) if buf.last() == Some(&b'\n') => {
                    buf.pop();
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    let deadline = started
        + match (life.kill_at, life.settle_after, life.pause_after) {
            (Some(_), _, _) => POINT_TIMEOUT,
            (None, Some(_), _) => POINT_TIMEOUT + SETTLE_TIMEOUT + Duration::from_secs(1),
            (None, None, Some(_)) => PAUSE_TIMEOUT,
            (None, None, None) if life.flush_after.is_some() => POINT_TIMEOUT,
            (None, None, None) => life.delay,
        };
    let mut lines = Vec::new();
    let mut acks = 0usize;
    let mut acks_after_settled: Option<usize> = None;
    let kill = loop {
        let now = Instant::now();
        if now >= deadline {
            break true;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(line) => {
                let ack = line.starts_with("ack ");
                acks += usize::from(ack);
                if let Some(n) = acks_after_settled.as_mut() {
                    *n += usize::from(ack);
                }
                if line.starts_with("settled") || line == "unsettled" || line == "paused" {
                    acks_after_settled = Some(0);
                }
                lines.push(line);
                let done = match life.settle_after.or(life.pause_after) {
                    Some(_) => acks_after_settled.is_some_and(|n| n >= 2),
                    // After the flush at the target: the periodic flushes before it do not
                    // count (the parent kills on the flush it asked for).
                    None if life.flush_after.is_some() => {
                        acks >= life.target_acks && lines.last().is_some_and(|l| l == "flushed")
                    }
                    None => acks >= life.target_acks,
                };
                if life.kill_at.is_none() && done {
                    break true;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The child closed its stdout: it is dead (or dying).
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
        }
    };
    if kill {
        // SIGKILL on Unix; fails only if the child is already gone, which its status shows.
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| format!("wait for the child: {e}"))?;
    lines.extend(rx.iter());
    let _ = reader.join();
    let reached = life
        .kill_at
        .is_some_and(|(name, _)| lines.iter().any(|l| l.strip_prefix("point ") == Some(name)));
    Ok(Outcome { lines, status, reached })
}

/// Checks one recovery; returns the recovered prefix length and the updates it holds.
fn check(
    data: &Path,
    stderr_path: &Path,
    life: &Life,
    outcome: &Outcome,
    history: &mut History,
    report: &mut Report,
) -> Result<(usize, u64), Violation> {
    if outcome.status.signal() != Some(9) {
        let stderr = std::fs::read_to_string(stderr_path).unwrap_or_default();
        // A child that could not open the directory found it unrecoverable; one that failed
        // later left acknowledgements unchecked.
        let invariant = if stderr.contains("open failed") {
            Invariant::CorruptionReported
        } else {
            Invariant::DurableSurvives
        };
        return Err(violation(
            invariant,
            format!(
                "the child did not die by SIGKILL ({}); its stderr: {}",
                outcome.status,
                stderr.trim()
            ),
        ));
    }
    // The emulated power cut's image, taken before any open repairs the directory.
    let (unsynced, zeroed) = Unsynced::read(&journal_path(data))
        .and_then(|u| u.cut(data, &image_path(data)).map(|zeroed| (u, zeroed)))
        .map_err(|e| violation(Invariant::DurableSurvives, format!("harness: {e}")))?;
    let mut acked = Vec::new();
    // How many of the acknowledged batches must survive (all but an `accepted` suffix).
    let mut must_survive = 0usize;
    // How many must survive the emulated power cut: those acknowledged durable, and those
    // before a sync, snapshot or close that returned (and under `Batch`, before a pause).
    let mut must_survive_cut = 0usize;
    // Whether a pause held batches to `Batch`'s bound that nothing else made durable.
    let mut pause_held = false;
    for line in &outcome.lines {
        if let Some(rest) = line.strip_prefix("ack ") {
            let mut fields = rest.split(' ');
            let index = fields.next().and_then(|s| s.parse::<u64>().ok());
            let level = fields.nth(1);
            match (index, level) {
                (Some(i), Some(level @ ("accepted" | "written" | "durable"))) => {
                    acked.push(i);
                    let ack_level = match level {
                        "accepted" => AckLevel::Accepted,
                        "written" => AckLevel::Written,
                        _ => AckLevel::Durable,
                    };
                    life.policy.check_level(i, ack_level)?;
                    if level != "accepted" {
                        must_survive = acked.len();
                    }
                    if level == "durable" {
                        must_survive_cut = acked.len();
                    }
                }
                _ => {
                    return Err(violation(
                        Invariant::DurableSurvives,
                        format!("harness: unreadable acknowledgement {line:?}"),
                    ));
                }
            }
        } else if line.starts_with("settled ") || line == "flushed" {
            must_survive = acked.len();
        } else if line == "synced" || line.starts_with("snap ") || line == "closed" {
            must_survive = acked.len();
            must_survive_cut = acked.len();
        } else if line == "paused" {
            // `Batch` promises what was acknowledged more than a window and two syncs before a
            // power cut. The pause is far longer; should this life's longest sync make the
            // bound come near it, or a sync still run when the child died (its length
            // unknown), the batch is not held to it.
            let window = match life.policy.sync_policy() {
                ingestor::SyncPolicy::Batch(window) => window,
                _ => Duration::MAX / 4,
            };
            if window + 2 * unsynced.longest_sync <= PAUSE / 2 && unsynced.unfinished_syncs == 0 {
                pause_held |= must_survive_cut < acked.len() && zeroed > 0;
                must_survive_cut = acked.len();
            }
        } else if line == "unsettled" {
            return Err(violation(
                Invariant::DurableSurvives,
                format!(
                    "batch {} was accepted under Buffered ({} ms deadline) and still not \
                     written {} ms later",
                    life.start + acked.len() as u64 - 1,
                    super::BUFFERED_DEADLINE.as_millis(),
                    SETTLE_TIMEOUT.as_millis()
                ),
            ));
        }
    }
    if life.pause_after.is_some() && !outcome.lines.iter().any(|l| l == "paused") {
        return Err(violation(
            Invariant::DurableSurvives,
            format!(
                "under Batch, the child stopped after {} of the {} batches before its pause and \
                 was killed {} s after it started: a sync or a snapshot never returned",
                acked.len(),
                life.target_acks,
                PAUSE_TIMEOUT.as_secs_f64()
            ),
        ));
    }
    let expected: Vec<u64> = (life.start..life.start + acked.len() as u64).collect();
    if acked != expected {
        return Err(violation(
            Invariant::DurableSurvives,
            format!("harness: acknowledgements out of order: {acked:?}"),
        ));
    }
    // Every batch acknowledged written must survive a process kill, and every accepted one
    // shown written since; the one after the last acknowledged may have been in flight.
    let last = life.start + acked.len() as u64; // inclusive: the batch possibly in flight
    history.batches = (life.start..=last).map(|i| workload::batch(life.wseed, i)).collect();
    history.must_survive = must_survive;

    // The emulated power cut first (its image was copied before any open).
    let mut cut = history.clone();
    cut.must_survive = must_survive_cut;
    let image = image_path(data);
    let after_cut = open_and_observe(&image, life).map_err(|mut v| {
        v.detail = format!("after an emulated power cut: {}", v.detail);
        v
    })?;
    let k_cut = cut.judge(&after_cut).map_err(|mut v| {
        v.detail = format!(
            "after an emulated power cut (the log's writes no completed sync covered zeroed; \
             {} syncs, the longest {} us): {}",
            unsynced.syncs,
            unsynced.longest_sync.as_micros(),
            v.detail
        );
        v
    })?;
    let _ = std::fs::remove_dir_all(&image);
    if pause_held {
        report.event(cases::PAUSE_HELD);
    }

    let first = open_and_observe(data, life)?;
    let k = history.judge(&first)?;
    let second = open_and_observe(data, life)?;
    if second != first {
        return Err(violation(
            Invariant::RecoveryIdempotent,
            format!(
                "the second recovery differs from the first ({} series, then {})",
                first.len(),
                second.len()
            ),
        ));
    }
    if k_cut < k {
        report.event(cases::CUT_LOST);
    }
    let updates = history.batches[..k].iter().map(|b| b.len() as u64).sum();
    Ok((k, updates))
}

/// Opens the directory on the real file system, checks for litter, observes, closes.
fn open_and_observe(data: &Path, life: &Life) -> Result<Model, Violation> {
    let fs: Arc<dyn Fs> = Arc::new(StdFs::new());
    let (db, _report) = Ingestor::open_with(fs, data, config(life.policy, life.keep), &mut |_| {})
        .map_err(|e| {
            violation(
                Invariant::CorruptionReported,
                format!("reopening after a SIGKILL failed: {e}"),
            )
        })?;
    let snapshots = data.join(ingestor::SNAPSHOT_DIR);
    let litter: Vec<String> = std::fs::read_dir(&snapshots)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default();
    if !litter.is_empty() {
        return Err(violation(
            Invariant::NoLitter,
            format!("temporary files left in {} after open: {litter:?}", snapshots.display()),
        ));
    }
    let model = Model::observe(&db);
    db.close().map_err(|e| {
        violation(Invariant::FsyncFailureTerminal, format!("closing after recovery failed: {e}"))
    })?;
    Ok(model)
}

/// Saves the data directory, the acknowledgement log and the child's stderr under
/// `options.out_dir/proc-<seed>-<kill>/`.
fn save(
    options: &Options,
    kills_done: u64,
    data: &Path,
    stderr_path: &Path,
    life: &Life,
    outcome: &Outcome,
) -> Option<PathBuf> {
    let dest = options.out_dir.join(format!("proc-{:#x}-{}", options.seed, kills_done + 1));
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).ok()?;
    let _ = copy_dir(data, &dest.join("data"));
    let mut log = outcome.lines.join("\n");
    log.push('\n');
    let _ = std::fs::write(dest.join("acks.log"), log);
    let _ = std::fs::copy(stderr_path, dest.join("child.stderr"));
    let _ = std::fs::copy(journal_path(data), dest.join("journal"));
    let _ = copy_dir(&image_path(data), &dest.join("power-cut"));
    let _ = std::fs::write(
        dest.join("life.txt"),
        format!("{life:?}\nexit status: {}\nchild args: {:?}\n", outcome.status, life.args(data)),
    );
    Some(dest)
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The child.

/// Raises `SIGKILL` on this process at the nth announcement of one named crash point (the
/// hook of a [`HookFs`] over the real file system).
#[derive(Debug)]
struct KillHook {
    target: Option<(String, u64)>,
    seen: AtomicU64,
    /// The journal of writes and syncs the parent's emulated power cut reads.
    journal: Option<Journal>,
}

/// Writes one whole line to stdout and flushes it. If the parent is gone (the pipe is
/// broken), nobody will ever kill this child: it kills itself.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if out.write_all(format!("{line}\n").as_bytes()).and_then(|()| out.flush()).is_err() {
        drop(out);
        die();
    }
}

/// Never returns: the process is killed, or waits to be.
fn die() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

impl Hook for KillHook {
    fn crash_point(&self, name: &'static str) -> std::io::Result<()> {
        if let Some((target, nth)) = &self.target
            && name == target
            && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == *nth
        {
            say(&format!("point {name}"));
            die();
        }
        Ok(())
    }

    fn opened(&self, path: &Path, handle: u64, created: bool) {
        if let Some(j) = &self.journal {
            j.opened(path, handle, created);
        }
    }

    fn sync_starts(&self, handle: u64) {
        if let Some(j) = &self.journal {
            j.sync_starts(handle);
        }
    }

    fn file_synced(&self, handle: u64, took: Duration) {
        if let Some(j) = &self.journal {
            j.synced(handle, took);
        }
    }

    fn wrote(&self, handle: u64, offset: u64, len: u64) {
        if let Some(j) = &self.journal {
            j.wrote(handle, offset, len);
        }
    }

    fn renamed(&self, from: &Path, to: &Path) {
        if let Some(j) = &self.journal {
            j.renamed(from, to);
        }
    }

    fn removed(&self, path: &Path) {
        if let Some(j) = &self.journal {
            j.removed(path);
        }
    }
}

struct ChildArgs {
    dir: PathBuf,
    seed: u64,
    policy: Policy,
    start: u64,
    keep: usize,
    kill_at: Option<(String, u64)>,
    hold: bool,
    settle_after: Option<u64>,
    pause_after: Option<u64>,
    flush_after: Option<u64>,
    journal: Option<PathBuf>,
}

fn parse_child(args: &[String]) -> Result<ChildArgs, String> {
    let mut dir = None;
    let mut seed = None;
    let mut policy = None;
    let mut start = None;
    let mut keep = 2;
    let mut kill_at = None;
    let mut hold = false;
    let mut settle_after = None;
    let mut pause_after = None;
    let mut flush_after = None;
    let mut journal = None;
    let num = |s: &str| match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--hold" {
            hold = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value)),
            "--seed" => seed = Some(num(value).ok_or("--seed: not a number")?),
            "--start" => start = Some(num(value).ok_or("--start: not a number")?),
            "--keep" => keep = num(value).ok_or("--keep: not a number")? as usize,
            "--settle-after" => {
                settle_after = Some(num(value).ok_or("--settle-after: not a number")?);
            }
            "--pause-after" => {
                pause_after = Some(num(value).ok_or("--pause-after: not a number")?);
            }
            "--flush-after" => {
                flush_after = Some(num(value).ok_or("--flush-after: not a number")?);
            }
            "--journal" => journal = Some(PathBuf::from(value)),
            "--policy" => policy = Some(Policy::parse(value).ok_or("--policy: unknown")?),
            "--kill-at" => {
                let (name, nth) = value.rsplit_once(':').ok_or("--kill-at NAME:NTH")?;
                kill_at = Some((name.to_string(), num(nth).ok_or("--kill-at: NTH not a number")?));
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(ChildArgs {
        dir: dir.ok_or("--dir is required")?,
        seed: seed.ok_or("--seed is required")?,
        policy: policy.ok_or("--policy is required")?,
        start: start.ok_or("--start is required")?,
        keep,
        kill_at,
        hold,
        settle_after,
        pause_after,
        flush_after,
        journal,
    })
}

/// The hidden child: `xtask crashtest-child --dir D --seed S --policy P --start N
/// [--keep K] [--kill-at NAME:NTH] [--hold] [--settle-after M]`.
///
/// Ingests `workload::batch(S, i)` for i = N, N+1, ... and reports each acknowledgement; a
/// snapshot after every 17th batch, a sync after every 29th. It never exits on its own: it
/// is killed (or kills itself at the named point); after `MAX_BATCHES` it waits.
///
/// With `--hold` it alternates two phases, closing and reopening the ingestor between them:
/// `HOLD_BATCHES` batches keeping `HOLD_KEEP` snapshots (compaction held back, several log
/// segments pile up), then `RELEASE_BATCHES` keeping `K`: the first snapshot of that phase
/// removes many snapshots at once and compacts several segments at once.
///
/// With `--settle-after M`, after its Mth batch it stops ingesting until the log has
/// written that batch (`settled <ms>`) or [`SETTLE_TIMEOUT`] passed (`unsettled`).
pub(crate) fn child_main(args: &[String]) -> ExitCode {
    let a = match parse_child(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("crashtest-child: {e}");
            return ExitCode::from(2);
        }
    };
    let journal = match a.journal.as_deref().map(Journal::create).transpose() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("crashtest-child: cannot create the journal: {e}");
            return ExitCode::from(2);
        }
    };
    let fs = Arc::new(HookFs::new(
        Arc::new(StdFs::new()),
        KillHook { target: a.kill_at.clone(), seen: AtomicU64::new(0), journal },
    ));
    let mut i = a.start;
    let mut holding = a.hold;
    loop {
        let (keep, phase) = match (a.hold, holding) {
            (false, _) => (a.keep, u64::MAX),
            (true, true) => (HOLD_KEEP, HOLD_BATCHES),
            (true, false) => (a.keep, RELEASE_BATCHES),
        };
        let dyn_fs: Arc<dyn Fs> = Arc::clone(&fs) as Arc<dyn Fs>;
        let db = match Ingestor::open_with(dyn_fs, &a.dir, config(a.policy, keep), &mut |_| {}) {
            Ok((db, _)) => db,
            Err(e) => {
                eprintln!("crashtest-child: open failed: {e}");
                return ExitCode::from(CHILD_FAILED);
            }
        };
        for _ in 0..phase {
            if i - a.start >= MAX_BATCHES {
                // Wait to be killed; the parent ignores `idle` lines, and a broken pipe (the
                // parent is gone) ends the child.
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    say("idle");
                }
            }
            let ack = match db.ingest(&workload::batch(a.seed, i)) {
                Ok(ack) => ack,
                Err(e) => {
                    eprintln!("crashtest-child: ingest of batch {i} failed: {e}");
                    return ExitCode::from(CHILD_FAILED);
                }
            };
            let level = match ack.level {
                AckLevel::Durable => "durable",
                AckLevel::Accepted => "accepted",
                _ => "written",
            };
            say(&format!("ack {i} {} {level}", ack.lsn.0));
            if a.settle_after == Some(i + 1 - a.start) {
                let waited = Instant::now();
                while db.stats().wal.written_lsn < ack.lsn && waited.elapsed() < SETTLE_TIMEOUT {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if db.stats().wal.written_lsn >= ack.lsn {
                    say(&format!("settled {}", waited.elapsed().as_millis()));
                } else {
                    say("unsettled");
                }
            }
            if a.pause_after == Some(i + 1 - a.start) {
                std::thread::sleep(PAUSE);
                say("paused");
            }
            if i % SNAPSHOT_EVERY == SNAPSHOT_EVERY - 1 {
                match db.snapshot() {
                    Ok(Some(info)) => say(&format!("snap {}", info.lsn.0)),
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("crashtest-child: snapshot after batch {i} failed: {e}");
                        return ExitCode::from(CHILD_FAILED);
                    }
                }
            }
            if i % SYNC_EVERY == SYNC_EVERY - 1 {
                if let Err(e) = db.sync() {
                    eprintln!("crashtest-child: sync after batch {i} failed: {e}");
                    return ExitCode::from(CHILD_FAILED);
                }
                say("synced");
            }
            if i % FLUSH_EVERY == FLUSH_EVERY - 1 || a.flush_after == Some(i + 1 - a.start) {
                if let Err(e) = db.flush() {
                    eprintln!("crashtest-child: flush after batch {i} failed: {e}");
                    return ExitCode::from(CHILD_FAILED);
                }
                say("flushed");
            }
            i += 1;
        }
        // A clean close between the hold phases (no final snapshot): nothing acknowledged is
        // lost, and the reopen replays the log.
        if let Err(e) = db.close() {
            eprintln!("crashtest-child: close failed: {e}");
            return ExitCode::from(CHILD_FAILED);
        }
        say("closed");
        holding = !holding;
    }
}
