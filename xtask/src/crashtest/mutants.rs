//! `cargo xtask crashtest --mutants`: the mutation suite. A crash test earns trust only if it
//! fails when a promise is broken, so each deliberate defect below breaks one promise of
//! `docs/durability.md` or `docs/crashtest.md`, and the suite requires the smoke profile's
//! simulated checks to catch every one of them.
//!
//! Each defect runs in a child process (`xtask crashtest --mode sim`, or `--mode proc` for
//! what a process kill must keep, with the smoke profile and a fixed seed) that stops at its
//! first violation. Defects inside the engine are
//! compiled in only under `--cfg ingestor_deliberate_bugs`, which only the `cargo xtask`
//! alias sets (for its own build, in `target/xtask`; no other build and no published crate
//! carries them), and switched on by `INGESTOR_DELIBERATE_BUG`; defects of the disk under the engine are a file-system wrapper
//! (`--break`).

use std::io::Read;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use super::Options;

/// How a defect is switched on.
#[derive(Debug, Clone, Copy)]
enum Switch {
    /// `INGESTOR_DELIBERATE_BUG=<name>` (a defect compiled into the engine).
    Env,
    /// `--break <name>` (a file-system wrapper in the harness).
    Break,
}

/// Which of the smoke profile's two crash modes a defect runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Against {
    /// Simulated power cuts (`--mode sim`).
    Sim,
    /// Real `SIGKILL` of a child process (`--mode proc`): for what a process crash must keep.
    Proc,
    /// Forwarding under simulated power cuts (`--mode forward`).
    Forward,
}

/// One deliberate defect and the promise it breaks.
#[derive(Debug, Clone, Copy)]
struct Mutant {
    name: &'static str,
    switch: Switch,
    against: Against,
    promise: &'static str,
}

/// The suite: one defect (or more) per promise.
const MUTANTS: [Mutant; 43] = [
    Mutant {
        name: "sync-noop",
        switch: Switch::Break,
        against: Against::Sim,
        promise: "durable survives: an fdatasync that returns has made the data durable",
    },
    Mutant {
        name: "dir-sync-noop",
        switch: Switch::Break,
        against: Against::Sim,
        promise: "new names are durable before they matter (directory fsync)",
    },
    Mutant {
        name: "buffered-append",
        switch: Switch::Env,
        against: Against::Proc,
        promise: "an acknowledged append was written (one pwrite, no user-space buffer): it \
                  survives kill -9",
    },
    Mutant {
        name: "buffered-no-deadline",
        switch: Switch::Env,
        against: Against::Proc,
        promise: "under Buffered, an accepted batch is written within the deadline: a kill \
                  -9 loses at most the last deadline's batches",
    },
    Mutant {
        name: "handoff-no-wait",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "under Buffered, a sync covers every accepted record, a full buffer handed \
                  off for writing included: durable survives",
    },
    Mutant {
        name: "rotate-no-sync",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "a sync covers everything written before it (older segments synced at rotation)",
    },
    Mutant {
        name: "group-commit-overclaim",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "group commit claims only what it synced (every writer's durable acks survive)",
    },
    Mutant {
        name: "fsync-retry",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "a failed fsync is final: the log is poisoned, never retried into a success",
    },
    Mutant {
        name: "write-past-failed",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "a failed write leaves no half frame (cut back before the next append)",
    },
    Mutant {
        name: "tail-as-torn",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "damage to a synced frame with durable frames after it is corruption, not a torn tail",
    },
    Mutant {
        name: "quarantine-trusts-name",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "bytes recovery cuts are in quarantine exactly as found, under the name its \
                  report gives",
    },
    Mutant {
        name: "quarantine-skip",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "every byte recovery cuts (a torn tail, damage a salvage skips or drops) is \
                  copied to quarantine first",
    },
    Mutant {
        name: "refuse-after-drop",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "a default open refuses damage in the middle of the log and changes nothing, \
                  so that a deliberate repair still finds every valid record",
    },
    Mutant {
        name: "missing-records-after-rotate",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "a failed open changes nothing: an open that finds records missing between \
                  the snapshot and the log refuses before it continues the log",
    },
    Mutant {
        name: "torn-tail-takes-one-more",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "a torn tail's cut starts at the damage: the valid frames before it are \
                  replayed and kept",
    },
    Mutant {
        name: "cut-one-frame-early",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "recovery is idempotent: it cuts exactly the torn tail, so recovering again \
                  finds the same log",
    },
    Mutant {
        name: "apply-failed-batch",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "acknowledged means logged: a refused batch leaves nothing behind",
    },
    Mutant {
        name: "replay-twice",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "replay is exact: each batch once",
    },
    Mutant {
        name: "replay-add-as-set",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "replay is exact: a histogram add replays as an add over the histogram's \
                  bounds, not as a set",
    },
    Mutant {
        name: "forward-cursor-early",
        switch: Switch::Env,
        against: Against::Forward,
        promise: "a destination's cursor passes a request only after the receiver answered \
                  it: a power cut never skips a request that did not arrive",
    },
    Mutant {
        name: "snapshot-series-unchanged",
        switch: Switch::Env,
        against: Against::Forward,
        promise: "forwarding: series loaded from a snapshot count as changed at its LSN, so \
                  that a restart sends them once more, never skips them",
    },
    Mutant {
        name: "forward-shard-own-cursor",
        switch: Switch::Env,
        against: Against::Forward,
        promise: "a change of the shard count skips no request: while requests wait, each \
                  shard keeps its own cursor (the defect changes the count anyway, each new \
                  shard at the old cursor of its number)",
    },
    Mutant {
        name: "replay-snapshot-lsn",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "replay is exact: the batches after the snapshot's LSN, not from it",
    },
    Mutant {
        name: "snapshot-no-fsync",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "a snapshot is durable (fsynced) before it is renamed into place and the log compacted",
    },
    Mutant {
        name: "snapshot-newest-only",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "keep N: with an older snapshot kept, a damaged newest one loses nothing",
    },
    Mutant {
        name: "compact-newest",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "segments go only when covered: compaction keeps the log the oldest kept \
                  snapshot needs",
    },
    Mutant {
        name: "keep-temp-files",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "no litter: no temporary snapshot file after open",
    },
    Mutant {
        name: "panic-on-damaged-snapshot",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "the engine never panics, whatever the disk holds",
    },
    Mutant {
        name: "batch-syncer-noop",
        switch: Switch::Env,
        against: Against::Proc,
        promise: "under Batch, wait_durable returns once the background syncer synced (a \
                  snapshot waits for it)",
    },
    Mutant {
        name: "batch-no-syncer",
        switch: Switch::Env,
        against: Against::Proc,
        promise: "under Batch, a power cut keeps what was acknowledged more than a window and \
                  two syncs before it (a background syncer exists)",
    },
    Mutant {
        name: "always-ack-before-sync",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "under Always, an append returns after a sync covering it, acknowledged \
                  Durable",
    },
    Mutant {
        name: "apply-refused-prefix",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "a batch validation refuses leaves nothing of itself behind",
    },
    Mutant {
        name: "marker-no-log-sync",
        switch: Switch::Env,
        against: Against::Forward,
        promise: "forwarding: a flush's marker claims only an ingest log synced up to it (a \
                  power cut must not hand its LSNs to batches the next flush would skip)",
    },
    Mutant {
        name: "snapshot-gauge-f32",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "recovery is exact: every value comes back exactly (from the log and from \
                  snapshots)",
    },
    Mutant {
        name: "snapshot-drop-last-update",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "recovery is exact: a series' last update time (which forwarded samples \
                  carry) comes back from a snapshot as it was",
    },
    Mutant {
        name: "buffered-write-no-poison",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "under Buffered, a failed write of the buffer poisons the log: the accepted \
                  frames it lost are never followed by later ones",
    },
    Mutant {
        name: "verify-repairs",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "`ingestor verify` reads every segment and snapshot and changes nothing",
    },
    Mutant {
        name: "repair-no-compact",
        switch: Switch::Env,
        against: Against::Sim,
        promise: "`ingestor repair` leaves a directory a default open accepts, with the state \
                  the salvage mode recovered, even when a power cut interrupts it",
    },
    Mutant {
        name: "forward-flush-time",
        switch: Switch::Env,
        against: Against::Forward,
        promise: "forwarding: a sample carries its series' last update time, so that a \
                  request sent twice carries identical samples",
    },
    Mutant {
        name: "forward-no-layout-wait",
        switch: Switch::Env,
        against: Against::Forward,
        promise: "forwarding: a series keeps its order when a new shard count moves it to \
                  another shard",
    },
    Mutant {
        name: "forward-cursor-never-stored",
        switch: Switch::Env,
        against: Against::Forward,
        promise: "forwarding: after a crash each shard resends at most its cursor window's \
                  requests (cursors are stored as they move)",
    },
    Mutant {
        name: "buffered-late-deadline",
        switch: Switch::Env,
        against: Against::Proc,
        promise: "under Buffered, an accepted batch is written within the deadline (the \
                  flusher's scheduling aside), not within several",
    },
    Mutant {
        name: "flush-noop",
        switch: Switch::Env,
        against: Against::Proc,
        promise: "under Buffered, every batch accepted before a flush that returned survives \
                  kill -9",
    },
];

/// The seed of every mutant run: fixed, so that the suite's timings are reproducible.
const SEED: u64 = 0x5eed;
/// The most one mutant may take before it counts as not caught.
const BUDGET: Duration = Duration::from_secs(60);

/// What one mutant run found.
struct Caught {
    invariant: Option<String>,
    detail: String,
    took: Duration,
}

/// Runs the suite; fails unless every defect is caught.
pub(crate) fn run(options: &Options) -> ExitCode {
    if !cfg!(ingestor_deliberate_bugs) && MUTANTS.iter().any(|m| matches!(m.switch, Switch::Env)) {
        eprintln!(
            "crashtest --mutants: this xtask was built without --cfg ingestor_deliberate_bugs, so \
             the engine carries none of its defects: run it as `cargo xtask crashtest --mutants` \
             (the alias sets the cfg; a RUSTFLAGS variable overrides it)"
        );
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("crashtest --mutants: cannot find the xtask binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let chosen: Vec<Mutant> = MUTANTS
        .into_iter()
        .filter(|m| {
            options.only_mutants.is_empty() || options.only_mutants.iter().any(|n| n == m.name)
        })
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = MUTANTS.iter().map(|m| m.name).collect();
        eprintln!("crashtest --mutants: no such mutant; the suite has {names:?}");
        return ExitCode::from(2);
    }
    println!(
        "crashtest --mutants: {} deliberate defects, each against the smoke profile's checks \
         (seed {SEED:#x}, at most {BUDGET:?} each)",
        chosen.len()
    );
    let started = Instant::now();
    let mut missed = Vec::new();
    for m in &chosen {
        let caught = run_one(&exe, m);
        match &caught.invariant {
            Some(inv) => println!(
                "  caught  {:<28} in {:>6.2} s ({} mode) by \"{inv}\"\n          promise: {}\n          \
                 seen: {}",
                m.name,
                caught.took.as_secs_f64(),
                match m.against {
                    Against::Sim => "sim",
                    Against::Proc => "proc",
                    Against::Forward => "forward",
                },
                m.promise,
                caught.detail
            ),
            None => {
                println!(
                    "  MISSED  {:<28} after {:>6.2} s: {}\n          promise: {}",
                    m.name,
                    caught.took.as_secs_f64(),
                    caught.detail,
                    m.promise
                );
                missed.push(m.name);
            }
        }
    }
    println!("crashtest --mutants finished in {:.1?}", started.elapsed());
    if missed.is_empty() {
        println!("crashtest --mutants: ok, all {} defects caught", chosen.len());
        ExitCode::SUCCESS
    } else {
        println!("FAILED: defects not caught: {missed:?}");
        ExitCode::FAILURE
    }
}

/// Runs one mutant in a child process; returns the first violation it reported.
fn run_one(exe: &std::path::Path, m: &Mutant) -> Caught {
    let mut cmd = Command::new(exe);
    cmd.args(["crashtest", "--profile", "smoke", "--seed"]).arg(format!("{SEED:#x}"));
    match m.against {
        // Within the budget; stops at the first violation.
        Against::Sim => cmd.args(["--mode", "sim", "--duration"]).arg(BUDGET.as_secs().to_string()),
        // The smoke profile's kills; stops at the first violation.
        Against::Proc => cmd.args(["--mode", "proc"]),
        Against::Forward => {
            cmd.args(["--mode", "forward", "--duration"]).arg(BUDGET.as_secs().to_string())
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_remove("INGESTOR_DELIBERATE_BUG");
    match m.switch {
        Switch::Env => {
            cmd.env("INGESTOR_DELIBERATE_BUG", m.name);
        }
        Switch::Break => {
            cmd.args(["--break", m.name]);
        }
    }
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Caught {
                invariant: None,
                detail: format!("cannot run {}: {e}", exe.display()),
                took: started.elapsed(),
            };
        }
    };
    // The child ends at its first violation or at the end of its budget; a child that hangs
    // (a stalled scheduler exits by itself, but be safe) is killed.
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = started + BUDGET + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
    let took = started.elapsed();
    let out = reader.join().unwrap_or_default();
    first_violation(&out).map_or_else(
        || Caught {
            invariant: None,
            detail: "the smoke profile passed with zero violations".into(),
            took,
        },
        |(invariant, detail)| Caught { invariant: Some(invariant), detail, took },
    )
}

/// The first `FAILED <invariant>: <detail>` line of a crashtest run's output.
fn first_violation(out: &str) -> Option<(String, String)> {
    out.lines().find_map(|line| {
        let rest = line.strip_prefix("FAILED ")?;
        let (invariant, detail) = rest.split_once(": ")?;
        let mut detail = detail.to_string();
        if detail.len() > 160 {
            let cut = (0..=160).rev().find(|&i| detail.is_char_boundary(i)).unwrap_or(0);
            detail.truncate(cut);
            detail.push('…');
        }
        Some((invariant.to_string(), detail))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_violation_is_read_from_the_report() {
        let out = "crashtest finished in 1s\nFAILED durable survives: 3 batches had to survive\n  \
                   reproduce: x\nFAILED no litter: y\n";
        let (inv, detail) = first_violation(out).expect("a violation");
        assert_eq!(inv, "durable survives");
        assert_eq!(detail, "3 batches had to survive");
        assert!(first_violation("FAILED: crash points never reached: [..]\n").is_none());
    }

    #[test]
    fn every_mutant_has_a_distinct_name_and_a_promise() {
        let mut names: Vec<&str> = MUTANTS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MUTANTS.len());
        assert!(MUTANTS.len() >= 12);
        assert!(MUTANTS.iter().all(|m| !m.promise.is_empty()));
    }
}
