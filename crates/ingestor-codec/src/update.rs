//! Updates: what happens to a series at a moment.

use std::fmt;
use std::sync::Arc;

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
///
/// `Op` is cheap to clone: the one large variant holds its distribution behind an [`Arc`].
#[derive(Debug, Clone, PartialEq)]
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
    /// Replaces a histogram by a whole distribution over its own bounds, as a source that
    /// reports cumulative histograms (OTLP, a scrape) sends it.
    HistogramSet(Arc<HistogramSample>),
    /// Adds a distribution to a histogram, as a source that reports deltas sends it. Over the
    /// histogram's own bounds the buckets, count and sum add up; over other bounds the sample
    /// replaces the histogram (a reset).
    HistogramAdd(Arc<HistogramSample>),
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
            Op::HistogramObserve(_) | Op::HistogramSet(_) | Op::HistogramAdd(_) => {
                Some(MetricKind::Histogram)
            }
            Op::Delete => None,
        }
    }

    /// The operation's single value; `None` for [`Op::Delete`] and for the histogram
    /// samples, which carry a [`HistogramSample`] instead.
    #[must_use]
    pub fn value(&self) -> Option<f64> {
        match *self {
            Op::CounterAdd(v)
            | Op::CounterSet(v)
            | Op::GaugeSet(v)
            | Op::GaugeAdd(v)
            | Op::HistogramObserve(v) => Some(v),
            Op::HistogramSet(_) | Op::HistogramAdd(_) | Op::Delete => None,
        }
    }

    /// The distribution of a histogram set or add.
    #[must_use]
    pub fn sample(&self) -> Option<&HistogramSample> {
        match self {
            Op::HistogramSet(s) | Op::HistogramAdd(s) => Some(s),
            _ => None,
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
            Op::HistogramSet(_) => "histogram_set",
            Op::HistogramAdd(_) => "histogram_add",
            Op::Delete => "delete",
        }
    }

    /// Checks the value: finite, and not negative for counters; a histogram sample by
    /// [`HistogramSample::validate`].
    ///
    /// # Errors
    /// [`ValidationError::Value`] naming the operation, the value and the rule, or
    /// [`ValidationError::Histogram`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(sample) = self.sample() {
            return sample
                .validate()
                .map_err(|reason| ValidationError::Histogram { op: self.name(), reason });
        }
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
        match (self.value(), self.sample()) {
            (Some(v), _) => write!(f, "{} {v}", self.name()),
            (None, Some(s)) => write!(f, "{} {s}", self.name()),
            (None, None) => f.write_str(self.name()),
        }
    }
}

/// The most bucket bounds a [`HistogramSample`] may have.
pub const MAX_HISTOGRAM_BOUNDS: usize = 4096;

/// A whole histogram distribution over its own bucket bounds: what a histogram set or add
/// carries.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    /// Upper bounds of the buckets: finite, strictly increasing, at most
    /// [`MAX_HISTOGRAM_BOUNDS`]; an implicit `+Inf` bucket follows.
    pub bounds: Arc<[f64]>,
    /// Observations per bucket, not cumulative: `buckets[i]` counts values in
    /// `(bounds[i-1], bounds[i]]`, the last entry those above every bound;
    /// `buckets.len() == bounds.len() + 1`.
    pub buckets: Box<[u64]>,
    /// The sum of the observations (finite).
    pub sum: f64,
}

impl HistogramSample {
    /// A sample from non-cumulative bucket counts.
    ///
    /// # Errors
    /// [`ValidationError::Histogram`] for anything [`HistogramSample::validate`] refuses.
    pub fn new(
        bounds: impl Into<Arc<[f64]>>,
        buckets: impl Into<Box<[u64]>>,
        sum: f64,
    ) -> Result<HistogramSample, ValidationError> {
        let sample = HistogramSample { bounds: bounds.into(), buckets: buckets.into(), sum };
        sample
            .validate()
            .map_err(|reason| ValidationError::Histogram { op: "histogram_sample", reason })?;
        Ok(sample)
    }

    /// The number of observations: the sum of the buckets.
    ///
    /// Saturates at `u64::MAX`; [`HistogramSample::validate`] refuses a sample whose buckets
    /// overflow.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |acc, &n| acc.saturating_add(n))
    }

    /// Checks the rules: at most [`MAX_HISTOGRAM_BOUNDS`] finite, strictly increasing
    /// bounds; one more bucket than bounds; a finite sum; a count that fits in `u64`.
    ///
    /// # Errors
    /// The rule broken, in words.
    pub fn validate(&self) -> Result<(), String> {
        if self.bounds.len() > MAX_HISTOGRAM_BOUNDS {
            return Err(format!(
                "{} bucket bounds, more than the limit of {MAX_HISTOGRAM_BOUNDS}",
                self.bounds.len()
            ));
        }
        if let Some(b) = self.bounds.iter().find(|b| !b.is_finite()) {
            return Err(format!("bucket bound {b} is not finite"));
        }
        if let Some(w) = self.bounds.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!(
                "bucket bounds must increase strictly, found {} then {}",
                w[0], w[1]
            ));
        }
        if self.buckets.len() != self.bounds.len() + 1 {
            return Err(format!(
                "{} bucket counts for {} bounds (want one more count than bounds, for +Inf)",
                self.buckets.len(),
                self.bounds.len()
            ));
        }
        if !self.sum.is_finite() {
            return Err(format!("sum {} is not finite", self.sum));
        }
        if self.buckets.iter().try_fold(0u64, |acc, &n| acc.checked_add(n)).is_none() {
            return Err("the bucket counts add up to more than 2^64 - 1".to_owned());
        }
        Ok(())
    }
}

impl fmt::Display for HistogramSample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{bounds {:?}, buckets {:?}, sum {}}}", self.bounds, self.buckets, self.sum)
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
#[derive(Debug, Clone, PartialEq)]
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
