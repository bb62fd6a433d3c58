//! Write then load, on the real file system and on the simulated disk: exact round trips
//! under every compression, listing, retention, clean-up of temporary files, options.

mod common;

use std::sync::Arc;

use common::{COMPRESSIONS, Disk, apply, assert_same, key, rich_store, snap_name};
use ingestor_codec::{Lsn, Op};
use ingestor_memstore::{Memstore, MemstoreConfig, MemstoreError};
use ingestor_snapshot::{
    SnapshotCompression, SnapshotError, SnapshotOptions, SnapshotStore, compaction_watermark,
};

#[test]
fn round_trip_is_exact_under_every_compression() {
    let original = rich_store(600, MemstoreConfig::default());
    for disk in Disk::both() {
        for (i, compression) in COMPRESSIONS.into_iter().enumerate() {
            // 100 series a chunk: several chunks, the last one partial.
            let options = SnapshotOptions::default().compression(compression).chunk_series(100);
            let store = disk.open(options);
            let lsn = Lsn(1000 + i as u64);
            let info = store.write(lsn, 1_700_000_000_123, &original.freeze()).unwrap();
            assert_eq!(info.lsn, lsn);
            assert_eq!(info.series, original.len() as u64);
            assert_eq!(info.created_ms, 1_700_000_000_123);
            assert_eq!(info.path, disk.path(&snap_name(lsn.0)));
            assert_eq!(info.bytes, disk.read(&snap_name(lsn.0)).len() as u64);
            assert!(store.list().unwrap().contains(&info), "{}", disk.name());

            let report = store.load_newest(&MemstoreConfig::default()).unwrap();
            assert_eq!(report.used.as_ref(), Some(&info), "{} {compression:?}", disk.name());
            assert!(report.rejected.is_empty(), "{:?}", report.rejected);
            assert_eq!(report.series, original.len() as u64);
            assert_same(&report.memstore, &original);
        }
    }
}

#[test]
fn compression_makes_snapshots_smaller() {
    let original = rich_store(300, MemstoreConfig::default());
    let disk = Disk::sim(3);
    let mut sizes = Vec::new();
    for (i, compression) in COMPRESSIONS.into_iter().take(3).enumerate() {
        let store = disk.open(SnapshotOptions::default().compression(compression).keep(10));
        sizes.push(store.write(Lsn(i as u64 + 1), 0, &original.freeze()).unwrap().bytes);
    }
    assert!(sizes[1] < sizes[0] && sizes[2] < sizes[1], "{sizes:?}");
}

#[test]
fn empty_and_single_series_stores_round_trip() {
    for disk in Disk::both() {
        let store = disk.open(SnapshotOptions::default().chunk_series(1));
        let empty = Memstore::new(MemstoreConfig::default()).unwrap();
        let info = store.write(Lsn::ZERO, 0, &empty.freeze()).unwrap();
        assert_eq!(info.series, 0);
        let report = store.load_newest(&MemstoreConfig::default()).unwrap();
        assert_eq!(report.used, Some(info));
        assert!(report.memstore.is_empty());

        let one = Memstore::new(MemstoreConfig::default()).unwrap();
        apply(&one, 1, &key("up", &[]), 1, Op::GaugeSet(1.0));
        store.write(Lsn(1), 0, &one.freeze()).unwrap();
        let report = store.load_newest(&MemstoreConfig::default()).unwrap();
        assert_eq!(report.used.unwrap().lsn, Lsn(1));
        assert_same(&report.memstore, &one);
    }
}

#[test]
fn largest_keys_round_trip() {
    let store = Memstore::new(MemstoreConfig::default()).unwrap();
    let value = "é".repeat(2048); // 4096 bytes, the limit
    let labels: Vec<(String, String)> =
        (0..64).map(|j| (format!("label_{j:02}_{}", "x".repeat(200)), value.clone())).collect();
    let name = format!("m{}", "_".repeat(254));
    for i in 0..20 {
        let mut labels = labels.clone();
        labels[0].1 = format!("{i}");
        let k = ingestor_codec::SeriesKey::new(&name, labels).unwrap();
        apply(&store, 1, &k, 1, Op::CounterAdd(1.0));
    }
    for disk in Disk::both() {
        let snapshots = disk.open(SnapshotOptions::default().compression(SnapshotCompression::Lz4));
        snapshots.write(Lsn(1), 0, &store.freeze()).unwrap();
        let report = snapshots.load_newest(&MemstoreConfig::default()).unwrap();
        assert_same(&report.memstore, &store);
    }
}

#[test]
fn custom_histogram_bounds_round_trip() {
    let mut config = MemstoreConfig::default();
    config.histogram_bounds = vec![-5.0, 0.0, 0.1, 7.5];
    let original = rich_store(50, config.clone());
    let disk = Disk::sim(9);
    let store = disk.open(SnapshotOptions::default());
    store.write(Lsn(3), 0, &original.freeze()).unwrap();
    // The loaded histograms keep their own bounds, whatever the new configuration says.
    let report = store.load_newest(&MemstoreConfig::default()).unwrap();
    assert_same(&report.memstore, &original);
}

#[test]
fn no_snapshot_gives_an_empty_store() {
    for disk in Disk::both() {
        let store = disk.open(SnapshotOptions::default());
        let report = store.load_newest(&MemstoreConfig::default()).unwrap();
        assert!(report.used.is_none() && report.rejected.is_empty() && report.series == 0);
        assert!(report.memstore.is_empty());
        assert_eq!(store.list().unwrap(), []);
        assert_eq!(store.oldest_kept_lsn().unwrap(), None);
    }
}

#[test]
fn retention_keeps_exactly_the_newest() {
    let state = rich_store(10, MemstoreConfig::default());
    for disk in Disk::both() {
        for keep in 1..=3 {
            let disk_dir = disk.dir.join(format!("keep{keep}"));
            let (store, _) = SnapshotStore::open(
                Arc::clone(&disk.fs),
                &disk_dir,
                SnapshotOptions::default().keep(keep),
            )
            .unwrap();
            for lsn in 1..=6 {
                store.write(Lsn(lsn * 10), lsn as i64, &state.freeze()).unwrap();
                let kept: Vec<u64> = store.list().unwrap().iter().map(|i| i.lsn.0).collect();
                let expected: Vec<u64> =
                    (1..=lsn).filter(|l| l + keep as u64 > lsn).map(|l| l * 10).collect();
                assert_eq!(kept, expected, "{} keep {keep}", disk.name());
            }
            assert_eq!(store.oldest_kept_lsn().unwrap(), Some(Lsn((7 - keep as u64) * 10)));
        }
    }
}

#[test]
fn retention_never_removes_the_written_snapshot_or_a_newer_one() {
    let state = rich_store(3, MemstoreConfig::default());
    for disk in Disk::both() {
        let store = disk.open(SnapshotOptions::default().keep(1));
        store.write(Lsn(50), 0, &state.freeze()).unwrap();
        // An older LSN written after a newer one: both stay (the newer is never removed,
        // nor the one just written).
        store.write(Lsn(20), 0, &state.freeze()).unwrap();
        let kept: Vec<u64> = store.list().unwrap().iter().map(|i| i.lsn.0).collect();
        assert_eq!(kept, [20, 50]);
        store.write(Lsn(60), 0, &state.freeze()).unwrap();
        let kept: Vec<u64> = store.list().unwrap().iter().map(|i| i.lsn.0).collect();
        assert_eq!(kept, [60]);
    }
}

#[test]
fn a_snapshot_of_the_same_lsn_replaces_the_old_one() {
    for disk in Disk::both() {
        let store = disk.open(SnapshotOptions::default());
        let first = rich_store(5, MemstoreConfig::default());
        let second = rich_store(8, MemstoreConfig::default());
        store.write(Lsn(7), 1, &first.freeze()).unwrap();
        // A temporary file of the same LSN in the way is replaced too.
        disk.put(&format!("{}.tmp", snap_name(7)), b"left over");
        store.write(Lsn(7), 2, &second.freeze()).unwrap();
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].created_ms, 2);
        assert_same(&store.load_newest(&MemstoreConfig::default()).unwrap().memstore, &second);
        assert!(!disk.files().iter().any(|f| f.ends_with(".tmp")));
    }
}

#[test]
fn open_removes_left_over_temporary_files_only() {
    for disk in Disk::both() {
        let store = disk.open(SnapshotOptions::default());
        store.write(Lsn(4), 0, &rich_store(3, MemstoreConfig::default()).freeze()).unwrap();
        disk.put(&format!("{}.tmp", snap_name(9)), b"torn");
        disk.put("other.tmp", b"x");
        disk.put("notes.txt", b"kept");
        let (store, removed) =
            SnapshotStore::open(Arc::clone(&disk.fs), &disk.dir, SnapshotOptions::default())
                .unwrap();
        let mut removed: Vec<String> =
            removed.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        removed.sort();
        assert_eq!(removed, ["other.tmp".to_string(), format!("{}.tmp", snap_name(9))]);
        assert_eq!(disk.files(), ["notes.txt".to_string(), snap_name(4)]);
        assert_eq!(store.list().unwrap().len(), 1);
    }
}

#[test]
fn open_creates_the_directory_durably() {
    let disk = Disk::sim(4);
    let _ = disk.open(SnapshotOptions::default());
    disk.sim.as_ref().unwrap().crash(ingestor_fs::CrashPolicy::DropUnsynced);
    assert!(disk.fs.exists(&disk.dir).unwrap(), "the new directories survive a power cut");
}

#[test]
fn invalid_options_name_the_field() {
    let disk = Disk::sim(5);
    for (options, field) in [
        (SnapshotOptions::default().keep(0), "keep"),
        (SnapshotOptions::default().chunk_series(0), "chunk_series"),
        (
            SnapshotOptions::default().compression(SnapshotCompression::Zstd { level: 1000 }),
            "compression",
        ),
    ] {
        assert!(options.validate().is_err());
        match SnapshotStore::open(Arc::clone(&disk.fs), &disk.dir, options) {
            Err(SnapshotError::InvalidOptions { field: f, reason }) => {
                assert_eq!(f, field, "{reason}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    let defaults = SnapshotOptions::default();
    assert_eq!(defaults.compression, SnapshotCompression::Zstd { level: 3 });
    assert_eq!((defaults.keep, defaults.chunk_series), (2, 4096));
    defaults.validate().unwrap();
}

#[test]
fn a_crafted_series_count_is_rejected_without_sizing_the_index_by_it() {
    // A file with no chunk whose header and trailer both claim 3 x 2^30 series, every
    // checksum right: the count is the file's word until the chunks are decoded. Sized by
    // that word, the key index would take 2^32 places (32 GiB) under the largest series
    // limit; the load must reject the file instead.
    let disk = Disk::sim(7);
    let store = disk.open(SnapshotOptions::default());
    let info = store.write(Lsn(1), 0, &Memstore::new(MemstoreConfig::default()).unwrap().freeze());
    let name = info.unwrap().path.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = disk.read(&name);
    assert_eq!(bytes.len(), 44 + 28, "a header and a trailer");
    // Written again as the snapshot of LSN 2, beside the good one of LSN 1.
    bytes[16..24].copy_from_slice(&2u64.to_le_bytes());
    let claimed = (3u64 << 30).to_le_bytes();
    bytes[24..32].copy_from_slice(&claimed);
    let header_crc = ingestor_codec::mask_crc(crc32c::crc32c(&bytes[..40]));
    bytes[40..44].copy_from_slice(&header_crc.to_le_bytes());
    let trailer = bytes.len() - 28;
    bytes[trailer + 16..trailer + 24].copy_from_slice(&claimed);
    let end = bytes.len() - 4;
    let file_crc = ingestor_codec::mask_crc(crc32c::crc32c(&bytes[..end]));
    bytes[end..].copy_from_slice(&file_crc.to_le_bytes());
    assert_eq!(name, snap_name(1));
    disk.put(&snap_name(2), &bytes);
    let mut config = MemstoreConfig::default();
    config.max_series = ingestor_memstore::MAX_SERIES_LIMIT;
    let report = store.load_newest(&config).unwrap();
    assert_eq!(report.used.map(|u| u.lsn), Some(Lsn(1)), "the older, good one");
    assert_eq!(report.memstore.len(), 0);
    let [rejected] = report.rejected.as_slice() else { panic!("{:?}", report.rejected) };
    assert!(rejected.reason.contains("the header counts 3221225472"), "{}", rejected.reason);
}

#[test]
fn a_series_limit_too_small_for_the_snapshot_is_an_error() {
    let disk = Disk::sim(6);
    let store = disk.open(SnapshotOptions::default());
    store.write(Lsn(1), 0, &rich_store(10, MemstoreConfig::default()).freeze()).unwrap();
    let mut config = MemstoreConfig::default();
    config.max_series = 3;
    match store.load_newest(&config) {
        Err(SnapshotError::Memstore(MemstoreError::SeriesLimit { limit: 3, .. })) => {}
        other => panic!("{other:?}"),
    }
    // The snapshot was not rejected for it: it stays and loads with a larger limit.
    assert_eq!(store.load_newest(&MemstoreConfig::default()).unwrap().series, 14);
}

#[test]
fn compaction_plan_follows_the_oldest_kept_snapshot() {
    assert_eq!(compaction_watermark(None), None);
    assert_eq!(compaction_watermark(Some(Lsn::ZERO)), Some(Lsn(1)));
    assert_eq!(compaction_watermark(Some(Lsn(99))), Some(Lsn(100)));
    assert_eq!(compaction_watermark(Some(Lsn(u64::MAX))), Some(Lsn(u64::MAX)));

    let disk = Disk::sim(8);
    let store = disk.open(SnapshotOptions::default().keep(2));
    let state = rich_store(2, MemstoreConfig::default());
    assert_eq!(compaction_watermark(store.oldest_kept_lsn().unwrap()), None);
    for lsn in [10, 20, 30] {
        store.write(Lsn(lsn), 0, &state.freeze()).unwrap();
    }
    // Snapshots 20 and 30 are kept: segments wholly at or below 20 may go.
    assert_eq!(compaction_watermark(store.oldest_kept_lsn().unwrap()), Some(Lsn(21)));
}

#[test]
fn files_are_listed_verified_and_read_without_changes() {
    let original = rich_store(250, MemstoreConfig::default());
    for disk in Disk::both() {
        let store = disk.open(SnapshotOptions::default().chunk_series(100).keep(5));
        let first = store.write(Lsn(10), 7, &original.freeze()).unwrap();
        let second = store.write(Lsn(20), 8, &original.freeze()).unwrap();
        disk.put("snap-00000000000000000030.snap.tmp", b"an unfinished write");
        let dir = first.path.parent().unwrap();
        let files = ingestor_snapshot::list_files(&*disk.fs, dir).unwrap();
        assert_eq!(files, vec![first.path.clone(), second.path.clone()]);
        assert!(disk.files().iter().any(|f| f.ends_with(".tmp")), "listing removes nothing");

        assert_eq!(ingestor_snapshot::verify_file(&*disk.fs, &first.path).unwrap(), first);
        let contents =
            ingestor_snapshot::read_file(&*disk.fs, &second.path, &MemstoreConfig::default())
                .unwrap();
        assert_eq!(contents.info, second);
        assert_eq!(contents.chunks.len(), 3, "250 series in chunks of 100");
        assert_eq!(contents.chunks[0].index, 0);
        assert!(contents.chunks.windows(2).all(|w| w[1].offset > w[0].offset));
        assert_eq!(contents.compression, "zstd");
        assert_same(&contents.memstore, &original);

        // Damage in the second chunk: named by offset, and the file is left as it was.
        let name = snap_name(20);
        let mut bytes = disk.read(&name);
        let at = contents.chunks[1].offset as usize + 20;
        bytes[at] ^= 0x10;
        let file = disk.fs.open(&second.path, ingestor_fs::OpenMode::ReadWrite).unwrap();
        file.write_at(&bytes[at..=at], at as u64).unwrap();
        match ingestor_snapshot::verify_file(&*disk.fs, &second.path) {
            Err(SnapshotError::Corrupt { offset, reason, .. }) => {
                assert!(offset >= contents.chunks[1].offset, "{offset}: {reason}");
                assert!(offset < contents.chunks[2].offset, "{offset}: {reason}");
                assert!(reason.contains("chunk 1"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(disk.read(&name), bytes);
        let bad = disk.path("not-a-snapshot.snap");
        assert!(matches!(
            ingestor_snapshot::verify_file(&*disk.fs, &bad),
            Err(SnapshotError::Corrupt { .. })
        ));
    }
}

/// A store on a simulated disk (of `seed`) that writes its chunks uncompressed, so that a
/// test can edit their content in place ([`edited_copy`]).
fn uncompressed_store(seed: u64) -> (Disk, SnapshotStore) {
    let mut options = SnapshotOptions::default();
    options.compression = SnapshotCompression::None;
    let disk = Disk::sim(seed);
    let store = disk.open(options);
    (disk, store)
}

/// Rewrites the one chunk of an uncompressed snapshot of LSN 1 with `edit` applied to its
/// content (its checksum and the file's made right again), as the snapshot of LSN 2.
fn edited_copy(disk: &Disk, edit: impl Fn(&mut [u8])) {
    let mut bytes = disk.read(&snap_name(1));
    let (header, chunk_header, trailer) = (44, 12, 28);
    let end = bytes.len() - trailer;
    bytes[16..24].copy_from_slice(&2u64.to_le_bytes());
    let header_crc = ingestor_codec::mask_crc(crc32c::crc32c(&bytes[..40]));
    bytes[40..44].copy_from_slice(&header_crc.to_le_bytes());
    let content = header + chunk_header;
    assert_eq!(
        u32::from_le_bytes(bytes[header + 4..header + 8].try_into().unwrap()) as usize,
        end - content,
        "one chunk"
    );
    edit(&mut bytes[content..end]);
    let crc =
        crc32c::crc32c_append(crc32c::crc32c(&bytes[header..header + 8]), &bytes[content..end]);
    bytes[header + 8..content].copy_from_slice(&ingestor_codec::mask_crc(crc).to_le_bytes());
    let last = bytes.len() - 4;
    let file_crc = ingestor_codec::mask_crc(crc32c::crc32c(&bytes[..last]));
    bytes[last..].copy_from_slice(&file_crc.to_le_bytes());
    disk.put(&snap_name(2), &bytes);
}

#[test]
fn a_repeated_or_invalid_key_rejects_the_snapshot_naming_the_series_and_its_byte() {
    for (what, from, to, expect) in [
        ("repeated", "job=bbb", "job=aaa", "series up{job=\"aaa\"} appears twice"),
        ("invalid", "job=bbb", "j-b=bbb", "invalid series key: "),
    ] {
        let (disk, store) = uncompressed_store(8);
        let memstore = Memstore::new(MemstoreConfig::default()).unwrap();
        for (i, job) in ["aaa", "bbb", "ccc"].into_iter().enumerate() {
            apply(&memstore, i as u64 + 1, &key("up", &[("job", job)]), 1, Op::GaugeSet(1.0));
        }
        store.write(Lsn(1), 0, &memstore.freeze()).unwrap();
        // The strings are stored as they are: find the second series' label and value.
        let (name, value) = from.split_once('=').unwrap();
        let (new_name, new_value) = to.split_once('=').unwrap();
        let at = std::cell::Cell::new(0);
        edited_copy(&disk, |content| {
            let find = |s: &str| content.windows(s.len()).position(|w| w == s.as_bytes()).unwrap();
            let v = find(value);
            content[v..v + value.len()].copy_from_slice(new_value.as_bytes());
            // The label name stored just before the value (length-prefixed).
            let n = v - 1 - name.len();
            assert_eq!(&content[n..n + name.len()], name.as_bytes());
            content[n..n + name.len()].copy_from_slice(new_name.as_bytes());
            at.set(n);
        });
        let report = store.load_newest(&MemstoreConfig::default()).unwrap();
        assert_eq!(report.used.map(|u| u.lsn), Some(Lsn(1)), "{what}: the older, good one");
        assert_eq!(report.memstore.len(), 3);
        let [rejected] = report.rejected.as_slice() else { panic!("{:?}", report.rejected) };
        assert!(rejected.reason.contains(expect), "{what}: {}", rejected.reason);
        assert!(rejected.reason.contains("chunk 0: "), "{what}: {}", rejected.reason);
        // The byte named is where the second series starts: after the first (which starts
        // right after the chunk's 4-byte series count), before the edited label.
        let byte: u64 =
            rejected.reason["corrupt at byte ".len()..].split(':').next().unwrap().parse().unwrap();
        let first = 44 + 12 + 4;
        assert!(byte > first && byte < (44 + 12 + at.get()) as u64, "{what}: {}", rejected.reason);
    }
}

/// Errors come in the file's order within a chunk too: a series the limit refuses before a
/// later invalid key is the configuration's refusal (the load stops), not a damaged file
/// (which would be passed over for an older snapshot).
#[test]
fn a_refusal_before_an_invalid_key_of_the_same_chunk_comes_first() {
    let (disk, store) = uncompressed_store(9);
    let memstore = Memstore::new(MemstoreConfig::default()).unwrap();
    for (i, job) in ["aaa", "bbb", "ccc"].into_iter().enumerate() {
        apply(&memstore, i as u64 + 1, &key("up", &[("job", job)]), 1, Op::GaugeSet(1.0));
    }
    store.write(Lsn(1), 0, &memstore.freeze()).unwrap();
    // The snapshot of LSN 2: the third series' label name made invalid.
    edited_copy(&disk, |content| {
        let v = content.windows(3).position(|w| w == b"ccc").unwrap();
        let n = v - 1 - 3;
        assert_eq!(&content[n..n + 3], b"job");
        content[n..n + 3].copy_from_slice(b"j-b");
    });
    // An older snapshot the limit accepts: one series.
    let one = Memstore::new(MemstoreConfig::default()).unwrap();
    apply(&one, 1, &key("up", &[("job", "aaa")]), 1, Op::GaugeSet(1.0));
    store.write(Lsn(1), 0, &one.freeze()).unwrap();
    let mut config = MemstoreConfig::default();
    config.max_series = 1;
    match store.load_newest(&config) {
        Err(SnapshotError::Memstore(MemstoreError::SeriesLimit { limit: 1, key })) => {
            assert_eq!(key, "up{job=\"bbb\"}");
        }
        Err(e) => panic!("{e}"),
        Ok(report) => panic!("loaded {:?}, rejected {:?}", report.used, report.rejected),
    }
}

/// A snapshot whose checksums are right but whose chunk content was crafted (bytes changed
/// anywhere in it: counts, lengths, kinds, varints, bounds references) never panics the
/// loader: it loads, or is rejected with an error and the older snapshot used instead.
#[test]
fn crafted_chunk_contents_with_valid_checksums_never_panic_the_loader() {
    let (disk, store) = uncompressed_store(9);
    let memstore = common::rich_store(12, MemstoreConfig::default());
    store.write(Lsn(1), 0, &memstore.freeze()).unwrap();
    let mut rng = ingestor_testkit::Rng::new(0x5eed);
    let (mut loaded, mut rejected) = (0, 0);
    for round in 0..3000 {
        let edits: Vec<(u64, u8)> = (0..1 + rng.below(4))
            .map(|_| {
                // Small values and the extremes, as well as any byte.
                let value = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    2 => rng.below(8) as u8,
                    _ => rng.below(256) as u8,
                };
                (rng.next_u64(), value)
            })
            .collect();
        let _ = disk.fs.remove_file(&disk.path(&snap_name(2)));
        edited_copy(&disk, |content| {
            for &(at, value) in &edits {
                let i = (at % content.len() as u64) as usize;
                content[i] = value;
            }
        });
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.load_newest(&MemstoreConfig::default())
        }));
        let report = match outcome {
            Ok(report) => report.unwrap_or_else(|e| panic!("round {round}, {edits:?}: {e}")),
            Err(_) => panic!("round {round}: the loader panicked on the edits {edits:?}"),
        };
        match report.used.map(|u| u.lsn) {
            Some(Lsn(2)) => loaded += 1,
            Some(Lsn(1)) => {
                assert_eq!(report.rejected.len(), 1, "round {round}: {:?}", report.rejected);
                rejected += 1;
            }
            other => panic!("round {round}: loaded {other:?}"),
        }
    }
    // Both outcomes happen: edits that keep the content valid (a value's bits) and edits
    // that break it.
    assert!(loaded > 0 && rejected > 0, "{loaded} loaded, {rejected} rejected");
}
