//! `ingestor`: a crash-recoverable metrics ingestor. Metric updates (counters, gauges,
//! histograms, keyed by a metric name and labels) go in fast; the current state of every
//! series is kept in memory for instant reads; no acknowledged update is lost across a
//! crash, a `kill -9` or a power cut, at the durability level chosen.
//!
//! ```
//! use ingestor::{AckLevel, Config, Ingestor, Op, SeriesKey, SyncPolicy, Timestamp, Update};
//!
//! let dir = tempfile::tempdir()?;
//! let config = Config::default().sync_policy(SyncPolicy::Always);
//! let (db, _report) = Ingestor::open(dir.path(), config.clone())?;
//!
//! let key = SeriesKey::new("http_requests", [("code", "200"), ("path", "/")])?;
//! let ack = db.ingest(&[
//!     Update::new(key.clone(), Timestamp(1_000), Op::CounterAdd(1.0))?,
//!     Update::new(key.clone(), Timestamp(2_000), Op::CounterAdd(2.0))?,
//! ])?;
//! assert_eq!(ack.level, AckLevel::Durable);
//!
//! // Hot series: resolve once, then ingest by handle.
//! let handle = db.resolve(&key)?;
//! db.ingest_by_handle(&[(handle, Timestamp(3_000), Op::CounterAdd(4.0))])?;
//!
//! let mut text = String::new();
//! db.expose(&mut text, None);
//! assert!(text.contains(r#"http_requests_total{code="200",path="/"} 7"#));
//!
//! // Dropping without close() is a crash as far as the data is concerned: reopen recovers.
//! drop(db);
//! let (db, report) = Ingestor::open(dir.path(), config)?;
//! let found = db.select(r#"http_requests{code="200"}"#)?;
//! assert_eq!(found.len(), 1);
//! db.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - **Acknowledged means logged.** An update is applied to the in-memory state only after
//!   its batch was written to the log, and acknowledged with its LSN and the level it reached:
//!   *written* (survives a process crash) or *durable* (survives a power cut). Under
//!   `SyncPolicy::Always` every acknowledgement is durable; concurrent ingesters share syncs.
//!   Under the opt-in `SyncPolicy::Buffered` a batch is acknowledged *accepted* once in the
//!   log's buffer in the process, written within the policy's deadline: a process crash may
//!   lose the last deadline's batches (always a suffix); [`Ingestor::flush`] writes them now.
//! - **Batches are atomic.** A batch is validated whole (names, values, kinds against the
//!   current state, limits) before anything is logged; a refused batch leaves nothing behind.
//! - **Recovery is exact.** Open loads the newest good snapshot and replays the log after its
//!   LSN: every record exactly once. A corrupt newest snapshot falls back to an older one.
//! - **Snapshots never run ahead of the log.** A snapshot at LSN S is written only after the
//!   log is durable through S; log segments are deleted only when the oldest kept snapshot
//!   covers them.
//! - **One writer per directory.** A second opener gets [`Error::Locked`].
//!
//! The on-disk layout is specified in `docs/format.md`; what survives under each policy in
//! `docs/durability.md`.
//!
//! # Features
//!
//! - `serde`: [`Config`] and every option in it deserialize (durations as `"15s"` or a
//!   number of seconds, `"off"` for an optional one; unknown keys refused), and the reports
//!   and stats ([`Stats`], [`OpenReport`], [`offline::VerifyReport`], ...) serialize.
#![forbid(unsafe_code)]

#[cfg(ingestor_deliberate_bugs)]
mod bugs;
mod config;
mod error;
mod id_hash;
mod ingestor;
pub mod offline;
mod slot_set;

pub use config::{Config, FinalSnapshot, FreeSpaceFloor, system_clock_ms};
pub use error::{Error, Result};
pub use ingestor::{
    Ack, Ingestor, MemstoreView, OpenReport, ReplayProgress, SNAPSHOT_DIR, SeriesHandle, Stats,
    WAL_DIR,
};
pub use ingestor_codec::duration;
pub use ingestor_codec::{
    Compression, HistogramSample, Lsn, MAX_BATCH_POINTS, MAX_HISTOGRAM_BOUNDS, MetricKind, Op,
    SeriesKey, Timestamp, Update,
};
pub use ingestor_fs::{
    CrashPolicy, Fault, FaultKind, Fs, FsFile, OpError, OpKind, OpenMode, SimFs, StdFs,
    create_dir_durably,
};
pub use ingestor_memstore::{
    CONTENT_TYPE as EXPOSITION_CONTENT_TYPE, Frozen, MatchOp, Matcher, MemstoreConfig,
    MemstoreError, Selector, SeriesRecord, SeriesRef, SeriesState, SeriesView, exposed_family,
    format_value,
};
pub use ingestor_snapshot::{SnapshotCompression, SnapshotInfo, SnapshotOptions};
pub use ingestor_wal::{
    AckLevel, RecoveryMode, RecoveryReport, SegmentFill, SegmentId, SyncPolicy, WalError,
    WalListener,
};
