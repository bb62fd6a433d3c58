//! The log workloads W1–W5, driven through each system the same way: the ingestor's segment
//! log, its peers (okaywal, commitlog, raft-engine) and the ideal loop.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ingestor_fs::StdFs;
use ingestor_wal::{Lsn, SyncPolicy, Wal, WalOptions};

/// The size of every record.
pub const RECORD: usize = 100;
/// Records per batch in W2.
pub const BATCH: usize = 1000;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Ingestor,
    /// The ingestor's log under `SyncPolicy::Buffered` (W1 and W2 only).
    IngestorBuffered,
    Ideal,
    Okaywal,
    Commitlog,
    RaftEngine,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Ingestor => "ingestor",
            System::IngestorBuffered => "ingestor, Buffered",
            System::Ideal => "ideal loop",
            System::Okaywal => "okaywal",
            System::Commitlog => "commitlog",
            System::RaftEngine => "raft-engine",
        }
    }
}

/// A record whose first 8 bytes are its number (raft-engine needs an index in each entry).
pub fn record(i: u64) -> Vec<u8> {
    let mut r: Vec<u8> =
        (0..RECORD as u32).map(|j| (j.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    r[..8].copy_from_slice(&i.to_le_bytes());
    r
}

/// Rate of `done` operations in `elapsed`.
pub fn rate(done: u64, elapsed: Duration) -> f64 {
    done as f64 / elapsed.as_secs_f64().max(1e-9)
}

// ---- ingestor ----

fn wal(dir: &Path, policy: SyncPolicy) -> Wal {
    let mut options = WalOptions::default().sync_policy(policy);
    // For an A/B of the segments' space: INGESTOR_BENCH_SEGMENT_FILL=allocate runs the log
    // with fallocate'd segments instead of zero-filled ones.
    if std::env::var("INGESTOR_BENCH_SEGMENT_FILL").as_deref() == Ok("allocate") {
        options = options.segment_fill(ingestor_wal::SegmentFill::Allocate);
    }
    Wal::open(Arc::new(StdFs::new()), dir, options).unwrap().0
}

// ---- okaywal ----

/// Replays nothing into anything; counts chunks on recovery.
#[derive(Debug, Default)]
struct Counter(Arc<std::sync::atomic::AtomicU64>);

impl okaywal::LogManager for Counter {
    fn recover(&mut self, entry: &mut okaywal::Entry<'_>) -> std::io::Result<()> {
        if let Some(chunks) = entry.read_all_chunks()? {
            self.0.fetch_add(chunks.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last: okaywal::EntryId,
        _entries: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

fn okaywal_open(dir: &Path, counter: &Counter) -> okaywal::WriteAheadLog {
    okaywal::Configuration::default_for(dir)
        // Keep every entry: W5 reads them all back at recovery.
        .checkpoint_after_bytes(u64::MAX / 2)
        .open(Counter(Arc::clone(&counter.0)))
        .unwrap()
}

// ---- raft-engine ----

/// raft-engine stores protobuf entries; a `BytesValue` holding the record (whose first 8
/// bytes are its index) is the thinnest one.
struct Entries;

impl raft_engine::MessageExt for Entries {
    type Entry = protobuf::well_known_types::BytesValue;

    fn index(e: &Self::Entry) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&e.get_value()[..8]);
        u64::from_le_bytes(b)
    }
}

fn entry(i: u64) -> protobuf::well_known_types::BytesValue {
    let mut e = protobuf::well_known_types::BytesValue::new();
    e.set_value(record(i));
    e
}

fn raft_open(dir: &Path) -> raft_engine::Engine {
    let cfg = raft_engine::Config {
        dir: dir.to_string_lossy().into_owned(),
        // Never compress 100-byte records, as the others do not.
        batch_compression_threshold: raft_engine::ReadableSize(u64::MAX / 2),
        ..Default::default()
    };
    raft_engine::Engine::open(cfg).unwrap()
}

// ---- commitlog ----

fn commitlog_open(dir: &Path) -> commitlog::CommitLog {
    commitlog::CommitLog::new(commitlog::LogOptions::new(dir)).unwrap()
}

/// W1 (`batch == 1`) and W2: `n` records appended one at a time or in batches, without a
/// sync per append where the system allows it (okaywal does not: each commit syncs). Stops
/// early after `budget`; returns records per second.
///
/// The clock runs from the log's open until every record was handed to the kernel: the
/// ideal loop's last `flush()`, commitlog's `flush()` (neither syncs), the ingestor's
/// `Wal::flush` (its `Buffered` buffer written). The ingestor's `close` comes after: it
/// syncs the log, which the ideal loop never does.
pub fn append(system: System, dir: &Path, n: u64, batch: usize, budget: Duration) -> f64 {
    let records: Vec<Vec<u8>> = (0..batch as u64).map(record).collect();
    // The clock starts once the log is open (opening is not what W1 and W2 measure).
    let started;
    let mut took = None;
    let mut done = 0u64;
    // The budget is a safety valve: the clock is read once every 1,024 records (every batch
    // of W2), not after each of W1's appends, where reading it (about 30 ns on a virtual
    // machine) would be timed as part of every system's append.
    let over = |done: u64, started: Instant| {
        done >= n || (done % 1024 < batch as u64 && started.elapsed() > budget)
    };
    match system {
        System::Ingestor | System::IngestorBuffered => {
            let policy =
                if system == System::Ingestor { SyncPolicy::Os } else { SyncPolicy::BUFFERED };
            let wal = wal(dir, policy);
            started = Instant::now();
            let batch: Vec<(u8, &[u8])> = records.iter().map(|r| (1u8, r.as_slice())).collect();
            while !over(done, started) {
                if batch.len() == 1 {
                    wal.append(1, batch[0].1).unwrap();
                } else {
                    wal.append_batch(&batch).unwrap();
                }
                done += batch.len() as u64;
            }
            wal.flush().unwrap();
            took = Some(started.elapsed());
            wal.close().unwrap();
        }
        System::Ideal => {
            let mut out = BufWriter::with_capacity(1 << 20, File::create(dir.join("log")).unwrap());
            started = Instant::now();
            while !over(done, started) {
                for r in &records {
                    ingestor_benches::ideal::write_frame(&mut out, r);
                }
                done += records.len() as u64;
            }
            out.flush().unwrap();
        }
        System::Okaywal => {
            let log = okaywal_open(dir, &Counter::default());
            started = Instant::now();
            while !over(done, started) {
                let mut writer = log.begin_entry().unwrap();
                for r in &records {
                    writer.write_chunk(r).unwrap();
                }
                writer.commit().unwrap();
                done += records.len() as u64;
            }
            log.shutdown().unwrap();
        }
        System::Commitlog => {
            let mut log = commitlog_open(dir);
            let mut buf = commitlog::message::MessageBuf::default();
            started = Instant::now();
            while !over(done, started) {
                if records.len() == 1 {
                    log.append_msg(&records[0]).unwrap();
                } else {
                    buf.clear();
                    for r in &records {
                        buf.push(r).unwrap();
                    }
                    log.append(&mut buf).unwrap();
                }
                done += records.len() as u64;
            }
            log.flush().unwrap();
        }
        System::RaftEngine => {
            let engine = raft_open(dir);
            let mut index = 1u64;
            let mut lb = raft_engine::LogBatch::default();
            started = Instant::now();
            while !over(done, started) {
                let entries: Vec<_> = (index..index + batch as u64).map(entry).collect();
                lb.add_entries::<Entries>(1, &entries).unwrap();
                engine.write(&mut lb, false).unwrap();
                index += batch as u64;
                done += batch as u64;
            }
        }
    }
    rate(done, took.unwrap_or_else(|| started.elapsed()))
}

/// Runs `writers` threads for `budget`, each calling `append(writer, i)` with its own count
/// `i` (from 1) until the deadline; returns appends per second.
fn writers_for(writers: usize, budget: Duration, append: impl Fn(usize, u64) + Sync) -> f64 {
    let started = Instant::now();
    let deadline = started + budget;
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let append = &append;
                s.spawn(move || {
                    let mut n = 0;
                    while Instant::now() < deadline {
                        n += 1;
                        append(w, n);
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    rate(total, started.elapsed())
}

/// Records each system writes (durably, in batches of 1,000) before a durable workload's
/// clock starts: a log in its steady state, past what is special about a new one (the
/// ingestor's first segment gets its space from fallocate; from 1 MiB on its segments are
/// zero-filled spares).
const WARM_UP: u64 = 11_000;

/// W3 (one writer) and W4: `writers` threads each appending single records durably (each
/// append returns once the record is on disk) for `budget`, the clock starting once the log
/// is open and has taken [`WARM_UP`] records. Returns records per second.
pub fn durable(system: System, dir: &Path, writers: usize, budget: Duration) -> f64 {
    let r = record(0);
    match system {
        System::Ingestor | System::IngestorBuffered => {
            let wal = wal(dir, SyncPolicy::Always);
            let batch: Vec<(u8, &[u8])> = (0..1_000).map(|_| (1u8, &r[..])).collect();
            for _ in 0..WARM_UP / 1_000 {
                wal.append_batch(&batch).unwrap();
            }
            // The spare asked for at 1 MiB: the log moves onto it at the append after it is
            // ready.
            let until = Instant::now() + Duration::from_secs(30);
            while wal.segments().len() < 2 && Instant::now() < until {
                wal.append(1, &r).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            let v = writers_for(writers, budget, |_, _| {
                wal.append(1, &r).unwrap();
            });
            wal.close().unwrap();
            v
        }
        System::Okaywal => {
            let log = okaywal_open(dir, &Counter::default());
            for _ in 0..WARM_UP / 1_000 {
                let mut writer = log.begin_entry().unwrap();
                for _ in 0..1_000 {
                    writer.write_chunk(&r).unwrap();
                }
                writer.commit().unwrap();
            }
            let v = writers_for(writers, budget, |_, _| {
                let mut writer = log.begin_entry().unwrap();
                writer.write_chunk(&r).unwrap();
                writer.commit().unwrap();
            });
            log.shutdown().unwrap();
            v
        }
        System::Commitlog => {
            // No group commit: the log needs `&mut` to append and to flush.
            let mut warm = commitlog_open(dir);
            for i in 0..WARM_UP {
                warm.append_msg(&r).unwrap();
                if i % 1_000 == 999 {
                    warm.flush().unwrap();
                }
            }
            let log = Mutex::new(warm);
            writers_for(writers, budget, |_, _| {
                let mut log = log.lock().unwrap();
                log.append_msg(&r).unwrap();
                log.flush().unwrap();
            })
        }
        System::RaftEngine => {
            let engine = raft_open(dir);
            // A region of its own for the warm-up.
            for chunk in 0..WARM_UP / 1_000 {
                let mut lb = raft_engine::LogBatch::default();
                let entries: Vec<_> = (0..1_000).map(|i| entry(1 + chunk * 1_000 + i)).collect();
                lb.add_entries::<Entries>(1_000_000, &entries).unwrap();
                engine.write(&mut lb, true).unwrap();
            }
            // One region per writer, so that each one's indexes (its count) are contiguous.
            writers_for(writers, budget, |w, index| {
                let mut lb = raft_engine::LogBatch::default();
                lb.add_entries::<Entries>(w as u64 + 1, &[entry(index)]).unwrap();
                engine.write(&mut lb, true).unwrap();
            })
        }
        System::Ideal => unreachable!("the durable ceiling is the fsync loop"),
    }
}

/// Writes `n` records in batches (untimed), closes; the data set W5 reads.
pub fn prepare_read(system: System, dir: &Path, n: u64) {
    append(system, dir, n, BATCH, Duration::MAX);
}

/// Drops the page cache's copy of every file under `dir` (for cold reads).
pub fn evict(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            evict(&path);
        } else if let Ok(file) = File::open(&path) {
            let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
}

/// W5: reopen the log and read every record; returns records per second.
pub fn read_all(system: System, dir: &Path, n: u64) -> f64 {
    let started = Instant::now();
    let count = match system {
        System::Ingestor | System::IngestorBuffered => {
            let mut count = 0u64;
            let (wal, _) = Wal::open_and_replay(
                Arc::new(StdFs::new()),
                dir,
                WalOptions::default().sync_policy(SyncPolicy::Os),
                Lsn::ZERO,
                |_, _, p| {
                    count += (p.len() == RECORD) as u64;
                    Ok(())
                },
            )
            .unwrap();
            drop(wal);
            count
        }
        System::Ideal => ingestor_benches::ideal::read_all(&dir.join("log")),
        System::Okaywal => {
            let counter = Counter::default();
            let log = okaywal_open(dir, &counter);
            log.shutdown().unwrap();
            counter.0.load(std::sync::atomic::Ordering::Relaxed)
        }
        System::Commitlog => {
            let log = commitlog_open(dir);
            let mut offset = 0;
            let mut count = 0u64;
            loop {
                let buf = log.read(offset, commitlog::ReadLimit::max_bytes(1 << 20)).unwrap();
                use commitlog::message::MessageSet;
                let mut last = None;
                for m in buf.iter() {
                    assert!(m.verify_hash());
                    count += 1;
                    last = Some(m.offset());
                }
                match last {
                    Some(l) => offset = l + 1,
                    None => break,
                }
            }
            count
        }
        System::RaftEngine => {
            let engine = raft_open(dir);
            let (first, last) = (engine.first_index(1).unwrap(), engine.last_index(1).unwrap());
            let mut count = 0u64;
            let mut at = first;
            let mut out = Vec::new();
            while at <= last {
                let end = (at + 10_000).min(last + 1);
                out.clear();
                count +=
                    engine.fetch_entries_to::<Entries>(1, at, end, None, &mut out).unwrap() as u64;
                at = end;
            }
            count
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(count, n, "{}: read back {count} of {n} records", system.name());
    rate(count, elapsed)
}

/// How the file of an fsync loop gets its space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Grows with each append.
    Growing,
    /// `fallocate`d (unwritten extents on ext4/XFS).
    Preallocated,
    /// 256 MiB of zeros written and synced first.
    ZeroFilled,
}

/// The disk's fsync ceiling: appends of `block` bytes each followed by fdatasync, for
/// `budget`, into a file whose space comes as `space` says. Returns syncs per second.
pub fn fsync_rate(dir: &Path, space: Space, block: usize, budget: Duration) -> f64 {
    use std::os::unix::fs::FileExt;
    let file = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("fsync"))
        .unwrap();
    match space {
        Space::Growing => {}
        Space::Preallocated => {
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, 256 << 20)
                .unwrap();
            file.sync_all().unwrap();
        }
        Space::ZeroFilled => {
            let zeros = vec![0u8; 1 << 20];
            for i in 0..256u64 {
                file.write_all_at(&zeros, i << 20).unwrap();
            }
            file.sync_all().unwrap();
        }
    }
    let block = vec![0x5au8; block];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < budget {
        file.write_all_at(&block, n * block.len() as u64).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    rate(n, started.elapsed())
}
