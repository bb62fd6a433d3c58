//! Group commit's announced steps, which the crash test's deterministic scheduler relies on:
//! `wal.sync.after` comes before the durable point moves, and a caller that finds a sync
//! running announces `wal.sync.wait` (with no lock held) before it waits, then is covered
//! only by a sync that began after its write.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingestor_fs::{Fault, FaultKind, Fs, OpKind, SimFs};
use ingestor_testkit::fs::{Hook, HookFs};
use ingestor_wal::{AckLevel, Lsn, SyncPolicy, Wal, WalError, WalOptions, crash_points};

const DIR: &str = "/db/wal";

fn options() -> WalOptions {
    WalOptions::default().sync_policy(SyncPolicy::Always).segment_bytes_max(1 << 20)
}

#[test]
fn a_power_cut_at_sync_after_leaves_the_durable_point_where_it_was() {
    let sim = SimFs::new(3);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), options()).expect("open");
    let first = wal.append(1, b"one").expect("append");
    assert_eq!(first.level, AckLevel::Durable);
    sim.arm_crash_point(crash_points::SYNC_AFTER, 1);
    assert!(wal.append(1, b"two").is_err(), "the power was cut before the acknowledgement");
    // The sync itself happened, but nothing may have been claimed durable after it.
    assert_eq!(wal.durable_lsn(), first.last);
}

/// Holds the first sync leader at `wal.sync.before` until released, and records every
/// announcement (over the simulated disk, in a [`HookFs`]).
#[derive(Debug)]
struct Gate {
    seen: Mutex<Vec<&'static str>>,
    /// Told when the leader is held; waited on to release it.
    held: Mutex<Option<(Sender<()>, Receiver<()>)>>,
}

impl Hook for Gate {
    fn crash_point(&self, name: &'static str) -> std::io::Result<()> {
        self.seen.lock().unwrap().push(name);
        if name == crash_points::SYNC_BEFORE {
            let gate = self.held.lock().unwrap().take();
            if let Some((told, release)) = gate {
                told.send(()).unwrap();
                release.recv_timeout(Duration::from_secs(10)).expect("released");
            }
        }
        Ok(())
    }
}

#[test]
fn a_writer_that_finds_a_sync_running_announces_its_wait_and_is_not_claimed_by_it() {
    let (told_tx, told_rx) = channel();
    let (release_tx, release_rx) = channel();
    let gate = Arc::new(HookFs::new(
        Arc::new(SimFs::new(5)),
        Gate { seen: Mutex::new(Vec::new()), held: Mutex::new(None) },
    ));
    let fs: Arc<dyn Fs> = Arc::clone(&gate) as Arc<dyn Fs>;
    let (wal, _) = Wal::open(fs, Path::new(DIR), options()).expect("open");
    let wal = Arc::new(wal);
    *gate.held.lock().unwrap() = Some((told_tx, release_rx));

    // The leader: its append's sync is held at `wal.sync.before`, covering LSN 1 only.
    let leader = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || wal.append(1, b"leader").expect("leader append"))
    };
    told_rx.recv_timeout(Duration::from_secs(10)).expect("the leader reached wal.sync.before");
    // A second writer writes LSN 2 while that sync runs: it must wait for it (announcing the
    // wait), then not be claimed by it.
    let follower = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || wal.append(1, b"follower").expect("follower append"))
    };
    let announced = (0..1000).any(|_| {
        std::thread::sleep(Duration::from_millis(5));
        gate.seen.lock().unwrap().contains(&crash_points::SYNC_WAIT)
    });
    assert!(announced, "a writer that finds a sync running announces wal.sync.wait");
    assert_eq!(wal.durable_lsn(), Lsn::ZERO, "nothing is durable before the held sync ends");
    release_tx.send(()).unwrap();
    let (a, b) = (leader.join().unwrap(), follower.join().unwrap());
    assert_eq!((a.last, a.level), (Lsn(1), AckLevel::Durable));
    assert_eq!((b.last, b.level), (Lsn(2), AckLevel::Durable));
    // The follower's record was written after the leader read its LSN: a second sync (its
    // own) covered it.
    let seen = gate.seen.lock().unwrap().clone();
    let syncs = seen.iter().filter(|p| **p == crash_points::SYNC_BEFORE).count();
    assert_eq!(syncs, 2, "two syncs, one per group: {seen:?}");
}

/// Which writer, and what its append returned.
type Outcome = (usize, ingestor_wal::Result<ingestor_wal::Ack>);

/// Starts a leader whose sync is held at `wal.sync.before`, then `followers` writers that
/// each find that sync running and wait; returns once all of them announced their wait, with
/// the receiver of every writer's outcome (the leader's first) and the gate's release.
fn leader_held_with_waiters(
    sim: &SimFs,
    followers: usize,
) -> (Arc<HookFs<Gate>>, Receiver<Outcome>, Sender<()>) {
    let (told_tx, told_rx) = channel();
    let (release_tx, release_rx) = channel();
    let gate = Arc::new(HookFs::new(
        Arc::new(sim.clone()),
        Gate { seen: Mutex::new(Vec::new()), held: Mutex::new(None) },
    ));
    let fs: Arc<dyn Fs> = Arc::clone(&gate) as Arc<dyn Fs>;
    let wal = Arc::new(Wal::open(fs, Path::new(DIR), options()).expect("open").0);
    *gate.held.lock().unwrap() = Some((told_tx, release_rx));
    let (done_tx, done_rx) = channel();
    let spawn = |n: usize| {
        let (wal, done) = (Arc::clone(&wal), done_tx.clone());
        std::thread::spawn(move || done.send((n, wal.append(1, &[n as u8; 40]))).unwrap());
    };
    spawn(0);
    told_rx.recv_timeout(Duration::from_secs(10)).expect("the leader reached wal.sync.before");
    for n in 1..=followers {
        spawn(n);
    }
    let all_waiting = (0..2000).any(|_| {
        std::thread::sleep(Duration::from_millis(5));
        let seen = gate.seen.lock().unwrap();
        seen.iter().filter(|p| **p == crash_points::SYNC_WAIT).count() == followers
    });
    assert!(all_waiting, "every follower announced its wait");
    (gate, done_rx, release_tx)
}

#[test]
fn writers_waiting_behind_a_sync_all_return_durable_after_one_more_sync() {
    let sim = SimFs::new(9);
    let followers = 6;
    let (gate, done, release) = leader_held_with_waiters(&sim, followers);
    release.send(()).unwrap();
    let mut lsns = Vec::new();
    for _ in 0..=followers {
        // A waiter nobody wakes would hang here: the timeout names it as a failure instead.
        let (n, ack) = done.recv_timeout(Duration::from_secs(20)).expect("every writer returns");
        let ack = ack.unwrap_or_else(|e| panic!("writer {n}: {e}"));
        assert_eq!(ack.level, AckLevel::Durable, "writer {n}");
        lsns.push(ack.last.0);
    }
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=1 + followers as u64).collect::<Vec<_>>());
    // The followers wrote while the held sync ran: not covered by it, each needs a sync that
    // began after its write; one more sync, led by one of them, covers them all.
    let seen = gate.seen.lock().unwrap().clone();
    let syncs = seen.iter().filter(|p| **p == crash_points::SYNC_BEFORE).count();
    assert_eq!(syncs, 2, "the held sync, then one for every follower: {seen:?}");
}

#[test]
fn writers_waiting_behind_a_failed_sync_all_return_the_failure() {
    let sim = SimFs::new(10);
    let followers = 6;
    let (_gate, done, release) = leader_held_with_waiters(&sim, followers);
    sim.inject(Fault::new(OpKind::SyncData, FaultKind::SyncLosesData));
    release.send(()).unwrap();
    for _ in 0..=followers {
        let (n, outcome) =
            done.recv_timeout(Duration::from_secs(20)).expect("every writer returns");
        let err = outcome.expect_err("a sync failed before any of these was durable");
        assert!(matches!(err, WalError::Poisoned { .. }), "writer {n}: {err}");
    }
}

/// A listener that panics in `on_sync`.
#[derive(Debug)]
struct PanicOnSync;

impl ingestor_wal::WalListener for PanicOnSync {
    fn on_sync(&self, _durable: Lsn, _took: Duration) {
        panic!("a listener's bug");
    }
}

#[test]
fn a_leader_that_panics_poisons_the_log_and_strands_no_waiter() {
    let fs: Arc<dyn Fs> = Arc::new(SimFs::new(12));
    let options = options().listener(Arc::new(PanicOnSync));
    let wal = Arc::new(Wal::open(fs, Path::new(DIR), options).expect("open").0);
    let (done_tx, done_rx) = channel();
    let writers = 8;
    for n in 0..writers {
        let (wal, done) = (Arc::clone(&wal), done_tx.clone());
        std::thread::spawn(move || {
            // The leader's panic ends its thread before it reports (the channel hears nothing
            // from it); every other writer reports how its appends ended.
            let outcome = (0..50).try_for_each(|_| wal.append(1, b"x").map(|_| ()));
            done.send((n, outcome)).unwrap();
        });
    }
    drop(done_tx);
    let mut reported = 0;
    // A waiter left parked would keep its sender alive: the timeout names it as a failure.
    while let Ok((n, outcome)) = done_rx.recv_timeout(Duration::from_secs(20)) {
        let err = outcome.expect_err("no append is durable after the leader's panic");
        assert!(matches!(err, WalError::Poisoned { .. }), "writer {n}: {err}");
        reported += 1;
    }
    assert!(reported < writers, "at least the leader panicked");
    assert!(
        matches!(done_rx.try_recv(), Err(std::sync::mpsc::TryRecvError::Disconnected)),
        "every writer ended: {reported} reported, the rest panicked"
    );
    assert!(matches!(wal.append(1, b"after"), Err(WalError::Poisoned { .. })));
}
