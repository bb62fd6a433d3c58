//! Updates: what happens to a series at a moment.

use std::fmt;

use crate::error::ValidationError;
use crate::ids::{SeriesId, Timestamp};
use crate::key::SeriesKey;

/// The kind of a series, fixed by its first update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricKind {
    /// A monotonically increasing total (with resets).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations over bucket bounds.
    Histogram,
}

impl fmt::Display for MetricKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        })
    }
}

/// An operation on one series.
///
/// Every value must be finite; counter deltas and counter totals must not be negative.
/// [`Op::validate`] checks this; encoders and decoders refuse anything it refuses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// Adds a delta (>= 0) to a counter.
    CounterAdd(f64),
    /// Sets a counter to an absolute total (>= 0), as scraped; a decrease is a reset.
    CounterSet(f64),
    /// Sets a gauge (last write wins by timestamp, ties by LSN).
    GaugeSet(f64),
    /// Adds a delta (of either sign) to a gauge.
    GaugeAdd(f64),
    /// Records one observation in a histogram.
    HistogramObserve(f64),
    /// Drops the series and its state.
    Delete,
}

impl Op {
    /// The kind of series this operation applies to; `None` for [`Op::Delete`], which applies
    /// to any kind.
    #[must_use]
    pub fn kind(&self) -> Option<MetricKind> {
        match self {
            Op::CounterAdd(_) | Op::CounterSet(_) => Some(MetricKind::Counter),
            Op::GaugeSet(_) | Op::GaugeAdd(_) => Some(MetricKind::Gauge),
            Op::HistogramObserve(_) => Some(MetricKind::Histogram),
            Op::Delete => None,
        }
    }

    /// The operation's value; `None` for [`Op::Delete`].
    #[must_use]
    pub fn value(&self) -> Option<f64> {
        match *self {
            Op::CounterAdd(v)
            | Op::CounterSet(v)
            | Op::GaugeSet(v)
            | Op::GaugeAdd(v)
            | Op::HistogramObserve(v) => Some(v),
            Op::Delete => None,
        }
    }

    /// The operation's name as used in errors and dumps, for example `counter_add`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Op::CounterAdd(_) => "counter_add",
            Op::CounterSet(_) => "counter_set",
            Op::GaugeSet(_) => "gauge_set",
            Op::GaugeAdd(_) => "gauge_add",
            Op::HistogramObserve(_) => "histogram_observe",
            Op::Delete => "delete",
        }
    }

    /// Checks the value: finite, and not negative for counters.
    ///
    /// # Errors
    /// [`ValidationError::Value`] naming the operation, the value and the rule.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let Some(value) = self.value() else {
            return Ok(());
        };
        let reason = if !value.is_finite() {
            Some("values must be finite (no NaN or infinity)")
        } else if value < 0.0 && matches!(self, Op::CounterAdd(_)) {
            Some("a counter delta must not be negative")
        } else if value < 0.0 && matches!(self, Op::CounterSet(_)) {
            Some("a counter total must not be negative")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ValidationError::Value { op: self.name(), value, reason }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value() {
            Some(v) => write!(f, "{} {v}", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// An update addressed by series key: what users hand to the ingestor.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The series.
    pub key: SeriesKey,
    /// When it happened.
    pub timestamp: Timestamp,
    /// What happened.
    pub op: Op,
}

impl Update {
    /// A validated update.
    ///
    /// # Errors
    /// The [`ValidationError`] of [`Op::validate`].
    pub fn new(key: SeriesKey, timestamp: Timestamp, op: Op) -> Result<Update, ValidationError> {
        op.validate()?;
        Ok(Update { key, timestamp, op })
    }
}

/// An update addressed by a segment-local [`SeriesId`]: what a batch record holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The series, as defined by an earlier series-definition record of the same segment.
    pub series: SeriesId,
    /// When it happened.
    pub timestamp: Timestamp,
    /// What happened.
    pub op: Op,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_non_finite_and_negative_counters() {
        for op in [
            Op::CounterAdd(f64::NAN),
            Op::CounterAdd(-1.0),
            Op::CounterSet(-0.5),
            Op::GaugeSet(f64::INFINITY),
            Op::GaugeAdd(f64::NEG_INFINITY),
            Op::HistogramObserve(f64::NAN),
        ] {
            let err = op.validate().unwrap_err();
            assert!(err.to_string().contains(op.name()), "{err}");
        }
        for op in [
            Op::CounterAdd(0.0),
            Op::CounterSet(3.5),
            Op::GaugeSet(-1e300),
            Op::GaugeAdd(-2.0),
            Op::HistogramObserve(-0.25),
            Op::Delete,
        ] {
            op.validate().unwrap();
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(Op::CounterSet(1.0).kind(), Some(MetricKind::Counter));
        assert_eq!(Op::GaugeAdd(1.0).kind(), Some(MetricKind::Gauge));
        assert_eq!(Op::HistogramObserve(1.0).kind(), Some(MetricKind::Histogram));
        assert_eq!(Op::Delete.kind(), None);
    }
}
