//! Test helpers shared by the tests of the ingestor workspace and its crash test (`xtask`),
//! so that each is written once. Not published: crates take it as a path-only
//! dev-dependency (`ingestor-testkit.workspace = true` under `[dev-dependencies]`), which
//! `cargo package` strips.
//!
//! - [`Rng`]: a seeded xorshift64 generator, so that a seeded test reproduces.
//! - [`model`]: an independent reference model of the metric semantics (counters, gauges,
//!   histograms, deletes), over its own small types, that a test feeds with what it ingested
//!   and compares with what the engine holds.
//! - `receiver` (feature `receiver`): a fake Prometheus remote-write receiver on a loopback
//!   port, answering from a script and recording every request.
//! - `fs` (feature `fs`): a file system wrapping another and handing each crash-point
//!   announcement to a hook of the test's first.
//!
//! The crate depends on no crate of the workspace except through optional features (the
//! receiver decodes with `ingestor-protocols`, the wrapper implements `ingestor-fs`'s `Fs`),
//! so that any crate, even `ingestor-codec`, can use it without a dependency cycle.

#[cfg(feature = "fs")]
pub mod fs;
pub mod model;
#[cfg(feature = "receiver")]
pub mod receiver;
mod rng;

pub use rng::Rng;
