//! Test bodies run on both file systems: the real one in a temporary directory, and the
//! simulated disk.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::Arc;

use ingestor_fs::{Fs, SimFs, StdFs};
use ingestor_testkit::Rng;
use ingestor_wal::{Lsn, Wal, WalOptions};

/// A file system and a log directory on it.
pub struct Disk {
    pub fs: Arc<dyn Fs>,
    pub dir: PathBuf,
    pub sim: Option<SimFs>,
    _tmp: Option<tempfile::TempDir>,
}

impl Disk {
    pub fn std() -> Disk {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        Disk { fs: Arc::new(StdFs::new()), dir, sim: None, _tmp: Some(tmp) }
    }

    pub fn sim(seed: u64) -> Disk {
        let sim = SimFs::new(seed);
        Disk {
            fs: Arc::new(sim.clone()),
            dir: PathBuf::from("/data/wal"),
            sim: Some(sim),
            _tmp: None,
        }
    }

    /// Another log directory on the same disk.
    pub fn sibling(&self, name: &str) -> Disk {
        Disk {
            fs: Arc::clone(&self.fs),
            dir: self.dir.with_file_name(name),
            sim: self.sim.clone(),
            _tmp: None,
        }
    }

    /// Both kinds, for tests whose bodies must hold on each.
    pub fn both() -> [Disk; 2] {
        [Disk::std(), Disk::sim(1)]
    }

    pub fn open(&self, options: WalOptions) -> Wal {
        Wal::open(Arc::clone(&self.fs), &self.dir, options).unwrap().0
    }

    /// Every record of the log from LSN 1 (or the first kept), by replay at open.
    pub fn replay(&self, options: WalOptions) -> (Wal, Vec<(u64, u8, Vec<u8>)>) {
        let mut seen = Vec::new();
        let (wal, _) = Wal::open_and_replay(
            Arc::clone(&self.fs),
            &self.dir,
            options,
            Lsn::ZERO,
            |lsn, ty, p| {
                seen.push((lsn.0, ty, p.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        (wal, seen)
    }

    pub fn segment_files(&self) -> Vec<String> {
        self.fs
            .read_dir(&self.dir)
            .unwrap()
            .into_iter()
            .filter(|e| e.name.ends_with(".seg"))
            .map(|e| e.name)
            .collect()
    }
}

/// A payload that says which record it is, `len` bytes long.
pub fn payload(n: u64, len: usize) -> Vec<u8> {
    let mut out = format!("record-{n}-").into_bytes();
    let mut rng = Rng::new(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    while out.len() < len {
        out.push(rng.next_u64() as u8);
    }
    out.truncate(len.max(1));
    out
}
