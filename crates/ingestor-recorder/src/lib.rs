//! A durable recorder for the [`metrics`] crate over [`ingestor`]: a service's own
//! `counter!`, `gauge!` and `histogram!` survive its restarts, `kill -9` included, exactly up
//! to the last flush.
//!
//! ```
//! use std::sync::Arc;
//! use ingestor::{Config, Ingestor};
//! use ingestor_recorder::IngestorRecorder;
//! use metrics::{counter, gauge, histogram};
//!
//! let dir = tempfile::tempdir()?;
//! let (db, _) = Ingestor::open(dir.path(), Config::default())?;
//! let recorder = IngestorRecorder::new(Arc::new(db))?; // flushes every 100 ms
//! // In a service: `recorder.install()?` makes it the global recorder.
//! metrics::with_local_recorder(&recorder, || {
//!     counter!("jobs_done", "queue" => "mail").increment(3);
//!     gauge!("workers").set(4.0);
//!     histogram!("job_seconds").record(0.02);
//! });
//! recorder.flush()?; // what the flusher thread does every interval
//! let text = recorder.render(); // what `/metrics` serves
//! assert!(text.contains("jobs_done_total{queue=\"mail\"} 3\n"));
//! assert!(text.contains("workers 4\n"));
//! recorder.shutdown()?; // a last flush; dropping it does the same
//!
//! // The next run continues the totals (here after a clean stop; after `kill -9`, every
//! // increment up to the last completed flush is there).
//! let (db, _) = Ingestor::open(dir.path(), Config::default())?;
//! let recorder = IngestorRecorder::new(Arc::new(db))?;
//! metrics::with_local_recorder(&recorder, || counter!("jobs_done", "queue" => "mail").increment(1));
//! recorder.flush()?;
//! assert!(recorder.render().contains("jobs_done_total{queue=\"mail\"} 4\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! - **The hot path is atomics.** A registered handle is an `Arc` of atomics: a counter is
//!   eight cache-line stripes of `AtomicU64` (each thread adds to its own, so threads do not
//!   fight over one line), a gauge an `AtomicU64` of `f64` bits updated by compare-and-swap
//!   plus a changed flag, a histogram one `AtomicU64` per fixed bucket plus the sum's `f64`
//!   bits. No lock, no allocation, no I/O after registration (`counter.absolute` alone takes
//!   a lock, to raise the total without losing concurrent increments).
//! - **Registration** (the first `counter!` of a key, or every one when the handle is not
//!   kept) looks the key up in a map under a read lock; a new key is made a valid series key
//!   (see below), checked against the series' kind in the ingestor, and its recovered state
//!   read: a counter continues its total, a gauge its value.
//! - **The flusher thread** runs a round every interval ([`DEFAULT_FLUSH_INTERVAL`],
//!   100 ms): it takes what changed and logs it as one batch (split at
//!   [`ingestor::MAX_BATCH_POINTS`]) through [`ingestor::Ingestor::ingest_by_handle`]:
//!   - a counter's increments since the last logged mark as `CounterAdd(delta)`. Its
//!     `absolute(n)` ("at least n") adds the difference between `n` and the current total,
//!     so both become deltas: the counter never logs `CounterSet`, which would count a reset
//!     when below, and would overwrite adds that others made;
//!   - a gauge that changed as `GaugeSet(value)` (its whole value: increments and sets of a
//!     round collapse to one write);
//!   - a histogram's observations since the last round as `HistogramAdd` over its fixed
//!     bounds ([`DEFAULT_BUCKETS`] unless [`RecorderBuilder::buckets`] or
//!     [`RecorderBuilder::buckets_for`] say otherwise): memory stays bounded whatever the
//!     rate, with no sample buffer.
//!
//!   A metric registered for a series without state is logged at zero on the first round,
//!   so that it shows from the start. Timestamps come from the wall clock and never go
//!   backwards.
//! - **Shutdown** ([`IngestorRecorder::shutdown`] or drop) stops the thread and flushes a
//!   last time. Handles registered through an installed global recorder keep accepting
//!   updates afterwards, but nothing logs them.
//!
//! # Guarantees
//!
//! - **Exact across crashes, up to one interval.** What the ingestor acknowledged survives
//!   as its [`ingestor::SyncPolicy`] says: *written* acknowledgements (every policy) survive
//!   a process crash, *durable* ones (`SyncPolicy::Always`) a power cut. After `kill -9` and
//!   a restart, a counter's total is every increment made up to the start of the last flush
//!   round that completed: at most about one interval of increments is missing (plus the
//!   time a round takes), and nothing is counted twice. [`RecorderStats::last_complete_round`]
//!   tells a process which of its updates are logged; `tests/kill.rs` kills a child process
//!   and checks all of this.
//! - **Continues, never restarts, the totals.** Deltas add to the recovered state, so the
//!   exposed counter is monotonic across restarts (no reset for Prometheus to detect).
//! - **Errors never panic and lose nothing silently.** A batch the ingestor refuses as a
//!   whole (I/O, a full disk, a poisoned log) is counted ([`RecorderStats::flush_errors`],
//!   [`RecorderStats::last_error`]) and what it held is kept and logged by a later round. A
//!   series deleted meanwhile (by a time-to-live, say) is resolved again. Dropped for good,
//!   and counted in [`RecorderStats::refused_points`]: a gauge set to NaN or an infinity,
//!   histogram observations that are not finite, a histogram round whose sum overflowed, and
//!   the updates of a series whose kind in the ingestor conflicts (then never logged again).
//!   What is recorded after the last flush of a process that dies is lost (the window above).
//!
//! # Choices
//!
//! - Names are made valid Prometheus names ([`metric_name`]: `http.requests` becomes
//!   `http_requests`), label names likewise; labels with an empty value are dropped;
//!   [`RecorderBuilder::global_label`] adds labels to every series (a metric's own label of
//!   the same name wins). A key that still cannot be a series key, or whose series has
//!   another kind (in the ingestor, or registered here as another kind), gets a handle that
//!   records nothing, counted in [`RecorderStats::refused_registrations`].
//! - Counters count whole increments (`u64`) and the ingestor holds totals as `f64`: totals
//!   are exact up to 2^53.
//! - A histogram whose stored bounds differ from the recorder's (the buckets were changed
//!   between runs) is replaced by the first round's observations: the ingestor treats a
//!   distribution over other bounds as a reset.
//! - [`IngestorRecorder::render`] shows every series of the ingestor, as the facade's
//!   exposition does: give the recorder an ingestor (a data directory) of its own. Units
//!   given to `describe_*!` are ignored; descriptions replace the generic `# HELP` text.
//! - [`IngestorRecorder::serve`] is a minimal blocking HTTP endpoint (one thread, one
//!   connection at a time, `GET /metrics`); no async runtime is pulled in.
#![forbid(unsafe_code)]

mod cells;
mod recorder;
mod serve;

pub use recorder::{
    DEFAULT_BUCKETS, DEFAULT_FLUSH_INTERVAL, Error, IngestorRecorder, RecorderBuilder,
    RecorderStats, SharedRecorder, metric_name,
};
pub use serve::MetricsServer;

/// The crate README's example, compiled and run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
