//! A rotation under `Os` (and `Buffered`) opens the next segment before the ended one is
//! synced, with the header flag `follows_unsynced`, and seals it (flag cleared, synced) once
//! the ended segment is synced. After a power cut in between, the ended segment may be torn
//! while the new one holds frames: recovery must take that for a torn tail, never for
//! corruption, and must still refuse damage that a sealed header or a later frame's durable
//! lag proves was synced.
//!
//! Layout of the logs built here (segments of 4096 bytes, records of 100 bytes, 33 frames a
//! segment): LSNs 1-33, 34-66, then 67-70 in the last segment. LSN 67 was written before its
//! segment's close (its durable lag says LSN 33 was durable); LSN 68 on, after it (LSN 66).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Disk, payload};
use ingestor_codec::{SEGMENT_HEADER_LEN, SegmentHeader, decode_frame};
use ingestor_fs::{CrashPolicy, Fs, OpenMode, SimFs};
use ingestor_wal::{Lsn, RecoveryMode, SegmentId, SyncPolicy, Wal, WalError, WalOptions};

fn options(mode: RecoveryMode) -> WalOptions {
    WalOptions::default()
        .sync_policy(SyncPolicy::Os)
        .segment_bytes_max(4096)
        .recovery_mode(mode)
        .segment_fill(ingestor_wal::SegmentFill::Allocate)
}

/// Writes records 1..=70 under `Os` and closes the log; returns its segment files, oldest
/// first.
fn build(disk: &Disk) -> Vec<PathBuf> {
    let wal = disk.open(options(RecoveryMode::TolerateTornTail));
    for i in 1..=70 {
        wal.append(1, &payload(i, 100)).unwrap();
    }
    wal.close().unwrap();
    let mut names = disk.segment_files();
    names.sort();
    let paths: Vec<PathBuf> = names.iter().map(|n| disk.dir.join(n)).collect();
    assert_eq!(paths.len(), 3, "{names:?}");
    assert_eq!(paths[2], disk.dir.join(SegmentId(Lsn(67)).file_name()));
    paths
}

/// The frames of a segment file: (offset, LSN, length, durable lag).
fn frames(fs: &dyn Fs, path: &Path) -> Vec<(u64, u64, u64, u32)> {
    let bytes = fs.read_file(path).unwrap();
    let mut at = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while let Ok(frame) = decode_frame(&bytes[at..]) {
        out.push((at as u64, frame.lsn.0, frame.frame_len as u64, frame.durable_lag));
        at += frame.frame_len;
    }
    out
}

fn write(fs: &dyn Fs, path: &Path, bytes: &[u8], offset: u64) {
    let file = fs.open(path, OpenMode::ReadWrite).unwrap();
    file.write_at(bytes, offset).unwrap();
    file.sync_data().unwrap();
}

/// Rewrites a segment's header with `follows_unsynced` as given.
fn set_flag(fs: &dyn Fs, path: &Path, first: u64, follows_unsynced: bool) {
    let header = SegmentHeader { first_lsn: Lsn(first), follows_unsynced }.encode();
    write(fs, path, &header, 0);
}

/// Zeros from the frame of LSN `from` to the end of the segment's frames: pages that never
/// reached the disk.
fn zero_from(fs: &dyn Fs, path: &Path, from: u64) {
    let all = frames(fs, path);
    let start = all.iter().find(|f| f.1 == from).unwrap().0;
    let end = all.last().map(|f| f.0 + f.2).unwrap();
    write(fs, path, &vec![0u8; (end - start) as usize], start);
}

fn replay(
    disk: &Disk,
    mode: RecoveryMode,
) -> Result<(Wal, ingestor_wal::RecoveryReport, Vec<u64>), WalError> {
    let mut seen = Vec::new();
    let (wal, report) = Wal::open_and_replay(
        Arc::clone(&disk.fs),
        &disk.dir,
        options(mode),
        Lsn::ZERO,
        |lsn, _, p| {
            assert_eq!(p, payload(lsn.0, 100), "LSN {lsn} holds its own payload");
            seen.push(lsn.0);
            Ok(())
        },
    )?;
    Ok((wal, report, seen))
}

#[test]
fn the_lags_of_the_built_log_are_as_the_tests_assume() {
    let disk = Disk::sim(1);
    let segments = build(&disk);
    let last = frames(&*disk.fs, &segments[2]);
    let lags: Vec<(u64, u32)> = last.iter().map(|f| (f.1, f.3)).collect();
    // LSN 67 written before its segment's close, the next ones after it.
    assert_eq!(lags, vec![(67, 34), (68, 2), (69, 3), (70, 4)]);
}

#[test]
fn a_torn_segment_before_an_unsealed_last_one_is_a_torn_tail() {
    for damage_by_zeros in [false, true] {
        for disk in Disk::both() {
            let segments = build(&disk);
            // The close of segment 34 never happened: its frames from LSN 50 on never made
            // it, the last segment kept only LSN 67 and its flag.
            zero_from(&*disk.fs, &segments[2], 68);
            set_flag(&*disk.fs, &segments[2], 67, true);
            let (offset, _, len, _) = frames(&*disk.fs, &segments[1])[50 - 34];
            if damage_by_zeros {
                zero_from(&*disk.fs, &segments[1], 50);
            } else {
                write(&*disk.fs, &segments[1], &vec![0xA5; len as usize / 2], offset + 10);
            }
            let err = replay(&disk, RecoveryMode::Strict).unwrap_err();
            assert!(
                matches!(err, WalError::TornTail { offset: o, lsn: Lsn(50), .. } if o == offset),
                "{err}"
            );

            let (wal, report, seen) = replay(&disk, RecoveryMode::TolerateTornTail).unwrap();
            assert_eq!(seen, (1..50).collect::<Vec<_>>(), "zeros: {damage_by_zeros}");
            assert!(report.corruptions.is_empty(), "{report}");
            assert_eq!(report.removed_segments, vec![SegmentId(Lsn(67))]);
            let cuts: Vec<(SegmentId, u64, Lsn, bool)> = report
                .truncations
                .iter()
                .map(|t| (t.segment, t.offset, t.from_lsn, t.removed_file))
                .collect();
            assert_eq!(
                cuts,
                vec![
                    (SegmentId(Lsn(34)), offset, Lsn(50), false),
                    (SegmentId(Lsn(67)), 0, Lsn(67), true)
                ]
            );
            assert!(
                report.truncations.iter().all(|t| t.quarantined.is_some() == (t.bytes > 0)),
                "{report}"
            );
            assert!(!disk.fs.exists(&segments[2]).unwrap());
            assert_eq!(wal.append(1, &payload(50, 100)).unwrap().first, Lsn(50));
            wal.close().unwrap();
            let (_, report, seen) = replay(&disk, RecoveryMode::Strict).unwrap();
            assert!(report.is_clean(), "{report}");
            assert_eq!(seen, (1..=50).collect::<Vec<_>>());
        }
    }
}

#[test]
fn the_same_damage_before_a_sealed_last_segment_is_corruption() {
    for disk in Disk::both() {
        let segments = build(&disk);
        zero_from(&*disk.fs, &segments[2], 68);
        let (offset, _, len, _) = frames(&*disk.fs, &segments[1])[50 - 34];
        let (last_offset, _, last_len, _) = *frames(&*disk.fs, &segments[1]).last().unwrap();
        write(&*disk.fs, &segments[1], &vec![0xA5; len as usize / 2], offset + 10);
        let err = replay(&disk, RecoveryMode::TolerateTornTail).unwrap_err();
        assert!(
            matches!(err, WalError::Corrupt { offset: o, lsn: Lsn(50), .. } if o == offset),
            "{err}"
        );
        // Zeros instead, before a sealed segment that starts past them: a gap.
        let zeros = vec![0u8; (last_offset + last_len - offset) as usize];
        write(&*disk.fs, &segments[1], &zeros, offset);
        let err = replay(&disk, RecoveryMode::TolerateTornTail).unwrap_err();
        assert!(matches!(err, WalError::Gap { first: Lsn(50), last: Lsn(66), .. }), "{err}");
    }
}

#[test]
fn a_later_frame_proving_the_damage_synced_makes_it_corruption_despite_the_flag() {
    for disk in Disk::both() {
        let segments = build(&disk);
        // LSN 68, written after the close (its lag says LSN 66 was durable), survives.
        zero_from(&*disk.fs, &segments[2], 69);
        set_flag(&*disk.fs, &segments[2], 67, true);
        let (offset, _, len, _) = frames(&*disk.fs, &segments[1])[50 - 34];
        write(&*disk.fs, &segments[1], &vec![0xA5; len as usize / 2], offset + 10);
        let err = replay(&disk, RecoveryMode::TolerateTornTail).unwrap_err();
        assert!(matches!(err, WalError::Corrupt { lsn: Lsn(50), .. }), "{err}");
    }
}

#[test]
fn a_last_header_read_as_zeros_is_a_torn_creation_unless_a_frame_proves_it_sealed() {
    for disk in Disk::both() {
        // The image a power cut leaves before the close: the flagged header never written
        // back (zeros: the space was preallocated), LSN 67 (written before the close) is.
        let segments = build(&disk);
        zero_from(&*disk.fs, &segments[2], 68);
        write(&*disk.fs, &segments[2], &[0; SEGMENT_HEADER_LEN], 0);
        let (wal, report, seen) = replay(&disk, RecoveryMode::TolerateTornTail).unwrap();
        assert_eq!(seen, (1..=66).collect::<Vec<_>>());
        assert_eq!(report.removed_segments, vec![SegmentId(Lsn(67))]);
        assert!(report.truncations[0].removed_file, "{report}");
        assert_eq!(wal.append(1, b"x").unwrap().first, Lsn(67));
    }
    for disk in Disk::both() {
        // LSN 68, written after the seal, proves the header was synced: zeros there are
        // damage after the fact.
        let segments = build(&disk);
        write(&*disk.fs, &segments[2], &[0; SEGMENT_HEADER_LEN], 0);
        let err = replay(&disk, RecoveryMode::TolerateTornTail).unwrap_err();
        assert!(matches!(err, WalError::Corrupt { offset: 0, .. }), "{err}");
    }
    for disk in Disk::both() {
        // Any other damage to a header with a valid frame after it is damage after the
        // fact, whatever the frames' lags (a power cut writes a sector whole or not at all).
        let segments = build(&disk);
        zero_from(&*disk.fs, &segments[2], 68);
        write(&*disk.fs, &segments[2], &[0x5A], 14);
        let err = replay(&disk, RecoveryMode::TolerateTornTail).unwrap_err();
        assert!(matches!(err, WalError::Corrupt { offset: 0, .. }), "{err}");
    }
}

/// A power cut at the close a rotation left for later, under every crash policy: the log
/// opens, holds a prefix of what was written with everything durable before the cut, and a
/// second open after more appends and another power cut is clean.
#[test]
fn a_power_cut_before_a_rotations_close_opens_with_a_prefix() {
    // `Buffered` without hand-offs: its thread idle, the appending thread closes after the
    // batch that rotated joined the buffer.
    let buffered = |mode| {
        options(mode)
            .sync_policy(SyncPolicy::Buffered(std::time::Duration::from_secs(60)))
            .buffer_handoff(false)
            .buffer_bytes(1024)
    };
    let logs: [(&str, &dyn Fn(RecoveryMode) -> WalOptions); 2] =
        [("Os", &options), ("Buffered", &buffered)];
    for ((seed, crash), (name, opts)) in
        CrashPolicy::ALL.into_iter().enumerate().flat_map(|p| logs.iter().map(move |l| (p, *l)))
    {
        for round in 0..8u64 {
            let sim = SimFs::new(100 + seed as u64 * 10 + round);
            let fs: Arc<dyn Fs> = Arc::new(sim.clone());
            let dir = Path::new("/data/wal");
            let label = format!("{name} {crash:?}");
            let (wal, _) =
                Wal::open(Arc::clone(&fs), dir, opts(RecoveryMode::TolerateTornTail)).unwrap();
            let mut n = 0u64;
            // The first rotation's close done (inline, after the append that rotated).
            while wal.segments().len() < 2 {
                n += 1;
                wal.append(1, &payload(n, 100)).unwrap();
            }
            let durable = wal.durable_lsn();
            assert_eq!(durable, Lsn(wal.segments()[1].0.0 - 1));
            sim.arm_crash_point(ingestor_wal::crash_points::ROTATE_BEFORE_SYNC, 1);
            // The append that rotates returns (its batch went into the new segment, the
            // close's power cut poisoned the log); the next one fails.
            let cut = loop {
                n += 1;
                match wal.append(1, &payload(n, 100)) {
                    Ok(_) => assert!(n < 1_000, "no rotation"),
                    Err(e) => break e,
                }
            };
            assert!(sim.is_crashed(), "{cut}");
            // The power went at the close, after the next segment was opened: a rotation
            // that synced before opening it would have cut it with two segments.
            assert_eq!(wal.segments().len(), 3, "{label}");
            drop(wal);
            sim.crash(crash);
            let mut seen = Vec::new();
            let (wal, report) = Wal::open_and_replay(
                Arc::clone(&fs),
                dir,
                opts(RecoveryMode::TolerateTornTail),
                Lsn::ZERO,
                |lsn, _, p| {
                    assert_eq!(p, payload(lsn.0, 100), "{label}: LSN {lsn}");
                    seen.push(lsn.0);
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{label} round {round}: {e}"));
            assert!(report.corruptions.is_empty(), "{label}: {report}");
            let k = seen.len() as u64;
            assert_eq!(seen, (1..=k).collect::<Vec<_>>(), "{label}: a prefix");
            assert!(Lsn(k) >= durable, "{label}: lost durable records: {k} < {durable}");
            assert!(k <= n, "{label}");
            // Appends go on from there, and survive a clean close and another power cut.
            for i in k + 1..=k + 40 {
                assert_eq!(wal.append(1, &payload(i, 100)).unwrap().first, Lsn(i));
            }
            wal.close().unwrap();
            sim.crash(crash);
            let (_, report) = Wal::open(Arc::clone(&fs), dir, opts(RecoveryMode::Strict)).unwrap();
            assert!(report.is_clean(), "{label}: {report}");
        }
    }
}

/// Kills the process using the simulated disk at the `nth` rotation, right after the new
/// segment was created (flagged, nothing synced) and before the ended segment's close.
#[derive(Debug)]
struct KillAtRotation {
    sim: SimFs,
    nth: u64,
    seen: std::sync::atomic::AtomicU64,
}

impl ingestor_wal::WalListener for KillAtRotation {
    fn on_rotate(&self, _segment: SegmentId) {
        if self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.nth {
            self.sim.kill();
        }
    }
}

/// A log under `Os` in `/data/wal` on a new simulated disk, whose process
/// [`KillAtRotation`] kills at the `nth` rotation.
fn log_killed_at_rotation(seed: u64, nth: u64) -> (SimFs, Arc<dyn Fs>, Wal) {
    let sim = SimFs::new(seed);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let killer = Arc::new(KillAtRotation {
        sim: sim.clone(),
        nth,
        seen: std::sync::atomic::AtomicU64::new(0),
    });
    let opts = options(RecoveryMode::TolerateTornTail).listener(killer);
    let (wal, _) = Wal::open(Arc::clone(&fs), Path::new("/data/wal"), opts).unwrap();
    (sim, fs, wal)
}

/// The LSNs a strict open replays, each checked to hold its own payload.
fn lsns_of_a_strict_open(fs: Arc<dyn Fs>, dir: &Path, context: &str) -> Vec<u64> {
    let mut lsns = Vec::new();
    Wal::open_and_replay(fs, dir, options(RecoveryMode::Strict), Lsn::ZERO, |lsn, _, p| {
        assert_eq!(p, payload(lsn.0, 100), "{context}: LSN {lsn}");
        lsns.push(lsn.0);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{context}: {e}"));
    lsns
}

/// Appends records 1, 2, ... until the process is killed; then forgets the log (a dead
/// process closes nothing) and revives the disk for the next one.
fn append_until_killed(sim: &SimFs, wal: Wal) {
    let mut n = 0u64;
    while !sim.is_killed() {
        n += 1;
        assert!(n < 1_000, "no rotation killed the process");
        let _ = wal.append(1, &payload(n, 100));
    }
    std::mem::forget(wal);
    sim.revive();
}

/// A process killed between a rotation and its close leaves the ended segment in the page
/// cache only and the new one flagged: the open that recovers them counts them durable, so
/// it must finish the close (sync the ended segment, seal the new one) before it returns.
#[test]
fn an_open_after_a_kill_before_a_rotations_close_finishes_it() {
    // With `header_written` false, the kill came between the new segment's creation and its
    // header's write: recovery removes it as a torn creation, and the ended segment, whose
    // close never ran, is the last one left.
    for (policy, header_written) in
        CrashPolicy::ALL.into_iter().flat_map(|p| [(p, true), (p, false)])
    {
        let dir = Path::new("/data/wal");
        let (sim, fs, wal) = log_killed_at_rotation(7, 2);
        append_until_killed(&sim, wal);
        if !header_written {
            let created = dir.join(SegmentId(Lsn(67)).file_name());
            fs.open(&created, OpenMode::ReadWrite).unwrap().set_len(0).unwrap();
        }
        let (wal, report) =
            Wal::open(Arc::clone(&fs), dir, options(RecoveryMode::TolerateTornTail)).unwrap();
        assert_eq!(report.is_clean(), header_written, "{policy:?}: {report}");
        let recovered = wal.written_lsn();
        assert!(
            recovered.0 >= 66,
            "{policy:?}: the page cache kept the ended segment: {recovered}"
        );
        assert_eq!(wal.durable_lsn(), recovered, "{policy:?}: what an open recovers is durable");
        std::mem::forget(wal);
        sim.crash(policy);
        let lsns = lsns_of_a_strict_open(fs, dir, &format!("{policy:?}"));
        assert_eq!(lsns, (1..=recovered.0).collect::<Vec<_>>(), "{policy:?}");
    }
}

/// When a sync covered the ended segment to its end before the rotation, the new segment's
/// frames say so by their durable lag (the LSN before the segment was durable), which
/// recovery takes for proof that the new segment's header was sealed: such a rotation must
/// open the next segment sealed (created and synced as under `Always`), never flagged.
#[test]
fn a_rotation_after_a_sync_of_the_whole_segment_opens_the_next_one_sealed() {
    for synced_first in [true, false] {
        let dir = Path::new("/data/wal");
        let (sim, fs, wal) = log_killed_at_rotation(9, 1);
        // 33 records fill a segment; the 34th rotates.
        for n in 1..=33 {
            wal.append(1, &payload(n, 100)).unwrap();
        }
        if synced_first {
            wal.sync().unwrap();
        }
        let _ = wal.append(1, &payload(34, 100));
        assert!(sim.is_killed(), "the 34th record rotated");
        std::mem::forget(wal);
        sim.revive();
        let bytes = fs.read_file(&dir.join(SegmentId(Lsn(34)).file_name())).unwrap();
        let header = SegmentHeader::decode(bytes[..SEGMENT_HEADER_LEN].try_into().unwrap());
        assert_eq!(header.unwrap().follows_unsynced, !synced_first, "synced first: {synced_first}");
    }
}

/// A kill inside the close, after the new segment's header was rewritten sealed and before
/// the directory sync: the next open finds it sealed, yet its name was never synced. The
/// open syncs the directory, so that records appended there and acknowledged durable
/// survive a power cut that reverts directory operations.
#[test]
fn an_open_after_a_kill_inside_a_close_syncs_the_new_segments_name() {
    for policy in [CrashPolicy::RevertDirOps, CrashPolicy::DropUnsynced] {
        let dir = Path::new("/data/wal");
        let (sim, fs, wal) = log_killed_at_rotation(11, 2);
        append_until_killed(&sim, wal);
        // What the close did before the kill: the ended segment synced, the new header
        // rewritten sealed (not synced, nor the directory).
        let ended = fs.open(&dir.join(SegmentId(Lsn(34)).file_name()), OpenMode::ReadWrite);
        ended.unwrap().sync_data().unwrap();
        let created = dir.join(SegmentId(Lsn(67)).file_name());
        set_flag_unsynced(&*fs, &created, 67);
        let (wal, report) =
            Wal::open(Arc::clone(&fs), dir, options(RecoveryMode::TolerateTornTail)).unwrap();
        assert!(report.is_clean(), "{policy:?}: {report}");
        for i in 67..=69 {
            assert_eq!(wal.append(1, &payload(i, 100)).unwrap().first, Lsn(i));
        }
        assert_eq!(wal.sync().unwrap(), Lsn(69));
        std::mem::forget(wal);
        sim.crash(policy);
        let lsns = lsns_of_a_strict_open(fs, dir, &format!("{policy:?}"));
        assert_eq!(lsns, (1..=69).collect::<Vec<_>>(), "{policy:?}: durable records lost");
    }
}

/// Rewrites a segment's header sealed, without syncing it.
fn set_flag_unsynced(fs: &dyn Fs, path: &Path, first: u64) {
    let header = SegmentHeader { first_lsn: Lsn(first), follows_unsynced: false }.encode();
    fs.open(path, OpenMode::ReadWrite).unwrap().write_at(&header, 0).unwrap();
}
