//! What the handlers, the StatsD listener and the connection loop share.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ingestor::{Ingestor, SeriesHandle};
use ingestor_protocols::line_cache::SeriesCache;
use ingestor_protocols::remote_write::MetricType;

use crate::ServerConfig;

/// The server's own counters, exposed under `ingestor_*` on `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) tls_handshake_errors: AtomicU64,
    pub(crate) timeouts_header: AtomicU64,
    pub(crate) timeouts_body: AtomicU64,
    pub(crate) timeouts_idle: AtomicU64,
    pub(crate) timeouts_write: AtomicU64,
    pub(crate) requests: AtomicU64,
    /// Requests answered 4xx.
    pub(crate) client_errors: AtomicU64,
    /// Requests answered 5xx.
    pub(crate) server_errors: AtomicU64,
    pub(crate) over_budget: AtomicU64,
    pub(crate) points_written: AtomicU64,
    pub(crate) statsd_packets: AtomicU64,
    pub(crate) statsd_bad_lines: AtomicU64,
    pub(crate) statsd_dropped_packets: AtomicU64,
    pub(crate) statsd_batches: AtomicU64,
    /// DogStatsD events received well formed (counted, not stored).
    pub(crate) statsd_events: AtomicU64,
    /// DogStatsD service checks received well formed (counted, not stored).
    pub(crate) statsd_service_checks: AtomicU64,
    pub(crate) rw_samples: AtomicU64,
    pub(crate) rw_refused: AtomicU64,
    pub(crate) rw_stale_markers: AtomicU64,
    pub(crate) rw_exemplars_dropped: AtomicU64,
    /// OTLP data points written.
    pub(crate) otlp_data_points: AtomicU64,
    /// OTLP data points refused (reported in `partial_success`).
    pub(crate) otlp_rejected: AtomicU64,
}

/// The memory budget of request bodies being read and parsed.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget { limit, used: AtomicUsize::new(0) }
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `n` more bytes for `lease`, or refuses if that would go over the limit.
    pub(crate) fn grow(&self, lease: &mut Lease, n: usize) -> bool {
        let mut used = self.used.load(Relaxed);
        loop {
            let Some(next) = used.checked_add(n).filter(|&next| next <= self.limit) else {
                return false;
            };
            match self.used.compare_exchange_weak(used, next, Relaxed, Relaxed) {
                Ok(_) => {
                    lease.bytes += n;
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }
}

/// Bytes of the budget one request holds; given back on drop.
#[derive(Debug)]
pub(crate) struct Lease {
    budget: Arc<AppState>,
    pub(crate) bytes: usize,
}

impl Lease {
    pub(crate) fn new(state: &Arc<AppState>) -> Self {
        Lease { budget: Arc::clone(state), bytes: 0 }
    }

    /// Takes `n` more bytes of the budget; `false` if that would go over it.
    pub(crate) fn grow(&mut self, n: usize) -> bool {
        let state = Arc::clone(&self.budget);
        state.budget.grow(self, n)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.budget.used.fetch_sub(self.bytes, Relaxed);
    }
}

/// Logs at most once per second, counting what it held back.
#[derive(Debug, Default)]
pub(crate) struct RateLimitedLog {
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl RateLimitedLog {
    /// Calls `log` with the number of messages held back since the last one, if a second
    /// has passed since then.
    pub(crate) fn log(&self, log: impl FnOnce(u64)) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed().as_secs() >= 1) {
            *last = Some(Instant::now());
            drop(last);
            log(self.held_back.swap(0, Relaxed));
        } else {
            self.held_back.fetch_add(1, Relaxed);
        }
    }
}

/// How many line-protocol series caches: one per core (at least 2, at most 8).
fn line_caches() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8)
}

/// The nice value of the threads that answer reads: a scrape of a large store in a loop
/// then takes the CPU writers leave, instead of half of it.
const READ_NICE: i32 = 10;

/// Shared by everything the server runs.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) config: ServerConfig,
    /// Set once recovery is done.
    pub(crate) db: OnceLock<Arc<Ingestor>>,
    /// Set once recovery is done, when forwarding is configured.
    pub(crate) forwarder: OnceLock<Arc<ingestor_forward::Forwarder>>,
    pub(crate) counters: Counters,
    pub(crate) budget: Budget,
    pub(crate) statsd_log: RateLimitedLog,
    pub(crate) write_log: RateLimitedLog,
    /// The threads writes run on.
    pub(crate) pool: crate::pool::Pool,
    /// The threads reads (queries, `/metrics`) run on, at a lower priority than writes.
    pub(crate) read_pool: crate::pool::Pool,
    /// Remote write 1.0 metadata: the type of each metric family a sender described.
    pub(crate) rw_metadata: Mutex<std::collections::HashMap<String, MetricType>>,
    /// Series named by line-protocol bodies, by their text, with their engine handles: one
    /// cache per core, each learning every series, so that bodies parse in parallel.
    pub(crate) line_caches: Vec<Mutex<SeriesCache<SeriesHandle>>>,
    /// Remote-write series by their labels as sent, with their handles: one cache per core.
    pub(crate) rw_caches: Vec<Mutex<crate::rw_cache::RwCache>>,
}

impl AppState {
    pub(crate) fn new(config: ServerConfig) -> Self {
        let budget = Budget::new(config.limits.parse_memory_bytes);
        AppState {
            pool: crate::pool::Pool::new(
                config.limits.blocking_threads,
                std::time::Duration::from_secs(2),
                "ingestor-write",
                0,
            ),
            read_pool: crate::pool::Pool::new(
                config.limits.read_threads,
                std::time::Duration::from_secs(2),
                "ingestor-read",
                READ_NICE,
            ),
            rw_metadata: Mutex::new(std::collections::HashMap::new()),
            rw_caches: (0..line_caches())
                .map(|_| Mutex::new(crate::rw_cache::RwCache::new(config.line_cache_series)))
                .collect(),
            line_caches: (0..line_caches())
                .map(|_| Mutex::new(SeriesCache::new(config.line_cache_series)))
                .collect(),
            config,
            db: OnceLock::new(),
            forwarder: OnceLock::new(),
            counters: Counters::default(),
            budget,
            statsd_log: RateLimitedLog::default(),
            write_log: RateLimitedLog::default(),
        }
    }
}
