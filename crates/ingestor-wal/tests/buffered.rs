//! `SyncPolicy::Buffered`: appends are acknowledged *accepted* while their frames wait in the
//! log's buffer; the buffer is written when it fills, when its deadline passes, and before
//! every flush, sync and close. A process crash loses only a suffix of accepted records; a
//! failed write of the buffer poisons the log.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ingestor_fs::{CrashPolicy, Fault, FaultKind, Fs, OpKind, SimFs, StdFs};
use ingestor_testkit::fs::{Hook, HookFs};
use ingestor_wal::{AckLevel, Lsn, SegmentFill, SyncPolicy, Wal, WalError, WalOptions};

const DIR: &str = "/db/wal";

fn options(deadline: Duration) -> WalOptions {
    WalOptions::default()
        .sync_policy(SyncPolicy::Buffered(deadline))
        .segment_fill(SegmentFill::ZerosInline)
        .segment_bytes_max(1 << 20)
}

fn record(i: u64) -> Vec<u8> {
    format!("record {i:>6} ").repeat(6).into_bytes()
}

/// Every record of the log in `dir`, in LSN order.
fn replay(fs: Arc<dyn Fs>, dir: &Path, options: WalOptions) -> Vec<(u64, Vec<u8>)> {
    let mut seen = Vec::new();
    let (wal, report) = Wal::open_and_replay(fs, dir, options, Lsn::ZERO, |lsn, _, payload| {
        seen.push((lsn.0, payload.to_vec()));
        Ok(())
    })
    .unwrap();
    assert!(report.corruptions.is_empty(), "{report:?}");
    wal.close().unwrap();
    seen
}

#[test]
fn appends_are_accepted_and_written_by_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let fs: Arc<dyn Fs> = Arc::new(StdFs::new());
    let (wal, _) =
        Wal::open(Arc::clone(&fs), tmp.path(), options(Duration::from_millis(20))).unwrap();
    let ack = wal.append(1, &record(1)).unwrap();
    assert_eq!((ack.first, ack.level), (Lsn(1), AckLevel::Accepted));
    assert_eq!(wal.accepted_lsn(), Lsn(1));
    // Nothing was written by the append itself: readers see only what was written.
    assert_eq!(wal.stats().bytes_written, 0);
    // The flusher writes it once the deadline passed (the bound here is generous: this
    // checks that it happens at all, not how fast).
    let started = Instant::now();
    while wal.written_lsn() < Lsn(1) {
        assert!(started.elapsed() < Duration::from_secs(20), "the buffer was never written");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut reader = wal.reader(Lsn(1)).unwrap();
    let first = reader.next().unwrap().unwrap();
    assert_eq!((first.lsn, first.payload.as_slice()), (Lsn(1), record(1).as_slice()));
    wal.close().unwrap();
}

/// The append that fills the buffer hands it to the flusher, which writes it at once,
/// long before the deadline (60 s here); the frames after it wait.
#[test]
fn a_full_buffer_is_written_by_the_flusher_without_waiting_for_the_deadline() {
    let sim = SimFs::new(1);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let opts = options(Duration::from_secs(60)).buffer_bytes(4096);
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts.clone()).unwrap();
    for i in 1..=60u64 {
        let ack = wal.append(1, &record(i)).unwrap();
        assert!(matches!(ack.level, AckLevel::Accepted | AckLevel::Written), "{ack:?}");
    }
    let started = Instant::now();
    while wal.written_lsn() == Lsn::ZERO {
        assert!(started.elapsed() < Duration::from_secs(20), "the full buffer was not written");
        std::thread::sleep(Duration::from_millis(1));
    }
    // One write of the frames that filled 4 KiB: they are about 100 bytes.
    let at = wal.written_lsn().0;
    assert!((30..=45).contains(&at), "the buffer was written after {at} records");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(wal.written_lsn().0, at, "the frames after the full buffer wait");
    assert_eq!(wal.stats().appends, 60);
    wal.close().unwrap();
    assert_eq!(replay(fs, Path::new(DIR), opts).len(), 60);
}

#[test]
fn wait_written_flush_sync_and_close_write_the_buffer() {
    let sim = SimFs::new(2);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let opts = options(Duration::from_secs(60));
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts.clone()).unwrap();
    for i in 1..=3 {
        assert_eq!(wal.append(1, &record(i)).unwrap().level, AckLevel::Accepted);
    }
    assert!(matches!(wal.wait_written(Lsn(4)), Err(WalError::LsnOutOfRange { .. })));
    wal.wait_written(Lsn(2)).unwrap();
    assert_eq!(wal.written_lsn(), Lsn(3), "the whole buffer goes in one write");
    assert_eq!(wal.durable_lsn(), Lsn::ZERO);

    wal.append(1, &record(4)).unwrap();
    assert_eq!(wal.flush().unwrap(), Lsn(4));
    wal.append(1, &record(5)).unwrap();
    assert_eq!(wal.sync().unwrap(), Lsn(5));
    wal.append(1, &record(6)).unwrap();
    wal.wait_durable(Lsn(6)).unwrap();
    assert_eq!(wal.durable_lsn(), Lsn(6));
    wal.append(1, &record(7)).unwrap();
    wal.close().unwrap();
    // close synced the buffer: a power cut now loses nothing.
    sim.crash(CrashPolicy::DropUnsynced);
    let seen = replay(fs, Path::new(DIR), opts);
    let expected: Vec<(u64, Vec<u8>)> = (1..=7).map(|i| (i, record(i))).collect();
    assert_eq!(seen, expected);
}

/// A process crash keeps what reached the operating system (every pending data operation
/// survives, as `RevertDirOps` does when no directory change is pending) and loses what was
/// only accepted: a suffix.
#[test]
fn a_process_crash_loses_only_the_accepted_suffix() {
    let sim = SimFs::new(3);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let opts = options(Duration::from_secs(60));
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts.clone()).unwrap();
    for i in 1..=5 {
        wal.append(1, &record(i)).unwrap();
    }
    wal.flush().unwrap();
    for i in 6..=9 {
        assert_eq!(wal.append(1, &record(i)).unwrap().level, AckLevel::Accepted);
    }
    sim.crash(CrashPolicy::RevertDirOps);
    drop(wal);
    let seen = replay(fs, Path::new(DIR), opts);
    let expected: Vec<(u64, Vec<u8>)> = (1..=5).map(|i| (i, record(i))).collect();
    assert_eq!(seen, expected);
}

#[test]
fn records_buffered_across_rotations_land_in_order() {
    let sim = SimFs::new(4);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    // Segments of 4 KiB and a buffer of 16 KiB: the buffer always holds the tail of a
    // segment when the log rotates.
    let opts = options(Duration::from_secs(60)).segment_bytes_max(4096).buffer_bytes(16 << 10);
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts.clone()).unwrap();
    for i in 1..=300u64 {
        if i % 7 == 0 {
            let first = record(i);
            let batch = [(1u8, first.as_slice()), (2u8, b"second".as_slice())];
            wal.append_batch(&batch).unwrap();
        } else {
            wal.append(1, &record(i)).unwrap();
        }
    }
    assert!(wal.segments().len() > 5, "{:?}", wal.segments());
    wal.close().unwrap();
    sim.crash(CrashPolicy::DropUnsynced);
    let seen = replay(fs, Path::new(DIR), opts);
    let mut expected = Vec::new();
    for i in 1..=300u64 {
        expected.push(record(i));
        if i % 7 == 0 {
            expected.push(b"second".to_vec());
        }
    }
    let lsns: Vec<u64> = seen.iter().map(|(l, _)| *l).collect();
    assert_eq!(lsns, (1..=expected.len() as u64).collect::<Vec<_>>());
    assert_eq!(seen.into_iter().map(|(_, p)| p).collect::<Vec<_>>(), expected);
}

#[test]
fn a_failed_write_of_the_buffer_poisons_the_log() {
    let sim = SimFs::new(5);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let opts = options(Duration::from_secs(60));
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts.clone()).unwrap();
    wal.append(1, &record(1)).unwrap();
    wal.sync().unwrap();
    wal.append(1, &record(2)).unwrap();
    sim.inject(Fault::new(OpKind::Write, FaultKind::ShortWrite));
    let err = wal.flush().unwrap_err();
    assert!(matches!(err, WalError::Poisoned { .. }), "{err}");
    assert!(wal.is_poisoned());
    assert!(matches!(wal.append(1, &record(3)), Err(WalError::Poisoned { .. })));
    assert!(matches!(wal.sync(), Err(WalError::Poisoned { .. })));
    drop(wal);
    sim.clear_faults();
    // The half-written buffer was cut back: even a strict recovery, which refuses a torn
    // tail, opens the log.
    let strict = opts.recovery_mode(ingestor_wal::RecoveryMode::Strict);
    let seen = replay(fs, Path::new(DIR), strict);
    assert_eq!(seen, vec![(1, record(1))]);
}

/// A full buffer handed to the flusher whose write fails: the log is poisoned (the
/// appender hears it at its next call), the part that reached the file is cut away, and
/// what was written before stays.
#[test]
fn a_failed_write_of_a_handed_off_buffer_poisons_the_log() {
    let sim = SimFs::new(15);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let opts = options(Duration::from_secs(60)).buffer_bytes(4096);
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts.clone()).unwrap();
    wal.append(1, &record(1)).unwrap();
    wal.sync().unwrap();
    sim.inject(Fault::new(OpKind::Write, FaultKind::ShortWrite));
    // Appends fill the buffer and hand it off; the flusher's write fails behind them.
    let started = Instant::now();
    let mut i = 2;
    let err = loop {
        match wal.append(1, &record(i)) {
            Ok(ack) => assert_eq!(ack.level, AckLevel::Accepted, "record {i}"),
            Err(e) => break e,
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the write never failed");
        i += 1;
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    assert!(matches!(err, WalError::Poisoned { .. }), "{err}");
    assert!(i > 30, "the first append refused is after the full buffer: {i}");
    assert_eq!(wal.written_lsn(), Lsn(1));
    assert!(matches!(wal.flush(), Err(WalError::Poisoned { .. })));
    drop(wal);
    sim.clear_faults();
    let strict = opts.recovery_mode(ingestor_wal::RecoveryMode::Strict);
    assert_eq!(replay(fs, Path::new(DIR), strict), vec![(1, record(1))]);
}

#[test]
fn without_hand_offs_a_full_buffer_waits_for_the_callers_next_write() {
    let sim = SimFs::new(2);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let opts = options(Duration::from_secs(60)).buffer_bytes(4096).buffer_handoff(false);
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts.clone()).unwrap();
    for i in 1..=60u64 {
        wal.append(1, &record(i)).unwrap();
    }
    // The first full buffer (about 40 frames of 100 bytes) is not the flusher's to write.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(wal.written_lsn(), Lsn::ZERO, "no thread wrote the full buffer");
    assert_eq!(wal.stats().bytes_written, 0);
    // The append that fills the next one writes it, on its own thread, before returning.
    let mut first_written = None;
    for i in 61..=100u64 {
        wal.append(1, &record(i)).unwrap();
        if first_written.is_none() && wal.written_lsn() > Lsn::ZERO {
            first_written = Some((i, wal.written_lsn().0));
        }
    }
    let (by, at) = first_written.expect("the second full buffer wrote the first");
    assert!((30..=45).contains(&at), "the first buffer held {at} records");
    assert!((2 * at - 5..=2 * at + 5).contains(&by), "written by append {by}");
    wal.flush().unwrap();
    assert_eq!(wal.written_lsn(), Lsn(100));
    wal.close().unwrap();
    assert_eq!(replay(fs, Path::new(DIR), opts).len(), 100);
}

#[test]
fn without_hand_offs_a_buffer_filled_by_one_append_is_written_by_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let fs: Arc<dyn Fs> = Arc::new(StdFs::new());
    let opts = options(Duration::from_millis(20)).buffer_bytes(1024).buffer_handoff(false);
    let (wal, _) = Wal::open(Arc::clone(&fs), tmp.path(), opts.clone()).unwrap();
    // One batch larger than the buffer, into an empty one: full at once.
    let ack = wal.append(1, &vec![7u8; 2000]).unwrap();
    assert_eq!(ack.level, AckLevel::Accepted);
    let started = Instant::now();
    while wal.written_lsn() < ack.last {
        assert!(started.elapsed() < Duration::from_secs(20), "the deadline never wrote it");
        std::thread::sleep(Duration::from_millis(5));
    }
    wal.close().unwrap();
    assert_eq!(replay(fs, tmp.path(), opts).len(), 1);
}

#[test]
fn invalid_buffer_options_are_refused() {
    let sim = SimFs::new(6);
    let fs: Arc<dyn Fs> = Arc::new(sim);
    for opts in [
        options(Duration::ZERO),
        options(Duration::from_secs(61)),
        options(Duration::from_millis(5)).buffer_bytes(1023),
        options(Duration::from_millis(5)).buffer_bytes(65 << 20),
    ] {
        let err = Wal::open(Arc::clone(&fs), Path::new(DIR), opts).unwrap_err();
        assert!(matches!(err, WalError::InvalidOptions { .. }), "{err}");
    }
}

#[test]
fn a_batch_whose_build_fails_leaves_nothing_in_the_buffer() {
    let sim = SimFs::new(5);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    // Segments of 4 KiB: a batch that does not fit is built twice, once for the segment it
    // does not fit in and once for the next, after the frames accepted before it were
    // written out of the buffer. Every third batch fails the first time it is built; every
    // third other one fails only when built a second time.
    let opts = options(Duration::from_secs(60)).segment_bytes_max(4096).buffer_bytes(16 << 10);
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts.clone()).unwrap();
    let mut expected = Vec::new();
    let mut failed_on_second_build = 0;
    for i in 1..=400u64 {
        let mut builds = 0;
        let built = wal.append_with(|batch| {
            builds += 1;
            batch.push(1, &record(i))?;
            batch.push(2, b"second")?;
            if i % 3 == 0 || (i % 3 == 1 && builds == 2) {
                // Refused: record type 0 is reserved.
                batch.push(0, b"refused")?;
            }
            Ok(())
        });
        if i % 3 == 0 || (i % 3 == 1 && builds == 2) {
            assert!(matches!(built, Err(WalError::ReservedRecordType)), "{built:?}");
            failed_on_second_build += usize::from(builds == 2);
        } else {
            let ack = built.unwrap();
            assert_eq!(ack.first.0, expected.len() as u64 + 1);
            expected.push(record(i));
            expected.push(b"second".to_vec());
        }
        assert_eq!(wal.accepted_lsn().0, expected.len() as u64);
    }
    assert!(failed_on_second_build > 0, "no batch failed when built for a new segment");
    wal.close().unwrap();
    sim.crash(CrashPolicy::DropUnsynced);
    let seen = replay(fs, Path::new(DIR), opts);
    let lsns: Vec<u64> = seen.iter().map(|(l, _)| *l).collect();
    assert_eq!(lsns, (1..=expected.len() as u64).collect::<Vec<_>>());
    assert_eq!(seen.into_iter().map(|(_, p)| p).collect::<Vec<_>>(), expected);
}

#[test]
fn a_batch_whose_build_panics_leaves_nothing_in_the_buffer() {
    let sim = SimFs::new(6);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let opts = options(Duration::from_secs(60));
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts.clone()).unwrap();
    // Into an empty buffer, and after accepted frames.
    for first in [1u64, 3] {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wal.append_with(|batch| {
                batch.push(1, &record(999))?;
                panic!("a builder that panics after pushing a record");
            })
        }));
        assert!(panicked.is_err());
        wal.append(1, &record(first)).unwrap();
        wal.append(1, &record(first + 1)).unwrap();
    }
    assert_eq!(wal.accepted_lsn(), Lsn(4));
    wal.close().unwrap();
    sim.crash(CrashPolicy::DropUnsynced);
    let seen = replay(fs, Path::new(DIR), opts);
    let expected: Vec<(u64, Vec<u8>)> = (1..=4).map(|i| (i, record(i))).collect();
    assert_eq!(seen, expected);
}

/// Where a hook parks the first thread that reaches it, until the test releases it (or 20 s
/// pass).
#[derive(Debug)]
struct Gate {
    /// Told when the first thread parks; taken by it.
    told: Mutex<Option<Sender<()>>>,
    released: Mutex<bool>,
    release: Condvar,
}

impl Gate {
    /// A gate, and the receiver told when a thread parks at it.
    fn new() -> (Gate, Receiver<()>) {
        let (told, parked) = channel();
        let gate = Gate {
            told: Mutex::new(Some(told)),
            released: Mutex::new(false),
            release: Condvar::new(),
        };
        (gate, parked)
    }

    /// Parks the calling thread if it is the first to come.
    fn park_first(&self) {
        let told = self.told.lock().unwrap().take();
        if let Some(told) = told {
            told.send(()).unwrap();
            let released = self.released.lock().unwrap();
            drop(
                self.release
                    .wait_timeout_while(released, Duration::from_secs(20), |r| !*r)
                    .unwrap(),
            );
        }
    }

    fn open(&self) {
        *self.released.lock().unwrap() = true;
        self.release.notify_all();
    }
}

/// A hook whose first write-back hint blocks until released: the flusher thread, which
/// gives the hints, is held there.
#[derive(Debug)]
struct HintGate(Gate);

impl Hook for HintGate {
    fn start_writeback(&self, _path: &Path) {
        self.0.park_first();
    }
}

/// Waits (up to 20 s) until everything accepted up to `lsn` was written.
fn written_by_itself(wal: &Wal, lsn: Lsn) -> bool {
    let started = Instant::now();
    while wal.written_lsn() < lsn {
        if started.elapsed() > Duration::from_secs(20) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// The flusher gives the write-back hints; an appender's wake-up finding its channel full of
/// them is dropped. The hints must then start the deadline themselves, or the frames that
/// wake-up announced wait in the buffer until some later append (forever, if none comes).
#[test]
fn a_wake_up_refused_by_a_channel_full_of_hints_still_gets_the_buffer_written() {
    let (hint_gate, told_rx) = Gate::new();
    let gate = Arc::new(HookFs::new(Arc::new(SimFs::new(11)), HintGate(hint_gate)));
    let fs: Arc<dyn Fs> = Arc::clone(&gate) as Arc<dyn Fs>;
    let options = WalOptions::default()
        .sync_policy(SyncPolicy::Buffered(Duration::from_millis(20)))
        .segment_fill(SegmentFill::Allocate)
        .segment_bytes_max(64 << 20);
    let (wal, _) = Wal::open(fs, Path::new(DIR), options).unwrap();
    // The flusher writes a first record at its deadline, then waits for the next message.
    let first = wal.append(1, &record(1)).unwrap();
    assert!(written_by_itself(&wal, first.last), "the first record was never written");
    // A record larger than the buffer is written by its append, without a wake-up, and
    // crosses a write-back boundary (every 8 MiB): a hint, which blocks the flusher.
    let big: Vec<u8> =
        (0..8_600_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    wal.append(1, &big).unwrap();
    told_rx.recv_timeout(Duration::from_secs(20)).expect("the flusher took the first hint");
    // Four more hints fill the flusher's channel.
    for _ in 0..4 {
        wal.append(1, &big).unwrap();
    }
    // A record into the empty buffer: its wake-up finds the channel full.
    let last = wal.append(1, &record(2)).unwrap();
    assert_eq!(last.level, AckLevel::Accepted);
    assert!(wal.written_lsn() < last.last);
    gate.0.open();
    assert!(written_by_itself(&wal, last.last), "the buffer waited past its deadline");
    wal.close().unwrap();
}

/// A hook that parks the flusher thread where the log writes a buffer, until released.
#[derive(Debug)]
struct WriteGate(Gate);

impl Hook for WriteGate {
    fn crash_point(&self, name: &'static str) -> std::io::Result<()> {
        let flusher = std::thread::current().name() == Some("ingestor-wal-flush");
        if name == ingestor_wal::crash_points::APPEND_BEFORE_WRITE && flusher {
            self.0.park_first();
        }
        Ok(())
    }
}

/// The append that fills the buffer hands it to the flusher and returns `Accepted`; while
/// the flusher holds it unwritten, appends go on into the next buffer (up to four buffers'
/// worth), nothing counts either written or durable, and a sync waits for it (then covers
/// both).
#[test]
fn a_buffer_in_the_flushers_hands_is_waited_for_by_a_sync() {
    let (write_gate, told_rx) = Gate::new();
    let sim = SimFs::new(12);
    let gate = Arc::new(HookFs::new(Arc::new(sim.clone()), WriteGate(write_gate)));
    let fs: Arc<dyn Fs> = Arc::clone(&gate) as Arc<dyn Fs>;
    let opts = options(Duration::from_secs(60)).buffer_bytes(4096);
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new(DIR), opts.clone()).unwrap();
    // About 34 of these frames fill 4 KiB: one full buffer, and some after it.
    for i in 1..=40u64 {
        let ack = wal.append(1, &record(i)).unwrap();
        assert_eq!(ack.level, AckLevel::Accepted, "record {i}");
    }
    told_rx.recv_timeout(Duration::from_secs(20)).expect("the flusher took the full buffer");
    assert_eq!((wal.written_lsn(), wal.durable_lsn()), (Lsn::ZERO, Lsn::ZERO));
    // Appends go on while the flusher writes: the next buffer grows (to four buffers, about
    // 130 frames) instead of waiting for it.
    std::thread::scope(|s| {
        let appending = s.spawn(|| {
            for i in 41..=120u64 {
                assert_eq!(wal.append(1, &record(i)).unwrap().level, AckLevel::Accepted);
            }
        });
        let started = Instant::now();
        while !appending.is_finished() {
            assert!(started.elapsed() < Duration::from_secs(10), "appends waited for the flusher");
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    assert_eq!(wal.written_lsn(), Lsn::ZERO);
    std::thread::scope(|s| {
        let syncing = s.spawn(|| wal.sync());
        std::thread::sleep(Duration::from_millis(100));
        assert!(!syncing.is_finished(), "a sync returned while the full buffer was unwritten");
        assert_eq!(wal.durable_lsn(), Lsn::ZERO);
        gate.0.open();
        assert_eq!(syncing.join().unwrap().unwrap(), Lsn(120));
    });
    assert_eq!((wal.written_lsn(), wal.durable_lsn()), (Lsn(120), Lsn(120)));
    // A power cut now keeps them all.
    sim.crash(CrashPolicy::DropUnsynced);
    drop(wal);
    let seen = replay(Arc::clone(gate.inner()), Path::new(DIR), opts);
    assert_eq!(seen, (1..=120).map(|i| (i, record(i))).collect::<Vec<_>>());
}

/// A hook under which the flusher panics where the log writes a buffer (as a file system or
/// a listener might).
#[derive(Debug)]
struct PanicAtWrite;

impl Hook for PanicAtWrite {
    fn crash_point(&self, name: &'static str) -> std::io::Result<()> {
        let flusher = std::thread::current().name() == Some("ingestor-wal-flush");
        if name == ingestor_wal::crash_points::APPEND_BEFORE_WRITE && flusher {
            panic!("a file system that panics under the flusher's write");
        }
        Ok(())
    }
}

/// The flusher dying in the write of a full buffer poisons the log (the buffer may be half
/// written): later calls fail instead of waiting for a write that will never end.
#[test]
fn a_panic_in_the_write_of_a_handed_off_buffer_poisons_the_log() {
    let fs: Arc<dyn Fs> = Arc::new(HookFs::new(Arc::new(SimFs::new(13)), PanicAtWrite));
    let opts = options(Duration::from_secs(60)).buffer_bytes(4096);
    let (wal, _) = Wal::open(fs, Path::new(DIR), opts).unwrap();
    let wal = Arc::new(wal);
    for i in 1..=40u64 {
        if wal.append(1, &record(i)).is_err() {
            break;
        }
    }
    let (done_tx, done_rx) = channel();
    let w = Arc::clone(&wal);
    std::thread::spawn(move || {
        let started = Instant::now();
        while !w.is_poisoned() && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = done_tx.send((w.sync(), w.append(1, &record(99)), w.flush()));
    });
    let (sync, append, flush) =
        done_rx.recv_timeout(Duration::from_secs(30)).expect("a call hung after the panic");
    for (what, poisoned) in [
        ("sync", matches!(sync, Err(WalError::Poisoned { .. }))),
        ("append", matches!(append, Err(WalError::Poisoned { .. }))),
        ("flush", matches!(flush, Err(WalError::Poisoned { .. }))),
    ] {
        assert!(poisoned, "{what} after the flusher's panic");
    }
}

/// A hook that records the name of each thread that gives a write-back hint.
#[derive(Debug, Default)]
struct HintThreads(Mutex<Vec<Option<String>>>);

impl Hook for HintThreads {
    fn start_writeback(&self, _path: &Path) {
        let name = std::thread::current().name().map(str::to_owned);
        self.0.lock().unwrap().push(name);
    }
}

/// Under `Os` the write-back hints are given by a thread of the log's own, not by the
/// appending thread (submitting 8 MiB of page writes there cost a tenth of its time), every
/// one of them by the time the log is closed or dropped; none under `Os` with hints off.
#[test]
fn under_os_the_write_back_hints_come_from_a_thread_of_the_log() {
    for (ahead, close) in [(true, true), (true, false), (false, true)] {
        let hook = Arc::new(HookFs::new(Arc::new(SimFs::new(5)), HintThreads::default()));
        let fs: Arc<dyn Fs> = Arc::clone(&hook) as Arc<dyn Fs>;
        let options = WalOptions::default()
            .sync_policy(SyncPolicy::Os)
            .segment_fill(SegmentFill::Allocate)
            .segment_bytes_max(64 << 20)
            .writeback_ahead(ahead);
        let (wal, _) = Wal::open(fs, Path::new(DIR), options).unwrap();
        // Each record crosses a write-back boundary (every 8 MiB): three hints.
        let big: Vec<u8> = (0..8_600_000u32).map(|i| (i >> 3) as u8).collect();
        for _ in 0..3 {
            wal.append(1, &big).unwrap();
        }
        if close {
            wal.close().unwrap();
        } else {
            drop(wal);
        }
        let threads = hook.0.lock().unwrap().clone();
        if ahead {
            let theirs = vec![Some("ingestor-wal-writeback".to_owned()); 3];
            assert_eq!(threads, theirs, "hints lost, or given by another thread");
        } else {
            assert_eq!(threads, Vec::<Option<String>>::new(), "hints given though turned off");
        }
    }
}

/// Segments smaller than a write-back chunk start no thread for hints: a record larger than
/// such a segment, alone in a segment of its own, still gets its hint, from the appender.
#[test]
fn under_os_small_segments_give_their_rare_hints_on_the_appending_thread() {
    let hook = Arc::new(HookFs::new(Arc::new(SimFs::new(6)), HintThreads::default()));
    let fs: Arc<dyn Fs> = Arc::clone(&hook) as Arc<dyn Fs>;
    let options = WalOptions::default()
        .sync_policy(SyncPolicy::Os)
        .segment_fill(SegmentFill::Allocate)
        .segment_bytes_max(4 << 20);
    let (wal, _) = Wal::open(fs, Path::new(DIR), options).unwrap();
    let big: Vec<u8> = (0..8_600_000u32).map(|i| (i >> 5) as u8).collect();
    wal.append(1, &big).unwrap();
    let me = std::thread::current().name().map(str::to_owned);
    assert_eq!(*hook.0.lock().unwrap(), vec![me], "given by the appender, at once");
    wal.close().unwrap();
}
