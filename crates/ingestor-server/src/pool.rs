//! The threads engine calls run on, off the async workers.
//!
//! tokio's blocking pool wakes whichever idle thread the OS picks, so a steady trickle of
//! work keeps every thread a burst once started alive forever. Here the most recently idle
//! thread takes the next job (a stack, not a queue), so threads beyond what the load needs
//! sit unused, time out and exit: after a burst, the pool shrinks back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

struct State {
    /// Idle threads, the most recently idle last.
    idle: Vec<(u64, SyncSender<Job>)>,
    /// Jobs waiting for a thread (all threads busy, at the maximum).
    queue: VecDeque<Job>,
    threads: usize,
    /// Jobs running or waiting.
    pending: usize,
}

struct Inner {
    state: Mutex<State>,
    drained: Condvar,
    max_threads: usize,
    keep_alive: Duration,
    next_id: AtomicU64,
    name: &'static str,
    /// The nice value of the pool's threads (0: the process's own).
    nice: i32,
}

/// A bounded pool of threads that grows with the load and shrinks when it passes.
#[derive(Clone)]
pub(crate) struct Pool(Arc<Inner>);

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("max_threads", &self.0.max_threads).finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool of at most `max_threads` threads named `name`, each exiting after `keep_alive`
    /// without work, running at `nice` (higher is lower priority; Linux applies it per
    /// thread) so that one pool's work can yield the CPU to another's.
    pub(crate) fn new(
        max_threads: usize,
        keep_alive: Duration,
        name: &'static str,
        nice: i32,
    ) -> Pool {
        Pool(Arc::new(Inner {
            state: Mutex::new(State {
                idle: Vec::new(),
                queue: VecDeque::new(),
                threads: 0,
                pending: 0,
            }),
            drained: Condvar::new(),
            max_threads: max_threads.max(1),
            keep_alive,
            next_id: AtomicU64::new(0),
            name,
            nice,
        }))
    }

    /// Starts `f` on a pool thread at once; the future gives its result, or `None` if it
    /// panicked.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl Future<Output = Option<T>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let _ = tx.send(f());
        }));
        async move { rx.await.ok() }
    }

    fn submit(&self, job: Job) {
        let mut st = lock(&self.0.state);
        st.pending += 1;
        if let Some((_, worker)) = st.idle.pop() {
            drop(st);
            // An idle worker waits on its channel (capacity 1, empty while idle).
            let _ = worker.send(job);
            return;
        }
        if st.threads < self.0.max_threads {
            st.threads += 1;
            drop(st);
            let inner = Arc::clone(&self.0);
            let spawned = std::thread::Builder::new()
                .name(self.0.name.into())
                .spawn(move || worker(&inner, job));
            if spawned.is_err() {
                // No thread to be had: undo, the job is lost with its answer channel (the
                // request gets a 500).
                let mut st = lock(&self.0.state);
                st.threads -= 1;
                st.pending -= 1;
                self.0.drained.notify_all();
            }
            return;
        }
        st.queue.push_back(job);
    }

    /// Waits (up to `timeout`) until no job runs or waits; whether that happened.
    pub(crate) fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.0.state);
        while st.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self.0.drained.wait_timeout(st, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}

fn worker(inner: &Inner, first: Job) {
    if inner.nice != 0 {
        // Best effort: a lower priority needs no privilege, and a failure only costs fairness.
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), inner.nice);
    }
    let id = inner.next_id.fetch_add(1, Relaxed);
    let (tx, rx): (SyncSender<Job>, Receiver<Job>) = sync_channel(1);
    let mut job = Some(first);
    loop {
        if let Some(j) = job.take() {
            // A panicking job drops its answer channel; the thread goes on.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(j));
            let mut st = lock(&inner.state);
            st.pending -= 1;
            if st.pending == 0 {
                inner.drained.notify_all();
            }
            if let Some(next) = st.queue.pop_front() {
                job = Some(next);
                continue;
            }
            st.idle.push((id, tx.clone()));
        }
        match rx.recv_timeout(inner.keep_alive) {
            Ok(j) => job = Some(j),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                let mut st = lock(&inner.state);
                if let Some(at) = st.idle.iter().position(|(i, _)| *i == id) {
                    st.idle.remove(at);
                    st.threads -= 1;
                    return;
                }
                drop(st);
                // Taken off the idle stack by a submitter: its job is on the way.
                match rx.recv() {
                    Ok(j) => job = Some(j),
                    Err(_) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(pool: &Pool) -> usize {
        lock(&pool.0.state).threads
    }

    #[test]
    fn grows_with_a_burst_then_shrinks_under_a_trickle() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let pool = Pool::new(8, Duration::from_millis(200), "test-pool", 0);
        rt.block_on(async {
            let burst: Vec<_> = (0..8)
                .map(|i| {
                    let p = pool.clone();
                    tokio::spawn(async move {
                        p.run(move || {
                            std::thread::sleep(Duration::from_millis(100));
                            i
                        })
                        .await
                    })
                })
                .collect();
            let mut sum = 0;
            for b in burst {
                sum += b.await.unwrap().unwrap();
            }
            assert_eq!(sum, 28);
            assert_eq!(threads(&pool), 8);
            // A trickle, one job at a time: the same (most recently idle) thread takes each,
            // and the others time out.
            for _ in 0..20 {
                assert_eq!(pool.run(|| 1).await, Some(1));
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            assert!(threads(&pool) <= 2, "{} threads left", threads(&pool));
            // Beyond the maximum, jobs queue and all run.
            let many: Vec<_> = (0..40)
                .map(|_| {
                    let p = pool.clone();
                    tokio::spawn(async move { p.run(|| 1).await })
                })
                .collect();
            let mut n = 0;
            for m in many {
                n += m.await.unwrap().unwrap();
            }
            assert_eq!(n, 40);
            assert!(threads(&pool) <= 8);
            assert_eq!(pool.run(|| panic!("a job that panics")).await, None::<()>);
            assert_eq!(pool.run(|| 2).await, Some(2), "the pool goes on after a panic");
        });
        assert!(pool.wait_drained(Duration::from_secs(1)));
    }
}
