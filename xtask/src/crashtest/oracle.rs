//! The oracle: an independent model of the metric semantics, fed with what was issued and
//! what was acknowledged at which level, that judges every recovered state.

use std::collections::BTreeMap;

use ingestor::{HistogramSample, Ingestor, Op, SeriesState, Update};
use ingestor_testkit::model::{self, Value};

/// The model's state (`ingestor_testkit::model`: kinds and values), with what else a
/// series must get back exactly after recovery: the time of its newest update (what
/// forwarding stamps its samples with), a counter's last reset time, a histogram's smallest
/// and largest observation.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Model {
    /// Kinds and values, by series key text.
    pub(crate) values: model::Model,
    /// The rest, by series key text.
    extra: BTreeMap<String, Extra>,
}

/// What [`Model`] keeps of a series beside its value.
#[derive(Debug, Clone, PartialEq)]
struct Extra {
    /// The largest timestamp of its updates since it was created.
    last_update: i64,
    /// A counter's: the timestamp of the last set that went below the total.
    last_reset: Option<i64>,
    /// A histogram's smallest and largest observation since the last set or add (which make
    /// them unknown: `+Inf` and `-Inf`); `+Inf` and `-Inf` for other kinds.
    min_max: (f64, f64),
}

impl Model {
    /// How many series it holds.
    pub(crate) fn len(&self) -> usize {
        self.values.0.len()
    }

    /// Applies one update: the value through the independent model, the rest here.
    fn apply_update(&mut self, key: &str, ts: i64, op: &model::Op) {
        let unknown = (f64::INFINITY, f64::NEG_INFINITY);
        match op {
            model::Op::Delete => {
                self.extra.remove(key);
            }
            _ => {
                let reset = matches!(
                    (self.values.0.get(key), op),
                    (Some(Value::Counter { total, .. }), model::Op::CounterSet(v)) if v < total
                );
                let e = self.extra.entry(key.to_string()).or_insert(Extra {
                    last_update: ts,
                    last_reset: None,
                    min_max: unknown,
                });
                e.last_update = e.last_update.max(ts);
                if reset {
                    e.last_reset = Some(ts);
                }
                match op {
                    model::Op::HistogramObserve(v) => {
                        e.min_max = (e.min_max.0.min(*v), e.min_max.1.max(*v));
                    }
                    model::Op::HistogramSet(_) | model::Op::HistogramAdd(_) => e.min_max = unknown,
                    _ => {}
                }
            }
        }
        self.values.apply_op(key, ts, op);
    }
}

/// The model (`ingestor_testkit::model`, written independently of the memstore) in the
/// engine's terms: fed with its updates, compared with an open ingestor's state.
pub(crate) trait EngineModel: Sized {
    /// Applies a batch with the engine's metric semantics.
    fn apply(&mut self, batch: &[Update]);

    /// The state of an open ingestor, in the model's terms.
    fn observe(db: &Ingestor) -> Self;
}

/// An engine operation in the model's terms.
fn op(op: &Op) -> model::Op {
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

impl EngineModel for Model {
    fn apply(&mut self, batch: &[Update]) {
        for u in batch {
            self.apply_update(&u.key.to_string(), u.timestamp.0, &op(&u.op));
        }
    }

    fn observe(db: &Ingestor) -> Model {
        let mut m = Model::default();
        for v in db.memstore().all() {
            let unknown = (f64::INFINITY, f64::NEG_INFINITY);
            let extra = match &v.state {
                SeriesState::Counter(c) => Extra {
                    last_update: v.last_update.0,
                    last_reset: c.last_reset.map(|t| t.0),
                    min_max: unknown,
                },
                SeriesState::Gauge(_) => {
                    Extra { last_update: v.last_update.0, last_reset: None, min_max: unknown }
                }
                SeriesState::Histogram(h) => Extra {
                    last_update: v.last_update.0,
                    last_reset: None,
                    min_max: (h.min, h.max),
                },
            };
            m.extra.insert(v.key.to_string(), extra);
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
            m.values.0.insert(v.key.to_string(), value);
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
    /// No temporary snapshot files are left behind after open (log segments a snapshot
    /// covers may be: see `docs/crashtest.md`).
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
                    observed.len(),
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
                observed.len(),
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
