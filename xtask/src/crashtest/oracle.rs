//! The oracle: an independent model of the metric semantics, fed with what was issued and
//! what was acknowledged at which level, that judges every recovered state.

use std::collections::BTreeMap;

use ingestor::{HistogramSample, Ingestor, Op, SeriesState, Update};

/// Prometheus' default bucket bounds (the Go client's `DefBuckets`), which the engine's
/// default configuration gives a histogram created by an observation.
const DEFAULT_BOUNDS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// What a series is to the oracle: its kind and the numbers that matter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Counter {
        total: f64,
        resets: u64,
    },
    Gauge {
        value: f64,
        ts: i64,
    },
    /// Buckets are not cumulative; the last one is `+Inf`.
    Histogram {
        bounds: Vec<f64>,
        buckets: Vec<u64>,
        count: u64,
        sum: f64,
    },
}

impl Value {
    fn empty_histogram() -> Value {
        Value::Histogram {
            bounds: DEFAULT_BOUNDS.to_vec(),
            buckets: vec![0; DEFAULT_BOUNDS.len() + 1],
            count: 0,
            sum: 0.0,
        }
    }

    fn histogram_of(s: &HistogramSample) -> Value {
        Value::Histogram {
            bounds: s.bounds.to_vec(),
            buckets: s.buckets.to_vec(),
            count: s.buckets.iter().sum(),
            sum: s.sum,
        }
    }
}

/// The model state: series key text to value.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Model(pub(crate) BTreeMap<String, Value>);

impl Model {
    /// Applies a batch with the engine's metric semantics (written independently of the
    /// memstore).
    pub(crate) fn apply(&mut self, batch: &[Update]) {
        for u in batch {
            let k = u.key.to_string();
            let ts = u.timestamp.0;
            if matches!(u.op, Op::HistogramObserve(_)) && !self.0.contains_key(&k) {
                self.0.insert(k.clone(), Value::empty_histogram());
            }
            match (self.0.get_mut(&k), &u.op) {
                (_, Op::Delete) => {
                    self.0.remove(&k);
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
                (
                    Some(Value::Histogram { bounds, buckets, count, sum }),
                    &Op::HistogramObserve(v),
                ) => {
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
                    if bounds[..] == s.bounds[..] {
                        for (mine, n) in buckets.iter_mut().zip(s.buckets.iter()) {
                            *mine += n;
                        }
                        *count += s.buckets.iter().sum::<u64>();
                        *sum += s.sum;
                    } else {
                        *h = Value::histogram_of(s);
                    }
                }
                (None, &Op::CounterAdd(v) | &Op::CounterSet(v)) => {
                    self.0.insert(k, Value::Counter { total: v, resets: 0 });
                }
                (None, &Op::GaugeSet(v) | &Op::GaugeAdd(v)) => {
                    self.0.insert(k, Value::Gauge { value: v, ts });
                }
                (None, Op::HistogramSet(s) | Op::HistogramAdd(s)) => {
                    self.0.insert(k, Value::histogram_of(s));
                }
                (None, Op::HistogramObserve(_)) => unreachable!("inserted empty above"),
                (Some(_), _) => unreachable!("the workload gives each series one kind"),
            }
        }
    }

    /// The state of an open ingestor, in the model's terms.
    pub(crate) fn observe(db: &Ingestor) -> Model {
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
}

/// The invariants of `docs/crashtest.md`, each counted separately in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Invariant {
    /// Every update acknowledged durable (after a kill: written) is present.
    DurableSurvives,
    /// The state is the model's after a prefix of the issued batches: no phantoms, no holes,
    /// batches atomic, counters exact (nothing applied twice or skipped).
    PrefixExactlyOnce,
    /// Recovering twice gives the same state.
    RecoveryIdempotent,
    /// Damage to durable bytes in the middle is reported (open fails or reports the loss),
    /// and a torn tail of never-synced bytes opens cleanly.
    CorruptionReported,
    /// After a failed fsync, nothing it covered is acknowledged durable and writes are
    /// refused until reopened.
    FsyncFailureTerminal,
    /// No temporary files and no log segments a snapshot covers are left behind.
    NoLitter,
    /// The engine never panics, whatever the disk holds.
    NoPanic,
    /// With several writers ingesting and syncing at once, every acknowledgement at level
    /// Durable survives a power cut at any operation (group commit claims only what it
    /// synced).
    WritersDurable,
    /// With an older snapshot kept and the log it needs, damage to the newest snapshot costs
    /// nothing: open succeeds with the full state.
    KeepN,
}

impl Invariant {
    pub(crate) const ALL: [Invariant; 9] = [
        Invariant::DurableSurvives,
        Invariant::PrefixExactlyOnce,
        Invariant::RecoveryIdempotent,
        Invariant::CorruptionReported,
        Invariant::FsyncFailureTerminal,
        Invariant::NoLitter,
        Invariant::NoPanic,
        Invariant::WritersDurable,
        Invariant::KeepN,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Invariant::DurableSurvives => "durable survives",
            Invariant::PrefixExactlyOnce => "prefix, atomic batches, exactly once, no phantoms",
            Invariant::RecoveryIdempotent => "recovery idempotent",
            Invariant::CorruptionReported => "corruption reported, torn tail opens",
            Invariant::FsyncFailureTerminal => "fsync failure terminal",
            Invariant::NoLitter => "no litter",
            Invariant::NoPanic => "the engine never panics",
            Invariant::WritersDurable => "every writer's durable acks survive (group commit)",
            Invariant::KeepN => "keep N, a damaged newest snapshot loses nothing",
        }
    }
}

/// A broken invariant, with what was seen.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    pub(crate) invariant: Invariant,
    pub(crate) detail: String,
}

/// The issued batches of one life of a data directory and what was acknowledged.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    /// Every batch recovered in earlier lives, in order.
    pub(crate) accepted: Vec<Vec<Update>>,
    /// The state they give.
    pub(crate) base: Model,
    /// Batches issued in this life, in order.
    pub(crate) batches: Vec<Vec<Update>>,
    /// How many of them must survive (acknowledged durable; after a kill, acknowledged).
    pub(crate) must_survive: usize,
}

impl History {
    /// Judges a recovered state: it must equal the model after `k` of this life's batches,
    /// with `must_survive <= k`. Returns `k`.
    pub(crate) fn judge(&self, observed: &Model) -> Result<usize, Violation> {
        let mut model = self.base.clone();
        let mut matches = Vec::new();
        if model == *observed {
            matches.push(0);
        }
        for (i, b) in self.batches.iter().enumerate() {
            model.apply(b);
            if model == *observed {
                matches.push(i + 1);
            }
        }
        match matches.last() {
            None => Err(Violation {
                invariant: Invariant::PrefixExactlyOnce,
                detail: format!(
                    "the recovered state ({} series) is the model's after no prefix of the {} batches issued",
                    observed.0.len(),
                    self.batches.len()
                ),
            }),
            Some(&k) if k < self.must_survive => Err(Violation {
                invariant: Invariant::DurableSurvives,
                detail: format!(
                    "{} batches had to survive, the state is after {k}",
                    self.must_survive
                ),
            }),
            Some(&k) => Ok(k),
        }
    }

    /// Like [`History::judge`], for a recovery that reported cutting a damaged tail of synced
    /// data: any prefix of everything ever accepted and issued will do. Returns the prefix
    /// length over `accepted` then `batches`.
    pub(crate) fn judge_after_reported_loss(&self, observed: &Model) -> Result<usize, Violation> {
        let mut model = Model::default();
        let mut found = (model == *observed).then_some(0);
        for (i, b) in self.accepted.iter().chain(&self.batches).enumerate() {
            model.apply(b);
            if model == *observed {
                found = Some(i + 1);
            }
        }
        found.ok_or_else(|| Violation {
            invariant: Invariant::PrefixExactlyOnce,
            detail: format!(
                "after a reported loss, the recovered state ({} series) is no prefix of the {} batches accepted and issued",
                observed.0.len(),
                self.accepted.len() + self.batches.len()
            ),
        })
    }

    /// Starts the next life from the state after `k` of this life's batches.
    pub(crate) fn advance(&mut self, k: usize) {
        for b in self.batches.drain(..).take(k) {
            self.base.apply(&b);
            self.accepted.push(b);
        }
        self.must_survive = 0;
    }

    /// Starts the next life from the state after `k` batches of `accepted` then `batches`.
    pub(crate) fn advance_over_all(&mut self, k: usize) {
        let mut all: Vec<Vec<Update>> = std::mem::take(&mut self.accepted);
        all.append(&mut self.batches);
        all.truncate(k);
        self.base = Model::default();
        for b in &all {
            self.base.apply(b);
        }
        self.accepted = all;
        self.must_survive = 0;
    }
}
