//! The write-ahead log of `ingestor`: opaque records in, dense log sequence numbers out,
//! kept in numbered, preallocated segment files of checksummed frames.
//!
//! Most users want the `ingestor` facade, which puts metric batches through this log. It can
//! also be used on its own, as one uses okaywal or raft-engine.
//!
//! ```
//! use std::sync::Arc;
//! use ingestor_fs::{Fs, StdFs};
//! use ingestor_wal::{AckLevel, Lsn, SyncPolicy, Wal, WalOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let fs: Arc<dyn Fs> = Arc::new(StdFs::new());
//! let options = WalOptions::default().sync_policy(SyncPolicy::Always);
//!
//! let (wal, report) = Wal::open(Arc::clone(&fs), dir.path(), options.clone())?;
//! assert!(report.is_clean());
//! let ack = wal.append(1, b"first record")?;
//! assert_eq!((ack.first, ack.level), (Lsn(1), AckLevel::Durable));
//! wal.append_batch(&[(1, b"second"), (2, b"third")])?;
//! wal.close()?;
//!
//! // Reopening recovers the log; replay hands every record to a callback.
//! let mut seen = Vec::new();
//! let (wal, _) = Wal::open_and_replay(fs, dir.path(), options, Lsn(2), |lsn, ty, payload| {
//!     seen.push((lsn.0, ty, payload.to_vec()));
//!     Ok(())
//! })?;
//! assert_eq!(seen, [(2, 1, b"second".to_vec()), (3, 2, b"third".to_vec())]);
//! assert_eq!(wal.written_lsn(), Lsn(3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - **LSNs are dense, unique and in file order**, across threads and segments; every frame
//!   carries its LSN and recovery checks the chain.
//! - **An append returns only after its bytes reached the operating system** (one write
//!   system call per append or batch): nothing acknowledged [`AckLevel::Written`] sits in a
//!   user-space buffer. Under [`SyncPolicy::Always`] it returns after an fdatasync that
//!   covers it; concurrent appenders share syncs (group commit). Only the opt-in
//!   [`SyncPolicy::Buffered`] acknowledges records still in the log's buffer, and says so
//!   ([`AckLevel::Accepted`]): they are written within its deadline, in LSN order.
//! - **Nothing is acknowledged durable that a successful sync did not cover.** A failed sync
//!   poisons the log: every later append and sync fails with [`WalError::Poisoned`], carrying
//!   the cause, until the log is reopened. It is never retried into a success.
//! - **A failed write leaves no half frame** that a later frame would follow: the partial
//!   bytes are cut durably, or the log is poisoned.
//! - **A new segment's name is durable before anything is appended to it.**
//! - **Recovery tells a torn tail from corruption in the middle** and applies the
//!   [`RecoveryMode`]; nothing is discarded without a copy in `quarantine/` and a line in
//!   the [`RecoveryReport`].
//! - **Deletion below a watermark never removes the active segment** or one holding an LSN
//!   at or above the watermark, and syncs the directory afterwards.
//!
//! Threads: under [`SyncPolicy::Buffered`] one background thread writes the buffer at its
//! deadline (and gives the write-back hints); under [`SyncPolicy::Batch`] one background
//! thread starts a sync one window after a write, so that a write is durable within the
//! window plus up to two sync durations (one sync may be running when it arrives); under
//! [`SyncPolicy::Os`] one background thread gives the write-back hints
//! ([`WalOptions::writeback_ahead`], for segments larger than 8 MiB); under
//! [`SegmentFill::Zeros`] and [`SegmentFill::AllocateAhead`] one more prepares the spare
//! segment. `Wal::close` and dropping the log stop and join them.
//!
//! The byte layout is specified in `docs/format.md` ("Segment files", "Recovery").
#![forbid(unsafe_code)]

#[cfg(ingestor_deliberate_bugs)]
mod bugs;
mod error;
mod handoff;
mod inspect;
mod options;
mod reader;
mod recovery;
mod report;
mod segment;
mod stats;
mod sync;
mod wal;
mod writer;

pub use error::{Result, WalError};
pub use ingestor_codec::{Codec, Lsn};
pub use inspect::{FrameInfo, check_dir};
pub use options::{RecoveryMode, SegmentFill, SyncPolicy, WalOptions};
pub use reader::{WalReader, WalRecord};
pub use report::{Corruption, CorruptionAction, RecoveryReport, Truncation};
pub use segment::{QUARANTINE_DIR, SegmentId};
pub use stats::{WalListener, WalStats};
#[doc(hidden)]
pub use wal::crash_points;
pub use wal::{Ack, AckLevel, ReplayError, Wal};
pub use writer::RecordBatch;
