//! The wire formats `ingestor` takes, parsed into validated [`Update`]s: pure functions, no
//! I/O, no threads. Most users want the `ingestor-server` crate (which serves these formats)
//! or the `ingestor` facade (which stores the updates); this crate is for those who read the
//! formats themselves.
//!
//! - [`line`](mod@line): InfluxDB line protocol, read as InfluxData's reference decoder reads
//!   it (a conformance table in `tests/line_conformance.rs`; the deliberate deviations are
//!   listed in the module docs) and mapped as VictoriaMetrics maps it (each field `f` of
//!   measurement `m` is the gauge `m_f`); a body is all or nothing, the first bad line named.
//! - [`line_cache`]: the same parse through a cache of the series a body names, for servers
//!   that see the same series again and again.
//! - [`otlp`]: OTLP metrics (protobuf and JSON), mapped as Prometheus' OTLP translation maps them.
//! - [`remote_write`]: Prometheus remote write 1.0 and 2.0 (snappy and protobuf);
//!   [`remote_write_view`] reads the same messages with every label borrowed.
//! - [`statsd`]: StatsD and DogStatsD packets (tags, `|T` timestamps; events and service
//!   checks counted, not stored); a bad line never stops the others.
//!
//! ```
//! use ingestor_codec::Op;
//! use ingestor_protocols::line::{Precision, parse_body};
//!
//! let body = "weather,city=paris temp=21.5,humidity=40i 1700000000\n";
//! let updates = parse_body(body, Precision::S, 0)?;
//! assert_eq!(updates.len(), 2);
//! assert_eq!(updates[0].key.to_string(), r#"weather_temp{city="paris"}"#);
//! assert_eq!(updates[0].timestamp.0, 1_700_000_000_000);
//! assert_eq!(updates[0].op, Op::GaugeSet(21.5));
//!
//! let err = parse_body("ok v=1\nbroken", Precision::S, 0).unwrap_err();
//! assert_eq!(err.line, 2);
//! # Ok::<(), ingestor_protocols::line::LineError>(())
//! ```
//!
//! # Guarantees
//!
//! - No input panics a parser (each has a never-panics test over random input).
//! - Every update returned passed the data model's validation (`SeriesKey::new`,
//!   `Update::new`): names, label limits, finite values.
#![forbid(unsafe_code)]

pub mod line;
pub mod line_cache;
pub mod otlp;
pub mod remote_write;
pub mod remote_write_view;
pub mod remote_write_writer;
pub mod statsd;

#[doc(no_inline)]
pub use ingestor_codec::Update;
