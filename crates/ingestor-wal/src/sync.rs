//! Group commit, and the background syncer of `SyncPolicy::Batch`.
//!
//! One caller at a time syncs (the leader); callers that arrive while a sync runs wait for
//! it, and the next leader's sync covers every write that preceded it. A failed sync poisons
//! the log: it is never retried into a success.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use ingestor_codec::Lsn;

use crate::error::{Result, WalError};
use crate::wal::{Shared, crash_points, lock};

/// Messages to the background syncer.
pub(crate) enum SyncMessage {
    /// A write happened: sync within one window.
    Wake,
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
            st = shared.synced.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
            continue;
        }
        st.syncing = true;
        drop(st);
        let outcome = lead_sync(shared);
        st = lock(&shared.sync);
        st.syncing = false;
        match outcome {
            Ok(upto) => {
                if upto > st.durable {
                    st.durable = upto;
                    shared.durable.store(upto.0, Ordering::Release);
                }
                shared.synced.notify_all();
                drop(st);
                // The sync happened; a crash here loses only the acknowledgement.
                shared.crash_point(crash_points::SYNC_AFTER)?;
                st = lock(&shared.sync);
            }
            Err(e) => {
                drop(st);
                return Err(shared.poison(e));
            }
        }
    }
}

/// Syncs the active segment; returns the LSN it covers (everything written before it began:
/// older segments were synced when they were closed).
fn lead_sync(shared: &Shared) -> Result<Lsn> {
    let (upto, file, segment) = {
        let w = lock(&shared.writer);
        (Lsn(w.next_lsn.0 - 1), Arc::clone(&w.file), w.segment)
    };
    shared.crash_point(crash_points::SYNC_BEFORE)?;
    let started = Instant::now();
    file.sync_data().map_err(|e| WalError::io("sync", shared.path(segment), e))?;
    let took = started.elapsed();
    shared.counters.sync_took(took);
    shared.listener.on_sync(upto, took);
    Ok(upto)
}

/// Starts the thread that syncs at most `window` after a write.
pub(crate) fn spawn_batch_syncer(shared: Arc<Shared>, window: Duration) -> Result<JoinHandle<()>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let _ = shared.wake.set(tx);
    std::thread::Builder::new()
        .name("ingestor-wal-sync".into())
        .spawn(move || {
            let sync_written = || {
                let target = Lsn(shared.written.load(Ordering::Acquire));
                // Errors poison the log; appenders see them.
                sync_to(&shared, target, true).is_ok()
            };
            loop {
                match rx.recv() {
                    Ok(SyncMessage::Wake) => {}
                    Ok(SyncMessage::Shutdown) | Err(_) => return,
                }
                let deadline = Instant::now() + window;
                loop {
                    match rx.recv_deadline(deadline) {
                        Ok(SyncMessage::Wake) => continue,
                        Ok(SyncMessage::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                            sync_written();
                            return;
                        }
                        Err(RecvTimeoutError::Timeout) => break,
                    }
                }
                if !sync_written() {
                    return;
                }
            }
        })
        .map_err(|e| WalError::io("spawn sync thread", "ingestor-wal-sync", e))
}
