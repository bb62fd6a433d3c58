//! Group commit, the background syncer of `SyncPolicy::Batch`, the flusher of
//! `SyncPolicy::Buffered` and the write-back thread of `SyncPolicy::Os`.
//!
//! One caller at a time syncs (the leader); callers that arrive while a sync runs wait for
//! it, and the next leader's sync covers every write that preceded it. A failed sync poisons
//! the log: it is never retried into a success.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use ingestor_codec::Lsn;
use ingestor_fs::FsFile;

use crate::error::{Result, WalError};
use crate::wal::crash_points;
use crate::writer::{Shared, SyncState, lock};

/// The longest a sync leader waits for appenders in the middle of a write.
const GROUP_WAIT_MAX: Duration = Duration::from_micros(100);

/// Messages to the background syncer.
pub(crate) enum SyncMessage {
    /// A write happened: start a sync one window from now.
    Wake,
    /// Under [`crate::SyncPolicy::Buffered`] and [`crate::SyncPolicy::Os`]: start write-back
    /// of these bytes of this file (a hint, see [`Shared::hint_writeback`]), here rather
    /// than on the appending thread,
    /// where submitting the pages' writes took about a tenth of a small append's time.
    Writeback(Arc<dyn FsFile>, u64, u64),
    /// Under [`crate::SyncPolicy::Buffered`]: write the full buffer an appender handed off
    /// (see `handoff.rs`).
    Write,
    /// A rotation left the ended segment's close for later: finish it
    /// ([`Shared::finish_close`]).
    Close,
    /// Sync what was written and stop.
    Shutdown,
}

/// Returns once `target` is durable. With `lead`, the caller syncs itself when no sync is
/// running; without, it waits for someone else's (the background syncer).
pub(crate) fn sync_to(shared: &Shared, target: Lsn, lead: bool) -> Result<Lsn> {
    let mut st = lock(&shared.sync);
    loop {
        shared.check_poisoned()?;
        if st.durable >= target {
            return Ok(st.durable);
        }
        if st.syncing || !lead {
            // Announced with no lock held (a simulated disk may cut the power here, or run
            // other writers first), then everything is checked again before waiting.
            drop(st);
            shared.crash_point(crash_points::SYNC_WAIT)?;
            st = lock(&shared.sync);
            shared.check_poisoned()?;
            if st.durable >= target {
                return Ok(st.durable);
            }
            if st.syncing || !lead {
                let woken = Arc::new(AtomicBool::new(false));
                st.waiters.push(Waiter {
                    target,
                    lead,
                    thread: std::thread::current(),
                    woken: Arc::clone(&woken),
                });
                shared.waiting.fetch_add(1, Ordering::AcqRel);
                drop(st);
                // `park` may return without an `unpark`: only the flag counts.
                while !woken.load(Ordering::Acquire) {
                    std::thread::park();
                }
                shared.waiting.fetch_sub(1, Ordering::AcqRel);
                // Woken because a sync covered the target: done without the lock (the
                // durable LSN was stored before the flag).
                let durable = shared.durable.load(Ordering::Acquire);
                if durable >= target.0 && shared.poisoned.get().is_none() {
                    return Ok(Lsn(durable));
                }
                st = lock(&shared.sync);
            }
            continue;
        }
        st.syncing = true;
        let group = st.last_group;
        let last_sync = st.last_sync;
        drop(st);
        let leading = Leading(shared);
        let outcome = lead_sync(shared, group, last_sync);
        drop(leading);
        // A segment a rotation ended since the sync began, still closing: none of its
        // records counts as durable before its close, which seals the segment after it
        // first (the durable LSN reaches a segment's last LSN only once the next segment is
        // sealed: recovery relies on it, see `Shared::finish_close`).
        let closing = lock(&shared.closing);
        let outcome = outcome.map(|(upto, took)| match closing.as_ref() {
            Some(c) => (upto.min(Lsn(c.segment.0.0 - 1)), took),
            None => (upto, took),
        });
        st = lock(&shared.sync);
        st.syncing = false;
        match outcome {
            Ok((upto, took)) => {
                // Deliberate defect: the leader claims everything written by the time its sync
                // returned, not what was written when it began.
                #[cfg(ingestor_deliberate_bugs)]
                let upto = if crate::bugs::on("group-commit-overclaim") {
                    Lsn(shared.written.load(Ordering::Acquire))
                } else {
                    upto
                };
                // A sync that failed after this one began has poisoned the log: claim nothing.
                if upto > st.durable && shared.poisoned.get().is_none() {
                    st.durable = upto;
                    shared.durable.store(upto.0, Ordering::Release);
                }
                // The leader plus everyone it releases: how many writers to expect next time.
                st.last_group = 1 + shared.waiting.load(Ordering::Acquire);
                st.last_sync = took;
                let woken = release_waiters(&mut st, false);
                let durable = st.durable;
                drop(st);
                drop(closing);
                unpark(woken);
                if durable >= target && shared.poisoned.get().is_none() {
                    return Ok(durable);
                }
                st = lock(&shared.sync);
            }
            Err(e) => {
                drop(st);
                drop(closing);
                // Failed syncs poison the log inside `sync_segment`; anything else that stops
                // a leader (a simulated power cut) poisons it here, so no waiter is stranded.
                return Err(match e {
                    WalError::Poisoned { .. } => e,
                    e => shared.poison(e),
                });
            }
        }
    }
}

/// Held by a sync leader while it syncs: if it unwinds (a panic in the file system or in a
/// listener's `on_sync`), the log is poisoned (whether the sync happened is not known) and
/// every waiter woken, so that none waits for a sync that never ends.
struct Leading<'a>(&'a Shared);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let shared = self.0;
            // Without the listener (whose panic may be the one under way).
            let cause = std::io::Error::other("a sync leader panicked");
            let _ = shared.poisoned.set(Arc::new(WalError::io("sync", "the log", cause)));
            lock(&shared.sync).syncing = false;
            shared.wake_all_waiters();
        }
    }
}

/// A caller waiting in [`sync_to`] for a sync to cover `target`. Waiters are woken one by
/// one, only those a sync covered plus the one that is to lead the next sync, instead of all
/// at once: on two cores, waking every waiter after each sync (those waiting for the next
/// one too) and having them all take the sync lock cost about as much as the sync.
pub(crate) struct Waiter {
    target: Lsn,
    /// Whether it may lead a sync itself (otherwise it waits for the background syncer).
    lead: bool,
    thread: std::thread::Thread,
    /// Set (under the sync lock) when it is woken; it is then no longer in the list.
    woken: Arc<AtomicBool>,
}

/// Takes from `st` the waiters to wake: with `all`, every one; otherwise those whose target
/// is durable, plus, when others remain and no sync runs, the first that may lead (it will
/// lead the next sync unless a new caller does first). Marks them woken; the caller unparks
/// them with [`unpark`] after releasing the lock.
pub(crate) fn release_waiters(st: &mut SyncState, all: bool) -> Vec<std::thread::Thread> {
    let durable = st.durable;
    let mut leader_found = all || st.syncing;
    let mut woken = Vec::new();
    st.waiters.retain(|w| {
        let wake = all || w.target <= durable || (!leader_found && w.lead);
        if wake {
            if w.target > durable {
                leader_found = true;
            }
            w.woken.store(true, Ordering::Release);
            woken.push(w.thread.clone());
        }
        !wake
    });
    woken
}

/// Wakes the threads [`release_waiters`] took.
pub(crate) fn unpark(threads: Vec<std::thread::Thread>) {
    for thread in threads {
        thread.unpark();
    }
}

/// Syncs the active segment; returns the LSN it covers (everything written before it began:
/// older segments were synced when they were closed) and how long the sync took.
///
/// Before syncing, the leader gives other writers a moment to join the group: appenders in
/// the middle of a write (bounded by [`GROUP_WAIT_MAX`]), and, when the previous group had
/// several writers, until about as many are waiting again (bounded by half the previous
/// sync's duration). A lone writer never waits.
fn lead_sync(shared: &Shared, group: usize, last_sync: Duration) -> Result<(Lsn, Duration)> {
    let started = Instant::now();
    let patience =
        if group > 1 { (last_sync / 2).min(GROUP_WAIT_MAX * 10) } else { Duration::ZERO };
    loop {
        let in_flight = shared.in_flight.load(Ordering::Acquire);
        let waiting = shared.waiting.load(Ordering::Acquire);
        let elapsed = started.elapsed();
        let writers_busy = in_flight > 0 && elapsed < GROUP_WAIT_MAX;
        let group_forming = 1 + waiting + in_flight < group && elapsed < patience;
        if !writers_busy && !group_forming {
            break;
        }
        std::thread::yield_now();
    }
    let (upto, file, segment) = {
        let mut w = lock(&shared.writer);
        let segment = w.segment;
        w.flush_deferred().map_err(|e| WalError::io("write", shared.path(segment), e))?;
        shared.flush_pending(&mut w)?;
        (Lsn(w.next_lsn.0 - 1), Arc::clone(&w.file), w.segment)
    };
    // The segments ahead of this one first: a rotation may have left the one before it
    // unsynced (or rotated since, leaving this one so: closed here as well).
    shared.finish_close()?;
    shared.crash_point(crash_points::SYNC_BEFORE)?;
    let took = shared.sync_segment(&*file, segment)?;
    shared.listener.on_sync(upto, took);
    // The sync happened; a crash here loses only the acknowledgement.
    shared.crash_point(crash_points::SYNC_AFTER)?;
    Ok((upto, took))
}

/// Starts the thread that syncs at most `window` after a write.
pub(crate) fn spawn_batch_syncer(shared: Arc<Shared>, window: Duration) -> Result<JoinHandle<()>> {
    spawn_timer(shared, window, "ingestor-wal-sync", true, |shared| {
        // Deliberate defect: the background syncer of `Batch` never syncs.
        #[cfg(ingestor_deliberate_bugs)]
        if crate::bugs::on("batch-syncer-noop") {
            return true;
        }
        let target = Lsn(shared.written.load(Ordering::Acquire));
        // Errors poison the log; appenders see them.
        sync_to(shared, target, true).is_ok()
    })
}

/// Starts the thread of [`crate::SyncPolicy::Os`] that gives the log's write-back hints (see
/// [`Shared::hint_writeback`]), so that the appending thread does not submit the writes.
pub(crate) fn spawn_writeback(shared: Arc<Shared>) -> Result<JoinHandle<()>> {
    // Room for a few hints: an appender finding it full keeps its hint for a later write.
    let (tx, rx) = crossbeam_channel::bounded(4);
    let _ = shared.wake.set(tx);
    std::thread::Builder::new()
        .name("ingestor-wal-writeback".into())
        .spawn(move || {
            for message in rx {
                match message {
                    // A hint: a failure changes nothing that matters.
                    SyncMessage::Writeback(file, offset, len) => {
                        let _ = file.start_writeback(offset, len);
                    }
                    // A failure poisoned the log; appenders see it.
                    SyncMessage::Close => drop(shared.finish_close()),
                    SyncMessage::Wake | SyncMessage::Write => {}
                    SyncMessage::Shutdown => return,
                }
            }
        })
        .map_err(|e| WalError::io("spawn thread", "ingestor-wal-writeback", e))
}

/// Starts the thread of [`crate::SyncPolicy::Buffered`] that writes the buffer at most
/// `deadline` after its first frames were accepted.
pub(crate) fn spawn_flusher(shared: Arc<Shared>, deadline: Duration) -> Result<JoinHandle<()>> {
    // Deliberate defect: the flusher waits ten deadlines.
    #[cfg(ingestor_deliberate_bugs)]
    let deadline = if crate::bugs::on("buffered-late-deadline") { deadline * 10 } else { deadline };
    // At shutdown the closing thread writes the buffer itself (with its final sync).
    spawn_timer(shared, deadline, "ingestor-wal-flush", false, |shared| {
        // Deliberate defect: the deadline passes and the buffer stays where it is (it is
        // written only when it fills, or at a sync).
        #[cfg(ingestor_deliberate_bugs)]
        if crate::bugs::on("buffered-no-deadline") {
            return true;
        }
        let mut w = lock(&shared.writer);
        // Errors poison the log; appenders see them.
        shared.flush_pending(&mut w).is_ok()
    })
}

/// A thread that runs `act` one `window` after the first wake-up since its last run, and
/// (if `at_shutdown`) once more when told to shut down.
fn spawn_timer(
    shared: Arc<Shared>,
    window: Duration,
    name: &'static str,
    at_shutdown: bool,
    act: fn(&Shared) -> bool,
) -> Result<JoinHandle<()>> {
    // Room for a wake-up and a write-back hint or two: a sender finding it full drops a
    // wake-up (one is pending) or keeps its hint for later.
    let (tx, rx) = crossbeam_channel::bounded(4);
    let _ = shared.wake.set(tx);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let sync_written = || act(&shared);
            // After every message: the buffer an appender handed off, if one waits (its
            // `Write` message may have found the channel full). A failure poisoned the log.
            // Without hand-offs ([`crate::WalOptions::buffer_handoff`] off) a full buffer
            // waits for the callers' next write, or the deadline's flush.
            let write_handed = || {
                if shared.options.buffer_handoff {
                    drop(shared.finish_handoff());
                }
            };
            loop {
                let message = rx.recv();
                write_handed();
                match message {
                    Ok(SyncMessage::Wake) => {}
                    // A hint (a failure changes nothing that matters) that also counts as a
                    // wake-up: an appender whose wake-up found the channel full of hints
                    // counts on the deadline this starts.
                    Ok(SyncMessage::Writeback(file, offset, len)) => {
                        let _ = file.start_writeback(offset, len);
                    }
                    // Likewise a wake-up.
                    Ok(SyncMessage::Write) => {}
                    // A rotation's close, at once (a failure poisoned the log); likewise a
                    // wake-up.
                    Ok(SyncMessage::Close) => drop(shared.finish_close()),
                    Ok(SyncMessage::Shutdown) | Err(_) => return,
                }
                let deadline = Instant::now() + window;
                loop {
                    let message = rx.recv_deadline(deadline);
                    write_handed();
                    match message {
                        Ok(SyncMessage::Wake) => continue,
                        Ok(SyncMessage::Writeback(file, offset, len)) => {
                            let _ = file.start_writeback(offset, len);
                            continue;
                        }
                        Ok(SyncMessage::Write) => continue,
                        Ok(SyncMessage::Close) => {
                            drop(shared.finish_close());
                            continue;
                        }
                        Ok(SyncMessage::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                            if at_shutdown {
                                sync_written();
                            }
                            return;
                        }
                        Err(RecvTimeoutError::Timeout) => break,
                    }
                }
                // A failure poisoned the log and woke every waiter; nothing more to do.
                if !sync_written() && shared.poisoned.get().is_some() {
                    return;
                }
            }
        })
        .map_err(|e| WalError::io("spawn thread", name, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(durable: u64, syncing: bool, waiters: &[(u64, bool)]) -> SyncState {
        SyncState {
            durable: Lsn(durable),
            syncing,
            last_group: 0,
            last_sync: Duration::ZERO,
            waiters: waiters
                .iter()
                .map(|&(target, lead)| Waiter {
                    target: Lsn(target),
                    lead,
                    thread: std::thread::current(),
                    woken: Arc::new(AtomicBool::new(false)),
                })
                .collect(),
        }
    }

    proptest! {
        /// After a sync: every covered waiter is woken; of the others, exactly the first that
        /// may lead when no sync runs (none while one runs); the rest stay, in order, unwoken.
        /// With `all`, everyone is woken.
        #[test]
        fn wakes_the_covered_and_one_next_leader(
            durable in 0u64..20,
            syncing: bool,
            all: bool,
            waiters in proptest::collection::vec((0u64..30, any::<bool>()), 0..12),
        ) {
            let mut st = state(durable, syncing, &waiters);
            let flags: Vec<Arc<AtomicBool>> =
                st.waiters.iter().map(|w| Arc::clone(&w.woken)).collect();
            let woken = release_waiters(&mut st, all);
            let leader = (!all && !syncing)
                .then(|| waiters.iter().position(|&(t, lead)| lead && t > durable))
                .flatten();
            let expected: Vec<bool> = waiters
                .iter()
                .enumerate()
                .map(|(i, &(t, _))| all || t <= durable || Some(i) == leader)
                .collect();
            let seen: Vec<bool> = flags.iter().map(|f| f.load(Ordering::Acquire)).collect();
            prop_assert_eq!(&seen, &expected);
            prop_assert_eq!(woken.len(), expected.iter().filter(|w| **w).count());
            let left: Vec<(u64, bool)> =
                st.waiters.iter().map(|w| (w.target.0, w.lead)).collect();
            let kept: Vec<(u64, bool)> = waiters
                .iter()
                .zip(&expected)
                .filter(|(_, w)| !**w)
                .map(|(x, _)| *x)
                .collect();
            prop_assert_eq!(left, kept);
        }
    }
}
