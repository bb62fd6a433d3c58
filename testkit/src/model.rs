//! An independent reference model of the metric semantics: series key text to value,
//! applying operations in order. Written apart from the engine (its own small types: string
//! keys, an [`Op`] enum), so that a test or the crash test's oracle can judge the engine's
//! state against it; they convert their updates and the engine's state to these types.
//!
//! The semantics modelled: a counter adds deltas and takes sets as scraped totals (a
//! decrease counts a reset); a gauge set is last write wins by timestamp (ties: the later
//! one), a gauge add adds and keeps the newest timestamp; a histogram observation lands in
//! the first bucket whose bound is at or above it (a new histogram takes
//! [`DEFAULT_BOUNDS`]); a histogram set replaces, an add over the same bounds adds and over
//! other bounds replaces; a delete drops the series. A series keeps the kind it was created
//! with: an operation of another kind is a bug of the workload, and panics.

use std::collections::BTreeMap;

/// Prometheus' default bucket bounds (the Go client's `DefBuckets`), which the engine's
/// default configuration gives a histogram created by an observation.
pub const DEFAULT_BOUNDS: [f64; 11] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A whole histogram distribution, as a histogram set or add carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending, without `+Inf`.
    pub bounds: Vec<f64>,
    /// Counts per bucket, not cumulative: one more than the bounds, the last one `+Inf`.
    pub buckets: Vec<u64>,
    /// The sum of the observations.
    pub sum: f64,
}

/// One operation on a series, as the engine's updates carry them.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Adds a delta to a counter.
    CounterAdd(f64),
    /// Sets a counter to a total; a decrease is a reset.
    CounterSet(f64),
    /// Sets a gauge, if the update is not older than the gauge.
    GaugeSet(f64),
    /// Adds a delta to a gauge.
    GaugeAdd(f64),
    /// Records one observation in a histogram.
    HistogramObserve(f64),
    /// Replaces a histogram by a distribution.
    HistogramSet(Histogram),
    /// Adds a distribution to a histogram over the same bounds, or replaces it.
    HistogramAdd(Histogram),
    /// Drops the series.
    Delete,
}

/// What a series is to the model: its kind and the numbers that matter.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A counter.
    Counter {
        /// Its total.
        total: f64,
        /// How many sets decreased it.
        resets: u64,
    },
    /// A gauge.
    Gauge {
        /// Its value.
        value: f64,
        /// The timestamp of its newest update, in milliseconds.
        ts: i64,
    },
    /// A histogram. Buckets are not cumulative; the last one is `+Inf`.
    Histogram {
        /// Upper bounds, without `+Inf`.
        bounds: Vec<f64>,
        /// Counts per bucket, one more than the bounds.
        buckets: Vec<u64>,
        /// The number of observations.
        count: u64,
        /// Their sum.
        sum: f64,
    },
}

impl Value {
    /// An empty histogram over [`DEFAULT_BOUNDS`].
    #[must_use]
    pub fn empty_histogram() -> Value {
        Value::Histogram {
            bounds: DEFAULT_BOUNDS.to_vec(),
            buckets: vec![0; DEFAULT_BOUNDS.len() + 1],
            count: 0,
            sum: 0.0,
        }
    }

    /// The histogram a distribution gives (its count is the sum of its buckets).
    #[must_use]
    pub fn histogram_of(h: &Histogram) -> Value {
        Value::Histogram {
            bounds: h.bounds.clone(),
            buckets: h.buckets.clone(),
            count: h.buckets.iter().sum(),
            sum: h.sum,
        }
    }
}

/// The model state: series key text to value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model(pub BTreeMap<String, Value>);

impl Model {
    /// Applies one operation on series `key` at timestamp `ts` (milliseconds).
    ///
    /// Panics if `op` is of another kind than the series it lands on (a workload gives each
    /// series one kind).
    pub fn apply_op(&mut self, key: &str, ts: i64, op: &Op) {
        if matches!(op, Op::HistogramObserve(_)) && !self.0.contains_key(key) {
            self.0.insert(key.to_string(), Value::empty_histogram());
        }
        match (self.0.get_mut(key), op) {
            (_, Op::Delete) => {
                self.0.remove(key);
            }
            (Some(Value::Counter { total, .. }), &Op::CounterAdd(d)) => *total += d,
            (Some(Value::Counter { total, resets }), &Op::CounterSet(v)) => {
                if v < *total {
                    *resets += 1;
                }
                *total = v;
            }
            (Some(Value::Gauge { value, ts: t }), &Op::GaugeSet(v)) => {
                if ts >= *t {
                    *value = v;
                    *t = ts;
                }
            }
            (Some(Value::Gauge { value, ts: t }), &Op::GaugeAdd(d)) => {
                *value += d;
                *t = (*t).max(ts);
            }
            (Some(Value::Histogram { bounds, buckets, count, sum }), &Op::HistogramObserve(v)) => {
                // The first bound at or above v; above them all, the +Inf bucket.
                let i = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
                buckets[i] += 1;
                *count += 1;
                *sum += v;
            }
            (Some(h @ Value::Histogram { .. }), Op::HistogramSet(s)) => {
                *h = Value::histogram_of(s);
            }
            (Some(h @ Value::Histogram { .. }), Op::HistogramAdd(s)) => {
                let Value::Histogram { bounds, buckets, count, sum } = h else {
                    unreachable!("matched a histogram")
                };
                if *bounds == s.bounds {
                    for (mine, n) in buckets.iter_mut().zip(&s.buckets) {
                        *mine += n;
                    }
                    *count += s.buckets.iter().sum::<u64>();
                    *sum += s.sum;
                } else {
                    *h = Value::histogram_of(s);
                }
            }
            (None, &Op::CounterAdd(v) | &Op::CounterSet(v)) => {
                self.0.insert(key.to_string(), Value::Counter { total: v, resets: 0 });
            }
            (None, &Op::GaugeSet(v) | &Op::GaugeAdd(v)) => {
                self.0.insert(key.to_string(), Value::Gauge { value: v, ts });
            }
            (None, Op::HistogramSet(s) | Op::HistogramAdd(s)) => {
                self.0.insert(key.to_string(), Value::histogram_of(s));
            }
            (None, Op::HistogramObserve(_)) => unreachable!("inserted empty above"),
            (Some(existing), op) => {
                panic!("the workload gives each series one kind: {key} is {existing:?}, got {op:?}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(bounds: &[f64], buckets: &[u64], sum: f64) -> Histogram {
        Histogram { bounds: bounds.to_vec(), buckets: buckets.to_vec(), sum }
    }

    #[test]
    fn each_kind_follows_the_engine_semantics() {
        let mut m = Model::default();
        m.apply_op("c", 1, &Op::CounterAdd(2.0));
        m.apply_op("c", 2, &Op::CounterAdd(3.0));
        m.apply_op("c", 3, &Op::CounterSet(1.0));
        assert_eq!(m.0["c"], Value::Counter { total: 1.0, resets: 1 });
        m.apply_op("g", 10, &Op::GaugeSet(5.0));
        m.apply_op("g", 9, &Op::GaugeSet(7.0));
        assert_eq!(m.0["g"], Value::Gauge { value: 5.0, ts: 10 }, "an older set loses");
        m.apply_op("g", 8, &Op::GaugeAdd(-1.0));
        assert_eq!(m.0["g"], Value::Gauge { value: 4.0, ts: 10 });
        m.apply_op("h", 1, &Op::HistogramObserve(0.5));
        m.apply_op("h", 1, &Op::HistogramObserve(11.0));
        let Value::Histogram { buckets, count, sum, .. } = &m.0["h"] else { panic!() };
        assert_eq!((buckets[6], buckets[11], *count, *sum), (1, 1, 2, 11.5));
        m.apply_op("s", 1, &Op::HistogramAdd(h(&[1.0], &[1, 2], 4.0)));
        m.apply_op("s", 1, &Op::HistogramAdd(h(&[1.0], &[1, 0], 0.5)));
        let added = Value::Histogram { bounds: vec![1.0], buckets: vec![2, 2], count: 4, sum: 4.5 };
        assert_eq!(m.0["s"], added);
        m.apply_op("s", 1, &Op::HistogramAdd(h(&[2.0], &[0, 1], 3.0)));
        assert_eq!(m.0["s"], Value::histogram_of(&h(&[2.0], &[0, 1], 3.0)), "other bounds");
        m.apply_op("s", 1, &Op::HistogramSet(h(&[2.0], &[5, 0], 1.0)));
        assert_eq!(m.0["s"], Value::histogram_of(&h(&[2.0], &[5, 0], 1.0)));
        m.apply_op("c", 4, &Op::Delete);
        m.apply_op("nothing", 4, &Op::Delete);
        assert_eq!(m.0.keys().collect::<Vec<_>>(), ["g", "h", "s"]);
    }

    #[test]
    #[should_panic(expected = "one kind")]
    fn mixing_kinds_panics() {
        let mut m = Model::default();
        m.apply_op("x", 1, &Op::CounterAdd(1.0));
        m.apply_op("x", 1, &Op::GaugeSet(1.0));
    }
}
