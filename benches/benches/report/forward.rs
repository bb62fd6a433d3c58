//! Forwarding into VictoriaMetrics on loopback (Debian's `victoria-metrics`, started here):
//! an embedded ingestor and its forwarder (`ingestor-forward`), measured three ways.
//!
//! - **Live**: every second all the standard series are updated by handle and flushed; the
//!   samples VictoriaMetrics answered 2xx for, per second of the phase.
//! - **Backlog**: the destination is down (a closed port) while flushes pile up a backlog of
//!   10 M samples (1 M with `--quick`) in the outbox; then the forwarder restarts pointed at
//!   VictoriaMetrics and drains it: samples per second of the drain, against the live rate.
//! - **Resume**: from that restart to the first request VictoriaMetrics answered, against
//!   the mean time of one request.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingestor::{Config, FinalSnapshot, Ingestor, Op, SeriesKey, StdFs, SyncPolicy, Timestamp};
use ingestor_forward::{Destination, ForwardConfig, Forwarder};

use crate::http::{Binaries, Server, System, stat_cpu};
use crate::table::{Against, Figure, Report};

const SECTION: &str = "Forwarding: an embedded ingestor's outbox into VictoriaMetrics over remote write (loopback), 2,000 samples a request";

fn config(url: &str) -> ForwardConfig {
    let mut c = ForwardConfig::default();
    c.destinations = vec![Destination::new("vm", url).expect("a valid destination")];
    // Flushes by hand, to control what is measured.
    c.flush_interval = Duration::from_secs(3_600);
    c.backoff_max = Duration::from_millis(200);
    c.budget_bytes = 8 << 30;
    c
}

fn now_ms() -> i64 {
    ingestor::system_clock_ms()
}

/// Sets every series to `round` (stamped now) by handle.
fn update_all(db: &Ingestor, handles: &[ingestor::SeriesHandle], round: u64) {
    let ts = Timestamp(now_ms());
    for chunk in handles.chunks(50_000) {
        let points: Vec<_> = chunk.iter().map(|&h| (h, ts, Op::GaugeSet(round as f64))).collect();
        db.ingest_by_handle(&points).expect("ingest");
    }
}

fn wait_drained(f: &Forwarder, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while f.stats()[0].pending_requests > 0 {
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(started.elapsed())
}

pub fn run(report: &mut Report, bins: &Binaries, series: usize, quick: bool) {
    if bins.victoria_metrics.is_none() {
        eprintln!("forwarding: skipped (no VictoriaMetrics binary)");
        return;
    }
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vm = match Server::start(System::VictoriaMetrics, bins, &tmp.path().join("vm")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("forwarding: {e}");
            return;
        }
    };
    let url = format!("http://{}/api/v1/write", vm.addr);
    let engine = Config::default()
        .sync_policy(SyncPolicy::Batch(Duration::from_millis(5)))
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never);
    let dir = tmp.path().join("data");
    let (db, _) = Ingestor::open(&dir, engine).expect("open");
    let db = Arc::new(db);
    let handles: Vec<_> = (0..series)
        .map(|i| {
            let key = SeriesKey::new(
                "bench_forward",
                [("host", format!("h{}", i % 1_000)), ("i", i.to_string())],
            )
            .expect("a valid key");
            db.resolve(&key).expect("resolve")
        })
        .collect();
    let outbox = tmp.path().join("outbox");
    let fs = || -> Arc<dyn ingestor::Fs> { Arc::new(StdFs::new()) };

    // Warm-up: VictoriaMetrics registers the series once (its costliest work, a one-time
    // cost per new series); the live figure is the steady state after it.
    let f = Forwarder::start(Arc::clone(&db), fs(), &outbox, config(&url)).expect("start");
    let warm = Instant::now();
    update_all(&db, &handles, 0);
    f.flush().expect("flush");
    let _ = wait_drained(&f, Duration::from_secs(300));
    let warm_up = warm.elapsed();
    let sent_before = f.stats()[0].samples_sent;
    // Live: a round a second.
    let live_secs = if quick { 5 } else { 10 };
    let started = Instant::now();
    let mut flush_time = Duration::ZERO;
    for round in 0..live_secs {
        let tick = started + Duration::from_secs(round);
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        update_all(&db, &handles, round + 1);
        let t = Instant::now();
        f.flush().expect("flush");
        flush_time += t.elapsed();
    }
    let phase = Duration::from_secs(live_secs);
    let until = started + phase;
    if let Some(wait) = until.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let live = (f.stats()[0].samples_sent - sent_before) as f64 / phase.as_secs_f64();
    let backlog_left = f.stats()[0].pending_samples;
    let _ = wait_drained(&f, Duration::from_secs(120));
    let s = &f.stats()[0];
    let mean_request = s.send_seconds.0 / s.send_seconds.1.max(1) as f64;
    f.stop();
    drop(f);
    report.add(
        Figure::new(SECTION, "samples/s delivered live", live, "samples/s")
            .target(500_000.0)
            .note(format!(
                "after a warm-up round that registered the {series} series in VictoriaMetrics \
                 ({:.1} s), {series} series updated and flushed every second for {live_secs} s; {backlog_left} \
                 samples still waiting at the end of the phase; a flush of {series} series took \
                 {:.0} ms (freeze, changed series to samples, encoding, one append and sync); mean \
                 request {:.1} ms",
                warm_up.as_secs_f64(),
                flush_time.as_secs_f64() * 1e3 / live_secs as f64,
                mean_request * 1e3
            )),
    );

    // Backlog: the destination down while flushes pile up; drained by one sender, then by
    // the default shards (the figure).
    let rounds = if quick { 10 } else { 10_000_000u64.div_ceil(series as u64) };
    let mut round = 1_000;
    let mut backlog = |shards: usize| {
        let down = format!("http://127.0.0.1:{}/api/v1/write", closed_port());
        let mut c = config(&down);
        c.shards = shards;
        let f = Forwarder::start(Arc::clone(&db), fs(), &outbox, c).expect("start");
        for _ in 0..rounds {
            round += 1;
            update_all(&db, &handles, round);
            f.flush().expect("flush");
        }
        let pending = f.stats()[0].pending_samples;
        f.stop_now();
        drop(f);
        let (vm_cpu, own_cpu) = (vm.cpu(), stat_cpu("/proc/self/stat"));
        let restarted = Instant::now();
        let mut c = config(&url);
        c.shards = shards;
        let f = Forwarder::start(Arc::clone(&db), fs(), &outbox, c).expect("start");
        let started_in = restarted.elapsed();
        let mut first = None;
        while first.is_none() {
            if f.stats()[0].requests_sent > 0 {
                first = Some(restarted.elapsed());
            }
            if restarted.elapsed() > Duration::from_secs(60) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let drained = wait_drained(&f, Duration::from_secs(600));
        let cores = |cpu: Duration, took: Duration| cpu.as_secs_f64() / took.as_secs_f64();
        let d = drained.map(|took| Drain {
            pending,
            took,
            sent: f.stats()[0].samples_sent,
            first,
            started_in,
            request: {
                let s = &f.stats()[0];
                s.send_seconds.0 / s.send_seconds.1.max(1) as f64
            },
            vm_cores: cores(vm.cpu().saturating_sub(vm_cpu), took),
            own_cores: cores(stat_cpu("/proc/self/stat").saturating_sub(own_cpu), took),
        });
        f.stop();
        d
    };
    let one = backlog(1);
    let shards = ForwardConfig::default().shards;
    let Some(d) = backlog(shards) else {
        eprintln!("forwarding: the backlog did not drain within 10 minutes");
        return;
    };
    let drain = d.sent as f64 / d.took.as_secs_f64();
    let mut figure = Figure::new(SECTION, "backlog drained, samples/s", drain, "samples/s")
        .peer("live delivery", live)
        .at_least(Against::Peer("live delivery"), 5.0);
    if let Some(one) = &one {
        figure = figure.peer("one sender", one.sent as f64 / one.took.as_secs_f64());
    }
    report.add(figure.note(format!(
        "{} samples waiting in the outbox ({rounds} flushes of {series} series while the \
         destination was down), drained in {:.1} s after a restart by {shards} shards, \
         VictoriaMetrics using {:.2} cores and the ingestor's process {:.2} during the drain \
         (of 2); with one sender: {}",
        d.pending,
        d.took.as_secs_f64(),
        d.vm_cores,
        d.own_cores,
        one.map_or("did not drain".to_owned(), |o| format!(
            "{:.1} s, VictoriaMetrics {:.2} cores, the ingestor {:.2}",
            o.took.as_secs_f64(),
            o.vm_cores,
            o.own_cores
        ))
    )));
    if let Some(first) = d.first {
        report.add(
            Figure::new(
                SECTION,
                "restart to the first delivered request",
                first.as_secs_f64() * 1e3,
                "ms",
            )
            .lower_is_better()
            .note(format!(
                "the forwarder's start (opening and indexing the outbox of {} samples) \
                 took {:.1} ms; mean request {:.1} ms",
                d.pending,
                d.started_in.as_secs_f64() * 1e3,
                d.request * 1e3
            )),
        );
    }
    // Resuming: after the drain and a clean stop, a restart sends nothing again.
    let f = Forwarder::start(Arc::clone(&db), fs(), &outbox, config(&url)).expect("start");
    std::thread::sleep(Duration::from_millis(500));
    let again = f.stats()[0].requests_sent;
    f.stop();
    report.add(
        Figure::new(SECTION, "requests sent again after a clean restart", again as f64, "requests")
            .lower_is_better()
            .target(1.0)
            .note("the destination resumes at its durable cursor: within one request".into()),
    );
    drop(vm);
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// One drain of a backlog.
struct Drain {
    pending: u64,
    took: Duration,
    sent: u64,
    first: Option<Duration>,
    started_in: Duration,
    /// Mean seconds of a request.
    request: f64,
    /// Cores VictoriaMetrics and this process kept busy during the drain.
    vm_cores: f64,
    own_cores: f64,
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("bound").port()
}
