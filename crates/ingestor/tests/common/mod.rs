//! The independent model of the metric semantics (`ingestor_testkit::model`), fed with the
//! engine's updates and compared with an ingestor's state, and a deterministic workload.
#![allow(dead_code, unreachable_pub)]

use ingestor::{HistogramSample, Op, SeriesKey, SeriesState, Timestamp, Update};
pub use ingestor_testkit::model::{Model, Value};
use ingestor_testkit::{Rng, model};

/// Feeds the model with the engine's updates (the model has types of its own).
pub trait Apply {
    /// Applies a batch in order.
    fn apply(&mut self, batch: &[Update]);
}

impl Apply for Model {
    fn apply(&mut self, batch: &[Update]) {
        for u in batch {
            self.apply_op(&u.key.to_string(), u.timestamp.0, &op(&u.op));
        }
    }
}

/// An engine operation in the model's terms.
pub fn op(op: &Op) -> model::Op {
    let histogram = |s: &HistogramSample| model::Histogram {
        bounds: s.bounds.to_vec(),
        buckets: s.buckets.to_vec(),
        sum: s.sum,
    };
    match op {
        Op::CounterAdd(v) => model::Op::CounterAdd(*v),
        Op::CounterSet(v) => model::Op::CounterSet(*v),
        Op::GaugeSet(v) => model::Op::GaugeSet(*v),
        Op::GaugeAdd(v) => model::Op::GaugeAdd(*v),
        Op::HistogramObserve(v) => model::Op::HistogramObserve(*v),
        Op::HistogramSet(s) => model::Op::HistogramSet(histogram(s)),
        Op::HistogramAdd(s) => model::Op::HistogramAdd(histogram(s)),
        Op::Delete => model::Op::Delete,
    }
}

/// The ingestor's state in the model's terms.
pub fn observed(db: &ingestor::Ingestor) -> Model {
    let mut m = Model::default();
    for v in db.memstore().all() {
        let value = match &v.state {
            SeriesState::Counter(c) => Value::Counter { total: c.total, resets: c.resets },
            SeriesState::Gauge(g) => Value::Gauge { value: g.value, ts: g.timestamp.0 },
            SeriesState::Histogram(h) => Value::Histogram {
                bounds: h.bounds.to_vec(),
                buckets: h.buckets.to_vec(),
                count: h.count,
                sum: h.sum,
            },
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
