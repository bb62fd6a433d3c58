//! The deterministic workload: batch `i` of seed `s` is a pure function of `(s, i)`, so that a
//! parent can regenerate exactly what a killed child ingested.

use ingestor::{HistogramSample, Op, SeriesKey, Timestamp, Update};

/// SplitMix64: small, fast, and good enough to drive a workload.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Series in the workload; each has one kind, fixed by its index.
pub(crate) const SERIES: usize = 48;

pub(crate) fn key(i: usize) -> SeriesKey {
    let name = ["requests", "temperature", "latency"][i % 3];
    SeriesKey::new(name, [("host", format!("h{}", i / 3)), ("dc", ["eu", "us"][i % 2].to_string())])
        .expect("valid key")
}

/// A histogram set (`set`) or add over one of two bound sets, with small bucket counts and
/// a sum in halves.
fn histogram_sample(rng: &mut Rng, set: bool) -> Op {
    const BOUNDS: [&[f64]; 2] = [&[1.0, 2.5, 5.0], &[0.5, 1.0, 2.0, 4.0, 8.0]];
    let bounds = BOUNDS[rng.below(2) as usize];
    let buckets: Vec<u64> = (0..=bounds.len()).map(|_| rng.below(4)).collect();
    let sum = rng.below(400) as f64 / 2.0;
    let sample = HistogramSample::new(bounds, buckets, sum).expect("valid sample");
    if set { Op::HistogramSet(sample.into()) } else { Op::HistogramAdd(sample.into()) }
}

/// The workload's first timestamp, in milliseconds: a time of today's order (2023-11), so that
/// timestamps take the bytes real ones do in every format.
const TIME_BASE: i64 = 1_700_000_000_000;

/// A gauge value: a third of a random number (most of them, every bit of the mantissa
/// set), a huge or tiny one, or a plain half.
fn gauge_value(rng: &mut Rng) -> f64 {
    let v = rng.below(1 << 40) as f64;
    match rng.below(8) {
        0 => v * 1e290,
        1 => v * 1e-300,
        2 => (v / 2.0).round() / 2.0,
        _ => v / 3.0 - 1e11,
    }
}

/// Whether the simulated workload turns batch `index` of workload `seed` into one that
/// validation refuses (one in 16): [`refused`] of it.
pub(crate) fn is_refused(seed: u64, index: u64) -> bool {
    Rng::new(seed ^ index.wrapping_mul(0x9fb2_1c65_1e98_df25)).below(16) == 0
}

/// `batch` with a conflict in front: an add to a counter's series, then a gauge set of the
/// same series. Whatever the state, validation refuses the whole batch (a series keeps its
/// kind within a batch as across batches), which must then leave nothing behind.
pub(crate) fn refused(mut batch: Vec<Update>) -> Vec<Update> {
    let ts = batch.first().map_or(Timestamp(TIME_BASE), |u| u.timestamp);
    let counter = key(0);
    let conflict = [
        Update::new(counter.clone(), ts, Op::CounterAdd(1.0)).expect("valid update"),
        Update::new(counter, ts, Op::GaugeSet(1.0)).expect("valid update"),
    ];
    batch.splice(0..0, conflict);
    batch
}

/// Batch `index` of workload `seed`: 1 to 24 updates of counter adds and sets, gauge sets and
/// adds, histogram observations, sets and adds (over their own bounds), and deletes. Counter,
/// histogram and gauge-add values are integers or halves, so their sums are exact in any
/// order; gauge sets take any value ([`gauge_value`]).
pub(crate) fn batch(seed: u64, index: u64) -> Vec<Update> {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93));
    let n = 1 + rng.below(24) as usize;
    (0..n)
        .map(|_| {
            let i = rng.below(SERIES as u64) as usize;
            let v = rng.below(200) as f64 / 2.0;
            let op = match (i % 3, rng.below(20)) {
                (_, 0) => Op::Delete,
                (0, 1 | 2) => Op::CounterSet(v),
                (0, _) => Op::CounterAdd(v),
                (1, 3 | 4) => Op::GaugeAdd(v - 50.0),
                // Values with every bit of the mantissa set, not only halves: a format that
                // narrowed a value anywhere (log, snapshot, replay) would change it.
                (1, _) => Op::GaugeSet(gauge_value(&mut rng)),
                (_, 5 | 6) => histogram_sample(&mut rng, true),
                (_, 7) => histogram_sample(&mut rng, false),
                _ => Op::HistogramObserve(v / 10.0),
            };
            let ts = TIME_BASE + index as i64 * 10 + rng.below(15) as i64;
            Update::new(key(i), Timestamp(ts), op).expect("valid update")
        })
        .collect()
}
