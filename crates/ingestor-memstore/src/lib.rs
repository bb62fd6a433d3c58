//! The in-memory state of `ingestor`: every series' current value, with an index for
//! Prometheus selectors and the text exposition format. No I/O, no threads.
//!
//! Most users want the `ingestor` facade, which logs every batch before applying it here.
//!
//! ```
//! use ingestor_codec::{Lsn, Op, Point, SeriesKey, Timestamp};
//! use ingestor_memstore::{Memstore, MemstoreConfig, Selector, SeriesState};
//!
//! let store = Memstore::new(MemstoreConfig::default())?;
//! let key = SeriesKey::new("http_requests", [("code", "200"), ("path", "/")])?;
//! let id = store.intern(&key)?; // a handle: no label hashing per point afterwards
//! let batch = [
//!     Point { series: id, timestamp: Timestamp(1_000), op: Op::CounterAdd(2.0) },
//!     Point { series: id, timestamp: Timestamp(2_000), op: Op::CounterAdd(3.0) },
//! ];
//! store.validate(&batch)?;
//! store.apply(Lsn(1), &batch);
//!
//! let found = store.select(&Selector::parse(r#"http_requests{code="200"}"#)?);
//! assert!(matches!(&found[0].state, SeriesState::Counter(c) if c.total == 5.0));
//! let mut text = String::new();
//! store.expose(&mut text, None);
//! assert!(text.contains(r#"http_requests_total{code="200",path="/"} 5"#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - Applying the same batches in the same order gives the same state: replay is exact.
//! - A series' kind is fixed by its first update; [`Memstore::validate`] refuses a conflicting
//!   update before anything is logged or applied.
//! - Limits are checked before anything changes: a refused batch leaves nothing behind.
//! - Readers never see half a batch: a batch is applied under one write lock.
//! - [`Memstore::freeze`] captures the whole state without copying it, so a snapshot can be
//!   written while ingestion goes on.

mod error;
mod expose;
mod selector;
mod state;
mod store;

pub use error::MemstoreError;
pub use expose::{CONTENT_TYPE, Exposer, expose, exposed_family, format_value};
pub use selector::{MatchOp, Matcher, Selector, SelectorError};
pub use state::{CounterState, DEFAULT_BUCKETS, GaugeState, HistogramState, SeriesState};
pub use store::{Frozen, Memstore, MemstoreConfig, SeriesRecord, SeriesView};
