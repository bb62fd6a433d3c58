//! Per-series state and the semantics of each operation.

use std::sync::Arc;

use ingestor_codec::{HistogramSample, Lsn, MetricKind, Op, Timestamp};

/// Prometheus' default histogram bucket bounds (`DefBuckets` of the Go client).
pub const DEFAULT_BUCKETS: [f64; 11] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A counter: a total that only goes up, except at resets.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterState {
    /// The current total.
    pub total: f64,
    /// How many times a counter set went below the total (a reset, as when a scraped
    /// process restarts).
    pub resets: u64,
    /// When the last reset happened.
    pub last_reset: Option<Timestamp>,
}

/// A gauge: the last value set (by timestamp; at equal timestamps, the later write).
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeState {
    /// The current value.
    pub value: f64,
    /// The timestamp of the write that set it (the largest seen).
    pub timestamp: Timestamp,
    /// The LSN of that write.
    pub lsn: Lsn,
}

/// A histogram over fixed bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramState {
    /// Upper bounds of the buckets, increasing; an implicit `+Inf` bucket follows.
    pub bounds: Arc<[f64]>,
    /// Observations per bucket (not cumulative): `buckets[i]` counts values `v` with
    /// `bounds[i-1] < v <= bounds[i]`; the last entry counts values above every bound.
    /// `buckets.len() == bounds.len() + 1`.
    pub buckets: Box<[u64]>,
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest observation (`+Inf` when there is none).
    pub min: f64,
    /// The largest observation (`-Inf` when there is none).
    pub max: f64,
}

impl HistogramState {
    /// An empty histogram over `bounds`.
    #[must_use]
    pub fn new(bounds: Arc<[f64]>) -> Self {
        let buckets = vec![0; bounds.len() + 1].into_boxed_slice();
        HistogramState {
            bounds,
            buckets,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Replaces the distribution by `sample`'s. Its observations are not known one by one,
    /// so min and max become unknown (`+Inf` and `-Inf`).
    fn set(&mut self, sample: &HistogramSample) {
        *self = HistogramState {
            bounds: Arc::clone(&sample.bounds),
            buckets: sample.buckets.clone(),
            count: sample.count(),
            sum: sample.sum,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        };
    }

    /// Adds `sample`'s distribution: bucket by bucket over the same bounds (counts saturate at
    /// `u64::MAX`; min and max become unknown), otherwise the sample replaces the histogram.
    fn add(&mut self, sample: &HistogramSample) {
        if *self.bounds != *sample.bounds {
            self.set(sample);
            return;
        }
        for (mine, &n) in self.buckets.iter_mut().zip(sample.buckets.iter()) {
            *mine = mine.saturating_add(n);
        }
        self.count = self.buckets.iter().fold(0u64, |acc, &n| acc.saturating_add(n));
        self.sum += sample.sum;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
    }

    /// Cumulative counts per bound, then the `+Inf` count (as exposed).
    #[must_use]
    pub fn cumulative(&self) -> Vec<u64> {
        let mut acc = 0;
        self.buckets
            .iter()
            .map(|&n| {
                acc += n;
                acc
            })
            .collect()
    }
}

/// The current state of one series.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesState {
    /// A counter.
    Counter(CounterState),
    /// A gauge.
    Gauge(GaugeState),
    /// A histogram (boxed: a histogram is several times a counter's size, and most series
    /// are not histograms, so the state of every series stays small).
    Histogram(Box<HistogramState>),
}

impl SeriesState {
    /// The series' kind.
    #[must_use]
    pub fn kind(&self) -> MetricKind {
        match self {
            SeriesState::Counter(_) => MetricKind::Counter,
            SeriesState::Gauge(_) => MetricKind::Gauge,
            SeriesState::Histogram(_) => MetricKind::Histogram,
        }
    }

    /// The state a first update creates; `None` for a delete.
    pub(crate) fn first(
        op: &Op,
        ts: Timestamp,
        lsn: Lsn,
        bounds: &Arc<[f64]>,
    ) -> Option<SeriesState> {
        let mut state = match op.kind()? {
            MetricKind::Counter => {
                SeriesState::Counter(CounterState { total: 0.0, resets: 0, last_reset: None })
            }
            MetricKind::Gauge => {
                SeriesState::Gauge(GaugeState { value: 0.0, timestamp: Timestamp(i64::MIN), lsn })
            }
            MetricKind::Histogram => {
                SeriesState::Histogram(Box::new(HistogramState::new(Arc::clone(bounds))))
            }
        };
        state.apply(op, ts, lsn);
        Some(state)
    }

    /// Applies an operation of this series' kind (checked by the caller).
    ///
    /// - counter add: `total += delta`;
    /// - counter set: `total = value`; a value below the total counts a reset;
    /// - gauge set: taken when its timestamp is not older than the gauge's (at equal
    ///   timestamps the later write, which has the later or equal LSN, wins);
    /// - gauge add: `value += delta`, timestamp the larger of the two;
    /// - histogram observe: the bucket, count, sum, min and max;
    /// - histogram set: the whole distribution, bounds included, replaced (as counter set,
    ///   whatever the timestamp); min and max unknown;
    /// - histogram add: over the same bounds, buckets, count and sum added; over other
    ///   bounds, as histogram set; min and max unknown.
    pub(crate) fn apply(&mut self, op: &Op, ts: Timestamp, lsn: Lsn) {
        match (self, op) {
            (SeriesState::Counter(c), &Op::CounterAdd(d)) => c.total += d,
            (SeriesState::Counter(c), &Op::CounterSet(v)) => {
                if v < c.total {
                    c.resets += 1;
                    c.last_reset = Some(ts);
                }
                c.total = v;
            }
            (SeriesState::Gauge(g), &Op::GaugeSet(v)) => {
                if ts >= g.timestamp {
                    *g = GaugeState { value: v, timestamp: ts, lsn };
                }
            }
            (SeriesState::Gauge(g), &Op::GaugeAdd(d)) => {
                g.value += d;
                g.timestamp = g.timestamp.max(ts);
                g.lsn = lsn;
            }
            (SeriesState::Histogram(h), &Op::HistogramObserve(v)) => h.observe(v),
            (SeriesState::Histogram(h), Op::HistogramSet(sample)) => h.set(sample),
            (SeriesState::Histogram(h), Op::HistogramAdd(sample)) => h.add(sample),
            (state, op) => {
                unreachable!("kind checked before apply: {:?} with {op:?}", state.kind())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Arc<[f64]> {
        Arc::from(DEFAULT_BUCKETS.as_slice())
    }

    #[test]
    fn counter_sets_below_the_total_are_resets() {
        let mut s =
            SeriesState::first(&Op::CounterSet(10.0), Timestamp(1), Lsn(1), &bounds()).unwrap();
        s.apply(&Op::CounterAdd(2.5), Timestamp(2), Lsn(2));
        s.apply(&Op::CounterSet(3.0), Timestamp(3), Lsn(3));
        assert_eq!(
            s,
            SeriesState::Counter(CounterState {
                total: 3.0,
                resets: 1,
                last_reset: Some(Timestamp(3))
            })
        );
    }

    #[test]
    fn gauge_last_write_wins_by_timestamp_then_order() {
        let mut s =
            SeriesState::first(&Op::GaugeSet(1.0), Timestamp(10), Lsn(1), &bounds()).unwrap();
        s.apply(&Op::GaugeSet(2.0), Timestamp(5), Lsn(2)); // older: ignored
        assert!(matches!(&s, SeriesState::Gauge(g) if g.value == 1.0));
        s.apply(&Op::GaugeSet(3.0), Timestamp(10), Lsn(3)); // same time, later LSN: wins
        assert!(matches!(&s, SeriesState::Gauge(g) if g.value == 3.0 && g.lsn == Lsn(3)));
        s.apply(&Op::GaugeAdd(-1.5), Timestamp(7), Lsn(4));
        assert!(
            matches!(&s, SeriesState::Gauge(g) if g.value == 1.5 && g.timestamp == Timestamp(10))
        );
    }

    #[test]
    fn histogram_buckets_are_upper_inclusive() {
        let mut s =
            SeriesState::first(&Op::HistogramObserve(0.005), Timestamp(1), Lsn(1), &bounds())
                .unwrap();
        for v in [0.0051, 10.0, 11.0, -1.0] {
            s.apply(&Op::HistogramObserve(v), Timestamp(1), Lsn(1));
        }
        let SeriesState::Histogram(h) = s else { panic!() };
        assert_eq!(h.buckets[0], 2, "0.005 and -1 are <= 0.005");
        assert_eq!(h.buckets[1], 1, "0.0051 is in (0.005, 0.01]");
        assert_eq!(h.buckets[10], 1, "10 is in (5, 10]");
        assert_eq!(h.buckets[11], 1, "11 is above every bound");
        assert_eq!((h.count, h.min, h.max), (5, -1.0, 11.0));
        assert_eq!(*h.cumulative().last().unwrap(), 5);
    }
}
