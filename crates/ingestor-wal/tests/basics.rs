//! Round trips, rotation, readers, concurrency, deletion: each body runs on the real file
//! system and on the simulated disk.

mod common;

use std::sync::Arc;

use common::{Disk, payload};
use ingestor_wal::{AckLevel, Lsn, SegmentId, SyncPolicy, Wal, WalError, WalOptions};

/// Small segments, the spares written inline: where segments begin is then the same in
/// every run (a background spare arriving at a moment of its own would end a segment then).
fn small(policy: SyncPolicy) -> WalOptions {
    WalOptions::default()
        .sync_policy(policy)
        .segment_bytes_max(4096)
        .segment_fill(ingestor_wal::SegmentFill::ZerosInline)
}

#[test]
fn round_trip_single_and_batch_appends() {
    for disk in Disk::both() {
        let wal = disk.open(small(SyncPolicy::Os));
        assert_eq!(wal.written_lsn(), Lsn::ZERO);
        let a = wal.append(1, b"one").unwrap();
        assert_eq!((a.first, a.last, a.level), (Lsn(1), Lsn(1), AckLevel::Written));
        let b = wal.append_batch(&[(2, b"two"), (3, b"three")]).unwrap();
        assert_eq!((b.first, b.last), (Lsn(2), Lsn(3)));
        assert_eq!(wal.written_lsn(), Lsn(3));
        assert_eq!(wal.sync().unwrap(), Lsn(3));
        let read: Vec<_> = wal.reader(Lsn(2)).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(read.len(), 2);
        assert_eq!(
            (read[1].lsn, read[1].record_type, read[1].payload.as_slice()),
            (Lsn(3), 3, &b"three"[..])
        );
        wal.close().unwrap();

        let (wal, seen) = disk.replay(small(SyncPolicy::Os));
        assert_eq!(
            seen,
            vec![(1, 1, b"one".to_vec()), (2, 2, b"two".to_vec()), (3, 3, b"three".to_vec())]
        );
        assert_eq!(wal.append(1, b"four").unwrap().first, Lsn(4), "LSNs continue after reopen");
    }
}

#[test]
fn always_acknowledges_durable_and_batch_becomes_durable_within_the_window() {
    for disk in Disk::both() {
        let wal = disk.open(small(SyncPolicy::Always));
        let ack = wal.append(1, b"x").unwrap();
        assert_eq!(ack.level, AckLevel::Durable);
        assert!(wal.durable_lsn() >= ack.last);
        drop(wal);
        let wal = disk.open(small(SyncPolicy::Batch(std::time::Duration::from_millis(2))));
        let ack = wal.append(1, b"y").unwrap();
        wal.wait_durable(ack.last).unwrap();
        assert!(wal.durable_lsn() >= ack.last);
        assert!(wal.stats().syncs >= 1);
    }
}

#[test]
fn rotation_keeps_lsns_dense_across_segments() {
    for disk in Disk::both() {
        let wal = disk.open(small(SyncPolicy::Os));
        for n in 1..=200u64 {
            assert_eq!(wal.append(1, &payload(n, 100)).unwrap().first, Lsn(n));
        }
        let segments = wal.segments();
        assert!(segments.len() >= 5, "{segments:?}");
        assert_eq!(segments[0], SegmentId(Lsn(1)));
        assert!(wal.stats().rotations as usize == segments.len() - 1);
        assert_eq!(disk.segment_files().len(), segments.len());
        // Every record, in order, from any starting point.
        for from in [1u64, 37, 200] {
            let got: Vec<u64> = wal.reader(Lsn(from)).unwrap().map(|r| r.unwrap().lsn.0).collect();
            assert_eq!(got, (from..=200).collect::<Vec<_>>());
        }
        drop(wal);
        let (_, seen) = disk.replay(small(SyncPolicy::Os));
        assert_eq!(seen.len(), 200);
        for (i, (lsn, _, p)) in seen.iter().enumerate() {
            assert_eq!(*lsn, i as u64 + 1);
            assert_eq!(p, &payload(*lsn, 100));
        }
    }
}

#[test]
fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    for disk in Disk::both() {
        let wal = disk.open(small(SyncPolicy::Os));
        wal.append(1, b"small").unwrap();
        let big = payload(2, 10_000);
        wal.append(1, &big).unwrap();
        wal.append(1, b"after").unwrap();
        drop(wal);
        let (_, seen) = disk.replay(small(SyncPolicy::Os));
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[1].2, big);
    }
}

#[test]
fn concurrent_appenders_get_dense_unique_lsns() {
    for disk in Disk::both() {
        for policy in [SyncPolicy::Always, SyncPolicy::Os] {
            let dir_disk = disk.sibling(&format!("wal-{policy:?}"));
            let wal = Arc::new(
                dir_disk
                    .open(WalOptions::default().sync_policy(policy).segment_bytes_max(64 << 10)),
            );
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let wal = Arc::clone(&wal);
                    std::thread::spawn(move || {
                        (0..100u64)
                            .map(|i| {
                                let ack = wal.append(1, &payload(t * 1000 + i, 50)).unwrap();
                                if policy == SyncPolicy::Always {
                                    assert_eq!(ack.level, AckLevel::Durable);
                                }
                                (ack.first.0, t * 1000 + i)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut acks: Vec<(u64, u64)> =
                threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
            acks.sort();
            assert_eq!(acks.iter().map(|a| a.0).collect::<Vec<_>>(), (1..=400).collect::<Vec<_>>());
            drop(Arc::try_unwrap(wal).unwrap());
            let (_, seen) = dir_disk
                .replay(WalOptions::default().sync_policy(policy).segment_bytes_max(64 << 10));
            for ((lsn, id), (seen_lsn, _, p)) in acks.iter().zip(&seen) {
                assert_eq!(lsn, seen_lsn);
                assert_eq!(
                    p,
                    &payload(*id, 50),
                    "the payload at LSN {lsn} is the one acknowledged with it"
                );
            }
        }
    }
}

#[test]
fn readers_follow_appends_across_segments() {
    for disk in Disk::both() {
        let wal = Arc::new(disk.open(small(SyncPolicy::Os)));
        let writer = {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for n in 1..=300u64 {
                    wal.append(1, &payload(n, 80)).unwrap();
                }
            })
        };
        let mut reader = wal.reader(Lsn(1)).unwrap();
        let mut next = 1u64;
        while next <= 300 {
            match reader.next() {
                Some(r) => {
                    let r = r.unwrap();
                    assert_eq!(r.lsn, Lsn(next));
                    assert_eq!(r.payload, payload(next, 80));
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        writer.join().unwrap();
        assert!(reader.next().is_none());
    }
}

#[test]
fn delete_below_removes_only_segments_wholly_below_the_watermark() {
    for disk in Disk::both() {
        let wal = disk.open(small(SyncPolicy::Os));
        for n in 1..=200u64 {
            wal.append(1, &payload(n, 100)).unwrap();
        }
        let before = wal.segments();
        let second = before[1].0;
        // A watermark inside the second segment deletes only the first.
        let deleted = wal.delete_below(Lsn(second.0 + 1)).unwrap();
        assert_eq!(deleted, vec![before[0]]);
        // The watermark equal to a segment's first LSN deletes every segment before it.
        let third = before[2].0;
        assert_eq!(wal.delete_below(third).unwrap(), vec![before[1]]);
        // Never the active segment, even with a watermark past everything.
        let deleted = wal.delete_below(Lsn(u64::MAX)).unwrap();
        assert_eq!(deleted, before[2..before.len() - 1].to_vec());
        assert_eq!(wal.segments(), vec![*before.last().unwrap()]);
        assert_eq!(disk.segment_files(), vec![before.last().unwrap().file_name()]);
        assert!(matches!(wal.reader(Lsn(1)), Err(WalError::LsnOutOfRange { .. })));
        let last_first = before.last().unwrap().0;
        let got: Vec<u64> = wal.reader(last_first).unwrap().map(|r| r.unwrap().lsn.0).collect();
        assert_eq!(got, (last_first.0..=200).collect::<Vec<_>>());
        drop(wal);
        // The log reopens from the first kept segment.
        let (wal, seen) = disk.replay(small(SyncPolicy::Os));
        assert_eq!(seen.first().unwrap().0, last_first.0);
        assert_eq!(wal.append(1, b"next").unwrap().first, Lsn(201));
    }
}

#[test]
fn a_second_opener_is_refused() {
    for disk in Disk::both() {
        let _wal = disk.open(WalOptions::default());
        let err = Wal::open(Arc::clone(&disk.fs), &disk.dir, WalOptions::default()).unwrap_err();
        assert!(matches!(&err, WalError::Io { op: "lock", .. }), "{err}");
    }
}

#[test]
fn invalid_options_name_the_field() {
    let disk = Disk::sim(2);
    for (options, field) in [
        (WalOptions::default().segment_bytes_max(100), "segment_bytes_max"),
        (
            WalOptions::default().sync_policy(SyncPolicy::Batch(std::time::Duration::ZERO)),
            "sync_policy",
        ),
        (
            WalOptions::default().compression(ingestor_codec::Compression::Zstd { level: 99 }),
            "compression",
        ),
    ] {
        let err = Wal::open(Arc::clone(&disk.fs), &disk.dir, options).unwrap_err();
        assert!(matches!(err, WalError::InvalidOptions { field: f, .. } if f == field), "{err}");
    }
}

#[test]
fn compressed_records_round_trip() {
    for disk in Disk::both() {
        let options = small(SyncPolicy::Os).compression(ingestor_codec::Compression::Lz4);
        let wal = disk.open(options.clone());
        let repetitive = vec![b'a'; 2000];
        wal.append(1, &repetitive).unwrap();
        assert!(wal.stats().bytes_written < 200, "{:?}", wal.stats());
        drop(wal);
        let (_, seen) = disk.replay(options);
        assert_eq!(seen[0].2, repetitive);
    }
}

#[test]
fn rotate_starts_a_new_segment_so_everything_before_can_be_deleted() {
    for disk in Disk::both() {
        let wal = disk.open(small(SyncPolicy::Os));
        assert_eq!(wal.rotate().unwrap(), SegmentId(Lsn(1)), "an empty segment stays");
        for i in 1..=3 {
            wal.append(1, &payload(i, 50)).unwrap();
        }
        assert_eq!(wal.rotate().unwrap(), SegmentId(Lsn(4)));
        assert_eq!(wal.durable_lsn(), Lsn(3), "the ended segment was synced");
        assert_eq!(wal.rotate().unwrap(), SegmentId(Lsn(4)), "nothing written since");
        assert_eq!(wal.delete_below(Lsn(4)).unwrap(), vec![SegmentId(Lsn(1))]);
        assert_eq!(wal.append(1, &payload(4, 50)).unwrap().first, Lsn(4));
        wal.close().unwrap();
        let (wal, records) = disk.replay(small(SyncPolicy::Os));
        assert_eq!(records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![4]);
        assert_eq!(wal.segments(), vec![SegmentId(Lsn(4))]);
    }
}

#[test]
fn a_background_spare_becomes_the_next_segment_and_none_is_left_behind() {
    // Zero-filled segments on a real directory: past half a segment a thread writes a spare;
    // the log moves onto it; close removes a spare not used; open removes stale spares
    // (and leaves a directory that happens to have a spare's name alone).
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn ingestor_fs::Fs> = Arc::new(ingestor_fs::StdFs::new());
    let options = WalOptions::default()
        .sync_policy(SyncPolicy::Os)
        .segment_fill(ingestor_wal::SegmentFill::Zeros)
        .segment_bytes_max(64 << 10);
    let (wal, _) = Wal::open(Arc::clone(&fs), dir.path(), options.clone()).unwrap();
    let mut n = 0u64;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while wal.stats().spare_segments < 2 {
        n += 1;
        wal.append(1, &payload(n, 300)).unwrap();
        if n.is_multiple_of(50) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(std::time::Instant::now() < until, "no spare used: {:?}", wal.stats());
    }
    wal.close().unwrap();
    let names = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("spare"))
            .collect();
        v.sort();
        v
    };
    assert!(names(dir.path()).is_empty(), "close left {:?}", names(dir.path()));
    std::fs::write(dir.path().join("spare.tmp"), b"stale").unwrap();
    std::fs::write(dir.path().join("spare-1-7.tmp"), b"stale").unwrap();
    std::fs::create_dir(dir.path().join("spare-dir.tmp")).unwrap();
    let mut seen = 0u64;
    let (wal, _) = Wal::open_and_replay(fs, dir.path(), options, Lsn::ZERO, |lsn, _, p| {
        assert_eq!(p, payload(lsn.0, 300));
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, n);
    assert_eq!(names(dir.path()), ["spare-dir.tmp"], "stale spare files removed at open");
    drop(wal);
}

#[test]
fn the_default_fill_zero_fills_only_under_policies_that_sync_often() {
    use ingestor_wal::SegmentFill;
    let auto = SegmentFill::default();
    assert_eq!(auto, SegmentFill::Auto);
    assert_eq!(auto.resolve(SyncPolicy::Always), SegmentFill::Zeros);
    assert_eq!(auto.resolve(SyncPolicy::default()), SegmentFill::Zeros);
    assert_eq!(auto.resolve(SyncPolicy::Os), SegmentFill::AllocateAhead);
    assert_eq!(auto.resolve(SyncPolicy::BUFFERED), SegmentFill::AllocateAhead);
    assert_eq!(SegmentFill::Zeros.resolve(SyncPolicy::Os), SegmentFill::Zeros);
    assert_eq!(SegmentFill::Allocate.resolve(SyncPolicy::Always), SegmentFill::Allocate);
    // On a real directory under `Allocate`, no spare is ever prepared.
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn ingestor_fs::Fs> = Arc::new(ingestor_fs::StdFs::new());
    let options = WalOptions::default()
        .sync_policy(SyncPolicy::Os)
        .segment_fill(SegmentFill::Allocate)
        .segment_bytes_max(64 << 10);
    let (wal, _) = Wal::open(fs, dir.path(), options).unwrap();
    for n in 1..=1000 {
        wal.append(1, &payload(n, 300)).unwrap();
    }
    let stats = wal.stats();
    assert!(stats.rotations >= 3, "{stats:?}");
    assert_eq!((stats.spare_segments, stats.spare_failures), (0, 0));
    wal.close().unwrap();
}

#[test]
fn a_spare_allocated_ahead_becomes_the_next_segment_without_cutting_the_one_before() {
    // `AllocateAhead` (the default under `Os`): at the first append into a segment a thread
    // prepares a fallocate'd spare and the next rotation renames it; unlike a zero-filled spare it is no
    // reason to leave a segment early, so every segment but the last keeps its whole length.
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn ingestor_fs::Fs> = Arc::new(ingestor_fs::StdFs::new());
    let segment = 64u64 << 10;
    let options = WalOptions::default().sync_policy(SyncPolicy::Os).segment_bytes_max(segment);
    let (wal, _) = Wal::open(Arc::clone(&fs), dir.path(), options.clone()).unwrap();
    let mut n = 0u64;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while wal.stats().spare_segments < 3 {
        n += 1;
        wal.append(1, &payload(n, 300)).unwrap();
        if n.is_multiple_of(20) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(std::time::Instant::now() < until, "no spare used: {:?}", wal.stats());
    }
    let stats = wal.stats();
    assert_eq!(stats.spare_failures, 0, "{stats:?}");
    // Every rotation is timed; none took longer than the whole test.
    assert!(stats.rotation_time_max > std::time::Duration::ZERO, "{stats:?}");
    assert!(stats.rotation_time_max < std::time::Duration::from_secs(20), "{stats:?}");
    let segments = wal.segments();
    wal.close().unwrap();
    for id in &segments[..segments.len() - 1] {
        let len = std::fs::metadata(dir.path().join(id.file_name())).unwrap().len();
        assert_eq!(len, segment, "{id} was cut before it was full");
    }
    let leftover: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("spare"))
        .collect();
    assert!(leftover.is_empty(), "close left {leftover:?}");
    let mut seen = 0u64;
    let (_wal, report) = Wal::open_and_replay(fs, dir.path(), options, Lsn::ZERO, |lsn, _, p| {
        assert_eq!(p, payload(lsn.0, 300));
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert!(report.corruptions.is_empty() && report.truncations.is_empty(), "{report}");
    assert_eq!(seen, n);
}
