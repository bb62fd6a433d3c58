//! Golden bytes and fixtures: a small snapshot pinned as a hex dump (insta), and version-1
//! snapshot files, valid and deliberately corrupt, checked in under `tests/fixtures/v1/`.
//! The valid ones must load, to the same state, with every later version.
//!
//! The fixtures were written by `write_fixtures` (run with `INGESTOR_WRITE_FIXTURES=1`);
//! never regenerate them for a released version: they are the proof that old files load.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Disk, apply, assert_same, golden_store, hexdump, key, snap_name};
use ingestor_codec::{Lsn, Op};
use ingestor_fs::SimFs;
use ingestor_memstore::{Memstore, MemstoreConfig};
use ingestor_snapshot::{SnapshotCompression, SnapshotOptions, SnapshotStore};

fn write_bytes(store: &Memstore, lsn: u64, created_ms: i64, options: SnapshotOptions) -> Vec<u8> {
    let disk = Disk::sim(1);
    let snapshots = disk.open(options);
    snapshots.write(Lsn(lsn), created_ms, &store.freeze()).unwrap();
    disk.read(&snap_name(lsn))
}

#[test]
fn golden_plain_snapshot() {
    let options = SnapshotOptions::default().compression(SnapshotCompression::None);
    let bytes = write_bytes(&golden_store(), 5, 1_700_000_000_000, options);
    insta::assert_snapshot!("snapshot_plain", hexdump(&bytes));
}

/// The content of the version-1 fixtures. Never change it: the fixtures hold it.
fn fixture_store(lsn: u64) -> Memstore {
    let store = Memstore::new(MemstoreConfig::default()).unwrap();
    for i in 0..(lsn as i64) {
        let host = format!("web-{}", i % 5);
        let code = ["200", "404", "500"][(i % 3) as usize];
        let ts = 1_700_000_000_000 + i * 250;
        apply(
            &store,
            1,
            &key("http_requests", &[("host", &host), ("code", code)]),
            ts,
            Op::CounterAdd(i as f64),
        );
        apply(
            &store,
            1,
            &key("queue_depth", &[("host", &host), ("q", "ünï")]),
            ts,
            Op::GaugeSet(i as f64 / 4.0),
        );
        apply(
            &store,
            1,
            &key("latency_seconds", &[("host", &host)]),
            ts,
            Op::HistogramObserve(i as f64 * 0.01),
        );
        if i % 7 == 6 {
            apply(
                &store,
                1,
                &key("http_requests", &[("host", &host), ("code", code)]),
                ts,
                Op::CounterSet(0.0),
            );
        }
    }
    store
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()))
}

/// The offset of chunk `n` of a snapshot (walking the chunk headers).
fn chunk_offset(bytes: &[u8], n: usize) -> usize {
    let mut at = 44;
    for _ in 0..n {
        let stored = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 12 + stored;
    }
    at
}

/// The corrupt fixtures: name, how they were made from `snap_42.snap`, and the start of the
/// reason a load must give.
fn corruptions(valid: &[u8]) -> Vec<(&'static str, Vec<u8>, String)> {
    let len = valid.len();
    let chunk1 = chunk_offset(valid, 1);
    let flip = |at: usize, mask: u8| {
        let mut b = valid.to_vec();
        b[at] ^= mask;
        b
    };
    vec![
        (
            "snap_42_chunk_bitflip.snap",
            flip(chunk1 + 12 + 5, 0x10),
            format!("corrupt at byte {}: chunk 1: chunk checksum mismatch", chunk1 + 8),
        ),
        (
            "snap_42_truncated.snap",
            valid[..len / 2].to_vec(),
            format!("corrupt at byte {}: no trailer", len / 2 - 28),
        ),
        (
            "snap_42_header_crc.snap",
            flip(33, 0x01),
            "corrupt at byte 40: header checksum mismatch".into(),
        ),
        (
            "snap_42_file_crc.snap",
            flip(len - 2, 0x80),
            format!("corrupt at byte {}: whole-file checksum mismatch", len - 4),
        ),
    ]
}

/// Writes the fixtures; runs only with `INGESTOR_WRITE_FIXTURES=1`.
#[test]
fn write_fixtures() {
    if std::env::var_os("INGESTOR_WRITE_FIXTURES").is_none() {
        return;
    }
    // Fixtures are history: version 1's were written by a version-1 writer, never again.
    assert!(
        !fixture_dir().join("snap_42.snap").exists(),
        "the version-1 fixtures exist; a newer writer must not replace them"
    );
    std::fs::create_dir_all(fixture_dir()).unwrap();
    let zstd = SnapshotOptions::default().chunk_series(8);
    let valid = write_bytes(&fixture_store(42), 42, 1_700_000_042_000, zstd);
    std::fs::write(fixture_dir().join("snap_42.snap"), &valid).unwrap();
    let lz4 = SnapshotOptions::default().compression(SnapshotCompression::Lz4);
    let older = write_bytes(&fixture_store(7), 7, 1_700_000_007_000, lz4);
    std::fs::write(fixture_dir().join("snap_7.snap"), older).unwrap();
    for (name, bytes, _) in corruptions(&valid) {
        std::fs::write(fixture_dir().join(name), bytes).unwrap();
    }
}

/// A disk whose snapshot directory holds the given fixtures under the given LSNs.
fn disk_with(files: &[(u64, &str)]) -> (SimFs, SnapshotStore) {
    let sim = SimFs::new(42);
    let dir = Path::new("/db/snapshots");
    let (store, _) =
        SnapshotStore::open(Arc::new(sim.clone()), dir, SnapshotOptions::default()).unwrap();
    for (lsn, name) in files {
        let bytes = fixture(name);
        let file = ingestor_fs::Fs::create(&sim, &dir.join(snap_name(*lsn))).unwrap();
        file.write_at(&bytes, 0).unwrap();
    }
    (sim, store)
}

#[test]
fn version_1_fixtures_still_load() {
    let (_sim, store) = disk_with(&[(42, "snap_42.snap")]);
    let report = store.load_newest(&MemstoreConfig::default()).unwrap();
    let used = report.used.unwrap();
    assert_eq!((used.lsn, used.created_ms), (Lsn(42), 1_700_000_042_000));
    assert!(report.rejected.is_empty());
    assert_same(&report.memstore, &fixture_store(42));

    let (_sim, store) = disk_with(&[(7, "snap_7.snap")]);
    let report = store.load_newest(&MemstoreConfig::default()).unwrap();
    assert_eq!(report.used.unwrap().lsn, Lsn(7));
    assert_same(&report.memstore, &fixture_store(7));
}

/// The golden snapshot as version 2 wrote it (`tests/fixtures/v2/snap_5.snap`, the hex dump
/// `snapshot_plain` pinned until version 3, whose writer changed only the header's version
/// and with it the two checksums): it must load to the same state.
#[test]
fn the_version_2_golden_snapshot_still_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2/snap_5.snap");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 2, "a version-2 file");
    let sim = SimFs::new(42);
    let dir = Path::new("/db/snapshots");
    let (store, _) =
        SnapshotStore::open(Arc::new(sim.clone()), dir, SnapshotOptions::default()).unwrap();
    let file = ingestor_fs::Fs::create(&sim, &dir.join(snap_name(5))).unwrap();
    file.write_at(&bytes, 0).unwrap();
    let report = store.load_newest(&MemstoreConfig::default()).unwrap();
    let used = report.used.unwrap();
    assert_eq!((used.lsn, used.created_ms), (Lsn(5), 1_700_000_000_000));
    assert!(report.rejected.is_empty());
    assert_same(&report.memstore, &golden_store());
}

#[test]
fn the_fixtures_are_what_their_names_say() {
    let valid = fixture("snap_42.snap");
    assert!(chunk_offset(&valid, 2) < valid.len() - 28, "the fixture has several chunks");
    for (name, bytes, _) in corruptions(&valid) {
        assert_eq!(fixture(name), bytes, "{name}");
    }
}

#[test]
fn corrupt_fixtures_are_rejected_naming_the_offset_and_loading_falls_back() {
    let valid = fixture("snap_42.snap");
    for (name, _, reason) in corruptions(&valid) {
        // Alone: rejected, and the store is empty.
        let (_sim, store) = disk_with(&[(42, name)]);
        let report = store.load_newest(&MemstoreConfig::default()).unwrap();
        assert!(report.used.is_none() && report.memstore.is_empty(), "{name}");
        assert_eq!(report.rejected.len(), 1, "{name}");
        let rejected = &report.rejected[0];
        assert_eq!(rejected.path, Path::new("/db/snapshots").join(snap_name(42)));
        assert!(
            rejected.reason.starts_with(&reason),
            "{name}: {} (expected {reason})",
            rejected.reason
        );
        // The damaged file is kept.
        assert_eq!(store.load_newest(&MemstoreConfig::default()).unwrap().rejected.len(), 1);

        // With a valid older one: that one is loaded.
        let (_sim, store) = disk_with(&[(7, "snap_7.snap"), (42, name)]);
        let report = store.load_newest(&MemstoreConfig::default()).unwrap();
        assert_eq!(report.used.unwrap().lsn, Lsn(7), "{name}");
        assert_eq!(report.rejected.len(), 1);
        assert_same(&report.memstore, &fixture_store(7));
        // Listing skips only a damaged header (the rest is not read).
        let listed: Vec<u64> = store.list().unwrap().iter().map(|i| i.lsn.0).collect();
        let expected: &[u64] = if name.contains("header") { &[7] } else { &[7, 42] };
        assert_eq!(listed, expected, "{name}");
    }
}
