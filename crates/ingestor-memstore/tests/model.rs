//! A seeded model test: random batches against a plain `BTreeMap` model of the semantics,
//! checking every series' state and selector results after each batch. A failing seed is
//! printed; keep it as a named regression test.

use std::collections::{BTreeMap, BTreeSet};

use ingestor_codec::{HistogramSample, Lsn, MetricKind, Op, SeriesKey, Timestamp};
use ingestor_memstore::{
    DEFAULT_BUCKETS, Memstore, MemstoreConfig, MemstoreError, Selector, SeriesRef, SeriesState,
    SlotPoint,
};
use ingestor_testkit::Rng;

#[derive(Debug, Clone, PartialEq)]
enum Model {
    Counter { total: f64, resets: u64 },
    Gauge { value: f64, ts: i64 },
    Histogram { bounds: Vec<f64>, buckets: Vec<u64>, count: u64, sum: f64 },
}

fn model_of(s: &HistogramSample) -> Model {
    Model::Histogram {
        bounds: s.bounds.to_vec(),
        buckets: s.buckets.to_vec(),
        count: s.buckets.iter().sum(),
        sum: s.sum,
    }
}

fn key(i: u64) -> SeriesKey {
    let name = ["cpu", "mem", "disk", "net"][(i % 4) as usize];
    // `id` is the key's own string: deleting the series drops it, and the store gives its
    // symbol to the next new string.
    SeriesKey::new(
        name,
        [("host", format!("h{}", i % 7)), ("id", format!("k{i}")), ("zone", format!("z{}", i % 3))],
    )
    .unwrap()
}

fn kind_of(i: u64) -> MetricKind {
    [MetricKind::Counter, MetricKind::Gauge, MetricKind::Histogram][(i % 3) as usize]
}

fn apply_model(model: &mut BTreeMap<SeriesKey, Model>, k: &SeriesKey, ts: i64, op: &Op) {
    match (model.get_mut(k), op) {
        (_, Op::Delete) => {
            model.remove(k);
        }
        (Some(Model::Counter { total, .. }), &Op::CounterAdd(d)) => *total += d,
        (Some(Model::Counter { total, resets }), &Op::CounterSet(v)) => {
            *resets += u64::from(v < *total);
            *total = v;
        }
        (Some(Model::Gauge { value, ts: t }), &Op::GaugeSet(v)) if ts >= *t => {
            *value = v;
            *t = ts;
        }
        (Some(Model::Gauge { .. }), Op::GaugeSet(_)) => {}
        (Some(Model::Gauge { value, ts: t }), &Op::GaugeAdd(d)) => {
            *value += d;
            *t = (*t).max(ts);
        }
        (Some(Model::Histogram { bounds, buckets, count, sum }), &Op::HistogramObserve(v)) => {
            let i = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
            buckets[i] += 1;
            *count += 1;
            *sum += v;
        }
        (Some(m @ Model::Histogram { .. }), Op::HistogramSet(s)) => *m = model_of(s),
        (Some(m @ Model::Histogram { .. }), Op::HistogramAdd(s)) => {
            let Model::Histogram { bounds, buckets, count, sum } = m else { unreachable!() };
            if bounds[..] == s.bounds[..] {
                buckets.iter_mut().zip(s.buckets.iter()).for_each(|(a, b)| *a += b);
                *count += s.buckets.iter().sum::<u64>();
                *sum += s.sum;
            } else {
                *m = model_of(s);
            }
        }
        (None, op) => {
            let mut fresh = match op.kind().unwrap() {
                MetricKind::Counter => Model::Counter { total: 0.0, resets: 0 },
                MetricKind::Gauge => Model::Gauge { value: 0.0, ts: i64::MIN },
                MetricKind::Histogram => Model::Histogram {
                    bounds: DEFAULT_BUCKETS.to_vec(),
                    buckets: vec![0; DEFAULT_BUCKETS.len() + 1],
                    count: 0,
                    sum: 0.0,
                },
            };
            std::mem::swap(model.entry(k.clone()).or_insert(fresh.clone()), &mut fresh);
            apply_model(model, k, ts, op);
        }
        (Some(m), op) => panic!("model got a conflicting op {op:?} for {m:?}"),
    }
}

fn observed(state: &SeriesState) -> Model {
    match state {
        SeriesState::Counter(c) => Model::Counter { total: c.total, resets: c.resets },
        SeriesState::Gauge(g) => Model::Gauge { value: g.value, ts: g.timestamp.0 },
        SeriesState::Histogram(h) => Model::Histogram {
            bounds: h.bounds.to_vec(),
            buckets: h.buckets.to_vec(),
            count: h.count,
            sum: h.sum,
        },
    }
}

fn run(seed: u64) {
    let store = Memstore::new(MemstoreConfig::default()).unwrap();
    let mut model: BTreeMap<SeriesKey, Model> = BTreeMap::new();
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    // Views frozen along the way, with the model they must keep showing.
    let mut frozen = Vec::new();
    // Every handle given out, with its key: a handle reads its key's series while the store
    // resolves the key to it, and nothing once the series was deleted, though the slots of
    // deleted series are freed (below) and taken by other series.
    let mut handles: BTreeSet<(SeriesRef, SeriesKey)> = BTreeSet::new();
    for lsn in 1..=300u64 {
        if lsn % 100 == 0 {
            frozen.push((lsn, store.freeze(), model.clone()));
        }
        if rng.below(4) == 0 {
            store.free_deleted_slots();
        }
        let n = 1 + rng.below(12);
        let mut batch = Vec::new();
        for _ in 0..n {
            let i = rng.below(40);
            let v = (rng.below(2000) as f64) / 100.0;
            let op = match (kind_of(i), rng.below(12)) {
                (_, 0) => Op::Delete,
                (MetricKind::Counter, 1) => Op::CounterSet(v),
                (MetricKind::Counter, _) => Op::CounterAdd(v),
                (MetricKind::Gauge, 2) => Op::GaugeAdd(v - 10.0),
                (MetricKind::Gauge, _) => Op::GaugeSet(v),
                (MetricKind::Histogram, 3 | 4) => {
                    let bounds: &[f64] =
                        [&[1.0, 5.0][..], &[0.5, 2.0, 8.0][..]][rng.below(2) as usize];
                    let buckets: Vec<u64> = (0..=bounds.len()).map(|_| rng.below(5)).collect();
                    let s = HistogramSample::new(bounds, buckets, v).unwrap();
                    if rng.below(2) == 0 {
                        Op::HistogramSet(s.into())
                    } else {
                        Op::HistogramAdd(s.into())
                    }
                }
                (MetricKind::Histogram, _) => Op::HistogramObserve(v / 2.0),
            };
            batch.push((key(i), Timestamp(rng.below(50) as i64), op));
        }
        // Now and then, a batch with a kind conflict: refused whole, nothing changes.
        if rng.below(10) == 0 {
            let i = rng.below(40);
            if model.get(&key(i)).is_some_and(|m| !matches!(m, Model::Gauge { .. })) {
                batch.push((key(i), Timestamp(0), Op::GaugeSet(1.0)));
            }
        }
        let keys: Vec<&SeriesKey> = batch.iter().map(|b| &b.0).collect();
        let (ids, created) = store.intern_all(&keys).unwrap();
        handles.extend(ids.iter().zip(&keys).map(|(&h, &k)| (h, k.clone())));
        let points: Vec<SlotPoint> = batch
            .iter()
            .zip(&ids)
            .map(|((_, ts, op), &series)| SlotPoint { series, timestamp: *ts, op: op.clone() })
            .collect();
        match store.validate(&points) {
            Ok(()) => {
                store.apply(Lsn(lsn), &points);
                for (k, ts, op) in &batch {
                    apply_model(&mut model, k, ts.0, op);
                }
            }
            Err(MemstoreError::KindConflict { .. }) => store.discard_unwritten(&created),
            Err(e) => panic!("seed {seed} lsn {lsn}: {e}"),
        }
        assert_eq!(store.len(), model.len(), "seed {seed} lsn {lsn}");
        for (h, k) in &handles {
            let h = *h;
            let current = store.resolve(k) == Some(h);
            if !current {
                let p = [SlotPoint { series: h, timestamp: Timestamp(0), op: Op::Delete }];
                assert_eq!(store.validate(&p), Err(MemstoreError::UnknownSeries { id: h }));
            }
            assert_eq!(
                store.key(h).ok().as_ref(),
                current.then_some(k),
                "seed {seed} lsn {lsn}: {h}"
            );
        }
        if lsn % 25 == 0 {
            check_selectors(&store, &model, seed);
        }
        for (k, m) in &model {
            let got = store.get(k).unwrap_or_else(|| panic!("seed {seed} lsn {lsn}: {k} missing"));
            assert_eq!(&observed(&got.state), m, "seed {seed} lsn {lsn}: {k}");
        }
    }
    check_selectors(&store, &model, seed);
    // Every series, in key order, each found again by its handle.
    let all = store.all();
    let keys: Vec<String> = all.iter().map(|v| v.key.to_string()).collect();
    let want: Vec<String> = model.keys().map(ToString::to_string).collect();
    assert_eq!(keys, want, "seed {seed}: all()");
    for v in &all {
        assert_eq!(store.get_by_ref(v.id).as_ref(), Some(v), "seed {seed}: {}", v.key);
    }
    // Each view frozen along the way still shows the state of its moment, though the store
    // deleted series and gave their strings' symbols to others since.
    for (lsn, view, then) in &frozen {
        let seen: BTreeMap<SeriesKey, Model> =
            view.iter().map(|r| (r.key, observed(&r.state))).collect();
        assert_eq!(&seen, then, "seed {seed}: the view frozen at {lsn}");
    }
    // The frozen view holds exactly the live series.
    let frozen = store.freeze();
    assert_eq!(frozen.len(), model.len());
    assert_eq!(frozen.iter().count(), model.len());
    assert!(
        handles.iter().any(|(h, _)| h.generation() > 0),
        "seed {seed}: no slot of a deleted series was reused"
    );
}

/// Selectors against the model.
fn check_selectors(store: &Memstore, model: &BTreeMap<SeriesKey, Model>, seed: u64) {
    for (text, keep) in [
        ("cpu", Box::new(|k: &SeriesKey| k.name() == "cpu") as Box<dyn Fn(&SeriesKey) -> bool>),
        (r#"{host="h1"}"#, Box::new(|k: &SeriesKey| k.label("host") == Some("h1"))),
        (
            r#"mem{zone!="z0"}"#,
            Box::new(|k: &SeriesKey| k.name() == "mem" && k.label("zone") != Some("z0")),
        ),
        (
            r#"{__name__=~"c.*|n.t", host=~"h[12]"}"#,
            Box::new(|k: &SeriesKey| {
                (k.name() == "cpu" || k.name() == "net")
                    && matches!(k.label("host"), Some("h1" | "h2"))
            }),
        ),
        (r#"{zone!~"z[01]", host!=""}"#, Box::new(|k: &SeriesKey| k.label("zone") == Some("z2"))),
    ] {
        let got: Vec<String> = store
            .select(&Selector::parse(text).unwrap())
            .iter()
            .map(|v| v.key.to_string())
            .collect();
        let want: Vec<String> = model.keys().filter(|k| keep(k)).map(ToString::to_string).collect();
        assert_eq!(got, want, "seed {seed}: {text}");
    }
}

#[test]
fn memstore_matches_the_model() {
    for seed in 1..=40 {
        run(seed);
    }
}

#[test]
fn the_series_limit_refuses_a_batch_whole() {
    let mut config = MemstoreConfig::default();
    config.max_series = 3;
    let store = Memstore::new(config).unwrap();
    let k: Vec<SeriesKey> = (0..4).map(key).collect();
    store.intern_all(&[&k[0], &k[1]]).unwrap();
    let err = store.intern_all(&[&k[0], &k[2], &k[3]]).unwrap_err();
    assert!(matches!(err, MemstoreError::SeriesLimit { limit: 3, .. }), "{err}");
    assert_eq!(store.slots(), 2, "nothing of the refused batch was created");
    store.intern_all(&[&k[2], &k[2]]).unwrap();
    assert_eq!(store.slots(), 3, "a key repeated in one batch is one series");
}

#[test]
fn frozen_state_does_not_change_when_the_store_does() {
    let store = Memstore::new(MemstoreConfig::default()).unwrap();
    let keys: Vec<SeriesKey> =
        (0..3000).map(|i| SeriesKey::new("cpu", [("host", format!("h{i}"))]).unwrap()).collect();
    let ids: Vec<_> = keys.iter().map(|k| store.intern(k).unwrap()).collect();
    let points: Vec<SlotPoint> = ids
        .iter()
        .map(|&series| SlotPoint { series, timestamp: Timestamp(1), op: Op::CounterAdd(1.0) })
        .collect();
    store.apply(Lsn(1), &points);
    let frozen = store.freeze();
    store.apply(Lsn(2), &points);
    for r in frozen.iter() {
        assert!(matches!(r.state, SeriesState::Counter(ref c) if c.total == 1.0));
    }
    assert_eq!(frozen.len(), 3000);
    assert!(
        matches!(store.get(&keys[0]).unwrap().state, SeriesState::Counter(ref c) if c.total == 2.0)
    );
}

#[test]
fn resolve_parts_finds_exactly_what_resolve_finds() {
    let store = Memstore::new(MemstoreConfig::default()).unwrap();
    let keys: Vec<SeriesKey> = (0..200)
        .map(|i| SeriesKey::new("m", [("host", format!("h{i}")), ("zone", "z".into())]).unwrap())
        .collect();
    let first: Vec<&SeriesKey> = keys[..100].iter().collect();
    let (ids, _) = store.intern_all(&first).unwrap();
    for (k, id) in keys.iter().zip(&ids) {
        let labels: Vec<(&str, &str)> = k.labels().iter().map(|l| (l.name(), l.value())).collect();
        assert_eq!(store.resolve_parts(k.name(), &labels), Some(*id), "{k}");
        assert_eq!(store.resolve(k), Some(*id));
    }
    for k in &keys[100..] {
        let labels: Vec<(&str, &str)> = k.labels().iter().map(|l| (l.name(), l.value())).collect();
        assert_eq!(store.resolve_parts(k.name(), &labels), None, "{k} was never interned");
    }
    // A prefix, an extra label or another name is another series.
    let k = &keys[0];
    let labels: Vec<(&str, &str)> = k.labels().iter().map(|l| (l.name(), l.value())).collect();
    assert_eq!(store.resolve_parts(k.name(), &labels[..labels.len() - 1]), None);
    let mut more = labels.clone();
    more.push(("zzz", "1"));
    assert_eq!(store.resolve_parts(k.name(), &more), None);
    assert_eq!(store.resolve_parts("another_name", &labels), None);
}
