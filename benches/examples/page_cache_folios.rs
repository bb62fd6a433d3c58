//! How the shape of the writes that filled the page cache sets the speed of reading it back:
//! the reason the log's warm read (W5) and its `Os` appends (W2) stay behind the bench's
//! ideal loop. `cargo run --release -p ingestor-benches --example page_cache_folios [DIR]`
//! writes 117 MiB three ways into files under DIR (default: the temp dir), then reads each
//! back warm four times in 1 MiB reads, and prints the times, for three rounds:
//!
//! - `log-like`: a file preallocated with `fallocate`, written as the log writes under `Os`
//!   a batch of 1,000 records of 100 B: 122,000-byte writes from offset 24 on;
//! - `ideal-like`: a new file written in 1 MiB writes at 1 MiB offsets, as the ideal loop's
//!   `BufWriter`;
//! - `log-like, read first`: as `log-like`, after the whole preallocated file was read once
//!   (the kernel fills the page cache with large pages of zeros, which the writes then fill);
//!   the time of that first read is printed apart.
//!
//! The kernel puts written bytes in page-cache folios no larger than the write and aligned to
//! their size: 122,000-byte writes at unaligned offsets leave folios of 4 to 64 KiB, 1 MiB
//! aligned writes leave 1 MiB folios, and reading (and writing) many small folios costs more
//! per byte than reading few large ones.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

const TOTAL: u64 = 117 << 20;
const SEGMENT: u64 = 128 << 20;
const MIB: usize = 1 << 20;

/// Milliseconds since `t`.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn fresh(path: &Path) -> File {
    let _ = std::fs::remove_file(path);
    OpenOptions::new().create_new(true).read(true).write(true).open(path).unwrap()
}

/// Writes `log-like` (optionally read first); returns (first read ms, write ms).
fn log_like(path: &Path, read_first: bool) -> (f64, f64) {
    let file = fresh(path);
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, SEGMENT).unwrap();
    file.sync_all().unwrap();
    let mut first = 0.0;
    if read_first {
        let t = Instant::now();
        let mut buf = vec![0u8; MIB];
        for i in 0..SEGMENT / MIB as u64 {
            file.read_exact_at(&mut buf, i * MIB as u64).unwrap();
        }
        first = ms(t);
    }
    let batch = vec![7u8; 122_000];
    let t = Instant::now();
    let mut at = 24u64;
    while at + batch.len() as u64 <= TOTAL {
        file.write_all_at(&batch, at).unwrap();
        at += batch.len() as u64;
    }
    (first, ms(t))
}

/// Writes `ideal-like`; returns the write's ms.
fn ideal_like(path: &Path) -> f64 {
    let file = fresh(path);
    let chunk = vec![7u8; MIB];
    let t = Instant::now();
    for i in 0..TOTAL / MIB as u64 {
        file.write_all_at(&chunk, i * MIB as u64).unwrap();
    }
    ms(t)
}

/// Reads the first `TOTAL` bytes in 1 MiB reads; returns ms.
fn read_back(path: &Path) -> f64 {
    let file = File::open(path).unwrap();
    let mut buf = vec![0u8; MIB];
    let t = Instant::now();
    for i in 0..TOTAL / MIB as u64 {
        file.read_exact_at(&mut buf, i * MIB as u64).unwrap();
    }
    ms(t)
}

fn main() {
    let base = std::env::args().nth(1).map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).unwrap();
    for round in 1..=3 {
        for kind in ["log-like", "ideal-like", "log-like, read first"] {
            let path = dir.path().join(kind.replace([',', ' '], "-"));
            let (first, write) = match kind {
                "ideal-like" => (0.0, ideal_like(&path)),
                _ => log_like(&path, kind.ends_with("first")),
            };
            let reads: Vec<String> = (0..4).map(|_| format!("{:.1}", read_back(&path))).collect();
            let first =
                if first > 0.0 { format!(" (first read {first:.1} ms)") } else { String::new() };
            println!(
                "round {round}, {kind:<21}: write {write:.1} ms{first}, warm reads {} ms",
                reads.join(" ")
            );
            std::fs::remove_file(&path).unwrap();
        }
    }
}
