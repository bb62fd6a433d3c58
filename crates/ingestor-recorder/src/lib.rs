//! A durable recorder for the [`metrics`] crate over [`ingestor`].
//!
//! TODO doc

mod cells;
mod recorder;
mod serve;

pub use recorder::{
    DEFAULT_BUCKETS, DEFAULT_FLUSH_INTERVAL, Error, IngestorRecorder, RecorderBuilder,
    RecorderStats, SharedRecorder, metric_name,
};
pub use serve::MetricsServer;
