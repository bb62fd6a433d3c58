//! The real file system, over `std::fs`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{DirEntry, EntryKind, Fs, FsFile, FsLock, OpenMode};

/// The name of the lock file [`StdFs::lock_dir`] creates inside the locked directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The real file system: each call is one system call on `std::fs` (or, for `allocate`,
/// `fallocate(2)` through `rustix`).
///
/// Crash points are ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl StdFs {
    /// The real file system.
    #[must_use]
    pub fn new() -> Self {
        StdFs
    }
}

fn with_path(err: io::Error, op: &str, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{op} {}: {err}", path.display()))
}

impl Fs for StdFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Box::new(StdFile { file, writable: true }))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let writable = mode == OpenMode::ReadWrite;
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        Ok(Box::new(StdFile { file, writable }))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let kind = if entry.file_type()?.is_dir() { EntryKind::Dir } else { EntryKind::File };
            let name = entry.file_name().into_string().map_err(|name| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a file name in {} is not UTF-8: {name:?}", path.display()),
                )
            })?;
            entries.push(DirEntry { name, kind });
        }
        entries.sort();
        Ok(entries)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        let lock_path = path.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| with_path(e, "open lock file", &lock_path))?;
        // A lock just released can still be held for a moment: a process being spawned
        // (fork, then exec) holds a copy of every open file until its exec, so the holder's
        // close does not release it at once. A few short retries tell that from a real
        // holder.
        let mut wait = std::time::Duration::from_millis(2);
        let mut waited = std::time::Duration::ZERO;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Box::new(StdLock { _file: file, path: path.to_path_buf() })),
                Err(TryLockError::WouldBlock) if waited < std::time::Duration::from_millis(250) => {
                    std::thread::sleep(wait);
                    waited += wait;
                    wait = (wait * 2).min(std::time::Duration::from_millis(64));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("{} is locked by another process or handle", path.display()),
                    ));
                }
                Err(TryLockError::Error(e)) => return Err(with_path(e, "lock", &lock_path)),
            }
        }
    }

    fn crash_point(&self, _name: &'static str) -> io::Result<()> {
        Ok(())
    }

    fn space(&self, path: &Path) -> io::Result<Option<(u64, u64)>> {
        let s = rustix::fs::statvfs(path).map_err(io::Error::from)?;
        let available = s.f_bavail.saturating_mul(s.f_frsize);
        let total = s.f_blocks.saturating_mul(s.f_frsize);
        Ok(Some((available, total)))
    }
}

#[derive(Debug)]
struct StdFile {
    file: File,
    writable: bool,
}

impl StdFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "file was opened read-only"))
        }
    }
}

impl FsFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        self.file.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.file.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        if self.len()? >= len {
            return Ok(());
        }
        // fallocate(2) with mode 0 reserves the blocks and extends the size; the bytes read
        // as zeros. File systems without it (tmpfs on old kernels) fall back to set_len.
        match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) => self.file.set_len(len),
            Err(e) => Err(e.into()),
        }
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        // POSIX_FADV_DONTNEED starts write-back of the range's dirty pages (without waiting
        // for it) and drops the pages already clean: the log's appender never reads back
        // what it wrote, and `sync_file_range` is not reachable without unsafe code.
        let Some(len) = std::num::NonZeroU64::new(len) else { return Ok(()) };
        rustix::fs::fadvise(&self.file, offset, Some(len), rustix::fs::Advice::DontNeed)
            .map_err(io::Error::from)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

#[derive(Debug)]
struct StdLock {
    // Held for its flock; closing the descriptor on drop releases it.
    _file: File,
    path: PathBuf,
}

impl FsLock for StdLock {
    fn path(&self) -> &Path {
        &self.path
    }
}
