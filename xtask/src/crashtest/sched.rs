//! A deterministic scheduler for concurrent writers on the simulated disk.
//!
//! Real threads run the real engine, but only one at a time: each writer runs until it
//! reaches a *scheduling point*, parks there, and the controller (the iteration's thread)
//! picks which parked writer runs next with the iteration's seeded generator. So the order of
//! every file-system call, and therefore the whole run, follows from the seed.
//!
//! The scheduling points are the places where a writer holds no lock of the engine, so that
//! the writer given the turn can never block on a lock held by a parked one:
//!
//! - the start of each writer operation (an ingest or a sync), in the harness;
//! - `wal.sync.before` (a group-commit leader has read the LSN its sync will cover);
//! - `wal.sync.after` (the sync returned; the durable point has not moved yet);
//! - `wal.sync.wait` (a caller is about to wait for another caller's sync).
//!
//! The one wait left is the group-commit wait (the caller parks until woken). A writer
//! parked at `wal.sync.wait` is resumed only when no leader is parked between
//! `wal.sync.before` and `wal.sync.after` (no sync is running), so it never waits there: it
//! finds its records durable, or leads a sync itself.
//!
//! Why not `shuttle` or `loom`: both replace `std::sync` inside the code under test, so the
//! engine's crates would need a second set of primitives behind a feature, and the crash
//! test would no longer run the engine as shipped. Scheduling at the file-system seam needs
//! one announced point in the log (`wal.sync.wait`) and nothing else; it explores the
//! interleavings that matter to durability (writes and syncs around a running sync), not
//! every interleaving of memory accesses, which is what those tools are for.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ingestor_testkit::fs::{Hook, HookFs};
use ingestor_wal::crash_points;

use super::workload::Rng;

/// Where a writer is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// Before its next operation.
    Start,
    /// A sync leader, before its sync.
    SyncBefore,
    /// A sync leader, after its sync, before the durable point moves.
    SyncAfter,
    /// About to wait for another caller's sync.
    SyncWait,
}

impl At {
    fn of(point: &str) -> Option<At> {
        match point {
            p if p == crash_points::SYNC_BEFORE => Some(At::SyncBefore),
            p if p == crash_points::SYNC_AFTER => Some(At::SyncAfter),
            p if p == crash_points::SYNC_WAIT => Some(At::SyncWait),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Per writer: where it is parked (`None`: running, not started, or finished).
    parked: Vec<Option<At>>,
    done: Vec<bool>,
    running: Option<usize>,
    /// Per writer, during its current operation: it waited at `wal.sync.wait`, it led a
    /// sync (`wal.sync.before`).
    waited: Vec<bool>,
    led: Vec<bool>,
}

/// The scheduler of one concurrent phase.
#[derive(Debug, Default)]
pub(crate) struct Sched {
    state: Mutex<State>,
    turn: Condvar,
}

thread_local! {
    /// The writer index of this thread in the scheduler of its phase, if it is a writer.
    static ME: Cell<Option<usize>> = const { Cell::new(None) };
}

/// How long the controller waits for a running writer to park before it declares the phase
/// stalled (a writer blocked outside every scheduling point: an engine or harness bug).
const STALL: Duration = Duration::from_secs(20);

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the controller saw of a finished operation, for the report.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpTrace {
    /// The operation waited at `wal.sync.wait` for another caller's sync.
    pub(crate) waited: bool,
    /// The operation led a sync itself.
    pub(crate) led: bool,
}

impl Sched {
    /// A scheduler for `writers` writers.
    pub(crate) fn new(writers: usize) -> Arc<Sched> {
        Arc::new(Sched {
            state: Mutex::new(State {
                parked: vec![None; writers],
                done: vec![false; writers],
                running: None,
                waited: vec![false; writers],
                led: vec![false; writers],
            }),
            turn: Condvar::new(),
        })
    }

    /// Makes the calling thread writer `me` (call first thing in the writer's thread).
    pub(crate) fn enter(me: usize) {
        ME.with(|m| m.set(Some(me)));
    }

    /// Parks the calling writer at `at` until the controller gives it the turn.
    pub(crate) fn park(&self, at: At) {
        let Some(me) = ME.with(Cell::get) else { return };
        let mut st = lock(&self.state);
        match at {
            At::Start => {
                st.waited[me] = false;
                st.led[me] = false;
            }
            At::SyncWait => st.waited[me] = true,
            At::SyncBefore => st.led[me] = true,
            At::SyncAfter => {}
        }
        st.parked[me] = Some(at);
        if st.running == Some(me) {
            st.running = None;
        }
        self.turn.notify_all();
        while st.running != Some(me) {
            st = self.turn.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        st.parked[me] = None;
    }

    /// What the calling writer's current operation did so far.
    pub(crate) fn trace(&self) -> OpTrace {
        let Some(me) = ME.with(Cell::get) else { return OpTrace::default() };
        let st = lock(&self.state);
        OpTrace { waited: st.waited[me], led: st.led[me] }
    }

    /// The calling writer is finished.
    pub(crate) fn finish(&self) {
        let Some(me) = ME.with(Cell::get) else { return };
        let mut st = lock(&self.state);
        st.done[me] = true;
        st.parked[me] = None;
        if st.running == Some(me) {
            st.running = None;
        }
        self.turn.notify_all();
    }

    /// Runs the phase to its end: waits until every writer is parked or finished, picks one
    /// of the parked writers that may run, gives it the turn, and again. Returns `Err` with
    /// a description if a writer stopped outside every scheduling point for [`STALL`].
    pub(crate) fn control(&self, rng: &mut Rng) -> Result<u64, String> {
        let mut turns = 0u64;
        let mut st = lock(&self.state);
        loop {
            // Wait for quiescence: nobody running, every writer parked or done.
            loop {
                let quiet = st.running.is_none()
                    && st.parked.iter().zip(&st.done).all(|(p, d)| p.is_some() || *d);
                if quiet {
                    break;
                }
                let (next, timeout) = self
                    .turn
                    .wait_timeout(st, STALL)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                st = next;
                if timeout.timed_out() {
                    return Err(format!(
                        "the concurrent writers stalled: writer {:?} ran for {STALL:?} without \
                         reaching a scheduling point (parked: {:?}, done: {:?})",
                        st.running, st.parked, st.done
                    ));
                }
            }
            if st.done.iter().all(|d| *d) {
                return Ok(turns);
            }
            let syncing =
                st.parked.iter().any(|p| matches!(p, Some(At::SyncBefore | At::SyncAfter)));
            let eligible: Vec<usize> = (0..st.parked.len())
                .filter(|&i| match st.parked[i] {
                    Some(At::SyncWait) => !syncing,
                    Some(_) => true,
                    None => false,
                })
                .collect();
            // Prefer running other writers while a leader is parked around its sync: that is
            // where group commit can claim too much.
            let weights: Vec<u64> = eligible
                .iter()
                .map(|&i| match st.parked[i] {
                    Some(At::SyncBefore | At::SyncAfter) => 1,
                    _ => 3,
                })
                .collect();
            let total: u64 = weights.iter().sum();
            let mut pick = rng.below(total);
            let mut chosen = eligible[0];
            for (&i, &w) in eligible.iter().zip(&weights) {
                if pick < w {
                    chosen = i;
                    break;
                }
                pick -= w;
            }
            st.running = Some(chosen);
            turns += 1;
            self.turn.notify_all();
        }
    }
}

/// Parks writer threads at the log's scheduling points (see the module documentation), as
/// the hook of a [`SchedFs`]; every other thread, and every other call, goes straight
/// through.
#[derive(Debug, Default)]
pub(crate) struct SchedHook {
    pub(crate) sched: Mutex<Option<Arc<Sched>>>,
}

impl SchedHook {
    /// Installs (or removes) the scheduler of a concurrent phase.
    pub(crate) fn set(&self, sched: Option<Arc<Sched>>) {
        *self.sched.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = sched;
    }
}

impl Hook for SchedHook {
    fn crash_point(&self, name: &'static str) -> std::io::Result<()> {
        if let Some(at) = At::of(name) {
            let sched =
                self.sched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            if let Some(sched) = sched {
                sched.park(at);
            }
        }
        Ok(())
    }
}

/// A file system that parks writer threads at the log's scheduling points.
pub(crate) type SchedFs = HookFs<SchedHook>;
