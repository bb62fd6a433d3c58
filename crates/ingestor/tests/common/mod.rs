//! An independent model of the metric semantics, and helpers to compare it with an
//! ingestor's state.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use ingestor::{Op, SeriesKey, SeriesState, Timestamp, Update};
use ingestor_testkit::Rng;

/// What a series looks like to the oracle: its kind and the numbers that matter.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Counter { total: f64, resets: u64 },
    Gauge { value: f64, ts: i64 },
    Histogram { count: u64, sum: f64 },
}

/// The model: series key text to value, applying updates in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model(pub BTreeMap<String, Value>);

impl Model {
    pub fn apply(&mut self, batch: &[Update]) {
        for u in batch {
            let k = u.key.to_string();
            let ts = u.timestamp.0;
            // Histogram sets and adds are modelled by the crash test's oracle and the
            // memstore's model test; these tests' workloads do not send them.
            match (self.0.get_mut(&k), u.op.clone()) {
                (_, Op::Delete) => {
                    self.0.remove(&k);
                }
                (Some(Value::Counter { total, .. }), Op::CounterAdd(d)) => *total += d,
                (Some(Value::Counter { total, resets }), Op::CounterSet(v)) => {
                    if v < *total {
                        *resets += 1;
                    }
                    *total = v;
                }
                (Some(Value::Gauge { value, ts: t }), Op::GaugeSet(v)) => {
                    if ts >= *t {
                        *value = v;
                        *t = ts;
                    }
                }
                (Some(Value::Gauge { value, ts: t }), Op::GaugeAdd(d)) => {
                    *value += d;
                    *t = (*t).max(ts);
                }
                (Some(Value::Histogram { count, sum }), Op::HistogramObserve(v)) => {
                    *count += 1;
                    *sum += v;
                }
                (None, Op::CounterAdd(d)) => {
                    self.0.insert(k, Value::Counter { total: d, resets: 0 });
                }
                (None, Op::CounterSet(v)) => {
                    self.0.insert(k, Value::Counter { total: v, resets: 0 });
                }
                (None, Op::GaugeSet(v)) | (None, Op::GaugeAdd(v)) => {
                    self.0.insert(k, Value::Gauge { value: v, ts });
                }
                (None, Op::HistogramObserve(v)) => {
                    self.0.insert(k, Value::Histogram { count: 1, sum: v });
                }
                (_, op @ (Op::HistogramSet(_) | Op::HistogramAdd(_))) => {
                    panic!("this model does not cover histogram samples: {op:?}")
                }
                (Some(existing), op) => {
                    panic!("the workload never mixes kinds: {existing:?} with {op:?}")
                }
            }
        }
    }
}

/// The ingestor's state in the model's terms.
pub fn observed(db: &ingestor::Ingestor) -> Model {
    let mut m = Model::default();
    for v in db.memstore().all() {
        let value = match &v.state {
            SeriesState::Counter(c) => Value::Counter { total: c.total, resets: c.resets },
            SeriesState::Gauge(g) => Value::Gauge { value: g.value, ts: g.timestamp.0 },
            SeriesState::Histogram(h) => Value::Histogram { count: h.count, sum: h.sum },
        };
        m.0.insert(v.key.to_string(), value);
    }
    m
}

/// A deterministic workload: batches over a fixed set of series, each series one kind,
/// with integral values (so float sums are exact in any order).
pub struct Workload {
    rng: Rng,
    pub series: usize,
}

impl Workload {
    pub fn new(seed: u64, series: usize) -> Self {
        Workload { rng: Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1), series }
    }

    fn next(&mut self) -> u64 {
        self.rng.next_u64()
    }

    pub fn key(i: usize) -> SeriesKey {
        let kind = ["requests", "temperature", "latency"][i % 3];
        SeriesKey::new(kind, [("host", format!("h{}", i / 3)), ("dc", "eu".to_string())]).unwrap()
    }

    pub fn batch(&mut self, ts: i64) -> Vec<Update> {
        let n = 1 + (self.next() % 20) as usize;
        (0..n)
            .map(|_| {
                let i = (self.next() % self.series as u64) as usize;
                let v = (self.next() % 100) as f64;
                let op = match (i % 3, self.next() % 10) {
                    (_, 0) => Op::Delete,
                    (0, 1) => Op::CounterSet(v),
                    (0, _) => Op::CounterAdd(v),
                    (1, 2) => Op::GaugeAdd(v - 50.0),
                    (1, _) => Op::GaugeSet(v),
                    _ => Op::HistogramObserve(v / 10.0),
                };
                Update::new(Workload::key(i), Timestamp(ts), op).unwrap()
            })
            .collect()
    }
}
