//! Series churn over a long life: rounds of new series (new pod names, as a rolling
//! deployment brings), each round expired by the time-to-live before the next. What it
//! checks: resident memory after the last round against after the first (the store gives
//! back the slots and strings of expired series), and how long an expiry of a round takes.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ingestor::{Config, FinalSnapshot, Ingestor, SeriesKey, SyncPolicy, Timestamp, Update};
use ingestor_benches::standard::{op, rss_mib};

use crate::table::{Figure, Report};

/// How long a series may stay idle before it is deleted.
const TTL: Duration = Duration::from_secs(1);

/// Round `round`'s keys: 100 metric names x `n / 100` pods, the pod names new each round.
fn round_keys(round: usize, n: usize) -> Vec<SeriesKey> {
    (0..n)
        .map(|i| {
            let name = format!("churn_{:03}", i % 100);
            let pod = format!("api-{round}-{:06}", i / 100);
            SeriesKey::new(&name, [("job", "api"), ("pod", pod.as_str())]).expect("valid key")
        })
        .collect()
}

/// The ingestor's clock (milliseconds): the bench moves it past the time-to-live to expire
/// a round at once, instead of waiting.
static CLOCK: AtomicI64 = AtomicI64::new(0);

fn clock_ms() -> i64 {
    CLOCK.load(Relaxed)
}

/// Runs the churn in a fresh process (`--child-churn N ROUNDS`), so that its resident
/// memory is its own and not what earlier workloads left in the allocator, and reports it.
pub fn run(report: &mut Report, n: usize, rounds: usize) {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child-churn", &n.to_string(), &rounds.to_string()])
        .output()
        .unwrap();
    assert!(child.status.success(), "the churn child failed: {child:?}");
    let text = String::from_utf8_lossy(&child.stdout);
    let numbers: Vec<f64> = text.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let (slowest, grown) = numbers.split_first().expect("the churn child's figures");
    let section = format!("metrics: churn, {rounds} rounds of {n} new series, each expired by TTL");
    let ratio = grown[rounds - 1] / grown[0].max(1.0);
    let shown: Vec<String> = grown.iter().map(|g| format!("{g:.0}")).collect();
    report.add(
        Figure::new(&section, "resident memory growth, last round / first", ratio, "x")
            .lower_is_better()
            .target(1.2)
            .note(format!(
                "a fresh process; MiB over its start, after each round's ingest: {}",
                shown.join(", ")
            )),
    );
    report.add(
        Figure::new(&section, "expiry of a round, slowest", *slowest, "s")
            .lower_is_better()
            .target(2.0)
            .note(
                "from the clock passing the time-to-live until no series is left (including \
                 up to one 50 ms wait for the maintenance pass)"
                    .to_string(),
            ),
    );
}

/// Child mode: the churn itself; prints the slowest expiry (s), then the resident memory
/// growth (MiB) after each round's ingest.
pub fn child(n: usize, rounds: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config::default()
        .sync_policy(SyncPolicy::Os)
        .snapshot_interval(None)
        .snapshot_bytes(1 << 40)
        .final_snapshot(FinalSnapshot::Never)
        .series_ttl(Some(TTL))
        .maintenance_interval(Duration::from_millis(50))
        .clock_ms(clock_ms);
    let (db, _) = Ingestor::open(tmp.path().join("data"), config).unwrap();
    let base = rss_mib();
    let mut grown = Vec::new();
    let mut expiries = Vec::new();
    for round in 0..rounds {
        // Each round lives an hour of the ingestor's clock: written at its start, expired
        // when the clock moves past the time-to-live.
        let start = round as i64 * 3_600_000;
        CLOCK.store(start, Relaxed);
        let keys = round_keys(round, n);
        for (b, chunk) in keys.chunks(10_000).enumerate() {
            let at = Timestamp(start);
            let batch: Vec<Update> = chunk
                .iter()
                .enumerate()
                .map(|(j, k)| Update { key: k.clone(), timestamp: at, op: op(b * 10_000 + j, 0) })
                .collect();
            db.ingest(&batch).unwrap();
        }
        drop(keys);
        assert_eq!(db.stats().series, n, "round {round} created its series");
        grown.push(rss_mib() - base);
        let written = Instant::now();
        CLOCK.store(start + 2 * TTL.as_millis() as i64, Relaxed);
        while db.stats().series > 0 {
            assert!(written.elapsed() < Duration::from_secs(120), "round {round} never expired");
            std::thread::sleep(Duration::from_millis(5));
        }
        expiries.push(written.elapsed());
    }
    let stats = db.stats();
    assert_eq!(stats.expired_series, (n * rounds) as u64);
    drop(db);
    let slowest = expiries.iter().max().copied().unwrap_or_default();
    let grown: Vec<String> = grown.iter().map(|g| g.to_string()).collect();
    println!("{} {}", slowest.as_secs_f64(), grown.join(" "));
}
