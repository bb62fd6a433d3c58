//! The recorder: registration, the flusher, statistics and the exposition.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::ToSocketAddrs;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU64, fence};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ingestor::{
    Error as IngestError, HistogramSample, Ingestor, MAX_BATCH_POINTS, MemstoreError, MetricKind,
    Op, SeriesHandle, SeriesKey, SeriesState, Timestamp,
};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

use crate::cells::{CounterCell, GaugeCell, HistogramCell};
use crate::serve::MetricsServer;

/// The default flush interval: 100 ms.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The default histogram bucket bounds: 1, 2.5 and 5 times each power of ten from 10^-4 to
/// 10^5 (28 bounds, then `+Inf`), wide enough for seconds, milliseconds and bytes alike.
pub const DEFAULT_BUCKETS: [f64; 28] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0, 50000.0,
    100000.0,
];

/// What can go wrong building, installing or flushing a recorder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Histogram bucket bounds that a histogram sample may not have (not finite, not strictly
    /// increasing, too many).
    #[error("invalid histogram buckets{}: {reason}", metric.as_ref().map(|m| format!(" for {m}")).unwrap_or_default())]
    InvalidBuckets {
        /// The metric they were given for (`None`: the default buckets).
        metric: Option<String>,
        /// The rule broken.
        reason: String,
    },
    /// A global label that a series key may not have.
    #[error("invalid global label {name}={value:?}: {reason}")]
    InvalidLabel {
        /// The label name.
        name: String,
        /// Its value.
        value: String,
        /// The rule broken.
        reason: String,
    },
    /// The flush interval is zero.
    #[error("the flush interval must be longer than zero")]
    ZeroInterval,
    /// The flusher thread could not be started.
    #[error("starting the flusher thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// A global recorder was already installed.
    #[error("a global metrics recorder is already installed")]
    AlreadyInstalled,
    /// A flush could not log everything it took: what it took is kept and logged by a later
    /// flush.
    #[error("flush: {0}")]
    Flush(#[source] IngestError),
}

/// The options of an [`IngestorRecorder`], with their defaults.
#[derive(Debug, Clone)]
#[must_use]
pub struct RecorderBuilder {
    db: Arc<Ingestor>,
    interval: Duration,
    buckets: Vec<f64>,
    overrides: Vec<(String, Vec<f64>)>,
    global_labels: Vec<(String, String)>,
    clock_ms: fn() -> i64,
}

impl RecorderBuilder {
    /// A builder over `db` with the defaults: a flush every [`DEFAULT_FLUSH_INTERVAL`],
    /// [`DEFAULT_BUCKETS`], no global labels, the system clock.
    pub fn new(db: Arc<Ingestor>) -> RecorderBuilder {
        RecorderBuilder {
            db,
            interval: DEFAULT_FLUSH_INTERVAL,
            buckets: DEFAULT_BUCKETS.to_vec(),
            overrides: Vec::new(),
            global_labels: Vec::new(),
            clock_ms: ingestor::system_clock_ms,
        }
    }

    /// How often the flusher logs what changed. After a crash, at most the increments of
    /// about one interval (plus the time a flush takes) are missing. Default: 100 ms.
    pub fn flush_interval(mut self, interval: Duration) -> RecorderBuilder {
        self.interval = interval;
        self
    }

    /// The bucket upper bounds of every histogram without an override (an implicit `+Inf`
    /// bucket follows). Default: [`DEFAULT_BUCKETS`].
    pub fn buckets(mut self, bounds: impl Into<Vec<f64>>) -> RecorderBuilder {
        self.buckets = bounds.into();
        self
    }

    /// The bucket upper bounds of the histograms named `metric` (the name as given to
    /// `histogram!`, before it is made a valid Prometheus name).
    pub fn buckets_for(
        mut self,
        metric: impl Into<String>,
        bounds: impl Into<Vec<f64>>,
    ) -> RecorderBuilder {
        self.overrides.push((metric.into(), bounds.into()));
        self
    }

    /// A label added to every series (a label of the metric's own with the same name wins).
    pub fn global_label(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> RecorderBuilder {
        self.global_labels.push((name.into(), value.into()));
        self
    }

    /// The wall clock that stamps logged updates, in milliseconds since the Unix epoch.
    /// Stamps never go backwards, whatever the clock does. Default: the system clock.
    pub fn clock_ms(mut self, clock: fn() -> i64) -> RecorderBuilder {
        self.clock_ms = clock;
        self
    }

    /// Validates the options and starts the flusher thread.
    ///
    /// # Errors
    /// [`Error::InvalidBuckets`], [`Error::InvalidLabel`], [`Error::ZeroInterval`],
    /// [`Error::Spawn`].
    pub fn build(self) -> Result<IngestorRecorder, Error> {
        if self.interval.is_zero() {
            return Err(Error::ZeroInterval);
        }
        let bounds = |metric: Option<&str>, b: Vec<f64>| -> Result<Arc<[f64]>, Error> {
            let n = b.len() + 1;
            HistogramSample::new(b, vec![0; n], 0.0).map(|s| s.bounds).map_err(|e| {
                Error::InvalidBuckets { metric: metric.map(str::to_owned), reason: e.to_string() }
            })
        };
        let buckets = bounds(None, self.buckets)?;
        let mut overrides = HashMap::new();
        for (metric, b) in self.overrides {
            let b = bounds(Some(&metric), b)?;
            overrides.insert(metric, b);
        }
        for (name, value) in &self.global_labels {
            SeriesKey::new("m", [(name, value)]).map_err(|e| Error::InvalidLabel {
                name: name.clone(),
                value: value.clone(),
                reason: e.to_string(),
            })?;
        }
        let shared = Arc::new(Shared {
            db: self.db,
            interval: self.interval,
            buckets,
            overrides,
            global_labels: self.global_labels,
            clock_ms: self.clock_ms,
            registry: RwLock::new(Registry::default()),
            flush: Mutex::new(FlushState::default()),
            descriptions: Mutex::new(HashMap::new()),
            counts: Counts::default(),
            last_error: Mutex::new(None),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("ingestor-recorder".into())
            .spawn(move || flusher(&thread_shared))
            .map_err(Error::Spawn)?;
        Ok(IngestorRecorder { shared, flusher: Some(flusher) })
    }
}

/// A durable `metrics` recorder over an [`Ingestor`]: see the crate documentation.
///
/// It owns the flusher thread: [`IngestorRecorder::shutdown`] (or dropping it) stops the
/// thread and flushes a last time. It implements [`metrics::Recorder`] itself (for
/// [`metrics::with_local_recorder`]); [`IngestorRecorder::install`] makes a
/// [`SharedRecorder`] over the same state the global recorder.
pub struct IngestorRecorder {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for IngestorRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestorRecorder")
            .field("interval", &self.shared.interval)
            .field("metrics", &read(&self.shared.registry).list.len())
            .finish_non_exhaustive()
    }
}

/// A cloneable [`metrics::Recorder`] over an [`IngestorRecorder`]'s state: what
/// [`IngestorRecorder::install`] hands to [`metrics::set_global_recorder`]. Handles it
/// registers keep working after the recorder is shut down, but nothing flushes them any more.
#[derive(Clone)]
pub struct SharedRecorder(Arc<Shared>);

impl std::fmt::Debug for SharedRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRecorder").finish_non_exhaustive()
    }
}

/// The recorder's counters, read from atomics ([`IngestorRecorder::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecorderStats {
    /// Metrics registered (one per series).
    pub metrics: usize,
    /// Flush rounds started (by the flusher thread, [`IngestorRecorder::flush`] and the final
    /// flush), numbered from 1.
    pub rounds: u64,
    /// The number of the latest round that logged everything it took: every update recorded
    /// before that round started is in the log. 0 if none did.
    ///
    /// So a thread that records updates, then reads `rounds` = *r*, knows them logged (at
    /// the level the ingestor acknowledged: *written* survives a process crash) as soon as
    /// `last_complete_round` > *r*.
    pub last_complete_round: u64,
    /// Points logged.
    pub points_logged: u64,
    /// Batches the ingestor refused as a whole (I/O, full disk, closed): their points are kept
    /// and logged by a later round.
    pub flush_errors: u64,
    /// Points dropped for good: a gauge set to a value that is not finite, a histogram sum
    /// that overflowed, a series whose kind conflicts with the stored one. Histogram
    /// observations that are not finite are counted here too.
    pub refused_points: u64,
    /// Registrations answered with a handle that records nothing: the key cannot be made a
    /// valid series key, or its series already has another kind (in the store, or registered
    /// here as another kind).
    pub refused_registrations: u64,
    /// The last error (of a flush or a registration), if any.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counts {
    rounds: AtomicU64,
    last_complete_round: AtomicU64,
    points: AtomicU64,
    errors: AtomicU64,
    refused_points: AtomicU64,
    refused_registrations: AtomicU64,
}

struct Shared {
    db: Arc<Ingestor>,
    interval: Duration,
    buckets: Arc<[f64]>,
    overrides: HashMap<String, Arc<[f64]>>,
    global_labels: Vec<(String, String)>,
    clock_ms: fn() -> i64,
    registry: RwLock<Registry>,
    /// One flush at a time; what the flusher keeps between rounds.
    flush: Mutex<FlushState>,
    /// Descriptions by (valid) metric name.
    descriptions: Mutex<HashMap<String, String>>,
    counts: Counts,
    last_error: Mutex<Option<String>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// A no-op hasher for `metrics::Key`, which hashes itself once, at construction, and writes
/// only that `u64`.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Registry {
    /// Registered keys (several may name one series once made valid).
    #[allow(clippy::mutable_key_type)] // Key hashes only its precomputed hash.
    by_key: HashMap<Key, Arc<Metric>, BuildHasherDefault<KeyHasher>>,
    by_series: HashMap<SeriesKey, Arc<Metric>>,
    /// In registration order: the flusher picks up new ones by position.
    list: Vec<Arc<Metric>>,
}

struct Metric {
    key: SeriesKey,
    cell: CellRef,
    /// The series had no state when registered: log it once even if untouched, so that it
    /// shows (at zero) from the first flush.
    announce: bool,
}

enum CellRef {
    Counter(Arc<CounterCell>),
    Gauge(Arc<GaugeCell>),
    Histogram(Arc<HistogramCell>),
}

impl CellRef {
    fn kind(&self) -> MetricKind {
        match self {
            CellRef::Counter(_) => MetricKind::Counter,
            CellRef::Gauge(_) => MetricKind::Gauge,
            CellRef::Histogram(_) => MetricKind::Histogram,
        }
    }
}

/// What the flusher keeps per metric between rounds.
struct Entry {
    metric: Arc<Metric>,
    handle: Option<SeriesHandle>,
    /// Counters: what of `CounterCell::added` is logged.
    logged: u64,
    /// Histograms: observations taken from the cell and not logged yet.
    carry: Option<(Vec<u64>, f64)>,
    announce: bool,
    /// The series has another kind in the store: nothing more is logged for it.
    refused: bool,
}

#[derive(Default)]
struct FlushState {
    entries: Vec<Entry>,
    /// The last timestamp logged: stamps never go backwards.
    last_ts: i64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// `name` made a valid Prometheus metric name: every character outside `[A-Za-z0-9_:]`
/// becomes `_`, and a leading digit gets a `_` before it (`http.requests` → `http_requests`).
#[must_use]
pub fn metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }),
    );
    out
}

fn label_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
    out
}

impl Shared {
    fn note_error(&self, message: String) {
        *lock(&self.last_error) = Some(message);
    }

    /// The series key of a `metrics` key: valid names, empty label values dropped, global
    /// labels added.
    fn series_key(&self, key: &Key) -> Result<SeriesKey, String> {
        let name = metric_name(key.name());
        let mut labels: Vec<(String, String)> = key
            .labels()
            .filter(|l| !l.value().is_empty())
            .map(|l| (label_name(l.key()), l.value().to_owned()))
            .collect();
        for (n, v) in &self.global_labels {
            if !labels.iter().any(|(m, _)| m == n) {
                labels.push((n.clone(), v.clone()));
            }
        }
        SeriesKey::new(&name, labels).map_err(|e| format!("metric {}: {e}", key.name()))
    }

    fn register(&self, key: &Key, kind: MetricKind) -> Option<Arc<Metric>> {
        let refuse = |message: String| {
            self.counts.refused_registrations.fetch_add(1, Relaxed);
            self.note_error(message);
            None
        };
        let conflict = |m: &Metric| {
            format!(
                "{} is registered as a {}; a {kind} of that name records nothing",
                m.key,
                m.cell.kind()
            )
        };
        if let Some(m) = read(&self.registry).by_key.get(key) {
            return if m.cell.kind() == kind { Some(Arc::clone(m)) } else { refuse(conflict(m)) };
        }
        let series = match self.series_key(key) {
            Ok(s) => s,
            Err(e) => return refuse(e),
        };
        let mut registry = write(&self.registry);
        if let Some(m) = registry.by_key.get(key) {
            return if m.cell.kind() == kind { Some(Arc::clone(m)) } else { refuse(conflict(m)) };
        }
        if let Some(m) = registry.by_series.get(&series).cloned() {
            if m.cell.kind() != kind {
                return refuse(conflict(&m));
            }
            registry.by_key.insert(key.clone(), Arc::clone(&m));
            return Some(m);
        }
        // The state recovered from the log: a counter continues its total, a gauge its value.
        let stored = self.db.get(&series);
        let announce = stored.is_none();
        if let Some(view) = &stored {
            if view.state.kind() != kind {
                return refuse(format!(
                    "{series} is a {} in the ingestor; a {kind} of that name records nothing",
                    view.state.kind()
                ));
            }
            let mut flush = lock(&self.flush);
            flush.last_ts = flush.last_ts.max(view.last_update.0);
        }
        let cell = match (kind, stored.map(|v| v.state)) {
            (MetricKind::Counter, state) => {
                let base = match state {
                    // Whole increments only: a fractional part written by others stays in
                    // the store (deltas add to it) but does not count towards `absolute`.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Some(SeriesState::Counter(c)) if c.total.is_finite() => c.total as u64,
                    _ => 0,
                };
                CellRef::Counter(Arc::new(CounterCell::new(base)))
            }
            (MetricKind::Gauge, state) => {
                let value = match state {
                    Some(SeriesState::Gauge(g)) => g.value,
                    _ => 0.0,
                };
                CellRef::Gauge(Arc::new(GaugeCell::new(value, false)))
            }
            (MetricKind::Histogram, _) => {
                let bounds = self.overrides.get(key.name()).unwrap_or(&self.buckets);
                CellRef::Histogram(Arc::new(HistogramCell::new(Arc::clone(bounds))))
            }
        };
        let metric = Arc::new(Metric { key: series.clone(), cell, announce });
        registry.by_key.insert(key.clone(), Arc::clone(&metric));
        registry.by_series.insert(series, Arc::clone(&metric));
        registry.list.push(Arc::clone(&metric));
        Some(metric)
    }

    fn describe(&self, key: &KeyName, description: &SharedString) {
        lock(&self.descriptions).insert(metric_name(key.as_str()), description.to_string());
    }

    /// One flush round: takes what changed, logs it in batches through
    /// [`Ingestor::ingest_by_handle`], and keeps what could not be logged for the next round.
    fn flush(&self) -> Result<usize, Error> {
        let mut state = lock(&self.flush);
        let round = self.counts.rounds.fetch_add(1, Relaxed) + 1;
        // Pairs with the fence of `stats`: whatever was recorded before a `stats` call that
        // read a round number below this one is seen by this round (see `RecorderStats`).
        fence(SeqCst);
        {
            let registry = read(&self.registry);
            let known = state.entries.len();
            for m in &registry.list[known..] {
                state.entries.push(Entry {
                    metric: Arc::clone(m),
                    handle: None,
                    logged: 0,
                    carry: None,
                    announce: m.announce,
                    refused: false,
                });
            }
        }
        let ts = (self.clock_ms)().max(state.last_ts);
        state.last_ts = ts;
        let ts = Timestamp(ts);

        // Take what changed: (entry index, op, counter mark).
        let mut points: Vec<(usize, Op, u64)> = Vec::new();
        let mut first_error: Option<IngestError> = None;
        for (i, e) in state.entries.iter_mut().enumerate() {
            if e.refused {
                continue;
            }
            let taken = match &e.metric.cell {
                CellRef::Counter(c) => {
                    let added = c.added();
                    let delta = added.wrapping_sub(e.logged);
                    #[allow(clippy::cast_precision_loss)]
                    (delta > 0 || e.announce).then_some((Op::CounterAdd(delta as f64), added))
                }
                CellRef::Gauge(g) => match g.take_changed() {
                    Some(v) if v.is_finite() => Some((Op::GaugeSet(v), 0)),
                    Some(_) => {
                        self.counts.refused_points.fetch_add(1, Relaxed);
                        None
                    }
                    None if e.announce => Some((Op::GaugeSet(g.value()), 0)),
                    None => None,
                },
                CellRef::Histogram(h) => {
                    let refused = h.refused.swap(0, Relaxed);
                    self.counts.refused_points.fetch_add(refused, Relaxed);
                    let (buckets, sum) =
                        e.carry.get_or_insert_with(|| (vec![0; h.bounds.len() + 1], 0.0));
                    let fresh = h.take_into(buckets, sum);
                    let pending = fresh || buckets.iter().any(|&n| n > 0) || e.announce;
                    if !sum.is_finite() {
                        // The sum overflowed: the sample cannot be logged; drop it.
                        let dropped = buckets.iter().sum::<u64>();
                        self.counts.refused_points.fetch_add(dropped.max(1), Relaxed);
                        buckets.iter_mut().for_each(|n| *n = 0);
                        *sum = 0.0;
                        None
                    } else {
                        pending.then(|| {
                            let sample = HistogramSample {
                                bounds: Arc::clone(&h.bounds),
                                buckets: buckets.clone().into_boxed_slice(),
                                sum: *sum,
                            };
                            (Op::HistogramAdd(Arc::new(sample)), 0)
                        })
                    }
                }
            };
            let Some((op, mark)) = taken else { continue };
            if e.handle.is_none() {
                match self.db.resolve(&e.metric.key) {
                    Ok(h) => e.handle = Some(h),
                    Err(err) => {
                        // Kept: counters and histograms by not moving their marks, gauges
                        // by staying dirty.
                        if let CellRef::Gauge(g) = &e.metric.cell {
                            g.mark_dirty();
                        }
                        first_error.get_or_insert(err);
                        continue;
                    }
                }
            }
            points.push((i, op, mark));
        }

        let mut logged = 0;
        for chunk in points.chunks(MAX_BATCH_POINTS) {
            match self.log_chunk(&mut state.entries, chunk.to_vec(), ts) {
                Ok(n) => logged += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.counts.points.fetch_add(logged as u64, Relaxed);
        match first_error {
            None => {
                self.counts.last_complete_round.fetch_max(round, Relaxed);
                Ok(logged)
            }
            Some(e) => {
                self.counts.errors.fetch_add(1, Relaxed);
                self.note_error(format!("flush: {e}"));
                Err(Error::Flush(e))
            }
        }
    }

    /// Logs one batch; isolates points the ingestor refuses one by one (a stale handle is
    /// resolved again, a kind conflict or an invalid value dropped) and retries the rest.
    /// On any other error, every point of the batch is kept for the next round.
    fn log_chunk(
        &self,
        entries: &mut [Entry],
        mut points: Vec<(usize, Op, u64)>,
        ts: Timestamp,
    ) -> Result<usize, IngestError> {
        let mut resolved_again = false;
        loop {
            if points.is_empty() {
                return Ok(0);
            }
            let batch: Vec<(SeriesHandle, Timestamp, Op)> = points
                .iter()
                .map(|(i, op, _)| (entries[*i].handle.expect("resolved"), ts, op.clone()))
                .collect();
            match self.db.ingest_by_handle(&batch) {
                Ok(_) => {
                    for (i, _, mark) in &points {
                        let e = &mut entries[*i];
                        e.logged = *mark;
                        e.announce = false;
                        if let Some((b, s)) = &mut e.carry {
                            b.iter_mut().for_each(|n| *n = 0);
                            *s = 0.0;
                        }
                    }
                    return Ok(points.len());
                }
                Err(IngestError::Memstore(MemstoreError::UnknownSeries { .. }))
                    if !resolved_again =>
                {
                    // A series was deleted (by its time-to-live, say): resolve them all again.
                    resolved_again = true;
                    for (i, _, _) in &points {
                        match self.db.resolve(&entries[*i].metric.key) {
                            Ok(h) => entries[*i].handle = Some(h),
                            Err(e) => {
                                self.keep(&points, entries);
                                return Err(e);
                            }
                        }
                    }
                }
                Err(IngestError::Memstore(MemstoreError::KindConflict { index, .. })) => {
                    let (i, _, _) = points.remove(index);
                    let e = &mut entries[i];
                    e.refused = true;
                    self.counts.refused_points.fetch_add(1, Relaxed);
                    self.note_error(format!(
                        "{} has another kind in the ingestor: no longer logged",
                        e.metric.key
                    ));
                }
                Err(IngestError::InvalidUpdate { index, source }) => {
                    let (i, _, mark) = points.remove(index);
                    let e = &mut entries[i];
                    e.logged = mark;
                    if let Some((b, s)) = &mut e.carry {
                        b.iter_mut().for_each(|n| *n = 0);
                        *s = 0.0;
                    }
                    self.counts.refused_points.fetch_add(1, Relaxed);
                    self.note_error(format!("{}: {source}: dropped", e.metric.key));
                }
                Err(e) => {
                    self.keep(&points, entries);
                    return Err(e);
                }
            }
        }
    }

    /// Keeps points that were not logged: gauges become dirty again (counters and
    /// histograms keep theirs by not moving their marks).
    fn keep(&self, points: &[(usize, Op, u64)], entries: &[Entry]) {
        for (i, _, _) in points {
            if let CellRef::Gauge(g) = &entries[*i].metric.cell {
                g.mark_dirty();
            }
        }
    }

    fn stats(&self) -> RecorderStats {
        fence(SeqCst);
        RecorderStats {
            metrics: read(&self.registry).list.len(),
            rounds: self.counts.rounds.load(Relaxed),
            last_complete_round: self.counts.last_complete_round.load(Relaxed),
            points_logged: self.counts.points.load(Relaxed),
            flush_errors: self.counts.errors.load(Relaxed),
            refused_points: self.counts.refused_points.load(Relaxed),
            refused_registrations: self.counts.refused_registrations.load(Relaxed),
            last_error: lock(&self.last_error).clone(),
        }
    }

    fn render(&self) -> String {
        let mut text = String::new();
        self.db.memstore().expose(&mut text, None);
        let descriptions = lock(&self.descriptions);
        if descriptions.is_empty() {
            return text;
        }
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let described = line.strip_prefix("# HELP ").and_then(|rest| {
                let family = rest.split(' ').next()?;
                descriptions
                    .get(family)
                    .or_else(|| descriptions.get(family.strip_suffix("_total")?))
                    .map(|d| (family, d))
            });
            match described {
                Some((family, d)) => {
                    out.push_str("# HELP ");
                    out.push_str(family);
                    out.push(' ');
                    out.push_str(&d.replace('\\', "\\\\").replace('\n', "\\n"));
                    out.push('\n');
                }
                None => out.push_str(line),
            }
        }
        out
    }
}

/// The flusher thread: a round every interval (at a fixed rate; late rounds run at once)
/// until told to stop.
fn flusher(shared: &Shared) {
    let mut next = Instant::now() + shared.interval;
    loop {
        {
            let mut stop = lock(&shared.stop);
            loop {
                if *stop {
                    return;
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                stop = shared
                    .wake
                    .wait_timeout(stop, next - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        // Errors are counted and kept in the statistics; what was not logged is retried.
        let _ = shared.flush();
        next += shared.interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}

impl IngestorRecorder {
    /// A builder over `db`: see [`RecorderBuilder`].
    pub fn builder(db: Arc<Ingestor>) -> RecorderBuilder {
        RecorderBuilder::new(db)
    }

    /// A recorder over `db` with the default options.
    ///
    /// # Errors
    /// [`Error::Spawn`] if the flusher thread cannot start.
    pub fn new(db: Arc<Ingestor>) -> Result<IngestorRecorder, Error> {
        RecorderBuilder::new(db).build()
    }

    /// Makes this recorder the global one ([`metrics::set_global_recorder`]), so that
    /// `counter!`, `gauge!` and `histogram!` anywhere in the process record here.
    ///
    /// # Errors
    /// [`Error::AlreadyInstalled`] if a global recorder was already set.
    pub fn install(&self) -> Result<(), Error> {
        metrics::set_global_recorder(self.shared_recorder()).map_err(|_| Error::AlreadyInstalled)
    }

    /// A cloneable [`metrics::Recorder`] over this recorder's state.
    #[must_use]
    pub fn shared_recorder(&self) -> SharedRecorder {
        SharedRecorder(Arc::clone(&self.shared))
    }

    /// The ingestor it logs to.
    #[must_use]
    pub fn ingestor(&self) -> &Arc<Ingestor> {
        &self.shared.db
    }

    /// The flush interval.
    #[must_use]
    pub fn flush_interval(&self) -> Duration {
        self.shared.interval
    }

    /// Runs a flush round now (the flusher thread runs one every interval): logs everything
    /// recorded so far. Returns the points logged.
    ///
    /// # Errors
    /// [`Error::Flush`] with the ingestor's first error: what it could not log is kept for
    /// the next round.
    pub fn flush(&self) -> Result<usize, Error> {
        self.shared.flush()
    }

    /// The recorder's counters.
    #[must_use]
    pub fn stats(&self) -> RecorderStats {
        self.shared.stats()
    }

    /// Every series of the ingestor in the Prometheus text format 0.0.4 (content type
    /// [`ingestor::EXPOSITION_CONTENT_TYPE`]), as of the last flush: what `/metrics`
    /// serves. Descriptions given through `describe_*!` replace the generic `# HELP` text.
    #[must_use]
    pub fn render(&self) -> String {
        self.shared.render()
    }

    /// Serves `GET /metrics` ([`IngestorRecorder::render`]) on `addr` from a thread of its
    /// own, one connection at a time, until the [`MetricsServer`] is dropped.
    ///
    /// # Errors
    /// Binding the address; starting the thread.
    pub fn serve(&self, addr: impl ToSocketAddrs) -> std::io::Result<MetricsServer> {
        let shared = Arc::clone(&self.shared);
        MetricsServer::start(addr, Box::new(move || shared.render()))
    }

    /// Stops the flusher thread and flushes a last time. Dropping the recorder does the same,
    /// ignoring the error.
    ///
    /// # Errors
    /// As [`IngestorRecorder::flush`], for the last flush.
    pub fn shutdown(mut self) -> Result<usize, Error> {
        self.stop()
    }

    fn stop(&mut self) -> Result<usize, Error> {
        let Some(thread) = self.flusher.take() else { return Ok(0) };
        *lock(&self.shared.stop) = true;
        self.shared.wake.notify_all();
        let _ = thread.join();
        self.shared.flush()
    }
}

impl Drop for IngestorRecorder {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl SharedRecorder {
    /// As [`IngestorRecorder::render`].
    #[must_use]
    pub fn render(&self) -> String {
        self.0.render()
    }

    /// As [`IngestorRecorder::stats`].
    #[must_use]
    pub fn stats(&self) -> RecorderStats {
        self.0.stats()
    }
}

impl metrics::Recorder for Shared {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(&key, &description);
    }

    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(&key, &description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(&key, &description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        match self.register(key, MetricKind::Counter).map(|m| match &m.cell {
            CellRef::Counter(c) => Some(Arc::clone(c)),
            _ => None,
        }) {
            Some(Some(c)) => Counter::from_arc(c),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        match self.register(key, MetricKind::Gauge).map(|m| match &m.cell {
            CellRef::Gauge(g) => Some(Arc::clone(g)),
            _ => None,
        }) {
            Some(Some(g)) => Gauge::from_arc(g),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        match self.register(key, MetricKind::Histogram).map(|m| match &m.cell {
            CellRef::Histogram(h) => Some(Arc::clone(h)),
            _ => None,
        }) {
            Some(Some(h)) => Histogram::from_arc(h),
            _ => Histogram::noop(),
        }
    }
}

macro_rules! delegate_recorder {
    ($ty:ty, $shared:ident => $expr:expr) => {
        impl metrics::Recorder for $ty {
            fn describe_counter(
                &self,
                key: KeyName,
                unit: Option<Unit>,
                description: SharedString,
            ) {
                let $shared = self;
                $expr.describe_counter(key, unit, description);
            }
            fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
                let $shared = self;
                $expr.describe_gauge(key, unit, description);
            }
            fn describe_histogram(
                &self,
                key: KeyName,
                unit: Option<Unit>,
                description: SharedString,
            ) {
                let $shared = self;
                $expr.describe_histogram(key, unit, description);
            }
            fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
                let $shared = self;
                $expr.register_counter(key, metadata)
            }
            fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
                let $shared = self;
                $expr.register_gauge(key, metadata)
            }
            fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
                let $shared = self;
                $expr.register_histogram(key, metadata)
            }
        }
    };
}

delegate_recorder!(IngestorRecorder, r => r.shared);
delegate_recorder!(SharedRecorder, r => r.0);
