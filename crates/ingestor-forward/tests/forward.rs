//! Forwarding against a scripted remote-write receiver: order, retries (5xx, 429 with
//! `Retry-After`), 4xx drops, resuming at the durable cursor after a restart, every series
//! changed after the last flush marker in the first flush after a crash, and both budget
//! policies.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingestor::{Config, FinalSnapshot, Ingestor, Lsn, Op, SeriesKey, StdFs, Timestamp, Update};
use ingestor_forward::{BudgetPolicy, Destination, ForwardConfig, Forwarder, cursor};
use ingestor_testkit::receiver::{Receiver, Version};

/// What the receiver got: each request's series as `name{labels} value @ts` (with its
/// metric type under 2.0), and the status it answered.
fn answered(rx: &Receiver) -> Vec<(Vec<String>, u16)> {
    rx.requests()
        .into_iter()
        .map(|r| {
            let series = r
                .series
                .iter()
                .map(|s| {
                    let labels: Vec<String> =
                        s.labels.iter().map(|(n, v)| format!("{n}={v}")).collect();
                    let kind = if r.version == Version::V2 {
                        format!(" {:?}", s.metric_type)
                    } else {
                        String::new()
                    };
                    format!("{} {:?}{kind}", labels.join(","), s.samples)
                })
                .collect();
            (series, r.status)
        })
        .collect()
}

fn config(url: &str) -> ForwardConfig {
    let mut c = ForwardConfig::default();
    c.destinations = vec![Destination::new("rx", url).unwrap()];
    // Flushes by hand only.
    c.flush_interval = Duration::from_secs(3_600);
    c.backoff_min = Duration::from_millis(2);
    c.backoff_max = Duration::from_millis(20);
    c.segment_bytes = 4 << 10;
    // One sender: these tests check the order of requests across series.
    c.shards = 1;
    c
}

/// No snapshots: after a restart the memstore is the log's replay, and a series' change
/// LSN its own batch's. (With a snapshot newer than the last flush, every series in it
/// counts as changed at the snapshot's LSN: sent again, never skipped.)
fn open(dir: &Path) -> Arc<Ingestor> {
    let config = Config::default().snapshot_interval(None).final_snapshot(FinalSnapshot::Never);
    Arc::new(Ingestor::open(dir.join("data"), config).unwrap().0)
}

fn start(db: &Arc<Ingestor>, dir: &Path, c: ForwardConfig) -> Arc<Forwarder> {
    Forwarder::start(Arc::clone(db), Arc::new(StdFs::new()), &dir.join("outbox"), c).unwrap()
}

fn gauge(db: &Ingestor, name: &str, ts: i64, v: f64) {
    let key = SeriesKey::new(name, [("job", "t")]).unwrap();
    db.ingest(&[Update::new(key, Timestamp(ts), Op::GaugeSet(v)).unwrap()]).unwrap();
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn line(name: &str, v: f64, ts: i64) -> String {
    format!("__name__={name},job=t [({ts}, {v:?})]")
}

#[test]
fn in_order_with_retries_and_drops() {
    let rx = Receiver::start();
    rx.script([(503, None), (400, None), (429, Some("0")), (500, None)]);
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let f = start(&db, dir.path(), config(rx.url()));
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        gauge(&db, name, 1_000 + i as i64, i as f64);
        assert_eq!(f.flush().unwrap(), 1);
    }
    wait_until("three requests settled", || f.stats()[0].pending_requests == 0);
    let got = answered(&rx);
    let statuses: Vec<u16> = got.iter().map(|r| r.1).collect();
    // a: 503, retried, 400: dropped; b: 429 (Retry-After 0), 500, then sent; c: sent.
    assert_eq!(statuses, [503, 400, 429, 500, 204, 204]);
    assert_eq!(got[0].0, [line("a", 0.0, 1_000)]);
    assert_eq!(got[1].0, [line("a", 0.0, 1_000)]);
    assert_eq!(got[2].0, [line("b", 1.0, 1_001)]);
    assert_eq!(got[4].0, [line("b", 1.0, 1_001)]);
    assert_eq!(got[5].0, [line("c", 2.0, 1_002)]);
    let s = &f.stats()[0];
    assert_eq!((s.requests_sent, s.samples_sent, s.retries), (2, 2, 3));
    assert_eq!(s.samples_dropped_rejected, 1);
    assert!(s.last_error.as_deref().unwrap_or("").contains("500"), "{s:?}");
    let mut metrics = String::new();
    f.write_metrics(&mut metrics);
    assert!(
        metrics.contains(
            r#"ingestor_forward_samples_dropped_total{destination="rx",reason="rejected"} 1"#
        ),
        "{metrics}"
    );
    // Only changed series go: nothing changed, nothing flushed.
    assert_eq!(f.flush().unwrap(), 0);
    f.stop();
}

#[test]
fn a_restart_resumes_at_the_cursor_and_a_crash_loses_no_change() {
    let rx = Receiver::start();
    rx.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let f = start(&db, dir.path(), config(rx.url()));
    gauge(&db, "a", 1_000, 1.0);
    f.flush().unwrap();
    gauge(&db, "b", 1_001, 2.0);
    f.flush().unwrap();
    // Changed after the last flush, then a "crash": no last flush.
    gauge(&db, "c", 1_002, 3.0);
    gauge(&db, "a", 1_003, 4.0);
    wait_until("a is being retried", || !answered(&rx).is_empty());
    f.stop_now();
    drop(f);
    drop(db);

    rx.set_down(false);
    let db = open(dir.path());
    let f = start(&db, dir.path(), config(rx.url()));
    // The first flush after the restart takes every series changed after the last marker.
    assert_eq!(f.flush().unwrap(), 2, "c and the new a");
    wait_until("everything sent", || f.stats()[0].pending_requests == 0);
    let sent: Vec<Vec<String>> =
        answered(&rx).into_iter().filter(|r| r.1 == 204).map(|r| r.0).collect();
    assert_eq!(
        sent,
        [
            vec![line("a", 1.0, 1_000)],
            vec![line("b", 2.0, 1_001)],
            vec![line("a", 4.0, 1_003), line("c", 3.0, 1_002)],
        ]
    );
    f.stop();
    drop(f);
    drop(db);

    // A clean restart sends nothing again.
    let before = answered(&rx).len();
    let db = open(dir.path());
    let f = start(&db, dir.path(), config(rx.url()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(answered(&rx).len(), before, "nothing resent after a clean stop");
    assert_eq!(f.stats()[0].pending_requests, 0);
    f.stop();
    drop(f);
    // What `ingestor stats` reads: the destination and nothing waiting for it.
    let r = ingestor_forward::outbox_report(Arc::new(StdFs::new()), &dir.path().join("outbox"))
        .unwrap();
    assert_eq!(r.destinations.len(), 1);
    assert_eq!((r.destinations[0].0.as_str(), r.destinations[0].3), ("rx", 0));
    assert!(r.covered.0 > 0 && r.lsns.1 > r.lsns.0, "{r:?}");
}

#[test]
fn block_refuses_and_drop_oldest_drops_exactly() {
    let rx = Receiver::start();
    rx.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut c = config(rx.url());
    c.budget_bytes = 1;
    let f = start(&db, dir.path(), c.clone());
    assert_eq!(f.blocked(), None);
    gauge(&db, "a", 1_000, 1.0);
    f.flush().unwrap();
    let why = f.blocked().expect("at the budget");
    assert!(why.contains("rx") && why.contains("budget"), "{why}");
    // The block policy drops nothing: what waits is the one request.
    let one = f.stats()[0].pending_bytes;
    assert!(one > 0);
    f.stop_now();
    drop(f);

    // drop_oldest with room for one request: of three waiting, the two oldest go.
    let db2 = db;
    c.budget_policy = BudgetPolicy::DropOldest;
    c.budget_bytes = one + one / 2;
    let f = start(&db2, dir.path(), c);
    gauge(&db2, "b", 1_001, 2.0);
    f.flush().unwrap();
    gauge(&db2, "c", 1_002, 3.0);
    f.flush().unwrap();
    // Dropped while the receiver is still down (checked before every attempt).
    wait_until("the two oldest dropped", || f.stats()[0].samples_dropped_budget == 2);
    rx.set_down(false);
    wait_until("settled", || f.stats()[0].pending_requests == 0);
    let s = &f.stats()[0];
    assert_eq!(s.samples_dropped_budget, 2, "{s:?}");
    assert_eq!(f.blocked(), None, "drop_oldest never blocks");
    let sent: Vec<Vec<String>> =
        answered(&rx).into_iter().filter(|r| r.1 == 204).map(|r| r.0).collect();
    assert_eq!(sent, [vec![line("c", 3.0, 1_002)]]);
    f.stop();
}

#[test]
fn remote_write_2_per_destination_with_types_and_written_counts() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut c = config(rx.url());
    c.destinations = vec![Destination::new("rx2", rx.url()).unwrap().remote_write_v2()];
    let f = start(&db, dir.path(), c);
    let key = SeriesKey::new("jobs", [("job", "t")]).unwrap();
    db.ingest(&[Update::new(key, Timestamp(5), Op::CounterAdd(3.0)).unwrap()]).unwrap();
    gauge(&db, "temp", 6, 1.5);
    f.flush().unwrap();
    wait_until("sent", || f.stats()[0].pending_requests == 0);
    let got = answered(&rx);
    assert_eq!(got.len(), 1);
    // 2.0 carries each series' type inline (from the 1.0 request's metadata).
    assert_eq!(
        got[0].0,
        [
            "__name__=jobs_total,job=t [(5, 3.0)] Some(Counter)".to_string(),
            "__name__=temp,job=t [(6, 1.5)] Some(Gauge)".to_string(),
        ]
    );
    assert_eq!((f.stats()[0].samples_sent, f.stats()[0].samples_dropped_rejected), (2, 0));
    // A receiver that answers 2xx without the written count did not take 2.0: counted as
    // not written, with the reason.
    rx.set_speaks_v2(false);
    gauge(&db, "temp", 7, 2.5);
    f.flush().unwrap();
    wait_until("sent", || f.stats()[0].pending_requests == 0);
    let s = &f.stats()[0];
    assert_eq!((s.samples_sent, s.samples_dropped_rejected), (2, 1), "{s:?}");
    assert!(s.last_error.as_deref().unwrap_or("").contains("0 of 1 samples written"), "{s:?}");
    f.stop();
}

#[test]
fn sent_segments_are_deleted_and_the_last_marker_kept() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let f = start(&db, dir.path(), config(rx.url()));
    // Enough requests to fill several 4 KiB segments.
    for round in 0..40 {
        for i in 0..10 {
            gauge(&db, &format!("s{i}"), 1_000 + round, round as f64);
        }
        f.flush().unwrap();
    }
    wait_until("sent", || f.stats()[0].pending_requests == 0);
    let outbox = dir.path().join("outbox");
    let segments = || {
        std::fs::read_dir(&outbox)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".seg"))
            .count()
    };
    // The flusher deletes what every cursor passed between flushes.
    wait_until("segments deleted", || segments() <= 2);
    f.stop();
    drop(f);
    let r = ingestor_forward::outbox_report(Arc::new(StdFs::new()), &outbox).unwrap();
    assert!(r.lsns.0 > Lsn(1), "the first segments are gone: {r:?}");
    assert_eq!(r.destinations[0].3, 0, "nothing waits");
    // The last marker survived the deletion: a restart flushes nothing again.
    let f = start(&db, dir.path(), config(rx.url()));
    assert_eq!(f.flush().unwrap(), 0);
    f.stop();
    assert_eq!(answered(&rx).iter().filter(|r| r.1 == 204).count(), 40);
}

/// Every sample the receiver answered 204 for, by series (labels), in arrival order.
fn arrived(rx: &Receiver) -> std::collections::BTreeMap<String, Vec<i64>> {
    let mut by_series: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for (series, status) in answered(rx) {
        if status != 204 {
            continue;
        }
        for s in series {
            let (labels, rest) = s.split_once(' ').unwrap();
            let t: i64 = rest.trim_start_matches("[(").split(',').next().unwrap().parse().unwrap();
            by_series.entry(labels.to_owned()).or_default().push(t);
        }
    }
    by_series
}

fn cursor_files(outbox: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cursor-"))
        .collect();
    files.sort();
    files
}

#[test]
fn shards_keep_each_series_in_order_and_a_new_count_waits_for_the_backlog() {
    let rx = Receiver::start();
    rx.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let db = open(dir.path());
    let mut c = config(rx.url());
    let series: Vec<String> = (0..24).map(|i| format!("s{i}")).collect();
    let mut ts = 1_000;
    // Three runs configured with 4, then 2, then 3 shards, the receiver down during the
    // first two: the outbox holds requests written with 4 and 2 shards when the count
    // changes, so the destination keeps its 4 shards (and cursors) until nothing waits.
    for (run, shards) in [4usize, 2, 3].into_iter().enumerate() {
        c.shards = shards;
        let f = start(&db, dir.path(), c.clone());
        assert_eq!(f.stats()[0].shards, 4, "run {run}: requests wait, the count stays");
        for _round in 0..3 {
            for name in &series {
                ts += 1;
                gauge(&db, name, ts, ts as f64);
            }
            assert_eq!(f.flush().unwrap(), series.len());
        }
        if run == 2 {
            rx.set_down(false);
            wait_until("everything sent", || f.stats()[0].pending_requests == 0);
        }
        f.stop_now();
    }
    assert_eq!(cursor_files(&outbox), ["cursor-rx", "cursor-rx.1", "cursor-rx.2", "cursor-rx.3"]);
    // Every sample arrived (9 rounds of 24 series), each series' in time order, none twice.
    let by_series = arrived(&rx);
    assert_eq!(by_series.len(), series.len());
    for (name, times) in &by_series {
        assert_eq!(times.len(), 9, "{name}: {times:?}");
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{name} out of order: {times:?}");
    }
    // Nothing waits now: the next start takes the configured count, at the outbox's end.
    let f = start(&db, dir.path(), c.clone());
    assert_eq!(f.stats()[0].shards, 3);
    std::thread::sleep(Duration::from_millis(100));
    f.stop();
    drop(f);
    assert_eq!(cursor_files(&outbox), ["cursor-rx", "cursor-rx.1", "cursor-rx.2"]);
    let r = ingestor_forward::outbox_report(Arc::new(StdFs::new()), &outbox).unwrap();
    let names: Vec<(&str, u64)> = r.destinations.iter().map(|d| (d.0.as_str(), d.3)).collect();
    assert_eq!(names, [("rx", 0), ("rx.1", 0), ("rx.2", 0)]);
    assert_eq!(arrived(&rx).values().map(Vec::len).sum::<usize>(), 9 * 24, "nothing resent");
}

#[test]
fn a_shard_resumes_at_its_own_cursor_and_a_removed_one_sends_its_shard_again() {
    // Two shards, the receiver down: every request waits. Then shard 0's cursor is moved to
    // the outbox's end (as if it had sent all of its requests) and the forwarder restarts
    // configured with three shards: requests wait, so it keeps two, each at its own cursor:
    // only shard 1's requests go. Then shard 1's file is removed (as an operator does with a
    // damaged one): its requests go again, none of shard 0's.
    let rx = Receiver::start();
    rx.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut c = config(rx.url());
    c.shards = 2;
    c.max_samples_per_request = 2;
    let f = start(&db, dir.path(), c.clone());
    for i in 0..20 {
        gauge(&db, &format!("s{i}"), 1_000 + i, i as f64);
    }
    f.flush().unwrap();
    f.stop_now();
    drop(f);
    let outbox = dir.path().join("outbox");
    let report = ingestor_forward::outbox_report(Arc::new(StdFs::new()), &outbox).unwrap();
    let pending: Vec<(String, u64)> =
        report.destinations.iter().map(|d| (d.0.clone(), d.4)).collect();
    assert_eq!(pending.len(), 2, "{pending:?}");
    let (shard0, shard1) = (pending[0].1, pending[1].1);
    assert!(shard0 > 0 && shard1 > 0 && shard0 + shard1 == 20, "{pending:?}");
    let mut moved = vec![0u8; cursor::CURSOR_FILE_LEN as usize];
    moved[..cursor::SLOT_LEN].copy_from_slice(&cursor::encode_slot(9, report.lsns.1, 2));
    std::fs::write(outbox.join("cursor-rx"), moved).unwrap();

    rx.set_down(false);
    c.shards = 3;
    let f = start(&db, dir.path(), c.clone());
    assert_eq!(f.stats()[0].shards, 2, "requests wait: the count stays");
    wait_until("sent", || f.stats()[0].pending_requests == 0);
    let sent = |rx: &Receiver| -> u64 {
        answered(rx).iter().filter(|r| r.1 == 204).map(|r| r.0.len() as u64).sum()
    };
    assert_eq!(sent(&rx), shard1, "only the requests of the shard that had not sent them");
    assert_eq!(f.stats()[0].samples_sent, shard1);
    f.stop_now();
    drop(f);

    std::fs::remove_file(outbox.join("cursor-rx.1")).unwrap();
    c.shards = 2;
    let f = start(&db, dir.path(), c);
    wait_until("sent", || f.stats()[0].pending_requests == 0);
    assert_eq!(sent(&rx), 2 * shard1, "shard 1's requests once more, none of shard 0's");
    f.stop();
}

#[test]
fn drop_oldest_with_shards_drops_only_the_oldest_requests() {
    // Four shards, one-sample requests, the receiver down, a budget of about three
    // requests: of twelve waiting, the oldest go (whichever shard holds them), exactly as
    // many as the budget needs, and the newest three are delivered once it is back.
    let rx = Receiver::start();
    rx.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut c = config(rx.url());
    c.shards = 4;
    c.max_samples_per_request = 1;
    let f = start(&db, dir.path(), c.clone());
    gauge(&db, "probe", 999, 0.0);
    f.flush().unwrap();
    let one = f.stats()[0].pending_bytes;
    f.stop_now();
    drop(f);
    // The probe's request is sent (and gone) before the real ones.
    rx.set_down(false);
    let f = start(&db, dir.path(), c.clone());
    wait_until("probe sent", || f.stats()[0].pending_requests == 0);
    f.stop_now();
    drop(f);
    rx.set_down(true);
    c.budget_policy = BudgetPolicy::DropOldest;
    c.budget_bytes = 3 * one + one / 2;
    let f = start(&db, dir.path(), c);
    for round in 0..12 {
        gauge(&db, &format!("s{round}"), 2_000 + round, round as f64);
        f.flush().unwrap();
    }
    wait_until("nine dropped", || f.stats()[0].samples_dropped_budget >= 9);
    rx.set_down(false);
    wait_until("settled", || f.stats()[0].pending_requests == 0);
    let s = &f.stats()[0];
    // This run's figures: the probe went with the run before.
    assert_eq!((s.samples_dropped_budget, s.samples_sent), (9, 3), "{s:?}");
    let got: Vec<String> = arrived(&rx).keys().cloned().collect();
    assert_eq!(
        got,
        ["__name__=probe,job=t", "__name__=s10,job=t", "__name__=s11,job=t", "__name__=s9,job=t"]
    );
    f.stop();
}
