//! Forwarding for `ingestor`: what an ingestor holds, sent on to a distributed time-series
//! store (VictoriaMetrics, Mimir, Thanos, Cortex, Prometheus) over Prometheus remote write,
//! through a durable outbox, so that nothing acknowledged to a client is lost on the way.
//!
//! - Every flush interval the series changed since the last flush become samples (what
//!   `/metrics` shows for them, stamped with each series' last update), encoded once as
//!   remote-write 1.0 requests and appended to the *outbox*: a segment log of its own
//!   (`ingestor-wal`: frames, CRC32C, recovery) under `outbox/` in the data directory, with a
//!   marker recording the ingest-log LSN the flush covered. After a crash the next flush
//!   takes every series changed after the last durable marker.
//! - One sender per destination reads the outbox from its cursor and POSTs each request in
//!   order; the cursor moves only after a 2xx (or a 4xx, which drops the request, counted)
//!   and is persisted atomically (`outbox/cursor-<name>`), so after any crash a destination
//!   resumes where it was, sending again at most the requests of its cursor window
//!   ([`ForwardConfig::cursor_window`], 8) around the crash.
//! - Segments go once every destination's cursor is past them. Each destination has a byte
//!   budget with a policy: [`BudgetPolicy::Block`] (the server refuses writes) or
//!   [`BudgetPolicy::DropOldest`] (counted).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ingestor::{Config, Ingestor, Op, SeriesKey, StdFs, Timestamp, Update};
//! use ingestor_forward::{Destination, ForwardConfig, Forwarder};
//!
//! let dir = tempfile::tempdir()?;
//! let (db, _) = Ingestor::open(dir.path().join("data"), Config::default())?;
//! let db = Arc::new(db);
//! let mut config = ForwardConfig::default();
//! // Nothing listens there: the request waits in the outbox, retried.
//! config.destinations = vec![Destination::new("vm", "http://127.0.0.1:9/api/v1/write")?];
//! let forwarder =
//!     Forwarder::start(Arc::clone(&db), Arc::new(StdFs::new()), &dir.path().join("outbox"), config)?;
//! let key = SeriesKey::new("requests", [("code", "200")])?;
//! db.ingest(&[Update::new(key, Timestamp(1_700_000_000_000), Op::CounterAdd(1.0))?])?;
//! forwarder.flush()?; // what the flush interval does
//! let stats = &forwarder.stats()[0];
//! assert_eq!((stats.name.as_str(), stats.pending_samples), ("vm", 1));
//! forwarder.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

#[cfg(ingestor_deliberate_bugs)]
mod bugs;
mod config;
pub mod cursor;
mod outbox;
mod samples;
mod sender;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ingestor::{Fs, Ingestor, Lsn};
use ingestor_protocols::remote_write::MetricType;
use ingestor_protocols::remote_write_writer::WriteRequestWriter;

pub use config::{BudgetPolicy, Destination, ForwardConfig};
use outbox::{Lane, Outbox, Request};
use sender::{Keeper, Sender};

/// Why forwarding could not start or flush.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The configuration breaks a rule.
    #[error("forwarding: {0}")]
    Config(String),
    /// The outbox log failed (open, append, sync, delete).
    #[error("forwarding: the outbox: {0}")]
    Outbox(#[source] ingestor_wal::WalError),
    /// The ingest log could not be synced before a flush (the flush is not made).
    #[error("forwarding: syncing the ingest log before a flush: {0}")]
    Ingest(String),
    /// A destination's cursor file is damaged or unreadable.
    #[error("forwarding: {0}")]
    Cursor(String),
    /// A file-system operation failed.
    #[error("forwarding: {op} {path}: {reason}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        reason: String,
    },
}

impl ForwardError {
    pub(crate) fn io(op: &'static str, path: &Path, e: &std::io::Error) -> ForwardError {
        ForwardError::Io { op, path: path.to_path_buf(), reason: e.to_string() }
    }
}

/// A destination's counters.
#[derive(Debug, Default)]
pub(crate) struct DestStats {
    requests_sent: AtomicU64,
    samples_sent: AtomicU64,
    retries: AtomicU64,
    requests_dropped: AtomicU64,
    dropped_rejected: AtomicU64,
    dropped_budget: AtomicU64,
    send_nanos: AtomicU64,
    sends: AtomicU64,
    /// Each shard's cursor as its sender moved it.
    acked: Vec<AtomicU64>,
    /// Each shard's cursor as persisted.
    cursor: Vec<AtomicU64>,
    /// Where the shard layout changes among the requests waiting at the start: a request at
    /// or above a boundary waits until every shard's stored cursor has passed it (see
    /// `Outbox::layout_boundaries`).
    boundaries: Vec<Lsn>,
    /// Held while a shard decides to drop a request under `drop_oldest` (so that only the
    /// shard holding the oldest request drops, one at a time).
    budget: Mutex<()>,
    last_error: Mutex<Option<String>>,
}

impl DestStats {
    fn new(cursors: &[Lsn], boundaries: Vec<Lsn>) -> DestStats {
        DestStats {
            boundaries,
            acked: cursors.iter().map(|c| AtomicU64::new(c.0)).collect(),
            cursor: cursors.iter().map(|c| AtomicU64::new(c.0)).collect(),
            ..DestStats::default()
        }
    }

    /// The lane of shard `i` of this destination.
    fn lane(&self, i: usize) -> Lane {
        Lane { index: i as u16, of: self.acked.len() as u16 }
    }

    fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
    }
}

/// What the flusher, the senders and the keepers share.
pub(crate) struct Shared {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    config: ForwardConfig,
    outbox: Outbox,
    stop: AtomicBool,
    /// Bumped at each flush; senders waiting for records wait on it.
    flushed: Mutex<u64>,
    flushed_cv: Condvar,
}

impl Shared {
    fn wait_for_records(&self, timeout: Duration) {
        let g = self.flushed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = *g;
        let _ = self
            .flushed_cv
            .wait_timeout_while(g, timeout, |n| *n == seen && !self.stop.load(Relaxed));
    }

    fn wake(&self) {
        *self.flushed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.flushed_cv.notify_all();
    }

    /// Outbox bytes not yet settled for a destination, over its shards; shard `shard`
    /// counted from `from` (its sender's view) if given.
    fn pending_bytes(&self, stats: &DestStats, shard: Option<(usize, Lsn)>) -> u64 {
        (0..stats.acked.len())
            .map(|i| {
                let at = match shard {
                    Some((s, at)) if s == i => at,
                    _ => Lsn(stats.acked[i].load(Relaxed)),
                };
                self.outbox.pending_bytes(stats.lane(i), at)
            })
            .sum()
    }
}

/// A destination's figures, as [`Forwarder::stats`] reports them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DestinationStats {
    /// The destination's name.
    pub name: String,
    /// Outbox bytes not yet settled for it.
    pub pending_bytes: u64,
    /// Requests not yet settled for it.
    pub pending_requests: u64,
    /// Samples in those requests.
    pub pending_samples: u64,
    /// Now minus the oldest unsent sample's time, in seconds (0 with nothing pending).
    pub lag_seconds: f64,
    /// Requests answered 2xx.
    pub requests_sent: u64,
    /// Samples in them.
    pub samples_sent: u64,
    /// Attempts that were retried (5xx, 429, network errors).
    pub retries: u64,
    /// Samples in requests the receiver refused with a 4xx (dropped, not retried).
    pub samples_dropped_rejected: u64,
    /// Samples skipped under [`BudgetPolicy::DropOldest`].
    pub samples_dropped_budget: u64,
    /// Seconds spent in requests answered 2xx, and how many.
    pub send_seconds: (f64, u64),
    /// The outbox LSN of its next record, as persisted: the lowest of its shards' cursors.
    pub cursor: u64,
    /// Its senders (shards), each with a cursor.
    pub shards: usize,
    /// Whether its backlog is at the budget under [`BudgetPolicy::Block`].
    pub blocked: bool,
    /// The last error met, if any.
    pub last_error: Option<String>,
}

/// What an outbox holds, read offline ([`outbox_report`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OutboxReport {
    /// The ingest-log LSN the last durable flush covered.
    pub covered: Lsn,
    /// The first and the next outbox LSN.
    pub lsns: (Lsn, Lsn),
    /// Every cursor file: the destination's name (`NAME.SHARD` for a shard above 0), the
    /// outbox LSN of its next record, and what waits for it (bytes, requests, samples).
    pub destinations: Vec<(String, Lsn, u64, u64, u64)>,
}

/// Reads the outbox in `dir` and every destination's cursor, for `ingestor stats`. Opens
/// the outbox as forwarding does (recovering it: a torn tail is cut), so it must not run
/// beside a forwarder on the same directory (the outbox's lock refuses that).
///
/// # Errors
/// An outbox that does not open, a damaged cursor file.
pub fn outbox_report(fs: Arc<dyn Fs>, dir: &Path) -> Result<OutboxReport, ForwardError> {
    let outbox = Outbox::open(Arc::clone(&fs), dir, ForwardConfig::default().segment_bytes)?;
    let mut names: Vec<String> = fs
        .read_dir(dir)
        .map_err(|e| ForwardError::io("read_dir", dir, &e))?
        .into_iter()
        .filter_map(|e| cursor::parse_file_name(&e.name).map(|(n, _)| n.to_owned()))
        .collect();
    names.sort();
    names.dedup();
    let mut destinations = Vec::new();
    for name in names {
        let shards = cursor::read_shards(&*fs, dir, &name).map_err(ForwardError::Cursor)?;
        for (&shard, c) in &shards {
            let b = outbox.backlog(Lane { index: shard, of: c.shards }, c.next);
            let label = cursor::shard_name(&name, shard);
            destinations.push((label, c.next, b.bytes, b.requests, b.samples));
        }
    }
    Ok(OutboxReport {
        covered: outbox.covered(),
        lsns: (outbox.first_lsn(), outbox.next_lsn()),
        destinations,
    })
}

/// Flushes changed series into the outbox and runs one sender per destination.
pub struct Forwarder {
    shared: Arc<Shared>,
    db: Arc<Ingestor>,
    /// Each destination with its figures and a cursor keeper per shard.
    dests: Vec<(Destination, Arc<DestStats>, Vec<Arc<Keeper>>)>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    flush_lock: Mutex<()>,
    flushes: AtomicU64,
    flushed_series: AtomicU64,
    flush_errors: AtomicU64,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("dir", &self.shared.dir).finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Forwarder {
    /// Opens the outbox in `dir` (recovering it), reads each destination's cursor, and
    /// starts the flusher (every [`ForwardConfig::flush_interval`]) and the senders.
    ///
    /// # Errors
    /// An invalid configuration, an outbox that cannot be opened, a damaged cursor file
    /// (named: remove it to resend the destination's whole outbox).
    pub fn start(
        db: Arc<Ingestor>,
        fs: Arc<dyn Fs>,
        dir: &Path,
        config: ForwardConfig,
    ) -> Result<Arc<Forwarder>, ForwardError> {
        config.validate()?;
        let outbox = Outbox::open(Arc::clone(&fs), dir, config.segment_bytes)?;
        let mut cursors = Vec::new();
        for d in &config.destinations {
            cursors.push(start_cursors(&*fs, dir, &outbox, &d.name, config.shards)?);
        }
        let shared = Arc::new(Shared {
            fs,
            dir: dir.to_path_buf(),
            config: config.clone(),
            outbox,
            stop: AtomicBool::new(false),
            flushed: Mutex::new(0),
            flushed_cv: Condvar::new(),
        });
        let dests: Vec<_> = config
            .destinations
            .iter()
            .zip(&cursors)
            .map(|(d, at)| {
                let keepers = at.iter().map(|&at| Arc::new(Keeper::new(at))).collect();
                let from = at.iter().min().copied().unwrap_or(Lsn::FIRST);
                let boundaries = shared.outbox.layout_boundaries(config.shards as u16, from);
                (d.clone(), Arc::new(DestStats::new(at, boundaries)), keepers)
            })
            .collect();
        let forwarder = Arc::new(Forwarder {
            shared: Arc::clone(&shared),
            db,
            dests,
            threads: Mutex::new(Vec::new()),
            flush_lock: Mutex::new(()),
            flushes: AtomicU64::new(0),
            flushed_series: AtomicU64::new(0),
            flush_errors: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| ForwardError::Config(format!("starting a thread: {e}")))
        };
        for (i, (d, stats, keepers)) in forwarder.dests.iter().enumerate() {
            for (shard, keeper) in keepers.iter().enumerate() {
                let name = cursor::shard_name(&d.name, shard as u16);
                let (s, st, k, n) =
                    (Arc::clone(&shared), Arc::clone(stats), Arc::clone(keeper), name.clone());
                threads.push(spawn(
                    format!("fwd-keep-{name}"),
                    Box::new(move || k.run(&s, &n, shard, &st)),
                )?);
                let sender = Sender {
                    dest: d.clone(),
                    shard,
                    shared: Arc::clone(&shared),
                    stats: Arc::clone(stats),
                    keeper: Arc::clone(keeper),
                    agent: sender::agent(config.request_timeout),
                    rng: 0x9e37_79b9_7f4a_7c15
                        ^ (now_ms() as u64).wrapping_add((i * 1_000 + shard) as u64),
                };
                let at = cursors[i][shard];
                threads.push(spawn(format!("fwd-send-{name}"), Box::new(move || sender.run(at)))?);
            }
        }
        let f = Arc::clone(&forwarder);
        threads.push(spawn("fwd-flush".into(), Box::new(move || f.flush_loop()))?);
        *forwarder.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = threads;
        Ok(forwarder)
    }

    fn flush_loop(&self) {
        let interval = self.shared.config.flush_interval;
        let mut next = Instant::now() + interval;
        while !self.shared.stop.load(Relaxed) {
            let now = Instant::now();
            if now < next {
                std::thread::sleep((next - now).min(Duration::from_millis(100)));
                // Segments every cursor has passed go between flushes too.
                self.delete_sent();
                continue;
            }
            next = now + interval;
            if let Err(e) = self.flush() {
                self.flush_errors.fetch_add(1, Relaxed);
                tracing::error!("forward: flush failed (retried next interval): {e}");
            }
        }
    }

    /// Makes the series changed since the last flush samples in the outbox now, durably,
    /// and wakes the senders. Returns how many series it took.
    ///
    /// # Errors
    /// [`ForwardError::Outbox`]: nothing of the flush counts; the next flush takes its
    /// series again.
    pub fn flush(&self) -> Result<usize, ForwardError> {
        let _one = self.flush_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let frozen = self.db.memstore().freeze();
        let covered = frozen.lsn();
        let since = self.shared.outbox.covered();
        if covered <= since {
            return Ok(0);
        }
        // The marker will claim the ingest log up to `covered`: it must be durable there
        // first, or a power cut could hand those LSNs to other batches the next flushes
        // would then skip (a batch is applied before it is synced under every policy).
        #[cfg(ingestor_deliberate_bugs)]
        let skip = crate::bugs::on("marker-no-log-sync");
        #[cfg(not(ingestor_deliberate_bugs))]
        let skip = false;
        // Deliberate defect (`marker-no-log-sync`): the marker claims an unsynced log.
        if !skip {
            self.db.sync().map_err(|e| ForwardError::Ingest(e.to_string()))?;
        }
        let max = self.shared.config.max_samples_per_request;
        let shards = self.shared.config.shards;
        let mut lanes: Vec<FlushLane> = (0..shards).map(|_| FlushLane::new()).collect();
        let mut requests = Vec::new();
        let mut series = 0usize;
        for record in frozen.changed_since(since) {
            let shard = (series_hash(&record) % shards as u64) as u16;
            let lane = &mut lanes[usize::from(shard)];
            if lane.writer.sample_count() + samples::sample_count(&record) > max {
                lane.emit((shard, shards as u16), &mut requests);
            }
            let family = samples::write_series(&record, &mut lane.writer);
            if lane.families.last().is_none_or(|l| l.0 != family.0) {
                lane.families.push(family);
            }
            lane.oldest = lane.oldest.min(record.last_update.0);
            series += 1;
        }
        for (shard, lane) in lanes.iter_mut().enumerate() {
            lane.emit((shard as u16, shards as u16), &mut requests);
        }
        self.shared.outbox.append_flush(&requests, covered, now_ms())?;
        self.flushes.fetch_add(1, Relaxed);
        self.flushed_series.fetch_add(series as u64, Relaxed);
        self.shared.wake();
        Ok(series)
    }

    fn delete_sent(&self) {
        let Some(min) = self.dests.iter().flat_map(|(_, _, k)| k).map(|k| k.durable()).min() else {
            return;
        };
        if let Err(e) = self.shared.outbox.delete_below(min) {
            tracing::warn!("forward: deleting sent outbox segments: {e}");
        }
    }

    /// Whether new writes should wait: the reason when a destination under
    /// [`BudgetPolicy::Block`] has its budget's worth of bytes waiting.
    #[must_use]
    pub fn blocked(&self) -> Option<String> {
        let c = &self.shared.config;
        if c.budget_policy != BudgetPolicy::Block {
            return None;
        }
        self.dests.iter().find_map(|(d, stats, _)| {
            let pending = self.shared.pending_bytes(stats, None);
            (pending >= c.budget_bytes).then(|| {
                format!(
                    "forwarding to {} is {pending} bytes behind, at its budget of {} bytes",
                    d.name, c.budget_bytes
                )
            })
        })
    }

    /// Every destination's figures.
    #[must_use]
    pub fn stats(&self) -> Vec<DestinationStats> {
        let now = now_ms();
        let budget = self.shared.config.budget_bytes;
        let block = self.shared.config.budget_policy == BudgetPolicy::Block;
        self.dests
            .iter()
            .map(|(d, s, _)| {
                let backlog = (0..s.acked.len())
                    .map(|i| self.shared.outbox.backlog(s.lane(i), Lsn(s.acked[i].load(Relaxed))))
                    .fold(outbox::Backlog::default(), |a, b| a.plus(b));
                DestinationStats {
                    name: d.name.clone(),
                    pending_bytes: backlog.bytes,
                    pending_requests: backlog.requests,
                    pending_samples: backlog.samples,
                    lag_seconds: backlog
                        .oldest_ms
                        .map_or(0.0, |t| (now.saturating_sub(t)).max(0) as f64 / 1e3),
                    requests_sent: s.requests_sent.load(Relaxed),
                    samples_sent: s.samples_sent.load(Relaxed),
                    retries: s.retries.load(Relaxed),
                    samples_dropped_rejected: s.dropped_rejected.load(Relaxed),
                    samples_dropped_budget: s.dropped_budget.load(Relaxed),
                    send_seconds: (s.send_nanos.load(Relaxed) as f64 / 1e9, s.sends.load(Relaxed)),
                    cursor: s.cursor.iter().map(|c| c.load(Relaxed)).min().unwrap_or(0),
                    shards: s.cursor.len(),
                    blocked: block && backlog.bytes >= budget,
                    last_error: s
                        .last_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone(),
                }
            })
            .collect()
    }

    /// The forwarding figures in the exposition format, for `/metrics`
    /// (`ingestor_forward_*`, one series per destination).
    pub fn write_metrics(&self, out: &mut String) {
        let stats = self.stats();
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&DestinationStats) -> f64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for s in &stats {
                    let _ = writeln!(out, "{name}{{destination=\"{}\"}} {}", s.name, value(s));
                }
            };
        family(
            "ingestor_forward_pending_bytes",
            "gauge",
            "Outbox bytes waiting for the destination.",
            &|s| s.pending_bytes as f64,
        );
        family(
            "ingestor_forward_pending_requests",
            "gauge",
            "Requests waiting for the destination.",
            &|s| s.pending_requests as f64,
        );
        family(
            "ingestor_forward_pending_samples",
            "gauge",
            "Samples waiting for the destination.",
            &|s| s.pending_samples as f64,
        );
        family(
            "ingestor_forward_lag_seconds",
            "gauge",
            "Now minus the oldest unsent sample's time.",
            &|s| s.lag_seconds,
        );
        family("ingestor_forward_requests_sent_total", "counter", "Requests answered 2xx.", &|s| {
            s.requests_sent as f64
        });
        family(
            "ingestor_forward_samples_sent_total",
            "counter",
            "Samples in requests answered 2xx.",
            &|s| s.samples_sent as f64,
        );
        family(
            "ingestor_forward_retries_total",
            "counter",
            "Attempts retried after a 5xx, a 429 or a network error.",
            &|s| s.retries as f64,
        );
        family(
            "ingestor_forward_send_seconds_sum",
            "counter",
            "Seconds spent in requests answered 2xx.",
            &|s| s.send_seconds.0,
        );
        family(
            "ingestor_forward_send_seconds_count",
            "counter",
            "Requests answered 2xx (for the mean send latency).",
            &|s| s.send_seconds.1 as f64,
        );
        family(
            "ingestor_forward_blocked",
            "gauge",
            "1 while the destination's backlog is at its budget under the block policy (writes are refused).",
            &|s| f64::from(u8::from(s.blocked)),
        );
        family(
            "ingestor_forward_budget_bytes",
            "gauge",
            "The destination's outbox byte budget.",
            &|_| self.shared.config.budget_bytes as f64,
        );
        let _ = writeln!(
            out,
            "# HELP ingestor_forward_samples_dropped_total Samples dropped: refused by the receiver (4xx) or over the budget (drop_oldest).\n# TYPE ingestor_forward_samples_dropped_total counter"
        );
        for s in &stats {
            for (reason, n) in
                [("rejected", s.samples_dropped_rejected), ("budget", s.samples_dropped_budget)]
            {
                let _ = writeln!(
                    out,
                    "ingestor_forward_samples_dropped_total{{destination=\"{}\",reason=\"{reason}\"}} {n}",
                    s.name
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP ingestor_forward_last_error_info The last error met sending to the destination.\n# TYPE ingestor_forward_last_error_info gauge"
        );
        for s in &stats {
            if let Some(e) = &s.last_error {
                let e: String = e.chars().take(200).collect();
                let e = e.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', " ");
                let _ = writeln!(
                    out,
                    "ingestor_forward_last_error_info{{destination=\"{}\",error=\"{e}\"}} 1",
                    s.name
                );
            }
        }
        let flushes = self.flushes.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP ingestor_forward_flushes_total Flushes of changed series into the outbox.\n# TYPE ingestor_forward_flushes_total counter\ningestor_forward_flushes_total {flushes}\n# HELP ingestor_forward_flushed_series_total Series taken by flushes.\n# TYPE ingestor_forward_flushed_series_total counter\ningestor_forward_flushed_series_total {}\n# HELP ingestor_forward_flush_errors_total Flushes that failed (their series go with the next one).\n# TYPE ingestor_forward_flush_errors_total counter\ningestor_forward_flush_errors_total {}\n# HELP ingestor_forward_outbox_samples_total Samples appended to the outbox since it was opened.\n# TYPE ingestor_forward_outbox_samples_total counter\ningestor_forward_outbox_samples_total {}",
            self.flushed_series.load(Relaxed),
            self.flush_errors.load(Relaxed),
            self.shared.outbox.total_samples(),
        );
    }

    /// Flushes once more, then stops the senders (a request in flight is abandoned: it is
    /// sent again on the next start) and persists every cursor.
    pub fn stop(&self) {
        if let Err(e) = self.flush() {
            tracing::warn!("forward: the last flush failed: {e}");
        }
        self.stop_now();
    }

    /// Stops without a last flush: the series changed since the last flush go with the
    /// first flush of the next start (as after a crash, which this is for testing).
    pub fn stop_now(&self) {
        self.shared.stop.store(true, Relaxed);
        self.shared.wake();
        for k in self.dests.iter().flat_map(|(_, _, k)| k) {
            k.stop();
        }
        let threads = std::mem::take(
            &mut *self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in threads {
            let _ = t.join();
        }
    }
}

/// The requests of one shard that a flush is writing.
struct FlushLane {
    writer: WriteRequestWriter,
    families: Vec<(String, MetricType)>,
    oldest: i64,
}

impl FlushLane {
    fn new() -> FlushLane {
        FlushLane { writer: WriteRequestWriter::new(), families: Vec::new(), oldest: i64::MAX }
    }

    /// Ends the request being written (if any), with the metadata of its families.
    fn emit(&mut self, (shard, shards): (u16, u16), requests: &mut Vec<Request>) {
        if self.writer.is_empty() {
            return;
        }
        self.families.sort_by(|a, b| a.0.cmp(&b.0));
        self.families.dedup_by(|a, b| a.0 == b.0);
        for (f, t) in self.families.iter().filter(|(_, t)| *t != MetricType::Other) {
            self.writer.metadata(f, *t);
        }
        self.families.clear();
        let samples = self.writer.sample_count() as u32;
        requests.push(Request {
            shard,
            shards,
            samples,
            oldest_ms: self.oldest,
            body: self.writer.finish(),
        });
        self.oldest = i64::MAX;
    }
}

/// A series' shard hash: CRC32C of its name and labels, the same in every run (so that a
/// series stays on its shard across restarts, and its samples in order).
fn series_hash(record: &ingestor::SeriesRecord) -> u64 {
    let mut crc = crc32c::crc32c(record.key.name().as_bytes());
    for l in record.key.labels() {
        crc = crc32c::crc32c_append(crc, &[0xff]);
        crc = crc32c::crc32c_append(crc, l.name().as_bytes());
        crc = crc32c::crc32c_append(crc, &[0xfe]);
        crc = crc32c::crc32c_append(crc, l.value().as_bytes());
    }
    u64::from(crc)
}

/// Where each shard of destination `name` starts, as many as it runs this time.
///
/// Each cursor file records the shard count of the run that wrote it. With the same count
/// as configured, each shard starts at its file (a missing file, removed because it was
/// damaged: at the outbox's start, sending that shard's requests again). With another
/// count, the count changes only if nothing waits for the destination (every shard's
/// requests settled): then every new shard starts at the outbox's end, its file written
/// before the files beyond the new count are removed. While requests wait, the destination
/// keeps the count of its files for this run (a stored shard `s` goes to `s % count`), so
/// that no shard's cursor is ever taken for another's; the new count applies at a start with
/// nothing waiting. Files of two counts (a start that stopped while changing the count, which
/// happens only with nothing waiting and before any flush) are settled the same way.
fn start_cursors(
    fs: &dyn Fs,
    dir: &Path,
    outbox: &Outbox,
    name: &str,
    configured: usize,
) -> Result<Vec<Lsn>, ForwardError> {
    let damaged = |e: String| {
        ForwardError::Cursor(format!(
            "destination {name}: {e} (remove the file to send that shard's outbox again)"
        ))
    };
    let found = cursor::read_shards(fs, dir, name).map_err(damaged)?;
    let (first, next) = (outbox.first_lsn(), outbox.next_lsn());
    let counts: std::collections::BTreeSet<u16> = found.values().map(|c| c.shards).collect();
    let clamp = |i: usize, at: Lsn| {
        let clamped = at.clamp(first, next);
        if clamped != at {
            // Beyond the outbox only if records it counted on are gone (damage, or a removed
            // outbox): resume within it, loudly.
            tracing::error!(
                "forward {name}: shard {i}'s cursor ({}) is outside the outbox ({}..{}); \
                 resuming at {}",
                at.0,
                first.0,
                next.0,
                clamped.0
            );
        }
        clamped
    };
    let (count, cursors): (usize, Vec<Lsn>) = match counts.iter().next() {
        // A new destination: what the outbox holds now.
        None => (configured, vec![first; configured]),
        Some(&last) if counts.len() == 1 => {
            let last = usize::from(last);
            let own: Vec<Lsn> = (0..last)
                .map(|i| clamp(i, found.get(&(i as u16)).map_or(first, |c| c.next)))
                .collect();
            let waiting = own.iter().enumerate().any(|(i, &at)| {
                outbox.backlog(Lane { index: i as u16, of: last as u16 }, at).requests > 0
            });
            #[cfg(ingestor_deliberate_bugs)]
            if crate::bugs::on("forward-shard-own-cursor") && last != configured && waiting {
                // The defect: the count changes although requests wait, each new shard at the
                // old cursor of its number, passing over requests of old shards behind it.
                let mut taken: Vec<Lsn> = own.clone();
                taken.resize(configured, first);
                taken.truncate(configured);
                return finish_start(fs, dir, name, &found, configured, taken);
            }
            if last == configured || waiting {
                if last != configured {
                    tracing::warn!(
                        "forward {name}: requests wait for it, so it keeps its {last} shards for \
                         this run; {configured} apply at a start with nothing waiting"
                    );
                }
                (last, own)
            } else {
                (configured, vec![next; configured])
            }
        }
        // Two counts: a change of count stopped half-way (nothing was waiting then).
        Some(_) => (configured, vec![next; configured]),
    };
    finish_start(fs, dir, name, &found, count, cursors)
}

/// Writes each of the `cursors.len()` shard cursors that differs from its file (or whose file
/// has another count), then removes the files of shards beyond the count.
fn finish_start(
    fs: &dyn Fs,
    dir: &Path,
    name: &str,
    found: &std::collections::BTreeMap<u16, cursor::Cursor>,
    count: usize,
    cursors: Vec<Lsn>,
) -> Result<Vec<Lsn>, ForwardError> {
    for (i, &at) in cursors.iter().enumerate() {
        let shard = i as u16;
        let same =
            found.get(&shard).is_some_and(|c| c.next == at && usize::from(c.shards) == count);
        if !same {
            cursor::write(fs, dir, &cursor::shard_name(name, shard), at, count as u16)
                .map_err(ForwardError::Cursor)?;
        }
    }
    let stale: Vec<u16> = found.keys().copied().filter(|s| usize::from(*s) >= count).collect();
    for &shard in &stale {
        let path = cursor::path(dir, &cursor::shard_name(name, shard));
        fs.remove_file(&path).map_err(|e| ForwardError::io("remove", &path, &e))?;
    }
    if !stale.is_empty() {
        fs.sync_dir(dir).map_err(|e| ForwardError::io("sync", dir, &e))?;
    }
    Ok(cursors)
}
