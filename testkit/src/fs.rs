//! A file-system wrapper for tests (feature `fs`): every operation goes through to the
//! wrapped [`Fs`], and each crash-point announcement first reaches a [`Hook`] of the test's,
//! which can count it, record it, park the thread, kill the process or fail it. The hook
//! also sees file and directory syncs (which it may answer itself: a broken disk) and
//! write-back hints (where it may hold the thread that gives them).
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use ingestor_fs::{Fs, SimFs};
//! use ingestor_testkit::fs::{Hook, HookFs};
//!
//! #[derive(Debug, Default)]
//! struct Count(AtomicU64);
//!
//! impl Hook for Count {
//!     fn crash_point(&self, _name: &'static str) -> std::io::Result<()> {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         Ok(())
//!     }
//! }
//!
//! let fs = Arc::new(HookFs::new(Arc::new(SimFs::new(1)), Count::default()));
//! fs.crash_point("test.step").unwrap();
//! assert_eq!(fs.0.load(Ordering::Relaxed), 1); // the hook, through `Deref`
//! ```

use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ingestor_fs::{DirEntry, Fs, FsFile, FsLock, OpenMode};

/// What a test does when the engine announces a crash point, syncs or hints.
pub trait Hook: Send + Sync + fmt::Debug {
    /// Called at each announcement, before the wrapped file system hears of it. An error
    /// is returned to the engine as the announcement's, without the wrapped file system
    /// hearing of it.
    fn crash_point(&self, name: &'static str) -> io::Result<()> {
        let _ = name;
        Ok(())
    }

    /// Called before a file's `sync_data` or `sync_all` (of the file opened or created at
    /// `path`): `Some(outcome)` is the call's outcome, without the wrapped file hearing of
    /// it; `None` (the default) passes it on.
    fn file_sync(&self, path: &Path) -> Option<io::Result<()>> {
        let _ = path;
        None
    }

    /// Called before [`Fs::sync_dir`], as [`Hook::file_sync`].
    fn dir_sync(&self, path: &Path) -> Option<io::Result<()>> {
        let _ = path;
        None
    }

    /// Called before a file's write-back hint ([`FsFile::start_writeback`]), which then goes
    /// on to the wrapped file; it may block, to hold the thread that gives hints.
    fn start_writeback(&self, path: &Path) {
        let _ = path;
    }

    /// Called after a file was opened (`created`: created or emptied) at `path`, with the
    /// number its handle carries in the calls below (unique within this file system).
    fn opened(&self, path: &Path, handle: u64, created: bool) {
        let _ = (path, handle, created);
    }

    /// Called after a write of `len` bytes at `offset` through handle `handle` succeeded.
    fn wrote(&self, handle: u64, offset: u64, len: u64) {
        let _ = (handle, offset, len);
    }

    /// Called before a sync through handle `handle` goes on to the wrapped file (after
    /// [`Hook::file_sync`] passed it on).
    fn sync_starts(&self, handle: u64) {
        let _ = handle;
    }

    /// Called after that sync succeeded, with how long it took.
    fn file_synced(&self, handle: u64, took: std::time::Duration) {
        let _ = (handle, took);
    }

    /// Called after a rename succeeded.
    fn renamed(&self, from: &Path, to: &Path) {
        let _ = (from, to);
    }

    /// Called after a file's removal succeeded.
    fn removed(&self, path: &Path) {
        let _ = path;
    }
}

/// A file system passing every operation to `inner`, and each crash-point announcement to
/// its hook first. It reports no space ([`Fs::space`]'s default, `None`), so that a test
/// never meets a free-space floor of the real disk it runs on. Dereferences to the hook, so
/// that a test reads the hook's state through the file system it shares with the engine.
#[derive(Debug)]
pub struct HookFs<H> {
    inner: Arc<dyn Fs>,
    hook: Arc<H>,
    /// The number of the next file handle.
    handles: std::sync::atomic::AtomicU64,
}

impl<H: Hook> HookFs<H> {
    /// Wraps `inner`, announcing crash points to `hook`.
    pub fn new(inner: Arc<dyn Fs>, hook: H) -> HookFs<H> {
        HookFs { inner, hook: Arc::new(hook), handles: std::sync::atomic::AtomicU64::new(0) }
    }

    /// The wrapped file system.
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn Fs> {
        &self.inner
    }
}

impl<H> Deref for HookFs<H> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.hook
    }
}

impl<H: Hook + 'static> HookFs<H> {
    fn file(&self, inner: Box<dyn FsFile>, path: &Path, created: bool) -> Box<dyn FsFile> {
        let handle = self.handles.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.hook.opened(path, handle, created);
        Box::new(HookFile { inner, hook: Arc::clone(&self.hook), path: path.to_path_buf(), handle })
    }
}

impl<H: Hook + 'static> Fs for HookFs<H> {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(self.file(self.inner.create(path)?, path, true))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        Ok(self.file(self.inner.open(path, mode)?, path, false))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.read_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)?;
        self.hook.renamed(from, to);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)?;
        self.hook.removed(path);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.hook.dir_sync(path).unwrap_or_else(|| self.inner.sync_dir(path))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }

    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        self.inner.lock_dir(path)
    }

    fn crash_point(&self, name: &'static str) -> io::Result<()> {
        self.hook.crash_point(name)?;
        self.inner.crash_point(name)
    }
}

/// A file of a [`HookFs`]: every call goes through, syncs and hints by way of the hook.
#[derive(Debug)]
struct HookFile<H> {
    inner: Box<dyn FsFile>,
    hook: Arc<H>,
    path: PathBuf,
    /// Its number in the hook's calls.
    handle: u64,
}

impl<H: Hook> HookFile<H> {
    /// A sync: answered by the hook, or passed on and then told to the hook.
    fn sync_with(&self, sync: impl FnOnce(&dyn FsFile) -> io::Result<()>) -> io::Result<()> {
        if let Some(outcome) = self.hook.file_sync(&self.path) {
            return outcome;
        }
        self.hook.sync_starts(self.handle);
        let started = std::time::Instant::now();
        sync(&*self.inner)?;
        self.hook.file_synced(self.handle, started.elapsed());
        Ok(())
    }
}

impl<H: Hook> FsFile for HookFile<H> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)?;
        self.hook.wrote(self.handle, offset, buf.len() as u64);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync_with(|f| f.sync_data())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_with(|f| f.sync_all())
    }

    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        self.hook.start_writeback(&self.path);
        self.inner.start_writeback(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ingestor_fs::SimFs;

    use super::*;

    #[derive(Debug, Default)]
    struct Refuse(Mutex<Vec<&'static str>>);

    impl Hook for Refuse {
        fn crash_point(&self, name: &'static str) -> io::Result<()> {
            self.0.lock().unwrap().push(name);
            if name == "no" { Err(io::Error::other("refused")) } else { Ok(()) }
        }
    }

    #[test]
    fn operations_go_through_and_the_hook_hears_each_announcement_first() {
        let sim = SimFs::new(1);
        sim.arm_crash_point("b", 1);
        let fs = HookFs::new(Arc::new(sim.clone()), Refuse::default());
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.create(Path::new("/d/f")).unwrap().write_at(b"x", 0).unwrap();
        assert_eq!(fs.read_file(Path::new("/d/f")).unwrap(), b"x");
        assert!(sim.exists(Path::new("/d/f")).unwrap());
        fs.crash_point("a").unwrap();
        assert!(fs.crash_point("no").is_err());
        assert!(fs.crash_point("b").is_err(), "the simulated disk's armed crash");
        assert!(sim.is_crashed());
        assert_eq!(*fs.0.lock().unwrap(), ["a", "no", "b"]);
        assert_eq!(fs.space(Path::new("/d")).unwrap(), None);
    }

    /// Answers every sync itself (a disk that drops them) and counts write-back hints.
    #[derive(Debug, Default)]
    struct NoSyncs(Mutex<Vec<String>>);

    impl Hook for NoSyncs {
        fn file_sync(&self, path: &Path) -> Option<io::Result<()>> {
            self.0.lock().unwrap().push(format!("file {}", path.display()));
            Some(Ok(()))
        }

        fn dir_sync(&self, path: &Path) -> Option<io::Result<()>> {
            self.0.lock().unwrap().push(format!("dir {}", path.display()));
            Some(Ok(()))
        }

        fn start_writeback(&self, path: &Path) {
            self.0.lock().unwrap().push(format!("hint {}", path.display()));
        }
    }

    #[test]
    fn the_hook_may_answer_syncs_and_hears_hints() {
        let sim = SimFs::new(2);
        let fs = HookFs::new(Arc::new(sim.clone()), NoSyncs::default());
        fs.create_dir_all(Path::new("/d")).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        let file = fs.create(Path::new("/d/f")).unwrap();
        file.write_at(b"data", 0).unwrap();
        file.sync_data().unwrap();
        file.start_writeback(0, 4).unwrap();
        fs.open(Path::new("/d/f"), OpenMode::ReadWrite).unwrap().sync_all().unwrap();
        fs.sync_dir(Path::new("/d")).unwrap();
        assert_eq!(
            *fs.0.lock().unwrap(),
            ["file /d/f", "hint /d/f", "file /d/f", "dir /d"],
            "every sync and hint reached the hook"
        );
        // None of the syncs reached the disk (only the one made on the disk itself did), and
        // a power cut loses the file.
        assert_eq!((sim.stats().file_syncs, sim.stats().dir_syncs), (0, 1));
        sim.crash(ingestor_fs::CrashPolicy::DropUnsynced);
        assert!(!sim.exists(Path::new("/d/f")).unwrap());
    }
}
