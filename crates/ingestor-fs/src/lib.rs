//! The file-system seam of `ingestor`: the few operations the engine does to files and
//! directories, behind one trait, with two implementations.
//!
//! Most users want the `ingestor` facade, not this crate. It exists so that the write-ahead
//! log and the snapshot writer can run unchanged on the real disk ([`StdFs`]) and on a
//! deterministic simulated disk ([`SimFs`]) that can lose every un-synced byte on a simulated
//! power cut, tear writes at sector granularity, flip bits, and fail a chosen operation.
//!
//! ```
//! use std::path::Path;
//! use ingestor_fs::{CrashPolicy, Fs, SimFs};
//!
//! let fs = SimFs::new(7);
//! fs.create_dir_all(Path::new("/data"))?;
//! fs.sync_dir(Path::new("/"))?;
//! let file = fs.create(Path::new("/data/a"))?;
//! file.write_at(b"durable", 0)?;
//! file.sync_data()?;
//! fs.sync_dir(Path::new("/data"))?;
//! file.write_at(b" and lost", 7)?; // never synced
//!
//! fs.crash(CrashPolicy::DropUnsynced); // a power cut
//! assert_eq!(fs.read_file(Path::new("/data/a"))?, b"durable");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Guarantees
//!
//! - [`StdFs`] maps each call to one system call (or a short, documented sequence) on
//!   `std::fs`; `sync_data` is `fdatasync`, `sync_all` is `fsync`, `sync_dir` fsyncs the
//!   directory itself, `lock_dir` takes an exclusive advisory lock (`flock`) on a lock file.
//! - [`SimFs`] follows the disk model of `docs/format.md` ("Assumptions about the storage
//!   medium"): file data and directory entries become durable separately; only a directory
//!   sync makes a create, rename or remove durable; nothing durable is ever changed by a
//!   crash; the same seed and the same calls give the same disk image, byte for byte.
//! - Errors are plain [`std::io::Error`]s; the layers above add the operation and the path.
//!
//! The assumptions this seam makes about real disks are written down in `docs/format.md`
//! ("Assumptions about the storage medium").
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

mod sim;
mod std_fs;

pub use sim::{CrashPolicy, Fault, FaultKind, OpKind, SimFs, SimStats};
pub use std_fs::{LOCK_FILE_NAME, StdFs};

/// A file-system operation that failed: which, on what path, and the error.
#[derive(Debug)]
pub struct OpError {
    /// The operation, for example `create_dir`.
    pub op: &'static str,
    /// The path it was applied to.
    pub path: PathBuf,
    /// What the file system said.
    pub source: io::Error,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

impl std::error::Error for OpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Creates `dir` and its missing ancestors so that they survive a power cut: each new
/// directory is created, then its parent synced (a directory's entry is data of its
/// parent). Directories that exist are left alone.
///
/// # Errors
/// The first failed operation (`stat`, `create_dir` or `sync_dir`), with its path.
pub fn create_dir_durably(fs: &dyn Fs, dir: &Path) -> Result<(), OpError> {
    fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OpError + 'a {
        move |source| OpError { op, path: path.to_path_buf(), source }
    }
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty()) {
        if fs.exists(path).map_err(err("stat", path))? {
            break;
        }
        missing.push(path);
        at = path.parent();
    }
    for path in missing.into_iter().rev() {
        fs.create_dir_all(path).map_err(err("create_dir", path))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent).map_err(err("sync_dir", parent))?;
        }
    }
    Ok(())
}

/// Linux's `EIO` ("Input/output error"), the error injected for failed reads, writes and syncs.
pub const EIO: i32 = 5;
/// Linux's `ENOSPC` ("No space left on device"), the error injected for a full disk.
pub const ENOSPC: i32 = 28;

/// How [`Fs::open`] opens an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Reads only; writes, truncation and allocation fail.
    Read,
    /// Reads and writes.
    ReadWrite,
}

/// What a directory entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// One entry of [`Fs::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirEntry {
    /// The entry's name within its directory (not a path).
    pub name: String,
    /// Whether it is a file or a directory.
    pub kind: EntryKind,
}

/// The file-system operations the engine performs, and nothing more.
///
/// Paths are absolute or relative to the process's working directory for [`StdFs`], and
/// absolute (rooted at `/`) for [`SimFs`]. Implementations are `Send + Sync`; the engine
/// shares one behind an `Arc<dyn Fs>`.
pub trait Fs: Send + Sync + fmt::Debug {
    /// Creates a directory and every missing parent. Durable only once the parent
    /// directory of each created directory has been synced with [`Fs::sync_dir`].
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Creates a new, empty file for reading and writing; fails with
    /// [`io::ErrorKind::AlreadyExists`] if the name exists. The new name is durable only once
    /// its directory is synced.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;

    /// Opens an existing file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>>;

    /// Lists a directory, sorted by name.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;

    /// Renames a file within the same directory, atomically replacing any file at `to`.
    /// Durable only once the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file. Durable only once its directory is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes every create, rename and remove done in this directory so far durable (`fsync`
    /// of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Takes an exclusive lock on a directory, held until the returned guard is dropped (or
    /// the process dies). A second attempt, from this process or another, fails with
    /// [`io::ErrorKind::WouldBlock`].
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn FsLock>>;

    /// Announces that the engine has reached the named step of one of its protocols (for
    /// example `wal.append.after_write`). The real file system ignores it; the simulated one
    /// counts it and can turn a chosen announcement into a simulated crash, after which every
    /// operation fails until [`SimFs::crash`] builds the post-crash image.
    fn crash_point(&self, name: &'static str) -> io::Result<()>;

    /// The space of the file system holding `path`: `(available to this user, total)` bytes,
    /// or `None` where the file system does not say (the default; the simulated disk has no
    /// size). What a free-space floor is checked against.
    fn space(&self, path: &Path) -> io::Result<Option<(u64, u64)>> {
        let _ = path;
        Ok(None)
    }

    /// Reads a whole file (a convenience over [`Fs::open`] and [`FsFile::read_at`]).
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path, OpenMode::Read)?;
        let len = usize::try_from(file.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::FileTooLarge, "file too large to read"))?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// An open file. All methods take `&self`: positional reads and writes need no cursor, so
/// one handle may be shared by a writer and readers.
pub trait FsFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at or past the
    /// end of the file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `buf` at `offset`, extending the file if needed. On error, any prefix of
    /// `buf` may have been written (a short write). Written bytes reach the operating system
    /// (they survive a process crash) but are durable only after [`FsFile::sync_data`].
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Truncates or extends (with zeros) the file to `len` bytes. Durable after a sync.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Preallocates the file to at least `len` bytes of zeros, so that later writes inside
    /// that length do not change the file's size (and a data sync need not persist it).
    /// Never shrinks the file. Durable after [`FsFile::sync_all`].
    fn allocate(&self, len: u64) -> io::Result<()>;

    /// Makes the file's written bytes and its length durable (`fdatasync`). Does not make the
    /// file's name durable: that takes [`Fs::sync_dir`] of its directory.
    fn sync_data(&self) -> io::Result<()>;

    /// Like [`FsFile::sync_data`], plus the file's other metadata (`fsync`).
    fn sync_all(&self) -> io::Result<()>;

    /// Asks the operating system to start writing `len` bytes at `offset` back to the disk
    /// now, without waiting for it and without making anything durable: a later
    /// [`FsFile::sync_data`] then has less to write. A hint: the default does nothing, and
    /// errors are the caller's to ignore.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with
    /// [`io::ErrorKind::UnexpectedEof`].
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file ended at byte {offset} before the read was complete"),
                    ));
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// An exclusive directory lock; dropping it releases the lock.
pub trait FsLock: Send + Sync + fmt::Debug {
    /// The directory this lock holds.
    fn path(&self) -> &Path;
}
