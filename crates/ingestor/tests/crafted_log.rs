//! A log whose records were crafted (payload bytes changed, each frame's checksum made right
//! again) never panics an open: replay applies the records or refuses the first that does
//! not decode or apply, with its LSN.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::Workload;
use ingestor::{Config, FinalSnapshot, Fs, Ingestor, OpenMode, SimFs, SyncPolicy};
use ingestor_codec::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, mask_crc};
use ingestor_testkit::Rng;

fn config() -> Config {
    Config::default()
        .sync_policy(SyncPolicy::Os)
        // Small segments, so that a round copies little.
        .segment_bytes_max(64 << 10)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never)
}

/// A directory holding one segment of a few dozen batches (series definitions among them):
/// the simulated disk and the segment's path.
fn logged() -> (SimFs, PathBuf) {
    let sim = SimFs::new(3);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let (db, _) =
        Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), config(), &mut |_| {}).unwrap();
    let mut workload = Workload::new(7, 24);
    for i in 0..40 {
        db.ingest(&workload.batch(1_700_000_000_000 + i * 10)).unwrap();
    }
    db.close().unwrap();
    let wal = Path::new("/data").join(ingestor::WAL_DIR);
    let segments: Vec<PathBuf> = sim
        .files()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with(&wal) && p.extension().is_some_and(|e| e == "seg"))
        .collect();
    let [segment] = segments.as_slice() else { panic!("one segment: {segments:?}") };
    (sim, segment.clone())
}

/// The (offset, length) of every frame of a segment, read up to the first zero header.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while at + FRAME_HEADER_LEN <= bytes.len() && bytes[at..at + 8] != [0; 8] {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at, FRAME_HEADER_LEN + len));
        at += FRAME_HEADER_LEN + len;
    }
    out
}

#[test]
fn crafted_records_with_valid_checksums_never_panic_an_open() {
    let (sim, segment) = logged();
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    let original = fs.read_file(&segment).unwrap();
    let frames = frames(&original);
    assert!(frames.len() > 40, "{} frames", frames.len());
    let mut rng = Rng::new(0x5eed);
    let (mut opened, mut refused) = (0, 0);
    for round in 0..400 {
        // A fresh copy of the directory each round: an open that succeeds changes it.
        let disk = SimFs::new(round);
        let copy: Arc<dyn Fs> = Arc::new(disk.clone());
        for (path, _) in sim.files() {
            copy.create_dir_all(path.parent().unwrap()).unwrap();
            let file = copy.create(&path).unwrap();
            file.write_at(&fs.read_file(&path).unwrap(), 0).unwrap();
        }
        let mut bytes = original.clone();
        let (at, len) = frames[rng.index(frames.len())];
        let payload = at + FRAME_HEADER_LEN..at + len;
        let edits = 1 + rng.below(4);
        for _ in 0..edits {
            let i = payload.start + rng.index(payload.len());
            bytes[i] = match rng.below(4) {
                0 => 0,
                1 => 0xff,
                2 => rng.below(8) as u8,
                _ => rng.below(256) as u8,
            };
        }
        let crc = mask_crc(ingestor_codec::crc::crc32c(&bytes[at + 4..at + len]));
        bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        copy.open(&segment, OpenMode::ReadWrite).unwrap().write_at(&bytes, 0).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Ingestor::open_with(Arc::clone(&copy), Path::new("/data"), config(), &mut |_| {})
        }));
        match outcome {
            Ok(Ok((db, _))) => {
                opened += 1;
                db.close().unwrap();
            }
            Ok(Err(e)) => {
                refused += 1;
                assert!(e.to_string().contains("LSN"), "round {round}: {e}");
            }
            Err(_) => panic!("round {round}: open panicked on the frame at byte {at}"),
        }
    }
    // Edits that keep a record valid (a value's bits) and edits that break it both occur.
    assert!(opened > 0 && refused > 0, "{opened} opened, {refused} refused");
}
