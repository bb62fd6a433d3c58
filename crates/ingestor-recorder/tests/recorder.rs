//! The recorder against a real ingestor: what a flush logs, what a restart continues from,
//! what is refused and what is kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ingestor::{Config, Ingestor, MemstoreConfig, Op, SeriesKey, SeriesState, Timestamp, Update};
use ingestor_recorder::{IngestorRecorder, RecorderBuilder};
use metrics::{counter, describe_counter, gauge, histogram, with_local_recorder};

fn open(dir: &std::path::Path) -> Arc<Ingestor> {
    Arc::new(Ingestor::open(dir, Config::default()).unwrap().0)
}

fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(name, labels.iter().copied()).unwrap()
}

fn counter_total(db: &Ingestor, key: &SeriesKey) -> Option<f64> {
    match db.get(key)?.state {
        SeriesState::Counter(c) => Some(c.total),
        other => panic!("{key} is not a counter: {other:?}"),
    }
}

fn gauge_value(db: &Ingestor, key: &SeriesKey) -> Option<f64> {
    match db.get(key)?.state {
        SeriesState::Gauge(g) => Some(g.value),
        other => panic!("{key} is not a gauge: {other:?}"),
    }
}

/// A recorder whose flusher thread effectively never runs: the tests flush by hand.
fn manual(db: &Arc<Ingestor>) -> RecorderBuilder {
    IngestorRecorder::builder(Arc::clone(db)).flush_interval(Duration::from_secs(3600))
}

#[test]
fn a_flush_logs_counters_gauges_and_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let rec = manual(&db).buckets([1.0, 10.0]).build().unwrap();
    with_local_recorder(&rec, || {
        let c = counter!("requests", "code" => "200");
        c.increment(3);
        c.increment(4);
        gauge!("queue_depth").set(5.0);
        gauge!("queue_depth").increment(2.5);
        for v in [0.5, 2.0, 20.0, 30.0] {
            histogram!("latency").record(v);
        }
    });
    assert_eq!(counter_total(&db, &key("requests", &[("code", "200")])), None, "not flushed yet");
    assert_eq!(rec.flush().unwrap(), 3);
    assert_eq!(counter_total(&db, &key("requests", &[("code", "200")])), Some(7.0));
    assert_eq!(gauge_value(&db, &key("queue_depth", &[])), Some(7.5));
    match db.get(&key("latency", &[])).unwrap().state {
        SeriesState::Histogram(h) => {
            assert_eq!(&*h.bounds, &[1.0, 10.0]);
            assert_eq!(&*h.buckets, &[1, 1, 2]);
            assert_eq!((h.count, h.sum), (4, 52.5));
        }
        other => panic!("{other:?}"),
    }
    // Nothing changed: nothing logged.
    assert_eq!(rec.flush().unwrap(), 0);
    let text = rec.render();
    assert!(text.contains("requests_total{code=\"200\"} 7\n"), "{text}");
    assert!(text.contains("queue_depth 7.5\n"), "{text}");
    assert!(text.contains("latency_bucket{le=\"10\"} 2\n"), "{text}");
    assert!(text.contains("latency_count 4\n"), "{text}");
    let stats = rec.stats();
    assert_eq!((stats.metrics, stats.points_logged, stats.rounds), (3, 3, 2));
    assert_eq!(stats.last_complete_round, 2);
}

#[test]
fn a_registered_but_untouched_metric_shows_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let rec = manual(&db).build().unwrap();
    with_local_recorder(&rec, || {
        let _ = counter!("never_incremented");
    });
    rec.flush().unwrap();
    assert_eq!(counter_total(&db, &key("never_incremented", &[])), Some(0.0));
}

#[test]
fn a_restart_continues_from_the_recovered_totals() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        let rec = manual(&db).build().unwrap();
        with_local_recorder(&rec, || {
            counter!("jobs").increment(5);
            gauge!("workers").set(4.0);
            histogram!("size").record(3.0);
        });
        rec.shutdown().unwrap(); // the final flush
        // No close: as far as the data is concerned, a crash.
    }
    let db = open(dir.path());
    assert_eq!(counter_total(&db, &key("jobs", &[])), Some(5.0));
    let rec = manual(&db).build().unwrap();
    with_local_recorder(&rec, || {
        counter!("jobs").increment(2);
        gauge!("workers").increment(1.0);
        histogram!("size").record(30.0);
        // `absolute` compares with the recovered total: 6 is below 7, 10 raises it.
        counter!("jobs").absolute(6);
    });
    rec.flush().unwrap();
    assert_eq!(counter_total(&db, &key("jobs", &[])), Some(7.0));
    assert_eq!(gauge_value(&db, &key("workers", &[])), Some(5.0));
    with_local_recorder(&rec, || counter!("jobs").absolute(10));
    rec.flush().unwrap();
    assert_eq!(counter_total(&db, &key("jobs", &[])), Some(10.0));
    match db.get(&key("size", &[])).unwrap().state {
        SeriesState::Histogram(h) => assert_eq!((h.count, h.sum), (2, 33.0)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_flusher_thread_flushes_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let rec = IngestorRecorder::builder(Arc::clone(&db))
        .flush_interval(Duration::from_millis(10))
        .build()
        .unwrap();
    let c = with_local_recorder(&rec, || counter!("ticks"));
    c.increment(9);
    let started = Instant::now();
    while counter_total(&db, &key("ticks", &[])) != Some(9.0) {
        assert!(started.elapsed() < Duration::from_secs(10), "no flush in 10 s: {:?}", rec.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(rec.stats().rounds >= 1);
    // Increments after shutdown's final flush are not logged, but those before are.
    c.increment(1);
    rec.shutdown().unwrap();
    assert_eq!(counter_total(&db, &key("ticks", &[])), Some(10.0));
}

#[test]
fn names_are_made_valid_and_global_labels_added() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let rec = manual(&db).global_label("service", "api").build().unwrap();
    with_local_recorder(&rec, || {
        counter!("http.requests", "status-code" => "500", "empty" => "").increment(1);
        // The metric's own label wins over the global one.
        counter!("http.requests", "service" => "admin").increment(2);
        describe_counter!("http.requests", "HTTP requests served.\nBy status.");
    });
    rec.flush().unwrap();
    assert_eq!(
        counter_total(&db, &key("http_requests", &[("service", "api"), ("status_code", "500")])),
        Some(1.0)
    );
    assert_eq!(counter_total(&db, &key("http_requests", &[("service", "admin")])), Some(2.0));
    let text = rec.render();
    assert!(
        text.contains("# HELP http_requests_total HTTP requests served.\\nBy status.\n"),
        "{text}"
    );
}

#[test]
fn a_kind_conflict_refuses_that_metric_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.ingest(&[Update::new(key("temperature", &[]), Timestamp(1), Op::GaugeSet(20.0)).unwrap()])
        .unwrap();
    let rec = manual(&db).build().unwrap();
    with_local_recorder(&rec, || {
        counter!("temperature").increment(1); // a gauge in the store: refused
        counter!("fine").increment(1);
        counter!("other").increment(1);
        gauge!("other").set(1.0); // registered here as a counter: refused
    });
    rec.flush().unwrap();
    assert_eq!(gauge_value(&db, &key("temperature", &[])), Some(20.0));
    assert_eq!(counter_total(&db, &key("fine", &[])), Some(1.0));
    assert_eq!(counter_total(&db, &key("other", &[])), Some(1.0));
    let stats = rec.stats();
    assert_eq!(stats.refused_registrations, 2, "{stats:?}");
    assert!(stats.last_error.is_some());
}

#[test]
fn a_deleted_series_is_resolved_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let rec = manual(&db).build().unwrap();
    let c = with_local_recorder(&rec, || counter!("deleted_later"));
    c.increment(3);
    rec.flush().unwrap();
    db.ingest(&[Update::new(key("deleted_later", &[]), Timestamp(i64::MAX), Op::Delete).unwrap()])
        .unwrap();
    assert_eq!(counter_total(&db, &key("deleted_later", &[])), None);
    c.increment(4);
    rec.flush().unwrap();
    // The delete dropped the old total: the series starts again from what came after.
    assert_eq!(counter_total(&db, &key("deleted_later", &[])), Some(4.0));
    assert_eq!(rec.stats().flush_errors, 0);
}

#[test]
fn what_a_flush_cannot_log_is_kept_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    let mut memstore = MemstoreConfig::default();
    memstore.max_series = 1;
    config.memstore = memstore;
    let db = Arc::new(Ingestor::open(dir.path(), config).unwrap().0);
    let rec = manual(&db).build().unwrap();
    let (a, b, g) =
        with_local_recorder(&rec, || (counter!("first"), counter!("second"), gauge!("third")));
    a.increment(1);
    b.increment(2);
    g.set(3.0);
    // One series fits: the others cannot be resolved and wait, with their values.
    assert!(rec.flush().is_err());
    assert_eq!(counter_total(&db, &key("first", &[])), Some(1.0));
    assert_eq!(counter_total(&db, &key("second", &[])), None);
    b.increment(5);
    assert!(rec.flush().is_err());
    let stats = rec.stats();
    assert_eq!((stats.flush_errors, stats.last_complete_round), (2, 0), "{stats:?}");
    // Free the slot: the kept values are logged whole.
    db.ingest(&[Update::new(key("first", &[]), Timestamp(i64::MAX), Op::Delete).unwrap()]).unwrap();
    let _ = rec.flush();
    let logged_second = counter_total(&db, &key("second", &[]));
    let logged_third = db.get(&key("third", &[])).map(|v| v.state);
    // Exactly one of them got the slot, with everything recorded for it.
    match (logged_second, logged_third) {
        (Some(total), None) => assert_eq!(total, 7.0),
        (None, Some(SeriesState::Gauge(g))) => assert_eq!(g.value, 3.0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn serves_metrics_over_http() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let rec = manual(&db).build().unwrap();
    with_local_recorder(&rec, || counter!("served").increment(2));
    rec.flush().unwrap();
    let server = rec.serve("127.0.0.1:0").unwrap();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let page = get("/metrics");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("\r\n\r\n# HELP served_total"), "{page}");
    assert!(page.ends_with("served_total 2\n"), "{page}");
    assert!(get("/other").starts_with("HTTP/1.1 404"));
    drop(server);
}
