//! `kill -9` of a process counting through the global recorder: after a restart its counter
//! holds every increment acknowledged before the kill, none it did not make, and misses at
//! most about one flush interval of increments.
//!
//! The test re-runs its own binary as the child (`INGESTOR_RECORDER_CHILD` names the data
//! directory). The child appends to `progress` in that directory, one write per line (each
//! reaches the kernel at once, so it survives the kill):
//! - `r N` before a chunk of increments: it will not count past N before the next `r`;
//! - `a N` once N increments are known logged (a flush round that started after the N-th
//!   increment completed: see `RecorderStats::last_complete_round`).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingestor::{Config, Ingestor, SeriesKey, SeriesState};
use ingestor_recorder::IngestorRecorder;

const CHILD_ENV: &str = "INGESTOR_RECORDER_CHILD";
const INTERVAL: Duration = Duration::from_millis(50);
/// Increments between pauses of at least 1 ms: the child never counts faster than this many
/// per millisecond.
const CHUNK: u64 = 100;
const NAME: &str = "child_increments";

fn child(dir: &Path) -> ! {
    let (db, _) = Ingestor::open(dir.join("data"), Config::default()).expect("open");
    let rec = IngestorRecorder::builder(Arc::new(db)).flush_interval(INTERVAL).build().unwrap();
    rec.install().unwrap();
    let counter = metrics::counter!(NAME);
    let mut progress =
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join("progress")).unwrap();
    let mut made = 0u64;
    let mut pending: Option<(u64, u64)> = None;
    loop {
        progress.write_all(format!("r {}\n", made + CHUNK).as_bytes()).unwrap();
        for _ in 0..CHUNK {
            counter.increment(1);
        }
        made += CHUNK;
        let stats = rec.stats();
        if let Some((count, round)) = pending
            && stats.last_complete_round > round
        {
            progress.write_all(format!("a {count}\n").as_bytes()).unwrap();
            pending = None;
        }
        if pending.is_none() {
            pending = Some((made, stats.rounds));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn last(progress: &str, tag: &str) -> Option<u64> {
    progress
        .lines()
        .filter_map(|l| l.strip_prefix(tag)?.strip_prefix(' ')?.parse().ok())
        .next_back()
}

#[test]
fn after_kill_9_a_counter_is_exact_up_to_one_flush_interval() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }
    for attempt in 0..3u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "after_kill_9_a_counter_is_exact_up_to_one_flush_interval"])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Let it acknowledge a few flushes, then kill it at a varying phase of the interval.
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(dir.path().join("progress")).unwrap_or_default();
            if text.lines().filter(|l| l.starts_with("a ")).count() >= 4 {
                break;
            }
            if let Some(status) = proc.try_wait().unwrap() {
                panic!("the child exited: {status}");
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no progress: {text}");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(7 + attempt * 19));
        proc.kill().unwrap(); // SIGKILL
        proc.wait().unwrap();

        let text = std::fs::read_to_string(dir.path().join("progress")).unwrap();
        let acked = last(&text, "a").unwrap();
        let reserved = last(&text, "r").unwrap();
        let (db, _) = Ingestor::open(dir.path().join("data"), Config::default()).unwrap();
        let key = SeriesKey::new(NAME, Vec::<(&str, &str)>::new()).unwrap();
        let total = match db.get(&key).map(|v| v.state) {
            Some(SeriesState::Counter(c)) => c.total,
            other => panic!("{other:?}"),
        };
        assert_eq!(total.fract(), 0.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let total = total as u64;
        println!(
            "attempt {attempt}: acknowledged {acked}, recovered {total}, at most {reserved} made: \
             lost at most {} increments",
            reserved - total
        );
        assert!(acked <= total, "acknowledged {acked} increments, recovered only {total}");
        assert!(total <= reserved, "recovered {total}, more than the {reserved} made");
        // The child counts at most CHUNK increments per millisecond; what is lost is what it
        // counted since the last flush round that completed: one interval, plus the time a
        // round takes and scheduling delays on a busy machine (50 ms allowed), plus a chunk.
        let interval_ms = u64::try_from(INTERVAL.as_millis()).unwrap();
        let bound = CHUNK * (interval_ms + 50) + CHUNK;
        assert!(
            reserved - total <= bound,
            "lost up to {} increments, more than one interval's worth ({bound})",
            reserved - total
        );

        // The recorder continues from the recovered total.
        let db = Arc::new(db);
        let rec = IngestorRecorder::builder(Arc::clone(&db))
            .flush_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        metrics::with_local_recorder(&rec, || metrics::counter!(NAME).increment(1));
        rec.shutdown().unwrap();
        match db.get(&key).map(|v| v.state) {
            #[allow(clippy::cast_precision_loss)]
            Some(SeriesState::Counter(c)) => assert_eq!(c.total, (total + 1) as f64),
            other => panic!("{other:?}"),
        }
    }
}
