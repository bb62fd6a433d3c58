//! The in-memory state of `ingestor`: every series' current value, with an index for
//! Prometheus selectors and the text exposition format. No I/O, no threads.
//!
//! Most users want the `ingestor` facade, which logs every batch before applying it here.
//!
//! ```
//! use ingestor_codec::{Lsn, Op, SeriesKey, Timestamp};
//! use ingestor_memstore::{Memstore, MemstoreConfig, Selector, SeriesState, SlotPoint};
//!
//! let store = Memstore::new(MemstoreConfig::default())?;
//! let key = SeriesKey::new("http_requests", [("code", "200"), ("path", "/")])?;
//! let series = store.intern(&key)?; // a handle: no label hashing per point afterwards
//! let batch = [
//!     SlotPoint { series, timestamp: Timestamp(1_000), op: Op::CounterAdd(2.0) },
//!     SlotPoint { series, timestamp: Timestamp(2_000), op: Op::CounterAdd(3.0) },
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
//! - A [`SeriesRef`] is this store's own handle to a series, valid until the series is
//!   deleted and never valid again: a deleted series' slot goes to a new series only once
//!   the owner frees it ([`Memstore::free_deleted_slots`]), and then with a new generation.
//!   The store never writes a handle to disk. It is not the log's segment-local series id
//!   (`ingestor_codec::SeriesId`): the facade maps between the two.
#![forbid(unsafe_code)]

mod error;
mod expose;
mod key_batch;
mod key_index;
mod selector;
mod series_ref;
mod slot_runs;
mod state;
mod store;

pub use error::MemstoreError;
pub use expose::{CONTENT_TYPE, Exposer, expose, exposed_family, format_value};
pub use key_batch::KeyBatch;
pub use selector::{MatchOp, Matcher, Selector, SelectorError};
pub use series_ref::{SeriesRef, SlotPoint};
pub use state::{CounterState, DEFAULT_BUCKETS, GaugeState, HistogramState, SeriesState};
pub use store::{
    FreezeRoom, Frozen, LoadSeries, Loader, MAX_SERIES_LIMIT, Memstore, MemstoreConfig,
    SeriesRecord, SeriesView,
};
